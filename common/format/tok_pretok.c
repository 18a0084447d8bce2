/* tok_pretok.c — pre-tokenizers: ByteLevel, Split, Metaspace, Digits,
 * WhitespaceSplit, Whitespace and Sequence (flattened into a list of steps).
 * A text is split step by step, depth first: each piece a step makes goes
 * through the following steps and on to the model before the next piece is
 * made, so memory stays bounded by the longest piece. */
#include <stdlib.h>
#include <string.h>

#include "tok_impl.h"

enum { P_BYTELEVEL, P_SPLIT, P_METASPACE };
enum { B_REMOVED, B_ISOLATED, B_MERGED_PREV, B_MERGED_NEXT, B_CONTIGUOUS };
enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER };

#define GPT2_PATTERN                                                                               \
	"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define SPACE_CLASS                                                                                \
	"[\\t-\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}"  \
	"\\x{3000}]"

typedef struct step {
	int kind;
	pcre2_code *re; /* owned; NULL: split on lit */
	char *lit;      /* owned literal pattern (Split String, Metaspace replacement) */
	size_t nlit;
	int behavior, invert;
	int add_prefix_space, use_regex; /* ByteLevel */
	int prepend, split;              /* Metaspace */
} step;

struct tok_pretok {
	step *steps; /* (n) */
	size_t n, cap;
};

void tok_pretok_free(tok_pretok *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n; i++) {
		pcre2_code_free(p->steps[i].re);
		free(p->steps[i].lit);
	}
	free(p->steps);
	free(p);
}

static int flag(const cJSON *j, const char *name, int dflt)
{
	const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, name);
	return cJSON_IsBool(f) ? cJSON_IsTrue(f) : dflt;
}

static sc_err add_step(tok_pretok *p, const step *s)
{
	if (p->n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 4;
		step *v = realloc(p->steps, cap * sizeof(*v));
		if (!v)
			return sc_errf(SC_ENOMEM, "out of memory");
		p->steps = v;
		p->cap = cap;
	}
	p->steps[p->n++] = *s;
	return SC_OK;
}

