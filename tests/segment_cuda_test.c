/* segment_cuda_test.c — whole segments and the trainer on the CUDA backend
 * against the CPU backend. The same model, adapter (random nonzero A and
 * B), tokens and targets go to both; the loss, the output activations, the
 * input gradient and the LoRA gradients must agree to FP32_TOL (max error
 * relative to the largest reference value; each LoRA matrix on its own to
 * MATRIX_TOL_FACTOR times that), and to TF32_TOL (TF32_GRAD_TOL for the
 * LoRA gradients) on a backend opened with TF32 GEMMs. Then 20 optimizer
 * steps of the single-process trainer on each: per-step losses to
 * TRAIN_LOSS_TOL, final adapters to TRAIN_LORA_TOL, with a float base and
 * with quantized ones (int8, nf4, bf16: training_quantized_matches_cpu).
 * Nothing is asserted bit for bit: the two backends sum in different
 * orders. Exits 77 (skipped) where no CUDA device is visible. The whole
 * table runs for GPT-2 and again for a Llama-family model (GQA, sliding
 * window, biases, untied head). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sc_modelgen.h"
#include "sc_rng.h"
#include "sc_segment.h"
#include "sc_train.h"
#include "testutil.h"

#define FP32_TOL          1e-5
#define TF32_TOL          2e-3
#define TF32_GRAD_TOL     1e-2
#define TRAIN_LOSS_TOL    1e-4
#define TRAIN_LORA_TOL    1e-3
#define MATRIX_TOL_FACTOR 10
#define REL_FLOOR         1e-6
#define TRAIN_CLIP        0.2f
/* TF32_GRAD_TOL: a LoRA gradient ends a backward pass through every layer
 * of the segment. The CPU backend with GEMM inputs rounded to TF32 (10
 * mantissa bits) differed from plain fp32 by 1.8e-3 on the whole model when
 * rounding to nearest, 3.7e-3 when truncating. MATRIX_TOL_FACTOR: each LoRA
 * matrix against its own largest value, so that a wrong small matrix next
 * to large ones still shows (see expect_lora_close). */

enum { L = 4, NH = 4, C = 64, V = 160, P = 48, B = 2, T = 40, R = 4 };
enum { NTOK = B * T, NACT = B * T * C, STEPS = 20 };

static sc_backend *cpu, *gpu, *gpu_tf32;

typedef struct fixture {
	sc_model_config mc;
	sc_lora_config lc;
	sc_weights *weights; /* the model's directory */
	sc_adapter *ad;      /* random A and B: every gradient is nonzero */
	int32_t tokens[NTOK], targets[NTOK];
	float x[NACT], dout[NACT]; /* a middle segment's input, its output's gradient */
} fixture;

/* The model of the group being run: GPT-2, or a Llama-family model with
 * everything that differs switched on (Mistral's sliding window shorter
 * than T, grouped-query attention, q/k/v/o and MLP biases, untied head). */
static int llama_group;

static void model_config(sc_model_config *mc)
{
	if (!llama_group) {
		sc_gpt2_config(mc, L, NH, C, V, P);
		return;
	}
	sc_config_shape sh = { .n_layer = L,
			       .n_head = NH,
			       .n_kv_head = 2,
			       .n_embd = C,
			       .n_inner = 96,
			       .vocab_size = V,
			       .n_positions = P,
			       .tie = 0,
			       .sliding_window = 16 };
	SC_ASSERT_OK(sc_config_make(mc, "llama-tiny", "mistral", &sh));
	mc->qkv_bias = mc->o_bias = mc->mlp_bias = 1;
	SC_ASSERT_OK(sc_config_validate(mc));
}

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	char dir[512];
	sc_modelgen_opts o = { .seed = 11, .dtype = SC_F32, .random_norms = 1 };
	sc_rng r;
	uint64_t k = 12;

	assert_non_null(f);
	model_config(&f->mc);
	f->lc = (sc_lora_config){
		.rank = R, .alpha = 8.0f, .targets = sc_lora_all_targets(&f->mc), .seed = 13
	};
	sc_test_path(dir, sizeof(dir), "segcudamodel");
	SC_ASSERT_OK(sc_modelgen_write(dir, &f->mc, &o));
	SC_ASSERT_OK(sc_weights_open(&f->weights, dir));
	SC_ASSERT_OK(sc_adapter_new(&f->ad, &f->lc, &f->mc));
	sc_test_fill_normal(f->ad->data, f->ad->n_floats, 14, 0.1f);
	sc_rng_seed(&r, &k, 1);
	for (int i = 0; i < NTOK; i++) {
		f->tokens[i] = (int32_t)sc_rng_below(&r, V);
		f->targets[i] = (int32_t)sc_rng_below(&r, V);
	}
	f->targets[5] = -1; /* ignored positions */
	f->targets[NTOK - 1] = -1;
	sc_test_fill_normal(f->x, NACT, 15, 1.0f);
	sc_test_fill_normal(f->dout, NACT, 16, 1.0f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	sc_adapter_free(f->ad);
	sc_weights_close(f->weights);
	free(f);
	return 0;
}

