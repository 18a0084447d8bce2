/* cli_files.c — `splitchain make-model` and `splitchain tokenize`. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "sc_data.h"
#include "sc_family.h"
#include "sc_modelgen.h"

static const char make_model_help[] =
    "usage: splitchain make-model --out DIR [options]\n"
    "\n"
    "Writes DIR/config.json and DIR/model.safetensors: a model with random weights\n"
    "in the Hugging Face layout (transformers loads it: GPT2LMHeadModel,\n"
    "LlamaForCausalLM, MistralForCausalLM or Qwen2ForCausalLM). Start from a preset\n"
    "and change any shape with the options below.\n"
    "\n"
    "options:\n"
    "  --out DIR          output directory (created if missing)       (required)\n"
    "  --preset NAME      gpt2 (124M), gpt2-tiny, llama-tiny, smollm2-135m,\n"
    "                     qwen2.5-0.5b, tinyllama-1.1b, llama-3.2-1b   (default gpt2-tiny)\n"
    "  --type T           model_type: gpt2, llama, mistral or qwen2    (default: the preset's)\n"
    "  --layers N         transformer blocks\n"
    "  --heads N          attention heads\n"
    "  --kv-heads N       key/value heads, dividing --heads (Llama family)\n"
    "  --embd N           channels (hidden size)\n"
    "  --head-dim N       head size (Llama family; default embd / heads)\n"
    "  --inner N          MLP width (Llama family; GPT-2 is 4 * embd)\n"
    "  --vocab N          vocabulary size (>= 256 for byte-level text)\n"
    "  --positions N      maximum sequence length\n"
    "  --untied           a separate LM head (Llama family)\n"
    "  --tied             the LM head is the token embedding\n"
    "  --sliding-window N each query sees its last N keys (--type mistral)\n"
    "  --seed N           initialisation seed                          (default 1)\n"
    "  --dtype T          f32, f16 or bf16                             (default f32)\n"
    "  --random-norms     random norm parameters and biases (for tests)\n";

/* Shape options: index into make_model's shape table. */
enum { SH_LAYERS, SH_HEADS, SH_KV, SH_EMBD, SH_HDIM, SH_INNER, SH_VOCAB, SH_POS, SH_WIN, SH_COUNT };

