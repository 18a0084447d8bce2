/* qbf16_test.c — an int8 / NF4 frozen base multiplied as bf16 (a job's
 * --precision bf16 with --base-quant, sc_qweight.bf16_compute) on the CPU
 * backend:
 *   - the dequantization to bf16, both kernels (AVX-512 where the CPU has
 *     it, and the scalar loop), is bit for bit an independent one written
 *     here from the published formats: int8 times its channel's scale,
 *     NF4's codebook (QLoRA, appendix E) times its block's absmax (or the
 *     double-quantized one), in fp32, then rounded to bf16 to nearest with
 *     ties to even, decided here in double from the two neighbouring bf16
 *     values; every nibble and int8 value, ties, subnormal products,
 *     infinities and NaN, ranges that start and end inside a block;
 *   - gemm_q with bf16_compute on oneDNN (where the CPU multiplies bf16) is
 *     within fp32 accumulation of the double product of the bf16-rounded
 *     activation and the bf16 weights, every layout (trans_a, trans_b,
 *     alpha, beta, lda, ldc), tiles that take every row at once, a few
 *     rows at a time, or one panel column at a time; and it is not the
 *     fp32 product (the rounding shows). Where there is no bf16 matmul, or
 *     it is turned off (sc_backend_cpu_bf16_path), bf16_compute changes
 *     no bit;
 *   - per-layer formats (--layer-quant) on a bf16 base (--precision bf16):
 *     the nf4 and int8 layers multiply as bf16 too (other bits than with
 *     compute_bf16 off where the CPU has bf16 products, the same bits
 *     elsewhere), one segment gives the bits of a chain of two, and the
 *     memory the planner predicts is what the segment holds;
 *   - bad ranges for the dequantization are refused. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sc_backend.h"
#include "sc_layer_quant.h"
#include "sc_modelgen.h"
#include "sc_segment.h"
#include "sc_train.h"
#include "sc_weights.h"
#include "testutil.h"

/* The NormalFloat4 codebook as QLoRA's appendix E and bitsandbytes list
 * it (float32), index = the stored nibble. */
static const float NF4[16] = { -1.0f,
			       -0.6961928009986877f,
			       -0.5250730514526367f,
			       -0.39491748809814453f,
			       -0.28444138169288635f,
			       -0.18477343022823334f,
			       -0.09105003625154495f,
			       0.0f,
			       0.07958029955625534f,
			       0.16093020141124725f,
			       0.24611230194568634f,
			       0.33791524171829224f,
			       0.44070982933044434f,
			       0.5626170039176941f,
			       0.7229568362236023f,
			       1.0f };

static uint64_t next(uint64_t *s)
{
	*s = *s * 6364136223846793005ull + 1442695040888963407ull;
	return *s >> 33;
}

static float unif(uint64_t *s, float scale)
{
	return scale * ((float)(next(s) & 0xffffff) / (float)(1 << 24) - 0.5f);
}

static uint32_t bits_of(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof(u));
	return u;
}

static double widen(uint32_t h) /* a bf16's value; 0x7f80 (inf) as 2^128 */
{
	if ((h & 0x7fff) == 0x7f80)
		return ldexp(h & 0x8000 ? -1.0 : 1.0, 128);
	uint32_t u = h << 16;
	float f;
	memcpy(&f, &u, sizeof(f));
	return f;
}

/* f rounded to bf16, decided in double: the nearer of the two bf16
 * values around f (truncation and the next one up in magnitude), the even
 * one on a tie; past the largest finite bf16 that is infinity. NaN: the
 * engine's documented quiet NaN (high bits, quiet bit set). */
static uint16_t ref_bf16(float f)
{
	uint32_t u = bits_of(f);
	if (isnan(f))
		return (uint16_t)(u >> 16 | 0x40);
	if (isinf(f))
		return (uint16_t)(u >> 16);
	uint32_t lo = u >> 16, hi = lo + 1;
	double x = fabs((double)f), dlo = x - fabs(widen(lo)), dhi = fabs(widen(hi)) - x;
	if (dlo < dhi || (dlo == dhi && !(lo & 1)))
		return (uint16_t)lo;
	return (uint16_t)hi;
}

