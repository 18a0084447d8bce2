/* segment_test.c — a segment's forward and backward: gradients against
 * finite differences, chains of segments against the whole model bit for
 * bit, and bad input. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sc_modelgen.h"
#include "sc_quant.h"
#include "sc_rng.h"
#include "sc_segment.h"
#include "testutil.h"

enum { L = 3, NH = 2, C = 16, V = 64, P = 16, B = 2, T = 8, R = 4 };

typedef struct fixture {
	sc_model_config mc;
	sc_lora_config lc;
	sc_backend *be;
	char dir[512];       /* the model: config.json, model.safetensors */
	sc_st_file *weights; /* its model.safetensors */
	sc_adapter *ad;      /* random A and B: every gradient is nonzero */
	int32_t tokens[B * T], targets[B * T];
} fixture;

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	char path[600];
	sc_modelgen_opts o = { .seed = 3, .dtype = SC_F32, .random_norms = 1 };
	sc_rng r;
	uint64_t k = 77;

	sc_gpt2_config(&f->mc, L, NH, C, V, P);
	f->lc = (sc_lora_config){ .rank = R, .alpha = 8.0f, .targets = SC_GPT2_ALL, .seed = 5 };
	sc_test_path(f->dir, sizeof(f->dir), "segmodel");
	SC_ASSERT_OK(sc_modelgen_write(f->dir, &f->mc, &o));
	snprintf(path, sizeof(path), "%s/model.safetensors", f->dir);
	SC_ASSERT_OK(sc_st_open(&f->weights, path));
	SC_ASSERT_OK(sc_backend_cpu_open(&f->be, 1));
	SC_ASSERT_OK(sc_adapter_new(&f->ad, &f->lc, &f->mc));
	sc_test_fill_normal(f->ad->data, f->ad->n_floats, 99, 0.2f);
	sc_rng_seed(&r, &k, 1);
	for (int i = 0; i < B * T; i++) {
		f->tokens[i] = (int32_t)sc_rng_below(&r, V);
		f->targets[i] = (int32_t)sc_rng_below(&r, V);
	}
	f->targets[3] = -1; /* an ignored position */
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	sc_adapter_free(f->ad);
	sc_backend_free(f->be);
	sc_st_close(f->weights);
	free(f);
	return 0;
}

static sc_segment *make(fixture *f, int first, int last, const sc_adapter *ad)
{
	sc_segment_spec sp = { .model = f->mc,
			       .lora = f->lc,
			       .first = first,
			       .last = last,
			       .B = B,
			       .T = T,
			       .slots = 2 };
	sc_segment *seg;
	SC_ASSERT_OK(sc_segment_new(&seg, f->be, &sp));
	SC_ASSERT_OK(sc_segment_load_base(seg, f->weights));
	SC_ASSERT_OK(sc_segment_set_lora(seg, ad));
	SC_ASSERT_OK(sc_segment_zero_grad(seg));
	return seg;
}

/* Runs the chain bounds[0..n] on one micro-batch: loss and all gradients. */
static double run_chain(fixture *f, const int *bounds, int n, sc_adapter *grads, int slot)
{
	sc_segment *segs[L];
	float act[B * T * C], grad[B * T * C];
	double loss = -1;
	for (int i = 0; i < n; i++)
		segs[i] = make(f, bounds[i], bounds[i + 1], f->ad);
	for (int i = 0; i < n; i++)
		SC_ASSERT_OK(sc_segment_forward(segs[i], slot, i ? (void *)act : f->tokens,
						f->targets, 1.0f, act, &loss));
	for (int i = n - 1; i >= 0; i--)
		SC_ASSERT_OK(
		    sc_segment_backward(segs[i], slot, i == n - 1 ? NULL : grad, i ? grad : NULL));
	for (int i = 0; i < n; i++) {
		SC_ASSERT_OK(sc_segment_export(segs[i], SC_G_GRAD, grads));
		sc_segment_free(segs[i]);
	}
	return loss;
}

