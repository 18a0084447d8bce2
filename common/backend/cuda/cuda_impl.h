/* cuda_impl.h — private to the CUDA backend (included by the .cu files in
 * this folder only): the backend context, the one error-check macro family,
 * shared device helpers and the operations that backend_cuda.cu puts in the
 * ops table.
 *
 * Errors: every CUDA runtime call, cuBLAS call and kernel launch goes through
 * SC_CUDA_CHECK / SC_CUBLAS_CHECK / SC_LAUNCH_CHECK, which return
 * SC_EBACKEND with "file:line: call: reason" from the enclosing function.
 * Kernels run on the backend's one stream, so a fault inside a kernel
 * surfaces at the next synchronising call (sync, download, sumsq).
 *
 * Threads: a backend is used by one host thread at a time; each entry point
 * makes its device current first (the current device is per host thread).
 */
#ifndef SC_CUDA_IMPL_H
#define SC_CUDA_IMPL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>

extern "C" {
#include "sc_adamw.h"
#include "sc_backend.h"
}

/* sumsq's first pass uses at most this many blocks: a constant, so that the
 * reduction tree depends on n alone. */
enum { SC_CUDA_SUMSQ_BLOCKS = 512, SC_CUDA_SUMSQ_THREADS = 256 };

/* The attention kernels take head sizes up to SC_CUDA_ATTN_MAX_HS.
 * attention_kv splits a row's keys over several blocks only while the
 * (row, head, segment) partials fit SC_CUDA_KV_PARTS: a constant, so that
 * the split, and the order of every sum, depends on the shape alone. */
enum { SC_CUDA_ATTN_MAX_HS = 128, SC_CUDA_KV_PARTS = 2048 };

typedef struct sc_cuda_ctx {
	int device;
	cudaStream_t stream;   /* every operation is queued here */
	cublasHandle_t blas;   /* bound to stream */
	double *sumsq_partial; /* (SC_CUDA_SUMSQ_BLOCKS + 1) */
	float *kv_partial;     /* (SC_CUDA_KV_PARTS, SC_CUDA_ATTN_MAX_HS + 2) */
	char name[24];         /* "cuda:N" */
} sc_cuda_ctx;

/* Records "file:line: what: reason" for CUDA error e and returns SC_EBACKEND
 * (SC_ENOMEM for an allocation failure). A sticky error (the context is
 * lost: illegal address, launch failure, ECC, ...) is also remembered for
 * the backend's failure entry. */
sc_err sc_cuda_fail(cudaError_t e, const char *file, int line, const char *what);
/* The same for a cuBLAS status. */
sc_err sc_cublas_fail(cublasStatus_t s, const char *file, int line, const char *what);

