/* db_test.c — the coordinator's SQLite state: schema creation and versioning,
 * refusal of foreign files, every table's operations, checkpoint atomicity
 * and pruning, the dashboard views, and a reader beside the writer (WAL). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "db.h"
#include "db_models.h"
#include "testutil.h"

/* A fresh database path for this test: no file, no WAL, no shm left over. */
static const char *fresh(const char *name)
{
	static char buf[4][512];
	static int k;
	char side[600];
	k = (k + 1) % 4;
	sc_test_path(buf[k], sizeof(buf[k]), name);
	unlink(buf[k]);
	snprintf(side, sizeof(side), "%s-wal", buf[k]);
	unlink(side);
	snprintf(side, sizeof(side), "%s-shm", buf[k]);
	unlink(side);
	return buf[k];
}

static sqlite3 *reader(const char *path)
{
	sqlite3 *h = NULL;
	assert_int_equal(sqlite3_open_v2(path, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	sqlite3_busy_timeout(h, 2000);
	return h;
}

/* The first column of the first row of text on h, as an integer (-1: no row). */
static int64_t q_int(sqlite3 *h, const char *text)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(h, text, -1, &st, NULL) != SQLITE_OK)
		fail_msg("%s: %s", text, sqlite3_errmsg(h));
	int rc = sqlite3_step(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		fail_msg("%s: %s", text, sqlite3_errmsg(h));
	int64_t v = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
	sqlite3_finalize(st);
	return v;
}

static double q_real(sqlite3 *h, const char *text)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(h, text, -1, &st, NULL) != SQLITE_OK)
		fail_msg("%s: %s", text, sqlite3_errmsg(h));
	int rc = sqlite3_step(st);
	double v = rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL
		       ? sqlite3_column_double(st, 0)
		       : NAN;
	sqlite3_finalize(st);
	return v;
}

/* Opens path read-only, runs text, closes. */
static int64_t path_int(const char *path, const char *text)
{
	sqlite3 *h = reader(path);
	int64_t v = q_int(h, text);
	sqlite3_close(h);
	return v;
}

static int64_t add_job(sc_db *db, const char *name, uint32_t steps)
{
	static const unsigned char spec[] = { 0x0a, 0x03, 'j', 0x00, 'b', 0xff, 0x00 };
	sc_db_job j = { .name = name,
			.model_path = "models/gpt2",
			.data_path = "data/train.bin",
			.spec = spec,
			.spec_len = sizeof(spec),
			.stages = 2,
			.steps = steps };
	int64_t id = 0;
	SC_ASSERT_OK(sc_db_job_insert(db, &j, &id));
	assert_true(id > 0);
	return id;
}

static int64_t add_worker(sc_db *db, const char *name)
{
	sc_db_worker w = { .name = name,
			   .device = "cpu",
			   .memory_bytes = 8ull << 30,
			   .gflops = 50,
			   .control_addr = "tcp://10.0.0.1:7000",
			   .data_addr = "tcp://10.0.0.1:7001",
			   .state = SC_WORKER_IDLE };
	int64_t id = 0;
	SC_ASSERT_OK(sc_db_worker_upsert(db, &w, &id));
	return id;
}

/* ---- schema ---- */

static void test_fresh_schema(void **state)
{
	(void)state;
	const char *path = fresh("fresh.db");
	sc_db *db = NULL;
	SC_ASSERT_OK(sc_db_open(&db, path));
	sqlite3 *h = reader(path);
	assert_int_equal(q_int(h, "PRAGMA user_version"), SC_DB_SCHEMA_VERSION);
	assert_int_equal(SC_DB_SCHEMA_VERSION, 11);
	assert_int_equal(q_int(h, "PRAGMA application_id"), SC_DB_APPLICATION_ID);
	static const char *const tables[] = { "workers",
					      "jobs",
					      "placements",
					      "checkpoints",
					      "checkpoint_tensors",
					      "metrics",
					      "events",
					      "links",
					      "models",
					      "model_tensors",
					      "model_files",
					      "worker_tensors",
					      "layer_errors",
					      "worker_job_memory",
					      "users" };
	static const char *const views[] = {
		"v_job_progress", "v_worker_health", "v_latest_checkpoint", "v_loss_curve",
		"v_links",        "v_models",        "v_placement_roles"
	};
	char text[200];
	for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++) {
		snprintf(text, sizeof(text),
			 "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='%s'",
			 tables[i]);
		if (q_int(h, text) != 1)
			fail_msg("table %s missing", tables[i]);
	}
	for (size_t i = 0; i < sizeof(views) / sizeof(views[0]); i++) {
		snprintf(text, sizeof(text), "SELECT count(*) FROM %s", views[i]);
		if (q_int(h, text) != 0)
			fail_msg("view %s not empty or missing", views[i]);
	}
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(h, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
	sqlite3_finalize(st);
	sqlite3_close(h);
	sc_db_close(db);
	sc_db_close(NULL);
}

static void test_reopen_idempotent(void **state)
{
	(void)state;
	const char *path = fresh("reopen.db");
	sc_db *db = NULL;
	SC_ASSERT_OK(sc_db_open(&db, path));
	int64_t id = add_job(db, "kept", 10);
	sc_db_close(db);
	int64_t objects = path_int(path, "SELECT count(*) FROM sqlite_master");
	for (int i = 0; i < 2; i++) {
		SC_ASSERT_OK(sc_db_open(&db, path));
		sc_db_job *j = NULL;
		SC_ASSERT_OK(sc_db_job_get(db, id, &j));
		assert_string_equal(j->name, "kept");
		free(j);
		sc_db_close(db);
	}
	assert_int_equal(path_int(path, "PRAGMA user_version"), SC_DB_SCHEMA_VERSION);
	assert_int_equal(path_int(path, "SELECT count(*) FROM sqlite_master"), objects);
}