static void chains_equal_whole_model_bit_for_bit(void **state)
{
	fixture *f = *state;
	static const int whole[] = { 0, L }, two[] = { 0, 1, L }, three[] = { 0, 1, 2, L };
	sc_adapter *g1, *g2, *g3;
	SC_ASSERT_OK(sc_adapter_new(&g1, &f->lc, &f->mc));
	SC_ASSERT_OK(sc_adapter_new(&g2, &f->lc, &f->mc));
	SC_ASSERT_OK(sc_adapter_new(&g3, &f->lc, &f->mc));
	double l1 = run_chain(f, whole, 1, g1, 0);
	double l2 = run_chain(f, two, 2, g2, 1);
	double l3 = run_chain(f, three, 3, g3, 0);
	assert_true(l1 > 0 && isfinite(l1));
	assert_memory_equal(&l1, &l2, sizeof(double));
	assert_memory_equal(&l1, &l3, sizeof(double));
	assert_memory_equal(g1->data, g2->data, g1->n_floats * sizeof(float));
	assert_memory_equal(g1->data, g3->data, g1->n_floats * sizeof(float));
	/* and the gradients are not trivially zero */
	double s = 0;
	for (size_t i = 0; i < g1->n_floats; i++)
		s += fabs(g1->data[i]);
	assert_true(s > 1e-3);
	sc_adapter_free(g1);
	sc_adapter_free(g2);
	sc_adapter_free(g3);
}

static double loss_at(fixture *f, const sc_adapter *ad)
{
	sc_segment *seg = make(f, 0, L, ad);
	double loss;
	SC_ASSERT_OK(sc_segment_forward(seg, 0, f->tokens, f->targets, 1.0f, NULL, &loss));
	sc_segment_free(seg);
	return loss;
}

/* The LoRA gradient projected on a random direction d against the central
 * difference (L(p + h d) - L(p - h d)) / 2h. */
static void lora_gradient_matches_finite_differences(void **state)
{
	fixture *f = *state;
	static const int whole[] = { 0, L };
	sc_adapter *g, *plus, *minus;
	float *d = malloc(f->ad->n_floats * sizeof(float));
	double h = 2e-3, analytic = 0, numeric;
	SC_ASSERT_OK(sc_adapter_new(&g, &f->lc, &f->mc));
	SC_ASSERT_OK(sc_adapter_new(&plus, &f->lc, &f->mc));
	SC_ASSERT_OK(sc_adapter_new(&minus, &f->lc, &f->mc));
	run_chain(f, whole, 1, g, 0);
	sc_test_fill_normal(d, f->ad->n_floats, 1234, 1.0f);
	for (size_t i = 0; i < f->ad->n_floats; i++) {
		analytic += (double)g->data[i] * d[i];
		plus->data[i] = f->ad->data[i] + (float)h * d[i];
		minus->data[i] = f->ad->data[i] - (float)h * d[i];
	}
	numeric = (loss_at(f, plus) - loss_at(f, minus)) / (2 * h);
	print_message("directional derivative: analytic %.6e numeric %.6e\n", analytic, numeric);
	assert_true(fabs(analytic - numeric) <= 2e-2 * fabs(numeric) + 1e-5);
	free(d);
	sc_adapter_free(g);
	sc_adapter_free(plus);
	sc_adapter_free(minus);
}

