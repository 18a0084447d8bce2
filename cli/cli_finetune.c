/* cli_finetune.c — `splitchain finetune`: LoRA fine-tuning in one process,
 * through the same segment engine the workers run, optionally split into a
 * chain of in-process stages. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "sc_adapter.h"
#include "sc_backend.h"
#include "sc_codec.h"
#include "sc_dataset.h"
#include "sc_layer_quant.h"
#include "sc_quant.h"
#include "sc_train.h"

static const char finetune_help[] =
    "usage: splitchain finetune --model DIR --data FILE [options]\n"
    "\n"
    "Fine-tunes LoRA adapters on a Hugging Face model directory (config.json with\n"
    "model_type gpt2, llama, mistral or qwen2, and model.safetensors or sharded\n"
    "model-*.safetensors with model.safetensors.index.json; F32, F16 or BF16) with\n"
    "the data in FILE (a token file, or plain text read as bytes) in this process,\n"
    "printing one progress line per step.\n"
    "\n"
    "model and data:\n"
    "  --model DIR          Hugging Face checkpoint directory                 (required)\n"
    "  --data FILE          token file (.bin), text, or JSONL ({\"text\"} or\n"
    "                       {\"prompt\", \"completion\"}: loss on the completion) (required)\n"
    "                       Given again (up to 16): each step takes every file's M\n"
    "                       micro-batches in the order given, each file's gradients\n"
    "                       summed by themselves — what a job with one data owner per\n"
    "                       file computes (splitchain submit --owner A --owner B)\n"
    "  --init-adapter DIR   start from this PEFT adapter instead of a fresh one\n"
    "  --out DIR            write the trained adapter here (PEFT format)\n"
    "  --metrics FILE       append one JSON line per step (loss, lr, grad_norm, ...)\n"
    "                       and one per evaluation (eval_loss, eval_perplexity)\n";

static const char finetune_exec_help[] =
    "execution:\n"
    "  --stages N           split the layers into N in-process stages         (default 1)\n"
    "  --cuts L1,L2,...     the layers where stages 2, 3, ... begin (default: even split;\n"
    "                       e.g. a chain's placement, to reproduce it)\n"
    "  --layer-quant SPEC   layers whose frozen projections are held in their own\n"
    "                       format, e.g. 0-3:nf4,4-7:int8 (int8 or nf4; others keep\n"
    "                       the job's base): what a chain's planner chose, to\n"
    "                       reproduce it (splitchain status shows it)\n"
    "  --device D           cpu or cuda:N                                     (default cpu)\n"
    "  --threads N          CPU threads, 0 = all cores                        (default 0)\n"
    "  --quiet              no progress lines\n";

typedef struct ft_args {
	const char *model, *init, *out, *metrics, *device, *targets, *cuts, *layer_quant;
	const char *data[SC_TRAIN_MAX_SOURCES];
	int ndata;
	sc_lora_config lora;
	sc_train_config tc;
	cli_data_opts dat;
	int stages, threads, quiet;
} ft_args;

static int parse(ft_args *a, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "model", required_argument, 0, 'm' },
		{ "data", required_argument, 0, 'd' },
		{ "init-adapter", required_argument, 0, 'I' },
		{ "out", required_argument, 0, 'o' },
		{ "metrics", required_argument, 0, 'M' },
		{ "stages", required_argument, 0, 'S' },
		{ "cuts", required_argument, 0, 'U' },
		{ "layer-quant", required_argument, 0, 'Q' },
		{ "device", required_argument, 0, 'D' },
		{ "threads", required_argument, 0, 'j' },
		{ "quiet", no_argument, 0, 'q' },
		{ "help", no_argument, 0, 'h' },
		CLI_TRAIN_OPTIONS,
		CLI_DATA_OPTIONS,
		{ 0, 0, 0, 0 },
	};
	const char *cmd = "finetune";
	long v;
	int c;

	memset(a, 0, sizeof(*a));
	cli_train_defaults(&a->lora, &a->tc, &a->targets);
	a->stages = 1;
	a->device = "cpu";
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		int bad = 0;
		switch (c) {
		case 'm': a->model = optarg; break;
		case 'd':
			if (a->ndata == SC_TRAIN_MAX_SOURCES)
				return cli_usage(cmd, "at most %d --data", SC_TRAIN_MAX_SOURCES);
			a->data[a->ndata++] = optarg;
			break;
		case 'I': a->init = optarg; break;
		case 'o': a->out = optarg; break;
		case 'M': a->metrics = optarg; break;
		case 'D': a->device = optarg; break;
		case 'q': a->quiet = 1; break;
		case 'U': a->cuts = optarg; break;
		case 'Q': a->layer_quant = optarg; break;
		case 'S':
			bad = cli_int(cmd, "--stages", optarg, 1, 256, &v);
			a->stages = (int)v;
			break;
		case 'j':
			bad = cli_int(cmd, "--threads", optarg, 0, 1024, &v);
			a->threads = (int)v;
			break;
		case 'h':
			fputs(finetune_help, stdout);
			fputs(cli_data_help, stdout);
			fputs(cli_train_help, stdout);
			fputs(finetune_exec_help, stdout);
			return -1;
		default:
			bad = cli_train_option(cmd, c, optarg, &a->lora, &a->tc, &a->targets);
			if (bad < 0)
				bad = cli_data_option(cmd, c, optarg, &a->dat);
			if (bad < 0)
				return cli_usage(cmd, "unknown or incomplete option '%s'",
						 argv[optind - 1]);
		}
		if (bad)
			return CLI_USAGE;
	}
	if (optind < argc)
		return cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
	if (!a->model || !a->ndata)
		return cli_usage(cmd, "--model DIR and --data FILE are required");
	if (a->ndata > 1 && a->dat.eval_data)
		return cli_usage(cmd, "--eval-data goes with one --data; with several, "
				      "--eval-split holds out a share of each");
	if (cli_data_finish(cmd, &a->dat))
		return CLI_USAGE;
	if (cli_train_finish(cmd, &a->lora, &a->tc))
		return CLI_USAGE;
	return 0;
}

static void progress(const ft_args *a, const sc_step_stats *st, FILE *metrics)
{
	double tps = st->seconds > 0 ? (double)st->tokens / st->seconds : 0;
	if (!a->quiet) {
		int eta = (int)(st->seconds * (a->tc.steps - st->step - 1));
		printf("step %5d/%d | loss %.4f | lr %.2e | grad-norm %.4f | %.0f tok/s | %.2f s | "
		       "eta %dm%02ds\n",
		       st->step + 1, a->tc.steps, st->loss, st->lr, st->grad_norm, tps, st->seconds,
		       eta / 60, eta % 60);
		fflush(stdout);
	}
	if (metrics) {
		fprintf(metrics,
			"{\"step\":%d,\"loss\":%.17g,\"lr\":%.9g,\"grad_norm\":%.17g,"
			"\"tokens\":%ld,\"seconds\":%.6f,\"tokens_per_s\":%.1f}\n",
			st->step, st->loss, st->lr, st->grad_norm, st->tokens, st->seconds, tps);
		fflush(metrics);
	}
}

/* Evaluates on the held-out data after 0-based step s and reports it. */
static sc_err evaluate(const ft_args *a, sc_trainer *tr, const sc_job_data *jd, int s,
		       FILE *metrics)
{
	const sc_tokens *evals[SC_TRAIN_MAX_SOURCES];
	double loss;
	size_t n;
	for (int o = 0; o < a->ndata; o++)
		evals[o] = jd[o].eval;
	SC_TRY(
	    sc_trainer_eval_sources(tr, evals, a->ndata, (size_t)a->dat.eval_batches, &loss, &n));
	if (!a->quiet) {
		printf("eval %5d/%d | loss %.4f | perplexity %.3f | %zu tokens\n", s + 1,
		       a->tc.steps, loss, exp(loss), n);
		fflush(stdout);
	}
	if (metrics) {
		fprintf(metrics,
			"{\"step\":%d,\"eval_loss\":%.17g,\"eval_perplexity\":%.17g,"
			"\"eval_tokens\":%zu}\n",
			s, loss, exp(loss), n);
		fflush(metrics);
	}
	return SC_OK;
}

