/* memplan_test.c — sc_segment_predict, the planner's memory figures: for
 * every kind of segment (first, middle, last, whole; training with 1 to 3
 * slots, generation with a cache; float, int8, NF4 and bf16 bases; GPT-2
 * and a Llama-family model with everything that differs switched on) the
 * prediction equals, group by group, what sc_segment_new allocates on the
 * CPU backend; it is affine in the layers held (what the planner relies
 * on); bad specs and devices are refused. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sc_backend.h"
#include "sc_config.h"
#include "sc_lora.h"
#include "sc_quant.h"
#include "sc_segment.h"
#include "sc_units.h"
#include "testutil.h"

enum { L = 4 };

static void model(sc_model_config *mc, int llama, int quant)
{
	if (!llama) {
		sc_gpt2_config(mc, L, 4, 64, 97, 64);
	} else {
		sc_config_shape sh = { .n_layer = L,
				       .n_head = 4,
				       .n_kv_head = 2,
				       .n_embd = 64,
				       .n_inner = 96,
				       .vocab_size = 97,
				       .n_positions = 64,
				       .tie = 0,
				       .sliding_window = 16 };
		SC_ASSERT_OK(sc_config_make(mc, "llama-tiny", "mistral", &sh));
		mc->qkv_bias = 1;
	}
	mc->quantized = quant > 0;
	mc->quant_format = quant == 1 ? SC_QUANT_INT8 : quant == 2 ? SC_QUANT_NF4 : SC_QUANT_BF16;
	mc->quant_double = quant == 2;
	SC_ASSERT_OK(sc_config_validate(mc));
}

static sc_segment_spec spec_of(const sc_model_config *mc, int first, int last, int slots, int kv)
{
	sc_segment_spec sp = {
		.model = *mc,
		.lora = { .rank = 4, .alpha = 8.0f, .targets = sc_lora_all_targets(mc), .seed = 1 },
		.first = first,
		.last = last,
		.B = 2,
		.T = kv ? 4 : 16,
		.slots = kv ? 1 : slots,
		.kv_positions = kv ? 32 : 0
	};
	return sp;
}

static void prediction_is_the_allocation(void **state)
{
	(void)state;
	static const int ranges[][2] = { { 0, L }, { 0, 1 }, { 1, L - 1 }, { L - 1, L } };
	sc_backend *be;
	int n = 0;
	SC_ASSERT_OK(sc_backend_cpu_open(&be, 1));
	for (int llama = 0; llama < 2; llama++)
		for (int quant = 0; quant < 4; quant++)
			for (int r = 0; r < 4; r++)
				for (int slots = 0; slots <= 3; slots++) { /* 0: generation */
					sc_model_config mc;
					model(&mc, llama, quant);
					sc_segment_spec sp = spec_of(
					    &mc, ranges[r][0], ranges[r][1], slots, slots == 0);
					sc_segment_bytes p;
					sc_segment *seg;
					SC_ASSERT_OK(sc_segment_predict(&sp, "cpu", &p));
					SC_ASSERT_OK(sc_segment_new(&seg, be, &sp));
					size_t real = sc_segment_device_bytes(seg);
					if (p.total != real ||
					    p.base + p.lora + p.acts + p.scratch + p.kv != p.total)
						fail_msg(
						    "%s quant %d [%d, %d) slots %d: predicted %zu "
						    "(base %zu lora %zu acts %zu scratch %zu kv "
						    "%zu), allocated %zu",
						    llama ? "llama" : "gpt2", quant, sp.first,
						    sp.last, slots, p.total, p.base, p.lora, p.acts,
						    p.scratch, p.kv, real);
					assert_true(p.base > 0 && p.lora > 0 &&
						    (!slots || p.scratch > 0));
					assert_true(slots ? p.acts > 0 && !p.kv : p.kv > 0);
					sc_segment_free(seg);
					n++;
				}
	print_message("%d segments predicted exactly\n", n);
	sc_backend_free(be);
}

/* The planner takes a stage's bytes as a + b * layers for its position in
 * the chain (first, middle, last) and its slots: check that they are. */
