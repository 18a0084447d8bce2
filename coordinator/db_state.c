/* db_state.c — a job's training state in SQLite: checkpoints (LoRA and
 * optimizer tensors), metrics and events (see db.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db_impl.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "checkpoint tensors are stored as little-endian float32, copied as they are"
#endif

#define MAX_TENSOR_FLOATS ((uint64_t)1 << 28)

static const char *const levels[] = { "debug", "info", "warn", "error" };

/* ---- checkpoints ---- */

/* Checks t and sets *numel; SC_EINVAL naming tensor i otherwise. */
static sc_err tensor_check(const sc_db *db, const sc_db_tensor *t, int i, uint64_t *numel)
{
	const char *name = t->name ? t->name : "(null)";
	if (!t->name || !*t->name || !t->data || (unsigned)t->kind >= SC_TENSOR_KIND_COUNT ||
	    t->ndim < 0 || t->ndim > SC_DB_MAX_DIMS)
		return sc_errf(SC_EINVAL,
			       "%s: checkpoint tensor %d '%s' lacks a name or data, or "
			       "has a bad kind or rank",
			       db->path, i, name);
	*numel = 1;
	for (int d = 0; d < t->ndim; d++) {
		if (t->shape[d] < 0 || (uint64_t)t->shape[d] > MAX_TENSOR_FLOATS ||
		    (*numel *= (uint64_t)t->shape[d]) > MAX_TENSOR_FLOATS)
			return sc_errf(SC_EINVAL,
				       "%s: checkpoint tensor '%s': shape[%d] = %lld is "
				       "negative or too large",
				       db->path, name, d, (long long)t->shape[d]);
	}
	return SC_OK;
}

/* The shape as JSON, "[8,768]". buf holds SC_DB_MAX_DIMS numbers. */
static const char *shape_json(char *buf, size_t size, const int64_t *shape, int ndim)
{
	size_t k = (size_t)snprintf(buf, size, "[");
	for (int d = 0; d < ndim && k < size; d++)
		k += (size_t)snprintf(buf + k, size - k, d ? ",%lld" : "%lld", (long long)shape[d]);
	if (k < size)
		snprintf(buf + k, size - k, "]");
	return buf;
}

/* Parses shape_json's output (spaces allowed); -1 on anything else. */
static int shape_parse(const char *s, int64_t *shape, int *ndim)
{
	int n = 0;
	if (!s || *s++ != '[')
		return -1;
	while (*s == ' ')
		s++;
	while (*s != ']') {
		uint64_t v = 0;
		if (n == SC_DB_MAX_DIMS || *s < '0' || *s > '9')
			return -1;
		for (; *s >= '0' && *s <= '9'; s++)
			if ((v = v * 10 + (uint64_t)(*s - '0')) > MAX_TENSOR_FLOATS)
				return -1;
		shape[n++] = (int64_t)v;
		while (*s == ' ')
			s++;
		if (*s == ',') {
			for (s++; *s == ' ';)
				s++;
			if (*s == ']')
				return -1;
		} else if (*s != ']') {
			return -1;
		}
	}
	*ndim = n;
	return s[1] == '\0' ? 0 : -1;
}

static sc_err read_tensor(sqlite3_stmt *st, void *rec, struct arena *a)
{
	sc_db_tensor *t = rec;
	const char *name = (const char *)sqlite3_column_text(st, 0);
	const char *kind = (const char *)sqlite3_column_text(st, 1);
	const char *shape = (const char *)sqlite3_column_text(st, 3);
	int k = db_name_index(db_tensor_kinds, SC_TENSOR_KIND_COUNT, kind);
	int ok = k >= 0 && shape_parse(shape, t->shape, &t->ndim) == 0;
	uint64_t numel = 1;
	for (int d = 0; ok && d < t->ndim; d++)
		ok = (numel *= (uint64_t)t->shape[d]) <= MAX_TENSOR_FLOATS;
	size_t len;
	t->kind = (enum sc_tensor_kind)(k < 0 ? 0 : k);
	t->layer = (int32_t)sqlite3_column_int64(st, 2);
	t->data = db_arena_blob(a, st, 4, &len);
	if (!ok || len != numel * sizeof(float))
		return sc_errf(SC_EFORMAT,
			       "tensor '%s' (%s): shape %s does not match its %zu "
			       "data bytes",
			       name ? name : "?", kind ? kind : "?", shape ? shape : "?", len);
	t->name = db_arena_text(a, st, 0);
	return SC_OK;
}

