/* db_prom.c — read-only queries for the metrics endpoint (db_prom.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "db_prom.h"

struct sc_db_reader {
	sqlite3 *h;
	char *path;
	int64_t last_event;          /* events up to this id are counted */
	uint64_t counts[SC_LOG_OFF]; /* ... by level */
};

static sc_err fail(sc_db_reader *r, const char *what)
{
	return sc_errf(SC_EIO, "%s: %s: %s", r->path, what, sqlite3_errmsg(r->h));
}

sc_err sc_db_reader_open(sc_db_reader **out, const char *path)
{
	sc_db_reader *r = calloc(1, sizeof(*r));
	*out = NULL;
	if (!r || !(r->path = strdup(path))) {
		free(r);
		return sc_errf(SC_ENOMEM, "out of memory for a database reader");
	}
	if (sqlite3_open_v2(path, &r->h, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
	    SQLITE_OK) {
		sc_err e = fail(r, "opening read-only");
		sc_db_reader_close(r);
		return e;
	}
	sqlite3_busy_timeout(r->h, 2000);
	*out = r;
	return SC_OK;
}

void sc_db_reader_close(sc_db_reader *r)
{
	if (!r)
		return;
	sqlite3_close(r->h);
	free(r->path);
	free(r);
}

static char *text_of(sqlite3_stmt *st, int col)
{
	const unsigned char *t = sqlite3_column_text(st, col);
	return strdup(t ? (const char *)t : "");
}

static double real_or_nan(sqlite3_stmt *st, int col)
{
	return sqlite3_column_type(st, col) == SQLITE_NULL ? NAN : sqlite3_column_double(st, col);
}

/* "[a,b,c]" into j's hops; anything past the last slot adds to it. */
static void hops_of(sc_db_prom_job *j, const char *s)
{
	j->n_hops = 0;
	if (!s || *s++ != '[')
		return;
	while (*s && *s != ']') {
		char *end;
		unsigned long long v = strtoull(s, &end, 10);
		if (end == s)
			return;
		if (j->n_hops < SC_DB_PROM_MAX_HOPS)
			j->hop_bytes[j->n_hops++] = v;
		else
			j->hop_bytes[SC_DB_PROM_MAX_HOPS - 1] += v;
		s = *end == ',' ? end + 1 : end;
	}
}

/* Runs sql, growing *rows (elem bytes each) with read() per row. */
static sc_err read_rows(sc_db_reader *r, const char *sql, size_t elem,
			int (*read)(sqlite3_stmt *, void *), void **rows, int *n)
{
	sqlite3_stmt *st = NULL;
	int cap = 0, rc;
	sc_err err = SC_OK;

	*rows = NULL;
	*n = 0;
	if (sqlite3_prepare_v2(r->h, sql, -1, &st, NULL) != SQLITE_OK)
		return fail(r, "preparing a metrics query");
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (*n == cap) {
			int nc = cap ? 2 * cap : 16;
			void *g = realloc(*rows, (size_t)nc * elem);
			if (!g) {
				err = sc_errf(SC_ENOMEM, "out of memory reading the metrics");
				break;
			}
			*rows = g;
			cap = nc;
		}
		void *row = (char *)*rows + (size_t)*n * elem;
		memset(row, 0, elem);
		(*n)++;
		if (read(st, row)) {
			err = sc_errf(SC_ENOMEM, "out of memory reading the metrics");
			break;
		}
	}
	if (!err && rc != SQLITE_DONE)
		err = fail(r, "reading the metrics");
	sqlite3_finalize(st); /* ends the read transaction */
	return err;
}

static int read_job(sqlite3_stmt *st, void *rec)
{
	sc_db_prom_job *j = rec;
	const unsigned char *state = sqlite3_column_text(st, 2);
	j->id = sqlite3_column_int64(st, 0);
	j->name = text_of(st, 1);
	j->state = SC_JOB_QUEUED;
	if (state)
		sc_job_state_parse((const char *)state, &j->state);
	j->step_done = (uint32_t)sqlite3_column_int64(st, 3);
	j->steps = (uint32_t)sqlite3_column_int64(st, 4);
	j->last_loss = real_or_nan(st, 5);
	j->tokens_per_s = real_or_nan(st, 6);
	hops_of(j, (const char *)sqlite3_column_text(st, 7));
	j->eval_loss = real_or_nan(st, 8);
	return j->name == NULL;
}

