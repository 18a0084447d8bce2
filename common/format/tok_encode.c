/* tok_encode.c — encoding (added tokens, normalizer, pre-tokenizer, model,
 * post-processor) and decoding, over a loaded sc_tokenizer. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tok_internal_tk.h"

typedef struct enc {
	const sc_tokenizer *t;
	tok_scratch *s;
	tok_ids out;
	tok_buf norm; /* the normalized text of the current piece */
} enc;

static sc_err on_word(void *ctx, const char *w, size_t n)
{
	enc *e = ctx;
	return tok_bpe_word(&e->t->bpe, e->s, w, n, &e->out);
}

/* Rust regex's \w: alphabetic, marks, decimal digits, connector punctuation. */
static int is_word_char(uint32_t cp)
{
	switch (utf8proc_category((utf8proc_int32_t)cp)) {
	case UTF8PROC_CATEGORY_LU:
	case UTF8PROC_CATEGORY_LL:
	case UTF8PROC_CATEGORY_LT:
	case UTF8PROC_CATEGORY_LM:
	case UTF8PROC_CATEGORY_LO:
	case UTF8PROC_CATEGORY_NL:
	case UTF8PROC_CATEGORY_MN:
	case UTF8PROC_CATEGORY_MC:
	case UTF8PROC_CATEGORY_ME:
	case UTF8PROC_CATEGORY_ND:
	case UTF8PROC_CATEGORY_PC: return 1;
	default: return cp == 0x200C || cp == 0x200D;
	}
}

static size_t char_before(const char *s, size_t at)
{
	size_t k = at - 1;
	while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80)
		k--;
	return k;
}

/* The leftmost, then longest, token of set in s[from..n). */
static int find_added(const sc_tokenizer *t, const tok_match_set *set, const char *s, size_t n,
		      size_t from, size_t *ms, int32_t *which)
{
	for (size_t i = from; i < n; i++) {
		if (!set->first[(unsigned char)s[i]])
			continue;
		for (size_t k = 0; k < set->n; k++) {
			const tok_added *a = &t->added[set->idx[k]];
			if (a->plen <= n - i && !memcmp(s + i, a->pattern, a->plen)) {
				*ms = i;
				*which = set->idx[k];
				return 1;
			}
		}
	}
	return 0;
}

static sc_err text_piece(enc *e, int stage, const char *s, size_t n, int at_start);

/* Cuts the tokens of set out of s (as HF's AddedVocabulary::find_matches)
 * and passes the text between them to text_piece. */
static sc_err split_added(enc *e, const tok_match_set *set, int stage, const char *s, size_t n,
			  int at_start)
{
	const sc_tokenizer *t = e->t;
	size_t done = 0, from = 0, ms, adv;
	int32_t k;

	while (set->n && find_added(t, set, s, n, from, &ms, &k)) {
		const tok_added *a = &t->added[k];
		size_t st = ms, sp = ms + a->plen;
		from = sp;
		if (a->single_word &&
		    ((ms > 0 && is_word_char(tok_utf8_cp(s + char_before(s, ms), &adv))) ||
		     (sp < n && is_word_char(tok_utf8_cp(s + sp, &adv)))))
			continue;
		if (a->lstrip) {
			while (st > 0 && tok_is_space(tok_utf8_cp(s + char_before(s, st), &adv)))
				st = char_before(s, st);
			st = st > done ? st : done;
		}
		if (a->rstrip)
			while (sp < n && tok_is_space(tok_utf8_cp(s + sp, &adv)))
				sp += adv;
		if (done < st)
			SC_TRY(text_piece(e, stage, s + done, st - done, at_start && done == 0));
		SC_TRY(tok_ids_put(&e->out, &a->id, 1));
		done = sp;
	}
	return done < n ? text_piece(e, stage, s + done, n - done, at_start && done == 0) : SC_OK;
}