static sc_err parse_one(tok_pretok *p, const cJSON *j)
{
	const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
	const char *t = cJSON_IsString(type) ? type->valuestring : NULL;
	step s = { 0 };
	sc_err rc = SC_OK;

	if (!t)
		return sc_errf(SC_EFORMAT, "pre-tokenizer without a \"type\"");
	if (!strcmp(t, "Sequence")) {
		const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "pretokenizers"), *it;
		if (!cJSON_IsArray(list))
			return sc_errf(SC_EFORMAT,
				       "pre-tokenizer Sequence without \"pretokenizers\"");
		cJSON_ArrayForEach(it, list) SC_TRY(parse_one(p, it));
		return SC_OK;
	}
	if (!strcmp(t, "ByteLevel")) {
		s.kind = P_BYTELEVEL;
		s.add_prefix_space = flag(j, "add_prefix_space", 1);
		s.use_regex = flag(j, "use_regex", 1);
		if (s.use_regex)
			rc = tok_re_compile(&s.re, GPT2_PATTERN, strlen(GPT2_PATTERN),
					    "pre-tokenizer ByteLevel");
	} else if (!strcmp(t, "Split")) {
		static const char *names[] = { "Removed", "Isolated", "MergedWithPrevious",
					       "MergedWithNext", "Contiguous" };
		const cJSON *pat = cJSON_GetObjectItemCaseSensitive(j, "pattern");
		const cJSON *str = cJSON_GetObjectItemCaseSensitive(pat, "String");
		const cJSON *re = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
		const cJSON *beh = cJSON_GetObjectItemCaseSensitive(j, "behavior");
		s.kind = P_SPLIT;
		s.behavior = -1;
		for (int b = 0; b < 5 && cJSON_IsString(beh); b++)
			if (!strcmp(beh->valuestring, names[b]))
				s.behavior = b;
		if (s.behavior < 0)
			return sc_errf(SC_EFORMAT, "pre-tokenizer Split: bad \"behavior\"");
		s.invert = flag(j, "invert", 0);
		if (cJSON_IsString(re)) {
			rc = tok_re_compile(&s.re, re->valuestring, strlen(re->valuestring),
					    "pre-tokenizer Split");
		} else if (cJSON_IsString(str) && str->valuestring[0]) {
			if (!(s.lit = strdup(str->valuestring)))
				return sc_errf(SC_ENOMEM, "out of memory");
			s.nlit = strlen(s.lit);
		} else {
			return sc_errf(SC_EFORMAT, "pre-tokenizer Split without a pattern");
		}
	} else if (!strcmp(t, "Metaspace")) {
		const cJSON *rep = cJSON_GetObjectItemCaseSensitive(j, "replacement");
		const cJSON *sch = cJSON_GetObjectItemCaseSensitive(j, "prepend_scheme");
		size_t adv;
		s.kind = P_METASPACE;
		if (!cJSON_IsString(rep) || !rep->valuestring[0])
			return sc_errf(SC_EFORMAT, "pre-tokenizer Metaspace without a replacement");
		tok_utf8_cp(rep->valuestring, &adv);
		if (!(s.lit = strndup(rep->valuestring, adv)))
			return sc_errf(SC_ENOMEM, "out of memory");
		s.nlit = adv;
		s.split = flag(j, "split", 1);
		s.prepend = flag(j, "add_prefix_space", 1) ? PREPEND_ALWAYS : PREPEND_NEVER;
		if (cJSON_IsString(sch)) {
			if (!strcmp(sch->valuestring, "always"))
				s.prepend = PREPEND_ALWAYS;
			else if (!strcmp(sch->valuestring, "first"))
				s.prepend = PREPEND_FIRST;
			else if (!strcmp(sch->valuestring, "never"))
				s.prepend = PREPEND_NEVER;
			else
				rc = sc_errf(SC_EFORMAT, "Metaspace: bad prepend_scheme \"%s\"",
					     sch->valuestring);
		}
		s.behavior = B_MERGED_NEXT;
	} else if (!strcmp(t, "Digits")) {
		s.kind = P_SPLIT;
		s.behavior = flag(j, "individual_digits", 0) ? B_ISOLATED : B_CONTIGUOUS;
		rc = tok_re_compile(&s.re, "\\p{N}", 5, "pre-tokenizer Digits");
	} else if (!strcmp(t, "WhitespaceSplit")) {
		s.kind = P_SPLIT;
		s.behavior = B_REMOVED;
		rc = tok_re_compile(&s.re, SPACE_CLASS, strlen(SPACE_CLASS), "WhitespaceSplit");
	} else if (!strcmp(t, "Whitespace")) {
		s.kind = P_SPLIT;
		s.behavior = B_REMOVED;
		s.invert = 1;
		rc = tok_re_compile(&s.re, "\\w+|[^\\w\\s]+", 13, "pre-tokenizer Whitespace");
	} else {
		return sc_errf(SC_ENOTSUP, "pre-tokenizer type \"%s\" is not supported", t);
	}
	if (!rc)
		rc = add_step(p, &s);
	if (rc) {
		pcre2_code_free(s.re);
		free(s.lit);
	}
	return rc;
}

sc_err tok_pretok_parse(tok_pretok **out, const cJSON *j)
{
	tok_pretok *p;
	sc_err rc;

	*out = NULL;
	if (!j || cJSON_IsNull(j))
		return SC_OK;
	if (!(p = calloc(1, sizeof(*p))))
		return sc_errf(SC_ENOMEM, "out of memory");
	if ((rc = parse_one(p, j))) {
		tok_pretok_free(p);
		return rc;
	}
	*out = p;
	return SC_OK;
}

/* ---- running ---- */

typedef struct run {
	const tok_pretok *p;
	tok_word_fn fn;
	void *ctx;
	tok_buf *buf;          /* (2 * p->n) two per step */
	pcre2_match_data **md; /* (p->n) */
} run;

