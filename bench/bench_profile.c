/* bench_profile.c — see bench_profile.h. Each wrapper forwards to the inner
 * backend through TIMED, which adds the call's wall time to its operation's
 * total. */
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <omp.h>

#include "bench_common.h"
#include "bench_profile.h"

enum {
	K_ALLOC,
	K_HOST_ALLOC,
	K_UPLOAD,
	K_DOWNLOAD,
	K_UPLOAD_ASYNC,
	K_COPY,
	K_ZERO,
	K_SYNC,
	K_GEMM,
	K_GEMM_Q,
	K_ENCODER_FORWARD,
	K_ENCODER_FORWARD_Q,
	K_LAYERNORM_FORWARD,
	K_LAYERNORM_BACKWARD,
	K_RMSNORM_FORWARD,
	K_RMSNORM_BACKWARD,
	K_ROPE,
	K_ATTENTION_SIZES,
	K_ATTENTION_FORWARD,
	K_ATTENTION_BACKWARD,
	K_GELU_FORWARD,
	K_GELU_BACKWARD,
	K_ATTENTION_KV,
	K_SWIGLU_FORWARD,
	K_SWIGLU_BACKWARD,
	K_ADD,
	K_ADD_BIAS,
	K_CROSSENTROPY,
	K_ADAMW,
	K_SUMSQ,
	K_SET_TF32,
	K_COUNT
};
static const char *const op_names[K_COUNT] = {
	"alloc",
	"host_alloc",
	"upload",
	"download",
	"upload_async",
	"copy",
	"zero",
	"sync",
	"gemm",
	"gemm_q",
	"encoder_forward",
	"encoder_forward_q",
	"layernorm_forward",
	"layernorm_backward",
	"rmsnorm_forward",
	"rmsnorm_backward",
	"rope",
	"attention_sizes",
	"attention_forward",
	"attention_backward",
	"gelu_forward",
	"gelu_backward",
	"attention_kv",
	"swiglu_forward",
	"swiglu_backward",
	"add",
	"add_bias",
	"crossentropy",
	"adamw",
	"sumsq",
	"set_tf32",
};

#define MAX_SHAPES 256
#define THIN       16 /* a gemm with a dimension up to this is a rank-r adapter product */

typedef struct gemm_shape {
	int ta, tb, m, n, k;
	long calls;
	double secs;
} gemm_shape;

typedef struct prof {
	sc_backend *inner; /* owned */
	long calls[K_COUNT];
	double secs[K_COUNT];
	gemm_shape shapes[MAX_SHAPES];
	int nshapes;
	double serial_below; /* bench_profile_serial_below */
} prof;

#define INNER(be) (((prof *)(be)->ctx)->inner)
#define TIMED(key, op, ...)                                                                        \
	do {                                                                                       \
		prof *p_ = (prof *)be->ctx;                                                        \
		double t0_ = bench_now();                                                          \
		sc_err rc_ = p_->inner->ops->op(p_->inner, __VA_ARGS__);                           \
		p_->secs[key] += bench_now() - t0_;                                                \
		p_->calls[key]++;                                                                  \
		return rc_;                                                                        \
	} while (0)

