/* prom.c — the Prometheus text format's writer (sc_prom.h). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sc_prom.h"
#include "sc_rpc.h"

void sc_prom_init(sc_prom *p)
{
	memset(p, 0, sizeof(*p));
}

void sc_prom_free(sc_prom *p)
{
	if (!p)
		return;
	free(p->buf);
	memset(p, 0, sizeof(*p));
}

/* Room for n more bytes and the NUL; 0 when there is. */
static int reserve(sc_prom *p, size_t n)
{
	if (p->oom)
		return 1;
	if (p->len + n + 1 <= p->cap)
		return 0;
	size_t cap = p->cap ? p->cap : 4096;
	while (cap < p->len + n + 1)
		cap *= 2;
	char *b = realloc(p->buf, cap);
	if (!b) {
		p->oom = 1;
		return 1;
	}
	p->buf = b;
	p->cap = cap;
	return 0;
}

static void put(sc_prom *p, const char *s, size_t n)
{
	if (reserve(p, n))
		return;
	memcpy(p->buf + p->len, s, n);
	p->len += n;
	p->buf[p->len] = '\0';
}

static void puts_(sc_prom *p, const char *s)
{
	put(p, s, strlen(s));
}

/* s with backslash and newline escaped, and double quote too when quote. */
static void put_escaped(sc_prom *p, const char *s, int quote)
{
	for (; s && *s; s++) {
		if (*s == '\\')
			put(p, "\\\\", 2);
		else if (*s == '\n')
			put(p, "\\n", 2);
		else if (*s == '"' && quote)
			put(p, "\\\"", 2);
		else
			put(p, s, 1);
	}
}

void sc_prom_family(sc_prom *p, const char *name, const char *type, const char *help)
{
	puts_(p, "# HELP ");
	puts_(p, name);
	puts_(p, " ");
	put_escaped(p, help, 0);
	puts_(p, "\n# TYPE ");
	puts_(p, name);
	puts_(p, " ");
	puts_(p, type);
	puts_(p, "\n");
}

void sc_prom_sample(sc_prom *p, const char *name, double value, ...)
{
	char num[40];
	const char *key;
	int first = 1;
	va_list ap;

	puts_(p, name);
	va_start(ap, value);
	while ((key = va_arg(ap, const char *)) != NULL) {
		const char *v = va_arg(ap, const char *);
		puts_(p, first ? "{" : ",");
		puts_(p, key);
		puts_(p, "=\"");
		put_escaped(p, v, 1);
		puts_(p, "\"");
		first = 0;
	}
	va_end(ap);
	if (!first)
		puts_(p, "}");
	if (isnan(value))
		snprintf(num, sizeof(num), "NaN");
	else if (isinf(value))
		snprintf(num, sizeof(num), value > 0 ? "+Inf" : "-Inf");
	else if (snprintf(num, sizeof(num), "%.15g", value), strtod(num, NULL) != value)
		snprintf(num, sizeof(num), "%.17g", value); /* the shortest that reads back */
	puts_(p, " ");
	puts_(p, num);
	puts_(p, "\n");
}

sc_err sc_prom_done(const sc_prom *p)
{
	if (p->oom)
		return sc_errf(SC_ENOMEM, "out of memory writing the metrics");
	return SC_OK;
}

/* One sample with the method label and up to two extra pairs. */
static void rpc_sample(sc_prom *p, const char *name, double v, const char *method,
		       const char *const *extra)
{
	const char *k1 = extra && extra[0] ? extra[0] : NULL, *v1 = k1 ? extra[1] : NULL;
	const char *k2 = k1 && extra[2] ? extra[2] : NULL, *v2 = k2 ? extra[3] : NULL;
	if (k2)
		sc_prom_sample(p, name, v, k1, v1, k2, v2, "method", method, NULL);
	else if (k1)
		sc_prom_sample(p, name, v, k1, v1, "method", method, NULL);
	else
		sc_prom_sample(p, name, v, "method", method, NULL);
}

void sc_prom_rpc(sc_prom *p, const struct sc_rpc_server *srv, const char *const *extra)
{
	sc_rpc_method_stats st[64];
	int n = sc_rpc_server_stats(srv, st, 64);
	if (n > 64)
		n = 64;
	sc_prom_family(p, "splitchain_rpc_requests_total", "counter",
		       "RPC requests a handler ran, by method.");
	for (int i = 0; i < n; i++)
		rpc_sample(p, "splitchain_rpc_requests_total", (double)st[i].calls, st[i].method,
			   extra);
	sc_prom_family(p, "splitchain_rpc_failures_total", "counter",
		       "RPC requests answered with an error status, by method.");
	for (int i = 0; i < n; i++)
		rpc_sample(p, "splitchain_rpc_failures_total", (double)st[i].failures, st[i].method,
			   extra);
}
