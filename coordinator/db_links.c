/* db_links.c — the measured links between workers and to the coordinator
 * (see db.h): the latest measurement of each directed pair. */
#include <math.h>
#include <stdlib.h>

#include "db_impl.h"

static sc_err read_link(sqlite3_stmt *st, void *rec, struct arena *a)
{
	sc_db_link *l = rec;
	l->from_worker = sqlite3_column_int64(st, 0);
	l->from_name = db_arena_text(a, st, 1);
	l->to_worker = sqlite3_column_int64(st, 2);
	l->to_name = db_arena_text(a, st, 3);
	l->rtt_ms = sqlite3_column_double(st, 4);
	l->mbit_s = sqlite3_column_double(st, 5);
	l->measured_ms = sqlite3_column_int64(st, 6);
	return SC_OK;
}

sc_err sc_db_link_upsert(sc_db *db, const sc_db_link *l)
{
	if (!l || l->from_worker < 0 || l->to_worker < 0 || l->from_worker == l->to_worker ||
	    !isfinite(l->rtt_ms) || !(l->rtt_ms > 0) || !isfinite(l->mbit_s) || !(l->mbit_s > 0))
		return sc_errf(SC_EINVAL,
			       "%s: a link joins two different workers (or one and the "
			       "coordinator, 0) with a positive round trip and bandwidth",
			       db->path);
	sqlite3_stmt *st = NULL;
	sc_err err;
	pthread_mutex_lock(&db->mu);
	if ((err = db_set_sync(db, 0)) == SC_OK &&
	    (err = db_stmt(db, ST_LINK_UPSERT, &st)) == SC_OK) {
		sqlite3_bind_int64(st, 1, l->from_worker);
		sqlite3_bind_int64(st, 2, l->to_worker);
		sqlite3_bind_double(st, 3, l->rtt_ms);
		sqlite3_bind_double(st, 4, l->mbit_s);
		sqlite3_bind_int64(st, 5, l->measured_ms);
		err = db_run(db, st, "recording a link");
	}
	pthread_mutex_unlock(&db->mu);
	return err;
}

sc_err sc_db_links_list(sc_db *db, sc_db_link **out, int *n)
{
	sqlite3_stmt *st = NULL;
	sc_err err;
	*out = NULL;
	*n = 0;
	pthread_mutex_lock(&db->mu);
	if ((err = db_stmt(db, ST_LINKS, &st)) == SC_OK)
		err = db_read_list(db, st, sizeof(**out), read_link, (void **)out, n);
	pthread_mutex_unlock(&db->mu);
	return err;
}
