/* db.c — the coordinator's SQLite state: opening, schema migrations, the
 * statement cache and the plumbing shared through db_impl.h. Workers, jobs
 * and placements are in db_registry.c; checkpoints, metrics and events in
 * db_state.c; measured links in db_links.c (one function per durable
 * operation, see db.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db_impl.h"

#define BUSY_TIMEOUT_MS 5000
#define WAL_SIZE_LIMIT  "67108864" /* bytes: 64 MiB */

/* Migration i takes user_version i to i + 1. Append only: a released
 * migration is never edited; a change of schema or view is a new one. */
static const char *const migrations[SC_DB_SCHEMA_VERSION] = {
	"CREATE TABLE workers ("
	" id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, device TEXT NOT NULL,"
	" memory_bytes INTEGER NOT NULL, gflops REAL NOT NULL, control_addr TEXT NOT NULL,"
	" data_addr TEXT NOT NULL, state TEXT NOT NULL CHECK (state IN ('idle','busy','lost')),"
	" registered_ms INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL);"
	"CREATE TABLE jobs ("
	" id INTEGER PRIMARY KEY, name TEXT NOT NULL, state TEXT NOT NULL"
	" CHECK (state IN ('queued','running','done','failed','cancelled')),"
	" model_path TEXT NOT NULL, data_path TEXT NOT NULL, spec BLOB NOT NULL,"
	" stages INTEGER NOT NULL, steps INTEGER NOT NULL, step_done INTEGER NOT NULL DEFAULT 0,"
	" last_loss REAL, error TEXT, created_ms INTEGER NOT NULL, started_ms INTEGER,"
	" finished_ms INTEGER);"
	"CREATE INDEX jobs_by_state ON jobs(state);"
	"CREATE TABLE placements ("
	" job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE, version INTEGER NOT NULL,"
	" stage INTEGER NOT NULL, worker_id INTEGER NOT NULL REFERENCES workers(id),"
	" first_layer INTEGER NOT NULL, last_layer INTEGER NOT NULL, predicted_step_s REAL,"
	" worker_gflops REAL, reason TEXT, created_ms INTEGER NOT NULL,"
	" PRIMARY KEY (job_id, version, stage), CHECK (first_layer < last_layer));"
	"CREATE TABLE checkpoints ("
	" id INTEGER PRIMARY KEY, job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
	" step INTEGER NOT NULL, placement_version INTEGER NOT NULL,"
	" created_ms INTEGER NOT NULL, bytes INTEGER NOT NULL);"
	"CREATE INDEX checkpoints_by_job ON checkpoints(job_id, step);"
	"CREATE TABLE checkpoint_tensors ("
	" checkpoint_id INTEGER NOT NULL REFERENCES checkpoints(id) ON DELETE CASCADE,"
	" layer INTEGER NOT NULL, name TEXT NOT NULL,"
	" kind TEXT NOT NULL CHECK (kind IN ('lora','adam_m','adam_v')),"
	" shape TEXT NOT NULL, data BLOB NOT NULL, PRIMARY KEY (checkpoint_id, kind, name));"
	"CREATE TABLE metrics ("
	" job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE, step INTEGER NOT NULL,"
	" loss REAL, lr REAL, grad_norm REAL, tokens_per_s REAL, step_s REAL,"
	" bytes_per_hop TEXT NOT NULL, recorded_ms INTEGER NOT NULL, PRIMARY KEY (job_id, step));"
	"CREATE TABLE events ("
	" id INTEGER PRIMARY KEY, job_id INTEGER REFERENCES jobs(id) ON DELETE CASCADE,"
	" worker_id INTEGER REFERENCES workers(id) ON DELETE SET NULL, time_ms INTEGER NOT NULL,"
	" level TEXT NOT NULL CHECK (level IN ('debug','info','warn','error')),"
	" kind TEXT NOT NULL, message TEXT NOT NULL);"
	"CREATE INDEX events_by_job ON events(job_id, id);"
	"CREATE VIEW v_job_progress AS SELECT j.id AS job_id, j.name, j.state, j.step_done,"
	" j.steps, CASE WHEN j.steps > 0 THEN round(100.0 * j.step_done / j.steps, 1) END"
	" AS percent, j.last_loss,"
	" (SELECT m.tokens_per_s FROM metrics m WHERE m.job_id = j.id ORDER BY m.step DESC"
	" LIMIT 1) AS tokens_per_s,"
	" CASE WHEN j.state IN ('queued','running') THEN (j.steps - j.step_done) *"
	" (SELECT avg(r.step_s) FROM (SELECT m.step_s FROM metrics m WHERE m.job_id = j.id"
	" ORDER BY m.step DESC LIMIT 10) r) END AS eta_s FROM jobs j;"
	"CREATE VIEW v_worker_health AS SELECT w.id AS worker_id, w.name, w.device, w.state,"
	" w.gflops, round((julianday('now') - 2440587.5) * 86400.0 - w.last_seen_ms / 1000.0, 1)"
	" AS seconds_since_seen, w.last_seen_ms FROM workers w;"
	"CREATE VIEW v_latest_checkpoint AS SELECT c.job_id, c.id AS checkpoint_id, c.step,"
	" c.placement_version, c.created_ms, c.bytes FROM checkpoints c WHERE c.id ="
	" (SELECT c2.id FROM checkpoints c2 WHERE c2.job_id = c.job_id"
	" ORDER BY c2.step DESC, c2.id DESC LIMIT 1);"
	"CREATE VIEW v_loss_curve AS SELECT job_id, step, loss, lr, tokens_per_s FROM metrics;",
	/* 2: held-out evaluation */
	"ALTER TABLE metrics ADD COLUMN eval_loss REAL;"
	"ALTER TABLE metrics ADD COLUMN eval_tokens INTEGER;"
	"DROP VIEW v_loss_curve;"
	"CREATE VIEW v_loss_curve AS SELECT job_id, step, loss, lr, tokens_per_s, eval_loss,"
	" exp(eval_loss) AS eval_perplexity FROM metrics;",
	/* 3: measured links (worker 0: the coordinator) */
	"CREATE TABLE links ("
	" from_worker INTEGER NOT NULL, to_worker INTEGER NOT NULL,"
	" rtt_ms REAL NOT NULL CHECK (rtt_ms > 0), mbit_s REAL NOT NULL CHECK (mbit_s > 0),"
	" measured_ms INTEGER NOT NULL, PRIMARY KEY (from_worker, to_worker),"
	" CHECK (from_worker <> to_worker));"
	"CREATE VIEW v_links AS SELECT"
	" CASE WHEN l.from_worker = 0 THEN 'coordinator' ELSE f.name END AS from_name,"
	" CASE WHEN l.to_worker = 0 THEN 'coordinator' ELSE t.name END AS to_name,"
	" l.rtt_ms, l.mbit_s, l.measured_ms,"
	" round((julianday('now') - 2440587.5) * 86400.0 - l.measured_ms / 1000.0, 1) AS age_s"
	" FROM links l LEFT JOIN workers f ON f.id = l.from_worker"
	" LEFT JOIN workers t ON t.id = l.to_worker;",
	/* 4: the wire encoding the step's bytes_per_hop were sent in */
	"ALTER TABLE metrics ADD COLUMN wire TEXT;",
	/* 5: each job's frozen base (--base-quant, --double-quant, --precision) */
	"ALTER TABLE jobs ADD COLUMN base_quant TEXT NOT NULL DEFAULT 'none'"
	" CHECK (base_quant IN ('none','int8','nf4'));"
	"ALTER TABLE jobs ADD COLUMN double_quant INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE jobs ADD COLUMN precision TEXT NOT NULL DEFAULT 'fp32'"
	" CHECK (precision IN ('fp32','bf16'));"
	"DROP VIEW v_job_progress;"
	"CREATE VIEW v_job_progress AS SELECT j.id AS job_id, j.name, j.state, j.step_done,"
	" j.steps, CASE WHEN j.steps > 0 THEN round(100.0 * j.step_done / j.steps, 1) END"
	" AS percent, j.last_loss,"
	" (SELECT m.tokens_per_s FROM metrics m WHERE m.job_id = j.id ORDER BY m.step DESC"
	" LIMIT 1) AS tokens_per_s,"
	" CASE WHEN j.state IN ('queued','running') THEN (j.steps - j.step_done) *"
	" (SELECT avg(r.step_s) FROM (SELECT m.step_s FROM metrics m WHERE m.job_id = j.id"
	" ORDER BY m.step DESC LIMIT 10) r) END AS eta_s,"
	" CASE WHEN j.base_quant <> 'none' THEN j.base_quant ||"
	" CASE WHEN j.double_quant THEN '+dq' ELSE '' END"
	" WHEN j.precision = 'bf16' THEN 'bf16' ELSE 'fp32' END AS base,"
	" j.precision FROM jobs j;",
	/* 6: memory-aware placement: what a worker keeps back, and each stage's
	 * predicted and measured peak */
	"ALTER TABLE workers ADD COLUMN memory_reserve_bytes INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE placements ADD COLUMN predicted_mem_bytes INTEGER;"
	"ALTER TABLE placements ADD COLUMN peak_mem_bytes INTEGER;",
	/* 7: registered models as content-addressed tensors (db_models.c), and
	 * the tensors each worker's cache holds */
	"CREATE TABLE models ("
	" id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, dir TEXT NOT NULL,"
	" digest TEXT NOT NULL, config_json TEXT NOT NULL, model_type TEXT NOT NULL,"
	" n_layer INTEGER NOT NULL, n_tensors INTEGER NOT NULL, bytes INTEGER NOT NULL,"
	" created_ms INTEGER NOT NULL);"
	"CREATE TABLE model_tensors ("
	" model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE, name TEXT NOT NULL,"
	" dtype TEXT NOT NULL, shape TEXT NOT NULL, file TEXT NOT NULL,"
	" offset INTEGER NOT NULL CHECK (offset >= 0), nbytes INTEGER NOT NULL CHECK (nbytes >= 0),"
	" sha256 TEXT NOT NULL CHECK (length(sha256) = 64), PRIMARY KEY (model_id, name));"
	"CREATE INDEX model_tensors_by_sha ON model_tensors(sha256);"
	"CREATE TABLE model_files ("
	" model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE, name TEXT NOT NULL,"
	" data BLOB NOT NULL, PRIMARY KEY (model_id, name));"
	"CREATE TABLE worker_tensors ("
	" worker_id INTEGER NOT NULL REFERENCES workers(id) ON DELETE CASCADE,"
	" sha256 TEXT NOT NULL, reported_ms INTEGER NOT NULL, PRIMARY KEY (worker_id, sha256));"
	"CREATE VIEW v_models AS SELECT m.id AS model_id, m.name, m.model_type, m.n_layer,"
	" m.n_tensors, m.bytes, m.digest, m.dir, m.created_ms,"
	" (SELECT count(DISTINCT wt.worker_id) FROM worker_tensors wt JOIN model_tensors t"
	" ON t.sha256 = wt.sha256 WHERE t.model_id = m.id) AS workers_caching FROM models m;",
	/* 8: private data: data owners, and the U-shaped placement whose stage
	 * 0 (the owner) also holds the last layers and the head */
	"ALTER TABLE workers ADD COLUMN data_owner INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE placements ADD COLUMN tail_first_layer INTEGER;"
	"ALTER TABLE placements ADD COLUMN tail_last_layer INTEGER;"
	"CREATE VIEW v_placement_roles AS SELECT p.job_id, p.version, p.stage, p.worker_id,"
	" w.name AS worker_name, CASE WHEN p.tail_last_layer IS NOT NULL THEN 'owner'"
	" WHEN EXISTS (SELECT 1 FROM placements o WHERE o.job_id = p.job_id AND"
	" o.version = p.version AND o.tail_last_layer IS NOT NULL) THEN 'middle'"
	" ELSE 'stage' END AS role, p.first_layer, p.last_layer, p.tail_first_layer,"
	" p.tail_last_layer FROM placements p LEFT JOIN workers w ON w.id = p.worker_id;",
	/* 9: per-layer base formats chosen by the memory planner: each stage's
	 * layers held in their own format and why, and the measured error of
	 * each layer of a model under int8 and nf4 (measured once per model) */
	"ALTER TABLE placements ADD COLUMN layer_quant TEXT NOT NULL DEFAULT '';"
	"ALTER TABLE placements ADD COLUMN quant_reason TEXT NOT NULL DEFAULT '';"
	"CREATE TABLE layer_errors ("
	" model_key TEXT NOT NULL, layer INTEGER NOT NULL CHECK (layer >= 0),"
	" int8_error REAL NOT NULL, nf4_error REAL NOT NULL, measured_ms INTEGER NOT NULL,"
	" PRIMARY KEY (model_key, layer));",
	/* 10: parameter sharing (splitchain-worker --jobs N): a worker's job
	 * slots, the frozen weights it holds (each shared copy once) and what
	 * each job it serves holds besides them */
	"ALTER TABLE workers ADD COLUMN job_slots INTEGER NOT NULL DEFAULT 1;"
	"ALTER TABLE workers ADD COLUMN base_bytes INTEGER NOT NULL DEFAULT 0;"
	"CREATE TABLE worker_job_memory ("
	" worker_id INTEGER NOT NULL REFERENCES workers(id),"
	" job_id INTEGER NOT NULL, bytes INTEGER NOT NULL CHECK (bytes >= 0),"
	" PRIMARY KEY (worker_id, job_id));",
	/* 11: users with API tokens (only each token's SHA-256 is kept) and each
	 * job's owner (NULL: submitted before there were users) */
	"CREATE TABLE users ("
	" id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
	" token_sha256 TEXT NOT NULL UNIQUE, admin INTEGER NOT NULL DEFAULT 0"
	" CHECK (admin IN (0, 1)), created_ms INTEGER NOT NULL, revoked_ms INTEGER);"
	"ALTER TABLE jobs ADD COLUMN owner_id INTEGER REFERENCES users(id);"
	"CREATE INDEX jobs_by_owner ON jobs(owner_id);",
};