sc_err sc_db_checkpoint_write(sc_db *db, int64_t job_id, uint32_t step, uint32_t placement_version,
			      double loss, const sc_db_tensor *tensors, int n, int keep,
			      int64_t *id_out)
{
	uint64_t numel = 0, bytes = 0;
	if (n < 1 || !tensors || keep < 1)
		return sc_errf(SC_EINVAL,
			       "%s: a checkpoint needs tensors (got %d) and keep >= 1 "
			       "(got %d)",
			       db->path, n, keep);
	for (int i = 0; i < n; i++) {
		SC_TRY(tensor_check(db, &tensors[i], i, &numel));
		bytes += numel * sizeof(float);
	}
	sqlite3_stmt *st = NULL;
	int64_t ckpt = 0;
	char shape[SC_DB_MAX_DIMS * 21 + 3], what[96];
	sc_err err;
	pthread_mutex_lock(&db->mu);
	if ((err = db_begin(db, 1)) != SC_OK || (err = db_stmt(db, ST_JOB_PROGRESS, &st)) != SC_OK)
		goto out;
	sqlite3_bind_int64(st, 1, job_id);
	sqlite3_bind_int64(st, 2, step);
	sqlite3_bind_double(st, 3, loss);
	if ((err = db_update_one(db, st, "job", job_id)) != SC_OK ||
	    (err = db_stmt(db, ST_CKPT_INSERT, &st)) != SC_OK)
		goto out;
	sqlite3_bind_int64(st, 1, job_id);
	sqlite3_bind_int64(st, 2, step);
	sqlite3_bind_int64(st, 3, placement_version);
	sqlite3_bind_int64(st, 4, sc_db_now_ms());
	sqlite3_bind_int64(st, 5, (int64_t)bytes);
	if ((err = db_run(db, st, "inserting a checkpoint")) != SC_OK)
		goto out;
	ckpt = sqlite3_last_insert_rowid(db->h);
	for (int i = 0; i < n; i++) {
		const sc_db_tensor *t = &tensors[i];
		if ((err = tensor_check(db, t, i, &numel)) != SC_OK ||
		    (err = db_stmt(db, ST_TENSOR_INSERT, &st)) != SC_OK)
			goto out;
		sqlite3_bind_int64(st, 1, ckpt);
		sqlite3_bind_int64(st, 2, t->layer);
		db_bind_text(st, 3, t->name);
		db_bind_text(st, 4, db_tensor_kinds[t->kind]);
		db_bind_text(st, 5, shape_json(shape, sizeof(shape), t->shape, t->ndim));
		db_bind_blob(st, 6, t->data, numel * sizeof(float));
		snprintf(what, sizeof(what), "checkpoint tensor '%.40s' (%s)", t->name,
			 db_tensor_kinds[t->kind]);
		if ((err = db_run(db, st, what)) != SC_OK)
			goto out;
	}
	if ((err = db_stmt(db, ST_CKPT_PRUNE, &st)) != SC_OK)
		goto out;
	sqlite3_bind_int64(st, 1, job_id);
	sqlite3_bind_int64(st, 2, keep);
	if ((err = db_run(db, st, "pruning old checkpoints")) != SC_OK ||
	    (err = db_commit(db)) != SC_OK)
		goto out;
	if (id_out)
		*id_out = ckpt;
out:
	db_rollback(db);
	pthread_mutex_unlock(&db->mu);
	return err;
}