/* A middle-to-last segment's input gradient against finite differences. */
static void input_gradient_matches_finite_differences(void **state)
{
	fixture *f = *state;
	sc_segment *seg = make(f, 1, L, f->ad);
	float x[B * T * C], dx[B * T * C], xp[B * T * C], u[B * T * C];
	double loss, lp, lm, analytic = 0, h = 1e-2;
	sc_test_fill_normal(x, B * T * C, 8, 1.0f);
	sc_test_fill_normal(u, B * T * C, 9, 1.0f);
	SC_ASSERT_OK(sc_segment_forward(seg, 0, x, f->targets, 1.0f, NULL, &loss));
	SC_ASSERT_OK(sc_segment_backward(seg, 0, NULL, dx));
	for (int i = 0; i < B * T * C; i++) {
		analytic += (double)dx[i] * u[i];
		xp[i] = x[i] + (float)h * u[i];
	}
	SC_ASSERT_OK(sc_segment_forward(seg, 1, xp, f->targets, 1.0f, NULL, &lp));
	for (int i = 0; i < B * T * C; i++)
		xp[i] = x[i] - (float)h * u[i];
	SC_ASSERT_OK(sc_segment_forward(seg, 1, xp, f->targets, 1.0f, NULL, &lm));
	double numeric = (lp - lm) / (2 * h);
	print_message("input derivative: analytic %.6e numeric %.6e\n", analytic, numeric);
	assert_true(fabs(analytic - numeric) <= 2e-2 * fabs(numeric) + 1e-5);
	sc_segment_free(seg);
}

/* With B = 0 (a fresh adapter) the model is exactly the base model, and the
 * A-gradients are zero while the B-gradients are not. */
static void fresh_adapter_is_identity(void **state)
{
	fixture *f = *state;
	sc_adapter *fresh, *g;
	static const int whole[] = { 0, L };
	SC_ASSERT_OK(sc_adapter_new(&fresh, &f->lc, &f->mc));
	SC_ASSERT_OK(sc_adapter_new(&g, &f->lc, &f->mc));
	sc_adapter_init(fresh);
	sc_adapter *saved = f->ad;
	f->ad = fresh;
	run_chain(f, whole, 1, g, 0);
	f->ad = saved;
	for (int l = 0; l < L; l++) {
		int in, out;
		double sa = 0, sb = 0;
		sc_lora_target_dims(&f->mc, SC_GPT2_MLP_FC, &in, &out);
		for (int i = 0; i < R * in; i++)
			sa += fabs(g->a[l][SC_GPT2_MLP_FC][i]);
		for (int i = 0; i < R * out; i++)
			sb += fabs(g->b[l][SC_GPT2_MLP_FC][i]);
		assert_true(sa == 0.0);
		assert_true(sb > 0.0);
	}
	sc_adapter_free(fresh);
	sc_adapter_free(g);
}

static void bad_input_is_refused(void **state)
{
	fixture *f = *state;
	sc_segment *seg = make(f, 0, L, f->ad), *bad;
	int32_t tok[B * T];
	double loss;
	sc_segment_spec sp = {
		.model = f->mc, .lora = f->lc, .first = 0, .last = L, .B = B, .T = T, .slots = 1
	};

	memcpy(tok, f->tokens, sizeof(tok));
	tok[5] = V; /* one past the vocabulary */
	SC_ASSERT_ERR(sc_segment_forward(seg, 0, tok, f->targets, 1.0f, NULL, &loss), SC_ERANGE);
	tok[5] = -2;
	SC_ASSERT_ERR(sc_segment_forward(seg, 0, tok, f->targets, 1.0f, NULL, &loss), SC_ERANGE);
	memcpy(tok, f->targets, sizeof(tok));
	tok[0] = V + 7;
	SC_ASSERT_ERR(sc_segment_forward(seg, 0, f->tokens, tok, 1.0f, NULL, &loss), SC_ERANGE);
	SC_ASSERT_ERR(sc_segment_forward(seg, 2, f->tokens, f->targets, 1.0f, NULL, &loss),
		      SC_EINVAL);
	sc_segment_free(seg);

	sp.lora.rank = 0;
	SC_ASSERT_ERR(sc_segment_new(&bad, f->be, &sp), SC_EINVAL);
	sp.lora.rank = R;
	sp.first = 2;
	sp.last = 2;
	SC_ASSERT_ERR(sc_segment_new(&bad, f->be, &sp), SC_EINVAL);
	sp.first = 0;
	sp.last = L + 1;
	SC_ASSERT_ERR(sc_segment_new(&bad, f->be, &sp), SC_EINVAL);
	sp.last = L;
	sp.T = P + 1;
	SC_ASSERT_ERR(sc_segment_new(&bad, f->be, &sp), SC_EINVAL);
}

