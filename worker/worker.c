/* worker.c — the job a worker holds: Worker.Assign builds it, Restore loads
 * adapters and optimizer state into it, Apply runs AdamW on it, GetState
 * reads it back for a checkpoint. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "deliver.h"
#include "sc_adapter.h"
#include "sc_codec.h"
#include "sc_layer_quant.h"
#include "sc_log.h"
#include "sc_rpc_pb.h"
#include "sc_safetensors.h"
#include "sc_train.h"
#include "sc_wire.h"
#include "splitchain.pb-c.h"
#include "worker.h"

#define UNPACK(name, out)                                                                          \
	sc_rpc_unpack(&name##__descriptor, req, len, (ProtobufCMessage **)&(out), rep)
#define FREE_MSG(m)                                                                                \
	((m) ? protobuf_c_message_free_unpacked((ProtobufCMessage *)(m), NULL) : (void)0)

/* Sets INVALID_ARGUMENT with a message and returns 1 from a check function. */
#define REFUSE(...)                                                                                \
	do {                                                                                       \
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT, __VA_ARGS__);                    \
		return 1;                                                                          \
	} while (0)

/* Limits that keep every size well inside int and an RPC message. */
#define MAX_TOKENS_BYTES (SC_RPC_MAX_MSG / 4)
#define MAX_ACT_BYTES    ((size_t)1 << 30)

void worker_job_free(job *j)
{
	if (!j)
		return;
	sc_segment_free(j->seg);
	sc_segment_free(j->tail);
	worker_owner_free(&j->od);
	if (j->be) {
		j->be->ops->host_free(j->be, j->x);
		j->be->ops->host_free(j->be, j->y);
		j->be->ops->host_free(j->be, j->dy);
		j->be->ops->host_free(j->be, j->dx);
	}
	free(j->tokens);
	free(j->targets);
	free(j->ef);
	free(j->fold_acc);
	free(j->fold_tmp);
	free(j);
}

void worker_close_dataplane(worker *w, worker_slot *s)
{
	for (int i = 0; i < WORKER_MAX_OWNERS; i++) {
		worker_close_socket(w, &s->down[i]);
		worker_close_socket(w, &s->up[i]);
	}
	s->n_up = s->n_down = 0;
}

void worker_device_enter(worker *w)
{
	pthread_mutex_lock(&w->compute_mu);
}

sc_err worker_device_leave(worker *w, sc_err rc)
{
	pthread_mutex_unlock(&w->compute_mu);
	return rc;
}

int64_t worker_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void worker_close_socket(worker *w, sc_dp_socket **s)
{
	if (!*s)
		return;
	atomic_store(&w->closing_ms, (long long)worker_mono_ms());
	sc_dp_close(*s);
	atomic_store(&w->closing_ms, 0);
	*s = NULL;
}

#define CLOSE_STUCK_MS 10000

void worker_check_wedged(worker *w)
{
	long long closing = atomic_load(&w->closing_ms), now;

	if (!closing)
		return;
	now = (long long)worker_mono_ms();
	if (now - closing <= CLOSE_STUCK_MS)
		return;
	sc_error("worker",
		 "a data-plane socket close has not returned for %lld ms (the nng 1.5.2 close "
		 "hang, nng #1813): exiting with status %d for the supervisor to restart the "
		 "worker",
		 now - closing, WORKER_EXIT_WEDGED);
	_exit(WORKER_EXIT_WEDGED);
}

int worker_status_of(sc_err rc)
{
	switch (rc) {
	case SC_EINVAL:
	case SC_ERANGE: return SC_STATUS_INVALID_ARGUMENT;
	case SC_ENOMEM: return SC_STATUS_RESOURCE_EXHAUSTED;
	case SC_EIO:
	case SC_ENOENT:
	case SC_EFORMAT:
	case SC_ENOTSUP:
	case SC_ENODEV: return SC_STATUS_FAILED_PRECONDITION;
	default: return SC_STATUS_INTERNAL;
	}
}

worker_slot *worker_slot_lock(worker *w, uint64_t job_id, sc_rpc_reply *rep)
{
	for (int i = 0; job_id && i < w->n_slots; i++) {
		worker_slot *s = &w->slots[i];
		pthread_mutex_lock(&w->hold_mu);
		int here = s->holding.job == job_id;
		pthread_mutex_unlock(&w->hold_mu);
		if (!here)
			continue;
		pthread_mutex_lock(&s->mu);
		if (s->job && s->job->id == job_id)
			return s;
		pthread_mutex_unlock(&s->mu); /* dropped meanwhile */
	}
	/* Never assigned, or dropped: its lease ran out while the coordinator
	 * was away, or the worker restarted. The caller's placement is gone,
	 * not wrong: ABORTED, so that the coordinator places the job again
	 * rather than failing it. */
	sc_rpc_reply_err(rep, SC_STATUS_ABORTED,
			 "job %" PRIu64 " is not assigned to worker %s (never, or dropped since): "
			 "call Worker.Assign first",
			 job_id, w->name);
	return NULL;
}

/* Called with s->mu and mu held: the slot holds j (NULL: nothing), and the
 * heartbeat thread reports it from now on. */
static void set_job(worker *w, worker_slot *s, job *j)
{
	s->job = j;
	pthread_mutex_lock(&w->hold_mu);
	s->holding = j ? (struct worker_holding){ j->id, j->version, (uint32_t)j->stage }
		       : (struct worker_holding){ 0, 0, 0 };
	pthread_mutex_unlock(&w->hold_mu);
}

/* Called with s->mu held: frees the slot's job and closes its sockets. */
static void clear_slot(worker *w, worker_slot *s)
{
	job *j = s->job;
	pthread_mutex_lock(&w->mu);
	set_job(w, s, NULL);
	pthread_mutex_unlock(&w->mu);
	worker_job_free(j); /* a base it shared stays with its other users */
	worker_close_dataplane(w, s);
}

