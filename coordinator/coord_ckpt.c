/* coord_ckpt.c — a runner's restore from and writing of checkpoints: every
 * stage's adapters and AdamW moments, keyed by global layer, in one SQLite
 * transaction. */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coord_run.h"

/* Restores every stage from the job's newest checkpoint, if any; *start =
 * the steps it holds. */
int run_restore(runner *r, uint32_t *start, char *err, size_t esize)
{
	Splitchain__RestoreRequest req[MAX_STAGES];
	Splitchain__NamedTensor *nts = NULL, **lists = NULL;
	int64_t(*shapes)[2] = NULL;
	sc_db_checkpoint *ck = NULL;
	size_t *count[3];
	int bad = -1;
	sc_err rc;

	*start = 0;
	rc = sc_db_checkpoint_latest(r->c->db, r->job->id, &ck);
	if (rc == SC_ENOENT)
		return -1; /* a fresh job: workers start from the seeded init */
	if (rc) {
		snprintf(err, esize, "reading the checkpoint: %s", sc_err_detail());
		return r->n; /* not a stage's fault */
	}
	nts = calloc((size_t)ck->n_tensors + 1, sizeof(*nts));
	/* Every owner of a ring takes the owners' layers: as many lists. */
	lists = calloc((size_t)ck->n_tensors * (size_t)(r->n_owners > 1 ? r->n_owners : 1) +
			   3 * (size_t)r->n + 1,
		       sizeof(*lists));
	shapes = calloc((size_t)ck->n_tensors + 1, sizeof(*shapes));
	if (!nts || !lists || !shapes) {
		snprintf(err, esize, "out of memory");
		bad = r->n;
		goto out;
	}
	/* Each stage's request lists its layers' tensors, by kind, in file order. */
	Splitchain__NamedTensor **cursor = lists;
	for (int i = 0; i < r->n; i++) {
		splitchain__restore_request__init(&req[i]);
		req[i].job_id = (uint64_t)r->job->id;
		Splitchain__NamedTensor ***dst[3] = { &req[i].lora, &req[i].adam_m,
						      &req[i].adam_v };
		count[0] = &req[i].n_lora;
		count[1] = &req[i].n_adam_m;
		count[2] = &req[i].n_adam_v;
		for (int kind = 0; kind < 3; kind++) {
			*dst[kind] = cursor;
			for (int k = 0; k < ck->n_tensors; k++) {
				sc_db_tensor *t = &ck->tensors[k];
				int ours = (t->layer >= (int)r->st[i].first &&
					    t->layer < (int)r->st[i].last) ||
					   (t->layer >= (int)r->st[i].tail_first &&
					    t->layer < (int)r->st[i].tail_last);
				if ((int)t->kind != kind || !ours || t->ndim != 2)
					continue;
				coord_tensor_view(&nts[k], shapes[k], t);
				*cursor++ = &nts[k];
				(*count[kind])++;
			}
		}
		r->st[i].method = "Worker.Restore";
		r->st[i].req = &req[i].base;
		r->st[i].desc = &splitchain__empty__descriptor;
	}
	bad = run_call_all(r, ASSIGN_TIMEOUT_MS);
	if (bad >= 0)
		run_describe(&r->st[bad], bad, err, esize);
	else
		*start = ck->step;
	run_free_replies(r);
	if (bad < 0)
		sc_db_event(r->c->db, r->job->id, 0, SC_LOG_INFO, "restored",
			    "from the checkpoint of step %u", ck->step);
out:
	free(shapes);
	free(lists);
	free(nts);
	free(ck);
	return bad;
}

/* Takes a checkpoint of `step` completed steps with loss: every stage's
 * adapters and AdamW moments, written in one transaction. */
