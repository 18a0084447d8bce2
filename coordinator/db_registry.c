/* db_registry.c — the coordinator's registry in SQLite: workers, jobs and
 * their placements (see db.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "db_impl.h"

static double column_real(sqlite3_stmt *st, int col)
{
	return sqlite3_column_type(st, col) == SQLITE_NULL ? NAN : sqlite3_column_double(st, col);
}

/* ---- workers ---- */

static sc_err read_worker(sqlite3_stmt *st, void *rec, struct arena *a)
{
	sc_db_worker *w = rec;
	int s = db_name_index(db_worker_states, SC_WORKER_STATE_COUNT,
			      (const char *)sqlite3_column_text(st, 7));
	if (s < 0)
		return sc_errf(SC_EFORMAT, "worker %lld has an unknown state",
			       (long long)sqlite3_column_int64(st, 0));
	w->id = sqlite3_column_int64(st, 0);
	w->name = db_arena_text(a, st, 1);
	w->device = db_arena_text(a, st, 2);
	w->memory_bytes = (uint64_t)sqlite3_column_int64(st, 3);
	w->gflops = sqlite3_column_double(st, 4);
	w->control_addr = db_arena_text(a, st, 5);
	w->data_addr = db_arena_text(a, st, 6);
	w->state = (enum sc_worker_state)s;
	w->registered_ms = sqlite3_column_int64(st, 8);
	w->last_seen_ms = sqlite3_column_int64(st, 9);
	w->memory_reserve_bytes = (uint64_t)sqlite3_column_int64(st, 10);
	w->data_owner = sqlite3_column_int(st, 11) != 0;
	w->job_slots = sqlite3_column_int(st, 12);
	w->base_bytes = (uint64_t)sqlite3_column_int64(st, 13);
	return SC_OK;
}

sc_err sc_db_worker_upsert(sc_db *db, const sc_db_worker *w, int64_t *id_out)
{
	if (!w || !w->name || !*w->name)
		return sc_errf(SC_EINVAL, "%s: a worker needs a name", db->path);
	if ((unsigned)w->state >= SC_WORKER_STATE_COUNT || w->memory_bytes > INT64_MAX ||
	    w->memory_reserve_bytes > INT64_MAX)
		return sc_errf(SC_EINVAL, "%s: worker '%s': bad state or memory size", db->path,
			       w->name);
	sqlite3_stmt *st = NULL;
	sc_err err;
	pthread_mutex_lock(&db->mu);
	if ((err = db_set_sync(db, 0)) != SC_OK ||
	    (err = db_stmt(db, ST_WORKER_UPSERT, &st)) != SC_OK)
		goto out;
	db_bind_text(st, 1, w->name);
	db_bind_text(st, 2, w->device);
	sqlite3_bind_int64(st, 3, (int64_t)w->memory_bytes);
	sqlite3_bind_double(st, 4, w->gflops);
	db_bind_text(st, 5, w->control_addr);
	db_bind_text(st, 6, w->data_addr);
	db_bind_text(st, 7, db_worker_states[w->state]);
	sqlite3_bind_int64(st, 8, sc_db_now_ms());
	sqlite3_bind_int64(st, 9, (int64_t)w->memory_reserve_bytes);
	sqlite3_bind_int(st, 10, w->data_owner != 0);
	sqlite3_bind_int(st, 11, w->job_slots > 0 ? w->job_slots : 1);
	if ((err = db_run(db, st, "registering a worker")) != SC_OK ||
	    (err = db_stmt(db, ST_WORKER_ID, &st)) != SC_OK)
		goto out;
	db_bind_text(st, 1, w->name);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*id_out = sqlite3_column_int64(st, 0);
	else
		err = db_fail(db, rc, "reading a worker's id");
	db_finish(st);
out:
	pthread_mutex_unlock(&db->mu);
	return err;
}

sc_err sc_db_worker_seen(sc_db *db, int64_t worker_id)
{
	sqlite3_stmt *st = NULL;
	sc_err err;
	pthread_mutex_lock(&db->mu);
	if ((err = db_set_sync(db, 0)) == SC_OK &&
	    (err = db_stmt(db, ST_WORKER_SEEN, &st)) == SC_OK) {
		sqlite3_bind_int64(st, 1, worker_id);
		sqlite3_bind_int64(st, 2, sc_db_now_ms());
		err = db_update_one(db, st, "worker", worker_id);
	}
	pthread_mutex_unlock(&db->mu);
	return err;
}