/* ---- comparisons ---- */

static void expect_finite(const char *what, const float *x, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isfinite(x[i]))
			fail_msg("%s: element %zu is %g", what, i, (double)x[i]);
}

/* Fails unless got is finite and within tol of want (max rel err). */
static void expect_close(const char *what, const float *got, const float *want, size_t n,
			 double tol)
{
	double err;
	expect_finite(what, got, n);
	expect_finite(what, want, n);
	err = sc_test_max_rel_err(got, want, n, REL_FLOOR);
	print_message("    %-34s max rel err %.3g (tol %.0e)\n", what, err, tol);
	if (!(err <= tol))
		fail_msg("%s: GPU and CPU differ: max rel err %.3g > %.0e", what, err, tol);
}

static void expect_loss(const char *what, double got, double want, double tol)
{
	double err = fabs(got - want) / fabs(want);
	print_message("    %-34s gpu %.9f cpu %.9f rel err %.3g\n", what, got, want, err);
	if (!isfinite(got) || !(want > 0) || !(err <= tol))
		fail_msg("%s: gpu %.9g cpu %.9g: rel err %.3g > %.0e", what, got, want, err, tol);
}

/* LoRA gradients or adapters of layers [first, last): all of them as one
 * vector within tol (max error relative to the largest reference value),
 * and each A and B matrix against its own largest value within
 * MATRIX_TOL_FACTOR * tol, so that one wrong matrix among large ones shows. */
static void expect_lora_close(const char *what, const sc_adapter *got, const sc_adapter *want,
			      int first, int last, double tol)
{
	double whole, worst = 0, nonzero = 0;
	char name[96], worst_name[96] = "-";

	for (int l = first; l < last; l++) {
		for (int t = 0; t < SC_LORA_MAX_TARGETS; t++) {
			int in, out;
			if (!want->a[l][t])
				continue;
			sc_lora_target_dims(&got->mc, t, &in, &out);
			for (int ab = 0; ab < 2; ab++) {
				const float *g = ab ? got->b[l][t] : got->a[l][t];
				const float *w = ab ? want->b[l][t] : want->a[l][t];
				size_t n = (size_t)R * (ab ? out : in);
				double err;
				snprintf(name, sizeof(name), "%s: layer %d target %d %c", what, l,
					 t, ab ? 'B' : 'A');
				expect_finite(name, g, n);
				expect_finite(name, w, n);
				err = sc_test_max_rel_err(g, w, n, REL_FLOOR);
				for (size_t i = 0; i < n; i++)
					nonzero += fabs(w[i]);
				if (err > worst) {
					worst = err;
					snprintf(worst_name, sizeof(worst_name), "%s", name);
				}
			}
		}
	}
	/* layers outside [first, last) are zero on both sides */
	whole = sc_test_max_rel_err(got->data, want->data, want->n_floats, REL_FLOOR);
	print_message("    %-34s max rel err %.3g (tol %.0e); worst matrix %.3g (tol %.0e)\n", what,
		      whole, tol, worst, MATRIX_TOL_FACTOR * tol);
	if (!(nonzero > 0))
		fail_msg("%s: all zero: the comparison proves nothing", what);
	if (!(whole <= tol))
		fail_msg("%s: GPU and CPU differ: max rel err %.3g > %.0e", what, whole, tol);
	if (!(worst <= MATRIX_TOL_FACTOR * tol))
		fail_msg("%s: GPU and CPU differ: max rel err %.3g > %.0e", worst_name, worst,
			 MATRIX_TOL_FACTOR * tol);
}

