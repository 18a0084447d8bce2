/* cuda_test.c — the CUDA backend against the CPU backend, operation by
 * operation: the same fresh random inputs go to both, every output is
 * poisoned with NaN first (so an element the GPU fails to write fails the
 * comparison), and the results must agree to FP32_TOL relative to the
 * largest reference value (TF32_TOL for the TF32 GEMM). Exits 77 (skipped)
 * where no CUDA device is visible. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sc_backend.h"
#include "sc_rng.h"
#include "testutil.h"

#define FP32_TOL  1e-5
#define TF32_TOL  2e-3
#define REL_FLOOR 1e-6

static sc_backend *cpu, *gpu, *gpu_tf32;

/* One tensor held by both backends: c on the CPU, g on gpu (or gpu_tf32). */
typedef struct twin {
	sc_backend *gb;
	void *c, *g;
	size_t bytes;
} twin;

static twin twin_on(sc_backend *gb, size_t bytes)
{
	twin t = { gb, NULL, NULL, bytes };
	SC_ASSERT_OK(cpu->ops->alloc(cpu, &t.c, bytes));
	SC_ASSERT_OK(gb->ops->alloc(gb, &t.g, bytes));
	return t;
}

static twin twin_new(size_t nfloats)
{
	return twin_on(gpu, nfloats * sizeof(float));
}

static void twin_free(twin *t)
{
	cpu->ops->free_buf(cpu, t->c);
	t->gb->ops->free_buf(t->gb, t->g);
}

static void twin_upload(twin *t, const void *host)
{
	SC_ASSERT_OK(cpu->ops->upload(cpu, t->c, host, t->bytes));
	SC_ASSERT_OK(t->gb->ops->upload(t->gb, t->g, host, t->bytes));
}

static float *host_floats(size_t n)
{
	float *x = malloc((n ? n : 1) * sizeof(float));
	assert_non_null(x);
	return x;
}

/* Uploads normal(0, std) values to both sides. */
static void twin_random(twin *t, uint64_t seed, float std)
{
	size_t n = t->bytes / sizeof(float);
	float *x = host_floats(n);
	sc_test_fill_normal(x, n, seed, std);
	twin_upload(t, x);
	free(x);
}

static void twin_poison(twin *t)
{
	size_t n = t->bytes / sizeof(float);
	float *x = host_floats(n);
	for (size_t i = 0; i < n; i++)
		x[i] = NAN;
	twin_upload(t, x);
	free(x);
}

/* Downloads both sides and fails unless max rel err <= tol. */
static void twin_expect(twin *t, const char *what, double tol)
{
	size_t n = t->bytes / sizeof(float);
	float *hc = host_floats(n), *hg = host_floats(n);
	SC_ASSERT_OK(cpu->ops->download(cpu, hc, t->c, t->bytes));
	SC_ASSERT_OK(t->gb->ops->download(t->gb, hg, t->g, t->bytes));
	double err = sc_test_max_rel_err(hg, hc, n, REL_FLOOR);
	print_message("    %-28s max rel err %.3g (tol %.0e)\n", what, err, tol);
	free(hc);
	free(hg);
	if (!(err <= tol))
		fail_msg("%s: GPU and CPU differ: max rel err %.3g > %.0e", what, err, tol);
}

/* Both backends' side of a twin, for calling an op: F(t) on the CPU and
 * G(t) on the GPU. */
#define F(t)  ((float *)(t).c)
#define G(t)  ((float *)(t).g)
#define FI(t) ((int32_t *)(t).c)
#define GI(t) ((int32_t *)(t).g)

/* ---- memory ---- */

