/* coord_job.c — the job runner: one thread per running job, started by the
 * scheduler (coord_sched.c) on the workers it reserved. The runner places
 * the layers, assigns segments, restores the last checkpoint
 * and drives the steps: Step on every stage at once, the global gradient
 * norm from the per-layer sums, Apply with the clip factor, metrics, and a
 * checkpoint every N steps in one transaction. */
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "auto_quant.h"
#include "coord_cache.h"
#include "coord_calib.h"
#include "coord_models.h"
#include "coord_run.h"
#include "placement.h"
#include "sc_codec.h"
#include "sc_config.h"
#include "sc_data.h"
#include "sc_dataplane.h"
#include "sc_dataset.h"
#include "sc_layer_quant.h"
#include "sc_quant.h"
#include "sc_rpc_pb.h"
#include "sc_train.h"
#include "sc_units.h"
#include "sc_wire.h"
#include "splitchain.pb-c.h"
#include "stage_mem.h"

static double mono_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Stage s takes job slot `slot` of live worker w (called with c->mu held);
 * slot -1: none yet (the submit-time check, which judges an idle cluster). */
static void stage_of(stage *s, const live_worker *w, int slot)
{
	s->worker_id = w->id;
	s->slot = slot < 0 ? 0 : slot;
	/* What the worker's other jobs hold already: their frozen weights (a
	 * copy this job may share is counted too: the check stays on the safe
	 * side) and their own state. */
	s->others_bytes = 0;
	for (int k = 0; slot >= 0 && k < w->n_slots; k++)
		if (k != slot && w->slot[k].job)
			s->others_bytes += w->slot[k].job_bytes;
	if (slot >= 0 && coord_jobs_on(w))
		s->others_bytes += w->base_bytes;
	s->gflops = w->gflops;
	snprintf(s->host_id, sizeof(s->host_id), "%s", w->host_id);
	s->host_cpus = w->host_cpus;
	s->threads = w->threads;
	snprintf(s->device, sizeof(s->device), "%s", w->device);
	s->memory_bytes = w->memory_bytes;
	s->memory_reserve = w->memory_reserve;
	snprintf(s->name, sizeof(s->name), "%s", w->name);
	snprintf(s->control, sizeof(s->control), "%s", w->control_addr);
	/* slot -1 reads slot 0's addresses: the submit-time check's stage
	 * stands for any slot of an idle worker */
	snprintf(s->data, sizeof(s->data), "%s", w->slot[s->slot].data_addr);
	snprintf(s->owner_addr, sizeof(s->owner_addr), "%s", w->slot[s->slot].owner_addr);
}

/* The threads the chain's CPU workers on stage i's machine run together
 * (0 when i is not a CPU worker or its machine is unknown). */
static unsigned host_threads(const runner *r, int i)
{
	unsigned n = 0;
	if (!r->st[i].threads || !r->st[i].host_id[0] || !r->st[i].host_cpus)
		return 0;
	for (int j = 0; j < r->n; j++)
		if (r->st[j].threads && !strcmp(r->st[j].host_id, r->st[i].host_id))
			n += r->st[j].threads;
	return n;
}

/* What stage i's measured rate (taken alone, when it started) is worth in
 * this chain: CPU workers that share one machine compute at once in the
 * pipeline, so when their threads outnumber its CPUs each gets its share. */
static double shared_cpus(const runner *r, int i)
{
	unsigned n = host_threads(r, i);
	return n > r->st[i].host_cpus ? (double)r->st[i].host_cpus / n : 1.0;
}

/* The memory a stage may use on stage i's worker: its device's less what
 * it keeps back, shared evenly with the chain's other CPU workers on the
 * same machine (one RAM); 0 when the worker did not say (not limited). */
static double usable_memory(const runner *r, int i)
{
	const stage *s = &r->st[i];
	double use;
	int share = 0;
	if (!s->memory_bytes)
		return 0;
	use = s->memory_bytes > s->memory_reserve + s->others_bytes
		  ? (double)(s->memory_bytes - s->memory_reserve - s->others_bytes)
		  : 1; /* all kept back or taken by other jobs: nothing fits */
	if (sc_mem_kind_of(s->device) == SC_MEM_CPU && s->host_id[0])
		for (int j = 0; j < r->n; j++)
			share += sc_mem_kind_of(r->st[j].device) == SC_MEM_CPU &&
				 !strcmp(r->st[j].host_id, s->host_id);
	return share > 1 ? use / share : use;
}

/* Appends to the placement's reason which rates shared a machine. */
static void note_shared_cpus(const runner *r, char *reason, size_t size)
{
	for (int i = 0; i < r->n; i++) {
		double f = shared_cpus(r, i);
		size_t used = strlen(reason);
		if (f >= 1.0 || used + 1 >= size)
			continue;
		snprintf(reason + used, size - used,
			 "; worker %lld's rate x %.2f: %u threads of the chain's CPU workers "
			 "share its machine's %u CPUs",
			 (long long)r->st[i].worker_id, f, host_threads(r, i), r->st[i].host_cpus);
	}
}

/* A ring's middle stages for the planner: stage k of S over layers
 * [first, last) is stage k + 1 of the S + 2 along a micro-batch's path
 * (the owner's head before, its tail after), over layers shifted by K. */
typedef struct ring_mem {
	sc_stage_mem *m;
	int K;
} ring_mem;

static double ring_mem_bytes(void *arg, int kind, int s, int stages, int first, int last)
{
	ring_mem *rm = arg;
	return sc_stage_mem_bytes(rm->m, kind, s + 1, stages + 2, first + rm->K, last + rm->K);
}

/* The planner's fetch cost (sc_place_net.fetch): the bytes a worker's
 * cache lacks of a range, each tensor over the fastest link that has it
 * (the coordinator's, or a worker of the chain that caches it). */
typedef struct fetch_cost {
	coord_cache view;
	int K; /* a ring's planned layers start at K */
} fetch_cost;

static double fetch_bytes(void *arg, int worker, int first, int last, double *bytes)
{
	fetch_cost *f = arg;
	int L = f->view.L;
	/* The range as the model numbers its layers; a ring's middle never
	 * holds the model-wide tensors. */
	double s = coord_cache_seconds(&f->view, worker, first + f->K, last + f->K);
	*bytes = coord_cache_missing(&f->view, worker, first + f->K, last + f->K);
	if (f->K && (first == 0 || last + 2 * f->K == L)) {
		*bytes -= coord_cache_missing(&f->view, worker, L, L);
		s -= coord_cache_seconds(&f->view, worker, L, L);
	}
	return s;
}