sc_err sc_db_worker_set_state(sc_db *db, int64_t worker_id, enum sc_worker_state state)
{
	if ((unsigned)state >= SC_WORKER_STATE_COUNT)
		return sc_errf(SC_EINVAL, "%s: bad worker state %d", db->path, (int)state);
	sqlite3_stmt *st = NULL;
	sc_err err;
	pthread_mutex_lock(&db->mu);
	if ((err = db_set_sync(db, 0)) == SC_OK &&
	    (err = db_stmt(db, ST_WORKER_STATE, &st)) == SC_OK) {
		sqlite3_bind_int64(st, 1, worker_id);
		db_bind_text(st, 2, db_worker_states[state]);
		err = db_update_one(db, st, "worker", worker_id);
	}
	pthread_mutex_unlock(&db->mu);
	return err;
}

sc_err sc_db_workers_list(sc_db *db, sc_db_worker **out, int *n)
{
	sqlite3_stmt *st = NULL;
	sc_err err;
	*out = NULL;
	*n = 0;
	pthread_mutex_lock(&db->mu);
	if ((err = db_stmt(db, ST_WORKERS, &st)) == SC_OK)
		err = db_read_list(db, st, sizeof(**out), read_worker, (void **)out, n);
	pthread_mutex_unlock(&db->mu);
	return err;
}

/* ---- jobs ---- */

static sc_err read_job(sqlite3_stmt *st, void *rec, struct arena *a)
{
	sc_db_job *j = rec;
	int s = db_name_index(db_job_states, SC_JOB_STATE_COUNT,
			      (const char *)sqlite3_column_text(st, 2));
	if (s < 0)
		return sc_errf(SC_EFORMAT, "job %lld has an unknown state",
			       (long long)sqlite3_column_int64(st, 0));
	j->id = sqlite3_column_int64(st, 0);
	j->name = db_arena_text(a, st, 1);
	j->state = (enum sc_job_state)s;
	j->model_path = db_arena_text(a, st, 3);
	j->data_path = db_arena_text(a, st, 4);
	j->spec = db_arena_blob(a, st, 5, &j->spec_len);
	j->stages = (uint32_t)sqlite3_column_int64(st, 6);
	j->steps = (uint32_t)sqlite3_column_int64(st, 7);
	j->step_done = (uint32_t)sqlite3_column_int64(st, 8);
	j->last_loss = column_real(st, 9);
	j->error = db_arena_text(a, st, 10);
	j->created_ms = sqlite3_column_int64(st, 11);
	j->started_ms = sqlite3_column_int64(st, 12);
	j->finished_ms = sqlite3_column_int64(st, 13);
	j->base_quant = db_arena_text(a, st, 14);
	j->double_quant = sqlite3_column_int(st, 15) != 0;
	j->precision = db_arena_text(a, st, 16);
	j->owner_id = sqlite3_column_int64(st, 17);
	return SC_OK;
}

/* *state = job's state; SC_ENOENT for an unknown job. */
static sc_err job_state(sc_db *db, int64_t job_id, enum sc_job_state *state)
{
	sqlite3_stmt *st = NULL;
	SC_TRY(db_stmt(db, ST_JOB_STATE, &st));
	sqlite3_bind_int64(st, 1, job_id);
	int rc = sqlite3_step(st), s = -1;
	if (rc == SQLITE_ROW)
		s = db_name_index(db_job_states, SC_JOB_STATE_COUNT,
				  (const char *)sqlite3_column_text(st, 0));
	db_finish(st);
	if (rc == SQLITE_DONE)
		return sc_errf(SC_ENOENT, "%s: no job with id %lld", db->path, (long long)job_id);
	if (rc != SQLITE_ROW)
		return db_fail(db, rc, "reading a job's state");
	if (s < 0)
		return sc_errf(SC_EFORMAT, "%s: job %lld has an unknown state", db->path,
			       (long long)job_id);
	*state = (enum sc_job_state)s;
	return SC_OK;
}

