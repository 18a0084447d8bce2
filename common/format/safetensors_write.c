/* safetensors_write.c — the safetensors writer: tensors laid out contiguous
 * and aligned, saved atomically through sc_file. */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "sc_file.h"
#include "sc_safetensors.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian and is written as it is in memory"
#endif

/* JSON numbers above 2^53 are no longer exact integers. */
#define MAX_EXACT 9007199254740992.0

struct wtensor {
	const char *name; /* borrowed */
	enum sc_dtype dtype;
	int ndim;
	int64_t shape[SC_ST_MAX_DIMS];
	const void *data; /* borrowed */
	size_t nbytes;
	uint64_t begin; /* in the data section, set by save */
};

struct sc_st_writer {
	struct wtensor *t;
	int n, cap;
	cJSON *meta; /* owned; key -> string */
};

sc_err sc_st_writer_new(sc_st_writer **out)
{
	sc_st_writer *w = calloc(1, sizeof(*w));
	if (!w || !(w->meta = cJSON_CreateObject())) {
		free(w);
		return sc_errf(SC_ENOMEM, "safetensors writer: out of memory");
	}
	*out = w;
	return SC_OK;
}

void sc_st_writer_free(sc_st_writer *w)
{
	if (!w)
		return;
	cJSON_Delete(w->meta);
	free(w->t);
	free(w);
}

sc_err sc_st_writer_add(sc_st_writer *w, const char *name, enum sc_dtype dtype, int ndim,
			const int64_t *shape, const void *data)
{
	if (!w || !name || (ndim > 0 && !shape))
		return sc_errf(SC_EINVAL, "sc_st_writer_add: NULL argument");
	if (strcmp(name, "__metadata__") == 0)
		return sc_errf(SC_EINVAL, "tensor name '__metadata__' is reserved");
	if ((unsigned)dtype >= SC_DTYPE_COUNT)
		return sc_errf(SC_EINVAL, "tensor '%s': bad dtype %d", name, (int)dtype);
	if (ndim < 0 || ndim > SC_ST_MAX_DIMS)
		return sc_errf(SC_EINVAL, "tensor '%s': %d dimensions (0 to %d allowed)", name,
			       ndim, SC_ST_MAX_DIMS);
	for (int i = 0; i < w->n; i++)
		if (strcmp(w->t[i].name, name) == 0)
			return sc_errf(SC_EINVAL, "duplicate tensor name '%s'", name);
	uint64_t nbytes = sc_dtype_size(dtype);
	int overflow = 0;
	for (int i = 0; i < ndim; i++) {
		if (shape[i] < 0 || (double)shape[i] > MAX_EXACT)
			return sc_errf(SC_EINVAL, "tensor '%s': shape[%d] = %lld is out of range",
				       name, i, (long long)shape[i]);
		overflow |= __builtin_mul_overflow(nbytes, (uint64_t)shape[i], &nbytes);
	}
	if (overflow || nbytes > MAX_EXACT || nbytes > SIZE_MAX)
		return sc_errf(SC_EINVAL, "tensor '%s': too large", name);
	if (nbytes && !data)
		return sc_errf(SC_EINVAL, "tensor '%s': NULL data", name);
	if (w->n == w->cap) {
		int cap = w->cap ? 2 * w->cap : 16;
		struct wtensor *nt = realloc(w->t, (size_t)cap * sizeof(*nt));
		if (!nt)
			return sc_errf(SC_ENOMEM, "tensor '%s': out of memory", name);
		w->t = nt;
		w->cap = cap;
	}
	struct wtensor *t = &w->t[w->n++];
	memset(t, 0, sizeof(*t));
	t->name = name;
	t->dtype = dtype;
	t->ndim = ndim;
	for (int i = 0; i < ndim; i++)
		t->shape[i] = shape[i];
	t->data = data;
	t->nbytes = (size_t)nbytes;
	return SC_OK;
}

