/* gemv_cpu.c — one-row products (see gemv_cpu.h): the kernels for both
 * weight layouts in plain C, AVX2 + FMA and AVX-512, and the split over
 * threads. Measured on the 2-core benchmark machine (docs/benchmarks.md),
 * what streams fastest is one thread reading W in address order, one row
 * at a time: reading four rows at once (as OpenBLAS's sgemv does) ran at
 * half the speed, and so did splitting a row between threads.
 *
 * out_in (dot products): one row of W at a time against x, four vector
 * accumulators along k, the k tail through a masked load, then one
 * horizontal sum; the rows are split over the threads.
 *
 * in_out (scaled rows added up): acc[j] = fma(x[i], W[i][j], acc[j]) row
 * by row, acc (up to COLS columns) in L1; each column's arithmetic is the
 * same in every block and at every vector lane. Large products cut k into
 * KSPLIT pieces summed apart and then added in order (in_out_part).
 */
#include <omp.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gemv_cpu.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define GEMV_X86 1
#include <immintrin.h>
#define GEMV_AVX2   __attribute__((target("avx2,fma")))
#define GEMV_AVX512 __attribute__((target("avx512f,avx2,fma")))
#else
#define GEMV_X86 0
#endif

#define VEC          16    /* floats per unit of work: an AVX-512 vector, a cache line */
#define COLS         4096  /* in_out: columns accumulated at once (16 KiB, in L1) */
#define KSPLIT       8     /* in_out: pieces of k summed apart when split (see below) */
#define GEMV_PAR_MIN 65536 /* n * k below this runs on the calling thread */
#define PAGE_FLOATS  1024  /* 4 KiB */

/* out_in: y (n) = alpha * W x (+ beta * y), W (n, k). */
typedef void (*dots_fn)(float *y, int n, int k, float alpha, const float *w, size_t ldw,
			const float *x, float beta);
/* in_out: acc (n) = sum_i x[i] W[i][0 .. n), W (k, n), n <= COLS; acc has
 * room for n rounded up to VEC. */
typedef void (*rows_fn)(float *acc, int n, int k, const float *w, size_t ldw, const float *x);

static atomic_int forced = SC_CPU_GEMV_AUTO;

/* y = alpha * s (+ beta * y): the store every product ends with. */
static inline void put(float *y, float s, float alpha, float beta)
{
	*y = beta == 0.0f ? alpha * s : alpha * s + beta * *y;
}

static int min_int(int a, int b)
{
	return a < b ? a : b;
}

/* ---- plain C ---- */

static void dots_c(float *y, int n, int k, float alpha, const float *w, size_t ldw, const float *x,
		   float beta)
{
	for (int j = 0; j < n; j++) {
		const float *wj = w + (size_t)j * ldw;
		float s = 0.0f;
#pragma omp simd reduction(+ : s)
		for (int i = 0; i < k; i++)
			s += wj[i] * x[i];
		put(y + j, s, alpha, beta);
	}
}

static void rows_c(float *acc, int n, int k, const float *w, size_t ldw, const float *x)
{
	memset(acc, 0, (size_t)n * sizeof(float));
	for (int i = 0; i < k; i++) {
		const float *wi = w + (size_t)i * ldw;
		float xi = x[i];
#pragma omp simd
		for (int j = 0; j < n; j++)
			acc[j] += xi * wi[j];
	}
}

#if GEMV_X86

/* ---- AVX2 + FMA ---- */

/* mask_tab + 8 - r: the first r of 8 lanes on. */
static const int mask_tab[16] = { -1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0 };

