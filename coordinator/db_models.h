/* db_models.h — registered models in the coordinator's database (schema 7):
 * the models, model_tensors and model_files tables, and worker_tensors (what
 * each worker's cache holds, as it reported at register). See db.h for the
 * threading, durability and record rules; docs/state.md for the tables. */
#ifndef SC_DB_MODELS_H
#define SC_DB_MODELS_H

#include <stddef.h>
#include <stdint.h>

#include "db.h"
#include "sc_manifest.h"

typedef struct sc_db_model {
	int64_t id;
	const char *name;
	const char *dir;    /* the directory registered, on the coordinator's side */
	const char *digest; /* sc_manifest_digest of config_json and the manifest */
	const char *config_json;
	const char *model_type;
	int n_layer;
	int n_tensors;
	uint64_t bytes;
	int64_t created_ms;
} sc_db_model;

typedef struct sc_db_model_file {
	const char *name;
	const void *data;
	size_t len;
} sc_db_model_file;

/* Registers model m (its id is ignored) with manifest mf and the nfiles
 * files, in one durable transaction; *id = its id. Borrows everything.
 * SC_EINVAL (naming it) when a model of that name is registered. */
sc_err sc_db_model_add(sc_db *db, const sc_db_model *m, const sc_manifest *mf,
		       const sc_db_model_file *files, int nfiles, int64_t *id);

/* *out = the model called name (one block, free()); SC_ENOENT naming it
 * when none is registered. */
sc_err sc_db_model_get(sc_db *db, const char *name, sc_db_model **out);

/* *out = every model (n of them) by name, one block (free()); NULL when none. */
sc_err sc_db_models_list(sc_db *db, sc_db_model **out, int *n);

/* Fills mf (empty on entry; free with sc_manifest_free) with model_id's
 * tensors, by name. */
sc_err sc_db_model_tensors(sc_db *db, int64_t model_id, sc_manifest *mf);

/* *out = model_id's files (n of them) by name, one block (free()). */
sc_err sc_db_model_files(sc_db *db, int64_t model_id, sc_db_model_file **out, int *n);

/* Removes the model called name with its tensors and files (durable).
 * SC_ENOENT naming it when none is registered. */
sc_err sc_db_model_remove(sc_db *db, const char *name);

/* Where the tensor of content sha lives: *path = "<dir>/<file>" (new, free()),
 * its *offset in that file and its *nbytes, from any registered model that
 * has it. SC_ENOENT when none has. */
sc_err sc_db_tensor_source(sc_db *db, const char *sha, char **path, uint64_t *offset,
			   uint64_t *nbytes);

/* Replaces what worker's cache holds with the n hashes sha (borrowed). */
sc_err sc_db_worker_tensors_set(sc_db *db, int64_t worker, char *const *sha, size_t n);

/* *job = a queued or running job whose model directory is the registered
 * model name's (0: none), so that a model is not removed under a job. */
sc_err sc_db_model_user(sc_db *db, const char *name, int64_t *job);

/* *ids = the workers (n) whose last cache report holds sha (new array,
 * free(); NULL when none). */
sc_err sc_db_tensor_holders(sc_db *db, const char *sha, int64_t **ids, int *n);

#endif
