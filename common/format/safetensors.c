/* safetensors.c — the safetensors reader (mmap, every tensor validated at
 * open) and the dtype table; the writer is in safetensors_write.c. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "sc_safetensors.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian and is read in place"
#endif

#define MAX_HEADER ((uint64_t)100 << 20)
/* JSON numbers above 2^53 are no longer exact integers. */
#define MAX_EXACT 9007199254740992.0

static const struct {
	const char *name;
	size_t size;
} dtypes[SC_DTYPE_COUNT] = {
	[SC_F32] = { "F32", 4 }, [SC_F16] = { "F16", 2 }, [SC_BF16] = { "BF16", 2 },
	[SC_I32] = { "I32", 4 }, [SC_I64] = { "I64", 8 }, [SC_U8] = { "U8", 1 },
};

/* Dtypes of the format that this project does not read (SC_ENOTSUP, not
 * SC_EFORMAT: the file is fine, we are not). */
static const char *const foreign_dtypes[] = {
	"BOOL", "I8", "I16", "U16", "U32", "U64", "F64", "F8_E4M3", "F8_E5M2", NULL,
};

size_t sc_dtype_size(enum sc_dtype d)
{
	return (unsigned)d < SC_DTYPE_COUNT ? dtypes[d].size : 0;
}

const char *sc_dtype_name(enum sc_dtype d)
{
	return (unsigned)d < SC_DTYPE_COUNT ? dtypes[d].name : "?";
}

struct sc_st_file {
	char *path;
	unsigned char *map;
	size_t map_len;
	cJSON *root;                  /* the parsed header: owns names and metadata */
	const cJSON *meta;            /* root's __metadata__ object, or NULL */
	int n;                        /* tensors */
	sc_st_tensor *tensors;        /* (n) in header order */
	const sc_st_tensor **by_name; /* (n) sorted by name */
};

/* Writes "(d0, d1, ...)" into buf. */
static const char *fmt_shape(char *buf, size_t size, int ndim, const int64_t *shape)
{
	size_t k = (size_t)snprintf(buf, size, "(");
	for (int i = 0; i < ndim && k < size; i++)
		k += (size_t)snprintf(buf + k, size - k, "%s%lld", i ? ", " : "",
				      (long long)shape[i]);
	if (k < size)
		snprintf(buf + k, size - k, ")");
	return buf;
}

/* A JSON number that is an exact non-negative integer. */
static int json_uint(const cJSON *v, uint64_t *out)
{
	if (!cJSON_IsNumber(v))
		return -1;
	double d = v->valuedouble;
	if (!(d >= 0 && d <= MAX_EXACT) || d != floor(d))
		return -1;
	*out = (uint64_t)d;
	return 0;
}

static sc_err parse_dtype(enum sc_dtype *out, const cJSON *v, const char *path, const char *name)
{
	if (!cJSON_IsString(v))
		return sc_errf(SC_EFORMAT, "%s: tensor '%s': dtype missing or not a string", path,
			       name);
	for (int d = 0; d < SC_DTYPE_COUNT; d++) {
		if (strcmp(v->valuestring, dtypes[d].name) == 0) {
			*out = (enum sc_dtype)d;
			return SC_OK;
		}
	}
	for (int i = 0; foreign_dtypes[i]; i++) {
		if (strcmp(v->valuestring, foreign_dtypes[i]) == 0)
			return sc_errf(
			    SC_ENOTSUP,
			    "%s: tensor '%s': dtype %s is not supported (supported: F32, "
			    "F16, BF16, I32, I64, U8)",
			    path, name, v->valuestring);
	}
	return sc_errf(SC_EFORMAT, "%s: tensor '%s': unknown dtype '%.32s'", path, name,
		       v->valuestring);
}

/* Fills t from the header entry item, checking it against the data section
 * (data, data_len bytes). */
