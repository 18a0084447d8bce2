/* codec.c — the wire codecs of sc_codec.h: fp32, bf16, fp16 and per-row
 * scaled int8 / int4, with error feedback and stochastic rounding. Loops are
 * plain element-wise `omp simd` loops over one row (or a CH-element chunk of
 * it) at a time; bit tricks instead of library calls keep them vectorisable
 * on baseline x86-64. No allocation: chunks live on the stack. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sc_codec.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "sc_codec: the wire format is little-endian; this host needs byte swaps"
#endif

/* Elements per chunk of the int paths (the stochastic draws and the int4
 * values live in stack arrays of this many); even, so int4 pairs never
 * straddle two chunks. */
#define CH 256

/* Values at any alignment (frames sit at any offset of a message). */
typedef uint16_t u16_any __attribute__((aligned(1), may_alias));
typedef float f32_any __attribute__((aligned(1), may_alias));

static const char *const names[SC_WIRE_COUNT] = { "fp32", "bf16", "fp16", "int8", "int4" };

static inline uint32_t bits_of(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof(u));
	return u;
}

static inline float float_of(uint32_t u)
{
	float f;
	memcpy(&f, &u, sizeof(f));
	return f;
}

/* v, or 0 when v is NaN or inf. */
static inline float finite_or_0(float v)
{
	return fabsf(v) <= FLT_MAX ? v : 0.0f;
}

static inline uint16_t bf16_from(float f)
{
	uint32_t u = bits_of(f);
	uint32_t rne = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16; /* inf stays inf */
	uint32_t nan = (u >> 16) | 0x40u;                      /* quiet, sign kept */
	return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? nan : rne);
}

static inline float bf16_to(uint16_t h)
{
	return float_of((uint32_t)h << 16);
}

/* Signed 32-bit arithmetic below: a magnitude's bits fit, and baseline
 * x86-64 vectors compare signed integers only. */
static inline uint16_t fp16_from(float f)
{
	uint32_t u = bits_of(f);
	int32_t a = (int32_t)(u & 0x7fffffffu);
	/* Normal: rebias the exponent (127 -> 15) and round the 13 dropped
	 * bits to nearest even; a carry moves into the exponent, up to inf. */
	int32_t nrm = (int32_t)(((uint32_t)a - 0x38000000u + 0xfffu + ((u >> 13) & 1u)) >> 13);
	nrm = nrm > 0x7c00 ? 0x7c00 : nrm;
	/* Below 2^-14: adding 0.5 puts the float's last place at 2^-24, the
	 * half's subnormal step, and the hardware rounds to nearest even (up to
	 * 0x400, the smallest normal). */
	int32_t sub = (int32_t)bits_of(float_of((uint32_t)a) + 0.5f) - 0x3f000000;
	int32_t nan = 0x7e00 | ((a >> 13) & 0x3ff);
	int32_t is_nan = -(a > 0x7f800000), is_sub = -(a < 0x38800000); /* masks */
	int32_t h = (nan & is_nan) | (~is_nan & ((sub & is_sub) | (nrm & ~is_sub)));
	return (uint16_t)(((u >> 16) & 0x8000u) | (uint32_t)h);
}

static inline float fp16_to(uint16_t h)
{
	int32_t a = h & 0x7fff;
	int32_t nrm = (a << 13) + 0x38000000;
	int32_t infnan = (a << 13) | 0x7f800000;
	int32_t sub = (int32_t)bits_of(float_of(0x3f000000u + (uint32_t)a) - 0.5f); /* a * 2^-24 */
	int32_t is_big = -(a >= 0x7c00), is_sub = -(a < 0x400);                     /* masks */
	int32_t m = (infnan & is_big) | (~is_big & ((sub & is_sub) | (nrm & ~is_sub)));
	return float_of(((uint32_t)(h & 0x8000u) << 16) | (uint32_t)m);
}

const char *sc_wire_name(enum sc_wire w)
{
	return (unsigned)w < SC_WIRE_COUNT ? names[w] : "?";
}

sc_err sc_wire_parse(const char *name, enum sc_wire *out)
{
	for (int w = 0; name && w < SC_WIRE_COUNT; w++)
		if (!strcmp(name, names[w])) {
			*out = (enum sc_wire)w;
			return SC_OK;
		}
	return sc_errf(SC_EINVAL,
		       "unknown wire encoding '%s' (choose fp32, bf16, fp16, int8 or int4)",
		       name ? name : "(null)");
}