sc_err sc_db_checkpoint_latest(sc_db *db, int64_t job_id, sc_db_checkpoint **out)
{
	sc_db_checkpoint head = { .job_id = job_id };
	sqlite3_stmt *st = NULL;
	void *block = NULL;
	sc_err err;
	int rc;
	*out = NULL;
	pthread_mutex_lock(&db->mu);
	if ((err = db_exec(db, "BEGIN", "beginning a read")) != SC_OK ||
	    (err = db_stmt(db, ST_CKPT_LATEST, &st)) != SC_OK)
		goto out;
	sqlite3_bind_int64(st, 1, job_id);
	if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		head.id = sqlite3_column_int64(st, 0);
		head.step = (uint32_t)sqlite3_column_int64(st, 1);
		head.placement_version = (uint32_t)sqlite3_column_int64(st, 2);
		head.created_ms = sqlite3_column_int64(st, 3);
		head.bytes = sqlite3_column_int64(st, 4);
	}
	db_finish(st);
	if (rc == SQLITE_DONE)
		err = sc_errf(SC_ENOENT, "%s: job %lld has no checkpoint", db->path,
			      (long long)job_id);
	else if (rc != SQLITE_ROW)
		err = db_fail(db, rc, "reading a checkpoint");
	if (err != SC_OK || (err = db_stmt(db, ST_TENSORS, &st)) != SC_OK)
		goto out;
	sqlite3_bind_int64(st, 1, head.id);
	err = db_read_rows(db, st, sizeof(head), sizeof(sc_db_tensor), read_tensor, &block,
			   &head.n_tensors);
	if (err != SC_OK) {
		sc_err_wrap(err, "%s: checkpoint %lld of job %lld", db->path, (long long)head.id,
			    (long long)job_id);
		goto out;
	}
	if ((err = db_commit(db)) != SC_OK)
		goto out;
	if (head.n_tensors)
		head.tensors = (sc_db_tensor *)((char *)block + db_round16(sizeof(head)));
	memcpy(block, &head, sizeof(head));
	*out = block;
	block = NULL;
out:
	db_rollback(db);
	free(block);
	pthread_mutex_unlock(&db->mu);
	return err;
}

/* ---- metrics and events ---- */

sc_err sc_db_metric_insert(sc_db *db, int64_t job_id, const sc_db_metric *m)
{
	if (!m || m->n_hops < 0 || (m->n_hops > 0 && !m->bytes_per_hop))
		return sc_errf(SC_EINVAL, "%s: bad metric row for job %lld", db->path,
			       (long long)job_id);
	size_t size = 3 + (size_t)m->n_hops * 21, k = 1;
	char *hops = malloc(size);
	if (!hops)
		return sc_errf(SC_ENOMEM, "%s: out of memory for a metric row", db->path);
	hops[0] = '[';
	for (int i = 0; i < m->n_hops; i++)
		k += (size_t)snprintf(hops + k, size - k, i ? ",%llu" : "%llu",
				      (unsigned long long)m->bytes_per_hop[i]);
	snprintf(hops + k, size - k, "]");
	sqlite3_stmt *st = NULL;
	sc_err err;
	pthread_mutex_lock(&db->mu);
	if ((err = db_set_sync(db, 0)) == SC_OK && (err = db_stmt(db, ST_METRIC, &st)) == SC_OK) {
		sqlite3_bind_int64(st, 1, job_id);
		sqlite3_bind_int64(st, 2, m->step);
		sqlite3_bind_double(st, 3, m->loss);
		sqlite3_bind_double(st, 4, m->lr);
		sqlite3_bind_double(st, 5, m->grad_norm);
		sqlite3_bind_double(st, 6, m->tokens_per_s);
		sqlite3_bind_double(st, 7, m->step_s);
		db_bind_text(st, 8, hops);
		sqlite3_bind_int64(st, 9, sc_db_now_ms());
		if (m->wire)
			db_bind_text(st, 10, m->wire);
		err = db_run(db, st, "inserting a metric row");
	}
	pthread_mutex_unlock(&db->mu);
	free(hops);
	return err;
}

sc_err sc_db_metric_latest(sc_db *db, int64_t job_id, sc_db_metric *out)
{
	sqlite3_stmt *st = NULL;
	sc_err err;
	int rc;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&db->mu);
	if ((err = db_stmt(db, ST_METRIC_LATEST, &st)) == SC_OK) {
		sqlite3_bind_int64(st, 1, job_id);
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			out->step = (uint32_t)sqlite3_column_int64(st, 0);
			out->loss = sqlite3_column_double(st, 1);
			out->tokens_per_s = sqlite3_column_double(st, 2);
			out->step_s = sqlite3_column_double(st, 3);
		} else if (rc == SQLITE_DONE) {
			err = sc_errf(SC_ENOENT, "%s: job %lld has no metrics", db->path,
				      (long long)job_id);
		} else {
			err = db_fail(db, rc, "reading the newest metric row");
		}
		db_finish(st);
	}
	pthread_mutex_unlock(&db->mu);
	return err;
}