/* ---- one segment on one backend ---- */

typedef struct side {
	double loss;
	float out[NACT], dx[NACT];
	sc_adapter *grad; /* LoRA gradients by global layer */
} side;

static sc_segment *make(fixture *f, sc_backend *be, int first, int last)
{
	sc_segment_spec sp = { .model = f->mc,
			       .lora = f->lc,
			       .first = first,
			       .last = last,
			       .B = B,
			       .T = T,
			       .slots = 2 };
	sc_segment *seg;
	SC_ASSERT_OK(sc_segment_new(&seg, be, &sp));
	SC_ASSERT_OK(sc_segment_load_weights(seg, f->weights));
	SC_ASSERT_OK(sc_segment_set_lora(seg, f->ad));
	SC_ASSERT_OK(sc_segment_zero_grad(seg));
	return seg;
}

/* Forward and backward of [first, last) in slot 1: the first segment reads
 * the tokens, others f->x; the last computes the loss (grad scale 0.5),
 * others take f->dout as their output's gradient. */
static void run_segment(fixture *f, sc_backend *be, int first, int last, side *s)
{
	sc_segment *seg = make(f, be, first, last);
	int is_last = last == L;

	memset(s, 0, sizeof(*s));
	SC_ASSERT_OK(sc_adapter_new(&s->grad, &f->lc, &f->mc));
	SC_ASSERT_OK(sc_segment_forward(seg, 1, first ? (const void *)f->x : f->tokens, f->targets,
					0.5f, is_last ? NULL : s->out, &s->loss));
	SC_ASSERT_OK(sc_segment_backward(seg, 1, is_last ? NULL : f->dout, first ? s->dx : NULL));
	SC_ASSERT_OK(sc_segment_export(seg, SC_G_GRAD, s->grad));
	sc_segment_free(seg);
}

static void compare_segment(fixture *f, sc_backend *gb, int first, int last, double tol,
			    double grad_tol)
{
	side *c = calloc(1, sizeof(*c)), *g = calloc(1, sizeof(*g));
	assert_true(c && g);
	print_message("  layers [%d, %d) on %s%s\n", first, last, gb->name,
		      gb == gpu_tf32 ? " (tf32)" : "");
	run_segment(f, cpu, first, last, c);
	run_segment(f, gb, first, last, g);
	if (last == L)
		expect_loss("loss", g->loss, c->loss, tol);
	else
		expect_close("output activations", g->out, c->out, NACT, tol);
	if (first)
		expect_close("input gradient dx", g->dx, c->dx, NACT, tol);
	expect_lora_close("LoRA gradients", g->grad, c->grad, first, last, grad_tol);
	sc_adapter_free(c->grad);
	sc_adapter_free(g->grad);
	free(c);
	free(g);
}

static void whole_model_matches_cpu(void **state)
{
	compare_segment(*state, gpu, 0, L, FP32_TOL, FP32_TOL);
}

static void first_segment_matches_cpu(void **state)
{
	compare_segment(*state, gpu, 0, 1, FP32_TOL, FP32_TOL);
}

static void middle_segment_matches_cpu(void **state)
{
	compare_segment(*state, gpu, 1, 3, FP32_TOL, FP32_TOL);
}

static void last_segment_matches_cpu(void **state)
{
	compare_segment(*state, gpu, 2, L, FP32_TOL, FP32_TOL);
}

/* The chain [0, 2) -> [2, L) on each backend, activations and gradients
 * handed over through the host as a worker does. */
