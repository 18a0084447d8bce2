/* ops_test.c — the CPU backend's operations: forwards against straightforward
 * double-precision loops written here, backwards against central finite
 * differences of those loops (projected onto a random dout, so each
 * difference is of one scalar), GEMM layouts, AdamW against torch's formula
 * in double, and determinism. Both families' operations: LayerNorm, GELU
 * and learned positions (GPT-2); RMSNorm, rotary embeddings, SwiGLU and
 * attention with grouped key/value heads and sliding windows (Llama).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sc_backend.h"
#include "sc_rng.h"
#include "testutil.h"

#define FWD_TOL 1e-5 /* float result vs double reference, relative to its max */
#define FD_TOL  1e-5 /* analytic float gradient vs finite differences */
#define FD_H    1e-4 /* finite-difference step (the references are double) */

/* ---- helpers ---- */

static float *host_normal(size_t n, uint64_t seed, float std)
{
	float *x = malloc((n ? n : 1) * sizeof(float));
	assert_non_null(x);
	sc_test_fill_normal(x, n, seed, std);
	return x;
}

/* A device buffer of n floats: a copy of host, or zeros when host is NULL. */
static float *dev_floats(sc_backend *be, const float *host, size_t n)
{
	void *p = NULL;
	SC_ASSERT_OK(be->ops->alloc(be, &p, n * sizeof(float)));
	if (host)
		SC_ASSERT_OK(be->ops->upload(be, p, host, n * sizeof(float)));
	return p;
}

static float *fetch(sc_backend *be, const float *dev, size_t n)
{
	float *h = malloc((n ? n : 1) * sizeof(float));
	assert_non_null(h);
	SC_ASSERT_OK(be->ops->download(be, h, dev, n * sizeof(float)));
	return h;
}

static double *to_double(const float *x, size_t n)
{
	double *d = malloc((n ? n : 1) * sizeof(double));
	assert_non_null(d);
	for (size_t i = 0; i < n; i++)
		d[i] = x[i];
	return d;
}

/* Fails unless max |got - want| <= tol * max(max |want|, floor). */
static void expect_close(const char *what, const float *got, const double *want, size_t n,
			 double tol, double floor)
{
	double maxdiff = 0.0, maxref = floor;
	size_t worst = 0;
	for (size_t i = 0; i < n; i++) {
		double d = fabs(got[i] - want[i]);
		if (!(d <= maxdiff)) {
			maxdiff = isnan(d) ? INFINITY : d;
			worst = i;
		}
		if (fabs(want[i]) > maxref)
			maxref = fabs(want[i]);
	}
	if (maxdiff > tol * maxref)
		fail_msg("%s: relative error %.3g > %.3g (at %zu: got %.9g want %.9g)", what,
			 maxdiff / maxref, tol, worst, (double)got[worst], want[worst]);
}

/* Fails unless |got - want| <= tol * max(|want|, floor) element by element. */
static void expect_close_each(const char *what, const float *got, const double *want, size_t n,
			      double tol, double floor)
{
	for (size_t i = 0; i < n; i++) {
		double scale = fabs(want[i]) > floor ? fabs(want[i]) : floor;
		if (!(fabs(got[i] - want[i]) <= tol * scale))
			fail_msg("%s: at %zu got %.9g want %.9g", what, i, (double)got[i], want[i]);
	}
}

/* A scalar function of x, for finite differences. */
typedef double (*scalar_fn)(const double *x, void *arg);

/* g[j] = dF/dx[idx[j]] by central differences, j < nidx (idx NULL: every
 * coordinate, nidx = n). x is restored. */
static void fd_grad(double *g, scalar_fn f, void *arg, double *x, const size_t *idx, size_t nidx)
{
	for (size_t j = 0; j < nidx; j++) {
		size_t i = idx ? idx[j] : j;
		double x0 = x[i];
		x[i] = x0 + FD_H;
		double fp = f(x, arg);
		x[i] = x0 - FD_H;
		double fm = f(x, arg);
		x[i] = x0;
		g[j] = (fp - fm) / (2 * FD_H);
	}
}

static double dot(const double *a, const double *b, size_t n)
{
	double s = 0.0;
	for (size_t i = 0; i < n; i++)
		s += a[i] * b[i];
	return s;
}

/* ---- double-precision references ---- */

static void ref_layernorm(double *y, const double *x, const double *w, const double *b, int N,
			  int C, double eps)
{
	for (int i = 0; i < N; i++) {
		const double *xi = x + (size_t)i * C;
		double m = 0.0, v = 0.0;
		for (int j = 0; j < C; j++)
			m += xi[j];
		m /= C;
		for (int j = 0; j < C; j++)
			v += (xi[j] - m) * (xi[j] - m);
		double rs = 1.0 / sqrt(v / C + eps);
		for (int j = 0; j < C; j++)
			y[(size_t)i * C + j] = (xi[j] - m) * rs * w[j] + b[j];
	}
}

static double ref_gelu(double x)
{
	return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

/* Sum of the row losses, -log softmax(row)[target] (0 for target < 0). */
static double ref_crossentropy(double *losses, const double *logits, const int32_t *targets, int N,
			       int V)
{
	double total = 0.0;
	for (int i = 0; i < N; i++) {
		const double *r = logits + (size_t)i * V;
		double mx = -INFINITY, s = 0.0, loss = 0.0;
		if (targets[i] >= 0) {
			for (int j = 0; j < V; j++)
				mx = r[j] > mx ? r[j] : mx;
			for (int j = 0; j < V; j++)
				s += exp(r[j] - mx);
			loss = mx + log(s) - r[targets[i]];
		}
		if (losses)
			losses[i] = loss;
		total += loss;
	}
	return total;
}

/* ---- memory ---- */

static void memory_alloc_copy_zero(void **state)
{
	sc_backend *be = *state;
	const size_t sizes[] = { 0, 1, 3, 64, 1000, 1 << 20 };
	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		unsigned char *p = NULL;
		SC_ASSERT_OK(be->ops->alloc(be, (void **)&p, sizes[s]));
		assert_non_null(p);
		assert_int_equal((uintptr_t)p % 64, 0);
		for (size_t i = 0; i < sizes[s]; i++)
			assert_int_equal(p[i], 0);
		be->ops->free_buf(be, p);
	}
	be->ops->free_buf(be, NULL);

	float src[100], back[100];
	for (int i = 0; i < 100; i++)
		src[i] = (float)i - 50.5f;
	float *a = dev_floats(be, src, 100), *b = dev_floats(be, NULL, 100);
	SC_ASSERT_OK(be->ops->copy(be, b, a, sizeof(src)));
	SC_ASSERT_OK(be->ops->zero(be, a, 10 * sizeof(float)));
	SC_ASSERT_OK(be->ops->sync(be));
	SC_ASSERT_OK(be->ops->download(be, back, b, sizeof(back)));
	assert_memory_equal(back, src, sizeof(src));
	SC_ASSERT_OK(be->ops->download(be, back, a, sizeof(back)));
	for (int i = 0; i < 100; i++)
		assert_true(back[i] == (i < 10 ? 0.0f : src[i]));
	be->ops->free_buf(be, a);
	be->ops->free_buf(be, b);
}

static void memory_alloc_failure(void **state)
{
#if defined(__SANITIZE_ADDRESS__)
	skip(); /* AddressSanitizer reports an impossible allocation as a bug */
#else
	sc_backend *be = *state;
	void *p = (void *)1;
	SC_ASSERT_ERR(be->ops->alloc(be, &p, SIZE_MAX / 2), SC_ENOMEM);
	assert_null(p);
#endif
}

/* ---- gemm ---- */

/* All four transpose combinations, strides wider than the rows, NaN in the
 * padding (which must never be read) and a sentinel in C's padding (which
 * must never be written). */
