/* weights.c — a model's tensors across model.safetensors or the shards of
 * model.safetensors.index.json, shards opened on first use. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "sc_file.h"
#include "sc_weights.h"

/* Hugging Face index files are a few hundred KiB even for the largest models. */
#define MAX_INDEX_BYTES ((size_t)64 << 20)

struct shard {
	const char *name; /* borrowed from the index */
	sc_st_file *file; /* NULL until a lookup needs it */
};

struct entry {
	const char *tensor; /* borrowed from the index */
	const char *file;   /* borrowed from the index: the shard's name */
	int shard;          /* into sc_weights.shards */
};

struct sc_weights {
	char *dir;
	sc_st_file *single; /* the single-file layout, else NULL */
	cJSON *index;       /* the parsed index: owns every name below */
	int nshards;
	struct shard *shards; /* (nshards) sorted by name */
	int nentries;
	struct entry *entries;    /* (nentries) sorted by tensor name */
	sc_weights_lookup lookup; /* a caller's source (sc_weights_open_lookup), else NULL */
	void *lookup_arg;
};

/* "<dir>/<name>" (one slash) in a new string to free(), or NULL. */
static char *join(const char *dir, const char *name)
{
	size_t n = strlen(dir);
	int slash = n > 0 && dir[n - 1] == '/';
	size_t size = n + !slash + strlen(name) + 1;
	char *p = malloc(size);
	if (p)
		snprintf(p, size, "%s%s%s", dir, slash ? "" : "/", name);
	return p;
}

static int cmp_tensor(const void *a, const void *b)
{
	return strcmp(((const struct entry *)a)->tensor, ((const struct entry *)b)->tensor);
}

static int cmp_file(const void *a, const void *b)
{
	return strcmp(((const struct entry *)a)->file, ((const struct entry *)b)->file);
}