static void split_chain_matches_cpu(void **state)
{
	fixture *f = *state;
	sc_backend *bes[2] = { cpu, gpu };
	side *s[2];

	for (int i = 0; i < 2; i++) {
		sc_segment *head = make(f, bes[i], 0, 2), *tail = make(f, bes[i], 2, L);
		s[i] = calloc(1, sizeof(*s[i]));
		assert_non_null(s[i]);
		SC_ASSERT_OK(sc_adapter_new(&s[i]->grad, &f->lc, &f->mc));
		SC_ASSERT_OK(
		    sc_segment_forward(head, 0, f->tokens, NULL, 1.0f, s[i]->out, &s[i]->loss));
		SC_ASSERT_OK(
		    sc_segment_forward(tail, 0, s[i]->out, f->targets, 1.0f, NULL, &s[i]->loss));
		SC_ASSERT_OK(sc_segment_backward(tail, 0, NULL, s[i]->dx));
		SC_ASSERT_OK(sc_segment_backward(head, 0, s[i]->dx, NULL));
		SC_ASSERT_OK(sc_segment_export(head, SC_G_GRAD, s[i]->grad));
		SC_ASSERT_OK(sc_segment_export(tail, SC_G_GRAD, s[i]->grad));
		sc_segment_free(head);
		sc_segment_free(tail);
	}
	print_message("  chain [0, 2) -> [2, %d)\n", L);
	expect_loss("loss", s[1]->loss, s[0]->loss, FP32_TOL);
	expect_close("hand-over activations", s[1]->out, s[0]->out, NACT, FP32_TOL);
	expect_close("hand-over gradient", s[1]->dx, s[0]->dx, NACT, FP32_TOL);
	expect_lora_close("LoRA gradients", s[1]->grad, s[0]->grad, 0, L, FP32_TOL);
	for (int i = 0; i < 2; i++) {
		sc_adapter_free(s[i]->grad);
		free(s[i]);
	}
}

static void whole_model_tf32(void **state)
{
	compare_segment(*state, gpu_tf32, 0, L, TF32_TOL, TF32_GRAD_TOL);
}

static void middle_segment_tf32(void **state)
{
	compare_segment(*state, gpu_tf32, 1, 3, TF32_TOL, TF32_GRAD_TOL);
}

/* ---- the trainer ---- */

typedef struct run {
	sc_step_stats st[STEPS];
	sc_adapter *ad;
} run;

/* base: 0, or a job's frozen-base format (train_quantized). */
typedef struct base_format {
	const char *name;
	int quant, double_quant, precision;
} base_format;

static void train_base(fixture *f, sc_backend *be, int nstages, const int *bounds, int tf32,
		       const base_format *base, run *out)
{
	sc_train_config tc;
	sc_tokens tk = { 0 };
	sc_trainer *tr;
	sc_rng r;
	uint64_t k = 21;

	tk.n = 4000;
	tk.ids = malloc(tk.n * sizeof(int32_t));
	assert_non_null(tk.ids);
	sc_rng_seed(&r, &k, 1);
	for (size_t i = 0; i < tk.n; i++) /* a skewed distribution: something to learn */
		tk.ids[i] =
		    (int32_t)(sc_rng_below(&r, 4) ? sc_rng_below(&r, V / 8) : sc_rng_below(&r, V));
	sc_train_config_defaults(&tc);
	tc.steps = STEPS;
	tc.B = B;
	tc.T = T;
	tc.micro_batches = 2;
	tc.warmup = 4;
	tc.lr = 2e-3f;
	tc.min_lr = 2e-4f;
	tc.weight_decay = 0.1f;
	tc.grad_clip = TRAIN_CLIP;
	tc.seed = 7;
	tc.allow_tf32 = tf32;
	if (base) {
		tc.base_quant = base->quant;
		tc.double_quant = base->double_quant;
		tc.precision = base->precision;
	}
	SC_ASSERT_OK(
	    sc_trainer_new(&tr, be, &f->mc, &f->lc, &tc, f->weights, NULL, &tk, nstages, bounds));
	for (int s = 0; s < STEPS; s++)
		SC_ASSERT_OK(sc_trainer_step(tr, s, &out->st[s]));
	SC_ASSERT_OK(sc_adapter_new(&out->ad, &f->lc, &f->mc));
	SC_ASSERT_OK(sc_trainer_get_lora(tr, out->ad));
	sc_trainer_free(tr);
	free(tk.ids);
}

