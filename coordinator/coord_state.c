/* coord_state.c — the coordinator's shared state helpers: lookups in the
 * live registry, the clocks, the per-worker RPC clients, the stall limit and
 * checkpoint-tensor views. Used by the RPC handlers (coord_rpc.c), the job
 * runners (coord_job.c) and the scheduler (coord_sched.c), so that those
 * three call down into this file and into each other only one way:
 * coord_sched -> coord_job -> coord_state, coord_rpc -> coord_job. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coord.h"

#define STALL_FLOOR_MS 5000 /* the shortest automatic stall limit */
#define STALL_FACTOR   10   /* ... and the multiple of the job's recent step time */

live_worker *coord_worker(coord *c, int64_t id)
{
	for (int i = 0; i < c->nworkers; i++)
		if (c->workers[i].id == id)
			return &c->workers[i];
	return NULL;
}

live_job *coord_live_job(coord *c, int64_t id)
{
	for (live_job *j = c->jobs; j; j = j->next)
		if (j->id == id)
			return j;
	return NULL;
}

int64_t coord_now_ms(void)
{
	return sc_db_now_ms();
}

int64_t coord_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

sc_err coord_peer_client(coord *c, const char *addr, sc_rpc_client **out)
{
	sc_rpc_client *fresh = NULL;

	for (int pass = 0;; pass++) {
		pthread_mutex_lock(&c->mu);
		for (int i = 0; i < c->npeers; i++)
			if (!strcmp(c->peers[i].addr, addr)) {
				*out = c->peers[i].cl;
				pthread_mutex_unlock(&c->mu);
				if (fresh) /* another thread made it first; ours carried no call */
					sc_rpc_client_close(fresh);
				return SC_OK;
			}
		if (fresh) {
			if (c->npeers == c->cappeers) {
				int cap = c->cappeers ? 2 * c->cappeers : 16;
				coord_peer *p = realloc(c->peers, (size_t)cap * sizeof(*p));
				if (!p) {
					pthread_mutex_unlock(&c->mu);
					sc_rpc_client_close(fresh);
					return sc_errf(SC_ENOMEM,
						       "out of memory for a worker client");
				}
				c->peers = p;
				c->cappeers = cap;
			}
			snprintf(c->peers[c->npeers].addr, sizeof(c->peers[0].addr), "%s", addr);
			c->peers[c->npeers++].cl = fresh;
			*out = fresh;
			pthread_mutex_unlock(&c->mu);
			return SC_OK;
		}
		pthread_mutex_unlock(&c->mu);
		if (pass || strlen(addr) >= sizeof(c->peers[0].addr))
			return sc_errf(SC_EINVAL, "worker address '%s' is too long", addr);
		SC_TRY(sc_rpc_client_open(&fresh, addr));
	}
}

int64_t coord_stall_limit_ms(const coord *c, const live_job *j)
{
	double ref = j->interval_s > j->predicted_s ? j->interval_s : j->predicted_s;
	int64_t auto_ms = (int64_t)(STALL_FACTOR * ref * 1000.0);
	if (c->stall_after_ms > 0)
		return c->stall_after_ms;
	return auto_ms > STALL_FLOOR_MS ? auto_ms : STALL_FLOOR_MS;
}

void coord_tensor_view(Splitchain__NamedTensor *nt, int64_t *shape, const sc_db_tensor *t)
{
	splitchain__named_tensor__init(nt);
	nt->name = (char *)t->name;
	shape[0] = t->shape[0];
	shape[1] = t->shape[1];
	nt->n_shape = 2;
	nt->shape = shape;
	nt->data.data = (uint8_t *)t->data;
	nt->data.len = (size_t)(t->shape[0] * t->shape[1]) * sizeof(float);
}
