/* schedule.c — Worker.Step: one optimizer step's forward and backward
 * passes of this stage over M micro-batches, in the 1F1B or GPipe order,
 * with activations and gradients moving over the data plane.
 *
 * 1F1B, stage k of p: min(p - k - 1, M) warm-up forwards, then one forward
 * and one backward alternately, then the remaining backwards. GPipe: all M
 * forwards, then all M backwards. Micro-batch m lives in activation slot
 * m % slots. Both orders compute exactly what the single-process trainer
 * computes: each stage runs its backwards in micro-batch order (so LoRA
 * gradients accumulate in the same order), the last stage scales its output
 * gradient by 1/M, and the loss is the sum of the micro-batch losses, in
 * order, divided by M.
 *
 * A U-shaped job's data owner (stage 0 of a ring, with a tail) is two
 * stages of one chain in one thread: the head (embeddings and the first
 * layers) and the tail (the last layers, the head and the loss). Its order
 * keeps each one's own order — the head's 1F1B over depth stages, the
 * tail's forward and backward of each micro-batch in turn — and merges
 * them so that it only ever waits for what the middle owes it: after the
 * head's warm-up, head forward i + w, tail i, head backward i. Its tokens
 * and targets come from its own data (owner.c), cut exactly as the
 * coordinator cuts a chain's.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sc_codec.h"
#include "sc_log.h"
#include "sc_rpc_pb.h"
#include "sc_wire.h"
#include "splitchain.pb-c.h"
#include "worker.h"

typedef struct step_run {
	worker *w;
	worker_slot *slot; /* the job's */
	job *j;
	uint64_t step;
	int first, last;
	int64_t shape[3];   /* (B,T,C) */
	size_t bt;          /* B * T */
	double loss_sum;    /* last stage: sum of micro-batch losses, in order */
	double *losses;     /* an owner's training step: each micro-batch's loss */
	double *eval;       /* an evaluation's last stage: each micro-batch's loss */
	size_t *eval_count; /* an owner's evaluation: each micro-batch's targets */
	double compute_s;
	int failed_in_dataplane; /* the error came from a neighbour or the wire */
} step_run;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static sc_dp_tag tag_of(const step_run *s, int m, enum sc_dp_direction d)
{
	return (sc_dp_tag){
		.job = s->j->id, .step = s->step, .micro_batch = (uint32_t)m, .direction = d
	};
}

/* The socket toward the previous / next stage for the step's micro-batch
 * g: a ring's first middle stage has one per owner (owner g / M_owner), so
 * has its last toward the owners' tails. */
static sc_dp_socket *up_of(const step_run *s, int g)
{
	return s->slot->up[s->slot->n_up > 1 ? g / s->j->M_owner : 0];
}

static sc_dp_socket *down_of(const step_run *s, int g)
{
	return s->slot->down[s->slot->n_down > 1 ? g / s->j->M_owner : 0];
}

/* The loss scale: every micro-batch of the step, all owners' in a ring. */
static float loss_scale(const job *j)
{
	return 1.0f / (float)(j->ring ? j->n_owners * j->M_owner : j->M);
}

/* The data plane's calls, remembering that a failure came from there. */
static sc_err dp(step_run *s, sc_err rc)
{
	if (rc)
		s->failed_in_dataplane = 1;
	return rc;
}