/* One try of the planner over r's workers with the stages' memory as
 * mem->mc says (plan() below). */
typedef struct plan_try {
	runner *r;
	sc_stage_mem *mem;
	sc_place_net *net;
	sc_place_worker *pw;
	int np; /* the planned (middle) stages */
	double lg, hg;
	sc_place_stage *ps;
	char *reason;
	size_t reason_size;
} plan_try;

/* Places the middle (every stage but a ring's owners) with sc_place, then
 * checks the owners' two ends against their memory. */
static sc_err place_stages(plan_try *pt)
{
	runner *r = pt->r;
	sc_place_stage *ps = pt->ps;
	sc_place_worker *pw = pt->pw;
	int o = r->n_owners, np = pt->np, L = r->mc.n_layer, K = r->ring ? r->owner_layers : 0;
	double lg = pt->lg, hg = pt->hg;
	sc_err rc;

	rc = sc_place(pw, np, np, L - 2 * K, lg, r->ring ? 0 : hg, pt->net, ps + o, pt->reason,
		      pt->reason_size);
	for (int i = o; !rc && i < r->n; i++) { /* the middle over [K, L - K) */
		ps[i].worker += o;
		ps[i].first += K;
		ps[i].last += K;
	}
	for (int i = 0; !rc && i < o; i++) {
		/* The owners' two ends, which must fit their memory too (the
		 * head's and the tail's buffers both counted). */
		int kind = (int)sc_mem_kind_of(r->st[i].device);
		double need = pt->mem
				  ? sc_stage_mem_bytes(pt->mem, kind, 0, np + 2, 0, K) +
					sc_stage_mem_bytes(pt->mem, kind, np + 1, np + 2, L - K, L)
				  : 0,
		       have = usable_memory(r, i);
		ps[i] = (sc_place_stage){ .worker = i, .first = 0, .last = K, .mem_bytes = need };
		size_t used = strlen(pt->reason);
		snprintf(pt->reason + used, pt->reason_size - used,
			 "; U-shaped: data owner %s holds layers 0-%d and %d-%d with the "
			 "embeddings and the head (%.0f MB of %.0f MB)",
			 r->st[i].name, K - 1, L - K, L - 1, need / 1e6, have / 1e6);
		if (have > 0 && need > have)
			rc = sc_errf(SC_ERANGE,
				     "the data owner %s cannot hold its %d block(s) at each end "
				     "with the embeddings and the head: it needs %.0f MB, %.0f MB "
				     "are usable on it",
				     r->st[i].name, K, need / 1e6, have / 1e6);
	}
	return rc;
}

/* What stage i of pt's plan (in chain order, ps[i] placed) needs when
 * its layers are as m->mc says: as place_stages and the planner count it. */
static double stage_need(const plan_try *pt, sc_stage_mem *m, int i)
{
	const runner *r = pt->r;
	int o = r->n_owners, L = r->mc.n_layer, K = r->ring ? r->owner_layers : 0;
	int kind = (int)sc_mem_kind_of(r->st[pt->ps[i].worker].device);
	const sc_place_stage *p = &pt->ps[i];
	if (i < o)
		return sc_stage_mem_bytes(m, kind, 0, pt->np + 2, 0, K) +
		       sc_stage_mem_bytes(m, kind, pt->np + 1, pt->np + 2, L - K, L);
	if (r->ring)
		return sc_stage_mem_bytes(m, kind, i - o + 1, pt->np + 2, p->first, p->last);
	return sc_stage_mem_bytes(m, kind, i, pt->np, p->first, p->last);
}

/* auto_quant.h's fits: a plan with the stages' layers as mc says. */
static sc_err fits_with(void *arg, const sc_model_config *mc)
{
	plan_try *pt = arg;
	pt->mem->mc = *mc;
	sc_stage_mem_reset(pt->mem);
	return place_stages(pt);
}

/* Nothing fits at the job's base: lowers layers (auto_quant.h) in the
 * order of their measured errors (coord_calib.h) until a plan fits, and
 * records the formats and each stage's bytes at the job's own base in r.
 * SC_ERANGE, saying what was tried, when even every layer at nf4 does not
 * fit or the errors cannot be measured. */
static sc_err lower_layers(plan_try *pt)
{
	runner *r = pt->r;
	int L = r->mc.n_layer, n = 0, used = 0, measured = 0;
	sc_model_config base = pt->mem->mc, low = base;
	sc_aq_step *steps = malloc((size_t)(2 * L) * sizeof(*steps));
	char first[1024];
	sc_err rc;

	snprintf(first, sizeof(first), "%s", sc_err_detail());
	if (!steps)
		return sc_errf(SC_ENOMEM, "out of memory for %d layers' lowerings", L);
	rc = coord_layer_errors(r->c->db, r->spec->model_path, r->spec->model_digest, &r->mc,
				r->quant_err[0], r->quant_err[1], &measured);
	if (rc) {
		free(steps);
		return sc_errf(SC_ERANGE,
			       "%s; lowering layers to int8 or nf4 (leave it off with "
			       "--no-auto-quant) was not possible: %s",
			       first, sc_err_detail());
	}
	sc_aq_order(&low, 0, L, r->quant_err[0], r->quant_err[1], steps, &n);
	rc = sc_aq_lower(&low, steps, n, fits_with, pt, &used);
	free(steps);
	if (rc == SC_ERANGE)
		rc = n ? sc_errf(SC_ERANGE,
				 "%s; nor with every layer's base lowered to nf4 (the planner "
				 "lowers layers to int8, then nf4, when nothing fits): %s",
				 first, sc_err_detail())
		       : sc_errf(SC_ERANGE,
				 "%s; every layer's base is nf4 already: nothing to lower", first);
	if (!rc) {
		sc_stage_mem at_base = *pt->mem;
		at_base.mc = base;
		at_base.memo = NULL;
		sc_stage_mem_reset(&at_base);
		for (int i = 0; i < r->n; i++)
			r->base_mem[i] = stage_need(pt, &at_base, i);
		sc_stage_mem_free(&at_base);
		memcpy(r->layer_quant, low.layer_quant, sizeof(r->layer_quant));
		if (sc_layer_quant_format(low.layer_quant, 0, L, r->layer_quant_text,
					  sizeof(r->layer_quant_text)))
			rc = sc_errf(SC_EINVAL,
				     "the per-layer formats of %d layers are too long to "
				     "send",
				     L);
	}
	if (!rc) {
		size_t at = strlen(pt->reason);
		snprintf(pt->reason + at, pt->reason_size - at,
			 "; nothing fit at the job's base (%s): %d of %d layers lowered in the "
			 "order of their measured error (%s), %s",
			 sc_train_base_describe(&base), sc_layer_quant_count(&low, 0, L), L,
			 measured ? "measured now" : "measured before", r->layer_quant_text);
		if (r->job)
			sc_db_event(r->c->db, r->job->id, 0, SC_LOG_INFO, "placement",
				    "base lowered to fit the workers' memory: %s",
				    r->layer_quant_text);
	}
	return rc;
}

