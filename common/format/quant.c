/* quant.c — the weight quantizers of sc_quant.h: int8 per output channel,
 * NF4 blocks (+ double quantization of the block absmax) and bf16, their
 * dequantizers by row range, the checks for parts read from a file, and the
 * relative output error a planner weighs them by. Plain loops: this runs
 * once per model (quantize) or per tile (dequantize_rows). */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sc_quant.h"

#define NF4_ZERO 7 /* the index of 0.0 */

static const char *const names[SC_QUANT_COUNT] = { "int8", "nf4", "bf16" };
static const char *const format_names[SC_QUANT_COUNT] = { "int8_channel", "nf4", "bf16" };

const char *sc_quant_name(enum sc_quant_format f)
{
	return (unsigned)f < SC_QUANT_COUNT ? names[f] : "?";
}

const char *sc_quant_format_name(enum sc_quant_format f)
{
	return (unsigned)f < SC_QUANT_COUNT ? format_names[f] : "?";
}

sc_err sc_quant_parse(const char *name, enum sc_quant_format *out)
{
	for (int f = 0; name && f < SC_QUANT_COUNT; f++)
		if (!strcmp(name, names[f])) {
			*out = (enum sc_quant_format)f;
			return SC_OK;
		}
	return sc_errf(SC_EINVAL, "unknown quantization '%s' (choose int8, nf4 or bf16)",
		       name ? name : "(null)");
}

sc_err sc_quant_size(const sc_quant_spec *s, sc_quant_sizes *out)
{
	size_t n, bytes;
	memset(out, 0, sizeof(*out));
	if ((unsigned)s->format >= SC_QUANT_COUNT)
		return sc_errf(SC_EINVAL, "quantization format %d is not int8, nf4 or bf16",
			       (int)s->format);
	if (!s->rows || !s->cols)
		return sc_errf(SC_EINVAL, "cannot quantize a (%zu, %zu) weight: it is empty",
			       s->rows, s->cols);
	if (__builtin_mul_overflow(s->rows, s->cols, &n) ||
	    __builtin_mul_overflow(n, sizeof(float), &bytes))
		return sc_errf(SC_EINVAL, "a (%zu, %zu) weight does not fit in memory", s->rows,
			       s->cols);
	if (s->double_quant && s->format != SC_QUANT_NF4)
		return sc_errf(SC_EINVAL, "double quantization is for nf4, not %s",
			       sc_quant_name(s->format));
	if (s->format == SC_QUANT_INT8) {
		out->qweight = n;
		out->scales = s->row_major_out ? s->rows : s->cols;
		return SC_OK;
	}
	if (s->format == SC_QUANT_BF16) {
		if (__builtin_mul_overflow(n, sizeof(uint16_t), &out->qweight))
			return sc_errf(SC_EINVAL, "a (%zu, %zu) weight does not fit in memory",
				       s->rows, s->cols);
		return SC_OK;
	}
	out->qweight = n / 2 + n % 2;
	out->blocks = n / SC_NF4_BLOCK + (n % SC_NF4_BLOCK != 0);
	if (!s->double_quant) {
		out->scales = out->blocks;
		return SC_OK;
	}
	out->scales_q = out->blocks;
	out->scales_scale = out->blocks / SC_NF4_DQ_BLOCK + (out->blocks % SC_NF4_DQ_BLOCK != 0);
	out->scales_offset = 1;
	return SC_OK;
}

/* ---- quantizing ---- */

/* absmax / 127, lowered while 127 * s would overflow (see sc_quant.h). */
static float scale_127(float absmax)
{
	float s = absmax / 127.0f;
	while (!(s * 127.0f <= FLT_MAX))
		s = nextafterf(s, 0.0f);
	return s;
}

/* s > 0 ? clamp(rne(v / s), -127, 127) : 0, as an int8 byte. */
static uint8_t q127(float v, float s)
{
	if (!(s > 0.0f))
		return 0;
	float y = rintf(v / s); /* the default rounding mode: nearest, ties to even */
	y = y < -127.0f ? -127.0f : y > 127.0f ? 127.0f : y;
	return (uint8_t)(int8_t)y;
}

static float absmax_of(const float *v, size_t n)
{
	float m = 0.0f;
	for (size_t i = 0; i < n; i++) {
		float a = fabsf(v[i]);
		m = a > m ? a : m;
	}
	return m;
}

