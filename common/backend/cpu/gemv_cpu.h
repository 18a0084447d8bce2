/* gemv_cpu.h — private to the CPU backend: one-row products (a decode step's
 * projections and LM head, attention over a key/value cache), written to
 * read each weight once at memory speed, and split over the OpenMP threads
 * by output element.
 *
 * Two weight layouts, named by what a row of W holds:
 *   out_in = 1  W (n, k), rows ldw apart (nn.Linear's [out, in]):
 *               y = alpha * W x + beta * y, one dot product per row of W
 *   out_in = 0  W (k, n), rows ldw apart (GPT-2's Conv1D [in, out]):
 *               y = alpha * W^T x + beta * y, rows of W added up with x's weights
 * x (k) is contiguous, y (n) too; beta == 0 writes y without reading it,
 * alpha == 0 reads neither W nor x.
 *
 * Kernels: AVX-512, AVX2 + FMA and plain C, the best one the CPU has picked
 * at run time (no build flags). How each output element is summed is fixed
 * by the kernel, n and k alone, so a result does not depend on the thread
 * count; it does depend on the kernel (vector width, FMA) and differs from
 * OpenBLAS's sgemm in rounding only.
 */
#ifndef SC_GEMV_CPU_H
#define SC_GEMV_CPU_H

#include "sc_err.h"

typedef enum sc_cpu_gemv_kind {
	SC_CPU_GEMV_AUTO = -1, /* the best the CPU supports */
	SC_CPU_GEMV_C = 0,
	SC_CPU_GEMV_AVX2,   /* AVX2 + FMA */
	SC_CPU_GEMV_AVX512, /* AVX-512F */
	SC_CPU_GEMV_KINDS
} sc_cpu_gemv_kind;

/* Nonzero when this CPU can run kind (SC_CPU_GEMV_AUTO: always). */
int sc_cpu_gemv_supported(sc_cpu_gemv_kind kind);

/* Static name of kind ("c", "avx2", "avx512", "auto"). */
const char *sc_cpu_gemv_name(sc_cpu_gemv_kind kind);

/* The kernel every later call uses, for the whole process (tests compare
 * the kernels; SC_CPU_GEMV_AUTO restores the default). SC_ENOTSUP when the
 * CPU lacks it. Not to be called while another thread runs a product. */
sc_err sc_cpu_gemv_force(sc_cpu_gemv_kind kind);

/* The kernel calls use now (never SC_CPU_GEMV_AUTO). */
sc_cpu_gemv_kind sc_cpu_gemv_kind_now(void);

/* The product described above; n, k >= 1, ldw >= k (out_in) or n. Split
 * over omp_get_max_threads() threads when it is large enough to pay (and
 * this thread is not in a parallel region already). Borrows every pointer;
 * writes y only. SC_EINVAL on a bad shape; SC_ENOMEM (the partial sums of a
 * large in_out product) with y untouched. */
sc_err sc_cpu_gemv(int out_in, int n, int k, float alpha, const float *w, int ldw, const float *x,
		   float beta, float *y);

/* The same on the calling thread alone, for use inside an OpenMP region of
 * one's own (attention over a cache, per head); the caller checks the shape. */
void sc_cpu_gemv_here(int out_in, int n, int k, float alpha, const float *w, int ldw,
		      const float *x, float beta, float *y);

#endif
