/* sc_err.h — error values shared by every splitchain module.
 *
 * A function that can fail returns sc_err (SC_OK == 0) and hands its results
 * out through pointers. The human-readable detail of the most recent failure
 * is kept per thread: sc_errf() records it and returns the code, so a failing
 * path reads `return sc_errf(SC_EFORMAT, "%s: header too long", path);`, and
 * whoever reports the error to a person calls sc_err_detail().
 */
#ifndef SC_ERR_H
#define SC_ERR_H

typedef int sc_err;

enum {
	SC_OK = 0,
	SC_ENOMEM,   /* an allocation failed (host or device) */
	SC_EINVAL,   /* a caller passed a bad argument or option */
	SC_EIO,      /* a read, write, open or mmap failed */
	SC_EFORMAT,  /* a file or message is malformed or corrupt */
	SC_ERANGE,   /* a value is out of its allowed range (token id, shape) */
	SC_ENOTSUP,  /* valid but not supported (architecture, dtype) */
	SC_ENOENT,   /* a named thing (file, tensor) does not exist */
	SC_EBACKEND, /* the compute backend failed (CUDA, cuBLAS) */
	SC_ENODEV,   /* the requested device is not present */
	SC_ECOUNT_
};

/* Returns a static name for code, e.g. "EFORMAT". Never NULL. */
const char *sc_err_name(sc_err code);

/* Records a printf-style detail for the calling thread and returns code.
 * A detail already recorded is replaced. */
sc_err sc_errf(sc_err code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefixes the calling thread's detail with "prefix: " and returns code;
 * for adding context on the way up ("loading h.3: ..."). */
sc_err sc_err_wrap(sc_err code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The detail of the calling thread's most recent sc_errf, or "" if none.
 * Borrowed: valid until the next sc_errf/sc_err_wrap on this thread. */
const char *sc_err_detail(void);

/* Propagates a failure: evaluates expr once and returns its code if nonzero. */
#define SC_TRY(expr)                                                                               \
	do {                                                                                       \
		sc_err sc_try_rc_ = (expr);                                                        \
		if (sc_try_rc_ != SC_OK)                                                           \
			return sc_try_rc_;                                                         \
	} while (0)

#endif
