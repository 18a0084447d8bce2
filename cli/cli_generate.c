/* cli_generate.c — `splitchain generate`: text generation with a model and
 * (optionally) a LoRA adapter, streaming tokens as they are chosen: in this
 * process, or through workers (a running or finished job's placement and
 * latest checkpoint, or a list of workers) that each keep a key/value cache
 * for their layers, the loop driven from here. */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "cli_conn.h"
#include "cli_gen.h"
#include "sc_adapter.h"
#include "sc_backend.h"
#include "sc_dataset.h"
#include "sc_file.h"
#include "sc_generate.h"
#include "sc_rpc_pb.h"
#include "sc_utf8.h"
#include "sc_wire.h"
#include "splitchain.pb-c.h"

static const char generate_help[] =
    "usage: splitchain generate (--model DIR | --job ID) (--prompt TEXT |\n"
    "                           --prompt-ids 1,2,3 | --prompt-file FILE) [options]\n"
    "\n"
    "Generates text with a Hugging Face model directory (gpt2, llama, mistral, qwen2)\n"
    "and, optionally, a PEFT LoRA adapter, in this process, printing each token as it\n"
    "is chosen. Text is encoded and decoded with --tokenizer or the model directory's\n"
    "tokenizer.json (the prompt as HF's tokenizer(prompt) gives it, BOS included), and\n"
    "generation then ends at the end-of-sequence token; without a tokenizer, text is\n"
    "read and written as bytes (token id = byte value; ids >= 256 print as <id>).\n"
    "\n"
    "options:\n"
    "  --model DIR           Hugging Face checkpoint directory              (required)\n"
    "  --adapter DIR         PEFT LoRA adapter to apply\n"
    "  --tokenizer PATH      tokenizer.json (or a directory with one, or GPT-2's\n"
    "                        vocab.json + merges.txt)   (default: the model's, if any)\n"
    "  --prompt TEXT         the prompt\n"
    "  --prompt-ids LIST     the prompt as token ids, comma-separated\n"
    "  --prompt-file FILE    the prompt, read from FILE\n"
    "  --max-new-tokens N    at most N new tokens                            (default 64)\n"
    "  --temperature T       0 = greedy; > 0 samples                         (default 0)\n"
    "  --top-k K             sample among the K most likely, 0 = all         (default 0)\n"
    "  --top-p P             sample within the smallest set of mass P        (default 1)\n"
    "  --seed N              the sampling stream: same seed, same text       (default 1)\n"
    "  --stop-id ID          stop after this id (repeatable)\n"
    "  --ignore-eos          with a tokenizer, do not stop at end-of-sequence\n"
    "  --stop STR            stop once the text contains STR, taken literally\n"
    "                        (repeatable, up to 8); the text and ids end with the\n"
    "                        token completing it, the text cut right after STR,\n"
    "                        which is kept (as transformers' stop_strings)\n"
    "  --json                no streaming: one JSON object at the end\n"
    "                        {\"prompt_ids\",\"ids\",\"text\",\"tokens_per_s\",...}\n"
    "  --stages N            split the layers into N in-process stages       (default 1)\n"
    "frozen base (finetune's options, here or on --workers; default: the format an\n"
    "adapter from finetune records, i.e. the base it was trained on, else the\n"
    "model's; with --job, the job's, per-layer formats included):\n" CLI_BASE_HELP
    "through workers (each keeps a key/value cache for its layers; only the new\n"
    "positions' hidden states cross each hop):\n"
    "  --job ID              the job's workers and its latest checkpoint's adapter\n"
    "                        (the coordinator: --coordinator URL, default\n"
    "                        $SPLITCHAIN_COORDINATOR, else tcp://127.0.0.1:7700)\n"
    "  --workers URL,URL     these workers' control addresses, layers split evenly\n"
    "                        (--model must be readable by them at the same path)\n"
    "  --timeout-ms N        longest wait for one worker's reply             (default 60000)\n"
    "  --tls-cert/--tls-key/--tls-ca FILE  for tls+tcp:// workers and coordinator\n"
    "                        (default $SPLITCHAIN_TLS_CERT, _KEY, _CA)\n"
    "  --device D            cpu or cuda:N                                   (default cpu)\n"
    "  --threads N           CPU threads, 0 = all cores                      (default 0)\n";

