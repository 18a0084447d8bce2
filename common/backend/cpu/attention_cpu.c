/* attention_cpu.c — causal self-attention on the CPU: per (batch, head) the
 * four products are OpenBLAS GEMMs read straight out of the (B,T,QKV) qkv
 * layout; only the masked softmax and its backward are written here.
 *
 * Grouped-query attention reads a key/value head for NH / NKV query heads;
 * a sliding window limits each query to its last `window` keys.
 *
 * Heads run in parallel, one OpenMP thread each, and OpenBLAS runs
 * single-threaded inside the parallel region, so a head's arithmetic is the
 * same whatever the thread count. The causal mask is exploited in blocks of
 * ATT_BLOCK query rows (or key columns): a block only multiplies against the
 * keys (queries) that it can see.
 *
 * Generation's attention over a key/value cache takes one query row at a
 * time through gemv_cpu.c's one-row products.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "cpu_ops.h"
#include "gemv_cpu.h"

#define ATT_BLOCK 64

static int min_int(int a, int b)
{
	return a < b ? a : b;
}

/* Row t of the scores: softmax over the visible columns lo..t, zeros
 * elsewhere (columns lo..t hold the scaled scores on entry). */
SC_CPU_HOT static void softmax_row(float *p, int lo, int t, int T)
{
	float mx = -INFINITY;
	SC_CPU_SIMD_MAX(mx)
	for (int j = lo; j <= t; j++)
		mx = p[j] > mx ? p[j] : mx;
	float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
	for (int j = lo; j <= t; j++) {
		float e = sc_cpu_expf(p[j] - mx);
		p[j] = e;
		sum += e;
	}
	float inv = 1.0f / sum;
#pragma omp simd
	for (int j = lo; j <= t; j++)
		p[j] *= inv;
	memset(p, 0, (size_t)lo * sizeof(float));
	memset(p + t + 1, 0, (size_t)(T - t - 1) * sizeof(float));
}

/* The first key query t sees. */
static int first_key(int t, int window)
{
	return window > 0 && t - window + 1 > 0 ? t - window + 1 : 0;
}

/* One head: att (T,T) = softmax(q k^T * scale) masked; out (T,hs) = att v.
 * q rows are ldq apart, k and v rows ldk apart; out rows ldo apart. */
static void head_forward(float *out, int ldo, float *att, const float *q, int ldq, const float *k,
			 const float *v, int ldk, int T, int hs, int window, float scale)
{
	for (int i0 = 0; i0 < T; i0 += ATT_BLOCK) {
		int i1 = min_int(T, i0 + ATT_BLOCK), lo = first_key(i0, window);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, i1 - i0, i1 - lo, hs, scale,
			    q + (size_t)i0 * ldq, ldq, k + (size_t)lo * ldk, ldk, 0.0f,
			    att + (size_t)i0 * T + lo, T);
		for (int t = i0; t < i1; t++)
			softmax_row(att + (size_t)t * T, first_key(t, window), t, T);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, i1 - i0, hs, i1 - lo, 1.0f,
			    att + (size_t)i0 * T + lo, T, v + (size_t)lo * ldk, ldk, 0.0f,
			    out + (size_t)i0 * ldo, ldo);
	}
}

/* Row t: d[j] = a[j] * (d[j] - sum_j a[j] d[j]) for lo <= j <= t, zeros
 * elsewhere. */
SC_CPU_HOT static void softmax_backward_row(float *d, const float *a, int lo, int t, int T)
{
	float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
	for (int j = lo; j <= t; j++)
		dot += a[j] * d[j];
#pragma omp simd
	for (int j = lo; j <= t; j++)
		d[j] = a[j] * (d[j] - dot);
	memset(d, 0, (size_t)lo * sizeof(float));
	memset(d + t + 1, 0, (size_t)(T - t - 1) * sizeof(float));
}

/* One head's backward: datt (T,T) scratch; dq (T,hs) rows ldq apart is
 * overwritten; dk, dv (T,hs) rows ldk apart get beta * themselves plus this
 * head's share (beta 0 for the first query head of a group, 1 after); dout
 * rows ldo apart. */
