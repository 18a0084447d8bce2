/* cli_files.c — `splitchain make-model`, `tokenize` and `detokenize`. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "sc_data.h"
#include "sc_family.h"
#include "sc_file.h"
#include "sc_modelgen.h"
#include "sc_tokenizer.h"

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
    "usage: splitchain tokenize --tokenizer PATH (--in FILE | --text STR) [--out FILE.bin]\n"
    "                           [--json] [--no-special]\n"
    "       splitchain tokenize --in TEXT --out FILE.bin\n"
    "\n"
    "With --tokenizer (a tokenizer.json, or a directory holding one or GPT-2's\n"
    "vocab.json + merges.txt): encodes the whole input as one text, with the same\n"
    "ids as Hugging Face tokenizers' Tokenizer.encode(text).ids (invalid UTF-8 is\n"
    "replaced by U+FFFD first).\n"
    "  --json        print {\"ids\":[...]} on stdout\n"
    "  --out FILE    write a token file (256-int32 header; uint16 ids when all fit,\n"
    "                else version 2 with 32-bit ids)\n"
    "  --no-special  no post-processor tokens (add_special_tokens=False)\n"
    "\n"
    "Without --tokenizer: writes the bytes of TEXT as a token file, one token per\n"
    "byte, ids 0..255.\n";

/* Prints ids as {"ids":[...]} on stdout. */
static void print_ids_json(const int32_t *ids, size_t n)
{
	fputs("{\"ids\":[", stdout);
	for (size_t i = 0; i < n; i++)
		printf(i ? ",%d" : "%d", ids[i]);
	fputs("]}\n", stdout);
}

int cli_tokenize(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "in", required_argument, 0, 'i' },
		{ "out", required_argument, 0, 'o' },
		{ "tokenizer", required_argument, 0, 'k' },
		{ "text", required_argument, 0, 't' },
		{ "json", no_argument, 0, 'j' },
		{ "no-special", no_argument, 0, 'n' },
		{ "help", no_argument, 0, 'H' },
		{ 0, 0, 0, 0 },
	};
	const char *cmd = "tokenize", *in = NULL, *out = NULL, *tpath = NULL, *text = NULL;
	int c, json = 0, special = 1, ret = CLI_ERROR;
	sc_tokens *tk = NULL;
	sc_tokenizer *t = NULL;
	char *buf = NULL;
	int32_t *ids = NULL;
	size_t len = 0, n = 0;
	sc_err rc;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'i': in = optarg; break;
		case 'o': out = optarg; break;
		case 'k': tpath = optarg; break;
		case 't': text = optarg; break;
		case 'j': json = 1; break;
		case 'n': special = 0; break;
		case 'H': fputs(tokenize_help, stdout); return CLI_OK;
		default:
			return cli_usage(cmd, "unknown or incomplete option '%s'",
					 argv[optind - 1]);
		}
	}
	if (optind < argc)
		return cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
	if (!tpath) {
		if (!in || !out || text || json)
			return cli_usage(cmd, "--in TEXT and --out FILE are required "
					      "(--text and --json need --tokenizer)");
		if ((rc = sc_tokens_load(&tk, in, 256)))
			return cli_fail(cmd, rc, "cannot read the input");
		rc = sc_tokens_save(out, tk->ids, tk->n);
		if (!rc)
			printf("wrote %s: %zu tokens\n", out, tk->n);
		sc_tokens_free(tk);
		return rc ? cli_fail(cmd, rc, "cannot write the token file") : CLI_OK;
	}
	if (!in == !text)
		return cli_usage(cmd, "give one of --in FILE and --text STR");
	if (!out && !json)
		return cli_usage(cmd, "give --out FILE, --json or both");
	if ((rc = sc_tokenizer_load(&t, tpath))) {
		cli_fail(cmd, rc, "cannot load the tokenizer");
		goto done;
	}
	if (in && (rc = sc_file_read(in, SIZE_MAX, &buf, &len))) {
		cli_fail(cmd, rc, "cannot read the input");
		goto done;
	}
	if ((rc = sc_tokenizer_encode(t, in ? buf : text, in ? len : strlen(text), special, &ids,
				      &n))) {
		cli_fail(cmd, rc, "cannot encode the input");
		goto done;
	}
	if (json)
		print_ids_json(ids, n);
	if (out && (rc = sc_tokens_save(out, ids, n))) {
		cli_fail(cmd, rc, "cannot write the token file");
		goto done;
	}
	if (out && !json)
		printf("wrote %s: %zu tokens\n", out, n);
	ret = CLI_OK;
