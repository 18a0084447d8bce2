/* quant_test.c — the weight quantizers (sc_quant.h): sizes, bf16 rounding
 * case by case and the bf16 format, int8 per channel
 * in both layouts, NF4 against the codebook (exact hits, ties, nearest,
 * packing byte for byte, short and all-zero blocks), double quantization's
 * bound, dequantize_rows against the whole matrix, the checks on parts read
 * from a file, and the relative output error. Parts live in exact-size heap
 * buffers so that the ASan build catches any overread. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sc_quant.h"
#include "testutil.h"

static void *xalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	assert_non_null(p);
	return p;
}

/* A quantized weight's parts in exact-size buffers. */
typedef struct parts {
	sc_quant_sizes z;
	sc_quant_out o;
	sc_quant_view v;
} parts;

static void parts_free(parts *p)
{
	free(p->o.qweight);
	free(p->o.scales);
	free(p->o.scales_q);
	free(p->o.scales_scale);
	free(p->o.scales_offset);
}

/* Quantizes w as s says into fresh parts. */
static parts quantize(const sc_quant_spec *s, const float *w)
{
	parts p;
	SC_ASSERT_OK(sc_quant_size(s, &p.z));
	p.o = (sc_quant_out){
		.qweight = xalloc(p.z.qweight),
		.scales = p.z.scales ? xalloc(p.z.scales * 4) : NULL,
		.scales_q = p.z.scales_q ? xalloc(p.z.scales_q) : NULL,
		.scales_scale = p.z.scales_scale ? xalloc(p.z.scales_scale * 4) : NULL,
		.scales_offset = p.z.scales_offset ? xalloc(4) : NULL,
	};
	SC_ASSERT_OK(sc_quant_quantize(s, w, &p.o));
	p.v = (sc_quant_view){ p.o.qweight, p.o.scales, p.o.scales_q, p.o.scales_scale,
			       p.o.scales_offset };
	SC_ASSERT_OK(sc_quant_check(s, &p.v));
	return p;
}

static float *dequantize(const sc_quant_spec *s, const parts *p)
{
	float *out = xalloc(s->rows * s->cols * 4);
	SC_ASSERT_OK(sc_quant_dequantize(s, &p->v, out));
	return out;
}

static int nf4_index(const parts *p, size_t e)
{
	uint8_t b = p->o.qweight[e / 2];
	return e % 2 ? b & 0x0f : b >> 4;
}

static float max_gap(void)
{
	float g = 0.0f;
	for (int i = 0; i < 15; i++)
		g = fmaxf(g, sc_nf4_codebook[i + 1] - sc_nf4_codebook[i]);
	return g;
}

static void names_and_parse(void **state)
{
	enum sc_quant_format f;
	assert_string_equal(sc_quant_name(SC_QUANT_INT8), "int8");
	assert_string_equal(sc_quant_name(SC_QUANT_NF4), "nf4");
	assert_string_equal(sc_quant_name(SC_QUANT_COUNT), "?");
	assert_string_equal(sc_quant_format_name(SC_QUANT_INT8), "int8_channel");
	assert_string_equal(sc_quant_format_name(SC_QUANT_NF4), "nf4");
	SC_ASSERT_OK(sc_quant_parse("nf4", &f));
	assert_int_equal(f, SC_QUANT_NF4);
	SC_ASSERT_OK(sc_quant_parse("int8", &f));
	assert_int_equal(f, SC_QUANT_INT8);
	SC_ASSERT_OK(sc_quant_parse("bf16", &f));
	assert_int_equal(f, SC_QUANT_BF16);
	assert_string_equal(sc_quant_name(SC_QUANT_BF16), "bf16");
	assert_string_equal(sc_quant_format_name(SC_QUANT_BF16), "bf16");
	const char *bad[] = { "", "NF4", "int4", "fp4", "nf4 ", "BF16", "bfloat16" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		SC_ASSERT_ERR(sc_quant_parse(bad[i], &f), SC_EINVAL);
		assert_non_null(strstr(sc_err_detail(), "int8, nf4 or bf16"));
	}
	SC_ASSERT_ERR(sc_quant_parse(NULL, &f), SC_EINVAL);
	/* The codebook as published: ascending, -1, 0 and 1 in place. */
	assert_true(sc_nf4_codebook[0] == -1.0f && sc_nf4_codebook[7] == 0.0f &&
		    sc_nf4_codebook[15] == 1.0f);
	for (int i = 0; i < 15; i++)
		assert_true(sc_nf4_codebook[i] < sc_nf4_codebook[i + 1]);
	assert_true(sc_nf4_codebook[1] == -0.6961928009986877f);
	assert_true(sc_nf4_codebook[14] == 0.7229568362236023f);
}

