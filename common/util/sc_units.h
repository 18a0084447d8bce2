/* sc_units.h — sizes as people write them on a command line. */
#ifndef SC_UNITS_H
#define SC_UNITS_H

#include <stdint.h>

#include "sc_err.h"

/* *out = the bytes text says: a whole number with an optional unit, binary
 * (K or KiB = 1024, M or MiB, G or GiB, T or TiB; case-insensitive; "B" or
 * none for bytes), e.g. "512M", "1.5GiB" (a fraction with a unit is
 * rounded down to whole bytes). SC_EINVAL naming the text for anything
 * else: empty, negative, trailing garbage, over 2^63 bytes. */
sc_err sc_parse_bytes(const char *text, uint64_t *out);

/* A chain's layer ranges as a user writes them: "0-7,8-15,16-23" (each
 * range first-last, inclusive; "5" is 5-5), contiguous from layer 0.
 * bounds[0..*n] = 0, 8, 16, 24 (stage s holds [bounds[s], bounds[s+1]));
 * at most max ranges (bounds has max + 1 entries). SC_EINVAL naming what is wrong (syntax, a gap or an
 * overlap, a range that runs backwards, too many). */
sc_err sc_parse_split(const char *text, int *bounds, int max, int *n);

#endif
