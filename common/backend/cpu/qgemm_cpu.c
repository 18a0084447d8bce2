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
 * int8 / nf4 weights asked for bf16 products (sc_qweight.bf16_compute, a
 * job's --precision bf16) take oneDNN's bf16 matmul too where it is used
 * for bf16 weights: op(a) rounded to bf16 once per call (or per block of
 * rows when the scratch is short), W dequantized to bf16 a panel of output
 * columns at a time (dequant_cpu.h: AVX-512 where present), each panel one
 * bf16 x bf16 -> fp32 product. Elsewhere, the fp32 tiles as without it.
 *
 * Also the embedding lookup of a quantized token embedding
 * (encoder_forward_q): each row read is dequantized into the output, so a
 * bf16 base keeps no fp32 copy of its embedding. */
#include <omp.h>
#include <stdint.h>

#include "bf16_dnnl.h"
#include "cpu_ops.h"
#include "dequant_cpu.h"
#include "sc_qformat.h"

_Static_assert((int)SC_QW_INT8 == (int)SC_QF_INT8 && (int)SC_QW_NF4 == (int)SC_QF_NF4 &&
		   (int)SC_QW_BF16 == (int)SC_QF_BF16,
	       "sc_qw_format numbers the formats as sc_qformat does");

static sc_qformat_weight qformat_of(const sc_qweight *w)
{
	return (sc_qformat_weight){ .format = (enum sc_qformat)w->format,
				    .rows = (size_t)w->rows,
				    .cols = (size_t)w->cols,
				    .scale_rows = w->scale_rows,
				    .q = w->q,
				    .scales = w->scales,
				    .scales_q = w->scales_q,
				    .scales_scale = w->scales_scale,
				    .scales_offset = w->scales_offset };
}

/* out (r1 - r0, c1 - c0) bf16, rows ldo apart, = bf16(W[r0:r1, c0:c1]):
 * rows split over the OpenMP threads as dequant_block splits them. */
static void dequant_block_bf16(const sc_qweight *w, int r0, int r1, int c0, int c1, uint16_t *out,
			       size_t ldo)
{
	sc_qformat_weight v = qformat_of(w);
	int cols = c1 - c0 > 0 ? c1 - c0 : 1, rows = r1 - r0;
	int per = (int)(SC_CPU_PAR_MIN / (size_t)cols) + 1; /* rows per work item */
	int items = (rows + per - 1) / per;
#pragma omp parallel for schedule(static) if (items > 1)
	for (int it = 0; it < items; it++) {
		int a = r0 + it * per, b = a + per < r1 ? a + per : r1;
		sc_cpu_dequant_bf16(&v, (size_t)a, (size_t)b, (size_t)c0, (size_t)c1,
				    out + (size_t)(a - r0) * ldo, ldo, SC_CPU_DQ_AUTO);
	}
}

/* The widest panel of at most max columns that splits n into even parts
 * (a multiple of 16 where that fits), as the fp32 tiles are cut. */
static int even_width(int n, size_t max)
{
	if (max >= (size_t)n)
		return n;
	size_t parts = ((size_t)n + max - 1) / max;
	size_t even = ((size_t)n + parts - 1) / parts, up = (even + 15) / 16 * 16;
	return (int)(up <= max ? up : even);
}

/* gemm_q of an int8 / nf4 weight as bf16 products on oneDNN (the file
 * comment). scratch: elems bf16, at least 2 k (checked by the caller). */
static sc_err gemm_q_bf16_panels(sc_backend *be, sc_cpu_dnnl *dnnl, int trans_a, int trans_b, int m,
				 int n, int k, float alpha, const float *a, int lda,
				 const sc_qweight *b, float beta, float *c, int ldc,
				 uint16_t *scratch, size_t elems)
{
	size_t per_k = elems / (size_t)k; /* rows of k that fit */
	size_t want_panel = (size_t)(n < 64 ? n : 64);
	/* all of op(a) when it fits beside a panel of 64 columns, else half
	 * the scratch's rows each */
	size_t mc = per_k >= (size_t)m + want_panel ? (size_t)m : per_k / 2;
	mc = mc < 1 ? 1 : mc;
	size_t pw = per_k - mc; /* >= 1: per_k >= 2 */
	/* op(a)'s rows after the panel, 64-byte aligned where that fits */
	size_t act_at = (pw * (size_t)k + 31) / 32 * 32;
	if (act_at + mc * (size_t)k > elems)
		act_at = pw * (size_t)k;
	int nt = even_width(n, pw);
	uint16_t *panel = scratch, *act = scratch + act_at;
	sc_cpu_enter(be); /* the conversions' and oneDNN's threads are this pool's */
	for (int m0 = 0; m0 < m; m0 += (int)mc) {
		int rows = m - m0 < (int)mc ? m - m0 : (int)mc;
		sc_cpu_bf16_round(act, trans_a ? a + m0 : a + (size_t)m0 * lda, lda, trans_a, rows,
				  k);
		for (int n0 = 0; n0 < n; n0 += nt) {
			int n1 = n - n0 < nt ? n : n0 + nt, w = n1 - n0;
			/* trans_b: rows [n0, n1) of W (n, k), a (w, k) panel;
			 * else columns [n0, n1) of W (k, n), a (k, w) one. */
			if (trans_b)
				dequant_block_bf16(b, n0, n1, 0, k, panel, (size_t)k);
			else
				dequant_block_bf16(b, 0, k, n0, n1, panel, (size_t)w);
			SC_TRY(sc_cpu_dnnl_gemm_bf16(dnnl, trans_b, rows, w, k, alpha, act, panel,
						     beta, c + (size_t)m0 * ldc + n0, ldc));
		}
	}
	return SC_OK;
}

/* out (r1 - r0, c1 - c0), rows ldo apart, = W[r0:r1, c0:c1]: rows split
 * over the OpenMP threads when the block is large (each element is its own
 * computation, so the split changes no bit). */
static void dequant_block(const sc_qweight *w, int r0, int r1, int c0, int c1, float *out,
			  size_t ldo)
{
	sc_qformat_weight v = qformat_of(w);
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
	sc_cpu_dnnl *dnnl = b->format == SC_QW_BF16 || b->bf16_compute ? sc_cpu_dnnl_of(be) : NULL;
	if (dnnl && b->format != SC_QW_BF16)
		return gemm_q_bf16_panels(be, dnnl, trans_a, trans_b, m, n, k, alpha, a, lda, b,
					  beta, c, ldc, (uint16_t *)(void *)tile, 2 * tile_floats);
	if (dnnl) {
		sc_cpu_enter(be); /* oneDNN's threads are this OpenMP pool's */
		return sc_cpu_dnnl_gemm(dnnl, trans_a, trans_b, m, n, k, alpha, a, lda,
					(const uint16_t *)(const void *)b->q, beta, c, ldc,
					(uint16_t *)(void *)tile, 2 * tile_floats);
	}
	/* As few tiles as the scratch allows, of even widths (a multiple of
	 * 16 where it fits), so that no tile is much narrower than the rest:
	 * a narrow one is what a BLAS may run with another kernel. */
	int nt = even_width(n, tile_floats / (size_t)k);
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

sc_err sc_backend_cpu_dequant_bf16(const sc_qweight *w, int r0, int r1, int c0, int c1,
				   uint16_t *out, size_t ldo, int scalar)
{
	if (!w || !w->q || r0 < 0 || r0 > r1 || r1 > w->rows || c0 < 0 || c0 > c1 || c1 > w->cols ||
	    ldo < (size_t)(c1 - c0) ||
	    (w->format != SC_QW_INT8 && w->format != SC_QW_NF4 && w->format != SC_QW_BF16))
		return sc_errf(SC_EINVAL,
			       "dequant_bf16: [%d, %d) x [%d, %d) is not inside a (%d, %d) "
			       "weight of a known format",
			       r0, r1, c0, c1, w ? w->rows : 0, w ? w->cols : 0);
	sc_qformat_weight v = qformat_of(w);
	sc_cpu_dequant_bf16(&v, (size_t)r0, (size_t)r1, (size_t)c0, (size_t)c1, out, ldo,
			    scalar ? SC_CPU_DQ_SCALAR : SC_CPU_DQ_AUTO);
	return SC_OK;
}

const char *sc_backend_cpu_dequant_kind(void)
{
	return sc_cpu_dequant_bf16_kind();
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