static void sizes_of_shapes(void **state)
{
	sc_quant_sizes z;
	sc_quant_spec s = { SC_QUANT_INT8, 5, 7, 1, 0 };
	SC_ASSERT_OK(sc_quant_size(&s, &z));
	assert_int_equal(z.qweight, 35);
	assert_int_equal(z.scales, 5);
	assert_int_equal(z.scales_q + z.scales_scale + z.scales_offset + z.blocks, 0);
	s.row_major_out = 0;
	SC_ASSERT_OK(sc_quant_size(&s, &z));
	assert_int_equal(z.scales, 7);
	s = (sc_quant_spec){ SC_QUANT_NF4, 13, 77, 1, 0 }; /* n = 1001: 16 blocks, the last 41 */
	SC_ASSERT_OK(sc_quant_size(&s, &z));
	assert_int_equal(z.qweight, 501);
	assert_int_equal(z.blocks, 16);
	assert_int_equal(z.scales, 16);
	assert_int_equal(z.scales_q + z.scales_scale + z.scales_offset, 0);
	s = (sc_quant_spec){ SC_QUANT_NF4, 513, 64, 0, 1 }; /* 513 blocks: groups 256, 256, 1 */
	SC_ASSERT_OK(sc_quant_size(&s, &z));
	assert_int_equal(z.qweight, 513 * 32);
	assert_int_equal(z.blocks, 513);
	assert_int_equal(z.scales, 0);
	assert_int_equal(z.scales_q, 513);
	assert_int_equal(z.scales_scale, 3);
	assert_int_equal(z.scales_offset, 1);
	s = (sc_quant_spec){ SC_QUANT_NF4, 1, 64, 1, 1 };
	SC_ASSERT_OK(sc_quant_size(&s, &z));
	assert_int_equal(z.blocks, 1);
	assert_int_equal(z.scales_scale, 1);
	/* refusals */
	s = (sc_quant_spec){ SC_QUANT_INT8, 4, 4, 1, 1 };
	SC_ASSERT_ERR(sc_quant_size(&s, &z), SC_EINVAL);
	assert_non_null(strstr(sc_err_detail(), "double quantization"));
	s = (sc_quant_spec){ SC_QUANT_NF4, 0, 4, 1, 0 };
	SC_ASSERT_ERR(sc_quant_size(&s, &z), SC_EINVAL);
	s = (sc_quant_spec){ SC_QUANT_COUNT, 4, 4, 1, 0 };
	SC_ASSERT_ERR(sc_quant_size(&s, &z), SC_EINVAL);
	s = (sc_quant_spec){ SC_QUANT_NF4, SIZE_MAX / 2, 3, 1, 0 };
	SC_ASSERT_ERR(sc_quant_size(&s, &z), SC_EINVAL);
	s = (sc_quant_spec){ SC_QUANT_INT8, (size_t)1 << 40, (size_t)1 << 30, 1, 0 };
	SC_ASSERT_ERR(sc_quant_size(&s, &z), SC_EINVAL);
}

static float f32_of(uint32_t u)
{
	float f;
	memcpy(&f, &u, sizeof(f));
	return f;
}

/* Round to nearest even on the dropped 16 bits, case by case: exact
 * values, both kinds of tie, just off a tie, subnormals (no flush), signed
 * zero, the largest finite that rounds to infinity and the one that does
 * not, infinities, and NaNs (quiet, sign and high payload kept). */
