/* db_models.c — registered models, their tensors and files, and the tensors
 * each worker caches (db_models.h). Rare operations: statements are
 * prepared per call, not cached. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "db_impl.h"
#include "db_models.h"

#define MODEL_COLS                                                                                 \
	"id, name, dir, digest, config_json, model_type, n_layer, n_tensors, bytes, created_ms"

static sc_err prepare(sc_db *db, const char *text, sqlite3_stmt **st)
{
	int rc = sqlite3_prepare_v2(db->h, text, -1, st, NULL);
	return rc == SQLITE_OK ? SC_OK : db_fail(db, rc, "preparing a models statement");
}

static sc_err read_model(sqlite3_stmt *st, void *rec, struct arena *a)
{
	sc_db_model *m = rec;
	m->id = sqlite3_column_int64(st, 0);
	m->name = db_arena_text(a, st, 1);
	m->dir = db_arena_text(a, st, 2);
	m->digest = db_arena_text(a, st, 3);
	m->config_json = db_arena_text(a, st, 4);
	m->model_type = db_arena_text(a, st, 5);
	m->n_layer = sqlite3_column_int(st, 6);
	m->n_tensors = sqlite3_column_int(st, 7);
	m->bytes = (uint64_t)sqlite3_column_int64(st, 8);
	m->created_ms = sqlite3_column_int64(st, 9);
	return SC_OK;
}

static sc_err read_file(sqlite3_stmt *st, void *rec, struct arena *a)
{
	sc_db_model_file *f = rec;
	f->name = db_arena_text(a, st, 0);
	f->data = db_arena_blob(a, st, 1, &f->len);
	return SC_OK;
}

/* The shape as a JSON array, "[768,2304]", into buf. */
static void shape_text(char *buf, size_t size, const sc_manifest_tensor *t)
{
	size_t k = (size_t)snprintf(buf, size, "[");
	for (int i = 0; i < t->ndim && k < size; i++)
		k += (size_t)snprintf(buf + k, size - k, "%s%lld", i ? "," : "",
				      (long long)t->shape[i]);
	if (k < size)
		snprintf(buf + k, size - k, "]");
}

static sc_err insert_rows(sc_db *db, int64_t id, const sc_manifest *mf,
			  const sc_db_model_file *files, int nfiles)
{
	sqlite3_stmt *st = NULL;
	char shape[256];
	sc_err err =
	    prepare(db,
		    "INSERT INTO model_tensors (model_id, name, dtype, shape, file, offset,"
		    " nbytes, sha256) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
		    &st);
	for (int i = 0; i < mf->n && !err; i++) {
		const sc_manifest_tensor *t = &mf->t[i];
		shape_text(shape, sizeof(shape), t);
		sqlite3_bind_int64(st, 1, id);
		db_bind_text(st, 2, t->name);
		db_bind_text(st, 3, sc_dtype_name(t->dtype));
		db_bind_text(st, 4, shape);
		db_bind_text(st, 5, t->file);
		sqlite3_bind_int64(st, 6, (sqlite3_int64)t->offset);
		sqlite3_bind_int64(st, 7, (sqlite3_int64)t->nbytes);
		db_bind_text(st, 8, t->sha256);
		err = db_run(db, st, "recording a model tensor");
	}
	sqlite3_finalize(st);
	st = NULL;
	if (!err)
		err = prepare(
		    db, "INSERT INTO model_files (model_id, name, data) VALUES (?1, ?2, ?3)", &st);
	for (int i = 0; i < nfiles && !err; i++) {
		sqlite3_bind_int64(st, 1, id);
		db_bind_text(st, 2, files[i].name);
		db_bind_blob(st, 3, files[i].data, files[i].len);
		err = db_run(db, st, "recording a model file");
	}
	sqlite3_finalize(st);
	return err;
}