const char *worker_fetch_url(worker *w, char *buf)
{
	pthread_mutex_lock(&w->hold_mu);
	snprintf(buf, WORKER_URL_MAX, "%s", w->fetch_url);
	pthread_mutex_unlock(&w->hold_mu);
	return buf;
}

void worker_holdings_get(worker *w, struct worker_holding *h)
{
	pthread_mutex_lock(&w->hold_mu);
	for (int i = 0; i < w->n_slots; i++)
		h[i] = w->slots[i].holding;
	pthread_mutex_unlock(&w->hold_mu);
}

const sc_segment *worker_base_donor(worker *w, const sc_segment_spec *spec)
{
	for (int i = 0; i < w->n_slots; i++) {
		const job *j = w->slots[i].job;
		if (j && sc_segment_can_share(j->seg, w->be, spec))
			return j->seg;
		if (j && j->tail && sc_segment_can_share(j->tail, w->be, spec))
			return j->tail;
	}
	return worker_gen_donor(w, spec);
}

void worker_count_segment(const sc_segment *seg, const void **seen, int *n_seen, int cap,
			  uint64_t *base, uint64_t *own)
{
	sc_segment_bytes by;
	const void *id = sc_segment_base_id(seg);
	int known = 0;
	sc_segment_bytes_of(seg, &by);
	for (int k = 0; k < *n_seen; k++)
		known |= seen[k] == id;
	if (!known && *n_seen < cap) {
		seen[(*n_seen)++] = id;
		*base += by.base;
	}
	*own += by.total - by.base;
}

void worker_memory(worker *w, uint64_t *base, uint64_t job_bytes[WORKER_MAX_SLOTS])
{
	const void *seen[2 * WORKER_MAX_SLOTS + 16];
	int n_seen = 0, cap = (int)(sizeof(seen) / sizeof(seen[0]));
	uint64_t gen_own = 0;
	/* Busy (a segment being made, a generation step): the last figures,
	 * so that a heartbeat never waits. */
	if (pthread_mutex_trylock(&w->mu)) {
		pthread_mutex_lock(&w->hold_mu); /* the heartbeat and a scrape both read them */
		*base = w->mem_base;
		memcpy(job_bytes, w->mem_jobs, sizeof(w->mem_jobs));
		pthread_mutex_unlock(&w->hold_mu);
		return;
	}
	*base = 0;
	for (int i = 0; i < WORKER_MAX_SLOTS; i++) {
		const job *j = i < w->n_slots ? w->slots[i].job : NULL;
		job_bytes[i] = 0;
		if (!j)
			continue;
		worker_count_segment(j->seg, seen, &n_seen, cap, base, &job_bytes[i]);
		if (j->tail)
			worker_count_segment(j->tail, seen, &n_seen, cap, base, &job_bytes[i]);
		job_bytes[i] += 4 * (uint64_t)j->B * (uint64_t)j->T * (uint64_t)j->mc.n_embd *
				sizeof(float); /* the hand-over buffers */
	}
	worker_gen_memory(seen, &n_seen, cap, base, &gen_own);
	pthread_mutex_lock(&w->hold_mu);
	w->mem_base = *base;
	memcpy(w->mem_jobs, job_bytes, sizeof(w->mem_jobs));
	pthread_mutex_unlock(&w->hold_mu);
	pthread_mutex_unlock(&w->mu);
}

void worker_note(worker *w, const char *why)
{
	pthread_mutex_lock(&w->notice_mu);
	if (w->n_notices < (int)(sizeof(w->notices) / sizeof(w->notices[0])))
		snprintf(w->notices[w->n_notices++], sizeof(w->notices[0]), "%s", why);
	else
		w->lost_notices++;
	pthread_mutex_unlock(&w->notice_mu);
}

/* The data plane's refusals (sc_dp_opts.on_refuse). */
static void note_refusal(void *arg, const char *why)
{
	worker_note(arg, why);
}

sc_err worker_reset_dataplane(worker *w, worker_slot *s)
{
	const job *j = s->job;
	sc_dp_opts o;
	sc_dp_peer self = { j->id, j->version, (uint32_t)j->stage };

	sc_dp_opts_defaults(&o);
	o.timeout_ms = w->o.data_timeout_ms;
	o.max_msg = (size_t)j->B * j->T * j->mc.n_embd * sizeof(float) + 4 + SC_DP_MAX_HEADER;
	o.queue = j->M + 2;
	o.drop_stale = 1;
	o.cancel = &s->cancel;
	o.on_refuse = note_refusal;
	o.on_refuse_arg = w;
	o.self = self;
	o.wire = j->wire;
	if ((o.has_secret = j->has_secret))
		memcpy(o.secret, j->secret, sizeof(o.secret));
	worker_close_dataplane(w, s);
	if (j->ring && j->stage == 0) {
		/* A data owner listens for both of its hops: the last middle
		 * stage's activations come back to its tail on its data address,
		 * the first middle stage dials its head listener. */
		if (!s->owner_bind[0])
			return sc_errf(SC_EINVAL, "this worker is not a data owner");
		o.peer = (sc_dp_peer){ j->id, j->version, (uint32_t)j->n_stages - 1u };
		SC_TRY(sc_dp_listen(&s->up[0], s->data_bind, &o));
		s->n_up = 1;
		o.peer = (sc_dp_peer){ j->id, j->version, 1 };
		SC_TRY(sc_dp_listen(&s->down[0], s->owner_bind, &o));
		s->n_down = 1;
		return SC_OK;
	}
	/* The listener takes only the previous stage of this placement (stage
	 * 0 none: its peer is a stage that does not exist). A ring's first
	 * middle stage dials every owner's head instead, its last every
	 * owner's data address. */
	if (j->ring && j->stage == 1) {
		o.peer = (sc_dp_peer){ j->id, j->version, 0 };
		for (int i = 0; i < j->n_owners; i++, s->n_up++)
			SC_TRY(sc_dp_dial(&s->up[i], j->head_addrs[i], &o));
	} else {
		o.peer = (sc_dp_peer){ j->id, j->version, (uint32_t)j->stage - 1u };
		SC_TRY(sc_dp_listen(&s->up[0], s->data_bind, &o));
		s->n_up = 1;
	}
	if (j->ring && j->stage == j->n_stages - 1) {
		o.peer = (sc_dp_peer){ j->id, j->version, 0 };
		for (int i = 0; i < j->n_owners; i++, s->n_down++)
			SC_TRY(sc_dp_dial(&s->down[i], j->tail_addrs[i], &o));
	} else if (j->next_addr[0]) {
		o.peer = (sc_dp_peer){ j->id, j->version, (uint32_t)j->stage + 1u };
		SC_TRY(sc_dp_dial(&s->down[0], j->next_addr, &o));
		s->n_down = 1;
	}
	return SC_OK;
}