static void test_memory(void **state)
{
	size_t n = 1000;
	float *x = host_floats(n), *y = host_floats(n);
	void *a, *b;
	SC_ASSERT_OK(gpu->ops->alloc(gpu, &a, n * sizeof(float)));
	SC_ASSERT_OK(gpu->ops->alloc(gpu, &b, n * sizeof(float)));
	SC_ASSERT_OK(gpu->ops->download(gpu, y, a, n * sizeof(float)));
	for (size_t i = 0; i < n; i++)
		assert_true(y[i] == 0.0f); /* alloc zero-fills */
	sc_test_fill_normal(x, n, 1, 1.0f);
	SC_ASSERT_OK(gpu->ops->upload(gpu, a, x, n * sizeof(float)));
	SC_ASSERT_OK(gpu->ops->copy(gpu, b, a, n * sizeof(float)));
	SC_ASSERT_OK(gpu->ops->zero(gpu, (float *)b + 10, 20 * sizeof(float)));
	SC_ASSERT_OK(gpu->ops->sync(gpu));
	SC_ASSERT_OK(gpu->ops->download(gpu, y, b, n * sizeof(float)));
	for (size_t i = 0; i < n; i++)
		assert_true(y[i] == (i >= 10 && i < 30 ? 0.0f : x[i]));
	/* page-locked host memory round trip, in both directions */
	float *pin_in = NULL, *pin_out = NULL;
	SC_ASSERT_OK(gpu->ops->host_alloc(gpu, (void **)&pin_in, n * sizeof(float)));
	SC_ASSERT_OK(gpu->ops->host_alloc(gpu, (void **)&pin_out, n * sizeof(float)));
	memcpy(pin_in, x, n * sizeof(float));
	SC_ASSERT_OK(gpu->ops->upload(gpu, a, pin_in, n * sizeof(float)));
	SC_ASSERT_OK(gpu->ops->download(gpu, pin_out, a, n * sizeof(float)));
	assert_memory_equal(pin_in, pin_out, n * sizeof(float));
	/* queued upload, then a kernel on the same stream reads it */
	for (size_t i = 0; i < n; i++)
		pin_in[i] = (float)i;
	SC_ASSERT_OK(gpu->ops->upload_async(gpu, b, pin_in, n * sizeof(float)));
	SC_ASSERT_OK(gpu->ops->add(gpu, a, b, b, n));
	SC_ASSERT_OK(gpu->ops->download(gpu, pin_out, a, n * sizeof(float)));
	for (size_t i = 0; i < n; i++)
		assert_true(pin_out[i] == 2.0f * (float)i);
	gpu->ops->host_free(gpu, pin_in);
	gpu->ops->host_free(gpu, pin_out);
	gpu->ops->host_free(gpu, NULL);
	gpu->ops->free_buf(gpu, a);
	gpu->ops->free_buf(gpu, b);
	gpu->ops->free_buf(gpu, NULL);
	free(x);
	free(y);
}

static void test_open_bad_ordinal(void **state)
{
	sc_backend *be = NULL;
	SC_ASSERT_ERR(sc_backend_cuda_open(&be, 4096), SC_ENODEV);
	assert_null(be);
	assert_int_equal(sc_backend_has_cuda(), 1);
}

/* ---- GEMM ---- */

/* All four transpose combinations with padded row strides; beta = 0 over a
 * poisoned c, then beta != 0 over a random c. */
static void gemm_case(sc_backend *gb, int m, int n, int k, double tol, uint64_t seed)
{
	for (int tr = 0; tr < 4; tr++) {
		int ta = tr & 1, tb = tr >> 1;
		int lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 1, ldc = n + 2;
		twin a = twin_on(gb, (size_t)(ta ? k : m) * lda * sizeof(float));
		twin b = twin_on(gb, (size_t)(tb ? n : k) * ldb * sizeof(float));
		twin c = twin_on(gb, (size_t)m * ldc * sizeof(float));
		char what[64];
		twin_random(&a, seed + tr, 1.0f);
		twin_random(&b, seed + 10 + tr, 1.0f);
		for (int pass = 0; pass < 2; pass++) {
			float beta = pass ? 0.3f : 0.0f;
			if (pass)
				twin_random(&c, seed + 20 + tr, 1.0f);
			else
				twin_poison(&c);
			SC_ASSERT_OK(cpu->ops->gemm(cpu, ta, tb, m, n, k, 0.7f, F(a), lda, F(b),
						    ldb, beta, F(c), ldc));
			SC_ASSERT_OK(gb->ops->gemm(gb, ta, tb, m, n, k, 0.7f, G(a), lda, G(b), ldb,
						   beta, G(c), ldc));
			snprintf(what, sizeof(what), "gemm %c%c beta=%.1f", ta ? 'T' : 'N',
				 tb ? 'T' : 'N', beta);
			/* Padding columns of c: beta = 0 leaves NaN in both; skip them by
			 * comparing after zeroing the padding on both sides. */
			if (!pass) {
				for (int i = 0; i < m; i++) {
					SC_ASSERT_OK(cpu->ops->zero(cpu, F(c) + (size_t)i * ldc + n,
								    (ldc - n) * sizeof(float)));
					SC_ASSERT_OK(gb->ops->zero(gb, G(c) + (size_t)i * ldc + n,
								   (ldc - n) * sizeof(float)));
				}
			}
			twin_expect(&c, what, tol);
		}
		twin_free(&a);
		twin_free(&b);
		twin_free(&c);
	}
}