#define WORKER_COLS                                                                                \
	"id, name, device, memory_bytes, gflops, control_addr, data_addr, state,"                  \
	" registered_ms, last_seen_ms, memory_reserve_bytes, data_owner, job_slots, base_bytes"
#define JOB_COLS                                                                                   \
	"id, name, state, model_path, data_path, spec, stages, steps, step_done, last_loss,"       \
	" error, created_ms, started_ms, finished_ms, base_quant, double_quant, precision,"        \
	" coalesce(owner_id, 0)"

static const char *const sql[ST_COUNT] = {
	[ST_WORKER_UPSERT] =
	    "INSERT INTO workers (name, device, memory_bytes, gflops,"
	    " control_addr, data_addr, state, registered_ms, last_seen_ms,"
	    " memory_reserve_bytes, data_owner, job_slots)"
	    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ?10, ?11) ON CONFLICT (name) DO"
	    " UPDATE SET device = ?2, memory_bytes = ?3, gflops = ?4,"
	    " control_addr = ?5, data_addr = ?6, state = ?7,"
	    " registered_ms = ?8, last_seen_ms = ?8, memory_reserve_bytes = ?9,"
	    " data_owner = ?10, job_slots = ?11",
	[ST_WORKER_ID] = "SELECT id FROM workers WHERE name = ?1",
	[ST_WORKER_SEEN] = "UPDATE workers SET last_seen_ms = ?2 WHERE id = ?1",
	[ST_WORKER_STATE] = "UPDATE workers SET state = ?2 WHERE id = ?1",
	[ST_WORKERS] = "SELECT " WORKER_COLS " FROM workers ORDER BY id",
	[ST_JOB_INSERT] = "INSERT INTO jobs (name, state, model_path, data_path, spec, stages,"
			  " steps, created_ms, base_quant, double_quant, precision, owner_id)"
			  " VALUES (?1, 'queued', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,"
			  " nullif(?11, 0))",
	[ST_JOB_GET] = "SELECT " JOB_COLS " FROM jobs WHERE id = ?1",
	[ST_JOBS] = "SELECT " JOB_COLS " FROM jobs ORDER BY id",
	[ST_JOBS_RESUMABLE] = "SELECT " JOB_COLS " FROM jobs WHERE state IN ('queued', 'running')"
			      " ORDER BY id",
	[ST_JOB_STATE] = "SELECT state FROM jobs WHERE id = ?1",
	[ST_JOB_SET_STATE] = "UPDATE jobs SET state = ?2, error = ?3,"
			     " started_ms = CASE WHEN ?2 = 'running' THEN coalesce(started_ms, ?4)"
			     " ELSE started_ms END,"
			     " finished_ms = CASE WHEN ?2 IN ('done', 'failed', 'cancelled')"
			     " THEN ?4 ELSE finished_ms END WHERE id = ?1",
	[ST_JOB_PROGRESS] = "UPDATE jobs SET step_done = ?2, last_loss = ?3 WHERE id = ?1",
	[ST_PLACEMENT_NEXT] = "SELECT coalesce(max(version), 0) + 1 FROM placements"
			      " WHERE job_id = ?1",
	[ST_PLACEMENT_INSERT] = "INSERT INTO placements (job_id, version, stage, worker_id,"
				" first_layer, last_layer, predicted_step_s, worker_gflops, reason,"
				" created_ms, predicted_mem_bytes, tail_first_layer,"
				" tail_last_layer, layer_quant, quant_reason)"
				" VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13,"
				" ?14, ?15)",
	[ST_PLACEMENT_LATEST] = "SELECT p.stage, p.worker_id, w.name, p.first_layer,"
				" p.last_layer, p.predicted_step_s, p.worker_gflops, p.reason,"
				" p.predicted_mem_bytes, p.peak_mem_bytes,"
				" p.tail_first_layer, p.tail_last_layer, p.layer_quant,"
				" p.quant_reason"
				" FROM placements p LEFT JOIN workers w ON w.id = p.worker_id"
				" WHERE p.job_id = ?1 AND p.version = ?2 ORDER BY p.stage",
	[ST_PLACEMENT_PEAK] = "UPDATE placements SET peak_mem_bytes ="
			      " max(coalesce(peak_mem_bytes, 0), ?4)"
			      " WHERE job_id = ?1 AND version = ?2 AND stage = ?3",
	[ST_CKPT_INSERT] = "INSERT INTO checkpoints (job_id, step, placement_version, created_ms,"
			   " bytes) VALUES (?1, ?2, ?3, ?4, ?5)",
	[ST_TENSOR_INSERT] = "INSERT INTO checkpoint_tensors (checkpoint_id, layer, name, kind,"
			     " shape, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
	[ST_CKPT_PRUNE] = "DELETE FROM checkpoints WHERE job_id = ?1 AND id NOT IN (SELECT id"
			  " FROM checkpoints WHERE job_id = ?1 ORDER BY step DESC, id DESC"
			  " LIMIT ?2)",
	[ST_CKPT_LATEST] = "SELECT id, step, placement_version, created_ms, bytes FROM checkpoints"
			   " WHERE job_id = ?1 ORDER BY step DESC, id DESC LIMIT 1",
	[ST_TENSORS] = "SELECT name, kind, layer, shape, data FROM checkpoint_tensors"
		       " WHERE checkpoint_id = ?1 ORDER BY rowid",
	[ST_METRIC] = "INSERT OR REPLACE INTO metrics (job_id, step, loss, lr, grad_norm,"
		      " tokens_per_s, step_s, bytes_per_hop, recorded_ms, wire)"
		      " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
	[ST_METRIC_EVAL] = "UPDATE metrics SET eval_loss = ?3, eval_tokens = ?4"
			   " WHERE job_id = ?1 AND step = ?2",
	[ST_METRIC_CURVE] = "SELECT step, loss, eval_loss FROM metrics WHERE job_id = ?1"
			    " AND step > ?2 ORDER BY step LIMIT ?3",
	[ST_METRIC_LATEST_EVAL] = "SELECT step, eval_loss FROM metrics WHERE job_id = ?1"
				  " AND eval_loss IS NOT NULL ORDER BY step DESC LIMIT 1",
	[ST_EVENT] = "INSERT INTO events (job_id, worker_id, time_ms, level, kind, message)"
		     " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
	[ST_METRIC_LATEST] =
	    "SELECT step, loss, tokens_per_s, step_s FROM metrics WHERE job_id = ?1"
	    " ORDER BY step DESC LIMIT 1",
	[ST_LAYER_ERRORS_GET] = "SELECT layer, int8_error, nf4_error FROM layer_errors"
				" WHERE model_key = ?1 ORDER BY layer",
	[ST_LAYER_ERRORS_PUT] = "INSERT OR REPLACE INTO layer_errors (model_key, layer,"
				" int8_error, nf4_error, measured_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
	[ST_WORKER_BASE] = "UPDATE workers SET base_bytes = ?2 WHERE id = ?1",
	[ST_WORKER_JOBMEM_CLEAR] = "DELETE FROM worker_job_memory WHERE worker_id = ?1",
	[ST_WORKER_JOBMEM_PUT] = "INSERT OR REPLACE INTO worker_job_memory (worker_id, job_id,"
				 " bytes) VALUES (?1, ?2, ?3)",
	[ST_LINK_UPSERT] = "INSERT INTO links (from_worker, to_worker, rtt_ms, mbit_s, measured_ms)"
			   " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (from_worker, to_worker) DO"
			   " UPDATE SET rtt_ms = ?3, mbit_s = ?4, measured_ms = ?5",
	[ST_LINKS] =
	    "SELECT l.from_worker, coalesce(f.name, ''), l.to_worker,"
	    " coalesce(t.name, ''), l.rtt_ms, l.mbit_s, l.measured_ms FROM links l"
	    " LEFT JOIN workers f ON f.id = l.from_worker"
	    " LEFT JOIN workers t ON t.id = l.to_worker ORDER BY l.from_worker, l.to_worker",
};