static void bf16_rounding_cases(void **state)
{
	static const struct {
		const char *name;
		uint32_t in;
		uint16_t out;
	} cases[] = {
		{ "one", 0x3f800000u, 0x3f80 },
		{ "tie to even (down)", 0x3f808000u, 0x3f80 },
		{ "tie to even (up)", 0x3f818000u, 0x3f82 },
		{ "just above a tie", 0x3f808001u, 0x3f81 },
		{ "just below a tie", 0x3f807fffu, 0x3f80 },
		{ "negative tie", 0xbf818000u, 0xbf82 },
		{ "mantissa carry into exponent", 0x3fffffffu, 0x4000 },
		{ "smallest subnormal", 0x00000001u, 0x0000 },
		{ "subnormal tie (even)", 0x00008000u, 0x0000 },
		{ "subnormal tie (odd)", 0x00018000u, 0x0002 },
		{ "subnormal above tie", 0x0000c000u, 0x0001 },
		{ "subnormal to normal", 0x007fffffu, 0x0080 },
		{ "minus zero", 0x80000000u, 0x8000 },
		{ "largest float", 0x7f7fffffu, 0x7f80 },
		{ "just under the overflow tie", 0x7f7f7fffu, 0x7f7f },
		{ "overflow tie", 0x7f7f8000u, 0x7f80 },
		{ "infinity", 0x7f800000u, 0x7f80 },
		{ "minus infinity", 0xff800000u, 0xff80 },
		{ "quiet NaN", 0x7fc00000u, 0x7fc0 },
		{ "signalling NaN", 0x7f800001u, 0x7fc0 },
		{ "negative NaN with payload", 0xff812345u, 0xffc1 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint16_t h = sc_bf16_from_f32(f32_of(cases[i].in));
		if (h != cases[i].out)
			fail_msg("%s: 0x%08x gave 0x%04x, want 0x%04x", cases[i].name, cases[i].in,
				 h, cases[i].out);
		/* widening is exact: the bf16's bits in the high half */
		float w = sc_bf16_to_f32(h);
		uint32_t u;
		memcpy(&u, &w, sizeof(u));
		assert_int_equal(u, (uint32_t)h << 16);
	}
}

/* The bf16 format through sc_quant: sizes, quantize = the rounding,
 * dequantize = widening (rows too), checks and refusals. */
static void bf16_format(void **state)
{
	sc_quant_sizes z;
	sc_quant_spec s = { SC_QUANT_BF16, 3, 5, 0, 0 };
	SC_ASSERT_OK(sc_quant_size(&s, &z));
	assert_int_equal(z.qweight, 30);
	assert_int_equal(z.scales + z.scales_q + z.scales_scale + z.scales_offset + z.blocks, 0);
	float w[15], back[15];
	for (int i = 0; i < 15; i++)
		w[i] = i == 3 ? 1e-40f : (float)(i - 7) * 0.3137f; /* [3]: a subnormal */
	uint8_t *q = xalloc(31) + 1; /* odd address: the bytes need no alignment */
	sc_quant_out o = { .qweight = q };
	SC_ASSERT_OK(sc_quant_quantize(&s, w, &o));
	for (int i = 0; i < 15; i++) {
		uint16_t h;
		memcpy(&h, q + 2 * i, 2);
		assert_int_equal(h, sc_bf16_from_f32(w[i]));
	}
	sc_quant_view v = { .qweight = q };
	SC_ASSERT_OK(sc_quant_check(&s, &v));
	SC_ASSERT_OK(sc_quant_dequantize(&s, &v, back));
	for (int i = 0; i < 15; i++) {
		assert_true(back[i] == sc_bf16_to_f32(sc_bf16_from_f32(w[i])));
		if (i != 3) /* normal: within half a bf16 ulp, 2^-8 relative */
			assert_true(fabsf(back[i] - w[i]) <= fabsf(w[i]) * 0x1p-8f);
	}
	SC_ASSERT_OK(sc_quant_dequantize_rows(&s, &v, 1, 3, back));
	for (int i = 5; i < 15; i++)
		assert_true(back[i - 5] == sc_bf16_to_f32(sc_bf16_from_f32(w[i])));
	/* a weight that rounds to infinity is refused, named */
	w[7] = FLT_MAX;
	SC_ASSERT_ERR(sc_quant_quantize(&s, w, &o), SC_EINVAL);
	assert_non_null(strstr(sc_err_detail(), "(1, 2)"));
	assert_non_null(strstr(sc_err_detail(), "bf16's range"));
	w[7] = NAN;
	SC_ASSERT_ERR(sc_quant_quantize(&s, w, &o), SC_EINVAL);
	w[7] = 0.5f; /* the refusals above may have written parts: write them again */
	SC_ASSERT_OK(sc_quant_quantize(&s, w, &o));
	/* a file's infinity or NaN is refused, named */
	static const uint16_t bad[] = { 0x7f80, 0xff80, 0x7fc0, 0xffff };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint16_t keep;
		memcpy(&keep, q + 2 * 11, 2);
		memcpy(q + 2 * 11, &bad[i], 2);
		SC_ASSERT_ERR(sc_quant_check(&s, &v), SC_EFORMAT);
		assert_non_null(strstr(sc_err_detail(), "(2, 1)"));
		memcpy(q + 2 * 11, &keep, 2);
	}
	SC_ASSERT_OK(sc_quant_check(&s, &v));
	s.double_quant = 1;
	SC_ASSERT_ERR(sc_quant_size(&s, &z), SC_EINVAL);
	assert_non_null(strstr(sc_err_detail(), "not bf16"));
	free(q - 1);
}