static void test_gemm_fp32(void **state)
{
	gemm_case(gpu, 67, 45, 33, FP32_TOL, 100);
	gemm_case(gpu, 1, 300, 1, FP32_TOL, 200);
}

static void test_gemm_tf32(void **state)
{
	gemm_case(gpu_tf32, 128, 96, 256, TF32_TOL, 300);
}

static void test_gemm_bad_args(void **state)
{
	SC_ASSERT_ERR(gpu->ops->gemm(gpu, 0, 0, -1, 2, 2, 1.0f, NULL, 2, NULL, 2, 0.0f, NULL, 2),
		      SC_EINVAL);
	SC_ASSERT_ERR(gpu->ops->gemm(gpu, 0, 0, 2, 4, 3, 1.0f, NULL, 2, NULL, 4, 0.0f, NULL, 4),
		      SC_EINVAL);
}

/* ---- encoder, layernorm ---- */

static void test_encoder_forward(void **state)
{
	int B = 3, T = 17, C = 40, V = 97;
	twin out = twin_new((size_t)B * T * C), wte = twin_new((size_t)V * C);
	twin wpe = twin_new((size_t)T * C), tok = twin_on(gpu, (size_t)B * T * sizeof(int32_t));
	int32_t tokens[3 * 17];
	sc_rng r;
	uint64_t key = 400;
	sc_rng_seed(&r, &key, 1);
	for (int i = 0; i < B * T; i++)
		tokens[i] = (int32_t)sc_rng_below(&r, (uint64_t)V);
	twin_upload(&tok, tokens);
	twin_random(&wte, 401, 0.5f);
	twin_random(&wpe, 402, 0.5f);
	twin_poison(&out);
	SC_ASSERT_OK(cpu->ops->encoder_forward(cpu, F(out), FI(tok), F(wte), F(wpe), B, T, C));
	SC_ASSERT_OK(gpu->ops->encoder_forward(gpu, G(out), GI(tok), G(wte), G(wpe), B, T, C));
	twin_expect(&out, "encoder_forward out", FP32_TOL);
	twin_free(&out);
	twin_free(&wte);
	twin_free(&wpe);
	twin_free(&tok);
}