sc_err sc_db_model_add(sc_db *db, const sc_db_model *m, const sc_manifest *mf,
		       const sc_db_model_file *files, int nfiles, int64_t *id)
{
	sqlite3_stmt *st = NULL;
	sc_err err;
	pthread_mutex_lock(&db->mu);
	if ((err = db_begin(db, 1)) != SC_OK)
		goto out;
	if ((err = prepare(db, "SELECT count(*) FROM models WHERE name = ?1", &st)) == SC_OK) {
		db_bind_text(st, 1, m->name);
		if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0) > 0)
			err = sc_errf(SC_EINVAL,
				      "a model called '%s' is registered already (models rm it "
				      "first)",
				      m->name);
		sqlite3_finalize(st);
		st = NULL;
	}
	if (!err && (err = prepare(
			 db,
			 "INSERT INTO models (name, dir, digest, config_json, model_type, n_layer,"
			 " n_tensors, bytes, created_ms) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)",
			 &st)) == SC_OK) {
		db_bind_text(st, 1, m->name);
		db_bind_text(st, 2, m->dir);
		db_bind_text(st, 3, m->digest);
		db_bind_text(st, 4, m->config_json);
		db_bind_text(st, 5, m->model_type);
		sqlite3_bind_int(st, 6, m->n_layer);
		sqlite3_bind_int(st, 7, mf->n);
		sqlite3_bind_int64(st, 8, (sqlite3_int64)mf->bytes);
		sqlite3_bind_int64(st, 9, sc_db_now_ms());
		err = db_run(db, st, "registering a model");
		*id = sqlite3_last_insert_rowid(db->h);
		sqlite3_finalize(st);
	}
	if (!err)
		err = insert_rows(db, *id, mf, files, nfiles);
	if (!err)
		err = db_commit(db);
	if (err)
		db_rollback(db);
out:
	pthread_mutex_unlock(&db->mu);
	return err;
}

sc_err sc_db_model_get(sc_db *db, const char *name, sc_db_model **out)
{
	sqlite3_stmt *st = NULL;
	int n = 0;
	sc_err err;
	*out = NULL;
	pthread_mutex_lock(&db->mu);
	err = prepare(db, "SELECT " MODEL_COLS " FROM models WHERE name = ?1", &st);
	if (!err) {
		db_bind_text(st, 1, name);
		err = db_read_list(db, st, sizeof(**out), read_model, (void **)out, &n);
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&db->mu);
	if (!err && n == 0) {
		free(*out);
		*out = NULL;
		err = sc_errf(SC_ENOENT,
			      "no model called '%s' is registered (splitchain models "
			      "add NAME DIR registers one)",
			      name);
	}
	return err;
}

sc_err sc_db_models_list(sc_db *db, sc_db_model **out, int *n)
{
	sqlite3_stmt *st = NULL;
	sc_err err;
	*out = NULL;
	*n = 0;
	pthread_mutex_lock(&db->mu);
	err = prepare(db, "SELECT " MODEL_COLS " FROM models ORDER BY name", &st);
	if (!err)
		err = db_read_list(db, st, sizeof(**out), read_model, (void **)out, n);
	sqlite3_finalize(st);
	pthread_mutex_unlock(&db->mu);
	return err;
}

/* Parses a stored shape ("[768,2304]") into t. */
static sc_err parse_shape(sc_manifest_tensor *t, const char *text)
{
	cJSON *a = cJSON_Parse(text);
	const cJSON *d;
	sc_err err = SC_OK;
	t->ndim = 0;
	if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) > SC_ST_MAX_DIMS)
		err = sc_errf(SC_EFORMAT, "tensor '%s': stored shape '%s' is malformed", t->name,
			      text);
	else
		cJSON_ArrayForEach(d, a) t->shape[t->ndim++] = (int64_t)d->valuedouble;
	cJSON_Delete(a);
	return err;
}

