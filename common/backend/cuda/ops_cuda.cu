/* ops_cuda.cu — the element-wise, normalisation, rotary, loss and optimizer
 * operations of the CUDA backend (attention is in attention_cuda.cu). Each
 * mirrors the CPU backend's formula; semantics in sc_backend.h. A row's
 * reductions run in one warp or block in a fixed order, so every result is
 * a function of the inputs alone (no atomics). */
#include <math.h>

#include "cuda_impl.h"

enum { EW_THREADS = 256, ROW_THREADS = 256, CE_THREADS = 512 };

#define GELU_K0 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_K1 0.044715f

/* ---- encoder ---- */

/* out (B,T,C) = wte[tokens] (+ wpe[t] when wpe is not NULL); n = B*T*C,
 * one element per thread of a grid-stride loop. */
__global__ void encoder_forward_kernel(float *out, const int32_t *tokens, const float *wte,
				       const float *wpe, int T, int C, size_t n)
{
	for (size_t i = sc_thread_index(); i < n; i += sc_grid_stride()) {
		size_t bt = i / C;
		size_t c = i % C, t = bt % T;
		float x = wte[(size_t)tokens[bt] * C + c];
		out[i] = wpe ? x + wpe[t * C + c] : x;
	}
}

sc_err sc_cuda_encoder_forward(sc_backend *be, float *out, const int32_t *tokens, const float *wte,
			       const float *wpe, int B, int T, int C)
{
	size_t n = (size_t)B * T * C;
	if (B < 0 || T < 0 || C < 0)
		return sc_errf(SC_EINVAL, "encoder_forward: negative size B=%d T=%d C=%d", B, T, C);
	if (!n)
		return SC_OK;
	SC_CUDA_ENTER(be, c);
	SC_LAUNCH(encoder_forward_kernel, sc_cuda_grid(n, EW_THREADS), EW_THREADS, c->stream)
	(out, tokens, wte, wpe, T, C, n);
	SC_LAUNCH_CHECK(encoder_forward_kernel);
	return SC_OK;
}

/* ---- layernorm: one warp per row, statistics in double (as the CPU) ---- */

__global__ void layernorm_forward_kernel(float *out, float *mean, float *rstd, const float *inp,
					 const float *w, const float *b, int N, int C, float eps)
{
	int lane = threadIdx.x % 32;
	int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
	if (row >= N)
		return; /* uniform across the warp */
	const float *x = inp + (size_t)row * C;
	float *y = out + (size_t)row * C;

	double s = 0.0;
	for (int i = lane; i < C; i += 32)
		s += x[i];
	double m = sc_warp_sum(s) / C;
	double ss = 0.0;
	for (int i = lane; i < C; i += 32) {
		double d = x[i] - m;
		ss += d * d;
	}
	double rs = 1.0 / sqrt(sc_warp_sum(ss) / C + eps);
	for (int i = lane; i < C; i += 32)
		y[i] = __fadd_rn(__fmul_rn((float)((x[i] - m) * rs), w[i]), b[i]);
	if (lane == 0) {
		mean[row] = (float)m;
		rstd[row] = (float)rs;
	}
}

sc_err sc_cuda_layernorm_forward(sc_backend *be, float *out, float *mean, float *rstd,
				 const float *inp, const float *w, const float *b, int N, int C,
				 float eps)
{
	const int rows_per_block = ROW_THREADS / 32;
	if (N < 0 || C <= 0)
		return sc_errf(SC_EINVAL, "layernorm_forward: bad size N=%d C=%d", N, C);
	if (!N)
		return SC_OK;
	SC_CUDA_ENTER(be, c);
	SC_LAUNCH(layernorm_forward_kernel, (N + rows_per_block - 1) / rows_per_block, ROW_THREADS,
		  c->stream)
	(out, mean, rstd, inp, w, b, N, C, eps);
	SC_LAUNCH_CHECK(layernorm_forward_kernel);
	return SC_OK;
}

/* dinp += rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)), where
 * norm = (x - mean) * rstd and dnorm = w * dout; in double, as the CPU. */
