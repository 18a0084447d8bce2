/* db_impl.h — the private side of sc_db, shared by db.c (open, schema,
 * statement cache, SQLite plumbing), db_registry.c (workers, jobs,
 * placements), db_state.c (checkpoints, metrics, events) and db_links.c
 * (measured links). Not a public header. */
#ifndef SC_DB_IMPL_H
#define SC_DB_IMPL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "db.h"

/* The statement cache: each prepared on first use, kept until close. */
enum st {
	ST_WORKER_UPSERT,
	ST_WORKER_ID,
	ST_WORKER_SEEN,
	ST_WORKER_STATE,
	ST_WORKERS,
	ST_JOB_INSERT,
	ST_JOB_GET,
	ST_JOBS,
	ST_JOBS_RESUMABLE,
	ST_JOB_STATE,
	ST_JOB_SET_STATE,
	ST_JOB_PROGRESS,
	ST_PLACEMENT_NEXT,
	ST_PLACEMENT_INSERT,
	ST_PLACEMENT_LATEST,
	ST_PLACEMENT_PEAK,
	ST_CKPT_INSERT,
	ST_TENSOR_INSERT,
	ST_CKPT_PRUNE,
	ST_CKPT_LATEST,
	ST_TENSORS,
	ST_METRIC,
	ST_EVENT,
	ST_METRIC_LATEST,
	ST_METRIC_EVAL,
	ST_METRIC_CURVE,
	ST_METRIC_LATEST_EVAL,
	ST_LAYER_ERRORS_GET,
	ST_LAYER_ERRORS_PUT,
	ST_WORKER_BASE,
	ST_WORKER_JOBMEM_CLEAR,
	ST_WORKER_JOBMEM_PUT,
	ST_LINK_UPSERT,
	ST_LINKS,
	ST_COUNT
};

struct sc_db {
	sqlite3 *h;
	char *path;
	pthread_mutex_t mu;         /* held around every statement and transaction */
	int sync_full;              /* PRAGMA synchronous is FULL (1) or NORMAL (0) */
	int ready;                  /* opened and migrated: ours to optimize at close */
	sqlite3_stmt *st[ST_COUNT]; /* called with mu held */
};

/* The names stored in the state and kind columns, indexed by the enums. */
extern const char *const db_worker_states[SC_WORKER_STATE_COUNT];
extern const char *const db_job_states[SC_JOB_STATE_COUNT];
extern const char *const db_tensor_kinds[SC_TENSOR_KIND_COUNT];

/* The index of name in names[0..n), -1 when it is absent or NULL. */
int db_name_index(const char *const *names, int n, const char *name);

/* ---- SQLite plumbing; every function here is called with db->mu held ---- */

/* Turns SQLite's rc into an sc_err whose detail names the file and what. */
sc_err db_fail(sc_db *db, int rc, const char *what);
/* *out = the cached statement id, prepared on first use; owned by db. */
sc_err db_stmt(sc_db *db, enum st id, sqlite3_stmt **out);
/* Makes st ready for its next use and drops borrowed bindings. */
void db_finish(sqlite3_stmt *st);
/* Steps st, which must return no row, and finishes it. */
sc_err db_run(sc_db *db, sqlite3_stmt *st, const char *what);
sc_err db_exec(sc_db *db, const char *text, const char *what);
/* Bind borrowed values, which must outlive the step (NULL text binds ""). */
void db_bind_text(sqlite3_stmt *st, int i, const char *s);
void db_bind_blob(sqlite3_stmt *st, int i, const void *p, size_t n);
/* Durable commits (synchronous=FULL) fsync the WAL; the rest leave that to
 * the next WAL checkpoint. Never called inside a transaction. */
sc_err db_set_sync(sc_db *db, int full);
/* BEGIN IMMEDIATE, after db_set_sync(db, durable). */
sc_err db_begin(sc_db *db, int durable);
sc_err db_commit(sc_db *db);
/* Rolls back the open transaction, if SQLite has not already done so. */
void db_rollback(sc_db *db);
/* Runs an UPDATE of one row by id; SC_ENOENT when no row had that id. */
sc_err db_update_one(sc_db *db, sqlite3_stmt *st, const char *thing, int64_t id);

/* ---- result blocks: measured in one pass, filled in a second ---- */

struct arena {
	char *base; /* NULL while measuring */
	size_t used, cap;
	int bad; /* the fill outgrew the measure, or SQLite ran out of memory */
};

/* The column's bytes as a copy in a (plus a NUL); *len = their count. */
const void *db_arena_blob(struct arena *a, sqlite3_stmt *st, int col, size_t *len);
/* The column's text as a NUL-terminated copy in a ("" for NULL). */
const char *db_arena_text(struct arena *a, sqlite3_stmt *st, int col);

/* Reads one row into rec, taking its strings from a. Called twice per row. */
typedef sc_err (*row_fn)(sqlite3_stmt *st, void *rec, struct arena *a);

/* n rounded up to a multiple of 16: where a block's records start. */
size_t db_round16(size_t n);
/* Runs the bound st twice (inside a transaction, so both passes see the same
 * rows): to count rows and measure their strings, then to fill one block of
 * head bytes, *n records of rec_size and the strings. *out = the block (new,
 * free with free()), NULL when head is 0 and there are no rows. Finishes st. */
sc_err db_read_rows(sc_db *db, sqlite3_stmt *st, size_t head, size_t rec_size, row_fn fn,
		    void **out, int *n);
/* Runs a read-only statement under a read transaction into a new block, as
 * db_read_rows with no head. */
sc_err db_read_list(sc_db *db, sqlite3_stmt *st, size_t rec_size, row_fn fn, void **out, int *n);

#endif
