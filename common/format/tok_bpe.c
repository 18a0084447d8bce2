/* tok_bpe.c — the BPE model: vocabulary and merge tables (open addressing),
 * and the merging of one word by rank with a binary heap, O(n log n) in the
 * word's length, as HF's Word::merge_all. A per-call cache maps words seen
 * before to their ids. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_impl.h"

static uint64_t hash_bytes(const char *s, size_t n)
{
	uint64_t h = 0x9E3779B97F4A7C15ull ^ n;
	while (n >= 8) {
		uint64_t k;
		memcpy(&k, s, 8);
		h = (h ^ k) * 0xFF51AFD7ED558CCDull;
		h ^= h >> 32;
		s += 8;
		n -= 8;
	}
	if (n) {
		uint64_t k = 0;
		memcpy(&k, s, n);
		h = (h ^ k) * 0xC4CEB9FE1A85EC53ull;
	}
	h ^= h >> 29;
	h *= 0xBF58476D1CE4E5B9ull;
	return h ^ (h >> 32);
}

static size_t table_size(size_t count)
{
	size_t sz = 16;
	while (sz < count * 2)
		sz *= 2;
	return sz;
}

sc_err tok_vocab_init(tok_vocab *v, int32_t n_ids, size_t count)
{
	size_t sz = table_size(count);
	memset(v, 0, sizeof(*v));
	v->n_ids = n_ids;
	v->str = calloc((size_t)n_ids + 1, sizeof(*v->str));
	v->len = calloc((size_t)n_ids + 1, sizeof(*v->len));
	v->slot = malloc(sz * sizeof(*v->slot));
	if (!v->str || !v->len || !v->slot)
		return sc_errf(SC_ENOMEM, "out of memory for a vocabulary of %d", n_ids);
	memset(v->slot, 0xFF, sz * sizeof(*v->slot));
	v->mask = sz - 1;
	return SC_OK;
}

int32_t tok_vocab_find(const tok_vocab *v, const char *s, size_t n)
{
	size_t i;
	if (!v->slot)
		return -1;
	for (i = hash_bytes(s, n) & v->mask;; i = (i + 1) & v->mask) {
		int32_t id = v->slot[i];
		if (id < 0)
			return -1;
		if (v->len[id] == n && !memcmp(v->str[id], s, n))
			return id;
	}
}

sc_err tok_vocab_set(tok_vocab *v, int32_t id, const char *s, size_t n)
{
	size_t i;
	if (id < 0 || id >= v->n_ids)
		return sc_errf(SC_EFORMAT, "token id %d out of range", id);
	if (v->str[id])
		return sc_errf(SC_EFORMAT, "token id %d is given to both '%s' and '%.*s'", id,
			       v->str[id], (int)n, s);
	if (n > UINT32_MAX || !(v->str[id] = malloc(n + 1)))
		return sc_errf(SC_ENOMEM, "out of memory for a token");
	memcpy(v->str[id], s, n);
	v->str[id][n] = '\0';
	v->len[id] = (uint32_t)n;
	for (i = hash_bytes(s, n) & v->mask; v->slot[i] >= 0; i = (i + 1) & v->mask)
		;
	v->slot[i] = id;
	return SC_OK;
}

void tok_vocab_free(tok_vocab *v)
{
	if (v->str)
		for (int32_t i = 0; i < v->n_ids; i++)
			free(v->str[i]);
	free(v->str);
	free(v->len);
	free(v->slot);
	memset(v, 0, sizeof(*v));
}

static uint64_t pair_hash(uint64_t k)
{
	k *= 0x9E3779B97F4A7C15ull;
	return k ^ (k >> 29);
}

static int merge_find(const tok_merges *mg, int32_t a, int32_t b, int32_t *rank, int32_t *new_id)
{
	uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
	for (size_t i = pair_hash(key) & mg->mask;; i = (i + 1) & mg->mask) {
		if (mg->key[i] == UINT64_MAX)
			return 0;
		if (mg->key[i] == key) {
			*rank = mg->rank[i];
			*new_id = mg->new_id[i];
			return 1;
		}
	}
}

sc_err tok_bpe_merges_init(tok_bpe *m, size_t count)
{
	size_t sz = table_size(count);
	tok_merges *mg = &m->merges;
	mg->key = malloc(sz * sizeof(*mg->key));
	mg->rank = malloc(sz * sizeof(*mg->rank));
	mg->new_id = malloc(sz * sizeof(*mg->new_id));
	if (!mg->key || !mg->rank || !mg->new_id)
		return sc_errf(SC_ENOMEM, "out of memory for %zu merges", count);
	memset(mg->key, 0xFF, sz * sizeof(*mg->key));
	mg->mask = sz - 1;
	return SC_OK;
}

sc_err tok_bpe_add_merge(tok_bpe *m, int32_t rank, const char *a, size_t na, const char *b,
			 size_t nb)
{
	int32_t ia = tok_vocab_find(&m->vocab, a, na), ib = tok_vocab_find(&m->vocab, b, nb);
	size_t skip = m->prefix ? strlen(m->prefix) : 0;
	tok_merges *mg = &m->merges;
	char stack[256], *joined = stack;
	int32_t inew;
	uint64_t key;
	size_t i;

	if (ia < 0 || ib < 0)
		return sc_errf(SC_EFORMAT, "merge %d: '%.*s' is not in the vocabulary", rank,
			       (int)(ia < 0 ? na : nb), ia < 0 ? a : b);
	/* With a continuing_subword_prefix, b's prefix is dropped from the join. */
	if (skip && nb >= skip && !memcmp(b, m->prefix, skip)) {
		b += skip;
		nb -= skip;
	}
	if (na + nb > sizeof(stack) && !(joined = malloc(na + nb)))
		return sc_errf(SC_ENOMEM, "out of memory");
	memcpy(joined, a, na);
	memcpy(joined + na, b, nb);
	inew = tok_vocab_find(&m->vocab, joined, na + nb);
	if (joined != stack)
		free(joined);
	if (inew < 0)
		return sc_errf(SC_EFORMAT, "merge %d: '%.*s%.*s' is not in the vocabulary", rank,
			       (int)na, a, (int)nb, b);
	key = (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib;
	for (i = pair_hash(key) & mg->mask; mg->key[i] != UINT64_MAX && mg->key[i] != key;
	     i = (i + 1) & mg->mask)
		;
	mg->key[i] = key; /* a repeated pair: the later rank wins, as in HF */
	mg->rank[i] = rank;
	mg->new_id[i] = inew;
	return SC_OK;
}