/* sc_segment_load_weights (the model's directory) loads what
 * sc_segment_load_base (its one file) loads: the same loss and output, bit
 * for bit, for the first, a middle and the last segment. */
static void weights_dir_loads_the_same(void **state)
{
	fixture *f = *state;
	static const int ranges[3][2] = { { 0, 1 }, { 1, 2 }, { 2, L } };
	sc_weights *w;
	float x[B * T * C], got[2][B * T * C];
	double loss[2];
	sc_test_fill_normal(x, B * T * C, 10, 1.0f);
	SC_ASSERT_OK(sc_weights_open(&w, f->dir));
	for (int r = 0; r < 3; r++) {
		int first = ranges[r][0], last = ranges[r][1];
		sc_segment_spec sp = { .model = f->mc,
				       .lora = f->lc,
				       .first = first,
				       .last = last,
				       .B = B,
				       .T = T,
				       .slots = 1 };
		for (int k = 0; k < 2; k++) {
			sc_segment *seg;
			SC_ASSERT_OK(sc_segment_new(&seg, f->be, &sp));
			if (k)
				SC_ASSERT_OK(sc_segment_load_weights(seg, w));
			else
				SC_ASSERT_OK(sc_segment_load_base(seg, f->weights));
			SC_ASSERT_OK(sc_segment_set_lora(seg, f->ad));
			loss[k] = -1;
			memset(got[k], 0, sizeof(got[k]));
			SC_ASSERT_OK(sc_segment_forward(seg, 0, first ? (void *)x : f->tokens,
							f->targets, 1.0f, got[k], &loss[k]));
			sc_segment_free(seg);
		}
		assert_memory_equal(&loss[0], &loss[1], sizeof(double));
		assert_memory_equal(got[0], got[1], sizeof(got[0]));
		if (last < L) { /* an output was written, not the zeros set above */
			double s = 0;
			for (int i = 0; i < B * T * C; i++)
				s += fabs(got[0][i]);
			assert_true(s > 0);
		}
	}
	assert_true(loss[0] > 0 && isfinite(loss[0]));
	sc_weights_close(w);
}

/* Weights of a smaller model lack this model's layers: named in the error. */
static void missing_weights_are_named(void **state)
{
	fixture *f = *state;
	sc_model_config small;
	sc_modelgen_opts o = { .seed = 1, .dtype = SC_F16 };
	char dir[512], path[600];
	sc_st_file *wf;
	sc_segment *seg;
	sc_segment_spec sp = {
		.model = f->mc, .lora = f->lc, .first = 1, .last = 2, .B = B, .T = T, .slots = 1
	};
	sc_gpt2_config(&small, 1, NH, C, V, P);
	sc_test_path(dir, sizeof(dir), "small");
	SC_ASSERT_OK(sc_modelgen_write(dir, &small, &o));
	snprintf(path, sizeof(path), "%s/model.safetensors", dir);
	SC_ASSERT_OK(sc_st_open(&wf, path));
	SC_ASSERT_OK(sc_segment_new(&seg, f->be, &sp));
	SC_ASSERT_ERR(sc_segment_load_base(seg, wf), SC_EFORMAT);
	assert_non_null(strstr(sc_err_detail(), "h.1.ln_1.weight"));
	sc_segment_free(seg);
	/* layer 0 of the f16 file loads (converted to f32) */
	sp.first = 0;
	sp.last = 1;
	sp.model.n_layer = 1;
	SC_ASSERT_OK(sc_segment_new(&seg, f->be, &sp));
	SC_ASSERT_OK(sc_segment_load_base(seg, wf));
	sc_segment_free(seg);
	sc_st_close(wf);
}