const char *const db_worker_states[SC_WORKER_STATE_COUNT] = { "idle", "busy", "lost" };
const char *const db_job_states[SC_JOB_STATE_COUNT] = {
	"queued", "running", "done", "failed", "cancelled",
};
const char *const db_tensor_kinds[SC_TENSOR_KIND_COUNT] = { "lora", "adam_m", "adam_v" };

const char *sc_worker_state_name(enum sc_worker_state s)
{
	return (unsigned)s < SC_WORKER_STATE_COUNT ? db_worker_states[s] : "?";
}

const char *sc_job_state_name(enum sc_job_state s)
{
	return (unsigned)s < SC_JOB_STATE_COUNT ? db_job_states[s] : "?";
}

const char *sc_tensor_kind_name(enum sc_tensor_kind k)
{
	return (unsigned)k < SC_TENSOR_KIND_COUNT ? db_tensor_kinds[k] : "?";
}

int db_name_index(const char *const *names, int n, const char *name)
{
	for (int i = 0; name && i < n; i++)
		if (strcmp(names[i], name) == 0)
			return i;
	return -1;
}

sc_err sc_worker_state_parse(const char *name, enum sc_worker_state *out)
{
	int i = db_name_index(db_worker_states, SC_WORKER_STATE_COUNT, name);
	if (i < 0)
		return sc_errf(SC_EINVAL, "unknown worker state '%s'", name ? name : "(null)");
	*out = (enum sc_worker_state)i;
	return SC_OK;
}