static void gemm_layouts(void **state)
{
	sc_backend *be = *state;
	const int shapes[2][3] = { { 7, 5, 9 }, { 67, 33, 129 } };
	for (int s = 0; s < 2; s++)
		for (int ta = 0; ta < 2; ta++)
			for (int tb = 0; tb < 2; tb++) {
				int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
				int arows = ta ? k : m, acols = ta ? m : k, lda = acols + 3;
				int brows = tb ? n : k, bcols = tb ? k : n, ldb = bcols + 2;
				int ldc = n + 4;
				float alpha = 0.75f, beta = -0.5f;
				float *a = host_normal((size_t)arows * lda, 11 + s, 1.0f);
				float *b = host_normal((size_t)brows * ldb, 12 + s, 1.0f);
				float *c = host_normal((size_t)m * ldc, 13 + s, 1.0f);
				for (int i = 0; i < arows; i++)
					for (int j = acols; j < lda; j++)
						a[(size_t)i * lda + j] = NAN;
				for (int i = 0; i < brows; i++)
					for (int j = bcols; j < ldb; j++)
						b[(size_t)i * ldb + j] = NAN;
				for (int i = 0; i < m; i++)
					for (int j = n; j < ldc; j++)
						c[(size_t)i * ldc + j] = 12345.0f;
				double *want = malloc((size_t)m * ldc * sizeof(double));
				assert_non_null(want);
				for (int i = 0; i < m; i++)
					for (int j = 0; j < ldc; j++) {
						double acc = 0.0;
						for (int p = 0; p < k && j < n; p++) {
							double av = ta ? a[(size_t)p * lda + i]
								       : a[(size_t)i * lda + p];
							double bv = tb ? b[(size_t)j * ldb + p]
								       : b[(size_t)p * ldb + j];
							acc += av * bv;
						}
						size_t o = (size_t)i * ldc + j;
						want[o] = j < n ? alpha * acc + beta * (double)c[o]
								: c[o];
					}
				float *da = dev_floats(be, a, (size_t)arows * lda);
				float *db = dev_floats(be, b, (size_t)brows * ldb);
				float *dc = dev_floats(be, c, (size_t)m * ldc);
				SC_ASSERT_OK(be->ops->gemm(be, ta, tb, m, n, k, alpha, da, lda, db,
							   ldb, beta, dc, ldc));
				float *got = fetch(be, dc, (size_t)m * ldc);
				expect_close("gemm", got, want, (size_t)m * ldc, FWD_TOL, 1.0);
				for (int i = 0; i < m; i++)
					for (int j = n; j < ldc; j++)
						assert_true(got[(size_t)i * ldc + j] == 12345.0f);
				be->ops->free_buf(be, da);
				be->ops->free_buf(be, db);
				be->ops->free_buf(be, dc);
				free(a);
				free(b);
				free(c);
				free(want);
				free(got);
			}
}

static void gemm_rejects_bad_shape(void **state)
{
	sc_backend *be = *state;
	float *x = dev_floats(be, NULL, 64);
	SC_ASSERT_ERR(be->ops->gemm(be, 0, 0, 4, 4, 4, 1.0f, x, 3, x, 4, 0.0f, x, 4), SC_EINVAL);
	SC_ASSERT_ERR(be->ops->gemm(be, 1, 0, 4, 2, 3, 1.0f, x, 3, x, 2, 0.0f, x, 2), SC_EINVAL);
	SC_ASSERT_ERR(be->ops->gemm(be, 0, 0, -1, 4, 4, 1.0f, x, 4, x, 4, 0.0f, x, 4), SC_EINVAL);
	SC_ASSERT_OK(be->ops->gemm(be, 0, 0, 0, 4, 4, 1.0f, x, 4, x, 4, 0.0f, x, 4));
	be->ops->free_buf(be, x);
}

/* ---- encoder, add, add_bias ---- */

/* With learned positions (GPT-2) and without (wpe NULL: rotary families). */
static void encoder_forward(void **state)
{
	sc_backend *be = *state;
	enum { B = 2, T = 5, C = 12, V = 17 };
	for (int with_pos = 1; with_pos >= 0; with_pos--) {
		int32_t tokens[B * T] = { 0, 16, 3, 3, 9, 1, 2, 15, 8, 0 };
		float *wte = host_normal(V * C, 21, 1.0f), *wpe = host_normal(T * C, 22, 1.0f);
		double want[B * T * C];
		for (int i = 0; i < B * T; i++)
			for (int j = 0; j < C; j++)
				want[i * C + j] = (double)wte[tokens[i] * C + j] +
						  (with_pos ? wpe[(i % T) * C + j] : 0.0);
		int32_t *dtok = NULL;
		SC_ASSERT_OK(be->ops->alloc(be, (void **)&dtok, sizeof(tokens)));
		SC_ASSERT_OK(be->ops->upload(be, dtok, tokens, sizeof(tokens)));
		float *dwte = dev_floats(be, wte, V * C);
		float *dwpe = with_pos ? dev_floats(be, wpe, T * C) : NULL;
		float *junk = host_normal(B * T * C, 23, 100.0f); /* every entry is written */
		float *dout = dev_floats(be, junk, B * T * C);
		SC_ASSERT_OK(be->ops->encoder_forward(be, dout, dtok, dwte, dwpe, B, T, C));
		float *got = fetch(be, dout, B * T * C);
		expect_close_each(with_pos ? "encoder" : "encoder without positions", got, want,
				  B * T * C, 1e-7, 1e-30);
		if (!with_pos) /* a plain copy of the embedding rows */
			for (int i = 0; i < B * T; i++)
				assert_memory_equal(got + i * C, wte + tokens[i] * C,
						    C * sizeof(float));
		tokens[3] = -1;
		SC_ASSERT_OK(be->ops->upload(be, dtok, tokens, sizeof(tokens)));
		SC_ASSERT_ERR(be->ops->encoder_forward(be, dout, dtok, dwte, dwpe, B, T, C),
			      SC_ERANGE);
		be->ops->free_buf(be, dtok);
		be->ops->free_buf(be, dwte);
		be->ops->free_buf(be, dwpe);
		be->ops->free_buf(be, dout);
		free(wte);
		free(wpe);
		free(junk);
		free(got);
	}
}

static void add_and_alias(void **state)
{
	sc_backend *be = *state;
	size_t n = 100003; /* above the parallel threshold, not a multiple of anything */
	float *a = host_normal(n, 31, 1.0f), *b = host_normal(n, 32, 2.0f);
	double *want = malloc(n * sizeof(double));
	assert_non_null(want);
	for (size_t i = 0; i < n; i++)
		want[i] = (double)a[i] + b[i];
	float *da = dev_floats(be, a, n), *db = dev_floats(be, b, n),
	      *dout = dev_floats(be, NULL, n);
	SC_ASSERT_OK(be->ops->add(be, dout, da, db, n));
	float *got = fetch(be, dout, n);
	expect_close_each("add", got, want, n, 1e-7, 1e-30);
	/* out aliasing a, then b. */
	SC_ASSERT_OK(be->ops->add(be, da, da, db, n));
	float *got2 = fetch(be, da, n);
	assert_memory_equal(got, got2, n * sizeof(float));
	SC_ASSERT_OK(be->ops->upload(be, da, a, n * sizeof(float)));
	SC_ASSERT_OK(be->ops->add(be, db, da, db, n));
	free(got2);
	got2 = fetch(be, db, n);
	assert_memory_equal(got, got2, n * sizeof(float));
	SC_ASSERT_OK(be->ops->add(be, dout, da, da, 0));
	be->ops->free_buf(be, da);
	be->ops->free_buf(be, db);
	be->ops->free_buf(be, dout);
	free(a);
	free(b);
	free(want);
	free(got);
	free(got2);
}

/* out (N,OC) rows ldo apart: only the first OC columns of each row change;
 * the gap columns (ldo > OC, a column block of a wider matrix) keep their
 * bytes, NaN included. */
static void add_bias(void **state)
{
	sc_backend *be = *state;
	static const struct {
		const char *name;
		int N, OC, ldo;
	} cases[] = {
		{ "dense rows", 37, 29, 29 },
		{ "column block", 37, 29, 40 },
		{ "column block, parallel rows", 300, 129, 200 },
	};
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		int N = cases[c].N, OC = cases[c].OC, ldo = cases[c].ldo;
		size_t n = (size_t)N * ldo;
		float *x = host_normal(n, 41 + c, 1.0f), *bias = host_normal(OC, 42 + c, 1.0f);
		for (int i = 0; i < N; i++)
			for (int j = OC; j < ldo; j++)
				x[(size_t)i * ldo + j] = (j - OC) % 2 ? NAN : (float)(i * 1000 + j);
		double *want = malloc(n * sizeof(double));
		assert_non_null(want);
		for (int i = 0; i < N; i++)
			for (int j = 0; j < OC; j++)
				want[(size_t)i * OC + j] = (double)x[(size_t)i * ldo + j] + bias[j];
		float *dx = dev_floats(be, x, n), *db = dev_floats(be, bias, OC);
		SC_ASSERT_OK(be->ops->add_bias(be, dx, db, N, OC, ldo));
		float *got = fetch(be, dx, n), *cols = malloc((size_t)N * OC * sizeof(float));
		assert_non_null(cols);
		for (int i = 0; i < N; i++) {
			memcpy(cols + (size_t)i * OC, got + (size_t)i * ldo, OC * sizeof(float));
			if (ldo > OC && memcmp(got + (size_t)i * ldo + OC, x + (size_t)i * ldo + OC,
					       (size_t)(ldo - OC) * sizeof(float)))
				fail_msg("add_bias %s: row %d's gap columns changed", cases[c].name,
					 i);
		}
		expect_close_each(cases[c].name, cols, want, (size_t)N * OC, 1e-7, 1e-30);
		be->ops->free_buf(be, dx);
		be->ops->free_buf(be, db);
		free(x);
		free(bias);
		free(want);
		free(got);
		free(cols);
	}
	float *x = dev_floats(be, NULL, 64);
	SC_ASSERT_ERR(be->ops->add_bias(be, x, x, 2, 8, 7), SC_EINVAL); /* ldo < OC */
	be->ops->free_buf(be, x);
}