sc_err sc_db_model_tensors(sc_db *db, int64_t model_id, sc_manifest *mf)
{
	sqlite3_stmt *st = NULL;
	sc_err err;
	int rc, cap = 0;
	memset(mf, 0, sizeof(*mf));
	pthread_mutex_lock(&db->mu);
	err = prepare(db,
		      "SELECT name, dtype, shape, file, offset, nbytes, sha256 FROM model_tensors"
		      " WHERE model_id = ?1 ORDER BY name",
		      &st);
	if (!err)
		sqlite3_bind_int64(st, 1, model_id);
	while (!err && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (mf->n == cap) {
			int nc = cap ? 2 * cap : 64;
			sc_manifest_tensor *p = realloc(mf->t, (size_t)nc * sizeof(*p));
			if (!p) {
				err = sc_errf(SC_ENOMEM, "out of memory");
				break;
			}
			mf->t = p;
			cap = nc;
		}
		sc_manifest_tensor *t = &mf->t[mf->n];
		memset(t, 0, sizeof(*t));
		t->name = strdup((const char *)sqlite3_column_text(st, 0));
		t->file = strdup((const char *)sqlite3_column_text(st, 3));
		if (!t->name || !t->file) {
			free(t->name);
			free(t->file);
			err = sc_errf(SC_ENOMEM, "out of memory");
			break;
		}
		mf->n++;
		t->offset = (uint64_t)sqlite3_column_int64(st, 4);
		t->nbytes = (uint64_t)sqlite3_column_int64(st, 5);
		snprintf(t->sha256, sizeof(t->sha256), "%s", sqlite3_column_text(st, 6));
		mf->bytes += t->nbytes;
		if (!err)
			err = sc_dtype_parse((const char *)sqlite3_column_text(st, 1), &t->dtype);
		if (!err)
			err = parse_shape(t, (const char *)sqlite3_column_text(st, 2));
	}
	if (!err && rc != SQLITE_DONE)
		err = db_fail(db, rc, "reading a model's tensors");
	sqlite3_finalize(st);
	pthread_mutex_unlock(&db->mu);
	if (err)
		sc_manifest_free(mf);
	return err;
}

sc_err sc_db_model_files(sc_db *db, int64_t model_id, sc_db_model_file **out, int *n)
{
	sqlite3_stmt *st = NULL;
	sc_err err;
	*out = NULL;
	*n = 0;
	pthread_mutex_lock(&db->mu);
	err = prepare(db, "SELECT name, data FROM model_files WHERE model_id = ?1 ORDER BY name",
		      &st);
	if (!err) {
		sqlite3_bind_int64(st, 1, model_id);
		err = db_read_list(db, st, sizeof(**out), read_file, (void **)out, n);
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&db->mu);
	return err;
}

sc_err sc_db_model_remove(sc_db *db, const char *name)
{
	sqlite3_stmt *st = NULL;
	sc_err err;
	pthread_mutex_lock(&db->mu);
	if ((err = db_set_sync(db, 1)) == SC_OK &&
	    (err = prepare(db, "DELETE FROM models WHERE name = ?1", &st)) == SC_OK) {
		db_bind_text(st, 1, name);
		err = db_run(db, st, "removing a model");
		if (!err && sqlite3_changes(db->h) == 0)
			err = sc_errf(SC_ENOENT, "no model called '%s' is registered", name);
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&db->mu);
	return err;
}

sc_err sc_db_tensor_source(sc_db *db, const char *sha, char **path, uint64_t *offset,
			   uint64_t *nbytes)
{
	sqlite3_stmt *st = NULL;
	sc_err err;
	int rc;
	*path = NULL;
	pthread_mutex_lock(&db->mu);
	err = prepare(db,
		      "SELECT m.dir, t.file, t.offset, t.nbytes FROM model_tensors t JOIN models m"
		      " ON m.id = t.model_id WHERE t.sha256 = ?1 ORDER BY m.id LIMIT 1",
		      &st);
	if (!err) {
		db_bind_text(st, 1, sha);
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			const char *dir = (const char *)sqlite3_column_text(st, 0);
			const char *file = (const char *)sqlite3_column_text(st, 1);
			size_t size = strlen(dir) + strlen(file) + 2;
			if ((*path = malloc(size)))
				snprintf(*path, size, "%s/%s", dir, file);
			else
				err = sc_errf(SC_ENOMEM, "out of memory");
			*offset = (uint64_t)sqlite3_column_int64(st, 2);
			*nbytes = (uint64_t)sqlite3_column_int64(st, 3);
		} else if (rc == SQLITE_DONE) {
			err = sc_errf(SC_ENOENT, "no registered model has a tensor of sha256 %s",
				      sha);
		} else {
			err = db_fail(db, rc, "finding a tensor");
		}
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&db->mu);
	return err;
}