/* ---------------------------------------------------------------- Assign */

static int drop_slot(worker *w, worker_slot *s, uint64_t job_id, uint32_t version, const char *why);

/* Checks the fields that need no model; fills lc and tc. 0 ok, else rep set. */
static int check_assign(const Splitchain__AssignRequest *r, sc_lora_config *lc, sc_train_config *tc,
			sc_rpc_reply *rep)
{
	const Splitchain__TrainConfig *t = r->train;

	if (r->job_id == 0)
		REFUSE("job_id 0 is not a job");
	if (r->n_stages < 1 || r->stage >= r->n_stages || r->n_stages > SC_ADAPTER_MAX_LAYERS)
		REFUSE("stage %u of %u stages is impossible", r->stage, r->n_stages);
	if (!r->model_path[0] || strlen(r->model_path) > 3800)
		REFUSE("model_path is empty or too long");
	if (r->first_layer >= r->last_layer)
		REFUSE("layer range [%u, %u) is empty", r->first_layer, r->last_layer);
	if ((r->stage == 0) != (r->first_layer == 0))
		REFUSE("stage %u starts at layer %u: only stage 0 starts at layer 0", r->stage,
		       r->first_layer);
	/* Every stage sends on but the last — in a ring, the owners (they
	 * listen for both hops) and the last middle stage (it dials them). */
	int want_next =
	    r->ring ? r->stage > 0 && r->stage + 1 < r->n_stages : r->stage + 1 < r->n_stages;
	if (want_next != (r->next_data_addr[0] != '\0'))
		REFUSE("next_data_addr must be set on every stage but the "
		       "last (stage %u of %u%s has '%s')",
		       r->stage, r->n_stages, r->ring ? " of a ring" : "", r->next_data_addr);
	if (r->ring) {
		if (r->n_stages < 2)
			REFUSE("a ring has the data owners and at least one middle stage");
		if (r->n_owners < 1 || r->n_owners > WORKER_MAX_OWNERS ||
		    r->owner_index >= r->n_owners)
			REFUSE("owner %u of %u owners: want 1..%d owners", r->owner_index,
			       r->n_owners, WORKER_MAX_OWNERS);
		if (r->stage == 1 && r->n_owner_head_addrs != r->n_owners)
			REFUSE(
			    "the first middle stage needs the %u owners' head addresses, got %zu",
			    r->n_owners, r->n_owner_head_addrs);
		if (r->stage == r->n_stages - 1 && r->n_owner_tail_addrs != r->n_owners)
			REFUSE("the last middle stage needs the %u owners' data addresses, got %zu",
			       r->n_owners, r->n_owner_tail_addrs);
		for (size_t i = 0; i < r->n_owner_head_addrs; i++)
			if (!r->owner_head_addrs[i][0] ||
			    strlen(r->owner_head_addrs[i]) >= WORKER_URL_MAX)
				REFUSE("an owner's head address is empty or too long");
		for (size_t i = 0; i < r->n_owner_tail_addrs; i++)
			if (!r->owner_tail_addrs[i][0] ||
			    strlen(r->owner_tail_addrs[i]) >= WORKER_URL_MAX)
				REFUSE("an owner's data address is empty or too long");
		if (r->stage == 0 && (!r->owner_data || !r->owner_data->path[0]))
			REFUSE("stage 0 of a ring is a data owner: owner_data is required");
		if (r->stage == 0 && r->tail_first_layer >= r->tail_last_layer)
			REFUSE("the owner's tail range [%u, %u) is empty", r->tail_first_layer,
			       r->tail_last_layer);
		if (r->stage > 0 && r->tail_last_layer)
			REFUSE("only stage 0 of a ring holds a tail");
	} else if (r->tail_last_layer || r->owner_data) {
		REFUSE("a tail and owner data belong to stage 0 of a ring");
	}
	if (strlen(r->next_data_addr) >= WORKER_URL_MAX)
		REFUSE("next_data_addr is too long");
	if (r->schedule != SPLITCHAIN__SCHEDULE__SCHEDULE_1F1B &&
	    r->schedule != SPLITCHAIN__SCHEDULE__SCHEDULE_GPIPE)
		REFUSE("unknown schedule %d", (int)r->schedule);
	if (!r->lora || !t)
		REFUSE("the lora and train configurations are required");
	*lc = (sc_lora_config){ .rank = (int)r->lora->rank,
				.alpha = r->lora->alpha,
				.targets = r->lora->targets,
				.seed = r->lora->seed };
	if (r->lora->rank < 1 || r->lora->rank > 4096)
		REFUSE("lora: rank %u out of range (1..4096)", r->lora->rank);
	if (t->steps > 1u << 30 || t->batch > 1u << 20 || t->seq > 1u << 20 ||
	    t->micro_batches > 1u << 16 || t->warmup > 1u << 30)
		REFUSE("train: a size is absurdly large");
	sc_wire_train_config(tc, t);
	if (!isfinite(t->lr) || !isfinite(t->min_lr) || !isfinite(t->weight_decay) ||
	    !isfinite(t->beta1) || !isfinite(t->beta2) || !isfinite(t->eps) ||
	    !isfinite(t->grad_clip))
		REFUSE("train: every rate and AdamW parameter must be a finite number");
	if (sc_train_config_validate(tc))
		REFUSE("train: %s", sc_err_detail());
	if ((uint64_t)tc->micro_batches * tc->B * tc->T * 4 > MAX_TOKENS_BYTES)
		REFUSE("train: %d x %d x %d tokens per step do not fit one request",
		       tc->micro_batches, tc->B, tc->T);
	return 0;
}

