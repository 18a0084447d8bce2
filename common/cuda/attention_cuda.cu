/* attention_cuda.cu — causal self-attention of the CUDA backend: the heads
 * are split out of qkv into (B,NH,T,hs) scratch, the score and value products
 * are cuBLAS strided-batched GEMMs over the B*NH heads, and the masked softmax
 * (and its backward) are one warp per row. Owns the context's attention
 * scratch (sc_cuda_ctx.attn), grown on demand and kept until destroy. */
#include <math.h>

#include "cuda_impl.h"

enum { EW_THREADS = 256, ROW_THREADS = 256, ROWS_PER_BLOCK = ROW_THREADS / 32 };

/* dst (B,NH,T,hs) = src viewed as (B,T,NH,hs), ld floats between positions. */
__global__ void split_heads_kernel(float *dst, const float *src, int ld, int T, int NH, int hs,
				   size_t n)
{
	for (size_t i = sc_thread_index(); i < n; i += sc_grid_stride()) {
		size_t d = i % hs, r = i / hs;
		size_t t = r % T;
		r /= T;
		size_t h = r % NH, b = r / NH;
		dst[i] = src[(b * T + t) * ld + h * hs + d];
	}
}

/* dst viewed as (B,T,NH,hs), ld floats between positions = src (B,NH,T,hs). */
__global__ void merge_heads_kernel(float *dst, int ld, const float *src, int T, int NH, int hs,
				   size_t n)
{
	for (size_t i = sc_thread_index(); i < n; i += sc_grid_stride()) {
		size_t d = i % hs, r = i / hs;
		size_t t = r % T;
		r /= T;
		size_t h = r % NH, b = r / NH;
		dst[(b * T + t) * ld + h * hs + d] = src[i];
	}
}

/* att rows (rows, T), row index = (b*NH + h)*T + t1, hold the scaled scores:
 * softmax over t2 <= t1 in place, 0 for t2 > t1. One warp per row; each lane
 * rereads only the elements it wrote. */
__global__ void softmax_causal_kernel(float *att, int T, size_t rows)
{
	int lane = threadIdx.x % 32;
	size_t row = blockIdx.x * (size_t)(blockDim.x / 32) + threadIdx.x / 32;
	if (row >= rows)
		return; /* uniform across the warp */
	int t1 = (int)(row % T);
	float *p = att + row * T;

	float mx = -INFINITY;
	for (int t2 = lane; t2 <= t1; t2 += 32)
		mx = fmaxf(mx, p[t2]);
	mx = sc_warp_max(mx);
	float sum = 0.0f;
	for (int t2 = lane; t2 <= t1; t2 += 32) {
		float e = expf(p[t2] - mx);
		p[t2] = e;
		sum += e;
	}
	float inv = 1.0f / sc_warp_sum(sum);
	for (int t2 = lane; t2 < T; t2 += 32)
		p[t2] = t2 <= t1 ? p[t2] * inv : 0.0f;
}

/* In place: datt (the gradient of the probabilities) becomes the gradient
 * of the scores before scaling, att * (datt - sum(att * datt)) for t2 <= t1,
 * 0 above. One warp per row. */
__global__ void softmax_causal_backward_kernel(float *datt, const float *att, int T, size_t rows)
{
	int lane = threadIdx.x % 32;
	size_t row = blockIdx.x * (size_t)(blockDim.x / 32) + threadIdx.x / 32;
	if (row >= rows)
		return;
	int t1 = (int)(row % T);
	const float *a = att + row * T;
	float *d = datt + row * T;

	float dot = 0.0f;
	for (int t2 = lane; t2 <= t1; t2 += 32)
		dot += a[t2] * d[t2];
	dot = sc_warp_sum(dot);
	for (int t2 = lane; t2 < T; t2 += 32)
		d[t2] = t2 <= t1 ? a[t2] * (d[t2] - dot) : 0.0f;
}

void sc_cuda_attention_release(sc_cuda_ctx *c)
{
	if (c->attn)
		(void)cudaFree(c->attn);
	c->attn = NULL;
	c->attn_slot = 0;
}

/* Makes the scratch hold SC_CUDA_ATTN_SLOTS slots of at least slot floats. */
static sc_err attn_scratch(sc_cuda_ctx *c, size_t slot)
{
	size_t bytes = SC_CUDA_ATTN_SLOTS * slot * sizeof(float);
	cudaError_t e;
	if (slot <= c->attn_slot)
		return SC_OK;
	SC_CUDA_CHECK(cudaStreamSynchronize(c->stream)); /* queued kernels may use the old one */
	sc_cuda_attention_release(c);
	e = cudaMalloc((void **)&c->attn, bytes);
	if (e != cudaSuccess) {
		c->attn = NULL;
		if (e == cudaErrorMemoryAllocation) {
			(void)cudaGetLastError();
			return sc_errf(SC_ENOMEM, "%s: attention scratch of %zu bytes: %s", c->name,
				       bytes, cudaGetErrorString(e));
		}
		return sc_cuda_fail(__FILE__, __LINE__, "cudaMalloc", cudaGetErrorString(e));
	}
	c->attn_slot = slot;
	return SC_OK;
}

static sc_err check_shape(const char *op, int B, int T, int C, int NH)
{
	if (B < 0 || T < 0 || C <= 0 || NH <= 0 || C % NH != 0)
		return sc_errf(SC_EINVAL,
			       "%s: bad shape B=%d T=%d C=%d NH=%d (C must divide by NH)", op, B, T,
			       C, NH);
	return SC_OK;
}

