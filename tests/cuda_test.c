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
#include "sc_quant.h"
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

/* ---- GEMM on a quantized frozen weight (gemm_q) ---- */

enum { QPART_Q, QPART_SCALES, QPART_SCALES_Q, QPART_SCALES_SCALE, QPART_OFFSET, QPARTS };

/* A random (rows, cols) weight quantized on the host (sc_quant.h), its parts
 * uploaded to both backends: c and g describe the CPU's and the GPU's copy,
 * w is the dequantized weight (what gemm_q multiplies by). */
typedef struct qtwin {
	twin part[QPARTS];
	sc_qweight c, g;
	float *w;
} qtwin;

static qtwin qtwin_new(enum sc_quant_format format, int rows, int cols, int row_major_out,
		       int double_quant, uint64_t seed)
{
	sc_quant_spec spec = { format, (size_t)rows, (size_t)cols, row_major_out, double_quant };
	size_t n = (size_t)rows * cols, bytes[QPARTS];
	void *host[QPARTS];
	sc_quant_sizes sz;
	qtwin t;
	float *w = host_floats(n);

	memset(&t, 0, sizeof(t));
	SC_ASSERT_OK(sc_quant_size(&spec, &sz));
	bytes[QPART_Q] = sz.qweight;
	bytes[QPART_SCALES] = sz.scales * sizeof(float);
	bytes[QPART_SCALES_Q] = sz.scales_q;
	bytes[QPART_SCALES_SCALE] = sz.scales_scale * sizeof(float);
	bytes[QPART_OFFSET] = sz.scales_offset * sizeof(float);
	for (int p = 0; p < QPARTS; p++) {
		host[p] = bytes[p] ? calloc(1, bytes[p]) : NULL;
		assert_true(!bytes[p] || host[p]);
	}
	sc_test_fill_normal(w, n, seed, 0.05f);
	sc_quant_out qo = { host[QPART_Q], host[QPART_SCALES], host[QPART_SCALES_Q],
			    host[QPART_SCALES_SCALE], host[QPART_OFFSET] };
	SC_ASSERT_OK(sc_quant_quantize(&spec, w, &qo));
	sc_quant_view qv = { qo.qweight, qo.scales, qo.scales_q, qo.scales_scale,
			     qo.scales_offset };
	SC_ASSERT_OK(sc_quant_dequantize(&spec, &qv, w));
	t.w = w;
	for (int p = 0; p < QPARTS; p++) {
		if (!bytes[p])
			continue;
		t.part[p] = twin_on(gpu, bytes[p]);
		twin_upload(&t.part[p], host[p]);
		free(host[p]);
	}
	t.c = (sc_qweight){ .format = format == SC_QUANT_INT8  ? SC_QW_INT8
				      : format == SC_QUANT_NF4 ? SC_QW_NF4
							       : SC_QW_BF16,
			    .rows = rows,
			    .cols = cols,
			    .scale_rows = row_major_out };
	t.g = t.c;
#define QPART(side, p, type) (t.part[p].bytes ? (const type *)t.part[p].side : NULL)
	t.c.q = QPART(c, QPART_Q, uint8_t);
	t.g.q = QPART(g, QPART_Q, uint8_t);
	t.c.scales = QPART(c, QPART_SCALES, float);
	t.g.scales = QPART(g, QPART_SCALES, float);
	t.c.scales_q = QPART(c, QPART_SCALES_Q, uint8_t);
	t.g.scales_q = QPART(g, QPART_SCALES_Q, uint8_t);
	t.c.scales_scale = QPART(c, QPART_SCALES_SCALE, float);
	t.g.scales_scale = QPART(g, QPART_SCALES_SCALE, float);
	t.c.scales_offset = QPART(c, QPART_OFFSET, float);
	t.g.scales_offset = QPART(g, QPART_OFFSET, float);
#undef QPART
	return t;
}

static void qtwin_free(qtwin *t)
{
	for (int p = 0; p < QPARTS; p++)
		if (t->part[p].bytes)
			twin_free(&t->part[p]);
	free(t->w);
}

/* The bf16 path's definition in double: out = alpha op(round_bf16(a))
 * op(round_bf16(W)) + beta out, W the dequantized weight (rows, cols) of t
 * (a bf16 weight's rounding changes nothing). */
static void gemm_q_reference(double *out, const float *a, int lda, const qtwin *t, int ta, int tb,
			     int m, int n, int k, float alpha, float beta, const float *c0, int ldc)
{
	for (int i = 0; i < m; i++)
		for (int j = 0; j < n; j++) {
			double sum = 0;
			for (int p = 0; p < k; p++) {
				float x = ta ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p];
				float w = tb ? t->w[(size_t)j * k + p] : t->w[(size_t)p * n + j];
				sum += (double)sc_bf16_to_f32(sc_bf16_from_f32(x)) *
				       sc_bf16_to_f32(sc_bf16_from_f32(w));
			}
			out[(size_t)i * n + j] =
			    alpha * sum + (c0 ? beta * (double)c0[(size_t)i * ldc + j] : 0.0);
		}
}

/* gemm_q in all four transpose combinations over a poisoned then a random
 * c, on the weight t (W (k, n) for trans_b 0, (n, k) for 1: a test makes one
 * of each), with tile_floats of scratch (few: many tiles). int8 / nf4 go
 * against the CPU backend's gemm_q (fp32 tiles on both: FP32_TOL); bf16
 * against its definition in double (the activation rounded to bf16, as the
 * CPU does only where it has bf16 products), to FP32_TOL as well: a product
 * of two bf16 values is exact in fp32. */