sc_err tok_bpe_finish(tok_bpe *m)
{
	char name[8];
	for (int b = 0; b < 256; b++) {
		snprintf(name, sizeof(name), "<0x%02X>", b);
		m->byte_id[b] = tok_vocab_find(&m->vocab, name, 6);
	}
	if (m->prefix || m->suffix)
		return SC_OK;
	if (!(m->cp_id = malloc(0x10000 * sizeof(*m->cp_id))))
		return sc_errf(SC_ENOMEM, "out of memory");
	/* cp_id[cp] = the id of cp's UTF-8 encoding, from one pass over the
	 * vocabulary rather than 65,536 lookups: an entry counts when it is
	 * exactly the encoding tok_utf8_put writes for a code point below
	 * U+10000 that is not a surrogate (entries are unique, so this is
	 * what a lookup per code point would find). */
	for (uint32_t cp = 0; cp < 0x10000; cp++)
		m->cp_id[cp] = -1;
	for (int32_t id = 0; id < m->vocab.n_ids; id++) {
		const unsigned char *u = (const unsigned char *)m->vocab.str[id];
		size_t n = m->vocab.len[id], want, adv;
		char again[4];
		uint32_t cp;
		if (!u || n == 0 || n > 3)
			continue;
		want = u[0] < 0x80 ? 1 : u[0] < 0xC0 ? 0 : u[0] < 0xE0 ? 2 : u[0] < 0xF0 ? 3 : 4;
		if (want != n)
			continue;
		cp = tok_utf8_cp((const char *)u, &adv);
		if (cp >= 0x10000 || (cp >= 0xD800 && cp < 0xE000) ||
		    tok_utf8_put(again, cp) != n || memcmp(again, u, n) != 0)
			continue;
		m->cp_id[cp] = id;
	}
	return SC_OK;
}