/* A shard name that names a file directly inside the model directory. */
static int plain_name(const char *s)
{
	return s[0] && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

/* Fills w->entries and w->shards from the index text at path. */
static sc_err parse_index(sc_weights *w, const char *text, size_t len, const char *path)
{
	const char *end = NULL;
	w->index = cJSON_ParseWithLengthOpts(text, len, &end, 0);
	if (!w->index)
		return sc_errf(SC_EFORMAT, "%s: not valid JSON (error near byte %ld)", path,
			       end ? (long)(end - text) : 0L);
	if (!cJSON_IsObject(w->index))
		return sc_errf(SC_EFORMAT, "%s: not a JSON object", path);
	const cJSON *map = cJSON_GetObjectItemCaseSensitive(w->index, "weight_map");
	if (!cJSON_IsObject(map))
		return sc_errf(SC_EFORMAT, "%s: weight_map missing or not a JSON object", path);
	int n = cJSON_GetArraySize(map);
	if (n == 0)
		return sc_errf(SC_EFORMAT, "%s: weight_map is empty", path);

	w->entries = calloc((size_t)n, sizeof(*w->entries));
	w->shards = calloc((size_t)n, sizeof(*w->shards));
	if (!w->entries || !w->shards)
		return sc_errf(SC_ENOMEM, "%s: out of memory for %d entries", path, n);
	const cJSON *item;
	cJSON_ArrayForEach(item, map)
	{
		if (!cJSON_IsString(item))
			return sc_errf(SC_EFORMAT, "%s: weight_map entry '%s' is not a string",
				       path, item->string);
		if (!plain_name(item->valuestring))
			return sc_errf(SC_EFORMAT,
				       "%s: weight_map entry '%s': shard '%s' is not a plain file "
				       "name in the model directory",
				       path, item->string, item->valuestring);
		w->entries[w->nentries++] =
		    (struct entry){ .tensor = item->string, .file = item->valuestring };
	}

	/* One shard per distinct file name, then the entries by tensor name. */
	qsort(w->entries, (size_t)n, sizeof(*w->entries), cmp_file);
	for (int i = 0; i < n; i++) {
		if (i == 0 || strcmp(w->entries[i - 1].file, w->entries[i].file) != 0)
			w->shards[w->nshards++].name = w->entries[i].file;
		w->entries[i].shard = w->nshards - 1;
	}
	qsort(w->entries, (size_t)n, sizeof(*w->entries), cmp_tensor);
	for (int i = 1; i < n; i++)
		if (strcmp(w->entries[i - 1].tensor, w->entries[i].tensor) == 0)
			return sc_errf(SC_EFORMAT, "%s: weight_map lists tensor '%s' twice", path,
				       w->entries[i].tensor);
	return SC_OK;
}

/* Reads and parses the index at path; SC_ENOENT only when it is absent. */
static sc_err load_index(sc_weights *w, const char *path)
{
	char *text = NULL;
	size_t len = 0;
	SC_TRY(sc_file_read(path, MAX_INDEX_BYTES, &text, &len));
	sc_err rc = parse_index(w, text, len, path);
	free(text);
	return rc;
}

sc_err sc_weights_open(sc_weights **out, const char *dir)
{
	sc_err rc;
	sc_weights *w = NULL;
	char *single = NULL, *index = NULL;
	if (out)
		*out = NULL;
	if (!out || !dir)
		return sc_errf(SC_EINVAL, "sc_weights_open: NULL argument");
	if (!dir[0])
		return sc_errf(SC_EINVAL, "sc_weights_open: empty directory name");
	w = calloc(1, sizeof(*w));
	if (!w || !(w->dir = strdup(dir)) || !(single = join(dir, SC_WEIGHTS_SINGLE)) ||
	    !(index = join(dir, SC_WEIGHTS_INDEX))) {
		rc = sc_errf(SC_ENOMEM, "%s: out of memory", dir);
		goto fail;
	}
	rc = sc_st_open(&w->single, single);
	if (rc == SC_ENOENT)
		rc = load_index(w, index);
	if (rc == SC_ENOENT)
		rc = sc_errf(SC_ENOENT, "%s: no model weights: neither %s nor %s is there", dir,
			     SC_WEIGHTS_SINGLE, SC_WEIGHTS_INDEX);
	if (rc != SC_OK)
		goto fail;
	free(single);
	free(index);
	*out = w;
	return SC_OK;
fail:
	free(single);
	free(index);
	sc_weights_close(w);
	return rc;
}

sc_err sc_weights_open_lookup(sc_weights **out, sc_weights_lookup fn, void *arg)
{
	if (!out || !fn)
		return sc_errf(SC_EINVAL, "sc_weights_open_lookup: NULL argument");
	if (!(*out = calloc(1, sizeof(**out))))
		return sc_errf(SC_ENOMEM, "out of memory");
	(*out)->lookup = fn;
	(*out)->lookup_arg = arg;
	return SC_OK;
}

void sc_weights_close(sc_weights *w)
{
	if (!w)
		return;
	for (int i = 0; i < w->nshards; i++)
		sc_st_close(w->shards[i].file);
	free(w->shards);
	free(w->entries);
	cJSON_Delete(w->index);
	sc_st_close(w->single);
	free(w->dir);
	free(w);
}

/* Opens shard s unless it is open; errors are prefixed "shard <name>". */
static sc_err open_shard(sc_weights *w, struct shard *s)
{
	if (s->file)
		return SC_OK;
	char *path = join(w->dir, s->name);
	if (!path)
		return sc_errf(SC_ENOMEM, "shard %s: out of memory", s->name);
	sc_err rc = sc_st_open(&s->file, path);
	free(path);
	return rc == SC_OK ? SC_OK : sc_err_wrap(rc, "shard %s", s->name);
}

/* The tensor of index entry e, from its shard (opened if need be). */
static sc_err entry_tensor(sc_weights *w, const struct entry *e, const sc_st_tensor **out)
{
	struct shard *s = &w->shards[e->shard];
	sc_err rc = open_shard(w, s);
	if (rc != SC_OK)
		return sc_err_wrap(rc, "tensor '%s'", e->tensor);
	*out = sc_st_find(s->file, e->tensor);
	if (!*out)
		return sc_errf(SC_EFORMAT,
			       "tensor '%s': the index places it in shard %s, which does not "
			       "hold it",
			       e->tensor, s->name);
	return SC_OK;
}

sc_err sc_weights_find(sc_weights *w, const char *name, const sc_st_tensor **out)
{
	if (out)
		*out = NULL;
	if (!w || !name || !out)
		return sc_errf(SC_EINVAL, "sc_weights_find: NULL argument");
	if (w->lookup)
		return w->lookup(w->lookup_arg, name, out);
	if (w->single) {
		*out = sc_st_find(w->single, name);
		return SC_OK;
	}
	const struct entry key = { .tensor = name };
	const struct entry *e =
	    bsearch(&key, w->entries, (size_t)w->nentries, sizeof(*w->entries), cmp_tensor);
	return e ? entry_tensor(w, e, out) : SC_OK;
}

sc_err sc_weights_check_all(sc_weights *w)
{
	if (!w)
		return sc_errf(SC_EINVAL, "sc_weights_check_all: NULL argument");
	for (int i = 0; i < w->nentries; i++) {
		const sc_st_tensor *t;
		SC_TRY(entry_tensor(w, &w->entries[i], &t));
	}
	return SC_OK;
}

int sc_weights_sharded(const sc_weights *w)
{
	return w && !w->single && !w->lookup;
}