GEMV_AVX2 static inline float hsum8(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

/* One row at a time, so that W streams in address order (several rows at
 * once read slower here); four accumulators hide the FMA latency. */
GEMV_AVX2 static void dots_avx2(float *y, int n, int k, float alpha, const float *w, size_t ldw,
				const float *x, float beta)
{
	int k32 = k & ~31, k8 = k & ~7, r = k - k8;
	__m256i m = _mm256_loadu_si256((const __m256i *)(mask_tab + 8 - r));
	for (int j = 0; j < n; j++) {
		const float *wj = w + (size_t)j * ldw;
		__m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
		int i = 0;
		for (; i < k32; i += 32) {
			a0 = _mm256_fmadd_ps(_mm256_loadu_ps(wj + i), _mm256_loadu_ps(x + i), a0);
			a1 = _mm256_fmadd_ps(_mm256_loadu_ps(wj + i + 8),
					     _mm256_loadu_ps(x + i + 8), a1);
			a2 = _mm256_fmadd_ps(_mm256_loadu_ps(wj + i + 16),
					     _mm256_loadu_ps(x + i + 16), a2);
			a3 = _mm256_fmadd_ps(_mm256_loadu_ps(wj + i + 24),
					     _mm256_loadu_ps(x + i + 24), a3);
		}
		for (; i < k8; i += 8)
			a0 = _mm256_fmadd_ps(_mm256_loadu_ps(wj + i), _mm256_loadu_ps(x + i), a0);
		if (r)
			a1 = _mm256_fmadd_ps(_mm256_maskload_ps(wj + k8, m),
					     _mm256_maskload_ps(x + k8, m), a1);
		put(y + j, hsum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3))),
		    alpha, beta);
	}
}

GEMV_AVX2 static void rows_avx2(float *acc, int n, int k, const float *w, size_t ldw,
				const float *x)
{
	int n32 = n & ~31, n8 = n & ~7, r = n - n8;
	__m256i m = _mm256_loadu_si256((const __m256i *)(mask_tab + 8 - r));
	memset(acc, 0, (size_t)(n8 + (r ? 8 : 0)) * sizeof(float));
	for (int i = 0; i < k; i++) {
		const float *wi = w + (size_t)i * ldw;
		__m256 xi = _mm256_set1_ps(x[i]);
		int j = 0;
		for (; j < n32; j += 32) {
			__m256 a0 =
			    _mm256_fmadd_ps(xi, _mm256_loadu_ps(wi + j), _mm256_load_ps(acc + j));
			__m256 a1 = _mm256_fmadd_ps(xi, _mm256_loadu_ps(wi + j + 8),
						    _mm256_load_ps(acc + j + 8));
			__m256 a2 = _mm256_fmadd_ps(xi, _mm256_loadu_ps(wi + j + 16),
						    _mm256_load_ps(acc + j + 16));
			__m256 a3 = _mm256_fmadd_ps(xi, _mm256_loadu_ps(wi + j + 24),
						    _mm256_load_ps(acc + j + 24));
			_mm256_store_ps(acc + j, a0);
			_mm256_store_ps(acc + j + 8, a1);
			_mm256_store_ps(acc + j + 16, a2);
			_mm256_store_ps(acc + j + 24, a3);
		}
		for (; j < n8; j += 8)
			_mm256_store_ps(acc + j, _mm256_fmadd_ps(xi, _mm256_loadu_ps(wi + j),
								 _mm256_load_ps(acc + j)));
		if (r)
			_mm256_store_ps(acc + n8,
					_mm256_fmadd_ps(xi, _mm256_maskload_ps(wi + n8, m),
							_mm256_load_ps(acc + n8)));
	}
}

/* ---- AVX-512 ---- */

