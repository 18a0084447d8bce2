/* cli_files.c — `splitchain make-model` and `splitchain tokenize`. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "sc_data.h"
#include "sc_modelgen.h"

static const char make_model_help[] =
    "usage: splitchain make-model --out DIR [options]\n"
    "\n"
    "Writes DIR/config.json and DIR/model.safetensors: a GPT-2 model with random\n"
    "weights in the Hugging Face layout (loads with transformers' GPT2LMHeadModel).\n"
    "\n"
    "options:\n"
    "  --out DIR          output directory (created if missing)       (required)\n"
    "  --layers N         transformer blocks                           (default 4)\n"
    "  --heads N          attention heads                              (default 4)\n"
    "  --embd N           channels, a multiple of --heads              (default 128)\n"
    "  --vocab N          vocabulary size (>= 256 for byte-level text) (default 512)\n"
    "  --positions N      maximum sequence length                      (default 256)\n"
    "  --preset NAME      gpt2 (124M: 12 layers, 12 heads, 768, 50257, 1024) or tiny\n"
    "  --seed N           initialisation seed                          (default 1)\n"
    "  --dtype T          f32, f16 or bf16                             (default f32)\n"
    "  --random-norms     random LayerNorm parameters and biases (for tests)\n";

int cli_make_model(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "out", required_argument, 0, 'o' },    { "layers", required_argument, 0, 'l' },
		{ "heads", required_argument, 0, 'h' },  { "embd", required_argument, 0, 'c' },
		{ "vocab", required_argument, 0, 'v' },  { "positions", required_argument, 0, 'p' },
		{ "seed", required_argument, 0, 's' },   { "dtype", required_argument, 0, 'd' },
		{ "preset", required_argument, 0, 'P' }, { "random-norms", no_argument, 0, 'r' },
		{ "help", no_argument, 0, 'H' },         { 0, 0, 0, 0 },
	};
	const char *cmd = "make-model", *out = NULL;
	sc_model_config cfg = { .n_layer = 4,
				.n_head = 4,
				.n_embd = 128,
				.vocab_size = 512,
				.n_positions = 256,
				.ln_eps = 1e-5f };
	sc_modelgen_opts o = { .seed = 1, .dtype = SC_F32 };
	long v;
	int c;
	sc_err rc;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'o': out = optarg; break;
		case 'l':
			if (cli_int(cmd, "--layers", optarg, 1, 256, &v))
				return CLI_USAGE;
			cfg.n_layer = (int)v;
			break;
		case 'h':
			if (cli_int(cmd, "--heads", optarg, 1, 1024, &v))
				return CLI_USAGE;
			cfg.n_head = (int)v;
			break;
		case 'c':
			if (cli_int(cmd, "--embd", optarg, 1, 65536, &v))
				return CLI_USAGE;
			cfg.n_embd = (int)v;
			break;
		case 'v':
			if (cli_int(cmd, "--vocab", optarg, 1, 65536, &v))
				return CLI_USAGE;
			cfg.vocab_size = (int)v;
			break;
		case 'p':
			if (cli_int(cmd, "--positions", optarg, 1, 1 << 20, &v))
				return CLI_USAGE;
			cfg.n_positions = (int)v;
			break;
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
		case 'P':
			if (!strcmp(optarg, "gpt2"))
				cfg = (sc_model_config){ 12, 12, 768, 50257, 1024, 1e-5f };
			else if (!strcmp(optarg, "tiny"))
				cfg = (sc_model_config){ 4, 4, 128, 512, 256, 1e-5f };
			else
				return cli_usage(cmd, "unknown --preset '%s' (gpt2, tiny)", optarg);
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
	if ((rc = sc_modelgen_write(out, &cfg, &o)))
		return cli_fail(cmd, rc, "cannot write the model");
	printf("wrote %s: GPT-2, %d layers, %d heads, %d channels, vocabulary %d, %d positions\n",
	       out, cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.vocab_size, cfg.n_positions);
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