sc_err sc_db_metric_eval(sc_db *db, int64_t job_id, uint32_t step, double loss, uint64_t tokens)
{
	sqlite3_stmt *st = NULL;
	sc_err err;
	pthread_mutex_lock(&db->mu);
	if ((err = db_set_sync(db, 0)) == SC_OK &&
	    (err = db_stmt(db, ST_METRIC_EVAL, &st)) == SC_OK) {
		sqlite3_bind_int64(st, 1, job_id);
		sqlite3_bind_int64(st, 2, step);
		sqlite3_bind_double(st, 3, loss);
		sqlite3_bind_int64(st, 4, (sqlite3_int64)tokens);
		err = db_run(db, st, "recording an evaluation");
	}
	pthread_mutex_unlock(&db->mu);
	return err;
}

sc_err sc_db_metric_curve(sc_db *db, int64_t job_id, uint32_t after, size_t max, sc_db_point **out,
			  size_t *n)
{
	sqlite3_stmt *st = NULL;
	sc_db_point *p = calloc(max ? max : 1, sizeof(*p));
	sc_err err;
	int rc = SQLITE_DONE;

	*out = NULL;
	*n = 0;
	if (!p)
		return sc_errf(SC_ENOMEM, "%s: out of memory for %zu points", db->path, max);
	pthread_mutex_lock(&db->mu);
	if ((err = db_stmt(db, ST_METRIC_CURVE, &st)) == SC_OK) {
		sqlite3_bind_int64(st, 1, job_id);
		sqlite3_bind_int64(st, 2, after);
		sqlite3_bind_int64(st, 3, (sqlite3_int64)max);
		while (*n < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
			sc_db_point *q = &p[(*n)++];
			q->step = (uint32_t)sqlite3_column_int64(st, 0);
			q->loss = sqlite3_column_double(st, 1);
			q->has_eval = sqlite3_column_type(st, 2) != SQLITE_NULL;
			q->eval_loss = q->has_eval ? sqlite3_column_double(st, 2) : 0;
		}
		if (rc != SQLITE_ROW && rc != SQLITE_DONE)
			err = db_fail(db, rc, "reading a loss curve");
		db_finish(st);
	}
	pthread_mutex_unlock(&db->mu);
	if (err) {
		free(p);
		*n = 0;
		return err;
	}
	*out = p;
	return SC_OK;
}

sc_err sc_db_metric_latest_eval(sc_db *db, int64_t job_id, uint32_t *step, double *loss)
{
	sqlite3_stmt *st = NULL;
	sc_err err;
	int rc;

	*step = 0;
	*loss = 0;
	pthread_mutex_lock(&db->mu);
	if ((err = db_stmt(db, ST_METRIC_LATEST_EVAL, &st)) == SC_OK) {
		sqlite3_bind_int64(st, 1, job_id);
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			*step = (uint32_t)sqlite3_column_int64(st, 0);
			*loss = sqlite3_column_double(st, 1);
		} else if (rc != SQLITE_DONE) {
			err = db_fail(db, rc, "reading the newest evaluation");
		}
		db_finish(st);
	}
	pthread_mutex_unlock(&db->mu);
	return err;
}

sc_err sc_db_event(sc_db *db, int64_t job_id, int64_t worker_id, enum sc_log_level level,
		   const char *kind, const char *fmt, ...)
{
	if ((unsigned)level > SC_LOG_ERROR || !kind || !*kind || !fmt)
		return sc_errf(SC_EINVAL, "%s: an event needs a level, a kind and a message",
			       db->path);
	va_list ap, ap2;
	va_start(ap, fmt);
	va_copy(ap2, ap);
	int len = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	char *msg = len >= 0 ? malloc((size_t)len + 1) : NULL;
	if (msg)
		vsnprintf(msg, (size_t)len + 1, fmt, ap2);
	va_end(ap2);
	if (!msg)
		return sc_errf(SC_ENOMEM, "%s: cannot format an event message", db->path);
	sqlite3_stmt *st = NULL;
	sc_err err;
	pthread_mutex_lock(&db->mu);
	if ((err = db_set_sync(db, 0)) == SC_OK && (err = db_stmt(db, ST_EVENT, &st)) == SC_OK) {
		if (job_id)
			sqlite3_bind_int64(st, 1, job_id);
		if (worker_id)
			sqlite3_bind_int64(st, 2, worker_id);
		sqlite3_bind_int64(st, 3, sc_db_now_ms());
		db_bind_text(st, 4, levels[level]);
		db_bind_text(st, 5, kind);
		db_bind_text(st, 6, msg);
		err = db_run(db, st, "inserting an event");
	}
	pthread_mutex_unlock(&db->mu);
	free(msg);
	return err;
}
