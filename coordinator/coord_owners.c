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
	Splitchain__NamedTensor *nt = NULL, **ptr = NULL;
	int o = r->n_owners, bad = -1;
	size_t n = 0;

	if ((bad = run_owner_loss(r, loss, err, esize)) >= 0)
		goto out;
	/* The gradients: owner 0's, then each other owner's added, matrix by
	 * matrix (all hold the same layers, listed in the same order). */
	n = sr_grads(r, 0);
	nt = calloc(n + 1, sizeof(*nt));
	ptr = calloc(n + 1, sizeof(*ptr));
	if (!nt || !ptr) {
		snprintf(err, esize, "out of memory for the owners' gradients");
		bad = r->n;
		goto out;
	}
	for (size_t t = 0; t < n; t++) {
		const Splitchain__NamedTensor *g0 =
		    ((Splitchain__StepReply *)r->st[0].rep)->grads[t];
		splitchain__named_tensor__init(&nt[t]);
		ptr[t] = &nt[t];
		nt[t].name = strdup(g0->name);
		nt[t].n_shape = g0->n_shape;
		nt[t].shape = malloc((g0->n_shape + 1) * sizeof(int64_t));
		nt[t].data.data = malloc(g0->data.len + 1);
		nt[t].data.len = g0->data.len;
		if (!nt[t].name || !nt[t].shape || !nt[t].data.data) {
			snprintf(err, esize, "out of memory for the owners' gradients");
			bad = r->n;
			goto out;
		}
		if (g0->data.len % 4) {
			snprintf(err, esize, "owner %s sent a malformed gradient %s", r->st[0].name,
				 g0->name);
			bad = 0;
			goto out;
		}
		memcpy(nt[t].shape, g0->shape, g0->n_shape * sizeof(int64_t));
		memcpy(nt[t].data.data, g0->data.data, g0->data.len);
		for (int k = 1; k < o; k++) {
			const Splitchain__NamedTensor *gk =
			    ((Splitchain__StepReply *)r->st[k].rep)->grads[t];
			float *acc = (float *)nt[t].data.data;
			const float *add = (const float *)gk->data.data;
			if (strcmp(gk->name, g0->name) || gk->data.len != g0->data.len) {
				snprintf(err, esize, "owner %s's gradient %zu is %s, owner %s's %s",
					 r->st[k].name, t, gk->name, r->st[0].name, g0->name);
				bad = k;
				goto out;
			}
			for (size_t i = 0; i < g0->data.len / 4; i++)
				acc[i] += add[i];
		}
	}
	run_free_replies(r);
	req.job_id = (uint64_t)r->job->id;
	req.step = step;
	req.n_grads = n;
	req.grads = ptr;
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
	for (size_t t = 0; nt && t < n; t++) {
		free(nt[t].name);
		free(nt[t].shape);
		free(nt[t].data.data);
	}
	free(nt);
	free(ptr);
	return bad;
}

/* Sums one list of every owner's state replies (kind 0 lora, 1 adam_m, 2
 * adam_v) into *out (n tensors, names and shapes of owner 0's), averaged. */
