/* coord_sched.c — the scheduler: notices lost workers and stuck jobs,
 * reserves the fastest free live workers for each waiting job and hands
 * them to a runner (coord_job.c), and joins the runners that have
 * finished. What it decides under c->mu it records in the database after
 * releasing it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coord.h"
#include "coord_cache.h"
#include "db_models.h"
#include "placement.h"
#include "sc_config.h"

/* A registered model's job: what each live worker would fetch of an even
 * share of it and how fast, and the share's compute — for choosing the
 * workers (sc_place_pick). n 0: no such job, the fastest are taken. */
typedef struct pick_hint {
	int n;
	int64_t id[1024];
	double fetch[1024], mbit[1024];
	double share_gflop, steps;
} pick_hint;

/* Fills *h for job (called without mu); leaves h->n 0 when the job names
 * no registered model or anything is missing (the fastest then). */
static void hint_of(coord *c, const sc_db_job *job, pick_hint *h)
{
	Splitchain__SubmitRequest *r =
	    splitchain__submit_request__unpack(NULL, job->spec_len, job->spec);
	sc_db_model *m = NULL;
	sc_db_link *ls = NULL;
	sc_model_config mc;
	coord_cache view;
	int nl = 0, S = (int)job->stages;

	h->n = 0;
	if (!r || !r->model || !r->model[0] || !r->train || !r->lora || S < 1 ||
	    sc_db_model_get(c->db, r->model, &m) ||
	    sc_config_parse(&mc, m->config_json, strlen(m->config_json)))
		goto out;
	double lg, hg, tokens = (double)r->train->batch * r->train->seq * r->train->micro_batches;
	sc_place_costs(&mc, (int)r->train->seq, (int)r->lora->rank, tokens, &lg, &hg);
	h->share_gflop = (lg * mc.n_layer + hg) / S;
	h->steps = job->steps > job->step_done ? (double)(job->steps - job->step_done) : 1;
	pthread_mutex_lock(&c->mu);
	int64_t now = coord_now_ms();
	for (int i = 0; i < c->nworkers && h->n < 1024; i++)
		if (c->workers[i].last_seen_ms > 0 &&
		    now - c->workers[i].last_seen_ms <= c->lost_after_ms)
			h->id[h->n++] = c->workers[i].id;
	pthread_mutex_unlock(&c->mu);
	if (!h->n || coord_cache_view(c->db, r->model, h->id, h->n, mc.n_layer, NULL, &view)) {
		h->n = 0;
		goto out;
	}
	sc_db_links_list(c->db, &ls, &nl);
	for (int i = 0; i < h->n; i++) {
		h->fetch[i] = coord_cache_missing(&view, i, 0, mc.n_layer) / S;
		h->mbit[i] = coord_link_rate(ls, nl, h->id[i], 0); /* 0: the default rate */
	}
	coord_cache_free(&view);
out:
	free(ls);
	free(m);
	if (r)
		splitchain__submit_request__free_unpacked(r, NULL);
}

/* Called with mu held: moves the k workers of w[0..n) the job should take
 * to its front. By tiers — workers that are no data owners before owners,
 * then those serving fewer jobs — and within a tier the cheapest by h
 * (sc_place_pick), else the fastest. */
static void choose(live_worker **w, int n, int k, const pick_hint *h);

/* Workers that are no data owners first (an owner's machine is its own,
 * lent to others' chains only when nothing else is free), then those that
 * serve fewer jobs (an idle worker before a shared one), then the fastest. */
static int by_gflops_desc(const void *a, const void *b)
{
	const live_worker *x = *(const live_worker *const *)a, *y = *(const live_worker *const *)b;
	if (x->data_owner != y->data_owner)
		return x->data_owner - y->data_owner;
	if (coord_jobs_on(x) != coord_jobs_on(y))
		return coord_jobs_on(x) - coord_jobs_on(y);
	if (x->gflops != y->gflops)
		return x->gflops < y->gflops ? 1 : -1;
	return x->id < y->id ? -1 : x->id > y->id;
}

static int by_id(const void *a, const void *b)
{
	const live_worker *x = *(const live_worker *const *)a, *y = *(const live_worker *const *)b;
	return x->id < y->id ? -1 : x->id > y->id;
}

/* Called with mu held: whether w is alive and has a free job slot. */
static int usable(const coord *c, const live_worker *w, int64_t now)
{
	return w->last_seen_ms > 0 && now - w->last_seen_ms <= c->lost_after_ms &&
	       coord_slot_of(w, 0) >= 0;
}

/* Called with mu held: how many workers are alive with a free job slot. */
static int usable_count(const coord *c)
{
	int n = 0;
	int64_t now = coord_now_ms();
	for (int i = 0; i < c->nworkers; i++)
		n += usable(c, &c->workers[i], now);
	return n;
}

/* Called with mu held: the live worker called name with a free job slot,
 * or NULL. */
