/* placement.c — min-max balanced contiguous layer ranges (dynamic
 * programming over stages and split points). */
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "placement.h"
#include "sc_train.h"

void sc_place_costs(const sc_model_config *mc, int T, int r, double tokens_per_step,
		    double *layer_gflop, double *head_gflop)
{
	double layer, head;
	sc_step_flops(mc, T, r, &layer, &head);
	*layer_gflop = layer * tokens_per_step / 1e9;
	*head_gflop = head * tokens_per_step / 1e9;
}

static int by_rate_desc(const void *a, const void *b)
{
	const sc_place_worker *x = *(const sc_place_worker *const *)a;
	const sc_place_worker *y = *(const sc_place_worker *const *)b;
	if (x->gflops != y->gflops)
		return x->gflops < y->gflops ? 1 : -1;
	return x->id < y->id ? -1 : x->id > y->id;
}

static int by_index(const void *a, const void *b)
{
	const sc_place_worker *x = *(const sc_place_worker *const *)a;
	const sc_place_worker *y = *(const sc_place_worker *const *)b;
	return x < y ? -1 : x > y;
}

sc_err sc_place(const sc_place_worker *w, int nw, int stages, int n_layer, double layer_gflop,
		double head_gflop, sc_place_stage *out, char *reason, size_t reason_size)
{
	const sc_place_worker **pick;
	double *best; /* best[s * (L + 1) + l]: min-max time of stages [0, s) over layers [0, l) */
	int *split;   /* argmin split point */
	int L = n_layer, S = stages;
	sc_err rc = SC_OK;

	if (S < 1 || S > nw || S > L)
		return sc_errf(SC_EINVAL, "cannot place %d stages on %d workers for %d layers", S,
			       nw, L);
	pick = malloc((size_t)nw * sizeof(*pick));
	best = malloc((size_t)(S + 1) * (L + 1) * sizeof(double));
	split = malloc((size_t)(S + 1) * (L + 1) * sizeof(int));
	if (!pick || !best || !split) {
		rc = sc_errf(SC_ENOMEM, "out of memory");
		goto out;
	}
	for (int i = 0; i < nw; i++)
		pick[i] = &w[i];
	qsort(pick, (size_t)nw, sizeof(*pick), by_rate_desc);
	qsort(pick, (size_t)S, sizeof(*pick), by_index); /* the S fastest, in the given order */

	for (int i = 0; i <= S * (L + 1) + L; i++)
		best[i] = DBL_MAX;
	best[0] = 0;
	for (int s = 1; s <= S; s++) {
		double rate = pick[s - 1]->gflops > 0 ? pick[s - 1]->gflops : 1e-9;
		for (int l = s; l <= L - (S - s); l++) {
			for (int a = s - 1; a < l; a++) {
				double prev = best[(s - 1) * (L + 1) + a], t, m;
				if (prev == DBL_MAX)
					continue;
				t = ((l - a) * layer_gflop + (s == S ? head_gflop : 0)) / rate;
				m = prev > t ? prev : t;
				if (m < best[s * (L + 1) + l]) {
					best[s * (L + 1) + l] = m;
					split[s * (L + 1) + l] = a;
				}
			}
		}
	}
	for (int s = S, l = L; s >= 1; s--) {
		int a = split[s * (L + 1) + l];
		out[s - 1].worker = (int)(pick[s - 1] - w);
		out[s - 1].first = a;
		out[s - 1].last = l;
		out[s - 1].predicted_s = ((l - a) * layer_gflop + (s == S ? head_gflop : 0)) /
					 (pick[s - 1]->gflops > 0 ? pick[s - 1]->gflops : 1e-9);
		l = a;
	}
	if (reason)
		snprintf(
		    reason, reason_size,
		    "min-max balance of %d layers (%.2f GFLOP each, head %.2f GFLOP on the last "
		    "stage) over the %d fastest of %d workers: slowest stage %.3f s/step",
		    L, layer_gflop, head_gflop, S, nw, best[S * (L + 1) + L]);
out:
	free(pick);
	free(best);
	free(split);
	return rc;
}
