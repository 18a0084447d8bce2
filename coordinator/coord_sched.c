/* coord_sched.c — the scheduler: notices lost workers, reserves the fastest
 * free live workers for each waiting job and hands them to a runner
 * (coord_job.c), and joins the runners that have finished. */
#include <stdlib.h>
#include <time.h>

#include "coord.h"

int64_t coord_now_ms(void)
{
	return sc_db_now_ms();
}

static int by_gflops_desc(const void *a, const void *b)
{
	const live_worker *x = *(const live_worker *const *)a, *y = *(const live_worker *const *)b;
	if (x->gflops != y->gflops)
		return x->gflops < y->gflops ? 1 : -1;
	return x->id < y->id ? -1 : x->id > y->id;
}

static int by_id(const void *a, const void *b)
{
	const live_worker *x = *(const live_worker *const *)a, *y = *(const live_worker *const *)b;
	return x->id < y->id ? -1 : x->id > y->id;
}

/* Called with mu held: starts job on the fastest free live workers, if
 * enough are free. Returns 1 when started (the runner owns job). */
static int try_start(coord *c, sc_db_job *job)
{
	live_worker *freew[1024];
	int nfree = 0, S = (int)job->stages;
	int64_t now = coord_now_ms();

	for (int i = 0; i < c->nworkers && nfree < 1024; i++) {
		live_worker *w = &c->workers[i];
		if (!w->job && w->last_seen_ms > 0 && now - w->last_seen_ms <= c->lost_after_ms)
			freew[nfree++] = w;
	}
	if (nfree < S)
		return 0;
	qsort(freew, (size_t)nfree, sizeof(*freew), by_gflops_desc);
	qsort(freew, (size_t)S, sizeof(*freew), by_id); /* the chain in id order */
	return coord_start_job(c, job, freew, S);
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

void *coord_scheduler(void *arg)
{
	coord *c = arg;
	pthread_mutex_lock(&c->mu);
	while (!c->stopping) {
		sc_db_job *jobs = NULL;
		int n = 0;
		int64_t now = coord_now_ms();

		reap(c);
		for (int i = 0; i < c->nworkers; i++) {
			live_worker *w = &c->workers[i];
			if (w->last_seen_ms > 0 && now - w->last_seen_ms > c->lost_after_ms) {
				live_job *lj = w->job ? coord_live_job(c, w->job) : NULL;
				w->last_seen_ms = 0;
				if (lj)
					coord_abort_job(c, lj);
				sc_db_worker_set_state(c->db, w->id, SC_WORKER_LOST);
				sc_db_event(c->db, 0, w->id, SC_LOG_WARN, "worker_lost",
					    "%s missed heartbeats for %d ms", w->name,
					    c->lost_after_ms);
			}
		}
		pthread_mutex_unlock(&c->mu);
		sc_db_jobs_resumable(c->db, &jobs, &n);
		pthread_mutex_lock(&c->mu);
		for (int i = 0; i < n && !c->stopping; i++) {
			sc_db_job *one;
			if (coord_live_job(c, jobs[i].id))
				continue;
			/* The runner owns its own copy of the record. */
			pthread_mutex_unlock(&c->mu);
			int got = sc_db_job_get(c->db, jobs[i].id, &one) == SC_OK;
			pthread_mutex_lock(&c->mu);
			if (got && (coord_live_job(c, one->id) || !try_start(c, one)))
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