static sc_err check_finite(const sc_quant_spec *s, const float *w, size_t n)
{
	int bad = 0;
#pragma omp simd reduction(| : bad)
	for (size_t i = 0; i < n; i++)
		bad |= !(fabsf(w[i]) <= FLT_MAX);
	for (size_t i = 0; bad && i < n; i++)
		if (!(fabsf(w[i]) <= FLT_MAX))
			return sc_errf(SC_EINVAL, "weight element (%zu, %zu) is %g: not finite",
				       i / s->cols, i % s->cols, (double)w[i]);
	return SC_OK;
}

static void int8_quantize(const sc_quant_spec *s, const float *w, const sc_quant_out *q)
{
	size_t R = s->rows, C = s->cols;
	float *sc = q->scales;
	if (s->row_major_out) {
		for (size_t r = 0; r < R; r++)
			sc[r] = absmax_of(w + r * C, C);
	} else {
		memset(sc, 0, C * sizeof(float));
		for (size_t r = 0; r < R; r++)
			for (size_t c = 0; c < C; c++) {
				float a = fabsf(w[r * C + c]);
				sc[c] = a > sc[c] ? a : sc[c];
			}
	}
	for (size_t o = 0; o < (s->row_major_out ? R : C); o++)
		sc[o] = scale_127(sc[o]);
	for (size_t r = 0; r < R; r++)
		for (size_t c = 0; c < C; c++)
			q->qweight[r * C + c] =
			    q127(w[r * C + c], s->row_major_out ? sc[r] : sc[c]);
}

/* The 15 thresholds of sc_quant.h: float32 midpoints of the codebook. */
static void nf4_thresholds(float t[15])
{
	for (int i = 0; i < 15; i++)
		t[i] = (sc_nf4_codebook[i] + sc_nf4_codebook[i + 1]) * 0.5f;
}

/* Quantizes block b (len elements from w) with absmax a into the packed
 * bytes at p (the block's first byte). */
static void nf4_block(uint8_t *p, const float *w, size_t len, float a, const float t[15])
{
	uint8_t idx[SC_NF4_BLOCK];
	float inv = a > 0.0f ? 1.0f / a : 0.0f;
	int zero = !(a > 0.0f) || !(inv <= FLT_MAX);
	for (size_t j = 0; j < len; j++) {
		float x = w[j] * inv;
		int k = 0;
		for (int i = 0; i < 15; i++)
			k += x > t[i];
		idx[j] = zero ? NF4_ZERO : (uint8_t)k;
	}
	for (size_t j = 0; j < len / 2; j++)
		p[j] = (uint8_t)(idx[2 * j] << 4 | idx[2 * j + 1]);
	if (len % 2)
		p[len / 2] = (uint8_t)(idx[len - 1] << 4);
}

/* The double quantization of absmax (nb floats) into q's parts. */
static void nf4_double_quant(const float *absmax, size_t nb, const sc_quant_out *q)
{
	double sum = 0.0;
	for (size_t b = 0; b < nb; b++)
		sum += (double)absmax[b];
	float offset = (float)(sum / (double)nb);
	for (size_t b0 = 0; b0 < nb; b0 += SC_NF4_DQ_BLOCK) {
		size_t len = nb - b0 < SC_NF4_DQ_BLOCK ? nb - b0 : SC_NF4_DQ_BLOCK;
		float m = 0.0f;
		for (size_t b = b0; b < b0 + len; b++) {
			float r = fabsf(absmax[b] - offset);
			m = r > m ? r : m;
		}
		float g = scale_127(m);
		q->scales_scale[b0 / SC_NF4_DQ_BLOCK] = g;
		for (size_t b = b0; b < b0 + len; b++)
			q->scales_q[b] = q127(absmax[b] - offset, g);
	}
	*q->scales_offset = offset;
}

static sc_err nf4_quantize(const sc_quant_spec *s, const sc_quant_sizes *z, const float *w,
			   const sc_quant_out *q)
{
	size_t n = s->rows * s->cols;
	float t[15], *absmax = q->scales;
	nf4_thresholds(t);
	if (s->double_quant && !(absmax = malloc(z->blocks * sizeof(float))))
		return sc_errf(SC_ENOMEM, "nf4 double quantization: out of memory for %zu scales",
			       z->blocks);
	for (size_t b = 0; b < z->blocks; b++) {
		size_t e0 = b * SC_NF4_BLOCK;
		size_t len = n - e0 < SC_NF4_BLOCK ? n - e0 : SC_NF4_BLOCK;
		absmax[b] = absmax_of(w + e0, len);
		nf4_block(q->qweight + e0 / 2, w + e0, len, absmax[b], t);
	}
	if (s->double_quant) {
		nf4_double_quant(absmax, z->blocks, q);
		free(absmax);
	}
	return SC_OK;
}

