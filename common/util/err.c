/* err.c — error names and the per-thread error detail. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "sc_err.h"

static _Thread_local char detail[1024];

const char *sc_err_name(sc_err code)
{
	static const char *const names[SC_ECOUNT_] = {
		[SC_OK] = "OK",           [SC_ENOMEM] = "ENOMEM",   [SC_EINVAL] = "EINVAL",
		[SC_EIO] = "EIO",         [SC_EFORMAT] = "EFORMAT", [SC_ERANGE] = "ERANGE",
		[SC_ENOTSUP] = "ENOTSUP", [SC_ENOENT] = "ENOENT",   [SC_EBACKEND] = "EBACKEND",
		[SC_ENODEV] = "ENODEV",
	};
	if (code < 0 || code >= SC_ECOUNT_)
		return "EUNKNOWN";
	return names[code];
}

sc_err sc_errf(sc_err code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	return code;
}

sc_err sc_err_wrap(sc_err code, const char *fmt, ...)
{
	char prefix[512], old[sizeof(detail)];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	memcpy(old, detail, sizeof(old));
	/* Truncating a long chain of context is fine: the head says the most. */
	size_t n = strlen(prefix);
	memcpy(detail, prefix, n + 1);
	if (old[0] && n + 2 < sizeof(detail)) {
		memcpy(detail + n, ": ", 3);
		strncat(detail + n + 2, old, sizeof(detail) - n - 3);
	}
	return code;
}

const char *sc_err_detail(void)
{
	return detail;
}