static int parse(gen_args *a, int argc, char **argv)
{
	/* one option a line: over 20 entries, clang-format packs them in columns */
	/* clang-format off */
	static const struct option opts[] = {
		{ "model", 1, 0, 'm' },
		{ "adapter", 1, 0, 'a' },
		{ "prompt", 1, 0, 'p' },
		{ "prompt-ids", 1, 0, 'i' },
		{ "prompt-file", 1, 0, 'f' },
		{ "max-new-tokens", 1, 0, 'n' },
		{ "temperature", 1, 0, 't' },
		{ "top-k", 1, 0, 'k' },
		{ "top-p", 1, 0, 'P' },
		{ "seed", 1, 0, 's' },
		{ "stop-id", 1, 0, 'S' },
		{ "stop", 1, 0, 'T' },
		{ "tokenizer", 1, 0, 'K' },
		{ "ignore-eos", 0, 0, 'E' },
		{ "json", 0, 0, 'J' },
		{ "job", 1, 0, 'B' },
		{ "workers", 1, 0, 'W' },
		{ "coordinator", 1, 0, 'C' },
		{ "timeout-ms", 1, 0, 'O' },
		{ "tls-cert", 1, 0, CLI_OPT_TLS_CERT },
		{ "tls-key", 1, 0, CLI_OPT_TLS_KEY },
		{ "tls-ca", 1, 0, CLI_OPT_TLS_CA },
		{ "stages", 1, 0, 'g' },
		{ "device", 1, 0, 'D' },
		{ "threads", 1, 0, 'j' },
		{ "help", 0, 0, 'h' },
		CLI_BASE_OPTIONS,
		{ 0, 0, 0, 0 },
	};
	/* clang-format on */
	const char *cmd = "generate";
	long v;
	int c, bad;

	memset(a, 0, sizeof(*a));
	a->max_new = 64;
	a->top_p = 1.0f;
	a->seed = 1;
	a->stages = 1;
	a->device = "cpu";
	a->timeout_ms = 60000;
	a->coordinator = cli_default_coordinator();
	sc_train_config_defaults(&a->base);
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		bad = 0;
		switch (c) {
		case 'm': a->model = optarg; break;
		case 'a': a->adapter = optarg; break;
		case 'p': a->prompt = optarg; break;
		case 'i': a->prompt_ids = optarg; break;
		case 'f': a->prompt_file = optarg; break;
		case 'D': a->device = optarg; break;
		case 'J': a->json = 1; break;
		case 'n':
			bad = cli_int(cmd, "--max-new-tokens", optarg, 0, 1 << 24, &a->max_new);
			break;
		case 'k': bad = cli_int(cmd, "--top-k", optarg, 0, 1 << 24, &a->top_k); break;
		case 's':
			bad = cli_int(cmd, "--seed", optarg, 0, 0x7FFFFFFFFFFFFFFFL, &a->seed);
			break;
		case 'g': bad = cli_int(cmd, "--stages", optarg, 1, 256, &a->stages); break;
		case 'j': bad = cli_int(cmd, "--threads", optarg, 0, 1024, &a->threads); break;
		case 't':
			bad = cli_float(cmd, "--temperature", optarg, 0, 1e6, &a->temperature);
			break;
		case 'P': bad = cli_float(cmd, "--top-p", optarg, 1e-9, 1, &a->top_p); break;
		case 'S':
			if (a->n_stop == MAX_STOP)
				return cli_usage(cmd, "at most %d --stop-id", MAX_STOP);
			if (!(bad = cli_int(cmd, "--stop-id", optarg, 0, 0x7FFFFFFF, &v)))
				a->stop[a->n_stop++] = (int32_t)v;
			break;
		case 'T':
			if (a->n_stop_text == SC_MAX_STOP_TEXT)
				return cli_usage(cmd, "at most %d --stop", SC_MAX_STOP_TEXT);
			if (!optarg[0])
				return cli_usage(cmd, "--stop: the string is empty");
			a->stop_text[a->n_stop_text++] = optarg;
			break;
		case 'W': a->workers = optarg; break;
		case 'K': a->tokenizer = optarg; break;
		case 'E': a->ignore_eos = 1; break;
		case 'C': a->coordinator = optarg; break;
		case CLI_OPT_TLS_CERT:
		case CLI_OPT_TLS_KEY:
		case CLI_OPT_TLS_CA: bad = cli_conn_option(cmd, c, optarg, &(cli_conn){ 0 }); break;
		case 'B': bad = cli_int(cmd, "--job", optarg, 1, LONG_MAX, &a->job); break;
		case 'O':
			bad = cli_int(cmd, "--timeout-ms", optarg, 1, 86400000, &a->timeout_ms);
			break;
		case 'h': fputs(generate_help, stdout); return -1;
		case CLI_OPT_BASE_QUANT:
		case CLI_OPT_DOUBLE_QUANT:
		case CLI_OPT_PRECISION: { /* finetune's parsing, on a throwaway LoRA */
			sc_lora_config lc = { 0 };
			const char *targets = NULL;
			bad = cli_train_option(cmd, c, optarg, &lc, &a->base, &targets);
			a->base_given = 1;
			break;
		}
		default:
			return cli_usage(cmd, "unknown or incomplete option '%s'",
					 argv[optind - 1]);
		}
		if (bad)
			return CLI_USAGE;
	}
	if (optind < argc)
		return cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
	if (a->job && (a->model || a->workers || a->adapter))
		return cli_usage(cmd, "--job takes its model, adapter and workers from the job");
	if (!a->job && !a->model)
		return cli_usage(cmd, "--model DIR (or --job ID) is required");
	if (a->base_given && a->job)
		return cli_usage(cmd, "--base-quant, --double-quant and --precision come from the "
				      "job with --job");
	if (a->base_given) {
		sc_lora_config lc = { 0 };
		if (cli_train_finish(cmd, &lc, &a->base))
			return CLI_USAGE;
	}
	if (!!a->prompt + !!a->prompt_ids + !!a->prompt_file != 1)
		return cli_usage(cmd, "give exactly one of --prompt, --prompt-ids, --prompt-file");
	return 0;
}