/* Plans r's stages on its workers (sc_place): ps[0..n) in chain order, the
 * reason in reason. A ring (a data owner's job) plans its middle alone:
 * the owner, stage 0, holds [0, K) and [L - K, L) by the job's word; its
 * memory is checked all the same. */
static sc_err plan(runner *r, sc_place_stage *ps, char *reason, size_t reason_size)
{
	sc_place_worker pw[MAX_STAGES];
	sc_place_link *links = calloc((size_t)r->n * r->n, sizeof(*links));
	sc_db_link *ls = NULL;
	fetch_cost *fc = NULL;
	/* A ring's middle runs every owner's micro-batches. */
	int mb = r->tc.micro_batches * (r->n_owners > 1 ? r->n_owners : 1);
	double lg, hg, tokens = (double)r->tc.B * r->tc.T * mb;
	size_t hop;
	int nl = 0, o = r->n_owners, np = r->n - o, K = r->ring ? r->owner_layers : 0;
	sc_err rc;

	if (!links)
		return sc_errf(SC_ENOMEM, "out of memory for the links of %d workers", r->n);
	/* Links the database cannot give are planned with the default. */
	if (sc_db_links_list(r->c->db, &ls, &nl) != SC_OK)
		nl = 0;
	for (int k = 0; k < nl; k++) {
		int i = -1, j = -1;
		for (int s = o; s < r->n; s++) {
			if (r->st[s].worker_id == ls[k].from_worker)
				i = s - o;
			if (r->st[s].worker_id == ls[k].to_worker)
				j = s - o;
		}
		if (i >= 0 && j >= 0)
			links[i * np + j] = (sc_place_link){ ls[k].rtt_ms, ls[k].mbit_s };
	}
	/* A registered model: what each worker's cache lacks, each tensor over
	 * the fastest link that has it as the worker measured them (what it
	 * goes by when it fetches) — the coordinator's (else the default rate)
	 * or a peer's of this chain that caches it. */
	double *rate = NULL;
	if (r->spec->model && r->spec->model[0] && (fc = calloc(1, sizeof(*fc))) &&
	    (rate = calloc((size_t)np * (np + 1), sizeof(double)))) {
		int64_t ids[MAX_STAGES];
		for (int s = o; s < r->n; s++)
			ids[s - o] = r->st[s].worker_id;
		for (int i = 0; i < np; i++) {
			double *ri = rate + (size_t)i * (np + 1);
			ri[0] = coord_link_rate(ls, nl, ids[i], 0);
			for (int j = 0; j < np; j++)
				ri[1 + j] = j != i ? coord_link_rate(ls, nl, ids[i], ids[j]) : 0;
		}
		fc->K = K;
		if (coord_cache_view(r->c->db, r->spec->model, ids, np, r->mc.n_layer, rate,
				     &fc->view)) {
			sc_warn("coordinator", "job %lld: the workers' caches: %s",
				(long long)r->job->id, sc_err_detail());
			free(fc);
			fc = NULL;
		}
	}
	free(rate);
	free(ls);
	/* Each hop carries (tokens, C) activations forward and as many
	 * gradients back per step, in the job's wire encoding. */
	hop = sc_wire_bytes((enum sc_wire)r->tc.wire, (size_t)tokens, (size_t)r->mc.n_embd);
	if (hop == SIZE_MAX)
		hop = sc_wire_bytes(SC_WIRE_FP32, (size_t)tokens, (size_t)r->mc.n_embd);
	/* What each stage holds: the segment in the job's base format. */
	sc_stage_mem mem = { .mc = r->mc,
			     .lc = { .rank = (int)r->spec->lora->rank,
				     .alpha = r->spec->lora->alpha,
				     .targets = r->spec->lora->targets,
				     .seed = r->spec->lora->seed },
			     .B = r->tc.B,
			     .T = r->tc.T,
			     .M = mb,
			     .gpipe = r->spec->schedule == SPLITCHAIN__SCHEDULE__SCHEDULE_GPIPE,
			     .wire = r->tc.wire };
	int planned_mem = sc_train_base_format(&mem.mc, &r->tc) == SC_OK;
	int bounds[MAX_STAGES + 1], nb = 0;
	ring_mem rm = { &mem, K };
	if (r->spec->split && r->spec->split[0] &&
	    (sc_parse_split(r->spec->split, bounds, MAX_STAGES, &nb) || nb != r->n)) {
		free(links);
		return sc_errf(SC_EINVAL, "--split '%s' does not give %d stages", r->spec->split,
			       r->n);
	}
	sc_place_net net = { .links = links,
			     .hop_bytes = (double)hop,
			     .messages = mb,
			     .mem = !planned_mem ? NULL
				    : r->ring    ? ring_mem_bytes
						 : sc_stage_mem_bytes,
			     .mem_arg = r->ring ? (void *)&rm : (void *)&mem,
			     .bounds = nb ? bounds : NULL,
			     .keep_order = r->spec->n_workers > 0,
			     .fetch = fc ? fetch_bytes : NULL,
			     .fetch_arg = fc,
			     .steps = r->tc.steps - (r->job ? (double)r->job->step_done : 0) };
	for (int i = o; i < r->n; i++)
		pw[i - o] =
		    (sc_place_worker){ (uint64_t)r->st[i].worker_id,
				       r->st[i].gflops * shared_cpus(r, i), usable_memory(r, i),
				       (int)sc_mem_kind_of(r->st[i].device) };
	sc_place_costs(&r->mc, r->tc.T, (int)r->spec->lora->rank, tokens, &lg, &hg);
	plan_try pt = {
		r, planned_mem ? &mem : NULL, &net, pw, np, lg, hg, ps, reason, reason_size
	};
	memset(r->layer_quant, 0, sizeof(r->layer_quant));
	r->layer_quant_text[0] = '\0';
	rc = place_stages(&pt);
	if (rc == SC_ERANGE && planned_mem && !r->spec->no_auto_quant)
		rc = lower_layers(&pt);
	free(links);
	sc_stage_mem_free(&mem);
	if (fc)
		coord_cache_free(&fc->view);
	free(fc);
	SC_TRY(rc);
	note_shared_cpus(r, reason, reason_size);
	return SC_OK;
}

