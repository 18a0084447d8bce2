/* train_test.c — schedule, clipping, and the single-process trainer: any
 * split into stages trains bit-identical adapters. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sc_modelgen.h"
#include "sc_quant.h"
#include "sc_train.h"
#include "testutil.h"

static void schedule_warms_up_then_decays(void **state)
{
	sc_train_config tc;
	sc_train_config_defaults(&tc);
	tc.steps = 111;
	tc.warmup = 10;
	tc.lr = 1e-3f;
	tc.min_lr = 1e-4f;
	assert_float_equal(sc_lr_at(&tc, 0), 1e-4, 1e-9);
	assert_float_equal(sc_lr_at(&tc, 9), 1e-3, 1e-9);
	assert_float_equal(sc_lr_at(&tc, 10), 1e-3, 1e-9);
	assert_float_equal(sc_lr_at(&tc, 60), 5.5e-4, 1e-8); /* half way down the cosine */
	assert_float_equal(sc_lr_at(&tc, 110), 1e-4, 1e-9);
	for (int s = 11; s < 111; s++)
		assert_true(sc_lr_at(&tc, s) <= sc_lr_at(&tc, s - 1));
	tc.warmup = 0;
	assert_float_equal(sc_lr_at(&tc, 0), 1e-3, 1e-9);
}

static void clip_factor_as_torch(void **state)
{
	assert_float_equal(sc_clip_factor(0.5, 1.0f), 1.0, 0);
	assert_float_equal(sc_clip_factor(4.0, 1.0f), 1.0 / (4.0 + 1e-6), 1e-7);
	assert_float_equal(sc_clip_factor(4.0, 0.0f), 1.0, 0);
	double per_layer[3] = { 1, 4, 4 };
	assert_float_equal(sc_global_norm(per_layer, 3), 3.0, 1e-12);
}

static void config_rejects_nonsense(void **state)
{
	sc_train_config tc;
	sc_train_config_defaults(&tc);
	SC_ASSERT_OK(sc_train_config_validate(&tc));
	tc.micro_batches = 0;
	SC_ASSERT_ERR(sc_train_config_validate(&tc), SC_EINVAL);
	sc_train_config_defaults(&tc);
	tc.lr = -1;
	SC_ASSERT_ERR(sc_train_config_validate(&tc), SC_EINVAL);
	sc_train_config_defaults(&tc);
	tc.beta2 = 1.0f;
	SC_ASSERT_ERR(sc_train_config_validate(&tc), SC_EINVAL);
}

/* The job's frozen base (--base-quant, --double-quant, --precision) applied
 * to a model directory's configuration: float models take the asked format,
 * a quantized directory keeps its own and refuses another, and the
 * resolution the coordinator stores reproduces itself. */