sc_err sc_db_job_insert(sc_db *db, const sc_db_job *job, int64_t *id_out)
{
	if (!job || !job->name || !job->model_path || !job->data_path ||
	    (!job->spec && job->spec_len))
		return sc_errf(SC_EINVAL, "%s: a job needs a name, model and data paths and a spec",
			       db->path);
	sqlite3_stmt *st = NULL;
	sc_err err;
	pthread_mutex_lock(&db->mu);
	if ((err = db_set_sync(db, 1)) == SC_OK &&
	    (err = db_stmt(db, ST_JOB_INSERT, &st)) == SC_OK) {
		db_bind_text(st, 1, job->name);
		db_bind_text(st, 2, job->model_path);
		db_bind_text(st, 3, job->data_path);
		db_bind_blob(st, 4, job->spec, job->spec_len);
		sqlite3_bind_int64(st, 5, job->stages);
		sqlite3_bind_int64(st, 6, job->steps);
		sqlite3_bind_int64(st, 7, sc_db_now_ms());
		db_bind_text(st, 8, job->base_quant ? job->base_quant : "none");
		sqlite3_bind_int(st, 9, job->double_quant != 0);
		db_bind_text(st, 10, job->precision ? job->precision : "fp32");
		sqlite3_bind_int64(st, 11, job->owner_id);
		if ((err = db_run(db, st, "inserting a job")) == SC_OK)
			*id_out = sqlite3_last_insert_rowid(db->h);
	}
	pthread_mutex_unlock(&db->mu);
	return err;
}

static sc_err jobs_query(sc_db *db, enum st id, int64_t job_id, sc_db_job **out, int *n)
{
	sqlite3_stmt *st = NULL;
	sc_err err;
	*out = NULL;
	*n = 0;
	pthread_mutex_lock(&db->mu);
	if ((err = db_stmt(db, id, &st)) == SC_OK) {
		if (job_id)
			sqlite3_bind_int64(st, 1, job_id);
		err = db_read_list(db, st, sizeof(**out), read_job, (void **)out, n);
	}
	pthread_mutex_unlock(&db->mu);
	return err;
}

sc_err sc_db_job_get(sc_db *db, int64_t job_id, sc_db_job **out)
{
	int n;
	SC_TRY(jobs_query(db, ST_JOB_GET, job_id, out, &n));
	if (n == 0)
		return sc_errf(SC_ENOENT, "%s: no job with id %lld", db->path, (long long)job_id);
	return SC_OK;
}

sc_err sc_db_jobs_list(sc_db *db, sc_db_job **out, int *n)
{
	return jobs_query(db, ST_JOBS, 0, out, n);
}

sc_err sc_db_jobs_resumable(sc_db *db, sc_db_job **out, int *n)
{
	return jobs_query(db, ST_JOBS_RESUMABLE, 0, out, n);
}

sc_err sc_db_job_set_state(sc_db *db, int64_t job_id, enum sc_job_state state, const char *error)
{
	if ((unsigned)state >= SC_JOB_STATE_COUNT)
		return sc_errf(SC_EINVAL, "%s: bad job state %d", db->path, (int)state);
	enum sc_job_state now;
	sqlite3_stmt *st = NULL;
	sc_err err;
	pthread_mutex_lock(&db->mu);
	if ((err = job_state(db, job_id, &now)) != SC_OK)
		goto out;
	if (now >= SC_JOB_DONE) {
		if (now != state)
			err =
			    sc_errf(SC_EINVAL, "%s: job %lld is %s and cannot become %s", db->path,
				    (long long)job_id, db_job_states[now], db_job_states[state]);
		goto out; /* the same final state again: nothing to do */
	}
	if ((err = db_set_sync(db, 1)) != SC_OK ||
	    (err = db_stmt(db, ST_JOB_SET_STATE, &st)) != SC_OK)
		goto out;
	sqlite3_bind_int64(st, 1, job_id);
	db_bind_text(st, 2, db_job_states[state]);
	if (error && *error)
		db_bind_text(st, 3, error);
	sqlite3_bind_int64(st, 4, sc_db_now_ms());
	err = db_update_one(db, st, "job", job_id);
out:
	pthread_mutex_unlock(&db->mu);
	return err;
}

sc_err sc_db_job_progress(sc_db *db, int64_t job_id, uint32_t step_done, double last_loss)
{
	sqlite3_stmt *st = NULL;
	sc_err err;
	pthread_mutex_lock(&db->mu);
	if ((err = db_set_sync(db, 0)) == SC_OK &&
	    (err = db_stmt(db, ST_JOB_PROGRESS, &st)) == SC_OK) {
		sqlite3_bind_int64(st, 1, job_id);
		sqlite3_bind_int64(st, 2, step_done);
		sqlite3_bind_double(st, 3, last_loss);
		err = db_update_one(db, st, "job", job_id);
	}
	pthread_mutex_unlock(&db->mu);
	return err;
}

/* ---- placements ---- */