sc_err coord_fit_check(coord *c, Splitchain__SubmitRequest *spec, const sc_model_config *mc,
		       const sc_train_config *tc)
{
	live_worker *alive[1024], *owner[16] = { NULL };
	sc_place_stage ps[MAX_STAGES];
	char reason[2048];
	int n = 0, S = (int)spec->stages, o = (int)spec->n_owners, owners_found = 0;
	int64_t now = coord_now_ms();
	runner *r;
	sc_err rc;

	if (S < 1 || o > 16 || S + o > MAX_STAGES || !(r = calloc(1, sizeof(*r))))
		return SC_OK; /* the scheduler says what is wrong */
	pthread_mutex_lock(&c->mu);
	for (int k = 0; k < o; k++) /* checked by the caller */
		for (int i = 0; i < c->nworkers && !owner[k]; i++)
			if (!strcmp(c->workers[i].name, spec->owners[k]))
				owners_found += !!(owner[k] = &c->workers[i]);
	for (size_t k = 0; k < spec->n_workers; k++) { /* --workers: those, in order */
		live_worker *found = NULL;
		for (int i = 0; i < c->nworkers && !found; i++)
			if (!strcmp(c->workers[i].name, spec->workers[k]))
				found = &c->workers[i];
		if (!found) {
			pthread_mutex_unlock(&c->mu);
			free(r);
			return sc_errf(SC_ENOENT,
				       "--workers: no worker named '%s' has registered with this "
				       "coordinator",
				       spec->workers[k]);
		}
		alive[n++] = found;
	}
	for (int i = 0; !spec->n_workers && i < c->nworkers && n < 1024; i++) {
		int is_owner = 0;
		for (int k = 0; k < o; k++)
			is_owner |= owner[k] == &c->workers[i];
		if (c->workers[i].last_seen_ms > 0 && !is_owner &&
		    now - c->workers[i].last_seen_ms <= c->lost_after_ms)
			alive[n++] = &c->workers[i];
	}
	if (n >= S && owners_found == o) {
		if (!spec->n_workers)
			coord_fastest(alive, n, S); /* as the scheduler will take them */
		for (int k = 0; k < o; k++)
			stage_of(&r->st[k], owner[k], -1);
		for (int i = 0; i < S; i++)
			stage_of(&r->st[o + i], alive[i], -1);
	}
	pthread_mutex_unlock(&c->mu);
	if (n < S || owners_found != o) { /* too few to judge: the placement will */
		free(r);
		return SC_OK;
	}
	r->c = c;
	r->n = S + o;
	r->ring = o > 0;
	r->n_owners = o;
	r->owner_layers = o ? (int)spec->owner_layers : 0;
	r->spec = spec;
	r->mc = *mc;
	r->tc = *tc;
	rc = plan(r, ps, reason, sizeof(reason));
	free(r);
	return rc == SC_ERANGE || rc == SC_EINVAL ? rc : SC_OK;
}

/* Places the layers on the reserved workers, in the order and with the cuts
 * that the measured links and compute rates favour, and records the
 * placement. */
/* Stage i's part of the per-layer formats r's plan chose: its layers'
 * SPEC in spec (its tail's too, on a data owner) and why in why: each
 * lowered layer with its measured error, and its bytes at the job's base
 * and as placed. Both "" when none of its layers was lowered. */
static void stage_quant(const runner *r, int i, double placed_bytes, char *spec, size_t ssize,
			char *why, size_t wsize)
{
	const stage *s = &r->st[i];
	uint32_t rg[2][2] = { { s->first, s->last }, { s->tail_first, s->tail_last } };
	size_t at = 0;
	spec[0] = why[0] = '\0';
	for (int k = 0; k < 2; k++) {
		if (rg[k][0] >= rg[k][1])
			continue;
		at = strlen(spec);
		if (at && at + 1 < ssize && r->layer_quant[rg[k][0]])
			spec[at++] = ',';
		sc_layer_quant_format(r->layer_quant, (int)rg[k][0], (int)rg[k][1], spec + at,
				      ssize - at);
		for (uint32_t l = rg[k][0]; l < rg[k][1]; l++) {
			int f = r->layer_quant[l] ? r->layer_quant[l] - 1 : -1;
			size_t w = strlen(why);
			if (f >= 0 && w + 1 < wsize)
				snprintf(why + w, wsize - w, "%slayer %u %s (error %.4g)",
					 w ? ", " : "", l, sc_quant_name((enum sc_quant_format)f),
					 r->quant_err[f == SC_QUANT_NF4][l]);
		}
	}
	size_t w = strlen(why);
	if (w && w + 1 < wsize)
		snprintf(why + w, wsize - w,
			 ": %.1f MB at the job's base, %.1f MB lowered, %.1f MB saved; %.1f MB "
			 "usable on %s",
			 r->base_mem[i] / 1e6, placed_bytes / 1e6,
			 (r->base_mem[i] - placed_bytes) / 1e6, usable_memory(r, i) / 1e6, s->name);
}

