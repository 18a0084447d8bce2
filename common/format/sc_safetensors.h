/* sc_safetensors.h — reading (by mmap) and writing safetensors files.
 *
 * Format: 8-byte little-endian header length n, n bytes of JSON
 * {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *  "__metadata__": {"k": "v"}}, then the data section. The reader checks
 * every tensor against the file before anyone reads it: offsets inside the
 * data section, end - begin == numel * dtype size, no overflow, known dtype,
 * header within limits. A file that fails any check gives SC_EFORMAT with
 * the path and the offending tensor named in sc_err_detail().
 */
#ifndef SC_SAFETENSORS_H
#define SC_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "sc_err.h"

enum sc_dtype { SC_F32, SC_F16, SC_BF16, SC_I32, SC_I64, SC_U8, SC_DTYPE_COUNT };

#define SC_ST_MAX_DIMS 8

typedef struct sc_st_tensor {
	const char *name; /* borrowed from the file object */
	enum sc_dtype dtype;
	int ndim;
	int64_t shape[SC_ST_MAX_DIMS];
	const void *data; /* into the mapping; valid until sc_st_close */
	size_t nbytes;
} sc_st_tensor;

typedef struct sc_st_file sc_st_file;

/* Opens and validates path (mmap, read-only). *out = new file; close with
 * sc_st_close. */
sc_err sc_st_open(sc_st_file **out, const char *path);
/* Releases the mapping. Accepts NULL. */
void sc_st_close(sc_st_file *f);

/* Number of tensors and the i-th one (in header order). */
int sc_st_count(const sc_st_file *f);
const sc_st_tensor *sc_st_at(const sc_st_file *f, int i);
/* The tensor named name, or NULL. Borrowed. */
const sc_st_tensor *sc_st_find(const sc_st_file *f, const char *name);
/* Where tensor t (one of f's) starts in f's file, in bytes from its start. */
size_t sc_st_file_offset(const sc_st_file *f, const sc_st_tensor *t);
/* The metadata value for key, or NULL. Borrowed. */
const char *sc_st_metadata(const sc_st_file *f, const char *key);

/* Copies tensor t into dst as float32 (converting F16/BF16), checking that
 * its element count is numel. SC_EFORMAT on a mismatch, naming the tensor. */
sc_err sc_st_read_f32(float *dst, const sc_st_tensor *t, size_t numel);

/* Checks t's shape equals shape[0..ndim). SC_EFORMAT naming both shapes. */
sc_err sc_st_expect_shape(const sc_st_tensor *t, int ndim, const int64_t *shape);

size_t sc_dtype_size(enum sc_dtype d);
const char *sc_dtype_name(enum sc_dtype d);

/* ---- writing ---- */
typedef struct sc_st_writer sc_st_writer;

/* *out = new empty writer; free with sc_st_writer_free. */
sc_err sc_st_writer_new(sc_st_writer **out);
void sc_st_writer_free(sc_st_writer *w);
/* Adds a tensor. Borrows name and data: both must stay valid until
 * sc_st_writer_save returns. Duplicate names give SC_EINVAL. */
sc_err sc_st_writer_add(sc_st_writer *w, const char *name, enum sc_dtype dtype, int ndim,
			const int64_t *shape, const void *data);
/* Adds a __metadata__ string pair (copied). */
sc_err sc_st_writer_meta(sc_st_writer *w, const char *key, const char *value);
/* Writes the file atomically (to path.tmp, fsync, rename). The data section
 * starts 8-byte aligned and tensors follow each other without gaps (as the
 * Hugging Face reader requires), larger element sizes first, so each tensor
 * is aligned to its element size; within a size, in the order added. */
sc_err sc_st_writer_save(sc_st_writer *w, const char *path);

#endif
