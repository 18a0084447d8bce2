/* nn_cpu.c — the CPU backend's row-wise and elementwise network operations:
 * layer norm, RMSNorm, GELU, SwiGLU, rotary embeddings and the fused
 * softmax + cross-entropy. Rows (or chunks of
 * elements) are split over OpenMP threads; every row is computed by one
 * thread in a fixed order, so results do not depend on the thread count.
 * Per-row sums are accumulated in double (cross-entropy's in float runs of
 * SUM_RUN elements, added up in double).
 */
#include <math.h>
#include <string.h>

#include "cpu_ops.h"

#define GELU_K0 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_K1 0.044715f
#define CHUNK   8192 /* elements per parallel work item */
#define SUM_RUN 1024

SC_CPU_HOT static void layernorm_row(float *y, float *mean, float *rstd, const float *x,
				     const float *w, const float *b, int C, float eps)
{
	double s = 0.0;
#pragma omp simd reduction(+ : s)
	for (int j = 0; j < C; j++)
		s += x[j];
	double m = s / C;
	double ss = 0.0;
#pragma omp simd reduction(+ : ss)
	for (int j = 0; j < C; j++) {
		double d = x[j] - m;
		ss += d * d;
	}
	double rs = 1.0 / sqrt(ss / C + eps);
#pragma omp simd
	for (int j = 0; j < C; j++)
		y[j] = (float)((x[j] - m) * rs) * w[j] + b[j];
	*mean = (float)m;
	*rstd = (float)rs;
}

sc_err sc_cpu_layernorm_forward(sc_backend *be, float *out, float *mean, float *rstd,
				const float *inp, const float *w, const float *b, int N, int C,
				float eps)
{
	if (N < 0 || C <= 0)
		return sc_errf(SC_EINVAL, "layernorm: bad shape N=%d C=%d", N, C);
	sc_cpu_enter(be);
#pragma omp parallel for schedule(static) if ((size_t)N * C >= SC_CPU_PAR_MIN)
	for (int i = 0; i < N; i++)
		layernorm_row(out + (size_t)i * C, mean + i, rstd + i, inp + (size_t)i * C, w, b, C,
			      eps);
	return SC_OK;
}

/* dx += (dn - mean(dn) - norm * mean(dn * norm)) * rstd, dn = dout * w. */
SC_CPU_HOT static void layernorm_backward_row(float *dx, const float *dy, const float *x,
					      const float *w, float mean, float rstd, int C)
{
	double m = mean, rs = rstd;
	double sdn = 0.0, sdnn = 0.0;
#pragma omp simd reduction(+ : sdn, sdnn)
	for (int j = 0; j < C; j++) {
		double dn = (double)w[j] * dy[j];
		sdn += dn;
		sdnn += dn * ((x[j] - m) * rs);
	}
	sdn /= C;
	sdnn /= C;
#pragma omp simd
	for (int j = 0; j < C; j++) {
		double dn = (double)w[j] * dy[j];
		double norm = (x[j] - m) * rs;
		dx[j] += (float)((dn - sdn - norm * sdnn) * rs);
	}
}

sc_err sc_cpu_layernorm_backward(sc_backend *be, float *dinp, const float *dout, const float *inp,
				 const float *w, const float *mean, const float *rstd, int N, int C)
{
	if (N < 0 || C <= 0)
		return sc_errf(SC_EINVAL, "layernorm: bad shape N=%d C=%d", N, C);
	sc_cpu_enter(be);
#pragma omp parallel for schedule(static) if ((size_t)N * C >= SC_CPU_PAR_MIN)
	for (int i = 0; i < N; i++) {
		size_t o = (size_t)i * C;
		layernorm_backward_row(dinp + o, dout + o, inp + o, w, mean[i], rstd[i], C);
	}
	return SC_OK;
}

/* GELU, tanh form: 0.5 x (1 + tanh u), u = K0 (x + K1 x^3). Written as
 * x * s with s = 1 / (1 + e^(-2u)) = (1 + tanh u) / 2, which has no
 * cancellation for negative x. */
SC_CPU_HOT static void gelu_range(float *out, const float *inp, size_t n)
{
#pragma omp simd
	for (size_t i = 0; i < n; i++) {
		float x = inp[i];
		float u = GELU_K0 * (x + GELU_K1 * x * x * x);
		out[i] = x / (1.0f + sc_cpu_expf(-2.0f * u));
	}
}

/* d/dx = s + x * (1 - tanh^2 u) / 2 * du/dx, and (1 - tanh^2 u) / 2 =
 * 2 s (1 - s) with 1 - s = e s, e = e^(-2u). dinp may alias dout. */
SC_CPU_HOT static void gelu_backward_range(float *dinp, const float *inp, const float *dout,
					   size_t n)
{
#pragma omp simd
	for (size_t i = 0; i < n; i++) {
		float x = inp[i];
		float u = GELU_K0 * (x + GELU_K1 * x * x * x);
		float du = GELU_K0 * (1.0f + 3.0f * GELU_K1 * x * x);
		float e = sc_cpu_expf(-2.0f * u);
		float s = 1.0f / (1.0f + e);
		float grad = s + 2.0f * x * s * (e * s) * du;
		dinp[i] = grad * dout[i];
	}
}

