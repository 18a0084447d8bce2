/* bench_cuda.c — one LoRA training step (forward + backward + AdamW through
 * the single-process trainer) on the CUDA backend: tokens/s and achieved
 * TFLOP/s. Prints one JSON line, as sc_bench_step does on the CPU; the GPU
 * script (tests/gpu/run.sh) puts it beside PyTorch's figures.
 *
 *   sc_bench_cuda [--device cuda:N] [--tf32] [--shape gpt2|small]
 *                 [--batch B] [--seq T] [--steps K] [--dir DIR] [--memory]
 *                 [--precision fp32|bf16] [--base-quant none|int8|nf4]
 *
 * --memory trains nothing: it lays out the whole model as one segment
 * (one activation slot) on the device and on the CPU backend, which keeps
 * attention's (B,NH,T,T) probabilities, and prints both sizes. It also runs
 * on the emulated device (sc_bench_cuda_emu, tests/cuda_emu).
 *
 * --precision and --base-quant are a job's (sc_train.h): bf16 keeps the
 * frozen projections bf16 and multiplies them with cublasGemmEx (bf16
 * inputs, fp32 sums); int8 / nf4 keep them quantized and dequantize a tile
 * at a time for cublasSgemm; both also apply to --memory.
 *
 * Defaults: cuda:0, fp32 GEMMs, GPT-2 124M with B = 8, T = 1024, LoRA r = 8
 * on all four targets, one untimed step then K = 3 timed. The random model
 * is written to DIR (default $SC_TEST_TMP/bench-cuda-model, else
 * ./bench-cuda-model). Exits 77 when no CUDA device is usable.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_common.h"
#include "sc_segment.h"

#define EXIT_SKIP 77

/* "cuda" or "cuda:N" -> N; -1 when device names something else. */
static int cuda_ordinal(const char *device)
{
	char *end;
	long n;
	if (!strcmp(device, "cuda"))
		return 0;
	if (strncmp(device, "cuda:", 5))
		return -1;
	n = strtol(device + 5, &end, 10);
	return (end == device + 5 || *end || n < 0 || n > 255) ? -1 : (int)n;
}

/* The bytes a whole-model segment of one slot takes on be; 0 on failure. */
static size_t segment_bytes(sc_backend *be, const sc_model_config *mc, const sc_lora_config *lc,
			    int B, int T)
{
	sc_segment_spec sp = { .model = *mc,
			       .lora = *lc,
			       .first = 0,
			       .last = mc->n_layer,
			       .B = B,
			       .T = T,
			       .slots = 1 };
	sc_segment *seg = NULL;
	size_t bytes;
	if (sc_segment_new(&seg, be, &sp)) {
		fprintf(stderr, "sc_bench_cuda: segment on %s: %s\n", be->name, sc_err_detail());
		return 0;
	}
	bytes = sc_segment_device_bytes(seg);
	sc_segment_free(seg);
	return bytes;
}

/* --memory: the segment's size here and with the CPU's materialised attention. */
static int print_memory(sc_backend *be, const char *shape, const sc_model_config *mc,
			const sc_lora_config *lc, int B, int T)
{
	sc_backend *cpu = NULL;
	size_t dev = segment_bytes(be, mc, lc, B, T), host = 0;
	if (dev && !sc_backend_cpu_open(&cpu, 1))
		host = segment_bytes(cpu, mc, lc, B, T);
	sc_backend_free(cpu);
	if (!dev || !host)
		return 1;
	printf("{\"impl\":\"splitchain-cuda\",\"shape\":\"%s\",\"device\":\"%s\",\"B\":%d,"
	       "\"T\":%d,\"segment_mib\":%.0f,\"cpu_segment_mib\":%.0f,\"ratio\":%.3f}\n",
	       shape, be->name, B, T, (double)dev / (1 << 20), (double)host / (1 << 20),
	       (double)dev / (double)host);
	return 0;
}