static live_worker *free_named(coord *c, const char *name, int64_t now)
{
	for (int k = 0; k < c->nworkers; k++) {
		live_worker *w = &c->workers[k];
		if (strcmp(w->name, name))
			continue;
		return usable(c, w, now) ? w : NULL;
	}
	return NULL;
}

/* Called with mu held: the workers job names (submit --workers), in chain
 * order, into w when every one is free; returns how many it names (0: any
 * workers will do), or -1 while one of them is busy, lost or unknown.
 * owner[0 .. *n_owners) = its data owners (submit --owner) when it has them
 * and they are free; while one is not, -1: the job waits for it, as its
 * data lives nowhere else. */
static int named_workers(coord *c, const sc_db_job *job, int64_t now, live_worker **w,
			 live_worker **owner, int *n_owners)
{
	Splitchain__SubmitRequest *r =
	    splitchain__submit_request__unpack(NULL, job->spec_len, job->spec);
	int n = 0;
	*n_owners = 0;
	if (!r)
		return 0; /* the runner reports the spec as unreadable */
	for (size_t i = 0; i < r->n_workers && n >= 0; i++) {
		live_worker *found = free_named(c, r->workers[i], now);
		if (!found)
			n = -1;
		else
			w[n++] = found;
	}
	for (size_t k = 0; k < r->n_owners && n >= 0; k++)
		if (!(owner[k] = free_named(c, r->owners[k], now)))
			n = -1;
	*n_owners = r->n_owners <= 16 ? (int)r->n_owners : 0;
	splitchain__submit_request__free_unpacked(r, NULL);
	return n;
}

/* Called with mu held: starts job on the fastest free live workers (or
 * the ones it names), if enough are free. Returns 1 when started (the
 * runner owns job). */
static int try_start(coord *c, sc_db_job *job, const pick_hint *h)
{
	live_worker *freew[1024], *owner[16];
	int nfree = 0, S = (int)job->stages, o = 0;
	int64_t now = coord_now_ms();
	int named = named_workers(c, job, now, freew + 16, owner, &o);

	if (named < 0)
		return 0; /* waits for the workers it names */
	if (named > 0)
		return named == S && coord_start_job(c, job, freew + 16, S);

	/* Free: alive, with a job slot reserved by no runner and holding
	 * nothing — a slot still holding an older placement is fenced first
	 * (coord_rpc.c). A data owners' job: the owners first, the middle from
	 * the others. */
	for (int i = 0; i < c->nworkers && nfree < 1024 - 16; i++) {
		live_worker *w = &c->workers[i];
		int is_owner = 0;
		for (int k = 0; k < o; k++)
			is_owner |= owner[k] == w;
		if (!is_owner && usable(c, w, now))
			freew[16 + nfree++] = w;
	}
	if (nfree < S)
		return 0;
	choose(freew + 16, nfree, S, h);
	for (int k = 0; k < o; k++)
		freew[16 - o + k] = owner[k];
	return coord_start_job(c, job, freew + 16 - o, S + o);
}

void coord_fastest(live_worker **w, int n, int k)
{
	qsort(w, (size_t)n, sizeof(*w), by_gflops_desc);
	qsort(w, (size_t)k, sizeof(*w), by_id); /* the chain in id order */
}

static void choose(live_worker **w, int n, int k, const pick_hint *h)
{
	int taken = 0;
	qsort(w, (size_t)n, sizeof(*w), by_gflops_desc); /* tiers, then the fastest */
	while (h && h->n && taken < k) {
		int end = taken, pick[1024];
		double gf[1024], fetch[1024], mbit[1024];
		while (end < n && w[end]->data_owner == w[taken]->data_owner &&
		       coord_jobs_on(w[end]) == coord_jobs_on(w[taken]))
			end++;
		for (int i = taken; i < end; i++) {
			gf[i - taken] = w[i]->gflops;
			fetch[i - taken] = 0;
			mbit[i - taken] = 0;
			for (int j = 0; j < h->n; j++)
				if (h->id[j] == w[i]->id) {
					fetch[i - taken] = h->fetch[j];
					mbit[i - taken] = h->mbit[j];
				}
		}
		int want = k - taken < end - taken ? k - taken : end - taken;
		sc_place_pick(gf, fetch, mbit, end - taken, want, h->share_gflop, h->steps, pick);
		live_worker *tier[1024];
		memcpy(tier, w + taken, (size_t)(end - taken) * sizeof(*w));
		int at = taken;
		for (int i = 0; i < want; i++) /* the chosen first, in their order */
			w[at++] = tier[pick[i]];
		for (int i = 0; i < end - taken; i++) {
			int chosen = 0;
			for (int j = 0; j < want; j++)
				chosen |= pick[j] == i;
			if (!chosen)
				w[at++] = tier[i];
		}
		taken += want;
	}
	qsort(w, (size_t)k, sizeof(*w), by_id); /* the chain in id order */
}