static sc_err parse_tensor(sc_st_tensor *t, const cJSON *item, const unsigned char *data,
			   uint64_t data_len, const char *path)
{
	const char *name = t->name;
	if (!cJSON_IsObject(item))
		return sc_errf(SC_EFORMAT, "%s: tensor '%s': entry is not a JSON object", path,
			       name);
	SC_TRY(parse_dtype(&t->dtype, cJSON_GetObjectItemCaseSensitive(item, "dtype"), path, name));

	const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
	if (!cJSON_IsArray(shape))
		return sc_errf(SC_EFORMAT, "%s: tensor '%s': shape missing or not a list", path,
			       name);
	int ndim = cJSON_GetArraySize(shape);
	if (ndim > SC_ST_MAX_DIMS)
		return sc_errf(SC_ENOTSUP, "%s: tensor '%s': %d dimensions (at most %d supported)",
			       path, name, ndim, SC_ST_MAX_DIMS);
	t->ndim = ndim;
	uint64_t numel = 1, nbytes;
	int overflow = 0, i = 0;
	const cJSON *dim;
	cJSON_ArrayForEach(dim, shape)
	{
		uint64_t d;
		if (json_uint(dim, &d) != 0)
			return sc_errf(SC_EFORMAT,
				       "%s: tensor '%s': shape[%d] is not a non-negative integer",
				       path, name, i);
		t->shape[i++] = (int64_t)d;
		overflow |= __builtin_mul_overflow(numel, d, &numel);
	}
	overflow |= __builtin_mul_overflow(numel, (uint64_t)dtypes[t->dtype].size, &nbytes);
	/* A zero dimension makes any overflow elsewhere harmless. */
	for (int k = 0; k < ndim; k++) {
		if (t->shape[k] == 0) {
			overflow = 0;
			nbytes = 0;
		}
	}
	if (overflow)
		return sc_errf(SC_EFORMAT, "%s: tensor '%s': the size of its shape overflows", path,
			       name);

	const cJSON *offs = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
	uint64_t begin, end;
	if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 ||
	    json_uint(cJSON_GetArrayItem(offs, 0), &begin) != 0 ||
	    json_uint(cJSON_GetArrayItem(offs, 1), &end) != 0)
		return sc_errf(SC_EFORMAT,
			       "%s: tensor '%s': data_offsets missing or not two non-negative "
			       "integers",
			       path, name);
	if (begin > end)
		return sc_errf(SC_EFORMAT,
			       "%s: tensor '%s': data_offsets [%llu, %llu] are reversed", path,
			       name, (unsigned long long)begin, (unsigned long long)end);
	if (end > data_len)
		return sc_errf(SC_EFORMAT,
			       "%s: tensor '%s': data_offsets [%llu, %llu] run past the end of the "
			       "data section (%llu bytes; file truncated?)",
			       path, name, (unsigned long long)begin, (unsigned long long)end,
			       (unsigned long long)data_len);
	if (end - begin != nbytes) {
		char s[160];
		return sc_errf(SC_EFORMAT,
			       "%s: tensor '%s': shape %s of %s needs %llu bytes but data_offsets "
			       "span %llu",
			       path, name, fmt_shape(s, sizeof(s), t->ndim, t->shape),
			       dtypes[t->dtype].name, (unsigned long long)nbytes,
			       (unsigned long long)(end - begin));
	}
	t->data = data + begin;
	t->nbytes = (size_t)nbytes;
	return SC_OK;
}

static int cmp_by_name(const void *a, const void *b)
{
	const sc_st_tensor *x = *(const sc_st_tensor *const *)a;
	const sc_st_tensor *y = *(const sc_st_tensor *const *)b;
	return strcmp(x->name, y->name);
}

static int cmp_by_data(const void *a, const void *b)
{
	const sc_st_tensor *x = *(const sc_st_tensor *const *)a;
	const sc_st_tensor *y = *(const sc_st_tensor *const *)b;
	const unsigned char *px = x->data, *py = y->data;
	return (px > py) - (px < py);
}

/* Unique names; no two non-empty tensors share a byte. */
static sc_err check_names_and_overlap(sc_st_file *f)
{
	for (int i = 0; i < f->n; i++)
		f->by_name[i] = &f->tensors[i];
	qsort(f->by_name, (size_t)f->n, sizeof(*f->by_name), cmp_by_name);
	for (int i = 1; i < f->n; i++)
		if (strcmp(f->by_name[i - 1]->name, f->by_name[i]->name) == 0)
			return sc_errf(SC_EFORMAT, "%s: duplicate tensor name '%s'", f->path,
				       f->by_name[i]->name);

	const sc_st_tensor **order = malloc(((size_t)f->n + 1) * sizeof(*order));
	if (!order)
		return sc_errf(SC_ENOMEM, "%s: out of memory", f->path);
	int m = 0;
	for (int i = 0; i < f->n; i++)
		if (f->tensors[i].nbytes)
			order[m++] = &f->tensors[i];
	qsort(order, (size_t)m, sizeof(*order), cmp_by_data);
	sc_err rc = SC_OK;
	for (int i = 1; i < m && !rc; i++) {
		const unsigned char *prev_end =
		    (const unsigned char *)order[i - 1]->data + order[i - 1]->nbytes;
		if ((const unsigned char *)order[i]->data < prev_end)
			rc = sc_errf(SC_EFORMAT, "%s: tensors '%s' and '%s' overlap", f->path,
				     order[i - 1]->name, order[i]->name);
	}
	free(order);
	return rc;
}

