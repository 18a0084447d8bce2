/* codec_test.c — the wire codecs (sc_codec.h): sizes, the float formats
 * against independent reference conversions, int8 / int4 rounding, stochastic
 * rounding, error feedback and the decoder's refusals. Frames live in
 * exact-size heap buffers so that the ASan build catches any overread. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sc_codec.h"
#include "testutil.h"

static uint32_t fbits(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

static float ffrom(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static void *xalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	assert_non_null(p);
	return p;
}

/* Encodes x into a fresh exact-size frame; *len = its size. */
static uint8_t *encode(enum sc_wire w, const float *x, size_t rows, size_t cols, float *res,
		       sc_rng *rng, size_t *len)
{
	*len = sc_wire_bytes(w, rows, cols);
	uint8_t *f = xalloc(*len);
	sc_wire_encode(w, x, rows, cols, res, rng, f);
	return f;
}

static float frame_scale(const uint8_t *f, size_t r)
{
	float s;
	memcpy(&s, f + 4 * r, 4);
	return s;
}

static void names_round_trip(void **state)
{
	static const char *want[SC_WIRE_COUNT] = { "fp32", "bf16", "fp16", "int8", "int4" };
	enum sc_wire w;
	for (int i = 0; i < SC_WIRE_COUNT; i++) {
		assert_string_equal(sc_wire_name((enum sc_wire)i), want[i]);
		SC_ASSERT_OK(sc_wire_parse(want[i], &w));
		assert_int_equal(w, i);
	}
	assert_string_equal(sc_wire_name(SC_WIRE_COUNT), "?");
	const char *bad[] = { "", "FP32", "int2", "fp8", "int8 " };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		SC_ASSERT_ERR(sc_wire_parse(bad[i], &w), SC_EINVAL);
		assert_non_null(strstr(sc_err_detail(), "fp32, bf16, fp16, int8 or int4"));
	}
	SC_ASSERT_ERR(sc_wire_parse(NULL, &w), SC_EINVAL);
}

static void bytes_of_odd_shapes(void **state)
{
	static const size_t R[] = { 0, 1, 5 }, C[] = { 0, 1, 3, 767, 768 };
	for (size_t i = 0; i < 3; i++)
		for (size_t j = 0; j < 5; j++) {
			size_t r = R[i], c = C[j];
			assert_int_equal(sc_wire_bytes(SC_WIRE_FP32, r, c), 4 * r * c);
			assert_int_equal(sc_wire_bytes(SC_WIRE_BF16, r, c), 2 * r * c);
			assert_int_equal(sc_wire_bytes(SC_WIRE_FP16, r, c), 2 * r * c);
			assert_int_equal(sc_wire_bytes(SC_WIRE_INT8, r, c), 4 * r + r * c);
			assert_int_equal(sc_wire_bytes(SC_WIRE_INT4, r, c),
					 4 * r + r * ((c + 1) / 2));
		}
	assert_int_equal(sc_wire_bytes(SC_WIRE_INT4, 1, 1), 5);
	assert_int_equal(sc_wire_bytes(SC_WIRE_INT4, 5, 3), 30);
	assert_int_equal(sc_wire_bytes(SC_WIRE_INT4, 5, 767), 1940);
	assert_int_equal(sc_wire_bytes(SC_WIRE_INT8, 5, 767), 3855);
	for (int w = 0; w < SC_WIRE_COUNT; w++) {
		assert_true(sc_wire_bytes(w, SIZE_MAX / 2, 3) == SIZE_MAX);
		assert_true(sc_wire_bytes(w, 3, SIZE_MAX / 8) == SIZE_MAX);
		assert_true(sc_wire_bytes(w, (size_t)1 << 40, (size_t)1 << 30) == SIZE_MAX);
	}
	assert_true(sc_wire_bytes(SC_WIRE_INT8, SIZE_MAX / 2, 0) == SIZE_MAX);
	assert_true(sc_wire_bytes(SC_WIRE_COUNT, 1, 1) == SIZE_MAX);
}

