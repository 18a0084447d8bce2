/* coord_owners.c — a step of a ring with several data owners (split
 * federated, docs/privacy.md): the owners' own layers (each holds the
 * embeddings, the first and last K blocks and the head) must stay equal, so
 * their LoRA gradients — each summed over its own micro-batches — are added
 * up here in owner order and handed back to every owner, which then runs
 * the same AdamW step. The middle stages sum the same way (each owner's
 * micro-batches by themselves, the sums in owner order), and so does
 * `splitchain finetune --data F1 --data F2 ...`: the chain computes its
 * bits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coord_run.h"

/* The matrices of every owner's list, added up matrix by matrix in owner
 * order (all hold the same layers, listed in the same order): new copies
 * of owner 0's names and shapes, free with owner_sum_free. */
typedef struct owner_sum {
	Splitchain__NamedTensor *nt, **ptr;
	size_t n;
} owner_sum;

static void owner_sum_free(owner_sum *s)
{
	for (size_t t = 0; s->nt && t < s->n; t++) {
		free(s->nt[t].name);
		free(s->nt[t].shape);
		free(s->nt[t].data.data);
	}
	free(s->nt);
	free(s->ptr);
	memset(s, 0, sizeof(*s));
}

/* lists[k] (counts[k] matrices) of owner k, for k < r->n_owners: their sum
 * into *out, then divided by div when div > 1 (an average). what names the
 * matrices in errors. Returns -1; the owner whose list does not match owner
 * 0's; or r->n (out of memory); err says why. */
static int owner_add(runner *r, Splitchain__NamedTensor **const *lists, const size_t *counts,
		     int div, const char *what, owner_sum *out, char *err, size_t esize)
{
	size_t n = counts[0];

	memset(out, 0, sizeof(*out));
	out->nt = calloc(n + 1, sizeof(*out->nt));
	out->ptr = calloc(n + 1, sizeof(*out->ptr));
	if (!out->nt || !out->ptr) {
		snprintf(err, esize, "out of memory for the owners' %s", what);
		return r->n;
	}
	for (size_t t = 0; t < n; t++) {
		const Splitchain__NamedTensor *a = lists[0][t];
		Splitchain__NamedTensor *nt = &out->nt[t];
		splitchain__named_tensor__init(nt);
		out->ptr[t] = nt;
		out->n = t + 1;
		nt->name = strdup(a->name);
		nt->n_shape = a->n_shape;
		nt->shape = malloc((a->n_shape + 1) * sizeof(int64_t));
		nt->data.data = malloc(a->data.len + 1);
		nt->data.len = a->data.len;
		if (!nt->name || !nt->shape || !nt->data.data) {
			snprintf(err, esize, "out of memory for the owners' %s", what);
			return r->n;
		}
		if (a->data.len % 4) {
			snprintf(err, esize, "owner %s sent a malformed %s %s", r->st[0].name, what,
				 a->name);
			return 0;
		}
		memcpy(nt->shape, a->shape, a->n_shape * sizeof(int64_t));
		memcpy(nt->data.data, a->data.data, a->data.len);
		float *acc = (float *)nt->data.data;
		for (int k = 1; k < r->n_owners; k++) {
			const Splitchain__NamedTensor *b = counts[k] == n ? lists[k][t] : NULL;
			if (!b || strcmp(b->name, a->name) || b->data.len != a->data.len) {
				snprintf(err, esize, "owner %s's %s %zu is %s, owner %s's %s",
					 r->st[k].name, what, t, b ? b->name : "missing",
					 r->st[0].name, a->name);
				return k;
			}
			for (size_t i = 0; i < a->data.len / 4; i++)
				acc[i] += ((const float *)b->data.data)[i];
		}
		for (size_t i = 0; div > 1 && i < a->data.len / 4; i++)
			acc[i] /= (float)div;
	}
	return -1;
}

/* The gradient matrices owner k's step reply carries. */
static size_t sr_grads(const runner *r, int k)
{
	return ((const Splitchain__StepReply *)r->st[k].rep)->n_grads;
}

int run_owner_loss(runner *r, double *loss, char *err, size_t esize)
{
	int o = r->n_owners, M = r->tc.micro_batches;
	double sum = 0;

	/* Every owner's micro-batches in order, as one process sums them. */
	for (int k = 0; k < o; k++) {
		Splitchain__StepReply *sr = (Splitchain__StepReply *)r->st[k].rep;
		if (sr->n_micro_losses != (size_t)M || sr->n_grads != sr_grads(r, 0)) {
			snprintf(
			    err, esize,
			    "owner %s reported %zu losses and %zu gradients for %d micro-batches "
			    "and %zu matrices",
			    r->st[k].name, sr->n_micro_losses, sr->n_grads, M, sr_grads(r, 0));
			return k;
		}
		for (int j = 0; j < M; j++)
			sum += sr->micro_losses[j];
	}
	*loss = sum / ((double)o * M);
	return -1;
}