static void test_newer_version_refused(void **state)
{
	(void)state;
	const char *path = fresh("newer.db");
	sc_db *db = NULL;
	SC_ASSERT_OK(sc_db_open(&db, path));
	sc_db_close(db);
	sqlite3 *h = NULL;
	assert_int_equal(sqlite3_open(path, &h), SQLITE_OK);
	char newer[64];
	snprintf(newer, sizeof(newer), "PRAGMA user_version = %d", SC_DB_SCHEMA_VERSION + 1);
	assert_int_equal(sqlite3_exec(h, newer, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(h);
	SC_ASSERT_ERR(sc_db_open(&db, path), SC_ENOTSUP);
	assert_null(db);
	assert_non_null(strstr(sc_err_detail(), "newer"));
	/* Refusing it changed nothing. */
	assert_int_equal(path_int(path, "PRAGMA user_version"), SC_DB_SCHEMA_VERSION + 1);
}

static void test_garbage_refused(void **state)
{
	(void)state;
	static const size_t sizes[] = { 100, 4096, 20000 };
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		const char *path = fresh("garbage.db");
		unsigned char *junk = malloc(sizes[i]);
		assert_non_null(junk);
		for (size_t k = 0; k < sizes[i]; k++)
			junk[k] = (unsigned char)(k * 131 + 7);
		assert_int_equal(sc_test_write_file(path, junk, sizes[i]), 0);
		free(junk);
		sc_db *db = NULL;
		SC_ASSERT_ERR(sc_db_open(&db, path), SC_EFORMAT);
		assert_null(db);
		assert_non_null(strstr(sc_err_detail(), "garbage.db is not a splitchain database: "
							"file is not a database"));
	}
}

/* An empty file is a new database, as a missing one is. */
static void test_empty_file_is_created(void **state)
{
	(void)state;
	const char *path = fresh("empty.db");
	assert_int_equal(sc_test_write_file(path, "", 0), 0);
	sc_db *db = NULL;
	SC_ASSERT_OK(sc_db_open(&db, path));
	sc_db_close(db);
	assert_int_equal(path_int(path, "PRAGMA user_version"), SC_DB_SCHEMA_VERSION);
}

static void test_foreign_database_refused(void **state)
{
	(void)state;
	const char *path = fresh("foreign.db");
	sqlite3 *h = NULL;
	assert_int_equal(sqlite3_open(path, &h), SQLITE_OK);
	assert_int_equal(sqlite3_exec(h, "CREATE TABLE notes(x)", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(h);
	sc_db *db = NULL;
	SC_ASSERT_ERR(sc_db_open(&db, path), SC_EFORMAT);
	assert_non_null(strstr(sc_err_detail(), "not a splitchain database"));
	/* Refusing it changed nothing: not even its journal mode. */
	assert_int_equal(path_int(path, "SELECT count(*) FROM sqlite_master"), 1);
	h = reader(path);
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(h, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(st, 0), "delete");
	sqlite3_finalize(st);
	sqlite3_close(h);
	SC_ASSERT_ERR(sc_db_open(&db, "/nonexistent-dir/x.db"), SC_EIO);
}

/* ---- workers and jobs ---- */

static void test_worker_upsert_keeps_id(void **state)
{
	(void)state;
	sc_db *db = NULL;
	SC_ASSERT_OK(sc_db_open(&db, fresh("workers.db")));
	int64_t a = add_worker(db, "edge-a"), b = add_worker(db, "edge-b");
	assert_true(a > 0 && b > 0 && a != b);
	sc_db_worker again = { .name = "edge-a",
			       .device = "cuda:0",
			       .memory_bytes = 1ull << 34,
			       .gflops = 900.5,
			       .control_addr = "tcp://10.0.0.9:7000",
			       .data_addr = "tcp://10.0.0.9:7001",
			       .state = SC_WORKER_BUSY };
	int64_t a2 = 0;
	SC_ASSERT_OK(sc_db_worker_upsert(db, &again, &a2));
	assert_int_equal(a2, a);
	SC_ASSERT_OK(sc_db_worker_set_state(db, b, SC_WORKER_LOST));
	SC_ASSERT_OK(sc_db_worker_seen(db, b));
	SC_ASSERT_ERR(sc_db_worker_seen(db, 999), SC_ENOENT);
	SC_ASSERT_ERR(sc_db_worker_set_state(db, 999, SC_WORKER_IDLE), SC_ENOENT);
	sc_db_worker bad = { .name = "", .state = SC_WORKER_IDLE };
	SC_ASSERT_ERR(sc_db_worker_upsert(db, &bad, &a2), SC_EINVAL);

	sc_db_worker *ws = NULL;
	int n = 0;
	SC_ASSERT_OK(sc_db_workers_list(db, &ws, &n));
	assert_int_equal(n, 2);
	assert_int_equal(ws[0].id, a);
	assert_string_equal(ws[0].name, "edge-a");
	assert_string_equal(ws[0].device, "cuda:0");
	assert_string_equal(ws[0].control_addr, "tcp://10.0.0.9:7000");
	assert_string_equal(ws[0].data_addr, "tcp://10.0.0.9:7001");
	assert_int_equal(ws[0].memory_bytes, 1ull << 34);
	assert_true(ws[0].gflops == 900.5);
	assert_int_equal(ws[0].state, SC_WORKER_BUSY);
	assert_int_equal(ws[1].state, SC_WORKER_LOST);
	int64_t now = sc_db_now_ms();
	assert_true(ws[1].last_seen_ms <= now && ws[1].last_seen_ms > now - 60000);
	free(ws);

	enum sc_worker_state s;
	SC_ASSERT_OK(sc_worker_state_parse("lost", &s));
	assert_int_equal(s, SC_WORKER_LOST);
	SC_ASSERT_ERR(sc_worker_state_parse("gone", &s), SC_EINVAL);
	assert_string_equal(sc_worker_state_name(SC_WORKER_IDLE), "idle");
	sc_db_close(db);
}

static void test_job_lifecycle(void **state)
{
	(void)state;
	sc_db *db = NULL;
	SC_ASSERT_OK(sc_db_open(&db, fresh("jobs.db")));
	sc_db_job *j = NULL, *list = NULL;
	int n = 0;
	SC_ASSERT_OK(sc_db_jobs_list(db, &list, &n));
	assert_int_equal(n, 0);
	assert_null(list);
	int64_t a = add_job(db, "first", 100), b = add_job(db, "second", 50);
	int64_t c = add_job(db, "third", 5);

	SC_ASSERT_OK(sc_db_job_get(db, a, &j));
	assert_int_equal(j->id, a);
	assert_int_equal(j->state, SC_JOB_QUEUED);
	assert_int_equal(j->spec_len, 7);
	assert_memory_equal(j->spec,
			    "\x0a\x03j\x00"
			    "b\xff\x00",
			    7);
	assert_string_equal(j->model_path, "models/gpt2");
	assert_string_equal(j->data_path, "data/train.bin");
	assert_string_equal(j->error, "");
	assert_int_equal(j->stages, 2);
	assert_int_equal(j->steps, 100);
	assert_int_equal(j->step_done, 0);
	assert_true(isnan(j->last_loss));
	assert_true(j->created_ms > 0);
	assert_int_equal(j->started_ms, 0);
	free(j);

	SC_ASSERT_OK(sc_db_job_set_state(db, a, SC_JOB_RUNNING, NULL));
	SC_ASSERT_OK(sc_db_job_progress(db, a, 7, 3.25));
	SC_ASSERT_OK(sc_db_job_set_state(db, b, SC_JOB_RUNNING, NULL));
	SC_ASSERT_OK(sc_db_job_set_state(db, b, SC_JOB_FAILED, "worker edge-a lost"));
	SC_ASSERT_OK(sc_db_job_set_state(db, c, SC_JOB_CANCELLED, NULL));
	SC_ASSERT_OK(sc_db_job_set_state(db, c, SC_JOB_CANCELLED, NULL)); /* idempotent */
	SC_ASSERT_ERR(sc_db_job_set_state(db, b, SC_JOB_RUNNING, NULL), SC_EINVAL);
	SC_ASSERT_ERR(sc_db_job_set_state(db, 999, SC_JOB_RUNNING, NULL), SC_ENOENT);
	SC_ASSERT_ERR(sc_db_job_progress(db, 999, 1, 1.0), SC_ENOENT);
	SC_ASSERT_ERR(sc_db_job_get(db, 999, &j), SC_ENOENT);

	SC_ASSERT_OK(sc_db_jobs_list(db, &list, &n));
	assert_int_equal(n, 3);
	assert_int_equal(list[0].id, a);
	assert_int_equal(list[0].state, SC_JOB_RUNNING);
	assert_int_equal(list[0].step_done, 7);
	assert_true(list[0].last_loss == 3.25);
	assert_true(list[0].started_ms > 0);
	assert_int_equal(list[0].finished_ms, 0);
	assert_int_equal(list[1].state, SC_JOB_FAILED);
	assert_string_equal(list[1].error, "worker edge-a lost");
	assert_true(list[1].finished_ms >= list[1].started_ms && list[1].started_ms > 0);
	assert_int_equal(list[2].state, SC_JOB_CANCELLED);
	assert_int_equal(list[2].started_ms, 0);
	free(list);

	int64_t d = add_job(db, "fourth", 5);
	SC_ASSERT_OK(sc_db_jobs_resumable(db, &list, &n));
	assert_int_equal(n, 2);
	assert_int_equal(list[0].id, a);
	assert_int_equal(list[1].id, d);
	assert_int_equal(list[1].state, SC_JOB_QUEUED);
	free(list);

	enum sc_job_state s;
	SC_ASSERT_OK(sc_job_state_parse("cancelled", &s));
	assert_int_equal(s, SC_JOB_CANCELLED);
	SC_ASSERT_ERR(sc_job_state_parse("paused", &s), SC_EINVAL);
	sc_db_close(db);
}

/* ---- placements ---- */

static void test_placement_versions(void **state)
{
	(void)state;
	const char *path = fresh("placements.db");
	sc_db *db = NULL;
	SC_ASSERT_OK(sc_db_open(&db, path));
	int64_t job = add_job(db, "p", 10), other = add_job(db, "q", 10);
	int64_t wa = add_worker(db, "wa"), wb = add_worker(db, "wb"), wc = add_worker(db, "wc");
	sc_db_stage two[] = {
		{ .stage = 0,
		  .worker_id = wa,
		  .first_layer = 0,
		  .last_layer = 6,
		  .predicted_step_s = 1.5,
		  .worker_gflops = 50,
		  .reason = "fastest first" },
		{ .stage = 1,
		  .worker_id = wb,
		  .first_layer = 6,
		  .last_layer = 12,
		  .predicted_step_s = 1.5,
		  .worker_gflops = 50 },
	};
	sc_db_stage three[] = {
		{ .stage = 0, .worker_id = wa, .first_layer = 0, .last_layer = 4 },
		{ .stage = 1, .worker_id = wb, .first_layer = 4, .last_layer = 8 },
		{ .stage = 2,
		  .worker_id = wc,
		  .first_layer = 8,
		  .last_layer = 12,
		  .reason = "replan: wb slow" },
	};
	uint32_t v = 0;
	sc_db_stage *got = NULL;
	int n = 0;
	SC_ASSERT_ERR(sc_db_placement_latest(db, job, &v, &got, &n), SC_ENOENT);
	SC_ASSERT_OK(sc_db_placement_insert(db, job, two, 2, &v));
	assert_int_equal(v, 1);
	SC_ASSERT_OK(sc_db_placement_insert(db, job, three, 3, &v));
	assert_int_equal(v, 2);
	SC_ASSERT_OK(sc_db_placement_insert(db, other, two, 2, &v));
	assert_int_equal(v, 1);

	/* A gap, a misnumbered stage, an unknown job or worker: refused whole. */
	sc_db_stage gap[] = { two[0], three[2] };
	gap[1].stage = 1;
	SC_ASSERT_ERR(sc_db_placement_insert(db, job, gap, 2, &v), SC_EINVAL);
	SC_ASSERT_ERR(sc_db_placement_insert(db, job, three + 1, 2, &v), SC_EINVAL);
	SC_ASSERT_ERR(sc_db_placement_insert(db, 999, two, 2, &v), SC_ENOENT);
	sc_db_stage ghost[] = { two[0], two[1] };
	ghost[1].worker_id = 999;
	SC_ASSERT_ERR(sc_db_placement_insert(db, job, ghost, 2, &v), SC_EINVAL);
	assert_int_equal(path_int(path, "SELECT count(*) FROM placements"), 7);

	SC_ASSERT_OK(sc_db_placement_latest(db, job, &v, &got, &n));
	assert_int_equal(v, 2);
	assert_int_equal(n, 3);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(got[i].stage, i);
		assert_int_equal(got[i].first_layer, 4 * i);
		assert_int_equal(got[i].last_layer, 4 * i + 4);
	}
	assert_string_equal(got[2].worker_name, "wc");
	assert_string_equal(got[2].reason, "replan: wb slow");
	assert_string_equal(got[0].reason, "");
	free(got);
	SC_ASSERT_OK(sc_db_placement_latest(db, other, &v, &got, &n));
	assert_int_equal(v, 1);
	assert_int_equal(n, 2);
	assert_string_equal(got[0].reason, "fastest first");
	assert_true(got[0].predicted_step_s == 1.5);
	free(got);

	/* A data owner's ring: stage 0 holds [0, 1) and [7, 8); the middle
	 * runs to the tail; a tail elsewhere, or a middle that misses it, is
	 * refused. */
	sc_db_stage ring[] = {
		{ .stage = 0,
		  .worker_id = wa,
		  .first_layer = 0,
		  .last_layer = 1,
		  .tail_first_layer = 7,
		  .tail_last_layer = 8 },
		{ .stage = 1, .worker_id = wb, .first_layer = 1, .last_layer = 4 },
		{ .stage = 2, .worker_id = wc, .first_layer = 4, .last_layer = 7 },
	};
	SC_ASSERT_OK(sc_db_placement_insert(db, job, ring, 3, &v));
	SC_ASSERT_OK(sc_db_placement_latest(db, job, &v, &got, &n));
	assert_int_equal(n, 3);
	assert_int_equal(got[0].tail_first_layer, 7);
	assert_int_equal(got[0].tail_last_layer, 8);
	assert_int_equal(got[1].tail_last_layer, 0);
	free(got);
	assert_int_equal(path_int(path, "SELECT count(*) FROM v_placement_roles WHERE version = 3 "
					"AND role = 'middle'"),
			 2);
	ring[2].last_layer = 6; /* the middle stops short of the tail */
	SC_ASSERT_ERR(sc_db_placement_insert(db, job, ring, 3, &v), SC_EINVAL);
	ring[2].last_layer = 7;
	ring[1].tail_first_layer = 7, ring[1].tail_last_layer = 8; /* a second tail */
	SC_ASSERT_ERR(sc_db_placement_insert(db, job, ring, 3, &v), SC_EINVAL);
	sc_db_close(db);
}

/* ---- checkpoints ---- */

#define NT 6

/* Six tensors: LoRA A/B of two layers and AdamW moments of one. data[i]
 * holds tensor i's floats; some are NaN, -0 and denormals to test exactness. */
struct ckpt_set {
	sc_db_tensor t[NT];
	float *data[NT];
	char names[NT][48];
};

static void make_set(struct ckpt_set *s, uint64_t seed)
{
	static const struct {
		const char *name;
		enum sc_tensor_kind kind;
		int layer;
		int64_t rows, cols;
	} spec[NT] = {
		{ "h.0.attn.c_attn.lora_A", SC_TENSOR_LORA, 0, 8, 48 },
		{ "h.0.attn.c_attn.lora_B", SC_TENSOR_LORA, 0, 144, 8 },
		{ "h.11.attn.c_attn.lora_A", SC_TENSOR_LORA, 11, 8, 48 },
		{ "h.11.attn.c_attn.lora_B", SC_TENSOR_LORA, 11, 144, 8 },
		{ "h.0.attn.c_attn.lora_A", SC_TENSOR_ADAM_M, 0, 8, 48 },
		{ "h.0.attn.c_attn.lora_A", SC_TENSOR_ADAM_V, 0, 8, 48 },
	};
	for (int i = 0; i < NT; i++) {
		size_t numel = (size_t)(spec[i].rows * spec[i].cols);
		s->data[i] = malloc(numel * sizeof(float));
		assert_non_null(s->data[i]);
		sc_test_fill_normal(s->data[i], numel, seed + (uint64_t)i, 0.02f);
		snprintf(s->names[i], sizeof(s->names[i]), "%s", spec[i].name);
		s->t[i] = (sc_db_tensor){ .name = s->names[i],
					  .kind = spec[i].kind,
					  .layer = spec[i].layer,
					  .ndim = 2,
					  .shape = { spec[i].rows, spec[i].cols },
					  .data = s->data[i] };
	}
	s->data[0][0] = -0.0f;
	s->data[0][1] = 1e-42f;
	s->data[0][2] = NAN;
}

static void free_set(struct ckpt_set *s)
{
	for (int i = 0; i < NT; i++)
		free(s->data[i]);
}

static void assert_same(const sc_db_checkpoint *c, const struct ckpt_set *s)
{
	assert_int_equal(c->n_tensors, NT);
	int64_t bytes = 0;
	for (int i = 0; i < NT; i++) {
		const sc_db_tensor *a = &c->tensors[i], *b = &s->t[i];
		assert_string_equal(a->name, b->name);
		assert_int_equal(a->kind, b->kind);
		assert_int_equal(a->layer, b->layer);
		assert_int_equal(a->ndim, b->ndim);
		assert_int_equal(a->shape[0], b->shape[0]);
		assert_int_equal(a->shape[1], b->shape[1]);
		size_t len = (size_t)(b->shape[0] * b->shape[1]) * sizeof(float);
		assert_int_equal((uintptr_t)a->data % sizeof(float), 0);
		assert_memory_equal(a->data, b->data, len);
		bytes += (int64_t)len;
	}
	assert_int_equal(c->bytes, bytes);
}

static void test_checkpoint_roundtrip(void **state)
{
	(void)state;
	const char *path = fresh("ckpt.db");
	sc_db *db = NULL;
	SC_ASSERT_OK(sc_db_open(&db, path));
	int64_t job = add_job(db, "c", 100);
	struct ckpt_set s;
	make_set(&s, 11);
	sc_db_checkpoint *c = NULL;
	SC_ASSERT_ERR(sc_db_checkpoint_latest(db, job, &c), SC_ENOENT);
	int64_t id = 0;
	SC_ASSERT_OK(sc_db_checkpoint_write(db, job, 20, 1, 2.5, s.t, NT, 3, &id));
	assert_true(id > 0);
	sc_db_close(db);

	/* Read back through a fresh handle: what was acknowledged is on disk. */
	SC_ASSERT_OK(sc_db_open(&db, path));
	SC_ASSERT_OK(sc_db_checkpoint_latest(db, job, &c));
	assert_int_equal(c->id, id);
	assert_int_equal(c->job_id, job);
	assert_int_equal(c->step, 20);
	assert_int_equal(c->placement_version, 1);
	assert_true(c->created_ms > 0);
	assert_same(c, &s);
	free(c);
	sc_db_job *j = NULL;
	SC_ASSERT_OK(sc_db_job_get(db, job, &j));
	assert_int_equal(j->step_done, 20);
	assert_true(j->last_loss == 2.5);
	free(j);
	sqlite3 *h = reader(path);
	assert_int_equal(q_int(h, "SELECT count(*) FROM checkpoint_tensors WHERE "
				  "shape = '[8,48]' AND kind = 'lora'"),
			 2);
	sqlite3_close(h);
	free_set(&s);
	sc_db_close(db);
}

static void test_checkpoint_atomic(void **state)
{
	(void)state;
	const char *path = fresh("atomic.db");
	sc_db *db = NULL;
	SC_ASSERT_OK(sc_db_open(&db, path));
	int64_t job = add_job(db, "a", 100);
	struct ckpt_set s;
	make_set(&s, 5);
	SC_ASSERT_OK(sc_db_checkpoint_write(db, job, 10, 1, 4.0, s.t, NT, 3, NULL));
	int64_t tensors = path_int(path, "SELECT count(*) FROM checkpoint_tensors");
	assert_int_equal(tensors, NT);

	/* The last tensor repeats an earlier (kind, name): the primary key fails
	 * after the checkpoint row, the job update and five tensors went in. */
	sc_db_tensor dup[NT];
	memcpy(dup, s.t, sizeof(dup));
	dup[NT - 1].kind = dup[1].kind;
	dup[NT - 1].name = dup[1].name;
	SC_ASSERT_ERR(sc_db_checkpoint_write(db, job, 20, 2, 3.0, dup, NT, 3, NULL), SC_EINVAL);
	assert_non_null(strstr(sc_err_detail(), "h.0.attn.c_attn.lora_B"));
	/* A tensor without data; a shape that does not fit; an unknown job. */
	memcpy(dup, s.t, sizeof(dup));
	dup[3].data = NULL;
	SC_ASSERT_ERR(sc_db_checkpoint_write(db, job, 20, 2, 3.0, dup, NT, 3, NULL), SC_EINVAL);
	memcpy(dup, s.t, sizeof(dup));
	dup[2].shape[0] = -8;
	SC_ASSERT_ERR(sc_db_checkpoint_write(db, job, 20, 2, 3.0, dup, NT, 3, NULL), SC_EINVAL);
	SC_ASSERT_ERR(sc_db_checkpoint_write(db, 999, 20, 2, 3.0, s.t, NT, 3, NULL), SC_ENOENT);
	SC_ASSERT_ERR(sc_db_checkpoint_write(db, job, 20, 2, 3.0, s.t, NT, 0, NULL), SC_EINVAL);

	sqlite3 *h = reader(path);
	assert_int_equal(q_int(h, "SELECT count(*) FROM checkpoints"), 1);
	assert_int_equal(q_int(h, "SELECT step FROM checkpoints"), 10);
	assert_int_equal(q_int(h, "SELECT count(*) FROM checkpoint_tensors"), tensors);
	assert_int_equal(q_int(h, "SELECT step_done FROM jobs"), 10);
	assert_true(q_real(h, "SELECT last_loss FROM jobs") == 4.0);
	sqlite3_close(h);
	sc_db_checkpoint *c = NULL;
	SC_ASSERT_OK(sc_db_checkpoint_latest(db, job, &c));
	assert_int_equal(c->step, 10);
	assert_same(c, &s);
	free(c);
	/* The handle is still good for the next write. */
	SC_ASSERT_OK(sc_db_checkpoint_write(db, job, 20, 2, 3.0, s.t, NT, 3, NULL));
	free_set(&s);
	sc_db_close(db);
}

static void test_checkpoint_prune(void **state)
{
	(void)state;
	const char *path = fresh("prune.db");
	sc_db *db = NULL;
	SC_ASSERT_OK(sc_db_open(&db, path));
	int64_t job = add_job(db, "p", 100), other = add_job(db, "o", 100);
	struct ckpt_set s;
	make_set(&s, 9);
	SC_ASSERT_OK(sc_db_checkpoint_write(db, other, 5, 1, 1.0, s.t, 2, 1, NULL));
	for (uint32_t step = 10; step <= 50; step += 10)
		SC_ASSERT_OK(sc_db_checkpoint_write(db, job, step, 1, 1.0, s.t, NT, 2, NULL));
	sqlite3 *h = reader(path);
	assert_int_equal(q_int(h, "SELECT count(*) FROM checkpoints WHERE job_id = 1"), 2);
	assert_int_equal(q_int(h, "SELECT min(step) FROM checkpoints WHERE job_id = 1"), 40);
	assert_int_equal(q_int(h, "SELECT count(*) FROM checkpoints WHERE job_id = 2"), 1);
	/* The pruned checkpoints' tensors went with them. */
	assert_int_equal(q_int(h, "SELECT count(*) FROM checkpoint_tensors"), 2 * NT + 2);
	sqlite3_close(h);
	sc_db_checkpoint *c = NULL;
	SC_ASSERT_OK(sc_db_checkpoint_latest(db, job, &c));
	assert_int_equal(c->step, 50);
	free(c);
	SC_ASSERT_OK(sc_db_checkpoint_latest(db, other, &c));
	assert_int_equal(c->n_tensors, 2);
	free(c);
	free_set(&s);
	sc_db_close(db);
}

/* A stored tensor whose shape disagrees with its bytes is refused on read. */
static void test_checkpoint_corrupt_tensor(void **state)
{
	(void)state;
	const char *path = fresh("ckptbad.db");
	sc_db *db = NULL;
	SC_ASSERT_OK(sc_db_open(&db, path));
	int64_t job = add_job(db, "x", 100);
	struct ckpt_set s;
	make_set(&s, 3);
	SC_ASSERT_OK(sc_db_checkpoint_write(db, job, 10, 1, 1.0, s.t, NT, 2, NULL));
	static const char *const bad[] = {
		"[8,49]", "[8,48", "[8,,48]", "[-8,48]", "8,48", "[8,48] ", "[1,1,1,1,1,1,1,1,1]"
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		sqlite3 *h = NULL;
		char text[160];
		assert_int_equal(sqlite3_open(path, &h), SQLITE_OK);
		snprintf(text, sizeof(text),
			 "UPDATE checkpoint_tensors SET shape = '%s' "
			 "WHERE name = 'h.11.attn.c_attn.lora_A'",
			 bad[i]);
		assert_int_equal(sqlite3_exec(h, text, NULL, NULL, NULL), SQLITE_OK);
		sqlite3_close(h);
		sc_db_checkpoint *c = NULL;
		SC_ASSERT_ERR(sc_db_checkpoint_latest(db, job, &c), SC_EFORMAT);
		assert_null(c);
		assert_non_null(strstr(sc_err_detail(), "h.11.attn.c_attn.lora_A"));
	}
	free_set(&s);
	sc_db_close(db);
}

/* ---- metrics, events, views ---- */

static void test_metrics(void **state)
{
	(void)state;
	const char *path = fresh("metrics.db");
	sc_db *db = NULL;
	SC_ASSERT_OK(sc_db_open(&db, path));
	int64_t job = add_job(db, "m", 10);
	uint64_t hops[2] = { 12345678901ull, 42 };
	for (uint32_t step = 1; step <= 3; step++) {
		sc_db_metric m = { .step = step,
				   .loss = 5.0 - step,
				   .lr = 1e-3,
				   .grad_norm = 0.5,
				   .tokens_per_s = 1000.0 * step,
				   .step_s = 2.0,
				   .bytes_per_hop = hops,
				   .n_hops = 2,
				   .wire = "int8" };
		SC_ASSERT_OK(sc_db_metric_insert(db, job, &m));
	}
	/* Step 2 redone after a resume replaces its row. */
	sc_db_metric redo = { .step = 2, .loss = 2.75, .lr = 1e-3, .step_s = 2.0 };
	SC_ASSERT_OK(sc_db_metric_insert(db, job, &redo));
	SC_ASSERT_ERR(sc_db_metric_insert(db, 999, &redo), SC_EINVAL);
	sqlite3 *h = reader(path);
	assert_int_equal(q_int(h, "SELECT count(*) FROM metrics"), 3);
	assert_true(q_real(h, "SELECT loss FROM v_loss_curve WHERE step = 2") == 2.75);
	assert_int_equal(q_int(h, "SELECT count(*) FROM metrics WHERE step IN (1, 3) AND "
				  "bytes_per_hop = '[12345678901,42]'"),
			 2);
	assert_int_equal(q_int(h, "SELECT count(*) FROM metrics WHERE bytes_per_hop = '[]'"), 1);
	assert_int_equal(q_int(h, "SELECT count(*) FROM metrics WHERE wire = 'int8'"), 2);
	assert_int_equal(q_int(h, "SELECT json_extract(bytes_per_hop, '$[0]') FROM metrics "
				  "WHERE step = 1"),
			 12345678901ll);
	sqlite3_close(h);
	sc_db_close(db);
}

/* Held-out evaluations: recorded on their step's row, read back as a
 * curve (train and eval) and as the newest; the view gives perplexity. */
static void test_metric_eval_and_curve(void **state)
{
	(void)state;
	const char *path = fresh("evalcurve.db");
	sc_db *db = NULL;
	SC_ASSERT_OK(sc_db_open(&db, path));
	int64_t job = add_job(db, "e", 10);
	uint32_t step = 7;
	double loss = 1;
	SC_ASSERT_OK(sc_db_metric_latest_eval(db, job, &step, &loss));
	assert_int_equal(step, 0); /* none yet */
	for (uint32_t s = 1; s <= 5; s++) {
		sc_db_metric m = { .step = s, .loss = 6.0 - s, .step_s = 1 };
		SC_ASSERT_OK(sc_db_metric_insert(db, job, &m));
		if (s % 2 == 0)
			SC_ASSERT_OK(sc_db_metric_eval(db, job, s, 3.0 - 0.25 * s, 100 + s));
	}
	SC_ASSERT_OK(sc_db_metric_latest_eval(db, job, &step, &loss));
	assert_int_equal(step, 4);
	assert_true(loss == 2.0);
	sc_db_point *p = NULL;
	size_t n = 0;
	SC_ASSERT_OK(sc_db_metric_curve(db, job, 1, 100, &p, &n));
	assert_int_equal(n, 4); /* steps 2..5 */
	assert_int_equal(p[0].step, 2);
	assert_true(p[0].has_eval && p[0].eval_loss == 2.5 && p[0].loss == 4.0);
	assert_false(p[1].has_eval);
	free(p);
	SC_ASSERT_OK(sc_db_metric_curve(db, job, 0, 2, &p, &n));
	assert_int_equal(n, 2); /* at most max */
	assert_int_equal(p[1].step, 2);
	free(p);
	sqlite3 *h = reader(path);
	assert_true(fabs(q_real(h, "SELECT eval_perplexity FROM v_loss_curve WHERE step = 4") -
			 exp(2.0)) < 1e-12);
	assert_int_equal(q_int(h, "SELECT eval_tokens FROM metrics WHERE step = 2"), 102);
	assert_int_equal(q_int(h, "SELECT count(*) FROM v_loss_curve WHERE eval_loss IS NULL"), 3);
	sqlite3_close(h);
	sc_db_close(db);
}

/* Takes a current database back to schema 4: migration 5 undone (the jobs'
 * base columns, v_job_progress as schema 1 made it). */
/* What migration 7 added (registered models, the workers' caches). */
/* What migration 8 added (data owners, U-shaped placements). */
/* What migrations 11 (users, job owners) and 10 (parameter sharing: job
 * slots, memory) added: every test that undoes 10 starts from 11. */
static const char undo_v10[] = "DROP INDEX jobs_by_owner;"
			       "ALTER TABLE jobs DROP COLUMN owner_id;"
			       "DROP TABLE users;"
			       "DROP TABLE worker_job_memory;"
			       "ALTER TABLE workers DROP COLUMN job_slots;"
			       "ALTER TABLE workers DROP COLUMN base_bytes;";
/* What migration 9 added (per-layer base formats). */
static const char undo_v9[] = "DROP TABLE layer_errors;"
			      "ALTER TABLE placements DROP COLUMN layer_quant;"
			      "ALTER TABLE placements DROP COLUMN quant_reason;";

static const char undo_v8[] = "DROP VIEW v_placement_roles;"
			      "ALTER TABLE workers DROP COLUMN data_owner;"
			      "ALTER TABLE placements DROP COLUMN tail_first_layer;"
			      "ALTER TABLE placements DROP COLUMN tail_last_layer;";

static const char undo_v7[] = "DROP VIEW v_models; DROP TABLE worker_tensors;"
			      "DROP TABLE model_files; DROP TABLE model_tensors;"
			      "DROP TABLE models;";

/* What migration 6 added (memory-aware placement). */
static const char undo_v6[] = "ALTER TABLE workers DROP COLUMN memory_reserve_bytes;"
			      "ALTER TABLE placements DROP COLUMN predicted_mem_bytes;"
			      "ALTER TABLE placements DROP COLUMN peak_mem_bytes;";

static const char undo_v5[] =
    "DROP VIEW v_job_progress;"
    "ALTER TABLE jobs DROP COLUMN base_quant;"
    "ALTER TABLE jobs DROP COLUMN double_quant;"
    "ALTER TABLE jobs DROP COLUMN precision;"
    "CREATE VIEW v_job_progress AS SELECT j.id AS job_id, j.name, j.state, j.step_done,"
    " j.steps, CASE WHEN j.steps > 0 THEN round(100.0 * j.step_done / j.steps, 1) END"
    " AS percent, j.last_loss,"
    " (SELECT m.tokens_per_s FROM metrics m WHERE m.job_id = j.id ORDER BY m.step DESC"
    " LIMIT 1) AS tokens_per_s,"
    " CASE WHEN j.state IN ('queued','running') THEN (j.steps - j.step_done) *"
    " (SELECT avg(r.step_s) FROM (SELECT m.step_s FROM metrics m WHERE m.job_id = j.id"
    " ORDER BY m.step DESC LIMIT 10) r) END AS eta_s FROM jobs j;";

/* Runs text (a schema's undoing) on the database at path. */
static void exec_on(const char *path, const char *text)
{
	sqlite3 *h = NULL;
	assert_int_equal(sqlite3_open(path, &h), SQLITE_OK);
	if (sqlite3_exec(h, text, NULL, NULL, NULL) != SQLITE_OK)
		fail_msg("%s", sqlite3_errmsg(h));
	sqlite3_close(h);
}

static void exec_on(const char *path, const char *text);

/* The model registry: add, get, list, its tensors and files, where a hash
 * lives, remove (tensors and files with it), and names in use. */
static void test_models(void **state)
{
	(void)state;
	sc_db *db = NULL;
	sc_db_model m = { .name = "tiny",
			  .dir = "/models/tiny",
			  .digest = "d1",
			  .config_json = "{}",
			  .model_type = "gpt2",
			  .n_layer = 2 };
	sc_manifest_tensor t[2] = {
		{ .name = "a",
		  .dtype = SC_F32,
		  .ndim = 2,
		  .shape = { 2, 3 },
		  .file = "model.safetensors",
		  .offset = 80,
		  .nbytes = 24 },
		{ .name = "b",
		  .dtype = SC_BF16,
		  .ndim = 1,
		  .shape = { 4 },
		  .file = "model.safetensors",
		  .offset = 104,
		  .nbytes = 8 },
	};
	memset(t[0].sha256, 'a', 64);
	memset(t[1].sha256, 'b', 64);
	sc_manifest mf = { .n = 2, .t = t, .bytes = 32 };
	sc_db_model_file f = { "tokenizer.json", "{\"x\": 1}", 8 };
	sc_db_model *got = NULL, *all = NULL;
	sc_db_model_file *fs = NULL;
	sc_manifest back;
	char *path = NULL;
	uint64_t off, nb;
	int64_t id;
	int n;
	SC_ASSERT_OK(sc_db_open(&db, fresh("models.db")));
	SC_ASSERT_OK(sc_db_model_add(db, &m, &mf, &f, 1, &id));
	SC_ASSERT_ERR(sc_db_model_add(db, &m, &mf, &f, 1, &id), SC_EINVAL);
	assert_non_null(strstr(sc_err_detail(), "tiny"));
	SC_ASSERT_OK(sc_db_model_get(db, "tiny", &got));
	assert_int_equal(got->id, id);
	assert_string_equal(got->dir, "/models/tiny");
	assert_int_equal(got->n_tensors, 2);
	assert_int_equal(got->bytes, 32);
	free(got);
	SC_ASSERT_ERR(sc_db_model_get(db, "nope", &got), SC_ENOENT);
	assert_null(got);
	SC_ASSERT_OK(sc_db_models_list(db, &all, &n));
	assert_int_equal(n, 1);
	free(all);
	SC_ASSERT_OK(sc_db_model_tensors(db, id, &back));
	assert_int_equal(back.n, 2);
	assert_string_equal(back.t[1].name, "b");
	assert_int_equal(back.t[1].dtype, SC_BF16);
	assert_int_equal(back.t[0].ndim, 2);
	assert_int_equal(back.t[0].shape[1], 3);
	assert_int_equal(back.t[1].offset, 104);
	assert_string_equal(back.t[1].sha256, t[1].sha256);
	sc_manifest_free(&back);
	SC_ASSERT_OK(sc_db_model_files(db, id, &fs, &n));
	assert_int_equal(n, 1);
	assert_int_equal(fs[0].len, 8);
	assert_memory_equal(fs[0].data, "{\"x\": 1}", 8);
	free(fs);
	SC_ASSERT_OK(sc_db_tensor_source(db, t[1].sha256, &path, &off, &nb));
	assert_string_equal(path, "/models/tiny/model.safetensors");
	assert_int_equal(off, 104);
	assert_int_equal(nb, 8);
	free(path);
	char other[65];
	memset(other, 'c', 64);
	other[64] = '\0';
	SC_ASSERT_ERR(sc_db_tensor_source(db, other, &path, &off, &nb), SC_ENOENT);
	SC_ASSERT_OK(sc_db_model_remove(db, "tiny"));
	SC_ASSERT_ERR(sc_db_model_remove(db, "tiny"), SC_ENOENT);
	SC_ASSERT_ERR(sc_db_tensor_source(db, t[1].sha256, &path, &off, &nb), SC_ENOENT);
	SC_ASSERT_OK(sc_db_model_files(db, id, &fs, &n));
	assert_int_equal(n, 0);
	free(fs);
	sc_db_close(db);
}

/* A database of schema 7 gains data owners (schema 8): its workers kept,
 * none an owner; a worker that registers as one is recorded so. */
/* A database of schema 8 gains the per-layer formats (schema 9): its
 * placements read back with none. */
static void test_migration_from_v8(void **state)
{
	(void)state;
	const char *path = fresh("v8.db");
	sc_db *db = NULL;
	SC_ASSERT_OK(sc_db_open(&db, path));
	int64_t w = add_worker(db, "old-w");
	sc_db_job j = { .name = "old",
			.model_path = "/m",
			.data_path = "/d",
			.spec = "x",
			.spec_len = 1,
			.stages = 1,
			.steps = 1 };
	int64_t job = 0;
	SC_ASSERT_OK(sc_db_job_insert(db, &j, &job));
	sc_db_stage st = { .stage = 0, .worker_id = w, .first_layer = 0, .last_layer = 2 };
	uint32_t v = 0;
	SC_ASSERT_OK(sc_db_placement_insert(db, job, &st, 1, &v));
	sc_db_close(db);
	exec_on(path, undo_v10);
	exec_on(path, undo_v9);
	exec_on(path, "PRAGMA user_version = 8");
	SC_ASSERT_OK(sc_db_open(&db, path));
	assert_int_equal(path_int(path, "PRAGMA user_version"), SC_DB_SCHEMA_VERSION);
	sc_db_stage *got = NULL;
	int n = 0;
	SC_ASSERT_OK(sc_db_placement_latest(db, job, &v, &got, &n));
	assert_int_equal(n, 1);
	assert_string_equal(got[0].layer_quant, "");
	assert_string_equal(got[0].quant_reason, "");
	free(got);
	sc_db_close(db);
}

/* Each layer's measured errors, per model key: all or nothing read back,
 * a second measurement replaces the first, bad figures refused; and a
 * placement's per-layer formats and why. */
static void test_layer_errors(void **state)
{
	(void)state;
	const char *path = fresh("lerr.db");
	sc_db *db = NULL;
	double i8[3] = { 0.01, 0.2, 0.003 }, n4[3] = { 0.1, 0.9, 0.04 }, a[3], b[3];
	SC_ASSERT_OK(sc_db_open(&db, path));
	SC_ASSERT_ERR(sc_db_layer_errors_get(db, "k1", 3, a, b), SC_ENOENT);
	SC_ASSERT_OK(sc_db_layer_errors_put(db, "k1", 3, i8, n4));
	SC_ASSERT_OK(sc_db_layer_errors_get(db, "k1", 3, a, b));
	assert_memory_equal(a, i8, sizeof(a));
	assert_memory_equal(b, n4, sizeof(b));
	/* Another model, or more layers than were measured: not there. */
	SC_ASSERT_ERR(sc_db_layer_errors_get(db, "k2", 3, a, b), SC_ENOENT);
	SC_ASSERT_ERR(sc_db_layer_errors_get(db, "k1", 4, a, b), SC_ENOENT);
	i8[1] = 0.25;
	SC_ASSERT_OK(sc_db_layer_errors_put(db, "k1", 3, i8, n4));
	SC_ASSERT_OK(sc_db_layer_errors_get(db, "k1", 3, a, b));
	assert_true(a[1] == 0.25);
	i8[2] = NAN;
	SC_ASSERT_ERR(sc_db_layer_errors_put(db, "k1", 3, i8, n4), SC_EINVAL);
	i8[2] = -1;
	SC_ASSERT_ERR(sc_db_layer_errors_put(db, "k1", 3, i8, n4), SC_EINVAL);
	assert_non_null(strstr(sc_err_detail(), "layer 2's errors"));
	SC_ASSERT_OK(sc_db_layer_errors_get(db, "k1", 3, a, b)); /* unchanged */
	assert_true(a[2] == 0.003);

	int64_t w = add_worker(db, "w");
	sc_db_job j = { .name = "lq",
			.model_path = "/m",
			.data_path = "/d",
			.spec = "x",
			.spec_len = 1,
			.stages = 2,
			.steps = 1 };
	int64_t job = 0;
	SC_ASSERT_OK(sc_db_job_insert(db, &j, &job));
	sc_db_stage st[2] = {
		{ .stage = 0,
		  .worker_id = w,
		  .first_layer = 0,
		  .last_layer = 2,
		  .layer_quant = "1:int8",
		  .quant_reason = "layer 1 int8 (error 0.003)" },
		{ .stage = 1, .worker_id = w, .first_layer = 2, .last_layer = 4 },
	};
	uint32_t v = 0;
	SC_ASSERT_OK(sc_db_placement_insert(db, job, st, 2, &v));
	sc_db_stage *got = NULL;
	int n = 0;
	SC_ASSERT_OK(sc_db_placement_latest(db, job, &v, &got, &n));
	assert_int_equal(n, 2);
	assert_string_equal(got[0].layer_quant, "1:int8");
	assert_string_equal(got[0].quant_reason, "layer 1 int8 (error 0.003)");
	assert_string_equal(got[1].layer_quant, "");
	free(got);
	sc_db_close(db);
}

static void test_migration_from_v7(void **state)
{
	(void)state;
	const char *path = fresh("v7.db");
	sc_db *db = NULL;
	SC_ASSERT_OK(sc_db_open(&db, path));
	add_worker(db, "old-w");
	sc_db_close(db);
	exec_on(path, undo_v10);
	exec_on(path, undo_v9);
	exec_on(path, undo_v8);
	exec_on(path, "PRAGMA user_version = 7");
	SC_ASSERT_OK(sc_db_open(&db, path));
	assert_int_equal(path_int(path, "PRAGMA user_version"), SC_DB_SCHEMA_VERSION);
	assert_int_equal(path_int(path, "SELECT count(*) FROM workers WHERE data_owner = 0"), 1);
	sc_db_worker w = { .name = "owner-w",
			   .device = "cpu",
			   .memory_bytes = 1,
			   .gflops = 1,
			   .control_addr = "tcp://10.0.0.2:7000",
			   .data_addr = "tcp://10.0.0.2:7001",
			   .state = SC_WORKER_IDLE,
			   .data_owner = 1 };
	int64_t id = 0;
	SC_ASSERT_OK(sc_db_worker_upsert(db, &w, &id));
	sc_db_worker *ws = NULL;
	int n = 0;
	SC_ASSERT_OK(sc_db_workers_list(db, &ws, &n));
	assert_int_equal(n, 2);
	assert_int_equal(ws[0].data_owner + ws[1].data_owner, 1);
	free(ws);
	sc_db_close(db);
}

/* A database of schema 6 gains the model registry (schema 7), empty, its
 * workers kept; their cache reports are recorded and replaced. */
static void test_migration_from_v6(void **state)
{
	(void)state;
	const char *path = fresh("v6.db");
	sc_db *db = NULL;
	SC_ASSERT_OK(sc_db_open(&db, path));
	int64_t w = add_worker(db, "old-w");
	sc_db_close(db);
	exec_on(path, undo_v10);
	exec_on(path, undo_v9);
	exec_on(path, undo_v8);
	exec_on(path, undo_v7);
	exec_on(path, "PRAGMA user_version = 6");
	SC_ASSERT_OK(sc_db_open(&db, path));
	assert_int_equal(path_int(path, "PRAGMA user_version"), SC_DB_SCHEMA_VERSION);
	assert_int_equal(path_int(path, "SELECT count(*) FROM workers"), 1);
	assert_int_equal(path_int(path, "SELECT count(*) FROM models"), 0);
	assert_int_equal(path_int(path, "SELECT count(*) FROM v_models"), 0);
	char sha[2][65];
	memset(sha, 'a', sizeof(sha));
	sha[0][64] = sha[1][64] = '\0';
	sha[1][0] = 'b';
	char *shas[2] = { sha[0], sha[1] };
	SC_ASSERT_OK(sc_db_worker_tensors_set(db, w, shas, 2));
	SC_ASSERT_OK(sc_db_worker_tensors_set(db, w, shas, 1)); /* replaced, not added */
	assert_int_equal(path_int(path, "SELECT count(*) FROM worker_tensors"), 1);
	sc_db_close(db);
}

/* A database of schema 4 gets the jobs' frozen base (schema 5): its jobs
 * read none / fp32, new jobs keep what they were submitted with, and
 * v_job_progress says it in one word. */
static void test_migration_from_v4(void **state)
{
	(void)state;
	const char *path = fresh("v4.db");
	sc_db *db = NULL;
	SC_ASSERT_OK(sc_db_open(&db, path));
	int64_t old = add_job(db, "old", 10);
	sc_db_close(db);
	exec_on(path, undo_v10);
	exec_on(path, undo_v9);
	exec_on(path, undo_v8);
	exec_on(path, undo_v7);
	exec_on(path, undo_v6);
	exec_on(path, undo_v5);
	exec_on(path, "PRAGMA user_version = 4");
	SC_ASSERT_OK(sc_db_open(&db, path));
	assert_int_equal(path_int(path, "PRAGMA user_version"), SC_DB_SCHEMA_VERSION);
	/* schema 6's columns, empty */
	assert_int_equal(path_int(path, "SELECT count(memory_reserve_bytes) FROM workers"), 0);
	assert_int_equal(path_int(path, "SELECT count(predicted_mem_bytes) + count(peak_mem_bytes)"
					" FROM placements"),
			 0);
	sc_db_job *j = NULL;
	SC_ASSERT_OK(sc_db_job_get(db, old, &j));
	assert_string_equal(j->name, "old");
	assert_string_equal(j->base_quant, "none");
	assert_int_equal(j->double_quant, 0);
	assert_string_equal(j->precision, "fp32");
	free(j);
	static const unsigned char spec[] = { 0x0a, 0x01, 'q' };
	sc_db_job nj = { .name = "nf4",
			 .model_path = "m",
			 .data_path = "d",
			 .spec = spec,
			 .spec_len = sizeof(spec),
			 .stages = 2,
			 .steps = 5,
			 .base_quant = "nf4",
			 .double_quant = 1,
			 .precision = "bf16" };
	int64_t id, bf;
	SC_ASSERT_OK(sc_db_job_insert(db, &nj, &id));
	nj.base_quant = "none";
	nj.double_quant = 0;
	SC_ASSERT_OK(sc_db_job_insert(db, &nj, &bf));
	SC_ASSERT_OK(sc_db_job_get(db, id, &j));
	assert_string_equal(j->base_quant, "nf4");
	assert_int_equal(j->double_quant, 1);
	assert_string_equal(j->precision, "bf16");
	free(j);
	nj.base_quant = "int4";
	SC_ASSERT_ERR(sc_db_job_insert(db, &nj, &id), SC_EINVAL);
	nj.base_quant = "int8";
	nj.precision = "fp16";
	SC_ASSERT_ERR(sc_db_job_insert(db, &nj, &id), SC_EINVAL);
	sc_db_close(db);
	sqlite3 *h = reader(path);
	assert_int_equal(q_int(h, "SELECT count(*) FROM v_job_progress WHERE job_id = 1 AND"
				  " base = 'fp32' AND precision = 'fp32'"),
			 1);
	assert_int_equal(q_int(h, "SELECT count(*) FROM v_job_progress WHERE job_id = 2 AND"
				  " base = 'nf4+dq' AND precision = 'bf16'"),
			 1);
	assert_int_equal(q_int(h, "SELECT count(*) FROM v_job_progress WHERE job_id = 3 AND"
				  " base = 'bf16'"),
			 1);
	assert_int_equal(q_int(h, "SELECT count(*) FROM jobs"), 3);
	sqlite3_close(h);
}

/* A database of schema 1 (before evaluations) is brought to the current
 * version on open, its rows kept. */
static void test_migration_from_v1(void **state)
{
	(void)state;
	const char *path = fresh("v1.db");
	sc_db *db = NULL;
	SC_ASSERT_OK(sc_db_open(&db, path));
	int64_t job = add_job(db, "old", 10);
	sc_db_metric m = { .step = 1, .loss = 4.5, .step_s = 1 };
	SC_ASSERT_OK(sc_db_metric_insert(db, job, &m));
	sc_db_close(db);
	sqlite3 *h = NULL;
	exec_on(path, undo_v10);
	exec_on(path, undo_v9);
	exec_on(path, undo_v8);
	exec_on(path, undo_v7);
	exec_on(path, undo_v6);
	exec_on(path, undo_v5);
	assert_int_equal(sqlite3_open(path, &h), SQLITE_OK);
	assert_int_equal(sqlite3_exec(h,
				      "DROP VIEW v_links; DROP TABLE links;"
				      "ALTER TABLE metrics DROP COLUMN wire;"
				      "DROP VIEW v_loss_curve;"
				      "ALTER TABLE metrics DROP COLUMN eval_tokens;"
				      "ALTER TABLE metrics DROP COLUMN eval_loss;"
				      "CREATE VIEW v_loss_curve AS SELECT job_id, step, loss, lr,"
				      " tokens_per_s FROM metrics;"
				      "PRAGMA user_version = 1",
				      NULL, NULL, NULL),
			 SQLITE_OK);
	sqlite3_close(h);
	SC_ASSERT_OK(sc_db_open(&db, path));
	SC_ASSERT_OK(sc_db_metric_eval(db, job, 1, 4.25, 10));
	sc_db_close(db);
	assert_int_equal(path_int(path, "PRAGMA user_version"), SC_DB_SCHEMA_VERSION);
	h = reader(path);
	assert_true(q_real(h, "SELECT loss FROM v_loss_curve WHERE step = 1") == 4.5);
	assert_true(q_real(h, "SELECT eval_loss FROM v_loss_curve WHERE step = 1") == 4.25);
	sqlite3_close(h);
}

static void test_events(void **state)
{
	(void)state;
	const char *path = fresh("events.db");
	sc_db *db = NULL;
	SC_ASSERT_OK(sc_db_open(&db, path));
	int64_t job = add_job(db, "e", 10), w = add_worker(db, "w0");
	SC_ASSERT_OK(sc_db_event(db, 0, 0, SC_LOG_INFO, "startup", "coordinator up"));
	SC_ASSERT_OK(sc_db_event(db, job, w, SC_LOG_WARN, "worker_lost",
				 "worker %s missed %d heartbeats", "w0", 3));
	SC_ASSERT_OK(sc_db_event(db, job, 0, SC_LOG_ERROR, "job_failed", "%s", "it's 100%"));
	SC_ASSERT_ERR(sc_db_event(db, job, 0, SC_LOG_OFF, "x", "y"), SC_EINVAL);
	SC_ASSERT_ERR(sc_db_event(db, job, 0, SC_LOG_INFO, "", "y"), SC_EINVAL);
	sqlite3 *h = reader(path);
	assert_int_equal(q_int(h, "SELECT count(*) FROM events"), 3);
	assert_int_equal(q_int(h, "SELECT count(*) FROM events WHERE job_id IS NULL AND "
				  "worker_id IS NULL AND level = 'info'"),
			 1);
	assert_int_equal(q_int(h, "SELECT count(*) FROM events WHERE kind = 'worker_lost' AND "
				  "message = 'worker w0 missed 3 heartbeats' AND level = 'warn'"),
			 1);
	assert_int_equal(q_int(h, "SELECT count(*) FROM events WHERE message = 'it''s 100%'"), 1);
	assert_int_equal(q_int(h, "SELECT count(*) FROM events WHERE time_ms > 0"), 3);
	sqlite3_close(h);
	sc_db_close(db);
}

static void test_views(void **state)
{
	(void)state;
	const char *path = fresh("views.db");
	sc_db *db = NULL;
	SC_ASSERT_OK(sc_db_open(&db, path));
	int64_t job = add_job(db, "v", 40), idle = add_job(db, "idle", 10);
	add_worker(db, "w0");
	SC_ASSERT_OK(sc_db_job_set_state(db, job, SC_JOB_RUNNING, NULL));
	/* 12 steps: the first two slow, the last ten at 1 s; ETA averages the last ten. */
	for (uint32_t step = 1; step <= 12; step++) {
		sc_db_metric m = { .step = step,
				   .loss = 4.0,
				   .lr = 1e-3,
				   .tokens_per_s = 100.0 * step,
				   .step_s = step <= 2 ? 30.0 : 1.0 };
		SC_ASSERT_OK(sc_db_metric_insert(db, job, &m));
	}
	SC_ASSERT_OK(sc_db_job_progress(db, job, 12, 3.5));
	struct ckpt_set s;
	make_set(&s, 1);
	int64_t c1 = 0, c2 = 0;
	SC_ASSERT_OK(sc_db_checkpoint_write(db, job, 10, 1, 3.6, s.t, 2, 5, &c1));
	SC_ASSERT_OK(sc_db_checkpoint_write(db, job, 12, 1, 3.5, s.t, 2, 5, &c2));
	free_set(&s);

	sqlite3 *h = reader(path);
	assert_int_equal(q_int(h, "SELECT step_done FROM v_job_progress WHERE job_id = 1"), 12);
	assert_true(q_real(h, "SELECT percent FROM v_job_progress WHERE job_id = 1") == 30.0);
	assert_true(q_real(h, "SELECT tokens_per_s FROM v_job_progress WHERE job_id = 1") ==
		    1200.0);
	assert_true(q_real(h, "SELECT eta_s FROM v_job_progress WHERE job_id = 1") == 28.0);
	assert_true(q_real(h, "SELECT last_loss FROM v_job_progress WHERE job_id = 1") == 3.5);
	/* A job with no metrics has no rate and no ETA yet. */
	char text[160];
	snprintf(text, sizeof(text), "SELECT eta_s FROM v_job_progress WHERE job_id = %lld",
		 (long long)idle);
	assert_true(isnan(q_real(h, text)));
	double ago = q_real(h, "SELECT seconds_since_seen FROM v_worker_health");
	assert_true(ago >= -1.0 && ago < 60.0);
	assert_int_equal(q_int(h, "SELECT count(*) FROM v_worker_health WHERE state = 'idle'"), 1);
	assert_int_equal(q_int(h, "SELECT count(*) FROM v_latest_checkpoint"), 1);
	assert_int_equal(q_int(h, "SELECT checkpoint_id FROM v_latest_checkpoint"), c2);
	assert_int_equal(q_int(h, "SELECT step FROM v_latest_checkpoint"), 12);
	assert_true(q_int(h, "SELECT bytes FROM v_latest_checkpoint") > 0);
	assert_int_equal(q_int(h, "SELECT count(*) FROM v_loss_curve WHERE job_id = 1"), 12);
	sqlite3_close(h);
	(void)c1;
	sc_db_close(db);
}

/* ---- links ---- */

/* Parameter sharing: a worker's job slots and memory — its frozen
 * weights and each job's own bytes, each record replacing the last. */
static void test_worker_memory(void **state)
{
	(void)state;
	const char *path = fresh("wmem.db");
	sc_db *db = NULL;
	sc_db_worker *ws = NULL;
	int n = 0;
	SC_ASSERT_OK(sc_db_open(&db, path));
	sc_db_worker w = { .name = "shared",
			   .device = "cpu",
			   .memory_bytes = 8ull << 30,
			   .gflops = 50,
			   .control_addr = "tcp://10.0.0.1:7000",
			   .data_addr = "tcp://10.0.0.1:7001",
			   .state = SC_WORKER_BUSY,
			   .job_slots = 4 };
	int64_t id = 0, other = add_worker(db, "other");
	SC_ASSERT_OK(sc_db_worker_upsert(db, &w, &id));
	sc_db_job_memory jm[2] = { { 7, 1000 }, { 9, 2500 } };
	SC_ASSERT_OK(sc_db_worker_memory(db, id, 123456, jm, 2));
	SC_ASSERT_OK(sc_db_worker_memory(db, other, 99, jm, 1));
	assert_int_equal(path_int(path, "SELECT count(*) FROM worker_job_memory"), 3);
	assert_int_equal(path_int(path, "SELECT bytes FROM worker_job_memory WHERE job_id = 9"),
			 2500);
	/* One job left: the record replaces the last. */
	jm[0].bytes = 1100;
	SC_ASSERT_OK(sc_db_worker_memory(db, id, 123456, jm, 1));
	assert_int_equal(path_int(path, "SELECT count(*) FROM worker_job_memory"), 2);
	assert_int_equal(
	    path_int(path, "SELECT sum(bytes) FROM worker_job_memory WHERE job_id = 7"),
	    1100 + 1000);
	SC_ASSERT_OK(sc_db_workers_list(db, &ws, &n));
	assert_int_equal(n, 2);
	for (int i = 0; i < n; i++) {
		int mine = ws[i].id == id;
		assert_int_equal(ws[i].job_slots, mine ? 4 : 1);
		assert_int_equal(ws[i].base_bytes, mine ? 123456 : 99);
	}
	free(ws);
	/* Nothing held any more. */
	SC_ASSERT_OK(sc_db_worker_memory(db, id, 0, NULL, 0));
	assert_int_equal(path_int(path, "SELECT count(*) FROM worker_job_memory WHERE worker_id = "
					"(SELECT id FROM workers WHERE name = 'shared')"),
			 0);
	sc_db_close(db);
	/* A database of schema 9 gains the columns with one slot and no memory. */
	exec_on(path, undo_v10);
	exec_on(path, "PRAGMA user_version = 9");
	SC_ASSERT_OK(sc_db_open(&db, path));
	assert_int_equal(path_int(path, "SELECT min(job_slots) FROM workers"), 1);
	assert_int_equal(path_int(path, "SELECT max(base_bytes) FROM workers"), 0);
	sc_db_close(db);
}

static void test_links(void **state)
{
	(void)state;
	const char *path = fresh("links.db");
	sc_db *db = NULL;
	sc_db_link *ls = NULL;
	int n = -1;
	SC_ASSERT_OK(sc_db_open(&db, path));
	int64_t a = add_worker(db, "edge-a"), b = add_worker(db, "edge-b");
	SC_ASSERT_OK(sc_db_links_list(db, &ls, &n));
	assert_int_equal(n, 0);
	assert_null(ls);
	int64_t t0 = sc_db_now_ms() - 30000;
	sc_db_link l = {
		.from_worker = a, .to_worker = b, .rtt_ms = 0.5, .mbit_s = 900, .measured_ms = t0
	};
	SC_ASSERT_OK(sc_db_link_upsert(db, &l));
	l = (sc_db_link){
		.from_worker = b, .to_worker = a, .rtt_ms = 0.6, .mbit_s = 400, .measured_ms = t0
	};
	SC_ASSERT_OK(sc_db_link_upsert(db, &l));
	l = (sc_db_link){
		.from_worker = a, .to_worker = 0, .rtt_ms = 2, .mbit_s = 100, .measured_ms = t0
	};
	SC_ASSERT_OK(sc_db_link_upsert(db, &l));
	/* The latest measurement of a pair replaces the one before. */
	l = (sc_db_link){ .from_worker = a,
			  .to_worker = b,
			  .rtt_ms = 0.25,
			  .mbit_s = 950,
			  .measured_ms = t0 + 20000 };
	SC_ASSERT_OK(sc_db_link_upsert(db, &l));
	/* Malformed ones are refused and change nothing. */
	static const struct {
		const char *name;
		sc_db_link l;
	} bad[] = {
		{ "to itself", { .from_worker = 1, .to_worker = 1, .rtt_ms = 1, .mbit_s = 1 } },
		{ "negative id", { .from_worker = -1, .to_worker = 1, .rtt_ms = 1, .mbit_s = 1 } },
		{ "negative rtt", { .from_worker = 1, .to_worker = 2, .rtt_ms = -1, .mbit_s = 1 } },
		{ "zero bandwidth",
		  { .from_worker = 1, .to_worker = 2, .rtt_ms = 1, .mbit_s = 0 } },
		{ "NaN rtt", { .from_worker = 1, .to_worker = 2, .rtt_ms = NAN, .mbit_s = 1 } },
		{ "NaN bandwidth",
		  { .from_worker = 1, .to_worker = 2, .rtt_ms = 1, .mbit_s = NAN } },
		{ "infinite bandwidth",
		  { .from_worker = 1, .to_worker = 2, .rtt_ms = 1, .mbit_s = INFINITY } },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		sc_errf(SC_OK, "%s", "");
		if (sc_db_link_upsert(db, &bad[i].l) != SC_EINVAL || !sc_err_detail()[0])
			fail_msg("%s: not refused with a reason", bad[i].name);
	}
	SC_ASSERT_OK(sc_db_links_list(db, &ls, &n));
	assert_int_equal(n, 3);
	/* by (from, to): a -> 0, a -> b, b -> a */
	assert_true(ls[0].from_worker == a && ls[0].to_worker == 0);
	assert_string_equal(ls[0].from_name, "edge-a");
	assert_string_equal(ls[0].to_name, "");
	assert_true(ls[1].from_worker == a && ls[1].to_worker == b);
	assert_string_equal(ls[1].to_name, "edge-b");
	assert_true(ls[1].rtt_ms == 0.25 && ls[1].mbit_s == 950);
	assert_int_equal(ls[1].measured_ms, t0 + 20000);
	assert_true(ls[2].from_worker == b && ls[2].rtt_ms == 0.6 && ls[2].mbit_s == 400);
	free(ls);

	sqlite3 *h = reader(path);
	assert_int_equal(q_int(h, "SELECT count(*) FROM links"), 3);
	assert_int_equal(q_int(h, "SELECT count(*) FROM v_links"), 3);
	assert_true(q_real(h, "SELECT mbit_s FROM v_links WHERE from_name = 'edge-a' AND"
			      " to_name = 'edge-b'") == 950);
	assert_true(q_real(h, "SELECT rtt_ms FROM v_links WHERE from_name = 'edge-a' AND"
			      " to_name = 'coordinator'") == 2);
	double age = q_real(h, "SELECT age_s FROM v_links WHERE from_name = 'edge-b'");
	if (!(age >= 29 && age < 90))
		fail_msg("age of a link measured 30 s ago: %g s", age);
	age = q_real(h, "SELECT age_s FROM v_links WHERE to_name = 'edge-b'");
	assert_true(age >= 9 && age < 70);
	/* The view names workers, not ids. */
	assert_int_equal(q_int(h, "SELECT count(*) FROM pragma_table_info('v_links')"
				  " WHERE name LIKE '%worker%'"),
			 0);
	sqlite3_close(h);
	sc_db_close(db);
}

/* A database of schema 2 (before links) gains the links table and view on
 * open, its rows kept. */
static void test_migration_from_v2(void **state)
{
	(void)state;
	const char *path = fresh("v2.db");
	sc_db *db = NULL;
	SC_ASSERT_OK(sc_db_open(&db, path));
	int64_t a = add_worker(db, "old-a");
	sc_db_close(db);
	sqlite3 *h = NULL;
	exec_on(path, undo_v10);
	exec_on(path, undo_v9);
	exec_on(path, undo_v8);
	exec_on(path, undo_v7);
	exec_on(path, undo_v6);
	exec_on(path, undo_v5);
	assert_int_equal(sqlite3_open(path, &h), SQLITE_OK);
	assert_int_equal(sqlite3_exec(h,
				      "DROP VIEW v_links; DROP TABLE links;"
				      " ALTER TABLE metrics DROP COLUMN wire;"
				      " PRAGMA user_version = 2",
				      NULL, NULL, NULL),
			 SQLITE_OK);
	sqlite3_close(h);
	SC_ASSERT_OK(sc_db_open(&db, path));
	sc_db_link l = { .from_worker = a,
			 .to_worker = 0,
			 .rtt_ms = 1,
			 .mbit_s = 10,
			 .measured_ms = sc_db_now_ms() };
	SC_ASSERT_OK(sc_db_link_upsert(db, &l));
	sc_db_close(db);
	assert_int_equal(path_int(path, "PRAGMA user_version"), SC_DB_SCHEMA_VERSION);
	assert_int_equal(path_int(path, "SELECT count(*) FROM v_links WHERE from_name = 'old-a'"),
			 1);
	assert_int_equal(path_int(path, "SELECT count(*) FROM workers"), 1);
}

/* ---- concurrency ---- */

/* A reader's open transaction keeps its snapshot while the coordinator
 * writes, and neither waits for the other. */
static void test_wal_reader_beside_writer(void **state)
{
	(void)state;
	const char *path = fresh("wal.db");
	sc_db *db = NULL;
	SC_ASSERT_OK(sc_db_open(&db, path));
	int64_t job = add_job(db, "w", 100);
	SC_ASSERT_OK(sc_db_event(db, job, 0, SC_LOG_INFO, "submitted", "job %lld", (long long)job));
	sqlite3 *h = reader(path);
	assert_int_equal(sqlite3_exec(h, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(q_int(h, "SELECT count(*) FROM events"), 1);

	struct ckpt_set s;
	make_set(&s, 2);
	for (int i = 0; i < 20; i++)
		SC_ASSERT_OK(sc_db_event(db, job, 0, SC_LOG_DEBUG, "tick", "%d", i));
	SC_ASSERT_OK(sc_db_checkpoint_write(db, job, 10, 1, 1.0, s.t, NT, 2, NULL));
	SC_ASSERT_OK(sc_db_job_set_state(db, job, SC_JOB_RUNNING, NULL));
	assert_int_equal(q_int(h, "SELECT count(*) FROM events"), 1);
	assert_int_equal(q_int(h, "SELECT count(*) FROM checkpoints"), 0);
	assert_int_equal(sqlite3_exec(h, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(q_int(h, "SELECT count(*) FROM events"), 21);
	assert_int_equal(q_int(h, "SELECT step FROM v_latest_checkpoint"), 10);
	/* A read-only connection cannot write. */
	assert_int_not_equal(sqlite3_exec(h, "DELETE FROM events", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(h);
	free_set(&s);
	sc_db_close(db);
}

struct thread_arg {
	sc_db *db;
	int64_t job;
	int index;
	sc_err err;
};

static void *writer_thread(void *p)
{
	struct thread_arg *a = p;
	for (int i = 0; i < 40 && a->err == SC_OK; i++) {
		sc_db_metric m = { .step = (uint32_t)(a->index * 1000 + i), .loss = 1.0 };
		a->err = sc_db_metric_insert(a->db, a->job, &m);
		if (a->err == SC_OK)
			a->err =
			    sc_db_event(a->db, a->job, 0, SC_LOG_INFO, "t", "%d.%d", a->index, i);
		if (a->err == SC_OK && i % 10 == 0) {
			sc_db_job *jobs = NULL;
			int n = 0;
			a->err = sc_db_jobs_list(a->db, &jobs, &n);
			free(jobs);
		}
	}
	return NULL;
}

static void test_threads_share_a_handle(void **state)
{
	(void)state;
	const char *path = fresh("threads.db");
	sc_db *db = NULL;
	SC_ASSERT_OK(sc_db_open(&db, path));
	int64_t job = add_job(db, "t", 100);
	pthread_t th[4];
	struct thread_arg args[4];
	for (int i = 0; i < 4; i++) {
		args[i] = (struct thread_arg){ db, job, i, SC_OK };
		assert_int_equal(pthread_create(&th[i], NULL, writer_thread, &args[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(args[i].err, SC_OK);
	}
	assert_int_equal(path_int(path, "SELECT count(*) FROM metrics"), 160);
	assert_int_equal(path_int(path, "SELECT count(*) FROM events"), 160);
	sc_db_close(db);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fresh_schema),
		cmocka_unit_test(test_reopen_idempotent),
		cmocka_unit_test(test_newer_version_refused),
		cmocka_unit_test(test_garbage_refused),
		cmocka_unit_test(test_empty_file_is_created),
		cmocka_unit_test(test_foreign_database_refused),
		cmocka_unit_test(test_worker_upsert_keeps_id),
		cmocka_unit_test(test_job_lifecycle),
		cmocka_unit_test(test_placement_versions),
		cmocka_unit_test(test_checkpoint_roundtrip),
		cmocka_unit_test(test_checkpoint_atomic),
		cmocka_unit_test(test_checkpoint_prune),
		cmocka_unit_test(test_checkpoint_corrupt_tensor),
		cmocka_unit_test(test_metrics),
		cmocka_unit_test(test_metric_eval_and_curve),
		cmocka_unit_test(test_migration_from_v1),
		cmocka_unit_test(test_events),
		cmocka_unit_test(test_views),
		cmocka_unit_test(test_links),
		cmocka_unit_test(test_worker_memory),
		cmocka_unit_test(test_migration_from_v2),
		cmocka_unit_test(test_migration_from_v4),
		cmocka_unit_test(test_migration_from_v6),
		cmocka_unit_test(test_migration_from_v7),
		cmocka_unit_test(test_migration_from_v8),
		cmocka_unit_test(test_layer_errors),
		cmocka_unit_test(test_models),
		cmocka_unit_test(test_wal_reader_beside_writer),
		cmocka_unit_test(test_threads_share_a_handle),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