static sc_err read_stage(sqlite3_stmt *st, void *rec, struct arena *a)
{
	sc_db_stage *s = rec;
	s->stage = (uint32_t)sqlite3_column_int64(st, 0);
	s->worker_id = sqlite3_column_int64(st, 1);
	s->worker_name = db_arena_text(a, st, 2);
	s->first_layer = (uint32_t)sqlite3_column_int64(st, 3);
	s->last_layer = (uint32_t)sqlite3_column_int64(st, 4);
	s->predicted_step_s = column_real(st, 5);
	s->worker_gflops = column_real(st, 6);
	s->reason = db_arena_text(a, st, 7);
	s->predicted_mem_bytes = (uint64_t)sqlite3_column_int64(st, 8);
	s->peak_mem_bytes = (uint64_t)sqlite3_column_int64(st, 9);
	s->tail_first_layer = (uint32_t)sqlite3_column_int64(st, 10);
	s->tail_last_layer = (uint32_t)sqlite3_column_int64(st, 11);
	s->layer_quant = db_arena_text(a, st, 12);
	s->quant_reason = db_arena_text(a, st, 13);
	return SC_OK;
}

sc_err sc_db_placement_peak(sc_db *db, int64_t job_id, uint32_t version, uint32_t stage,
			    uint64_t bytes)
{
	sqlite3_stmt *st = NULL;
	sc_err err;
	if (bytes > INT64_MAX)
		return sc_errf(SC_EINVAL, "%s: a peak of %llu bytes", db->path,
			       (unsigned long long)bytes);
	pthread_mutex_lock(&db->mu);
	if ((err = db_set_sync(db, 0)) == SC_OK &&
	    (err = db_stmt(db, ST_PLACEMENT_PEAK, &st)) == SC_OK) {
		sqlite3_bind_int64(st, 1, job_id);
		sqlite3_bind_int64(st, 2, version);
		sqlite3_bind_int64(st, 3, stage);
		sqlite3_bind_int64(st, 4, (int64_t)bytes);
		err = db_run(db, st, "recording a stage's peak memory");
	}
	pthread_mutex_unlock(&db->mu);
	return err;
}

/* The job's highest placement version, 0 when it has none. */
static sc_err placement_last(sc_db *db, int64_t job_id, uint32_t *version)
{
	sqlite3_stmt *st = NULL;
	SC_TRY(db_stmt(db, ST_PLACEMENT_NEXT, &st));
	sqlite3_bind_int64(st, 1, job_id);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*version = (uint32_t)sqlite3_column_int64(st, 0) - 1;
	db_finish(st);
	return rc == SQLITE_ROW ? SC_OK : db_fail(db, rc, "reading the placement version");
}

sc_err sc_db_placement_insert(sc_db *db, int64_t job_id, const sc_db_stage *stages, int n,
			      uint32_t *version_out)
{
	if (n < 1 || !stages)
		return sc_errf(SC_EINVAL, "%s: a placement needs at least one stage", db->path);
	for (int i = 0; i < n; i++) {
		const sc_db_stage *s = &stages[i];
		/* A ring: its owners first, each with the same two ranges; then
		 * the middle, from the owners' first range to their tail. */
		int owner = s->tail_last_layer != 0,
		    prev_owner = i > 0 && stages[i - 1].tail_last_layer;
		if (s->stage != (uint32_t)i || s->first_layer >= s->last_layer ||
		    (owner && (i > 0 && !prev_owner)) ||
		    (owner && i > 0 &&
		     (s->first_layer != stages[0].first_layer ||
		      s->last_layer != stages[0].last_layer ||
		      s->tail_first_layer != stages[0].tail_first_layer ||
		      s->tail_last_layer != stages[0].tail_last_layer)) ||
		    (owner && s->tail_first_layer >= s->tail_last_layer) ||
		    (!owner && i > 0 && s->first_layer != stages[i - 1].last_layer) ||
		    (i == n - 1 && stages[0].tail_last_layer &&
		     (owner || s->last_layer != stages[0].tail_first_layer)))
			return sc_errf(SC_EINVAL,
				       "%s: job %lld placement: stage %d (numbered %u, "
				       "layers [%u, %u)) does not continue the chain",
				       db->path, (long long)job_id, i, s->stage, s->first_layer,
				       s->last_layer);
	}
	enum sc_job_state state;
	uint32_t version = 0;
	int64_t now = sc_db_now_ms();
	sqlite3_stmt *st = NULL;
	sc_err err;
	pthread_mutex_lock(&db->mu);
	if ((err = job_state(db, job_id, &state)) != SC_OK || (err = db_begin(db, 1)) != SC_OK)
		goto out;
	if ((err = placement_last(db, job_id, &version)) != SC_OK)
		goto out;
	version++;
	for (int i = 0; i < n; i++) {
		if ((err = db_stmt(db, ST_PLACEMENT_INSERT, &st)) != SC_OK)
			goto out;
		sqlite3_bind_int64(st, 1, job_id);
		sqlite3_bind_int64(st, 2, version);
		sqlite3_bind_int64(st, 3, i);
		sqlite3_bind_int64(st, 4, stages[i].worker_id);
		sqlite3_bind_int64(st, 5, stages[i].first_layer);
		sqlite3_bind_int64(st, 6, stages[i].last_layer);
		sqlite3_bind_double(st, 7, stages[i].predicted_step_s);
		sqlite3_bind_double(st, 8, stages[i].worker_gflops);
		if (stages[i].reason)
			db_bind_text(st, 9, stages[i].reason);
		sqlite3_bind_int64(st, 10, now);
		if (stages[i].predicted_mem_bytes)
			sqlite3_bind_int64(st, 11, (int64_t)stages[i].predicted_mem_bytes);
		if (stages[i].tail_last_layer) {
			sqlite3_bind_int64(st, 12, stages[i].tail_first_layer);
			sqlite3_bind_int64(st, 13, stages[i].tail_last_layer);
		}
		db_bind_text(st, 14, stages[i].layer_quant);
		db_bind_text(st, 15, stages[i].quant_reason);
		if ((err = db_run(db, st, "inserting a placement")) != SC_OK)
			goto out;
	}
	if ((err = db_commit(db)) == SC_OK)
		*version_out = version;
out:
	db_rollback(db);
	pthread_mutex_unlock(&db->mu);
	return err;
}