static sc_err forward(step_run *s, int m)
{
	job *j = s->j;
	sc_dp_tag tg = tag_of(s, m, SC_DP_FORWARD);
	const void *in = j->tokens + (size_t)m * s->bt;
	double lm = 0, t0;

	if (!s->first) {
		SC_TRY(dp(s, sc_dp_recv(up_of(s, m), &tg, 3, s->shape, j->x)));
		in = j->x;
	}
	t0 = now_s();
	SC_TRY(WORKER_ON_DEVICE(s->w,
				sc_segment_forward(j->seg, m % j->slots, in,
						   s->last ? j->targets + (size_t)m * s->bt : NULL,
						   loss_scale(j), s->last ? NULL : j->y, &lm)));
	s->compute_s += now_s() - t0;
	if (s->last && s->eval) {
		s->eval[m] = lm;
	} else if (s->last) {
		s->loss_sum += lm; /* forwards run in micro-batch order */
	} else {                   /* an evaluation rounds to nearest: no stream */
		sc_rng r;
		sc_wire_rng(&r, j->seed, s->step, (uint32_t)m, (uint32_t)j->stage, SC_WIRE_FORWARD);
		SC_TRY(dp(s, sc_dp_send_coded(down_of(s, m), &tg, 3, s->shape, j->y, NULL,
					      s->eval ? NULL : &r)));
	}
	return SC_OK;
}

static sc_err backward(step_run *s, int m)
{
	job *j = s->j;
	sc_dp_tag tg = tag_of(s, m, SC_DP_BACKWARD);
	double t0;

	if (!s->last)
		SC_TRY(dp(s, sc_dp_recv(down_of(s, m), &tg, 3, s->shape, j->dy)));
	t0 = now_s();
	SC_TRY(
	    WORKER_ON_DEVICE(s->w, sc_segment_backward(j->seg, m % j->slots, s->last ? NULL : j->dy,
						       s->first ? NULL : j->dx)));
	/* Several owners: each one's micro-batches summed by themselves. */
	if (j->fold_acc && (m + 1) % j->M_owner == 0)
		SC_TRY(WORKER_ON_DEVICE(s->w, sc_segment_grad_fold(j->seg, j->fold_acc, j->fold_tmp,
								   m + 1 == j->M_owner)));
	s->compute_s += now_s() - t0;
	if (!s->first) {
		sc_rng r;
		sc_wire_rng(&r, j->seed, s->step, (uint32_t)m, (uint32_t)j->stage,
			    SC_WIRE_BACKWARD);
		SC_TRY(dp(s, sc_dp_send_coded(
				 up_of(s, m), &tg, 3, s->shape, j->dx,
				 j->ef ? j->ef + (size_t)m * s->bt * j->mc.n_embd : NULL, &r)));
	}
	return SC_OK;
}

/* ---- the data owner's head and tail ---- */

/* The step's number of the owner's micro-batch m. */
static int owner_g(const job *j, int m)
{
	return j->owner_index * j->M_owner + m;
}

static sc_err owner_head_forward(step_run *s, int m)
{
	job *j = s->j;
	sc_dp_tag tg = tag_of(s, owner_g(j, m), SC_DP_FORWARD);
	double t0 = now_s();
	sc_rng r;

	SC_TRY(WORKER_ON_DEVICE(s->w, sc_segment_forward(j->seg, m % j->slots,
							 j->tokens + (size_t)m * s->bt, NULL,
							 loss_scale(j), j->y, NULL)));
	s->compute_s += now_s() - t0;
	sc_wire_rng(&r, j->seed, s->step, (uint32_t)owner_g(j, m), 0, SC_WIRE_FORWARD);
	return dp(s, sc_dp_send_coded(s->slot->down[0], &tg, 3, s->shape, j->y, NULL,
				      s->eval ? NULL : &r));
}

/* The tail's forward of micro-batch m, with the loss, and (training) its
 * backward at once; the gradient goes back up the ring. */
