/* train.c — learning-rate schedule, clipping, and the single-process
 * trainer: a chain of segments driven micro-batch by micro-batch in one
 * process, the reference that every distributed run reproduces. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sc_codec.h"
#include "sc_family.h"
#include "sc_quant.h"
#include "sc_train.h"

void sc_train_config_defaults(sc_train_config *tc)
{
	memset(tc, 0, sizeof(*tc));
	tc->steps = 100;
	tc->B = 4;
	tc->T = 64;
	tc->micro_batches = 1;
	tc->lr = 2e-4f;
	tc->min_lr = 2e-5f;
	tc->warmup = 10;
	tc->weight_decay = 0.0f;
	tc->beta1 = 0.9f;
	tc->beta2 = 0.999f;
	tc->eps = 1e-8f;
	tc->grad_clip = 1.0f;
	tc->seed = 1;
}

sc_err sc_train_config_validate(const sc_train_config *tc)
{
	if (tc->steps < 0)
		return sc_errf(SC_EINVAL, "steps %d must be >= 0", tc->steps);
	if (tc->B < 1 || tc->T < 1 || tc->micro_batches < 1)
		return sc_errf(SC_EINVAL,
			       "batch %d, sequence length %d and micro-batches %d must all "
			       "be >= 1",
			       tc->B, tc->T, tc->micro_batches);
	if (!(tc->lr > 0) || !isfinite(tc->lr) || tc->min_lr < 0 || tc->min_lr > tc->lr)
		return sc_errf(SC_EINVAL, "learning rate %g must be > 0 and min-lr %g in [0, lr]",
			       tc->lr, tc->min_lr);
	if (tc->warmup < 0)
		return sc_errf(SC_EINVAL, "warm-up %d must be >= 0", tc->warmup);
	if (tc->weight_decay < 0 || !(tc->beta1 >= 0 && tc->beta1 < 1) ||
	    !(tc->beta2 >= 0 && tc->beta2 < 1) || !(tc->eps > 0))
		return sc_errf(SC_EINVAL,
			       "AdamW: weight decay %g must be >= 0, betas (%g, %g) in "
			       "[0, 1), eps %g > 0",
			       tc->weight_decay, tc->beta1, tc->beta2, tc->eps);
	if (isnan(tc->grad_clip))
		return sc_errf(SC_EINVAL, "gradient clip must be a number");
	if (tc->wire < 0 || tc->wire >= SC_WIRE_COUNT)
		return sc_errf(SC_EINVAL, "wire encoding %d is not one of 0..%d", tc->wire,
			       SC_WIRE_COUNT - 1);
	if (tc->base_quant < 0 || tc->base_quant >= SC_BASE_QUANT_COUNT)
		return sc_errf(SC_EINVAL, "base quantization %d is not one of 0..%d",
			       tc->base_quant, SC_BASE_QUANT_COUNT - 1);
	if (tc->precision < 0 || tc->precision >= SC_PRECISION_COUNT)
		return sc_errf(SC_EINVAL, "precision %d is not one of 0..%d", tc->precision,
			       SC_PRECISION_COUNT - 1);
	if (tc->double_quant && tc->base_quant != SC_BASE_QUANT_NF4)
		return sc_errf(SC_EINVAL, "double quantization is for --base-quant nf4 only");
	return SC_OK;
}

static const char *const base_quant_names[SC_BASE_QUANT_COUNT] = { "none", "int8", "nf4" };
static const char *const precision_names[SC_PRECISION_COUNT] = { "fp32", "bf16" };

const char *sc_base_quant_name(int q)
{
	return q >= 0 && q < SC_BASE_QUANT_COUNT ? base_quant_names[q] : "?";
}

const char *sc_precision_name(int p)
{
	return p >= 0 && p < SC_PRECISION_COUNT ? precision_names[p] : "?";
}

sc_err sc_base_quant_parse(const char *name, int *out)
{
	for (int q = 0; name && q < SC_BASE_QUANT_COUNT; q++)
		if (!strcmp(name, base_quant_names[q])) {
			*out = q;
			return SC_OK;
		}
	return sc_errf(SC_EINVAL, "--base-quant '%s': choose none, int8 or nf4",
		       name ? name : "(null)");
}

sc_err sc_precision_parse(const char *name, int *out)
{
	for (int p = 0; name && p < SC_PRECISION_COUNT; p++)
		if (!strcmp(name, precision_names[p])) {
			*out = p;
			return SC_OK;
		}
	return sc_errf(SC_EINVAL, "--precision '%s': choose fp32 or bf16", name ? name : "(null)");
}

const char *sc_train_base_describe(const sc_model_config *mc)
{
	if (!mc->quantized)
		return "fp32";
	if (mc->quant_format == SC_QUANT_NF4 && mc->quant_double)
		return "nf4+dq";
	return sc_quant_name((enum sc_quant_format)mc->quant_format);
}

const char *sc_train_base_word(const sc_train_config *tc)
{
	if (tc->base_quant < 0 || tc->base_quant >= SC_BASE_QUANT_COUNT || tc->precision < 0 ||
	    tc->precision >= SC_PRECISION_COUNT)
		return "?";
	if (tc->base_quant == SC_BASE_QUANT_NF4 && tc->double_quant)
		return "nf4+dq";
	if (tc->base_quant != SC_BASE_QUANT_NONE)
		return base_quant_names[tc->base_quant];
	return precision_names[tc->precision];
}

void sc_train_base_of(sc_train_config *tc, const sc_model_config *base)
{
	tc->base_quant = SC_BASE_QUANT_NONE;
	tc->double_quant = 0;
	if (!base->quantized)
		return;
	switch (base->quant_format) {
	case SC_QUANT_INT8: tc->base_quant = SC_BASE_QUANT_INT8; break;
	case SC_QUANT_NF4:
		tc->base_quant = SC_BASE_QUANT_NF4;
		tc->double_quant = base->quant_double;
		break;
	default: tc->precision = SC_PRECISION_BF16; break; /* SC_QUANT_BF16 */
	}
	if (base->compute_bf16) /* int8 / nf4 multiplied as bf16 */
		tc->precision = SC_PRECISION_BF16;
}