size_t sc_wire_bytes(enum sc_wire w, size_t rows, size_t cols)
{
	size_t n, f32, scales, packed;
	if (__builtin_mul_overflow(rows, cols, &n) || __builtin_mul_overflow(n, 4, &f32) ||
	    __builtin_mul_overflow(rows, 4, &scales))
		return SIZE_MAX;
	switch (w) {
	case SC_WIRE_FP32: return f32;
	case SC_WIRE_BF16:
	case SC_WIRE_FP16: return 2 * n;
	case SC_WIRE_INT8: return __builtin_add_overflow(scales, n, &packed) ? SIZE_MAX : packed;
	case SC_WIRE_INT4:
		if (__builtin_mul_overflow(rows, cols / 2 + cols % 2, &packed) ||
		    __builtin_add_overflow(scales, packed, &packed))
			return SIZE_MAX;
		return packed;
	default: return SIZE_MAX;
	}
}

/* ---- encoding ---- */

static void float_encode(enum sc_wire w, const float *restrict x, size_t n, float *restrict res,
			 void *out)
{
	u16_any *o = out;
	if (w == SC_WIRE_FP32) {
		if (!res) {
			if (n)
				memcpy(out, x, n * sizeof(float));
			return;
		}
		f32_any *of = out;
#pragma omp simd
		for (size_t i = 0; i < n; i++) {
			of[i] = x[i] + res[i];
			res[i] = 0.0f;
		}
	} else if (w == SC_WIRE_BF16 && !res) {
#pragma omp simd
		for (size_t i = 0; i < n; i++)
			o[i] = bf16_from(x[i]);
	} else if (w == SC_WIRE_BF16) {
#pragma omp simd
		for (size_t i = 0; i < n; i++) {
			float v = x[i] + res[i];
			uint16_t h = bf16_from(v);
			o[i] = h;
			res[i] = finite_or_0(v - bf16_to(h));
		}
	} else if (!res) {
#pragma omp simd
		for (size_t i = 0; i < n; i++)
			o[i] = fp16_from(x[i]);
	} else {
#pragma omp simd
		for (size_t i = 0; i < n; i++) {
			float v = x[i] + res[i];
			uint16_t h = fp16_from(v);
			o[i] = h;
			res[i] = finite_or_0(v - fp16_to(h));
		}
	}
}

/* max |v| over v[0..n), non-finite values counting as 0. Eight running
 * maxima in a fixed-size inner loop: GCC keeps them in registers (an omp simd
 * max reduction goes through the stack at -O2). */
static float row_absmax(const float *v, size_t n)
{
	float m[8] = { 0 }, r = 0.0f;
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
#pragma omp simd
		for (int k = 0; k < 8; k++) {
			float a = fabsf(v[i + k]);
			a = a <= FLT_MAX ? a : 0.0f;
			m[k] = a > m[k] ? a : m[k];
		}
	}
	for (; i < n; i++) {
		float a = fabsf(v[i]);
		a = a <= FLT_MAX ? a : 0.0f;
		r = a > r ? a : r;
	}
	for (int k = 0; k < 8; k++)
		r = m[k] > r ? m[k] : r;
	return r;
}

/* The row's scale for absmax (see sc_codec.h): 0, or a normal float s with
 * qmax * s finite. */
static float row_scale(float absmax, float qmax)
{
	float s = absmax / qmax;
	if (!(s >= FLT_MIN))
		return 0.0f;
	while (!(s * qmax <= FLT_MAX))
		s = nextafterf(s, 0.0f);
	return s;
}

/* q[i] = v[i] * inv (non-finite v as 0) rounded to nearest even (u NULL) or
 * stochastically with u[i], clamped to [-qmax, qmax]. */