sc_err sc_cpu_gelu_forward(sc_backend *be, float *out, const float *inp, size_t n)
{
	sc_cpu_enter(be);
	long chunks = (long)((n + CHUNK - 1) / CHUNK);
#pragma omp parallel for schedule(static) if (n >= SC_CPU_PAR_MIN)
	for (long c = 0; c < chunks; c++) {
		size_t i = (size_t)c * CHUNK;
		gelu_range(out + i, inp + i, n - i < CHUNK ? n - i : CHUNK);
	}
	return SC_OK;
}

sc_err sc_cpu_gelu_backward(sc_backend *be, float *dinp, const float *inp, const float *dout,
			    size_t n)
{
	sc_cpu_enter(be);
	long chunks = (long)((n + CHUNK - 1) / CHUNK);
#pragma omp parallel for schedule(static) if (n >= SC_CPU_PAR_MIN)
	for (long c = 0; c < chunks; c++) {
		size_t i = (size_t)c * CHUNK;
		gelu_backward_range(dinp + i, inp + i, dout + i, n - i < CHUNK ? n - i : CHUNK);
	}
	return SC_OK;
}

/* One row of logits, in place: returns -log softmax(row)[target] and leaves
 * (softmax - onehot(target)) * dscale in row. */
SC_CPU_HOT static float crossentropy_row(float *row, int V, int target, float dscale)
{
	float mx = -INFINITY;
	SC_CPU_SIMD_MAX(mx)
	for (int j = 0; j < V; j++)
		mx = row[j] > mx ? row[j] : mx;
	double xt = row[target];
	double sum = 0.0;
	for (int j0 = 0; j0 < V; j0 += SUM_RUN) {
		int j1 = j0 + SUM_RUN < V ? j0 + SUM_RUN : V;
		float part = 0.0f;
#pragma omp simd reduction(+ : part)
		for (int j = j0; j < j1; j++) {
			float e = sc_cpu_expf(row[j] - mx);
			row[j] = e;
			part += e;
		}
		sum += part;
	}
	float scale = (float)(dscale / sum);
#pragma omp simd
	for (int j = 0; j < V; j++)
		row[j] *= scale;
	row[target] -= dscale;
	return (float)((double)mx + log(sum) - xt);
}

sc_err sc_cpu_crossentropy(sc_backend *be, float *losses, float *logits, const int32_t *targets,
			   int N, int V, float dscale)
{
	if (N < 0 || V <= 0)
		return sc_errf(SC_EINVAL, "crossentropy: bad shape N=%d V=%d", N, V);
	for (int i = 0; i < N; i++)
		if (targets[i] >= V)
			return sc_errf(SC_ERANGE, "crossentropy: target %d at row %d is >= V=%d",
				       (int)targets[i], i, V);
	sc_cpu_enter(be);
#pragma omp parallel for schedule(static) if ((size_t)N * V >= SC_CPU_PAR_MIN)
	for (int i = 0; i < N; i++) {
		float *row = logits + (size_t)i * V;
		if (targets[i] < 0) {
			memset(row, 0, (size_t)V * sizeof(float));
			losses[i] = 0.0f;
		} else {
			losses[i] = crossentropy_row(row, V, targets[i], dscale);
		}
	}
	return SC_OK;
}

/* ---- RMSNorm ---- */

SC_CPU_HOT static void rmsnorm_row(float *y, float *rstd, const float *x, const float *w, int C,
				   float eps)
{
	double ss = 0.0;
#pragma omp simd reduction(+ : ss)
	for (int j = 0; j < C; j++)
		ss += (double)x[j] * x[j];
	double rs = 1.0 / sqrt(ss / C + eps);
#pragma omp simd
	for (int j = 0; j < C; j++)
		y[j] = (float)(x[j] * rs) * w[j];
	*rstd = (float)rs;
}

sc_err sc_cpu_rmsnorm_forward(sc_backend *be, float *out, float *rstd, const float *inp,
			      const float *w, int N, int C, float eps)
{
	if (N < 0 || C <= 0)
		return sc_errf(SC_EINVAL, "rmsnorm: bad shape N=%d C=%d", N, C);
	sc_cpu_enter(be);
#pragma omp parallel for schedule(static) if ((size_t)N * C >= SC_CPU_PAR_MIN)
	for (int i = 0; i < N; i++)
		rmsnorm_row(out + (size_t)i * C, rstd + i, inp + (size_t)i * C, w, C, eps);
	return SC_OK;
}

