/* bf16_dnnl.h — private to the CPU backend: bf16 x bf16 -> fp32 GEMMs of
 * frozen bf16 weights through oneDNN's matmul, for CPUs whose instructions
 * multiply bf16 (AVX512-BF16: vdpbf16ps; AMX-BF16). docs/benchmarks.md
 * ("CPU GEMMs: OpenBLAS vs oneDNN") measured 1.8-2.6x OpenBLAS's fp32 per
 * product on such a CPU. Built from bf16_dnnl.c when CMake finds oneDNN
 * (libdnnl-dev), else from bf16_dnnl_absent.c, whose functions say so.
 *
 * Threads: Debian's oneDNN runs on OpenMP (DNNL_CPU_RUNTIME = OMP), the
 * same libgomp pool as OpenBLAS's OpenMP build and the backend's loops, so
 * the backend's omp_set_num_threads (sc_cpu_enter) sets its threads too:
 * no second pool competes for the cores. A primitive is made for one
 * thread count, which is therefore part of its cache key.
 *
 * Concurrency: one sc_cpu_dnnl serves one backend; its calls take its
 * mutex around a primitive's lookup and execution (the rounding of the
 * activation goes into the caller's scratch, outside it), because a
 * primitive's scratchpad is its own unless oneDNN was built for concurrent
 * execution (Debian's is not), so one primitive must not run twice at once.
 */
#ifndef SC_BF16_DNNL_H
#define SC_BF16_DNNL_H

#include <stddef.h>
#include <stdint.h>

#include "sc_err.h"

typedef struct sc_cpu_dnnl sc_cpu_dnnl;

/* Nonzero when this build has oneDNN and the CPU multiplies bf16 in
 * hardware (oneDNN's effective ISA avx512_core_bf16 or above, which also
 * means the OS saves the AVX-512 state). */
int sc_cpu_dnnl_usable(void);

/* Nonzero when oneDNN's effective ISA has AMX (avx512_core_amx or above):
 * with sc_backend_cpu_bf16_matmul_pays, the automatic choice of path. */
int sc_cpu_dnnl_has_amx(void);

/* "oneDNN 2.6.3, avx512_core_bf16", "oneDNN 2.6.3, avx2: no bf16
 * instructions" or "built without oneDNN". Borrowed static string. */
const char *sc_cpu_dnnl_describe(void);

/* *out = new state (no oneDNN object yet: the engine and primitives are
 * made on first use); free with sc_cpu_dnnl_free. SC_ENOTSUP when not
 * sc_cpu_dnnl_usable, SC_ENOMEM. */
sc_err sc_cpu_dnnl_new(sc_cpu_dnnl **out);

/* Releases d, its primitives and engine. Accepts NULL. */
void sc_cpu_dnnl_free(sc_cpu_dnnl *d);

/* c (m,n) = alpha * op(a) (m,k) @ op(W) (k,n) + beta * c (gemm_q's
 * contract, sc_backend.h), W the bf16 weight w: stored (n,k) when trans_b,
 * else (k,n), rows packed (ld = its column count). op(a) is rounded to bf16
 * (sc_bf16_from_f32's rounding) into scratch (scratch_elems bf16, at least
 * k: rows are then done scratch_elems / k at a time), the product summed in
 * fp32 by oneDNN. The primitive for (m, n, k, transposes, ldc, alpha, beta,
 * threads) is made at the first call and kept. Errors: SC_EINVAL for a bad
 * shape, SC_ENOMEM, SC_EIO naming oneDNN's status. */
sc_err sc_cpu_dnnl_gemm(sc_cpu_dnnl *d, int trans_a, int trans_b, int m, int n, int k, float alpha,
			const float *a, int lda, const uint16_t *w, float beta, float *c, int ldc,
			uint16_t *scratch, size_t scratch_elems);

/* c (m,n) = alpha * a (m,k) @ op(W) (k,n) + beta * c with both inputs
 * bf16 already: a packed (rows k apart), W as in sc_cpu_dnnl_gemm (packed,
 * (n,k) when trans_b, else (k,n)); the product summed in fp32. For weights
 * dequantized to bf16 a panel at a time (qgemm_cpu.c), one rounded copy of
 * the activation serving every panel. Errors as sc_cpu_dnnl_gemm's. */
sc_err sc_cpu_dnnl_gemm_bf16(sc_cpu_dnnl *d, int trans_b, int m, int n, int k, float alpha,
			     const uint16_t *a, const uint16_t *w, float beta, float *c, int ldc);

/* a (rows, cols), rows lda apart, or with trans a^T of the stored (cols,
 * rows) — rounded to bf16 into out (rows, cols) packed; sc_bf16_from_f32's
 * rounding. Rows split over the OpenMP threads when large. */
void sc_cpu_bf16_round(uint16_t *out, const float *a, int lda, int trans, int rows, int cols);

#endif