static void test_layernorm(void **state)
{
	static const int Cs[] = { 64, 100, 768 };
	int N = 37;
	for (size_t ci = 0; ci < sizeof(Cs) / sizeof(Cs[0]); ci++) {
		int C = Cs[ci];
		size_t nc = (size_t)N * C;
		twin inp = twin_new(nc), w = twin_new(C), b = twin_new(C), out = twin_new(nc);
		twin mean = twin_new(N), rstd = twin_new(N), dout = twin_new(nc),
		     dinp = twin_new(nc);
		float *hm = host_floats(N), *hr = host_floats(N);
		twin_random(&inp, 500 + ci, 2.0f);
		twin_random(&w, 510 + ci, 1.0f);
		twin_random(&b, 520 + ci, 1.0f);
		twin_poison(&out);
		twin_poison(&mean);
		twin_poison(&rstd);
		SC_ASSERT_OK(cpu->ops->layernorm_forward(cpu, F(out), F(mean), F(rstd), F(inp),
							 F(w), F(b), N, C, 1e-5f));
		SC_ASSERT_OK(gpu->ops->layernorm_forward(gpu, G(out), G(mean), G(rstd), G(inp),
							 G(w), G(b), N, C, 1e-5f));
		print_message("  C=%d\n", C);
		twin_expect(&out, "layernorm_forward out", FP32_TOL);
		twin_expect(&mean, "layernorm_forward mean", FP32_TOL);
		twin_expect(&rstd, "layernorm_forward rstd", FP32_TOL);

		/* backward: the CPU's statistics go to both; dinp accumulates
		 * onto the same random values on both */
		SC_ASSERT_OK(cpu->ops->download(cpu, hm, F(mean), N * sizeof(float)));
		SC_ASSERT_OK(cpu->ops->download(cpu, hr, F(rstd), N * sizeof(float)));
		twin_upload(&mean, hm);
		twin_upload(&rstd, hr);
		twin_random(&dout, 530 + ci, 1.0f);
		twin_random(&dinp, 540 + ci, 1.0f);
		SC_ASSERT_OK(cpu->ops->layernorm_backward(cpu, F(dinp), F(dout), F(inp), F(w),
							  F(mean), F(rstd), N, C));
		SC_ASSERT_OK(gpu->ops->layernorm_backward(gpu, G(dinp), G(dout), G(inp), G(w),
							  G(mean), G(rstd), N, C));
		twin_expect(&dinp, "layernorm_backward dinp", FP32_TOL);

		free(hm);
		free(hr);
		twin_free(&inp);
		twin_free(&w);
		twin_free(&b);
		twin_free(&out);
		twin_free(&mean);
		twin_free(&rstd);
		twin_free(&dout);
		twin_free(&dinp);
	}
}

/* ---- attention ---- */

/* lse (B,NH,T) of the scaled causal scores of qkv, in double. */
static double *ref_lse(const float *qkv, int B, int T, int C, int NH)
{
	int hs = C / NH;
	double scale = 1.0 / sqrt((double)hs), *lse = malloc((size_t)B * NH * T * sizeof(double));
	assert_non_null(lse);
	for (int b = 0; b < B; b++)
		for (int h = 0; h < NH; h++)
			for (int t = 0; t < T; t++) {
				const float *q = qkv + ((size_t)b * T + t) * 3 * C + (size_t)h * hs;
				double mx = -INFINITY, sum = 0.0,
				       *s = malloc((t + 1) * sizeof(double));
				assert_non_null(s);
				for (int u = 0; u <= t; u++) {
					const float *k =
					    qkv + ((size_t)b * T + u) * 3 * C + C + (size_t)h * hs;
					double d = 0.0;
					for (int i = 0; i < hs; i++)
						d += (double)q[i] * k[i];
					s[u] = d * scale;
					mx = s[u] > mx ? s[u] : mx;
				}
				for (int u = 0; u <= t; u++)
					sum += exp(s[u] - mx);
				lse[((size_t)b * NH + h) * T + t] = mx + log(sum);
				free(s);
			}
	return lse;
}

/* The fused kernels against the CPU's materialised softmax: out and dqkv
 * agree; the GPU keeps only a log-sum-exp per row (checked in double), and
 * each backend runs its backward from its own forward. Head sizes cover
 * every tile shape (<= 32, <= 64, <= 128, and 100, not a multiple of 8); T
 * values cover partial tiles. */
