/* sc_prom.h — the Prometheus text exposition format (version 0.0.4),
 * written into a growing buffer: a family's "# HELP" and "# TYPE" lines,
 * then its samples, each `name{label="value",...} number`.
 *
 * Escaping: HELP text escapes backslash and newline; label values escape
 * backslash, double quote and newline, so any name a user gave a job or a
 * worker is safe to export. Numbers are printed exactly (%.17g), with NaN,
 * +Inf and -Inf spelled as the format wants them.
 *
 * Memory: the buffer grows with malloc; a failed allocation is remembered
 * (later calls do nothing) and reported by sc_prom_done, so the writers
 * need no error checks of their own. Not thread-safe: one writer at a time.
 */
#ifndef SC_PROM_H
#define SC_PROM_H

#include <stddef.h>

#include "sc_err.h"

typedef struct sc_prom {
	char *buf; /* NUL-terminated text so far; owned */
	size_t len, cap;
	int oom; /* an allocation failed: the text is incomplete */
} sc_prom;

/* An empty buffer. Free with sc_prom_free. */
void sc_prom_init(sc_prom *p);
/* Frees the text; p may be reused after sc_prom_init. Accepts NULL. */
void sc_prom_free(sc_prom *p);

/* A family's HELP and TYPE lines. name: [a-zA-Z_:][a-zA-Z0-9_:]* (a bug
 * otherwise: the caller's names are constants); type: "gauge", "counter". */
void sc_prom_family(sc_prom *p, const char *name, const char *type, const char *help);

/* One sample of name with value, labelled by the NULL-terminated list of
 * (key, value) string pairs that follows (borrowed; a NULL value is ""). */
void sc_prom_sample(sc_prom *p, const char *name, double value, ...) __attribute__((sentinel));

/* The families splitchain_rpc_requests_total and splitchain_rpc_failures_total
 * from srv's counters (sc_rpc_server_stats), one sample per method, each
 * also labelled with the NULL-terminated (key, value) pairs in extra
 * (NULL: none; borrowed). */
struct sc_rpc_server;
void sc_prom_rpc(sc_prom *p, const struct sc_rpc_server *srv, const char *const *extra);

/* SC_OK with p->buf holding the whole text, or SC_ENOMEM when an
 * allocation failed on the way. */
sc_err sc_prom_done(const sc_prom *p);

#endif