static sc_err owner_tail(step_run *s, int m)
{
	job *j = s->j;
	sc_dp_tag tg = tag_of(s, owner_g(j, m), SC_DP_FORWARD);
	double lm = 0, t0;
	sc_rng r;

	SC_TRY(dp(s, sc_dp_recv(s->slot->up[0], &tg, 3, s->shape, j->x)));
	t0 = now_s();
	SC_TRY(WORKER_ON_DEVICE(s->w,
				sc_segment_forward(j->tail, 0, j->x, j->targets + (size_t)m * s->bt,
						   loss_scale(j), NULL, &lm)));
	if (s->eval) {
		s->eval[m] = lm;
		s->compute_s += now_s() - t0;
		return SC_OK;
	}
	s->loss_sum += lm; /* in micro-batch order */
	s->losses[m] = lm;
	SC_TRY(WORKER_ON_DEVICE(s->w, sc_segment_backward(j->tail, 0, NULL, j->dx)));
	s->compute_s += now_s() - t0;
	tg.direction = SC_DP_BACKWARD;
	/* The tail's stream is the one of a chain's last stage. */
	sc_wire_rng(&r, j->seed, s->step, (uint32_t)owner_g(j, m), (uint32_t)j->n_stages,
		    SC_WIRE_BACKWARD);
	return dp(s, sc_dp_send_coded(s->slot->up[0], &tg, 3, s->shape, j->dx,
				      j->ef ? j->ef + (size_t)m * s->bt * j->mc.n_embd : NULL, &r));
}

static sc_err owner_head_backward(step_run *s, int m)
{
	job *j = s->j;
	sc_dp_tag tg = tag_of(s, owner_g(j, m), SC_DP_BACKWARD);
	double t0;

	SC_TRY(dp(s, sc_dp_recv(s->slot->down[0], &tg, 3, s->shape, j->dy)));
	t0 = now_s();
	SC_TRY(WORKER_ON_DEVICE(s->w, sc_segment_backward(j->seg, m % j->slots, j->dy, NULL)));
	s->compute_s += now_s() - t0;
	return SC_OK;
}

/* The owner's step (or evaluation): see the top of the file. */
static sc_err run_owner(step_run *s)
{
	job *j = s->j;
	int M = j->M, w = j->gpipe || s->eval ? M : j->depth - 1;

	if (w > M)
		w = M;
	if (!s->eval) {
		SC_TRY(WORKER_ON_DEVICE(s->w, sc_segment_zero_grad(j->seg)));
		SC_TRY(WORKER_ON_DEVICE(s->w, sc_segment_zero_grad(j->tail)));
	}
	for (int m = 0; m < w; m++)
		SC_TRY(owner_head_forward(s, m));
	if (w == M) { /* every forward is out: the tail, then the head */
		for (int m = 0; m < M; m++)
			SC_TRY(owner_tail(s, m));
		for (int m = 0; m < M && !s->eval; m++)
			SC_TRY(owner_head_backward(s, m));
		return SC_OK;
	}
	for (int i = 0; i < M; i++) {
		if (w + i < M)
			SC_TRY(owner_head_forward(s, w + i));
		SC_TRY(owner_tail(s, i));
		SC_TRY(owner_head_backward(s, i));
	}
	return SC_OK;
}

/* The owner's micro-batches of training step `step`, or of evaluation pass
 * `pass`, from its own data, as the coordinator cuts a chain's (run_step,
 * run_eval). */
static void owner_batches(step_run *s, uint32_t step, int eval, uint32_t pass)
{
	job *j = s->j;
	for (int m = 0; m < j->M; m++) {
		int32_t *in = j->tokens + (size_t)m * s->bt, *tg = j->targets + (size_t)m * s->bt;
		size_t k = (size_t)pass * (size_t)j->M + (size_t)m;
		if (!eval) {
			sc_loader_micro_batch(j->od.ld, step, j->M, m, j->B, in, tg);
			continue;
		}
		s->eval_count[m] = 0;
		if (k < j->od.eval_batches) {
			s->eval_count[m] = sc_eval_batch(j->od.eval, j->T, j->B, k, in, tg);
			continue;
		}
		for (size_t i = 0; i < s->bt; i++) { /* past the last: padding */
			in[i] = 0;
			tg[i] = -1;
		}
	}
}

/* An evaluation: forwards only, in order; nothing is trained and the
 * gradients of the step before stay as they are. */
static sc_err run_eval(step_run *s)
{
	if (s->j->tail)
		return run_owner(s);
	for (int m = 0; m < s->j->M; m++)
		SC_TRY(forward(s, m));
	return SC_OK;
}

