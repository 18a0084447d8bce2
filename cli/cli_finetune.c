/* cli_finetune.c — `splitchain finetune`: LoRA fine-tuning in one process,
 * through the same segment engine the workers run, optionally split into a
 * chain of in-process stages. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "sc_adapter.h"
#include "sc_backend.h"
#include "sc_dataset.h"
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
    "  --tokenizer PATH     tokenizer.json (or a directory with one, or GPT-2's\n"
    "                       vocab.json + merges.txt)  (default: DIR/tokenizer.json if\n"
    "                       present, else text is read as bytes)\n"
    "  --skip-bad-lines     count and skip malformed JSONL lines instead of failing\n"
    "  --init-adapter DIR   start from this PEFT adapter instead of a fresh one\n"
    "  --out DIR            write the trained adapter here (PEFT format)\n"
    "  --metrics FILE       append one JSON line per step (loss, lr, grad_norm, ...)\n";

static const char finetune_exec_help[] =
    "execution:\n"
    "  --stages N           split the layers into N in-process stages         (default 1)\n"
    "  --device D           cpu or cuda:N                                     (default cpu)\n"
    "  --threads N          CPU threads, 0 = all cores                        (default 0)\n"
    "  --quiet              no progress lines\n";

typedef struct ft_args {
	const char *model, *data, *init, *out, *metrics, *device, *targets, *tokenizer;
	sc_lora_config lora;
	sc_train_config tc;
	int stages, threads, quiet, skip_bad_lines;
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
		{ "device", required_argument, 0, 'D' },
		{ "threads", required_argument, 0, 'j' },
		{ "quiet", no_argument, 0, 'q' },
		{ "tokenizer", required_argument, 0, 'K' },
		{ "skip-bad-lines", no_argument, 0, 'B' },
		{ "help", no_argument, 0, 'h' },
		CLI_TRAIN_OPTIONS,
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
		case 'd': a->data = optarg; break;
		case 'I': a->init = optarg; break;
		case 'o': a->out = optarg; break;
		case 'M': a->metrics = optarg; break;
		case 'D': a->device = optarg; break;
		case 'q': a->quiet = 1; break;
		case 'K': a->tokenizer = optarg; break;
		case 'B': a->skip_bad_lines = 1; break;
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
			fputs(cli_train_help, stdout);
			fputs(finetune_exec_help, stdout);
			return -1;
		default:
			bad = cli_train_option(cmd, c, optarg, &a->lora, &a->tc, &a->targets);
			if (bad < 0)
				return cli_usage(cmd, "unknown or incomplete option '%s'",
						 argv[optind - 1]);
		}
		if (bad)
			return CLI_USAGE;
	}
	if (optind < argc)
		return cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
	if (!a->model || !a->data)
		return cli_usage(cmd, "--model DIR and --data FILE are required");
	cli_train_finish(&a->lora, &a->tc);
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

int cli_finetune(int argc, char **argv)
{
	const char *cmd = "finetune";
	char path[4096];
	ft_args a;
	sc_model_config mc;
	sc_weights *weights = NULL;
	sc_tokens *tk = NULL;
	sc_adapter *init = NULL, *ad = NULL;
	sc_backend *be = NULL;
	sc_trainer *tr = NULL;
	FILE *metrics = NULL;
	int ret = CLI_ERROR, p;
	sc_err rc;

	if ((p = parse(&a, argc, argv)))
		return p < 0 ? CLI_OK : p;
	snprintf(path, sizeof(path), "%s/config.json", a.model);
	if ((rc = sc_config_load(&mc, path))) {
		cli_fail(cmd, rc, "cannot use the model");
		goto out;
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
	sc_dataset_stats ds;
	if ((rc = sc_dataset_tokenizer(&tok, a.model, a.tokenizer))) {
		cli_fail(cmd, rc, "cannot read the tokenizer");
		goto out;
	}
	rc = sc_dataset_load_for(&tk, a.data, tok, mc.vocab_size, mc.eos_token_id, a.skip_bad_lines,
				 &ds);
	sc_tokenizer_free(tok);
	if (rc) {
		cli_fail(cmd, rc, "cannot read the data");
		goto out;
	}
	if (ds.bad_lines)
		fprintf(stderr, "splitchain finetune: %zu malformed JSONL line(s) skipped\n",
			ds.bad_lines);
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
	if ((rc =
		 sc_trainer_new(&tr, be, &mc, &a.lora, &a.tc, weights, init, tk, a.stages, NULL))) {
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
		printf("splitchain finetune: %s; LoRA rank %d on %s, %d stage(s), %d x %d tokens x "
		       "%d micro-batches per step, %s (%s)\n",
		       desc, a.lora.rank, tg, a.stages, a.tc.B, a.tc.T, a.tc.micro_batches,
		       be->name, strcmp(be->name, "cpu") ? "gpu" : sc_backend_cpu_describe());
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
	sc_tokens_free(tk);
	sc_weights_close(weights);
	return ret;
}
