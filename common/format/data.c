/* data.c — token files, byte-level text, and the seeded sample order. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sc_data.h"
#include "sc_file.h"
#include "sc_rng.h"

#define HEADER_INTS 256

static int32_t le32(const unsigned char *p)
{
	return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
			 (uint32_t)p[3] << 24);
}

sc_err sc_tokens_load(sc_tokens **out, const char *path, int vocab_size)
{
	char *text;
	unsigned char *raw;
	size_t len = 0, n;
	sc_tokens *tk;
	sc_err rc;

	*out = NULL;
	SC_TRY(sc_file_read(path, SIZE_MAX, &text, &len));
	raw = (unsigned char *)text;
	tk = calloc(1, sizeof(*tk));
	if (!tk) {
		free(raw);
		return sc_errf(SC_ENOMEM, "out of memory");
	}
	if (len >= 4 && le32(raw) == SC_TOKENS_MAGIC) {
		int32_t count, version;
		size_t width;
		if (len < HEADER_INTS * 4) {
			rc = sc_errf(SC_EFORMAT, "%s: token file header truncated (%zu bytes)",
				     path, len);
			goto fail;
		}
		version = le32(raw + 4);
		if (version != SC_TOKENS_VERSION && version != SC_TOKENS_VERSION_32) {
			rc = sc_errf(SC_EFORMAT,
				     "%s: token file version %d not supported (want %d or %d)",
				     path, version, SC_TOKENS_VERSION, SC_TOKENS_VERSION_32);
			goto fail;
		}
		width = version == SC_TOKENS_VERSION ? 2 : 4;
		count = le32(raw + 8);
		if (count < 0 || (size_t)count != (len - HEADER_INTS * 4) / width ||
		    (len - HEADER_INTS * 4) % width) {
			rc = sc_errf(SC_EFORMAT,
				     "%s: header says %d tokens but the file holds %zu bytes "
				     "of tokens",
				     path, count, len - HEADER_INTS * 4);
			goto fail;
		}
		n = (size_t)count;
		tk->ids = malloc((n ? n : 1) * sizeof(int32_t));
		if (!tk->ids) {
			rc = sc_errf(SC_ENOMEM, "%s: out of memory for %zu tokens", path, n);
			goto fail;
		}
		for (size_t i = 0; i < n; i++) {
			const unsigned char *p = raw + HEADER_INTS * 4 + width * i;
			uint32_t v = width == 2 ? (uint32_t)(p[0] | p[1] << 8) : (uint32_t)le32(p);
			if (v > INT32_MAX) {
				rc = sc_errf(SC_ERANGE,
					     "%s: token id %u at position %zu is too large", path,
					     v, i);
				goto fail;
			}
			tk->ids[i] = (int32_t)v;
		}
	} else {
		if (vocab_size < 256) {
			rc = sc_errf(SC_ERANGE,
				     "%s: plain text needs a vocabulary of at least 256 byte "
				     "tokens, the model has %d",
				     path, vocab_size);
			goto fail;
		}
		n = len;
		tk->ids = malloc((n ? n : 1) * sizeof(int32_t));
		if (!tk->ids) {
			rc = sc_errf(SC_ENOMEM, "%s: out of memory for %zu tokens", path, n);
			goto fail;
		}
		for (size_t i = 0; i < n; i++)
			tk->ids[i] = raw[i];
	}
	tk->n = n;
	for (size_t i = 0; i < n; i++) {
		if (tk->ids[i] >= vocab_size) {
			rc = sc_errf(SC_ERANGE,
				     "%s: token id %d at position %zu is outside the model's "
				     "vocabulary (size %d)",
				     path, tk->ids[i], i, vocab_size);
			goto fail;
		}
	}
	free(raw);
	*out = tk;
	return SC_OK;
fail:
	free(raw);
	sc_tokens_free(tk);
	return rc;
}

void sc_tokens_free(sc_tokens *tk)
{
	if (!tk)
		return;
	free(tk->ids);
	free(tk->mask);
	free(tk->docs);
	free(tk->win);
	free(tk);
}

sc_err sc_tokens_save(const char *path, const int32_t *ids, size_t n)
{
	int32_t header[HEADER_INTS] = { SC_TOKENS_MAGIC, SC_TOKENS_VERSION };
	size_t width = 2, chunk = 0;
	unsigned char buf[8192];
	sc_file_atomic *f;
	sc_err rc = SC_OK;

	if (n > INT32_MAX)
		return sc_errf(SC_ERANGE, "%s: %zu tokens exceed the format's limit", path, n);
	for (size_t i = 0; i < n; i++) {
		if (ids[i] < 0)
			return sc_errf(SC_ERANGE, "%s: negative token id %d at position %zu", path,
				       ids[i], i);
		if (ids[i] > UINT16_MAX)
			width = 4;
	}
	header[1] = width == 2 ? SC_TOKENS_VERSION : SC_TOKENS_VERSION_32;
	header[2] = (int32_t)n;
	SC_TRY(sc_file_begin(&f, path));
	/* The format is little-endian; so is every machine splitchain targets. */
	rc = sc_file_put(f, header, sizeof(header));
	for (size_t i = 0; !rc && i < n; i++) {
		uint32_t v = (uint32_t)ids[i];
		for (size_t b = 0; b < width; b++)
			buf[chunk++] = (unsigned char)(v >> (8 * b));
		if (chunk == sizeof(buf) || i + 1 == n) {
			rc = sc_file_put(f, buf, chunk);
			chunk = 0;
		}
	}
	if (rc) {
		sc_file_abort(f);
		return rc;
	}
	return sc_file_commit(f);
}

