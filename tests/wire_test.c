/* wire_test.c — adapters from NamedTensor lists: complete, exact, checked;
 * the training configuration through its message and back. */
#include <stdlib.h>
#include <string.h>

#include "sc_wire.h"
#include "testutil.h"

enum { L = 3, C = 8, R = 2 };

typedef struct fixture {
	sc_adapter *src;
	sc_adapter_tensor *list;
	int n;
	Splitchain__NamedTensor *nt;
	Splitchain__NamedTensor **ptr;
	int64_t (*shape)[2];
} fixture;

static const sc_lora_config lc = { .rank = R, .alpha = 4, .targets = SC_GPT2_ALL, .seed = 1 };
static sc_model_config mc; /* a GPT-2 of L layers, C channels (setup) */

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	sc_gpt2_config(&mc, L, 2, C, 50, 16);
	SC_ASSERT_OK(sc_adapter_new(&f->src, &lc, &mc));
	sc_test_fill_normal(f->src->data, f->src->n_floats, 5, 1.0f);
	SC_ASSERT_OK(sc_adapter_tensors(f->src, 0, L, &f->list, &f->n));
	f->nt = calloc((size_t)f->n, sizeof(*f->nt));
	f->ptr = calloc((size_t)f->n, sizeof(*f->ptr));
	f->shape = calloc((size_t)f->n, sizeof(*f->shape));
	for (int i = 0; i < f->n; i++) {
		splitchain__named_tensor__init(&f->nt[i]);
		f->nt[i].name = f->list[i].name;
		f->shape[i][0] = f->list[i].shape[0];
		f->shape[i][1] = f->list[i].shape[1];
		f->nt[i].n_shape = 2;
		f->nt[i].shape = f->shape[i];
		f->nt[i].data.data = (uint8_t *)f->list[i].data;
		f->nt[i].data.len = f->list[i].numel * sizeof(float);
		f->ptr[i] = &f->nt[i];
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	free(f->shape);
	free(f->ptr);
	free(f->nt);
	free(f->list);
	sc_adapter_free(f->src);
	free(f);
	return 0;
}

static void whole_adapter_round_trips(void **state)
{
	fixture *f = *state;
	sc_adapter *dst;
	SC_ASSERT_OK(sc_adapter_new(&dst, &lc, &mc));
	SC_ASSERT_OK(sc_wire_to_adapter(dst, 0, L, f->ptr, (size_t)f->n, "lora"));
	assert_memory_equal(dst->data, f->src->data, dst->n_floats * sizeof(float));
	sc_adapter_free(dst);
}

static void other_layers_are_skipped(void **state)
{
	fixture *f = *state;
	sc_adapter *dst;
	SC_ASSERT_OK(sc_adapter_new(&dst, &lc, &mc));
	SC_ASSERT_OK(sc_wire_to_adapter(dst, 1, 2, f->ptr, (size_t)f->n, "lora"));
	assert_memory_equal(dst->a[1][0], f->src->a[1][0], R * C * sizeof(float));
	assert_true(dst->a[0][0][0] == 0.0f && dst->a[2][0][0] == 0.0f);
	sc_adapter_free(dst);
}

static void bad_lists_are_named(void **state)
{
	fixture *f = *state;
	sc_adapter *dst;
	Splitchain__NamedTensor *save = f->ptr[1], bad;
	SC_ASSERT_OK(sc_adapter_new(&dst, &lc, &mc));

	f->ptr[1] = f->ptr[0]; /* a duplicate in place of a matrix: same count */
	SC_ASSERT_ERR(sc_wire_to_adapter(dst, 0, L, f->ptr, (size_t)f->n, "lora"), SC_EFORMAT);
	assert_non_null(strstr(sc_err_detail(), "appears twice"));
	f->ptr[1] = save;

	SC_ASSERT_ERR(sc_wire_to_adapter(dst, 0, L, f->ptr, (size_t)f->n - 1, "adam_m"),
		      SC_EFORMAT);
	assert_non_null(strstr(sc_err_detail(), "adam_m lacks"));

	bad = *f->ptr[2];
	bad.data.len -= 4;
	f->ptr[2] = &bad;
	SC_ASSERT_ERR(sc_wire_to_adapter(dst, 0, L, f->ptr, (size_t)f->n, "lora"), SC_EFORMAT);
	assert_non_null(strstr(sc_err_detail(), "want shape"));
	bad = f->nt[2];
	bad.name = "h.0.lm_head.lora_A";
	SC_ASSERT_ERR(sc_wire_to_adapter(dst, 0, L, f->ptr, (size_t)f->n, "lora"), SC_EFORMAT);
	assert_non_null(strstr(sc_err_detail(), "unknown tensor"));
	f->ptr[2] = &f->nt[2];
	sc_adapter_free(dst);
}

/* Every field of sc_train_config survives the message (a job's recipe as
 * the coordinator stores it and the workers get it), the frozen base's
 * too; a value too large for an int reads as -1, which validation refuses. */
static void train_config_round_trips(void **state)
{
	sc_train_config tc, back;
	Splitchain__TrainConfig t = SPLITCHAIN__TRAIN_CONFIG__INIT;
	sc_train_config_defaults(&tc);
	tc.steps = 7;
	tc.wire = 3;
	tc.allow_tf32 = 1;
	tc.seed = 99;
	tc.base_quant = SC_BASE_QUANT_NF4;
	tc.double_quant = 1;
	tc.precision = SC_PRECISION_BF16;
	sc_wire_train_message(&t, &tc);
	assert_int_equal(t.base_quant, 2);
	assert_true(t.double_quant);
	assert_int_equal(t.precision, 1);
	sc_wire_train_config(&back, &t);
	assert_true(back.steps == tc.steps && back.B == tc.B && back.T == tc.T &&
		    back.micro_batches == tc.micro_batches && back.lr == tc.lr &&
		    back.min_lr == tc.min_lr && back.warmup == tc.warmup &&
		    back.weight_decay == tc.weight_decay && back.beta1 == tc.beta1 &&
		    back.beta2 == tc.beta2 && back.eps == tc.eps &&
		    back.grad_clip == tc.grad_clip && back.seed == tc.seed &&
		    back.allow_tf32 == tc.allow_tf32 && back.wire == tc.wire);
	assert_int_equal(back.base_quant, SC_BASE_QUANT_NF4);
	assert_int_equal(back.double_quant, 1);
	assert_int_equal(back.precision, SC_PRECISION_BF16);
	t.base_quant = 0x80000000u;
	sc_wire_train_config(&back, &t);
	assert_int_equal(back.base_quant, -1);
	SC_ASSERT_ERR(sc_train_config_validate(&back), SC_EINVAL);
	t.base_quant = 3;
	sc_wire_train_config(&back, &t);
	SC_ASSERT_ERR(sc_train_config_validate(&back), SC_EINVAL);
	t.base_quant = 0;
	t.precision = 2;
	sc_wire_train_config(&back, &t);
	SC_ASSERT_ERR(sc_train_config_validate(&back), SC_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(whole_adapter_round_trips),
		cmocka_unit_test(other_layers_are_skipped),
		cmocka_unit_test(bad_lists_are_named),
		cmocka_unit_test(train_config_round_trips),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