sc_err sc_job_state_parse(const char *name, enum sc_job_state *out)
{
	int i = db_name_index(db_job_states, SC_JOB_STATE_COUNT, name);
	if (i < 0)
		return sc_errf(SC_EINVAL, "unknown job state '%s'", name ? name : "(null)");
	*out = (enum sc_job_state)i;
	return SC_OK;
}

int64_t sc_db_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- SQLite plumbing; every function here is called with db->mu held ---- */

sc_err db_fail(sc_db *db, int rc, const char *what)
{
	sc_err code;
	switch (rc & 0xff) {
	case SQLITE_NOMEM: code = SC_ENOMEM; break;
	case SQLITE_NOTADB:
	case SQLITE_CORRUPT: code = SC_EFORMAT; break;
	case SQLITE_CONSTRAINT:
	case SQLITE_TOOBIG:
	case SQLITE_MISMATCH: code = SC_EINVAL; break;
	default: code = SC_EIO; break;
	}
	return sc_errf(code, "%s: %s: %s", db->path, what, sqlite3_errmsg(db->h));
}

sc_err db_stmt(sc_db *db, enum st id, sqlite3_stmt **out)
{
	if (!db->st[id]) {
		int rc = sqlite3_prepare_v3(db->h, sql[id], -1, SQLITE_PREPARE_PERSISTENT,
					    &db->st[id], NULL);
		if (rc != SQLITE_OK)
			return db_fail(db, rc, "preparing a statement");
	}
	*out = db->st[id];
	return SC_OK;
}