/* ---- layernorm ---- */

static void layernorm_forward(void **state)
{
	sc_backend *be = *state;
	enum { N = 9, C = 48 };
	float eps = 1e-5f;
	float *x = host_normal(N * C, 51, 2.0f), *w = host_normal(C, 52, 1.0f);
	float *b = host_normal(C, 53, 1.0f);
	for (int j = 0; j < C; j++)
		x[3 * C + j] += 40.0f; /* a row with a large mean */
	double *xd = to_double(x, N * C), *wd = to_double(w, C), *bd = to_double(b, C);
	double want[N * C];
	ref_layernorm(want, xd, wd, bd, N, C, eps);
	float *dx = dev_floats(be, x, N * C), *dw = dev_floats(be, w, C),
	      *db = dev_floats(be, b, C);
	float *dy = dev_floats(be, NULL, N * C), *dm = dev_floats(be, NULL, N);
	float *drs = dev_floats(be, NULL, N);
	SC_ASSERT_OK(be->ops->layernorm_forward(be, dy, dm, drs, dx, dw, db, N, C, eps));
	float *got = fetch(be, dy, N * C), *mean = fetch(be, dm, N), *rstd = fetch(be, drs, N);
	expect_close("layernorm", got, want, N * C, FWD_TOL, 1.0);
	for (int i = 0; i < N; i++) {
		double m = 0.0, v = 0.0;
		for (int j = 0; j < C; j++)
			m += xd[i * C + j] / C;
		for (int j = 0; j < C; j++)
			v += (xd[i * C + j] - m) * (xd[i * C + j] - m) / C;
		assert_true(fabs(mean[i] - m) <= 1e-6 * (fabs(m) + 1.0));
		assert_true(fabs(rstd[i] - 1.0 / sqrt(v + eps)) <= 1e-6 / sqrt(v + eps));
	}
	float *bufs[] = { dx, dw, db, dy, dm, drs };
	for (int i = 0; i < 6; i++)
		be->ops->free_buf(be, bufs[i]);
	free(x);
	free(w);
	free(b);
	free(xd);
	free(wd);
	free(bd);
	free(got);
	free(mean);
	free(rstd);
}

struct ln_arg {
	const double *w, *b, *r;
	double *y;
	int N, C;
	double eps;
};

static double ln_scalar(const double *x, void *arg)
{
	struct ln_arg *a = arg;
	ref_layernorm(a->y, x, a->w, a->b, a->N, a->C, a->eps);
	return dot(a->y, a->r, (size_t)a->N * a->C);
}

static void layernorm_backward_fd(void **state)
{
	sc_backend *be = *state;
	enum { N = 6, C = 16 };
	float eps = 1e-5f;
	float *x = host_normal(N * C, 61, 1.5f), *w = host_normal(C, 62, 1.0f);
	float *b = host_normal(C, 63, 1.0f), *r = host_normal(N * C, 64, 1.0f);
	float *d0 = host_normal(N * C, 65, 0.1f); /* dinp accumulates onto this */
	double *xd = to_double(x, N * C), *wd = to_double(w, C), *bd = to_double(b, C);
	double *rd = to_double(r, N * C), y[N * C], g[N * C];
	struct ln_arg arg = { wd, bd, rd, y, N, C, eps };
	fd_grad(g, ln_scalar, &arg, xd, NULL, N * C);
	for (int i = 0; i < N * C; i++)
		g[i] += d0[i];

	float *dx = dev_floats(be, x, N * C), *dw = dev_floats(be, w, C),
	      *db = dev_floats(be, b, C);
	float *dy = dev_floats(be, NULL, N * C), *dm = dev_floats(be, NULL, N);
	float *drs = dev_floats(be, NULL, N), *dr = dev_floats(be, r, N * C);
	float *dinp = dev_floats(be, d0, N * C);
	SC_ASSERT_OK(be->ops->layernorm_forward(be, dy, dm, drs, dx, dw, db, N, C, eps));
	SC_ASSERT_OK(be->ops->layernorm_backward(be, dinp, dr, dx, dw, dm, drs, N, C));
	float *got = fetch(be, dinp, N * C);
	expect_close("layernorm backward", got, g, N * C, FD_TOL, 1e-2);
	float *bufs[] = { dx, dw, db, dy, dm, drs, dr, dinp };
	for (int i = 0; i < 8; i++)
		be->ops->free_buf(be, bufs[i]);
	free(x);
	free(w);
	free(b);
	free(r);
	free(d0);
	free(xd);
	free(wd);
	free(bd);
	free(rd);
	free(got);
}

/* ---- rmsnorm ---- */

static void ref_rmsnorm(double *y, const double *x, const double *w, int N, int C, double eps)
{
	for (int i = 0; i < N; i++) {
		const double *xi = x + (size_t)i * C;
		double ms = dot(xi, xi, C) / C, rs = 1.0 / sqrt(ms + eps);
		for (int j = 0; j < C; j++)
			y[(size_t)i * C + j] = xi[j] * rs * w[j];
	}
}

/* Rows of every magnitude: large, ordinary, and small enough that eps
 * matters; and rows enough to run in parallel. */
static void rmsnorm_forward(void **state)
{
	sc_backend *be = *state;
	static const struct {
		const char *name;
		int N, C;
	} cases[] = { { "small", 9, 48 }, { "parallel rows", 40, 1000 } };
	float eps = 1e-5f;
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		int N = cases[c].N, C = cases[c].C;
		size_t n = (size_t)N * C;
		float *x = host_normal(n, 191 + c, 2.0f), *w = host_normal(C, 192 + c, 1.0f);
		for (int j = 0; j < C; j++) {
			x[3 * C + j] = x[3 * C + j] * 1000.0f + 40.0f;
			x[5 * C + j] *= 1e-3f; /* mean square ~ eps */
		}
		double *xd = to_double(x, n), *wd = to_double(w, C);
		double *want = malloc(n * sizeof(double));
		assert_non_null(want);
		ref_rmsnorm(want, xd, wd, N, C, eps);
		float *dx = dev_floats(be, x, n), *dw = dev_floats(be, w, C);
		float *junk = host_normal(n, 193 + c, 100.0f);
		float *dy = dev_floats(be, junk, n), *drs = dev_floats(be, NULL, N);
		SC_ASSERT_OK(be->ops->rmsnorm_forward(be, dy, drs, dx, dw, N, C, eps));
		float *got = fetch(be, dy, n), *rstd = fetch(be, drs, N);
		expect_close(cases[c].name, got, want, n, FWD_TOL, 1.0);
		/* Each row against its own scale: the small row too. */
		for (int i = 0; i < N; i++) {
			char what[96];
			snprintf(what, sizeof(what), "rmsnorm %s row %d", cases[c].name, i);
			expect_close(what, got + (size_t)i * C, want + (size_t)i * C, C, FWD_TOL,
				     1e-30);
			double rs =
			    1.0 / sqrt(dot(xd + (size_t)i * C, xd + (size_t)i * C, C) / C + eps);
			if (!(fabs(rstd[i] - rs) <= 1e-6 * rs))
				fail_msg("%s: rstd %.9g want %.9g", what, (double)rstd[i], rs);
		}
		SC_ASSERT_ERR(be->ops->rmsnorm_forward(be, dy, drs, dx, dw, N, 0, eps), SC_EINVAL);
		float *bufs[] = { dx, dw, dy, drs };
		for (int i = 0; i < 4; i++)
			be->ops->free_buf(be, bufs[i]);
		free(x);
		free(w);
		free(xd);
		free(wd);
		free(want);
		free(junk);
		free(got);
		free(rstd);
	}
}

struct rms_arg {
	const double *w, *r;
	double *y;
	int N, C;
	double eps;
};

static double rms_scalar(const double *x, void *arg)
{
	struct rms_arg *a = arg;
	ref_rmsnorm(a->y, x, a->w, a->N, a->C, a->eps);
	return dot(a->y, a->r, (size_t)a->N * a->C);
}