static sc_err p_alloc(sc_backend *be, void **out, size_t bytes)
{
	TIMED(K_ALLOC, alloc, out, bytes);
}
static void p_free_buf(sc_backend *be, void *p)
{
	INNER(be)->ops->free_buf(INNER(be), p);
}
static sc_err p_host_alloc(sc_backend *be, void **out, size_t bytes)
{
	TIMED(K_HOST_ALLOC, host_alloc, out, bytes);
}
static void p_host_free(sc_backend *be, void *p)
{
	INNER(be)->ops->host_free(INNER(be), p);
}
static sc_err p_upload(sc_backend *be, void *dst, const void *src, size_t bytes)
{
	TIMED(K_UPLOAD, upload, dst, src, bytes);
}
static sc_err p_download(sc_backend *be, void *dst, const void *src, size_t bytes)
{
	TIMED(K_DOWNLOAD, download, dst, src, bytes);
}
static sc_err p_upload_async(sc_backend *be, void *dst, const void *src, size_t bytes)
{
	TIMED(K_UPLOAD_ASYNC, upload_async, dst, src, bytes);
}
static sc_err p_copy(sc_backend *be, void *dst, const void *src, size_t bytes)
{
	TIMED(K_COPY, copy, dst, src, bytes);
}
static sc_err p_zero(sc_backend *be, void *dst, size_t bytes)
{
	TIMED(K_ZERO, zero, dst, bytes);
}
static sc_err p_sync(sc_backend *be)
{
	prof *p = (prof *)be->ctx;
	double t0 = bench_now();
	sc_err rc = p->inner->ops->sync(p->inner);
	p->secs[K_SYNC] += bench_now() - t0;
	p->calls[K_SYNC]++;
	return rc;
}

static gemm_shape *shape_of(prof *p, int ta, int tb, int m, int n, int k)
{
	for (int i = 0; i < p->nshapes; i++) {
		gemm_shape *s = &p->shapes[i];
		if (s->ta == ta && s->tb == tb && s->m == m && s->n == n && s->k == k)
			return s;
	}
	if (p->nshapes == MAX_SHAPES)
		return NULL;
	p->shapes[p->nshapes] = (gemm_shape){ ta, tb, m, n, k, 0, 0 };
	return &p->shapes[p->nshapes++];
}

static sc_err p_gemm(sc_backend *be, int ta, int tb, int m, int n, int k, float alpha,
		     const float *a, int lda, const float *b, int ldb, float beta, float *c,
		     int ldc)
{
	prof *p = (prof *)be->ctx;
	gemm_shape *s = shape_of(p, !!ta, !!tb, m, n, k);
	double t0 = bench_now(), dt;
	sc_err rc = SC_OK;
	if (2.0 * m * n * k < p->serial_below && m > 0 && n > 0 && k > 0) {
		int threads = omp_get_max_threads();
		omp_set_num_threads(1);
		cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
			    tb ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c,
			    ldc);
		omp_set_num_threads(threads);
	} else {
		rc = p->inner->ops->gemm(p->inner, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c,
					 ldc);
	}
	dt = bench_now() - t0;
	p->secs[K_GEMM] += dt;
	p->calls[K_GEMM]++;
	if (s) {
		s->secs += dt;
		s->calls++;
	}
	return rc;
}

/* A frozen quantized (or bf16) weight's product: timed per operation, and
 * per shape among the gemm shapes, marked "q" in the report. */
static sc_err p_gemm_q(sc_backend *be, int ta, int tb, int m, int n, int k, float alpha,
		       const float *a, int lda, const sc_qweight *b, float beta, float *c, int ldc,
		       float *tile, size_t tile_floats)
{
	prof *p = (prof *)be->ctx;
	gemm_shape *s = shape_of(p, 2 + !!ta, !!tb, m, n, k);
	double t0 = bench_now(), dt;
	sc_err rc = p->inner->ops->gemm_q(p->inner, ta, tb, m, n, k, alpha, a, lda, b, beta, c, ldc,
					  tile, tile_floats);
	dt = bench_now() - t0;
	p->secs[K_GEMM_Q] += dt;
	p->calls[K_GEMM_Q]++;
	if (s) {
		s->secs += dt;
		s->calls++;
	}
	return rc;
}

static sc_err p_encoder_forward_q(sc_backend *be, float *out, const int32_t *tokens,
				  const sc_qweight *wte, const float *wpe, int B, int T, int C)
{
	TIMED(K_ENCODER_FORWARD_Q, encoder_forward_q, out, tokens, wte, wpe, B, T, C);
}

