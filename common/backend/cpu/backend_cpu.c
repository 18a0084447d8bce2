/* backend_cpu.c — the CPU backend: host memory, OpenBLAS GEMMs, the simple
 * elementwise operations, AdamW and the operation table. Layer norm, GELU and
 * cross-entropy are in nn_cpu.c, attention in attention_cpu.c.
 *
 * Every operation is synchronous. OpenBLAS is the OpenMP build, so its GEMMs
 * and the OpenMP loops here share one thread pool; loops over independent
 * rows or chunks are split with OpenMP, and every cross-thread reduction is
 * combined in a fixed order. One-row GEMMs (decode) go to gemv_cpu.c.
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>

#include <cblas.h>

#include "bf16_dnnl.h"
#include "cpu_ops.h"
#include "gemv_cpu.h"

#define ALIGN        64
#define HUGE_PAGE    ((size_t)2 << 20)
#define HUGE_MIN     ((size_t)4 << 20)
#define CHUNK        8192  /* elements per parallel work item */
#define SUMSQ_CHUNKS 256   /* sumsq splits x into at most this many pieces */
#define SUMSQ_MIN    16384 /* ... of at least this many elements */

typedef struct cpu_backend {
	sc_backend be;
	int threads; /* 0: OpenMP's and OpenBLAS's defaults */
	/* bf16 frozen weights: oneDNN where usable (bf16_dnnl.h), else NULL
	 * and fp32 tiles; tiles (from path: SC_CPU_BF16 at open, or
	 * sc_backend_cpu_bf16_path) takes the latter even where it is not. */
	sc_cpu_dnnl *dnnl;
	sc_cpu_bf16_path path;
	int tiles;
} cpu_backend;

static const sc_backend_ops cpu_ops;

sc_cpu_dnnl *sc_cpu_dnnl_of(sc_backend *be)
{
	cpu_backend *cb = be->ctx;
	return cb->tiles ? NULL : cb->dnnl;
}

void sc_cpu_enter(sc_backend *be)
{
	int threads = ((cpu_backend *)be->ctx)->threads;
	if (threads > 0 && omp_get_max_threads() != threads)
		omp_set_num_threads(threads);
}

/* ---- memory ---- */

/* Buffers of HUGE_MIN bytes or more (weights, caches, activations) are
 * aligned to 2 MiB and asked for transparent huge pages, for the kernels
 * where THP is "madvise" only: a decode step streams every weight once, and
 * with 4 KiB pages every page of a model of hundreds of MB misses the TLB
 * (a one-thread streaming read measured 18 GB/s on 4 KiB pages, 27 GB/s on
 * 2 MiB ones, on the benchmark machine). Advice only: without THP they stay
 * plain pages. */
static sc_err cpu_alloc(sc_backend *be, void **out, size_t bytes)
{
	*out = NULL;
	void *p = NULL;
	int huge = bytes >= HUGE_MIN;
	if (posix_memalign(&p, huge ? HUGE_PAGE : ALIGN, bytes ? bytes : 1) != 0)
		return sc_errf(SC_ENOMEM, "cpu: cannot allocate %zu bytes", bytes);
	if (huge)
		(void)madvise(p, bytes / HUGE_PAGE * HUGE_PAGE, MADV_HUGEPAGE);
	memset(p, 0, bytes);
	*out = p;
	return SC_OK;
}

static void cpu_free_buf(sc_backend *be, void *p)
{
	free(p);
}

/* Host and device memory are one: aligned, as device buffers are. */
static sc_err cpu_host_alloc(sc_backend *be, void **out, size_t bytes)
{
	*out = NULL;
	if (posix_memalign(out, ALIGN, bytes ? bytes : 1) != 0) {
		*out = NULL;
		return sc_errf(SC_ENOMEM, "cpu: cannot allocate %zu bytes of host memory", bytes);
	}
	return SC_OK;
}

static uint64_t cpu_memory_bytes(sc_backend *be)
{
	struct sysinfo si;
	if (sysinfo(&si))
		return 0;
	return (uint64_t)si.totalram * si.mem_unit;
}