/* mc's compute_bf16 once its format is settled: --precision bf16, or a
 * bf16 base (whose int8 / nf4 layers, --layer-quant's, then multiply as
 * bf16 as the rest of it does). */
static void set_compute(sc_model_config *mc, const sc_train_config *tc)
{
	mc->compute_bf16 = tc->precision == SC_PRECISION_BF16 ||
			   (mc->quantized && mc->quant_format == SC_QUANT_BF16);
}

sc_err sc_train_base_format(sc_model_config *mc, const sc_train_config *tc)
{
	enum sc_quant_format want;
	SC_TRY(sc_train_config_validate(tc));
	if (tc->base_quant == SC_BASE_QUANT_INT8)
		want = SC_QUANT_INT8;
	else if (tc->base_quant == SC_BASE_QUANT_NF4)
		want = SC_QUANT_NF4;
	else if (tc->precision == SC_PRECISION_BF16 && !mc->quantized)
		want = SC_QUANT_BF16;
	else {
		set_compute(mc, tc);
		return SC_OK; /* the directory's own format */
	}
	if (mc->quantized) {
		if ((int)want == mc->quant_format && tc->double_quant == mc->quant_double) {
			set_compute(mc, tc);
			return SC_OK;
		}
		return sc_errf(SC_EINVAL,
			       "the model directory is already quantized to %s (its config.json's "
			       "quantization_config); --base-quant %s%s asks for another format: "
			       "leave --base-quant out, or give the float model",
			       sc_train_base_describe(mc), sc_base_quant_name(tc->base_quant),
			       tc->double_quant ? " --double-quant" : "");
	}
	mc->quantized = 1;
	mc->quant_format = (int)want;
	mc->quant_double = tc->double_quant;
	set_compute(mc, tc);
	return SC_OK;
}

float sc_lr_at(const sc_train_config *tc, int step)
{
	double progress, span;

	if (step < tc->warmup)
		return (float)((double)tc->lr * (step + 1) / tc->warmup);
	span = (double)(tc->steps - 1 - tc->warmup);
	progress = (step - tc->warmup) / (span > 1 ? span : 1.0);
	if (progress > 1)
		progress = 1;
	return (float)(tc->min_lr + 0.5 * (1.0 + cos(M_PI * progress)) * (tc->lr - tc->min_lr));
}