static void fp32_is_exact(void **state)
{
	float x[8] = { 0.0f, -0.0f, 1e-45f, -FLT_MAX, INFINITY, -INFINITY, 3.25f, 0 };
	x[7] = ffrom(0x7fa12345u); /* a NaN with a payload */
	float y[8], res[8] = { 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f };
	size_t len;
	uint8_t *f = encode(SC_WIRE_FP32, x, 2, 4, NULL, NULL, &len);
	assert_int_equal(len, sizeof(x));
	assert_memory_equal(f, x, sizeof(x));
	SC_ASSERT_OK(sc_wire_decode(SC_WIRE_FP32, f, len, 2, 4, y));
	assert_memory_equal(y, x, sizeof(x));
	sc_wire_encode(SC_WIRE_FP32, x, 2, 4, res, NULL, f);
	for (int i = 0; i < 8; i++)
		assert_true(fbits(res[i]) == 0);
	assert_true(fbits(frame_scale(f, 6)) == fbits(3.75f)); /* x + residual was sent */
	free(f);
}

/* Independent references: the nearest representable value found by
 * comparing distances in double, ties to the even code. */
static uint16_t ref_bf16(float f)
{
	uint32_t u = fbits(f), lo = u & 0xffff0000u, hi = lo + 0x10000u;
	if (isinf(f))
		return (uint16_t)(u >> 16);
	double vl = ffrom(lo), vh = (hi & 0x7fffffffu) == 0x7f800000u ? copysign(ldexp(1.0, 128), f)
								      : (double)ffrom(hi);
	double dl = fabs((double)f - vl), dh = fabs((double)f - vh);
	if (dl < dh || (dl == dh && !((lo >> 16) & 1)))
		return (uint16_t)(lo >> 16);
	return (uint16_t)(hi >> 16);
}

/* The binary16 value of code h (0 <= h < 0x7c00) by the textbook formula;
 * 0x7c00 stands for 2^16, the step past the largest finite half. */
static double half_value(unsigned h)
{
	unsigned e = h >> 10, m = h & 0x3ff;
	return e ? ldexp(1024 + m, (int)e - 25) : ldexp(m, -24);
}

static uint16_t ref_fp16(float f)
{
	uint16_t sign = signbit(f) ? 0x8000 : 0;
	double a = fabs((double)f);
	if (isinf(f))
		return sign | 0x7c00;
	unsigned lo = 0, hi = 0x7c00; /* largest code with value <= a */
	while (lo < hi) {
		unsigned mid = (lo + hi + 1) / 2;
		if (half_value(mid) <= a)
			lo = mid;
		else
			hi = mid - 1;
	}
	if (lo < 0x7c00) {
		double dl = a - half_value(lo), dh = half_value(lo + 1) - a;
		if (dh < dl || (dh == dl && (lo & 1)))
			lo++;
	}
	return sign | (uint16_t)lo;
}

/* Encodes then decodes f in encoding w (bf16 / fp16): *code, *back. */
static void half_round(enum sc_wire w, float f, uint16_t *code, float *back)
{
	uint8_t b[2];
	sc_wire_encode(w, &f, 1, 1, NULL, NULL, b);
	memcpy(code, b, 2);
	SC_ASSERT_OK(sc_wire_decode(w, b, 2, 1, 1, back));
}

static const float specials[] = {
	0.0f, -0.0f, 1.0f, -1.0f, 1e-45f, -1e-45f, FLT_MIN, 1.1754942e-38f, FLT_MAX, -FLT_MAX,
	65504.0f, 65519.0f, 65520.0f, -65520.0f, 1e5f, 6.1035156e-05f, 6.0975552e-05f,
	5.9604645e-08f, 2.9802322e-08f, 2.9802326e-08f, 8.940697e-08f, 1.0009766f, 1.0014648f,
	1.00048828125f, 1.005859375f, 3.3895314e38f, 3.3961775e38f,
	/* bf16 halfway cases: 1 + 2^-8 (ties down to 1), 1 + 3 * 2^-8 (ties up) */
	1.00390625f, 1.01171875f, -1.01171875f, INFINITY, -INFINITY
};