GEMV_AVX512 static void dots_avx512(float *y, int n, int k, float alpha, const float *w, size_t ldw,
				    const float *x, float beta)
{
	int k64 = k & ~63, k16 = k & ~15, r = k - k16;
	__mmask16 m = (__mmask16)((1u << r) - 1);
	for (int j = 0; j < n; j++) {
		const float *wj = w + (size_t)j * ldw;
		__m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
		int i = 0;
		for (; i < k64; i += 64) {
			a0 = _mm512_fmadd_ps(_mm512_loadu_ps(wj + i), _mm512_loadu_ps(x + i), a0);
			a1 = _mm512_fmadd_ps(_mm512_loadu_ps(wj + i + 16),
					     _mm512_loadu_ps(x + i + 16), a1);
			a2 = _mm512_fmadd_ps(_mm512_loadu_ps(wj + i + 32),
					     _mm512_loadu_ps(x + i + 32), a2);
			a3 = _mm512_fmadd_ps(_mm512_loadu_ps(wj + i + 48),
					     _mm512_loadu_ps(x + i + 48), a3);
		}
		for (; i < k16; i += 16)
			a0 = _mm512_fmadd_ps(_mm512_loadu_ps(wj + i), _mm512_loadu_ps(x + i), a0);
		if (r)
			a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, wj + k16),
					     _mm512_maskz_loadu_ps(m, x + k16), a1);
		put(y + j,
		    _mm512_reduce_add_ps(
			_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3))),
		    alpha, beta);
	}
}

GEMV_AVX512 static void rows_avx512(float *acc, int n, int k, const float *w, size_t ldw,
				    const float *x)
{
	int n64 = n & ~63, n16 = n & ~15, r = n - n16;
	__mmask16 m = (__mmask16)((1u << r) - 1);
	memset(acc, 0, (size_t)(n16 + (r ? 16 : 0)) * sizeof(float));
	for (int i = 0; i < k; i++) {
		const float *wi = w + (size_t)i * ldw;
		__m512 xi = _mm512_set1_ps(x[i]);
		int j = 0;
		for (; j < n64; j += 64) {
			__m512 a0 =
			    _mm512_fmadd_ps(xi, _mm512_loadu_ps(wi + j), _mm512_load_ps(acc + j));
			__m512 a1 = _mm512_fmadd_ps(xi, _mm512_loadu_ps(wi + j + 16),
						    _mm512_load_ps(acc + j + 16));
			__m512 a2 = _mm512_fmadd_ps(xi, _mm512_loadu_ps(wi + j + 32),
						    _mm512_load_ps(acc + j + 32));
			__m512 a3 = _mm512_fmadd_ps(xi, _mm512_loadu_ps(wi + j + 48),
						    _mm512_load_ps(acc + j + 48));
			_mm512_store_ps(acc + j, a0);
			_mm512_store_ps(acc + j + 16, a1);
			_mm512_store_ps(acc + j + 32, a2);
			_mm512_store_ps(acc + j + 48, a3);
		}
		for (; j < n16; j += 16)
			_mm512_store_ps(acc + j, _mm512_fmadd_ps(xi, _mm512_loadu_ps(wi + j),
								 _mm512_load_ps(acc + j)));
		if (r)
			_mm512_store_ps(acc + n16,
					_mm512_fmadd_ps(xi, _mm512_maskz_loadu_ps(m, wi + n16),
							_mm512_load_ps(acc + n16)));
	}
}

#endif /* GEMV_X86 */

/* ---- choice of kernel ---- */

int sc_cpu_gemv_supported(sc_cpu_gemv_kind kind)
{
	switch (kind) {
	case SC_CPU_GEMV_AUTO:
	case SC_CPU_GEMV_C: return 1;
#if GEMV_X86
	case SC_CPU_GEMV_AVX2:
		return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
	case SC_CPU_GEMV_AVX512:
		return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") &&
		       __builtin_cpu_supports("fma");
#endif
	default: return 0;
	}
}

const char *sc_cpu_gemv_name(sc_cpu_gemv_kind kind)
{
	static const char *names[SC_CPU_GEMV_KINDS] = { "c", "avx2", "avx512" };
	if (kind == SC_CPU_GEMV_AUTO)
		return "auto";
	return kind >= 0 && kind < SC_CPU_GEMV_KINDS ? names[kind] : "?";
}

sc_err sc_cpu_gemv_force(sc_cpu_gemv_kind kind)
{
	if (kind < SC_CPU_GEMV_AUTO || kind >= SC_CPU_GEMV_KINDS)
		return sc_errf(SC_EINVAL, "gemv: no kernel %d", (int)kind);
	if (!sc_cpu_gemv_supported(kind))
		return sc_errf(SC_ENOTSUP, "gemv: this CPU cannot run the %s kernel",
			       sc_cpu_gemv_name(kind));
	atomic_store_explicit(&forced, kind, memory_order_relaxed);
	return SC_OK;
}

