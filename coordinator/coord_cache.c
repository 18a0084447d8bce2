/* coord_cache.c — what a placement would have to move (issue 11): for a
 * job of a registered model, the bytes of each layer's tensors that each
 * candidate worker's cache lacks (its last cache report, worker_tensors),
 * and the seconds they take, each tensor over the fastest measured link
 * from the coordinator or a candidate worker that caches it. The planner adds the slowest stage's fetch to the job's
 * remaining steps when it compares orders (placement.h, sc_place_net.fetch). */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "coord_cache.h"
#include "db_models.h"
#include "placement.h"

/* The global layer a tensor belongs to by its name ("h.3.", "layers.3."),
 * or -1: a model-wide tensor (embeddings, final norm, head). */
static int layer_of(const char *name)
{
	static const char *const containers[] = { "h.", "layers.", "blocks." };
	for (size_t c = 0; c < sizeof(containers) / sizeof(containers[0]); c++) {
		size_t n = strlen(containers[c]);
		for (const char *p = strstr(name, containers[c]); p;
		     p = strstr(p + 1, containers[c])) {
			if (p != name && p[-1] != '.')
				continue;
			const char *d = p + n;
			if (!isdigit((unsigned char)*d))
				continue;
			long v = strtol(d, (char **)&d, 10);
			if (*d == '.' && v >= 0 && v < 1 << 20)
				return (int)v;
		}
	}
	return -1;
}

sc_err coord_cache_view(sc_db *db, const char *model, const int64_t *workers, int nw, int L,
			const double *rate, coord_cache *out)
{
	sc_db_model *m = NULL;
	sc_manifest mf = { 0 };
	sc_err rc;

	memset(out, 0, sizeof(*out));
	out->nw = nw;
	out->L = L;
	out->missing = calloc((size_t)nw * (L + 1), sizeof(double));
	out->total = calloc((size_t)L + 1, sizeof(double));
	if (rate)
		out->seconds = calloc((size_t)nw * (L + 1), sizeof(double));
	if (!out->missing || !out->total || (rate && !out->seconds)) {
		coord_cache_free(out);
		return sc_errf(SC_ENOMEM, "out of memory");
	}
	if ((rc = sc_db_model_get(db, model, &m)) || (rc = sc_db_model_tensors(db, m->id, &mf)))
		goto out;
	for (int t = 0; t < mf.n; t++) {
		int layer = layer_of(mf.t[t].name), slot = layer >= 0 && layer < L ? layer : L;
		int64_t *holders = NULL;
		int nh = 0;
		if ((rc = sc_db_tensor_holders(db, mf.t[t].sha256, &holders, &nh)))
			goto out;
		out->total[slot] += (double)mf.t[t].nbytes;
		for (int i = 0; i < nw; i++) {
			int has = 0;
			for (int k = 0; k < nh && !has; k++)
				has = holders[k] == workers[i];
			if (has)
				continue;
			out->missing[(size_t)i * (L + 1) + slot] += (double)mf.t[t].nbytes;
			if (!rate)
				continue;
			const double *ri = rate + (size_t)i * (nw + 1);
			double best = ri[0] > 0 ? ri[0] : SC_PLACE_DEFAULT_MBIT_S;
			for (int k = 0; k < nh; k++) /* a candidate that caches it */
				for (int j = 0; j < nw; j++)
					if (j != i && holders[k] == workers[j] && ri[1 + j] > best)
						best = ri[1 + j];
			out->seconds[(size_t)i * (L + 1) + slot] +=
			    (double)mf.t[t].nbytes * 8 / (best * 1e6);
		}
		free(holders);
	}
out:
	free(m);
	sc_manifest_free(&mf);
	if (rc)
		coord_cache_free(out);
	return rc;
}

/* The sum of per-layer figures v (nw, L + 1) of worker over [first, last),
 * with the model-wide tensors' when the range starts at 0 or ends at L. */
static double range_sum(const coord_cache *c, const double *v, int worker, int first, int last)
{
	double sum = 0;
	if (!v || worker < 0 || worker >= c->nw)
		return 0;
	for (int l = first; l < last && l < c->L; l++)
		sum += v[(size_t)worker * (c->L + 1) + l];
	if (first == 0 || last == c->L) /* the embeddings, the final norm and head */
		sum += v[(size_t)worker * (c->L + 1) + c->L];
	return sum;
}

double coord_cache_missing(const coord_cache *c, int worker, int first, int last)
{
	return range_sum(c, c->missing, worker, first, last);
}

double coord_cache_seconds(const coord_cache *c, int worker, int first, int last)
{
	return range_sum(c, c->seconds, worker, first, last);
}

double coord_link_rate(const sc_db_link *ls, int nl, int64_t by, int64_t to)
{
	for (int k = 0; k < nl; k++)
		if (ls[k].from_worker == by && ls[k].to_worker == to && ls[k].mbit_s > 0)
			return ls[k].mbit_s;
	return 0;
}

void coord_cache_free(coord_cache *c)
{
	free(c->missing);
	free(c->total);
	free(c->seconds);
	c->missing = c->total = c->seconds = NULL;
}