/* A weight's parts, made here at random (not by the quantizer). */
typedef struct wparts {
	int format, rows, cols, scale_rows, dq;
	uint8_t *q, *scales_q;
	float *scales, *scales_scale, offset;
} wparts;

static void make(wparts *p, int format, int rows, int cols, int scale_rows, int dq, uint64_t seed)
{
	size_t n = (size_t)rows * cols, nb = (n + 63) / 64;
	*p = (wparts){ format, rows, cols, scale_rows, dq, NULL, NULL, NULL, NULL, 0.0f };
	p->q = malloc(format == SC_QW_INT8 ? n : (n + 1) / 2);
	size_t ns = format == SC_QW_INT8 ? (size_t)(scale_rows ? rows : cols) : nb;
	p->scales = malloc(ns * sizeof(float));
	assert_non_null(p->q);
	assert_non_null(p->scales);
	if (format == SC_QW_INT8)
		for (size_t i = 0; i < n; i++)
			p->q[i] = (uint8_t)(int8_t)((int)(next(&seed) % 255) - 127);
	else
		for (size_t i = 0; i < (n + 1) / 2; i++)
			p->q[i] = (uint8_t)next(&seed);
	for (size_t i = 0; i < ns; i++)
		p->scales[i] = unif(&seed, 0.1f) + 0.06f;
	/* special scales: 1 + 2^-8 and 1 + 3 2^-8 make ties (q = 1, 2, 4,
	 * ...; nf4: +-1), to the even value below and above; a subnormal
	 * one subnormal products, a huge one infinities */
	if (ns > 5) {
		p->scales[0] = 1.0f + 0x1p-8f;
		p->scales[5] = 1.0f + 0x3p-8f;
		p->scales[1] = 0x1p-130f;
		p->scales[2] = 3.0e38f;
	}
	if (dq) {
		size_t ng = (nb + 255) / 256;
		p->scales_q = malloc(nb);
		p->scales_scale = malloc(ng * sizeof(float));
		assert_non_null(p->scales_q);
		assert_non_null(p->scales_scale);
		for (size_t i = 0; i < nb; i++)
			p->scales_q[i] = (uint8_t)(int8_t)((int)(next(&seed) % 255) - 127);
		for (size_t i = 0; i < ng; i++)
			p->scales_scale[i] = unif(&seed, 0.002f) + 0.001f;
		p->offset = 0.03f;
	}
}

static void unmake(wparts *p)
{
	free(p->q);
	free(p->scales);
	free(p->scales_q);
	free(p->scales_scale);
}

static sc_qweight view(const wparts *p)
{
	return (sc_qweight){ .format = p->format,
			     .rows = p->rows,
			     .cols = p->cols,
			     .scale_rows = p->scale_rows,
			     .q = p->q,
			     .scales = p->dq ? NULL : p->scales,
			     .scales_q = p->scales_q,
			     .scales_scale = p->scales_scale,
			     .scales_offset = p->dq ? &p->offset : NULL };
}

/* W[r, c] in fp32 from the published formats. */
static float ref_w(const wparts *p, int r, int c)
{
	size_t e = (size_t)r * p->cols + c;
	if (p->format == SC_QW_INT8)
		return (float)(int8_t)p->q[e] * p->scales[p->scale_rows ? r : c];
	uint8_t byte = p->q[e / 2];
	int nib = e % 2 ? byte & 0x0f : byte >> 4; /* the first element in the high nibble */
	size_t b = e / 64;
	float absmax = p->scales[b];
	if (p->dq) {
		float t = (float)(int8_t)p->scales_q[b] * p->scales_scale[b / 256];
		absmax = t + p->offset;
	}
	return NF4[nib] * absmax;
}

