/* cli.c — the splitchain command-line tool: dispatch, help, and the
 * argument helpers the subcommands share. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "sc_codec.h"
#include "sc_version.h"

static const char usage_text[] =
    "usage: splitchain <command> [options]\n"
    "\n"
    "LoRA fine-tuning of decoder-only models (GPT-2, Llama, Mistral, Qwen2) split\n"
    "across a chain of edge workers.\n"
    "\n"
    "commands (talk to the coordinator; --coordinator URL or $SPLITCHAIN_COORDINATOR):\n"
    "  submit       submit a fine-tuning job; prints its id\n"
    "  jobs         list jobs\n"
    "  status JOB   a job's state, step, loss, speed and placement\n"
    "  watch JOB    follow a job until it ends\n"
    "  cancel JOB   cancel a job\n"
    "  workers      list registered workers\n"
    "  links        the measured links between workers (RTT, bandwidth)\n"
    "  export JOB   write the latest checkpoint's adapter (PEFT format)\n"
    "  models       register models with the coordinator (add, list, show, rm)\n"
    "\n"
    "local commands:\n"
    "  finetune     fine-tune LoRA adapters in this process and export them (PEFT format)\n"
    "  generate     generate text with a model and a LoRA adapter in this process\n"
    "  make-model   write a randomly initialised model (Hugging Face layout)\n"
    "  quantize     quantize a model's frozen projection weights to int8, nf4 or bf16\n"
    "  tokenize     turn text into token ids (a Hugging Face tokenizer, or bytes)\n"
    "  detokenize   turn token ids back into text\n"
    "  version      print the version\n"
    "\n"
    "Run 'splitchain <command> --help' for a command's options.\n";

int cli_usage(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "splitchain %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nRun 'splitchain %s --help' for usage.\n", cmd);
	return CLI_USAGE;
}

int cli_fail(const char *cmd, sc_err rc, const char *what)
{
	const char *d = sc_err_detail();
	fprintf(stderr, "splitchain %s: %s: %s\n", cmd, what, d[0] ? d : sc_err_name(rc));
	return CLI_ERROR;
}

int cli_int(const char *cmd, const char *flag, const char *s, long lo, long hi, long *out)
{
	char *end;
	long v;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi) {
		cli_usage(cmd, "%s expects a whole number in [%ld, %ld], got '%s'", flag, lo, hi,
			  s);
		return 1;
	}
	*out = v;
	return 0;
}

int cli_float(const char *cmd, const char *flag, const char *s, double lo, double hi, float *out)
{
	char *end;
	double v;
	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) {
		cli_usage(cmd, "%s expects a number in [%g, %g], got '%s'", flag, lo, hi, s);
		return 1;
	}
	*out = (float)v;
	return 0;
}

const char cli_train_help[] =
    "LoRA:\n"
    "  --rank N             adapter rank                                      (default 8)\n"
    "  --alpha X            scale = alpha / rank                              (default 16)\n"
    "  --targets LIST       all (= all-linear), or a comma list of the model's\n"
    "                       projections: GPT-2 attn.c_attn, attn.c_proj, mlp.c_fc,\n"
    "                       mlp.c_proj; Llama family q_proj, k_proj, v_proj, o_proj,\n"
    "                       gate_proj, up_proj, down_proj                     (default all)\n"
    "schedule:\n"
    "  --steps N            optimizer steps                                   (default 100)\n"
    "  --batch N            sequences per micro-batch                         (default 4)\n"
    "  --seq N              tokens per sequence                               (default 64)\n"
    "  --micro N            micro-batches accumulated per step                (default 1)\n"
    "  --lr X               peak learning rate                                (default 2e-4)\n"
    "  --min-lr X           end of the cosine decay                           (default 2e-5)\n"
    "  --warmup N           linear warm-up steps                              (default 10)\n"
    "  --weight-decay X     AdamW decoupled weight decay                      (default 0)\n"
    "  --clip X             clip the global gradient norm at X, 0 = off       (default 1)\n"
    "  --seed N             seeds the data order and the adapters' init       (default 1)\n"
    "  --tf32               let GPU stages run GEMMs on TF32 tensor cores: faster, with\n"
    "                       ~1e-3 relative error in each product              (default fp32)\n"
    "  --wire E             activations and gradients between stages as fp32, bf16,\n"
    "                       fp16, int8 or int4 (per-token scales, stochastic rounding\n"
    "                       seeded by --seed, error feedback on gradients); finetune\n"
    "                       --stages N applies it at its cuts too        (default fp32)\n"
    "frozen base:\n" CLI_BASE_HELP;

const char cli_data_help[] =
    "data:\n"
    "  --tokenizer PATH     tokenizer.json (or a directory with one, or GPT-2's\n"
    "                       vocab.json + merges.txt)  (default: the model directory's\n"
    "                       tokenizer.json if present, else text is read as bytes)\n"
    "  --skip-bad-lines     count and skip malformed JSONL lines instead of failing\n"
    "  --eval-split X       hold out this fraction of the examples (JSONL lines; the\n"
    "                       last tokens of one-document data), drawn with --seed\n"
    "  --eval-data FILE     held-out data in a file of its own (any data format)\n"
    "  --eval-every N       evaluate every N steps, and after the last  (default: after\n"
    "                       the last only); eval loss and perplexity go in the metrics\n"
    "  --eval-batches N     evaluate at most N micro-batches of the held-out data\n"
    "                                                                         (default all)\n"
    "  --no-pack            one example per sequence, padded (the padding and anything\n"
    "                       of another example never a target) instead of packing\n"
    "                       examples back to back with EOS between them\n"
    "  --no-data-cache      tokenize again instead of using (and writing) the cache\n"
    "                       in .splitchain-cache/ beside the data\n";

int cli_data_option(const char *cmd, int c, const char *arg, cli_data_opts *d)
{
	float f;
	switch (c) {
	case CLI_OPT_TOKENIZER: d->tokenizer = arg; return 0;
	case CLI_OPT_SKIP_BAD: d->skip_bad_lines = 1; return 0;
	case CLI_OPT_EVAL_DATA: d->eval_data = arg; return 0;
	case CLI_OPT_NO_PACK: d->no_pack = 1; return 0;
	case CLI_OPT_NO_CACHE: d->no_cache = 1; return 0;
	case CLI_OPT_EVAL_SPLIT:
		if (cli_float(cmd, "--eval-split", arg, 1e-6, 0.5, &f))
			return 1;
		d->eval_split = f;
		return 0;
	case CLI_OPT_EVAL_EVERY:
		return cli_int(cmd, "--eval-every", arg, 1, 100000000, &d->eval_every);
	case CLI_OPT_EVAL_BATCHES:
		return cli_int(cmd, "--eval-batches", arg, 1, 100000000, &d->eval_batches);
	default: return -1;
	}
}

int cli_data_finish(const char *cmd, const cli_data_opts *d)
{
	if (d->eval_split > 0 && d->eval_data)
		return cli_usage(cmd, "--eval-split and --eval-data exclude each other") != 0;
	if ((d->eval_every || d->eval_batches) && !d->eval_split && !d->eval_data)
		return cli_usage(cmd, "--eval-every and --eval-batches need --eval-split or "
				      "--eval-data") != 0;
	return 0;
}

void cli_train_defaults(sc_lora_config *lc, sc_train_config *tc, const char **targets)
{
	sc_train_config_defaults(tc);
	*lc = (sc_lora_config){ .rank = 8, .alpha = 16.0f, .targets = 0, .seed = 1 };
	*targets = "all";
}

int cli_train_targets(const char *cmd, sc_lora_config *lc, const sc_model_config *mc,
		      const char *targets)
{
	if (sc_lora_parse_targets(&lc->targets, mc, targets)) {
		cli_usage(cmd, "--targets: %s", sc_err_detail());
		return 1;
	}
	return 0;
}

int cli_train_option(const char *cmd, int c, const char *arg, sc_lora_config *lc,
		     sc_train_config *tc, const char **targets)
{
	long v = 0;
	int bad = 0;

	switch (c) {
	case 'r':
		if (!(bad = cli_int(cmd, "--rank", arg, 1, 4096, &v)))
			lc->rank = (int)v;
		return bad;
	case 'a': return cli_float(cmd, "--alpha", arg, 1e-6, 1e6, &lc->alpha);
	case 't':
		if (!*arg)
			return cli_usage(cmd, "--targets: empty list") != 0;
		*targets = arg;
		return 0;
	case 'n':
		if (!(bad = cli_int(cmd, "--steps", arg, 0, 100000000, &v)))
			tc->steps = (int)v;
		return bad;
	case 'b':
		if (!(bad = cli_int(cmd, "--batch", arg, 1, 65536, &v)))
			tc->B = (int)v;
		return bad;
	case 'T':
		if (!(bad = cli_int(cmd, "--seq", arg, 1, 1 << 20, &v)))
			tc->T = (int)v;
		return bad;
	case 'u':
		if (!(bad = cli_int(cmd, "--micro", arg, 1, 65536, &v)))
			tc->micro_batches = (int)v;
		return bad;
	case 'l': return cli_float(cmd, "--lr", arg, 1e-12, 10, &tc->lr);
	case 'L': return cli_float(cmd, "--min-lr", arg, 0, 10, &tc->min_lr);
	case 'w':
		if (!(bad = cli_int(cmd, "--warmup", arg, 0, 100000000, &v)))
			tc->warmup = (int)v;
		return bad;
	case 'W': return cli_float(cmd, "--weight-decay", arg, 0, 100, &tc->weight_decay);
	case 'c': return cli_float(cmd, "--clip", arg, 0, 1e12, &tc->grad_clip);
	case 's':
		if (!(bad = cli_int(cmd, "--seed", arg, 0, 0x7FFFFFFFFFFFFFFFL, &v)))
			tc->seed = lc->seed = (uint64_t)v;
		return bad;
	case CLI_OPT_TF32: tc->allow_tf32 = 1; return 0;
	case CLI_OPT_DOUBLE_QUANT: tc->double_quant = 1; return 0;
	case CLI_OPT_BASE_QUANT:
		if (sc_base_quant_parse(arg, &tc->base_quant))
			return cli_usage(cmd, "%s", sc_err_detail()) != 0;
		return 0;
	case CLI_OPT_PRECISION:
		if (sc_precision_parse(arg, &tc->precision))
			return cli_usage(cmd, "%s", sc_err_detail()) != 0;
		return 0;
	case CLI_OPT_WIRE: {
		enum sc_wire w;
		if (sc_wire_parse(arg, &w))
			return cli_usage(cmd, "--wire: %s", sc_err_detail()) != 0;
		tc->wire = (int)w;
		return 0;
	}
	default: return -1;
	}
}

int cli_train_finish(const char *cmd, sc_lora_config *lc, sc_train_config *tc)
{
	(void)lc;
	if (tc->min_lr > tc->lr)
		tc->min_lr = tc->lr;
	if (tc->double_quant && tc->base_quant != SC_BASE_QUANT_NF4)
		return cli_usage(cmd, "--double-quant needs --base-quant nf4 (got --base-quant %s)",
				 sc_base_quant_name(tc->base_quant)) != 0;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(int, char **);
	} cmds[] = {
		{ "submit", cli_submit },     { "jobs", cli_jobs },
		{ "status", cli_status },     { "watch", cli_watch },
		{ "cancel", cli_cancel },     { "workers", cli_workers },
		{ "export", cli_export },     { "finetune", cli_finetune },
		{ "generate", cli_generate }, { "make-model", cli_make_model },
		{ "tokenize", cli_tokenize }, { "detokenize", cli_detokenize },
		{ "links", cli_links },       { "quantize", cli_quantize },
		{ "models", cli_models },
	};

	if (argc < 2) {
		fputs(usage_text, stderr);
		return CLI_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		fputs(usage_text, stdout);
		return CLI_OK;
	}
	if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version")) {
		printf("splitchain %s\n", SC_VERSION);
		return CLI_OK;
	}
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (!strcmp(argv[1], cmds[i].name))
			return cmds[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "splitchain: unknown command '%s'\n\n%s", argv[1], usage_text);
	return CLI_USAGE;
}