static void int8_within_half_step_both_layouts(void **state)
{
	enum { R = 37, C = 45 };
	float *w = xalloc(R * C * 4);
	sc_test_fill_normal(w, R * C, 7, 0.02f);
	for (int c = 0; c < C; c++) /* channels of very different sizes */
		w[5 * C + c] *= 100.0f;
	for (int rmo = 0; rmo <= 1; rmo++) {
		sc_quant_spec s = { SC_QUANT_INT8, R, C, rmo, 0 };
		parts p = quantize(&s, w);
		float *d = dequantize(&s, &p);
		size_t out = rmo ? R : C;
		for (size_t o = 0; o < out; o++) { /* s_o = absmax_o / 127, exactly */
			float a = 0.0f;
			for (size_t i = 0; i < (rmo ? C : R); i++)
				a = fmaxf(a, fabsf(rmo ? w[o * C + i] : w[i * C + o]));
			assert_true(p.o.scales[o] == a / 127.0f);
		}
		int hits127 = 0;
		for (size_t r = 0; r < R; r++)
			for (size_t c = 0; c < C; c++) {
				int8_t q = (int8_t)p.o.qweight[r * C + c];
				float sc = p.o.scales[rmo ? r : c];
				assert_true(q != -128);
				hits127 += q == 127 || q == -127;
				/* half a step, plus the roundings of w / s and q * s */
				double err = fabs((double)w[r * C + c] - d[r * C + c]);
				if (err > sc * (0.5 + 1e-6))
					fail_msg("layout %d (%zu, %zu): |w - w'| = %g > s/2 = %g",
						 rmo, r, c, err, sc * 0.5);
				assert_true(d[r * C + c] == (float)q * sc);
			}
		assert_true(hits127 >= (int)out); /* each channel's absmax reaches +-127 */
		free(d);
		parts_free(&p);
	}
	free(w);
}

static void int8_layout_byte_for_byte(void **state)
{
	/* Powers of two make the scales exact: row 0 absmax 127 (s = 1), row 1
	 * absmax 254 (s = 2); -63.5 and 2.5 are ties (to even: -64, 2). */
	const float w[6] = { 127.0f, -63.5f, 2.5f, -254.0f, 5.0f, 3.0f };
	const uint8_t rows_want[6] = { 0x7f, 0xc0, 0x02, 0x81, 0x02, 0x02 };
	sc_quant_spec s = { SC_QUANT_INT8, 2, 3, 1, 0 };
	parts p = quantize(&s, w);
	assert_memory_equal(p.o.qweight, rows_want, 6);
	assert_true(p.o.scales[0] == 1.0f && p.o.scales[1] == 2.0f);
	parts_free(&p);
	/* The same storage as Conv1D (in=2, out=3): channels are columns:
	 * (127, -254) s = 2 -> 63.5 ties to 64, -127; (-63.5, 5) s = 0.5 ->
	 * -127, 10; (2.5, 3) s = 3/127 -> 106 (105.83), 127. */
	const uint8_t cols_want[6] = { 0x40, 0x81, 0x6a, 0x81, 0x0a, 0x7f };
	s.row_major_out = 0;
	p = quantize(&s, w);
	assert_memory_equal(p.o.qweight, cols_want, 6);
	assert_true(p.o.scales[0] == 2.0f && p.o.scales[1] == 0.5f &&
		    p.o.scales[2] == 3.0f / 127.0f);
	parts_free(&p);
}