/* The checks that need the model's configuration. */
static int check_against_model(const Splitchain__AssignRequest *r, const sc_model_config *mc,
			       const sc_train_config *tc, sc_rpc_reply *rep)
{
	int L = mc->n_layer;

	if (r->last_layer > (uint32_t)L || L > SC_ADAPTER_MAX_LAYERS)
		REFUSE("layer range [%u, %u) is outside the model's %d layers", r->first_layer,
		       r->last_layer, L);
	if (r->ring) {
		if (r->last_layer >= (uint32_t)L ||
		    (r->stage == 0 &&
		     (r->tail_last_layer != (uint32_t)L || r->tail_first_layer <= r->last_layer)))
			REFUSE("ring stage %u: layers [%u, %u) (tail [%u, %u)): only the owner's "
			       "tail ends at layer %d, after its first range",
			       r->stage, r->first_layer, r->last_layer, r->tail_first_layer,
			       r->tail_last_layer, L);
	} else if ((r->stage + 1 == r->n_stages) != (r->last_layer == (uint32_t)L)) {
		REFUSE("stage %u of %u ends at layer %u: exactly the last stage ends at layer %d",
		       r->stage, r->n_stages, r->last_layer, L);
	}
	if (tc->T > mc->n_positions)
		REFUSE("sequence length %d exceeds the model's %d positions", tc->T,
		       mc->n_positions);
	if ((uint64_t)tc->B * tc->T * mc->n_embd * sizeof(float) > MAX_ACT_BYTES)
		REFUSE("micro-batch %d x %d x %d is too large for the data plane", tc->B, tc->T,
		       mc->n_embd);
	return 0;
}

uint64_t worker_rss_bytes(int peak)
{
	FILE *f = fopen("/proc/self/status", "r");
	const char *key = peak ? "VmHWM:" : "VmRSS:";
	char line[256];
	unsigned long long kb = 0;
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, strlen(key))) {
			if (sscanf(line + strlen(key), "%llu", &kb) != 1)
				kb = 0;
			break;
		}
	fclose(f);
	return (uint64_t)kb * 1024;
}

void worker_reset_peak(void)
{
	FILE *f = fopen("/proc/self/clear_refs", "w");
	if (f) {
		fputs("5", f); /* reset the peak resident set size to the current one */
		fclose(f);
	}
}

uint64_t worker_job_peak(const worker *w, const job *j)
{
	uint64_t peak;
	if (strcmp(w->be->name, "cpu") || !j->rss0)
		return 0;
	peak = worker_rss_bytes(1);
	return peak > j->rss0 ? peak - j->rss0 : 0;
}

sc_err worker_new_segment(worker *w, const sc_segment_spec *sp, worker_model *wm,
			  const char *model_path, sc_weights **wf, sc_segment **out, int *shared)
{
	const sc_segment *donor;
	sc_err rc = SC_OK;

	pthread_mutex_lock(&w->mu);
	if ((donor = worker_base_donor(w, sp)))
		rc = WORKER_ON_DEVICE(w, sc_segment_new_sharing(out, w->be, sp, donor));
	pthread_mutex_unlock(&w->mu);
	if ((*shared = donor != NULL))
		return rc;
	if (!*wf)
		SC_TRY(wm ? worker_model_weights(wm, wf) : sc_weights_open(wf, model_path));
	SC_TRY(sc_segment_new(out, w->be, sp));
	return WORKER_ON_DEVICE(w, sc_segment_load_weights(*out, *wf));
}