/* Whether to evaluate after 0-based step s. */
static int eval_due(const ft_args *a, int s)
{
	return s == a->tc.steps - 1 || (a->dat.eval_every && (s + 1) % a->dat.eval_every == 0);
}

int cli_finetune(int argc, char **argv)
{
	const char *cmd = "finetune";
	char path[4096];
	ft_args a;
	sc_model_config mc;
	sc_weights *weights = NULL;
	sc_job_data jd[SC_TRAIN_MAX_SOURCES] = { { 0 } };
	sc_adapter *init = NULL, *ad = NULL;
	sc_backend *be = NULL;
	sc_trainer *tr = NULL;
	FILE *metrics = NULL;
	int ret = CLI_ERROR, p;
	sc_err rc;

	if ((p = parse(&a, argc, argv)))
		return p < 0 ? CLI_OK : p;
	snprintf(path, sizeof(path), "%s/config.json", a.model);
	if ((rc = sc_config_load(&mc, path)) || (rc = sc_train_base_format(&mc, &a.tc))) {
		cli_fail(cmd, rc, "cannot use the model");
		goto out;
	}
	/* Given, it must name layers: an empty SPEC is refused too. */
	unsigned char named[SC_LAYER_QUANT_MAX];
	if (a.layer_quant && (sc_layer_quant_parse(a.layer_quant, mc.n_layer, named) ||
			      sc_layer_quant_apply(&mc, a.layer_quant))) {
		ret = cli_usage(cmd, "%s", sc_err_detail());
		goto out;
	}
	int bounds[SC_ADAPTER_MAX_LAYERS + 1], *bp = NULL;
	if (a.cuts) { /* stages begin at 0 and at each cut, rising, below L */
		const char *cp = a.cuts;
		int n = 1;
		bounds[0] = 0;
		while (*cp && n < SC_ADAPTER_MAX_LAYERS) {
			char *end;
			long v = strtol(cp, &end, 10);
			if (end == cp || v <= bounds[n - 1] || v >= mc.n_layer ||
			    (*end && *end != ',')) {
				ret = cli_usage(cmd,
						"--cuts '%s': rising layer indices in 1..%d, "
						"comma-separated",
						a.cuts, mc.n_layer - 1);
				goto out;
			}
			bounds[n++] = (int)v;
			cp = *end ? end + 1 : end;
		}
		bounds[n] = mc.n_layer;
		a.stages = n;
		bp = bounds;
	}
	if (a.stages > mc.n_layer) {
		ret = cli_usage(cmd, "--stages %d exceeds the model's %d layers", a.stages,
				mc.n_layer);
		goto out;
	}
	if (cli_train_targets(cmd, &a.lora, &mc, a.targets)) {
		ret = CLI_USAGE;
		goto out;
	}
	if ((rc = sc_weights_open(&weights, a.model)) || (rc = sc_weights_check_all(weights))) {
		cli_fail(cmd, rc, "cannot read the model weights");
		goto out;
	}
	sc_tokenizer *tok = NULL;
	sc_data_spec dspec = {
		.path = a.data[0],
		.eval_path = a.dat.eval_data,
		.eval_split = a.dat.eval_split,
		.skip_bad_lines = a.dat.skip_bad_lines,
		.no_pack = a.dat.no_pack,
		.no_cache = a.dat.no_cache,
		.T = a.tc.T,
		.seed = a.tc.seed,
	};
	if ((rc = sc_dataset_tokenizer(&tok, a.model, a.dat.tokenizer))) {
		cli_fail(cmd, rc, "cannot read the tokenizer");
		goto out;
	}
	rc = SC_OK;
	for (int o = 0; o < a.ndata && !rc; o++) { /* each file as its own owner reads it */
		dspec.path = a.data[o];
		rc = sc_job_data_load(&jd[o], &dspec, tok, mc.vocab_size, mc.eos_token_id);
		if (!rc && jd[o].st.bad_lines)
			fprintf(stderr,
				"splitchain finetune: %s: %zu malformed JSONL line(s) skipped\n",
				a.data[o], jd[o].st.bad_lines);
	}
	sc_tokenizer_free(tok);
	if (rc) {
		cli_fail(cmd, rc, "cannot read the data");
		goto out;
	}
	if (a.init) {
		if ((rc = sc_adapter_load(&init, a.init, &mc))) {
			cli_fail(cmd, rc, "cannot read the initial adapter");
			goto out;
		}
		a.lora.rank = init->lora.rank;
		a.lora.alpha = init->lora.alpha;
		a.lora.targets = init->lora.targets;
	}
	if ((rc = sc_backend_open(&be, a.device, a.threads))) {
		cli_fail(cmd, rc, "cannot open the device");
		goto out;
	}
	if ((rc = sc_trainer_new(&tr, be, &mc, &a.lora, &a.tc, weights, init, jd[0].train, a.stages,
				 bp))) {
		cli_fail(cmd, rc, "cannot set up training");
		goto out;
	}
	for (int o = 1; o < a.ndata; o++)
		if ((rc = sc_trainer_add_data(tr, jd[o].train))) {
			cli_fail(cmd, rc, "cannot set up training");
			goto out;
		}
	if (a.metrics && !(metrics = fopen(a.metrics, "a"))) {
		rc = sc_errf(SC_EIO, "%s: cannot open for appending", a.metrics);
		cli_fail(cmd, rc, "metrics");
		goto out;
	}
	if (!a.quiet) {
		char desc[256], tg[256];
		sc_config_describe(&mc, desc, sizeof(desc));
		sc_lora_targets_string(tg, sizeof(tg), &mc, a.lora.targets);
		printf("splitchain finetune: %s; frozen base %s; LoRA rank %d on %s, %d "
		       "stage(s)%s%s, %d x %d tokens x %d micro-batches per step, %s (%s)\n",
		       desc, sc_train_base_describe(&mc), a.lora.rank, tg, a.stages,
		       a.stages > 1 ? " crossing in " : "",
		       a.stages > 1 ? sc_wire_name(a.tc.wire) : "", a.tc.B, a.tc.T,
		       a.tc.micro_batches, be->name,
		       strcmp(be->name, "cpu") ? "gpu" : sc_backend_cpu_describe());
		if (!strcmp(be->name, "cpu") && mc.quantized &&
		    (mc.quant_format == SC_QUANT_BF16 || mc.compute_bf16))
			printf("  bf16 weights: %s\n", sc_backend_cpu_bf16_kernel(be));
		char lq[1024];
		if (sc_layer_quant_count(&mc, 0, mc.n_layer) &&
		    !sc_layer_quant_format(mc.layer_quant, 0, mc.n_layer, lq, sizeof(lq)))
			printf("  layers in their own base format: %s\n", lq);
		for (int o = 0; o < a.ndata; o++) {
			printf("  data%s%s: %zu tokens in %zu windows%s%s", a.ndata > 1 ? " " : "",
			       a.ndata > 1 ? a.data[o] : "", jd[o].train->n,
			       sc_eval_batches(jd[o].train, a.tc.T, 1, 0),
			       a.dat.no_pack ? " (unpacked)" : "",
			       jd[o].cache == 1 ? ", tokens from the cache" : "");
			if (jd[o].eval)
				printf("; held out: %zu tokens in %zu windows", jd[o].eval->n,
				       sc_eval_batches(jd[o].eval, a.tc.T, 1, 0));
			printf("\n");
		}
		for (int i = 0; i < a.stages; i++) {
			int first, last;
			size_t bytes = sc_trainer_stage_memory(tr, i, &first, &last);
			printf("  stage %d: layers [%d, %d), %.1f MiB of %s memory (weights, "
			       "adapters, optimizer, activations)\n",
			       i, first, last, (double)bytes / (1 << 20), be->name);
		}
	}
	for (int s = 0; s < a.tc.steps; s++) {
		sc_step_stats st;
		if ((rc = sc_trainer_step(tr, s, &st))) {
			cli_fail(cmd, rc, "training step failed");
			goto out;
		}
		progress(&a, &st, metrics);
		int held = 0;
		for (int o = 0; o < a.ndata; o++)
			held |= jd[o].eval != NULL;
		if (held && eval_due(&a, s) && (rc = evaluate(&a, tr, jd, s, metrics))) {
			cli_fail(cmd, rc, "evaluation failed");
			goto out;
		}
	}
	if (a.out) {
		if ((rc = sc_adapter_new(&ad, &a.lora, &mc)) ||
		    (rc = sc_trainer_get_lora(tr, ad)) ||
		    (rc = sc_adapter_save(ad, a.out, a.model))) {
			cli_fail(cmd, rc, "cannot write the adapter");
			goto out;
		}
		if (!a.quiet)
			printf("adapter written to %s (PEFT format)\n", a.out);
	}
	ret = CLI_OK;
out:
	if (metrics)
		fclose(metrics);
	sc_adapter_free(ad);
	sc_trainer_free(tr);
	sc_backend_free(be);
	sc_adapter_free(init);
	for (int o = 0; o < SC_TRAIN_MAX_SOURCES; o++)
		sc_job_data_free(&jd[o]);
	sc_weights_close(weights);
	return ret;
}
