/* cpu_ops.h — private to the CPU backend: the operations that live outside
 * backend_cpu.c, with the signatures of their sc_backend_ops entries (see
 * sc_backend.h for each one's contract), and the helpers they share.
 */
#ifndef SC_CPU_OPS_H
#define SC_CPU_OPS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "sc_adamw.h"
#include "sc_backend.h"

/* Code marked SC_CPU_VEC may be vectorised with its selects computed on both
 * sides: GCC's default -ftrapping-math otherwise refuses to if-convert a loop
 * whose float comparisons pick between computed values. No value changes;
 * only the ordering of possible floating-point exceptions.
 *
 * SC_CPU_HOT marks the hot loops of the elementwise and row operations: they
 * are also compiled for AVX2, picked at load time on CPUs that have it (the
 * build itself targets baseline x86-64). Elementwise results are the same
 * either way (no FMA contraction in ISO C mode); a vectorised sum's grouping
 * follows the vector width, so it is fixed for a given machine. Not under
 * ThreadSanitizer: the clones' resolvers run at load time, before its
 * runtime is up, and crash there. */
#if defined(__GNUC__) && !defined(__clang__)
#define SC_CPU_VEC __attribute__((optimize("no-trapping-math")))
#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__)
#define SC_CPU_HOT __attribute__((optimize("no-trapping-math"), target_clones("avx2", "default")))
#else
#define SC_CPU_HOT SC_CPU_VEC
#endif
#else
#define SC_CPU_VEC
#define SC_CPU_HOT
#endif

/* expf for vectorised loops (plain C that GCC vectorises): relative error
 * under 1.5 ulp for results in [2^-126, 2^127]; x < -87 gives 0, x > 88
 * saturates at e^88, NaN stays NaN. Cody-Waite reduction by ln 2, then a
 * degree-7 polynomial (Cephes' expf coefficients). */
SC_CPU_VEC static inline float sc_cpu_expf(float x)
{
	const float lo = -87.0f, hi = 88.0f;
	float xc = x >= lo ? x : lo;
	xc = xc <= hi ? xc : hi;
	/* n = round(xc / ln 2), by adding and removing 1.5 * 2^23. */
	float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
	float r = xc - n * 0.693359375f;
	r = r - n * -2.12194440e-4f;
	float p = 1.9875691500e-4f;
	p = p * r + 1.3981999507e-3f;
	p = p * r + 8.3334519073e-3f;
	p = p * r + 4.1665795894e-2f;
	p = p * r + 1.6666665459e-1f;
	p = p * r + 5.0000001201e-1f;
	p = p * r * r + r + 1.0f;
	int32_t bits = ((int32_t)n + 127) * (1 << 23); /* 2^n, n in [-126, 127] */
	float scale;
	memcpy(&scale, &bits, sizeof(scale));
	/* Both arms of these selects are plain values, so they vectorise. */
	float keep = x >= lo ? 1.0f : 0.0f;
	float nan = x == x ? 0.0f : x;
	return p * scale * keep + nan;
}

/* "#pragma omp simd reduction(max : var)" where it vectorises: clang's
 * vectoriser needs -ffinite-math-only for a float max and would warn. */
#define SC_CPU_PRAGMA_(x) _Pragma(#x)
#if defined(__clang__)
#define SC_CPU_SIMD_MAX(var)
#else
#define SC_CPU_SIMD_MAX(var) SC_CPU_PRAGMA_(omp simd reduction(max : var))
#endif

/* Elementwise loops below this many elements run on the calling thread.
 *
 * No OpenBLAS call inside a parallel region that can be inactive (an if
 * clause that may be false, or a team of one): OpenBLAS's OpenMP build only
 * stays single-threaded when omp_in_parallel() is true, so there it opens a
 * nested region, and libgomp starts fresh threads for every nested team.
 * Inside an active region (no if clause, 2+ threads) OpenBLAS runs on the
 * calling thread; one-row products go to gemv_cpu.h. */
#define SC_CPU_PAR_MIN 32768

/* Makes OpenMP regions (and OpenBLAS, which follows omp_get_max_threads()
 * of the calling thread in its OpenMP build) on this thread use be's thread
 * count. Called at the top of every operation: the thread that runs the
 * operations need not be the one that opened the backend. */
void sc_cpu_enter(sc_backend *be);

sc_err sc_cpu_layernorm_forward(sc_backend *be, float *out, float *mean, float *rstd,
				const float *inp, const float *w, const float *b, int N, int C,
				float eps);
sc_err sc_cpu_layernorm_backward(sc_backend *be, float *dinp, const float *dout, const float *inp,
				 const float *w, const float *mean, const float *rstd, int N,
				 int C);
sc_err sc_cpu_rmsnorm_forward(sc_backend *be, float *out, float *rstd, const float *inp,
			      const float *w, int N, int C, float eps);
sc_err sc_cpu_rmsnorm_backward(sc_backend *be, float *dinp, const float *dout, const float *inp,
			       const float *w, const float *rstd, int N, int C);
sc_err sc_cpu_rope(sc_backend *be, float *qkv, const float *cos, const float *sin, int B, int T,
		   int NH, int NKV, int hs, int inverse);
sc_err sc_cpu_swiglu_forward(sc_backend *be, float *out, const float *gu, int N, int F);
sc_err sc_cpu_swiglu_backward(sc_backend *be, float *dgu, const float *dout, const float *gu, int N,
			      int F);
sc_err sc_cpu_attention_sizes(sc_backend *be, const sc_attn_shape *s, size_t *state,
			      size_t *scratch);
sc_err sc_cpu_attention_forward(sc_backend *be, float *out, float *att, const float *qkv,
				const sc_attn_shape *s);
sc_err sc_cpu_attention_kv(sc_backend *be, float *out, float *kc, float *vc, const float *qkv,
			   int pos0, int P, const sc_attn_shape *s);
sc_err sc_cpu_attention_backward(sc_backend *be, float *dqkv, float *datt, const float *dout,
				 const float *qkv, const float *out, const float *att,
				 const sc_attn_shape *s);
sc_err sc_cpu_gelu_forward(sc_backend *be, float *out, const float *inp, size_t n);
sc_err sc_cpu_gelu_backward(sc_backend *be, float *dinp, const float *inp, const float *dout,
			    size_t n);
sc_err sc_cpu_crossentropy(sc_backend *be, float *losses, float *logits, const int32_t *targets,
			   int N, int V, float dscale);

/* The oneDNN state bf16 frozen weights run on, or NULL: fp32 tiles (no
 * oneDNN in the build, no bf16 instructions, or sc_backend_cpu_bf16_tiles). */
struct sc_cpu_dnnl *sc_cpu_dnnl_of(sc_backend *be);

/* qgemm_cpu.c: gemm_q, tiles of the quantized weight through be's gemm. */
sc_err sc_cpu_gemm_q(sc_backend *be, int trans_a, int trans_b, int m, int n, int k, float alpha,
		     const float *a, int lda, const sc_qweight *b, float beta, float *c, int ldc,
		     float *tile, size_t tile_floats);
/* encoder_forward_q: each embedding row dequantized as gemm_q's tiles are. */
sc_err sc_cpu_encoder_forward_q(sc_backend *be, float *out, const int32_t *tokens,
				const sc_qweight *wte, const float *wpe, int B, int T, int C);

#endif