static void gemm_q_case(const char *name, qtwin *t, int tb, int m, int n, int k, size_t tile_floats,
			uint64_t seed)
{
	twin tile = twin_on(gpu, tile_floats * sizeof(float));
	int bf16 = t->c.format == SC_QW_BF16 || t->g.bf16_compute;
	for (int ta = 0; ta < 2; ta++) {
		int lda = (ta ? m : k) + 3, ldc = n + 2;
		size_t na = (size_t)(ta ? k : m) * lda, nc = (size_t)m * ldc;
		twin a = twin_on(gpu, na * sizeof(float)), c = twin_on(gpu, nc * sizeof(float));
		float *ha = host_floats(na), *hc = host_floats(nc), *hg = host_floats(nc);
		double *ref = calloc((size_t)m * n, sizeof(double));
		char what[96];
		assert_non_null(ref);
		sc_test_fill_normal(ha, na, seed + ta, 1.0f);
		twin_upload(&a, ha);
		for (int pass = 0; pass < 2; pass++) {
			float beta = pass ? 0.3f : 0.0f;
			sc_test_fill_normal(hc, nc, seed + 10 + ta, 1.0f);
			if (pass)
				twin_upload(&c, hc);
			else
				twin_poison(&c);
			snprintf(what, sizeof(what), "gemm_q %s %c%c beta=%.1f", name,
				 ta ? 'T' : 'N', tb ? 'T' : 'N', beta);
			SC_ASSERT_OK(gpu->ops->gemm_q(gpu, ta, tb, m, n, k, 0.7f, G(a), lda, &t->g,
						      beta, G(c), ldc, (float *)tile.g,
						      tile_floats));
			if (!bf16) {
				SC_ASSERT_OK(cpu->ops->gemm_q(cpu, ta, tb, m, n, k, 0.7f, F(a), lda,
							      &t->c, beta, F(c), ldc,
							      (float *)tile.c, tile_floats));
				for (int i = 0; i < m && !pass; i++) { /* the padding stays NaN */
					size_t pad = (size_t)i * ldc + n,
					       bytes = (ldc - n) * sizeof(float);
					SC_ASSERT_OK(cpu->ops->zero(cpu, F(c) + pad, bytes));
					SC_ASSERT_OK(gpu->ops->zero(gpu, G(c) + pad, bytes));
				}
				twin_expect(&c, what, FP32_TOL);
				continue;
			}
			gemm_q_reference(ref, ha, lda, t, ta, tb, m, n, k, 0.7f, beta,
					 pass ? hc : NULL, ldc);
			SC_ASSERT_OK(gpu->ops->download(gpu, hg, G(c), nc * sizeof(float)));
			double worst = 0, big = 0;
			for (size_t i = 0; i < (size_t)m * n; i++)
				big = fmax(big, fabs(ref[i]));
			for (int i = 0; i < m; i++)
				for (int j = 0; j < n; j++) {
					double g = hg[(size_t)i * ldc + j];
					double e = isfinite(g) ? fabs(g - ref[(size_t)i * n + j]) /
								     fmax(big, REL_FLOOR)
							       : INFINITY;
					worst = e > worst ? e : worst;
				}
			print_message("    %-28s max rel err %.3g (tol %.0e)\n", what, worst,
				      FP32_TOL);
			if (!(worst <= FP32_TOL))
				fail_msg("%s: GPU and the bf16 reference differ: %.3g > %.0e", what,
					 worst, FP32_TOL);
		}
		twin_free(&a);
		twin_free(&c);
		free(ha);
		free(hc);
		free(hg);
		free(ref);
	}
	twin_free(&tile);
}

/* Each format with W stored both ways: (n, k) as nn.Linear's (out, in)
 * with trans_b 1 (the forward) and (k, n) with trans_b 0; a tile of all
 * columns, and one of a few (several dequantized tiles, or the bf16
 * activation a few rows at a time). */
static void test_gemm_q(void **state)
{
	static const struct {
		const char *name;
		enum sc_quant_format format;
		int double_quant, bf16_compute;
	} formats[] = {
		{ "int8", SC_QUANT_INT8, 0, 0 },
		{ "nf4", SC_QUANT_NF4, 0, 0 },
		{ "nf4 dq", SC_QUANT_NF4, 1, 0 },
		{ "bf16", SC_QUANT_BF16, 0, 0 },
		{ "int8 bf16 products", SC_QUANT_INT8, 0, 1 },
		{ "nf4 dq bf16 products", SC_QUANT_NF4, 1, 1 },
	};
	int m = 37, n = 80, k = 96;
	for (size_t f = 0; f < sizeof(formats) / sizeof(formats[0]); f++)
		for (int tb = 0; tb < 2; tb++) {
			qtwin t = qtwin_new(formats[f].format, tb ? n : k, tb ? k : n, tb,
					    formats[f].double_quant, 500 + 10 * f + tb);
			t.c.bf16_compute = t.g.bf16_compute = formats[f].bf16_compute;
			char name[48];
			snprintf(name, sizeof(name), "%s", formats[f].name);
			gemm_q_case(name, &t, tb, m, n, k, (size_t)m * k + (size_t)n * k,
				    600 + 10 * f);
			snprintf(name, sizeof(name), "%s tiles", formats[f].name);
			gemm_q_case(name, &t, tb, m, n, k, (size_t)k * 24, 700 + 10 * f);
			qtwin_free(&t);
		}
}

