/* wire_test.c — adapters from NamedTensor lists: complete, exact, checked. */
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(whole_adapter_round_trips),
		cmocka_unit_test(other_layers_are_skipped),
		cmocka_unit_test(bad_lists_are_named),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
