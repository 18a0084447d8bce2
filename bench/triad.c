/* triad.c — the machine's memory bandwidth, STREAM-style, for the decode
 * roofline of bench/generate_bench.sh: a[i] = b[i] + s * c[i] over three
 * arrays of doubles far larger than the caches, split statically over the
 * OpenMP threads (each thread first touches the part it later streams), best
 * of K repetitions. Bytes counted as STREAM does: 3 x 8 per element (two
 * reads, one write; the write-allocate read is not counted). Also a read-only
 * sum over the same arrays, closer to what decode does with its weights.
 *   sc_bench_triad [--threads T] [--mib M] [--reps K]
 * Prints one JSON line: {"threads","mib","triad_gbs","read_gbs","blas"}. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
	int threads = 1, reps = 10;
	long mib = 256; /* per array */
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--threads"))
			threads = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--mib"))
			mib = atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--reps"))
			reps = atoi(argv[i + 1]);
		else {
			fprintf(stderr,
				"usage: sc_bench_triad [--threads T] [--mib M] [--reps K]\n");
			return 2;
		}
	}
	if (threads < 1 || mib < 1 || reps < 1) {
		fprintf(stderr, "sc_bench_triad: threads, mib and reps must be >= 1\n");
		return 2;
	}
	omp_set_num_threads(threads);
	long n = mib * 1024 * 1024 / (long)sizeof(double);
	double *a = aligned_alloc(64, (size_t)n * sizeof(double));
	double *b = aligned_alloc(64, (size_t)n * sizeof(double));
	double *c = aligned_alloc(64, (size_t)n * sizeof(double));
	if (!a || !b || !c) {
		fprintf(stderr, "sc_bench_triad: out of memory for 3 x %ld MiB\n", mib);
		return 1;
	}
#pragma omp parallel for schedule(static)
	for (long i = 0; i < n; i++) {
		a[i] = 0.0;
		b[i] = 1.0;
		c[i] = 2.0;
	}
	const double s = 3.0;
	double best_triad = 1e30, best_read = 1e30, sink = 0;
	for (int r = 0; r < reps; r++) {
		double t0 = now_s();
#pragma omp parallel for schedule(static)
		for (long i = 0; i < n; i++)
			a[i] = b[i] + s * c[i];
		double t1 = now_s();
		double sum = 0;
		/* 8 independent partial sums: bounded by memory, not by add latency */
#pragma omp parallel for schedule(static) reduction(+ : sum)
		for (long i = 0; i < n; i += 8) {
			double p[8];
			for (int j = 0; j < 8; j++)
				p[j] = a[i + j] + b[i + j] + c[i + j];
			sum += ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
		}
		double t2 = now_s();
		sink += sum;
		if (t1 - t0 < best_triad)
			best_triad = t1 - t0;
		if (t2 - t1 < best_read)
			best_read = t2 - t1;
	}
	double bytes = 3.0 * (double)n * sizeof(double);
	printf("{\"threads\":%d,\"mib\":%ld,\"triad_gbs\":%.2f,\"read_gbs\":%.2f,"
	       "\"check\":%d,\"blas\":\"%s, core %s\"}\n",
	       threads, mib, bytes / best_triad / 1e9, bytes / best_read / 1e9,
	       sink == (double)reps * (double)n * 10.0, openblas_get_config(),
	       openblas_get_corename());
	free(a);
	free(b);
	free(c);
	return 0;
}