static sc_err build_job(worker *w, const Splitchain__AssignRequest *r, const sc_model_config *mc,
			const sc_lora_config *lc, const sc_train_config *tc, worker_model *wm,
			job **out)
{
	sc_weights *wf = NULL;
	sc_adapter *ad = NULL;
	sc_segment_spec sp;
	size_t btc, mbt;
	job *j;
	sc_err rc;

	*out = NULL;
	if (!(j = calloc(1, sizeof(*j))))
		return sc_errf(SC_ENOMEM, "out of memory");
	j->rss0 = worker_rss_bytes(0); /* the stage's memory is what it adds */
	j->id = r->job_id;
	j->version = r->placement_version;
	j->stage = (int)r->stage;
	j->n_stages = (int)r->n_stages;
	j->ring = r->ring;
	j->depth = j->n_stages + (j->ring ? 1 : 0);
	j->n_owners = j->ring ? (int)r->n_owners : 0;
	j->owner_index = (int)r->owner_index;
	for (size_t i = 0; i < r->n_owner_head_addrs; i++)
		snprintf(j->head_addrs[i], sizeof(j->head_addrs[i]), "%s", r->owner_head_addrs[i]);
	for (size_t i = 0; i < r->n_owner_tail_addrs; i++)
		snprintf(j->tail_addrs[i], sizeof(j->tail_addrs[i]), "%s", r->owner_tail_addrs[i]);
	j->gpipe = r->schedule == SPLITCHAIN__SCHEDULE__SCHEDULE_GPIPE;
	j->M_owner = tc->micro_batches;
	/* A ring's middle runs every owner's micro-batches each step. */
	j->M = j->ring && j->stage > 0 ? j->n_owners * tc->micro_batches : tc->micro_batches;
	j->B = tc->B;
	j->T = tc->T;
	/* 1F1B: stage k keeps depth - k micro-batches in flight; the owner's
	 * tail runs each backward right after its forward. */
	j->slots = j->gpipe ? j->M : (j->depth - j->stage < j->M ? j->depth - j->stage : j->M);
	j->tail_slots = j->gpipe ? j->M : 1;
	j->mc = *mc;
	j->lc = *lc;
	j->hp = (sc_adamw_hparams){ tc->beta1, tc->beta2, tc->eps, tc->weight_decay };
	j->grads_step = j->applied_step = -1;
	j->wire = tc->wire;
	j->seed = tc->seed;
	snprintf(j->next_addr, sizeof(j->next_addr), "%s", r->next_data_addr);
	if ((j->has_secret = r->data_secret.len == SC_DP_SECRET_LEN))
		memcpy(j->secret, r->data_secret.data, SC_DP_SECRET_LEN);
	btc = (size_t)j->B * j->T * mc->n_embd;
	mbt = (size_t)j->M * j->B * j->T;
	/* The activations and gradients cross to and from the device once per
	 * micro-batch: page-locked on a GPU. */
	j->be = w->be;
	float **hand[] = { &j->x, &j->y, &j->dy, &j->dx };
	for (int i = 0; i < 4; i++)
		if ((rc = w->be->ops->host_alloc(w->be, (void **)hand[i], btc * sizeof(float))))
			goto fail;
	j->tokens = malloc(mbt * sizeof(int32_t));
	j->targets = malloc(mbt * sizeof(int32_t));
	if (j->wire != SC_WIRE_FP32 && (j->stage > 0 || j->ring) &&
	    !(j->ef = calloc((size_t)j->M * btc, sizeof(float)))) {
		rc = sc_errf(SC_ENOMEM, "out of memory for the wire encoding's error feedback");
		goto fail;
	}
	if (!j->tokens || !j->targets) {
		rc = sc_errf(SC_ENOMEM, "out of memory for %zu tokens", mbt);
		goto fail;
	}
	sp = (sc_segment_spec){ .model = *mc,
				.lora = *lc,
				.first = (int)r->first_layer,
				.last = (int)r->last_layer,
				.B = j->B,
				.T = j->T,
				.slots = j->slots };
	if ((rc = w->be->ops->set_tf32(w->be, tc->allow_tf32)) ||
	    (rc = worker_new_segment(w, &sp, wm, r->model_path, &wf, &j->seg, &j->shared[0])))
		goto fail;
	if (j->ring && j->stage == 0) { /* the data owner: its tail and its data */
		sp.first = (int)r->tail_first_layer;
		sp.last = (int)r->tail_last_layer;
		sp.slots = j->tail_slots;
		Splitchain__ModelInfo *info = NULL;
		if (!(rc = worker_new_segment(w, &sp, wm, r->model_path, &wf, &j->tail,
					      &j->shared[1])) &&
		    !(rc = r->model[0] ? worker_owner_model(w, r->model, &info) : SC_OK))
			rc = worker_owner_load(w, r->owner_data, r->model_path, info, mc, tc,
					       &j->od);
		if (info)
			protobuf_c_message_free_unpacked(&info->base, NULL);
		if (rc)
			goto fail;
	}
	sc_weights_close(wf);
	wf = NULL;
	/* Fresh adapters: a job that starts from scratch needs no Restore. */
	if ((rc = sc_adapter_new(&ad, lc, mc)))
		goto fail;
	sc_adapter_init(ad);
	if ((rc = WORKER_ON_DEVICE(w, sc_segment_set_lora(j->seg, ad))) ||
	    (j->tail && (rc = WORKER_ON_DEVICE(w, sc_segment_set_lora(j->tail, ad)))))
		goto fail;
	if (j->ring && j->stage > 0 && j->n_owners > 1) { /* each owner's sum by itself */
		size_t n = sc_segment_lora_floats(j->seg) + 1;
		if (!(j->fold_acc = malloc(n * sizeof(float))) ||
		    !(j->fold_tmp = malloc(n * sizeof(float)))) {
			rc = sc_errf(SC_ENOMEM, "out of memory for the owners' gradient sums");
			goto fail;
		}
	}
	sc_adapter_free(ad);
	/* From here the peak is the stage's own: loading touched the model
	 * file's pages (clean, reclaimable) and staging buffers now freed. */
	worker_reset_peak();
	*out = j;
	return SC_OK;
fail:
	sc_adapter_free(ad);
	sc_weights_close(wf);
	worker_job_free(j);
	return rc;
}

