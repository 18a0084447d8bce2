/* tok_utf8.c — buffers, UTF-8 helpers, regex compilation and the byte-level
 * alphabet shared by the tokenizer's files. */
#include <stdlib.h>
#include <string.h>

#include "sc_utf8.h"
#include "tok_impl.h"

sc_err tok_buf_reserve(tok_buf *b, size_t extra)
{
	size_t cap;
	char *p;

	if (b->len + extra + 1 <= b->cap)
		return SC_OK;
	cap = b->cap ? b->cap : 64;
	while (cap < b->len + extra + 1)
		cap *= 2;
	if (!(p = realloc(b->p, cap)))
		return sc_errf(SC_ENOMEM, "out of memory for a %zu-byte buffer", cap);
	b->p = p;
	b->cap = cap;
	return SC_OK;
}

sc_err tok_buf_put(tok_buf *b, const void *s, size_t n)
{
	SC_TRY(tok_buf_reserve(b, n));
	if (n)
		memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
	return SC_OK;
}

sc_err tok_ids_put(tok_ids *a, const int32_t *ids, size_t n)
{
	if (!n) /* nothing to add (ids may be NULL) */
		return SC_OK;
	if (a->n + n > a->cap) {
		size_t cap = a->cap ? a->cap : 64;
		int32_t *v;
		while (cap < a->n + n)
			cap *= 2;
		if (!(v = realloc(a->v, cap * sizeof(*v))))
			return sc_errf(SC_ENOMEM, "out of memory for %zu ids", cap);
		a->v = v;
		a->cap = cap;
	}
	memcpy(a->v + a->n, ids, n * sizeof(*ids));
	a->n += n;
	return SC_OK;
}

/* Bytes of the longest prefix of s that could begin a valid sequence
 * (Unicode's "maximal subpart"); *full = that prefix is a whole sequence. */
static size_t utf8_prefix(const unsigned char *s, size_t n, int *full)
{
	unsigned char c = s[0], lo = 0x80, hi = 0xBF;
	size_t need, i;

	*full = 0;
	if (c < 0x80) {
		*full = 1;
		return 1;
	}
	if (c >= 0xC2 && c <= 0xDF)
		need = 2;
	else if (c >= 0xE0 && c <= 0xEF)
		need = 3;
	else if (c >= 0xF0 && c <= 0xF4)
		need = 4;
	else
		return 1;
	if (c == 0xE0)
		lo = 0xA0;
	else if (c == 0xED)
		hi = 0x9F;
	else if (c == 0xF0)
		lo = 0x90;
	else if (c == 0xF4)
		hi = 0x8F;
	for (i = 1; i < need && i < n; i++) {
		unsigned char b = s[i];
		if (b < (i == 1 ? lo : 0x80) || b > (i == 1 ? hi : 0xBF))
			return i;
	}
	*full = i == need;
	return i;
}

size_t sc_utf8_len(const char *s, size_t n)
{
	int full;
	size_t k = n ? utf8_prefix((const unsigned char *)s, n, &full) : 0;
	return n && full ? k : 0;
}

sc_err tok_utf8_lossy(tok_buf *out, const char *s, size_t n, int *changed)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0, run = 0;

	*changed = 0;
	SC_TRY(tok_buf_reserve(out, n));
	while (i < n) {
		int full;
		size_t k;
		if (u[i] < 0x80) {
			i++;
			continue;
		}
		k = utf8_prefix(u + i, n - i, &full);
		if (full) {
			i += k;
			continue;
		}
		SC_TRY(tok_buf_put(out, s + run, i - run));
		SC_TRY(tok_buf_put(out, "\xEF\xBF\xBD", 3));
		*changed = 1;
		i += k;
		run = i;
	}
	return tok_buf_put(out, s + run, n - run);
}

char *sc_utf8_lossy(const char *s, size_t n, size_t *out_len)
{
	tok_buf b = { 0 };
	int changed;
	if (tok_utf8_lossy(&b, s, n, &changed) || (!b.p && tok_buf_put(&b, "", 0))) {
		free(b.p);
		return NULL;
	}
	if (out_len)
		*out_len = b.len;
	return b.p;
}

uint32_t tok_utf8_cp(const char *s, size_t *adv)
{
	const unsigned char *u = (const unsigned char *)s;
	if (u[0] < 0x80) {
		*adv = 1;
		return u[0];
	}
	if (u[0] < 0xE0) {
		*adv = 2;
		return (uint32_t)(u[0] & 0x1F) << 6 | (u[1] & 0x3F);
	}
	if (u[0] < 0xF0) {
		*adv = 3;
		return (uint32_t)(u[0] & 0x0F) << 12 | (uint32_t)(u[1] & 0x3F) << 6 | (u[2] & 0x3F);
	}
	*adv = 4;
	return (uint32_t)(u[0] & 0x07) << 18 | (uint32_t)(u[1] & 0x3F) << 12 |
	       (uint32_t)(u[2] & 0x3F) << 6 | (u[3] & 0x3F);
}