int run_checkpoint(runner *r, uint32_t step, double loss, char *err, size_t esize)
{
	Splitchain__JobRef ref = SPLITCHAIN__JOB_REF__INIT;
	sc_db_tensor *ts = NULL;
	int n = 0, cap = 0, bad;
	sc_err rc;

	ref.job_id = (uint64_t)r->job->id;
	for (int i = 0; i < r->n; i++) {
		r->st[i].method = "Worker.GetState";
		r->st[i].req = &ref.base;
		r->st[i].desc = &splitchain__state_reply__descriptor;
	}
	bad = run_call_all(r, ASSIGN_TIMEOUT_MS);
	if (bad >= 0) {
		run_describe(&r->st[bad], bad, err, esize);
		goto out;
	}
	for (int i = 0; i < r->n; i++) {
		Splitchain__StateReply *s = (Splitchain__StateReply *)r->st[i].rep;
		if (i > 0 && i < r->n_owners)
			continue; /* the owners hold the same layers, kept equal */
		Splitchain__NamedTensor **lists[3] = { s->lora, s->adam_m, s->adam_v };
		size_t counts[3] = { s->n_lora, s->n_adam_m, s->n_adam_v };
		for (int kind = 0; kind < 3; kind++) {
			for (size_t k = 0; k < counts[kind]; k++) {
				Splitchain__NamedTensor *nt = lists[kind][k];
				int layer = -1;
				if (n == cap) {
					cap = cap ? 2 * cap : 64;
					sc_db_tensor *p = realloc(ts, (size_t)cap * sizeof(*ts));
					if (!p) {
						snprintf(err, esize, "out of memory");
						bad = r->n;
						goto out;
					}
					ts = p;
				}
				if (sscanf(nt->name, "h.%d.", &layer) != 1 || nt->n_shape != 2 ||
				    nt->shape[0] <= 0 || nt->shape[1] <= 0 ||
				    nt->data.len != (size_t)(nt->shape[0] * nt->shape[1]) * 4) {
					snprintf(err, esize,
						 "stage %d sent a malformed tensor '%s'", i,
						 nt->name);
					bad = i;
					goto out;
				}
				ts[n] = (sc_db_tensor){ .name = nt->name,
							.kind = (enum sc_tensor_kind)kind,
							.layer = layer,
							.ndim = 2,
							.data = (const float *)nt->data.data };
				ts[n].shape[0] = nt->shape[0];
				ts[n].shape[1] = nt->shape[1];
				n++;
			}
		}
	}
	rc = sc_db_checkpoint_write(r->c->db, r->job->id, step, r->version, loss, ts, n,
				    r->c->checkpoint_keep, NULL);
	if (rc) {
		snprintf(err, esize, "writing the checkpoint: %s", sc_err_detail());
		run_db_failed(r);
		bad = r->n;
	} else {
		run_db_recovered(r);
	}
out:
	free(ts);
	run_free_replies(r);
	return bad;
}

void run_db_failed(runner *r)
{
	coord *c = r->c;
	r->db_failed = 1;
	pthread_mutex_lock(&c->mu);
	c->db_failures++;
	snprintf(c->db_error, sizeof(c->db_error), "%s", sc_err_detail());
	pthread_mutex_unlock(&c->mu);
}

void run_db_recovered(runner *r)
{
	coord *c = r->c;
	char last[sizeof(c->db_error)];
	int n;
	pthread_mutex_lock(&c->mu);
	n = c->db_failures;
	c->db_failures = 0;
	memcpy(last, c->db_error, sizeof(last));
	pthread_mutex_unlock(&c->mu);
	if (n == 0)
		return;
	sc_db_event(c->db, r->job->id, 0, SC_LOG_WARN, "db_write_failed",
		    "the database refused %d placement or checkpoint write%s (last: %s); it takes "
		    "writes again",
		    n, n == 1 ? "" : "s", last);
	sc_warn("coordinator", "job %lld: the database takes writes again after %d refused",
		(long long)r->job->id, n);
}

void run_db_backoff(runner *r)
{
	for (int i = 0; i < 20 && !atomic_load(&r->c->stopping); i++) {
		struct timespec ts = { 0, 100 * 1000000L };
		nanosleep(&ts, NULL);
	}
}