void worker_assign(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	worker *w = arg;
	Splitchain__AssignRequest *r = NULL;
	Splitchain__AssignReply out = SPLITCHAIN__ASSIGN_REPLY__INIT;
	sc_lora_config lc;
	sc_train_config tc;
	sc_model_config mc;
	char path[4096], fetch_url[WORKER_URL_MAX];
	job *j = NULL;
	worker_slot *s;
	worker_model *wm = NULL;
	sc_err rc;

	if (UNPACK(splitchain__assign_request, r))
		return;
	if (check_assign(r, &lc, &tc, rep))
		goto out;
	if (r->data_secret.len != 0 && r->data_secret.len != SC_DP_SECRET_LEN) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT,
				 "the data-plane secret has %zu bytes, not %d", r->data_secret.len,
				 SC_DP_SECRET_LEN);
		goto out;
	}
	/* A registered model: its manifest and configuration from the
	 * coordinator; its tensors from the cache or fetched (deliver.h). */
	if (r->model && r->model[0]
		? (rc = worker_model_open(w->coord, worker_fetch_url(w, fetch_url), w->cache,
					  atomic_load(&w->worker_id), r->model, r->model_digest,
					  &mc, &wm))
		: (snprintf(path, sizeof(path), "%s/config.json", r->model_path),
		   (rc = sc_config_load(&mc, path)))) {
		sc_rpc_reply_err(rep, worker_status_of(rc), "model %s: %s",
				 r->model && r->model[0] ? r->model : r->model_path,
				 sc_err_detail());
		goto out;
	}
	if (sc_lora_config_validate(&lc, &mc)) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT, "lora: %s", sc_err_detail());
		goto out;
	}
	/* The job's frozen base: the segment quantizes the float projections
	 * as it loads them, or takes them as the directory holds them; the
	 * layers the planner lowered (layer_quant) in their own format. */
	if (sc_train_base_format(&mc, &tc) || sc_layer_quant_apply(&mc, r->layer_quant)) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT, "model %s: %s", r->model_path,
				 sc_err_detail());
		goto out;
	}
	if (check_against_model(r, &mc, &tc, rep))
		goto out;

	if (r->slot >= (uint32_t)w->n_slots) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT,
				 "job slot %u: worker %s serves %d job%s at once (--jobs)", r->slot,
				 w->name, w->n_slots, w->n_slots == 1 ? "" : "s");
		goto out;
	}
	/* The job moves here from another slot: that placement is over. */
	for (int i = 0; i < w->n_slots; i++)
		if (i != (int)r->slot)
			drop_slot(w, &w->slots[i], r->job_id, r->placement_version,
				  "placed again in another job slot");
	/* A Step of the old placement may be waiting on a neighbour that is
	 * gone: ask it to give up, then replace the job. */
	s = &w->slots[r->slot];
	atomic_store(&s->cancel, 1);
	pthread_mutex_lock(&s->mu);
	atomic_store(&s->cancel, atomic_load(&w->stop));
	if (s->job && s->job->id == r->job_id && s->job->version > r->placement_version) {
		sc_rpc_reply_err(rep, SC_STATUS_FAILED_PRECONDITION,
				 "job %" PRIu64 " placement %u is older than the placement %u this "
				 "worker holds",
				 r->job_id, r->placement_version, s->job->version);
		goto unlock;
	}
	/* No socket of the old placement outlives it. */
	clear_slot(w, s);
	if ((rc = build_job(w, r, &mc, &lc, &tc, wm, &j))) {
		sc_rpc_reply_err(
		    rep, worker_model_broken(wm) ? SC_STATUS_UNAVAILABLE : worker_status_of(rc),
		    "job %" PRIu64 " stage %u: %s", r->job_id, r->stage, sc_err_detail());
		goto unlock;
	}
	pthread_mutex_lock(&w->mu);
	set_job(w, s, j);
	pthread_mutex_unlock(&w->mu);
	if ((rc = worker_reset_dataplane(w, s))) {
		sc_rpc_reply_err(rep, SC_STATUS_UNAVAILABLE, "job %" PRIu64 " stage %u: %s",
				 r->job_id, r->stage, sc_err_detail());
		clear_slot(w, s);
		goto unlock;
	}
	sc_info("worker",
		"job %" PRIu64 " placement %u: stage %d of %d, layers [%u, %u), base %s%s, %s, "
		"M=%d B=%d T=%d, %d slots, job slot %d, next %s",
		j->id, j->version, j->stage, j->n_stages, r->first_layer, r->last_layer,
		sc_train_base_describe(&mc),
		j->shared[0] || j->shared[1] ? " (shared with another job or session)" : "",
		j->gpipe ? "GPipe" : "1F1B", j->M, j->B, j->T, j->slots, s->index,
		j->next_addr[0] ? j->next_addr : "(last stage)");
	if (j->tail)
		sc_info("worker",
			"job %" PRIu64 ": the data owner also holds layers [%u, %u) and the head; "
			"its data gives %zu training sequences, %zu held-out micro-batches",
			j->id, r->tail_first_layer, r->tail_last_layer, sc_loader_windows(j->od.ld),
			j->od.eval_batches);
	out.device_bytes =
	    sc_segment_device_bytes(j->seg) + (j->tail ? sc_segment_device_bytes(j->tail) : 0);
	out.eval_batches = j->od.eval_batches;
	sc_rpc_reply_pb(rep, &out.base);
unlock:
	pthread_mutex_unlock(&s->mu);
out:
	if (wm) {
		int cached, fetched, peers;
		uint64_t bytes, peer_bytes;
		worker_model_stats(wm, &cached, &fetched, &bytes, &peers, &peer_bytes);
		sc_info("worker",
			"job %" PRIu64 " model %s: %d tensors from the cache, %d fetched (%" PRIu64
			" bytes fetched; %d tensors, %" PRIu64
			" bytes from peers; the coordinator's "
			"over %s)",
			r->job_id, r->model, cached, fetched, bytes, peers, peer_bytes,
			worker_model_bulk(wm));
		if (fetched) /* so that peers may fetch from us */
			worker_report_cache(w->coord, w->cache, atomic_load(&w->worker_id));
	}
	worker_model_close(wm);
	FREE_MSG(r);
}

/* --------------------------------------------------------------- Restore */

/* The job's segments: seg, and the owner's tail; returns how many. */
static int segments(const job *j, sc_segment *out[2])
{
	out[0] = j->seg;
	out[1] = j->tail;
	return j->tail ? 2 : 1;
}

