/* bench_base.c — one LoRA training step on the CPU backend with each frozen
 * base format (issue 18), same shape, same process: fp32, bf16 (the
 * automatic path: oneDNN's bf16 matmul where it pays on this CPU,
 * sc_backend_cpu_bf16_matmul_pays), bf16 on the fp32 tiles (forced), bf16
 * on oneDNN's matmul (forced, where it can run), int8 and nf4 (quantized as they
 * load), and int8 and nf4 under --precision bf16 (int8-bf16, nf4-bf16:
 * dequantized to bf16 for oneDNN's bf16 products where the CPU has them). Prints the CPU's bf16 features, OpenBLAS's core and the bf16 path,
 * then per format the step time (median of K steps after one untimed),
 * tokens/s, the stage's memory and the projections' bytes, and the ratios
 * against fp32 (speed: fp32 time / this time; memory: this / fp32), as
 * markdown on stdout. Formats run one after another, each with its own
 * trainer (one base in memory at a time); the load column is the CPUs
 * other processes kept busy meanwhile (bench_foreign_load).
 *
 *   sc_bench_base --shape NAME [--threads N] [--batch B] [--seq T] [--steps K]
 *                 [--formats fp32,bf16,bf16-tiles,bf16-matmul,int8,nf4,int8-bf16,nf4-bf16] [--dir DIR]
 * NAME: small or a make-model preset (gpt2, tinyllama-1.1b, ...). */
#include <cblas.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "sc_quant.h"

/* int8-bf16 / nf4-bf16: the base quantized, the job's --precision bf16
 * (the weights dequantized to bf16 for bf16 products where the CPU has
 * them; elsewhere as int8 / nf4). */
enum { FP32, BF16, BF16_TILES, BF16_MATMUL, INT8, NF4, INT8_BF16, NF4_BF16, N_FMT };
static const char *const fmt_names[N_FMT] = { "fp32", "bf16", "bf16-tiles", "bf16-matmul",
					      "int8", "nf4",  "int8-bf16",  "nf4-bf16" };

#define MAX_STEPS 64

typedef struct result {
	int done;
	double step_s, load;
	size_t stage_bytes, proj_bytes;
} result;

static int cmp_double(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;
	return (a > b) - (a < b);
}

/* The CPU's model name and the flags that decide bf16 GEMMs. */
static void print_cpu(void)
{
	static const char *const want[] = { "avx2", "avx512f", "avx512_bf16", "amx_tile",
					    "amx_bf16" };
	char line[8192], model[256] = "?", flags[8192] = "";
	FILE *f = fopen("/proc/cpuinfo", "r");
	while (f && fgets(line, sizeof(line), f)) {
		char *v = strchr(line, ':');
		if (!v)
			continue;
		v += v[1] == ' ' ? 2 : 1;
		v[strcspn(v, "\n")] = 0;
		if (!strncmp(line, "model name", 10) && !strcmp(model, "?"))
			snprintf(model, sizeof(model), "%s", v);
		else if (!strncmp(line, "flags", 5) && !flags[0])
			snprintf(flags, sizeof(flags), " %s ", v);
	}
	if (f)
		fclose(f);
	printf("CPU: %s; flags:", model);
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		char tok[64];
		snprintf(tok, sizeof(tok), " %s ", want[i]);
		printf(" %s %s%s", want[i], strstr(flags, tok) ? "yes" : "no",
		       i + 1 < sizeof(want) / sizeof(want[0]) ? "," : "\n");
	}
}

/* The frozen projections' bytes in fmt over all of mc's layers. */
static size_t proj_bytes(const sc_model_config *mc, int fmt)
{
	const sc_family *fam = sc_family_of(mc);
	size_t total = 0;
	for (int t = 0; t < fam->n_targets; t++) {
		int in, out;
		sc_quant_sizes z;
		fam->target_dims(mc, t, &in, &out);
		sc_quant_spec s = { fmt == INT8 || fmt == INT8_BF16 ? SC_QUANT_INT8
				    : fmt == NF4 || fmt == NF4_BF16 ? SC_QUANT_NF4
								    : SC_QUANT_BF16,
				    (size_t)out, (size_t)in, 1, 0 };
		if (fmt == FP32) {
			total += (size_t)in * out * 4;
			continue;
		}
		if (sc_quant_size(&s, &z))
			return 0;
		total += z.qweight + 4 * (z.scales + z.scales_scale + z.scales_offset) + z.scales_q;
	}
	return total * (size_t)mc->n_layer;
}