void tok_bpe_free(tok_bpe *m)
{
	tok_vocab_free(&m->vocab);
	free(m->merges.key);
	free(m->merges.rank);
	free(m->merges.new_id);
	free(m->prefix);
	free(m->suffix);
	free(m->cp_id);
	memset(m, 0, sizeof(*m));
}

/* ---- one word ---- */

typedef struct {
	int32_t rank, pos, new_id;
} heap_item;

typedef struct {
	uint64_t hash;
	size_t key_off, ids_off;
	uint32_t key_len, n_ids;
} cache_entry;

#define CACHE_MAX (1u << 20)

struct tok_scratch {
	int32_t *id, *prev, *next, *len; /* (cap) the word's symbols */
	heap_item *heap;                 /* (cap) */
	size_t cap;
	/* word cache: slot -> entry index or -1 */
	int32_t *slot;
	size_t mask;
	cache_entry *ent;
	size_t n_ent;
	tok_buf keys;
	tok_ids vals;
};

tok_scratch *tok_scratch_new(void)
{
	return calloc(1, sizeof(tok_scratch));
}

void tok_scratch_free(tok_scratch *s)
{
	if (!s)
		return;
	free(s->id);
	free(s->prev);
	free(s->next);
	free(s->len);
	free(s->heap);
	free(s->slot);
	free(s->ent);
	free(s->keys.p);
	free(s->vals.v);
	free(s);
}

/* Room for a word of n symbols. What s holds is kept: initial_symbols
 * grows s in the middle of a word (byte fallback), with symbols written. The
 * heap holds up to twice as many entries as symbols (a merge pops one pair
 * and may push two). */
static sc_err scratch_reserve(tok_scratch *s, size_t n)
{
	size_t cap = s->cap ? s->cap : 64;
	int32_t *id, *prev, *next, *len;
	heap_item *heap;

	if (n <= s->cap)
		return SC_OK;
	while (cap < n)
		cap *= 2;
	if ((id = realloc(s->id, cap * sizeof(*id))))
		s->id = id;
	if ((prev = realloc(s->prev, cap * sizeof(*prev))))
		s->prev = prev;
	if ((next = realloc(s->next, cap * sizeof(*next))))
		s->next = next;
	if ((len = realloc(s->len, cap * sizeof(*len))))
		s->len = len;
	if ((heap = realloc(s->heap, 2 * cap * sizeof(*heap))))
		s->heap = heap;
	if (!id || !prev || !next || !len || !heap) /* each kept at its old size */
		return sc_errf(SC_ENOMEM, "out of memory for a word of %zu symbols", n);
	s->cap = cap;
	return SC_OK;
}

static int heap_less(const heap_item *a, const heap_item *b)
{
	return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(heap_item *h, size_t *n, heap_item it)
{
	size_t i = (*n)++;
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (!heap_less(&it, &h[p]))
			break;
		h[i] = h[p];
		i = p;
	}
	h[i] = it;
}

static heap_item heap_pop(heap_item *h, size_t *n)
{
	heap_item top = h[0], last = h[--*n];
	size_t i = 0;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= *n)
			break;
		if (c + 1 < *n && heap_less(&h[c + 1], &h[c]))
			c++;
		if (!heap_less(&h[c], &last))
			break;
		h[i] = h[c];
		i = c;
	}
	if (*n)
		h[i] = last;
	return top;
}

