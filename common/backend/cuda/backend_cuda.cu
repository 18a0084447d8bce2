/* backend_cuda.cu — the CUDA backend's lifetime, memory and GEMM, and its
 * ops table. Owns the stream, the cuBLAS handle and the scratch buffers of a
 * backend context (sc_cuda_ctx). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <atomic>

#include "cuda_impl.h"

/* The first sticky error of this process: 0 none, 1 being written, 2 set.
 * Per process, as the CUDA context a sticky error destroys is. */
static std::atomic<int> sticky_state{ 0 };
static char sticky_why[320];

/* Errors after which the CUDA context is unusable (the runtime returns them
 * from every later call). */
static int is_sticky(cudaError_t e)
{
	switch (e) {
	case cudaErrorECCUncorrectable:
	case cudaErrorIllegalAddress:
	case cudaErrorLaunchTimeout:
	case cudaErrorAssert:
	case cudaErrorHardwareStackError:
	case cudaErrorIllegalInstruction:
	case cudaErrorMisalignedAddress:
	case cudaErrorInvalidAddressSpace:
	case cudaErrorInvalidPc:
	case cudaErrorLaunchFailure: return 1;
	default: return 0;
	}
}

static sc_err fail_with(sc_err code, const char *file, int line, const char *what,
			const char *reason)
{
	const char *base = strrchr(file, '/');
	return sc_errf(code, "%s:%d: %s: %s", base ? base + 1 : file, line, what, reason);
}

sc_err sc_cuda_fail(cudaError_t e, const char *file, int line, const char *what)
{
	const char *base = strrchr(file, '/');
	int none = 0;
	if (is_sticky(e) && sticky_state.compare_exchange_strong(none, 1)) {
		snprintf(sticky_why, sizeof(sticky_why), "%s:%d: %s: %s", base ? base + 1 : file,
			 line, what, cudaGetErrorString(e));
		sticky_state.store(2);
	}
	return fail_with(e == cudaErrorMemoryAllocation ? SC_ENOMEM : SC_EBACKEND, file, line, what,
			 cudaGetErrorString(e));
}

sc_err sc_cublas_fail(cublasStatus_t s, const char *file, int line, const char *what)
{
	return fail_with(s == CUBLAS_STATUS_ALLOC_FAILED ? SC_ENOMEM : SC_EBACKEND, file, line,
			 what, cublasGetStatusString(s));
}