static void test_attention(void **state)
{
	static const int shapes[][4] = {
		/* B, T, C, NH */
		{ 2, 33, 64, 4 },    { 1, 1, 16, 2 },   { 2, 70, 96, 3 },
		{ 2, 128, 768, 12 }, { 1, 47, 256, 2 }, { 2, 20, 200, 2 },
	};
	for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
		int B = shapes[si][0], T = shapes[si][1], C = shapes[si][2], NH = shapes[si][3];
		size_t n = (size_t)B * T * C, rows = (size_t)B * NH * T;
		size_t cst, csc, gst, gsc;
		SC_ASSERT_OK(cpu->ops->attention_sizes(cpu, B, T, C, NH, &cst, &csc));
		SC_ASSERT_OK(gpu->ops->attention_sizes(gpu, B, T, C, NH, &gst, &gsc));
		assert_true(gst == rows && gsc == rows); /* no T x T matrix */
		twin qkv = twin_new(3 * n), out = twin_new(n), dout = twin_new(n);
		twin dqkv = twin_new(3 * n);
		void *cstate, *cscr, *gstate, *gscr;
		SC_ASSERT_OK(cpu->ops->alloc(cpu, &cstate, cst * sizeof(float)));
		SC_ASSERT_OK(cpu->ops->alloc(cpu, &cscr, csc * sizeof(float)));
		SC_ASSERT_OK(gpu->ops->alloc(gpu, &gstate, gst * sizeof(float)));
		SC_ASSERT_OK(gpu->ops->alloc(gpu, &gscr, gsc * sizeof(float)));
		float *hq = host_floats(3 * n), *lse = host_floats(rows), *nan = host_floats(rows);
		for (size_t i = 0; i < rows; i++)
			nan[i] = NAN;

		print_message("  B=%d T=%d C=%d NH=%d (hs %d)\n", B, T, C, NH, C / NH);
		sc_test_fill_normal(hq, 3 * n, 600 + si, 1.0f);
		twin_upload(&qkv, hq);
		twin_poison(&out);
		SC_ASSERT_OK(gpu->ops->upload(gpu, gstate, nan, rows * sizeof(float)));
		SC_ASSERT_OK(cpu->ops->attention_forward(cpu, F(out), cstate, F(qkv), B, T, C, NH));
		SC_ASSERT_OK(gpu->ops->attention_forward(gpu, G(out), gstate, G(qkv), B, T, C, NH));
		twin_expect(&out, "attention_forward out", FP32_TOL);

		double *want = ref_lse(hq, B, T, C, NH), maxdiff = 0.0, maxref = 1e-6;
		SC_ASSERT_OK(gpu->ops->download(gpu, lse, gstate, rows * sizeof(float)));
		for (size_t i = 0; i < rows; i++) {
			double d = fabs(lse[i] - want[i]);
			maxdiff = isnan(d) || d > maxdiff ? (isnan(d) ? INFINITY : d) : maxdiff;
			maxref = fabs(want[i]) > maxref ? fabs(want[i]) : maxref;
		}
		print_message("    %-28s max rel err %.3g (tol %.0e)\n", "attention_forward lse",
			      maxdiff / maxref, FP32_TOL);
		if (!(maxdiff / maxref <= FP32_TOL))
			fail_msg("lse: GPU and double reference differ: %.3g", maxdiff / maxref);

		twin_random(&dout, 610 + si, 1.0f);
		twin_poison(&dqkv);
		SC_ASSERT_OK(cpu->ops->attention_backward(cpu, F(dqkv), cscr, F(dout), F(qkv),
							  F(out), cstate, B, T, C, NH));
		SC_ASSERT_OK(gpu->ops->attention_backward(gpu, G(dqkv), gscr, G(dout), G(qkv),
							  G(out), gstate, B, T, C, NH));
		twin_expect(&dqkv, "attention_backward dqkv", FP32_TOL);

		free(want);
		free(hq);
		free(lse);
		free(nan);
		cpu->ops->free_buf(cpu, cstate);
		cpu->ops->free_buf(cpu, cscr);
		gpu->ops->free_buf(gpu, gstate);
		gpu->ops->free_buf(gpu, gscr);
		twin_free(&qkv);
		twin_free(&out);
		twin_free(&dout);
		twin_free(&dqkv);
	}
}

/* Head sizes past the kernels' 128 are refused with a reason, at sizing. */
static void test_attention_refuses_large_heads(void **state)
{
	size_t st = 1, sc = 1;
	SC_ASSERT_ERR(gpu->ops->attention_sizes(gpu, 1, 8, 320, 2, &st, &sc), SC_ENOTSUP);
	assert_true(st == 0 && sc == 0);
	assert_non_null(strstr(sc_err_detail(), "head size 160"));
	SC_ASSERT_ERR(gpu->ops->attention_forward(gpu, NULL, NULL, NULL, 1, 8, 320, 2), SC_ENOTSUP);
	SC_ASSERT_ERR(gpu->ops->attention_sizes(gpu, 1, 8, 30, 4, &st, &sc), SC_EINVAL);
}