static void dequant_bit_exact(void **state)
{
	static const struct {
		int format, scale_rows, dq, rows, cols;
	} cases[] = { { SC_QW_INT8, 1, 0, 37, 203 }, { SC_QW_INT8, 0, 0, 41, 96 },
		      { SC_QW_NF4, 1, 0, 37, 203 },  { SC_QW_NF4, 1, 1, 29, 640 },
		      { SC_QW_NF4, 1, 0, 7, 64 },    { SC_QW_NF4, 1, 1, 300, 130 } };
	/* (r0, r1, c0, c1) as fractions of 8 of rows / cols, and odd offsets */
	static const int ranges[][4] = { { 0, 8, 0, 8 }, { 1, 5, 1, 7 }, { 3, 4, 0, 3 } };
	size_t checked = 0, ties = 0, subnormal = 0, inf = 0, nan = 0;
	printf("dequantization to bf16 here: %s\n", sc_backend_cpu_dequant_kind());
	for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
		wparts p;
		make(&p, cases[ci].format, cases[ci].rows, cases[ci].cols, cases[ci].scale_rows,
		     cases[ci].dq, 40 + ci);
		if (ci == 0)
			p.scales[3] = NAN;
		sc_qweight q = view(&p);
		for (size_t ri = 0; ri < 3; ri++) {
			int r0 = p.rows * ranges[ri][0] / 8, r1 = p.rows * ranges[ri][1] / 8;
			int c0 = p.cols * ranges[ri][2] / 8 + (ri ? 3 : 0),
			    c1 = p.cols * ranges[ri][3] / 8 - (ri == 1 ? 5 : 0);
			size_t ldo = (size_t)(c1 - c0) + 7, n = (size_t)(r1 - r0) * ldo;
			uint16_t *got[2] = { malloc(n * 2), malloc(n * 2) };
			for (int k = 0; k < 2; k++) {
				assert_non_null(got[k]);
				memset(got[k], 0xa5, n * 2);
				SC_ASSERT_OK(sc_backend_cpu_dequant_bf16(&q, r0, r1, c0, c1, got[k],
									 ldo, k));
			}
			for (int r = r0; r < r1; r++)
				for (int c = c0; c < c1; c++) {
					float w = ref_w(&p, r, c);
					uint16_t want = ref_bf16(w);
					size_t at = (size_t)(r - r0) * ldo + (size_t)(c - c0);
					for (int k = 0; k < 2; k++)
						if (got[k][at] != want)
							fail_msg("case %zu %s: W[%d, %d] = %.9g: "
								 "bf16 0x%04x, want 0x%04x",
								 ci, k ? "scalar" : "automatic", r,
								 c, (double)w, got[k][at], want);
					checked++;
					uint32_t u = bits_of(w);
					ties += (u & 0x1ffff) == 0x18000; /* rounds up */
					subnormal += w != 0.0f && fabsf(w) < 0x1p-126f;
					inf += isinf(w) || (want & 0x7fff) == 0x7f80;
					nan += isnan(w);
				}
			for (int r = r0; r < r1; r++) /* the padding of each row is untouched */
				for (size_t c = (size_t)(c1 - c0); c < ldo; c++)
					for (int k = 0; k < 2; k++)
						assert_int_equal(got[k][(size_t)(r - r0) * ldo + c],
								 0xa5a5);
			free(got[0]);
			free(got[1]);
		}
		unmake(&p);
	}
	printf("dequantization to bf16: %zu elements bit-exact (%zu ties, %zu subnormal, "
	       "%zu infinite, %zu NaN)\n",
	       checked, ties, subnormal, inf, nan);
	assert_true(ties > 3 && subnormal > 10 && inf > 10 && nan > 10);
}

static void dequant_refuses_bad_ranges(void **state)
{
	wparts p;
	make(&p, SC_QW_NF4, 8, 64, 1, 0, 3);
	sc_qweight q = view(&p);
	uint16_t out[8 * 64];
	SC_ASSERT_ERR(sc_backend_cpu_dequant_bf16(&q, 0, 9, 0, 64, out, 64, 0), SC_EINVAL);
	SC_ASSERT_ERR(sc_backend_cpu_dequant_bf16(&q, 2, 1, 0, 64, out, 64, 0), SC_EINVAL);
	SC_ASSERT_ERR(sc_backend_cpu_dequant_bf16(&q, 0, 8, 0, 65, out, 65, 0), SC_EINVAL);
	SC_ASSERT_ERR(sc_backend_cpu_dequant_bf16(&q, 0, 8, 0, 64, out, 63, 0), SC_EINVAL);
	q.format = 7;
	SC_ASSERT_ERR(sc_backend_cpu_dequant_bf16(&q, 0, 8, 0, 64, out, 64, 0), SC_EINVAL);
	assert_non_null(strstr(sc_err_detail(), "dequant_bf16"));
	unmake(&p);
}