static sc_err place(runner *r)
{
	sc_place_stage ps[MAX_STAGES];
	sc_db_stage ds[MAX_STAGES];
	stage tmp[MAX_STAGES];
	char reason[4096];

	SC_TRY(plan(r, ps, reason, sizeof(reason)));
	char(*sq)[2][1024] = calloc((size_t)r->n, sizeof(*sq));
	if (!sq)
		return sc_errf(SC_ENOMEM, "out of memory for %d stages", r->n);
	for (int i = 0; i < r->n; i++)
		tmp[i] = r->st[ps[i].worker];
	for (int i = 0; i < r->n; i++) {
		r->st[i] = tmp[i];
		r->st[i].first = (uint32_t)ps[i].first;
		r->st[i].peak_mem = 0; /* a new placement's own peaks */
		r->st[i].last = (uint32_t)ps[i].last;
		r->st[i].tail_first =
		    i < r->n_owners ? (uint32_t)(r->mc.n_layer - r->owner_layers) : 0;
		r->st[i].tail_last = i < r->n_owners ? (uint32_t)r->mc.n_layer : 0;
		ds[i] = (sc_db_stage){ .stage = (uint32_t)i,
				       .worker_id = r->st[i].worker_id,
				       .first_layer = r->st[i].first,
				       .last_layer = r->st[i].last,
				       .predicted_step_s = ps[i].predicted_s,
				       .worker_gflops = r->st[i].gflops,
				       .reason = reason,
				       .predicted_mem_bytes = (uint64_t)ps[i].mem_bytes,
				       .tail_first_layer = r->st[i].tail_first,
				       .tail_last_layer = r->st[i].tail_last };
	}
	for (int i = 0; i < r->n; i++) { /* the stages' order is final now */
		stage_quant(r, i, ps[i].mem_bytes, sq[i][0], sizeof(sq[i][0]), sq[i][1],
			    sizeof(sq[i][1]));
		ds[i].layer_quant = sq[i][0];
		ds[i].quant_reason = sq[i][1];
	}
	sc_err rc = sc_db_placement_insert(r->c->db, r->job->id, ds, r->n, &r->version);
	free(sq);
	if (rc) {
		run_db_failed(r);
		return rc;
	}
	run_db_recovered(r);
	sc_db_event(r->c->db, r->job->id, 0, SC_LOG_INFO, "placement", "version %u: %s", r->version,
		    reason);
	double predicted = 0;
	for (int i = 0; i < r->n; i++)
		if (ps[i].predicted_s > predicted)
			predicted = ps[i].predicted_s;
	pthread_mutex_lock(&r->c->mu);
	r->lj->version = r->version; /* holders of any other placement are fenced */
	r->lj->predicted_s = predicted;
	pthread_mutex_unlock(&r->c->mu);
	return SC_OK;
}

/* Assigns every stage its segment. */
static int assign(runner *r, char *err, size_t esize)
{
	Splitchain__AssignRequest req[MAX_STAGES];
	Splitchain__LoraConfig lora;
	Splitchain__OwnerData od;
	char *heads[16], *tails[16];
	uint8_t secret[SC_DP_SECRET_LEN]; /* this placement's data-plane secret */
	int bad, n = r->n, o = r->n_owners;

	if (getrandom(secret, sizeof(secret), 0) != (ssize_t)sizeof(secret)) {
		snprintf(err, esize, "no random bytes for the data-plane secret: %s",
			 strerror(errno));
		return 0;
	}
	run_lora_msg(r->spec, &lora);
	coord_owner_data(r->spec, &od);
	for (int k = 0; k < o; k++) {
		heads[k] = r->st[k].owner_addr;
		tails[k] = r->st[k].data;
	}
	for (int i = 0; i < r->n; i++) {
		/* A ring numbers its stages along the path: every owner is stage
		 * 0, the middle 1 .. n - o. */
		int st = i < o ? 0 : i - o + (o ? 1 : 0), ns = n - o + (o ? 1 : 0);
		splitchain__assign_request__init(&req[i]);
		req[i].job_id = (uint64_t)r->job->id;
		req[i].placement_version = r->version;
		req[i].slot = (uint32_t)r->st[i].slot;
		req[i].stage = (uint32_t)st;
		req[i].n_stages = (uint32_t)ns;
		req[i].model_path = (char *)r->job->model_path;
		req[i].model = r->spec->model;
		req[i].layer_quant = r->layer_quant_text;
		req[i].model_digest = r->spec->model_digest;
		req[i].first_layer = r->st[i].first;
		req[i].last_layer = r->st[i].last;
		req[i].lora = &lora;
		req[i].train = r->spec->train;
		req[i].schedule = r->spec->schedule;
		req[i].prev_data_addr = i > o && (i > 0) ? r->st[i - 1].data : "";
		req[i].next_data_addr = i >= o && i < n - 1 ? r->st[i + 1].data : "";
		req[i].ring = r->ring;
		req[i].data_secret.data = secret;
		req[i].data_secret.len = sizeof(secret);
		if (i < o) {
			req[i].tail_first_layer = r->st[i].tail_first;
			req[i].tail_last_layer = r->st[i].tail_last;
			req[i].owner_data = &od;
			req[i].owner_index = (uint32_t)i;
		}
		if (r->ring) {
			req[i].n_owners = (uint32_t)o;
			if (st == 1) {
				req[i].n_owner_head_addrs = (size_t)o;
				req[i].owner_head_addrs = heads;
			}
			if (i == n - 1) {
				req[i].n_owner_tail_addrs = (size_t)o;
				req[i].owner_tail_addrs = tails;
			}
		}
		r->st[i].method = "Worker.Assign";
		r->st[i].req = &req[i].base;
		r->st[i].desc = &splitchain__assign_reply__descriptor;
	}
	bad = run_call_all(r, ASSIGN_TIMEOUT_MS);
	if (bad >= 0)
		run_describe(&r->st[bad], bad, err, esize);
	r->eval_passes = 0;
	for (int k = 0; bad < 0 && k < o; k++) { /* the owners' held-out data, counted by them */
		size_t M = (size_t)r->tc.micro_batches;
		r->owner_eval_batches[k] = ((Splitchain__AssignReply *)r->st[k].rep)->eval_batches;
		if ((r->owner_eval_batches[k] + M - 1) / M > r->eval_passes)
			r->eval_passes = (r->owner_eval_batches[k] + M - 1) / M;
	}
	run_free_replies(r);
	memset(secret, 0, sizeof(secret));
	return bad;
}