static void nf4_codebook_hits_are_exact(void **state)
{
	enum { N = 128 };
	float w[N];
	for (int i = 0; i < N; i++) /* absmax 2 (a power of two: w * (1/2) is exact) */
		w[i] = sc_nf4_codebook[(i * 5) % 16] * 2.0f;
	sc_quant_spec s = { SC_QUANT_NF4, 4, 32, 1, 0 };
	parts p = quantize(&s, w);
	float *d = dequantize(&s, &p);
	assert_true(p.o.scales[0] == 2.0f && p.o.scales[1] == 2.0f);
	for (int i = 0; i < N; i++) {
		assert_int_equal(nf4_index(&p, (size_t)i), (i * 5) % 16);
		assert_true(d[i] == w[i]);
	}
	free(d);
	parts_free(&p);
}

static void nf4_packing_byte_for_byte(void **state)
{
	/* n = 5 (odd): indices 15, 0, 7, 13, 6, the first of a pair in the high
	 * nibble, the padding nibble 0. */
	const float w[5] = { 1.0f, -1.0f, 0.0f, 0.5626170039176941f, -0.09105003625154495f };
	const uint8_t want[3] = { 0xf0, 0x7d, 0x60 };
	sc_quant_spec s = { SC_QUANT_NF4, 1, 5, 1, 0 };
	parts p = quantize(&s, w);
	assert_int_equal(p.z.qweight, 3);
	assert_memory_equal(p.o.qweight, want, 3);
	assert_true(p.o.scales[0] == 1.0f);
	parts_free(&p);
}

static void nf4_ties_go_to_the_lower_value(void **state)
{
	/* absmax 1: x = w. Each float32 midpoint t_i gives index i (the lower
	 * value), the float just above it i + 1. */
	float w[32];
	w[0] = 1.0f;
	w[1] = -1.0f;
	for (int i = 0; i < 15; i++) {
		float t = (sc_nf4_codebook[i] + sc_nf4_codebook[i + 1]) * 0.5f;
		w[2 + i] = t;
		w[17 + i] = nextafterf(t, 2.0f);
	}
	sc_quant_spec s = { SC_QUANT_NF4, 1, 32, 1, 0 };
	parts p = quantize(&s, w);
	for (int i = 0; i < 15; i++) {
		assert_int_equal(nf4_index(&p, (size_t)(2 + i)), i);
		assert_int_equal(nf4_index(&p, (size_t)(17 + i)), i + 1);
	}
	parts_free(&p);
}

static void nf4_nearest_with_short_last_block(void **state)
{
	enum { R = 13, C = 77, N = R * C }; /* 16 blocks, the last 41 elements */
	float *w = xalloc(N * 4);
	sc_test_fill_normal(w, N, 9, 0.05f);
	w[N - 1] = 3.0f;                     /* the short block's absmax */
	for (int rmo = 0; rmo <= 1; rmo++) { /* the layout does not change NF4's bytes */
		sc_quant_spec s = { SC_QUANT_NF4, R, C, rmo, 0 };
		parts p = quantize(&s, w);
		float *d = dequantize(&s, &p);
		assert_int_equal(p.z.blocks, 16);
		assert_true(p.o.scales[15] == 3.0f);
		for (size_t e = 0; e < N; e++) {
			size_t b = e / 64;
			float a = p.o.scales[b], x = w[e] * (1.0f / a);
			int k = nf4_index(&p, e);
			double best = INFINITY;
			for (int j = 0; j < 16; j++)
				best = fmin(best, fabs((double)x - sc_nf4_codebook[j]));
			if (fabs((double)x - sc_nf4_codebook[k]) > best + 1e-7)
				fail_msg("element %zu: x = %.9g got index %d, not the nearest", e,
					 (double)x, k);
			assert_true(fabs((double)w[e] / a - (double)d[e] / a) <=
				    max_gap() / 2 + 1e-6);
			assert_true(d[e] == sc_nf4_codebook[k] * a);
		}
		for (size_t b = 0; b < 16; b++) { /* absmax per block, exactly */
			float a = 0.0f;
			for (size_t e = b * 64; e < N && e < (b + 1) * 64; e++)
				a = fmaxf(a, fabsf(w[e]));
			assert_true(p.o.scales[b] == a);
		}
		free(d);
		parts_free(&p);
	}
	free(w);
}