#define SC_CUDA_CHECK(call)                                                                        \
	do {                                                                                       \
		cudaError_t sc_cuda_e_ = (call);                                                   \
		if (sc_cuda_e_ != cudaSuccess)                                                     \
			return sc_cuda_fail(sc_cuda_e_, __FILE__, __LINE__, #call);                \
	} while (0)

#define SC_CUBLAS_CHECK(call)                                                                      \
	do {                                                                                       \
		cublasStatus_t sc_cublas_s_ = (call);                                              \
		if (sc_cublas_s_ != CUBLAS_STATUS_SUCCESS)                                         \
			return sc_cublas_fail(sc_cublas_s_, __FILE__, __LINE__, #call);            \
	} while (0)

/* After every kernel launch; kernel names the kernel for the detail. */
#define SC_LAUNCH_CHECK(kernel)                                                                    \
	do {                                                                                       \
		cudaError_t sc_cuda_e_ = cudaGetLastError();                                       \
		if (sc_cuda_e_ != cudaSuccess)                                                     \
			return sc_cuda_fail(sc_cuda_e_, __FILE__, __LINE__, "launch " #kernel);    \
	} while (0)

/* The one launch form: SC_LAUNCH(kernel, grid, block, stream)(args...), then
 * SC_LAUNCH_CHECK(kernel). tests/cuda_emu defines it first to run these
 * sources' kernels on a CPU. */
#ifndef SC_LAUNCH
#define SC_LAUNCH(kernel, grid, block, stream) kernel<<<(grid), (block), 0, (stream)>>>
#endif

/* Before a loop whose trip count is a template constant: unrolled, so that
 * per-thread arrays indexed by its counter live in registers. */
#ifndef SC_UNROLL
#define SC_UNROLL _Pragma("unroll")
#endif

/* The context of be, with its device made current for this host thread. */
#define SC_CUDA_ENTER(be, c)                                                                       \
	sc_cuda_ctx *c = (sc_cuda_ctx *)(be)->ctx;                                                 \
	SC_CUDA_CHECK(cudaSetDevice(c->device))

/* Blocks for a grid-stride loop over n elements (n > 0). */
static inline unsigned sc_cuda_grid(size_t n, unsigned threads)
{
	size_t blocks = (n + threads - 1) / threads;
	return blocks > 65535 ? 65535u : (unsigned)blocks;
}

/* Grid-stride loops: for (i = sc_thread_index(); i < n; i += sc_grid_stride()). */
__device__ inline size_t sc_thread_index(void)
{
	return blockIdx.x * (size_t)blockDim.x + threadIdx.x;
}

__device__ inline size_t sc_grid_stride(void)
{
	return (size_t)gridDim.x * blockDim.x;
}

/* ---- warp and block reductions (every thread gets the result) ---- */

template <typename F> __device__ inline F sc_warp_sum(F v)
{
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

__device__ inline float sc_warp_max(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}

/* blockDim.x must be a multiple of 32; sh holds 32 elements. All threads of
 * the block must call it; sh may be reused by the next call. */
template <typename F> __device__ inline F sc_block_sum(F v, F *sh)
{
	int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
	v = sc_warp_sum(v);
	__syncthreads(); /* the previous call's readers are done with sh */
	if (lane == 0)
		sh[warp] = v;
	__syncthreads();
	return sc_warp_sum(lane < nwarps ? sh[lane] : (F)0);
}

__device__ inline float sc_block_max(float v, float *sh)
{
	int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
	v = sc_warp_max(v);
	__syncthreads();
	if (lane == 0)
		sh[warp] = v;
	__syncthreads();
	return sc_warp_max(lane < nwarps ? sh[lane] : -INFINITY);
}

/* ---- row-major GEMM on cuBLAS (backend_cuda.cu) ---- */

/* qgemm_cuda.cu: gemm_q (sc_backend.h) on int8, nf4 and bf16 weights. */
sc_err sc_cuda_gemm_q(sc_backend *be, int trans_a, int trans_b, int m, int n, int k, float alpha,
		      const float *a, int lda, const sc_qweight *b, float beta, float *out, int ldc,
		      float *tile, size_t tile_floats);
/* encoder_forward_q (sc_backend.h) on a bf16 token embedding (int8 and
 * nf4: SC_ENOTSUP). */
sc_err sc_cuda_encoder_forward_q(sc_backend *be, float *out, const int32_t *tokens,
				 const sc_qweight *wte, const float *wpe, int B, int T, int C);

/* For each of batch matrices: c = alpha * op(a) (m,k) @ op(b) (k,n) + beta * c,
 * row-major, the i-th matrices at a + i*stride_a etc. Queued on c's stream. */
sc_err sc_cuda_gemm_batched(sc_cuda_ctx *c, int trans_a, int trans_b, int m, int n, int k,
			    float alpha, const float *a, int lda, long long stride_a,
			    const float *b, int ldb, long long stride_b, float beta, float *out,
			    int ldc, long long stride_c, int batch);

/* ---- the table's operations; semantics as in sc_backend.h ---- */

/* ops_cuda.cu */
sc_err sc_cuda_encoder_forward(sc_backend *be, float *out, const int32_t *tokens, const float *wte,
			       const float *wpe, int B, int T, int C);
sc_err sc_cuda_layernorm_forward(sc_backend *be, float *out, float *mean, float *rstd,
				 const float *inp, const float *w, const float *b, int N, int C,
				 float eps);
sc_err sc_cuda_layernorm_backward(sc_backend *be, float *dinp, const float *dout, const float *inp,
				  const float *w, const float *mean, const float *rstd, int N,
				  int C);
sc_err sc_cuda_rmsnorm_forward(sc_backend *be, float *out, float *rstd, const float *inp,
			       const float *w, int N, int C, float eps);
sc_err sc_cuda_rmsnorm_backward(sc_backend *be, float *dinp, const float *dout, const float *inp,
				const float *w, const float *rstd, int N, int C);
sc_err sc_cuda_rope(sc_backend *be, float *qkv, const float *cos_t, const float *sin_t, int B,
		    int T, int NH, int NKV, int hs, int inverse);
sc_err sc_cuda_gelu_forward(sc_backend *be, float *out, const float *inp, size_t n);
sc_err sc_cuda_gelu_backward(sc_backend *be, float *dinp, const float *inp, const float *dout,
			     size_t n);
sc_err sc_cuda_swiglu_forward(sc_backend *be, float *out, const float *gu, int N, int I);
sc_err sc_cuda_swiglu_backward(sc_backend *be, float *dgu, const float *dout, const float *gu,
			       int N, int I);
sc_err sc_cuda_add(sc_backend *be, float *out, const float *a, const float *b, size_t n);
sc_err sc_cuda_add_bias(sc_backend *be, float *out, const float *bias, int N, int OC, int ldo);
sc_err sc_cuda_crossentropy(sc_backend *be, float *losses, float *logits, const int32_t *targets,
			    int N, int V, float dscale);
sc_err sc_cuda_adamw(sc_backend *be, float *param, float *m, float *v, const float *grad, size_t n,
		     float lr, float beta1, float beta2, float eps, float weight_decay,
		     float grad_scale, int t);
sc_err sc_cuda_sumsq(sc_backend *be, double *out_host, const float *x, size_t n);

/* attention_cuda.cu: the state is lse (B,NH,T), the scratch dsum (B,NH,T).
 * sc_cuda_attn_check refuses, naming op, a shape that is malformed
 * (SC_EINVAL) or has a head size past SC_CUDA_ATTN_MAX_HS (SC_ENOTSUP). */
sc_err sc_cuda_attn_check(const char *op, const sc_attn_shape *s);
sc_err sc_cuda_attention_sizes(sc_backend *be, const sc_attn_shape *s, size_t *state,
			       size_t *scratch);
sc_err sc_cuda_attention_forward(sc_backend *be, float *out, float *lse, const float *qkv,
				 const sc_attn_shape *s);
sc_err sc_cuda_attention_backward(sc_backend *be, float *dqkv, float *dsum, const float *dout,
				  const float *qkv, const float *out, const float *lse,
				  const sc_attn_shape *s);

/* attention_kv_cuda.cu: uses the context's kv_partial when it splits keys */
sc_err sc_cuda_attention_kv(sc_backend *be, float *out, float *kc, float *vc, const float *qkv,
			    int pos0, int P, const sc_attn_shape *s);

#endif