static int usage(void)
{
	fprintf(stderr, "usage: sc_bench_cuda [--device cuda:N] [--tf32] [--shape gpt2|small] "
			"[--batch B] [--seq T] [--steps K] [--dir DIR] [--memory] "
			"[--precision fp32|bf16] [--base-quant none|int8|nf4]\n");
	return 2;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "device", 1, 0, 'D' },     { "tf32", 0, 0, 'f' },   { "shape", 1, 0, 's' },
		{ "batch", 1, 0, 'b' },      { "seq", 1, 0, 't' },    { "steps", 1, 0, 'n' },
		{ "dir", 1, 0, 'd' },        { "memory", 0, 0, 'm' }, { "precision", 1, 0, 'p' },
		{ "base-quant", 1, 0, 'q' }, { 0, 0, 0, 0 },
	};
	const char *device = "cuda:0", *shape = "gpt2", *dir = NULL, *tmp = getenv("SC_TEST_TMP");
	int tf32 = 0, steps = 3, batch = 0, seq = 0, memory = 0, precision = SC_PRECISION_FP32,
	    base_quant = SC_BASE_QUANT_NONE, ord, c;
	sc_model_config mc;
	sc_lora_config lc = { .rank = 8, .alpha = 16, .targets = 0, .seed = 1 };
	sc_train_config tc;
	char dirbuf[4096];
	sc_backend *be = NULL;
	sc_weights *wf = NULL;
	sc_trainer *tr = NULL;
	sc_tokens tk = { 0 };
	sc_step_stats st;
	double t0, secs, loss0;
	sc_err rc;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'D': device = optarg; break;
		case 'f': tf32 = 1; break;
		case 's': shape = optarg; break;
		case 'b': batch = atoi(optarg); break;
		case 't': seq = atoi(optarg); break;
		case 'n': steps = atoi(optarg); break;
		case 'd': dir = optarg; break;
		case 'm': memory = 1; break;
		case 'p':
			if (sc_precision_parse(optarg, &precision))
				return usage();
			break;
		case 'q':
			if (sc_base_quant_parse(optarg, &base_quant))
				return usage();
			break;
		default: return usage();
		}
	}
	if (optind < argc || (ord = cuda_ordinal(device)) < 0 || steps < 1 || batch < 0 ||
	    seq < 0 || bench_shape(shape, &mc) || !(lc.targets = sc_lora_all_targets(&mc)))
		return usage();
	sc_train_config_defaults(&tc);
	tc.B = 8;
	tc.T = strcmp(shape, "gpt2") ? 256 : 1024;
	if (batch)
		tc.B = batch;
	if (seq)
		tc.T = seq;
	tc.steps = steps + 1;
	tc.warmup = 0;
	tc.allow_tf32 = tf32; /* the trainer sets the backend's math mode from it */
	tc.precision = precision;
	tc.base_quant = base_quant;

	rc = sc_backend_cuda_open(&be, ord);
	if (rc == SC_ENODEV) {
		printf("sc_bench_cuda: no CUDA device: skipping (%s)\n", sc_err_detail());
		return EXIT_SKIP;
	}
	if (rc)
		goto fail;
	if (memory) {
		sc_model_config base = mc;
		int code;
		if ((rc = sc_train_base_format(&base, &tc)))
			goto fail;
		code = print_memory(be, shape, &base, &lc, tc.B, tc.T);
		sc_backend_free(be);
		return code;
	}
	if (!dir) {
		snprintf(dirbuf, sizeof(dirbuf), "%s%sbench-cuda-model", tmp && *tmp ? tmp : "",
			 tmp && *tmp ? "/" : "");
		dir = dirbuf;
	}
	if ((rc = bench_model(dir, &mc, (size_t)tc.B * tc.T * (steps + 2) + 1, &wf, &tk)) ||
	    (rc = sc_trainer_new(&tr, be, &mc, &lc, &tc, wf, NULL, &tk, 1, NULL)))
		goto fail;
	/* untimed: cuBLAS heuristics, first-touch of the buffers */
	if ((rc = sc_trainer_step(tr, 0, &st)) || (rc = be->ops->sync(be)))
		goto fail;
	loss0 = st.loss;
	t0 = bench_now();
	for (int s = 1; s <= steps; s++)
		if ((rc = sc_trainer_step(tr, s, &st)))
			goto fail;
	if ((rc = be->ops->sync(be))) /* the last AdamW may still be queued */
		goto fail;
	secs = (bench_now() - t0) / steps;
	{
		double tokens = (double)tc.B * tc.T,
		       flops = bench_flops_per_token(&mc, tc.T, lc.rank) * tokens;
		size_t bytes = sc_segment_device_bytes(sc_trainer_stage(tr, 0));
		printf("{\"impl\":\"splitchain-cuda\",\"shape\":\"%s\",\"device\":\"%s\","
		       "\"tf32\":%d,\"precision\":\"%s\",\"base_quant\":\"%s\",\"B\":%d,\"T\":%d,"
		       "\"rank\":%d,\"step_s\":%.4f,"
		       "\"tokens_per_s\":%.1f,\"tflops\":%.3f,\"device_mib\":%.0f,"
		       "\"loss_first\":%.4f,\"loss_last\":%.4f}\n",
		       shape, be->name, tf32, sc_precision_name(precision),
		       sc_base_quant_name(base_quant), tc.B, tc.T, lc.rank, secs, tokens / secs,
		       flops / secs / 1e12, (double)bytes / (1 << 20), loss0, st.loss);
	}
	sc_trainer_free(tr);
	sc_backend_free(be);
	sc_weights_close(wf);
	free(tk.ids);
	return 0;
fail:
	fprintf(stderr, "sc_bench_cuda: %s: %s\n", sc_err_name(rc), sc_err_detail());
	sc_trainer_free(tr);
	sc_backend_free(be);
	sc_weights_close(wf);
	free(tk.ids);
	return 1;
}