static int average_kind(runner *r, int kind, Splitchain__NamedTensor **out, size_t *n_out,
			char *err, size_t esize)
{
	int o = r->n_owners;
#define LIST(k)                                                                                    \
	(kind == 0   ? ((Splitchain__StateReply *)r->st[k].rep)->lora                              \
	 : kind == 1 ? ((Splitchain__StateReply *)r->st[k].rep)->adam_m                            \
		     : ((Splitchain__StateReply *)r->st[k].rep)->adam_v)
#define COUNT(k)                                                                                   \
	(kind == 0   ? ((Splitchain__StateReply *)r->st[k].rep)->n_lora                            \
	 : kind == 1 ? ((Splitchain__StateReply *)r->st[k].rep)->n_adam_m                          \
		     : ((Splitchain__StateReply *)r->st[k].rep)->n_adam_v)
	size_t n = COUNT(0);
	Splitchain__NamedTensor *nt = calloc(n + 1, sizeof(*nt));
	*out = nt;
	*n_out = 0;
	if (!nt) {
		snprintf(err, esize, "out of memory for the owners' average");
		return r->n;
	}
	for (size_t t = 0; t < n; t++) {
		const Splitchain__NamedTensor *a = LIST(0)[t];
		splitchain__named_tensor__init(&nt[t]);
		nt[t].name = strdup(a->name);
		nt[t].n_shape = a->n_shape;
		nt[t].shape = malloc((a->n_shape + 1) * sizeof(int64_t));
		nt[t].data.data = malloc(a->data.len + 1);
		nt[t].data.len = a->data.len;
		*n_out = t + 1;
		if (!nt[t].name || !nt[t].shape || !nt[t].data.data) {
			snprintf(err, esize, "out of memory for the owners' average");
			return r->n;
		}
		memcpy(nt[t].shape, a->shape, a->n_shape * sizeof(int64_t));
		memcpy(nt[t].data.data, a->data.data, a->data.len);
		float *acc = (float *)nt[t].data.data;
		for (int k = 1; k < o; k++) {
			const Splitchain__NamedTensor *b = COUNT(k) == n ? LIST(k)[t] : NULL;
			if (!b || strcmp(b->name, a->name) || b->data.len != a->data.len) {
				snprintf(err, esize,
					 "owner %s's state differs in its layout from %s's",
					 r->st[k].name, r->st[0].name);
				return k;
			}
			for (size_t i = 0; i < a->data.len / 4; i++)
				acc[i] += ((const float *)b->data.data)[i];
		}
		for (size_t i = 0; i < a->data.len / 4; i++)
			acc[i] /= (float)o;
	}
#undef LIST
#undef COUNT
	return -1;
}

int run_owner_average(runner *r, char *err, size_t esize)
{
	Splitchain__JobRef ref = SPLITCHAIN__JOB_REF__INIT;
	Splitchain__RestoreRequest req = SPLITCHAIN__RESTORE_REQUEST__INIT;
	Splitchain__NamedTensor *nt[3] = { NULL, NULL, NULL }, **ptr[3] = { NULL, NULL, NULL };
	size_t n[3] = { 0, 0, 0 };
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
	for (int kind = 0; kind < 3; kind++) {
		if ((bad = average_kind(r, kind, &nt[kind], &n[kind], err, esize)) >= 0)
			goto out;
		if (!(ptr[kind] = calloc(n[kind] + 1, sizeof(*ptr[kind])))) {
			snprintf(err, esize, "out of memory for the owners' average");
			bad = r->n;
			goto out;
		}
		for (size_t t = 0; t < n[kind]; t++)
			ptr[kind][t] = &nt[kind][t];
	}
	run_free_replies(r);
	req.job_id = (uint64_t)r->job->id;
	req.n_lora = n[0];
	req.lora = ptr[0];
	req.n_adam_m = n[1];
	req.adam_m = ptr[1];
	req.n_adam_v = n[2];
	req.adam_v = ptr[2];
	for (int i = 0; i < r->n; i++) {
		r->st[i].method = i < o ? "Worker.Restore" : NULL;
		r->st[i].req = &req.base;
		r->st[i].desc = &splitchain__empty__descriptor;
	}
	if ((bad = run_call_all(r, ASSIGN_TIMEOUT_MS)) >= 0)
		run_describe(&r->st[bad], bad, err, esize);
out:
	run_free_replies(r);
	for (int kind = 0; kind < 3; kind++) {
		for (size_t t = 0; nt[kind] && t < n[kind]; t++) {
			free(nt[kind][t].name);
			free(nt[kind][t].shape);
			free(nt[kind][t].data.data);
		}
		free(nt[kind]);
		free(ptr[kind]);
	}
	return bad;
}