static void train(fixture *f, sc_backend *be, int nstages, const int *bounds, int tf32, run *out)
{
	train_base(f, be, nstages, bounds, tf32, NULL, out);
}

/* 20 steps with warm-up, cosine decay, clipping, weight decay and two
 * micro-batches: the CPU in one stage, the GPU in two. */
static void training_matches_cpu(void **state)
{
	static const int two[] = { 0, 2, L };
	fixture *f = *state;
	run *c = calloc(1, sizeof(*c)), *g = calloc(1, sizeof(*g));
	int clipped = 0;
	double worst = 0;

	assert_true(c && g);
	train(f, cpu, 1, NULL, 0, c);
	train(f, gpu, 2, two, 0, g);
	print_message(
	    "  step  lr         cpu loss      gpu loss      rel err   cpu norm  gpu norm\n");
	for (int s = 0; s < STEPS; s++) {
		double lc = c->st[s].loss, lg = g->st[s].loss, err = fabs(lg - lc) / fabs(lc);
		print_message("  %4d  %.3e  %.9f  %.9f  %.2e  %.5f   %.5f\n", s,
			      (double)c->st[s].lr, lc, lg, err, c->st[s].grad_norm,
			      g->st[s].grad_norm);
		if (!isfinite(lg) || !(err <= TRAIN_LOSS_TOL))
			fail_msg("step %d: gpu loss %.9g, cpu %.9g: rel err %.3g > %.0e", s, lg, lc,
				 err, TRAIN_LOSS_TOL);
		if (err > worst)
			worst = err;
		clipped += c->st[s].grad_norm > TRAIN_CLIP;
	}
	print_message("    %-34s max rel err %.3g (tol %.0e)\n", "per-step losses", worst,
		      TRAIN_LOSS_TOL);
	assert_true(clipped > 0);                           /* clipping took part */
	assert_true(c->st[STEPS - 1].loss < c->st[0].loss); /* and training moved */
	expect_lora_close("final adapters", g->ad, c->ad, 0, L, TRAIN_LORA_TOL);
	sc_adapter_free(c->ad);
	sc_adapter_free(g->ad);
	free(c);
	free(g);
}

/* A job's --tf32 reaches the GPU through the trainer: on the fp32-opened
 * backend the run changes (TF32 rounding), stays close to the CPU's, and the
 * next fp32 job is fp32 again. */
static void training_tf32_switch(void **state)
{
	fixture *f = *state;
	run *c = calloc(1, sizeof(*c)), *t = calloc(1, sizeof(*t)), *g = calloc(1, sizeof(*g));
	double worst = 0;
	int differs = 0;

	assert_true(c && t && g);
	train(f, cpu, 1, NULL, 1, c); /* the CPU ignores it: fp32 */
	train(f, gpu, 1, NULL, 1, t);
	train(f, gpu, 1, NULL, 0, g);
	for (int s = 0; s < STEPS; s++) {
		double err = fabs(t->st[s].loss - c->st[s].loss) / fabs(c->st[s].loss);
		worst = err > worst ? err : worst;
		differs |= t->st[s].loss != g->st[s].loss;
		if (!(fabs(g->st[s].loss - c->st[s].loss) / fabs(c->st[s].loss) <= TRAIN_LOSS_TOL))
			fail_msg("step %d: the fp32 run after a TF32 one is not fp32", s);
	}
	print_message("    %-34s max rel err %.3g (tol %.0e)\n", "TF32 per-step losses", worst,
		      TF32_TOL);
	assert_true(differs); /* TF32 took effect */
	if (!(worst <= TF32_TOL))
		fail_msg("TF32 losses differ from the CPU's by %.3g > %.0e", worst, TF32_TOL);
	sc_adapter_free(c->ad);
	sc_adapter_free(t->ad);
	sc_adapter_free(g->ad);
	free(c);
	free(t);
	free(g);
}

