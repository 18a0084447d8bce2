/* db_prom.h — the database as the metrics endpoint reads it: a read-only
 * SQLite connection of its own, apart from the writer's sc_db handle.
 *
 * Why apart: in WAL mode a reader never waits for the writer, so a
 * scrape never queues behind a checkpoint's transaction on sc_db's mutex,
 * and the writer never waits for a scrape. Each read is one short read
 * transaction; no statement is kept open between calls, so the WAL can
 * always be checkpointed.
 *
 * Threads: one thread at a time per reader (the endpoint's own thread).
 */
#ifndef SC_DB_PROM_H
#define SC_DB_PROM_H

#include <stdint.h>

#include "db.h"

#define SC_DB_PROM_MAX_HOPS 64 /* hops of a job exported; the rest are summed into the last */

typedef struct sc_db_reader sc_db_reader;

/* A job as the dashboards see it, with its newest metric row's figures. */
typedef struct sc_db_prom_job {
	int64_t id;
	char *name; /* owned by the array (sc_db_prom_jobs_free) */
	enum sc_job_state state;
	uint32_t step_done, steps;
	double last_loss;                        /* NAN until the first step */
	double tokens_per_s;                     /* the newest metric row's; NAN: none */
	double eval_loss;                        /* the newest evaluation's; NAN: none */
	int n_hops;                              /* the newest metric row's hops (0: none) */
	uint64_t hop_bytes[SC_DB_PROM_MAX_HOPS]; /* data bytes each stage sent that step */
} sc_db_prom_job;

/* A registered worker as the database has it. */
typedef struct sc_db_prom_worker {
	int64_t id;
	char *name; /* owned by the array */
	enum sc_worker_state state;
	uint64_t memory_bytes, memory_reserve_bytes, base_bytes;
	int job_slots;
} sc_db_prom_worker;

/* Opens path read-only. *out = new reader; close with sc_db_reader_close.
 * SC_EIO when the file cannot be opened. */
sc_err sc_db_reader_open(sc_db_reader **out, const char *path);
/* Accepts NULL. */
void sc_db_reader_close(sc_db_reader *r);

/* Every job in id order: *out = new array of *n (NULL when none); free
 * with sc_db_prom_jobs_free(*out, *n). */
sc_err sc_db_prom_jobs(sc_db_reader *r, sc_db_prom_job **out, int *n);
void sc_db_prom_jobs_free(sc_db_prom_job *jobs, int n);

/* Every worker in id order: as sc_db_prom_jobs; free with
 * sc_db_prom_workers_free. */
sc_err sc_db_prom_workers(sc_db_reader *r, sc_db_prom_worker **out, int *n);
void sc_db_prom_workers_free(sc_db_prom_worker *ws, int n);

/* The newest measurement of each link (db.h's links; "coordinator" names
 * worker 0). */
typedef struct sc_db_prom_link {
	char *from, *to; /* owned by the array */
	double rtt_ms, mbit_s;
} sc_db_prom_link;
/* Every link: as sc_db_prom_jobs; free with sc_db_prom_links_free. */
sc_err sc_db_prom_links(sc_db_reader *r, sc_db_prom_link **out, int *n);
void sc_db_prom_links_free(sc_db_prom_link *links, int n);

/* The events recorded so far by level (debug, info, warn, error), counted
 * once each: every call reads only the events added since the last. */
sc_err sc_db_prom_events(sc_db_reader *r, uint64_t counts[SC_LOG_OFF]);

#endif