static sc_err run(step_run *s)
{
	job *j = s->j;
	int M = j->M, nf = 0, nb = 0;
	int warmup = j->gpipe ? M : j->depth - j->stage - 1;

	if (j->tail)
		return run_owner(s);

	if (warmup > M)
		warmup = M;
	SC_TRY(WORKER_ON_DEVICE(s->w, sc_segment_zero_grad(j->seg)));
	while (nf < warmup)
		SC_TRY(forward(s, nf++));
	while (nf < M) {
		SC_TRY(forward(s, nf++));
		SC_TRY(backward(s, nb++));
	}
	while (nb < M)
		SC_TRY(backward(s, nb++));
	if (j->fold_acc) /* the owners' sums, added in owner order */
		SC_TRY(
		    WORKER_ON_DEVICE(s->w, sc_segment_write_group(j->seg, SC_G_GRAD, j->fold_acc)));
	return SC_OK;
}

/* Copies an (M,B,T) int32 field into dst, checking its length and that
 * every id is in [lo, V). 0 ok, else rep set. */
static int take_ids(int32_t *dst, const ProtobufCBinaryData *f, const job *j, int32_t lo,
		    const char *what, sc_rpc_reply *rep)
{
	size_t n = (size_t)j->M * j->B * j->T;
	if (f->len != n * sizeof(int32_t)) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT,
				 "%s: %zu bytes, want M x B x T x 4 = %d x %d x %d x 4 = %zu", what,
				 f->len, j->M, j->B, j->T, n * sizeof(int32_t));
		return 1;
	}
	memcpy(dst, f->data, f->len); /* little-endian hosts only (see sc_dataplane.h) */
	for (size_t i = 0; i < n; i++)
		if (dst[i] < lo || dst[i] >= j->mc.vocab_size) {
			sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT,
					 "%s: id %d at position %zu is outside [%d, %d)", what,
					 dst[i], i, lo, j->mc.vocab_size);
			return 1;
		}
	return 0;
}

static uint64_t bytes_sent(const worker_slot *sl);
static void dp_totals(const worker_slot *sl, uint64_t t[2][2]);
static void count_dataplane(worker *w, const worker_slot *sl, uint64_t before[2][2]);

/* The failed step's status and log line; resets the data plane. */
static void step_failed(worker *w, job *j, step_run *s, sc_err rc, sc_rpc_reply *rep)
{
	int st = !s->failed_in_dataplane         ? SC_STATUS_INTERNAL
		 : rc == SC_EFORMAT              ? SC_STATUS_DATA_LOSS
		 : atomic_load(&s->slot->cancel) ? SC_STATUS_ABORTED
						 : SC_STATUS_UNAVAILABLE;
	sc_rpc_reply_err(rep, st, "job %" PRIu64 " %s %" PRIu64 " stage %d: %s", j->id,
			 s->eval ? "evaluation after step" : "step",
			 s->eval ? (s->step >> 32) & 0x7FFFFFFF : s->step, j->stage,
			 sc_err_detail());
	sc_warn("worker", "%s", rep->message);
	atomic_fetch_add(&w->counters.step_failures, 1);
	/* Drop whatever the failed step left queued on either socket. */
	if (!atomic_load(&w->stop) && worker_reset_dataplane(w, s->slot))
		sc_warn("worker", "resetting the data plane: %s", sc_err_detail());
}

