/* db_calib.c — each layer's measured quantization error, per model (see
 * db.h): what the planner measured once (sc_calib.h), read back for every
 * later job on the same model. */
#include <math.h>
#include <stdlib.h>
#include <time.h>

#include "db_impl.h"

typedef struct layer_err {
	int64_t layer;
	double int8, nf4;
} layer_err;

static sc_err read_err(sqlite3_stmt *st, void *rec, struct arena *a)
{
	layer_err *e = rec;
	(void)a;
	e->layer = sqlite3_column_int64(st, 0);
	e->int8 = sqlite3_column_double(st, 1);
	e->nf4 = sqlite3_column_double(st, 2);
	return SC_OK;
}

sc_err sc_db_layer_errors_get(sc_db *db, const char *key, int n_layer, double *int8, double *nf4)
{
	sqlite3_stmt *st = NULL;
	layer_err *rows = NULL;
	int n = 0, seen = 0;
	sc_err err;

	pthread_mutex_lock(&db->mu);
	if ((err = db_stmt(db, ST_LAYER_ERRORS_GET, &st)) == SC_OK) {
		db_bind_text(st, 1, key);
		err = db_read_list(db, st, sizeof(*rows), read_err, (void **)&rows, &n);
	}
	pthread_mutex_unlock(&db->mu);
	SC_TRY(err);
	for (int i = 0; i < n; i++)
		if (rows[i].layer >= 0 && rows[i].layer < n_layer) {
			int8[rows[i].layer] = rows[i].int8;
			nf4[rows[i].layer] = rows[i].nf4;
			seen++;
		}
	free(rows);
	return seen == n_layer
		   ? SC_OK
		   : sc_errf(SC_ENOENT, "%s: %d of the %d layers' errors recorded for %s", db->path,
			     seen, n_layer, key);
}

sc_err sc_db_layer_errors_put(sc_db *db, const char *key, int n_layer, const double *int8,
			      const double *nf4)
{
	sqlite3_stmt *st = NULL;
	struct timespec ts;
	sc_err err;

	for (int l = 0; l < n_layer; l++)
		if (!isfinite(int8[l]) || !isfinite(nf4[l]) || int8[l] < 0 || nf4[l] < 0)
			return sc_errf(SC_EINVAL,
				       "%s: layer %d's errors (int8 %g, nf4 %g) must be finite and "
				       ">= 0",
				       db->path, l, int8[l], nf4[l]);
	clock_gettime(CLOCK_REALTIME, &ts);
	int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	pthread_mutex_lock(&db->mu);
	if ((err = db_begin(db, 0)) != SC_OK)
		goto out;
	for (int l = 0; l < n_layer; l++) {
		if ((err = db_stmt(db, ST_LAYER_ERRORS_PUT, &st)) != SC_OK)
			goto out;
		db_bind_text(st, 1, key);
		sqlite3_bind_int64(st, 2, l);
		sqlite3_bind_double(st, 3, int8[l]);
		sqlite3_bind_double(st, 4, nf4[l]);
		sqlite3_bind_int64(st, 5, now);
		if ((err = db_run(db, st, "recording a layer's quantization error")) != SC_OK)
			goto out;
	}
	err = db_commit(db);
out:
	db_rollback(db);
	pthread_mutex_unlock(&db->mu);
	return err;
}