static void head_backward(float *dq, int ldq, float *dk, float *dv, int ldk, float beta,
			  float *datt, const float *dout, int ldo, const float *q, const float *k,
			  const float *v, const float *att, int T, int hs, int window, float scale)
{
	/* datt = dout v^T over the visible keys, then the softmax backward. */
	for (int i0 = 0; i0 < T; i0 += ATT_BLOCK) {
		int i1 = min_int(T, i0 + ATT_BLOCK), lo = first_key(i0, window);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, i1 - i0, i1 - lo, hs, 1.0f,
			    dout + (size_t)i0 * ldo, ldo, v + (size_t)lo * ldk, ldk, 0.0f,
			    datt + (size_t)i0 * T + lo, T);
		for (int t = i0; t < i1; t++)
			softmax_backward_row(datt + (size_t)t * T, att + (size_t)t * T,
					     first_key(t, window), t, T);
	}
	/* dq = datt k * scale, row blocks over the keys they saw. */
	for (int i0 = 0; i0 < T; i0 += ATT_BLOCK) {
		int i1 = min_int(T, i0 + ATT_BLOCK), lo = first_key(i0, window);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, i1 - i0, hs, i1 - lo, scale,
			    datt + (size_t)i0 * T + lo, T, k + (size_t)lo * ldk, ldk, 0.0f,
			    dq + (size_t)i0 * ldq, ldq);
	}
	/* dv = att^T dout and dk = datt^T q * scale, column blocks over the
	 * queries that saw them (rows j0 .. hi-1 of the column block). */
	for (int j0 = 0; j0 < T; j0 += ATT_BLOCK) {
		int j1 = min_int(T, j0 + ATT_BLOCK);
		int hi = window > 0 ? min_int(T, j1 - 1 + window) : T;
		size_t diag = (size_t)j0 * T + (size_t)j0;
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, j1 - j0, hs, hi - j0, 1.0f,
			    att + diag, T, dout + (size_t)j0 * ldo, ldo, beta,
			    dv + (size_t)j0 * ldk, ldk);
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, j1 - j0, hs, hi - j0, scale,
			    datt + diag, T, q + (size_t)j0 * ldq, ldq, beta, dk + (size_t)j0 * ldk,
			    ldk);
	}
}

static sc_err check_shape(const sc_attn_shape *s)
{
	if (!s || s->B < 0 || s->T < 0 || s->NH <= 0 || s->NKV <= 0 || s->hs <= 0 ||
	    s->NH % s->NKV || s->window < 0)
		return sc_errf(SC_EINVAL,
			       "attention: bad shape B=%d T=%d NH=%d NKV=%d hs=%d window=%d",
			       s ? s->B : 0, s ? s->T : 0, s ? s->NH : 0, s ? s->NKV : 0,
			       s ? s->hs : 0, s ? s->window : 0);
	return SC_OK;
}

/* The state is the probabilities, (B,NH,T,T); the scratch their gradient. */
sc_err sc_cpu_attention_sizes(sc_backend *be, const sc_attn_shape *s, size_t *state,
			      size_t *scratch)
{
	*state = *scratch = 0;
	SC_TRY(check_shape(s));
	return sc_backend_attention_sizes_of("cpu", s, state, scratch); /* one formula */
}

sc_err sc_cpu_attention_forward(sc_backend *be, float *out, float *att, const float *qkv,
				const sc_attn_shape *s)
{
	SC_TRY(check_shape(s));
	sc_cpu_enter(be);
	int T = s->T, NH = s->NH, hs = s->hs, G = s->NH / s->NKV;
	int ld = (NH + 2 * s->NKV) * hs, ldo = NH * hs;
	size_t koff = (size_t)NH * hs, voff = (size_t)(NH + s->NKV) * hs;
	float scale = (float)(1.0 / sqrt((double)hs));
#pragma omp parallel for schedule(static)
	for (int bh = 0; bh < s->B * NH; bh++) {
		int b = bh / NH, h = bh % NH;
		const float *row = qkv + (size_t)b * T * ld, *kv = row + (size_t)(h / G) * hs;
		head_forward(out + (size_t)b * T * ldo + (size_t)h * hs, ldo,
			     att + (size_t)bh * T * T, row + (size_t)h * hs, ld, kv + koff,
			     kv + voff, ld, T, hs, s->window, scale);
	}
	return SC_OK;
}

/* out, the forward's result, is not needed: the probabilities are kept. One
 * task per key/value head: its query heads run in order, so their shares of
 * dk and dv add up in a fixed order whatever the thread count. */