/* bf16: rounded element by element; a finite weight beyond bf16's range
 * (|w| >= 0x1.ffp127, which rounds to infinity) is refused like a
 * non-finite one, so that every bf16 weight written is finite. */
static sc_err bf16_quantize(const sc_quant_spec *s, const float *w, const sc_quant_out *q)
{
	size_t n = s->rows * s->cols;
	int bad = 0;
	for (size_t i = 0; i < n; i++) { /* bytewise stores: qweight may be unaligned */
		uint16_t h = sc_bf16_from_f32(w[i]);
		memcpy(q->qweight + 2 * i, &h, sizeof(h));
		bad |= (h & 0x7f80) == 0x7f80;
	}
	for (size_t i = 0; bad && i < n; i++)
		if ((sc_bf16_from_f32(w[i]) & 0x7f80) == 0x7f80)
			return sc_errf(SC_EINVAL,
				       "weight element (%zu, %zu) is %g: beyond bf16's range",
				       i / s->cols, i % s->cols, (double)w[i]);
	return SC_OK;
}

sc_err sc_quant_quantize(const sc_quant_spec *s, const float *w, const sc_quant_out *q)
{
	sc_quant_sizes z;
	SC_TRY(sc_quant_size(s, &z));
	SC_TRY(check_finite(s, w, s->rows * s->cols));
	if (s->format == SC_QUANT_INT8) {
		int8_quantize(s, w, q);
		return SC_OK;
	}
	if (s->format == SC_QUANT_BF16)
		return bf16_quantize(s, w, q);
	return nf4_quantize(s, &z, w, q);
}

/* ---- checking and dequantizing ---- */

static int is_scale(float g)
{
	return g >= 0.0f && g * 127.0f <= FLT_MAX;
}

/* s's weight with q's parts, for sc_qformat.h's element arithmetic. */
static sc_qformat_weight qformat_of(const sc_quant_spec *s, const sc_quant_view *q)
{
	int dq = s->format == SC_QUANT_NF4 && s->double_quant;
	return (sc_qformat_weight){ .format = (enum sc_qformat)s->format,
				    .rows = s->rows,
				    .cols = s->cols,
				    .scale_rows = s->row_major_out,
				    .q = q->qweight,
				    .scales = dq ? NULL : q->scales,
				    .scales_q = dq ? q->scales_q : NULL,
				    .scales_scale = dq ? q->scales_scale : NULL,
				    .scales_offset = dq ? q->scales_offset : NULL };
}

sc_err sc_quant_check(const sc_quant_spec *s, const sc_quant_view *q)
{
	sc_quant_sizes z;
	size_t n = s->rows * s->cols;
	SC_TRY(sc_quant_size(s, &z));
	if (s->format == SC_QUANT_BF16) {
		/* The bytes may be a file's, at any alignment: read them as such. */
		for (size_t i = 0; i < n; i++) {
			uint16_t h;
			memcpy(&h, q->qweight + 2 * i, sizeof(h));
			if ((h & 0x7f80) == 0x7f80)
				return sc_errf(SC_EFORMAT,
					       "bf16 weight (%zu, %zu) is 0x%04x: not finite",
					       i / s->cols, i % s->cols, h);
		}
		return SC_OK;
	}
	for (size_t i = 0; i < z.scales; i++) /* nf4's absmax need not allow 127 * a */
		if (!(s->format == SC_QUANT_INT8 ? is_scale(q->scales[i])
						 : q->scales[i] >= 0.0f && q->scales[i] <= FLT_MAX))
			return sc_errf(SC_EFORMAT, "scale %zu is %g: not a finite scale >= 0", i,
				       (double)q->scales[i]);
	if (s->format == SC_QUANT_INT8) {
		for (size_t i = 0; i < n; i++)
			if (q->qweight[i] == 0x80)
				return sc_errf(SC_EFORMAT, "int8 weight (%zu, %zu) holds -128",
					       i / s->cols, i % s->cols);
		return SC_OK;
	}
	if (n % 2 && q->qweight[n / 2] & 0x0f)
		return sc_errf(SC_EFORMAT, "nf4: the last byte's padding nibble is %d, not 0",
			       q->qweight[n / 2] & 0x0f);
	if (!s->double_quant)
		return SC_OK;
	if (!(fabsf(*q->scales_offset) <= FLT_MAX))
		return sc_errf(SC_EFORMAT, "nf4: scales_offset %g is not finite",
			       (double)*q->scales_offset);
	for (size_t j = 0; j < z.scales_scale; j++)
		if (!is_scale(q->scales_scale[j]))
			return sc_errf(SC_EFORMAT,
				       "nf4: scales_scale %zu is %g: not a finite "
				       "scale >= 0",
				       j, (double)q->scales_scale[j]);
	sc_qformat_weight w = qformat_of(s, q);
	for (size_t b = 0; b < z.scales_q; b++)
		if (q->scales_q[b] == 0x80 || !(fabsf(sc_qformat_nf4_absmax(&w, b)) <= FLT_MAX))
			return sc_errf(SC_EFORMAT,
				       "nf4: scales_q %zu is -128 or gives a "
				       "non-finite absmax",
				       b);
	return SC_OK;
}