static sc_err cpu_set_tf32(sc_backend *be, int on)
{
	return SC_OK; /* no tensor cores: every GEMM is fp32 */
}

static const char *cpu_failure(sc_backend *be)
{
	return NULL; /* a CPU fault ends the process by itself */
}

static sc_err cpu_copy(sc_backend *be, void *dst, const void *src, size_t bytes)
{
	if (bytes && (!dst || !src))
		return sc_errf(SC_EINVAL, "cpu: copy of %zu bytes with a NULL buffer", bytes);
	if (bytes)
		memmove(dst, src, bytes);
	return SC_OK;
}

static sc_err cpu_zero(sc_backend *be, void *dst, size_t bytes)
{
	if (bytes && !dst)
		return sc_errf(SC_EINVAL, "cpu: zero of %zu bytes with a NULL buffer", bytes);
	if (bytes)
		memset(dst, 0, bytes);
	return SC_OK;
}

static sc_err cpu_sync(sc_backend *be)
{
	return SC_OK;
}

/* ---- dense algebra ---- */

static sc_err cpu_gemm(sc_backend *be, int trans_a, int trans_b, int m, int n, int k, float alpha,
		       const float *a, int lda, const float *b, int ldb, float beta, float *c,
		       int ldc)
{
	/* The checks OpenBLAS would make, as an error value instead of a
	 * message on stderr. */
	int a_cols = trans_a ? m : k, b_cols = trans_b ? k : n;
	if (m < 0 || n < 0 || k < 0 || lda < (a_cols > 1 ? a_cols : 1) ||
	    ldb < (b_cols > 1 ? b_cols : 1) || ldc < (n > 1 ? n : 1))
		return sc_errf(SC_EINVAL, "gemm: bad shape m=%d n=%d k=%d lda=%d ldb=%d ldc=%d", m,
			       n, k, lda, ldb, ldc);
	if (m == 0 || n == 0)
		return SC_OK;
	sc_cpu_enter(be);
	if (m == 1 && k > 0) {
		/* One row (a decode step, the head of one position): a matrix-
		 * vector product that reads each weight once (gemv_cpu.c).
		 * OpenBLAS 0.3.21's sgemm would first copy all of b into its
		 * packing buffer; its sgemv reads nn.Linear rows several at a
		 * time, which streams at half the speed here. a^T's one column
		 * is gathered first. */
		const float *x = a;
		float *xbuf = NULL;
		if (trans_a && lda != 1) {
			xbuf = malloc((size_t)k * sizeof(float));
			if (!xbuf)
				return sc_errf(SC_ENOMEM, "gemm: out of memory for a row of %d", k);
			for (int i = 0; i < k; i++)
				xbuf[i] = a[(size_t)i * lda];
			x = xbuf;
		}
		/* b (n, k): y = b x; b (k, n): y = b^T x */
		sc_err rc = sc_cpu_gemv(trans_b, n, k, alpha, b, ldb, x, beta, c);
		free(xbuf);
		return rc;
	}
	cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
		    trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c,
		    ldc);
	return SC_OK;
}

/* ---- elementwise ---- */

static sc_err cpu_encoder_forward(sc_backend *be, float *out, const int32_t *tokens,
				  const float *wte, const float *wpe, int B, int T, int C)
{
	if (B < 0 || T < 0 || C <= 0)
		return sc_errf(SC_EINVAL, "encoder: bad shape B=%d T=%d C=%d", B, T, C);
	int N = B * T;
	for (int i = 0; i < N; i++)
		if (tokens[i] < 0)
			return sc_errf(SC_ERANGE, "encoder: negative token %d at %d",
				       (int)tokens[i], i);
	sc_cpu_enter(be);
#pragma omp parallel for schedule(static) if ((size_t)N * C >= SC_CPU_PAR_MIN)
	for (int i = 0; i < N; i++) {
		float *o = out + (size_t)i * C;
		const float *e = wte + (size_t)tokens[i] * C;
		if (!wpe) {
			memcpy(o, e, (size_t)C * sizeof(float));
			continue;
		}
		const float *p = wpe + (size_t)(i % T) * C;
#pragma omp simd
		for (int j = 0; j < C; j++)
			o[j] = e[j] + p[j];
	}
	return SC_OK;
}