float sc_clip_factor(double norm, float clip)
{
	double f;
	if (!(clip > 0))
		return 1.0f;
	f = clip / (norm + 1e-6);
	return f < 1.0 ? (float)f : 1.0f;
}

/* Per token: every frozen projection's product forward and its input
 * gradient backward (4 in out), attention's four products over the keys
 * (6 T NH hs, causal), the adapters (6 r (in + out), all targets). */
void sc_step_flops(const sc_model_config *mc, int T, int r, double *per_layer, double *head)
{
	const sc_family *f = sc_family_of(mc);
	double prod = 0, sides = 0;
	for (int t = 0; f && t < f->n_targets; t++) {
		int in, out;
		f->target_dims(mc, t, &in, &out);
		prod += (double)in * out;
		sides += in + out;
	}
	*per_layer = 4 * prod + 6.0 * T * mc->n_head * mc->head_dim + 6.0 * r * sides;
	*head = 4.0 * mc->n_embd * mc->vocab_size;
}

double sc_global_norm(const double *per_layer, int n_layer)
{
	double s = 0;
	for (int l = 0; l < n_layer; l++)
		s += per_layer[l];
	return sqrt(s);
}

struct sc_trainer {
	sc_backend *be;
	sc_model_config mc;
	sc_lora_config lc;
	sc_train_config tc;
	int nstages;
	sc_segment **stages;
	sc_loader *loader;
	/* more data sources (sc_trainer_add_data): loaders[0] is loader */
	sc_loader *loaders[SC_TRAIN_MAX_SOURCES];
	int nsources;
	float **acc, *tmp;         /* per stage: the folded groups' gradient; scratch */
	int32_t *inputs, *targets; /* (B,T) */
	float *act, *grad;         /* (B,T,C) the hand-over between stages */
	double *layer_sumsq;       /* (L) */
	void *wire_buf;            /* sc_wire_bytes of (B T, C): an encoded hand-over */
	float *ef;                 /* (nstages, M, B T C): error feedback of the gradients
				    * stage i sends back, per micro-batch; NULL for fp32 */
};

/* The hand-over x (B T rows of C) from stage `from` crossing its boundary
 * in direction dir (SC_WIRE_FORWARD / SC_WIRE_BACKWARD), as a data plane
 * carries it. step < 0: an evaluation (nearest rounding, no feedback). */
static void cross(sc_trainer *tr, float *x, int step, int m, int from, int dir)
{
	size_t rows = (size_t)tr->tc.B * tr->tc.T, C = (size_t)tr->mc.n_embd;
	float *res = NULL;
	sc_rng r;

	if (tr->tc.wire == SC_WIRE_FP32)
		return;
	if (step >= 0) {
		sc_wire_rng(&r, tr->tc.seed, (uint64_t)step, (uint32_t)m, (uint32_t)from, dir);
		if (dir == SC_WIRE_BACKWARD)
			res = tr->ef + ((size_t)from * tr->tc.micro_batches + (size_t)m) * rows * C;
	}
	sc_wire_roundtrip(tr->tc.wire, x, rows, C, res, step >= 0 ? &r : NULL, tr->wire_buf);
}

