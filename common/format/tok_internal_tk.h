/* tok_internal_tk.h — struct sc_tokenizer, shared by tokenizer.c (loading)
 * and tok_encode.c (encode, decode). Not public. */
#ifndef SC_TOK_INTERNAL_TK_H
#define SC_TOK_INTERNAL_TK_H

#include "sc_tokenizer.h"
#include "tok_impl.h"

typedef struct tok_added {
	int32_t id;
	char *content; /* owned */
	size_t len;
	int single_word, lstrip, rstrip, normalized, special;
	char *pattern; /* owned: what is matched (content, normalized when normalized) */
	size_t plen;
} tok_added;

/* The added tokens matched in one pass: indices into added, longest first,
 * with the first bytes any of them starts with. */
typedef struct tok_match_set {
	int32_t *idx; /* (n) owned */
	size_t n;
	uint8_t first[256];
} tok_match_set;

struct sc_tokenizer {
	tok_bpe bpe;
	tok_norm *norm;   /* NULL: none */
	tok_pretok *pre;  /* NULL: none */
	tok_decoder *dec; /* NULL: tokens joined with " " */
	tok_added *added; /* (n_added) */
	size_t n_added;
	tok_match_set raw_set, norm_set; /* normalized = false / true */
	int32_t *added_of;               /* (vocab_size) index into added, or -1 */
	int32_t *pre_ids, *post_ids;     /* (n_pre), (n_post): the post-processor's */
	size_t n_pre, n_post;
	int vocab_size;
	uint8_t digest[32]; /* SHA-256 of the file(s) it was loaded from */
};

#endif