done:
	free(ids);
	free(buf);
	sc_tokenizer_free(t);
	return ret;
}

static const char detokenize_help[] =
    "usage: splitchain detokenize --tokenizer PATH (--ids 1,2,3 | --in FILE.bin)\n"
    "                             [--no-special]\n"
    "\n"
    "Prints the text of the ids as Hugging Face tokenizers' decode(ids) does;\n"
    "--no-special leaves out special tokens (skip_special_tokens=True). Ids the\n"
    "tokenizer does not know are dropped.\n";

/* Parses "1,2,3" into *ids (new, free with free()). */
static int parse_ids(const char *cmd, const char *s, int32_t **ids, size_t *n)
{
	size_t cap = 1;
	for (const char *p = s; *p; p++)
		cap += *p == ',';
	if (!(*ids = malloc(cap * sizeof(**ids))))
		return cli_usage(cmd, "out of memory");
	*n = 0;
	while (*s) {
		char *end;
		long v = strtol(s, &end, 10);
		if (end == s || v < 0 || v > INT32_MAX || (*end && *end != ',')) {
			free(*ids);
			*ids = NULL;
			return cli_usage(cmd, "--ids wants comma-separated ids, got '%s'", s);
		}
		(*ids)[(*n)++] = (int32_t)v;
		s = *end ? end + 1 : end;
	}
	return 0;
}

int cli_detokenize(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "tokenizer", required_argument, 0, 'k' },
		{ "ids", required_argument, 0, 'd' },
		{ "in", required_argument, 0, 'i' },
		{ "no-special", no_argument, 0, 'n' },
		{ "help", no_argument, 0, 'H' },
		{ 0, 0, 0, 0 },
	};
	const char *cmd = "detokenize", *tpath = NULL, *idlist = NULL, *in = NULL;
	int c, skip = 0, ret = CLI_ERROR;
	sc_tokenizer *t = NULL;
	sc_tokens *tk = NULL;
	int32_t *ids = NULL;
	char *text = NULL;
	size_t n = 0, len = 0;
	sc_err rc;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'k': tpath = optarg; break;
		case 'd': idlist = optarg; break;
		case 'i': in = optarg; break;
		case 'n': skip = 1; break;
		case 'H': fputs(detokenize_help, stdout); return CLI_OK;
		default:
			return cli_usage(cmd, "unknown or incomplete option '%s'",
					 argv[optind - 1]);
		}
	}
	if (optind < argc)
		return cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
	if (!tpath || !idlist == !in)
		return cli_usage(cmd, "--tokenizer PATH and one of --ids LIST, --in FILE are "
				      "required");
	if (idlist && parse_ids(cmd, idlist, &ids, &n))
		return CLI_USAGE;
	if ((rc = sc_tokenizer_load(&t, tpath))) {
		cli_fail(cmd, rc, "cannot load the tokenizer");
		goto done;
	}
	if (in && (rc = sc_tokens_load(&tk, in, sc_tokenizer_vocab_size(t)))) {
		cli_fail(cmd, rc, "cannot read the token file");
		goto done;
	}
	if ((rc = sc_tokenizer_decode(t, in ? tk->ids : ids, in ? tk->n : n, skip, &text, &len))) {
		cli_fail(cmd, rc, "cannot decode");
		goto done;
	}
	fwrite(text, 1, len, stdout);
	ret = CLI_OK;
done:
	free(text);
	free(ids);
	sc_tokens_free(tk);
	sc_tokenizer_free(t);
	return ret;
}