void db_finish(sqlite3_stmt *st)
{
	if (st) {
		sqlite3_reset(st);
		sqlite3_clear_bindings(st);
	}
}

sc_err db_run(sc_db *db, sqlite3_stmt *st, const char *what)
{
	int rc = sqlite3_step(st);
	sc_err err = rc == SQLITE_DONE ? SC_OK : db_fail(db, rc, what);
	db_finish(st);
	return err;
}

sc_err db_exec(sc_db *db, const char *text, const char *what)
{
	int rc = sqlite3_exec(db->h, text, NULL, NULL, NULL);
	return rc == SQLITE_OK ? SC_OK : db_fail(db, rc, what);
}

void db_bind_text(sqlite3_stmt *st, int i, const char *s)
{
	sqlite3_bind_text(st, i, s ? s : "", -1, SQLITE_STATIC);
}

void db_bind_blob(sqlite3_stmt *st, int i, const void *p, size_t n)
{
	if (n == 0)
		sqlite3_bind_zeroblob(st, i, 0); /* a NULL pointer would bind SQL NULL */
	else
		sqlite3_bind_blob64(st, i, p, n, SQLITE_STATIC);
}

sc_err db_set_sync(sc_db *db, int full)
{
	if (db->sync_full == full)
		return SC_OK;
	SC_TRY(db_exec(db, full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL",
		       "setting synchronous"));
	db->sync_full = full;
	return SC_OK;
}