static int has_bf16_matmul(sc_backend *be)
{
	int on = sc_backend_cpu_bf16_on_matmul(be);
	/* what the backend says of itself agrees */
	assert_int_equal(!strncmp(sc_backend_cpu_bf16_kernel(be), "bf16 matmul", 11), on);
	return on;
}

typedef struct gcase {
	int ta, tb, m, lda, ldc;
	float al, bt;
	size_t tile_floats;
} gcase;

static float *rand_floats(size_t n, uint64_t seed, float scale)
{
	float *v = malloc(n * sizeof(float));
	assert_non_null(v);
	for (size_t i = 0; i < n; i++)
		v[i] = unif(&seed, scale);
	return v;
}

/* c from gemm_q of q (the finite weight p) on case g; *worst the largest
 * |c - ref| / sum |terms| against the double product of bf16(a) and
 * bf16(W) (bf16 products are exact in fp32: only fp32 accumulation is
 * left, bounded by (k + 2) u sum |terms|, u = 2^-24; twice that is
 * allowed), *apart the same against the product of the unrounded a and
 * the fp32 W; with worst NULL nothing is checked. c_out (not NULL): a copy
 * of c. */
static void run_case(sc_backend *be, const wparts *p, int bf16_compute, const gcase *g,
		     uint64_t seed, float *c_out, double *worst, double *apart)
{
	static float tile[1 << 20];
	sc_qweight q = view(p);
	q.bf16_compute = bf16_compute;
	int n = g->tb ? p->rows : p->cols, k = g->tb ? p->cols : p->rows, m = g->m;
	size_t a_n = (size_t)(g->ta ? k : m) * (size_t)g->lda, c_n = (size_t)m * (size_t)g->ldc;
	float *a = rand_floats(a_n, seed, 2.0f), *c = rand_floats(c_n, seed + 1, 1.0f);
	float *c0 = malloc(c_n * sizeof(float));
	assert_non_null(c0);
	memcpy(c0, c, c_n * sizeof(float));
	assert_true(g->tile_floats <= sizeof(tile) / sizeof(float));
	SC_ASSERT_OK(sc_backend_gemm_q(be, g->ta, g->tb, m, n, k, g->al, a, g->lda, &q, g->bt, c,
				       g->ldc, tile, g->tile_floats));
	for (int i = 0; i < m && worst; i++) {
		for (int j = 0; j < n; j++) {
			double acc = 0, mag = 0, acc32 = 0;
			for (int kk = 0; kk < k; kk++) {
				float x =
				    g->ta ? a[(size_t)kk * g->lda + i] : a[(size_t)i * g->lda + kk];
				float w = g->tb ? ref_w(p, j, kk) : ref_w(p, kk, j);
				double xb = widen(ref_bf16(x)), wb = widen(ref_bf16(w));
				acc += xb * wb;
				mag += fabs(xb * wb);
				acc32 += (double)x * w;
			}
			double cv = c0[(size_t)i * g->ldc + j], got = c[(size_t)i * g->ldc + j];
			double bc = g->bt != 0.0f ? g->bt * cv : 0.0;
			double ref = g->al * acc + bc, d = fabs(got - ref);
			mag = fabs(g->al) * mag + fabs(g->bt * cv);
			if (!(d <= 2.0 * (k + 2) * 0x1p-24 * mag))
				fail_msg("format %d trans_a %d trans_b %d m %d lda %d ldc %d alpha "
					 "%g beta %g tile %zu: c[%d, %d] = %.9g, double says %.9g",
					 p->format, g->ta, g->tb, m, g->lda, g->ldc, (double)g->al,
					 (double)g->bt, g->tile_floats, i, j, got, ref);
			*worst = mag > 0 && d / mag > *worst ? d / mag : *worst;
			double d32 = fabs(got - (g->al * acc32 + bc)) / (mag > 0 ? mag : 1);
			*apart = d32 > *apart ? d32 : *apart;
		}
		for (int j = n; j < g->ldc; j++) /* c's padding is not touched */
			assert_true(c[(size_t)i * g->ldc + j] == c0[(size_t)i * g->ldc + j]);
	}
	if (c_out)
		memcpy(c_out, c, c_n * sizeof(float));
	free(a);
	free(c);
	free(c0);
}

