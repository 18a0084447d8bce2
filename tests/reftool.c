/* reftool.c — sc_reftool, the test-side window into the engine for the
 * PyTorch / PEFT reference checks (tests/ref/):
 *   sc_reftool grad    loss and LoRA gradients of one step's data, no update
 *                      (--base-quant int8|nf4 [--double-quant]: on a base
 *                      quantized as it loads, as a job's option does;
 *                      --precision bf16: bf16 products, as a job's)
 *   sc_reftool batches the exact token batches a job reads
 * Outputs are safetensors files; see tests/ref/README.md. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sc_adapter.h"
#include "sc_backend.h"
#include "sc_data.h"
#include "sc_dataset.h"
#include "sc_train.h"

typedef struct args {
	const char *model, *data, *adapter, *out, *targets, *tokenizer;
	int B, T, M, step, steps, stages, threads, rank, vocab, eos, base_quant, double_quant,
	    precision;
	float alpha;
	uint64_t seed;
} args;

/* Reports a failure (its detail, else its name) and returns the exit code 1. */
static int die(sc_err rc, const char *what)
{
	fprintf(stderr, "sc_reftool: %s: %s\n", what,
		sc_err_detail()[0] ? sc_err_detail() : sc_err_name(rc));
	return 1;
}

static int parse(args *a, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "model", 1, 0, 'm' },      { "data", 1, 0, 'd' },
		{ "adapter", 1, 0, 'a' },    { "out", 1, 0, 'o' },
		{ "batch", 1, 0, 'b' },      { "seq", 1, 0, 'T' },
		{ "micro", 1, 0, 'M' },      { "step", 1, 0, 's' },
		{ "steps", 1, 0, 'n' },      { "seed", 1, 0, 'S' },
		{ "stages", 1, 0, 'k' },     { "threads", 1, 0, 'j' },
		{ "rank", 1, 0, 'r' },       { "alpha", 1, 0, 'A' },
		{ "targets", 1, 0, 't' },    { "vocab", 1, 0, 'v' },
		{ "tokenizer", 1, 0, 'K' },  { "eos", 1, 0, 'E' },
		{ "base-quant", 1, 0, 'Q' }, { "double-quant", 0, 0, 'D' },
		{ "precision", 1, 0, 'P' },  { 0, 0, 0, 0 },
	};
	int c;
	*a = (args){ .B = 2,
		     .T = 16,
		     .M = 1,
		     .stages = 1,
		     .rank = 4,
		     .alpha = 8,
		     .seed = 1,
		     .targets = "all",
		     .steps = 1,
		     .eos = -1 };
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'm': a->model = optarg; break;
		case 'K': a->tokenizer = optarg; break;
		case 'E': a->eos = atoi(optarg); break;
		case 'd': a->data = optarg; break;
		case 'a': a->adapter = optarg; break;
		case 'o': a->out = optarg; break;
		case 'b': a->B = atoi(optarg); break;
		case 'T': a->T = atoi(optarg); break;
		case 'M': a->M = atoi(optarg); break;
		case 's': a->step = atoi(optarg); break;
		case 'n': a->steps = atoi(optarg); break;
		case 'S': a->seed = strtoull(optarg, NULL, 10); break;
		case 'k': a->stages = atoi(optarg); break;
		case 'j': a->threads = atoi(optarg); break;
		case 'r': a->rank = atoi(optarg); break;
		case 'A': a->alpha = (float)atof(optarg); break;
		case 't': a->targets = optarg; break;
		case 'v': a->vocab = atoi(optarg); break;
		case 'D': a->double_quant = 1; break;
		case 'P':
			if (sc_precision_parse(optarg, &a->precision)) {
				fprintf(stderr, "sc_reftool: %s\n", sc_err_detail());
				return 2;
			}
			break;
		case 'Q':
			if (sc_base_quant_parse(optarg, &a->base_quant)) {
				fprintf(stderr, "sc_reftool: %s\n", sc_err_detail());
				return 2;
			}
			break;
		default: return 2;
		}
	}
	if (!a->data || !a->out || a->B < 1 || a->T < 1 || a->M < 1 || a->steps < 1) {
		fprintf(stderr, "sc_reftool: --data, --out and positive sizes are required\n");
		return 2;
	}
	return 0;
}

