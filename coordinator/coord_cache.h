/* coord_cache.h — the bytes of a registered model's tensors each candidate
 * worker's cache lacks, layer by layer (coord_cache.c), for the planner's
 * fetch cost. */
#ifndef SC_COORD_CACHE_H
#define SC_COORD_CACHE_H

#include <stdint.h>

#include "db.h"

typedef struct coord_cache {
	int nw, L;
	double *missing; /* (nw, L + 1): bytes worker i lacks of layer l; [L] the
			  * model-wide tensors (embeddings, final norm, head) */
	double *total;   /* (L + 1): each layer's bytes */
	double *seconds; /* (nw, L + 1): the time to fetch them, each tensor from
			  * its fastest source; NULL without rates */
} coord_cache;

/* Fills *out for the registered model called model over workers[0..nw)
 * (database ids) and its L layers, from the workers' last cache reports.
 * rate (may be NULL), (nw, nw + 1) Mbit/s: rate[i * (nw + 1)] the
 * coordinator's link to worker i, rate[i * (nw + 1) + 1 + k] worker k's
 * (<= 0: none measured; the coordinator's then defaults to
 * SC_PLACE_DEFAULT_MBIT_S): each tensor worker i lacks comes from the
 * fastest of the coordinator and the workers of the view that cache it, as
 * a worker fetches (peer-first when faster). Free with coord_cache_free. */
sc_err coord_cache_view(sc_db *db, const char *model, const int64_t *workers, int nw, int L,
			const double *rate, coord_cache *out);
/* Bytes worker (index into the view's workers) lacks to hold layers
 * [first, last) — with the model-wide tensors when the range starts at 0 or
 * ends at L. 0 for a view without data. */
double coord_cache_missing(const coord_cache *c, int worker, int first, int last);
/* The seconds those bytes take (a view with rates; else 0). */
double coord_cache_seconds(const coord_cache *c, int worker, int first, int last);
void coord_cache_free(coord_cache *c);

/* The rate (Mbit/s) of the link between worker `by` and `to` (0: the
 * coordinator) as worker `by` measured it — what a worker goes by when it
 * chooses where to fetch from (Coordinator.TensorSources) — or 0 when it
 * has not measured it. */
double coord_link_rate(const sc_db_link *ls, int nl, int64_t by, int64_t to);

#endif