sc_err sc_st_writer_meta(sc_st_writer *w, const char *key, const char *value)
{
	if (!w || !key || !value)
		return sc_errf(SC_EINVAL, "sc_st_writer_meta: NULL argument");
	cJSON *v = cJSON_CreateString(value);
	if (!v)
		return sc_errf(SC_ENOMEM, "metadata '%s': out of memory", key);
	cJSON_DeleteItemFromObjectCaseSensitive(w->meta, key);
	if (!cJSON_AddItemToObject(w->meta, key, v)) {
		cJSON_Delete(v);
		return sc_errf(SC_ENOMEM, "metadata '%s': out of memory", key);
	}
	return SC_OK;
}

static cJSON *tensor_entry(const struct wtensor *t)
{
	cJSON *e = cJSON_CreateObject(), *shape = cJSON_AddArrayToObject(e, "shape");
	double offs[2] = { (double)t->begin, (double)(t->begin + t->nbytes) };
	cJSON *o = cJSON_CreateDoubleArray(offs, 2);
	int ok = shape && cJSON_AddStringToObject(e, "dtype", sc_dtype_name(t->dtype));
	for (int k = 0; ok && k < t->ndim; k++)
		ok = cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[k]));
	if (!ok || !o || !cJSON_AddItemToObject(e, "data_offsets", o)) {
		cJSON_Delete(o);
		cJSON_Delete(e);
		return NULL;
	}
	return e;
}

/* Assigns data offsets: contiguous (readers such as Hugging Face's reject
 * gaps), in insertion order within each element size, larger sizes first,
 * so every tensor is aligned to its element size. Returns the JSON header. */
static cJSON *build_header(sc_st_writer *w)
{
	uint64_t off = 0;
	for (size_t size = 8; size >= 1; size /= 2)
		for (int i = 0; i < w->n; i++)
			if (sc_dtype_size(w->t[i].dtype) == size) {
				w->t[i].begin = off;
				off += w->t[i].nbytes;
			}
	cJSON *root = cJSON_CreateObject();
	int ok = root != NULL;
	if (ok && cJSON_GetArraySize(w->meta) > 0) {
		cJSON *m = cJSON_Duplicate(w->meta, 1);
		ok = m && cJSON_AddItemToObject(root, "__metadata__", m);
		if (!ok)
			cJSON_Delete(m);
	}
	for (int i = 0; ok && i < w->n; i++) {
		cJSON *e = tensor_entry(&w->t[i]);
		ok = e && cJSON_AddItemToObject(root, w->t[i].name, e);
		if (!ok)
			cJSON_Delete(e);
	}
	if (!ok) {
		cJSON_Delete(root);
		return NULL;
	}
	return root;
}

static sc_err write_file(sc_st_writer *w, sc_file_atomic *f, const char *json, size_t jlen)
{
	size_t hlen = (jlen + 7) & ~(size_t)7;
	unsigned char len8[8];
	for (int i = 0; i < 8; i++)
		len8[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
	static const char spaces[8] = "        ";
	SC_TRY(sc_file_put(f, len8, 8));
	SC_TRY(sc_file_put(f, json, jlen));
	SC_TRY(sc_file_put(f, spaces, hlen - jlen));
	for (size_t size = 8; size >= 1; size /= 2)
		for (int i = 0; i < w->n; i++)
			if (sc_dtype_size(w->t[i].dtype) == size)
				SC_TRY(sc_file_put(f, w->t[i].data, w->t[i].nbytes));
	return SC_OK;
}

sc_err sc_st_writer_save(sc_st_writer *w, const char *path)
{
	if (!w || !path)
		return sc_errf(SC_EINVAL, "sc_st_writer_save: NULL argument");
	sc_err rc = SC_OK;
	sc_file_atomic *f = NULL;
	char *json = NULL;
	cJSON *root = build_header(w);
	if (!root || !(json = cJSON_PrintUnformatted(root)))
		rc = sc_errf(SC_ENOMEM, "%s: out of memory for the header", path);
	if (rc == SC_OK)
		rc = sc_file_begin(&f, path);
	if (rc == SC_OK)
		rc = write_file(w, f, json, strlen(json));
	if (rc == SC_OK)
		rc = sc_file_commit(f);
	else
		sc_file_abort(f);
	cJSON_free(json);
	cJSON_Delete(root);
	return rc;
}