static void bf16_matches_reference(void **state)
{
	uint16_t c;
	float back;
	for (size_t i = 0; i < sizeof(specials) / sizeof(specials[0]); i++) {
		half_round(SC_WIRE_BF16, specials[i], &c, &back);
		if (c != ref_bf16(specials[i]))
			fail_msg("bf16(%a) = %#x, want %#x", (double)specials[i], c,
				 ref_bf16(specials[i]));
		assert_true(fbits(back) == (uint32_t)c << 16);
	}
	half_round(SC_WIRE_BF16, 1.00390625f, &c, &back);
	assert_int_equal(c, 0x3f80); /* tie to even: down */
	half_round(SC_WIRE_BF16, 1.01171875f, &c, &back);
	assert_int_equal(c, 0x3f82); /* tie to even: up */
	half_round(SC_WIRE_BF16, FLT_MAX, &c, &back);
	assert_int_equal(c, 0x7f80); /* past the largest bf16's halfway: inf */
	half_round(SC_WIRE_BF16, ffrom(0xffc00001u), &c, &back);
	assert_true(isnan(back) && (c & 0x8040) == 0x8040);      /* quiet, sign kept */
	half_round(SC_WIRE_BF16, ffrom(0x7f800001u), &c, &back); /* payload only in low bits */
	assert_true(isnan(back) && (c & 0x0040));
	/* Every 4093rd bit pattern; random values within 2^-8 relative error. */
	for (uint64_t u = 0; u < 0x100000000ull; u += 4093) {
		float f = ffrom((uint32_t)u);
		if (isnan(f))
			continue;
		half_round(SC_WIRE_BF16, f, &c, &back);
		if (c != ref_bf16(f))
			fail_msg("bf16(%a) = %#x, want %#x", (double)f, c, ref_bf16(f));
	}
	float x[4096], y[4096];
	sc_test_fill_normal(x, 4096, 1, 10.0f);
	size_t len;
	uint8_t *f = encode(SC_WIRE_BF16, x, 64, 64, NULL, NULL, &len);
	SC_ASSERT_OK(sc_wire_decode(SC_WIRE_BF16, f, len, 64, 64, y));
	for (int i = 0; i < 4096; i++)
		assert_true(fabsf(y[i] - x[i]) <= ldexpf(fabsf(x[i]), -8));
	free(f);
}