sc_err sc_db_prom_jobs(sc_db_reader *r, sc_db_prom_job **out, int *n)
{
	static const char sql[] =
	    "SELECT j.id, j.name, j.state, j.step_done, j.steps, j.last_loss,"
	    " (SELECT m.tokens_per_s FROM metrics m WHERE m.job_id = j.id"
	    "  ORDER BY m.step DESC LIMIT 1),"
	    " (SELECT m.bytes_per_hop FROM metrics m WHERE m.job_id = j.id"
	    "  ORDER BY m.step DESC LIMIT 1),"
	    " (SELECT m.eval_loss FROM metrics m WHERE m.job_id = j.id AND m.eval_loss IS NOT NULL"
	    "  ORDER BY m.step DESC LIMIT 1)"
	    " FROM jobs j ORDER BY j.id";
	sc_err err = read_rows(r, sql, sizeof(**out), read_job, (void **)out, n);
	if (err) {
		sc_db_prom_jobs_free(*out, *n);
		*out = NULL;
		*n = 0;
	}
	return err;
}

void sc_db_prom_jobs_free(sc_db_prom_job *jobs, int n)
{
	for (int i = 0; jobs && i < n; i++)
		free(jobs[i].name);
	free(jobs);
}

static int read_worker(sqlite3_stmt *st, void *rec)
{
	sc_db_prom_worker *w = rec;
	const unsigned char *state = sqlite3_column_text(st, 2);
	w->id = sqlite3_column_int64(st, 0);
	w->name = text_of(st, 1);
	w->state = SC_WORKER_LOST;
	if (state)
		sc_worker_state_parse((const char *)state, &w->state);
	w->memory_bytes = (uint64_t)sqlite3_column_int64(st, 3);
	w->memory_reserve_bytes = (uint64_t)sqlite3_column_int64(st, 4);
	w->base_bytes = (uint64_t)sqlite3_column_int64(st, 5);
	w->job_slots = sqlite3_column_int(st, 6);
	return w->name == NULL;
}

sc_err sc_db_prom_workers(sc_db_reader *r, sc_db_prom_worker **out, int *n)
{
	static const char sql[] = "SELECT id, name, state, memory_bytes, memory_reserve_bytes,"
				  " base_bytes, job_slots FROM workers ORDER BY id";
	sc_err err = read_rows(r, sql, sizeof(**out), read_worker, (void **)out, n);
	if (err) {
		sc_db_prom_workers_free(*out, *n);
		*out = NULL;
		*n = 0;
	}
	return err;
}

void sc_db_prom_workers_free(sc_db_prom_worker *ws, int n)
{
	for (int i = 0; ws && i < n; i++)
		free(ws[i].name);
	free(ws);
}

static int read_link(sqlite3_stmt *st, void *rec)
{
	sc_db_prom_link *l = rec;
	l->from = text_of(st, 0);
	l->to = text_of(st, 1);
	l->rtt_ms = sqlite3_column_double(st, 2);
	l->mbit_s = sqlite3_column_double(st, 3);
	return !l->from || !l->to;
}

sc_err sc_db_prom_links(sc_db_reader *r, sc_db_prom_link **out, int *n)
{
	static const char sql[] = "SELECT coalesce(from_name, ''), coalesce(to_name, ''), rtt_ms,"
				  " mbit_s FROM v_links ORDER BY from_name, to_name";
	sc_err err = read_rows(r, sql, sizeof(**out), read_link, (void **)out, n);
	if (err) {
		sc_db_prom_links_free(*out, *n);
		*out = NULL;
		*n = 0;
	}
	return err;
}

void sc_db_prom_links_free(sc_db_prom_link *links, int n)
{
	for (int i = 0; links && i < n; i++) {
		free(links[i].from);
		free(links[i].to);
	}
	free(links);
}

sc_err sc_db_prom_events(sc_db_reader *r, uint64_t counts[SC_LOG_OFF])
{
	static const char *const levels[SC_LOG_OFF] = { "debug", "info", "warn", "error" };
	sqlite3_stmt *st = NULL;
	int64_t last = r->last_event;
	uint64_t seen[SC_LOG_OFF];
	int rc;

	memcpy(seen, r->counts, sizeof(seen)); /* kept only when the read completes */

	if (sqlite3_prepare_v2(r->h, "SELECT id, level FROM events WHERE id > ? ORDER BY id", -1,
			       &st, NULL) != SQLITE_OK)
		return fail(r, "preparing the events query");
	sqlite3_bind_int64(st, 1, r->last_event);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *level = (const char *)sqlite3_column_text(st, 1);
		last = sqlite3_column_int64(st, 0);
		for (int l = 0; level && l < SC_LOG_OFF; l++)
			if (!strcmp(level, levels[l]))
				seen[l]++;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return fail(r, "reading the events");
	r->last_event = last;
	memcpy(r->counts, seen, sizeof(seen));
	memcpy(counts, seen, sizeof(seen));
	return SC_OK;
}