/* With g = dout * w: dx += rstd * g - x * rstd^3 * mean(g * x). */
SC_CPU_HOT static void rmsnorm_backward_row(float *dx, const float *dy, const float *x,
					    const float *w, float rstd, int C)
{
	double rs = rstd, sgx = 0.0;
#pragma omp simd reduction(+ : sgx)
	for (int j = 0; j < C; j++)
		sgx += (double)w[j] * dy[j] * x[j];
	double k = rs * rs * rs * sgx / C;
#pragma omp simd
	for (int j = 0; j < C; j++)
		dx[j] += (float)((double)w[j] * dy[j] * rs - x[j] * k);
}

sc_err sc_cpu_rmsnorm_backward(sc_backend *be, float *dinp, const float *dout, const float *inp,
			       const float *w, const float *rstd, int N, int C)
{
	if (N < 0 || C <= 0)
		return sc_errf(SC_EINVAL, "rmsnorm: bad shape N=%d C=%d", N, C);
	sc_cpu_enter(be);
#pragma omp parallel for schedule(static) if ((size_t)N * C >= SC_CPU_PAR_MIN)
	for (int i = 0; i < N; i++) {
		size_t o = (size_t)i * C;
		rmsnorm_backward_row(dinp + o, dout + o, inp + o, w, rstd[i], C);
	}
	return SC_OK;
}

/* ---- rotary position embedding ---- */

/* One head of hs floats at a position whose angles give c, s (hs/2). */
SC_CPU_HOT static void rope_head(float *x, const float *c, const float *s, int half, float sign)
{
#pragma omp simd
	for (int i = 0; i < half; i++) {
		float x1 = x[i], x2 = x[i + half], si = sign * s[i];
		x[i] = x1 * c[i] - x2 * si;
		x[i + half] = x2 * c[i] + x1 * si;
	}
}

sc_err sc_cpu_rope(sc_backend *be, float *qkv, const float *cos, const float *sin, int B, int T,
		   int NH, int NKV, int hs, int inverse)
{
	if (B < 0 || T < 0 || NH <= 0 || NKV <= 0 || hs <= 0 || hs % 2)
		return sc_errf(SC_EINVAL, "rope: bad shape B=%d T=%d NH=%d NKV=%d hs=%d", B, T, NH,
			       NKV, hs);
	sc_cpu_enter(be);
	int N = B * T, heads = NH + NKV, half = hs / 2;
	size_t ld = (size_t)(NH + 2 * NKV) * hs;
	float sign = inverse ? -1.0f : 1.0f;
#pragma omp parallel for schedule(static) if ((size_t)N * heads * hs >= SC_CPU_PAR_MIN)
	for (int i = 0; i < N; i++) {
		size_t t = (size_t)(i % T) * half;
		for (int h = 0; h < heads; h++)
			rope_head(qkv + (size_t)i * ld + (size_t)h * hs, cos + t, sin + t, half,
				  sign);
	}
	return SC_OK;
}

/* ---- SwiGLU ---- */

/* out = silu(g) * u, silu(g) = g / (1 + e^-g). */
SC_CPU_HOT static void swiglu_row(float *out, const float *g, const float *u, int F)
{
#pragma omp simd
	for (int j = 0; j < F; j++)
		out[j] = g[j] / (1.0f + sc_cpu_expf(-g[j])) * u[j];
}

/* dg = dout * u * s (1 + g (1 - s)), du = dout * g s, s = sigmoid(g). */
SC_CPU_HOT static void swiglu_backward_row(float *dg, float *du, const float *dout, const float *g,
					   const float *u, int F)
{
#pragma omp simd
	for (int j = 0; j < F; j++) {
		float s = 1.0f / (1.0f + sc_cpu_expf(-g[j]));
		float gs = g[j] * s;
		dg[j] = dout[j] * u[j] * (s + gs * (1.0f - s));
		du[j] = dout[j] * gs;
	}
}

sc_err sc_cpu_swiglu_forward(sc_backend *be, float *out, const float *gu, int N, int F)
{
	if (N < 0 || F <= 0)
		return sc_errf(SC_EINVAL, "swiglu: bad shape N=%d F=%d", N, F);
	sc_cpu_enter(be);
#pragma omp parallel for schedule(static) if ((size_t)N * F >= SC_CPU_PAR_MIN)
	for (int i = 0; i < N; i++) {
		const float *row = gu + (size_t)i * 2 * F;
		swiglu_row(out + (size_t)i * F, row, row + F, F);
	}
	return SC_OK;
}

sc_err sc_cpu_swiglu_backward(sc_backend *be, float *dgu, const float *dout, const float *gu, int N,
			      int F)
{
	if (N < 0 || F <= 0)
		return sc_errf(SC_EINVAL, "swiglu: bad shape N=%d F=%d", N, F);
	sc_cpu_enter(be);
#pragma omp parallel for schedule(static) if ((size_t)N * F >= SC_CPU_PAR_MIN)
	for (int i = 0; i < N; i++) {
		const float *row = gu + (size_t)i * 2 * F;
		float *drow = dgu + (size_t)i * 2 * F;
		swiglu_backward_row(drow, drow + F, dout + (size_t)i * F, row, row + F, F);
	}
	return SC_OK;
}
