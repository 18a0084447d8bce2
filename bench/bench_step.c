/* bench_step.c — one LoRA training step (forward + backward + AdamW) on the
 * CPU backend: tokens/s and achieved GFLOP/s, next to OpenBLAS's own sgemm
 * rate on the model's MLP product, (B*T, C) @ (C, F), measured in the same
 * process. Prints one JSON line; bench/run.sh puts it beside PyTorch's
 * figures. --profile also prints where the step's time goes (per backend
 * operation and gemm shape, bench_profile.h) to stderr.
 *
 *   sc_bench_step --shape NAME --threads N [--batch B] [--seq T] [--steps K]
 *                 [--min-time S] [--dir DIR] [--profile] [--serial-below FLOPS]
 * Times K steps (default 2), and more while under S seconds (up to 1000),
 * after one untimed warm-up step.
 * --precision / --base-quant: the frozen base as a job's options make it.
 * --serial-below (an experiment, implies --profile): GEMMs of fewer than
 * FLOPS operations run on one thread (bench_profile_serial_below).
 * NAME: small or a make-model preset (gpt2, smollm2-135m, tinyllama-1.1b, ...).
 * B defaults to 4, T to 256 for gpt2 and 128 otherwise.
 */
#include <cblas.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_common.h"
#include "bench_profile.h"

#define MAX_STEPS 1000 /* --min-time's limit */

/* OpenBLAS sgemm GFLOP/s on the step's dominant shape, the MLP's first
 * product (n, c) @ (c, f): n = B*T, f = 4C for GPT-2, F for Llama. 0 when
 * out of memory. */
static double sgemm_gflops(int n, int c, int f)
{
	float *a = calloc((size_t)n * c, 4), *b = calloc((size_t)c * f, 4);
	float *out = calloc((size_t)n * f, 4);
	double t0, t = 0, flops = 2.0 * n * c * (double)f;
	int reps = 0;
	if (a && b && out) {
		for (size_t i = 0; i < (size_t)n * c; i++)
			a[i] = (float)(i % 7) * 0.1f;
		for (size_t i = 0; i < (size_t)c * f; i++)
			b[i] = (float)(i % 5) * 0.1f;
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, f, c, 1, a, c, b, f, 0,
			    out, f);
		t0 = bench_now();
		do {
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, f, c, 1, a, c, b,
				    f, 0, out, f);
			reps++;
			t = bench_now() - t0;
		} while (t < 2.0 || reps < 3);
	}
	free(a);
	free(b);
	free(out);
	return reps ? flops * reps / t / 1e9 : 0;
}

