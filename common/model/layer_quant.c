/* layer_quant.c — per-layer formats of the frozen base: the SPEC parser and
 * printer (sc_layer_quant.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sc_layer_quant.h"
#include "sc_quant.h"

/* *out = the layer number at *p (decimal digits), *p moved past it. */
static sc_err layer_number(const char **p, const char *item, int *out)
{
	char *end;
	if (**p < '0' || **p > '9')
		return sc_errf(SC_EINVAL,
			       "--layer-quant item '%s': expected a layer number at '%s'", item,
			       *p);
	errno = 0;
	long v = strtol(*p, &end, 10);
	if (errno || v >= SC_LAYER_QUANT_MAX)
		return sc_errf(SC_EINVAL, "--layer-quant item '%s': layer %.*s is too large", item,
			       (int)(end - *p), *p);
	*p = end;
	*out = (int)v;
	return SC_OK;
}

/* One item "N[-M]:FORMAT" (NUL-terminated) into lq. */
static sc_err parse_item(const char *item, int n_layer, unsigned char *lq)
{
	const char *p = item, *colon = strchr(item, ':');
	enum sc_quant_format f;
	int a, b;

	if (!*item)
		return sc_errf(SC_EINVAL, "--layer-quant: an empty item (two commas, or one at "
					  "either end)");
	if (!colon)
		return sc_errf(SC_EINVAL,
			       "--layer-quant item '%s': expected LAYERS:FORMAT, e.g. 0-3:nf4",
			       item);
	SC_TRY(layer_number(&p, item, &a));
	b = a;
	if (*p == '-') {
		p++;
		SC_TRY(layer_number(&p, item, &b));
	}
	if (p != colon)
		return sc_errf(SC_EINVAL,
			       "--layer-quant item '%s': expected ':' after the layers, not '%c'",
			       item, *p);
	if (b < a)
		return sc_errf(SC_EINVAL, "--layer-quant item '%s': the range %d-%d runs backwards",
			       item, a, b);
	if (b >= n_layer)
		return sc_errf(SC_EINVAL,
			       "--layer-quant item '%s': layer %d is outside the model's %d layers "
			       "(0-%d)",
			       item, b, n_layer, n_layer - 1);
	if (sc_quant_parse(colon + 1, &f) || f == SC_QUANT_BF16)
		return sc_errf(SC_EINVAL,
			       "--layer-quant item '%s': format '%s': choose int8 or nf4", item,
			       colon + 1);
	for (int l = a; l <= b; l++) {
		if (lq[l])
			return sc_errf(SC_EINVAL,
				       "--layer-quant item '%s': layer %d is named twice", item, l);
		lq[l] = (unsigned char)(f + 1);
	}
	return SC_OK;
}

sc_err sc_layer_quant_parse(const char *text, int n_layer, unsigned char *out)
{
	char item[128];
	sc_err rc = SC_OK;

	memset(out, 0, SC_LAYER_QUANT_MAX);
	if (!text || !*text)
		return sc_errf(SC_EINVAL, "--layer-quant: empty; give LAYERS:FORMAT items, e.g. "
					  "0-3:nf4,4-7:int8");
	if (n_layer < 1 || n_layer > SC_LAYER_QUANT_MAX)
		return sc_errf(SC_EINVAL, "--layer-quant: a model of %d layers (1..%d)", n_layer,
			       SC_LAYER_QUANT_MAX);
	for (const char *p = text;; p++) {
		size_t n = strcspn(p, ",");
		if (n >= sizeof(item)) {
			rc = sc_errf(SC_EINVAL, "--layer-quant item '%.20s...' is too long", p);
			break;
		}
		memcpy(item, p, n);
		item[n] = 0;
		if ((rc = parse_item(item, n_layer, out)))
			break;
		p += n;
		if (!*p)
			break;
		if (!p[1]) {
			rc = parse_item("", n_layer, out); /* a trailing comma */
			break;
		}
	}
	if (rc)
		memset(out, 0, SC_LAYER_QUANT_MAX);
	return rc;
}

sc_err sc_layer_quant_format(const unsigned char *lq, int first, int last, char *buf, size_t size)
{
	size_t used = 0;
	if (size)
		buf[0] = 0;
	for (int l = first; l < last; l++) {
		int e = l;
		if (!lq[l])
			continue;
		while (e + 1 < last && lq[e + 1] == lq[l])
			e++;
		char one[64];
		const char *f = sc_quant_name((enum sc_quant_format)(lq[l] - 1));
		int n = e > l ? snprintf(one, sizeof(one), "%s%d-%d:%s", used ? "," : "", l, e, f)
			      : snprintf(one, sizeof(one), "%s%d:%s", used ? "," : "", l, f);
		if (used + (size_t)n + 1 > size)
			return sc_errf(SC_ERANGE,
				       "per-layer formats of layers %d-%d: more than %zu "
				       "bytes of text",
				       first, last - 1, size);
		memcpy(buf + used, one, (size_t)n + 1);
		used += (size_t)n;
		l = e;
	}
	return SC_OK;
}

sc_err sc_layer_quant_apply(sc_model_config *mc, const char *text)
{
	unsigned char lq[SC_LAYER_QUANT_MAX];
	if (!text || !*text)
		return SC_OK;
	SC_TRY(sc_layer_quant_parse(text, mc->n_layer, lq));
	for (int l = 0; l < mc->n_layer; l++)
		if (lq[l] && mc->quantized && lq[l] == mc->quant_format + 1)
			lq[l] = 0;
	memcpy(mc->layer_quant, lq, sizeof(lq));
	return SC_OK;
}

int sc_layer_quant_of(const sc_model_config *mc, int layer)
{
	if (layer >= 0 && layer < SC_LAYER_QUANT_MAX && mc->layer_quant[layer])
		return mc->layer_quant[layer] - 1;
	return mc->quantized ? mc->quant_format : -1;
}

int sc_layer_quant_count(const sc_model_config *mc, int first, int last)
{
	int n = 0;
	for (int l = first; l < last && l < SC_LAYER_QUANT_MAX; l++)
		n += mc->layer_quant[l] &&
		     sc_layer_quant_of(mc, l) != (mc->quantized ? mc->quant_format : -1);
	return n;
}