/* Two steps of training on seg (each: forward and backward of two
 * micro-batches, AdamW); the adapters after them into out. The helper takes
 * the next action of one of two segments, so that a test can interleave
 * them as a worker serving two jobs does. */
typedef struct trainee {
	sc_segment *seg;
	const int32_t *tokens, *targets;
	int B, T, stage; /* stage: the next of 6 actions */
} trainee;

static void train_one(trainee *t)
{
	static const sc_adamw_hparams hp = { 0.9f, 0.999f, 1e-8f, 0.01f };
	double loss;
	int s = t->stage++ % 3, mb = (t->stage - 1) / 3 % 2;
	const int32_t *tok = t->tokens + (size_t)mb * (size_t)(t->B * t->T) / 2;
	if (s == 0) {
		SC_ASSERT_OK(sc_segment_forward(t->seg, mb, tok, t->targets, 0.5f, NULL, &loss));
		assert_true(isfinite(loss));
	} else if (s == 1) {
		SC_ASSERT_OK(sc_segment_backward(t->seg, mb, NULL, NULL));
	} else if (mb == 1) {
		SC_ASSERT_OK(sc_segment_adamw(t->seg, &hp, 1e-2f, 1.0f, t->stage / 6));
		SC_ASSERT_OK(sc_segment_zero_grad(t->seg));
	}
}

static sc_segment *make_shape(fixture *f, const sc_model_config *mc, const sc_lora_config *lc,
			      int Bm, int Tm, const sc_segment *donor, sc_weights *w)
{
	sc_segment_spec sp = { .model = *mc,
			       .lora = *lc,
			       .first = 0,
			       .last = mc->n_layer,
			       .B = Bm,
			       .T = Tm,
			       .slots = 2 };
	sc_segment *seg;
	sc_adapter *ad;
	if (donor)
		SC_ASSERT_OK(sc_segment_new_sharing(&seg, f->be, &sp, donor));
	else {
		SC_ASSERT_OK(sc_segment_new(&seg, f->be, &sp));
		SC_ASSERT_OK(sc_segment_load_weights(seg, w));
	}
	SC_ASSERT_OK(sc_adapter_new(&ad, lc, mc));
	sc_test_fill_normal(ad->data, ad->n_floats, 7 + (uint64_t)lc->rank, 0.2f);
	SC_ASSERT_OK(sc_segment_set_lora(seg, ad));
	SC_ASSERT_OK(sc_segment_zero_grad(seg));
	sc_adapter_free(ad);
	return seg;
}

/* Parameter sharing: a job's segment that shares another's frozen weights
 * trains exactly as it does alone, its steps interleaved with the other's,
 * with another LoRA rank and another sequence length (the rotary tables are
 * its own), and goes on after the segment that loaded the weights is gone. */
