/* tok_decode.c — decoders: ByteLevel, ByteFallback, Replace, Fuse, Strip,
 * Metaspace and Sequence, each a map from a list of token strings to a new
 * list, as HF's Decoder::decode_chain. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sc_utf8.h"
#include "tok_impl.h"

enum { D_SEQ, D_BYTELEVEL, D_BYTEFALLBACK, D_REPLACE, D_FUSE, D_STRIP, D_METASPACE };

struct tok_decoder {
	int kind;
	tok_decoder **sub; /* (n_sub) owned: Sequence */
	size_t n_sub;
	char *a, *b; /* owned: Replace's pattern and content; Strip's / Metaspace's char */
	size_t na, nb;
	long start, stop;
	int prepend; /* Metaspace: prepend_scheme is not "never" */
};

/* A list of strings in one buffer. */
typedef struct list {
	tok_buf buf;
	size_t *off, *len;
	size_t n, cap;
} list;

static sc_err list_add(list *l, const char *s, size_t n)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		size_t *o = realloc(l->off, cap * sizeof(*o)), *g;
		if (o)
			l->off = o;
		if (!o || !(g = realloc(l->len, cap * sizeof(*g))))
			return sc_errf(SC_ENOMEM, "out of memory");
		l->len = g;
		l->cap = cap;
	}
	l->off[l->n] = l->buf.len;
	l->len[l->n++] = n;
	return tok_buf_put(&l->buf, s, n);
}

static void list_free(list *l)
{
	free(l->buf.p);
	free(l->off);
	free(l->len);
	memset(l, 0, sizeof(*l));
}

void tok_decoder_free(tok_decoder *d)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->n_sub; i++)
		tok_decoder_free(d->sub[i]);
	free(d->sub);
	free(d->a);
	free(d->b);
	free(d);
}

/* *out = the count in x (absent: 0); SC_EFORMAT unless a whole number in
 * [0, INT_MAX] (HF's usize, bounded for us). */
static sc_err count_field(const cJSON *x, const char *name, long *out)
{
	*out = 0;
	if (!x)
		return SC_OK;
	if (!cJSON_IsNumber(x) || !(x->valuedouble >= 0 && x->valuedouble <= INT_MAX) ||
	    x->valuedouble != floor(x->valuedouble))
		return sc_errf(SC_EFORMAT, "decoder Strip: \"%s\" is not a count of characters",
			       name);
	*out = (long)x->valuedouble;
	return SC_OK;
}

static sc_err dup_field(char **out, size_t *n, const cJSON *j, const char *name, const char *what)
{
	const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, name);
	if (!cJSON_IsString(f))
		return sc_errf(SC_EFORMAT, "decoder %s without \"%s\"", what, name);
	if (!(*out = strdup(f->valuestring)))
		return sc_errf(SC_ENOMEM, "out of memory");
	*n = strlen(*out);
	return SC_OK;
}