static sc_err p_encoder_forward(sc_backend *be, float *out, const int32_t *tokens, const float *wte,
				const float *wpe, int B, int T, int C)
{
	TIMED(K_ENCODER_FORWARD, encoder_forward, out, tokens, wte, wpe, B, T, C);
}
static sc_err p_layernorm_forward(sc_backend *be, float *out, float *mean, float *rstd,
				  const float *inp, const float *w, const float *b, int N, int C,
				  float eps)
{
	TIMED(K_LAYERNORM_FORWARD, layernorm_forward, out, mean, rstd, inp, w, b, N, C, eps);
}
static sc_err p_layernorm_backward(sc_backend *be, float *dinp, const float *dout, const float *inp,
				   const float *w, const float *mean, const float *rstd, int N,
				   int C)
{
	TIMED(K_LAYERNORM_BACKWARD, layernorm_backward, dinp, dout, inp, w, mean, rstd, N, C);
}
static sc_err p_rmsnorm_forward(sc_backend *be, float *out, float *rstd, const float *inp,
				const float *w, int N, int C, float eps)
{
	TIMED(K_RMSNORM_FORWARD, rmsnorm_forward, out, rstd, inp, w, N, C, eps);
}
static sc_err p_rmsnorm_backward(sc_backend *be, float *dinp, const float *dout, const float *inp,
				 const float *w, const float *rstd, int N, int C)
{
	TIMED(K_RMSNORM_BACKWARD, rmsnorm_backward, dinp, dout, inp, w, rstd, N, C);
}
static sc_err p_rope(sc_backend *be, float *qkv, const float *cos, const float *sin, int B, int T,
		     int NH, int NKV, int hs, int inverse)
{
	TIMED(K_ROPE, rope, qkv, cos, sin, B, T, NH, NKV, hs, inverse);
}
static sc_err p_attention_sizes(sc_backend *be, const sc_attn_shape *s, size_t *state,
				size_t *scratch)
{
	TIMED(K_ATTENTION_SIZES, attention_sizes, s, state, scratch);
}
static sc_err p_attention_forward(sc_backend *be, float *out, float *state, const float *qkv,
				  const sc_attn_shape *s)
{
	TIMED(K_ATTENTION_FORWARD, attention_forward, out, state, qkv, s);
}
static sc_err p_attention_backward(sc_backend *be, float *dqkv, float *scratch, const float *dout,
				   const float *qkv, const float *out, const float *state,
				   const sc_attn_shape *s)
{
	TIMED(K_ATTENTION_BACKWARD, attention_backward, dqkv, scratch, dout, qkv, out, state, s);
}
static sc_err p_gelu_forward(sc_backend *be, float *out, const float *inp, size_t n)
{
	TIMED(K_GELU_FORWARD, gelu_forward, out, inp, n);
}
static sc_err p_gelu_backward(sc_backend *be, float *dinp, const float *inp, const float *dout,
			      size_t n)
{
	TIMED(K_GELU_BACKWARD, gelu_backward, dinp, inp, dout, n);
}
static sc_err p_attention_kv(sc_backend *be, float *out, float *kc, float *vc, const float *qkv,
			     int pos0, int P, const sc_attn_shape *s)
{
	TIMED(K_ATTENTION_KV, attention_kv, out, kc, vc, qkv, pos0, P, s);
}
static sc_err p_swiglu_forward(sc_backend *be, float *out, const float *gu, int N, int F)
{
	TIMED(K_SWIGLU_FORWARD, swiglu_forward, out, gu, N, F);
}
static sc_err p_swiglu_backward(sc_backend *be, float *dgu, const float *dout, const float *gu,
				int N, int F)
{
	TIMED(K_SWIGLU_BACKWARD, swiglu_backward, dgu, dout, gu, N, F);
}
static sc_err p_add(sc_backend *be, float *out, const float *a, const float *b, size_t n)
{
	TIMED(K_ADD, add, out, a, b, n);
}
static sc_err p_add_bias(sc_backend *be, float *out, const float *bias, int N, int OC, int ldo)
{
	TIMED(K_ADD_BIAS, add_bias, out, bias, N, OC, ldo);
}
static sc_err p_crossentropy(sc_backend *be, float *losses, float *logits, const int32_t *targets,
			     int N, int V, float dscale)
{
	TIMED(K_CROSSENTROPY, crossentropy, losses, logits, targets, N, V, dscale);
}
static sc_err p_adamw(sc_backend *be, float *param, float *m, float *v, const float *grad, size_t n,
		      float lr, float beta1, float beta2, float eps, float weight_decay,
		      float grad_scale, int t)
{
	TIMED(K_ADAMW, adamw, param, m, v, grad, n, lr, beta1, beta2, eps, weight_decay, grad_scale,
	      t);
}
static sc_err p_sumsq(sc_backend *be, double *out_host, const float *x, size_t n)
{
	TIMED(K_SUMSQ, sumsq, out_host, x, n);
}
static sc_err p_set_tf32(sc_backend *be, int on)
{
	TIMED(K_SET_TF32, set_tf32, on);
}
static uint64_t p_memory_bytes(sc_backend *be)
{
	return INNER(be)->ops->memory_bytes(INNER(be));
}
static const char *p_failure(sc_backend *be)
{
	return INNER(be)->ops->failure(INNER(be));
}
static void p_destroy(sc_backend *be)
{
	sc_backend_free(INNER(be));
	free(be->ctx);
	free(be);
}