/* Against central differences of sum(rmsnorm(x) * r), and against the
 * analytic gradient written out in double:
 *   dx = rs * w r - x rs^3 mean(w r x),  rs = 1 / sqrt(mean(x^2) + eps). */
static void rmsnorm_backward_fd(void **state)
{
	sc_backend *be = *state;
	enum { N = 6, C = 16 };
	float eps = 1e-5f;
	float *x = host_normal(N * C, 201, 1.5f), *w = host_normal(C, 202, 1.0f);
	float *r = host_normal(N * C, 203, 1.0f);
	float *d0 = host_normal(N * C, 204, 0.1f); /* dinp accumulates onto this */
	double *xd = to_double(x, N * C), *wd = to_double(w, C), *rd = to_double(r, N * C);
	double y[N * C], g[N * C], ga[N * C];
	struct rms_arg arg = { wd, rd, y, N, C, eps };
	fd_grad(g, rms_scalar, &arg, xd, NULL, N * C);
	for (int i = 0; i < N; i++) {
		const double *xi = xd + i * C, *ri = rd + i * C;
		double rs = 1.0 / sqrt(dot(xi, xi, C) / C + eps), m = 0.0;
		for (int j = 0; j < C; j++)
			m += wd[j] * ri[j] * xi[j] / C;
		for (int j = 0; j < C; j++)
			ga[i * C + j] = rs * wd[j] * ri[j] - xi[j] * rs * rs * rs * m;
	}
	for (int i = 0; i < N * C; i++) {
		g[i] += d0[i];
		ga[i] += d0[i];
	}

	float *dx = dev_floats(be, x, N * C), *dw = dev_floats(be, w, C);
	float *dy = dev_floats(be, NULL, N * C), *drs = dev_floats(be, NULL, N);
	float *dr = dev_floats(be, r, N * C), *dinp = dev_floats(be, d0, N * C);
	SC_ASSERT_OK(be->ops->rmsnorm_forward(be, dy, drs, dx, dw, N, C, eps));
	SC_ASSERT_OK(be->ops->rmsnorm_backward(be, dinp, dr, dx, dw, drs, N, C));
	float *got = fetch(be, dinp, N * C);
	expect_close("rmsnorm backward (finite differences)", got, g, N * C, FD_TOL, 1e-2);
	expect_close("rmsnorm backward (analytic)", got, ga, N * C, FWD_TOL, 1e-2);
	float *bufs[] = { dx, dw, dy, drs, dr, dinp };
	for (int i = 0; i < 6; i++)
		be->ops->free_buf(be, bufs[i]);
	free(x);
	free(w);
	free(r);
	free(d0);
	free(xd);
	free(wd);
	free(rd);
	free(got);
}

/* ---- rope ---- */

struct rope_case {
	const char *name;
	int B, T, NH, NKV, hs;
};

static const struct rope_case rope_cases[] = {
	{ "NH2 hs8", 2, 5, 2, 2, 8 },
	{ "gqa hs12", 2, 7, 4, 2, 12 },
	{ "mqa hs64, parallel rows", 2, 64, 8, 1, 64 },
};

/* The angle of pair i at position t: t * theta^(-2i/hs). */
static double rope_angle(int t, int i, int hs)
{
	return t * pow(10000.0, -2.0 * i / hs);
}

/* cos, sin (T, hs/2) as a family fills them. */
static void rope_tables(float *cs, float *sn, int T, int hs)
{
	for (int t = 0; t < T; t++)
		for (int i = 0; i < hs / 2; i++) {
			cs[t * (hs / 2) + i] = (float)cos(rope_angle(t, i, hs));
			sn[t * (hs / 2) + i] = (float)sin(rope_angle(t, i, hs));
		}
}

/* x rotated in double straight from the angles: each q and k head at
 * position t, x1 = x[:hs/2], x2 = x[hs/2:], becomes
 *   x1 cos a - x2 sin a | x2 cos a + x1 sin a   (a -> -a for the inverse);
 * v heads are copied. */
static void ref_rope(double *y, const float *x, const struct rope_case *s, int inverse)
{
	int ld = (s->NH + 2 * s->NKV) * s->hs, half = s->hs / 2;
	for (int bt = 0; bt < s->B * s->T; bt++)
		for (int j = 0; j < ld; j++) {
			size_t o = (size_t)bt * ld + j;
			int head = j / s->hs, i = j % s->hs;
			if (head >= s->NH + s->NKV) {
				y[o] = x[o];
				continue;
			}
			double a = rope_angle(bt % s->T, i % half, s->hs) * (inverse ? -1 : 1);
			const float *h = x + (size_t)bt * ld + (size_t)head * s->hs;
			y[o] = i < half ? h[i] * cos(a) - h[i + half] * sin(a)
					: h[i] * cos(a) + h[i - half] * sin(a);
		}
}

static size_t rope_n(const struct rope_case *s)
{
	return (size_t)s->B * s->T * (s->NH + 2 * s->NKV) * s->hs;
}

/* Forward and inverse against the formula; the v heads keep their bytes. */
static void rope_matches_formula(void **state)
{
	sc_backend *be = *state;
	for (size_t c = 0; c < sizeof(rope_cases) / sizeof(rope_cases[0]); c++) {
		const struct rope_case *s = &rope_cases[c];
		size_t n = rope_n(s), ntab = (size_t)s->T * (s->hs / 2);
		size_t ld = (size_t)(s->NH + 2 * s->NKV) * s->hs,
		       vo = (size_t)(s->NH + s->NKV) * s->hs;
		float *x = host_normal(n, 211 + c, 2.0f);
		float *cs = malloc(ntab * sizeof(float)), *sn = malloc(ntab * sizeof(float));
		double *want = malloc(n * sizeof(double));
		assert_true(cs && sn && want);
		rope_tables(cs, sn, s->T, s->hs);
		float *dcs = dev_floats(be, cs, ntab), *dsn = dev_floats(be, sn, ntab);
		for (int inverse = 0; inverse < 2; inverse++) {
			char what[96];
			snprintf(what, sizeof(what), "rope %s%s", s->name,
				 inverse ? " inverse" : "");
			ref_rope(want, x, s, inverse);
			float *dq = dev_floats(be, x, n);
			SC_ASSERT_OK(be->ops->rope(be, dq, dcs, dsn, s->B, s->T, s->NH, s->NKV,
						   s->hs, inverse));
			float *got = fetch(be, dq, n);
			/* absolute error 1e-6 for values up to 1, relative beyond */
			expect_close_each(what, got, want, n, 1e-6, 1.0);
			for (int bt = 0; bt < s->B * s->T; bt++)
				if (memcmp(got + bt * ld + vo, x + bt * ld + vo,
					   (ld - vo) * sizeof(float)))
					fail_msg("%s: v heads changed at row %d", what, bt);
			be->ops->free_buf(be, dq);
			free(got);
		}
		be->ops->free_buf(be, dcs);
		be->ops->free_buf(be, dsn);
		free(x);
		free(cs);
		free(sn);
		free(want);
	}
}

/* Forward then inverse restores the input; and the inverse is the
 * backward: <rope(x), y> = <x, rope^-1(y)> (the rotation's adjoint). */
static void rope_inverse_restores(void **state)
{
	sc_backend *be = *state;
	for (size_t c = 0; c < sizeof(rope_cases) / sizeof(rope_cases[0]); c++) {
		const struct rope_case *s = &rope_cases[c];
		size_t n = rope_n(s), ntab = (size_t)s->T * (s->hs / 2);
		float *x = host_normal(n, 221 + c, 2.0f), *y = host_normal(n, 222 + c, 1.0f);
		float *cs = malloc(ntab * sizeof(float)), *sn = malloc(ntab * sizeof(float));
		assert_true(cs && sn);
		rope_tables(cs, sn, s->T, s->hs);
		float *dcs = dev_floats(be, cs, ntab), *dsn = dev_floats(be, sn, ntab);
		float *dx = dev_floats(be, x, n), *dy = dev_floats(be, y, n);
		SC_ASSERT_OK(be->ops->rope(be, dx, dcs, dsn, s->B, s->T, s->NH, s->NKV, s->hs, 0));
		float *rx = fetch(be, dx, n);
		SC_ASSERT_OK(be->ops->rope(be, dx, dcs, dsn, s->B, s->T, s->NH, s->NKV, s->hs, 1));
		float *back = fetch(be, dx, n);
		double *xd = to_double(x, n);
		expect_close_each(s->name, back, xd, n, 1e-6, 1.0);
		SC_ASSERT_OK(be->ops->rope(be, dy, dcs, dsn, s->B, s->T, s->NH, s->NKV, s->hs, 1));
		float *ry = fetch(be, dy, n);
		double lhs = 0.0, rhs = 0.0, scale = 0.0;
		for (size_t i = 0; i < n; i++) {
			lhs += (double)rx[i] * y[i];
			rhs += (double)x[i] * ry[i];
			scale += fabs((double)x[i] * y[i]);
		}
		if (!(fabs(lhs - rhs) <= 1e-6 * scale))
			fail_msg("rope %s: <rope(x), y> = %.9g but <x, rope^-1(y)> = %.9g", s->name,
				 lhs, rhs);
		be->ops->free_buf(be, dcs);
		be->ops->free_buf(be, dsn);
		be->ops->free_buf(be, dx);
		be->ops->free_buf(be, dy);
		free(x);
		free(y);
		free(cs);
		free(sn);
		free(rx);
		free(back);
		free(xd);
		free(ry);
	}
	/* Rotation pairs need an even head size; heads must exist. */
	float *z = dev_floats(be, NULL, 64);
	SC_ASSERT_ERR(be->ops->rope(be, z, z, z, 1, 2, 2, 2, 7, 0), SC_EINVAL);
	SC_ASSERT_ERR(be->ops->rope(be, z, z, z, 1, 2, 4, 0, 4, 0), SC_EINVAL);
	be->ops->free_buf(be, z);
}

