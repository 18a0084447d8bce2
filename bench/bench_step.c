/* bench_step.c — one LoRA training step (forward + backward + AdamW) on the
 * CPU backend: tokens/s and achieved GFLOP/s, next to OpenBLAS's own sgemm
 * rate measured in the same process. Prints one JSON line; bench/run.sh puts
 * it beside PyTorch's figures.
 *
 *   sc_bench_step --shape gpt2|small --threads N [--steps K] [--dir DIR]
 */
#include <cblas.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_common.h"

/* OpenBLAS sgemm GFLOP/s on the step's dominant shape: (B*T, C) @ (C, 4C). */
static double sgemm_gflops(int n, int c)
{
	float *a = calloc((size_t)n * c, 4), *b = calloc((size_t)c * 4 * c, 4);
	float *out = calloc((size_t)n * 4 * c, 4);
	double t0, t, flops = 2.0 * n * c * 4.0 * c;
	int reps = 0;
	if (!a || !b || !out)
		return 0;
	for (size_t i = 0; i < (size_t)n * c; i++)
		a[i] = (float)(i % 7) * 0.1f;
	for (size_t i = 0; i < (size_t)c * 4 * c; i++)
		b[i] = (float)(i % 5) * 0.1f;
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, 4 * c, c, 1, a, c, b, 4 * c, 0,
		    out, 4 * c);
	t0 = bench_now();
	do {
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, 4 * c, c, 1, a, c, b,
			    4 * c, 0, out, 4 * c);
		reps++;
		t = bench_now() - t0;
	} while (t < 2.0 || reps < 3);
	free(a);
	free(b);
	free(out);
	return flops * reps / t / 1e9;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "shape", 1, 0, 's' }, { "threads", 1, 0, 'j' }, { "steps", 1, 0, 'n' },
		{ "dir", 1, 0, 'd' },   { 0, 0, 0, 0 },
	};
	const char *shape = "small", *dir = "bench-model";
	int threads = 1, steps = 2, c;
	sc_model_config mc;
	sc_lora_config lc = { .rank = 8, .alpha = 16, .targets = SC_T_ALL, .seed = 1 };
	sc_train_config tc;
	sc_backend *be = NULL;
	sc_st_file *wf = NULL;
	sc_trainer *tr = NULL;
	sc_tokens tk = { 0 };
	sc_step_stats st;
	double t0, secs;
	sc_err rc;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 's': shape = optarg; break;
		case 'j': threads = atoi(optarg); break;
		case 'n': steps = atoi(optarg); break;
		case 'd': dir = optarg; break;
		default:
			fprintf(stderr, "usage: sc_bench_step --shape gpt2|small --threads N "
					"[--steps K] [--dir DIR]\n");
			return 2;
		}
	}
	sc_train_config_defaults(&tc);
	if (bench_shape(shape, &mc)) {
		fprintf(stderr, "sc_bench_step: unknown --shape %s (gpt2 or small)\n", shape);
		return 2;
	}
	tc.B = 4;
	tc.T = strcmp(shape, "gpt2") ? 128 : 256;
	tc.steps = steps + 1;
	tc.warmup = 0;
	if ((rc = bench_model(dir, &mc, (size_t)tc.B * tc.T * (steps + 2) + 1, &wf, &tk)) ||
	    (rc = sc_backend_cpu_open(&be, threads)) ||
	    (rc = sc_trainer_new(&tr, be, &mc, &lc, &tc, wf, NULL, &tk, 1, NULL)))
		goto fail;
	if ((rc = sc_trainer_step(tr, 0, &st))) /* warm-up: page faults, BLAS buffers */
		goto fail;
	t0 = bench_now();
	for (int s = 1; s <= steps; s++)
		if ((rc = sc_trainer_step(tr, s, &st)))
			goto fail;
	secs = (bench_now() - t0) / steps;
	{
		double tokens = (double)tc.B * tc.T,
		       gf = bench_flops_per_token(&mc, tc.T, lc.rank) * tokens;
		printf("{\"impl\":\"splitchain\",\"shape\":\"%s\",\"threads\":%d,\"step_s\":%.4f,"
		       "\"tokens_per_s\":%.1f,\"gflops\":%.2f,\"sgemm_gflops\":%.2f,"
		       "\"blas\":\"%s\"}\n",
		       shape, threads, secs, tokens / secs, gf / secs / 1e9,
		       sgemm_gflops(tc.B * tc.T, mc.n_embd), sc_backend_cpu_describe());
	}
	sc_trainer_free(tr);
	sc_backend_free(be);
	sc_st_close(wf);
	free(tk.ids);
	return 0;
fail:
	fprintf(stderr, "sc_bench_step: %s\n", sc_err_detail());
	sc_trainer_free(tr);
	sc_backend_free(be);
	sc_st_close(wf);
	free(tk.ids);
	return 1;
}