__global__ void layernorm_backward_kernel(float *dinp, const float *dout, const float *inp,
					  const float *w, const float *mean, const float *rstd,
					  int N, int C)
{
	int lane = threadIdx.x % 32;
	int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
	if (row >= N)
		return;
	const float *x = inp + (size_t)row * C, *dy = dout + (size_t)row * C;
	float *dx = dinp + (size_t)row * C;
	double m = mean[row], rs = rstd[row];

	double sum_dn = 0.0, sum_dn_n = 0.0;
	for (int i = lane; i < C; i += 32) {
		double dn = (double)w[i] * dy[i];
		sum_dn += dn;
		sum_dn_n += dn * ((x[i] - m) * rs);
	}
	double mean_dn = sc_warp_sum(sum_dn) / C;
	double mean_dn_n = sc_warp_sum(sum_dn_n) / C;
	for (int i = lane; i < C; i += 32) {
		double dn = (double)w[i] * dy[i];
		double nrm = (x[i] - m) * rs;
		dx[i] += (float)((dn - mean_dn - nrm * mean_dn_n) * rs);
	}
}

sc_err sc_cuda_layernorm_backward(sc_backend *be, float *dinp, const float *dout, const float *inp,
				  const float *w, const float *mean, const float *rstd, int N,
				  int C)
{
	const int rows_per_block = ROW_THREADS / 32;
	if (N < 0 || C <= 0)
		return sc_errf(SC_EINVAL, "layernorm_backward: bad size N=%d C=%d", N, C);
	if (!N)
		return SC_OK;
	SC_CUDA_ENTER(be, c);
	SC_LAUNCH(layernorm_backward_kernel, (N + rows_per_block - 1) / rows_per_block, ROW_THREADS,
		  c->stream)
	(dinp, dout, inp, w, mean, rstd, N, C);
	SC_LAUNCH_CHECK(layernorm_backward_kernel);
	return SC_OK;
}

/* ---- RMSNorm: one warp per row, statistics in double (as layernorm) ---- */

/* out (N,C) = x * rstd * w, rstd (N) = 1 / sqrt(mean(x^2) + eps) per row x
 * of inp (N,C). Warp w of a block takes row blockIdx.x * warps + w; lane l
 * sums the columns l, l + 32, ... in order, then a fixed shuffle tree. */
__global__ void rmsnorm_forward_kernel(float *out, float *rstd, const float *inp, const float *w,
				       int N, int C, float eps)
{
	int lane = threadIdx.x % 32;
	int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
	if (row >= N)
		return; /* uniform across the warp */
	const float *x = inp + (size_t)row * C;
	float *y = out + (size_t)row * C;

	double ss = 0.0;
	for (int i = lane; i < C; i += 32)
		ss += (double)x[i] * x[i];
	double rs = 1.0 / sqrt(sc_warp_sum(ss) / C + eps);
	for (int i = lane; i < C; i += 32)
		y[i] = __fmul_rn((float)(x[i] * rs), w[i]);
	if (lane == 0)
		rstd[row] = (float)rs;
}

sc_err sc_cuda_rmsnorm_forward(sc_backend *be, float *out, float *rstd, const float *inp,
			       const float *w, int N, int C, float eps)
{
	const int rows_per_block = ROW_THREADS / 32;
	if (N < 0 || C <= 0)
		return sc_errf(SC_EINVAL, "rmsnorm_forward: bad size N=%d C=%d", N, C);
	if (!N)
		return SC_OK;
	SC_CUDA_ENTER(be, c);
	SC_LAUNCH(rmsnorm_forward_kernel, (N + rows_per_block - 1) / rows_per_block, ROW_THREADS,
		  c->stream)
	(out, rstd, inp, w, N, C, eps);
	SC_LAUNCH_CHECK(rmsnorm_forward_kernel);
	return SC_OK;
}

/* dinp (N,C) += rstd * g - x * rstd^3 * mean(g * x), g = dout * w (the
 * weights are frozen); in double. Rows and lanes as the forward. */
__global__ void rmsnorm_backward_kernel(float *dinp, const float *dout, const float *inp,
					const float *w, const float *rstd, int N, int C)
{
	int lane = threadIdx.x % 32;
	int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
	if (row >= N)
		return;
	const float *x = inp + (size_t)row * C, *dy = dout + (size_t)row * C;
	float *dx = dinp + (size_t)row * C;
	double rs = rstd[row];

	double sum_gx = 0.0;
	for (int i = lane; i < C; i += 32)
		sum_gx += (double)w[i] * dy[i] * x[i];
	double k = rs * rs * rs * sc_warp_sum(sum_gx) / C;
	for (int i = lane; i < C; i += 32) {
		double g = (double)w[i] * dy[i];
		dx[i] += (float)(rs * g - x[i] * k);
	}
}

