/* coord_eval.c — a job's held-out evaluation through the chain: the eval
 * stream's micro-batches, M at a time, as forward-only Worker.Step calls;
 * the last stage's per-micro-batch losses are combined as the single-process
 * trainer combines them (sc_eval_add), so both report the same bits. */
#include <stdio.h>
#include <stdlib.h>

#include "coord_run.h"

int run_eval(runner *r, uint32_t step, double *loss, size_t *tokens, char *err, size_t esize)
{
	int M = r->tc.micro_batches, B = r->tc.B, T = r->tc.T, bad = -1;
	size_t BT = (size_t)B * T, rows = BT * (size_t)M;
	/* A ring's owners hold the held-out data: each counted its
	 * micro-batches at assign, cuts them itself and reports each one's
	 * targets; a pass runs every owner's next M, owner by owner, as
	 * sc_trainer_eval_sources does. */
	size_t K = r->ring ? 0 : sc_eval_batches(r->eval, T, B, r->spec->eval_batches);
	int last = r->ring ? 0 : r->n - 1, n_from = r->ring ? r->n_owners : 1;
	size_t passes = r->ring ? r->eval_passes : (K + (size_t)M - 1) / (size_t)M;
	int32_t *in = malloc(rows * 4), *tg = malloc(rows * 4);
	size_t *count = malloc((size_t)M * sizeof(size_t));
	Splitchain__StepRequest req[MAX_STAGES];
	sc_eval_acc acc = { 0 };

	if (!in || !tg || !count) {
		snprintf(err, esize, "out of memory for an evaluation");
		bad = r->n;
		goto out;
	}
	for (size_t p = 0; p < passes; p++) {
		for (int m = 0; m < M && !r->ring; m++) {
			size_t k = p * (size_t)M + (size_t)m;
			count[m] = 0;
			if (k < K) {
				count[m] =
				    sc_eval_batch(r->eval, T, B, k, in + m * BT, tg + m * BT);
				continue;
			}
			for (size_t i = 0; i < BT; i++) { /* past the last: padding */
				in[m * BT + i] = 0;
				tg[m * BT + i] = -1;
			}
		}
		run_step_calls(r, req, step, r->ring ? NULL : in, r->ring ? NULL : tg,
			       r->ring ? 0 : rows);
		for (int i = 0; i < r->n; i++) {
			req[i].eval = 1;
			req[i].eval_pass = (uint32_t)p;
		}
		if ((bad = run_call_all(r, r->c->step_timeout_ms)) >= 0) {
			run_describe(&r->st[bad], bad, err, esize);
			goto out;
		}
		for (int f = last; f < last + n_from; f++) {
			Splitchain__StepReply *sr = (Splitchain__StepReply *)r->st[f].rep;
			if (sr->n_eval_losses != (size_t)M ||
			    (r->ring && sr->n_eval_tokens != (size_t)M)) {
				snprintf(err, esize,
					 "stage %d reported %zu eval losses (%zu counts) for %d "
					 "micro-batches",
					 f, sr->n_eval_losses, sr->n_eval_tokens, M);
				bad = f;
				goto out;
			}
			for (int m = 0; m < M && r->ring; m++)
				count[m] = (size_t)sr->eval_tokens[m];
			for (int m = 0; m < M; m++)
				sc_eval_add(&acc, sr->eval_losses[m], count[m]);
		}
		run_free_replies(r);
		/* Each pass restarts the stall clock (an evaluation can take
		 * many steps' time) without counting as a step interval. */
		pthread_mutex_lock(&r->c->mu);
		r->lj->progress_ms = coord_mono_ms();
		pthread_mutex_unlock(&r->c->mu);
	}
	*loss = sc_eval_mean(&acc);
	*tokens = acc.tokens;
out:
	run_free_replies(r);
	free(in);
	free(tg);
	free(count);
	return bad;
}