static void zero_blocks_and_channels(void **state)
{
	enum { N = 3 * 64 };
	float w[N];
	sc_test_fill_normal(w, N, 3, 1.0f);
	for (int i = 64; i < 128; i++)
		w[i] = 0.0f;
	for (int i = 128; i < 192; i++) /* absmax below 2^-128: 1/absmax overflows */
		w[i] = i % 2 ? 1e-39f : -2e-39f;
	sc_quant_spec s = { SC_QUANT_NF4, 3, 64, 1, 0 };
	parts p = quantize(&s, w);
	float *d = dequantize(&s, &p);
	assert_true(p.o.scales[1] == 0.0f && p.o.scales[2] == 2e-39f);
	for (int i = 64; i < 192; i++) {
		assert_int_equal(nf4_index(&p, (size_t)i), 7);
		assert_true(d[i] == 0.0f && !signbit(d[i]));
	}
	free(d);
	parts_free(&p);
	/* int8: a zero channel has scale 0 and zeros */
	sc_quant_spec s8 = { SC_QUANT_INT8, 3, 64, 1, 0 };
	for (int i = 128; i < 192; i++)
		w[i] = 0.0f;
	p = quantize(&s8, w);
	assert_true(p.o.scales[1] == 0.0f && p.o.scales[2] == 0.0f);
	for (int i = 64; i < 192; i++)
		assert_int_equal(p.o.qweight[i], 0);
	parts_free(&p);
	/* double quantization of all-zero weights: offset 0, every scale 0 */
	memset(w, 0, sizeof(w));
	s.double_quant = 1;
	p = quantize(&s, w);
	d = dequantize(&s, &p);
	assert_true(*p.o.scales_offset == 0.0f && p.o.scales_scale[0] == 0.0f);
	for (int i = 0; i < N; i++)
		assert_true(d[i] == 0.0f);
	free(d);
	parts_free(&p);
}

static void double_quant_bound(void **state)
{
	enum { R = 601, C = 64, N = R * C }; /* 601 blocks: groups of 256, 256, 89 */
	float *w = xalloc(N * 4);
	sc_test_fill_normal(w, N, 21, 0.02f);
	for (int b = 0; b < R; b++) /* absmax spread over a decade */
		for (int j = 0; j < C; j++)
			w[b * C + j] *= 1.0f + (float)(b % 10);
	sc_quant_spec s1 = { SC_QUANT_NF4, R, C, 1, 0 }, s2 = s1;
	s2.double_quant = 1;
	parts p1 = quantize(&s1, w), p2 = quantize(&s2, w);
	float *d1 = dequantize(&s1, &p1), *d2 = dequantize(&s2, &p2);
	/* the indices are chosen with the exact absmax: the same bytes */
	assert_memory_equal(p1.o.qweight, p2.o.qweight, p1.z.qweight);
	assert_int_equal(p2.z.scales_scale, 3);
	double sum = 0.0;
	for (int b = 0; b < R; b++)
		sum += p1.o.scales[b];
	float off = (float)(sum / R);
	assert_true(*p2.o.scales_offset == off);
	for (int b = 0; b < R; b++) {
		float a = p1.o.scales[b], g = p2.o.scales_scale[b / 256];
		float ad = (float)(int8_t)p2.o.scales_q[b] * g + off;
		/* half a step of the group's scale, plus the roundings */
		assert_true(fabsf(ad - a) <= g * 0.5f + 4e-7f * (fabsf(off) + a));
		for (int j = 0; j < C; j++) {
			size_t e = (size_t)b * C + j;
			float c = sc_nf4_codebook[nf4_index(&p1, e)];
			assert_true(d2[e] == c * ad);
			assert_true(fabs((double)w[e] - d2[e]) <=
				    max_gap() / 2 * a + fabsf(ad - a) + 1e-7 * a);
		}
	}
	for (int j = 0; j < 3; j++) { /* each group's largest residual hits +-127 */
		int hit = 0;
		for (int b = j * 256; b < R && b < (j + 1) * 256; b++)
			hit |= abs((int8_t)p2.o.scales_q[b]) == 127;
		assert_true(hit);
	}
	free(d1);
	free(d2);
	parts_free(&p1);
	parts_free(&p2);
	free(w);
}