sc_err sc_cuda_rmsnorm_backward(sc_backend *be, float *dinp, const float *dout, const float *inp,
				const float *w, const float *rstd, int N, int C)
{
	const int rows_per_block = ROW_THREADS / 32;
	if (N < 0 || C <= 0)
		return sc_errf(SC_EINVAL, "rmsnorm_backward: bad size N=%d C=%d", N, C);
	if (!N)
		return SC_OK;
	SC_CUDA_ENTER(be, c);
	SC_LAUNCH(rmsnorm_backward_kernel, (N + rows_per_block - 1) / rows_per_block, ROW_THREADS,
		  c->stream)
	(dinp, dout, inp, w, rstd, N, C);
	SC_LAUNCH_CHECK(rmsnorm_backward_kernel);
	return SC_OK;
}

/* ---- rotary position embedding ---- */

/* In place on the q and k heads of qkv (B,T,(NH+2*NKV)*hs): for head h <
 * NH + NKV of position t and i < half = hs/2, the pair x1 = x[i], x2 =
 * x[i + half] becomes (x1 c - x2 s, x2 c + x1 s), c = cos[t][i], s =
 * sin[t][i] (s negated when inverse). n = B*T*(NH+NKV)*half, one pair per
 * thread of a grid-stride loop. Each product rounded on its own (_rn), as
 * the CPU computes it. */
__global__ void rope_kernel(float *qkv, const float *cos_t, const float *sin_t, int T, int heads,
			    int hs, size_t ld, int inverse, size_t n)
{
	const int half = hs / 2;
	for (size_t e = sc_thread_index(); e < n; e += sc_grid_stride()) {
		int i = (int)(e % half);
		size_t bth = e / half, bt = bth / heads;
		int h = (int)(bth % heads), t = (int)(bt % T);
		float *x = qkv + bt * ld + (size_t)h * hs;
		float c = cos_t[(size_t)t * half + i], s = sin_t[(size_t)t * half + i];
		if (inverse)
			s = -s;
		float x1 = x[i], x2 = x[i + half];
		x[i] = __fsub_rn(__fmul_rn(x1, c), __fmul_rn(x2, s));
		x[i + half] = __fadd_rn(__fmul_rn(x2, c), __fmul_rn(x1, s));
	}
}

sc_err sc_cuda_rope(sc_backend *be, float *qkv, const float *cos_t, const float *sin_t, int B,
		    int T, int NH, int NKV, int hs, int inverse)
{
	if (B < 0 || T < 0 || NH <= 0 || NKV <= 0 || hs <= 0 || hs % 2)
		return sc_errf(SC_EINVAL,
			       "rope: bad shape B=%d T=%d NH=%d NKV=%d hs=%d (hs must be even)", B,
			       T, NH, NKV, hs);
	size_t n = (size_t)B * T * (NH + NKV) * (hs / 2);
	if (!n)
		return SC_OK;
	SC_CUDA_ENTER(be, c);
	SC_LAUNCH(rope_kernel, sc_cuda_grid(n, EW_THREADS), EW_THREADS, c->stream)
	(qkv, cos_t, sin_t, T, NH + NKV, hs, (size_t)(NH + 2 * NKV) * hs, inverse, n);
	SC_LAUNCH_CHECK(rope_kernel);
	return SC_OK;
}

/* ---- GELU, tanh approximation ---- */

/* 0.5 x (1 + tanh u) = x s, s = 1 / (1 + e), e = e^(-2u), u = K0 (x + K1 x^3):
 * the CPU's form, with no cancellation for negative x. The exponent is
 * capped at 88 as the CPU's expf saturates, so e stays finite. */
__device__ inline float gelu_exp(float x, float *du)
{
	float u = GELU_K0 * (x + GELU_K1 * x * x * x);
	*du = GELU_K0 * (1.0f + 3.0f * GELU_K1 * x * x);
	return expf(fminf(-2.0f * u, 88.0f));
}

__global__ void gelu_forward_kernel(float *out, const float *inp, size_t n)
{
	for (size_t i = sc_thread_index(); i < n; i += sc_grid_stride()) {
		float x = inp[i], du;
		out[i] = x / (1.0f + gelu_exp(x, &du));
	}
}

/* d/dx = s + x (1 - tanh^2 u) / 2 du/dx, and (1 - tanh^2 u) / 2 = 2 s (e s).
 * Each element is read before the same thread writes it: dinp may alias
 * dout. */
