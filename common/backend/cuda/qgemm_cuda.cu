/* qgemm_cuda.cu — the CUDA backend's gemm_q (sc_backend.h): a GEMM whose B
 * is a frozen weight kept quantized on the GPU (sc_qweight).
 *   bf16  the activation rounded to bf16 (round to nearest even, as
 *         sc_qformat.h's sc_bf16_from_f32) into the caller's tile scratch, then
 *         one cublasGemmEx with bf16 inputs, fp32 accumulation
 *         (CUBLAS_COMPUTE_32F) and fp32 output: tensor cores on Ampere and
 *         later. Rows go a tile's worth at a time when the tile cannot
 *         hold all of op(a).
 *   int8, nf4  a tile of output columns dequantized into the tile scratch
 *         by a kernel with the float operations of sc_quant_dequantize_rows
 *         (__fmul_rn / __fadd_rn: no contraction into FMAs, so the tile
 *         holds the CPU's bits), then cublasSgemm on it, as the CPU does.
 *         With bf16_compute (a job's --precision bf16) as on the CPU with
 *         oneDNN: op(a) rounded to bf16 once, W dequantized the same way
 *         and rounded to bf16 a panel of columns at a time, then
 *         cublasGemmEx per panel (bf16 inputs, fp32 sums).
 * Also encoder_forward_q on a bf16 token embedding: rows widened (exact).
 * The CUDA emulator (tests/cuda_emu) runs all of it, its cublasGemmEx on
 * bf16 operands widened to fp32 (exact products, fp32 sums). */
#include <cuda_bf16.h>

#include "cuda_impl.h"

enum { NF4_BLOCK = 64, NF4_DQ_BLOCK = 256, THREADS = 256 };

