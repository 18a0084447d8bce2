/* ops_cuda.cu — the GPT-2 element-wise, normalisation, loss and optimizer
 * operations of the CUDA backend (attention is in attention_cuda.cu). Each
 * mirrors the CPU backend's formula; semantics in sc_backend.h. */
#include <math.h>

#include "cuda_impl.h"

enum { EW_THREADS = 256, ROW_THREADS = 256, CE_THREADS = 512 };

#define GELU_SCALE 0.7978845608028654f /* sqrt(2 / pi) */

/* Grid-stride loop over [0, n). */
#define FOR_EACH(i, n)                                                                         \
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n);                 \
	     i += (size_t)gridDim.x * blockDim.x)

/* ---- encoder ---- */

__global__ void encoder_forward_kernel(float *out, const int32_t *tokens, const float *wte,
				       const float *wpe, int T, int C, size_t n)
{
	FOR_EACH(i, n)
	{
		size_t bt = i / C;
		size_t c = i % C, t = bt % T;
		out[i] = wte[(size_t)tokens[bt] * C + c] + wpe[t * C + c];
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
	encoder_forward_kernel<<<sc_cuda_grid(n, EW_THREADS), EW_THREADS, 0, c->stream>>>(
		out, tokens, wte, wpe, T, C, n);
	SC_LAUNCH_CHECK(encoder_forward_kernel);
	return SC_OK;
}

/* ---- layernorm: one warp per row ---- */

__global__ void layernorm_forward_kernel(float *out, float *mean, float *rstd, const float *inp,
					 const float *w, const float *b, int N, int C, float eps)
{
	int lane = threadIdx.x % 32;
	int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
	if (row >= N)
		return; /* uniform across the warp */
	const float *x = inp + (size_t)row * C;
	float *y = out + (size_t)row * C;

	float s = 0.0f;
	for (int i = lane; i < C; i += 32)
		s += x[i];
	float m = sc_warp_sum(s) / C;
	float v = 0.0f;
	for (int i = lane; i < C; i += 32) {
		float d = x[i] - m;
		v += d * d;
	}
	float rs = 1.0f / sqrtf(sc_warp_sum(v) / C + eps);
	for (int i = lane; i < C; i += 32)
		y[i] = (x[i] - m) * rs * w[i] + b[i];
	if (lane == 0) {
		mean[row] = m;
		rstd[row] = rs;
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
	layernorm_forward_kernel<<<(N + rows_per_block - 1) / rows_per_block, ROW_THREADS, 0,
				   c->stream>>>(out, mean, rstd, inp, w, b, N, C, eps);
	SC_LAUNCH_CHECK(layernorm_forward_kernel);
	return SC_OK;
}

/* dinp += rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)), where
 * norm = (x - mean) * rstd and dnorm = w * dout. */
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
	float m = mean[row], rs = rstd[row];

	float sum_dn = 0.0f, sum_dn_n = 0.0f;
	for (int i = lane; i < C; i += 32) {
		float nrm = (x[i] - m) * rs, dn = w[i] * dy[i];
		sum_dn += dn;
		sum_dn_n += dn * nrm;
	}
	float mean_dn = sc_warp_sum(sum_dn) / C;
	float mean_dn_n = sc_warp_sum(sum_dn_n) / C;
	for (int i = lane; i < C; i += 32) {
		float nrm = (x[i] - m) * rs, dn = w[i] * dy[i];
		dx[i] += (dn - mean_dn - nrm * mean_dn_n) * rs;
	}
}

sc_err sc_cuda_layernorm_backward(sc_backend *be, float *dinp, const float *dout, const float *inp,
				  const float *w, const float *mean, const float *rstd, int N, int C)
{
	const int rows_per_block = ROW_THREADS / 32;
	if (N < 0 || C <= 0)
		return sc_errf(SC_EINVAL, "layernorm_backward: bad size N=%d C=%d", N, C);
	if (!N)
		return SC_OK;
	SC_CUDA_ENTER(be, c);
	layernorm_backward_kernel<<<(N + rows_per_block - 1) / rows_per_block, ROW_THREADS, 0,
				    c->stream>>>(dinp, dout, inp, w, mean, rstd, N, C);
	SC_LAUNCH_CHECK(layernorm_backward_kernel);
	return SC_OK;
}

/* ---- GELU, tanh approximation ---- */

__global__ void gelu_forward_kernel(float *out, const float *inp, size_t n)
{
	FOR_EACH(i, n)
	{
		float x = inp[i];
		float u = GELU_SCALE * (x + 0.044715f * x * x * x);
		out[i] = 0.5f * x * (1.0f + tanhf(u));
	}
}

/* Each element is read before it is written by the same thread, so dinp may
 * alias dout. */
__global__ void gelu_backward_kernel(float *dinp, const float *inp, const float *dout, size_t n)
{
	FOR_EACH(i, n)
	{
		float x = inp[i];
		float u = GELU_SCALE * (x + 0.044715f * x * x * x);
		float th = tanhf(u);
		float sech2 = 1.0f - th * th;
		float grad = 0.5f * (1.0f + th) +
			     0.5f * x * sech2 * GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
		dinp[i] = grad * dout[i];
	}
}

sc_err sc_cuda_gelu_forward(sc_backend *be, float *out, const float *inp, size_t n)
{
	if (!n)
		return SC_OK;
	SC_CUDA_ENTER(be, c);
	gelu_forward_kernel<<<sc_cuda_grid(n, EW_THREADS), EW_THREADS, 0, c->stream>>>(out, inp, n);
	SC_LAUNCH_CHECK(gelu_forward_kernel);
	return SC_OK;
}

sc_err sc_cuda_gelu_backward(sc_backend *be, float *dinp, const float *inp, const float *dout,
			     size_t n)
{
	if (!n)
		return SC_OK;
	SC_CUDA_ENTER(be, c);
	gelu_backward_kernel<<<sc_cuda_grid(n, EW_THREADS), EW_THREADS, 0, c->stream>>>(
		dinp, inp, dout, n);
	SC_LAUNCH_CHECK(gelu_backward_kernel);
	return SC_OK;
}

/* ---- add, add_bias ---- */

__global__ void add_kernel(float *out, const float *a, const float *b, size_t n)
{
	FOR_EACH(i, n)
	out[i] = a[i] + b[i];
}

__global__ void add_bias_kernel(float *out, const float *bias, int OC, size_t n)
{
	FOR_EACH(i, n)
	out[i] += bias[i % OC];
}

sc_err sc_cuda_add(sc_backend *be, float *out, const float *a, const float *b, size_t n)
{
	if (!n)
		return SC_OK;
	SC_CUDA_ENTER(be, c);
	add_kernel<<<sc_cuda_grid(n, EW_THREADS), EW_THREADS, 0, c->stream>>>(out, a, b, n);
	SC_LAUNCH_CHECK(add_kernel);
	return SC_OK;
}

sc_err sc_cuda_add_bias(sc_backend *be, float *out, const float *bias, int N, int OC)
{
	size_t n = (size_t)N * OC;
	if (N < 0 || OC < 0)
		return sc_errf(SC_EINVAL, "add_bias: negative size N=%d OC=%d", N, OC);
	if (!n)
		return SC_OK;
	SC_CUDA_ENTER(be, c);
	add_bias_kernel<<<sc_cuda_grid(n, EW_THREADS), EW_THREADS, 0, c->stream>>>(out, bias, OC,
										     n);
	SC_LAUNCH_CHECK(add_bias_kernel);
	return SC_OK;
}

/* ---- fused softmax + cross-entropy: one block per row ---- */

__global__ void crossentropy_kernel(float *losses, float *logits, const int32_t *targets, int V,
				    float dscale)
{
	__shared__ float sh[32];
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
	/* Read before the block starts overwriting the row (the reductions
	 * below hold the barriers that order it). */
	float x_target = x[target];

	float mx = -INFINITY;
	for (int i = threadIdx.x; i < V; i += blockDim.x)
		mx = fmaxf(mx, x[i]);
	mx = sc_block_max(mx, sh);
	float sum = 0.0f;
	for (int i = threadIdx.x; i < V; i += blockDim.x)
		sum += expf(x[i] - mx);
	sum = sc_block_sum(sum, sh);

	float inv = 1.0f / sum;
	for (int i = threadIdx.x; i < V; i += blockDim.x) {
		float p = expf(x[i] - mx) * inv;
		x[i] = (p - (i == target ? 1.0f : 0.0f)) * dscale;
	}
	if (threadIdx.x == 0)
		losses[row] = logf(sum) - (x_target - mx); /* -log p[target] */
}

sc_err sc_cuda_crossentropy(sc_backend *be, float *losses, float *logits, const int32_t *targets,
			    int N, int V, float dscale)
{
	if (N < 0 || V <= 0)
		return sc_errf(SC_EINVAL, "crossentropy: bad size N=%d V=%d", N, V);
	if (!N)
		return SC_OK;
	SC_CUDA_ENTER(be, c);
	crossentropy_kernel<<<N, CE_THREADS, 0, c->stream>>>(losses, logits, targets, V, dscale);
	SC_LAUNCH_CHECK(crossentropy_kernel);
	return SC_OK;
}

/* ---- AdamW, torch.optim.AdamW's (non-fused) arithmetic ---- */

__global__ void adamw_kernel(float *param, float *m, float *v, const float *grad, size_t n,
			     float beta1, float beta2, float eps, float decay, float grad_scale,
			     float step_size, float bc2_sqrt)
{
	FOR_EACH(i, n)
	{
		float g = grad[i] * grad_scale;
		float mi = m[i] + (1.0f - beta1) * (g - m[i]);
		float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
		float p = param[i] * decay;
		float denom = sqrtf(vi) / bc2_sqrt + eps;
		param[i] = p - step_size * (mi / denom);
		m[i] = mi;
		v[i] = vi;
	}
}

sc_err sc_cuda_adamw(sc_backend *be, float *param, float *m, float *v, const float *grad, size_t n,
		     float lr, float beta1, float beta2, float eps, float weight_decay,
		     float grad_scale, int t)
{
	if (t < 1)
		return sc_errf(SC_EINVAL, "adamw: step %d, expected >= 1", t);
	if (!n)
		return SC_OK;
	/* The bias corrections in double on the host, as torch does with its
	 * Python scalars. */
	double bc1 = 1.0 - pow((double)beta1, t), bc2 = 1.0 - pow((double)beta2, t);
	float step_size = (float)((double)lr / bc1), bc2_sqrt = (float)sqrt(bc2);
	float decay = (float)(1.0 - (double)lr * weight_decay);
	SC_CUDA_ENTER(be, c);
	adamw_kernel<<<sc_cuda_grid(n, EW_THREADS), EW_THREADS, 0, c->stream>>>(
		param, m, v, grad, n, beta1, beta2, eps, decay, grad_scale, step_size, bc2_sqrt);
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
	FOR_EACH(i, n)
	{
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
	sumsq_partial_kernel<<<nparts, SC_CUDA_SUMSQ_THREADS, 0, c->stream>>>(c->sumsq_partial, x,
									       n);
	SC_LAUNCH_CHECK(sumsq_partial_kernel);
	sumsq_final_kernel<<<1, SC_CUDA_SUMSQ_THREADS, 0, c->stream>>>(total, c->sumsq_partial,
									nparts);
	SC_LAUNCH_CHECK(sumsq_final_kernel);
	SC_CUDA_CHECK(cudaMemcpyAsync(&result, total, sizeof(result), cudaMemcpyDeviceToHost,
				      c->stream));
	SC_CUDA_CHECK(cudaStreamSynchronize(c->stream));
	*out_host = result;
	return SC_OK;
}