__global__ void gelu_backward_kernel(float *dinp, const float *inp, const float *dout, size_t n)
{
	for (size_t i = sc_thread_index(); i < n; i += sc_grid_stride()) {
		float x = inp[i], du;
		float e = gelu_exp(x, &du);
		float s = 1.0f / (1.0f + e);
		float grad = s + 2.0f * x * s * (e * s) * du;
		dinp[i] = grad * dout[i];
	}
}

sc_err sc_cuda_gelu_forward(sc_backend *be, float *out, const float *inp, size_t n)
{
	if (!n)
		return SC_OK;
	SC_CUDA_ENTER(be, c);
	SC_LAUNCH(gelu_forward_kernel, sc_cuda_grid(n, EW_THREADS), EW_THREADS, c->stream)
	(out, inp, n);
	SC_LAUNCH_CHECK(gelu_forward_kernel);
	return SC_OK;
}

sc_err sc_cuda_gelu_backward(sc_backend *be, float *dinp, const float *inp, const float *dout,
			     size_t n)
{
	if (!n)
		return SC_OK;
	SC_CUDA_ENTER(be, c);
	SC_LAUNCH(gelu_backward_kernel, sc_cuda_grid(n, EW_THREADS), EW_THREADS, c->stream)
	(dinp, inp, dout, n);
	SC_LAUNCH_CHECK(gelu_backward_kernel);
	return SC_OK;
}

/* ---- SwiGLU ---- */

/* 1 + e^-g, so that silu(g) = g / (1 + e^-g) and sigmoid(g) = 1 / (1 +
 * e^-g), as the CPU writes them; the exponent capped at 88 (as the CPU's
 * expf saturates), so the sum stays finite. */
__device__ inline float swiglu_denom(float g)
{
	return __fadd_rn(1.0f, expf(fminf(-g, 88.0f)));
}

/* out (N,I) = silu(gate) * up, gate = gu[:, :I], up = gu[:, I:] of gu
 * (N,2I). n = N*I, one output per thread of a grid-stride loop. */
__global__ void swiglu_forward_kernel(float *out, const float *gu, int I, size_t n)
{
	for (size_t e = sc_thread_index(); e < n; e += sc_grid_stride()) {
		size_t r = e / I, j = e % I;
		const float *row = gu + r * 2 * I;
		float g = row[j], u = row[I + j];
		out[e] = __fmul_rn(__fdiv_rn(g, swiglu_denom(g)), u);
	}
}

/* dgu (N,2I): dgate = dout * up * (s + g s (1 - s)), dup = dout * g s with
 * s = sigmoid(gate), overwritten. Threads as the forward; each writes its
 * gate and up. */
__global__ void swiglu_backward_kernel(float *dgu, const float *dout, const float *gu, int I,
				       size_t n)
{
	for (size_t e = sc_thread_index(); e < n; e += sc_grid_stride()) {
		size_t r = e / I, j = e % I;
		const float *row = gu + r * 2 * I;
		float *drow = dgu + r * 2 * I;
		float g = row[j], u = row[I + j], dy = dout[e];
		float s = __fdiv_rn(1.0f, swiglu_denom(g)), gs = __fmul_rn(g, s);
		float dsilu = __fadd_rn(s, __fmul_rn(gs, __fsub_rn(1.0f, s)));
		drow[j] = __fmul_rn(__fmul_rn(dy, u), dsilu);
		drow[I + j] = __fmul_rn(dy, gs);
	}
}

sc_err sc_cuda_swiglu_forward(sc_backend *be, float *out, const float *gu, int N, int I)
{
	size_t n = (size_t)N * I;
	if (N < 0 || I <= 0)
		return sc_errf(SC_EINVAL, "swiglu_forward: bad size N=%d I=%d", N, I);
	if (!n)
		return SC_OK;
	SC_CUDA_ENTER(be, c);
	SC_LAUNCH(swiglu_forward_kernel, sc_cuda_grid(n, EW_THREADS), EW_THREADS, c->stream)
	(out, gu, I, n);
	SC_LAUNCH_CHECK(swiglu_forward_kernel);
	return SC_OK;
}

sc_err sc_cuda_swiglu_backward(sc_backend *be, float *dgu, const float *dout, const float *gu,
			       int N, int I)
{
	size_t n = (size_t)N * I;
	if (N < 0 || I <= 0)
		return sc_errf(SC_EINVAL, "swiglu_backward: bad size N=%d I=%d", N, I);
	if (!n)
		return SC_OK;
	SC_CUDA_ENTER(be, c);
	SC_LAUNCH(swiglu_backward_kernel, sc_cuda_grid(n, EW_THREADS), EW_THREADS, c->stream)
	(dgu, dout, gu, I, n);
	SC_LAUNCH_CHECK(swiglu_backward_kernel);
	return SC_OK;
}