sc_err tok_decoder_parse(tok_decoder **out, const cJSON *j)
{
	const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
	const char *t = cJSON_IsString(type) ? type->valuestring : NULL;
	tok_decoder *d;
	sc_err rc = SC_OK;

	*out = NULL;
	if (!j || cJSON_IsNull(j))
		return SC_OK;
	if (!t)
		return sc_errf(SC_EFORMAT, "decoder without a \"type\"");
	if (!(d = calloc(1, sizeof(*d))))
		return sc_errf(SC_ENOMEM, "out of memory");
	if (!strcmp(t, "Sequence")) {
		const cJSON *l = cJSON_GetObjectItemCaseSensitive(j, "decoders"), *it;
		d->kind = D_SEQ;
		if (!cJSON_IsArray(l)) {
			rc = sc_errf(SC_EFORMAT, "decoder Sequence without \"decoders\"");
			goto fail;
		}
		if (!(d->sub = calloc((size_t)cJSON_GetArraySize(l) + 1, sizeof(*d->sub)))) {
			rc = sc_errf(SC_ENOMEM, "out of memory");
			goto fail;
		}
		cJSON_ArrayForEach(it, l)
		{
			if ((rc = tok_decoder_parse(&d->sub[d->n_sub], it)))
				goto fail;
			d->n_sub += d->sub[d->n_sub] != NULL;
		}
	} else if (!strcmp(t, "ByteLevel")) {
		d->kind = D_BYTELEVEL;
	} else if (!strcmp(t, "ByteFallback")) {
		d->kind = D_BYTEFALLBACK;
	} else if (!strcmp(t, "Fuse")) {
		d->kind = D_FUSE;
	} else if (!strcmp(t, "Replace")) {
		const cJSON *pat = cJSON_GetObjectItemCaseSensitive(j, "pattern");
		d->kind = D_REPLACE;
		if (!cJSON_GetObjectItemCaseSensitive(pat, "String")) {
			rc = sc_errf(SC_ENOTSUP, "decoder Replace with a regex pattern");
			goto fail;
		}
		if ((rc = dup_field(&d->a, &d->na, pat, "String", "Replace")) ||
		    (rc = dup_field(&d->b, &d->nb, j, "content", "Replace")))
			goto fail;
		if (!d->na) {
			rc = sc_errf(SC_EFORMAT, "decoder Replace with an empty pattern");
			goto fail;
		}
	} else if (!strcmp(t, "Strip")) {
		const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "start");
		const cJSON *b = cJSON_GetObjectItemCaseSensitive(j, "stop");
		d->kind = D_STRIP;
		if ((rc = dup_field(&d->a, &d->na, j, "content", "Strip")))
			goto fail;
		if ((rc = count_field(a, "start", &d->start)) ||
		    (rc = count_field(b, "stop", &d->stop)))
			goto fail;
	} else if (!strcmp(t, "Metaspace")) {
		const cJSON *sch = cJSON_GetObjectItemCaseSensitive(j, "prepend_scheme");
		const cJSON *aps = cJSON_GetObjectItemCaseSensitive(j, "add_prefix_space");
		d->kind = D_METASPACE;
		if ((rc = dup_field(&d->a, &d->na, j, "replacement", "Metaspace")))
			goto fail;
		d->prepend = cJSON_IsString(sch) ? strcmp(sch->valuestring, "never") != 0
						 : !cJSON_IsFalse(aps);
	} else {
		rc = sc_errf(SC_ENOTSUP, "decoder type \"%s\" is not supported", t);
		goto fail;
	}
	*out = d;
	return SC_OK;
fail:
	tok_decoder_free(d);
	return rc;
}