/* Shapes that do not fit, too little tile, and an int8 embedding. */
static void test_gemm_q_refuses(void **state)
{
	qtwin t = qtwin_new(SC_QUANT_NF4, 16, 64, 1, 0, 800);
	twin a = twin_new(64 * 8), c = twin_new(16 * 8), tile = twin_new(64 * 24);
	SC_ASSERT_ERR(gpu->ops->gemm_q(gpu, 0, 1, 8, 16, 32, 1.0f, G(a), 64, &t.g, 0.0f, G(c), 16,
				       G(tile), 64 * 24),
		      SC_EINVAL);
	SC_ASSERT_ERR(gpu->ops->gemm_q(gpu, 0, 1, 8, 16, 64, 1.0f, G(a), 64, &t.g, 0.0f, G(c), 16,
				       G(tile), 32),
		      SC_EINVAL);
	SC_ASSERT_OK(gpu->ops->gemm_q(gpu, 0, 1, 8, 16, 64, 1.0f, G(a), 64, &t.g, 0.0f, G(c), 16,
				      G(tile), 64 * 24));
	SC_ASSERT_ERR(gpu->ops->encoder_forward_q(gpu, G(c), NULL, &t.g, NULL, 1, 1, 64),
		      SC_ENOTSUP);
	twin_free(&a);
	twin_free(&c);
	twin_free(&tile);
	qtwin_free(&t);
}

/* A bf16 token embedding: rows widened, + wpe, bit for bit the CPU's. */
static void test_encoder_forward_q(void **state)
{
	int B = 2, T = 9, C = 48, V = 50;
	qtwin wte = qtwin_new(SC_QUANT_BF16, V, C, 1, 0, 900);
	twin out = twin_new((size_t)B * T * C), wpe = twin_new((size_t)T * C);
	twin tok = twin_on(gpu, (size_t)B * T * sizeof(int32_t));
	int32_t tokens[2 * 9];
	for (int i = 0; i < B * T; i++)
		tokens[i] = (int32_t)((i * 7 + 3) % V);
	twin_upload(&tok, tokens);
	twin_random(&wpe, 901, 0.5f);
	for (int with_wpe = 0; with_wpe < 2; with_wpe++) {
		twin_poison(&out);
		SC_ASSERT_OK(cpu->ops->encoder_forward_q(cpu, F(out), FI(tok), &wte.c,
							 with_wpe ? F(wpe) : NULL, B, T, C));
		SC_ASSERT_OK(gpu->ops->encoder_forward_q(gpu, G(out), GI(tok), &wte.g,
							 with_wpe ? G(wpe) : NULL, B, T, C));
		twin_expect(&out, with_wpe ? "encoder_forward_q + wpe" : "encoder_forward_q", 0.0);
	}
	twin_free(&out);
	twin_free(&wpe);
	twin_free(&tok);
	qtwin_free(&wte);
}

/* ---- encoder, layernorm ---- */

/* wte[tokens] + wpe[t], then wte[tokens] alone (wpe NULL: a family with
 * rotary positions). */
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
	twin_poison(&out);
	SC_ASSERT_OK(cpu->ops->encoder_forward(cpu, F(out), FI(tok), F(wte), NULL, B, T, C));
	SC_ASSERT_OK(gpu->ops->encoder_forward(gpu, G(out), GI(tok), G(wte), NULL, B, T, C));
	twin_expect(&out, "encoder_forward wpe NULL", 0.0);
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

/* RMSNorm forward, then the backward from the CPU's rstd onto the same
 * random dinp on both sides (it accumulates). */
static void test_rmsnorm(void **state)
{
	static const int Cs[] = { 64, 100, 4096 };
	int N = 37;
	for (size_t ci = 0; ci < sizeof(Cs) / sizeof(Cs[0]); ci++) {
		int C = Cs[ci];
		size_t nc = (size_t)N * C;
		twin inp = twin_new(nc), w = twin_new(C), out = twin_new(nc), rstd = twin_new(N);
		twin dout = twin_new(nc), dinp = twin_new(nc);
		float *hr = host_floats(N);
		twin_random(&inp, 1200 + ci, 2.0f);
		twin_random(&w, 1210 + ci, 1.0f);
		twin_poison(&out);
		twin_poison(&rstd);
		SC_ASSERT_OK(
		    cpu->ops->rmsnorm_forward(cpu, F(out), F(rstd), F(inp), F(w), N, C, 1e-5f));
		SC_ASSERT_OK(
		    gpu->ops->rmsnorm_forward(gpu, G(out), G(rstd), G(inp), G(w), N, C, 1e-5f));
		print_message("  C=%d\n", C);
		twin_expect(&out, "rmsnorm_forward out", FP32_TOL);
		twin_expect(&rstd, "rmsnorm_forward rstd", FP32_TOL);

		SC_ASSERT_OK(cpu->ops->download(cpu, hr, F(rstd), N * sizeof(float)));
		twin_upload(&rstd, hr);
		twin_random(&dout, 1220 + ci, 1.0f);
		twin_random(&dinp, 1230 + ci, 1.0f);
		SC_ASSERT_OK(
		    cpu->ops->rmsnorm_backward(cpu, F(dinp), F(dout), F(inp), F(w), F(rstd), N, C));
		SC_ASSERT_OK(
		    gpu->ops->rmsnorm_backward(gpu, G(dinp), G(dout), G(inp), G(w), G(rstd), N, C));
		twin_expect(&dinp, "rmsnorm_backward dinp", FP32_TOL);

		free(hr);
		twin_free(&inp);
		twin_free(&w);
		twin_free(&out);
		twin_free(&rstd);
		twin_free(&dout);
		twin_free(&dinp);
	}
}

