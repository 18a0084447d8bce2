/* qgemm_cpu.c — the CPU backend's gemm_q: a GEMM whose B is a quantized
 * frozen weight (sc_qweight), dequantized a tile of output columns at a time
 * into the caller's scratch and handed to the backend's own gemm, so every
 * output element is summed over all of k by one gemm call, as gemm on the
 * whole dequantized weight sums it. Bit-identical to that gemm when the BLAS
 * picks the same kernel for a tile as for the whole (OpenBLAS may not for a
 * narrow last tile: its small-matrix kernels sum in another order), else
 * within fp32 rounding. The dequantization is sc_qformat.h's, the same
 * as sc_quant_dequantize_rows's (qtrain_test checks them bit for bit).
 *
 * bf16 weights take one of two paths (sc_backend_cpu_bf16_kernel says
 * which): on a CPU with bf16 instructions and a build with oneDNN, a
 * bf16 x bf16 -> fp32 matmul (bf16_dnnl.c; the activation rounded to bf16
 * too, as autocast does); elsewhere the tiles here, widened to fp32 exactly
 * (the activation stays fp32: more accurate, and no slower, than rounding
 * it when the multiply is fp32 anyway).
 *
 * Also the embedding lookup of a quantized token embedding
 * (encoder_forward_q): each row read is dequantized into the output, so a
 * bf16 base keeps no fp32 copy of its embedding. */
#include <omp.h>
#include <stdint.h>

#include "bf16_dnnl.h"
#include "cpu_ops.h"
#include "sc_qformat.h"

_Static_assert((int)SC_QW_INT8 == (int)SC_QF_INT8 && (int)SC_QW_NF4 == (int)SC_QF_NF4 &&
		   (int)SC_QW_BF16 == (int)SC_QF_BF16,
	       "sc_qw_format numbers the formats as sc_qformat does");

/* out (r1 - r0, c1 - c0), rows ldo apart, = W[r0:r1, c0:c1]: rows split
 * over the OpenMP threads when the block is large (each element is its own
 * computation, so the split changes no bit). */
static void dequant_block(const sc_qweight *w, int r0, int r1, int c0, int c1, float *out,
			  size_t ldo)
{
	sc_qformat_weight v = { .format = (enum sc_qformat)w->format,
				.rows = (size_t)w->rows,
				.cols = (size_t)w->cols,
				.scale_rows = w->scale_rows,
				.q = w->q,
				.scales = w->scales,
				.scales_q = w->scales_q,
				.scales_scale = w->scales_scale,
				.scales_offset = w->scales_offset };
	int cols = c1 - c0 > 0 ? c1 - c0 : 1, rows = r1 - r0;
	int per = (int)(SC_CPU_PAR_MIN / (size_t)cols) + 1; /* rows per work item */
	int items = (rows + per - 1) / per;
#pragma omp parallel for schedule(static) if (items > 1)
	for (int it = 0; it < items; it++) {
		int a = r0 + it * per, b = a + per < r1 ? a + per : r1;
		sc_qformat_dequantize_block(&v, (size_t)a, (size_t)b, (size_t)c0, (size_t)c1,
					    out + (size_t)(a - r0) * ldo, ldo);
	}
}

SC_CPU_HOT static void round_rows(uint16_t *out, const float *a, int lda, int rows, int cols)
{
	for (int i = 0; i < rows; i++) {
		const float *ar = a + (size_t)i * lda;
		uint16_t *o = out + (size_t)i * cols;
		for (int j = 0; j < cols; j++)
			o[j] = sc_bf16_from_f32(ar[j]);
	}
}

void sc_cpu_bf16_round(uint16_t *out, const float *a, int lda, int trans, int rows, int cols)
{
	if (trans) { /* a stored (cols, rows): a rare call (no caller today), kept plain */
		for (int i = 0; i < rows; i++)
			for (int j = 0; j < cols; j++)
				out[(size_t)i * cols + j] =
				    sc_bf16_from_f32(a[(size_t)j * lda + i]);
		return;
	}
	int per = (int)(SC_CPU_PAR_MIN / (cols > 0 ? cols : 1)) + 1; /* rows per work item */
	int items = (rows + per - 1) / per;
#pragma omp parallel for schedule(static) if (items > 1)
	for (int it = 0; it < items; it++) {
		int r0 = it * per, r1 = r0 + per < rows ? r0 + per : rows;
		round_rows(out + (size_t)r0 * cols, a + (size_t)r0 * lda, lda, r1 - r0, cols);
	}
}

sc_err sc_cpu_gemm_q(sc_backend *be, int trans_a, int trans_b, int m, int n, int k, float alpha,
		     const float *a, int lda, const sc_qweight *b, float beta, float *c, int ldc,
		     float *tile, size_t tile_floats)
{
	int rows = trans_b ? n : k, cols = trans_b ? k : n;
	if (!b || !b->q || m < 0 || n < 0 || k < 1 || b->rows != rows || b->cols != cols ||
	    (b->format != SC_QW_INT8 && b->format != SC_QW_NF4 && b->format != SC_QW_BF16))
		return sc_errf(SC_EINVAL,
			       "gemm_q: a quantized (%d, %d) weight does not fit m=%d n=%d k=%d "
			       "trans_b=%d",
			       b ? b->rows : 0, b ? b->cols : 0, m, n, k, trans_b);
	if (!tile || tile_floats < (size_t)k)
		return sc_errf(SC_EINVAL, "gemm_q: %zu floats of tile scratch, fewer than k=%d",
			       tile ? tile_floats : 0, k);
	sc_cpu_dnnl *dnnl = b->format == SC_QW_BF16 ? sc_cpu_dnnl_of(be) : NULL;
	if (dnnl) {
		sc_cpu_enter(be); /* oneDNN's threads are this OpenMP pool's */
		return sc_cpu_dnnl_gemm(dnnl, trans_a, trans_b, m, n, k, alpha, a, lda,
					(const uint16_t *)(const void *)b->q, beta, c, ldc,
					(uint16_t *)(void *)tile, 2 * tile_floats);
	}
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
	sc_cpu_enter(be); /* the dequantization's threads are the backend's */
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

sc_err sc_cpu_encoder_forward_q(sc_backend *be, float *out, const int32_t *tokens,
				const sc_qweight *wte, const float *wpe, int B, int T, int C)
{
	if (B < 0 || T < 0 || C <= 0 || !wte || !wte->q || wte->cols != C ||
	    (wte->format != SC_QW_INT8 && wte->format != SC_QW_NF4 && wte->format != SC_QW_BF16))
		return sc_errf(SC_EINVAL,
			       "encoder_q: a (%d, %d) embedding does not fit B=%d T=%d C=%d",
			       wte ? wte->rows : 0, wte ? wte->cols : 0, B, T, C);
	int N = B * T;
	for (int i = 0; i < N; i++)
		if (tokens[i] < 0 || tokens[i] >= wte->rows)
			return sc_errf(SC_ERANGE, "encoder_q: token %d at %d is outside [0, %d)",
				       (int)tokens[i], i, wte->rows);
	sc_cpu_enter(be);
#pragma omp parallel for schedule(static) if ((size_t)N * C >= SC_CPU_PAR_MIN)
	for (int i = 0; i < N; i++) {
		float *o = out + (size_t)i * C;
		dequant_block(wte, tokens[i], tokens[i] + 1, 0, C, o, (size_t)C);
		if (!wpe)
			continue;
		const float *p = wpe + (size_t)(i % T) * C;
#pragma omp simd
		for (int j = 0; j < C; j++)
			o[j] += p[j];
	}
	return SC_OK;
}