static void fp16_matches_reference(void **state)
{
	uint16_t c;
	float back;
	/* Every code decodes to its textbook value. */
	for (uint32_t h = 0; h < 0x10000; h++) {
		uint8_t b[2] = { (uint8_t)h, (uint8_t)(h >> 8) };
		SC_ASSERT_OK(sc_wire_decode(SC_WIRE_FP16, b, 2, 1, 1, &back));
		unsigned a = h & 0x7fff;
		if (a > 0x7c00) {
			assert_true(isnan(back));
			continue;
		}
		double v = a == 0x7c00 ? INFINITY : half_value(a);
		if ((double)back != ((h & 0x8000) ? -v : v) || !signbit(back) != !(h & 0x8000))
			fail_msg("fp16 %#x decodes to %a", h, (double)back);
	}
	for (size_t i = 0; i < sizeof(specials) / sizeof(specials[0]); i++) {
		half_round(SC_WIRE_FP16, specials[i], &c, &back);
		if (c != ref_fp16(specials[i]))
			fail_msg("fp16(%a) = %#x, want %#x", (double)specials[i], c,
				 ref_fp16(specials[i]));
	}
	half_round(SC_WIRE_FP16, 65519.0f, &c, &back);
	assert_int_equal(c, 0x7bff);
	half_round(SC_WIRE_FP16, 65520.0f, &c, &back); /* halfway to 2^16: ties to inf */
	assert_int_equal(c, 0x7c00);
	half_round(SC_WIRE_FP16, -1e9f, &c, &back);
	assert_int_equal(c, 0xfc00);
	half_round(SC_WIRE_FP16, 2.9802322e-08f, &c, &back); /* 2^-25: tie to even, 0 */
	assert_int_equal(c, 0x0000);
	half_round(SC_WIRE_FP16, 8.940697e-08f, &c, &back); /* 1.5 * 2^-24: tie up to 2 */
	assert_int_equal(c, 0x0002);
	half_round(SC_WIRE_FP16, 1.00048828125f, &c, &back); /* 1 + 2^-11: tie down */
	assert_int_equal(c, 0x3c00);
	half_round(SC_WIRE_FP16, ffrom(0xff800001u), &c, &back);
	assert_true(isnan(back) && (c & 0xfe00) == 0xfe00);
	for (uint64_t u = 0; u < 0x100000000ull; u += 4093) {
		float f = ffrom((uint32_t)u);
		if (isnan(f))
			continue;
		half_round(SC_WIRE_FP16, f, &c, &back);
		if (c != ref_fp16(f))
			fail_msg("fp16(%a) = %#x, want %#x", (double)f, c, ref_fp16(f));
#ifdef __FLT16_MAX__ /* the compiler's own conversion, a second opinion */
		_Float16 g = (_Float16)f;
		uint16_t gc;
		memcpy(&gc, &g, 2);
		assert_int_equal(c, gc);
#endif
	}
	float x[4096], y[4096];
	sc_test_fill_normal(x, 4096, 2, 100.0f);
	size_t len;
	uint8_t *f = encode(SC_WIRE_FP16, x, 4096, 1, NULL, NULL, &len);
	SC_ASSERT_OK(sc_wire_decode(SC_WIRE_FP16, f, len, 4096, 1, y));
	for (int i = 0; i < 4096; i++)
		if (fabsf(x[i]) >= 6.103515625e-05f)
			assert_true(fabsf(y[i] - x[i]) <= ldexpf(fabsf(x[i]), -11));
	free(f);
}

/* Rows of varied size: normal rows, a zero row, a row with one huge value,
 * a row of tiny values. */
static void fill_rows(float *x, size_t rows, size_t cols, uint64_t seed)
{
	sc_test_fill_normal(x, rows * cols, seed, 1.0f);
	for (size_t r = 0; r < rows; r++)
		for (size_t j = 0; j < cols; j++)
			x[r * cols + j] *= (float)(r % 4 + 1) * 0.3f;
	memset(x + 1 * cols, 0, cols * sizeof(float));
	if (rows > 2)
		x[2 * cols + cols / 2] = 1e6f;
	if (rows > 3)
		for (size_t j = 0; j < cols; j++)
			x[3 * cols + j] *= 1e-20f;
}

static void int_nearest_within_half_step(void **state)
{
	static const size_t C[] = { 1, 2, 3, 767, 768 };
	for (int w = SC_WIRE_INT8; w <= SC_WIRE_INT4; w++)
		for (size_t k = 0; k < 5; k++) {
			size_t rows = 5, cols = C[k], len;
			float qmax = w == SC_WIRE_INT8 ? 127.0f : 7.0f;
			float *x = xalloc(rows * cols * 4), *y = xalloc(rows * cols * 4);
			fill_rows(x, rows, cols, 3 + k);
			uint8_t *f = encode(w, x, rows, cols, NULL, NULL, &len);
			SC_ASSERT_OK(sc_wire_decode(w, f, len, rows, cols, y));
			for (size_t r = 0; r < rows; r++) {
				float am = 0, s = frame_scale(f, r);
				for (size_t j = 0; j < cols; j++)
					am = fmaxf(am, fabsf(x[r * cols + j]));
				assert_true(s == am / qmax);
				assert_true(r != 1 || s == 0.0f); /* the zero row */
				for (size_t j = 0; j < cols; j++) {
					double e = fabs((double)y[r * cols + j] - x[r * cols + j]);
					if (e > s * (0.5 + 1e-4))
						fail_msg(
						    "%s (%zu, %zu)[%zu, %zu]: error %g, scale %g",
						    sc_wire_name(w), rows, cols, r, j, (double)e,
						    (double)s);
				}
			}
			free(x);
			free(y);
			free(f);
		}
}