/* ---- rotary position embedding ---- */

/* cos, sin (T, hs/2) of Llama's angles t * 10000^(-2i/hs). */
static void rope_tables(float *cs, float *sn, int T, int hs)
{
	int half = hs / 2;
	for (int t = 0; t < T; t++)
		for (int i = 0; i < half; i++) {
			double a = t * pow(10000.0, -2.0 * i / hs);
			cs[(size_t)t * half + i] = (float)cos(a);
			sn[(size_t)t * half + i] = (float)sin(a);
		}
}

/* The rotation and its inverse against the CPU on the whole qkv (so the v
 * heads must come out untouched), and the round trip back to the input. */
static void test_rope(void **state)
{
	static const struct {
		const char *name;
		int B, T, NH, NKV, hs;
	} cases[] = {
		{ "gqa 8/2 hs 64", 2, 19, 8, 2, 64 },
		{ "mha 4/4 hs 128", 1, 33, 4, 4, 128 },
		{ "mqa 6/1 hs 10", 3, 5, 6, 1, 10 },
	};
	for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
		int B = cases[ci].B, T = cases[ci].T, NH = cases[ci].NH, NKV = cases[ci].NKV;
		int hs = cases[ci].hs;
		size_t n = (size_t)B * T * (NH + 2 * NKV) * hs, nt = (size_t)T * (hs / 2);
		twin qkv = twin_new(n), cs = twin_new(nt), sn = twin_new(nt);
		float *x = host_floats(n), *back = host_floats(n), *hc = host_floats(nt),
		      *hsn = host_floats(nt);
		print_message("  %s: B=%d T=%d NH=%d NKV=%d hs=%d\n", cases[ci].name, B, T, NH, NKV,
			      hs);
		rope_tables(hc, hsn, T, hs);
		twin_upload(&cs, hc);
		twin_upload(&sn, hsn);
		sc_test_fill_normal(x, n, 1300 + ci, 1.0f);
		twin_upload(&qkv, x);
		SC_ASSERT_OK(cpu->ops->rope(cpu, F(qkv), F(cs), F(sn), B, T, NH, NKV, hs, 0));
		SC_ASSERT_OK(gpu->ops->rope(gpu, G(qkv), G(cs), G(sn), B, T, NH, NKV, hs, 0));
		twin_expect(&qkv, "rope forward", FP32_TOL);
		SC_ASSERT_OK(cpu->ops->rope(cpu, F(qkv), F(cs), F(sn), B, T, NH, NKV, hs, 1));
		SC_ASSERT_OK(gpu->ops->rope(gpu, G(qkv), G(cs), G(sn), B, T, NH, NKV, hs, 1));
		twin_expect(&qkv, "rope inverse", FP32_TOL);
		SC_ASSERT_OK(gpu->ops->download(gpu, back, G(qkv), n * sizeof(float)));
		double err = sc_test_max_rel_err(back, x, n, REL_FLOOR);
		print_message("    %-28s max rel err %.3g (tol %.0e)\n", "rope round trip", err,
			      FP32_TOL);
		if (!(err <= FP32_TOL))
			fail_msg("rope: inverse(forward(x)) differs from x: %.3g", err);
		free(x);
		free(back);
		free(hc);
		free(hsn);
		twin_free(&qkv);
		twin_free(&cs);
		twin_free(&sn);
	}
	SC_ASSERT_ERR(gpu->ops->rope(gpu, NULL, NULL, NULL, 1, 4, 2, 2, 7, 0), SC_EINVAL);
}

/* ---- attention ---- */

/* lse (B,NH,T) of the scaled scores of qkv over each row's visible keys,
 * in double. */
static double *ref_lse(const float *qkv, const sc_attn_shape *sh)
{
	int T = sh->T, NH = sh->NH, hs = sh->hs, G = sh->NH / sh->NKV;
	size_t ld = (size_t)(NH + 2 * sh->NKV) * hs;
	double scale = 1.0 / sqrt((double)hs);
	double *lse = malloc((size_t)sh->B * NH * T * sizeof(double));
	double *s = malloc((size_t)T * sizeof(double));
	assert_non_null(lse);
	assert_non_null(s);
	for (int b = 0; b < sh->B; b++)
		for (int h = 0; h < NH; h++)
			for (int t = 0; t < T; t++) {
				const float *q = qkv + ((size_t)b * T + t) * ld + (size_t)h * hs;
				int lo = sh->window && t >= sh->window ? t - sh->window + 1 : 0;
				double mx = -INFINITY, sum = 0.0;
				for (int u = lo; u <= t; u++) {
					const float *k = qkv + ((size_t)b * T + u) * ld +
							 (size_t)(NH + h / G) * hs;
					double d = 0.0;
					for (int i = 0; i < hs; i++)
						d += (double)q[i] * k[i];
					s[u] = d * scale;
					mx = s[u] > mx ? s[u] : mx;
				}
				for (int u = lo; u <= t; u++)
					sum += exp(s[u] - mx);
				lse[((size_t)b * NH + h) * T + t] = mx + log(sum);
			}
	free(s);
	return lse;
}

/* The fused kernels against the CPU's materialised softmax: out and dqkv
 * agree (dk, dv summed over a kv head's query heads); the GPU keeps only a
 * log-sum-exp per row (checked in double), and each backend runs its
 * backward from its own forward. */