sc_err sc_trainer_new(sc_trainer **out, sc_backend *be, const sc_model_config *mc,
		      const sc_lora_config *lc, const sc_train_config *tc, sc_weights *weights,
		      const sc_adapter *init, const sc_tokens *tk, int nstages, const int *bounds)
{
	sc_trainer *tr;
	sc_adapter *fresh = NULL;
	size_t BTC;
	sc_err rc;

	*out = NULL;
	SC_TRY(sc_train_config_validate(tc));
	SC_TRY(sc_lora_config_validate(lc, mc));
	sc_model_config base = *mc; /* the segments' format of the frozen base */
	SC_TRY(sc_train_base_format(&base, tc));
	SC_TRY(be->ops->set_tf32(be, tc->allow_tf32));
	if (nstages < 1 || nstages > mc->n_layer)
		return sc_errf(SC_EINVAL, "%d stages for a model of %d layers: need 1..%d", nstages,
			       mc->n_layer, mc->n_layer);
	for (int i = 0; bounds && i < nstages; i++)
		if (bounds[i] >= bounds[i + 1] || (i == 0 && bounds[0] != 0) ||
		    (i == nstages - 1 && bounds[nstages] != mc->n_layer))
			return sc_errf(SC_EINVAL, "stage boundaries must rise from 0 to %d",
				       mc->n_layer);
	tr = calloc(1, sizeof(*tr));
	if (!tr)
		return sc_errf(SC_ENOMEM, "out of memory");
	tr->be = be;
	tr->mc = *mc;
	tr->lc = *lc;
	tr->tc = *tc;
	tr->nstages = nstages;
	BTC = (size_t)tc->B * tc->T * mc->n_embd;
	tr->stages = calloc((size_t)nstages, sizeof(*tr->stages));
	tr->inputs = malloc((size_t)tc->B * tc->T * sizeof(int32_t));
	tr->targets = malloc((size_t)tc->B * tc->T * sizeof(int32_t));
	tr->act = malloc(BTC * sizeof(float));
	tr->grad = malloc(BTC * sizeof(float));
	tr->layer_sumsq = calloc((size_t)mc->n_layer, sizeof(double));
	if (!tr->stages || !tr->inputs || !tr->targets || !tr->act || !tr->grad ||
	    !tr->layer_sumsq) {
		rc = sc_errf(SC_ENOMEM, "out of memory");
		goto fail;
	}
	if ((rc = sc_loader_new(&tr->loader, tk, tc->T, tc->seed)))
		goto fail;
	tr->loaders[0] = tr->loader;
	tr->nsources = 1;
	if (tc->wire != SC_WIRE_FP32 &&
	    (!(tr->wire_buf =
		   malloc(sc_wire_bytes(tc->wire, (size_t)tc->B * tc->T, (size_t)mc->n_embd))) ||
	     !(tr->ef = calloc((size_t)nstages * tc->micro_batches * BTC, sizeof(float))))) {
		rc = sc_errf(SC_ENOMEM, "out of memory for the wire encoding's buffers");
		goto fail;
	}
	if (!init) {
		if ((rc = sc_adapter_new(&fresh, lc, mc)))
			goto fail;
		sc_adapter_init(fresh);
		init = fresh;
	}
	for (int i = 0; i < nstages; i++) {
		sc_segment_spec sp = {
			.model = base, .lora = *lc, .B = tc->B, .T = tc->T, .slots = 1
		};
		sp.first = bounds ? bounds[i] : (int)((long)mc->n_layer * i / nstages);
		sp.last = bounds ? bounds[i + 1] : (int)((long)mc->n_layer * (i + 1) / nstages);
		if ((rc = sc_segment_new(&tr->stages[i], be, &sp)) ||
		    (rc = sc_segment_load_weights(tr->stages[i], weights)) ||
		    (rc = sc_segment_set_lora(tr->stages[i], init)))
			goto fail;
	}
	sc_adapter_free(fresh);
	*out = tr;
	return SC_OK;
fail:
	sc_adapter_free(fresh);
	sc_trainer_free(tr);
	return rc;
}

size_t sc_trainer_stage_memory(const sc_trainer *tr, int i, int *first, int *last)
{
	const sc_segment_spec *sp = sc_segment_get_spec(tr->stages[i]);
	*first = sp->first;
	*last = sp->last;
	return sc_segment_device_bytes(tr->stages[i]);
}

void sc_trainer_free(sc_trainer *tr)
{
	if (!tr)
		return;
	for (int i = 0; tr->stages && i < tr->nstages; i++)
		sc_segment_free(tr->stages[i]);
	free(tr->stages);
	sc_loader_free(tr->loader);
	free(tr->inputs);
	free(tr->targets);
	free(tr->act);
	free(tr->grad);
	free(tr->layer_sumsq);
	free(tr->wire_buf);
	free(tr->ef);
	for (int i = 1; i < tr->nsources; i++)
		sc_loader_free(tr->loaders[i]);
	for (int i = 0; tr->acc && i < tr->nstages; i++)
		free(tr->acc[i]);
	free(tr->acc);
	free(tr->tmp);
	free(tr);
}