sc_err sc_db_worker_tensors_set(sc_db *db, int64_t worker, char *const *sha, size_t n)
{
	sqlite3_stmt *st = NULL;
	sc_err err;
	pthread_mutex_lock(&db->mu);
	if ((err = db_begin(db, 0)) != SC_OK)
		goto out;
	if ((err = prepare(db, "DELETE FROM worker_tensors WHERE worker_id = ?1", &st)) == SC_OK) {
		sqlite3_bind_int64(st, 1, worker);
		err = db_run(db, st, "forgetting a worker's cache");
	}
	sqlite3_finalize(st);
	st = NULL;
	if (!err)
		err =
		    prepare(db,
			    "INSERT OR IGNORE INTO worker_tensors (worker_id, sha256, reported_ms)"
			    " VALUES (?1, ?2, ?3)",
			    &st);
	int64_t now = sc_db_now_ms();
	for (size_t i = 0; i < n && !err; i++) {
		sqlite3_bind_int64(st, 1, worker);
		db_bind_text(st, 2, sha[i]);
		sqlite3_bind_int64(st, 3, now);
		err = db_run(db, st, "recording a worker's cached tensor");
	}
	sqlite3_finalize(st);
	if (!err)
		err = db_commit(db);
	if (err)
		db_rollback(db);
out:
	pthread_mutex_unlock(&db->mu);
	return err;
}

sc_err sc_db_tensor_holders(sc_db *db, const char *sha, int64_t **ids, int *n)
{
	sqlite3_stmt *st = NULL;
	sc_err err;
	int cap = 0, rc = SQLITE_DONE;
	*ids = NULL;
	*n = 0;
	pthread_mutex_lock(&db->mu);
	err = prepare(db, "SELECT worker_id FROM worker_tensors WHERE sha256 = ?1", &st);
	if (!err)
		db_bind_text(st, 1, sha);
	while (!err && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (*n == cap) {
			cap = cap ? 2 * cap : 8;
			int64_t *p = realloc(*ids, (size_t)cap * sizeof(*p));
			if (!p) {
				err = sc_errf(SC_ENOMEM, "out of memory");
				break;
			}
			*ids = p;
		}
		(*ids)[(*n)++] = sqlite3_column_int64(st, 0);
	}
	if (!err && rc != SQLITE_DONE)
		err = db_fail(db, rc, "finding a tensor's holders");
	sqlite3_finalize(st);
	pthread_mutex_unlock(&db->mu);
	if (err) {
		free(*ids);
		*ids = NULL;
		*n = 0;
	}
	return err;
}

sc_err sc_db_model_user(sc_db *db, const char *name, int64_t *job)
{
	sqlite3_stmt *st = NULL;
	sc_err err;
	int rc;
	*job = 0;
	pthread_mutex_lock(&db->mu);
	err =
	    prepare(db,
		    "SELECT j.id FROM jobs j JOIN models m ON j.model_path = m.dir"
		    " WHERE m.name = ?1 AND j.state IN ('queued','running') ORDER BY j.id LIMIT 1",
		    &st);
	if (!err) {
		db_bind_text(st, 1, name);
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW)
			*job = sqlite3_column_int64(st, 0);
		else if (rc != SQLITE_DONE)
			err = db_fail(db, rc, "finding a model's jobs");
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&db->mu);
	return err;
}