static void attention_case(const char *name, sc_attn_shape sh, uint64_t seed)
{
	int B = sh.B, T = sh.T, NH = sh.NH;
	size_t n_qkv = (size_t)B * T * (NH + 2 * sh.NKV) * sh.hs;
	size_t n_out = (size_t)B * T * NH * sh.hs, rows = (size_t)B * NH * T;
	size_t cst, csc, gst, gsc;
	SC_ASSERT_OK(cpu->ops->attention_sizes(cpu, &sh, &cst, &csc));
	SC_ASSERT_OK(gpu->ops->attention_sizes(gpu, &sh, &gst, &gsc));
	assert_true(gst == rows && gsc == rows); /* no T x T matrix */
	twin qkv = twin_new(n_qkv), out = twin_new(n_out), dout = twin_new(n_out);
	twin dqkv = twin_new(n_qkv);
	void *cstate, *cscr, *gstate, *gscr;
	SC_ASSERT_OK(cpu->ops->alloc(cpu, &cstate, cst * sizeof(float)));
	SC_ASSERT_OK(cpu->ops->alloc(cpu, &cscr, csc * sizeof(float)));
	SC_ASSERT_OK(gpu->ops->alloc(gpu, &gstate, gst * sizeof(float)));
	SC_ASSERT_OK(gpu->ops->alloc(gpu, &gscr, gsc * sizeof(float)));
	float *hq = host_floats(n_qkv), *lse = host_floats(rows), *nan = host_floats(rows);
	for (size_t i = 0; i < rows; i++)
		nan[i] = NAN;

	print_message("  %s: B=%d T=%d NH=%d NKV=%d hs=%d window=%d\n", name, B, T, NH, sh.NKV,
		      sh.hs, sh.window);
	sc_test_fill_normal(hq, n_qkv, seed, 1.0f);
	twin_upload(&qkv, hq);
	twin_poison(&out);
	SC_ASSERT_OK(gpu->ops->upload(gpu, gstate, nan, rows * sizeof(float)));
	SC_ASSERT_OK(cpu->ops->attention_forward(cpu, F(out), cstate, F(qkv), &sh));
	SC_ASSERT_OK(gpu->ops->attention_forward(gpu, G(out), gstate, G(qkv), &sh));
	twin_expect(&out, "attention_forward out", FP32_TOL);

	double *want = ref_lse(hq, &sh), maxdiff = 0.0, maxref = 1e-6;
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

	twin_random(&dout, seed + 1, 1.0f);
	twin_poison(&dqkv);
	SC_ASSERT_OK(
	    cpu->ops->attention_backward(cpu, F(dqkv), cscr, F(dout), F(qkv), F(out), cstate, &sh));
	SC_ASSERT_OK(
	    gpu->ops->attention_backward(gpu, G(dqkv), gscr, G(dout), G(qkv), G(out), gstate, &sh));
	twin_expect(&dqkv, "attention_backward dqkv", FP32_TOL);

	/* deterministic: a second backward gives the same bits */
	float *first = host_floats(n_qkv), *again = host_floats(n_qkv);
	SC_ASSERT_OK(gpu->ops->download(gpu, first, G(dqkv), n_qkv * sizeof(float)));
	SC_ASSERT_OK(
	    gpu->ops->attention_backward(gpu, G(dqkv), gscr, G(dout), G(qkv), G(out), gstate, &sh));
	SC_ASSERT_OK(gpu->ops->download(gpu, again, G(dqkv), n_qkv * sizeof(float)));
	assert_memory_equal(first, again, n_qkv * sizeof(float));
	free(first);
	free(again);

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

/* Head sizes cover every tile shape (<= 32, <= 64, <= 128, and 100, not a
 * multiple of 8; tiles are 32 keys up to hs 64, 16 above); T values cover
 * partial tiles; grouped queries, one kv head, and windows shorter than a
 * tile, than T, and longer than T, and one whose last query for a key
 * tile starts a query tile. */
static void test_attention(void **state)
{
	static const struct {
		const char *name;
		sc_attn_shape s; /* B, T, NH, NKV, hs, window */
	} cases[] = {
		{ "gpt2 hs 16", { 2, 33, 4, 4, 16, 0 } },
		{ "gpt2 T 1", { 1, 1, 2, 2, 8, 0 } },
		{ "gpt2 hs 32", { 2, 70, 3, 3, 32, 0 } },
		{ "gpt2 124M", { 2, 128, 12, 12, 64, 0 } },
		{ "gpt2 hs 128", { 1, 47, 2, 2, 128, 0 } },
		{ "gpt2 hs 100", { 2, 20, 2, 2, 100, 0 } },
		{ "gqa 8/2 hs 64", { 2, 45, 8, 2, 64, 0 } },
		{ "mqa 8/1 hs 64", { 1, 40, 8, 1, 64, 0 } },
		{ "gqa 8/2 hs 128", { 1, 37, 8, 2, 128, 0 } },
		{ "mqa 4/1 hs 128", { 2, 21, 4, 1, 128, 0 } },
		{ "window 16 < T", { 2, 70, 4, 2, 64, 16 } },
		{ "window 5 hs 128", { 1, 50, 4, 2, 128, 5 } },
		{ "window 40 hs 128", { 1, 61, 2, 1, 128, 40 } },
		{ "window 34 tile edge", { 1, 64, 2, 1, 128, 34 } },
		{ "window 1", { 1, 35, 2, 1, 32, 1 } },
		{ "window 100 > T", { 1, 30, 2, 2, 64, 100 } },
	};
	for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++)
		attention_case(cases[ci].name, cases[ci].s, 600 + 10 * ci);
}

