/* dataset_job.c — a job's data: the tokenized-data cache, the held-out
 * split and unpacked windows (see sc_dataset.h). */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sc_dataset.h"
#include "sc_file.h"
#include "sc_log.h"
#include "sc_rng.h"
#include "sc_safetensors.h"
#include "sc_sha256.h"

#define CACHE_DIR     ".splitchain-cache"
#define CACHE_VERSION "splitchain tokenized data v1"
#define EVAL_KEY      0x6576616cu /* "eval": the split's own random stream */

static sc_tokens *tokens_new(size_t n, int with_mask)
{
	sc_tokens *tk = calloc(1, sizeof(*tk));
	if (!tk)
		return NULL;
	tk->ids = malloc((n ? n : 1) * sizeof(int32_t));
	tk->mask = with_mask ? malloc(n ? n : 1) : NULL;
	if (!tk->ids || (with_mask && !tk->mask)) {
		sc_tokens_free(tk);
		return NULL;
	}
	tk->n = n;
	return tk;
}

/* Document i of tk: [*a, *b). A stream without offsets is one document. */
static void doc_range(const sc_tokens *tk, size_t i, size_t *a, size_t *b)
{
	size_t nd = tk->docs ? tk->ndocs : 1;
	*a = tk->docs ? tk->docs[i] : 0;
	*b = i + 1 < nd ? tk->docs[i + 1] : tk->n;
}

/* ---- the cache ---- */

/* The file a data file's tokenized form is cached in, for key (hex). */
static void cache_path(char *out, size_t size, const char *data, const char *key)
{
	char *a = strdup(data), *b = strdup(data);
	if (!a || !b)
		snprintf(out, size, "%s", "");
	else
		snprintf(out, size, "%s/%s/%s.%.16s.safetensors", dirname(a), CACHE_DIR,
			 basename(b), key);
	free(a);
	free(b);
}

/* key = SHA-256 of what decides the tokens: the data's bytes, the tokenizer
 * (or bytes), the EOS appended and whether bad lines are skipped. */
static sc_err cache_key(char key[SC_SHA256_HEX], const char *path, const sc_tokenizer *tok, int eos,
			int skip_bad_lines)
{
	uint8_t d[SC_SHA256_BYTES];
	char text[512], data_hex[SC_SHA256_HEX], tok_hex[SC_SHA256_HEX] = "bytes";

	SC_TRY(sc_sha256_file(path, d));
	sc_sha256_hex(d, data_hex);
	if (tok) {
		sc_tokenizer_digest(tok, d);
		sc_sha256_hex(d, tok_hex);
	}
	snprintf(text, sizeof(text), "%s\ndata %s\ntokenizer %s\neos %d\nskip_bad_lines %d\n",
		 CACHE_VERSION, data_hex, tok_hex, eos, skip_bad_lines);
	sc_sha256(text, strlen(text), d);
	sc_sha256_hex(d, key);
	return SC_OK;
}

static size_t meta_size(const sc_st_file *f, const char *k)
{
	const char *v = sc_st_metadata(f, k);
	return v ? (size_t)strtoull(v, NULL, 10) : 0;
}

/* Reads a cache file written under key; SC_EFORMAT when it is not one. */
static sc_err cache_read(const char *file, const char *key, sc_tokens **out, sc_dataset_stats *st)
{
	sc_st_file *f;
	sc_tokens *tk = NULL;
	sc_err rc = SC_EFORMAT;

	*out = NULL;
	SC_TRY(sc_st_open(&f, file));
	const char *k = sc_st_metadata(f, "key");
	const sc_st_tensor *ids = sc_st_find(f, "ids"), *mask = sc_st_find(f, "mask"),
			   *docs = sc_st_find(f, "docs");
	if (!k || strcmp(k, key) || !ids || ids->dtype != SC_I32 || ids->ndim != 1 ||
	    (mask &&
	     (mask->dtype != SC_U8 || mask->ndim != 1 || mask->shape[0] != ids->shape[0])) ||
	    (docs && (docs->dtype != SC_I64 || docs->ndim != 1)))
		goto out;
	size_t n = (size_t)ids->shape[0], nd = docs ? (size_t)docs->shape[0] : 0;
	if (!(tk = tokens_new(n, mask != NULL)) ||
	    (nd && !(tk->docs = malloc(nd * sizeof(size_t))))) {
		rc = sc_errf(SC_ENOMEM, "out of memory for %zu cached tokens", n);
		goto out;
	}
	memcpy(tk->ids, ids->data, n * sizeof(int32_t));
	if (mask)
		memcpy(tk->mask, mask->data, n);
	for (size_t i = 0; i < nd; i++) {
		int64_t v;
		memcpy(&v, (const char *)docs->data + 8 * i, 8);
		if (v < 0 || (size_t)v > n || (i && (size_t)v < tk->docs[i - 1]) || (!i && v))
			goto out;
		tk->docs[i] = (size_t)v;
	}
	tk->ndocs = nd;
	st->format = (int)meta_size(f, "format");
	st->documents = meta_size(f, "documents");
	st->bad_lines = meta_size(f, "bad_lines");
	st->target_tokens = meta_size(f, "target_tokens");
	*out = tk;
	tk = NULL;
	rc = SC_OK;
out:
	if (rc == SC_EFORMAT)
		sc_errf(SC_EFORMAT, "%s: not a cache of this data", file);
	sc_tokens_free(tk);
	sc_st_close(f);
	return rc;
}