sc_err db_begin(sc_db *db, int durable)
{
	SC_TRY(db_set_sync(db, durable));
	return db_exec(db, "BEGIN IMMEDIATE", "beginning a transaction");
}

sc_err db_commit(sc_db *db)
{
	return db_exec(db, "COMMIT", "committing");
}

void db_rollback(sc_db *db)
{
	if (!sqlite3_get_autocommit(db->h))
		sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
}

sc_err db_update_one(sc_db *db, sqlite3_stmt *st, const char *thing, int64_t id)
{
	char what[64];
	snprintf(what, sizeof(what), "updating %s %lld", thing, (long long)id);
	SC_TRY(db_run(db, st, what));
	if (sqlite3_changes(db->h) == 0)
		return sc_errf(SC_ENOENT, "%s: no %s with id %lld", db->path, thing, (long long)id);
	return SC_OK;
}

/* ---- result blocks: measured in one pass, filled in a second ---- */

static void *arena_take(struct arena *a, size_t n, size_t align)
{
	size_t at = (a->used + align - 1) & ~(align - 1);
	a->used = at + n;
	if (!a->base || a->used > a->cap) {
		a->bad |= a->base != NULL;
		return NULL;
	}
	return a->base + at;
}

/* Copies n bytes of src (NULL: out of memory unless n is 0) plus a NUL. */
static void *arena_copy(struct arena *a, const void *src, size_t n, size_t align)
{
	char *p = arena_take(a, n + 1, align);
	if (n && !src)
		a->bad = 1;
	else if (p) {
		if (n)
			memcpy(p, src, n);
		p[n] = 0;
	}
	return p;
}