/* Head sizes past the kernels' 128 are refused with a reason, at sizing;
 * bad shapes are refused. */
static void test_attention_refuses_bad_shapes(void **state)
{
	size_t st = 1, sc = 1;
	sc_attn_shape big = { 1, 8, 2, 2, 160, 0 }, groups = { 1, 8, 6, 4, 32, 0 };
	sc_attn_shape window = { 1, 8, 4, 2, 32, -1 };
	SC_ASSERT_ERR(gpu->ops->attention_sizes(gpu, &big, &st, &sc), SC_ENOTSUP);
	assert_true(st == 0 && sc == 0);
	assert_non_null(strstr(sc_err_detail(), "head size 160"));
	SC_ASSERT_ERR(gpu->ops->attention_forward(gpu, NULL, NULL, NULL, &big), SC_ENOTSUP);
	SC_ASSERT_ERR(gpu->ops->attention_backward(gpu, NULL, NULL, NULL, NULL, NULL, NULL, &big),
		      SC_ENOTSUP);
	SC_ASSERT_ERR(gpu->ops->attention_sizes(gpu, &groups, &st, &sc), SC_EINVAL);
	SC_ASSERT_ERR(gpu->ops->attention_sizes(gpu, &window, &st, &sc), SC_EINVAL);
}

/* ---- attention against a key/value cache ---- */

/* Downloads both sides of t into hc and hg. */
static void twin_download(twin *t, float *hc, float *hg)
{
	SC_ASSERT_OK(cpu->ops->download(cpu, hc, t->c, t->bytes));
	SC_ASSERT_OK(t->gb->ops->download(t->gb, hg, t->g, t->bytes));
}

/* The caches after attention_kv: bit for bit the CPU's, and, outside the
 * rows pos0 .. pos0+n-1 of each batch, what they held before. */
static void expect_caches(twin *cache, const float *before, const char *what, int pos0, int P,
			  const sc_attn_shape *sh)
{
	size_t n = cache->bytes / sizeof(float), ldc = (size_t)sh->NKV * sh->hs;
	float *hc = host_floats(n), *hg = host_floats(n);
	twin_download(cache, hc, hg);
	if (memcmp(hc, hg, cache->bytes))
		fail_msg("%s: GPU cache differs from the CPU's", what);
	for (int b = 0; b < sh->B; b++)
		for (int p = 0; p < P; p++) {
			size_t at = ((size_t)b * P + p) * ldc;
			if ((p < pos0 || p >= pos0 + sh->T) &&
			    memcmp(hg + at, before + at, ldc * sizeof(float)))
				fail_msg("%s: batch %d position %d changed", what, b, p);
		}
	free(hc);
	free(hg);
}

/* Caches filled with random values (the positions written before, and
 * garbage past pos0 + n that must be neither read nor changed), fresh
 * random new rows: out agrees with the CPU, the caches are the CPU's, and
 * a second call gives the same bits. */
static void attention_kv_case(const char *name, sc_attn_shape sh, int pos0, int P, uint64_t seed)
{
	int B = sh.B, n = sh.T, NH = sh.NH;
	size_t n_qkv = (size_t)B * n * (NH + 2 * sh.NKV) * sh.hs;
	size_t n_out = (size_t)B * n * NH * sh.hs, n_cache = (size_t)B * P * sh.NKV * sh.hs;
	twin qkv = twin_new(n_qkv), out = twin_new(n_out);
	twin kc = twin_new(n_cache), vc = twin_new(n_cache);
	float *hk = host_floats(n_cache), *hv = host_floats(n_cache);

	print_message("  %s: B=%d n=%d NH=%d NKV=%d hs=%d window=%d pos0=%d P=%d\n", name, B, n, NH,
		      sh.NKV, sh.hs, sh.window, pos0, P);
	sc_test_fill_normal(hk, n_cache, seed, 1.0f);
	sc_test_fill_normal(hv, n_cache, seed + 1, 1.0f);
	twin_upload(&kc, hk);
	twin_upload(&vc, hv);
	twin_random(&qkv, seed + 2, 1.0f);
	twin_poison(&out);
	SC_ASSERT_OK(cpu->ops->attention_kv(cpu, F(out), F(kc), F(vc), F(qkv), pos0, P, &sh));
	SC_ASSERT_OK(gpu->ops->attention_kv(gpu, G(out), G(kc), G(vc), G(qkv), pos0, P, &sh));
	twin_expect(&out, "attention_kv out", FP32_TOL);
	expect_caches(&kc, hk, "attention_kv k cache", pos0, P, &sh);
	expect_caches(&vc, hv, "attention_kv v cache", pos0, P, &sh);

	float *first = host_floats(n_out), *again = host_floats(n_out);
	SC_ASSERT_OK(gpu->ops->download(gpu, first, G(out), n_out * sizeof(float)));
	SC_ASSERT_OK(gpu->ops->attention_kv(gpu, G(out), G(kc), G(vc), G(qkv), pos0, P, &sh));
	SC_ASSERT_OK(gpu->ops->download(gpu, again, G(out), n_out * sizeof(float)));
	assert_memory_equal(first, again, n_out * sizeof(float));

	free(first);
	free(again);
	free(hk);
	free(hv);
	twin_free(&qkv);
	twin_free(&out);
	twin_free(&kc);
	twin_free(&vc);
}

/* Decode (n = 1) at the first positions, at a chunk's edge (the kernel
 * walks 128 keys at a time) and deep in the cache; prefill from 0 and a
 * chunk that continues a cache; GPT-2-like, grouped and multi-query heads,
 * hs 100 (not a multiple of 8), windows shorter than the context; and
 * caches long enough, or rows few enough, that a row's keys are split over
 * several blocks (segments of >= 256 keys; some empty in the prefill). */