/* Fills ad's layers of the job's segments from ts (sc_wire_to_adapter);
 * 0 ok, else rep set: a malformed list is the caller's INVALID_ARGUMENT. */
static int fill_adapter(sc_adapter *ad, const job *j, Splitchain__NamedTensor **ts, size_t n,
			const char *what, sc_rpc_reply *rep)
{
	sc_segment *sg[2];
	sc_err rc = SC_OK;
	for (int k = 0, ns = segments(j, sg); k < ns && !rc; k++) {
		const sc_segment_spec *sp = sc_segment_get_spec(sg[k]);
		rc = sc_wire_to_adapter(ad, sp->first, sp->last, ts, n, what);
	}
	if (rc)
		sc_rpc_reply_err(rep,
				 rc == SC_ENOMEM ? SC_STATUS_RESOURCE_EXHAUSTED
						 : SC_STATUS_INVALID_ARGUMENT,
				 "%s", sc_err_detail());
	return rc != SC_OK;
}

void worker_restore(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	worker *w = arg;
	Splitchain__RestoreRequest *r = NULL;
	Splitchain__Empty out = SPLITCHAIN__EMPTY__INIT;
	sc_adapter *ad[3] = { NULL, NULL, NULL };
	static const enum sc_segment_group groups[3] = { SC_G_LORA, SC_G_ADAM_M, SC_G_ADAM_V };
	int fresh;
	sc_err rc;
	worker_slot *s;
	job *j;

	if (UNPACK(splitchain__restore_request, r))
		return;
	if (!(s = worker_slot_lock(w, r->job_id, rep)))
		goto free;
	j = s->job;
	for (int g = 0; g < 3; g++)
		if (sc_adapter_new(&ad[g], &j->lc, &j->mc)) {
			sc_rpc_reply_err(rep, SC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
			goto out;
		}
	fresh = r->n_adam_m == 0 && r->n_adam_v == 0; /* zero moments */
	if (fill_adapter(ad[0], j, r->lora, r->n_lora, "lora", rep) ||
	    (!fresh && fill_adapter(ad[1], j, r->adam_m, r->n_adam_m, "adam_m", rep)) ||
	    (!fresh && fill_adapter(ad[2], j, r->adam_v, r->n_adam_v, "adam_v", rep)))
		goto out;
	sc_segment *sg[2];
	int ns = segments(j, sg);
	for (int k = 0; k < ns; k++)
		for (int g = 0; g < 4; g++)
			if ((rc = WORKER_ON_DEVICE(
				 w, g < 3 ? sc_segment_import(sg[k], groups[g], ad[g])
					  : sc_segment_zero_grad(sg[k])))) {
				sc_rpc_reply_err(rep, SC_STATUS_INTERNAL, "restore: %s",
						 sc_err_detail());
				goto out;
			}
	j->grads_step = -1;
	sc_info("worker", "job %" PRIu64 ": restored %zu adapter tensors (%s optimizer state)",
		j->id, r->n_lora, fresh ? "fresh" : "saved");
	sc_rpc_reply_pb(rep, &out.base);
out:
	pthread_mutex_unlock(&s->mu);
free:
	for (int g = 0; g < 3; g++)
		sc_adapter_free(ad[g]);
	FREE_MSG(r);
}

/* ----------------------------------------------------------------- Apply */

void worker_apply(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	worker *w = arg;
	Splitchain__ApplyRequest *r = NULL;
	Splitchain__Empty out = SPLITCHAIN__EMPTY__INIT;
	worker_slot *s;
	job *j;

	if (UNPACK(splitchain__apply_request, r))
		return;
	if (!isfinite(r->lr) || r->lr < 0 || !isfinite(r->clip_factor) || !(r->clip_factor > 0)) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT,
				 "lr %g must be >= 0 and clip factor %g > 0, both finite", r->lr,
				 r->clip_factor);
		goto free;
	}
	if (!(s = worker_slot_lock(w, r->job_id, rep)))
		goto free;
	j = s->job;
	if (j->grads_step != (int64_t)r->step) {
		if (j->applied_step == (int64_t)r->step)
			sc_rpc_reply_err(rep, SC_STATUS_FAILED_PRECONDITION,
					 "step %u of job %" PRIu64 " is already applied", r->step,
					 j->id);
		else
			sc_rpc_reply_err(rep, SC_STATUS_FAILED_PRECONDITION,
					 "no gradients for step "
					 "%u of job %" PRIu64 ": run Worker.Step for it first",
					 r->step, j->id);
		goto out;
	}
	sc_segment *sg[2];
	for (int k = 0, ns = segments(j, sg); k < ns; k++)
		if (WORKER_ON_DEVICE(w, sc_segment_adamw(sg[k], &j->hp, r->lr, r->clip_factor,
							 (int)r->step + 1))) {
			sc_rpc_reply_err(rep, SC_STATUS_INTERNAL, "AdamW: %s", sc_err_detail());
			goto out;
		}
	j->grads_step = -1;
	j->applied_step = r->step;
	sc_rpc_reply_pb(rep, &out.base);
out:
	pthread_mutex_unlock(&s->mu);
free:
	FREE_MSG(r);
}

/* -------------------------------------------------------------- GetState */

/* Appends more[0..nm) to *list (n entries). */
static int append_tensors(sc_adapter_tensor **list, int *n, const sc_adapter_tensor *more, int nm)
{
	sc_adapter_tensor *l = realloc(*list, (size_t)(*n + nm + 1) * sizeof(*l));
	if (!l)
		return 1;
	memcpy(l + *n, more, (size_t)nm * sizeof(*l));
	*list = l;
	*n += nm;
	return 0;
}