static void base_format_resolves_job_options(void **state)
{
	static const struct {
		int quant, dq, prec;      /* the job's options */
		int dir, dir_fmt, dir_dq; /* the directory: quantized, format, double */
		sc_err want;
		const char *base; /* sc_train_base_describe of the result */
	} cases[] = {
		{ SC_BASE_QUANT_NONE, 0, SC_PRECISION_FP32, 0, 0, 0, SC_OK, "fp32" },
		{ SC_BASE_QUANT_INT8, 0, SC_PRECISION_FP32, 0, 0, 0, SC_OK, "int8" },
		{ SC_BASE_QUANT_NF4, 0, SC_PRECISION_FP32, 0, 0, 0, SC_OK, "nf4" },
		{ SC_BASE_QUANT_NF4, 1, SC_PRECISION_FP32, 0, 0, 0, SC_OK, "nf4+dq" },
		{ SC_BASE_QUANT_NONE, 0, SC_PRECISION_BF16, 0, 0, 0, SC_OK, "bf16" },
		{ SC_BASE_QUANT_INT8, 0, SC_PRECISION_BF16, 0, 0, 0, SC_OK, "int8" },
		{ SC_BASE_QUANT_NF4, 1, SC_PRECISION_BF16, 0, 0, 0, SC_OK, "nf4+dq" },
		/* a directory quantized on disk */
		{ SC_BASE_QUANT_NONE, 0, SC_PRECISION_FP32, 1, SC_QUANT_NF4, 1, SC_OK, "nf4+dq" },
		{ SC_BASE_QUANT_NONE, 0, SC_PRECISION_BF16, 1, SC_QUANT_INT8, 0, SC_OK, "int8" },
		{ SC_BASE_QUANT_NF4, 1, SC_PRECISION_FP32, 1, SC_QUANT_NF4, 1, SC_OK, "nf4+dq" },
		{ SC_BASE_QUANT_INT8, 0, SC_PRECISION_FP32, 1, SC_QUANT_INT8, 0, SC_OK, "int8" },
		{ SC_BASE_QUANT_INT8, 0, SC_PRECISION_FP32, 1, SC_QUANT_NF4, 0, SC_EINVAL, NULL },
		{ SC_BASE_QUANT_NF4, 0, SC_PRECISION_FP32, 1, SC_QUANT_NF4, 1, SC_EINVAL, NULL },
		{ SC_BASE_QUANT_NF4, 1, SC_PRECISION_FP32, 1, SC_QUANT_INT8, 0, SC_EINVAL, NULL },
		/* values outside the enums, double quantization without nf4 */
		{ SC_BASE_QUANT_COUNT, 0, SC_PRECISION_FP32, 0, 0, 0, SC_EINVAL, NULL },
		{ SC_BASE_QUANT_NONE, 0, SC_PRECISION_COUNT, 0, 0, 0, SC_EINVAL, NULL },
		{ SC_BASE_QUANT_INT8, 1, SC_PRECISION_FP32, 0, 0, 0, SC_EINVAL, NULL },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		sc_model_config mc, dir, again;
		sc_train_config tc, stored;
		sc_gpt2_config(&mc, 2, 2, 32, 256, 32);
		mc.quantized = cases[i].dir;
		mc.quant_format = cases[i].dir_fmt;
		mc.quant_double = cases[i].dir_dq;
		dir = mc;
		sc_train_config_defaults(&tc);
		tc.base_quant = cases[i].quant;
		tc.double_quant = cases[i].dq;
		tc.precision = cases[i].prec;
		sc_err rc = sc_train_base_format(&mc, &tc);
		if (rc != cases[i].want)
			fail_msg("case %zu: %s, want %s (%s)", i, sc_err_name(rc),
				 sc_err_name(cases[i].want), sc_err_detail());
		if (rc) {
			assert_memory_equal(&mc, &dir, sizeof(mc)); /* untouched */
			continue;
		}
		assert_string_equal(sc_train_base_describe(&mc), cases[i].base);
		/* idempotent */
		again = mc;
		SC_ASSERT_OK(sc_train_base_format(&again, &tc));
		assert_memory_equal(&again, &mc, sizeof(mc));
		/* what the coordinator stores gives the same base from the
		 * directory again */
		stored = tc;
		sc_train_base_of(&stored, &mc);
		again = dir;
		SC_ASSERT_OK(sc_train_base_format(&again, &stored));
		assert_memory_equal(&again, &mc, sizeof(mc));
	}
	int v;
	SC_ASSERT_OK(sc_base_quant_parse("nf4", &v));
	assert_int_equal(v, SC_BASE_QUANT_NF4);
	SC_ASSERT_ERR(sc_base_quant_parse("int4", &v), SC_EINVAL);
	assert_non_null(strstr(sc_err_detail(), "--base-quant 'int4': choose none, int8 or nf4"));
	SC_ASSERT_ERR(sc_base_quant_parse(NULL, &v), SC_EINVAL);
	SC_ASSERT_OK(sc_precision_parse("bf16", &v));
	assert_int_equal(v, SC_PRECISION_BF16);
	SC_ASSERT_ERR(sc_precision_parse("fp16", &v), SC_EINVAL);
	assert_non_null(strstr(sc_err_detail(), "--precision 'fp16': choose fp32 or bf16"));
	assert_string_equal(sc_base_quant_name(SC_BASE_QUANT_INT8), "int8");
	assert_string_equal(sc_base_quant_name(7), "?");
	assert_string_equal(sc_precision_name(SC_PRECISION_FP32), "fp32");
}

