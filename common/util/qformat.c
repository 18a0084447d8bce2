/* qformat.c — sc_qformat.h: the NF4 codebook and block dequantization of
 * the quantized weight formats. Plain loops; every float operation one
 * binary32 operation in the order sc_quant.h writes it. */
#include "sc_qformat.h"

const float sc_nf4_codebook[16] = {
	-1.0f,
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
	1.0f,
};

float sc_qformat_nf4_absmax(const sc_qformat_weight *w, size_t b)
{
	if (!w->scales_q)
		return w->scales[b];
	float t = (float)(int8_t)w->scales_q[b] * w->scales_scale[b / SC_NF4_DQ_BLOCK];
	return t + *w->scales_offset;
}

void sc_qformat_dequantize_block(const sc_qformat_weight *w, size_t r0, size_t r1, size_t c0,
				 size_t c1, float *out, size_t ldo)
{
	size_t C = w->cols;
	for (size_t r = r0; r < r1; r++) {
		float *o = out + (r - r0) * ldo; /* o[c - c0] = W[r, c] */
		size_t e0 = r * C;
		if (w->format == SC_QF_BF16) {
			const uint8_t *q = w->q + 2 * e0;
			for (size_t c = c0; c < c1; c++) {
				uint16_t h;
				memcpy(&h, q + 2 * c, sizeof(h));
				o[c - c0] = sc_bf16_to_f32(h);
			}
		} else if (w->format == SC_QF_INT8) {
			const int8_t *q = (const int8_t *)w->q + e0;
			if (w->scale_rows) {
				float s = w->scales[r];
				for (size_t c = c0; c < c1; c++)
					o[c - c0] = (float)q[c] * s;
			} else {
				for (size_t c = c0; c < c1; c++)
					o[c - c0] = (float)q[c] * w->scales[c];
			}
		} else {
			for (size_t e = e0 + c0, e1 = e0 + c1; e < e1;) {
				size_t b = e / SC_NF4_BLOCK, end = (b + 1) * SC_NF4_BLOCK;
				float a = sc_qformat_nf4_absmax(w, b);
				end = end < e1 ? end : e1;
				for (; e < end; e++) {
					uint8_t byte = w->q[e / 2];
					o[e - e0 - c0] =
					    sc_nf4_codebook[e % 2 ? byte & 0x0f : byte >> 4] * a;
				}
			}
		}
	}
}