static int usage(void)
{
	fprintf(stderr,
		"usage: sc_bench_step --shape NAME --threads N [--batch B] [--seq T] "
		"[--steps K] [--min-time S] [--dir DIR] [--profile]\n"
		"  [--serial-below FLOPS] [--precision fp32|bf16] [--base-quant none|int8|nf4]\n"
		"  NAME: small or a make-model preset\n");
	return 2;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "shape", 1, 0, 's' },      { "threads", 1, 0, 'j' },
		{ "steps", 1, 0, 'n' },      { "dir", 1, 0, 'd' },
		{ "batch", 1, 0, 'b' },      { "seq", 1, 0, 't' },
		{ "profile", 0, 0, 'p' },    { "serial-below", 1, 0, 'S' },
		{ "min-time", 1, 0, 'm' },   { "precision", 1, 0, 'P' },
		{ "base-quant", 1, 0, 'Q' }, { 0, 0, 0, 0 },
	};
	const char *shape = "small", *dir = "bench-model";
	int threads = 1, steps = 2, batch = 0, seq = 0, profile = 0, timed, c;
	int precision = SC_PRECISION_FP32, base_quant = SC_BASE_QUANT_NONE;
	double serial_below = 0, min_time = 0;
	sc_model_config mc;
	sc_lora_config lc = { .rank = 8, .alpha = 16, .targets = 0, .seed = 1 };
	sc_train_config tc;
	sc_backend *be = NULL;
	sc_weights *wf = NULL;
	sc_trainer *tr = NULL;
	sc_tokens tk = { 0 };
	sc_step_stats st;
	bench_cpu_sample c0, c1;
	double t0, secs, sgemm;
	sc_err rc;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 's': shape = optarg; break;
		case 'j': threads = atoi(optarg); break;
		case 'n': steps = atoi(optarg); break;
		case 'd': dir = optarg; break;
		case 'b': batch = atoi(optarg); break;
		case 't': seq = atoi(optarg); break;
		case 'p': profile = 1; break;
		case 'P':
			if (sc_precision_parse(optarg, &precision)) {
				fprintf(stderr, "sc_bench_step: %s\n", sc_err_detail());
				return 2;
			}
			break;
		case 'Q':
			if (sc_base_quant_parse(optarg, &base_quant)) {
				fprintf(stderr, "sc_bench_step: %s\n", sc_err_detail());
				return 2;
			}
			break;
		case 'm': min_time = atof(optarg); break;
		case 'S':
			serial_below = atof(optarg);
			profile = 1;
			break;
		default: return usage();
		}
	}
	if (optind < argc || threads < 1 || steps < 1 || batch < 0 || seq < 0)
		return usage();
	sc_train_config_defaults(&tc);
	if (bench_shape(shape, &mc)) {
		fprintf(stderr,
			"sc_bench_step: unknown --shape %s (small or a make-model preset)\n",
			shape);
		return 2;
	}
	lc.targets = sc_lora_all_targets(&mc);
	tc.B = batch ? batch : 4;
	tc.T = seq ? seq : strcmp(shape, "gpt2") ? 128 : 256;
	tc.steps = steps + 1; /* the schedule: later steps stay at min_lr */
	tc.warmup = 0;
	tc.precision = precision; /* as a job's options: the trainer applies them */
	tc.base_quant = base_quant;
	if ((rc = bench_model(dir, &mc, (size_t)tc.B * tc.T * (steps + 2) + 1, &wf, &tk)) ||
	    (rc = sc_backend_cpu_open(&be, threads)))
		goto fail;
	if (profile) {
		sc_backend *inner = be;
		if ((rc = bench_profile_wrap(&be, inner))) {
			be = inner;
			goto fail;
		}
		bench_profile_serial_below(be, serial_below);
	}
	if ((rc = sc_trainer_new(&tr, be, &mc, &lc, &tc, wf, NULL, &tk, 1, NULL)))
		goto fail;
	if ((rc = sc_trainer_step(tr, 0, &st))) /* warm-up: page faults, BLAS buffers */
		goto fail;
	if (profile)
		bench_profile_reset(be);
	bench_cpu_sample_take(&c0);
	t0 = bench_now();
	for (timed = 0; timed < steps || (bench_now() - t0 < min_time && timed < MAX_STEPS);
	     timed++)
		if ((rc = sc_trainer_step(tr, timed + 1, &st)))
			goto fail;
	secs = (bench_now() - t0) / timed;
	{
		double tokens = (double)tc.B * tc.T,
		       gf = bench_flops_per_token(&mc, tc.T, lc.rank) * tokens;
		if (profile)
			bench_profile_report(be, stderr, timed, secs);
		sgemm = sgemm_gflops(tc.B * tc.T, mc.n_embd, mc.n_inner);
		bench_cpu_sample_take(&c1);
		printf("{\"impl\":\"splitchain\",\"shape\":\"%s\",\"family\":\"%s\","
		       "\"threads\":%d,\"B\":%d,\"T\":%d,\"steps\":%d,\"step_s\":%.4f,"
		       "\"tokens_per_s\":%.1f,\"gflop_per_step\":%.2f,\"gflops\":%.2f,"
		       "\"sgemm\":\"(%d,%d)x(%d,%d)\",\"sgemm_gflops\":%.2f,"
		       "\"foreign_load\":%.2f,\"base\":\"%s\",\"blas\":\"%s\"}\n",
		       shape, mc.model_type, threads, tc.B, tc.T, timed, secs, tokens / secs,
		       gf / 1e9, gf / secs / 1e9, tc.B * tc.T, mc.n_embd, mc.n_embd, mc.n_inner,
		       sgemm, bench_foreign_load(&c0, &c1), sc_train_base_word(&tc),
		       sc_backend_cpu_describe());
	}
	sc_trainer_free(tr);
	sc_backend_free(be);
	sc_weights_close(wf);
	free(tk.ids);
	return 0;
fail:
	fprintf(stderr, "sc_bench_step: %s\n", sc_err_detail());
	sc_trainer_free(tr);
	sc_backend_free(be);
	sc_weights_close(wf);
	free(tk.ids);
	return 1;
}