static void quantize(int8_t *restrict q, const float *restrict v, size_t n, float inv, int qmax,
		     const float *restrict u)
{
	const float magic = 0x1.8p23f; /* (y + magic) - magic: y rounded to nearest even */
	if (!u) {
#pragma omp simd
		for (size_t i = 0; i < n; i++) {
			float y = finite_or_0(v[i]) * inv;
			int32_t k = (int32_t)((y + magic) - magic);
			k = k < -qmax ? -qmax : k;
			q[i] = (int8_t)(k > qmax ? qmax : k);
		}
		return;
	}
#pragma omp simd
	for (size_t i = 0; i < n; i++) {
		float y = finite_or_0(v[i]) * inv;
		float r = (y + magic) - magic;
		float d = y - r; /* exact, in [-1/2, 1/2]; so are 1 - u and -d */
		/* floor(y + u) = r + floor(d + u), evaluated exactly */
		int32_t k = (int32_t)r + (d >= 1.0f - u[i]) - (u[i] < -d);
		k = k < -qmax ? -qmax : k;
		q[i] = (int8_t)(k > qmax ? qmax : k);
	}
}

/* res[i] = (what res held: v, non-finite as 0) - q[i] * scale, the product
 * rounded as the decoder rounds it (two statements: no a - b * c for a
 * compiler to fuse into an FMA). */
static void feedback(float *res, const int8_t *restrict q, size_t n, float scale)
{
#pragma omp simd
	for (size_t i = 0; i < n; i++) {
		float d = (float)q[i] * scale;
		res[i] = finite_or_0(res[i]) - d;
	}
}

static void int_encode(enum sc_wire w, const float *x, size_t rows, size_t cols, float *res,
		       sc_rng *rng, uint8_t *out)
{
	const int qmax = w == SC_WIRE_INT8 ? 127 : 7;
	const size_t row_bytes = w == SC_WIRE_INT8 ? cols : cols / 2 + cols % 2;
	uint8_t *vals = out + rows * sizeof(float);
	float u[CH];
	int8_t q4[CH];

	for (size_t r = 0; r < rows; r++) {
		const float *v = x + r * cols;
		float *rr = res ? res + r * cols : NULL;
		uint8_t *o = vals + r * row_bytes;
		if (rr) { /* rr holds v until feedback() turns it into the residual */
#pragma omp simd
			for (size_t j = 0; j < cols; j++)
				rr[j] = v[j] + rr[j];
			v = rr;
		}
		float scale = row_scale(row_absmax(v, cols), (float)qmax);
		float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
		memcpy(out + r * sizeof(float), &scale, sizeof(float));
		for (size_t c0 = 0; c0 < cols; c0 += CH) {
			size_t n = cols - c0 < CH ? cols - c0 : CH;
			int8_t *q = w == SC_WIRE_INT8 ? (int8_t *)o + c0 : q4;
			if (rng)
				sc_rng_uniform_fill(rng, u, n);
			quantize(q, v + c0, n, inv, qmax, rng ? u : NULL);
			if (rr)
				feedback(rr + c0, q, n, scale);
			if (w == SC_WIRE_INT8)
				continue;
			uint8_t *p = o + c0 / 2;
			size_t pairs = n / 2;
#pragma omp simd
			for (size_t j = 0; j < pairs; j++)
				p[j] = (uint8_t)(((uint8_t)q[2 * j] & 0x0fu) |
						 (((uint8_t)q[2 * j + 1] & 0x0fu) << 4));
			if (n % 2)
				p[pairs] = (uint8_t)q[n - 1] & 0x0fu;
		}
	}
}

void sc_wire_encode(enum sc_wire w, const float *x, size_t rows, size_t cols, float *residual,
		    sc_rng *rng, void *out)
{
	if (sc_wire_bytes(w, rows, cols) == SIZE_MAX) {
		fprintf(stderr, "sc_wire_encode: bad encoding %d or shape (%zu, %zu)\n", (int)w,
			rows, cols);
		abort();
	}
	if (w == SC_WIRE_INT8 || w == SC_WIRE_INT4)
		int_encode(w, x, rows, cols, residual, rng, out);
	else
		float_encode(w, x, rows * cols, residual, out);
}

/* ---- decoding ---- */