sc_err sc_trainer_add_data(sc_trainer *tr, const sc_tokens *tk)
{
	size_t most = 0;
	if (tr->nsources == SC_TRAIN_MAX_SOURCES)
		return sc_errf(SC_ERANGE, "at most %d data sources", SC_TRAIN_MAX_SOURCES);
	if (tr->tc.wire != SC_WIRE_FP32)
		return sc_errf(SC_ENOTSUP, "several data sources travel fp32 only (--wire fp32)");
	if (!tr->acc) { /* the fold's buffers, once */
		if (!(tr->acc = calloc((size_t)tr->nstages, sizeof(*tr->acc))))
			return sc_errf(SC_ENOMEM, "out of memory");
		for (int i = 0; i < tr->nstages; i++) {
			size_t n = sc_segment_lora_floats(tr->stages[i]);
			if (!(tr->acc[i] = malloc((n ? n : 1) * sizeof(float))))
				return sc_errf(SC_ENOMEM, "out of memory");
			most = n > most ? n : most;
		}
		if (!(tr->tmp = malloc((most ? most : 1) * sizeof(float))))
			return sc_errf(SC_ENOMEM, "out of memory");
	}
	SC_TRY(sc_loader_new(&tr->loaders[tr->nsources], tk, tr->tc.T, tr->tc.seed));
	tr->nsources++;
	return SC_OK;
}

sc_err sc_trainer_grad(sc_trainer *tr, int step, double *loss)
{
	int M = tr->tc.micro_batches, S = tr->nstages, G = tr->nsources, n = G * M;
	double sum = 0;

	for (int i = 0; i < S; i++)
		SC_TRY(sc_segment_zero_grad(tr->stages[i]));
	for (int g = 0; g < n; g++) {
		int o = g / M, m = g % M;
		double lm = 0;
		sc_loader_micro_batch(tr->loaders[o], (uint64_t)step, M, m, tr->tc.B, tr->inputs,
				      tr->targets);
		for (int i = 0; i < S; i++) {
			const void *in = i == 0 ? (const void *)tr->inputs : tr->act;
			SC_TRY(sc_segment_forward(tr->stages[i], 0, in, tr->targets, 1.0f / n,
						  tr->act, &lm));
			if (i < S - 1)
				cross(tr, tr->act, step, g, i, SC_WIRE_FORWARD);
		}
		for (int i = S - 1; i >= 0; i--) {
			SC_TRY(sc_segment_backward(tr->stages[i], 0, i == S - 1 ? NULL : tr->grad,
						   i == 0 ? NULL : tr->grad));
			if (i > 0)
				cross(tr, tr->grad, step, g, i, SC_WIRE_BACKWARD);
		}
		sum += lm;                                         /* micro-batch order: fixed */
		for (int i = 0; G > 1 && m == M - 1 && i < S; i++) /* a source's sum */
			SC_TRY(sc_segment_grad_fold(tr->stages[i], tr->acc[i], tr->tmp, o == 0));
	}
	for (int i = 0; G > 1 && i < S; i++)
		SC_TRY(sc_segment_write_group(tr->stages[i], SC_G_GRAD, tr->acc[i]));
	*loss = sum / n;
	return SC_OK;
}

sc_err sc_trainer_step(sc_trainer *tr, int step, sc_step_stats *st)
{
	sc_adamw_hparams hp = { tr->tc.beta1, tr->tc.beta2, tr->tc.eps, tr->tc.weight_decay };
	struct timespec t0, t1;
	float clip, lr;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	memset(st, 0, sizeof(*st));
	SC_TRY(sc_trainer_grad(tr, step, &st->loss));
	for (int i = 0; i < tr->nstages; i++) {
		const sc_segment_spec *sp = sc_segment_get_spec(tr->stages[i]);
		SC_TRY(sc_segment_grad_sumsq(tr->stages[i], tr->layer_sumsq + sp->first));
	}
	st->grad_norm = sc_global_norm(tr->layer_sumsq, tr->mc.n_layer);
	clip = sc_clip_factor(st->grad_norm, tr->tc.grad_clip);
	lr = sc_lr_at(&tr->tc, step);
	for (int i = 0; i < tr->nstages; i++)
		SC_TRY(sc_segment_adamw(tr->stages[i], &hp, lr, clip, step + 1));
	clock_gettime(CLOCK_MONOTONIC, &t1);
	st->step = step;
	st->lr = lr;
	st->tokens = (long)tr->tc.B * tr->tc.T * tr->tc.micro_batches * tr->nsources;
	st->seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
	return SC_OK;
}

