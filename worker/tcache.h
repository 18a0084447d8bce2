/* tcache.h — a worker's cache of model tensors, content-addressed: each
 * tensor is one file DIR/<sha256> holding its raw bytes, listed in an index
 * in the worker's own SQLite file DIR/index.sqlite (table tensors: sha256,
 * nbytes, last_used_ms), so that the cache survives a restart.
 *
 * Size: the files together stay within the limit given at open; making room
 * evicts the least recently used tensors first and never one in use (pinned
 * by an open sc_tcache_ref). Opening a cached tensor checks its size and
 * sha256: a corrupted file is removed (and logged) and reported absent, so
 * that the caller fetches it again — it is never used.
 *
 * A fill writes DIR/<sha256>.part and a map of the chunks written
 * (DIR/<sha256>.map, one byte per chunk), so that a fill that stops (a
 * broken transfer, a killed process) resumes where it stopped; a finished
 * fill is hashed before it is renamed into place.
 *
 * Threads: every call may come from any thread (one mutex inside, never held
 * across a hash or a file's contents); sc_tcache_fill_write may run on
 * several threads at once for different chunks of one fill.
 */
#ifndef SC_TCACHE_H
#define SC_TCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "sc_err.h"
#include "sc_sha256.h"

typedef struct sc_tcache sc_tcache;

/* A pinned, mapped cached tensor: release with sc_tcache_release. */
typedef struct sc_tcache_ref {
	const void *data; /* (nbytes) read-only, valid until released */
	uint64_t nbytes;
	char sha256[SC_SHA256_HEX];
} sc_tcache_ref;

/* Opens (creating) the cache in directory dir (borrowed, copied) with room
 * for limit bytes (0: no limit). Index rows whose file is gone are dropped,
 * files the index does not list (but for fills in progress) are removed.
 * *out = new cache; close with sc_tcache_close. */
sc_err sc_tcache_open(sc_tcache **out, const char *dir, uint64_t limit);
/* Closes the index. Accepts NULL. Every ref must have been released. */
void sc_tcache_close(sc_tcache *c);

/* *out = the cached tensor sha of nbytes bytes, pinned and mapped; new,
 * release with sc_tcache_release. With verify, its sha256 is checked first.
 * SC_ENOENT when it is not cached, or was corrupted (then removed, and the
 * detail says so). */
sc_err sc_tcache_get(sc_tcache *c, const char *sha, uint64_t nbytes, int verify,
		     sc_tcache_ref **out);
/* *nbytes = the size of cached tensor sha; SC_ENOENT when it is not cached. */
sc_err sc_tcache_size(sc_tcache *c, const char *sha, uint64_t *nbytes);

/* Unmaps and unpins ref. Accepts NULL. */
void sc_tcache_release(sc_tcache *c, sc_tcache_ref *ref);

/* A fill in progress: the chunks of one tensor arriving. */
typedef struct sc_tcache_fill {
	char sha256[SC_SHA256_HEX];
	uint64_t nbytes;
	uint32_t chunk;   /* bytes per chunk (the last may be shorter) */
	uint32_t nchunks; /* ceil(nbytes / chunk) */
	uint8_t *done;    /* (nchunks) 1: written, from this fill or one before */
	uint32_t ndone;   /* chunks done when the fill began (resumed) */
	int fd, map_fd;
} sc_tcache_fill;

/* Begins (or resumes) filling tensor sha of nbytes bytes in chunks of
 * chunk bytes: makes room for it (evicting least recently used tensors
 * that are not pinned; SC_ERANGE naming the sizes when the limit cannot
 * hold it) and opens its partial file. *out = new fill: end it with
 * sc_tcache_fill_end. */
sc_err sc_tcache_fill_begin(sc_tcache *c, const char *sha, uint64_t nbytes, uint32_t chunk,
			    sc_tcache_fill **out);
/* Writes chunk i (len bytes at data, borrowed) and marks it done. */
sc_err sc_tcache_fill_write(sc_tcache_fill *f, uint32_t i, const void *data, size_t len);
/* Ends f (freed). With complete, hashes the partial file: a match is renamed
 * into place and indexed; a mismatch removes the partial file and gives
 * SC_EFORMAT with both hashes (got, then wanted) in the detail. Without
 * complete, keeps the partial file and its map for a later resume. */
sc_err sc_tcache_fill_end(sc_tcache *c, sc_tcache_fill *f, int complete);

/* *shas = the hashes cached (n; a new array of new strings, free with
 * sc_tcache_list_free). */
sc_err sc_tcache_list(sc_tcache *c, char ***shas, size_t *n);
void sc_tcache_list_free(char **shas, size_t n);

/* Bytes the cached tensors take (not counting partial files). */
uint64_t sc_tcache_used(sc_tcache *c);

#endif