sc_err sc_cpu_attention_backward(sc_backend *be, float *dqkv, float *datt, const float *dout,
				 const float *qkv, const float *out, const float *att,
				 const sc_attn_shape *s)
{
	SC_TRY(check_shape(s));
	sc_cpu_enter(be);
	int T = s->T, NH = s->NH, NKV = s->NKV, hs = s->hs, G = NH / NKV;
	int ld = (NH + 2 * NKV) * hs, ldo = NH * hs;
	size_t koff = (size_t)NH * hs, voff = (size_t)(NH + NKV) * hs;
	float scale = (float)(1.0 / sqrt((double)hs));
#pragma omp parallel for schedule(static)
	for (int bk = 0; bk < s->B * NKV; bk++) {
		int b = bk / NKV, kh = bk % NKV;
		size_t base = (size_t)b * T * ld, kvo = (size_t)kh * hs;
		for (int g = 0; g < G; g++) {
			int h = kh * G + g;
			size_t bh = (size_t)b * NH + h, qo = base + (size_t)h * hs;
			head_backward(dqkv + qo, ld, dqkv + base + koff + kvo,
				      dqkv + base + voff + kvo, ld, g ? 1.0f : 0.0f,
				      datt + bh * T * T,
				      dout + (size_t)b * T * ldo + (size_t)h * hs, ldo, qkv + qo,
				      qkv + base + koff + kvo, qkv + base + voff + kvo,
				      att + bh * T * T, T, hs, s->window, scale);
		}
	}
	return SC_OK;
}

/* One query row q (hs) against cache rows lo..hi of kc, vc (ld apart):
 * out (hs) = softmax(q k^T * scale) v, the scores in p (scratch). The two
 * products are gemv_cpu.c's, on this thread: no OpenBLAS call here, as this
 * runs inside a parallel region that may be inactive (its if clause false),
 * where OpenBLAS's OpenMP build would start a nested team of fresh threads
 * on every call that it finds large enough to split (rows x hs >= 9216, past
 * 144 cached positions at hs = 64): that made decode at 2 threads 3-4x
 * slower than at 1. */
static void attend_row(float *out, float *p, const float *q, const float *kc, const float *vc,
		       int ld, int lo, int hi, int hs, float scale)
{
	int n = hi - lo + 1;
	sc_cpu_gemv_here(1, n, hs, scale, kc + (size_t)lo * ld, ld, q, 0.0f, p);
	softmax_row(p, 0, n - 1, n);
	sc_cpu_gemv_here(0, hs, n, 1.0f, vc + (size_t)lo * ld, ld, p, 0.0f, out);
}

sc_err sc_cpu_attention_kv(sc_backend *be, float *out, float *kc, float *vc, const float *qkv,
			   int pos0, int P, const sc_attn_shape *s)
{
	SC_TRY(check_shape(s));
	if (pos0 < 0 || s->T < 1 || pos0 + s->T > P)
		return sc_errf(SC_EINVAL, "attention_kv: positions %d..%d outside the cache's %d",
			       pos0, pos0 + s->T - 1, P);
	sc_cpu_enter(be);
	int n = s->T, NH = s->NH, NKV = s->NKV, hs = s->hs, G = NH / NKV;
	int ld = (NH + 2 * NKV) * hs, ldc = NKV * hs, ldo = NH * hs;
	float scale = (float)(1.0 / sqrt((double)hs));
	/* the new keys and values into the cache */
	for (int b = 0; b < s->B; b++)
		for (int i = 0; i < n; i++) {
			const float *row = qkv + ((size_t)b * n + i) * ld;
			size_t c = ((size_t)b * P + pos0 + i) * ldc;
			memcpy(kc + c, row + (size_t)NH * hs, (size_t)ldc * sizeof(float));
			memcpy(vc + c, row + (size_t)(NH + NKV) * hs, (size_t)ldc * sizeof(float));
		}
	float *scores = malloc((size_t)(pos0 + n) * sizeof(float) * (size_t)s->B * NH);
	if (!scores)
		return sc_errf(SC_ENOMEM, "attention_kv: out of memory");
#pragma omp parallel for schedule(static) if ((size_t)s->B * NH * (pos0 + n) * hs >= SC_CPU_PAR_MIN)
	for (int bh = 0; bh < s->B * NH; bh++) {
		int b = bh / NH, h = bh % NH;
		float *p = scores + (size_t)bh * (pos0 + n);
		const float *k = kc + (size_t)b * P * ldc + (size_t)(h / G) * hs;
		const float *v = vc + (size_t)b * P * ldc + (size_t)(h / G) * hs;
		for (int i = 0; i < n; i++) {
			int t = pos0 + i;
			const float *q = qkv + ((size_t)b * n + i) * ld + (size_t)h * hs;
			attend_row(out + ((size_t)b * n + i) * ldo + (size_t)h * hs, p, q, k, v,
				   ldc, first_key(t, s->window), t, hs, scale);
		}
	}
	free(scores);
	return SC_OK;
}