static void test_attention_kv(void **state)
{
	static const struct {
		const char *name;
		sc_attn_shape s; /* B, n, NH, NKV, hs, window */
		int pos0, P;
	} cases[] = {
		{ "gpt2 prefill n 37", { 1, 37, 4, 4, 16, 0 }, 0, 40 },
		{ "gpt2 decode pos 0", { 1, 1, 4, 4, 16, 0 }, 0, 8 },
		{ "gpt2 decode pos 1", { 1, 1, 4, 4, 16, 0 }, 1, 8 },
		{ "gpt2 decode pos 63", { 1, 1, 4, 4, 16, 0 }, 63, 64 },
		{ "gpt2 decode pos 64", { 1, 1, 4, 4, 16, 0 }, 64, 70 },
		{ "gpt2 decode pos 200", { 1, 1, 4, 4, 16, 0 }, 200, 210 },
		{ "gpt2 decode B 2 pos 130", { 2, 1, 4, 4, 16, 0 }, 130, 140 },
		{ "gpt2 prefill B 2 pos 20", { 2, 12, 4, 4, 16, 0 }, 20, 40 },
		{ "gqa 8/2 hs 64 prefill", { 2, 37, 8, 2, 64, 0 }, 0, 37 },
		{ "gqa 8/2 hs 64 decode", { 2, 1, 8, 2, 64, 0 }, 200, 256 },
		{ "gqa 8/2 hs 64 chunk", { 1, 20, 8, 2, 64, 0 }, 45, 80 },
		{ "mqa 8/1 hs 128 prefill", { 1, 37, 8, 1, 128, 0 }, 0, 40 },
		{ "mqa 8/1 hs 128 decode", { 1, 1, 8, 1, 128, 0 }, 64, 65 },
		{ "hs 100 chunk", { 2, 5, 2, 2, 100, 0 }, 10, 20 },
		{ "window 16 prefill", { 1, 37, 4, 2, 64, 16 }, 0, 40 },
		{ "window 16 decode", { 2, 1, 4, 2, 64, 16 }, 200, 256 },
		{ "window 20 chunk", { 1, 30, 4, 2, 32, 20 }, 50, 90 },
		{ "window 1 decode", { 1, 1, 2, 1, 32, 1 }, 9, 10 },
		{ "split decode pos 1000", { 1, 1, 4, 2, 64, 0 }, 1000, 1024 },
		{ "split decode window 300", { 2, 1, 4, 1, 128, 300 }, 900, 960 },
		{ "split prefill n 300", { 1, 300, 2, 1, 32, 0 }, 0, 300 },
	};
	for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++)
		attention_kv_case(cases[ci].name, cases[ci].s, cases[ci].pos0, cases[ci].P,
				  1600 + 10 * ci);
}

/* Prefill from position 0 is the training op: attention_kv on n rows gives
 * attention_forward's out (T = n), on each backend. */
static void attention_kv_matches_forward(sc_backend *be, const char *which, sc_attn_shape sh)
{
	size_t n_qkv = (size_t)sh.B * sh.T * (sh.NH + 2 * sh.NKV) * sh.hs;
	size_t n_out = (size_t)sh.B * sh.T * sh.NH * sh.hs;
	size_t n_cache = (size_t)sh.B * sh.T * sh.NKV * sh.hs, st, scr;
	float *hq = host_floats(n_qkv), *ref = host_floats(n_out), *got = host_floats(n_out);
	void *qkv, *out, *state, *kc, *vc;
	SC_ASSERT_OK(be->ops->attention_sizes(be, &sh, &st, &scr));
	SC_ASSERT_OK(be->ops->alloc(be, &qkv, n_qkv * sizeof(float)));
	SC_ASSERT_OK(be->ops->alloc(be, &out, n_out * sizeof(float)));
	SC_ASSERT_OK(be->ops->alloc(be, &state, st * sizeof(float)));
	SC_ASSERT_OK(be->ops->alloc(be, &kc, n_cache * sizeof(float)));
	SC_ASSERT_OK(be->ops->alloc(be, &vc, n_cache * sizeof(float)));
	sc_test_fill_normal(hq, n_qkv, 1900 + (uint64_t)sh.hs, 1.0f);
	SC_ASSERT_OK(be->ops->upload(be, qkv, hq, n_qkv * sizeof(float)));
	SC_ASSERT_OK(be->ops->attention_forward(be, out, state, qkv, &sh));
	SC_ASSERT_OK(be->ops->download(be, ref, out, n_out * sizeof(float)));
	SC_ASSERT_OK(be->ops->attention_kv(be, out, kc, vc, qkv, 0, sh.T, &sh));
	SC_ASSERT_OK(be->ops->download(be, got, out, n_out * sizeof(float)));
	double err = sc_test_max_rel_err(got, ref, n_out, REL_FLOOR);
	print_message("    %-28s max rel err %.3g (tol %.0e)\n", which, err, FP32_TOL);
	if (!(err <= FP32_TOL))
		fail_msg("%s: attention_kv and attention_forward differ: %.3g", which, err);
	be->ops->free_buf(be, qkv);
	be->ops->free_buf(be, out);
	be->ops->free_buf(be, state);
	be->ops->free_buf(be, kc);
	be->ops->free_buf(be, vc);
	free(hq);
	free(ref);
	free(got);
}