/* Runs 0-based step s; fills the step's figures. */
static int run_step(runner *r, uint32_t s, double *loss, double *norm, float *lr, uint64_t *bytes,
		    char *err, size_t esize)
{
	size_t BT = (size_t)r->tc.B * r->tc.T, rows = BT * (size_t)r->tc.micro_batches;
	Splitchain__StepRequest req[MAX_STAGES];
	Splitchain__ApplyRequest apply = SPLITCHAIN__APPLY_REQUEST__INIT;
	Splitchain__ApplyRequest own = SPLITCHAIN__APPLY_REQUEST__INIT;
	int32_t *tokens = NULL, *targets = NULL;
	double per_layer[SC_ADAPTER_MAX_LAYERS], tail[SC_ADAPTER_MAX_LAYERS];
	double osq[2 * SC_ADAPTER_MAX_LAYERS] = { 0 };
	int o = r->n_owners, fedavg = o > 1 && r->spec->fedavg_every > 1;
	float clip;
	int bad = -1, L = 0, nt = 0;

	/* A ring's owner cuts its own batches the same way. */
	if (!r->ring && (!(tokens = malloc(rows * 4)) || !(targets = malloc(rows * 4)))) {
		snprintf(err, esize, "out of memory");
		bad = r->n;
		goto out;
	}
	for (int m = 0; !r->ring && m < r->tc.micro_batches; m++)
		sc_loader_micro_batch(r->ld, s, r->tc.micro_batches, m, r->tc.B, tokens + m * BT,
				      targets + m * BT);
	run_step_calls(r, req, s, tokens, targets, r->ring ? 0 : rows);
	for (int i = 0; i < o && o > 1; i++) /* the owners' sum, every step */
		req[i].owner_grads = !fedavg;
	bad = run_call_all(r, r->c->step_timeout_ms);
	if (bad >= 0) {
		run_describe(&r->st[bad], bad, err, esize);
		goto out;
	}
	/* The global norm sums per-layer squares in layer order, as one process
	 * does: a ring's owner reports its first layers, then its tail's; the
	 * owners hold the same layers, owner 0 speaks for them. */
	for (int i = 0; i < r->n; i++) {
		Splitchain__StepReply *sr = (Splitchain__StepReply *)r->st[i].rep;
		uint32_t head = r->st[i].last - r->st[i].first,
			 want = head + r->st[i].tail_last - r->st[i].tail_first;
		if (sr->n_layer_sumsq != want) {
			snprintf(err, esize, "stage %d reported %zu layer sums for %u layers", i,
				 sr->n_layer_sumsq, want);
			bad = i;
			goto out;
		}
		for (size_t k = 0; (i == 0 || i >= o) && k < sr->n_layer_sumsq; k++) {
			if (k < head)
				per_layer[L++] = sr->layer_sumsq[k];
			else
				tail[nt++] = sr->layer_sumsq[k];
		}
		/* Averaged owners: each updates from its own gradient, scaled to
		 * its own micro-batches' mean (o x); their squares, averaged. */
		for (size_t k = 0; fedavg && i < o && k < sr->n_layer_sumsq; k++)
			osq[k] += (double)o * o * sr->layer_sumsq[k] / o;
		bytes[i] = sr->bytes_sent;
		if (i == (r->ring ? 0 : r->n - 1))
			*loss = sr->loss;
		if (sr->peak_mem_bytes > r->st[i].peak_mem) { /* recorded as it grows */
			r->st[i].peak_mem = sr->peak_mem_bytes;
			if (sc_db_placement_peak(r->c->db, r->job->id, r->version, (uint32_t)i,
						 sr->peak_mem_bytes))
				sc_warn("coordinator", "job %lld: %s", (long long)r->job->id,
					sc_err_detail());
		}
	}
	if (o > 1) { /* the owners' loss; their sum (or each one's own), and its squares */
		int K = r->owner_layers;
		if ((bad = fedavg
			       ? run_owner_loss(r, loss, err, esize)
			       : run_owner_grads(r, s, loss, osq, 2 * (size_t)K, err, esize)) >= 0)
			goto out;
		memcpy(per_layer, osq, (size_t)K * sizeof(double));
		memcpy(tail, osq + K, (size_t)K * sizeof(double));
	}
	run_free_replies(r);
	for (int k = 0; k < nt; k++)
		per_layer[L++] = tail[k];
	*norm = sc_global_norm(per_layer, L);
	clip = sc_clip_factor(*norm, r->tc.grad_clip);
	*lr = sc_lr_at(&r->tc, (int)s);
	apply.job_id = (uint64_t)r->job->id;
	apply.step = s;
	apply.lr = *lr;
	apply.clip_factor = clip;
	own = apply;
	own.clip_factor = fedavg ? clip * (float)o : clip;
	for (int i = 0; i < r->n; i++) {
		r->st[i].method = "Worker.Apply";
		r->st[i].req = i < o ? &own.base : &apply.base;
		r->st[i].desc = &splitchain__empty__descriptor;
	}
	bad = run_call_all(r, r->c->step_timeout_ms);
	if (bad >= 0)
		run_describe(&r->st[bad], bad, err, esize);
out:
	run_free_replies(r);
	free(tokens);
	free(targets);
	return bad;
}

/* Called with mu held: a step completed. The interval since the last
 * progress (the checkpoint before it included) sets the stall limit. */
static void progress(live_job *lj)
{
	int64_t now = coord_mono_ms();
	double dt = (double)(now - lj->progress_ms) / 1000.0;
	lj->interval_s = lj->interval_s > 0 ? 0.8 * lj->interval_s + 0.2 * dt : dt;
	if (dt > lj->interval_s) /* one slow interval (a checkpoint) counts at once */
		lj->interval_s = dt;
	lj->progress_ms = now;
}

/* Ends the run: frees the workers and records how the job ended. */
static void finish(runner *r, enum sc_job_state state, const char *error)
{
	coord *c = r->c;
	if (sc_db_job_set_state(c->db, r->job->id, state, error))
		sc_error("coordinator", "job %lld: recording state %s: %s", (long long)r->job->id,
			 sc_job_state_name(state), sc_err_detail());
	sc_db_event(c->db, r->job->id, 0, state == SC_JOB_DONE ? SC_LOG_INFO : SC_LOG_WARN,
		    "job_state", "%s%s%s", sc_job_state_name(state), error && *error ? ": " : "",
		    error ? error : "");
	sc_info("coordinator", "job %lld %s%s%s", (long long)r->job->id, sc_job_state_name(state),
		error && *error ? ": " : "", error ? error : "");
}

/* Asks every stage to drop the job and its data-plane sockets, on fresh
 * clients (the run's own may have been aborted), so that no dialer of this
 * placement lingers into the next one. Best effort: a dead worker has
 * nothing left to drop. */