sc_cpu_gemv_kind sc_cpu_gemv_kind_now(void)
{
	int kind = atomic_load_explicit(&forced, memory_order_relaxed);
	if (kind != SC_CPU_GEMV_AUTO)
		return (sc_cpu_gemv_kind)kind;
	for (kind = SC_CPU_GEMV_KINDS - 1; kind > SC_CPU_GEMV_C; kind--)
		if (sc_cpu_gemv_supported((sc_cpu_gemv_kind)kind))
			break;
	return (sc_cpu_gemv_kind)kind;
}

static void pick(dots_fn *dots, rows_fn *rows)
{
	switch (sc_cpu_gemv_kind_now()) {
#if GEMV_X86
	case SC_CPU_GEMV_AVX512:
		*dots = dots_avx512;
		*rows = rows_avx512;
		return;
	case SC_CPU_GEMV_AVX2:
		*dots = dots_avx2;
		*rows = rows_avx2;
		return;
#endif
	default:
		*dots = dots_c;
		*rows = rows_c;
		return;
	}
}

/* ---- the split over threads ---- */

/* Thread t of nt's share [*lo, *hi) of n outputs, in whole units of VEC. */
static void share(int n, int t, int nt, int *lo, int *hi)
{
	long units = (n + VEC - 1) / VEC;
	*lo = min_int(n, (int)(units * t / nt) * VEC);
	*hi = min_int(n, (int)(units * (t + 1) / nt) * VEC);
}

/* Where an accumulator for rows starting at w goes in a buffer at base (4
 * KiB aligned, with 4 KiB to spare): 64 bytes below w's offset in a 4 KiB
 * page. A store to acc and a later load of W whose addresses agree in their
 * low 12 bits stall the load (4K aliasing); this puts the next such load a
 * whole page of W after the store. Measured: 19 -> 28 GB/s at n = 3072. */
static float *acc_at(float *base, const float *w)
{
	uintptr_t off = ((uintptr_t)w - 64) & 4095 & ~(uintptr_t)63;
	return (float *)((char *)base + off);
}

/* in_out on the calling thread: blocks of COLS columns, summed on the stack. */
static void in_out_serial(rows_fn rows, float *y, int n, int k, float alpha, const float *w,
			  size_t ldw, const float *x, float beta)
{
	float buf[COLS + PAGE_FLOATS] __attribute__((aligned(4096)));
	for (int c0 = 0; c0 < n; c0 += COLS) {
		int nc = min_int(COLS, n - c0);
		float *acc = acc_at(buf, w + c0);
		rows(acc, nc, k, w + c0, ldw, x);
		for (int j = 0; j < nc; j++)
			put(y + c0 + j, acc[j], alpha, beta);
	}
}

/* in_out split: k cut into KSPLIT pieces, a function of k alone (so the
 * grouping of the sums is the same at every thread count); each piece's rows
 * summed into its own row of part (KSPLIT, ldp), block by block of COLS
 * columns, the tasks dealt out in order; then the pieces added up in order,
 * the columns split over the threads. Each thread thus reads whole rows of W
 * in address order: splitting the columns instead had each thread read short
 * pieces of every row, measured up to 2x slower at 2 threads on the benchmark
 * machine (docs/benchmarks.md). Thread t of nt; a barrier between the two steps. */
static void in_out_part(rows_fn rows, float *part, size_t ldp, int t, int nt, int n, int k,
			const float *w, size_t ldw, const float *x)
{
	int blocks = (n + COLS - 1) / COLS, tasks = KSPLIT * blocks;
	for (int task = tasks * t / nt; task < tasks * (t + 1) / nt; task++) {
		int p = task / blocks, c0 = task % blocks * COLS;
		int i0 = (int)((long)k * p / KSPLIT), i1 = (int)((long)k * (p + 1) / KSPLIT);
		rows(acc_at(part, w + c0) + (size_t)p * ldp + c0, min_int(COLS, n - c0), i1 - i0,
		     w + (size_t)i0 * ldw + c0, ldw, x + i0);
	}
}

