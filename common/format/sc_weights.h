/* sc_weights.h — a model's weight tensors by name, across the safetensors
 * files of a Hugging Face model directory.
 *
 * The directory holds either one file, model.safetensors, or the sharded
 * layout: model.safetensors.index.json,
 *   {"metadata": {...}, "weight_map": {"tensor name": "shard file", ...}},
 * and the shard files it names. Where both exist the single file wins.
 * Shard names must be plain file names inside the directory (no '/', not
 * "." or "..", not empty).
 *
 * The single file is opened (and validated, see sc_safetensors.h) at once.
 * A shard is opened on the first lookup of a tensor that the index places in
 * it and then stays open until sc_weights_close, so a worker that holds a few
 * layers maps only the shards those layers live in, each once. A shard that
 * cannot be opened is tried again on the next lookup that needs it.
 *
 * Not thread-safe: sc_weights_find may open a shard and so changes w; the
 * caller serialises every call on one sc_weights. The tensors handed out are
 * read-only and may be read from any thread until sc_weights_close.
 */
#ifndef SC_WEIGHTS_H
#define SC_WEIGHTS_H

#include "sc_err.h"
#include "sc_safetensors.h"

#define SC_WEIGHTS_SINGLE "model.safetensors"
#define SC_WEIGHTS_INDEX  "model.safetensors.index.json"

typedef struct sc_weights sc_weights;

/* Opens the model in directory dir (borrowed, copied). *out = new weights,
 * close with sc_weights_close; *out = NULL on error. Errors: SC_ENOENT when
 * dir holds neither file (the detail names dir and both file names); the
 * sc_st_open error of a bad model.safetensors; SC_EFORMAT, naming the index
 * and the offending entry, for an index that is not JSON, whose weight_map
 * is missing, empty or not an object, whose values are not strings or not
 * plain file names, or which lists a tensor twice. */
sc_err sc_weights_open(sc_weights **out, const char *dir);

/* Finds a tensor for sc_weights_find: *out = the tensor called name, valid
 * until the source's owner releases it, or NULL with SC_OK when the model
 * has no such tensor. */
typedef sc_err (*sc_weights_lookup)(void *arg, const char *name, const sc_st_tensor **out);

/* Weights whose sc_weights_find asks fn (with arg, borrowed: the caller
 * keeps it alive until sc_weights_close and frees it after) instead of
 * reading a directory: e.g. a worker's cache of a registered model's
 * tensors (worker/deliver.c). sc_weights_check_all checks nothing on them.
 * *out = new weights, close with sc_weights_close. */
sc_err sc_weights_open_lookup(sc_weights **out, sc_weights_lookup fn, void *arg);

/* Closes every open file. Accepts NULL. Every tensor that w handed out is
 * invalid afterwards. */
void sc_weights_close(sc_weights *w);

/* *out = the tensor called name (borrowed from w, valid until
 * sc_weights_close), or NULL with SC_OK when the model has no such tensor.
 * In the sharded layout this opens the tensor's shard if it is not open yet;
 * the sc_st_open error of a shard that is missing, truncated or corrupt is
 * returned with the tensor and shard named ("tensor 'x': shard y: ...").
 * A tensor that the index lists but its shard does not hold gives
 * SC_EFORMAT naming both. Borrows name. *out = NULL on error. */
sc_err sc_weights_find(sc_weights *w, const char *name, const sc_st_tensor **out);

/* Opens every shard and checks that each tensor the index lists is in its
 * shard, for a process that loads the whole model and would rather fail
 * before it starts. The errors of sc_weights_find; SC_OK at once for a
 * single file. */
sc_err sc_weights_check_all(sc_weights *w);

/* 1 for the sharded layout, 0 for a single file (or NULL). */
int sc_weights_sharded(const sc_weights *w);

#endif