static void release(runner *r)
{
	Splitchain__ReleaseRequest ref = SPLITCHAIN__RELEASE_REQUEST__INIT;
	int lost[MAX_STAGES];

	pthread_mutex_lock(&r->c->mu);
	r->clients_live = 0; /* the scheduler no longer aborts them */
	/* A worker counted lost would only make the release wait out its
	 * timeout; it is fenced when its heartbeats come back. */
	for (int i = 0; i < r->n; i++) {
		live_worker *lw = coord_worker(r->c, r->st[i].worker_id);
		lost[i] = !lw || lw->last_seen_ms == 0;
	}
	pthread_mutex_unlock(&r->c->mu);
	ref.job_id = (uint64_t)r->job->id;
	ref.placement_version = r->version; /* never a newer placement's */
	for (int i = 0; i < r->n; i++) {
		/* No call of this run is in flight (call_all joins them): the
		 * clients, aborted or not, take calls again. */
		if (r->st[i].cl)
			sc_rpc_client_rearm(r->st[i].cl);
		r->st[i].method = lost[i] || !r->st[i].cl ? NULL : "Worker.Release";
		r->st[i].req = &ref.base;
		r->st[i].desc = &splitchain__empty__descriptor;
	}
	run_call_all(r, RELEASE_TIMEOUT_MS);
	run_free_replies(r);
	/* A worker that answered holds nothing of this job any more: free at
	 * once, not only after its next heartbeat says so. */
	pthread_mutex_lock(&r->c->mu);
	for (int i = 0; i < r->n; i++) {
		live_worker *lw = coord_worker(r->c, r->st[i].worker_id);
		live_slot *sl = lw && r->st[i].slot < lw->n_slots ? &lw->slot[r->st[i].slot] : NULL;
		if (sl && r->st[i].method && !r->st[i].rc && r->st[i].status == SC_STATUS_OK &&
		    sl->held_job == r->job->id && sl->held_version <= r->version)
			sl->held_job = 0;
	}
	pthread_mutex_unlock(&r->c->mu);
}

static void *run_job(void *arg)
{
	runner *r = arg;
	coord *c = r->c;
	char err[1024] = "";
	uint32_t start = 0;
	int bad = -1;
	enum sc_job_state end = SC_JOB_QUEUED;

	r->spec = splitchain__submit_request__unpack(NULL, r->job->spec_len, r->job->spec);
	if (!r->spec || !r->spec->lora || !r->spec->train) {
		snprintf(err, sizeof(err), "the stored job specification does not decode");
		end = SC_JOB_FAILED;
		goto out;
	}
	sc_wire_train_config(&r->tc, r->spec->train);
	r->ring = r->spec->n_owners > 0;
	r->n_owners = (int)r->spec->n_owners;
	r->owner_layers = r->spec->owner_layers ? (int)r->spec->owner_layers : 1;
	sc_tokenizer *tok = NULL;
	sc_job_data jd = { 0 };
	sc_data_spec dspec = {
		.path = r->job->data_path,
		.eval_path = r->spec->eval_data_path,
		.eval_split = r->spec->eval_split,
		.skip_bad_lines = r->spec->skip_bad_lines,
		.no_pack = r->spec->no_pack,
		.no_cache = r->spec->no_data_cache,
		.T = r->tc.T,
		.seed = r->tc.seed,
	};
	/* A data owner's data is read by the owner alone (docs/privacy.md). */
	int data_bad = coord_model_config(c, r->spec->model, r->job->model_path, &r->mc) ||
		       (!r->ring &&
			(sc_dataset_tokenizer(&tok, r->job->model_path, r->spec->tokenizer_path) ||
			 sc_job_data_load(&jd, &dspec, tok, r->mc.vocab_size, r->mc.eos_token_id)));
	sc_tokenizer_free(tok);
	r->tk = jd.train;
	r->eval = jd.eval;
	if (!data_bad && jd.st.bad_lines)
		sc_db_event(c->db, r->job->id, 0, SC_LOG_WARN, "data_bad_lines",
			    "%zu malformed JSONL line(s) of %s skipped", jd.st.bad_lines,
			    r->job->data_path);
	if (data_bad || (!r->ring && sc_loader_new(&r->ld, r->tk, r->tc.T, r->tc.seed)) ||
	    place(r)) {
		snprintf(err, sizeof(err), "%s", sc_err_detail());
		/* A placement the database could not record (a full disk) is
		 * not the job's fault: it waits in the queue. */
		end = r->db_failed ? SC_JOB_QUEUED : SC_JOB_FAILED;
		goto out;
	}
	for (int i = 0; i < r->n; i++)
		sc_db_worker_set_state(c->db, r->st[i].worker_id, SC_WORKER_BUSY);
	for (int i = 0; i < r->n; i++)
		if (coord_peer_client(c, r->st[i].control, &r->st[i].cl)) {
			snprintf(err, sizeof(err), "%s", sc_err_detail());
			goto out;
		}
	pthread_mutex_lock(&c->mu);
	r->clients_live = 1;
	pthread_mutex_unlock(&c->mu);
	if ((bad = assign(r, err, sizeof(err))) >= 0 ||
	    (bad = run_restore(r, &start, err, sizeof(err))) >= 0) {
		end = bad < r->n && run_permanent(&r->st[bad]) ? SC_JOB_FAILED : SC_JOB_QUEUED;
		goto out;
	}
	sc_db_job_set_state(c->db, r->job->id, SC_JOB_RUNNING, NULL);
	pthread_mutex_lock(&c->mu);
	r->lj->step = start;
	r->lj->running = 1; /* the stall clock starts */
	r->lj->progress_ms = coord_mono_ms();
	pthread_mutex_unlock(&c->mu);
	sc_info("coordinator", "job %lld running on %d stage(s) from step %u",
		(long long)r->job->id, r->n, start);
	for (uint32_t s = start; s < (uint32_t)r->tc.steps; s++) {
		uint64_t bytes[MAX_STAGES] = { 0 };
		double loss = 0, norm = 0, t0 = mono_s(), secs;
		float lr = 0;
		int every = (int)r->spec->checkpoint_every;

		if (atomic_load(&r->lj->cancel) || atomic_load(&c->stopping)) {
			end = atomic_load(&r->lj->cancel) ? SC_JOB_CANCELLED : SC_JOB_QUEUED;
			goto out;
		}
		if ((bad = run_step(r, s, &loss, &norm, &lr, bytes, err, sizeof(err))) >= 0) {
			end = bad < r->n && run_permanent(&r->st[bad]) ? SC_JOB_FAILED
								       : SC_JOB_QUEUED;
			goto out;
		}
		/* Owners that update from their own data meet every K steps,
		 * and before every checkpoint (which keeps one owner's state). */
		uint32_t K = r->spec->fedavg_every;
		if (r->n_owners > 1 && K > 1 &&
		    ((s + 1) % K == 0 || (s + 1) % (uint32_t)every == 0 ||
		     s + 1 == (uint32_t)r->tc.steps)) {
			if ((bad = run_owner_average(r, err, sizeof(err))) >= 0) {
				end = SC_JOB_QUEUED;
				goto out;
			}
			sc_db_event(c->db, r->job->id, 0, SC_LOG_INFO, "owners_averaged",
				    "after step %u: the %d owners' adapters and AdamW moments "
				    "averaged",
				    s + 1, r->n_owners);
		}
		secs = mono_s() - t0;
		sc_db_metric m = { .step = s + 1,
				   .loss = loss,
				   .lr = lr,
				   .grad_norm = norm,
				   .tokens_per_s = (double)r->tc.B * r->tc.T * r->tc.micro_batches *
						   (r->n_owners > 1 ? r->n_owners : 1) / secs,
				   .step_s = secs,
				   .bytes_per_hop = bytes,
				   .n_hops = r->n,
				   .wire = sc_wire_name(r->tc.wire) };
		sc_db_metric_insert(c->db, r->job->id, &m);
		pthread_mutex_lock(&c->mu);
		r->lj->step = s + 1;
		r->lj->loss = loss;
		r->lj->tokens_per_s = m.tokens_per_s;
		r->lj->step_s = r->lj->step_s > 0 ? 0.7 * r->lj->step_s + 0.3 * secs : secs;
		progress(r->lj);
		pthread_mutex_unlock(&c->mu);
		if ((r->eval || r->eval_passes) &&
		    (s + 1 == (uint32_t)r->tc.steps ||
		     (r->spec->eval_every && (s + 1) % r->spec->eval_every == 0))) {
			double el;
			size_t en;
			if ((bad = run_eval(r, s + 1, &el, &en, err, sizeof(err))) >= 0) {
				end = bad < r->n && run_permanent(&r->st[bad]) ? SC_JOB_FAILED
									       : SC_JOB_QUEUED;
				goto out;
			}
			sc_db_metric_eval(c->db, r->job->id, s + 1, el, en);
		}
		if ((s + 1) % (uint32_t)every == 0 || s + 1 == (uint32_t)r->tc.steps) {
			if ((bad = run_checkpoint(r, s + 1, loss, err, sizeof(err))) >= 0) {
				end = SC_JOB_QUEUED;
				goto out;
			}
		} else {
			sc_db_job_progress(c->db, r->job->id, s + 1, loss);
		}
	}
	end = SC_JOB_DONE;
out:
	pthread_mutex_lock(&c->mu);
	int stalled = r->lj->stalled;
	double stalled_for = r->lj->stalled_for_s, limit = coord_stall_limit_ms(c, r->lj) / 1000.0;
	r->lj->running = 0;
	pthread_mutex_unlock(&c->mu);
	if (stalled && end == SC_JOB_QUEUED) {
		sc_db_event(c->db, r->job->id, 0, SC_LOG_WARN, "job_stalled",
			    "no step for %.1f s (limit %.1f s): interrupted, resuming from the "
			    "last checkpoint",
			    stalled_for, limit);
		sc_warn("coordinator", "job %lld: no step for %.1f s: interrupted",
			(long long)r->job->id, stalled_for);
	}
	if (end == SC_JOB_QUEUED && !atomic_load(&c->stopping)) {
		/* A worker was lost or failed: wait for workers and resume from
		 * the last checkpoint. */
		sc_db_event(c->db, r->job->id, bad >= 0 && bad < r->n ? r->st[bad].worker_id : 0,
			    SC_LOG_WARN, "job_interrupted", "%s; back to the queue", err);
		sc_warn("coordinator", "job %lld interrupted: %s", (long long)r->job->id, err);
		sc_db_job_set_state(c->db, r->job->id, SC_JOB_QUEUED, NULL);
	} else if (end != SC_JOB_QUEUED) {
		finish(r, end, end == SC_JOB_FAILED ? err : NULL);
	}
	/* release() reuses the stages' call slots: judge the failure first. */
	int bad_transient = bad >= 0 && bad < r->n && !run_permanent(&r->st[bad]);
	release(r);
	if (r->db_failed)
		run_db_backoff(r);
	enum sc_worker_state after[MAX_STAGES];
	pthread_mutex_lock(&c->mu);
	for (int i = 0; i < r->n; i++) {
		live_worker *lw = coord_worker(c, r->st[i].worker_id);
		after[i] = SC_WORKER_LOST;
		if (!lw)
			continue;
		if (r->st[i].slot < lw->n_slots && lw->slot[r->st[i].slot].job == r->job->id)
			lw->slot[r->st[i].slot].job = 0;
		/* A worker that failed a call is only trusted again once it heartbeats. */
		if (bad == i && bad_transient)
			lw->last_seen_ms = 0;
		after[i] = lw->last_seen_ms <= 0 ? SC_WORKER_LOST
			   : coord_jobs_on(lw)   ? SC_WORKER_BUSY
						 : SC_WORKER_IDLE;
	}
	r->lj->done = 1;
	r->lj->runner = NULL;
	r->clients_live = 0;
	pthread_cond_broadcast(&c->wake);
	pthread_mutex_unlock(&c->mu);
	for (int i = 0; i < r->n; i++)
		sc_db_worker_set_state(c->db, r->st[i].worker_id, after[i]);
	if (r->spec)
		splitchain__submit_request__free_unpacked(r->spec, NULL);
	sc_loader_free(r->ld);
	sc_tokens_free(r->tk);
	sc_tokens_free(r->eval);
	free(r->job);
	free(r);
	return NULL;
}