void sc_eval_add(sc_eval_acc *a, double loss, size_t targets)
{
	if (targets) /* a padding micro-batch's loss is 0 and counts for nothing */
		a->sum += loss * (double)targets;
	a->tokens += targets;
}

double sc_eval_mean(const sc_eval_acc *a)
{
	return a->tokens ? a->sum / (double)a->tokens : NAN;
}

sc_err sc_trainer_eval(sc_trainer *tr, const sc_tokens *eval, size_t max_batches, double *loss,
		       size_t *tokens)
{
	size_t K = sc_eval_batches(eval, tr->tc.T, tr->tc.B, max_batches);
	sc_eval_acc acc = { 0 };
	int S = tr->nstages;

	for (size_t k = 0; k < K; k++) {
		double lm = 0;
		size_t valid = sc_eval_batch(eval, tr->tc.T, tr->tc.B, k, tr->inputs, tr->targets);
		for (int i = 0; i < S; i++) {
			const void *in = i == 0 ? (const void *)tr->inputs : tr->act;
			SC_TRY(sc_segment_forward(tr->stages[i], 0, in, tr->targets, 1.0f, tr->act,
						  &lm));
			if (i < S - 1)
				cross(tr, tr->act, -1, 0, i, SC_WIRE_FORWARD);
		}
		sc_eval_add(&acc, lm, valid);
	}
	*loss = sc_eval_mean(&acc);
	*tokens = acc.tokens;
	return SC_OK;
}

sc_err sc_trainer_eval_sources(sc_trainer *tr, const sc_tokens *const *evals, int n,
			       size_t max_batches, double *loss, size_t *tokens)
{
	size_t K[SC_TRAIN_MAX_SOURCES], passes = 0, M = (size_t)tr->tc.micro_batches;
	sc_eval_acc acc = { 0 };
	int S = tr->nstages;

	if (n < 1 || n > SC_TRAIN_MAX_SOURCES)
		return sc_errf(SC_EINVAL, "%d held-out sources", n);
	for (int o = 0; o < n; o++) {
		K[o] = evals[o] ? sc_eval_batches(evals[o], tr->tc.T, tr->tc.B, max_batches) : 0;
		passes = (K[o] + M - 1) / M > passes ? (K[o] + M - 1) / M : passes;
	}
	for (size_t p = 0; p < passes; p++)
		for (int o = 0; o < n; o++)
			for (size_t k = p * M; k < p * M + M && k < K[o]; k++) {
				double lm = 0;
				size_t valid = sc_eval_batch(evals[o], tr->tc.T, tr->tc.B, k,
							     tr->inputs, tr->targets);
				for (int i = 0; i < S; i++) {
					const void *in =
					    i == 0 ? (const void *)tr->inputs : tr->act;
					SC_TRY(sc_segment_forward(tr->stages[i], 0, in, tr->targets,
								  1.0f, tr->act, &lm));
					if (i < S - 1)
						cross(tr, tr->act, -1, 0, i, SC_WIRE_FORWARD);
				}
				sc_eval_add(&acc, lm, valid); /* padding would add nothing */
			}
	*loss = sc_eval_mean(&acc);
	*tokens = acc.tokens;
	return SC_OK;
}

sc_err sc_trainer_get_lora(const sc_trainer *tr, sc_adapter *ad)
{
	for (int i = 0; i < tr->nstages; i++)
		SC_TRY(sc_segment_get_lora(tr->stages[i], ad));
	return SC_OK;
}

sc_segment *sc_trainer_stage(sc_trainer *tr, int i)
{
	return (i >= 0 && i < tr->nstages) ? tr->stages[i] : NULL;
}

int sc_trainer_stages(const sc_trainer *tr)
{
	return tr->nstages;
}
