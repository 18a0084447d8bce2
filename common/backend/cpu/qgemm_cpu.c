/* qgemm_cpu.c — the CPU backend's gemm_q: a GEMM whose B is a quantized
 * frozen weight (sc_qweight), dequantized a tile of output columns at a time
 * into the caller's scratch and handed to the backend's own gemm, so every
 * output element is summed over all of k by one gemm call, as gemm on the
 * whole dequantized weight sums it. Bit-identical to that gemm when the BLAS
 * picks the same kernel for a tile as for the whole (OpenBLAS may not for a
 * narrow last tile: its small-matrix kernels sum in another order), else
 * within fp32 rounding. The dequantization repeats
 * sc_quant_dequantize_rows's float operations (qtrain_test checks them bit
 * for bit). */
#include <stdint.h>

#include "cpu_ops.h"

/* The NormalFloat4 codebook, as common/format/quant.c has it. */
static const float nf4_codebook[16] = {
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

enum { NF4_BLOCK = 64, NF4_DQ_BLOCK = 256 };

static float nf4_absmax(const sc_qweight *w, size_t b)
{
	if (!w->scales_q)
		return w->scales[b];
	float t = (float)(int8_t)w->scales_q[b] * w->scales_scale[b / NF4_DQ_BLOCK];
	return t + *w->scales_offset;
}

/* out (r1 - r0, c1 - c0), rows ldo apart, = W[r0:r1, c0:c1]. */
static void dequant_block(const sc_qweight *w, int r0, int r1, int c0, int c1, float *out,
			  size_t ldo)
{
	size_t C = (size_t)w->cols;
	for (int r = r0; r < r1; r++) {
		float *o = out + (size_t)(r - r0) * ldo; /* o[c - c0] = W[r, c] */
		size_t e0 = (size_t)r * C;
		if (w->format == SC_QW_INT8) {
			const int8_t *q = (const int8_t *)w->q + e0;
			if (w->scale_rows) {
				float s = w->scales[r];
				for (int c = c0; c < c1; c++)
					o[c - c0] = (float)q[c] * s;
			} else {
				for (int c = c0; c < c1; c++)
					o[c - c0] = (float)q[c] * w->scales[c];
			}
			continue;
		}
		for (size_t e = e0 + (size_t)c0, e1 = e0 + (size_t)c1; e < e1;) {
			size_t b = e / NF4_BLOCK, end = (b + 1) * NF4_BLOCK;
			float a = nf4_absmax(w, b);
			end = end < e1 ? end : e1;
			for (; e < end; e++) {
				uint8_t byte = w->q[e / 2];
				o[e - e0 - (size_t)c0] =
				    nf4_codebook[e % 2 ? byte & 0x0f : byte >> 4] * a;
			}
		}
	}
}

sc_err sc_cpu_gemm_q(sc_backend *be, int trans_a, int trans_b, int m, int n, int k, float alpha,
		     const float *a, int lda, const sc_qweight *b, float beta, float *c, int ldc,
		     float *tile, size_t tile_floats)
{
	int rows = trans_b ? n : k, cols = trans_b ? k : n;
	if (!b || !b->q || m < 0 || n < 0 || k < 1 || b->rows != rows || b->cols != cols ||
	    (b->format != SC_QW_INT8 && b->format != SC_QW_NF4))
		return sc_errf(SC_EINVAL,
			       "gemm_q: a quantized (%d, %d) weight does not fit m=%d n=%d k=%d "
			       "trans_b=%d",
			       b ? b->rows : 0, b ? b->cols : 0, m, n, k, trans_b);
	if (!tile || tile_floats < (size_t)k)
		return sc_errf(SC_EINVAL, "gemm_q: %zu floats of tile scratch, fewer than k=%d",
			       tile ? tile_floats : 0, k);
	/* As few tiles as the scratch allows, of even widths (a multiple of
	 * 16 where it fits), so that no tile is much narrower than the rest:
	 * a narrow one is what a BLAS may run with another kernel. */
	size_t nt_max = tile_floats / (size_t)k;
	int nt = n;
	if (nt_max < (size_t)n) {
		size_t tiles = ((size_t)n + nt_max - 1) / nt_max;
		size_t even = ((size_t)n + tiles - 1) / tiles, up = (even + 15) / 16 * 16;
		nt = (int)(up <= nt_max ? up : even);
	}
	for (int n0 = 0; n0 < n; n0 += nt) {
		int n1 = n - n0 < nt ? n : n0 + nt, w = n1 - n0;
		/* trans_b: rows [n0, n1) of W (n, k), a (w, k) tile; else
		 * columns [n0, n1) of W (k, n), a (k, w) tile. */
		if (trans_b)
			dequant_block(b, n0, n1, 0, k, tile, (size_t)k);
		else
			dequant_block(b, 0, k, n0, n1, tile, (size_t)w);
		SC_TRY(be->ops->gemm(be, trans_a, trans_b, m, w, k, alpha, a, lda, tile,
				     trans_b ? k : w, beta, c + n0, ldc));
	}
	return SC_OK;
}
