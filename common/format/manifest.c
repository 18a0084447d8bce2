/* manifest.c — a model directory's tensors with their byte ranges and
 * SHA-256 digests (sc_manifest.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "sc_file.h"
#include "sc_manifest.h"
#include "sc_weights.h"

#define MAX_INDEX_BYTES ((size_t)64 << 20)

static int cmp_name(const void *a, const void *b)
{
	return strcmp(((const sc_manifest_tensor *)a)->name, ((const sc_manifest_tensor *)b)->name);
}

static sc_err grow(sc_manifest *m, int *cap)
{
	if (m->n < *cap)
		return SC_OK;
	int nc = *cap ? 2 * *cap : 64;
	sc_manifest_tensor *p = realloc(m->t, (size_t)nc * sizeof(*p));
	if (!p)
		return sc_errf(SC_ENOMEM, "out of memory for a manifest of %d tensors", nc);
	m->t = p;
	*cap = nc;
	return SC_OK;
}

/* Appends tensor t of file f (called file in the directory), hashed. */
static sc_err add(sc_manifest *m, int *cap, const sc_st_file *f, const char *file,
		  const sc_st_tensor *t)
{
	uint8_t d[SC_SHA256_BYTES];
	SC_TRY(grow(m, cap));
	sc_manifest_tensor *e = &m->t[m->n];
	memset(e, 0, sizeof(*e));
	if (!(e->name = strdup(t->name)) || !(e->file = strdup(file))) {
		free(e->name);
		free(e->file);
		return sc_errf(SC_ENOMEM, "out of memory");
	}
	e->dtype = t->dtype;
	e->ndim = t->ndim;
	memcpy(e->shape, t->shape, sizeof(e->shape));
	e->offset = sc_st_file_offset(f, t);
	e->nbytes = t->nbytes;
	sc_sha256(t->data, t->nbytes, d);
	sc_sha256_hex(d, e->sha256);
	m->bytes += t->nbytes;
	m->n++;
	return SC_OK;
}

/* Every tensor of the file called name in dir; with only (a JSON object of
 * index entries) just those the index places in it. */
static sc_err add_file(sc_manifest *m, int *cap, const char *dir, const char *name,
		       const cJSON *only)
{
	char path[4096];
	sc_st_file *f = NULL;
	sc_err rc;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if ((rc = sc_st_open(&f, path)))
		return rc;
	if (!only) {
		for (int i = 0; i < sc_st_count(f) && !rc; i++)
			rc = add(m, cap, f, name, sc_st_at(f, i));
	} else {
		const cJSON *e;
		cJSON_ArrayForEach(e, only)
		{
			if (rc || !cJSON_IsString(e) || strcmp(e->valuestring, name) != 0)
				continue;
			const sc_st_tensor *t = sc_st_find(f, e->string);
			rc = t ? add(m, cap, f, name, t)
			       : sc_errf(SC_EFORMAT,
					 "tensor '%s': the index places it in shard %s, which "
					 "does not hold it",
					 e->string, name);
		}
	}
	sc_st_close(f);
	return rc;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The shards of the index in dir, each once. */
static sc_err add_shards(sc_manifest *m, int *cap, const char *dir)
{
	char path[4096], *text = NULL;
	size_t len;
	const char **names = NULL;
	cJSON *root = NULL;
	sc_err rc;
	int n = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, SC_WEIGHTS_INDEX);
	SC_TRY(sc_file_read(path, MAX_INDEX_BYTES, &text, &len));
	root = cJSON_ParseWithLength(text, len);
	free(text);
	const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
	if (!cJSON_IsObject(map)) {
		rc = sc_errf(SC_EFORMAT, "%s: weight_map missing or not a JSON object", path);
		goto out;
	}
	if (!(names = calloc((size_t)cJSON_GetArraySize(map) + 1, sizeof(*names)))) {
		rc = sc_errf(SC_ENOMEM, "out of memory");
		goto out;
	}
	const cJSON *e;
	cJSON_ArrayForEach(e, map) if (cJSON_IsString(e)) names[n++] = e->valuestring;
	qsort(names, (size_t)n, sizeof(*names), cmp_str);
	rc = SC_OK;
	for (int i = 0; i < n && !rc; i++)
		if (i == 0 || strcmp(names[i - 1], names[i]) != 0)
			rc = add_file(m, cap, dir, names[i], map);
out:
	free(names);
	cJSON_Delete(root);
	return rc;
}

sc_err sc_manifest_build(sc_manifest *m, const char *dir)
{
	sc_weights *w = NULL;
	int cap = 0;
	sc_err rc;

	memset(m, 0, sizeof(*m));
	/* sc_weights checks the layout (single file or a well-formed index). */
	if ((rc = sc_weights_open(&w, dir)))
		return rc;
	int sharded = sc_weights_sharded(w);
	sc_weights_close(w);
	rc = sharded ? add_shards(m, &cap, dir) : add_file(m, &cap, dir, SC_WEIGHTS_SINGLE, NULL);
	if (rc) {
		sc_manifest_free(m);
		return rc;
	}
	qsort(m->t, (size_t)m->n, sizeof(*m->t), cmp_name);
	return SC_OK;
}

void sc_manifest_free(sc_manifest *m)
{
	for (int i = 0; i < m->n; i++) {
		free(m->t[i].name);
		free(m->t[i].file);
	}
	free(m->t);
	memset(m, 0, sizeof(*m));
}

const sc_manifest_tensor *sc_manifest_find(const sc_manifest *m, const char *name)
{
	sc_manifest_tensor key = { .name = (char *)name };
	if (!m->n || !name)
		return NULL;
	return bsearch(&key, m->t, (size_t)m->n, sizeof(*m->t), cmp_name);
}

void sc_manifest_digest(const char *config, size_t len, const sc_manifest_tensor *t, int n,
			char hex[SC_SHA256_HEX])
{
	uint8_t d[SC_SHA256_BYTES];
	size_t cap = len + 1, used = len;
	for (int i = 0; i < n; i++)
		cap += strlen(t[i].name) + 96 + (size_t)t[i].ndim * 24;
	char *buf = malloc(cap);
	if (!buf) { /* never matches a real digest: the caller's compare fails */
		snprintf(hex, SC_SHA256_HEX, "%s", "(out of memory)");
		return;
	}
	memcpy(buf, config, len);
	for (int i = 0; i < n; i++) {
		used += (size_t)snprintf(buf + used, cap - used, "\n%s\t%s\t%s\t", t[i].name,
					 sc_dtype_name(t[i].dtype), t[i].sha256);
		for (int j = 0; j < t[i].ndim; j++)
			used += (size_t)snprintf(buf + used, cap - used, "%lld,",
						 (long long)t[i].shape[j]);
	}
	sc_sha256(buf, used, d);
	free(buf);
	sc_sha256_hex(d, hex);
}

sc_err sc_dtype_parse(const char *s, enum sc_dtype *out)
{
	for (int d = 0; d < SC_DTYPE_COUNT; d++)
		if (s && !strcmp(s, sc_dtype_name((enum sc_dtype)d))) {
			*out = (enum sc_dtype)d;
			return SC_OK;
		}
	return sc_errf(SC_EFORMAT, "unknown tensor dtype '%s'", s ? s : "(none)");
}

int sc_sha256_hex_valid(const char *s)
{
	if (!s || strlen(s) != 64)
		return 0;
	for (int i = 0; i < 64; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}