/* ---- element-wise ---- */

static void test_gelu(void **state)
{
	size_t n = 10007;
	twin inp = twin_new(n), out = twin_new(n), dout = twin_new(n), dinp = twin_new(n);
	twin_random(&inp, 700, 2.0f);
	twin_poison(&out);
	SC_ASSERT_OK(cpu->ops->gelu_forward(cpu, F(out), F(inp), n));
	SC_ASSERT_OK(gpu->ops->gelu_forward(gpu, G(out), G(inp), n));
	twin_expect(&out, "gelu_forward out", FP32_TOL);

	twin_random(&dout, 701, 1.0f);
	twin_poison(&dinp);
	SC_ASSERT_OK(cpu->ops->gelu_backward(cpu, F(dinp), F(inp), F(dout), n));
	SC_ASSERT_OK(gpu->ops->gelu_backward(gpu, G(dinp), G(inp), G(dout), n));
	twin_expect(&dinp, "gelu_backward dinp", FP32_TOL);

	/* in place: dinp == dout */
	SC_ASSERT_OK(cpu->ops->gelu_backward(cpu, F(dout), F(inp), F(dout), n));
	SC_ASSERT_OK(gpu->ops->gelu_backward(gpu, G(dout), G(inp), G(dout), n));
	twin_expect(&dout, "gelu_backward in place", FP32_TOL);
	twin_free(&inp);
	twin_free(&out);
	twin_free(&dout);
	twin_free(&dinp);
}

static void test_add(void **state)
{
	size_t n = 10007;
	int N = 37, OC = 129;
	twin a = twin_new(n), b = twin_new(n), out = twin_new(n);
	twin x = twin_new((size_t)N * OC), bias = twin_new(OC);
	twin_random(&a, 800, 1.0f);
	twin_random(&b, 801, 1.0f);
	twin_poison(&out);
	SC_ASSERT_OK(cpu->ops->add(cpu, F(out), F(a), F(b), n));
	SC_ASSERT_OK(gpu->ops->add(gpu, G(out), G(a), G(b), n));
	twin_expect(&out, "add out", FP32_TOL);
	SC_ASSERT_OK(cpu->ops->add(cpu, F(a), F(a), F(b), n));
	SC_ASSERT_OK(gpu->ops->add(gpu, G(a), G(a), G(b), n));
	twin_expect(&a, "add in place", FP32_TOL);

	twin_random(&x, 802, 1.0f);
	twin_random(&bias, 803, 1.0f);
	SC_ASSERT_OK(cpu->ops->add_bias(cpu, F(x), F(bias), N, OC));
	SC_ASSERT_OK(gpu->ops->add_bias(gpu, G(x), G(bias), N, OC));
	twin_expect(&x, "add_bias out", FP32_TOL);
	twin_free(&a);
	twin_free(&b);
	twin_free(&out);
	twin_free(&x);
	twin_free(&bias);
}

/* ---- loss ---- */

static void test_crossentropy(void **state)
{
	int N = 6, V = 50257;
	int32_t targets[6] = { 3, -1, 50256, 0, 12345, -7 };
	twin logits = twin_new((size_t)N * V), losses = twin_new(N);
	twin tgt = twin_on(gpu, sizeof(targets));
	twin_upload(&tgt, targets);
	twin_random(&logits, 900, 2.0f);
	twin_poison(&losses);
	SC_ASSERT_OK(cpu->ops->crossentropy(cpu, F(losses), F(logits), FI(tgt), N, V, 0.25f));
	SC_ASSERT_OK(gpu->ops->crossentropy(gpu, G(losses), G(logits), GI(tgt), N, V, 0.25f));
	twin_expect(&losses, "crossentropy losses", FP32_TOL);
	twin_expect(&logits, "crossentropy dlogits", FP32_TOL);

	/* ignored rows give exactly zero */
	float *h = host_floats((size_t)N * V);
	SC_ASSERT_OK(gpu->ops->download(gpu, h, G(logits), (size_t)N * V * sizeof(float)));
	for (int i = 0; i < V; i++)
		assert_true(h[(size_t)1 * V + i] == 0.0f && h[(size_t)5 * V + i] == 0.0f);
	SC_ASSERT_OK(gpu->ops->download(gpu, h, G(losses), N * sizeof(float)));
	assert_true(h[1] == 0.0f && h[5] == 0.0f);
	free(h);
	twin_free(&logits);
	twin_free(&losses);
	twin_free(&tgt);
}