static sc_err parse_metadata(sc_st_file *f, const cJSON *meta)
{
	if (f->meta)
		return sc_errf(SC_EFORMAT, "%s: duplicate __metadata__", f->path);
	if (!cJSON_IsObject(meta))
		return sc_errf(SC_EFORMAT, "%s: __metadata__ is not a JSON object", f->path);
	const cJSON *kv;
	cJSON_ArrayForEach(kv, meta)
	{
		if (!cJSON_IsString(kv))
			return sc_errf(SC_EFORMAT, "%s: __metadata__ value of '%s' is not a string",
				       f->path, kv->string);
	}
	f->meta = meta;
	return SC_OK;
}

static sc_err parse_header(sc_st_file *f)
{
	const unsigned char *p = f->map;
	uint64_t hlen = 0;
	for (int i = 0; i < 8; i++)
		hlen |= (uint64_t)p[i] << (8 * i);
	if (hlen > MAX_HEADER)
		return sc_errf(SC_EFORMAT, "%s: header length %llu exceeds the 100 MiB limit",
			       f->path, (unsigned long long)hlen);
	if (hlen > f->map_len - 8)
		return sc_errf(SC_EFORMAT,
			       "%s: header length %llu runs past the end of the file (%zu bytes)",
			       f->path, (unsigned long long)hlen, f->map_len);
	const char *hdr = (const char *)p + 8, *end = NULL;
	f->root = cJSON_ParseWithLengthOpts(hdr, (size_t)hlen, &end, 0);
	if (!f->root) {
		long at = end ? (long)(end - hdr) : 0;
		return sc_errf(SC_EFORMAT, "%s: header is not valid JSON (error near byte %ld)",
			       f->path, at);
	}
	for (const char *q = end; q < hdr + hlen; q++)
		if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r')
			return sc_errf(SC_EFORMAT, "%s: header has bytes after its JSON value",
				       f->path);
	if (!cJSON_IsObject(f->root))
		return sc_errf(SC_EFORMAT, "%s: header is not a JSON object", f->path);

	int count = cJSON_GetArraySize(f->root);
	f->tensors = calloc((size_t)count + 1, sizeof(*f->tensors));
	f->by_name = calloc((size_t)count + 1, sizeof(*f->by_name));
	if (!f->tensors || !f->by_name)
		return sc_errf(SC_ENOMEM, "%s: out of memory for %d tensors", f->path, count);
	const unsigned char *data = p + 8 + hlen;
	uint64_t data_len = f->map_len - 8 - hlen;
	const cJSON *item;
	cJSON_ArrayForEach(item, f->root)
	{
		if (strcmp(item->string, "__metadata__") == 0) {
			SC_TRY(parse_metadata(f, item));
			continue;
		}
		sc_st_tensor *t = &f->tensors[f->n];
		t->name = item->string;
		SC_TRY(parse_tensor(t, item, data, data_len, f->path));
		f->n++;
	}
	return check_names_and_overlap(f);
}

sc_err sc_st_open(sc_st_file **out, const char *path)
{
	sc_err rc;
	int fd = -1;
	struct stat st;
	sc_st_file *f = NULL;
	if (!out || !path)
		return sc_errf(SC_EINVAL, "sc_st_open: NULL argument");
	*out = NULL;
	f = calloc(1, sizeof(*f));
	if (!f || !(f->path = strdup(path))) {
		rc = sc_errf(SC_ENOMEM, "%s: out of memory", path);
		goto fail;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) != 0) {
		rc = sc_errf(errno == ENOENT ? SC_ENOENT : SC_EIO, "%s: %s", path, strerror(errno));
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = sc_errf(SC_EIO, "%s: not a regular file", path);
		goto fail;
	}
	if (st.st_size < 8) {
		rc = st.st_size == 0
			 ? sc_errf(SC_EFORMAT, "%s: empty file", path)
			 : sc_errf(SC_EFORMAT, "%s: %lld bytes, too short for the header length",
				   path, (long long)st.st_size);
		goto fail;
	}
	f->map_len = (size_t)st.st_size;
	void *m = mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
	if (m == MAP_FAILED) {
		rc = sc_errf(SC_EIO, "%s: mmap: %s", path, strerror(errno));
		goto fail;
	}
	f->map = m;
	close(fd);
	fd = -1;
	if ((rc = parse_header(f)) != SC_OK)
		goto fail;
	*out = f;
	return SC_OK;