static void in_out_sum(float *y, float *part, size_t ldp, int t, int nt, int n, float alpha,
		       float beta, const float *w)
{
	int lo, hi;
	part = acc_at(part, w);
	share(n, t, nt, &lo, &hi);
	for (int j = lo; j < hi; j++) {
		float s = part[j];
		for (int p = 1; p < KSPLIT; p++)
			s += part[(size_t)p * ldp + j];
		put(y + j, s, alpha, beta);
	}
}

/* alpha == 0: y = beta * y, W and x unread (as BLAS does). */
static void scale_only(float *y, int n, float beta)
{
	for (int j = 0; j < n; j++)
		y[j] = beta == 0.0f ? 0.0f : beta * y[j];
}

void sc_cpu_gemv_here(int out_in, int n, int k, float alpha, const float *w, int ldw,
		      const float *x, float beta, float *y)
{
	if (alpha == 0.0f) {
		scale_only(y, n, beta);
		return;
	}
	dots_fn dots;
	rows_fn rows;
	pick(&dots, &rows);
	if (out_in)
		dots(y, n, k, alpha, w, (size_t)ldw, x, beta);
	else
		in_out_serial(rows, y, n, k, alpha, w, (size_t)ldw, x, beta);
}

sc_err sc_cpu_gemv(int out_in, int n, int k, float alpha, const float *w, int ldw, const float *x,
		   float beta, float *y)
{
	if (n < 1 || k < 1 || ldw < (out_in ? k : n))
		return sc_errf(SC_EINVAL, "gemv: bad shape n=%d k=%d ldw=%d", n, k, ldw);
	if (alpha == 0.0f) {
		scale_only(y, n, beta);
		return SC_OK;
	}
	dots_fn dots;
	rows_fn rows;
	pick(&dots, &rows);
	size_t ld = (size_t)ldw;
	int big = (size_t)n * (size_t)k >= GEMV_PAR_MIN;
	int threads = big && !omp_in_parallel() ? omp_get_max_threads() : 1;
	if (out_in) {
		if (threads <= 1 || n < 2 * VEC) {
			dots(y, n, k, alpha, w, ld, x, beta);
			return SC_OK;
		}
#pragma omp parallel num_threads(threads)
		{
			int lo, hi;
			share(n, omp_get_thread_num(), omp_get_num_threads(), &lo, &hi);
			if (hi > lo)
				dots(y + lo, hi - lo, k, alpha, w + (size_t)lo * ld, ld, x, beta);
		}
		return SC_OK;
	}
	if (!big || k < KSPLIT) {
		in_out_serial(rows, y, n, k, alpha, w, ld, x, beta);
		return SC_OK;
	}
	/* rows of whole pages, so that acc_at's offset holds for every row */
	size_t ldp = ((size_t)n + PAGE_FLOATS - 1) / PAGE_FLOATS * PAGE_FLOATS;
	float *part = aligned_alloc(4096, (KSPLIT * ldp + PAGE_FLOATS) * sizeof(float));
	if (!part)
		return sc_errf(SC_ENOMEM, "gemv: out of memory for %d x %zu partial sums", KSPLIT,
			       ldp);
	if (threads <= 1) {
		in_out_part(rows, part, ldp, 0, 1, n, k, w, ld, x);
		in_out_sum(y, part, ldp, 0, 1, n, alpha, beta, w);
	} else {
#pragma omp parallel num_threads(threads)
		{
			int t = omp_get_thread_num(), nt = omp_get_num_threads();
			in_out_part(rows, part, ldp, t, nt, n, k, w, ld, x);
#pragma omp barrier
			in_out_sum(y, part, ldp, t, nt, n, alpha, beta, w);
		}
	}
	free(part);
	return SC_OK;
}