static void add_range(float *out, const float *a, const float *b, size_t n)
{
#pragma omp simd
	for (size_t i = 0; i < n; i++)
		out[i] = a[i] + b[i];
}

static sc_err cpu_add(sc_backend *be, float *out, const float *a, const float *b, size_t n)
{
	sc_cpu_enter(be);
	long chunks = (long)((n + CHUNK - 1) / CHUNK);
#pragma omp parallel for schedule(static) if (n >= SC_CPU_PAR_MIN)
	for (long c = 0; c < chunks; c++) {
		size_t i = (size_t)c * CHUNK;
		add_range(out + i, a + i, b + i, n - i < CHUNK ? n - i : CHUNK);
	}
	return SC_OK;
}

static sc_err cpu_add_bias(sc_backend *be, float *out, const float *bias, int N, int OC, int ldo)
{
	if (N < 0 || OC < 0 || ldo < OC)
		return sc_errf(SC_EINVAL, "add_bias: bad shape N=%d OC=%d ldo=%d", N, OC, ldo);
	sc_cpu_enter(be);
#pragma omp parallel for schedule(static) if ((size_t)N * OC >= SC_CPU_PAR_MIN)
	for (int i = 0; i < N; i++) {
		float *o = out + (size_t)i * ldo;
#pragma omp simd
		for (int j = 0; j < OC; j++)
			o[j] += bias[j];
	}
	return SC_OK;
}

/* ---- optimizer ---- */

/* torch.optim.AdamW, the single-tensor path (foreach=False, fused=False,
 * amsgrad=False, maximize=False) on float32 tensors, operation by operation:
 *   grad = grad * grad_scale                    (as a clip_grad_norm_ would)
 *   param.mul_(1 - lr * weight_decay)           scalar in double, op in float
 *   exp_avg.lerp_(grad, 1 - beta1)              m + w (g - m) for w < 0.5,
 *                                               else g - (g - m)(1 - w); the
 *                                               CPU kernel's vector body fuses
 *                                               it into one FMA, as here
 *   exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
 *                                               v * b2, then + ((1 - b2) g) g
 *   bias_correction1 = 1 - beta1 ** step; bias_correction2 = 1 - beta2 ** step
 *   step_size = lr / bias_correction1           (all three in double)
 *   denom = (exp_avg_sq.sqrt() / sqrt(bias_correction2)).add_(eps)
 *   param.addcdiv_(exp_avg, denom, value=-step_size)   p + ((-step_size) m) / denom
 * Python-scalar operands enter the float kernels rounded to float
 * (sc_adamw_scalars_at). Where a
 * torch build contracts other steps into FMAs, a result may still differ
 * from torch's in the last bit. */
static sc_err cpu_adamw(sc_backend *be, float *param, float *m, float *v, const float *grad,
			size_t n, float lr, float beta1, float beta2, float eps, float weight_decay,
			float grad_scale, int t)
{
	sc_adamw_scalars k;
	SC_TRY(sc_adamw_scalars_at(&k, lr, beta1, beta2, eps, weight_decay, t));
	sc_cpu_enter(be);
#pragma omp parallel for schedule(static) if (n >= SC_CPU_PAR_MIN)
	for (size_t i = 0; i < n; i++) {
		float g = grad[i] * grad_scale;
		float p = param[i] * k.decay;
		float mi = m[i];
		mi = k.small ? fmaf(k.w1, g - mi, mi) : fmaf(k.w1 - 1.0f, g - mi, g);
		float vi = v[i] * k.beta2;
		vi = vi + (k.w2 * g) * g;
		float denom = sqrtf(vi) / k.bc2_sqrt + k.eps;
		param[i] = p + (k.step * mi) / denom;
		m[i] = mi;
		v[i] = vi;
	}
	return SC_OK;
}

