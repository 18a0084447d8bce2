/* log.c — one-line log records to stderr. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "sc_log.h"

static atomic_int level = -1;            /* -1: not yet read from SPLITCHAIN_LOG */
static atomic_ullong counts[SC_LOG_OFF]; /* records by level, threshold aside */

static enum sc_log_level env_level(void)
{
	const char *s = getenv("SPLITCHAIN_LOG");
	if (!s)
		return SC_LOG_INFO;
	if (!strcasecmp(s, "debug"))
		return SC_LOG_DEBUG;
	if (!strcasecmp(s, "warn"))
		return SC_LOG_WARN;
	if (!strcasecmp(s, "error"))
		return SC_LOG_ERROR;
	if (!strcasecmp(s, "off"))
		return SC_LOG_OFF;
	return SC_LOG_INFO;
}

void sc_log_set_level(enum sc_log_level l)
{
	atomic_store_explicit(&level, (int)l, memory_order_relaxed);
}

enum sc_log_level sc_log_get_level(void)
{
	int l = atomic_load_explicit(&level, memory_order_relaxed);
	if (l < 0) { /* any thread may be first: each reads the same environment */
		l = (int)env_level();
		atomic_store_explicit(&level, l, memory_order_relaxed);
	}
	return (enum sc_log_level)l;
}

void sc_log(enum sc_log_level l, const char *module, const char *fmt, ...)
{
	static const char *const names[] = { "debug", "info", "warn", "error", "off" };
	char line[2048];
	struct timespec ts;
	struct tm tm;
	int n;
	va_list ap;

	if (l >= SC_LOG_DEBUG && l < SC_LOG_OFF)
		atomic_fetch_add(&counts[l], 1);
	if (l < sc_log_get_level())
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, sizeof(line),
		     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s: ", tm.tm_year + 1900,
		     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		     ts.tv_nsec / 1000000, names[l], module);
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	if (write(STDERR_FILENO, line, (size_t)n) < 0)
		return; /* nowhere left to report it */
}

unsigned long long sc_log_count(enum sc_log_level l)
{
	return l >= SC_LOG_DEBUG && l < SC_LOG_OFF ? atomic_load(&counts[l]) : 0;
}