static const sc_backend_ops prof_ops = {
	.alloc = p_alloc,
	.free_buf = p_free_buf,
	.host_alloc = p_host_alloc,
	.host_free = p_host_free,
	.upload = p_upload,
	.download = p_download,
	.upload_async = p_upload_async,
	.copy = p_copy,
	.zero = p_zero,
	.sync = p_sync,
	.gemm = p_gemm,
	.gemm_q = p_gemm_q,
	.encoder_forward = p_encoder_forward,
	.encoder_forward_q = p_encoder_forward_q,
	.layernorm_forward = p_layernorm_forward,
	.layernorm_backward = p_layernorm_backward,
	.rmsnorm_forward = p_rmsnorm_forward,
	.rmsnorm_backward = p_rmsnorm_backward,
	.rope = p_rope,
	.attention_sizes = p_attention_sizes,
	.attention_forward = p_attention_forward,
	.attention_backward = p_attention_backward,
	.gelu_forward = p_gelu_forward,
	.gelu_backward = p_gelu_backward,
	.attention_kv = p_attention_kv,
	.swiglu_forward = p_swiglu_forward,
	.swiglu_backward = p_swiglu_backward,
	.add = p_add,
	.add_bias = p_add_bias,
	.crossentropy = p_crossentropy,
	.adamw = p_adamw,
	.sumsq = p_sumsq,
	.set_tf32 = p_set_tf32,
	.memory_bytes = p_memory_bytes,
	.failure = p_failure,
	.destroy = p_destroy,
};

/* Whether prof_ops has every entry: sc_backend_ops is a struct of function
 * pointers only, so it is read as an array of them. */
static int all_forwarded(void)
{
	void (*fns[sizeof(prof_ops) / sizeof(void (*)(void))])(void);
	memcpy(fns, &prof_ops, sizeof(fns));
	for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++)
		if (!fns[i])
			return 0;
	return 1;
}

sc_err bench_profile_wrap(sc_backend **out, sc_backend *inner)
{
	sc_backend *be = calloc(1, sizeof(*be));
	prof *p = calloc(1, sizeof(*p));

	*out = NULL;
	if (!all_forwarded()) {
		free(be);
		free(p);
		return sc_errf(SC_EINVAL, "bench_profile.c forwards not every backend operation: "
					  "a new entry of sc_backend_ops needs its wrapper there");
	}
	if (!be || !p) {
		free(be);
		free(p);
		return sc_errf(SC_ENOMEM, "out of memory for the profiling backend");
	}
	p->inner = inner;
	be->ops = &prof_ops;
	be->name = inner->name;
	be->ctx = p;
	*out = be;
	return SC_OK;
}