static void int_layout_byte_for_byte(void **state)
{
	/* Scales 1 and 2 (bytes 00 00 80 3f, 00 00 00 40); ties go to even:
	 * 3.5 -> 4, 2.5 -> 2, -0.5 -> 0, and in row 1 0.5 -> 0, 1.5 -> 2. */
	const float x4[2][5] = { { 7, -7, 3.5f, 2.5f, -0.5f }, { -14, 2, 0, 1, 3 } };
	const float x8[2][5] = { { 127, -127, 3.5f, 2.5f, -0.5f }, { -254, 2, 0, 1, 3 } };
	const uint8_t want4[] = { 0,    0,    0x80, 0x3f, 0,    0,    0,
				  0x40, 0x97, 0x24, 0x00, 0x19, 0x00, 0x02 };
	const uint8_t want8[] = { 0,    0, 0x80, 0x3f, 0,    0, 0, 0x40, 0x7f,
				  0x81, 4, 2,    0,    0x81, 1, 0, 0,    2 };
	size_t len;
	uint8_t *f = encode(SC_WIRE_INT4, &x4[0][0], 2, 5, NULL, NULL, &len);
	assert_int_equal(len, sizeof(want4));
	assert_memory_equal(f, want4, sizeof(want4));
	free(f);
	f = encode(SC_WIRE_INT8, &x8[0][0], 2, 5, NULL, NULL, &len);
	assert_int_equal(len, sizeof(want8));
	assert_memory_equal(f, want8, sizeof(want8));
	free(f);
}

static void int_nonfinite_counts_as_zero(void **state)
{
	float x[8] = { 1, NAN, -2, INFINITY, 4, -INFINITY, 0, 0.5f }, y[8], res[8] = { 0 };
	for (int w = SC_WIRE_INT8; w <= SC_WIRE_INT4; w++) {
		size_t len;
		uint8_t *f = encode(w, x, 2, 4, res, NULL, &len);
		SC_ASSERT_OK(sc_wire_decode(w, f, len, 2, 4, y));
		assert_true(frame_scale(f, 0) == 2.0f / (w == SC_WIRE_INT8 ? 127 : 7));
		for (int i = 0; i < 8; i++)
			assert_true(isfinite(y[i]) && isfinite(res[i]));
		assert_true(y[1] == 0 && y[3] == 0 && y[5] == 0);
		assert_true(res[1] == 0 && res[3] == 0 && res[5] == 0);
		free(f);
	}
	/* Rows below ~1e-36 are sent as zeros; their values stay in the residual. */
	float tiny[3] = { 1e-38f, -5e-39f, 0 }, rt[3] = { 0 };
	for (int w = SC_WIRE_INT8; w <= SC_WIRE_INT4; w++) {
		size_t len;
		uint8_t *f = encode(w, tiny, 1, 3, rt, NULL, &len);
		SC_ASSERT_OK(sc_wire_decode(w, f, len, 1, 3, y));
		assert_true(frame_scale(f, 0) == 0 && y[0] == 0 && y[1] == 0);
		assert_true(rt[0] == tiny[0] && rt[1] == tiny[1]);
		memset(rt, 0, sizeof(rt));
		free(f);
	}
	/* Float formats: a NaN, an inf or an fp16 overflow leaves residual 0. */
	float odd[4] = { NAN, -INFINITY, 1e5f, 1 }, ro[4] = { 0 };
	for (int w = SC_WIRE_FP32; w <= SC_WIRE_FP16; w++) {
		size_t len;
		uint8_t *f = encode(w, odd, 1, 4, ro, NULL, &len);
		for (int i = 0; i < (w == SC_WIRE_FP16 ? 3 : 2); i++)
			assert_true(fbits(ro[i]) == 0);
		free(f);
	}
	/* The largest floats: scale * qmax stays finite, so does the decode. */
	float big[3] = { FLT_MAX, -FLT_MAX, 1 };
	for (int w = SC_WIRE_INT8; w <= SC_WIRE_INT4; w++) {
		size_t len;
		uint8_t *f = encode(w, big, 1, 3, NULL, NULL, &len);
		SC_ASSERT_OK(sc_wire_decode(w, f, len, 1, 3, y));
		assert_true(isfinite(y[0]) && y[0] > 0.99f * FLT_MAX && y[1] == -y[0]);
		free(f);
	}
}