/* Called with mu held: joins finished runners. */
static void reap(coord *c)
{
	for (live_job **p = &c->jobs; *p;) {
		live_job *j = *p;
		if (j->done) {
			*p = j->next;
			pthread_mutex_unlock(&c->mu);
			pthread_join(j->thread, NULL);
			pthread_mutex_lock(&c->mu);
			free(j);
		} else {
			p = &j->next;
		}
	}
}

/* A worker found lost, recorded after mu is released. */
typedef struct lost_worker {
	int64_t id;
	char name[128];
} lost_worker;

/* Called with mu held: marks workers silent for longer than lost-after as
 * lost and aborts their jobs' calls; *out = new array of *n to record
 * (NULL when none or out of memory: then only the record is skipped). */
static void find_lost(coord *c, int64_t now, lost_worker **out, int *n)
{
	*out = NULL;
	*n = 0;
	for (int i = 0; i < c->nworkers; i++) {
		live_worker *w = &c->workers[i];
		if (w->last_seen_ms <= 0 || now - w->last_seen_ms <= c->lost_after_ms)
			continue;
		w->last_seen_ms = 0;
		for (int k = 0; k < w->n_slots; k++) {
			live_job *lj = w->slot[k].job ? coord_live_job(c, w->slot[k].job) : NULL;
			if (lj)
				coord_abort_job(c, lj);
		}
		if (!*out)
			*out = calloc((size_t)c->nworkers, sizeof(**out));
		if (*out) {
			(*out)[*n].id = w->id;
			snprintf((*out)[*n].name, sizeof((*out)[*n].name), "%s", w->name);
			(*n)++;
		}
	}
}

/* Called with mu held: interrupts running jobs whose step has not
 * advanced for their stall limit; their runners record why. */
static void find_stalled(coord *c)
{
	int64_t now = coord_mono_ms();
	for (live_job *j = c->jobs; j; j = j->next) {
		if (j->done || !j->running || j->stalled)
			continue;
		int64_t quiet = now - j->progress_ms, limit = coord_stall_limit_ms(c, j);
		if (quiet <= limit)
			continue;
		j->stalled = 1;
		j->stalled_for_s = (double)quiet / 1000.0;
		coord_abort_job(c, j);
	}
}

void *coord_scheduler(void *arg)
{
	coord *c = arg;
	pick_hint *hint = malloc(sizeof(*hint)); /* NULL: the fastest workers */
	pthread_mutex_lock(&c->mu);
	while (!atomic_load(&c->stopping)) {
		sc_db_job *jobs = NULL;
		lost_worker *lost = NULL;
		int n = 0, nlost = 0;

		reap(c);
		find_lost(c, coord_now_ms(), &lost, &nlost);
		find_stalled(c);
		pthread_mutex_unlock(&c->mu);
		for (int i = 0; i < nlost; i++) {
			sc_db_worker_set_state(c->db, lost[i].id, SC_WORKER_LOST);
			sc_db_event(c->db, 0, lost[i].id, SC_LOG_WARN, "worker_lost",
				    "%s missed heartbeats for %d ms", lost[i].name,
				    c->lost_after_ms);
		}
		free(lost);
		sc_db_jobs_resumable(c->db, &jobs, &n);
		pthread_mutex_lock(&c->mu);
		for (int i = 0; i < n && !atomic_load(&c->stopping); i++) {
			sc_db_job *one;
			if (coord_live_job(c, jobs[i].id))
				continue;
			/* The runner owns its own copy of the record. */
			pthread_mutex_unlock(&c->mu);
			int got = sc_db_job_get(c->db, jobs[i].id, &one) == SC_OK;
			pthread_mutex_lock(&c->mu);
			/* Which workers to take is a question only when more
			 * are free than the job needs: the database is read
			 * for it then, not every pass a job waits. */
			if (hint)
				hint->n = 0;
			if (got && one->spec_len && hint && usable_count(c) > (int)one->stages) {
				pthread_mutex_unlock(&c->mu);
				hint_of(c, one, hint);
				pthread_mutex_lock(&c->mu);
			}
			if (got && (coord_live_job(c, one->id) || !try_start(c, one, hint)))
				free(one);
		}
		free(jobs);
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 300 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&c->wake, &c->mu, &ts);
	}
	pthread_mutex_unlock(&c->mu);
	free(hint);
	return NULL;
}

void coord_join_jobs(coord *c)
{
	/* Runners see c->stopping at their next step boundary. */
	pthread_mutex_lock(&c->mu);
	while (c->jobs) {
		reap(c);
		if (c->jobs) {
			pthread_mutex_unlock(&c->mu);
			struct timespec ts = { 0, 50 * 1000000L };
			nanosleep(&ts, NULL);
			pthread_mutex_lock(&c->mu);
		}
	}
	pthread_mutex_unlock(&c->mu);
}