/* The prompt as ids: the text or file encoded (tok NULL: its bytes), or
 * the listed ids. */
static sc_err prompt_of(const gen_args *a, const sc_tokenizer *tok, int32_t **ids, int *n)
{
	char *text = NULL;
	size_t len = 0;
	*ids = NULL;
	*n = 0;
	if (a->prompt_ids) {
		size_t cap = strlen(a->prompt_ids) / 2 + 1;
		const char *p = a->prompt_ids;
		if (!(*ids = malloc(cap * sizeof(int32_t))))
			return sc_errf(SC_ENOMEM, "out of memory");
		while (*p) {
			char *end;
			long v = strtol(p, &end, 10);
			if (end == p || v < 0 || v > 0x7FFFFFFF || (*end && *end != ',')) {
				free(*ids);
				*ids = NULL;
				return sc_errf(SC_EINVAL, "--prompt-ids: '%s' is not a list of ids",
					       a->prompt_ids);
			}
			(*ids)[(*n)++] = (int32_t)v;
			p = *end ? end + 1 : end;
		}
		return SC_OK;
	}
	if (a->prompt_file) {
		SC_TRY(sc_file_read(a->prompt_file, 1 << 26, &text, &len));
	} else {
		len = strlen(a->prompt);
	}
	const unsigned char *bytes = (const unsigned char *)(text ? text : a->prompt);
	if (tok) {
		size_t k = 0;
		sc_err rc = sc_tokenizer_encode(tok, (const char *)bytes, len, 1, ids, &k);
		free(text);
		if (!rc && k > 0x7FFFFFFF)
			rc = sc_errf(SC_ERANGE, "a prompt of %zu tokens", k);
		*n = rc ? 0 : (int)k;
		return rc;
	}
	*ids = malloc((len ? len : 1) * sizeof(int32_t));
	if (!*ids) {
		free(text);
		return sc_errf(SC_ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < len; i++)
		(*ids)[i] = bytes[i];
	*n = (int)len;
	free(text);
	return SC_OK;
}

/* The text of one id as printed: its byte, or <id> past the bytes. */
static size_t id_text(int32_t id, char buf[16])
{
	if (id >= 0 && id < 256) {
		buf[0] = (char)id;
		return 1;
	}
	return (size_t)snprintf(buf, 16, "<%d>", id);
}

/* The text of a run as it is generated: --stop's matcher, and whether the
 * text streams to stdout. */
typedef struct gen_text {
	sc_stop_text m;
	int print;
	sc_err rc; /* the matcher's error, which stopped the run */
	/* with a tokenizer: the ids so far and the bytes of their decoded text
	 * already passed on (each id's text is what decoding it adds) */
	const sc_tokenizer *tok;
	int32_t *ids;
	size_t n, cap, done;
} gen_text;

/* The text id adds to the run (tokenizer: decoded with the ids before it,
 * nothing while the text ends inside a character); *out borrowed from buf
 * or *dec (free()). */
static sc_err piece_of(gen_text *gt, int32_t id, char buf[16], const char **out, size_t *n,
		       char **dec)
{
	size_t len;
	*dec = NULL;
	if (!gt->tok) {
		*n = id_text(id, buf);
		*out = buf;
		return SC_OK;
	}
	if (gt->n == gt->cap) {
		size_t cap = gt->cap ? 2 * gt->cap : 64;
		int32_t *v = realloc(gt->ids, cap * sizeof(int32_t));
		if (!v)
			return sc_errf(SC_ENOMEM, "out of memory");
		gt->ids = v;
		gt->cap = cap;
	}
	gt->ids[gt->n++] = id;
	SC_TRY(sc_tokenizer_decode(gt->tok, gt->ids, gt->n, 1, dec, &len));
	/* an incomplete character decodes as U+FFFD: wait for the rest */
	if ((len >= 3 && !memcmp(*dec + len - 3, "\xEF\xBF\xBD", 3)) || len < gt->done) {
		*n = 0;
		*out = "";
		return SC_OK;
	}
	*out = *dec + gt->done;
	*n = len - gt->done;
	gt->done = len;
	return SC_OK;
}

/* sc_gen_emit for both paths (in-process segments and workers): the id's
 * text to the matcher, what it releases to stdout; stops on a stop string. */
static int emit(void *arg, int32_t id)
{
	gen_text *gt = arg;
	char b[16], *dec;
	const char *piece = "", *out;
	size_t np = 0, n;
	int stop;
	if ((gt->rc = piece_of(gt, id, b, &piece, &np, &dec)))
		return 1;
	gt->rc = sc_stop_text_push(&gt->m, piece, np, &out, &n, &stop);
	free(dec);
	if (gt->rc)
		return 1;
	if (gt->print && n) {
		fwrite(out, 1, n, stdout);
		fflush(stdout);
	}
	return stop;
}

/* text (len bytes): the run's text, cut after a stop string. */
static void print_json(const int32_t *prompt, int n_prompt, const int32_t *ids, int n,
		       const char *text, size_t len, const sc_gen_stats *st)
{
	cJSON *o = cJSON_CreateObject();
	cJSON *p = cJSON_AddArrayToObject(o, "prompt_ids"), *g = cJSON_AddArrayToObject(o, "ids");
	for (int i = 0; i < n_prompt; i++)
		cJSON_AddItemToArray(p, cJSON_CreateNumber(prompt[i]));
	for (int i = 0; i < n; i++)
		cJSON_AddItemToArray(g, cJSON_CreateNumber(ids[i]));
	/* JSON text is UTF-8: invalid bytes become U+FFFD. */
	char *utf8 = sc_utf8_lossy(text ? text : "", text ? len : 0, NULL);
	cJSON_AddStringToObject(o, "text", utf8 ? utf8 : "");
	free(utf8);
	cJSON_AddNumberToObject(o, "prefill_tokens_per_s",
				st->prefill_s > 0 ? st->n_prompt / st->prefill_s : 0);
	cJSON_AddNumberToObject(o, "tokens_per_s", st->decode_s > 0 ? st->n_new / st->decode_s : 0);
	char *s = cJSON_PrintUnformatted(o);
	if (s)
		puts(s);
	cJSON_free(s);
	cJSON_Delete(o);
}

int cli_generate(int argc, char **argv)
{
	const char *cmd = "generate";
	char path[PATH_MAX + 32], model_path[PATH_MAX], job_tok[PATH_MAX] = "";
	sc_tokenizer *tok = NULL;
	gen_args a;
	sc_model_config mc;
	sc_weights *w = NULL;
	sc_adapter *ad = NULL;
	sc_backend *be = NULL;
	sc_generator *g = NULL;
	remote *rm = NULL;
	int32_t *prompt = NULL, *out = NULL;
	int n_prompt = 0, n_out = 0, ret = CLI_ERROR, p;
	sc_gen_stats st;
	gen_text gt = { .print = 0 };
	sc_err rc;

	if ((p = parse(&a, argc, argv)))
		return p < 0 ? CLI_OK : p;
	if ((rc = sc_stop_text_init(&gt.m, a.stop_text, a.n_stop_text)))
		return cli_usage(cmd, "%s", sc_err_detail());
	gt.print = !a.json;
	if (a.job || a.workers) {
		if (!(rm = calloc(1, sizeof(*rm)))) {
			cli_fail(cmd, sc_errf(SC_ENOMEM, "out of memory"), "cannot generate");
			goto done;
		}
		rm->timeout_ms = (int)a.timeout_ms;
	}
	if (a.job) {
		if ((ret =
			 cli_remote_job(&a, rm, &mc, &ad, model_path, job_tok, sizeof(model_path))))
			goto done;
		ret = CLI_ERROR;
	} else {
		snprintf(path, sizeof(path), "%s/config.json", a.model);
		if ((rc = sc_config_load(&mc, path)) || (rc = sc_train_base_format(&mc, &a.base))) {
			cli_fail(cmd, rc, "cannot use the model");
			goto done;
		}
		if (a.workers) { /* a path the workers can open */
			if (!realpath(a.model, model_path)) {
				fprintf(stderr,
					"splitchain generate: model directory '%s' not found\n",
					a.model);
				goto done;
			}
			/* The workers take a session only with the coordinator's
			 * ticket for this model. */
			if ((ret = cli_remote_workers(&a, rm, &mc)) ||
			    (ret = cli_remote_tickets(&a, rm, model_path)))
				goto done;
			ret = CLI_ERROR;
		}
		if (a.stages > mc.n_layer) {
			ret = cli_usage(cmd, "--stages %ld exceeds the model's %d layers", a.stages,
					mc.n_layer);
			goto done;
		}
		if (a.adapter && (rc = sc_adapter_load(&ad, a.adapter, &mc))) {
			cli_fail(cmd, rc, "cannot read the adapter");
			goto done;
		}
		if (ad && ad->trained_quantized && !a.base_given) {
			/* the frozen base the adapter was trained on, as training held it */
			sc_model_config rec = mc;
			rec.quantized = 1;
			rec.quant_format = ad->trained_format;
			rec.quant_double = ad->trained_double;
			sc_train_base_of(&a.base, &rec);
			if ((rc = sc_train_base_format(&mc, &a.base))) {
				cli_fail(cmd, rc, "cannot use the base the adapter was trained on");
				goto done;
			}
			if (!a.json)
				fprintf(stderr, "[frozen base %s, as the adapter was trained]\n",
					sc_train_base_describe(&mc));
		}
	}
	if (a.job && rm && rm->model[0] && !a.tokenizer && !job_tok[0]) {
		/* A registered model's tokenizer: from the registry, not from
		 * the coordinator's directory. */
		Splitchain__ModelRef mref = SPLITCHAIN__MODEL_REF__INIT;
		Splitchain__ModelInfo *info = NULL;
		mref.name = rm->model;
		mref.files = 1;
		if ((ret = cli_call_url(cmd, a.coordinator, 60000, "Coordinator.ModelShow",
					&mref.base, &splitchain__model_info__descriptor,
					(ProtobufCMessage **)&info)))
			goto done;
		ret = CLI_ERROR;
		rc = sc_wire_model_tokenizer(info, &tok);
		protobuf_c_message_free_unpacked(&info->base, NULL);
	} else {
		rc = sc_dataset_tokenizer(&tok, a.job ? model_path : a.model,
					  a.tokenizer ? a.tokenizer : job_tok);
	}
	if (rc) {
		cli_fail(cmd, rc, "cannot read the tokenizer");
		goto done;
	}
	gt.tok = tok;
	if (tok && !a.ignore_eos) { /* as generate() does: the end of the sequence ends it */
		int eos[2] = { sc_tokenizer_eos_id(tok), mc.eos_token_id };
		for (int i = 0; i < 2; i++)
			if (eos[i] >= 0 && a.n_stop < MAX_STOP)
				a.stop[a.n_stop++] = eos[i];
	}
	if ((rc = prompt_of(&a, tok, &prompt, &n_prompt))) {
		cli_fail(cmd, rc, "cannot read the prompt");
		goto done;
	}
	if (n_prompt < 1) {
		ret = cli_usage(cmd, "the prompt is empty");
		goto done;
	}
	if ((long)n_prompt + a.max_new > mc.n_positions) {
		rc = sc_errf(SC_EINVAL,
			     "a prompt of %d tokens and %ld new ones exceed the model's "
			     "%d positions",
			     n_prompt, a.max_new, mc.n_positions);
		cli_fail(cmd, rc, "cannot generate");
		goto done;
	}
	out = malloc(((size_t)a.max_new + 1) * sizeof(int32_t));
	if (!out) {
		cli_fail(cmd, sc_errf(SC_ENOMEM, "out of memory"), "cannot generate");
		goto done;
	}
	sc_sampling smp = { .temperature = a.temperature,
			    .top_k = (int)a.top_k,
			    .top_p = a.top_p,
			    .seed = (uint64_t)a.seed };
	int P = n_prompt + (int)a.max_new, chunk = n_prompt < 256 ? n_prompt : 256;
	if (rm) {
		if (!a.job) /* --workers: the base as resolved here, flags or the adapter's */
			rm->base = a.base;
		rm->session = cli_remote_session_id();
		rm->C = mc.n_embd;
		rm->V = mc.vocab_size;
		if (!(rm->act = malloc((size_t)chunk * mc.n_embd * sizeof(float)))) {
			cli_fail(cmd, sc_errf(SC_ENOMEM, "out of memory"), "cannot generate");
			goto done;
		}
		if ((rc = cli_remote_open(rm, model_path, ad, P, chunk))) {
			cli_fail(cmd, rc, "cannot open the generation sessions");
			goto done;
		}
		rc = sc_gen_loop(cli_remote_chain, rm, mc.vocab_size, P, chunk, prompt, n_prompt,
				 (int)a.max_new, &smp, a.stop, a.n_stop, emit, &gt, out, &n_out,
				 &st);
	} else {
		if ((rc = sc_weights_open(&w, a.model)) ||
		    (rc = sc_backend_open(&be, a.device, (int)a.threads)) ||
		    (rc = sc_generator_new(&g, be, &mc, w, ad, (int)a.stages, P, chunk))) {
			cli_fail(cmd, rc, "cannot set up generation");
			goto done;
		}
		rc = sc_generator_run(g, prompt, n_prompt, (int)a.max_new, &smp, a.stop, a.n_stop,
				      emit, &gt, out, &n_out, &st);
	}
	if (!rc)
		rc = gt.rc;
	if (gt.print) { /* the tail held back for a stop string that never came */
		const char *tail;
		size_t n;
		sc_stop_text_finish(&gt.m, &tail, &n);
		fwrite(tail, 1, n, stdout);
		fflush(stdout);
	}
	if (rc) {
		cli_fail(cmd, rc, "generation failed");
		goto done;
	}
	if (a.json)
		print_json(prompt, n_prompt, out, n_out, gt.m.text, gt.m.len, &st);
	else
		fprintf(stderr, "\n[%d prompt tokens at %.0f tokens/s, %d new at %.1f tokens/s]\n",
			n_prompt, st.prefill_s > 0 ? n_prompt / st.prefill_s : 0, n_out,
			st.decode_s > 0 ? n_out / st.decode_s : 0);
	ret = CLI_OK;
done:
	if (rm)
		cli_remote_close(rm);
	free(rm);
	sc_generator_free(g);
	sc_backend_free(be);
	sc_adapter_free(ad);
	sc_weights_close(w);
	free(prompt);
	free(out);
	sc_stop_text_free(&gt.m);
	sc_tokenizer_free(tok);
	free(gt.ids);
	return ret;
}
