/* codec_bench.c — throughput of the wire codecs (common/net/codec.c) on one
 * hand-over tensor, one thread:
 *   sc_bench_codec [--rows R] [--cols C] [--reps K]     (default 2048 x 768)
 * For each encoding: encode (round to nearest), encode with error feedback,
 * encode with stochastic rounding (int8 / int4) and decode, each the best of
 * K timed runs. Prints GB/s of float32 tensor data (rows * cols * 4 bytes)
 * per second, one row per encoding. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sc_codec.h"
#include "sc_rng.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

enum { ENCODE, FEEDBACK, STOCHASTIC, DECODE };

/* Seconds for one run of op, the best of reps runs of 20 ms or more each. */
static double best_time(int op, enum sc_wire w, const float *x, float *y, float *res, sc_rng *rng,
			void *frame, size_t rows, size_t cols, int reps)
{
	double best = 1e30;
	for (int k = 0; k < reps; k++) {
		int n = 0;
		double t0 = now_s(), t;
		do {
			if (op == DECODE) {
				if (sc_wire_decode(w, frame, sc_wire_bytes(w, rows, cols), rows,
						   cols, y)) {
					fprintf(stderr, "sc_bench_codec: decode failed\n");
					exit(1);
				}
			} else {
				sc_wire_encode(w, x, rows, cols, op == FEEDBACK ? res : NULL,
					       op == STOCHASTIC ? rng : NULL, frame);
			}
			n++;
		} while ((t = now_s() - t0) < 0.02);
		if (t / n < best)
			best = t / n;
	}
	return best;
}

int main(int argc, char **argv)
{
	long rows = 2048, cols = 768;
	int reps = 5;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--rows"))
			rows = atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--cols"))
			cols = atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--reps"))
			reps = atoi(argv[i + 1]);
		else
			break;
	}
	if (argc % 2 == 0 || rows < 1 || cols < 1 || reps < 1) {
		fprintf(stderr, "usage: sc_bench_codec [--rows R] [--cols C] [--reps K]\n");
		return 2;
	}
	size_t n = (size_t)rows * (size_t)cols;
	float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
	float *res = calloc(n, sizeof(float));
	void *frame = malloc(sc_wire_bytes(SC_WIRE_FP32, (size_t)rows, (size_t)cols));
	sc_rng rng;
	sc_rng_seed(&rng, (uint64_t[]){ 1 }, 1);
	if (!x || !y || !res || !frame) {
		fprintf(stderr, "sc_bench_codec: out of memory\n");
		return 1;
	}
	for (size_t i = 0; i < n; i++)
		x[i] = sc_rng_normal(&rng);
	printf("sc_bench_codec: (%ld, %ld) float32, GB/s of float32 data, best of %d\n", rows, cols,
	       reps);
	printf("%-5s %10s %8s %8s %8s %8s\n", "wire", "bytes", "encode", "+resid", "+stoch",
	       "decode");
	double gb = (double)n * sizeof(float) * 1e-9;
	for (int w = 0; w < SC_WIRE_COUNT; w++) {
		double t[4];
		for (int op = ENCODE; op <= DECODE; op++) {
			if (op == DECODE) /* a frame of this encoding, to decode */
				sc_wire_encode(w, x, (size_t)rows, (size_t)cols, NULL, NULL, frame);
			t[op] = op == STOCHASTIC && w < SC_WIRE_INT8
				    ? 0
				    : best_time(op, w, x, y, res, &rng, frame, (size_t)rows,
						(size_t)cols, reps);
		}
		printf("%-5s %10zu", sc_wire_name(w), sc_wire_bytes(w, (size_t)rows, (size_t)cols));
		for (int op = ENCODE; op <= DECODE; op++)
			if (t[op] > 0)
				printf(" %8.2f", gb / t[op]);
			else
				printf(" %8s", "-");
		printf("\n");
	}
	free(x);
	free(y);
	free(res);
	free(frame);
	return 0;
}