/* ---- add, add_bias ---- */

/* out (n) = a + b, one element per thread of a grid-stride loop. */
__global__ void add_kernel(float *out, const float *a, const float *b, size_t n)
{
	for (size_t i = sc_thread_index(); i < n; i += sc_grid_stride())
		out[i] = a[i] + b[i];
}

/* out (N,OC), rows ldo floats apart, += bias (OC); n = N*OC, one element
 * per thread of a grid-stride loop. */
__global__ void add_bias_kernel(float *out, const float *bias, int OC, size_t ldo, size_t n)
{
	for (size_t i = sc_thread_index(); i < n; i += sc_grid_stride())
		out[i / OC * ldo + i % OC] += bias[i % OC];
}

sc_err sc_cuda_add(sc_backend *be, float *out, const float *a, const float *b, size_t n)
{
	if (!n)
		return SC_OK;
	SC_CUDA_ENTER(be, c);
	SC_LAUNCH(add_kernel, sc_cuda_grid(n, EW_THREADS), EW_THREADS, c->stream)(out, a, b, n);
	SC_LAUNCH_CHECK(add_kernel);
	return SC_OK;
}

sc_err sc_cuda_add_bias(sc_backend *be, float *out, const float *bias, int N, int OC, int ldo)
{
	size_t n = (size_t)N * OC;
	if (N < 0 || OC < 0 || ldo < OC)
		return sc_errf(SC_EINVAL, "add_bias: bad size N=%d OC=%d ldo=%d (ldo >= OC)", N, OC,
			       ldo);
	if (!n)
		return SC_OK;
	SC_CUDA_ENTER(be, c);
	SC_LAUNCH(add_bias_kernel, sc_cuda_grid(n, EW_THREADS), EW_THREADS, c->stream)
	(out, bias, OC, (size_t)ldo, n);
	SC_LAUNCH_CHECK(add_bias_kernel);
	return SC_OK;
}

/* ---- fused softmax + cross-entropy: one block per row ---- */

/* The CPU's arithmetic: max in float, the sum of e^(x - max) in double,
 * dlogits = e * (dscale / sum) with dscale taken off at the target, loss =
 * max + log(sum) - x[target]. */
__global__ void crossentropy_kernel(float *losses, float *logits, const int32_t *targets, int V,
				    float dscale)
{
	__shared__ float shf[32];
	__shared__ double shd[32];
	size_t row = blockIdx.x;
	float *x = logits + row * V;
	int target = targets[row];

	if (target < 0) { /* ignored row: uniform across the block */
		for (int i = threadIdx.x; i < V; i += blockDim.x)
			x[i] = 0.0f;
		if (threadIdx.x == 0)
			losses[row] = 0.0f;
		return;
	}
	/* Read before the row is overwritten; the barriers inside the
	 * reductions below order it before every write. */
	double x_target = x[target];

	float mx = -INFINITY;
	for (int i = threadIdx.x; i < V; i += blockDim.x)
		mx = fmaxf(mx, x[i]);
	mx = sc_block_max(mx, shf);
	double sum = 0.0;
	for (int i = threadIdx.x; i < V; i += blockDim.x)
		sum += expf(x[i] - mx);
	sum = sc_block_sum(sum, shd);

	float scale = (float)(dscale / sum);
	for (int i = threadIdx.x; i < V; i += blockDim.x) {
		float g = __fmul_rn(expf(x[i] - mx), scale);
		x[i] = i == target ? g - dscale : g;
	}
	if (threadIdx.x == 0)
		losses[row] = (float)((double)mx + log(sum) - x_target);
}

sc_err sc_cuda_crossentropy(sc_backend *be, float *losses, float *logits, const int32_t *targets,
			    int N, int V, float dscale)
{
	if (N < 0 || V <= 0)
		return sc_errf(SC_EINVAL, "crossentropy: bad size N=%d V=%d", N, V);
	if (!N)
		return SC_OK;
	SC_CUDA_ENTER(be, c);
	SC_LAUNCH(crossentropy_kernel, N, CE_THREADS, c->stream)
	(losses, logits, targets, V, dscale);
	SC_LAUNCH_CHECK(crossentropy_kernel);
	return SC_OK;
}

/* ---- AdamW, torch.optim.AdamW's (non-fused) arithmetic ---- */