const void *db_arena_blob(struct arena *a, sqlite3_stmt *st, int col, size_t *len)
{
	const void *src = sqlite3_column_blob(st, col);
	*len = (size_t)sqlite3_column_bytes(st, col);
	return arena_copy(a, src, *len, 16);
}

const char *db_arena_text(struct arena *a, sqlite3_stmt *st, int col)
{
	int null = sqlite3_column_type(st, col) == SQLITE_NULL;
	const unsigned char *src = null ? NULL : sqlite3_column_text(st, col);
	return arena_copy(a, src, null ? 0 : (size_t)sqlite3_column_bytes(st, col), 1);
}

union any_rec {
	sc_db_worker w;
	sc_db_job j;
	sc_db_stage s;
	sc_db_tensor t;
	sc_db_link l;
};

size_t db_round16(size_t n)
{
	return (n + 15) & ~(size_t)15;
}

sc_err db_read_rows(sc_db *db, sqlite3_stmt *st, size_t head, size_t rec_size, row_fn fn,
		    void **out, int *n)
{
	union any_rec scratch;
	struct arena a = { NULL, 0, 0, 0 };
	char *block = NULL;
	sc_err err = SC_OK;
	int rows = 0, rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if ((err = fn(st, &scratch, &a)) != SC_OK)
			goto fail;
		rows++;
	}
	if (rc != SQLITE_DONE) {
		err = db_fail(db, rc, "reading");
		goto fail;
	}
	size_t recs_at = db_round16(head),
	       strings_at = db_round16(recs_at + (size_t)rows * rec_size);
	if (head || rows) {
		block = calloc(1, strings_at + a.used);
		if (!block) {
			err = sc_errf(SC_ENOMEM, "%s: %zu bytes for %d rows", db->path,
				      strings_at + a.used, rows);
			goto fail;
		}
	}
	sqlite3_reset(st);
	a = (struct arena){ block + strings_at, 0, a.used, a.bad };
	int i = 0;
	for (; i < rows && sqlite3_step(st) == SQLITE_ROW; i++)
		if ((err = fn(st, block + recs_at + (size_t)i * rec_size, &a)) != SC_OK)
			goto fail;
	if (i != rows || a.bad) {
		err = sc_errf(SC_ENOMEM, "%s: reading %d rows: SQLite ran out of memory", db->path,
			      rows);
		goto fail;
	}
	db_finish(st);
	*out = block;
	*n = rows;
	return SC_OK;
fail:
	db_finish(st);
	free(block);
	return err;
}

sc_err db_read_list(sc_db *db, sqlite3_stmt *st, size_t rec_size, row_fn fn, void **out, int *n)
{
	sc_err err = db_exec(db, "BEGIN", "beginning a read");
	if (err == SC_OK)
		err = db_read_rows(db, st, 0, rec_size, fn, out, n);
	if (err == SC_OK && (err = db_commit(db)) != SC_OK) {
		free(*out);
		*out = NULL;
	}
	db_rollback(db);
	return err;
}

/* ---- open and close ---- */

static sc_err pragma_int(sc_db *db, const char *text, int64_t *out)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(db->h, text, -1, &st, NULL);
	if (rc == SQLITE_OK) {
		rc = sqlite3_step(st);
		*out = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
		rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
	}
	sqlite3_finalize(st);
	if ((rc & 0xff) == SQLITE_NOTADB)
		return sc_errf(SC_EFORMAT, "%s is not a splitchain database: %s", db->path,
			       sqlite3_errstr(rc));
	return rc == SQLITE_OK ? SC_OK : db_fail(db, rc, text);
}

/* Reads the schema version into *version after checking that the file is
 * splitchain's (or empty) and not newer than this code. Reads only. */
static sc_err identify(sc_db *db, int64_t *version)
{
	int64_t app_id, tables;
	SC_TRY(pragma_int(db, "PRAGMA user_version", version));
	SC_TRY(pragma_int(db, "PRAGMA application_id", &app_id));
	SC_TRY(pragma_int(db, "SELECT count(*) FROM sqlite_master", &tables));
	if (app_id != SC_DB_APPLICATION_ID && (app_id != 0 || *version != 0 || tables != 0))
		return sc_errf(SC_EFORMAT,
			       "%s is not a splitchain database: it belongs to another program "
			       "(application_id 0x%llx, user_version %lld)",
			       db->path, (unsigned long long)app_id, (long long)*version);
	if (*version < 0)
		return sc_errf(SC_EFORMAT, "%s: negative schema version %lld", db->path,
			       (long long)*version);
	if (*version > SC_DB_SCHEMA_VERSION)
		return sc_errf(SC_ENOTSUP,
			       "%s has schema version %lld, newer than this splitchain knows (%d): "
			       "upgrade splitchain to open it",
			       db->path, (long long)*version, SC_DB_SCHEMA_VERSION);
	return SC_OK;
}

