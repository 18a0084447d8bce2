/* sc_manifest.h — a model directory as content-addressed tensors: every
 * tensor of model.safetensors (or of the shards model.safetensors.index.json
 * names) with its dtype, shape, file, byte range and SHA-256, and a digest
 * of the whole (config text and manifest) that changes when any of it does.
 *
 * The coordinator builds one when a model is registered (splitchain models
 * add); a worker checks every tensor it fetches against it. Tensors are
 * sorted by name; names are unique.
 */
#ifndef SC_MANIFEST_H
#define SC_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#include "sc_err.h"
#include "sc_safetensors.h"
#include "sc_sha256.h"

typedef struct sc_manifest_tensor {
	char *name; /* owned by the manifest */
	enum sc_dtype dtype;
	int ndim;
	int64_t shape[SC_ST_MAX_DIMS];
	char *file;      /* the safetensors file's name in the directory (owned) */
	uint64_t offset; /* its first byte in that file */
	uint64_t nbytes;
	char sha256[SC_SHA256_HEX]; /* of its nbytes bytes */
} sc_manifest_tensor;

typedef struct sc_manifest {
	int n;
	sc_manifest_tensor *t; /* (n) sorted by name */
	uint64_t bytes;        /* the tensors' bytes together */
} sc_manifest;

/* Fills m with every tensor of the model in directory dir (borrowed),
 * hashing each. Errors: those of sc_weights_open for a directory with no
 * weights or a bad index (SC_ENOENT naming both file names), of sc_st_open
 * for a bad file, SC_EFORMAT for a tensor the index names but its shard
 * lacks. On error m is left empty (nothing to free). */
sc_err sc_manifest_build(sc_manifest *m, const char *dir);

/* Frees m's tensors and names; m is then empty. Accepts an empty m. */
void sc_manifest_free(sc_manifest *m);

/* The tensor called name in m (borrowed), or NULL. */
const sc_manifest_tensor *sc_manifest_find(const sc_manifest *m, const char *name);

/* hex = the digest of config (len bytes) and the n tensors t (in the order
 * given: by name): SHA-256 over the config, then each tensor's name, dtype,
 * shape and sha256. */
void sc_manifest_digest(const char *config, size_t len, const sc_manifest_tensor *t, int n,
			char hex[SC_SHA256_HEX]);

/* *out = the dtype whose safetensors name is s ("F32", "BF16", ...);
 * SC_EFORMAT naming s when none is. */
sc_err sc_dtype_parse(const char *s, enum sc_dtype *out);

/* 1 when s is 64 lower-case hex digits, else 0. */
int sc_sha256_hex_valid(const char *s);

#endif