/* Worker.Step with eval set: s prepared by worker_step, its slot's mu held. */
static void eval_step(worker *w, job *j, step_run *s, sc_rpc_reply *rep)
{
	Splitchain__StepReply out = SPLITCHAIN__STEP_REPLY__INIT;
	double *losses = calloc((size_t)j->M, sizeof(double));
	uint64_t *counts = calloc((size_t)j->M, sizeof(uint64_t));
	uint64_t sent0;
	sc_err rc;

	if (!losses || !counts) {
		free(losses);
		free(counts);
		sc_rpc_reply_err(rep, SC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	s->eval = losses;
	atomic_fetch_add(&w->busy, 1);
	sent0 = bytes_sent(s->slot);
	rc = run_eval(s);
	out.bytes_sent = bytes_sent(s->slot) - sent0;
	atomic_fetch_sub(&w->busy, 1);
	if (rc) {
		step_failed(w, j, s, rc, rep);
	} else {
		out.n_eval_losses = s->last || j->tail ? (size_t)j->M : 0;
		out.eval_losses = losses;
		if (j->tail) {
			for (int m = 0; m < j->M; m++)
				counts[m] = s->eval_count[m];
			out.n_eval_tokens = (size_t)j->M;
			out.eval_tokens = counts;
		}
		out.compute_s = s->compute_s;
		sc_rpc_reply_pb(rep, &out.base);
	}
	free(losses);
	free(counts);
}

/* The bytes the slot's sockets sent and received so far, by hop (their
 * counters restart when a socket is reopened). */
static void dp_totals(const worker_slot *sl, uint64_t t[2][2])
{
	memset(t, 0, 4 * sizeof(uint64_t));
	for (int i = 0; i < WORKER_MAX_OWNERS; i++) {
		if (sl->up[i]) {
			t[WORKER_DP_PREV][WORKER_DP_SENT] += sc_dp_bytes_sent(sl->up[i]);
			t[WORKER_DP_PREV][WORKER_DP_RECV] += sc_dp_bytes_received(sl->up[i]);
		}
		if (sl->down[i]) {
			t[WORKER_DP_NEXT][WORKER_DP_SENT] += sc_dp_bytes_sent(sl->down[i]);
			t[WORKER_DP_NEXT][WORKER_DP_RECV] += sc_dp_bytes_received(sl->down[i]);
		}
	}
}

/* Adds what the slot's sockets moved since before to the worker's
 * counters (a socket reopened meanwhile counts from its reopening). */
static void count_dataplane(worker *w, const worker_slot *sl, uint64_t before[2][2])
{
	uint64_t now[2][2];
	dp_totals(sl, now);
	for (int h = 0; h < 2; h++)
		for (int d = 0; d < 2; d++)
			atomic_fetch_add(&w->counters.dp_bytes[h][d], now[h][d] >= before[h][d]
									  ? now[h][d] - before[h][d]
									  : now[h][d]);
}

static uint64_t bytes_sent(const worker_slot *sl)
{
	uint64_t n = 0;
	for (int i = 0; i < WORKER_MAX_OWNERS; i++)
		n += (sl->up[i] ? sc_dp_bytes_sent(sl->up[i]) : 0) +
		     (sl->down[i] ? sc_dp_bytes_sent(sl->down[i]) : 0);
	return n;
}

/* Whether every socket the job's stage needs is open (a reset after an
 * earlier failure may have failed). */
static int dataplane_ready(const worker_slot *sl, const job *j, int first, int last)
{
	int nu = j->tail || !first ? (j->ring && j->stage == 1 ? j->n_owners : 1) : 0;
	int nd = !last ? (j->ring && j->stage == j->n_stages - 1 ? j->n_owners : 1) : 0;
	if (sl->n_up < nu || sl->n_down < nd)
		return 0;
	for (int i = 0; i < nu; i++)
		if (!sl->up[i])
			return 0;
	for (int i = 0; i < nd; i++)
		if (!sl->down[i])
			return 0;
	return 1;
}

void worker_step(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	worker *w = arg;
	Splitchain__StepRequest *r = NULL;
	Splitchain__StepReply out = SPLITCHAIN__STEP_REPLY__INIT;
	double *sumsq = NULL, t0 = now_s();
	step_run s = { .w = w };
	uint64_t sent0, dp0[2][2];
	int dp_counted = 0;
	job *j;
	sc_err rc;

	if (sc_rpc_unpack(&splitchain__step_request__descriptor, req, len, (ProtobufCMessage **)&r,
			  rep))
		return;
	if (!(s.slot = worker_slot_lock(w, r->job_id, rep)))
		goto free;
	j = s.j = s.slot->job;
	/* An evaluation's messages carry a step of their own, never a
	 * training step's: the top bit, the step and the pass. */
	s.step = r->eval ? (UINT64_C(1) << 63) | ((uint64_t)r->step << 32) | r->eval_pass : r->step;
	s.first = sc_segment_is_first(j->seg);
	s.last = sc_segment_is_last(j->seg);
	s.shape[0] = j->B, s.shape[1] = j->T, s.shape[2] = j->mc.n_embd;
	s.bt = (size_t)j->B * j->T;
	/* Tokens may be any id of the vocabulary; targets below 0 are ignored
	 * positions. Fields a stage does not use are ignored. A data owner
	 * takes neither: it reads its own. */
	if (j->tail) {
		if (!(s.eval_count = calloc((size_t)j->M, sizeof(size_t))) ||
		    !(s.losses = calloc((size_t)j->M, sizeof(double)))) {
			sc_rpc_reply_err(rep, SC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
			goto out;
		}
		owner_batches(&s, r->step, r->eval, r->eval_pass);
	} else if ((s.first && take_ids(j->tokens, &r->tokens, j, 0, "tokens", rep)) ||
		   (s.last && take_ids(j->targets, &r->targets, j, INT32_MIN, "targets", rep))) {
		goto out;
	}
	/* A reset after an earlier failure may have failed too: try again. */
	if (!dataplane_ready(s.slot, j, s.first, s.last) && worker_reset_dataplane(w, s.slot)) {
		sc_rpc_reply_err(rep, SC_STATUS_UNAVAILABLE, "data plane: %s", sc_err_detail());
		goto out;
	}
	dp_totals(s.slot, dp0);
	dp_counted = 1;
	if (r->eval) {
		eval_step(w, j, &s, rep);
		goto out;
	}
	if (!(sumsq = calloc((size_t)j->mc.n_layer, sizeof(double)))) {
		sc_rpc_reply_err(rep, SC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	atomic_fetch_add(&w->busy, 1);
	sent0 = bytes_sent(s.slot);
	j->grads_step = -1;
	rc = run(&s);
	if (!rc)
		rc = WORKER_ON_DEVICE(w, sc_segment_grad_sumsq(j->seg, sumsq));
	if (!rc && j->tail) /* the owner's tail, after its first layers */
		rc = WORKER_ON_DEVICE(
		    w,
		    sc_segment_grad_sumsq(j->tail, sumsq + (sc_segment_get_spec(j->seg)->last -
							    sc_segment_get_spec(j->seg)->first)));
	out.bytes_sent = bytes_sent(s.slot) - sent0;
	atomic_fetch_sub(&w->busy, 1);
	if (rc) {
		step_failed(w, j, &s, rc, rep);
		goto out;
	}
	j->grads_step = (int64_t)s.step;
	atomic_fetch_add(&w->counters.steps, 1);
	atomic_fetch_add(&w->counters.micro_batches, (unsigned long long)j->M);
	atomic_fetch_add(&w->counters.compute_us, (unsigned long long)(s.compute_s * 1e6));
	out.loss = s.last || j->tail ? s.loss_sum / j->M : 0.0;
	out.n_layer_sumsq =
	    (size_t)sc_segment_get_spec(j->seg)->last - (size_t)sc_segment_get_spec(j->seg)->first;
	if (j->tail)
		out.n_layer_sumsq += (size_t)sc_segment_get_spec(j->tail)->last -
				     (size_t)sc_segment_get_spec(j->tail)->first;
	out.layer_sumsq = sumsq;
	out.compute_s = s.compute_s;
	out.peak_mem_bytes = worker_job_peak(w, j);
	/* One of several owners: its losses, and (when the coordinator adds
	 * up the owners' gradients, Worker.SetGrads) its gradients. */
	worker_tensors grads;
	memset(&grads, 0, sizeof(grads));
	if (j->tail && j->n_owners > 1) {
		out.n_micro_losses = (size_t)j->M;
		out.micro_losses = s.losses;
	}
	if (j->tail && j->n_owners > 1 && r->owner_grads) {
		if ((rc = WORKER_ON_DEVICE(w, worker_tensors_get(j, SC_G_GRAD, &grads)))) {
			sc_rpc_reply_err(rep, worker_status_of(rc), "gradients: %s",
					 sc_err_detail());
			worker_tensors_free(&grads);
			goto out;
		}
		out.n_grads = (size_t)grads.n;
		out.grads = grads.ptr;
	}
	sc_rpc_reply_pb(rep, &out.base);
	worker_tensors_free(&grads);
	sc_debug("worker",
		 "job %" PRIu64 " step %" PRIu64 ": loss %.6f, %.3f s compute of %.3f s, "
		 "%" PRIu64 " bytes sent",
		 j->id, s.step, out.loss, s.compute_s, now_s() - t0, out.bytes_sent);
out:
	if (dp_counted)
		count_dataplane(w, s.slot, dp0);
	pthread_mutex_unlock(&s.slot->mu);
free:
	free(sumsq);
	free(s.eval_count);
	free(s.losses);
	protobuf_c_message_free_unpacked(&r->base, NULL);
}

void worker_set_grads(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	worker *w = arg;
	Splitchain__SetGradsRequest *r = NULL;
	Splitchain__SetGradsReply out = SPLITCHAIN__SET_GRADS_REPLY__INIT;
	sc_adapter *ad = NULL;
	double *sumsq = NULL;
	sc_segment *sg[2];
	size_t nl = 0;
	sc_err rc = SC_OK;
	worker_slot *sl;
	job *j;

	if (sc_rpc_unpack(&splitchain__set_grads_request__descriptor, req, len,
			  (ProtobufCMessage **)&r, rep))
		return;
	if (!(sl = worker_slot_lock(w, r->job_id, rep)))
		goto free;
	j = sl->job;
	if (!j->tail || j->grads_step != (int64_t)r->step) {
		sc_rpc_reply_err(
		    rep, SC_STATUS_FAILED_PRECONDITION, "job %" PRIu64 ": %s step %u", j->id,
		    j->tail ? "no gradients of" : "not a data owner's stage for", r->step);
		goto out;
	}
	sg[0] = j->seg;
	sg[1] = j->tail;
	if (sc_adapter_new(&ad, &j->lc, &j->mc) ||
	    !(sumsq = calloc((size_t)j->mc.n_layer + 1, sizeof(double)))) {
		sc_rpc_reply_err(rep, SC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	/* Every matrix of both segments, checked as a restore's. */
	for (int k = 0; k < 2 && !rc; k++) {
		const sc_segment_spec *sp = sc_segment_get_spec(sg[k]);
		rc = sc_wire_to_adapter(ad, sp->first, sp->last, r->grads, r->n_grads, "grads");
	}
	if (rc) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT, "%s", sc_err_detail());
		goto out;
	}
	for (int k = 0; k < 2 && !rc; k++) {
		const sc_segment_spec *sp = sc_segment_get_spec(sg[k]);
		if (!(rc = WORKER_ON_DEVICE(w, sc_segment_import(sg[k], SC_G_GRAD, ad))))
			rc = WORKER_ON_DEVICE(w, sc_segment_grad_sumsq(sg[k], sumsq + nl));
		nl += (size_t)(sp->last - sp->first);
	}
	if (rc) {
		sc_rpc_reply_err(rep, SC_STATUS_INTERNAL, "gradients: %s", sc_err_detail());
		goto out;
	}
	out.n_layer_sumsq = nl;
	out.layer_sumsq = sumsq;
	sc_rpc_reply_pb(rep, &out.base);
out:
	pthread_mutex_unlock(&sl->mu);
free:
	sc_adapter_free(ad);
	free(sumsq);
	protobuf_c_message_free_unpacked(&r->base, NULL);
}