int run_owner_grads(runner *r, uint32_t step, double *loss, double *sumsq, size_t n_sumsq,
		    char *err, size_t esize)
{
	Splitchain__SetGradsRequest req = SPLITCHAIN__SET_GRADS_REQUEST__INIT;
	Splitchain__NamedTensor **lists[16];
	size_t counts[16];
	owner_sum sum = { 0 };
	int o = r->n_owners, bad = -1;

	if ((bad = run_owner_loss(r, loss, err, esize)) >= 0)
		goto out;
	for (int k = 0; k < o; k++) {
		lists[k] = ((Splitchain__StepReply *)r->st[k].rep)->grads;
		counts[k] = sr_grads(r, k);
	}
	if ((bad = owner_add(r, lists, counts, 1, "gradient", &sum, err, esize)) >= 0)
		goto out;
	run_free_replies(r);
	req.job_id = (uint64_t)r->job->id;
	req.step = step;
	req.n_grads = sum.n;
	req.grads = sum.ptr;
	for (int i = 0; i < r->n; i++) {
		r->st[i].method = i < o ? "Worker.SetGrads" : NULL;
		r->st[i].req = &req.base;
		r->st[i].desc = &splitchain__set_grads_reply__descriptor;
	}
	if ((bad = run_call_all(r, r->c->step_timeout_ms)) >= 0) {
		run_describe(&r->st[bad], bad, err, esize);
		goto out;
	}
	/* Every owner holds the same sum: owner 0's squares stand for all. */
	Splitchain__SetGradsReply *gr = (Splitchain__SetGradsReply *)r->st[0].rep;
	if (gr->n_layer_sumsq != n_sumsq) {
		snprintf(err, esize, "owner %s reported %zu layer sums for %zu layers",
			 r->st[0].name, gr->n_layer_sumsq, n_sumsq);
		bad = 0;
		goto out;
	}
	memcpy(sumsq, gr->layer_sumsq, n_sumsq * sizeof(double));
out:
	run_free_replies(r);
	owner_sum_free(&sum);
	return bad;
}

int run_owner_average(runner *r, char *err, size_t esize)
{
	Splitchain__JobRef ref = SPLITCHAIN__JOB_REF__INIT;
	Splitchain__RestoreRequest req = SPLITCHAIN__RESTORE_REQUEST__INIT;
	owner_sum avg[3] = { { 0 } };
	int o = r->n_owners, bad = -1;

	ref.job_id = (uint64_t)r->job->id;
	for (int i = 0; i < r->n; i++) {
		r->st[i].method = i < o ? "Worker.GetState" : NULL;
		r->st[i].req = &ref.base;
		r->st[i].desc = &splitchain__state_reply__descriptor;
	}
	if ((bad = run_call_all(r, ASSIGN_TIMEOUT_MS)) >= 0) {
		run_describe(&r->st[bad], bad, err, esize);
		goto out;
	}
	/* The adapters and both AdamW moments, each averaged over the owners. */
	for (int kind = 0; kind < 3; kind++) {
		Splitchain__NamedTensor **lists[16];
		size_t counts[16];
		for (int k = 0; k < o; k++) {
			Splitchain__StateReply *sr = (Splitchain__StateReply *)r->st[k].rep;
			lists[k] = kind == 0 ? sr->lora : kind == 1 ? sr->adam_m : sr->adam_v;
			counts[k] = kind == 0   ? sr->n_lora
				    : kind == 1 ? sr->n_adam_m
						: sr->n_adam_v;
		}
		if ((bad = owner_add(r, lists, counts, o, "state", &avg[kind], err, esize)) >= 0)
			goto out;
	}
	run_free_replies(r);
	req.job_id = (uint64_t)r->job->id;
	req.n_lora = avg[0].n;
	req.lora = avg[0].ptr;
	req.n_adam_m = avg[1].n;
	req.adam_m = avg[1].ptr;
	req.n_adam_v = avg[2].n;
	req.adam_v = avg[2].ptr;
	for (int i = 0; i < r->n; i++) {
		r->st[i].method = i < o ? "Worker.Restore" : NULL;
		r->st[i].req = &req.base;
		r->st[i].desc = &splitchain__empty__descriptor;
	}
	if ((bad = run_call_all(r, ASSIGN_TIMEOUT_MS)) >= 0)
		run_describe(&r->st[bad], bad, err, esize);
out:
	run_free_replies(r);
	for (int kind = 0; kind < 3; kind++)
		owner_sum_free(&avg[kind]);
	return bad;
}