static sc_err cache_write(const char *file, const char *key, const sc_tokens *tk,
			  const sc_dataset_stats *st)
{
	char dir[PATH_MAX + 32], num[4][32];
	char *copy = strdup(file);
	int64_t *docs = NULL, n = (int64_t)tk->n, nd = (int64_t)tk->ndocs;
	sc_st_writer *w = NULL;
	sc_err rc;

	if (!copy)
		return sc_errf(SC_ENOMEM, "out of memory");
	snprintf(dir, sizeof(dir), "%s", dirname(copy));
	free(copy);
	if ((rc = sc_file_mkdir(dir)) || (rc = sc_st_writer_new(&w)))
		return rc;
	if (nd && !(docs = malloc((size_t)nd * sizeof(int64_t)))) {
		rc = sc_errf(SC_ENOMEM, "out of memory");
		goto out;
	}
	for (int64_t i = 0; i < nd; i++)
		docs[i] = (int64_t)tk->docs[i];
	snprintf(num[0], sizeof(num[0]), "%d", st->format);
	snprintf(num[1], sizeof(num[1]), "%zu", st->documents);
	snprintf(num[2], sizeof(num[2]), "%zu", st->bad_lines);
	snprintf(num[3], sizeof(num[3]), "%zu", st->target_tokens);
	if ((rc = sc_st_writer_add(w, "ids", SC_I32, 1, &n, tk->ids)) ||
	    (tk->mask && (rc = sc_st_writer_add(w, "mask", SC_U8, 1, &n, tk->mask))) ||
	    (nd && (rc = sc_st_writer_add(w, "docs", SC_I64, 1, &nd, docs))) ||
	    (rc = sc_st_writer_meta(w, "key", key)) ||
	    (rc = sc_st_writer_meta(w, "format", num[0])) ||
	    (rc = sc_st_writer_meta(w, "documents", num[1])) ||
	    (rc = sc_st_writer_meta(w, "bad_lines", num[2])) ||
	    (rc = sc_st_writer_meta(w, "target_tokens", num[3])))
		goto out;
	rc = sc_st_writer_save(w, file);
out:
	sc_st_writer_free(w);
	free(docs);
	return rc;
}

/* Whether path is a token file (read as it is, never cached). */
static int is_token_file(const char *path)
{
	int32_t magic = 0;
	FILE *f = fopen(path, "rb");
	if (!f)
		return 0;
	size_t got = fread(&magic, 1, 4, f);
	fclose(f);
	return got == 4 && magic == SC_TOKENS_MAGIC;
}

/* sc_dataset_load_for through the cache; *cache as sc_job_data.cache. */
static sc_err load_cached(sc_tokens **out, const char *path, const sc_tokenizer *tok,
			  int vocab_size, int model_eos, int skip_bad_lines, int no_cache,
			  sc_dataset_stats *st, int *cache)
{
	char key[SC_SHA256_HEX], file[PATH_MAX + 256];
	int eos = !tok || sc_tokenizer_eos_id(tok) >= 0 ? -1 : model_eos;
	sc_err rc;

	*cache = 0;
	if (no_cache || is_token_file(path) || cache_key(key, path, tok, eos, skip_bad_lines))
		return sc_dataset_load_for(out, path, tok, vocab_size, model_eos, skip_bad_lines,
					   st);
	cache_path(file, sizeof(file), path, key);
	memset(st, 0, sizeof(*st));
	rc = cache_read(file, key, out, st);
	if (!rc) {
		*cache = 1;
		for (size_t i = 0; i < (*out)->n; i++)
			if ((*out)->ids[i] < 0 || (*out)->ids[i] >= vocab_size) {
				rc = sc_errf(SC_ERANGE,
					     "%s: token id %d at position %zu is outside the "
					     "model's vocabulary [0, %d)",
					     path, (*out)->ids[i], i, vocab_size);
				sc_tokens_free(*out);
				*out = NULL;
				return rc;
			}
		sc_debug("data", "%s: tokens from the cache %s", path, file);
		return SC_OK;
	}
	if (rc != SC_ENOENT)
		sc_warn("data", "tokenized-data cache: %s; tokenizing again", sc_err_detail());
	SC_TRY(sc_dataset_load_for(out, path, tok, vocab_size, model_eos, skip_bad_lines, st));
	if ((rc = cache_write(file, key, *out, st)))
		sc_info("data", "tokenized-data cache not written: %s", sc_err_detail());
	else
		*cache = 2;
	return SC_OK;
}