void bench_profile_serial_below(sc_backend *be, double flops)
{
	((prof *)be->ctx)->serial_below = flops;
}

void bench_profile_reset(sc_backend *be)
{
	prof *p = (prof *)be->ctx;
	memset(p->calls, 0, sizeof(p->calls));
	memset(p->secs, 0, sizeof(p->secs));
	p->nshapes = 0;
}

static int by_secs(const void *a, const void *b)
{
	double x = ((const gemm_shape *)a)->secs, y = ((const gemm_shape *)b)->secs;
	return (x < y) - (x > y);
}

void bench_profile_report(sc_backend *be, FILE *f, int steps, double step_s)
{
	prof *p = (prof *)be->ctx;
	double total = 0, gemm_flops = 0;

	for (int i = 0; i < K_COUNT; i++)
		total += p->secs[i];
	for (int i = 0; i < p->nshapes; i++)
		gemm_flops += 2.0 * p->shapes[i].m * p->shapes[i].n * p->shapes[i].k *
			      (double)p->shapes[i].calls;
	fprintf(f, "profile, per step (%.3f s):\n  %-20s %8s %9s %6s\n", step_s, "operation",
		"calls", "ms", "share");
	for (int i = 0; i < K_COUNT; i++)
		if (p->calls[i])
			fprintf(f, "  %-20s %8.0f %9.1f %5.1f%%\n", op_names[i],
				(double)p->calls[i] / steps, 1e3 * p->secs[i] / steps,
				100 * p->secs[i] / steps / step_s);
	fprintf(f, "  %-20s %8s %9.1f %5.1f%%\n", "outside the backend", "",
		1e3 * (step_s - total / steps), 100 * (1 - total / steps / step_s));
	fprintf(f, "  gemm and gemm_q: %.1f GFLOP per step at %.1f GFLOP/s\n",
		gemm_flops / steps / 1e9,
		p->secs[K_GEMM] + p->secs[K_GEMM_Q] > 0
		    ? gemm_flops / (p->secs[K_GEMM] + p->secs[K_GEMM_Q]) / 1e9
		    : 0.0);
	for (int thin = 1; thin >= 0; thin--) {
		double secs = 0, flops = 0;
		for (int i = 0; i < p->nshapes; i++) {
			const gemm_shape *s = &p->shapes[i];
			if ((s->m <= THIN || s->n <= THIN || s->k <= THIN) == thin) {
				secs += s->secs;
				flops += 2.0 * s->m * s->n * s->k * (double)s->calls;
			}
		}
		fprintf(f, "    %-34s %9.1f ms %5.1f%% %7.2f GFLOP %7.1f GFLOP/s\n",
			thin ? "thin (a dimension <= 16: LoRA)"
			     : "the others (frozen weights, head)",
			1e3 * secs / steps, 100 * secs / steps / step_s, flops / steps / 1e9,
			secs > 0 ? flops / secs / 1e9 : 0.0);
	}
	qsort(p->shapes, (size_t)p->nshapes, sizeof(p->shapes[0]), by_secs);
	fprintf(f, "  %-26s %8s %9s %6s %8s\n", "gemm op(a)(m,k) op(b)(k,n)", "calls", "ms",
		"share", "GFLOP/s");
	for (int i = 0; i < p->nshapes; i++) {
		const gemm_shape *s = &p->shapes[i];
		char name[64];
		if (100 * s->secs / steps / step_s < 0.5)
			continue;
		snprintf(name, sizeof(name), "%s%s%s m=%d n=%d k=%d", s->ta & 1 ? "T" : "N",
			 s->tb ? "T" : "N", s->ta & 2 ? "q" : "", s->m, s->n, s->k);
		fprintf(f, "  %-26s %8.0f %9.1f %5.1f%% %8.1f\n", name, (double)s->calls / steps,
			1e3 * s->secs / steps, 100 * s->secs / steps / step_s,
			2.0 * s->m * s->n * s->k * s->calls / s->secs / 1e9);
	}
}
