/* tok_norm.c — normalizers: NFC, NFD, NFKC, NFKD (utf8proc), Lowercase,
 * Strip, StripAccents, Prepend, Replace (string or PCRE2 regex), Sequence. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tok_impl.h"

enum { N_SEQ, N_NFC, N_NFD, N_NFKC, N_NFKD, N_LOWER, N_STRIP, N_ACCENTS, N_PREPEND, N_REPLACE };

struct tok_norm {
	int kind;
	tok_norm **sub; /* (n_sub) owned: Sequence */
	size_t n_sub;
	char *a, *b; /* owned: Prepend's text; Replace's pattern and content */
	size_t na, nb;
	pcre2_code *re; /* owned: Replace with a Regex pattern */
	int left, right;
};

void tok_norm_free(tok_norm *nm)
{
	if (!nm)
		return;
	for (size_t i = 0; i < nm->n_sub; i++)
		tok_norm_free(nm->sub[i]);
	free(nm->sub);
	free(nm->a);
	free(nm->b);
	pcre2_code_free(nm->re);
	free(nm);
}

static sc_err dup_str(char **out, size_t *n, const cJSON *j, const char *what)
{
	if (!cJSON_IsString(j))
		return sc_errf(SC_EFORMAT, "%s: missing string", what);
	*n = strlen(j->valuestring);
	if (!(*out = strdup(j->valuestring)))
		return sc_errf(SC_ENOMEM, "out of memory");
	return SC_OK;
}

sc_err tok_norm_parse(tok_norm **out, const cJSON *j)
{
	static const struct {
		const char *name;
		int kind;
	} kinds[] = { { "Sequence", N_SEQ },    { "NFC", N_NFC },
		      { "NFD", N_NFD },         { "NFKC", N_NFKC },
		      { "NFKD", N_NFKD },       { "Lowercase", N_LOWER },
		      { "Strip", N_STRIP },     { "StripAccents", N_ACCENTS },
		      { "Prepend", N_PREPEND }, { "Replace", N_REPLACE } };
	const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
	tok_norm *nm;
	sc_err rc = SC_OK;

	*out = NULL;
	if (!j || cJSON_IsNull(j))
		return SC_OK;
	if (!cJSON_IsString(type))
		return sc_errf(SC_EFORMAT, "normalizer without a \"type\"");
	if (!(nm = calloc(1, sizeof(*nm))))
		return sc_errf(SC_ENOMEM, "out of memory");
	nm->kind = -1;
	for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++)
		if (!strcmp(type->valuestring, kinds[k].name))
			nm->kind = kinds[k].kind;
	switch (nm->kind) {
	case N_SEQ: {
		const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "normalizers"), *it;
		int count = cJSON_GetArraySize(list);
		if (!cJSON_IsArray(list)) {
			rc = sc_errf(SC_EFORMAT, "normalizer Sequence without \"normalizers\"");
			goto fail;
		}
		if (!(nm->sub = calloc((size_t)count + 1, sizeof(*nm->sub)))) {
			rc = sc_errf(SC_ENOMEM, "out of memory");
			goto fail;
		}
		cJSON_ArrayForEach(it, list)
		{
			if ((rc = tok_norm_parse(&nm->sub[nm->n_sub], it)))
				goto fail;
			nm->n_sub += nm->sub[nm->n_sub] != NULL;
		}
		break;
	}
	case N_STRIP:
		nm->left = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "strip_left"));
		nm->right = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "strip_right"));
		break;
	case N_PREPEND:
		rc = dup_str(&nm->a, &nm->na, cJSON_GetObjectItemCaseSensitive(j, "prepend"),
			     "normalizer Prepend");
		break;
	case N_REPLACE: {
		const cJSON *pat = cJSON_GetObjectItemCaseSensitive(j, "pattern");
		const cJSON *s = cJSON_GetObjectItemCaseSensitive(pat, "String");
		const cJSON *re = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
		if ((rc = dup_str(&nm->b, &nm->nb, cJSON_GetObjectItemCaseSensitive(j, "content"),
				  "normalizer Replace content")))
			goto fail;
		if (cJSON_IsString(s))
			rc = dup_str(&nm->a, &nm->na, s, "normalizer Replace");
		else if (cJSON_IsString(re))
			rc = tok_re_compile(&nm->re, re->valuestring, strlen(re->valuestring),
					    "normalizer Replace");
		else
			rc = sc_errf(SC_EFORMAT, "normalizer Replace without a pattern");
		if (!rc && nm->a && nm->na == 0)
			rc = sc_errf(SC_EFORMAT, "normalizer Replace with an empty pattern");
		break;
	}
	case -1:
		rc = sc_errf(SC_ENOTSUP, "normalizer type \"%s\" is not supported",
			     type->valuestring);
		break;
	default: break;
	}
	if (rc)
		goto fail;
	*out = nm;
	return SC_OK;
fail:
	tok_norm_free(nm);
	return rc;
}