/* ---- swiglu ---- */

static double ref_silu(double g)
{
	return g / (1.0 + exp(-g));
}

/* gu (N,2F) = gate | up per row; out (N,F) = silu(gate) * up. Gates over
 * a line from -30 to 30 and at random. */
static void swiglu_forward(void **state)
{
	sc_backend *be = *state;
	static const struct {
		const char *name;
		int N, F;
	} cases[] = { { "small", 5, 37 }, { "parallel rows", 33, 1100 } };
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		int N = cases[c].N, F = cases[c].F;
		size_t n = (size_t)N * F;
		float *gu = host_normal(2 * n, 231 + c, 3.0f);
		for (int j = 0; j < F; j++) /* row 0's gates: a line */
			gu[j] = -30.0f + 60.0f * (float)j / (float)(F - 1);
		double *want = malloc(n * sizeof(double));
		assert_non_null(want);
		for (int i = 0; i < N; i++)
			for (int j = 0; j < F; j++) {
				const float *row = gu + (size_t)i * 2 * F;
				want[(size_t)i * F + j] = ref_silu(row[j]) * row[F + j];
			}
		float *dgu = dev_floats(be, gu, 2 * n);
		float *junk = host_normal(n, 233 + c, 100.0f), *dout = dev_floats(be, junk, n);
		SC_ASSERT_OK(be->ops->swiglu_forward(be, dout, dgu, N, F));
		float *got = fetch(be, dout, n);
		expect_close(cases[c].name, got, want, n, FWD_TOL, 1.0);
		expect_close_each(cases[c].name, got, want, n, FWD_TOL, 1e-3);
		SC_ASSERT_ERR(be->ops->swiglu_forward(be, dout, dgu, N, 0), SC_EINVAL);
		be->ops->free_buf(be, dgu);
		be->ops->free_buf(be, dout);
		free(gu);
		free(want);
		free(junk);
		free(got);
	}
}

/* dgu against central differences of sum(silu(gate) * up * r): elementwise,
 * one difference per input; dgu is overwritten. */
static void swiglu_backward_fd(void **state)
{
	sc_backend *be = *state;
	static const struct {
		const char *name;
		int N, F;
	} cases[] = { { "small", 6, 41 }, { "parallel rows", 33, 1100 } };
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		int N = cases[c].N, F = cases[c].F;
		size_t n = (size_t)N * F;
		float *gu = host_normal(2 * n, 241 + c, 2.0f), *r = host_normal(n, 242 + c, 1.0f);
		for (int j = 0; j < F; j++)
			gu[j] = -12.0f + 24.0f * (float)j / (float)(F - 1);
		double *g = malloc(2 * n * sizeof(double));
		assert_non_null(g);
		for (int i = 0; i < N; i++)
			for (int j = 0; j < F; j++) {
				size_t gi = (size_t)i * 2 * F + j, ui = gi + F;
				double gate = gu[gi], up = gu[ui], ri = r[(size_t)i * F + j];
				g[gi] = ri * up * (ref_silu(gate + FD_H) - ref_silu(gate - FD_H)) /
					(2 * FD_H);
				g[ui] =
				    ri * ref_silu(gate) * ((up + FD_H) - (up - FD_H)) / (2 * FD_H);
			}
		float *dgu_in = dev_floats(be, gu, 2 * n), *dr = dev_floats(be, r, n);
		float *junk = host_normal(2 * n, 243 + c, 100.0f);
		float *dd = dev_floats(be, junk, 2 * n);
		SC_ASSERT_OK(be->ops->swiglu_backward(be, dd, dr, dgu_in, N, F));
		float *got = fetch(be, dd, 2 * n);
		char what[96];
		snprintf(what, sizeof(what), "swiglu backward %s", cases[c].name);
		expect_close(what, got, g, 2 * n, FD_TOL, 1e-2);
		expect_close_each(what, got, g, 2 * n, FD_TOL, 1e-2);
		be->ops->free_buf(be, dgu_in);
		be->ops->free_buf(be, dr);
		be->ops->free_buf(be, dd);
		free(gu);
		free(r);
		free(g);
		free(junk);
		free(got);
	}
}

/* ---- attention ---- */

/* One attention shape (sc_attn_shape) with a name for the messages. */
struct attn_case {
	const char *name;
	int B, T, NH, NKV, hs, window;
};

static sc_attn_shape attn_shape(const struct attn_case *c)
{
	return (sc_attn_shape){
		.B = c->B, .T = c->T, .NH = c->NH, .NKV = c->NKV, .hs = c->hs, .window = c->window
	};
}

/* Floats of qkv (B,T,QKV), of out (B,T,NH*hs) and of the CPU's state
 * (B,NH,T,T). */
static size_t attn_nqkv(const struct attn_case *c)
{
	return (size_t)c->B * c->T * (c->NH + 2 * c->NKV) * c->hs;
}

static size_t attn_nout(const struct attn_case *c)
{
	return (size_t)c->B * c->T * c->NH * c->hs;
}

static size_t attn_natt(const struct attn_case *c)
{
	return (size_t)c->B * c->NH * c->T * c->T;
}

/* Whether query t sees key u. */
static int ref_visible(int t, int u, int window)
{
	return u <= t && (window == 0 || u > t - window);
}

/* out (B,T,NH*hs); att (B,NH,T,T) or NULL. Query head h reads key/value
 * head h / (NH / NKV); each query sees the keys ref_visible says. */
static void ref_attention(double *out, double *att, const double *qkv, const struct attn_case *s)
{
	int T = s->T, hs = s->hs, ld = (s->NH + 2 * s->NKV) * s->hs, G = s->NH / s->NKV;
	double scale = 1.0 / sqrt(hs);
	double *p = malloc((size_t)T * sizeof(double));
	assert_non_null(p);
	for (int b = 0; b < s->B; b++)
		for (int h = 0; h < s->NH; h++)
			for (int t = 0; t < T; t++) {
				const double *row = qkv + ((size_t)b * T + t) * ld;
				const double *q = row + (size_t)h * hs;
				size_t ko = (size_t)(s->NH + h / G) * hs;
				size_t vo = (size_t)(s->NH + s->NKV + h / G) * hs;
				double mx = -INFINITY, sum = 0.0;
				for (int u = 0; u < T; u++) {
					if (!ref_visible(t, u, s->window))
						continue;
					const double *k = qkv + ((size_t)b * T + u) * ld + ko;
					p[u] = dot(q, k, hs) * scale;
					mx = p[u] > mx ? p[u] : mx;
				}
				for (int u = 0; u < T; u++)
					if (ref_visible(t, u, s->window))
						sum += (p[u] = exp(p[u] - mx));
				double *o = out + ((size_t)b * T + t) * s->NH * hs + (size_t)h * hs;
				for (int d = 0; d < hs; d++)
					o[d] = 0.0;
				for (int u = 0; u < T; u++) {
					if (!ref_visible(t, u, s->window))
						continue;
					p[u] /= sum;
					const double *v = qkv + ((size_t)b * T + u) * ld + vo;
					for (int d = 0; d < hs; d++)
						o[d] += p[u] * v[d];
				}
				if (att) {
					double *a = att + (((size_t)b * s->NH + h) * T + t) * T;
					for (int u = 0; u < T; u++)
						a[u] = ref_visible(t, u, s->window) ? p[u] : 0.0;
				}
			}
	free(p);
}