/* Symbols of w, before any merge, as HF's BPE::merge_word builds them. */
static sc_err initial_symbols(const tok_bpe *m, tok_scratch *s, const char *w, size_t n,
			      size_t *count)
{
	size_t k = 0, i = 0;
	int32_t unk = -1, unk_len = 0;
	char stack[64];

	SC_TRY(scratch_reserve(s, n + 1));
	while (i < n) {
		size_t adv, bl;
		uint32_t cp = tok_utf8_cp(w + i, &adv);
		int32_t id = -1;
		const char *key = w + i;
		size_t keylen = adv;
		int first = i == 0, last = i + adv == n;

		bl = adv;
		if (m->cp_id && cp < 0x10000) {
			id = m->cp_id[cp];
		} else if (m->cp_id) {
			id = tok_vocab_find(&m->vocab, key, keylen);
		} else {
			size_t np = (!first && m->prefix) ? strlen(m->prefix) : 0;
			size_t ns = (last && m->suffix) ? strlen(m->suffix) : 0;
			if (np + adv + ns > sizeof(stack))
				return sc_errf(SC_ENOTSUP, "BPE subword prefix or suffix too long");
			if (np) /* no prefix or suffix: NULL, which memcpy may not take */
				memcpy(stack, m->prefix, np);
			memcpy(stack + np, w + i, adv);
			if (ns)
				memcpy(stack + np + adv, m->suffix, ns);
			key = stack;
			keylen = np + adv + ns;
			id = tok_vocab_find(&m->vocab, key, keylen);
		}
		i += adv;
		if (id >= 0) {
			if (unk >= 0) {
				s->id[k] = unk;
				s->len[k++] = unk_len;
				unk = -1;
			}
			s->id[k] = id;
			s->len[k++] = (int32_t)bl;
			continue;
		}
		if (m->byte_fallback) {
			size_t j;
			for (j = 0; j < keylen && m->byte_id[(unsigned char)key[j]] >= 0; j++)
				;
			if (j == keylen) {
				SC_TRY(scratch_reserve(s, k + keylen + (n - i) + 2));
				for (j = 0; j < keylen; j++) {
					s->id[k] = m->byte_id[(unsigned char)key[j]];
					s->len[k++] = 1;
				}
				continue;
			}
		}
		if (m->unk_id >= 0) {
			if (unk >= 0 && m->fuse_unk) {
				unk_len += (int32_t)bl;
			} else {
				if (unk >= 0) {
					s->id[k] = unk;
					s->len[k++] = unk_len;
				}
				unk = m->unk_id;
				unk_len = (int32_t)bl;
			}
		}
	}
	if (unk >= 0) {
		s->id[k] = unk;
		s->len[k++] = unk_len;
	}
	*count = k;
	return SC_OK;
}

