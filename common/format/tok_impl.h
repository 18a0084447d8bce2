/* tok_impl.h — the tokenizer's parts, shared by tokenizer.c, tok_bpe.c,
 * tok_pretok.c, tok_norm.c, tok_decode.c and tok_utf8.c. Not public: the
 * interface is sc_tokenizer.h. Everything here is immutable after load
 * except the tok_buf / tok_ids / tok_scratch values an encode call owns. */
#ifndef SC_TOK_IMPL_H
#define SC_TOK_IMPL_H

#include <stddef.h>
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cJSON.h>
#include <pcre2.h>

#include "sc_err.h"

/* A growable byte buffer; p owned. */
typedef struct tok_buf {
	char *p;
	size_t len, cap;
} tok_buf;
sc_err tok_buf_reserve(tok_buf *b, size_t extra);
sc_err tok_buf_put(tok_buf *b, const void *s, size_t n);

/* A growable id array; v owned. */
typedef struct tok_ids {
	int32_t *v;
	size_t n, cap;
} tok_ids;
sc_err tok_ids_put(tok_ids *a, const int32_t *ids, size_t n);

/* ---- UTF-8 (tok_utf8.c) ---- */
/* Validity of one sequence: sc_utf8_len (sc_utf8.h). */
/* Appends s with each maximal invalid subsequence replaced by U+FFFD (as
 * Rust's from_utf8_lossy). Returns 1 in *changed when something was. */
sc_err tok_utf8_lossy(tok_buf *out, const char *s, size_t n, int *changed);
/* Decodes the code point at s (valid UTF-8); *adv = its byte length. */
uint32_t tok_utf8_cp(const char *s, size_t *adv);
/* The same on bytes that may not be UTF-8 (n > 0 left at s): where no valid
 * sequence begins, TOK_NOT_CP (no code point's value) and *adv = 1. For
 * token pieces and configuration strings, which nothing has validated. */
#define TOK_NOT_CP 0xFFFFFFFFu
uint32_t tok_utf8_cp_n(const char *s, size_t n, size_t *adv);
/* Writes cp as UTF-8 into out (4 bytes room); returns the length. */
size_t tok_utf8_put(char *out, uint32_t cp);
/* Rust's char::is_whitespace. */
int tok_is_space(uint32_t cp);

/* ---- regular expressions: PCRE2 with UTF + UCP, JIT when available ---- */
sc_err tok_re_compile(pcre2_code **out, const char *pattern, size_t len, const char *what);

/* ---- string -> id (tok_bpe.c) ---- */
typedef struct tok_vocab {
	char **str;    /* (n_ids) owned NUL-terminated strings, NULL for gaps */
	uint32_t *len; /* (n_ids) */
	int32_t n_ids;
	int32_t *slot; /* (mask + 1) ids, -1 empty: open addressing on str */
	size_t mask;
} tok_vocab;
/* Sizes v for count entries with ids < n_ids. */
sc_err tok_vocab_init(tok_vocab *v, int32_t n_ids, size_t count);
/* Adds s (copied) as id; SC_EFORMAT when id is out of range or taken. */
sc_err tok_vocab_set(tok_vocab *v, int32_t id, const char *s, size_t n);
int32_t tok_vocab_find(const tok_vocab *v, const char *s, size_t n);
void tok_vocab_free(tok_vocab *v);

/* ---- the BPE model (tok_bpe.c) ---- */
typedef struct tok_merges {
	uint64_t *key; /* (mask + 1) a << 32 | b, UINT64_MAX empty */
	int32_t *rank, *new_id;
	size_t mask;
} tok_merges;

typedef struct tok_bpe {
	tok_vocab vocab;
	tok_merges merges;
	int32_t unk_id; /* -1: none */
	int fuse_unk, byte_fallback, ignore_merges;
	char *prefix, *suffix; /* continuing_subword_prefix, end_of_word_suffix; NULL if none */
	int32_t byte_id[256];  /* id of "<0xNN>", -1 if absent */
	int32_t *cp_id;        /* (0x10000) id of a one-code-point token, -1 absent; NULL when
				  prefix or suffix is set */
} tok_bpe;

/* Parses a "model" object (or vocab + merges given as JSON arrays). */
sc_err tok_bpe_parse(tok_bpe *m, const cJSON *model);
/* Adds merge rank: a and b (token strings) -> their concatenation. */
sc_err tok_bpe_add_merge(tok_bpe *m, int32_t rank, const char *a, size_t na, const char *b,
			 size_t nb);
sc_err tok_bpe_merges_init(tok_bpe *m, size_t count);
sc_err tok_bpe_finish(tok_bpe *m);
void tok_bpe_free(tok_bpe *m);

/* Per-call state of the model step: symbol and heap arrays, word cache. */
typedef struct tok_scratch tok_scratch;
tok_scratch *tok_scratch_new(void);
void tok_scratch_free(tok_scratch *s);
/* Appends the ids of word w (n bytes, valid UTF-8) to out. */
sc_err tok_bpe_word(const tok_bpe *m, tok_scratch *s, const char *w, size_t n, tok_ids *out);

/* ---- normalizers (tok_norm.c) ---- */
typedef struct tok_norm tok_norm;
/* *out = new normalizer for j (NULL or JSON null: *out = NULL). */
sc_err tok_norm_parse(tok_norm **out, const cJSON *j);
/* Appends the normalized s to out. */
sc_err tok_norm_apply(const tok_norm *nm, const char *s, size_t n, tok_buf *out);
void tok_norm_free(tok_norm *nm);

/* ---- pre-tokenizers (tok_pretok.c) ---- */
typedef struct tok_pretok tok_pretok;
sc_err tok_pretok_parse(tok_pretok **out, const cJSON *j);
void tok_pretok_free(tok_pretok *p);
/* Called with each word, in order; at_start: the word begins the text. */
typedef sc_err (*tok_word_fn)(void *ctx, const char *w, size_t n);
/* Splits s into words (p NULL: s is one word) and calls fn with each.
 * at_start: s begins at the start of the original text. */
sc_err tok_pretok_run(const tok_pretok *p, const char *s, size_t n, int at_start, tok_word_fn fn,
		      void *ctx);

/* ---- decoders (tok_decode.c) ---- */
typedef struct tok_decoder tok_decoder;
sc_err tok_decoder_parse(tok_decoder **out, const cJSON *j);
void tok_decoder_free(tok_decoder *d);
/* Decodes the tokens (count strings in buf, at offsets off[i] with lengths
 * len[i]) into out. d NULL: joined with " ". */
sc_err tok_decoder_run(const tok_decoder *d, const char *buf, const size_t *off, const size_t *len,
		       size_t count, tok_buf *out);

/* The byte-level alphabet (GPT-2): byte -> code point, and back (-1). */
uint32_t tok_byte_char(unsigned char b);
int tok_char_byte(uint32_t cp);

#endif