static sc_err split_heads(sc_cuda_ctx *c, float *dst, const float *src, int ld, int B, int T,
			  int NH, int hs)
{
	size_t n = (size_t)B * T * NH * hs;
	split_heads_kernel<<<sc_cuda_grid(n, EW_THREADS), EW_THREADS, 0, c->stream>>>(dst, src, ld,
										      T, NH, hs, n);
	SC_LAUNCH_CHECK(split_heads_kernel);
	return SC_OK;
}

static sc_err merge_heads(sc_cuda_ctx *c, float *dst, int ld, const float *src, int B, int T,
			  int NH, int hs)
{
	size_t n = (size_t)B * T * NH * hs;
	merge_heads_kernel<<<sc_cuda_grid(n, EW_THREADS), EW_THREADS, 0, c->stream>>>(dst, ld, src,
										      T, NH, hs, n);
	SC_LAUNCH_CHECK(merge_heads_kernel);
	return SC_OK;
}

static unsigned row_blocks(size_t rows)
{
	return (unsigned)((rows + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK);
}

sc_err sc_cuda_attention_forward(sc_backend *be, float *out, float *att, const float *qkv, int B,
				 int T, int C, int NH)
{
	SC_TRY(check_shape("attention_forward", B, T, C, NH));
	size_t n = (size_t)B * T * C, rows = (size_t)B * NH * T;
	if (!n)
		return SC_OK;
	int hs = C / NH, BH = B * NH;
	long long s_head = (long long)T * hs, s_att = (long long)T * T;
	float scale = (float)(1.0 / sqrt((double)hs)); /* as the CPU */
	SC_CUDA_ENTER(be, c);
	SC_TRY(attn_scratch(c, n));
	float *q = c->attn, *k = q + n, *v = k + n, *y = v + n; /* each (B,NH,T,hs) */

	SC_TRY(split_heads(c, q, qkv, 3 * C, B, T, NH, hs));
	SC_TRY(split_heads(c, k, qkv + C, 3 * C, B, T, NH, hs));
	SC_TRY(split_heads(c, v, qkv + 2 * C, 3 * C, B, T, NH, hs));
	/* att (T,T) = scale * q (T,hs) @ k^T, per head */
	SC_TRY(sc_cuda_gemm_batched(c, 0, 1, T, T, hs, scale, q, hs, s_head, k, hs, s_head, 0.0f,
				    att, T, s_att, BH));
	softmax_causal_kernel<<<row_blocks(rows), ROW_THREADS, 0, c->stream>>>(att, T, rows);
	SC_LAUNCH_CHECK(softmax_causal_kernel);
	/* y (T,hs) = att (T,T) @ v (T,hs); the zeros above the diagonal mask v */
	SC_TRY(sc_cuda_gemm_batched(c, 0, 0, T, hs, T, 1.0f, att, T, s_att, v, hs, s_head, 0.0f, y,
				    hs, s_head, BH));
	return merge_heads(c, out, C, y, B, T, NH, hs);
}

sc_err sc_cuda_attention_backward(sc_backend *be, float *dqkv, float *datt, const float *dout,
				  const float *qkv, const float *att, int B, int T, int C, int NH)
{
	SC_TRY(check_shape("attention_backward", B, T, C, NH));
	size_t n = (size_t)B * T * C, rows = (size_t)B * NH * T;
	if (!n)
		return SC_OK;
	int hs = C / NH, BH = B * NH;
	long long s_head = (long long)T * hs, s_att = (long long)T * T;
	float scale = (float)(1.0 / sqrt((double)hs)); /* as the CPU */
	SC_CUDA_ENTER(be, c);
	SC_TRY(attn_scratch(c, n));
	/* each (B,NH,T,hs); dq reuses dy's slot, dead once datt and dv exist */
	float *q = c->attn, *k = q + n, *v = k + n, *dy = v + n, *dk = dy + n, *dv = dk + n;
	float *dq = dy;

	SC_TRY(split_heads(c, q, qkv, 3 * C, B, T, NH, hs));
	SC_TRY(split_heads(c, k, qkv + C, 3 * C, B, T, NH, hs));
	SC_TRY(split_heads(c, v, qkv + 2 * C, 3 * C, B, T, NH, hs));
	SC_TRY(split_heads(c, dy, dout, C, B, T, NH, hs));
	/* datt (T,T) = dy (T,hs) @ v^T */
	SC_TRY(sc_cuda_gemm_batched(c, 0, 1, T, T, hs, 1.0f, dy, hs, s_head, v, hs, s_head, 0.0f,
				    datt, T, s_att, BH));
	/* dv (T,hs) = att^T (T,T) @ dy (T,hs) */
	SC_TRY(sc_cuda_gemm_batched(c, 1, 0, T, hs, T, 1.0f, att, T, s_att, dy, hs, s_head, 0.0f,
				    dv, hs, s_head, BH));
	/* datt becomes the gradient of the unscaled scores q.k */
	softmax_causal_backward_kernel<<<row_blocks(rows), ROW_THREADS, 0, c->stream>>>(datt, att,
											T, rows);
	SC_LAUNCH_CHECK(softmax_causal_backward_kernel);
	/* dq (T,hs) = scale * dscores (T,T) @ k (T,hs); dk = scale * dscores^T @ q */
	SC_TRY(sc_cuda_gemm_batched(c, 0, 0, T, hs, T, scale, datt, T, s_att, k, hs, s_head, 0.0f,
				    dq, hs, s_head, BH));
	SC_TRY(sc_cuda_gemm_batched(c, 1, 0, T, hs, T, scale, datt, T, s_att, q, hs, s_head, 0.0f,
				    dk, hs, s_head, BH));
	SC_TRY(merge_heads(c, dqkv, 3 * C, dq, B, T, NH, hs));
	SC_TRY(merge_heads(c, dqkv + C, 3 * C, dk, B, T, NH, hs));
	return merge_heads(c, dqkv + 2 * C, 3 * C, dv, B, T, NH, hs);
}