sc_err sc_quant_dequantize_rows(const sc_quant_spec *s, const sc_quant_view *q, size_t r0,
				size_t r1, float *out)
{
	sc_quant_sizes z;
	size_t C = s->cols;
	SC_TRY(sc_quant_size(s, &z));
	if (!(r0 <= r1 && r1 <= s->rows))
		return sc_errf(SC_ERANGE, "rows [%zu, %zu) are not within the weight's %zu rows",
			       r0, r1, s->rows);
	sc_qformat_weight w = qformat_of(s, q);
	sc_qformat_dequantize_block(&w, r0, r1, 0, C, out, C);
	return SC_OK;
}

sc_err sc_quant_dequantize(const sc_quant_spec *s, const sc_quant_view *q, float *out)
{
	return sc_quant_dequantize_rows(s, q, 0, s->rows, out);
}

/* ---- relative output error ---- */

sc_err sc_quant_rel_error(const sc_quant_spec *s, const float *w, const sc_quant_view *q,
			  const float *x, size_t n_x, double *rel)
{
	sc_quant_sizes z;
	size_t R = s->rows, C = s->cols, tile, out_n;
	double num = 0.0, den = 0.0, *y = NULL, *d = NULL;
	float *wq = NULL;
	sc_err rc;

	SC_TRY(sc_quant_size(s, &z));
	tile = C < 65536 ? 65536 / C : 1;
	tile = tile < R ? tile : R;
	out_n = s->row_major_out ? 0 : n_x * C; /* Conv1D: outputs accumulate by input row */
	if (!(wq = malloc(tile * C * sizeof(float))) ||
	    (out_n && !(y = calloc(2 * out_n, sizeof(double))))) {
		free(wq);
		return sc_errf(SC_ENOMEM, "quantization error: out of memory");
	}
	d = y ? y + out_n : NULL;
	for (size_t r0 = 0; r0 < R; r0 += tile) {
		size_t r1 = R - r0 < tile ? R : r0 + tile;
		if ((rc = sc_quant_dequantize_rows(s, q, r0, r1, wq)))
			goto done;
		for (size_t r = r0; r < r1; r++) {
			const float *wr = w + r * C, *qr = wq + (r - r0) * C;
			for (size_t k = 0; k < n_x; k++) {
				if (s->row_major_out) { /* row r is output channel r */
					const float *xk = x + k * C;
					double yo = 0.0, dq = 0.0;
					for (size_t c = 0; c < C; c++) {
						yo += (double)wr[c] * xk[c];
						dq += ((double)wr[c] - qr[c]) * xk[c];
					}
					num += dq * dq;
					den += yo * yo;
				} else { /* row r is input r: y[k, :] += x[k, r] * W[r, :] */
					double xi = x[k * R + r];
					double *yk = y + k * C, *dk = d + k * C;
					for (size_t c = 0; c < C; c++) {
						yk[c] += xi * wr[c];
						dk[c] += xi * ((double)wr[c] - qr[c]);
					}
				}
			}
		}
	}
	for (size_t i = 0; i < out_n; i++) {
		num += d[i] * d[i];
		den += y[i] * y[i];
	}
	*rel = den > 0.0 ? sqrt(num / den) : num > 0.0 ? INFINITY : 0.0;
	rc = SC_OK;
done:
	free(wq);
	free(y);
	return rc;
}
