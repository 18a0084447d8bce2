/* attention_cpu.c — causal self-attention on the CPU: per (batch, head) the
 * four products are OpenBLAS GEMMs read straight out of the (B,T,3C) qkv
 * layout; only the masked softmax and its backward are written here.
 *
 * Heads run in parallel, one OpenMP thread each, and OpenBLAS runs
 * single-threaded inside the parallel region, so a head's arithmetic is the
 * same whatever the thread count. The causal mask is exploited in blocks of
 * ATT_BLOCK query rows (or key columns): a block only multiplies against the
 * keys (queries) that it can see.
 */
#include <math.h>
#include <string.h>

#include <cblas.h>

#include "cpu_ops.h"

#define ATT_BLOCK 64

static int min_int(int a, int b)
{
	return a < b ? a : b;
}

/* Row t of the scores: softmax over columns 0..t, zeros after. */
SC_CPU_HOT static void softmax_row(float *p, int t, int T)
{
	float mx = -INFINITY;
	SC_CPU_SIMD_MAX(mx)
	for (int j = 0; j <= t; j++)
		mx = p[j] > mx ? p[j] : mx;
	float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
	for (int j = 0; j <= t; j++) {
		float e = sc_cpu_expf(p[j] - mx);
		p[j] = e;
		sum += e;
	}
	float inv = 1.0f / sum;
#pragma omp simd
	for (int j = 0; j <= t; j++)
		p[j] *= inv;
	memset(p + t + 1, 0, (size_t)(T - t - 1) * sizeof(float));
}

/* One head: att (T,T) = softmax(q k^T * scale) masked; out (T,hs) = att v.
 * q, k, v rows are ld apart; out rows ldo apart. */
static void head_forward(float *out, int ldo, float *att, const float *q, const float *k,
			 const float *v, int ld, int T, int hs, float scale)
{
	for (int i0 = 0; i0 < T; i0 += ATT_BLOCK) {
		int i1 = min_int(T, i0 + ATT_BLOCK);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, i1 - i0, i1, hs, scale,
			    q + (size_t)i0 * ld, ld, k, ld, 0.0f, att + (size_t)i0 * T, T);
		for (int t = i0; t < i1; t++)
			softmax_row(att + (size_t)t * T, t, T);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, i1 - i0, hs, i1, 1.0f,
			    att + (size_t)i0 * T, T, v, ld, 0.0f, out + (size_t)i0 * ldo, ldo);
	}
}

/* Row t: d[j] = a[j] * (d[j] - sum_j a[j] d[j]) for j <= t, zeros after. */
SC_CPU_HOT static void softmax_backward_row(float *d, const float *a, int t, int T)
{
	float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
	for (int j = 0; j <= t; j++)
		dot += a[j] * d[j];
#pragma omp simd
	for (int j = 0; j <= t; j++)
		d[j] = a[j] * (d[j] - dot);
	memset(d + t + 1, 0, (size_t)(T - t - 1) * sizeof(float));
}

/* One head's backward: datt (T,T) scratch; dq, dk, dv (T,hs) rows ld apart
 * are overwritten; dout rows ldo apart. */
static void head_backward(float *dq, float *dk, float *dv, float *datt, const float *dout, int ldo,
			  const float *q, const float *k, const float *v, const float *att, int ld,
			  int T, int hs, float scale)
{
	/* datt = dout v^T over the visible keys, then the softmax backward. */
	for (int i0 = 0; i0 < T; i0 += ATT_BLOCK) {
		int i1 = min_int(T, i0 + ATT_BLOCK);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, i1 - i0, i1, hs, 1.0f,
			    dout + (size_t)i0 * ldo, ldo, v, ld, 0.0f, datt + (size_t)i0 * T, T);
		for (int t = i0; t < i1; t++)
			softmax_backward_row(datt + (size_t)t * T, att + (size_t)t * T, t, T);
	}
	/* dq = datt k * scale, row blocks over the keys they saw. */
	for (int i0 = 0; i0 < T; i0 += ATT_BLOCK) {
		int i1 = min_int(T, i0 + ATT_BLOCK);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, i1 - i0, hs, i1, scale,
			    datt + (size_t)i0 * T, T, k, ld, 0.0f, dq + (size_t)i0 * ld, ld);
	}
	/* dv = att^T dout and dk = datt^T q * scale, column blocks over the
	 * queries that saw them (rows j0..T-1 of the column block). */
	for (int j0 = 0; j0 < T; j0 += ATT_BLOCK) {
		int j1 = min_int(T, j0 + ATT_BLOCK);
		size_t diag = (size_t)j0 * T + (size_t)j0;
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, j1 - j0, hs, T - j0, 1.0f,
			    att + diag, T, dout + (size_t)j0 * ldo, ldo, 0.0f, dv + (size_t)j0 * ld,
			    ld);
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, j1 - j0, hs, T - j0, scale,
			    datt + diag, T, q + (size_t)j0 * ld, ld, 0.0f, dk + (size_t)j0 * ld,
			    ld);
	}
}

static sc_err check_shape(int B, int T, int C, int NH)
{
	if (B < 0 || T < 0 || C <= 0 || NH <= 0 || C % NH)
		return sc_errf(SC_EINVAL, "attention: bad shape B=%d T=%d C=%d NH=%d", B, T, C, NH);
	return SC_OK;
}

/* The state is the probabilities, (B,NH,T,T); the scratch their gradient. */
sc_err sc_cpu_attention_sizes(sc_backend *be, int B, int T, int C, int NH, size_t *state,
			      size_t *scratch)
{
	*state = *scratch = 0;
	SC_TRY(check_shape(B, T, C, NH));
	*state = *scratch = (size_t)B * NH * T * T;
	return SC_OK;
}

sc_err sc_cpu_attention_forward(sc_backend *be, float *out, float *att, const float *qkv, int B,
				int T, int C, int NH)
{
	SC_TRY(check_shape(B, T, C, NH));
	sc_cpu_enter(be);
	int hs = C / NH, ld = 3 * C;
	float scale = (float)(1.0 / sqrt((double)hs));
#pragma omp parallel for schedule(static)
	for (int bh = 0; bh < B * NH; bh++) {
		int b = bh / NH, h = bh % NH;
		const float *q = qkv + (size_t)b * T * ld + (size_t)h * hs;
		head_forward(out + (size_t)b * T * C + (size_t)h * hs, C, att + (size_t)bh * T * T,
			     q, q + C, q + 2 * C, ld, T, hs, scale);
	}
	return SC_OK;
}

/* out, the forward's result, is not needed: the probabilities are kept. */
sc_err sc_cpu_attention_backward(sc_backend *be, float *dqkv, float *datt, const float *dout,
				 const float *qkv, const float *out, const float *att, int B, int T,
				 int C, int NH)
{
	SC_TRY(check_shape(B, T, C, NH));
	sc_cpu_enter(be);
	int hs = C / NH, ld = 3 * C;
	float scale = (float)(1.0 / sqrt((double)hs));
#pragma omp parallel for schedule(static)
	for (int bh = 0; bh < B * NH; bh++) {
		int b = bh / NH, h = bh % NH;
		size_t off = (size_t)b * T * ld + (size_t)h * hs;
		const float *q = qkv + off;
		float *dq = dqkv + off;
		head_backward(dq, dq + C, dq + 2 * C, datt + (size_t)bh * T * T,
			      dout + (size_t)b * T * C + (size_t)h * hs, C, q, q + C, q + 2 * C,
			      att + (size_t)bh * T * T, ld, T, hs, scale);
	}
	return SC_OK;
}