/* GPT-2's heads (NKV = NH, hs = C / NH), grouped-query and multi-query
 * heads, a head size that divides nothing nicely, and sliding windows
 * shorter than T, longer than T, and across the CPU's 64-row blocks. */
static const struct attn_case attn_cases[] = {
	{ "gpt2 B2 T5 C8 NH2", 2, 5, 2, 2, 4, 0 },
	{ "gpt2 T1", 1, 1, 1, 1, 4, 0 },
	{ "gpt2 T130 (partial last block)", 2, 130, 3, 3, 8, 0 },
	{ "gpt2 T130 B1 NH2", 1, 130, 2, 2, 8, 0 },
	{ "gqa NH4 NKV2", 2, 7, 4, 2, 4, 0 },
	{ "mqa NH4 NKV1", 2, 6, 4, 1, 4, 0 },
	{ "gqa hs12", 2, 9, 4, 2, 12, 0 },
	{ "gqa hs12 T130", 1, 130, 4, 2, 12, 0 },
	{ "window 3", 2, 9, 2, 2, 4, 3 },
	{ "window 1 (itself only)", 1, 6, 2, 1, 4, 1 },
	{ "window longer than T", 1, 20, 2, 2, 4, 50 },
	{ "gqa window 70 T150", 1, 150, 4, 2, 12, 70 },
	{ "mqa window 64 T140", 2, 140, 2, 1, 8, 64 },
};

static void attention_forward_case(sc_backend *be, const struct attn_case *s, uint64_t seed)
{
	size_t nqkv = attn_nqkv(s), nout = attn_nout(s), natt = attn_natt(s);
	sc_attn_shape sh = attn_shape(s);
	char what[128];
	float *qkv = host_normal(nqkv, seed, 1.0f);
	double *qd = to_double(qkv, nqkv);
	double *want = malloc(nout * sizeof(double)), *watt = malloc(natt * sizeof(double));
	assert_non_null(want);
	assert_non_null(watt);
	ref_attention(want, watt, qd, s);
	float *dqkv = dev_floats(be, qkv, nqkv), *dout = dev_floats(be, NULL, nout);
	float *datt = dev_floats(be, NULL, natt);
	/* Garbage in att beforehand: every entry must be written. */
	float *junk = host_normal(natt, seed + 1, 100.0f);
	SC_ASSERT_OK(be->ops->upload(be, datt, junk, natt * sizeof(float)));
	SC_ASSERT_OK(be->ops->attention_forward(be, dout, datt, dqkv, &sh));
	float *got = fetch(be, dout, nout), *att = fetch(be, datt, natt);
	snprintf(what, sizeof(what), "attention out, %s", s->name);
	expect_close(what, got, want, nout, FWD_TOL, 1.0);
	snprintf(what, sizeof(what), "attention att, %s", s->name);
	expect_close(what, att, watt, natt, FWD_TOL, 1.0);
	/* The keys a query does not see have probability 0 exactly. */
	for (size_t bh = 0; bh < (size_t)s->B * s->NH; bh++)
		for (int t = 0; t < s->T; t++)
			for (int u = 0; u < s->T; u++)
				if (!ref_visible(t, u, s->window) &&
				    att[(bh * s->T + t) * s->T + u] != 0.0f)
					fail_msg("%s: att[%zu][%d][%d] = %g, want 0", s->name, bh,
						 t, u, (double)att[(bh * s->T + t) * s->T + u]);
	be->ops->free_buf(be, dqkv);
	be->ops->free_buf(be, dout);
	be->ops->free_buf(be, datt);
	free(qkv);
	free(qd);
	free(want);
	free(watt);
	free(junk);
	free(got);
	free(att);
}

static void attention_forward(void **state)
{
	for (size_t c = 0; c < sizeof(attn_cases) / sizeof(attn_cases[0]); c++)
		attention_forward_case(*state, &attn_cases[c], 71 + 2 * c);
}

struct attn_arg {
	const struct attn_case *s;
	const double *r;
	double *out;
};

static double attn_scalar(const double *qkv, void *arg)
{
	struct attn_arg *a = arg;
	ref_attention(a->out, NULL, qkv, a->s);
	return dot(a->out, a->r, attn_nout(a->s));
}

/* Checks dqkv against central differences of the reference, at every
 * coordinate (npick 0) or at npick coordinates drawn a third each from the
 * q, k and v heads of random positions. */
static void attention_backward_case(sc_backend *be, const struct attn_case *s, uint64_t seed,
				    size_t npick)
{
	size_t nqkv = attn_nqkv(s), nout = attn_nout(s), natt = attn_natt(s);
	size_t ld = (size_t)(s->NH + 2 * s->NKV) * s->hs, nidx = npick ? npick : nqkv;
	size_t sec_lo[3] = { 0, (size_t)s->NH * s->hs, (size_t)(s->NH + s->NKV) * s->hs };
	size_t sec_n[3] = { (size_t)s->NH * s->hs, (size_t)s->NKV * s->hs, (size_t)s->NKV * s->hs };
	sc_attn_shape sh = attn_shape(s);
	char what[128];
	size_t *idx = malloc(nidx * sizeof(size_t));
	assert_non_null(idx);
	sc_rng rng;
	uint64_t key = seed + 3;
	sc_rng_seed(&rng, &key, 1);
	for (size_t j = 0; j < nidx; j++) {
		int sec = (int)(j % 3);
		idx[j] = npick ? sc_rng_below(&rng, (uint64_t)s->B * s->T) * ld + sec_lo[sec] +
				     sc_rng_below(&rng, sec_n[sec])
			       : j;
	}
	float *qkv = host_normal(nqkv, seed, 1.0f), *r = host_normal(nout, seed + 1, 1.0f);
	double *qd = to_double(qkv, nqkv), *rd = to_double(r, nout);
	double *out = malloc(nout * sizeof(double)), *g = malloc(nidx * sizeof(double));
	assert_non_null(out);
	assert_non_null(g);
	struct attn_arg arg = { s, rd, out };
	fd_grad(g, attn_scalar, &arg, qd, idx, nidx);

	float *dq = dev_floats(be, qkv, nqkv), *dout = dev_floats(be, NULL, nout);
	float *att = dev_floats(be, NULL, natt), *datt = dev_floats(be, NULL, natt);
	float *dr = dev_floats(be, r, nout), *dqkv = dev_floats(be, NULL, nqkv);
	/* dqkv is overwritten, not accumulated. */
	float *junk = host_normal(nqkv, seed + 2, 100.0f);
	SC_ASSERT_OK(be->ops->upload(be, dqkv, junk, nqkv * sizeof(float)));
	SC_ASSERT_OK(be->ops->attention_forward(be, dout, att, dq, &sh));
	SC_ASSERT_OK(be->ops->attention_backward(be, dqkv, datt, dr, dq, dout, att, &sh));
	float *got = fetch(be, dqkv, nqkv);
	float *picked = malloc(nidx * sizeof(float));
	assert_non_null(picked);
	for (size_t j = 0; j < nidx; j++)
		picked[j] = got[idx[j]];
	snprintf(what, sizeof(what), "attention backward, %s", s->name);
	expect_close(what, picked, g, nidx, FD_TOL, 1e-2);
	float *bufs[] = { dq, dout, att, datt, dr, dqkv };
	for (int i = 0; i < 6; i++)
		be->ops->free_buf(be, bufs[i]);
	free(idx);
	free(qkv);
	free(r);
	free(qd);
	free(rd);
	free(out);
	free(g);
	free(junk);
	free(got);
	free(picked);
}

/* Every coordinate of the small shapes; 90 of those with several causal
 * blocks. */
static void attention_backward_fd(void **state)
{
	for (size_t c = 0; c < sizeof(attn_cases) / sizeof(attn_cases[0]); c++) {
		const struct attn_case *s = &attn_cases[c];
		attention_backward_case(*state, s, 81 + 4 * c, s->T > 64 ? 90 : 0);
	}
}

/* Same inputs, same bytes: twice on one backend (2 threads), and on one
 * opened with 1 thread; for GQA the k/v gradients sum over a group's query
 * heads, in an order that must not follow the thread count. */