static sc_err run_one(int fmt, const sc_model_config *base, const sc_lora_config *lc,
		      const sc_train_config *tc, int threads, int steps, sc_weights *wf,
		      const sc_tokens *tk, result *r)
{
	sc_model_config mc = *base;
	sc_backend *be = NULL;
	sc_trainer *tr = NULL;
	sc_step_stats st;
	bench_cpu_sample c0, c1;
	double ts[MAX_STEPS];
	int first, last;
	sc_err rc;
	if (fmt != FP32) { /* what a job's --precision / --base-quant makes of the model */
		mc.quantized = 1;
		mc.quant_format = fmt == INT8 || fmt == INT8_BF16 ? SC_QUANT_INT8
				  : fmt == NF4 || fmt == NF4_BF16 ? SC_QUANT_NF4
								  : SC_QUANT_BF16;
	}
	sc_train_config job = *tc; /* the trainer applies its base format to mc */
	if (fmt == INT8_BF16 || fmt == NF4_BF16)
		job.precision = SC_PRECISION_BF16;
	if ((rc = sc_backend_cpu_open(&be, threads)) ||
	    (fmt == BF16_TILES && (rc = sc_backend_cpu_bf16_path(be, SC_CPU_BF16_TILES))) ||
	    (fmt == BF16_MATMUL && (rc = sc_backend_cpu_bf16_path(be, SC_CPU_BF16_MATMUL))))
		goto done;
	if (fmt == BF16_MATMUL && !sc_backend_cpu_bf16_on_matmul(be)) {
		fprintf(stderr, "sc_bench_base: bf16-matmul skipped: %s\n",
			sc_backend_cpu_bf16_kernel(be));
		goto done;
	}
	if ((rc = sc_trainer_new(&tr, be, &mc, lc, &job, wf, NULL, tk, 1, NULL)) ||
	    (rc = sc_trainer_step(tr, 0, &st))) /* warm-up: page faults, primitives */
		goto done;
	bench_cpu_sample_take(&c0);
	for (int s = 0; s < steps; s++) {
		double t0 = bench_now();
		if ((rc = sc_trainer_step(tr, s + 1, &st)))
			goto done;
		ts[s] = bench_now() - t0;
	}
	bench_cpu_sample_take(&c1);
	qsort(ts, (size_t)steps, sizeof(double), cmp_double);
	r->step_s = steps % 2 ? ts[steps / 2] : 0.5 * (ts[steps / 2 - 1] + ts[steps / 2]);
	r->load = bench_foreign_load(&c0, &c1);
	r->stage_bytes = sc_trainer_stage_memory(tr, 0, &first, &last);
	r->proj_bytes = proj_bytes(&mc, fmt);
	r->done = 1;
done:
	sc_trainer_free(tr);
	sc_backend_free(be);
	return rc;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "shape", 1, 0, 's' },   { "threads", 1, 0, 'j' }, { "steps", 1, 0, 'n' },
		{ "dir", 1, 0, 'd' },     { "batch", 1, 0, 'b' },   { "seq", 1, 0, 't' },
		{ "formats", 1, 0, 'f' }, { 0, 0, 0, 0 },
	};
	const char *shape = "small", *dir = "bench-model",
		   *formats = "fp32,bf16,bf16-tiles,bf16-matmul,int8,nf4,int8-bf16,nf4-bf16";
	int threads = 1, steps = 3, batch = 0, seq = 0, c;
	sc_model_config mc;
	sc_lora_config lc = { .rank = 8, .alpha = 16, .targets = 0, .seed = 1 };
	sc_train_config tc;
	sc_weights *wf = NULL;
	sc_tokens tk = { 0 };
	result res[N_FMT] = { { 0 } };
	sc_backend *probe = NULL;
	sc_err rc;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 's': shape = optarg; break;
		case 'j': threads = atoi(optarg); break;
		case 'n': steps = atoi(optarg); break;
		case 'd': dir = optarg; break;
		case 'b': batch = atoi(optarg); break;
		case 't': seq = atoi(optarg); break;
		case 'f': formats = optarg; break;
		default: goto usage;
		}
	}
	if (optind < argc || threads < 1 || steps < 1 || steps > MAX_STEPS || batch < 0 ||
	    seq < 0 || bench_shape(shape, &mc))
		goto usage;
	sc_train_config_defaults(&tc);
	lc.targets = sc_lora_all_targets(&mc);
	tc.B = batch ? batch : 4;
	tc.T = seq ? seq : strcmp(shape, "gpt2") ? 128 : 256;
	tc.steps = steps + 1;
	tc.warmup = 0;
	print_cpu();
	if ((rc = sc_backend_cpu_open(&probe, threads)))
		goto fail;
	printf("OpenBLAS: %s, core %s; bf16 path: %s; %d threads; %s B=%d T=%d, %d timed "
	       "steps per format\n\n",
	       openblas_get_config(), openblas_get_corename(), sc_backend_cpu_bf16_kernel(probe),
	       threads, shape, tc.B, tc.T, steps);
	sc_backend_free(probe);
	fflush(stdout);
	if ((rc = bench_model(dir, &mc, (size_t)tc.B * tc.T * (steps + 2) + 1, &wf, &tk)))
		goto fail;
	for (int f = 0; f < N_FMT; f++) {
		char list[256], *save = NULL;
		snprintf(list, sizeof(list), "%s", formats);
		int want = 0;
		for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save))
			want |= !strcmp(t, fmt_names[f]);
		if (!want)
			continue;
		fprintf(stderr, "sc_bench_base: %s ...\n", fmt_names[f]);
		if ((rc = run_one(f, &mc, &lc, &tc, threads, steps, wf, &tk, &res[f])))
			goto fail;
	}
	printf("| base | step s | tokens/s | speed vs fp32 | stage MB | projections MB | "
	       "projections vs fp32 | vs bf16 | load |\n|---|---|---|---|---|---|---|---|---|\n");
	for (int f = 0; f < N_FMT; f++) {
		const result *r = &res[f];
		if (!r->done)
			continue;
		double f32t = res[FP32].done ? res[FP32].step_s : 0;
		double f32p = (double)proj_bytes(&mc, FP32), bfp = (double)proj_bytes(&mc, BF16);
		printf("| %s | %.3f | %.0f | %s%.2fx | %.1f | %.1f | %.3f | %.3f | %.2f |\n",
		       fmt_names[f], r->step_s, tc.B * tc.T / r->step_s, f32t ? "" : "(no fp32) ",
		       f32t ? f32t / r->step_s : 0, r->stage_bytes / 1e6, r->proj_bytes / 1e6,
		       r->proj_bytes / f32p, r->proj_bytes / bfp, r->load);
	}
	for (int f = NF4; f <= NF4_BF16; f += NF4_BF16 - NF4)
		if (res[BF16].done && res[f].done)
			printf("\n%s vs bf16: speed %.2fx, projections %.3fx\n", fmt_names[f],
			       res[BF16].step_s / res[f].step_s,
			       (double)res[f].proj_bytes / res[BF16].proj_bytes);
	sc_weights_close(wf);
	free(tk.ids);
	return 0;
fail:
	fprintf(stderr, "sc_bench_base: %s\n", sc_err_detail());
	sc_weights_close(wf);
	free(tk.ids);
	return 1;
usage:
	fprintf(
	    stderr,
	    "usage: sc_bench_base --shape NAME [--threads N] [--batch B] [--seq T] "
	    "[--steps K] [--formats fp32,bf16,bf16-tiles,bf16-matmul,int8,nf4,int8-bf16,nf4-bf16] "
	    "[--dir DIR]\n");
	return 2;
}