int coord_start_job(coord *c, sc_db_job *job, live_worker *const *w, int n)
{
	runner *r;
	live_job *lj;

	if (n < 1 || n > MAX_STAGES)
		return 0;
	r = calloc(1, sizeof(*r));
	lj = calloc(1, sizeof(*lj));
	if (!r || !lj) {
		free(r);
		free(lj);
		return 0;
	}
	r->c = c;
	r->lj = lj;
	r->job = job;
	r->n = n;
	for (int i = 0; i < n; i++) {
		int k = coord_slot_of(w[i], 0);
		if (k < 0) { /* the scheduler hands over workers with a free slot */
			while (i-- > 0)
				w[i]->slot[r->st[i].slot].job = 0;
			free(lj);
			free(r);
			return 0;
		}
		stage_of(&r->st[i], w[i], k);
		w[i]->slot[k].job = job->id;
	}
	lj->id = job->id;
	lj->runner = r;
	lj->steps = job->steps;
	lj->step = job->step_done;
	lj->next = c->jobs;
	c->jobs = lj;
	if (pthread_create(&lj->thread, NULL, run_job, r) != 0) {
		c->jobs = lj->next;
		for (int i = 0; i < n; i++)
			w[i]->slot[r->st[i].slot].job = 0;
		free(lj);
		free(r);
		return 0;
	}
	return 1;
}

void coord_abort_job(coord *c, live_job *j)
{
	if (!j->done && j->runner)
		run_abort_locked(j->runner);
}