/* The CPU backend's operation order, step by step (see cpu_adamw; the
 * scalars from sc_adamw_scalars_at): the
 * explicit fmaf where torch fuses, and the _rn intrinsics elsewhere so that
 * nvcc contracts nothing else into an FMA. step is -lr / bias_correction1. */
__global__ void adamw_kernel(float *param, float *m, float *v, const float *grad, size_t n,
			     float w1, int small, float beta2, float w2, float eps, float decay,
			     float grad_scale, float step, float bc2_sqrt)
{
	for (size_t i = sc_thread_index(); i < n; i += sc_grid_stride()) {
		float g = __fmul_rn(grad[i], grad_scale);
		float p = __fmul_rn(param[i], decay);
		float mi = m[i];
		mi = small ? fmaf(w1, __fsub_rn(g, mi), mi) : fmaf(w1 - 1.0f, __fsub_rn(g, mi), g);
		float vi = __fadd_rn(__fmul_rn(v[i], beta2), __fmul_rn(__fmul_rn(w2, g), g));
		float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2_sqrt), eps);
		param[i] = __fadd_rn(p, __fdiv_rn(__fmul_rn(step, mi), denom));
		m[i] = mi;
		v[i] = vi;
	}
}

sc_err sc_cuda_adamw(sc_backend *be, float *param, float *m, float *v, const float *grad, size_t n,
		     float lr, float beta1, float beta2, float eps, float weight_decay,
		     float grad_scale, int t)
{
	sc_adamw_scalars k;
	SC_TRY(sc_adamw_scalars_at(&k, lr, beta1, beta2, eps, weight_decay, t));
	if (!n)
		return SC_OK;
	SC_CUDA_ENTER(be, c);
	SC_LAUNCH(adamw_kernel, sc_cuda_grid(n, EW_THREADS), EW_THREADS, c->stream)
	(param, m, v, grad, n, k.w1, k.small, k.beta2, k.w2, k.eps, k.decay, grad_scale, k.step,
	 k.bc2_sqrt);
	SC_LAUNCH_CHECK(adamw_kernel);
	return SC_OK;
}

/* ---- sum of squares: two passes, a fixed tree in double ---- */

/* Block b sums x[i]^2 for i = b*threads + tid (+ k*grid*threads) in a fixed
 * order per thread, then a fixed shuffle tree over the block. */
__global__ void sumsq_partial_kernel(double *partial, const float *x, size_t n)
{
	__shared__ double sh[32];
	double s = 0.0;
	for (size_t i = sc_thread_index(); i < n; i += sc_grid_stride()) {
		double xi = x[i];
		s += xi * xi;
	}
	s = sc_block_sum(s, sh);
	if (threadIdx.x == 0)
		partial[blockIdx.x] = s;
}

__global__ void sumsq_final_kernel(double *out, const double *partial, int nparts)
{
	__shared__ double sh[32];
	double s = 0.0;
	for (int i = threadIdx.x; i < nparts; i += blockDim.x)
		s += partial[i];
	s = sc_block_sum(s, sh);
	if (threadIdx.x == 0)
		*out = s;
}

sc_err sc_cuda_sumsq(sc_backend *be, double *out_host, const float *x, size_t n)
{
	size_t blocks = (n + SC_CUDA_SUMSQ_THREADS - 1) / SC_CUDA_SUMSQ_THREADS;
	int nparts = blocks > SC_CUDA_SUMSQ_BLOCKS ? SC_CUDA_SUMSQ_BLOCKS : (int)blocks;
	double result = 0.0;

	*out_host = 0.0;
	if (!n)
		return SC_OK;
	SC_CUDA_ENTER(be, c);
	double *total = c->sumsq_partial + SC_CUDA_SUMSQ_BLOCKS;
	SC_LAUNCH(sumsq_partial_kernel, nparts, SC_CUDA_SUMSQ_THREADS, c->stream)
	(c->sumsq_partial, x, n);
	SC_LAUNCH_CHECK(sumsq_partial_kernel);
	SC_LAUNCH(sumsq_final_kernel, 1, SC_CUDA_SUMSQ_THREADS, c->stream)
	(total, c->sumsq_partial, nparts);
	SC_LAUNCH_CHECK(sumsq_final_kernel);
	SC_CUDA_CHECK(
	    cudaMemcpyAsync(&result, total, sizeof(result), cudaMemcpyDeviceToHost, c->stream));
	SC_CUDA_CHECK(cudaStreamSynchronize(c->stream));
	*out_host = result;
	return SC_OK;
}
