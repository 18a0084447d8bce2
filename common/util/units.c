/* units.c — sizes as people write them (sc_units.h). */
#include <ctype.h>
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