/* The trainer with a quantized frozen base (a job's --base-quant and
 * --precision), the CPU in one stage, the GPU in two. int8 and nf4 (fp32
 * products: both dequantize a tile to the same fp32 bits, then sgemm):
 * per-step losses to TRAIN_LOSS_TOL, adapters to TRAIN_LORA_TOL, as fp32.
 * bf16 (a bf16 base, or nf4 dequantized to bf16): the GPU rounds every
 * activation entering a frozen product to bf16; the CPU does so only with
 * bf16 products (oneDNN on AVX512-BF16 or AMX), and its fallback keeps
 * them, and an nf4 base's weights, fp32, so the two differ by bf16's
 * rounding: BF16_LOSS_TOL and BF16_LORA_TOL are set from that fallback's
 * difference (SC_CPU_BF16=tiles against the emulated GPU: per-step losses
 * 1.9e-5, adapters 7.8e-3, worst matrix 5.0e-2 over both models; with
 * oneDNN's bf16 products on the CPU, the same arithmetic as the GPU's,
 * 3.8e-6, 1.7e-3 and 1.1e-2). */
#define BF16_LOSS_TOL 2e-4
#define BF16_LORA_TOL 2.5e-2
static void training_quantized_matches_cpu(void **state)
{
	static const int two[] = { 0, 2, L };
	static const base_format bases[] = {
		{ "int8", SC_BASE_QUANT_INT8, 0, SC_PRECISION_FP32 },
		{ "nf4 (double quant)", SC_BASE_QUANT_NF4, 1, SC_PRECISION_FP32 },
		{ "bf16", SC_BASE_QUANT_NONE, 0, SC_PRECISION_BF16 },
		{ "nf4, bf16 precision", SC_BASE_QUANT_NF4, 0, SC_PRECISION_BF16 },
	};
	fixture *f = *state;

	for (size_t b = 0; b < sizeof(bases) / sizeof(bases[0]); b++) {
		run *c = calloc(1, sizeof(*c)), *g = calloc(1, sizeof(*g));
		int bf16 = bases[b].precision == SC_PRECISION_BF16;
		double loss_tol = bf16 ? BF16_LOSS_TOL : TRAIN_LOSS_TOL, worst = 0;
		assert_true(c && g);
		train_base(f, cpu, 1, NULL, 0, &bases[b], c);
		train_base(f, gpu, 2, two, 0, &bases[b], g);
		for (int s = 0; s < STEPS; s++) {
			double lc = c->st[s].loss, lg = g->st[s].loss;
			double err = fabs(lg - lc) / fabs(lc);
			if (!isfinite(lg) || !(err <= loss_tol))
				fail_msg(
				    "%s base, step %d: gpu loss %.9g, cpu %.9g: rel err %.3g > "
				    "%.0e",
				    bases[b].name, s, lg, lc, err, loss_tol);
			worst = err > worst ? err : worst;
		}
		print_message("    %-34s max rel err %.3g (tol %.0e)\n", bases[b].name, worst,
			      loss_tol);
		assert_true(c->st[STEPS - 1].loss < c->st[0].loss);
		expect_lora_close(bases[b].name, g->ad, c->ad, 0, L,
				  bf16 ? BF16_LORA_TOL : TRAIN_LORA_TOL);
		sc_adapter_free(c->ad);
		sc_adapter_free(g->ad);
		free(c);
		free(g);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(whole_model_matches_cpu),
		cmocka_unit_test(first_segment_matches_cpu),
		cmocka_unit_test(middle_segment_matches_cpu),
		cmocka_unit_test(last_segment_matches_cpu),
		cmocka_unit_test(split_chain_matches_cpu),
		cmocka_unit_test(whole_model_tf32),
		cmocka_unit_test(middle_segment_tf32),
		cmocka_unit_test(training_matches_cpu),
		cmocka_unit_test(training_tf32_switch),
		cmocka_unit_test(training_quantized_matches_cpu),
	};
	int failed, rc = sc_test_open_cuda("segment_cuda_test", &gpu, &gpu_tf32, &cpu);
	if (rc)
		return rc;
	failed = cmocka_run_group_tests_name("segment_cuda gpt2", tests, setup, teardown);
	llama_group = 1;
	failed += cmocka_run_group_tests_name("segment_cuda llama", tests, setup, teardown);
	sc_test_close_cuda(gpu, gpu_tf32, cpu);
	return failed ? 1 : 0;
}