static void affine_in_layers(void **state)
{
	(void)state;
	for (int llama = 0; llama < 2; llama++)
		for (int quant = 0; quant < 4; quant++)
			for (int pos = 0; pos < 3; pos++) {
				sc_model_config mc;
				size_t t[4];
				model(&mc, llama, quant);
				for (int k = 1; k <= 3; k++) {
					int first = pos == 0 ? 0 : pos == 1 ? 1 : L - k;
					int last = pos == 0   ? k
						   : pos == 1 ? 1 + (k < L - 1 ? k : L - 2)
							      : L;
					if (pos == 1 && k > L - 2)
						break;
					sc_segment_spec sp = spec_of(&mc, first, last, 2, 0);
					sc_segment_bytes p;
					SC_ASSERT_OK(sc_segment_predict(&sp, "cpu", &p));
					t[k] = p.total;
				}
				if (pos != 1 && t[3] - t[2] != t[2] - t[1])
					fail_msg(
					    "%s quant %d position %d: %zu, %zu, %zu bytes for 1, "
					    "2, 3 layers",
					    llama ? "llama" : "gpt2", quant, pos, t[1], t[2], t[3]);
			}
}

/* The device decides the attention's saved state: the CPU keeps (B, NH,
 * T, T) probabilities, CUDA one statistic per row and head. */
static void device_kinds(void **state)
{
	(void)state;
	sc_model_config mc;
	sc_segment_bytes c, g;
	model(&mc, 1, 0);
	sc_segment_spec sp = spec_of(&mc, 0, L, 2, 0);
	SC_ASSERT_OK(sc_segment_predict(&sp, "cpu", &c));
	SC_ASSERT_OK(sc_segment_predict(&sp, "cuda:1", &g));
	assert_true(g.acts < c.acts && g.base == c.base && g.lora == c.lora);
	size_t rows = (size_t)sp.B * mc.n_head * sp.T;
	assert_int_equal(c.acts - g.acts, 2 * L * rows * (sp.T - 1) * sizeof(float));
	SC_ASSERT_ERR(sc_segment_predict(&sp, "tpu", &c), SC_EINVAL);
	sp.first = 3, sp.last = 2;
	SC_ASSERT_ERR(sc_segment_predict(&sp, "cpu", &c), SC_EINVAL);
}

/* The sizes and layer splits people write. */
static void sizes_and_splits_parse(void **state)
{
	(void)state;
	uint64_t v;
	int b[5], n;
	SC_ASSERT_OK(sc_parse_bytes("512", &v));
	assert_true(v == 512);
	SC_ASSERT_OK(sc_parse_bytes("2G", &v));
	assert_true(v == 2ull << 30);
	SC_ASSERT_OK(sc_parse_bytes("1.5GiB", &v));
	assert_true(v == 3ull << 29);
	SC_ASSERT_OK(sc_parse_bytes("64k", &v));
	assert_true(v == 65536);
	const char *bad[] = { "", "-1", "12X", "1.5", "G", " 5", "9999999999T", NULL };
	for (int i = 0; bad[i]; i++)
		SC_ASSERT_ERR(sc_parse_bytes(bad[i], &v), SC_EINVAL);
	SC_ASSERT_OK(sc_parse_split("0-7,8-15,16-23", b, 4, &n));
	assert_int_equal(n, 3);
	assert_true(b[0] == 0 && b[1] == 8 && b[2] == 16 && b[3] == 24);
	SC_ASSERT_OK(sc_parse_split("0,1-2", b, 4, &n));
	assert_true(n == 2 && b[1] == 1 && b[2] == 3);
	const char *bad_split[] = { "",        "1-3",  "0-3,5-6",
				    "0-3,3-4", "0-3,", "3-0",
				    "0-1x",    "a-b",  "0-0,1-1,2-2,3-3,4-4",
				    NULL };
	for (int i = 0; bad_split[i]; i++)
		if (sc_parse_split(bad_split[i], b, 4, &n) != SC_EINVAL)
			fail_msg("split '%s' accepted", bad_split[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(prediction_is_the_allocation),
		cmocka_unit_test(affine_in_layers),
		cmocka_unit_test(device_kinds),
		cmocka_unit_test(sizes_and_splits_parse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