__constant__ float nf4_codebook[16] = {
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

/* out (rows, cols) packed = a's rows as bf16 (a (rows, cols) rows lda
 * apart, or with trans the transpose of the stored (cols, rows)). */
__global__ void round_bf16_kernel(__nv_bfloat16 *out, const float *a, int lda, int trans, int rows,
				  int cols)
{
	size_t n = (size_t)rows * cols;
	for (size_t i = sc_thread_index(); i < n; i += sc_grid_stride()) {
		size_t r = i / cols, c = i % cols;
		float x = trans ? a[c * lda + r] : a[r * lda + c];
		out[i] = __float2bfloat16_rn(x);
	}
}

__device__ __forceinline__ void store(float *p, float v)
{
	*p = v;
}

__device__ __forceinline__ void store(__nv_bfloat16 *p, float v)
{
	*p = __float2bfloat16_rn(v);
}

/* out (r1 - r0, c1 - c0), rows ldo apart, = W[r0:r1, c0:c1] (int8 or nf4),
 * as fp32 or rounded to bf16. */
template <typename O>
__global__ void dequant_kernel(O *out, size_t ldo, int format, int cols, int scale_rows,
			       const uint8_t *q, const float *scales, const uint8_t *scales_q,
			       const float *scales_scale, const float *scales_offset, int r0,
			       int r1, int c0, int c1)
{
	size_t w = (size_t)(c1 - c0), n = (size_t)(r1 - r0) * w;
	for (size_t i = sc_thread_index(); i < n; i += sc_grid_stride()) {
		size_t r = r0 + i / w, c = c0 + i % w, e = r * (size_t)cols + c;
		float v;
		if (format == SC_QW_INT8) {
			float s = scales[scale_rows ? r : c];
			v = __fmul_rn((float)(int8_t)q[e], s);
		} else {
			size_t b = e / NF4_BLOCK;
			float a = scales ? scales[b]
					 : __fadd_rn(__fmul_rn((float)(int8_t)scales_q[b],
							       scales_scale[b / NF4_DQ_BLOCK]),
						     *scales_offset);
			uint8_t byte = q[e / 2];
			v = __fmul_rn(nf4_codebook[e % 2 ? byte & 0x0f : byte >> 4], a);
		}
		store(&out[(i / w) * ldo + i % w], v);
	}
}

/* op(a)'s rows [m0, m0 + rows) rounded to bf16 into a16 (rows, k) packed. */
static sc_err round_rows(sc_cuda_ctx *c, __nv_bfloat16 *a16, const float *a, int lda, int trans_a,
			 int m0, int rows, int k)
{
	const float *a0 = trans_a ? a + m0 : a + (size_t)m0 * lda;
	size_t nel = (size_t)rows * k;
	SC_LAUNCH(round_bf16_kernel, sc_cuda_grid(nel, THREADS), THREADS, c->stream)
	(a16, a0, lda, trans_a, rows, k);
	SC_LAUNCH_CHECK(round_bf16_kernel);
	return SC_OK;
}

static sc_err gemm_bf16(sc_cuda_ctx *c, int trans_a, int trans_b, int m, int n, int k, float alpha,
			const float *a, int lda, const sc_qweight *b, float beta, float *out,
			int ldc, float *tile, size_t tile_floats)
{
	__nv_bfloat16 *a16 = (__nv_bfloat16 *)tile;
	size_t rows_max = 2 * tile_floats / (size_t)k;
	int mc = rows_max < (size_t)m ? (int)rows_max : m;
	cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
	for (int m0 = 0; m0 < m; m0 += mc) {
		int rows = m - m0 < mc ? m - m0 : mc;
		SC_TRY(round_rows(c, a16, a, lda, trans_a, m0, rows, k));
		/* Row-major C = A W is column-major C^T = W^T A^T: cuBLAS gets
		 * W first, as cuda_gemm does. */
		SC_CUBLAS_CHECK(cublasGemmEx(c->blas, op_b, CUBLAS_OP_N, n, rows, k, &alpha, b->q,
					     CUDA_R_16BF, trans_b ? k : n, a16, CUDA_R_16BF, k,
					     &beta, out + (size_t)m0 * ldc, CUDA_R_32F, ldc,
					     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
	}
	return SC_OK;
}

/* int8 / nf4 with bf16_compute: the tile holds op(a)'s rows as bf16 (all
 * of them when it can: mc rows), then a panel of nt of W's columns
 * dequantized to bf16, 16 elements aligned. 0 when it cannot hold a row
 * and 16 columns: the caller takes the fp32 tiles. */
static int bf16_panel_plan(int m, int n, int k, size_t tile_floats, int *mc, size_t *woff, int *nt)
{
	size_t cap = 2 * tile_floats, kk = (size_t)k, min_panel = (size_t)(n < 16 ? n : 16) * kk;
	size_t rows_max, cols;
	if (cap < kk + 16 + min_panel)
		return 0;
	rows_max = (cap - 16 - min_panel) / kk;
	*mc = rows_max < (size_t)m ? (int)rows_max : m;
	*woff = ((size_t)*mc * kk + 15) / 16 * 16;
	cols = (cap - *woff) / kk;
	cols = cols >= 16 ? cols / 16 * 16 : cols;
	*nt = cols < (size_t)n ? (int)cols : n;
	return 1;
}

static sc_err gemm_q_bf16_panels(sc_cuda_ctx *c, int trans_a, int trans_b, int m, int n, int k,
				 float alpha, const float *a, int lda, const sc_qweight *b,
				 float beta, float *out, int ldc, float *tile, int mc, size_t woff,
				 int nt)
{
	__nv_bfloat16 *a16 = (__nv_bfloat16 *)tile, *w16 = a16 + woff;
	for (int m0 = 0; m0 < m; m0 += mc) {
		int rows = m - m0 < mc ? m - m0 : mc;
		SC_TRY(round_rows(c, a16, a, lda, trans_a, m0, rows, k));
		for (int n0 = 0; n0 < n; n0 += nt) {
			int n1 = n - n0 < nt ? n : n0 + nt, w = n1 - n0;
			int r0 = trans_b ? n0 : 0, r1 = trans_b ? n1 : k;
			int c0 = trans_b ? 0 : n0, c1 = trans_b ? k : n1;
			size_t wel = (size_t)w * k;
			SC_LAUNCH(dequant_kernel<__nv_bfloat16>, sc_cuda_grid(wel, THREADS),
				  THREADS, c->stream)
			(w16, (size_t)(c1 - c0), b->format, b->cols, b->scale_rows, b->q, b->scales,
			 b->scales_q, b->scales_scale, b->scales_offset, r0, r1, c0, c1);
			SC_LAUNCH_CHECK(dequant_kernel);
			SC_CUBLAS_CHECK(
			    cublasGemmEx(c->blas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N,
					 w, rows, k, &alpha, w16, CUDA_R_16BF, trans_b ? k : w, a16,
					 CUDA_R_16BF, k, &beta, out + (size_t)m0 * ldc + n0,
					 CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
		}
	}
	return SC_OK;
}

sc_err sc_cuda_gemm_q(sc_backend *be, int trans_a, int trans_b, int m, int n, int k, float alpha,
		      const float *a, int lda, const sc_qweight *b, float beta, float *out, int ldc,
		      float *tile, size_t tile_floats)
{
	int rows = trans_b ? n : k, cols = trans_b ? k : n;
	if (!b || !b->q || m < 0 || n < 0 || k < 1 || b->rows != rows || b->cols != cols ||
	    ldc < (n > 1 ? n : 1) || lda < (trans_a ? (m > 1 ? m : 1) : k) ||
	    (b->format != SC_QW_INT8 && b->format != SC_QW_NF4 && b->format != SC_QW_BF16))
		return sc_errf(SC_EINVAL,
			       "gemm_q: a quantized (%d, %d) weight does not fit m=%d n=%d k=%d "
			       "trans_b=%d",
			       b ? b->rows : 0, b ? b->cols : 0, m, n, k, trans_b);
	if (!tile || tile_floats < (size_t)k)
		return sc_errf(SC_EINVAL, "gemm_q: %zu floats of tile scratch, fewer than k=%d",
			       tile ? tile_floats : 0, k);
	if (m == 0 || n == 0)
		return SC_OK;
	SC_CUDA_ENTER(be, c);
	if (b->format == SC_QW_BF16)
		return gemm_bf16(c, trans_a, trans_b, m, n, k, alpha, a, lda, b, beta, out, ldc,
				 tile, tile_floats);
	int mc, np;
	size_t woff;
	if (b->bf16_compute && bf16_panel_plan(m, n, k, tile_floats, &mc, &woff, &np))
		return gemm_q_bf16_panels(c, trans_a, trans_b, m, n, k, alpha, a, lda, b, beta, out,
					  ldc, tile, mc, woff, np);
	/* Tiles of even widths, as qgemm_cpu.c cuts them. */
	size_t nt_max = tile_floats / (size_t)k;
	int nt = n;
	if (nt_max < (size_t)n) {
		size_t tiles = ((size_t)n + nt_max - 1) / nt_max;
		size_t even = ((size_t)n + tiles - 1) / tiles, up = (even + 15) / 16 * 16;
		nt = (int)(up <= nt_max ? up : even);
	}
	for (int n0 = 0; n0 < n; n0 += nt) {
		int n1 = n - n0 < nt ? n : n0 + nt, w = n1 - n0;
		size_t nel = (size_t)w * k;
		/* trans_b: rows [n0, n1) of W (n, k), a (w, k) tile; else
		 * columns [n0, n1) of W (k, n), a (k, w) tile. */
		int r0 = trans_b ? n0 : 0, r1 = trans_b ? n1 : k;
		int c0 = trans_b ? 0 : n0, c1 = trans_b ? k : n1;
		SC_LAUNCH(dequant_kernel<float>, sc_cuda_grid(nel, THREADS), THREADS, c->stream)
		(tile, (size_t)(c1 - c0), b->format, b->cols, b->scale_rows, b->q, b->scales,
		 b->scales_q, b->scales_scale, b->scales_offset, r0, r1, c0, c1);
		SC_LAUNCH_CHECK(dequant_kernel);
		SC_TRY(sc_cuda_gemm_batched(c, trans_a, trans_b, m, w, k, alpha, a, lda, 0, tile,
					    trans_b ? k : w, 0, beta, out + n0, ldc, 0, 1));
	}
	return SC_OK;
}

/* out (B,T,C) = widen(wte[tokens]) (+ wpe[t]); n = B*T*C. */
__global__ void encoder_bf16_kernel(float *out, const int32_t *tokens, const __nv_bfloat16 *wte,
				    const float *wpe, int T, int C, size_t n)
{
	for (size_t i = sc_thread_index(); i < n; i += sc_grid_stride()) {
		size_t bt = i / C;
		size_t col = i % C, t = bt % T;
		float x = __bfloat162float(wte[(size_t)tokens[bt] * C + col]);
		out[i] = wpe ? x + wpe[t * C + col] : x;
	}
}

sc_err sc_cuda_encoder_forward_q(sc_backend *be, float *out, const int32_t *tokens,
				 const sc_qweight *wte, const float *wpe, int B, int T, int C)
{
	size_t n = (size_t)B * T * C;
	if (B < 0 || T < 0 || C < 1 || !wte || !wte->q || wte->cols != C)
		return sc_errf(SC_EINVAL,
			       "encoder_q: a (%d, %d) embedding does not fit B=%d T=%d C=%d",
			       wte ? wte->rows : 0, wte ? wte->cols : 0, B, T, C);
	if (wte->format != SC_QW_BF16)
		return sc_errf(SC_ENOTSUP, "encoder_q: only bf16 embeddings on %s", be->name);
	if (!n)
		return SC_OK;
	SC_CUDA_ENTER(be, c);
	SC_LAUNCH(encoder_bf16_kernel, sc_cuda_grid(n, THREADS), THREADS, c->stream)
	(out, tokens, (const __nv_bfloat16 *)(const void *)wte->q, wpe, T, C, n);
	SC_LAUNCH_CHECK(encoder_bf16_kernel);
	return SC_OK;
}