static void shared_base_trains_as_alone(void **state)
{
	fixture *f = *state;
	sc_model_config mc;
	char dir[512];
	sc_weights *w;
	sc_modelgen_opts o = { .seed = 4, .dtype = SC_F32, .random_norms = 1 };
	sc_config_shape shape = { .n_layer = 2,
				  .n_embd = 32,
				  .n_head = 4,
				  .n_kv_head = 2,
				  .n_inner = 48,
				  .vocab_size = V,
				  .n_positions = 32,
				  .tie = -1 };
	SC_ASSERT_OK(sc_config_make(&mc, "llama-tiny", NULL, &shape));
	sc_test_path(dir, sizeof(dir), "sharemodel");
	SC_ASSERT_OK(sc_modelgen_write(dir, &mc, &o));
	SC_ASSERT_OK(sc_weights_open(&w, dir));
	sc_lora_config la = { .rank = 4, .alpha = 8.0f, .targets = 0x7f, .seed = 5 };
	sc_lora_config lb = { .rank = 2, .alpha = 4.0f, .targets = 0x3, .seed = 6 };
	int32_t tok[4 * 16], tgt[4 * 16];
	for (int i = 0; i < 4 * 16; i++) {
		tok[i] = (i * 37 + 11) % V;
		tgt[i] = (i * 53 + 5) % V;
	}
	sc_adapter *alone[2], *shared[2];
	for (int run = 0; run < 2; run++) {
		sc_adapter **out = run ? shared : alone;
		trainee a = { make_shape(f, &mc, &la, 2, 16, NULL, w), tok, tgt, 2, 16, 0 };
		trainee b = { run ? make_shape(f, &mc, &lb, 4, 8, a.seg, NULL)
				  : make_shape(f, &mc, &lb, 4, 8, NULL, w),
			      tok,
			      tgt,
			      4,
			      8,
			      0 };
		if (run) {
			assert_ptr_equal(sc_segment_base_id(a.seg), sc_segment_base_id(b.seg));
			assert_int_equal(sc_segment_base_users(b.seg), 2);
			/* Shared weights are never loaded again; a sharer's load
			 * makes only its own tables. */
			assert_int_equal(sc_segment_load_weights(a.seg, w), SC_EINVAL);
			assert_non_null(strstr(sc_err_detail(), "shared by 2 segments"));
			SC_ASSERT_OK(sc_segment_load_weights(b.seg, w));
		} else {
			assert_ptr_not_equal(sc_segment_base_id(a.seg), sc_segment_base_id(b.seg));
		}
		for (int i = 0; i < 12; i++) { /* interleaved: a, b, a, b, ... */
			train_one(&a);
			train_one(&b);
		}
		SC_ASSERT_OK(sc_adapter_new(&out[0], &la, &mc));
		SC_ASSERT_OK(sc_segment_get_lora(a.seg, out[0]));
		sc_segment_free(a.seg); /* the segment that loaded the weights goes first */
		if (run)
			assert_int_equal(sc_segment_base_users(b.seg), 1);
		for (int i = 0; i < 6; i++)
			train_one(&b);
		SC_ASSERT_OK(sc_adapter_new(&out[1], &lb, &mc));
		SC_ASSERT_OK(sc_segment_get_lora(b.seg, out[1]));
		sc_segment_free(b.seg);
	}
	for (int k = 0; k < 2; k++) {
		assert_int_equal(alone[k]->n_floats, shared[k]->n_floats);
		assert_memory_equal(alone[k]->data, shared[k]->data,
				    alone[k]->n_floats * sizeof(float));
		sc_adapter_free(alone[k]);
		sc_adapter_free(shared[k]);
	}
	/* Only the same model, layers and format share. */
	sc_segment *d = make_shape(f, &mc, &la, 2, 16, NULL, w), *x = NULL;
	sc_segment_spec other = {
		.model = mc, .lora = la, .first = 0, .last = 1, .B = 2, .T = 16, .slots = 1
	};
	assert_false(sc_segment_can_share(d, f->be, &other));
	assert_int_equal(sc_segment_new_sharing(&x, f->be, &other, d), SC_EINVAL);
	assert_null(x);
	assert_non_null(strstr(sc_err_detail(), "cannot share"));
	other.last = mc.n_layer;
	other.model.quantized = 1;
	other.model.quant_format = SC_QUANT_INT8;
	assert_false(sc_segment_can_share(d, f->be, &other));
	other.model = mc;
	assert_true(sc_segment_can_share(d, f->be, &other));
	sc_segment_free(d);
	sc_weights_close(w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(chains_equal_whole_model_bit_for_bit),
		cmocka_unit_test(lora_gradient_matches_finite_differences),
		cmocka_unit_test(input_gradient_matches_finite_differences),
		cmocka_unit_test(fresh_adapter_is_identity),
		cmocka_unit_test(bad_input_is_refused),
		cmocka_unit_test(weights_dir_loads_the_same),
		cmocka_unit_test(missing_weights_are_named),
		cmocka_unit_test(shared_base_trains_as_alone),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