/* Brings the schema from user_version up to SC_DB_SCHEMA_VERSION, every
 * migration in one transaction. */
static sc_err migrate(sc_db *db)
{
	int64_t version;
	char text[96];
	sc_err err = db_begin(db, 1);
	if (err != SC_OK)
		return err;
	/* Again, now under the write lock: another process may have migrated it. */
	if ((err = identify(db, &version)) != SC_OK)
		goto fail;
	if (version == SC_DB_SCHEMA_VERSION) {
		db_rollback(db);
		return SC_OK;
	}
	for (int64_t v = version; v < SC_DB_SCHEMA_VERSION; v++) {
		snprintf(text, sizeof(text), "migrating the schema to version %lld",
			 (long long)v + 1);
		if ((err = db_exec(db, migrations[v], text)) != SC_OK)
			goto fail;
	}
	snprintf(text, sizeof(text), "PRAGMA application_id = %d; PRAGMA user_version = %d",
		 SC_DB_APPLICATION_ID, SC_DB_SCHEMA_VERSION);
	if ((err = db_exec(db, text, "setting the schema version")) != SC_OK ||
	    (err = db_commit(db)) != SC_OK)
		goto fail;
	return SC_OK;
fail:
	db_rollback(db);
	return err;
}

static sc_err configure(sc_db *db)
{
	int64_t version, fk;
	sqlite3_busy_timeout(db->h, BUSY_TIMEOUT_MS);
	/* The first read of the file: a non-SQLite file fails here, and a file
	 * that is not ours is refused before anything changes it. */
	SC_TRY(identify(db, &version));
	if (sqlite3_db_readonly(db->h, "main") == 1)
		return sc_errf(SC_EIO, "%s: the database file is read-only", db->path);
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(db->h, "PRAGMA journal_mode = WAL", -1, &st, NULL);
	if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *mode = (const char *)sqlite3_column_text(st, 0);
		if (!mode || strcmp(mode, "wal") != 0) {
			sc_errf(SC_EIO, "%s: cannot use WAL mode here (journal mode stays '%s')",
				db->path, mode ? mode : "?");
			sqlite3_finalize(st);
			return SC_EIO;
		}
		rc = SQLITE_OK;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_OK)
		return db_fail(db, rc, "setting WAL mode");
	SC_TRY(db_exec(db, "PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL",
		       "configuring the connection"));
	/* Advisory: a WAL that a large checkpoint grew is truncated back after it. */
	sqlite3_exec(db->h, "PRAGMA journal_size_limit = " WAL_SIZE_LIMIT, NULL, NULL, NULL);
	SC_TRY(pragma_int(db, "PRAGMA foreign_keys", &fk));
	if (fk != 1)
		return sc_errf(SC_ENOTSUP, "%s: this SQLite has no foreign key support", db->path);
	return SC_OK;
}

sc_err sc_db_open(sc_db **out, const char *path)
{
	*out = NULL;
	if (!path || !*path)
		return sc_errf(SC_EINVAL, "sc_db_open: no database path");
	sc_db *db = calloc(1, sizeof(*db));
	if (!db || !(db->path = strdup(path))) {
		free(db);
		return sc_errf(SC_ENOMEM, "%s: out of memory opening the database", path);
	}
	pthread_mutex_init(&db->mu, NULL);
	sc_err err;
	int rc = sqlite3_open_v2(
	    path, &db->h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		err = sc_errf(rc == SQLITE_NOMEM ? SC_ENOMEM : SC_EIO, "%s: cannot open: %s", path,
			      db->h ? sqlite3_errmsg(db->h) : sqlite3_errstr(rc));
		goto fail;
	}
	if ((err = configure(db)) != SC_OK || (err = migrate(db)) != SC_OK)
		goto fail;
	db->ready = 1;
	*out = db;
	return SC_OK;
fail:
	sc_db_close(db);
	return err;
}

void sc_db_close(sc_db *db)
{
	if (!db)
		return;
	for (int i = 0; i < ST_COUNT; i++)
		sqlite3_finalize(db->st[i]);
	if (db->ready)
		sqlite3_exec(db->h, "PRAGMA optimize", NULL, NULL, NULL);
	sqlite3_close(db->h);
	pthread_mutex_destroy(&db->mu);
	free(db->path);
	free(db);
}