enum { L = 4, C = 16, V = 256 };

typedef struct run {
	double losses[4];
	double evals[4]; /* held-out loss after each step (with_eval) */
	size_t eval_tokens;
	sc_adapter *ad;
} run;

static void train_eval(run *out, int nstages, const int *bounds, int with_eval)
{
	static const char text[] = "splitchain trains LoRA adapters across a chain of edge "
				   "workers; every chain computes what one process computes. ";
	char dir[512], path[600];
	sc_model_config mc;
	sc_lora_config lc = { .rank = 2, .alpha = 4, .targets = SC_GPT2_ALL, .seed = 3 };
	sc_modelgen_opts o = { .seed = 2, .dtype = SC_F32, .random_norms = 1 };
	sc_train_config tc;
	sc_backend *be;
	sc_weights *wf;
	sc_tokens *tk;
	sc_trainer *tr;

	sc_gpt2_config(&mc, L, 2, C, V, 32);
	sc_test_path(dir, sizeof(dir), "trainmodel");
	SC_ASSERT_OK(sc_modelgen_write(dir, &mc, &o));
	SC_ASSERT_OK(sc_weights_open(&wf, dir));
	sc_test_path(path, sizeof(path), "train.txt");
	assert_int_equal(sc_test_write_file(path, text, sizeof(text) - 1), 0);
	SC_ASSERT_OK(sc_tokens_load(&tk, path, V));
	sc_train_config_defaults(&tc);
	tc.steps = 4;
	tc.B = 2;
	tc.T = 8;
	tc.micro_batches = 3;
	tc.warmup = 1;
	tc.lr = 1e-2f;
	tc.weight_decay = 0.1f;
	tc.grad_clip = 0.05f; /* small enough to clip */
	SC_ASSERT_OK(sc_backend_cpu_open(&be, 1));
	SC_ASSERT_OK(sc_trainer_new(&tr, be, &mc, &lc, &tc, wf, NULL, tk, nstages, bounds));
	for (int s = 0; s < tc.steps; s++) {
		sc_step_stats st;
		SC_ASSERT_OK(sc_trainer_step(tr, s, &st));
		assert_int_equal(st.tokens, 2 * 8 * 3);
		assert_true(isfinite(st.loss) && st.grad_norm > 0);
		out->losses[s] = st.loss;
		if (with_eval) { /* the training text as held-out data */
			double one;
			size_t n1;
			SC_ASSERT_OK(sc_trainer_eval(tr, tk, 0, &out->evals[s], &out->eval_tokens));
			assert_true(isfinite(out->evals[s]));
			/* every window once: (n - 1) / T windows of T targets */
			assert_int_equal(out->eval_tokens, (tk->n - 1) / 8 * 8);
			SC_ASSERT_OK(sc_trainer_eval(tr, tk, 1, &one, &n1));
			assert_int_equal(n1, 2 * 8); /* one micro-batch of B = 2 rows */
		}
	}
	SC_ASSERT_OK(sc_adapter_new(&out->ad, &lc, &mc));
	SC_ASSERT_OK(sc_trainer_get_lora(tr, out->ad));
	sc_trainer_free(tr);
	sc_backend_free(be);
	sc_tokens_free(tk);
	sc_weights_close(wf);
}

static void train(run *out, int nstages, const int *bounds)
{
	train_eval(out, nstages, bounds, 0);
}