static sc_err cpu_sumsq(sc_backend *be, double *out_host, const float *x, size_t n)
{
	/* Fixed pieces, a function of n alone, summed in order. */
	size_t piece = (n + SUMSQ_CHUNKS - 1) / SUMSQ_CHUNKS;
	if (piece < SUMSQ_MIN)
		piece = SUMSQ_MIN;
	long pieces = (long)((n + piece - 1) / piece);
	double part[SUMSQ_CHUNKS];
	sc_cpu_enter(be);
#pragma omp parallel for schedule(static) if (pieces > 1)
	for (long c = 0; c < pieces; c++) {
		size_t lo = (size_t)c * piece, hi = lo + piece < n ? lo + piece : n;
		double s = 0.0;
#pragma omp simd reduction(+ : s)
		for (size_t i = lo; i < hi; i++)
			s += (double)x[i] * x[i];
		part[c] = s;
	}
	double total = 0.0;
	for (long c = 0; c < pieces; c++)
		total += part[c];
	*out_host = total;
	return SC_OK;
}

/* ---- lifetime ---- */

static void cpu_destroy(sc_backend *be)
{
	sc_cpu_dnnl_free(((cpu_backend *)be->ctx)->dnnl);
	free(be->ctx);
}

static const sc_backend_ops cpu_ops = {
	.alloc = cpu_alloc,
	.free_buf = cpu_free_buf,
	.host_alloc = cpu_host_alloc,
	.host_free = cpu_free_buf,
	.upload = cpu_copy,
	.download = cpu_copy,
	.upload_async = cpu_copy,
	.copy = cpu_copy,
	.zero = cpu_zero,
	.sync = cpu_sync,
	.gemm = cpu_gemm,
	.gemm_q = sc_cpu_gemm_q,
	.encoder_forward = cpu_encoder_forward,
	.encoder_forward_q = sc_cpu_encoder_forward_q,
	.layernorm_forward = sc_cpu_layernorm_forward,
	.layernorm_backward = sc_cpu_layernorm_backward,
	.rmsnorm_forward = sc_cpu_rmsnorm_forward,
	.rmsnorm_backward = sc_cpu_rmsnorm_backward,
	.rope = sc_cpu_rope,
	.attention_sizes = sc_cpu_attention_sizes,
	.attention_forward = sc_cpu_attention_forward,
	.attention_backward = sc_cpu_attention_backward,
	.attention_kv = sc_cpu_attention_kv,
	.gelu_forward = sc_cpu_gelu_forward,
	.gelu_backward = sc_cpu_gelu_backward,
	.swiglu_forward = sc_cpu_swiglu_forward,
	.swiglu_backward = sc_cpu_swiglu_backward,
	.add = cpu_add,
	.add_bias = cpu_add_bias,
	.crossentropy = sc_cpu_crossentropy,
	.adamw = cpu_adamw,
	.sumsq = cpu_sumsq,
	.set_tf32 = cpu_set_tf32,
	.memory_bytes = cpu_memory_bytes,
	.failure = cpu_failure,
	.destroy = cpu_destroy,
};

static int bf16_path_parse(const char *s, sc_cpu_bf16_path *out)
{
	static const char *const names[] = { "auto", "matmul", "tiles" };
	for (int i = 0; i < 3; i++)
		if (!strcmp(s, names[i])) {
			*out = (sc_cpu_bf16_path)i;
			return 0;
		}
	return -1;
}

static int cpu_is_amd(void)
{
#if defined(__x86_64__) || defined(__i386__)
	return __builtin_cpu_is("amd");
#else
	return 0;
#endif
}

int sc_backend_cpu_bf16_matmul_pays(int has_bf16, int has_amx, int amd)
{
	return has_bf16 && (has_amx || amd);
}