static void stochastic_is_unbiased_and_seeded(void **state)
{
	enum { N = 64, TRIALS = 4000 };
	float x[N], y[N];
	sc_test_fill_normal(x, N, 4, 1.0f);
	for (int w = SC_WIRE_INT8; w <= SC_WIRE_INT4; w++) {
		double sum[N] = { 0 };
		sc_rng r, r2;
		sc_rng_seed(&r, (uint64_t[]){ 9, (uint64_t)w }, 2);
		size_t len = sc_wire_bytes(w, 1, N);
		uint8_t *f = xalloc(len), *g = xalloc(len);
		for (int t = 0; t < TRIALS; t++) {
			sc_wire_encode(w, x, 1, N, NULL, &r, f);
			SC_ASSERT_OK(sc_wire_decode(w, f, len, 1, N, y));
			for (int i = 0; i < N; i++)
				sum[i] += y[i];
		}
		float s = frame_scale(f, 0);
		for (int i = 0; i < N; i++) {
			double q = x[i] / s, fr = q - floor(q);
			double se = s * sqrt(fr * (1 - fr) / TRIALS);
			double err = sum[i] / TRIALS - x[i];
			if (fabs(err) > 4 * se + 1e-4 * s)
				fail_msg("%s: element %d mean error %g, standard error %g",
					 sc_wire_name(w), i, err, se);
		}
		/* The same seed, the same bytes; one 64-bit draw per two
		 * elements (N fits one chunk). */
		sc_rng_seed(&r, (uint64_t[]){ 5 }, 1);
		sc_rng_seed(&r2, (uint64_t[]){ 5 }, 1);
		sc_wire_encode(w, x, 1, N, NULL, &r, f);
		sc_wire_encode(w, x, 1, N, NULL, &r2, g);
		assert_memory_equal(f, g, len);
		sc_rng_seed(&r2, (uint64_t[]){ 5 }, 1);
		for (int i = 0; i < (N + 1) / 2; i++)
			sc_rng_u64(&r2);
		assert_true(sc_rng_u64(&r) == sc_rng_u64(&r2));
		sc_rng_seed(&r2, (uint64_t[]){ 6 }, 1);
		sc_wire_encode(w, x, 1, N, NULL, &r2, g);
		assert_memory_not_equal(f, g, len);
		free(f);
		free(g);
	}
}

static void error_feedback_converges(void **state)
{
	enum { N = 64, STEPS = 1000 };
	float x[N], v[N], y[N], res[N];
	sc_test_fill_normal(x, N, 7, 1.0f);
	for (int w = SC_WIRE_BF16; w <= SC_WIRE_INT4; w++)
		for (int sr = 0; sr < 2; sr++) {
			double with[N] = { 0 }, without[N] = { 0 };
			size_t len = sc_wire_bytes(w, 1, N);
			uint8_t *f = xalloc(len);
			float s_max = 0;
			sc_rng r;
			sc_rng_seed(&r, (uint64_t[]){ 8 }, 1);
			memset(res, 0, sizeof(res));
			for (int t = 0; t < STEPS; t++) {
				for (int i = 0; i < N; i++)
					v[i] = x[i] + res[i];
				sc_wire_encode(w, x, 1, N, res, sr ? &r : NULL, f);
				SC_ASSERT_OK(sc_wire_decode(w, f, len, 1, N, y));
				for (int i = 0; i < N; i++) {
					assert_true(fbits(res[i]) == fbits(v[i] - y[i]));
					with[i] += y[i];
				}
				if (w >= SC_WIRE_INT8)
					s_max = fmaxf(s_max, frame_scale(f, 0));
				sc_wire_encode(w, x, 1, N, NULL, sr ? &r : NULL, f);
				SC_ASSERT_OK(sc_wire_decode(w, f, len, 1, N, y));
				for (int i = 0; i < N; i++)
					without[i] += y[i];
			}
			double e_with = 0, e_without = 0;
			for (int i = 0; i < N; i++) {
				double bound =
				    w >= SC_WIRE_INT8 ? 1.01 * s_max : ldexp(fabs(x[i]), -7) + 1e-6;
				double e = fabs(with[i] - (double)STEPS * x[i]);
				if (e > bound)
					fail_msg("%s%s: element %d drifts by %g (bound %g)",
						 sc_wire_name(w), sr ? " stochastic" : "", i, e,
						 bound);
				e_with = fmax(e_with, e);
				e_without =
				    fmax(e_without, fabs(without[i] - STEPS * (double)x[i]));
			}
			if (!sr) /* nearest without feedback drifts linearly */
				assert_true(e_without > 50 * e_with);
			free(f);
			if (w < SC_WIRE_INT8)
				break; /* no stochastic variant */
		}
}