uint32_t tok_utf8_cp_n(const char *s, size_t n, size_t *adv)
{
	if (sc_utf8_len(s, n) == 0) {
		*adv = 1;
		return TOK_NOT_CP;
	}
	return tok_utf8_cp(s, adv);
}

size_t tok_utf8_put(char *out, uint32_t cp)
{
	unsigned char *o = (unsigned char *)out;
	if (cp < 0x80) {
		o[0] = (unsigned char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (unsigned char)(0xC0 | cp >> 6);
		o[1] = (unsigned char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (unsigned char)(0xE0 | cp >> 12);
		o[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
		o[2] = (unsigned char)(0x80 | (cp & 0x3F));
		return 3;
	}
	o[0] = (unsigned char)(0xF0 | cp >> 18);
	o[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
	o[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
	o[3] = (unsigned char)(0x80 | (cp & 0x3F));
	return 4;
}

int tok_is_space(uint32_t cp)
{
	return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 ||
	       cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
	       cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

/* Unicode White_Space, what Oniguruma's and Rust's \s mean; PCRE2's \s
 * also takes U+180E. */
#define WHITE_SPACE                                                                                \
	"\\t-\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}"      \
	"\\x{205F}\\x{3000}"

/* Rewrites \s and \S (outside and, for \s, inside classes) to WHITE_SPACE. */
static sc_err rewrite_space(tok_buf *out, const char *p, size_t n)
{
	int in_class = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\\' && i + 1 < n) {
			char c = p[i + 1];
			if (c == 's' || (c == 'S' && !in_class)) {
				if (!in_class)
					SC_TRY(tok_buf_put(out, c == 's' ? "[" : "[^",
							   c == 's' ? 1 : 2));
				SC_TRY(tok_buf_put(out, WHITE_SPACE, strlen(WHITE_SPACE)));
				if (!in_class)
					SC_TRY(tok_buf_put(out, "]", 1));
			} else {
				SC_TRY(tok_buf_put(out, p + i, 2));
			}
			i++;
			continue;
		}
		if (p[i] == '[' && !in_class)
			in_class = 1;
		else if (p[i] == ']' && in_class)
			in_class = 0;
		SC_TRY(tok_buf_put(out, p + i, 1));
	}
	return SC_OK;
}

sc_err tok_re_compile(pcre2_code **out, const char *pattern, size_t len, const char *what)
{
	int err;
	PCRE2_SIZE at;
	pcre2_code *re;
	tok_buf b = { 0 };
	sc_err rc;

	*out = NULL;
	if ((rc = rewrite_space(&b, pattern, len))) {
		free(b.p);
		return rc;
	}
	/* The pattern is the file's: PCRE2 checks its UTF-8 (invalid UTF-8
	 * under PCRE2_NO_UTF_CHECK crashed the compiler; tests/fuzz). */
	re = pcre2_compile((PCRE2_SPTR)(b.p ? b.p : ""), b.len, PCRE2_UTF | PCRE2_UCP, &err, &at,
			   NULL);
	free(b.p);
	if (!re) {
		PCRE2_UCHAR msg[256];
		pcre2_get_error_message(err, msg, sizeof(msg));
		return sc_errf(SC_EFORMAT, "%s: regex /%.*s/ near offset %zu: %s", what, (int)len,
			       pattern, (size_t)at, (const char *)msg);
	}
	pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* best effort: the interpreter otherwise */
	*out = re;
	return SC_OK;
}

/* GPT-2's byte -> printable code point map: printable Latin-1 bytes stand for
 * themselves, the others for 256, 257, ... in byte order. */
static uint32_t byte_char_table[256];
static int32_t char_byte_table[324];

static void byte_level_init(void)
{
	uint32_t next = 256;
	for (int b = 0; b < 256; b++) {
		int keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
		byte_char_table[b] = keep ? (uint32_t)b : next++;
	}
	for (int c = 0; c < 324; c++)
		char_byte_table[c] = -1;
	for (int b = 0; b < 256; b++)
		char_byte_table[byte_char_table[b]] = b;
}

#include <pthread.h>
static pthread_once_t byte_level_once = PTHREAD_ONCE_INIT;

uint32_t tok_byte_char(unsigned char b)
{
	pthread_once(&byte_level_once, byte_level_init);
	return byte_char_table[b];
}

int tok_char_byte(uint32_t cp)
{
	pthread_once(&byte_level_once, byte_level_init);
	return cp < 324 ? char_byte_table[cp] : -1;
}