static sc_err int_decode(enum sc_wire w, const uint8_t *in, size_t rows, size_t cols, float *x)
{
	const int is8 = w == SC_WIRE_INT8;
	const float qmax = is8 ? 127.0f : 7.0f;
	const size_t row_bytes = is8 ? cols : cols / 2 + cols % 2;
	const uint8_t *vals = in + rows * sizeof(float);

	for (size_t r = 0; r < rows; r++) {
		float s;
		memcpy(&s, in + r * sizeof(float), sizeof(float));
		if (!(s >= 0.0f && s * qmax <= FLT_MAX))
			return sc_errf(SC_EFORMAT, "%s frame: row %zu's scale %g is not in [0, %g]",
				       sc_wire_name(w), r, (double)s, (double)(FLT_MAX / qmax));
	}
	for (size_t r = 0; r < rows; r++) {
		const uint8_t *b = vals + r * row_bytes;
		float *xr = x + r * cols, s;
		int bad = 0;
		memcpy(&s, in + r * sizeof(float), sizeof(float));
		if (is8) {
			const int8_t *q = (const int8_t *)b;
#pragma omp simd reduction(| : bad)
			for (size_t j = 0; j < cols; j++) {
				bad |= q[j] == -128;
				xr[j] = (float)q[j] * s;
			}
		} else {
			size_t pairs = cols / 2;
#pragma omp simd reduction(| : bad)
			for (size_t j = 0; j < pairs; j++) {
				int lo = b[j] & 0x0f, hi = b[j] >> 4;
				bad |= (lo == 8) | (hi == 8);
				xr[2 * j] = (float)((lo ^ 8) - 8) * s;
				xr[2 * j + 1] = (float)((hi ^ 8) - 8) * s;
			}
			if (cols % 2) {
				int lo = b[pairs] & 0x0f;
				if (b[pairs] >> 4)
					return sc_errf(
					    SC_EFORMAT,
					    "int4 frame: row %zu's padding nibble is %d, not 0", r,
					    b[pairs] >> 4);
				bad |= lo == 8;
				xr[cols - 1] = (float)((lo ^ 8) - 8) * s;
			}
		}
		for (size_t j = 0; bad && j < cols; j++) { /* find it for the message */
			int nib = (b[j / 2] >> (4 * (j % 2))) & 0x0f;
			if (is8 ? b[j] == 0x80 : nib == 8)
				return sc_errf(SC_EFORMAT, "%s frame: row %zu column %zu holds %d",
					       sc_wire_name(w), r, j, is8 ? -128 : -8);
		}
	}
	return SC_OK;
}

sc_err sc_wire_decode(enum sc_wire w, const void *in, size_t len, size_t rows, size_t cols,
		      float *x)
{
	size_t want = sc_wire_bytes(w, rows, cols), n = rows * cols;
	const u16_any *h = in;

	if ((unsigned)w >= SC_WIRE_COUNT)
		return sc_errf(SC_EINVAL, "wire encoding %d is not fp32, bf16, fp16, int8 or int4",
			       (int)w);
	if (want == SIZE_MAX)
		return sc_errf(SC_EFORMAT, "%s frame: shape (%zu, %zu) is too large",
			       sc_wire_name(w), rows, cols);
	if (len != want)
		return sc_errf(SC_EFORMAT, "%s frame: %zu bytes, want %zu for shape (%zu, %zu)",
			       sc_wire_name(w), len, want, rows, cols);
	switch (w) {
	case SC_WIRE_FP32:
		if (n)
			memcpy(x, in, n * sizeof(float));
		return SC_OK;
	case SC_WIRE_BF16:
#pragma omp simd
		for (size_t i = 0; i < n; i++)
			x[i] = bf16_to(h[i]);
		return SC_OK;
	case SC_WIRE_FP16:
#pragma omp simd
		for (size_t i = 0; i < n; i++)
			x[i] = fp16_to(h[i]);
		return SC_OK;
	default: return int_decode(w, in, rows, cols, x);
	}
}

void sc_wire_roundtrip(enum sc_wire w, float *x, size_t rows, size_t cols, float *residual,
		       sc_rng *rng, void *scratch)
{
	sc_wire_encode(w, x, rows, cols, residual, rng, scratch);
	sc_err rc = sc_wire_decode(w, scratch, sc_wire_bytes(w, rows, cols), rows, cols, x);
	if (rc != SC_OK) { /* the encoder made a frame its decoder refuses: a bug */
		fprintf(stderr, "sc_wire_roundtrip: %s\n", sc_err_detail());
		abort();
	}
}

void sc_wire_rng(sc_rng *r, uint64_t seed, uint64_t step, uint32_t micro_batch, uint32_t stage,
		 int dir)
{
	/* "WIRE": a tag of its own, apart from every other stream of the seed */
	uint64_t keys[6] = { 0x57495245u, seed, step, micro_batch, stage, (uint64_t)dir };
	sc_rng_seed(r, keys, 6);
}