static sc_err run_from(run *r, size_t k, const char *s, size_t n, int at_start);

/* Iterates over s as alternating gaps and matches of step st. */
typedef struct matcher {
	const step *st;
	pcre2_match_data *md;
	const char *s;
	size_t n, prev, from, ma, mb;
	int have_match;
} matcher;

static int next_range(matcher *m, size_t *a, size_t *b, int *is_match)
{
	if (m->have_match) {
		m->have_match = 0;
		*a = m->ma;
		*b = m->mb;
		*is_match = 1;
		return 1;
	}
	while (m->from <= m->n && m->prev < m->n) {
		size_t ma, mb;
		if (m->st->re) {
			int rc = pcre2_match(m->st->re, (PCRE2_SPTR)m->s, m->n, m->from,
					     PCRE2_NO_UTF_CHECK, m->md, NULL);
			PCRE2_SIZE *ov;
			if (rc < 0)
				break;
			ov = pcre2_get_ovector_pointer(m->md);
			ma = ov[0];
			mb = ov[1];
		} else {
			const char *hit =
			    memmem(m->s + m->from, m->n - m->from, m->st->lit, m->st->nlit);
			if (!hit)
				break;
			ma = (size_t)(hit - m->s);
			mb = ma + m->st->nlit;
		}
		m->from = mb;
		if (mb == ma) { /* an empty match: step over one character */
			size_t adv = 1;
			if (mb < m->n)
				tok_utf8_cp(m->s + mb, &adv);
			m->from = mb + adv;
			continue;
		}
		if (ma > m->prev) {
			*a = m->prev;
			*b = ma;
			*is_match = 0;
			m->ma = ma;
			m->mb = mb;
			m->have_match = 1;
			m->prev = mb;
			return 1;
		}
		*a = ma;
		*b = mb;
		*is_match = 1;
		m->prev = mb;
		return 1;
	}
	if (m->prev < m->n) {
		*a = m->prev;
		*b = m->n;
		*is_match = 0;
		m->prev = m->n;
		return 1;
	}
	return 0;
}

static sc_err emit(run *r, size_t k, const char *s, size_t a, size_t b, int at_start)
{
	return b > a ? run_from(r, k, s + a, b - a, at_start && a == 0) : SC_OK;
}

/* Splits s by step k's pattern and behaviour, passing pieces to step k + 1. */
static sc_err split(run *r, size_t k, const char *s, size_t n, int at_start)
{
	const step *st = &r->p->steps[k];
	matcher m = { .st = st, .md = r->md[k], .s = s, .n = n };
	size_t a, b, pa = 0, pb = 0;
	int is_m, pm = 0, prev_m = 0, have = 0;

	while (next_range(&m, &a, &b, &is_m)) {
		is_m ^= st->invert;
		switch (st->behavior) {
		case B_REMOVED:
			if (!is_m)
				SC_TRY(emit(r, k + 1, s, a, b, at_start));
			break;
		case B_ISOLATED: SC_TRY(emit(r, k + 1, s, a, b, at_start)); break;
		case B_MERGED_PREV:
			if (is_m && !prev_m && have) {
				pb = b;
			} else {
				if (have)
					SC_TRY(emit(r, k + 1, s, pa, pb, at_start));
				pa = a;
				pb = b;
				have = 1;
			}
			break;
		case B_MERGED_NEXT:
			if (have && !is_m) {
				SC_TRY(emit(r, k + 1, s, pa, b, at_start));
				have = 0;
			} else if (is_m) {
				if (have)
					SC_TRY(emit(r, k + 1, s, pa, pb, at_start));
				pa = a;
				pb = b;
				have = 1;
			} else {
				SC_TRY(emit(r, k + 1, s, a, b, at_start));
			}
			break;
		case B_CONTIGUOUS:
			if (have && is_m == pm) {
				pb = b;
			} else {
				if (have)
					SC_TRY(emit(r, k + 1, s, pa, pb, at_start));
				pa = a;
				pb = b;
				pm = is_m;
				have = 1;
			}
			break;
		}
		prev_m = is_m;
	}
	return have ? emit(r, k + 1, s, pa, pb, at_start) : SC_OK;
}