/* Data of steps [0, n) as (n, M, B, T) inputs and targets: a token file,
 * text or JSONL (sc_dataset.h), with --tokenizer or as bytes. */
static int cmd_batches(args *a)
{
	sc_tokens *tk = NULL;
	sc_loader *ld = NULL;
	sc_st_writer *w = NULL;
	size_t rows = (size_t)a->steps * a->M, BT = (size_t)a->B * a->T;
	int32_t *in = malloc(rows * BT * sizeof(int32_t)),
		*tg = malloc(rows * BT * sizeof(int32_t));
	int64_t shape[4] = { a->steps, a->M, a->B, a->T };
	sc_err rc;
	int ret = 1;

	if (!in || !tg || !a->vocab) {
		fprintf(stderr, "sc_reftool batches: out of memory or --vocab missing\n");
		goto out;
	}
	sc_tokenizer *tok = NULL;
	if ((rc = sc_dataset_tokenizer(&tok, NULL, a->tokenizer))) {
		ret = die(rc, "tokenizer");
		goto out;
	}
	rc = sc_dataset_load_for(&tk, a->data, tok, a->vocab, a->eos, 0, NULL);
	sc_tokenizer_free(tok);
	if (rc || (rc = sc_loader_new(&ld, tk, a->T, a->seed))) {
		ret = die(rc, "data");
		goto out;
	}
	for (size_t i = 0; i < rows; i++)
		sc_loader_batch(ld, i * a->B, a->B, in + i * BT, tg + i * BT);
	if ((rc = sc_st_writer_new(&w)) ||
	    (rc = sc_st_writer_add(w, "inputs", SC_I32, 4, shape, in)) ||
	    (rc = sc_st_writer_add(w, "targets", SC_I32, 4, shape, tg)) ||
	    (rc = sc_st_writer_save(w, a->out))) {
		ret = die(rc, "writing");
		goto out;
	}
	ret = 0;
out:
	sc_st_writer_free(w);
	sc_loader_free(ld);
	sc_tokens_free(tk);
	free(in);
	free(tg);
	return ret;
}

/* Adds every adapted layer's A and B gradients of ad to w under PEFT names
 * (the family's); the names are kept in names[] until the file is written. */
static sc_err add_lora(sc_st_writer *w, const sc_adapter *ad, char (*names)[128])
{
	int k = 0;
	for (int l = 0; l < ad->n_layer; l++) {
		for (int t = 0; t < SC_LORA_MAX_TARGETS; t++) {
			int in, out;
			int64_t sa[2], sb[2];
			if (!ad->a[l][t])
				continue;
			sc_lora_target_dims(&ad->mc, t, &in, &out);
			sa[0] = sb[1] = ad->lora.rank;
			sa[1] = in;
			sb[0] = out;
			sc_adapter_peft_name(ad, l, t, 0, names[k], 128);
			SC_TRY(sc_st_writer_add(w, names[k++], SC_F32, 2, sa, ad->a[l][t]));
			sc_adapter_peft_name(ad, l, t, 1, names[k], 128);
			SC_TRY(sc_st_writer_add(w, names[k++], SC_F32, 2, sb, ad->b[l][t]));
		}
	}
	return SC_OK;
}