static sc_err text_piece(enc *e, int stage, const char *s, size_t n, int at_start)
{
	const sc_tokenizer *t = e->t;
	if (stage == 1)
		return tok_pretok_run(t->pre, s, n, at_start, on_word, e);
	if (!t->norm)
		return split_added(e, &t->norm_set, 1, s, n, at_start);
	e->norm.len = 0;
	SC_TRY(tok_norm_apply(t->norm, s, n, &e->norm));
	/* the normalized text is used up before the next piece is normalized */
	return split_added(e, &t->norm_set, 1, e->norm.p ? e->norm.p : "", e->norm.len, at_start);
}

sc_err sc_tokenizer_encode(const sc_tokenizer *t, const char *text, size_t len, int add_special,
			   int32_t **ids, size_t *n)
{
	enc e = { .t = t };
	tok_buf clean = { 0 };
	int changed;
	sc_err rc;

	*ids = NULL;
	*n = 0;
	if (!(e.s = tok_scratch_new()))
		return sc_errf(SC_ENOMEM, "out of memory");
	rc = tok_utf8_lossy(&clean, text, len, &changed);
	if (!rc && add_special)
		rc = tok_ids_put(&e.out, t->pre_ids, t->n_pre);
	if (!rc)
		rc = split_added(&e, &t->raw_set, 0, clean.p, clean.len, 1);
	if (!rc && add_special)
		rc = tok_ids_put(&e.out, t->post_ids, t->n_post);
	if (!rc && !e.out.v && !(e.out.v = malloc(sizeof(int32_t))))
		rc = sc_errf(SC_ENOMEM, "out of memory");
	tok_scratch_free(e.s);
	free(clean.p);
	free(e.norm.p);
	if (rc) {
		free(e.out.v);
		return rc;
	}
	*ids = e.out.v;
	*n = e.out.n;
	return SC_OK;
}

sc_err sc_tokenizer_decode(const sc_tokenizer *t, const int32_t *ids, size_t n, int skip_special,
			   char **text, size_t *len)
{
	size_t *off = malloc((n + 1) * sizeof(*off)), *lens = malloc((n + 1) * sizeof(*lens));
	tok_buf all = { 0 }, out = { 0 };
	size_t count = 0;
	sc_err rc = SC_OK;

	*text = NULL;
	*len = 0;
	if (!off || !lens)
		rc = sc_errf(SC_ENOMEM, "out of memory for %zu ids", n);
	for (size_t i = 0; !rc && i < n; i++) {
		const char *s = NULL;
		size_t l = 0;
		if (ids[i] < 0 || ids[i] >= t->vocab_size)
			continue;
		if (t->added_of[ids[i]] >= 0) {
			const tok_added *a = &t->added[t->added_of[ids[i]]];
			if (skip_special && a->special)
				continue;
			s = a->content;
			l = a->len;
		} else if (ids[i] < t->bpe.vocab.n_ids && t->bpe.vocab.str[ids[i]]) {
			s = t->bpe.vocab.str[ids[i]];
			l = t->bpe.vocab.len[ids[i]];
		}
		if (!s)
			continue;
		off[count] = all.len;
		lens[count++] = l;
		rc = tok_buf_put(&all, s, l);
	}
	if (!rc)
		rc = tok_decoder_run(t->dec, all.p ? all.p : "", off, lens, count, &out);
	free(all.p);
	free(off);
	free(lens);
	if (rc) {
		free(out.p);
		return rc;
	}
	*text = out.p;
	*len = out.len;
	return SC_OK;
}

int sc_tokenizer_vocab_size(const sc_tokenizer *t)
{
	return t->vocab_size;
}

int sc_tokenizer_token_id(const sc_tokenizer *t, const char *token)
{
	for (size_t i = 0; i < t->n_added; i++)
		if (!strcmp(t->added[i].content, token))
			return t->added[i].id;
	return tok_vocab_find(&t->bpe.vocab, token, strlen(token));
}

int sc_tokenizer_bos_id(const sc_tokenizer *t)
{
	return t->n_pre ? t->pre_ids[0] : -1;
}

int sc_tokenizer_eos_id(const sc_tokenizer *t)
{
	return t->n_post ? t->post_ids[t->n_post - 1] : -1;
}