/* Number of windows of T + 1 tokens in tk. */
static size_t windows_of(const sc_tokens *tk, int T)
{
	if (tk->win)
		return tk->nwin;
	return tk->n > (size_t)T ? (tk->n - 1) / (size_t)T : 0;
}

struct sc_loader {
	const sc_tokens *tk;
	int T;
	uint64_t seed;
	size_t windows; /* W */
	uint64_t epoch; /* epoch whose permutation perm holds */
	uint32_t *perm; /* (W) */
};

static void make_perm(sc_loader *ld, uint64_t epoch)
{
	uint64_t keys[2] = { ld->seed, epoch };
	sc_rng r;

	sc_rng_seed(&r, keys, 2);
	for (size_t i = 0; i < ld->windows; i++)
		ld->perm[i] = (uint32_t)i;
	for (size_t i = ld->windows - 1; i > 0; i--) { /* Fisher-Yates */
		size_t j = (size_t)sc_rng_below(&r, i + 1);
		uint32_t t = ld->perm[i];
		ld->perm[i] = ld->perm[j];
		ld->perm[j] = t;
	}
	ld->epoch = epoch;
}

sc_err sc_loader_new(sc_loader **out, const sc_tokens *tk, int T, uint64_t seed)
{
	sc_loader *ld;

	*out = NULL;
	if (T < 1 || (tk->win ? !tk->nwin : tk->n < (size_t)T + 1))
		return sc_errf(SC_EINVAL,
			       "the data holds %zu tokens, fewer than one sequence of %d "
			       "plus its target",
			       tk->n, T);
	if (windows_of(tk, T) > UINT32_MAX)
		return sc_errf(SC_ERANGE, "too many windows in the data");
	ld = calloc(1, sizeof(*ld));
	if (!ld)
		return sc_errf(SC_ENOMEM, "out of memory");
	ld->tk = tk;
	ld->T = T;
	ld->seed = seed;
	ld->windows = windows_of(tk, T);
	ld->perm = malloc(ld->windows * sizeof(uint32_t));
	if (!ld->perm) {
		free(ld);
		return sc_errf(SC_ENOMEM, "out of memory for %zu windows", windows_of(tk, T));
	}
	make_perm(ld, 0);
	*out = ld;
	return SC_OK;
}

void sc_loader_free(sc_loader *ld)
{
	if (!ld)
		return;
	free(ld->perm);
	free(ld);
}

size_t sc_loader_windows(const sc_loader *ld)
{
	return ld->windows;
}

/* Window w of tk into one row: inputs and shifted targets (-1 where the
 * target token is masked out). Returns the number of targets >= 0. */
static size_t fill_window(const sc_tokens *tk, int T, size_t w, int32_t *inputs, int32_t *targets)
{
	size_t at = tk->win ? tk->win[w] : w * (size_t)T, valid = 0;
	const uint8_t *mask = tk->mask ? tk->mask + at : NULL;
	const int32_t *src = tk->ids + at;
	for (int t = 0; t < T; t++) {
		inputs[t] = src[t];
		targets[t] = !mask || mask[t + 1] ? src[t + 1] : -1;
		valid += targets[t] >= 0;
	}
	return valid;
}

void sc_loader_micro_batch(sc_loader *ld, uint64_t step, int M, int m, int B, int32_t *inputs,
			   int32_t *targets)
{
	sc_loader_batch(ld, (step * (uint64_t)M + (uint64_t)m) * (uint64_t)B, B, inputs, targets);
}

void sc_loader_batch(sc_loader *ld, uint64_t first, int B, int32_t *inputs, int32_t *targets)
{
	for (int b = 0; b < B; b++) {
		uint64_t i = first + (uint64_t)b;
		uint64_t epoch = i / ld->windows;

		if (epoch != ld->epoch)
			make_perm(ld, epoch);
		fill_window(ld->tk, ld->T, ld->perm[i % ld->windows], inputs + (size_t)b * ld->T,
			    targets + (size_t)b * ld->T);
	}
}

size_t sc_eval_batches(const sc_tokens *tk, int T, int B, size_t max)
{
	size_t w = windows_of(tk, T);
	size_t k = (w + (size_t)B - 1) / (size_t)B;
	return max && k > max ? max : k;
}

size_t sc_eval_batch(const sc_tokens *tk, int T, int B, size_t k, int32_t *inputs, int32_t *targets)
{
	size_t w = windows_of(tk, T), valid = 0;
	for (int b = 0; b < B; b++) {
		size_t i = k * (size_t)B + (size_t)b, row = (size_t)b * T;
		if (i < w) {
			valid += fill_window(tk, T, i, inputs + row, targets + row);
		} else {
			memset(inputs + row, 0, (size_t)T * sizeof(int32_t));
			for (int t = 0; t < T; t++)
				targets[row + t] = -1;
		}
	}
	return valid;
}