static void decode_refuses_bad_frames(void **state)
{
	float x[6] = { 1, -2, 3, 0.5f, 0, -1 }, y[6];
	size_t len8, len4;
	uint8_t *f8 = encode(SC_WIRE_INT8, x, 2, 3, NULL, NULL, &len8);
	uint8_t *f4 = encode(SC_WIRE_INT4, x, 2, 3, NULL, NULL, &len4);
	uint8_t *g = xalloc(len8);
	for (int w = 0; w < SC_WIRE_COUNT; w++) {
		size_t n = sc_wire_bytes(w, 2, 3);
		uint8_t *b = xalloc(n + 1);
		memset(b, 0, n + 1);
		SC_ASSERT_OK(sc_wire_decode(w, b, n, 2, 3, y));
		SC_ASSERT_ERR(sc_wire_decode(w, b, n + 1, 2, 3, y), SC_EFORMAT);
		SC_ASSERT_ERR(sc_wire_decode(w, b, n - 1, 2, 3, y), SC_EFORMAT);
		SC_ASSERT_ERR(sc_wire_decode(w, b, 0, 2, 3, y), SC_EFORMAT);
		SC_ASSERT_ERR(sc_wire_decode(w, b, n, SIZE_MAX / 2, 3, y), SC_EFORMAT);
		assert_non_null(strstr(sc_err_detail(), "too large"));
		SC_ASSERT_ERR(sc_wire_decode(w, b, n, (size_t)1 << 33, (size_t)1 << 31, y),
			      SC_EFORMAT);
		free(b);
	}
	SC_ASSERT_ERR(sc_wire_decode(SC_WIRE_COUNT, f8, len8, 2, 3, y), SC_EINVAL);
	const float bad_scales[] = { -1.0f, NAN, -NAN, INFINITY, FLT_MAX, FLT_MAX / 5 };
	for (size_t i = 0; i < sizeof(bad_scales) / sizeof(bad_scales[0]); i++) {
		memcpy(g, f8, len8);
		memcpy(g + 4, &bad_scales[i], 4);
		SC_ASSERT_ERR(sc_wire_decode(SC_WIRE_INT8, g, len8, 2, 3, y), SC_EFORMAT);
		assert_non_null(strstr(sc_err_detail(), "row 1"));
		memcpy(g, f4, len4);
		memcpy(g, &bad_scales[i], 4);
		SC_ASSERT_ERR(sc_wire_decode(SC_WIRE_INT4, g, len4, 2, 3, y), SC_EFORMAT);
		assert_non_null(strstr(sc_err_detail(), "row 0"));
	}
	memcpy(g, f8, len8);
	g[8 + 4] = 0x80; /* row 1 column 1: -128 */
	SC_ASSERT_ERR(sc_wire_decode(SC_WIRE_INT8, g, len8, 2, 3, y), SC_EFORMAT);
	assert_non_null(strstr(sc_err_detail(), "row 1 column 1 holds -128"));
	memcpy(g, f4, len4);
	g[8] = (uint8_t)((g[8] & 0x0f) | 0x80); /* row 0 column 1: -8 */
	SC_ASSERT_ERR(sc_wire_decode(SC_WIRE_INT4, g, len4, 2, 3, y), SC_EFORMAT);
	assert_non_null(strstr(sc_err_detail(), "row 0 column 1 holds -8"));
	memcpy(g, f4, len4);
	g[11] = (uint8_t)((g[11] & 0xf0) | 0x08); /* row 1 column 2: -8 */
	SC_ASSERT_ERR(sc_wire_decode(SC_WIRE_INT4, g, len4, 2, 3, y), SC_EFORMAT);
	assert_non_null(strstr(sc_err_detail(), "row 1 column 2 holds -8"));
	memcpy(g, f4, len4);
	g[11] |= 0x10; /* row 1's padding nibble */
	SC_ASSERT_ERR(sc_wire_decode(SC_WIRE_INT4, g, len4, 2, 3, y), SC_EFORMAT);
	assert_non_null(strstr(sc_err_detail(), "padding"));
	memcpy(g, f4, len4); /* scales 0 and -0 are fine */
	memset(g, 0, 4);
	memcpy(g + 4, &(float){ -0.0f }, 4);
	SC_ASSERT_OK(sc_wire_decode(SC_WIRE_INT4, g, len4, 2, 3, y));
	free(f8);
	free(f4);
	free(g);
}