/* ---- the held-out split ---- */

/* *out = the documents of tk whose pick[i] == want, in order. */
static sc_err gather(const sc_tokens *tk, const uint8_t *pick, int want, sc_tokens **out)
{
	size_t nd = tk->docs ? tk->ndocs : 1, n = 0, k = 0, a, b;
	for (size_t i = 0; i < nd; i++)
		if (pick[i] == want) {
			doc_range(tk, i, &a, &b);
			n += b - a;
			k++;
		}
	sc_tokens *o = tokens_new(n, tk->mask != NULL);
	if (!o || !(o->docs = malloc((k ? k : 1) * sizeof(size_t)))) {
		sc_tokens_free(o);
		return sc_errf(SC_ENOMEM, "out of memory");
	}
	n = 0;
	for (size_t i = 0; i < nd; i++) {
		if (pick[i] != want)
			continue;
		doc_range(tk, i, &a, &b);
		o->docs[o->ndocs++] = n;
		memcpy(o->ids + n, tk->ids + a, (b - a) * sizeof(int32_t));
		if (tk->mask)
			memcpy(o->mask + n, tk->mask + a, b - a);
		n += b - a;
	}
	*out = o;
	return SC_OK;
}

/* *out = tokens [a, b) of tk as one document. */
static sc_err slice(const sc_tokens *tk, size_t a, size_t b, sc_tokens **out)
{
	sc_tokens *o = tokens_new(b - a, tk->mask != NULL);
	if (!o)
		return sc_errf(SC_ENOMEM, "out of memory");
	memcpy(o->ids, tk->ids + a, (b - a) * sizeof(int32_t));
	if (tk->mask)
		memcpy(o->mask, tk->mask + a, b - a);
	*out = o;
	return SC_OK;
}