sc_err worker_tensors_get(const job *j, enum sc_segment_group g, worker_tensors *t)
{
	sc_segment *sg[2];
	int ns = segments(j, sg);

	memset(t, 0, sizeof(*t));
	SC_TRY(sc_adapter_new(&t->ad, &j->lc, &j->mc));
	for (int k = 0; k < ns; k++) {
		const sc_segment_spec *sp = sc_segment_get_spec(sg[k]);
		sc_adapter_tensor *more = NULL;
		int nm = 0;
		if (sc_adapter_tensors(t->ad, sp->first, sp->last, &more, &nm) ||
		    append_tensors(&t->list, &t->n, more, nm)) {
			free(more);
			return sc_errf(SC_ENOMEM, "out of memory");
		}
		free(more);
		SC_TRY(sc_segment_export(sg[k], g, t->ad));
	}
	t->nt = calloc((size_t)t->n + 1, sizeof(*t->nt));
	t->ptr = calloc((size_t)t->n + 1, sizeof(*t->ptr));
	t->shapes = calloc(2 * (size_t)t->n + 1, sizeof(*t->shapes));
	if (!t->nt || !t->ptr || !t->shapes)
		return sc_errf(SC_ENOMEM, "out of memory");
	for (int i = 0; i < t->n; i++) {
		Splitchain__NamedTensor *nt = &t->nt[i];
		splitchain__named_tensor__init(nt);
		nt->name = t->list[i].name;
		t->shapes[2 * i] = t->list[i].shape[0];
		t->shapes[2 * i + 1] = t->list[i].shape[1];
		nt->n_shape = 2;
		nt->shape = &t->shapes[2 * i];
		nt->data.len = t->list[i].numel * sizeof(float);
		nt->data.data = (uint8_t *)t->list[i].data;
		t->ptr[i] = nt;
	}
	return SC_OK;
}

void worker_tensors_free(worker_tensors *t)
{
	free(t->nt);
	free(t->ptr);
	free(t->shapes);
	free(t->list);
	sc_adapter_free(t->ad);
	memset(t, 0, sizeof(*t));
}

void worker_get_state(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	static const enum sc_segment_group groups[3] = { SC_G_LORA, SC_G_ADAM_M, SC_G_ADAM_V };
	worker *w = arg;
	Splitchain__JobRef *r = NULL;
	Splitchain__StateReply out = SPLITCHAIN__STATE_REPLY__INIT;
	worker_tensors t[3];
	sc_err rc = SC_OK;
	worker_slot *s;

	memset(t, 0, sizeof(t));
	if (UNPACK(splitchain__job_ref, r))
		return;
	if (!(s = worker_slot_lock(w, r->job_id, rep)))
		goto free;
	for (int g = 0; g < 3 && !rc; g++)
		rc = WORKER_ON_DEVICE(w, worker_tensors_get(s->job, groups[g], &t[g]));
	if (rc) {
		sc_rpc_reply_err(
		    rep, rc == SC_ENOMEM ? SC_STATUS_RESOURCE_EXHAUSTED : SC_STATUS_INTERNAL,
		    "state: %s", sc_err_detail());
		goto out;
	}
	out.n_lora = (size_t)t[0].n;
	out.lora = t[0].ptr;
	out.n_adam_m = (size_t)t[1].n;
	out.adam_m = t[1].ptr;
	out.n_adam_v = (size_t)t[2].n;
	out.adam_v = t[2].ptr;
	sc_rpc_reply_pb(rep, &out.base);
out:
	pthread_mutex_unlock(&s->mu);
free:
	for (int g = 0; g < 3; g++)
		worker_tensors_free(&t[g]);
	FREE_MSG(r);
}

/* --------------------------------------------------------------- Release */

/* Drops slot s's job when it is job_id (0: any) at placement version
 * `version` or older (0: any); 1 when it did. */
static int drop_slot(worker *w, worker_slot *s, uint64_t job_id, uint32_t version, const char *why)
{
	int dropped = 0;

	pthread_mutex_lock(&w->hold_mu);
	struct worker_holding h = s->holding;
	pthread_mutex_unlock(&w->hold_mu);
	if (!h.job || (job_id && h.job != job_id) || (version && h.version > version))
		return 0; /* not ours (any more): leave the job held alone */
	/* A Step of this job still waiting on a neighbour gives up first. The
	 * wait for the slot looks out for a close stuck in nng (the caller may
	 * be the heartbeat thread). */
	atomic_store(&s->cancel, 1);
	for (;;) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += 1;
		if (pthread_mutex_timedlock(&s->mu, &until) == 0)
			break;
		worker_check_wedged(w);
	}
	atomic_store(&s->cancel, atomic_load(&w->stop));
	if (s->job && (!job_id || s->job->id == job_id) &&
	    (!version || s->job->version <= version)) {
		sc_info("worker", "job %" PRIu64 " placement %u dropped (job slot %d): %s",
			s->job->id, s->job->version, s->index, why);
		clear_slot(w, s);
		dropped = 1;
	}
	pthread_mutex_unlock(&s->mu);
	return dropped;
}

int worker_drop(worker *w, uint64_t job_id, uint32_t version, const char *why)
{
	int dropped = 0;
	for (int i = 0; i < w->n_slots; i++)
		dropped += drop_slot(w, &w->slots[i], job_id, version, why);
	return dropped;
}

void worker_release(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	worker *w = arg;
	Splitchain__ReleaseRequest *r = NULL;
	Splitchain__Empty out = SPLITCHAIN__EMPTY__INIT;

	if (UNPACK(splitchain__release_request, r))
		return;
	worker_drop(w, r->job_id, r->placement_version, "released by the coordinator");
	sc_rpc_reply_pb(rep, &out.base);
	FREE_MSG(r);
}