int cli_make_model(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "out", required_argument, 0, 'o' },
		{ "layers", required_argument, 0, 'l' },
		{ "heads", required_argument, 0, 'h' },
		{ "embd", required_argument, 0, 'c' },
		{ "vocab", required_argument, 0, 'v' },
		{ "positions", required_argument, 0, 'p' },
		{ "seed", required_argument, 0, 's' },
		{ "dtype", required_argument, 0, 'd' },
		{ "preset", required_argument, 0, 'P' },
		{ "random-norms", no_argument, 0, 'r' },
		{ "kv-heads", required_argument, 0, 'k' },
		{ "head-dim", required_argument, 0, 'D' },
		{ "inner", required_argument, 0, 'i' },
		{ "type", required_argument, 0, 't' },
		{ "untied", no_argument, 0, 'U' },
		{ "tied", no_argument, 0, 'Y' },
		{ "sliding-window", required_argument, 0, 'W' },
		{ "help", no_argument, 0, 'H' },
		{ 0, 0, 0, 0 },
	};
	static const struct {
		int opt, slot;
		const char *flag;
		long hi;
	} shapes[] = {
		{ 'l', SH_LAYERS, "--layers", 256 },
		{ 'h', SH_HEADS, "--heads", 1024 },
		{ 'k', SH_KV, "--kv-heads", 1024 },
		{ 'c', SH_EMBD, "--embd", 65536 },
		{ 'D', SH_HDIM, "--head-dim", 1024 },
		{ 'i', SH_INNER, "--inner", 1 << 19 },
		{ 'v', SH_VOCAB, "--vocab", 1 << 24 },
		{ 'p', SH_POS, "--positions", 1 << 24 },
		{ 'W', SH_WIN, "--sliding-window", 1 << 24 },
	};
	const char *cmd = "make-model", *out = NULL, *preset = "gpt2-tiny", *type = NULL;
	long shape[SH_COUNT] = { 0 };
	int tie = -1;
	sc_model_config cfg;
	sc_modelgen_opts o = { .seed = 1, .dtype = SC_F32 };
	long v;
	int c;
	sc_err rc;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		int done = 0;
		for (size_t k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++)
			if (c == shapes[k].opt) {
				if (cli_int(cmd, shapes[k].flag, optarg, 1, shapes[k].hi,
					    &shape[shapes[k].slot]))
					return CLI_USAGE;
				done = 1;
			}
		if (done)
			continue;
		switch (c) {
		case 'o': out = optarg; break;
		case 'P': preset = optarg; break;
		case 't': type = optarg; break;
		case 'U': tie = 0; break;
		case 'Y': tie = 1; break;
		case 's':
			if (cli_int(cmd, "--seed", optarg, 0, 0x7FFFFFFFFFFFFFFFL, &v))
				return CLI_USAGE;
			o.seed = (uint64_t)v;
			break;
		case 'd':
			if (!strcmp(optarg, "f32"))
				o.dtype = SC_F32;
			else if (!strcmp(optarg, "f16"))
				o.dtype = SC_F16;
			else if (!strcmp(optarg, "bf16"))
				o.dtype = SC_BF16;
			else
				return cli_usage(cmd, "--dtype must be f32, f16 or bf16, got '%s'",
						 optarg);
			break;
		case 'r': o.random_norms = 1; break;
		case 'H': fputs(make_model_help, stdout); return CLI_OK;
		default:
			return cli_usage(cmd, "unknown or incomplete option '%s'",
					 argv[optind - 1]);
		}
	}
	if (optind < argc)
		return cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
	if (!out)
		return cli_usage(cmd, "--out DIR is required");
	sc_config_shape sh = { .n_layer = (int)shape[SH_LAYERS],
			       .n_head = (int)shape[SH_HEADS],
			       .n_kv_head = (int)shape[SH_KV],
			       .n_embd = (int)shape[SH_EMBD],
			       .head_dim = (int)shape[SH_HDIM],
			       .n_inner = (int)shape[SH_INNER],
			       .vocab_size = (int)shape[SH_VOCAB],
			       .n_positions = (int)shape[SH_POS],
			       .tie = tie,
			       .sliding_window = (int)shape[SH_WIN] };
	if ((rc = sc_config_make(&cfg, preset, type, &sh)))
		return cli_fail(cmd, rc, "cannot make this model");
	if ((rc = sc_modelgen_write(out, &cfg, &o)))
		return cli_fail(cmd, rc, "cannot write the model");
	char desc[256];
	sc_config_describe(&cfg, desc, sizeof(desc));
	printf("wrote %s: %s, %d positions%s\n", out, desc, cfg.n_positions,
	       cfg.tie_embeddings ? "" : ", untied LM head");
	return CLI_OK;
}

static const char tokenize_help[] =
    "usage: splitchain tokenize --in TEXT --out FILE.bin\n"
    "\n"
    "Writes the bytes of TEXT as a token file (256-int32 header, uint16 tokens):\n"
    "one token per byte, ids 0..255.\n";

int cli_tokenize(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "in", required_argument, 0, 'i' },
		{ "out", required_argument, 0, 'o' },
		{ "help", no_argument, 0, 'H' },
		{ 0, 0, 0, 0 },
	};
	const char *cmd = "tokenize", *in = NULL, *out = NULL;
	sc_tokens *tk = NULL;
	int c;
	sc_err rc;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'i': in = optarg; break;
		case 'o': out = optarg; break;
		case 'H': fputs(tokenize_help, stdout); return CLI_OK;
		default:
			return cli_usage(cmd, "unknown or incomplete option '%s'",
					 argv[optind - 1]);
		}
	}
	if (optind < argc)
		return cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
	if (!in || !out)
		return cli_usage(cmd, "--in TEXT and --out FILE are required");
	if ((rc = sc_tokens_load(&tk, in, 256)))
		return cli_fail(cmd, rc, "cannot read the input");
	rc = sc_tokens_save(out, tk->ids, tk->n);
	if (!rc)
		printf("wrote %s: %zu tokens\n", out, tk->n);
	sc_tokens_free(tk);
	return rc ? cli_fail(cmd, rc, "cannot write the token file") : CLI_OK;
}