/* ---- optimizer ---- */

static void test_adamw(void **state)
{
	size_t n = 10007;
	twin p = twin_new(n), m = twin_new(n), v = twin_new(n), g = twin_new(n);
	twin_random(&p, 1000, 1.0f);
	/* m and v start at zero (alloc zero-fills), as in training */
	for (int t = 1; t <= 3; t++) {
		twin_random(&g, 1000 + t, 1.0f);
		SC_ASSERT_OK(cpu->ops->adamw(cpu, F(p), F(m), F(v), F(g), n, 1e-3f, 0.9f, 0.999f,
					     1e-8f, 0.01f, 0.5f, t));
		SC_ASSERT_OK(gpu->ops->adamw(gpu, G(p), G(m), G(v), G(g), n, 1e-3f, 0.9f, 0.999f,
					     1e-8f, 0.01f, 0.5f, t));
	}
	twin_expect(&p, "adamw param", FP32_TOL);
	twin_expect(&m, "adamw m", FP32_TOL);
	twin_expect(&v, "adamw v", FP32_TOL);
	twin_free(&p);
	twin_free(&m);
	twin_free(&v);
	twin_free(&g);
}

static void test_sumsq(void **state)
{
	static const size_t sizes[] = { 1, 255, 257, 1000003 };
	for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
		size_t n = sizes[si];
		twin x = twin_new(n);
		double sc = -1, sg = -1, sg2 = -1;
		twin_random(&x, 1100 + si, 1.0f);
		SC_ASSERT_OK(cpu->ops->sumsq(cpu, &sc, F(x), n));
		SC_ASSERT_OK(gpu->ops->sumsq(gpu, &sg, G(x), n));
		SC_ASSERT_OK(gpu->ops->sumsq(gpu, &sg2, G(x), n));
		print_message("    sumsq n=%-9zu cpu %.17g gpu %.17g\n", n, sc, sg);
		assert_true(sg == sg2); /* deterministic */
		if (!(fabs(sg - sc) <= 1e-10 * sc))
			fail_msg("sumsq n=%zu: gpu %.17g cpu %.17g", n, sg, sc);
		twin_free(&x);
	}
	double z = -1;
	SC_ASSERT_OK(gpu->ops->sumsq(gpu, &z, NULL, 0));
	assert_true(z == 0.0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_memory),
		cmocka_unit_test(test_open_bad_ordinal),
		cmocka_unit_test(test_gemm_fp32),
		cmocka_unit_test(test_gemm_tf32),
		cmocka_unit_test(test_gemm_bad_args),
		cmocka_unit_test(test_encoder_forward),
		cmocka_unit_test(test_layernorm),
		cmocka_unit_test(test_attention),
		cmocka_unit_test(test_attention_refuses_large_heads),
		cmocka_unit_test(test_gelu),
		cmocka_unit_test(test_add),
		cmocka_unit_test(test_crossentropy),
		cmocka_unit_test(test_adamw),
		cmocka_unit_test(test_sumsq),
	};
	int failed, rc = sc_test_open_cuda("cuda_test", &gpu, &gpu_tf32, &cpu);
	if (rc)
		return rc;
	failed = cmocka_run_group_tests_name("cuda", tests, NULL, NULL);
	sc_test_close_cuda(gpu, gpu_tf32, cpu);
	return failed ? 1 : 0;
}