static void rows_match_whole_matrix(void **state)
{
	static const size_t shapes[][2] = { { 7, 9 }, { 5, 64 }, { 11, 13 }, { 3, 200 } };
	for (size_t k = 0; k < 4; k++) {
		size_t R = shapes[k][0], C = shapes[k][1];
		float *w = xalloc(R * C * 4);
		sc_test_fill_normal(w, R * C, 30 + k, 0.1f);
		for (int mode = 0; mode < 5; mode++) { /* int8 x 2 layouts, nf4 x 2, nf4 dq */
			sc_quant_spec s = { mode < 2 ? SC_QUANT_INT8 : SC_QUANT_NF4, R, C, mode % 2,
					    mode == 4 };
			parts p = quantize(&s, w);
			float *whole = dequantize(&s, &p);
			for (size_t r0 = 0; r0 <= R; r0++)
				for (size_t r1 = r0; r1 <= R; r1++) {
					float *part = xalloc((r1 - r0) * C * 4);
					SC_ASSERT_OK(
					    sc_quant_dequantize_rows(&s, &p.v, r0, r1, part));
					assert_memory_equal(part, whole + r0 * C,
							    (r1 - r0) * C * 4);
					free(part);
				}
			float one[1];
			SC_ASSERT_ERR(sc_quant_dequantize_rows(&s, &p.v, 0, R + 1, one), SC_ERANGE);
			SC_ASSERT_ERR(sc_quant_dequantize_rows(&s, &p.v, 2, 1, one), SC_ERANGE);
			free(whole);
			parts_free(&p);
		}
		free(w);
	}
}

static void refuses_non_finite_weights(void **state)
{
	float w[12] = { 0 };
	sc_quant_out o = { 0 };
	uint8_t qw[12];
	float sc[4];
	o.qweight = qw;
	o.scales = sc;
	w[7] = NAN;
	sc_quant_spec s = { SC_QUANT_INT8, 3, 4, 1, 0 };
	SC_ASSERT_ERR(sc_quant_quantize(&s, w, &o), SC_EINVAL);
	assert_non_null(strstr(sc_err_detail(), "(1, 3)"));
	w[7] = -INFINITY;
	s.format = SC_QUANT_NF4;
	SC_ASSERT_ERR(sc_quant_quantize(&s, w, &o), SC_EINVAL);
	assert_non_null(strstr(sc_err_detail(), "not finite"));
}

static void check_refuses_bad_parts(void **state)
{
	float w[130];
	sc_test_fill_normal(w, 130, 4, 1.0f);
	sc_quant_spec s8 = { SC_QUANT_INT8, 2, 65, 1, 0 };
	parts p = quantize(&s8, w);
	p.o.qweight[3] = 0x80;
	SC_ASSERT_ERR(sc_quant_check(&s8, &p.v), SC_EFORMAT);
	assert_non_null(strstr(sc_err_detail(), "-128"));
	p.o.qweight[3] = 0x7f;
	p.o.scales[1] = -1.0f;
	SC_ASSERT_ERR(sc_quant_check(&s8, &p.v), SC_EFORMAT);
	p.o.scales[1] = NAN;
	SC_ASSERT_ERR(sc_quant_check(&s8, &p.v), SC_EFORMAT);
	p.o.scales[1] = FLT_MAX;
	SC_ASSERT_ERR(sc_quant_check(&s8, &p.v), SC_EFORMAT);
	parts_free(&p);
	sc_quant_spec s4 = { SC_QUANT_NF4, 1, 129, 1, 1 }; /* odd n: a padding nibble */
	p = quantize(&s4, w);
	p.o.qweight[64] |= 0x01;
	SC_ASSERT_ERR(sc_quant_check(&s4, &p.v), SC_EFORMAT);
	assert_non_null(strstr(sc_err_detail(), "padding"));
	p.o.qweight[64] &= 0xf0;
	p.o.scales_q[1] = 0x80;
	SC_ASSERT_ERR(sc_quant_check(&s4, &p.v), SC_EFORMAT);
	p.o.scales_q[1] = 0;
	*p.o.scales_offset = INFINITY;
	SC_ASSERT_ERR(sc_quant_check(&s4, &p.v), SC_EFORMAT);
	*p.o.scales_offset = FLT_MAX; /* every part valid, but 127 * 1e36 + FLT_MAX = inf */
	p.o.scales_q[0] = 127;
	p.o.scales_scale[0] = 1e36f;
	SC_ASSERT_ERR(sc_quant_check(&s4, &p.v), SC_EFORMAT);
	assert_non_null(strstr(sc_err_detail(), "non-finite absmax"));
	parts_free(&p);
}