sc_err sc_tokens_split(const sc_tokens *tk, double frac, uint64_t seed, sc_tokens **train,
		       sc_tokens **eval)
{
	size_t nd = tk->docs ? tk->ndocs : 1;
	sc_err rc;

	*train = *eval = NULL;
	if (!(frac > 0 && frac < 1))
		return sc_errf(SC_EINVAL, "eval split %g: must be in (0, 1)", frac);
	if (nd < 2) { /* one document: its last tokens */
		size_t k = (size_t)ceil(frac * (double)tk->n);
		if (k < 1 || k >= tk->n)
			return sc_errf(SC_EINVAL, "%zu tokens cannot be split %g held out", tk->n,
				       frac);
		SC_TRY(slice(tk, 0, tk->n - k, train));
		if ((rc = slice(tk, tk->n - k, tk->n, eval))) {
			sc_tokens_free(*train);
			*train = NULL;
		}
		return rc;
	}
	size_t k = (size_t)llround(frac * (double)nd), *perm = malloc(nd * sizeof(size_t));
	uint8_t *pick = calloc(nd, 1);
	uint64_t keys[2] = { seed, EVAL_KEY };
	sc_rng r;
	if (!perm || !pick) {
		free(perm);
		free(pick);
		return sc_errf(SC_ENOMEM, "out of memory");
	}
	k = k < 1 ? 1 : k > nd - 1 ? nd - 1 : k;
	sc_rng_seed(&r, keys, 2);
	for (size_t i = 0; i < nd; i++)
		perm[i] = i;
	for (size_t i = nd - 1; i > 0; i--) { /* Fisher-Yates */
		size_t j = (size_t)sc_rng_below(&r, i + 1), t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	for (size_t i = 0; i < k; i++)
		pick[perm[i]] = 1;
	rc = gather(tk, pick, 0, train);
	if (!rc && (rc = gather(tk, pick, 1, eval))) {
		sc_tokens_free(*train);
		*train = NULL;
	}
	free(perm);
	free(pick);
	return rc;
}

/* ---- unpacked windows ---- */

sc_err sc_tokens_unpack(const sc_tokens *tk, int T, sc_tokens **out)
{
	size_t nd = tk->docs ? tk->ndocs : 1, n = 0, w = 0, a, b;

	*out = NULL;
	if (T < 1)
		return sc_errf(SC_EINVAL, "sequence length %d", T);
	/* A document of m >= 2 tokens takes k = ceil((m - 1) / T) windows at
	 * T-token strides, and k T + 1 positions (the last window's last
	 * target); the rest is masked padding. */
	for (size_t i = 0; i < nd; i++) {
		doc_range(tk, i, &a, &b);
		if (b - a < 2)
			continue;
		size_t k = (b - a - 1 + (size_t)T - 1) / (size_t)T;
		n += k * (size_t)T + 1;
		w += k;
	}
	sc_tokens *o = tokens_new(n, 1);
	if (!o || !(o->win = malloc((w ? w : 1) * sizeof(size_t))) ||
	    !(o->docs = malloc(nd * sizeof(size_t)))) {
		sc_tokens_free(o);
		return sc_errf(SC_ENOMEM, "out of memory for %zu tokens", n);
	}
	size_t p = 0;
	for (size_t i = 0; i < nd; i++) {
		doc_range(tk, i, &a, &b);
		if (b - a < 2)
			continue;
		size_t m = b - a, k = (m - 1 + (size_t)T - 1) / (size_t)T, len = k * (size_t)T + 1;
		o->docs[o->ndocs++] = p;
		memcpy(o->ids + p, tk->ids + a, m * sizeof(int32_t));
		if (tk->mask)
			memcpy(o->mask + p, tk->mask + a, m);
		else
			memset(o->mask + p, 1, m);
		for (size_t j = m; j < len; j++) {
			o->ids[p + j] = 0; /* any id: never a target, after every real one */
			o->mask[p + j] = 0;
		}
		for (size_t j = 0; j < k; j++)
			o->win[o->nwin++] = p + j * (size_t)T;
		p += len;
	}
	*out = o;
	return SC_OK;
}

/* ---- a job's data ---- */

static size_t windows(const sc_tokens *tk, int T)
{
	return sc_eval_batches(tk, T, 1, 0);
}

void sc_job_data_free(sc_job_data *jd)
{
	sc_tokens_free(jd->train);
	sc_tokens_free(jd->eval);
	memset(jd, 0, sizeof(*jd));
}

/* Replaces *tk by its unpacked form. */
static sc_err unpack_in_place(sc_tokens **tk, int T)
{
	sc_tokens *u;
	SC_TRY(sc_tokens_unpack(*tk, T, &u));
	sc_tokens_free(*tk);
	*tk = u;
	return SC_OK;
}

sc_err sc_job_data_load(sc_job_data *jd, const sc_data_spec *ds, const sc_tokenizer *tok,
			int vocab_size, int model_eos)
{
	sc_tokens *all = NULL;
	sc_dataset_stats est;
	int ecache;
	sc_err rc;

	memset(jd, 0, sizeof(*jd));
	if (ds->eval_split < 0 || ds->eval_split > 0.5)
		return sc_errf(SC_EINVAL, "eval split %g: must be in [0, 0.5]", ds->eval_split);
	if (ds->eval_path && *ds->eval_path && ds->eval_split > 0)
		return sc_errf(SC_EINVAL, "an eval file and an eval split exclude each other");
	SC_TRY(load_cached(&all, ds->path, tok, vocab_size, model_eos, ds->skip_bad_lines,
			   ds->no_cache, &jd->st, &jd->cache));
	if (ds->eval_path && *ds->eval_path) {
		jd->train = all;
		all = NULL;
		if ((rc = load_cached(&jd->eval, ds->eval_path, tok, vocab_size, model_eos,
				      ds->skip_bad_lines, ds->no_cache, &est, &ecache)))
			goto fail;
	} else if (ds->eval_split > 0) {
		if ((rc = sc_tokens_split(all, ds->eval_split, ds->seed, &jd->train, &jd->eval)))
			goto fail;
	} else {
		jd->train = all;
		all = NULL;
	}
	if (ds->no_pack && ((rc = unpack_in_place(&jd->train, ds->T)) ||
			    (jd->eval && (rc = unpack_in_place(&jd->eval, ds->T)))))
		goto fail;
	if (!windows(jd->train, ds->T)) {
		rc = sc_errf(SC_EINVAL,
			     "%s: the training data holds %zu tokens, not one sequence of %d "
			     "plus its target",
			     ds->path, jd->train->n, ds->T);
		goto fail;
	}
	if (jd->eval && !windows(jd->eval, ds->T)) {
		rc = sc_errf(SC_EINVAL,
			     "%s: the held-out data holds %zu tokens, not one sequence of %d "
			     "plus its target (raise the eval split or lower the sequence length)",
			     ds->eval_path && *ds->eval_path ? ds->eval_path : ds->path,
			     jd->eval->n, ds->T);
		goto fail;
	}
	sc_tokens_free(all);
	return SC_OK;
fail:
	sc_tokens_free(all);
	sc_job_data_free(jd);
	return rc;
}