/* One step: in -> out (empty on entry). */
static sc_err step(const tok_decoder *d, const list *in, list *out)
{
	tok_buf t = { 0 };
	sc_err rc = SC_OK;

	switch (d->kind) {
	case D_BYTELEVEL: {
		tok_buf raw = { 0 };
		int changed;
		for (size_t i = 0; !rc && i < in->n; i++) {
			const char *s = in->buf.p + in->off[i];
			size_t n = in->len[i], j, adv, start = raw.len;
			for (j = 0; !rc && j < n; j += adv) {
				int b = tok_char_byte(tok_utf8_cp_n(s + j, n - j, &adv));
				char c = (char)b;
				if (b < 0)
					break;
				rc = tok_buf_put(&raw, &c, 1);
			}
			if (!rc && j < n) { /* not all byte-level characters: the raw bytes */
				raw.len = start;
				rc = tok_buf_put(&raw, s, n);
			}
		}
		if (!rc)
			rc = tok_utf8_lossy(&t, raw.p ? raw.p : "", raw.len, &changed);
		if (!rc)
			rc = list_add(out, t.p ? t.p : "", t.len);
		free(raw.p);
		break;
	}
	case D_BYTEFALLBACK: {
		tok_buf pend = { 0 };
		for (size_t i = 0; !rc && i <= in->n; i++) {
			const char *s = i < in->n ? in->buf.p + in->off[i] : "";
			size_t n = i < in->n ? in->len[i] : 0;
			char *end;
			char hex[3] = { s[n == 6 ? 3 : 0], s[n == 6 ? 4 : 0], 0 };
			long v = -1;
			if (i < in->n && n == 6 && !memcmp(s, "<0x", 3) && s[5] == '>') {
				v = strtol(hex, &end, 16);
				if (*end || hex[0] == '-' || hex[0] == ' ' || v < 0 || v > 255)
					v = -1;
			}
			if (v >= 0) {
				char c = (char)v;
				rc = tok_buf_put(&pend, &c, 1);
				continue;
			}
			if (pend.len) {
				size_t k = 0;
				while (k < pend.len) {
					size_t l = sc_utf8_len(pend.p + k, pend.len - k);
					if (!l)
						break;
					k += l;
				}
				if (k == pend.len)
					rc = list_add(out, pend.p, pend.len);
				for (size_t q = 0; k != pend.len && !rc && q < pend.len; q++)
					rc = list_add(out, "\xEF\xBF\xBD", 3);
				pend.len = 0;
			}
			if (!rc && i < in->n)
				rc = list_add(out, s, n);
		}
		free(pend.p);
		break;
	}
	case D_FUSE:
		for (size_t i = 0; !rc && i < in->n; i++)
			rc = tok_buf_put(&t, in->buf.p + in->off[i], in->len[i]);
		if (!rc)
			rc = list_add(out, t.p ? t.p : "", t.len);
		break;
	case D_REPLACE:
		for (size_t i = 0; !rc && i < in->n; i++) {
			const char *s = in->buf.p + in->off[i], *hit;
			size_t n = in->len[i], at = 0;
			t.len = 0;
			while (!rc && at < n && (hit = memmem(s + at, n - at, d->a, d->na))) {
				rc = tok_buf_put(&t, s + at, (size_t)(hit - s) - at);
				if (!rc)
					rc = tok_buf_put(&t, d->b, d->nb);
				at = (size_t)(hit - s) + d->na;
			}
			if (!rc)
				rc = tok_buf_put(&t, s + at, n - at);
			if (!rc)
				rc = list_add(out, t.p, t.len);
		}
		break;
	case D_STRIP: {
		size_t adv;
		uint32_t c = d->na ? tok_utf8_cp_n(d->a, d->na, &adv) : 0;
		for (size_t i = 0; !rc && i < in->n; i++) {
			const char *s = in->buf.p + in->off[i];
			size_t n = in->len[i], b = 0, e = n, a2;
			for (long k = 0;
			     k < d->start && b < e && tok_utf8_cp_n(s + b, e - b, &a2) == c; k++)
				b += a2;
			for (long k = 0; k < d->stop && e > b; k++) {
				size_t q = e - 1;
				while (q > b && ((unsigned char)s[q] & 0xC0) == 0x80)
					q--;
				if (tok_utf8_cp_n(s + q, e - q, &a2) != c)
					break;
				e = q;
			}
			rc = list_add(out, s + b, e - b);
		}
		break;
	}
	case D_METASPACE:
		for (size_t i = 0; !rc && i < in->n; i++) {
			const char *s = in->buf.p + in->off[i];
			size_t n = in->len[i], j, adv, na;
			uint32_t rep = d->na ? tok_utf8_cp_n(d->a, d->na, &na) : 0;
			t.len = 0;
			for (j = 0; !rc && j < n; j += adv) {
				if (tok_utf8_cp_n(s + j, n - j, &adv) != rep)
					rc = tok_buf_put(&t, s + j, adv);
				else if (!(i == 0 && d->prepend))
					rc = tok_buf_put(&t, " ", 1);
			}
			if (!rc)
				rc = list_add(out, t.p ? t.p : "", t.len);
		}
		break;
	}
	free(t.p);
	return rc;
}

static sc_err chain(const tok_decoder *d, list *l)
{
	if (d->kind == D_SEQ) {
		for (size_t i = 0; i < d->n_sub; i++)
			SC_TRY(chain(d->sub[i], l));
		return SC_OK;
	}
	list out = { 0 };
	sc_err rc = step(d, l, &out);
	if (rc) {
		list_free(&out);
		return rc;
	}
	list_free(l);
	*l = out;
	return SC_OK;
}

sc_err tok_decoder_run(const tok_decoder *d, const char *buf, const size_t *off, const size_t *len,
		       size_t count, tok_buf *out)
{
	list l = { 0 };
	sc_err rc = SC_OK;

	for (size_t i = 0; !rc && i < count; i++)
		rc = list_add(&l, buf + off[i], len[i]);
	if (!rc && d)
		rc = chain(d, &l);
	for (size_t i = 0; !rc && i < l.n; i++) {
		if (!d && i)
			rc = tok_buf_put(out, " ", 1);
		if (!rc)
			rc = tok_buf_put(out, l.buf.p + l.off[i], l.len[i]);
	}
	if (!rc)
		rc = tok_buf_put(out, "", 0);
	list_free(&l);
	return rc;
}