/* ||W x - W' x|| / ||W x|| straight from the definition, in double. */
static double direct_rel_error(const sc_quant_spec *s, const float *w, const float *d,
			       const float *x, size_t nx)
{
	size_t in = s->row_major_out ? s->cols : s->rows,
	       out = s->row_major_out ? s->rows : s->cols;
	double num = 0.0, den = 0.0;
	for (size_t k = 0; k < nx; k++)
		for (size_t o = 0; o < out; o++) {
			double y = 0.0, yq = 0.0;
			for (size_t i = 0; i < in; i++) {
				size_t e = s->row_major_out ? o * s->cols + i : i * s->cols + o;
				y += (double)w[e] * x[k * in + i];
				yq += (double)d[e] * x[k * in + i];
			}
			num += (y - yq) * (y - yq);
			den += y * y;
		}
	return sqrt(num / den);
}

static void relative_output_error(void **state)
{
	enum { R = 96, C = 80, NX = 6 };
	float *w = xalloc(R * C * 4), *x = xalloc(NX * 96 * 4);
	sc_test_fill_normal(w, R * C, 40, 0.02f);
	sc_test_fill_normal(x, NX * 96, 41, 1.0f);
	static const double bound[5] = { 0.01, 0.01, 0.15, 0.15, 0.15 };
	for (int mode = 0; mode < 5; mode++) {
		sc_quant_spec s = { mode < 2 ? SC_QUANT_INT8 : SC_QUANT_NF4, R, C, mode % 2,
				    mode == 4 };
		parts p = quantize(&s, w);
		float *d = dequantize(&s, &p);
		double rel, want = direct_rel_error(&s, w, d, x, NX);
		SC_ASSERT_OK(sc_quant_rel_error(&s, w, &p.v, x, NX, &rel));
		if (!(fabs(rel - want) <= 1e-9 * want && rel > 0.0 && rel < bound[mode]))
			fail_msg("mode %d: rel error %g, direct %g, bound %g", mode, rel, want,
				 bound[mode]);
		free(d);
		parts_free(&p);
	}
	/* exact codebook values: no error; a zero batch: 0 */
	for (int i = 0; i < R * C; i++)
		w[i] = sc_nf4_codebook[i % 16];
	sc_quant_spec s = { SC_QUANT_NF4, R, C, 1, 0 };
	parts p = quantize(&s, w);
	double rel = -1.0;
	SC_ASSERT_OK(sc_quant_rel_error(&s, w, &p.v, x, NX, &rel));
	assert_true(rel == 0.0);
	memset(x, 0, NX * 96 * 4);
	SC_ASSERT_OK(sc_quant_rel_error(&s, w, &p.v, x, NX, &rel));
	assert_true(rel == 0.0);
	parts_free(&p);
	free(w);
	free(x);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(names_and_parse),
		cmocka_unit_test(sizes_of_shapes),
		cmocka_unit_test(bf16_rounding_cases),
		cmocka_unit_test(bf16_format),
		cmocka_unit_test(int8_within_half_step_both_layouts),
		cmocka_unit_test(int8_layout_byte_for_byte),
		cmocka_unit_test(nf4_codebook_hits_are_exact),
		cmocka_unit_test(nf4_packing_byte_for_byte),
		cmocka_unit_test(nf4_ties_go_to_the_lower_value),
		cmocka_unit_test(nf4_nearest_with_short_last_block),
		cmocka_unit_test(zero_blocks_and_channels),
		cmocka_unit_test(double_quant_bound),
		cmocka_unit_test(rows_match_whole_matrix),
		cmocka_unit_test(refuses_non_finite_weights),
		cmocka_unit_test(check_refuses_bad_parts),
		cmocka_unit_test(relative_output_error),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
