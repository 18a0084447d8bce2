/* ops_test.c — the CPU backend's operations: forwards against straightforward
 * double-precision loops written here, backwards against central finite
 * differences of those loops (projected onto a random dout, so each
 * difference is of one scalar), GEMM layouts, AdamW against torch's formula
 * in double, and determinism.
 */
#include <math.h>
#include <stdint.h>
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

/* out (B,T,C); att (B,NH,T,T) or NULL. */
static void ref_attention(double *out, double *att, const double *qkv, int B, int T, int C, int NH)
{
	int hs = C / NH;
	double scale = 1.0 / sqrt(hs);
	double *p = malloc((size_t)T * sizeof(double));
	assert_non_null(p);
	for (int b = 0; b < B; b++)
		for (int h = 0; h < NH; h++)
			for (int t = 0; t < T; t++) {
				const double *q = qkv + ((size_t)b * T + t) * 3 * C + h * hs;
				double mx = -INFINITY, sum = 0.0;
				for (int u = 0; u <= t; u++) {
					const double *k =
					    qkv + ((size_t)b * T + u) * 3 * C + C + h * hs;
					p[u] = dot(q, k, hs) * scale;
					mx = p[u] > mx ? p[u] : mx;
				}
				for (int u = 0; u <= t; u++)
					sum += (p[u] = exp(p[u] - mx));
				double *o = out + ((size_t)b * T + t) * C + h * hs;
				for (int d = 0; d < hs; d++)
					o[d] = 0.0;
				for (int u = 0; u <= t; u++) {
					p[u] /= sum;
					const double *v =
					    qkv + ((size_t)b * T + u) * 3 * C + 2 * C + h * hs;
					for (int d = 0; d < hs; d++)
						o[d] += p[u] * v[d];
				}
				if (att) {
					double *a = att + (((size_t)b * NH + h) * T + t) * T;
					for (int u = 0; u < T; u++)
						a[u] = u <= t ? p[u] : 0.0;
				}
			}
	free(p);
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

static void encoder_forward(void **state)
{
	sc_backend *be = *state;
	enum { B = 2, T = 5, C = 12, V = 17 };
	int32_t tokens[B * T] = { 0, 16, 3, 3, 9, 1, 2, 15, 8, 0 };
	float *wte = host_normal(V * C, 21, 1.0f), *wpe = host_normal(T * C, 22, 1.0f);
	double want[B * T * C];
	for (int i = 0; i < B * T; i++)
		for (int j = 0; j < C; j++)
			want[i * C + j] = (double)wte[tokens[i] * C + j] + wpe[(i % T) * C + j];
	int32_t *dtok = NULL;
	SC_ASSERT_OK(be->ops->alloc(be, (void **)&dtok, sizeof(tokens)));
	SC_ASSERT_OK(be->ops->upload(be, dtok, tokens, sizeof(tokens)));
	float *dwte = dev_floats(be, wte, V * C), *dwpe = dev_floats(be, wpe, T * C);
	float *dout = dev_floats(be, NULL, B * T * C);
	SC_ASSERT_OK(be->ops->encoder_forward(be, dout, dtok, dwte, dwpe, B, T, C));
	float *got = fetch(be, dout, B * T * C);
	expect_close_each("encoder", got, want, B * T * C, 1e-7, 1e-30);
	tokens[3] = -1;
	SC_ASSERT_OK(be->ops->upload(be, dtok, tokens, sizeof(tokens)));
	SC_ASSERT_ERR(be->ops->encoder_forward(be, dout, dtok, dwte, dwpe, B, T, C), SC_ERANGE);
	be->ops->free_buf(be, dtok);
	be->ops->free_buf(be, dwte);
	be->ops->free_buf(be, dwpe);
	be->ops->free_buf(be, dout);
	free(wte);
	free(wpe);
	free(got);
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

static void add_bias(void **state)
{
	sc_backend *be = *state;
	enum { N = 37, OC = 29 };
	float *x = host_normal(N * OC, 41, 1.0f), *bias = host_normal(OC, 42, 1.0f);
	double want[N * OC];
	for (int i = 0; i < N; i++)
		for (int j = 0; j < OC; j++)
			want[i * OC + j] = (double)x[i * OC + j] + bias[j];
	float *dx = dev_floats(be, x, N * OC), *db = dev_floats(be, bias, OC);
	SC_ASSERT_OK(be->ops->add_bias(be, dx, db, N, OC));
	float *got = fetch(be, dx, N * OC);
	expect_close_each("add_bias", got, want, N * OC, 1e-7, 1e-30);
	be->ops->free_buf(be, dx);
	be->ops->free_buf(be, db);
	free(x);
	free(bias);
	free(got);
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

/* ---- attention ---- */

struct attn_case {
	int B, T, C, NH;
};

static void attention_forward_case(sc_backend *be, struct attn_case s, uint64_t seed)
{
	size_t nqkv = (size_t)s.B * s.T * 3 * s.C, nout = (size_t)s.B * s.T * s.C;
	size_t natt = (size_t)s.B * s.NH * s.T * s.T;
	float *qkv = host_normal(nqkv, seed, 1.0f);
	double *qd = to_double(qkv, nqkv);
	double *want = malloc(nout * sizeof(double)), *watt = malloc(natt * sizeof(double));
	assert_non_null(want);
	assert_non_null(watt);
	ref_attention(want, watt, qd, s.B, s.T, s.C, s.NH);
	float *dqkv = dev_floats(be, qkv, nqkv), *dout = dev_floats(be, NULL, nout);
	float *datt = dev_floats(be, NULL, natt);
	/* Garbage in att beforehand: every entry must be written. */
	float *junk = host_normal(natt, seed + 1, 100.0f);
	SC_ASSERT_OK(be->ops->upload(be, datt, junk, natt * sizeof(float)));
	SC_ASSERT_OK(be->ops->attention_forward(be, dout, datt, dqkv, s.B, s.T, s.C, s.NH));
	float *got = fetch(be, dout, nout), *att = fetch(be, datt, natt);
	expect_close("attention out", got, want, nout, FWD_TOL, 1.0);
	expect_close("attention att", att, watt, natt, FWD_TOL, 1.0);
	for (size_t bh = 0; bh < (size_t)s.B * s.NH; bh++)
		for (int t = 0; t < s.T; t++)
			for (int u = t + 1; u < s.T; u++)
				assert_true(att[(bh * s.T + t) * s.T + u] == 0.0f);
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
	attention_forward_case(*state, (struct attn_case){ 2, 5, 8, 2 }, 71);
	attention_forward_case(*state, (struct attn_case){ 1, 1, 4, 1 }, 72);
	/* Longer than one causal block, with a partial last block. */
	attention_forward_case(*state, (struct attn_case){ 2, 130, 24, 3 }, 73);
}

struct attn_arg {
	struct attn_case s;
	const double *r;
	double *out;
};

static double attn_scalar(const double *qkv, void *arg)
{
	struct attn_arg *a = arg;
	ref_attention(a->out, NULL, qkv, a->s.B, a->s.T, a->s.C, a->s.NH);
	return dot(a->out, a->r, (size_t)a->s.B * a->s.T * a->s.C);
}

/* Checks dqkv at nidx coordinates (all when idx is NULL). */
static void attention_backward_case(sc_backend *be, struct attn_case s, uint64_t seed,
				    const size_t *idx, size_t nidx)
{
	size_t nqkv = (size_t)s.B * s.T * 3 * s.C, nout = (size_t)s.B * s.T * s.C;
	size_t natt = (size_t)s.B * s.NH * s.T * s.T;
	float *qkv = host_normal(nqkv, seed, 1.0f), *r = host_normal(nout, seed + 1, 1.0f);
	double *qd = to_double(qkv, nqkv), *rd = to_double(r, nout);
	double *out = malloc(nout * sizeof(double)), *g = malloc(nqkv * sizeof(double));
	assert_non_null(out);
	assert_non_null(g);
	struct attn_arg arg = { s, rd, out };
	if (!idx)
		nidx = nqkv;
	fd_grad(g, attn_scalar, &arg, qd, idx, nidx);

	float *dq = dev_floats(be, qkv, nqkv), *dout = dev_floats(be, NULL, nout);
	float *att = dev_floats(be, NULL, natt), *datt = dev_floats(be, NULL, natt);
	float *dr = dev_floats(be, r, nout), *dqkv = dev_floats(be, NULL, nqkv);
	/* dqkv is overwritten, not accumulated. */
	float *junk = host_normal(nqkv, seed + 2, 100.0f);
	SC_ASSERT_OK(be->ops->upload(be, dqkv, junk, nqkv * sizeof(float)));
	SC_ASSERT_OK(be->ops->attention_forward(be, dout, att, dq, s.B, s.T, s.C, s.NH));
	SC_ASSERT_OK(
	    be->ops->attention_backward(be, dqkv, datt, dr, dq, dout, att, s.B, s.T, s.C, s.NH));
	float *got = fetch(be, dqkv, nqkv);
	float *picked = malloc(nidx * sizeof(float));
	assert_non_null(picked);
	for (size_t j = 0; j < nidx; j++)
		picked[j] = got[idx ? idx[j] : j];
	expect_close("attention backward", picked, g, nidx, FD_TOL, 1e-2);
	float *bufs[] = { dq, dout, att, datt, dr, dqkv };
	for (int i = 0; i < 6; i++)
		be->ops->free_buf(be, bufs[i]);
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

static void attention_backward_fd(void **state)
{
	attention_backward_case(*state, (struct attn_case){ 2, 5, 8, 2 }, 81, NULL, 0);
}

/* Several causal blocks: a random sample of coordinates, each of q, k, v. */
static void attention_backward_fd_blocks(void **state)
{
	struct attn_case s = { 1, 130, 16, 2 };
	enum { NPICK = 90 };
	size_t idx[NPICK];
	sc_rng rng;
	uint64_t key = 91;
	sc_rng_seed(&rng, &key, 1);
	for (int j = 0; j < NPICK; j++)
		idx[j] = sc_rng_below(&rng, (uint64_t)s.B * s.T * 3 * s.C);
	attention_backward_case(*state, s, 92, idx, NPICK);
}

/* Same inputs, same bytes: twice on one backend, and with 1 and 2 threads. */
static void attention_deterministic(void **state)
{
	sc_backend *be = *state, *be1 = NULL;
	SC_ASSERT_OK(sc_backend_cpu_open(&be1, 1));
	enum { B = 2, T = 100, C = 32, NH = 4 };
	size_t nqkv = (size_t)B * T * 3 * C, nout = (size_t)B * T * C,
	       natt = (size_t)B * NH * T * T;
	float *qkv = host_normal(nqkv, 101, 1.0f), *r = host_normal(nout, 102, 1.0f);
	float *dq = dev_floats(be, qkv, nqkv), *dr = dev_floats(be, r, nout);
	float *res[3][3]; /* runs x (out, att, dqkv) */
	for (int run = 0; run < 3; run++) {
		sc_backend *b = run == 2 ? be1 : be;
		float *out = dev_floats(b, NULL, nout), *att = dev_floats(b, NULL, natt);
		float *datt = dev_floats(b, NULL, natt), *dqkv = dev_floats(b, NULL, nqkv);
		SC_ASSERT_OK(b->ops->attention_forward(b, out, att, dq, B, T, C, NH));
		SC_ASSERT_OK(
		    b->ops->attention_backward(b, dqkv, datt, dr, dq, out, att, B, T, C, NH));
		res[run][0] = fetch(b, out, nout);
		res[run][1] = fetch(b, att, natt);
		res[run][2] = fetch(b, dqkv, nqkv);
		b->ops->free_buf(b, out);
		b->ops->free_buf(b, att);
		b->ops->free_buf(b, datt);
		b->ops->free_buf(b, dqkv);
	}
	size_t sizes[3] = { nout, natt, nqkv };
	for (int run = 1; run < 3; run++)
		for (int k = 0; k < 3; k++)
			assert_memory_equal(res[0][k], res[run][k], sizes[k] * sizeof(float));
	for (int run = 0; run < 3; run++)
		for (int k = 0; k < 3; k++)
			free(res[run][k]);
	be->ops->free_buf(be, dq);
	be->ops->free_buf(be, dr);
	free(qkv);
	free(r);
	sc_backend_free(be1);
}

static void attention_rejects_bad_heads(void **state)
{
	sc_backend *be = *state;
	float *x = dev_floats(be, NULL, 64);
	size_t state_n = 1, scratch_n = 1;
	SC_ASSERT_ERR(be->ops->attention_forward(be, x, x, x, 1, 1, 6, 4), SC_EINVAL);
	SC_ASSERT_ERR(be->ops->attention_sizes(be, 1, 1, 6, 4, &state_n, &scratch_n), SC_EINVAL);
	assert_true(state_n == 0 && scratch_n == 0);
	/* the CPU keeps the probabilities: (B,NH,T,T) of state and scratch */
	SC_ASSERT_OK(be->ops->attention_sizes(be, 2, 5, 8, 2, &state_n, &scratch_n));
	assert_true(state_n == 2 * 2 * 5 * 5 && scratch_n == state_n);
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
		cmocka_unit_test(attention_forward),
		cmocka_unit_test(attention_backward_fd),
		cmocka_unit_test(attention_backward_fd_blocks),
		cmocka_unit_test(attention_deterministic),
		cmocka_unit_test(attention_rejects_bad_heads),
		cmocka_unit_test(gelu_forward),
		cmocka_unit_test(gelu_backward_fd),
		cmocka_unit_test(crossentropy_forward),
		cmocka_unit_test(crossentropy_backward_fd),
		cmocka_unit_test(adamw_matches_reference),
		cmocka_unit_test(sumsq_fixed_order),
		cmocka_unit_test(describe_names_blas),
	};
	return cmocka_run_group_tests_name("ops", tests, group_setup, group_teardown);
}