static void test_attention_kv_matches_forward(void **state)
{
	static const struct {
		const char *name;
		sc_attn_shape s; /* B, T, NH, NKV, hs, window */
	} cases[] = {
		{ "gpt2 T 37", { 2, 37, 4, 4, 16, 0 } },
		{ "gqa 8/2 hs 64 T 45", { 1, 45, 8, 2, 64, 0 } },
		{ "mqa 4/1 hs 128 T 21", { 1, 21, 4, 1, 128, 0 } },
		{ "window 16 T 70", { 1, 70, 4, 2, 64, 16 } },
	};
	for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
		print_message("  %s\n", cases[ci].name);
		attention_kv_matches_forward(cpu, "cpu kv == forward", cases[ci].s);
		attention_kv_matches_forward(gpu, "gpu kv == forward", cases[ci].s);
	}
}

/* Positions outside the cache, no new rows, and head sizes past the
 * kernels' 128 are refused with a reason, before anything is written. */
static void test_attention_kv_refuses(void **state)
{
	sc_attn_shape one = { 1, 1, 2, 2, 32, 0 }, four = { 1, 4, 2, 2, 32, 0 };
	sc_attn_shape none = { 1, 0, 2, 2, 32, 0 }, big = { 1, 1, 2, 2, 160, 0 };
	SC_ASSERT_ERR(gpu->ops->attention_kv(gpu, NULL, NULL, NULL, NULL, 8, 8, &one), SC_EINVAL);
	assert_non_null(strstr(sc_err_detail(), "outside the cache"));
	SC_ASSERT_ERR(cpu->ops->attention_kv(cpu, NULL, NULL, NULL, NULL, 8, 8, &one), SC_EINVAL);
	SC_ASSERT_ERR(gpu->ops->attention_kv(gpu, NULL, NULL, NULL, NULL, 5, 8, &four), SC_EINVAL);
	SC_ASSERT_ERR(gpu->ops->attention_kv(gpu, NULL, NULL, NULL, NULL, -1, 8, &one), SC_EINVAL);
	SC_ASSERT_ERR(gpu->ops->attention_kv(gpu, NULL, NULL, NULL, NULL, 0, 8, &none), SC_EINVAL);
	SC_ASSERT_ERR(gpu->ops->attention_kv(gpu, NULL, NULL, NULL, NULL, 0, 8, &big), SC_ENOTSUP);
	assert_non_null(strstr(sc_err_detail(), "head size 160"));
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

/* SwiGLU forward and backward; gate values up to about +-25, so that the
 * sigmoid saturates at both ends. */
static void test_swiglu(void **state)
{
	int N = 37, I = 300;
	size_t n = (size_t)N * I;
	twin gu = twin_new(2 * n), out = twin_new(n), dout = twin_new(n), dgu = twin_new(2 * n);
	twin_random(&gu, 1400, 6.0f);
	twin_poison(&out);
	SC_ASSERT_OK(cpu->ops->swiglu_forward(cpu, F(out), F(gu), N, I));
	SC_ASSERT_OK(gpu->ops->swiglu_forward(gpu, G(out), G(gu), N, I));
	twin_expect(&out, "swiglu_forward out", FP32_TOL);

	twin_random(&dout, 1401, 1.0f);
	twin_poison(&dgu);
	SC_ASSERT_OK(cpu->ops->swiglu_backward(cpu, F(dgu), F(dout), F(gu), N, I));
	SC_ASSERT_OK(gpu->ops->swiglu_backward(gpu, G(dgu), G(dout), G(gu), N, I));
	twin_expect(&dgu, "swiglu_backward dgu", FP32_TOL);
	twin_free(&gu);
	twin_free(&out);
	twin_free(&dout);
	twin_free(&dgu);
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
	SC_ASSERT_OK(cpu->ops->add_bias(cpu, F(x), F(bias), N, OC, OC));
	SC_ASSERT_OK(gpu->ops->add_bias(gpu, G(x), G(bias), N, OC, OC));
	twin_expect(&x, "add_bias out", FP32_TOL);

	/* a column block of a wider matrix: columns 7 .. 7 + OC - 1 of rows
	 * ldo apart; the other columns must stay as they were */
	int ldo = OC + 50;
	twin wide = twin_new((size_t)N * ldo);
	twin_random(&wide, 804, 1.0f);
	SC_ASSERT_OK(cpu->ops->add_bias(cpu, F(wide) + 7, F(bias), N, OC, ldo));
	SC_ASSERT_OK(gpu->ops->add_bias(gpu, G(wide) + 7, G(bias), N, OC, ldo));
	twin_expect(&wide, "add_bias ldo > OC", 0.0);
	SC_ASSERT_ERR(gpu->ops->add_bias(gpu, G(wide), G(bias), N, OC, OC - 1), SC_EINVAL);
	twin_free(&wide);
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
		cmocka_unit_test(test_gemm_q),
		cmocka_unit_test(test_gemm_q_refuses),
		cmocka_unit_test(test_encoder_forward_q),
		cmocka_unit_test(test_encoder_forward),
		cmocka_unit_test(test_layernorm),
		cmocka_unit_test(test_rmsnorm),
		cmocka_unit_test(test_rope),
		cmocka_unit_test(test_attention),
		cmocka_unit_test(test_attention_refuses_bad_shapes),
		cmocka_unit_test(test_attention_kv),
		cmocka_unit_test(test_attention_kv_matches_forward),
		cmocka_unit_test(test_attention_kv_refuses),
		cmocka_unit_test(test_gelu),
		cmocka_unit_test(test_swiglu),
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
