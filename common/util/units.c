/* units.c — sizes as people write them (sc_units.h). */
#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <strings.h>

#include "sc_units.h"

sc_err sc_parse_bytes(const char *text, uint64_t *out)
{
	static const struct {
		const char *name;
		double scale;
	} units[] = { { "", 1 },
		      { "b", 1 },
		      { "k", 1024.0 },
		      { "kib", 1024.0 },
		      { "m", 1048576.0 },
		      { "mib", 1048576.0 },
		      { "g", 1073741824.0 },
		      { "gib", 1073741824.0 },
		      { "t", 1099511627776.0 },
		      { "tib", 1099511627776.0 } };
	char *end = NULL;
	double v;

	*out = 0;
	if (!text || !isdigit((unsigned char)text[0]))
		goto bad;
	v = strtod(text, &end);
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcasecmp(end, units[i].name))
			continue;
		v *= units[i].scale;
		if (!isfinite(v) || v >= 9.2e18 || (units[i].scale == 1 && v != floor(v)))
			goto bad;
		*out = (uint64_t)v;
		return SC_OK;
	}
bad:
	return sc_errf(SC_EINVAL,
		       "'%s' is not a size: a whole number of bytes, or a number with K, M, G or "
		       "T (binary: 1K = 1024 bytes)",
		       text ? text : "(null)");
}

/* A whole number at *p (digits only), advancing *p; -1 if none or huge. */
static long number(const char **p)
{
	long v = 0;
	if (!isdigit((unsigned char)**p))
		return -1;
	while (isdigit((unsigned char)**p)) {
		v = v * 10 + (**p - '0');
		if (v > INT_MAX / 2)
			return -1;
		++*p;
	}
	return v;
}

sc_err sc_parse_split(const char *text, int *bounds, int max, int *n)
{
	const char *p = text;
	*n = 0;
	if (!text || !*text)
		return sc_errf(SC_EINVAL, "an empty layer split: give ranges like 0-7,8-15");
	bounds[0] = 0;
	for (;;) {
		long a = number(&p), b = a;
		if (a >= 0 && *p == '-') {
			p++;
			b = number(&p);
		}
		if (a < 0 || b < 0 || (*p && *p != ','))
			return sc_errf(
			    SC_EINVAL,
			    "layer split '%s': expected ranges like 0-7,8-15 (first-last, "
			    "inclusive)",
			    text);
		if (*n >= max)
			return sc_errf(SC_EINVAL, "layer split '%s': more than %d ranges", text,
				       max);
		if (b < a)
			return sc_errf(SC_EINVAL, "layer split '%s': range %ld-%ld runs backwards",
				       text, a, b);
		if (a != bounds[*n])
			return sc_errf(
			    SC_EINVAL,
			    "layer split '%s': range %d starts at layer %ld, not %d (the "
			    "ranges must follow each other from layer 0)",
			    text, *n + 1, a, bounds[*n]);
		bounds[++*n] = (int)b + 1;
		if (!*p)
			return SC_OK;
		p++;
	}
}