static void roundtrip_is_encode_then_decode(void **state)
{
	enum { R = 7, C = 301 };
	float *x = xalloc(5 * R * C * 4), *a = x + R * C, *b = a + R * C, *ra = b + R * C;
	float *rb = ra + R * C;
	fill_rows(x, R, C, 11);
	x[5] = NAN;
	x[6] = -INFINITY;
	x[7] = 1e-40f;
	for (int w = 0; w < SC_WIRE_COUNT; w++)
		for (int mode = 0; mode < 4; mode++) { /* residual? rng? */
			size_t len = sc_wire_bytes(w, R, C);
			uint8_t *f = xalloc(len), *scratch = xalloc(len);
			sc_rng r1, r2;
			sc_rng_seed(&r1, (uint64_t[]){ 3, (uint64_t)mode }, 2);
			r2 = r1;
			sc_test_fill_normal(ra, R * C, 12, 0.01f);
			memcpy(rb, ra, R * C * 4);
			memcpy(a, x, R * C * 4);
			sc_wire_encode(w, x, R, C, mode & 1 ? ra : NULL, mode & 2 ? &r1 : NULL, f);
			SC_ASSERT_OK(sc_wire_decode(w, f, len, R, C, b));
			sc_wire_roundtrip(w, a, R, C, mode & 1 ? rb : NULL, mode & 2 ? &r2 : NULL,
					  scratch);
			assert_memory_equal(a, b, R * C * 4);
			assert_memory_equal(ra, rb, R * C * 4);
			assert_memory_equal(f, scratch, len);
			assert_true(sc_rng_u64(&r1) == sc_rng_u64(&r2));
			if (w >= SC_WIRE_INT8)
				for (size_t i = 0; i < R * C; i++)
					assert_true(isfinite(b[i]));
			free(f);
			free(scratch);
		}
	free(x);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(names_round_trip),
		cmocka_unit_test(bytes_of_odd_shapes),
		cmocka_unit_test(fp32_is_exact),
		cmocka_unit_test(bf16_matches_reference),
		cmocka_unit_test(fp16_matches_reference),
		cmocka_unit_test(int_nearest_within_half_step),
		cmocka_unit_test(int_layout_byte_for_byte),
		cmocka_unit_test(int_nonfinite_counts_as_zero),
		cmocka_unit_test(stochastic_is_unbiased_and_seeded),
		cmocka_unit_test(error_feedback_converges),
		cmocka_unit_test(decode_refuses_bad_frames),
		cmocka_unit_test(roundtrip_is_encode_then_decode),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