static void attention_deterministic(void **state)
{
	static const struct attn_case cases[] = {
		{ "mha", 2, 100, 4, 4, 8, 0 },
		{ "gqa", 2, 100, 4, 2, 12, 0 },
		{ "mqa window", 3, 100, 4, 1, 12, 37 },
	};
	sc_backend *be = *state, *be1 = NULL;
	SC_ASSERT_OK(sc_backend_cpu_open(&be1, 1));
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		const struct attn_case *s = &cases[c];
		sc_attn_shape sh = attn_shape(s);
		size_t nqkv = attn_nqkv(s), nout = attn_nout(s), natt = attn_natt(s);
		float *qkv = host_normal(nqkv, 101 + c, 1.0f),
		      *r = host_normal(nout, 102 + c, 1.0f);
		float *dq = dev_floats(be, qkv, nqkv), *dr = dev_floats(be, r, nout);
		float *res[3][3]; /* runs x (out, att, dqkv) */
		for (int run = 0; run < 3; run++) {
			sc_backend *b = run == 2 ? be1 : be;
			float *out = dev_floats(b, NULL, nout), *att = dev_floats(b, NULL, natt);
			float *datt = dev_floats(b, NULL, natt), *dqkv = dev_floats(b, NULL, nqkv);
			SC_ASSERT_OK(b->ops->attention_forward(b, out, att, dq, &sh));
			SC_ASSERT_OK(
			    b->ops->attention_backward(b, dqkv, datt, dr, dq, out, att, &sh));
			res[run][0] = fetch(b, out, nout);
			res[run][1] = fetch(b, att, natt);
			res[run][2] = fetch(b, dqkv, nqkv);
			b->ops->free_buf(b, out);
			b->ops->free_buf(b, att);
			b->ops->free_buf(b, datt);
			b->ops->free_buf(b, dqkv);
		}
		static const char *const names[3] = { "out", "att", "dqkv" };
		size_t sizes[3] = { nout, natt, nqkv };
		for (int run = 1; run < 3; run++)
			for (int k = 0; k < 3; k++)
				if (memcmp(res[0][k], res[run][k], sizes[k] * sizeof(float)))
					fail_msg("%s: %s differs %s", s->name, names[k],
						 run == 1 ? "between two runs"
							  : "between 2 threads and 1");
		for (int run = 0; run < 3; run++)
			for (int k = 0; k < 3; k++)
				free(res[run][k]);
		be->ops->free_buf(be, dq);
		be->ops->free_buf(be, dr);
		free(qkv);
		free(r);
	}
	sc_backend_free(be1);
}

static void attention_rejects_bad_shapes(void **state)
{
	static const struct attn_case bad[] = {
		{ "NH not a multiple of NKV", 1, 1, 4, 3, 2, 0 },
		{ "no key/value heads", 1, 1, 4, 0, 2, 0 },
		{ "no query heads", 1, 1, 0, 1, 2, 0 },
		{ "head size 0", 1, 1, 2, 2, 0, 0 },
		{ "negative window", 1, 4, 2, 2, 4, -1 },
		{ "negative B", -1, 4, 2, 2, 4, 0 },
		{ "negative T", 1, -4, 2, 2, 4, 0 },
	};
	sc_backend *be = *state;
	float *x = dev_floats(be, NULL, 64);
	for (size_t c = 0; c < sizeof(bad) / sizeof(bad[0]); c++) {
		sc_attn_shape sh = attn_shape(&bad[c]);
		size_t state_n = 1, scratch_n = 1;
		print_message("  %s\n", bad[c].name);
		SC_ASSERT_ERR(be->ops->attention_forward(be, x, x, x, &sh), SC_EINVAL);
		SC_ASSERT_ERR(be->ops->attention_backward(be, x, x, x, x, x, x, &sh), SC_EINVAL);
		SC_ASSERT_ERR(be->ops->attention_sizes(be, &sh, &state_n, &scratch_n), SC_EINVAL);
		assert_true(state_n == 0 && scratch_n == 0);
	}
	/* the CPU keeps the probabilities: (B,NH,T,T) of state and scratch, by
	 * query heads whatever the key/value heads */
	size_t state_n = 0, scratch_n = 0;
	sc_attn_shape sh = attn_shape(&attn_cases[0]);
	SC_ASSERT_OK(be->ops->attention_sizes(be, &sh, &state_n, &scratch_n));
	assert_true(state_n == 2 * 2 * 5 * 5 && scratch_n == state_n);
	sh = (sc_attn_shape){ .B = 2, .T = 5, .NH = 4, .NKV = 1, .hs = 12, .window = 3 };
	SC_ASSERT_OK(be->ops->attention_sizes(be, &sh, &state_n, &scratch_n));
	assert_true(state_n == 2 * 4 * 5 * 5 && scratch_n == state_n);
	be->ops->free_buf(be, x);
}

/* ---- gelu ---- */

static void gelu_forward(void **state)
{
	sc_backend *be = *state;
	size_t n = 2001 + 50000, nline = 2001;
	float *x = host_normal(n, 111, 2.0f);
	for (size_t i = 0; i < nline; i++)
		x[i] = -12.0f + 24.0f * (float)i / (float)(nline - 1);
	double *want = malloc(n * sizeof(double));
	assert_non_null(want);
	for (size_t i = 0; i < n; i++)
		want[i] = ref_gelu(x[i]);
	float *dx = dev_floats(be, x, n), *dy = dev_floats(be, NULL, n);
	SC_ASSERT_OK(be->ops->gelu_forward(be, dy, dx, n));
	float *got = fetch(be, dy, n);
	expect_close("gelu", got, want, n, FWD_TOL, 1.0);
	expect_close_each("gelu elementwise", got, want, n, FWD_TOL, 1e-3);
	be->ops->free_buf(be, dx);
	be->ops->free_buf(be, dy);
	free(x);
	free(want);
	free(got);
}

static void gelu_backward_fd(void **state)
{
	sc_backend *be = *state;
	size_t n = 1001 + 40000, nline = 1001;
	float *x = host_normal(n, 121, 2.0f), *r = host_normal(n, 122, 1.0f);
	for (size_t i = 0; i < nline; i++)
		x[i] = -10.0f + 20.0f * (float)i / (float)(nline - 1);
	double *g = malloc(n * sizeof(double));
	assert_non_null(g);
	for (size_t i = 0; i < n; i++) /* elementwise: one difference per input */
		g[i] = r[i] * (ref_gelu((double)x[i] + FD_H) - ref_gelu((double)x[i] - FD_H)) /
		       (2 * FD_H);
	float *dx = dev_floats(be, x, n), *dr = dev_floats(be, r, n), *dg = dev_floats(be, NULL, n);
	SC_ASSERT_OK(be->ops->gelu_backward(be, dg, dx, dr, n));
	float *got = fetch(be, dg, n);
	expect_close("gelu backward", got, g, n, FD_TOL, 1e-2);
	expect_close_each("gelu backward elementwise", got, g, n, FD_TOL, 1e-2);
	/* In place: dinp == dout gives the same bytes. */
	SC_ASSERT_OK(be->ops->gelu_backward(be, dr, dx, dr, n));
	float *got2 = fetch(be, dr, n);
	assert_memory_equal(got, got2, n * sizeof(float));
	be->ops->free_buf(be, dx);
	be->ops->free_buf(be, dr);
	be->ops->free_buf(be, dg);
	free(x);
	free(r);
	free(g);
	free(got);
	free(got2);
}

/* ---- crossentropy ---- */

static void crossentropy_forward(void **state)
{
	sc_backend *be = *state;
	/* A small vocabulary with a huge-offset row and ignored rows, and a
	 * large one (several float summation runs per row). */
	const int shapes[2][2] = { { 6, 37 }, { 3, 5000 } };
	for (int s = 0; s < 2; s++) {
		int N = shapes[s][0], V = shapes[s][1];
		size_t nl = (size_t)N * V;
		float *logits = host_normal(nl, 131 + s, 3.0f);
		int32_t targets[6] = { 5, 0, V - 1, -1, 7, -1 };
		for (int j = 0; j < V; j++)
			logits[(size_t)2 * V + j] += 1000.0f; /* exp() of these overflows */
		double *ld = to_double(logits, nl), want[6];
		ref_crossentropy(want, ld, targets, N, V);
		float *dl = dev_floats(be, logits, nl), *dloss = dev_floats(be, NULL, N);
		int32_t *dt = NULL;
		SC_ASSERT_OK(be->ops->alloc(be, (void **)&dt, sizeof(targets)));
		SC_ASSERT_OK(be->ops->upload(be, dt, targets, sizeof(targets)));
		SC_ASSERT_OK(be->ops->crossentropy(be, dloss, dl, dt, N, V, 1.0f));
		float *got = fetch(be, dloss, N);
		expect_close_each("crossentropy loss", got, want, N, FWD_TOL, 1e-2);
		/* With dscale 1 every valid row of dlogits sums to 0. */
		float *dlog = fetch(be, dl, nl);
		for (int i = 0; i < N; i++) {
			double sum = 0.0;
			for (int j = 0; j < V; j++)
				sum += dlog[(size_t)i * V + j];
			assert_true(fabs(sum) < 1e-5);
		}
		targets[1] = V;
		SC_ASSERT_OK(be->ops->upload(be, dt, targets, sizeof(targets)));
		SC_ASSERT_ERR(be->ops->crossentropy(be, dloss, dl, dt, N, V, 1.0f), SC_ERANGE);
		be->ops->free_buf(be, dl);
		be->ops->free_buf(be, dloss);
		be->ops->free_buf(be, dt);
		free(logits);
		free(ld);
		free(got);
		free(dlog);
	}
}