static sc_err cuda_set_tf32(sc_backend *be, int on)
{
	SC_CUDA_ENTER(be, c);
	SC_CUBLAS_CHECK(
	    cublasSetMathMode(c->blas, on ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
	return SC_OK;
}

static uint64_t cuda_memory_bytes(sc_backend *be)
{
	sc_cuda_ctx *c = (sc_cuda_ctx *)be->ctx;
	size_t free_b = 0, total_b = 0;
	if (cudaSetDevice(c->device) != cudaSuccess ||
	    cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
		(void)cudaGetLastError();
		return 0;
	}
	return total_b;
}

static const char *cuda_failure(sc_backend *be)
{
	return sticky_state.load() == 2 ? sticky_why : NULL;
}

/* ---- memory ---- */

static sc_err cuda_alloc(sc_backend *be, void **out, size_t bytes)
{
	*out = NULL;
	SC_CUDA_ENTER(be, c);
	void *p = NULL;
	cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
	if (e == cudaErrorMemoryAllocation) {
		size_t free_b = 0, total_b = 0;
		(void)cudaGetLastError(); /* not sticky: clear it for the next call */
		(void)cudaMemGetInfo(&free_b, &total_b);
		return sc_errf(SC_ENOMEM,
			       "%s: cudaMalloc of %zu bytes failed (%zu of %zu MiB free)", c->name,
			       bytes, free_b >> 20, total_b >> 20);
	}
	if (e != cudaSuccess)
		return sc_cuda_fail(e, __FILE__, __LINE__, "cudaMalloc");
	e = cudaMemsetAsync(p, 0, bytes, c->stream);
	if (e != cudaSuccess) {
		(void)cudaFree(p);
		return sc_cuda_fail(e, __FILE__, __LINE__, "cudaMemsetAsync");
	}
	*out = p;
	return SC_OK;
}

/* Waits for the stream first: queued kernels may still use p. Errors are
 * dropped here; a sticky one surfaces at the next checked call. */
static void cuda_free_buf(sc_backend *be, void *p)
{
	sc_cuda_ctx *c = (sc_cuda_ctx *)be->ctx;
	if (!p)
		return;
	(void)cudaSetDevice(c->device);
	(void)cudaStreamSynchronize(c->stream);
	(void)cudaFree(p);
}

/* Page-locked host memory: the copies from and to it need no staging. */
static sc_err cuda_host_alloc(sc_backend *be, void **out, size_t bytes)
{
	*out = NULL;
	SC_CUDA_ENTER(be, c);
	cudaError_t e = cudaMallocHost(out, bytes ? bytes : 1);
	if (e != cudaSuccess) {
		*out = NULL;
		(void)cudaGetLastError();
		return sc_errf(SC_ENOMEM, "%s: cannot pin %zu bytes of host memory: %s", c->name,
			       bytes, cudaGetErrorString(e));
	}
	return SC_OK;
}

static void cuda_host_free(sc_backend *be, void *p)
{
	sc_cuda_ctx *c = (sc_cuda_ctx *)be->ctx;
	if (!p)
		return;
	(void)cudaSetDevice(c->device);
	(void)cudaStreamSynchronize(c->stream); /* a queued copy may still read it */
	(void)cudaFreeHost(p);
}

/* Synchronous: the caller may reuse src_host as soon as this returns, even
 * when it is pinned memory. */
static sc_err cuda_upload(sc_backend *be, void *dst_dev, const void *src_host, size_t bytes)
{
	if (!bytes)
		return SC_OK;
	SC_CUDA_ENTER(be, c);
	SC_CUDA_CHECK(cudaMemcpyAsync(dst_dev, src_host, bytes, cudaMemcpyHostToDevice, c->stream));
	SC_CUDA_CHECK(cudaStreamSynchronize(c->stream));
	return SC_OK;
}

static sc_err cuda_upload_async(sc_backend *be, void *dst_dev, const void *src_host, size_t bytes)
{
	if (!bytes)
		return SC_OK;
	SC_CUDA_ENTER(be, c);
	SC_CUDA_CHECK(cudaMemcpyAsync(dst_dev, src_host, bytes, cudaMemcpyHostToDevice, c->stream));
	return SC_OK;
}

static sc_err cuda_download(sc_backend *be, void *dst_host, const void *src_dev, size_t bytes)
{
	SC_CUDA_ENTER(be, c);
	if (bytes)
		SC_CUDA_CHECK(
		    cudaMemcpyAsync(dst_host, src_dev, bytes, cudaMemcpyDeviceToHost, c->stream));
	SC_CUDA_CHECK(cudaStreamSynchronize(c->stream));
	return SC_OK;
}

static sc_err cuda_copy(sc_backend *be, void *dst_dev, const void *src_dev, size_t bytes)
{
	if (!bytes)
		return SC_OK;
	SC_CUDA_ENTER(be, c);
	SC_CUDA_CHECK(
	    cudaMemcpyAsync(dst_dev, src_dev, bytes, cudaMemcpyDeviceToDevice, c->stream));
	return SC_OK;
}

static sc_err cuda_zero(sc_backend *be, void *dst_dev, size_t bytes)
{
	if (!bytes)
		return SC_OK;
	SC_CUDA_ENTER(be, c);
	SC_CUDA_CHECK(cudaMemsetAsync(dst_dev, 0, bytes, c->stream));
	return SC_OK;
}

static sc_err cuda_sync(sc_backend *be)
{
	SC_CUDA_ENTER(be, c);
	SC_CUDA_CHECK(cudaStreamSynchronize(c->stream));
	SC_CUDA_CHECK(cudaGetLastError());
	return SC_OK;
}

/* ---- GEMM ---- */

/* Row-major c = op(a) @ op(b) is column-major c^T = op(b)^T @ op(a)^T, and a
 * row-major matrix is its transpose in column-major: so cuBLAS gets the
 * operands swapped, each with its own transpose flag, and n, m exchanged. */
sc_err sc_cuda_gemm_batched(sc_cuda_ctx *c, int trans_a, int trans_b, int m, int n, int k,
			    float alpha, const float *a, int lda, long long stride_a,
			    const float *b, int ldb, long long stride_b, float beta, float *out,
			    int ldc, long long stride_c, int batch)
{
	cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
	cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
	if (batch == 1)
		SC_CUBLAS_CHECK(cublasSgemm(c->blas, op_b, op_a, n, m, k, &alpha, b, ldb, a, lda,
					    &beta, out, ldc));
	else
		SC_CUBLAS_CHECK(cublasSgemmStridedBatched(c->blas, op_b, op_a, n, m, k, &alpha, b,
							  ldb, stride_b, a, lda, stride_a, &beta,
							  out, ldc, stride_c, batch));
	return SC_OK;
}

static sc_err cuda_gemm(sc_backend *be, int trans_a, int trans_b, int m, int n, int k, float alpha,
			const float *a, int lda, const float *b, int ldb, float beta, float *c_,
			int ldc)
{
	int a_cols = trans_a ? m : k, b_cols = trans_b ? k : n;
	if (m < 0 || n < 0 || k < 0)
		return sc_errf(SC_EINVAL, "gemm: negative size m=%d n=%d k=%d", m, n, k);
	if (lda < (a_cols > 1 ? a_cols : 1) || ldb < (b_cols > 1 ? b_cols : 1) ||
	    ldc < (n > 1 ? n : 1))
		return sc_errf(SC_EINVAL,
			       "gemm: row stride too small (lda=%d ldb=%d ldc=%d for "
			       "m=%d n=%d k=%d)",
			       lda, ldb, ldc, m, n, k);
	if (m == 0 || n == 0)
		return SC_OK;
	SC_CUDA_ENTER(be, c);
	return sc_cuda_gemm_batched(c, trans_a, trans_b, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta,
				    c_, ldc, 0, 1);
}

/* ---- lifetime ---- */

static void cuda_destroy(sc_backend *be)
{
	sc_cuda_ctx *c;
	if (!be)
		return;
	c = (sc_cuda_ctx *)be->ctx;
	if (c) {
		(void)cudaSetDevice(c->device);
		if (c->stream)
			(void)cudaStreamSynchronize(c->stream);
		if (c->sumsq_partial)
			(void)cudaFree(c->sumsq_partial);
		if (c->kv_partial)
			(void)cudaFree(c->kv_partial);
		if (c->blas)
			(void)cublasDestroy(c->blas);
		if (c->stream)
			(void)cudaStreamDestroy(c->stream);
		free(c);
	}
	free(be);
}

static const sc_backend_ops cuda_ops = {
	.alloc = cuda_alloc,
	.free_buf = cuda_free_buf,
	.host_alloc = cuda_host_alloc,
	.host_free = cuda_host_free,
	.upload = cuda_upload,
	.download = cuda_download,
	.upload_async = cuda_upload_async,
	.copy = cuda_copy,
	.zero = cuda_zero,
	.sync = cuda_sync,
	.gemm = cuda_gemm,
	.gemm_q = sc_cuda_gemm_q,
	.encoder_forward = sc_cuda_encoder_forward,
	.encoder_forward_q = sc_cuda_encoder_forward_q,
	.layernorm_forward = sc_cuda_layernorm_forward,
	.layernorm_backward = sc_cuda_layernorm_backward,
	.rmsnorm_forward = sc_cuda_rmsnorm_forward,
	.rmsnorm_backward = sc_cuda_rmsnorm_backward,
	.rope = sc_cuda_rope,
	.attention_sizes = sc_cuda_attention_sizes,
	.attention_forward = sc_cuda_attention_forward,
	.attention_backward = sc_cuda_attention_backward,
	.gelu_forward = sc_cuda_gelu_forward,
	.gelu_backward = sc_cuda_gelu_backward,
	.attention_kv = sc_cuda_attention_kv,
	.swiglu_forward = sc_cuda_swiglu_forward,
	.swiglu_backward = sc_cuda_swiglu_backward,
	.add = sc_cuda_add,
	.add_bias = sc_cuda_add_bias,
	.crossentropy = sc_cuda_crossentropy,
	.adamw = sc_cuda_adamw,
	.sumsq = sc_cuda_sumsq,
	.set_tf32 = cuda_set_tf32,
	.memory_bytes = cuda_memory_bytes,
	.failure = cuda_failure,
	.destroy = cuda_destroy,
};

/* The stream, the cuBLAS handle bound to it, and fixed scratch. On failure
 * the caller releases whatever was made (cuda_destroy). */
static sc_err cuda_init(sc_cuda_ctx *c)
{
	SC_CUDA_CHECK(cudaSetDevice(c->device));
	SC_CUDA_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
	SC_CUBLAS_CHECK(cublasCreate(&c->blas));
	SC_CUBLAS_CHECK(cublasSetStream(c->blas, c->stream));
	SC_CUBLAS_CHECK(cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH)); /* fp32 until set_tf32 */
	SC_CUDA_CHECK(
	    cudaMalloc((void **)&c->sumsq_partial, (SC_CUDA_SUMSQ_BLOCKS + 1) * sizeof(double)));
	SC_CUDA_CHECK(
	    cudaMalloc((void **)&c->kv_partial,
		       (size_t)SC_CUDA_KV_PARTS * (SC_CUDA_ATTN_MAX_HS + 2) * sizeof(float)));
	return SC_OK;
}

extern "C" sc_err sc_backend_cuda_open(sc_backend **out, int device)
{
	sc_backend *be = NULL;
	sc_cuda_ctx *c = NULL;
	int count = 0;
	sc_err rc;
	cudaError_t e;

	*out = NULL;
	e = cudaGetDeviceCount(&count);
	if (e != cudaSuccess) {
		(void)cudaGetLastError();
		return sc_errf(SC_ENODEV, "cuda:%d: no usable CUDA device (%s)", device,
			       cudaGetErrorString(e));
	}
	if (count <= 0)
		return sc_errf(SC_ENODEV, "cuda:%d: no CUDA device visible", device);
	if (device < 0 || device >= count)
		return sc_errf(SC_ENODEV, "cuda:%d: no such device (%d visible: cuda:0..cuda:%d)",
			       device, count, count - 1);

	be = (sc_backend *)calloc(1, sizeof(*be));
	c = (sc_cuda_ctx *)calloc(1, sizeof(*c));
	if (!be || !c) {
		free(be);
		free(c);
		return sc_errf(SC_ENOMEM, "cuda:%d: out of host memory", device);
	}
	c->device = device;
	snprintf(c->name, sizeof(c->name), "cuda:%d", device);
	be->ops = &cuda_ops;
	be->name = c->name;
	be->ctx = c;
	rc = cuda_init(c);
	if (rc != SC_OK) {
		sc_err_wrap(rc, "opening %s", c->name);
		cuda_destroy(be);
		return rc;
	}
	*out = be;
	return SC_OK;
}

extern "C" int sc_backend_has_cuda(void)
{
	return 1;
}