static sc_err unicode_map(const char *s, size_t n, int options, tok_buf *out)
{
	utf8proc_uint8_t *dst = NULL;
	utf8proc_ssize_t k;

	if (n == 0)
		return SC_OK;
	k = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &dst,
			 (utf8proc_option_t)(UTF8PROC_STABLE | options));
	if (k < 0)
		return sc_errf(k == UTF8PROC_ERROR_NOMEM ? SC_ENOMEM : SC_EINVAL,
			       "unicode normalization: %s", utf8proc_errmsg(k));
	sc_err rc = tok_buf_put(out, dst, (size_t)k);
	free(dst);
	return rc;
}

static sc_err lowercase(const char *s, size_t n, tok_buf *out)
{
	char u[4];
	for (size_t i = 0, adv; i < n; i += adv) {
		uint32_t cp = tok_utf8_cp(s + i, &adv);
		if (cp < 0x80) {
			char c = (char)(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp);
			SC_TRY(tok_buf_put(out, &c, 1));
			continue;
		}
		if (cp == 0x130) { /* Rust: 'İ' lowercases to "i\u0307" */
			SC_TRY(tok_buf_put(out, "i\xCC\x87", 3));
			continue;
		}
		cp = (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp);
		SC_TRY(tok_buf_put(out, u, tok_utf8_put(u, cp)));
	}
	return SC_OK;
}

static sc_err strip_accents(const char *s, size_t n, tok_buf *out)
{
	for (size_t i = 0, adv; i < n; i += adv) {
		uint32_t cp = tok_utf8_cp(s + i, &adv);
		utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
		if (c != UTF8PROC_CATEGORY_MN && c != UTF8PROC_CATEGORY_MC &&
		    c != UTF8PROC_CATEGORY_ME)
			SC_TRY(tok_buf_put(out, s + i, adv));
	}
	return SC_OK;
}

static sc_err replace(const tok_norm *nm, const char *s, size_t n, tok_buf *out)
{
	size_t at = 0;
	if (nm->a) {
		const char *hit;
		while (at < n && (hit = memmem(s + at, n - at, nm->a, nm->na))) {
			SC_TRY(tok_buf_put(out, s + at, (size_t)(hit - (s + at))));
			SC_TRY(tok_buf_put(out, nm->b, nm->nb));
			at = (size_t)(hit - s) + nm->na;
		}
		return tok_buf_put(out, s + at, n - at);
	}
	pcre2_match_data *md = pcre2_match_data_create_from_pattern(nm->re, NULL);
	sc_err rc = SC_OK;
	if (!md)
		return sc_errf(SC_ENOMEM, "out of memory");
	for (size_t from = 0; from <= n;) {
		int r = pcre2_match(nm->re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, md, NULL);
		PCRE2_SIZE *ov;
		if (r < 0)
			break;
		ov = pcre2_get_ovector_pointer(md);
		if ((rc = tok_buf_put(out, s + at, ov[0] - at)) ||
		    (rc = tok_buf_put(out, nm->b, nm->nb)))
			break;
		at = ov[1];
		from = ov[1];
		if (ov[1] == ov[0]) { /* empty match: step over one character */
			size_t adv = 1;
			if (from >= n)
				break;
			tok_utf8_cp(s + from, &adv);
			if ((rc = tok_buf_put(out, s + from, adv)))
				break;
			from += adv;
			at = from;
		}
	}
	pcre2_match_data_free(md);
	return rc ? rc : tok_buf_put(out, s + at, n - at);
}

sc_err tok_norm_apply(const tok_norm *nm, const char *s, size_t n, tok_buf *out)
{
	switch (nm->kind) {
	case N_SEQ: {
		tok_buf a = { 0 }, b = { 0 };
		sc_err rc = tok_buf_put(&a, s, n);
		for (size_t i = 0; !rc && i < nm->n_sub; i++) {
			tok_buf t;
			b.len = 0;
			rc = tok_norm_apply(nm->sub[i], a.p, a.len, &b);
			t = a;
			a = b;
			b = t;
		}
		if (!rc)
			rc = tok_buf_put(out, a.p, a.len);
		free(a.p);
		free(b.p);
		return rc;
	}
	case N_NFC: return unicode_map(s, n, UTF8PROC_COMPOSE, out);
	case N_NFD: return unicode_map(s, n, UTF8PROC_DECOMPOSE, out);
	case N_NFKC: return unicode_map(s, n, UTF8PROC_COMPOSE | UTF8PROC_COMPAT, out);
	case N_NFKD: return unicode_map(s, n, UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT, out);
	case N_LOWER: return lowercase(s, n, out);
	case N_ACCENTS: return strip_accents(s, n, out);
	case N_STRIP: {
		size_t b = 0, e = n, adv;
		while (nm->left && b < e && tok_is_space(tok_utf8_cp(s + b, &adv)))
			b += adv;
		while (nm->right && e > b) {
			size_t k = e - 1;
			while (k > b && ((unsigned char)s[k] & 0xC0) == 0x80)
				k--;
			if (!tok_is_space(tok_utf8_cp(s + k, &adv)))
				break;
			e = k;
		}
		return tok_buf_put(out, s + b, e - b);
	}
	case N_PREPEND:
		if (n)
			SC_TRY(tok_buf_put(out, nm->a, nm->na));
		return tok_buf_put(out, s, n);
	case N_REPLACE: return replace(nm, s, n, out);
	}
	return sc_errf(SC_ENOTSUP, "normalizer %d", nm->kind);
}