sc_err sc_db_placement_latest(sc_db *db, int64_t job_id, uint32_t *version, sc_db_stage **out,
			      int *n)
{
	sqlite3_stmt *st = NULL;
	uint32_t v = 0;
	sc_err err;
	*out = NULL;
	*n = 0;
	pthread_mutex_lock(&db->mu);
	if ((err = db_exec(db, "BEGIN", "beginning a read")) != SC_OK ||
	    (err = placement_last(db, job_id, &v)) != SC_OK)
		goto out;
	if (v == 0) {
		err = sc_errf(SC_ENOENT, "%s: job %lld has no placement", db->path,
			      (long long)job_id);
		goto out;
	}
	if ((err = db_stmt(db, ST_PLACEMENT_LATEST, &st)) != SC_OK)
		goto out;
	sqlite3_bind_int64(st, 1, job_id);
	sqlite3_bind_int64(st, 2, v);
	if ((err = db_read_rows(db, st, 0, sizeof(**out), read_stage, (void **)out, n)) != SC_OK)
		goto out;
	*version = v;
	if ((err = db_commit(db)) != SC_OK) {
		free(*out);
		*out = NULL;
		*n = 0;
	}
out:
	db_rollback(db);
	pthread_mutex_unlock(&db->mu);
	return err;
}

sc_err sc_db_worker_memory(sc_db *db, int64_t worker_id, uint64_t base_bytes,
			   const sc_db_job_memory *jobs, size_t n)
{
	sqlite3_stmt *st = NULL;
	sc_err err;
	pthread_mutex_lock(&db->mu);
	if ((err = db_begin(db, 0)) != SC_OK)
		goto out;
	if ((err = db_stmt(db, ST_WORKER_BASE, &st)) != SC_OK)
		goto fail;
	sqlite3_bind_int64(st, 1, worker_id);
	sqlite3_bind_int64(st, 2, (int64_t)(base_bytes > INT64_MAX ? INT64_MAX : base_bytes));
	if ((err = db_run(db, st, "recording a worker's memory")) != SC_OK ||
	    (err = db_stmt(db, ST_WORKER_JOBMEM_CLEAR, &st)) != SC_OK)
		goto fail;
	sqlite3_bind_int64(st, 1, worker_id);
	if ((err = db_run(db, st, "recording a worker's memory")) != SC_OK)
		goto fail;
	for (size_t i = 0; i < n; i++) {
		if ((err = db_stmt(db, ST_WORKER_JOBMEM_PUT, &st)) != SC_OK)
			goto fail;
		sqlite3_bind_int64(st, 1, worker_id);
		sqlite3_bind_int64(st, 2, jobs[i].job_id);
		sqlite3_bind_int64(
		    st, 3, (int64_t)(jobs[i].bytes > INT64_MAX ? INT64_MAX : jobs[i].bytes));
		if ((err = db_run(db, st, "recording a job's memory")) != SC_OK)
			goto fail;
	}
	err = db_commit(db);
	goto out;
fail:
	db_rollback(db);
out:
	pthread_mutex_unlock(&db->mu);
	return err;
}
