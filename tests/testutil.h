/* testutil.h — helpers shared by the unit tests (cmocka). */
#ifndef SC_TESTUTIL_H
#define SC_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka needs the three headers above first. */
#include <cmocka.h>

#include "sc_backend.h"
#include "sc_err.h"

/* Fails the test, printing the expression, its error name and detail, when
 * expr does not return SC_OK. */
#define SC_ASSERT_OK(expr)                                                                         \
	do {                                                                                       \
		sc_err rc_ = (expr);                                                               \
		if (rc_ != SC_OK)                                                                  \
			fail_msg("%s -> %s: %s", #expr, sc_err_name(rc_), sc_err_detail());        \
	} while (0)

/* Asserts that expr fails with code want, and that a detail was recorded. */
#define SC_ASSERT_ERR(expr, want)                                                                  \
	do {                                                                                       \
		sc_errf(SC_OK, "%s", "");                                                          \
		sc_err rc_ = (expr);                                                               \
		if (rc_ != (want))                                                                 \
			fail_msg("%s -> %s (want %s): %s", #expr, sc_err_name(rc_),                \
				 sc_err_name(want), sc_err_detail());                              \
		if (sc_err_detail()[0] == '\0')                                                    \
			fail_msg("%s failed with no detail for the user", #expr);                  \
	} while (0)

/* A fresh directory for this test process under $SC_TEST_TMP (or /tmp),
 * created on first use. Borrowed static string. */
const char *sc_test_dir(void);
/* Writes "<sc_test_dir()>/<name>" into buf (size bytes); returns buf. */
char *sc_test_path(char *buf, size_t size, const char *name);
/* Fills x with n normal(0, std) values from a seeded stream. */
void sc_test_fill_normal(float *x, size_t n, uint64_t seed, float std);
/* max_i |a - b| / max(max_i |b|, floor). */
double sc_test_max_rel_err(const float *a, const float *b, size_t n, double floor);
/* Writes len bytes to path; returns 0 on success. */
int sc_test_write_file(const char *path, const void *data, size_t len);

/* The backends of a CUDA parity test: *gpu on cuda:0, *gpu_tf32 a second
 * context on it with TF32 GEMMs, *cpu the reference. 0 when all are open;
 * 77 (the skip status) when no CUDA device is visible; 1 on any other
 * failure, reported on stderr under prog's name. */
int sc_test_open_cuda(const char *prog, sc_backend **gpu, sc_backend **gpu_tf32, sc_backend **cpu);
/* Frees what sc_test_open_cuda opened. */
void sc_test_close_cuda(sc_backend *gpu, sc_backend *gpu_tf32, sc_backend *cpu);

#endif