sc_err sc_backend_cpu_open(sc_backend **out, int threads)
{
	*out = NULL;
	if (threads < 0)
		return sc_errf(SC_EINVAL, "cpu: bad thread count %d", threads);
	cpu_backend *cb = calloc(1, sizeof(*cb));
	if (!cb)
		return sc_errf(SC_ENOMEM, "cpu: cannot allocate the backend");
	cb->threads = threads;
	/* Without bf16 instructions (or oneDNN) this fails, and bf16 weights
	 * take the fp32 tiles: not an error. */
	if (sc_cpu_dnnl_usable() && sc_cpu_dnnl_new(&cb->dnnl)) {
		free(cb);
		return sc_errf(SC_ENOMEM, "cpu: cannot allocate the backend");
	}
	cb->be.ops = &cpu_ops;
	cb->be.name = "cpu";
	cb->be.ctx = cb;
	const char *env = getenv("SC_CPU_BF16");
	sc_cpu_bf16_path path = SC_CPU_BF16_AUTO;
	if (env && *env && bf16_path_parse(env, &path)) {
		sc_cpu_dnnl_free(cb->dnnl);
		free(cb);
		return sc_errf(SC_EINVAL, "cpu: SC_CPU_BF16=%s: expected auto, matmul or tiles",
			       env);
	}
	sc_backend_cpu_bf16_path(&cb->be, path);
	if (threads > 0) {
		openblas_set_num_threads(threads);
		omp_set_num_threads(threads);
	}
	*out = &cb->be;
	return SC_OK;
}

const char *sc_backend_cpu_describe(void)
{
	static _Thread_local char buf[256];
	snprintf(buf, sizeof(buf), "%s, core %s, %d threads, one-row products %s",
		 openblas_get_config(), openblas_get_corename(), omp_get_max_threads(),
		 sc_cpu_gemv_name(sc_cpu_gemv_kind_now()));
	return buf;
}

const char *sc_backend_cpu_bf16_kernel(sc_backend *be)
{
	static _Thread_local char buf[256];
	if (!be || be->ops != &cpu_ops)
		return "not a CPU backend";
	cpu_backend *cb = be->ctx;
	if (!cb->tiles)
		snprintf(buf, sizeof(buf), "bf16 matmul (%s)", sc_cpu_dnnl_describe());
	else if (!cb->dnnl)
		snprintf(buf, sizeof(buf), "fp32 tiles (%s)", sc_cpu_dnnl_describe());
	else if (cb->path == SC_CPU_BF16_TILES)
		snprintf(buf, sizeof(buf),
			 "fp32 tiles (%s; forced: SC_CPU_BF16=tiles or sc_backend_cpu_bf16_path)",
			 sc_cpu_dnnl_describe());
	else
		snprintf(buf, sizeof(buf),
			 "fp32 tiles (%s on a CPU without AMX that is not AMD's: its bf16 matmul "
			 "runs slower than fp32 there; SC_CPU_BF16=matmul takes it)",
			 sc_cpu_dnnl_describe());
	return buf;
}

int sc_backend_cpu_bf16_on_matmul(sc_backend *be)
{
	return be && be->ops == &cpu_ops && !((cpu_backend *)be->ctx)->tiles;
}

sc_err sc_backend_cpu_bf16_path(sc_backend *be, sc_cpu_bf16_path path)
{
	if (!be || be->ops != &cpu_ops)
		return sc_errf(SC_EINVAL, "sc_backend_cpu_bf16_path: %s is not a CPU backend",
			       be ? be->name : "(null)");
	if (path != SC_CPU_BF16_AUTO && path != SC_CPU_BF16_MATMUL && path != SC_CPU_BF16_TILES)
		return sc_errf(SC_EINVAL, "sc_backend_cpu_bf16_path: no path %d", (int)path);
	cpu_backend *cb = be->ctx;
	cb->path = path;
	cb->tiles = !cb->dnnl || path == SC_CPU_BF16_TILES ||
		    (path == SC_CPU_BF16_AUTO &&
		     !sc_backend_cpu_bf16_matmul_pays(1, sc_cpu_dnnl_has_amx(), cpu_is_amd()));
	return SC_OK;
}