/* Maps each byte of s to its byte-level character, then on to step k + 1. */
static sc_err byte_map(run *r, size_t k, const char *s, size_t n, int at_start)
{
	tok_buf *b = &r->buf[2 * k + 1];
	b->len = 0;
	SC_TRY(tok_buf_reserve(b, 2 * n));
	for (size_t i = 0; i < n; i++)
		b->len += tok_utf8_put(b->p + b->len, tok_byte_char((unsigned char)s[i]));
	return run_from(r, k + 1, b->p, b->len, at_start);
}

static sc_err run_from(run *r, size_t k, const char *s, size_t n, int at_start)
{
	const step *st;
	tok_buf *b;

	if (k == r->p->n)
		return r->fn(r->ctx, s, n);
	st = &r->p->steps[k];
	b = &r->buf[2 * k];
	switch (st->kind) {
	case P_SPLIT: return split(r, k, s, n, at_start);
	case P_BYTELEVEL:
		if (st->add_prefix_space && s[0] != ' ') {
			b->len = 0;
			SC_TRY(tok_buf_put(b, " ", 1));
			SC_TRY(tok_buf_put(b, s, n));
			s = b->p;
			n = b->len;
		}
		if (!st->use_regex)
			return byte_map(r, k, s, n, at_start);
		{
			matcher m = { .st = st, .md = r->md[k], .s = s, .n = n };
			size_t a, e;
			int is_m;
			while (next_range(&m, &a, &e, &is_m))
				SC_TRY(byte_map(r, k, s + a, e - a, at_start && a == 0));
		}
		return SC_OK;
	case P_METASPACE: {
		const char *hit, *at = s, *end = s + n;
		b->len = 0;
		while ((hit = memchr(at, ' ', (size_t)(end - at)))) {
			SC_TRY(tok_buf_put(b, at, (size_t)(hit - at)));
			SC_TRY(tok_buf_put(b, st->lit, st->nlit));
			at = hit + 1;
		}
		SC_TRY(tok_buf_put(b, at, (size_t)(end - at)));
		if ((st->prepend == PREPEND_ALWAYS || (st->prepend == PREPEND_FIRST && at_start)) &&
		    (b->len < st->nlit || memcmp(b->p, st->lit, st->nlit))) {
			SC_TRY(tok_buf_put(b, st->lit, st->nlit));
			memmove(b->p + st->nlit, b->p, b->len - st->nlit);
			memcpy(b->p, st->lit, st->nlit);
		}
		if (!st->split)
			return run_from(r, k + 1, b->p, b->len, at_start);
		return split(r, k, b->p, b->len, at_start);
	}
	}
	return SC_OK;
}

sc_err tok_pretok_run(const tok_pretok *p, const char *s, size_t n, int at_start, tok_word_fn fn,
		      void *ctx)
{
	run r = { .p = p, .fn = fn, .ctx = ctx };
	sc_err rc = SC_OK;

	if (n == 0)
		return SC_OK;
	if (!p)
		return fn(ctx, s, n);
	r.buf = calloc(2 * p->n, sizeof(*r.buf));
	r.md = calloc(p->n, sizeof(*r.md));
	if (!r.buf || !r.md)
		rc = sc_errf(SC_ENOMEM, "out of memory");
	for (size_t k = 0; !rc && k < p->n; k++)
		if (p->steps[k].re &&
		    !(r.md[k] = pcre2_match_data_create_from_pattern(p->steps[k].re, NULL)))
			rc = sc_errf(SC_ENOMEM, "out of memory");
	if (!rc)
		rc = run_from(&r, 0, s, n, at_start);
	for (size_t k = 0; r.buf && k < 2 * p->n; k++)
		free(r.buf[k].p);
	for (size_t k = 0; r.md && k < p->n; k++)
		pcre2_match_data_free(r.md[k]);
	free(r.buf);
	free(r.md);
	return rc;
}