static sc_err merge_word(const tok_bpe *m, tok_scratch *s, const char *w, size_t n, tok_ids *out)
{
	size_t k = 0, hn = 0;
	int32_t rank, new_id;

	SC_TRY(initial_symbols(m, s, w, n, &k));
	for (size_t i = 0; i < k; i++) {
		s->prev[i] = (int32_t)i - 1;
		s->next[i] = i + 1 < k ? (int32_t)i + 1 : -1;
	}
	for (size_t i = 0; i + 1 < k; i++)
		if (merge_find(&m->merges, s->id[i], s->id[i + 1], &rank, &new_id))
			heap_push(s->heap, &hn, (heap_item){ rank, (int32_t)i, new_id });
	while (hn) {
		heap_item top = heap_pop(s->heap, &hn);
		int32_t p = top.pos, nx, r;
		if (s->len[p] == 0 || (nx = s->next[p]) < 0)
			continue;
		/* a stale entry: the pair at p changed since it was queued */
		if (!merge_find(&m->merges, s->id[p], s->id[nx], &rank, &new_id) ||
		    new_id != top.new_id)
			continue;
		s->id[p] = top.new_id;
		s->len[p] += s->len[nx];
		s->len[nx] = 0;
		r = s->next[nx];
		s->next[p] = r;
		if (r >= 0)
			s->prev[r] = p;
		if (s->prev[p] >= 0 &&
		    merge_find(&m->merges, s->id[s->prev[p]], s->id[p], &rank, &new_id))
			heap_push(s->heap, &hn, (heap_item){ rank, s->prev[p], new_id });
		if (r >= 0 && merge_find(&m->merges, s->id[p], s->id[r], &rank, &new_id))
			heap_push(s->heap, &hn, (heap_item){ rank, p, new_id });
	}
	for (int32_t i = k ? 0 : -1; i >= 0; i = s->next[i])
		SC_TRY(tok_ids_put(out, &s->id[i], 1));
	return SC_OK;
}

static sc_err cache_grow(tok_scratch *s)
{
	size_t sz = s->mask ? (s->mask + 1) * 2 : 1024;
	int32_t *slot = malloc(sz * sizeof(*slot));
	cache_entry *ent = realloc(s->ent, sz / 2 * sizeof(*ent));
	if (!slot || !ent) {
		free(slot);
		if (ent)
			s->ent = ent;
		return sc_errf(SC_ENOMEM, "out of memory for the word cache");
	}
	s->ent = ent;
	memset(slot, 0xFF, sz * sizeof(*slot));
	for (size_t e = 0; e < s->n_ent; e++) {
		size_t i = s->ent[e].hash & (sz - 1);
		while (slot[i] >= 0)
			i = (i + 1) & (sz - 1);
		slot[i] = (int32_t)e;
	}
	free(s->slot);
	s->slot = slot;
	s->mask = sz - 1;
	return SC_OK;
}

sc_err tok_bpe_word(const tok_bpe *m, tok_scratch *s, const char *w, size_t n, tok_ids *out)
{
	uint64_t h;
	size_t i, first = out->n;
	int32_t id;

	if (n == 0)
		return SC_OK;
	if (m->ignore_merges && (id = tok_vocab_find(&m->vocab, w, n)) >= 0)
		return tok_ids_put(out, &id, 1);
	if (n == 1 && m->cp_id && (id = m->cp_id[(unsigned char)w[0]]) >= 0)
		return tok_ids_put(out, &id, 1);
	if (!s->mask)
		SC_TRY(cache_grow(s));
	h = hash_bytes(w, n);
	for (i = h & s->mask; s->slot[i] >= 0; i = (i + 1) & s->mask) {
		const cache_entry *e = &s->ent[s->slot[i]];
		if (e->hash == h && e->key_len == n && !memcmp(s->keys.p + e->key_off, w, n))
			/* A word may map to no id (vals.v NULL while all are empty). */
			return e->n_ids ? tok_ids_put(out, s->vals.v + e->ids_off, e->n_ids)
					: SC_OK;
	}
	SC_TRY(merge_word(m, s, w, n, out));
	if (s->n_ent >= CACHE_MAX || n > 256)
		return SC_OK;
	if (s->n_ent + 1 > (s->mask + 1) / 2) {
		SC_TRY(cache_grow(s));
		for (i = h & s->mask; s->slot[i] >= 0; i = (i + 1) & s->mask)
			;
	}
	s->ent[s->n_ent] =
	    (cache_entry){ h, s->keys.len, s->vals.n, (uint32_t)n, (uint32_t)(out->n - first) };
	SC_TRY(tok_buf_put(&s->keys, w, n));
	if (out->n > first)
		SC_TRY(tok_ids_put(&s->vals, out->v + first, out->n - first));
	s->slot[i] = (int32_t)s->n_ent++;
	return SC_OK;
}