static int cmd_grad(args *a)
{
	char path[4096], loss_s[64];
	sc_model_config mc;
	sc_lora_config lc = { .rank = a->rank, .alpha = a->alpha, .seed = a->seed };
	sc_train_config tc;
	sc_weights *wf = NULL;
	sc_tokens *tk = NULL;
	sc_adapter *init = NULL, *grads = NULL;
	sc_backend *be = NULL;
	sc_trainer *tr = NULL;
	sc_st_writer *w = NULL;
	sc_loader *ld = NULL;
	char(*names)[128] = NULL;
	size_t BT = (size_t)a->B * a->T;
	int32_t *in = malloc((size_t)a->M * BT * 4), *tg = malloc((size_t)a->M * BT * 4);
	int64_t shape[3] = { a->M, a->B, a->T };
	double loss;
	sc_err rc;
	int ret = 1;

	snprintf(path, sizeof(path), "%s/config.json", a->model ? a->model : ".");
	if ((rc = sc_config_load(&mc, path)) || !in || !tg) {
		ret = die(rc, "model config");
		goto out;
	}
	if ((rc = sc_weights_open(&wf, a->model)) ||
	    (rc = sc_tokens_load(&tk, a->data, mc.vocab_size))) {
		ret = die(rc, "model or data");
		goto out;
	}
	if (a->adapter) {
		if ((rc = sc_adapter_load(&init, a->adapter, &mc))) {
			ret = die(rc, "adapter");
			goto out;
		}
		lc = init->lora;
	} else if ((rc = sc_lora_parse_targets(&lc.targets, &mc, a->targets))) {
		ret = die(rc, "targets");
		goto out;
	}
	sc_train_config_defaults(&tc);
	tc.B = a->B;
	tc.T = a->T;
	tc.micro_batches = a->M;
	tc.seed = a->seed;
	tc.steps = a->step + 1;
	tc.base_quant = a->base_quant;
	tc.double_quant = a->double_quant;
	tc.precision = a->precision;
	if ((rc = sc_backend_open(&be, "cpu", a->threads)) ||
	    (rc = sc_trainer_new(&tr, be, &mc, &lc, &tc, wf, init, tk, a->stages, NULL)) ||
	    (rc = sc_trainer_grad(tr, a->step, &loss))) {
		ret = die(rc, "computing gradients");
		goto out;
	}
	/* Gradients, gathered stage by stage into an adapter-shaped host copy. */
	if ((rc = sc_adapter_new(&grads, &lc, &mc))) {
		ret = die(rc, "gradients");
		goto out;
	}
	for (int i = 0; i < sc_trainer_stages(tr); i++) {
		if ((rc = sc_segment_export(sc_trainer_stage(tr, i), SC_G_GRAD, grads))) {
			ret = die(rc, "reading gradients");
			goto out;
		}
	}
	sc_loader_new(&ld, tk, a->T, a->seed);
	for (int m = 0; m < a->M; m++)
		sc_loader_batch(ld, ((uint64_t)a->step * a->M + m) * a->B, a->B, in + m * BT,
				tg + m * BT);
	names = calloc((size_t)mc.n_layer * SC_LORA_MAX_TARGETS * 2, sizeof(*names));
	snprintf(loss_s, sizeof(loss_s), "%.17g", loss);
	if (!names || (rc = sc_st_writer_new(&w)) || (rc = sc_st_writer_meta(w, "loss", loss_s)) ||
	    (rc = sc_st_writer_add(w, "inputs", SC_I32, 3, shape, in)) ||
	    (rc = sc_st_writer_add(w, "targets", SC_I32, 3, shape, tg)) ||
	    (rc = add_lora(w, grads, names)) || (rc = sc_st_writer_save(w, a->out))) {
		ret = die(rc, "writing");
		goto out;
	}
	printf("loss %.17g\n", loss);
	ret = 0;
out:
	free(names);
	sc_st_writer_free(w);
	sc_loader_free(ld);
	sc_trainer_free(tr);
	sc_backend_free(be);
	sc_adapter_free(grads);
	sc_adapter_free(init);
	sc_tokens_free(tk);
	sc_weights_close(wf);
	free(in);
	free(tg);
	return ret;
}

int main(int argc, char **argv)
{
	args a;
	int rc;
	if (argc < 2 || (strcmp(argv[1], "grad") && strcmp(argv[1], "batches"))) {
		fprintf(stderr, "usage: sc_reftool grad|batches [options]\n");
		return 2;
	}
	if ((rc = parse(&a, argc - 1, argv + 1)))
		return rc;
	return !strcmp(argv[1], "grad") ? cmd_grad(&a) : cmd_batches(&a);
}
