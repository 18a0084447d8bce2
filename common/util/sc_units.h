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

#endif