/* Every layout of gemm_q with bf16_compute: within fp32 accumulation of
 * the double product of bf16 inputs on oneDNN; elsewhere (or with the
 * tiles forced) the bits of bf16_compute = 0. */
static void gemm_q_bf16_compute(void **state)
{
	static const struct {
		int format, scale_rows, dq;
	} fmts[] = {
		{ SC_QW_INT8, 1, 0 }, { SC_QW_INT8, 0, 0 }, { SC_QW_NF4, 1, 0 }, { SC_QW_NF4, 0, 1 }
	};
	static const float betas[] = { 0.0f, 1.0f, 0.5f }, alphas[] = { 1.0f, -0.75f };
	const int R = 70, CC = 301;
	sc_backend *be;
	SC_ASSERT_OK(sc_backend_cpu_open(&be, 2));
	/* oneDNN wherever it can run, whether or not it is this CPU's default */
	SC_ASSERT_OK(sc_backend_cpu_bf16_path(be, SC_CPU_BF16_MATMUL));
	int onednn = has_bf16_matmul(be), cases = 0;
	printf("bf16 products here: %s\n", sc_backend_cpu_bf16_kernel(be));
	if (!onednn)
		printf("no bf16 matmul on this CPU or build: bf16_compute must change no bit\n");
	double worst = 0, apart = 0;
	for (size_t fi = 0; fi < sizeof(fmts) / sizeof(fmts[0]); fi++) {
		wparts p;
		make(&p, fmts[fi].format, R, CC, fmts[fi].scale_rows, fmts[fi].dq, 70 + fi);
		if (fmts[fi].format == SC_QW_INT8 || !fmts[fi].dq) /* finite scales only */
			for (int i = 0; i < 3; i++)
				p.scales[i] = 0.05f;
		for (int ta = 0; ta < 2; ta++)
			for (int tb = 0; tb < 2; tb++)
				for (int v = 0; v < 6; v++) {
					int m = v == 0   ? 1
						: v == 1 ? 5
							 : 37,
					    n = tb ? R : CC, k = tb ? CC : R;
					/* tiles: every row and a wide panel; 3 rows
					 * and narrow panels; 2 k (one row, one
					 * column at a time) */
					size_t tiles[] = { (size_t)(m * k + 256 * k + 32) / 2 + 1,
							   (size_t)k * 5, (size_t)k };
					gcase g = { .ta = ta,
						    .tb = tb,
						    .m = m,
						    .lda = (ta ? m : k) + (v % 2 ? 3 : 0),
						    .ldc = n + (v % 3 ? 5 : 0),
						    .al = alphas[v % 2],
						    .bt = betas[v % 3],
						    .tile_floats = tiles[v % 3] };
					size_t c_n = (size_t)m * (size_t)g.ldc;
					float *c1 = malloc(c_n * sizeof(float)),
					      *c2 = malloc(c_n * sizeof(float));
					assert_non_null(c1);
					assert_non_null(c2);
					uint64_t seed = 1000 + (uint64_t)cases;
					if (onednn) {
						run_case(be, &p, 1, &g, seed, NULL, &worst, &apart);
						/* forced tiles: bf16_compute is ignored */
						SC_ASSERT_OK(sc_backend_cpu_bf16_path(
						    be, SC_CPU_BF16_TILES));
					}
					run_case(be, &p, 1, &g, seed, c1, NULL, NULL);
					run_case(be, &p, 0, &g, seed, c2, NULL, NULL);
					assert_memory_equal(c1, c2, c_n * sizeof(float));
					SC_ASSERT_OK(
					    sc_backend_cpu_bf16_path(be, SC_CPU_BF16_MATMUL));
					free(c1);
					free(c2);
					cases++;
				}
		unmake(&p);
	}
	if (onednn) {
		printf("gemm_q bf16_compute, %d cases: worst |c - ref| / sum|terms| = %.3g; "
		       "from the fp32 product: %.3g\n",
		       cases, worst, apart);
		/* the rounding to bf16 shows: far beyond fp32 accumulation */
		assert_true(apart > 1e-4);
	}
	sc_backend_free(be);
}