static void stages_train_bit_identical_adapters(void **state)
{
	static const int b2[] = { 0, 3, 4 }, b4[] = { 0, 1, 2, 3, 4 };
	run one, two, four;
	train(&one, 1, NULL);
	train(&two, 2, b2);
	train(&four, 4, b4);
	assert_memory_equal(one.losses, two.losses, sizeof(one.losses));
	assert_memory_equal(one.losses, four.losses, sizeof(one.losses));
	assert_memory_equal(one.ad->data, two.ad->data, one.ad->n_floats * sizeof(float));
	assert_memory_equal(one.ad->data, four.ad->data, one.ad->n_floats * sizeof(float));
	/* training moved the adapters: B is no longer zero, and the loss fell */
	double sb = 0;
	for (int t = 0; t < SC_GPT2_TARGETS; t++)
		sb += fabs(one.ad->b[0][t][0]);
	assert_true(sb > 0);
	assert_true(one.losses[3] < one.losses[0]);
	sc_adapter_free(one.ad);
	sc_adapter_free(two.ad);
	sc_adapter_free(four.ad);
}

/* Held-out evaluation: the same bits from 1, 2 or 4 stages, and it trains
 * nothing: losses and adapters equal those of a run without it. */
static void eval_is_stage_independent_and_trains_nothing(void **state)
{
	static const int b2[] = { 0, 3, 4 }, b4[] = { 0, 1, 2, 3, 4 };
	run plain, one, two, four;
	train(&plain, 1, NULL);
	train_eval(&one, 1, NULL, 1);
	train_eval(&two, 2, b2, 1);
	train_eval(&four, 4, b4, 1);
	assert_memory_equal(one.evals, two.evals, sizeof(one.evals));
	assert_memory_equal(one.evals, four.evals, sizeof(one.evals));
	assert_memory_equal(plain.losses, one.losses, sizeof(one.losses));
	assert_memory_equal(plain.ad->data, one.ad->data, one.ad->n_floats * sizeof(float));
	assert_true(one.evals[3] < one.evals[0]); /* it learnt the text it is evaluated on */
	sc_adapter_free(plain.ad);
	sc_adapter_free(one.ad);
	sc_adapter_free(two.ad);
	sc_adapter_free(four.ad);
}

static void trainer_refuses_bad_stages(void **state)
{
	static const int bad[] = { 0, 2, 2, 4 };
	char dir[512];
	sc_model_config mc;
	sc_lora_config lc = { .rank = 2, .alpha = 4, .targets = SC_GPT2_ALL, .seed = 3 };
	sc_modelgen_opts o = { .seed = 2, .dtype = SC_F32 };
	sc_train_config tc;
	sc_backend *be;
	sc_weights *wf;
	sc_tokens tk = { .ids = (int32_t[64]){ 0 }, .n = 64 };
	sc_trainer *tr;
	sc_gpt2_config(&mc, L, 2, C, V, 32);
	sc_test_path(dir, sizeof(dir), "trainmodel2");
	SC_ASSERT_OK(sc_modelgen_write(dir, &mc, &o));
	SC_ASSERT_OK(sc_weights_open(&wf, dir));
	sc_train_config_defaults(&tc);
	tc.T = 8;
	SC_ASSERT_OK(sc_backend_cpu_open(&be, 1));
	SC_ASSERT_ERR(sc_trainer_new(&tr, be, &mc, &lc, &tc, wf, NULL, &tk, 5, NULL), SC_EINVAL);
	SC_ASSERT_ERR(sc_trainer_new(&tr, be, &mc, &lc, &tc, wf, NULL, &tk, 3, bad), SC_EINVAL);
	tc.T = 40; /* beyond the model's 32 positions */
	SC_ASSERT_ERR(sc_trainer_new(&tr, be, &mc, &lc, &tc, wf, NULL, &tk, 1, NULL), SC_EINVAL);
	sc_backend_free(be);
	sc_weights_close(wf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(schedule_warms_up_then_decays),
		cmocka_unit_test(clip_factor_as_torch),
		cmocka_unit_test(config_rejects_nonsense),
		cmocka_unit_test(base_format_resolves_job_options),
		cmocka_unit_test(stages_train_bit_identical_adapters),
		cmocka_unit_test(eval_is_stage_independent_and_trains_nothing),
		cmocka_unit_test(trainer_refuses_bad_stages),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