struct ce_arg {
	const int32_t *targets;
	int N, V;
	double dscale;
};

static double ce_scalar(const double *logits, void *arg)
{
	struct ce_arg *a = arg;
	return a->dscale * ref_crossentropy(NULL, logits, a->targets, a->N, a->V);
}

static void crossentropy_backward_fd(void **state)
{
	sc_backend *be = *state;
	enum { N = 6, V = 37 };
	int32_t targets[N] = { 3, -1, 36, 0, -1, 17 };
	float dscale = 0.25f; /* 1 / the valid rows */
	float *logits = host_normal(N * V, 141, 2.0f);
	double *ld = to_double(logits, N * V), g[N * V];
	struct ce_arg arg = { targets, N, V, dscale };
	fd_grad(g, ce_scalar, &arg, ld, NULL, N * V);
	float *dl = dev_floats(be, logits, N * V), *dloss = dev_floats(be, NULL, N);
	int32_t *dt = NULL;
	SC_ASSERT_OK(be->ops->alloc(be, (void **)&dt, sizeof(targets)));
	SC_ASSERT_OK(be->ops->upload(be, dt, targets, sizeof(targets)));
	SC_ASSERT_OK(be->ops->crossentropy(be, dloss, dl, dt, N, V, dscale));
	float *got = fetch(be, dl, N * V), *loss = fetch(be, dloss, N);
	expect_close("crossentropy backward", got, g, N * V, FD_TOL, 1e-2);
	for (int i = 0; i < N; i++)
		if (targets[i] < 0) {
			assert_true(loss[i] == 0.0f);
			for (int j = 0; j < V; j++)
				assert_true(got[i * V + j] == 0.0f);
		}
	be->ops->free_buf(be, dl);
	be->ops->free_buf(be, dloss);
	be->ops->free_buf(be, dt);
	free(logits);
	free(ld);
	free(got);
	free(loss);
}

/* ---- optimizer ---- */

/* Several steps against torch.optim.AdamW's formula evaluated in double. */
static void adamw_matches_reference(void **state)
{
	sc_backend *be = *state;
	enum { STEPS = 6 };
	size_t n = 40000;
	const double lr = 1e-3, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.01, gs = 0.5;
	float *p = host_normal(n, 151, 0.05f); /* LoRA-sized weights */
	double *pd = to_double(p, n), *p0 = to_double(p, n);
	double *md = calloc(n, sizeof(double)), *vd = calloc(n, sizeof(double));
	assert_non_null(md);
	assert_non_null(vd);
	float *dp = dev_floats(be, p, n), *dm = dev_floats(be, NULL, n);
	float *dv = dev_floats(be, NULL, n), *dg = dev_floats(be, NULL, n);
	for (int t = 1; t <= STEPS; t++) {
		float *grad = host_normal(n, 160 + t, t == 3 ? 1e-3f : 1.0f);
		for (size_t i = 0; i < n; i += 97)
			grad[i] = 0.0f;
		SC_ASSERT_OK(be->ops->upload(be, dg, grad, n * sizeof(float)));
		SC_ASSERT_OK(be->ops->adamw(be, dp, dm, dv, dg, n, (float)lr, (float)b1, (float)b2,
					    (float)eps, (float)wd, (float)gs, t));
		double bc1 = 1.0 - pow(b1, t), bc2 = 1.0 - pow(b2, t);
		for (size_t i = 0; i < n; i++) {
			double g = grad[i] * gs;
			pd[i] *= 1.0 - lr * wd;
			md[i] += (1.0 - b1) * (g - md[i]);
			vd[i] = vd[i] * b2 + (1.0 - b2) * g * g;
			pd[i] -= lr / bc1 * md[i] / (sqrt(vd[i]) / sqrt(bc2) + eps);
		}
		free(grad);
	}
	float *gp = fetch(be, dp, n), *gm = fetch(be, dm, n), *gv = fetch(be, dv, n);
	expect_close("adamw param", gp, pd, n, 1e-6, 1.0);
	expect_close("adamw m", gm, md, n, 1e-5, 1e-30);
	expect_close("adamw v", gv, vd, n, 1e-5, 1e-30);
	/* The updates themselves (param - initial), not just the params. */
	double *upd = malloc(n * sizeof(double));
	float *gupd = malloc(n * sizeof(float));
	assert_non_null(upd);
	assert_non_null(gupd);
	for (size_t i = 0; i < n; i++) {
		upd[i] = pd[i] - p0[i];
		gupd[i] = (float)((double)gp[i] - p0[i]);
	}
	expect_close("adamw update", gupd, upd, n, 1e-4, 1e-30);
	SC_ASSERT_ERR(
	    be->ops->adamw(be, dp, dm, dv, dg, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 1.0f, 0),
	    SC_EINVAL);
	float *bufs[] = { dp, dm, dv, dg };
	for (int i = 0; i < 4; i++)
		be->ops->free_buf(be, bufs[i]);
	free(p);
	free(pd);
	free(p0);
	free(md);
	free(vd);
	free(gp);
	free(gm);
	free(gv);
	free(upd);
	free(gupd);
}

/* ---- sumsq ---- */

static void sumsq_fixed_order(void **state)
{
	sc_backend *be = *state, *be1 = NULL;
	SC_ASSERT_OK(sc_backend_cpu_open(&be1, 1));
	const size_t sizes[] = { 0, 1, 1000, 300001 };
	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		size_t n = sizes[s];
		float *x = host_normal(n, 171 + s, 3.0f);
		double want = 0.0, got = -1.0, got1 = -1.0, again = -1.0;
		for (size_t i = 0; i < n; i++)
			want += (double)x[i] * x[i];
		float *dx = dev_floats(be, x, n);
		SC_ASSERT_OK(be->ops->sumsq(be, &got, dx, n));
		SC_ASSERT_OK(be->ops->sumsq(be, &again, dx, n));
		SC_ASSERT_OK(be1->ops->sumsq(be1, &got1, dx, n));
		assert_true(fabs(got - want) <= 1e-12 * want);
		assert_memory_equal(&got, &again, sizeof(got));
		assert_memory_equal(&got, &got1, sizeof(got));
		be->ops->free_buf(be, dx);
		free(x);
	}
	sc_backend_free(be1);
}

static void describe_names_blas(void **state)
{
	const char *d = sc_backend_cpu_describe();
	assert_non_null(d);
	assert_non_null(strstr(d, "OpenBLAS"));
	assert_non_null(strstr(d, "threads"));
}

static int group_setup(void **state)
{
	sc_backend *be = NULL;
	if (sc_backend_cpu_open(&be, 2) != SC_OK || strcmp(be->name, "cpu") != 0)
		return -1;
	*state = be;
	return 0;
}

static int group_teardown(void **state)
{
	sc_backend_free(*state);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(memory_alloc_copy_zero),
		cmocka_unit_test(memory_alloc_failure),
		cmocka_unit_test(gemm_layouts),
		cmocka_unit_test(gemm_rejects_bad_shape),
		cmocka_unit_test(encoder_forward),
		cmocka_unit_test(add_and_alias),
		cmocka_unit_test(add_bias),
		cmocka_unit_test(layernorm_forward),
		cmocka_unit_test(layernorm_backward_fd),
		cmocka_unit_test(rmsnorm_forward),
		cmocka_unit_test(rmsnorm_backward_fd),
		cmocka_unit_test(rope_matches_formula),
		cmocka_unit_test(rope_inverse_restores),
		cmocka_unit_test(attention_forward),
		cmocka_unit_test(attention_backward_fd),
		cmocka_unit_test(attention_deterministic),
		cmocka_unit_test(attention_rejects_bad_shapes),
		cmocka_unit_test(gelu_forward),
		cmocka_unit_test(gelu_backward_fd),
		cmocka_unit_test(swiglu_forward),
		cmocka_unit_test(swiglu_backward_fd),
		cmocka_unit_test(crossentropy_forward),
		cmocka_unit_test(crossentropy_backward_fd),
		cmocka_unit_test(adamw_matches_reference),
		cmocka_unit_test(sumsq_fixed_order),
		cmocka_unit_test(describe_names_blas),
	};
	return cmocka_run_group_tests_name("ops", tests, group_setup, group_teardown);
}