/* y (B,T,C) of layers [first, last) of a bf16 base whose layers 0 and 1
 * are nf4 and int8, compute_bf16 as given; in = tokens (first 0) or x. */
static void infer(sc_backend *be, sc_weights *w, const sc_model_config *mc, int first, int last,
		  const void *in, float *y)
{
	enum { B = 2, T = 8 };
	sc_segment *seg;
	sc_segment_bytes pred;
	sc_segment_spec sp = { .model = *mc,
			       .lora = { .rank = 2, .alpha = 4, .targets = SC_GPT2_ALL, .seed = 1 },
			       .first = first,
			       .last = last,
			       .B = B,
			       .T = T,
			       .slots = 1,
			       .kv_positions = T };
	SC_ASSERT_OK(sc_segment_predict(&sp, "cpu", &pred));
	SC_ASSERT_OK(sc_segment_new(&seg, be, &sp));
	assert_int_equal(sc_segment_device_bytes(seg), pred.total);
	SC_ASSERT_OK(sc_segment_load_weights(seg, w));
	SC_ASSERT_OK(sc_segment_infer(seg, 0, T, in, y));
	sc_segment_free(seg);
}

static void layer_quant_on_bf16_base(void **state)
{
	enum { B = 2, T = 8, C = 64 };
	sc_model_config mc, off;
	sc_train_config tc;
	char dir[512];
	sc_weights *w = NULL;
	sc_backend *be = NULL;
	int32_t tokens[B * T];
	static float y[B * T * C], ya[B * T * C], yb[B * T * C], yo[B * T * C];
	sc_modelgen_opts o = { .seed = 11, .dtype = SC_F32, .random_norms = 1 };
	sc_gpt2_config(&mc, 3, 2, C, 96, 32);
	sc_test_path(dir, sizeof(dir), "qbf16model");
	SC_ASSERT_OK(sc_modelgen_write(dir, &mc, &o));
	sc_train_config_defaults(&tc);
	tc.precision = SC_PRECISION_BF16;
	SC_ASSERT_OK(sc_train_base_format(&mc, &tc));
	SC_ASSERT_OK(sc_layer_quant_apply(&mc, "0:nf4,1:int8"));
	assert_true(mc.compute_bf16);
	off = mc;
	off.compute_bf16 = 0;
	SC_ASSERT_OK(sc_weights_open(&w, dir));
	SC_ASSERT_OK(sc_backend_cpu_open(&be, 2));
	for (int i = 0; i < B * T; i++)
		tokens[i] = (i * 37 + 5) % 96;
	infer(be, w, &mc, 0, 2, tokens, y);
	infer(be, w, &mc, 0, 1, tokens, ya);
	infer(be, w, &mc, 1, 2, ya, yb);
	assert_memory_equal(y, yb, sizeof(y));
	infer(be, w, &off, 0, 2, tokens, yo);
	if (has_bf16_matmul(be))
		assert_memory_not_equal(y, yo, sizeof(y));
	else
		assert_memory_equal(y, yo, sizeof(y));
	printf("layer formats nf4, int8 on a bf16 base: %s\n",
	       has_bf16_matmul(be) ? "bf16 products (other bits than fp32 products)"
				   : "no bf16 products here: the bits of fp32 products");
	sc_backend_free(be);
	sc_weights_close(w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(dequant_bit_exact),
		cmocka_unit_test(dequant_refuses_bad_ranges),
		cmocka_unit_test(gemm_q_bf16_compute),
		cmocka_unit_test(layer_quant_on_bf16_base),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