fail:
	if (fd >= 0)
		close(fd);
	sc_st_close(f);
	return rc;
}

void sc_st_close(sc_st_file *f)
{
	if (!f)
		return;
	if (f->map)
		munmap(f->map, f->map_len);
	cJSON_Delete(f->root);
	free(f->tensors);
	free(f->by_name);
	free(f->path);
	free(f);
}

int sc_st_count(const sc_st_file *f)
{
	return f ? f->n : 0;
}

const sc_st_tensor *sc_st_at(const sc_st_file *f, int i)
{
	return (f && i >= 0 && i < f->n) ? &f->tensors[i] : NULL;
}

size_t sc_st_file_offset(const sc_st_file *f, const sc_st_tensor *t)
{
	return (size_t)((const unsigned char *)t->data - f->map);
}

const sc_st_tensor *sc_st_find(const sc_st_file *f, const char *name)
{
	if (!f || !name)
		return NULL;
	int lo = 0, hi = f->n;
	while (lo < hi) {
		int mid = lo + (hi - lo) / 2;
		int c = strcmp(f->by_name[mid]->name, name);
		if (c == 0)
			return f->by_name[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

const char *sc_st_metadata(const sc_st_file *f, const char *key)
{
	if (!f || !f->meta || !key)
		return NULL;
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(f->meta, key);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static float f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
	float out;
	if (exp == 0x1f) { /* inf, or nan with its payload kept */
		bits = sign | 0x7f800000u | (man << 13);
	} else if (exp != 0) { /* normal: rebias 15 -> 127 */
		bits = sign | ((exp + 112) << 23) | (man << 13);
	} else if (man == 0) { /* signed zero */
		bits = sign;
	} else { /* subnormal: man * 2^-24, exact in float */
		float v = (float)man * 0x1p-24f;
		memcpy(&bits, &v, sizeof(bits));
		bits |= sign;
	}
	memcpy(&out, &bits, sizeof(out));
	return out;
}

sc_err sc_st_read_f32(float *dst, const sc_st_tensor *t, size_t numel)
{
	if (!t || (!dst && numel))
		return sc_errf(SC_EINVAL, "sc_st_read_f32: NULL argument");
	size_t have = t->nbytes / dtypes[t->dtype].size;
	if (have != numel) {
		char s[160];
		return sc_errf(SC_EFORMAT, "tensor '%s' has %zu elements (shape %s), expected %zu",
			       t->name, have, fmt_shape(s, sizeof(s), t->ndim, t->shape), numel);
	}
	const unsigned char *p = t->data;
	switch (t->dtype) {
	case SC_F32:
		if (numel)
			memcpy(dst, p, numel * sizeof(float));
		return SC_OK;
	case SC_F16:
		for (size_t i = 0; i < numel; i++)
			dst[i] = f16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
		return SC_OK;
	case SC_BF16:
		for (size_t i = 0; i < numel; i++) {
			uint32_t bits = (uint32_t)(p[2 * i] | p[2 * i + 1] << 8) << 16;
			memcpy(&dst[i], &bits, sizeof(bits));
		}
		return SC_OK;
	default:
		return sc_errf(SC_EFORMAT, "tensor '%s' has dtype %s; F32, F16 or BF16 expected",
			       t->name, dtypes[t->dtype].name);
	}
}

sc_err sc_st_expect_shape(const sc_st_tensor *t, int ndim, const int64_t *shape)
{
	int same = t->ndim == ndim;
	for (int i = 0; same && i < ndim; i++)
		same = t->shape[i] == shape[i];
	if (same)
		return SC_OK;
	char have[160], want[160];
	return sc_errf(SC_EFORMAT, "tensor '%s' has shape %s, expected %s", t->name,
		       fmt_shape(have, sizeof(have), t->ndim, t->shape),
		       fmt_shape(want, sizeof(want), ndim, shape));
}
