/* auto_quant_test.c — the planner's per-layer formats (auto_quant.h): the
 * order of lowerings (every layer above int8 to int8 first, smallest
 * measured error first, ties in layer order, then to nf4 likewise; layers
 * already lowered, or a base already int8 or nf4, counted right), the
 * loop's stop conditions (the first fit, nothing left, another error),
 * and a stage's memory (stage_mem.h) counting each layer in its own
 * format, wherever its range lies. */
#include <math.h>
#include <string.h>

#include "auto_quant.h"
#include "placement.h"
#include "sc_family.h"
#include "sc_layer_quant.h"
#include "sc_quant.h"
#include "stage_mem.h"
#include "testutil.h"

static const double e8[4] = { 0.3, 0.1, 0.2, 0.4 }, e4[4] = { 0.9, 0.5, 0.7, 0.6 };

static void model(sc_model_config *mc)
{
	sc_gpt2_config(mc, 4, 2, 64, 128, 32);
}

/* Asserts steps[0..n) are (layer, to) as want says, want = {l0, f0, l1, f1, ...}. */
static void expect(const sc_aq_step *s, int n, const int *want, int nw)
{
	assert_int_equal(n, nw);
	for (int i = 0; i < n; i++)
		if (s[i].layer != want[2 * i] || s[i].to != want[2 * i + 1])
			fail_msg("step %d: layer %d to %s, want layer %d to %s", i, s[i].layer,
				 sc_quant_name(s[i].to), want[2 * i],
				 sc_quant_name(want[2 * i + 1]));
}

static void order_of_lowerings(void **state)
{
	enum { I = SC_QUANT_INT8, N = SC_QUANT_NF4 };
	sc_model_config mc;
	sc_aq_step s[8];
	int n;
	(void)state;

	model(&mc); /* fp32: int8 by error 1 2 0 3, then nf4 by error 1 3 2 0 */
	sc_aq_order(&mc, 0, 4, e8, e4, s, &n);
	expect(s, n, (const int[]){ 1, I, 2, I, 0, I, 3, I, 1, N, 3, N, 2, N, 0, N }, 8);
	assert_int_equal(s[0].from, -1);
	assert_int_equal(s[4].from, I);
	assert_true(s[0].err == 0.1 && s[4].err == 0.5);
	mc.quantized = 1; /* bf16: the same */
	mc.quant_format = SC_QUANT_BF16;
	sc_aq_order(&mc, 0, 4, e8, e4, s, &n);
	expect(s, n, (const int[]){ 1, I, 2, I, 0, I, 3, I, 1, N, 3, N, 2, N, 0, N }, 8);
	assert_int_equal(s[0].from, SC_QUANT_BF16);
	mc.quant_format = I; /* an int8 base: to nf4 only */
	sc_aq_order(&mc, 0, 4, e8, e4, s, &n);
	expect(s, n, (const int[]){ 1, N, 3, N, 2, N, 0, N }, 4);
	mc.quant_format = N; /* an nf4 base: nothing to lower */
	sc_aq_order(&mc, 0, 4, e8, e4, s, &n);
	assert_int_equal(n, 0);
	/* Layers lowered already: 0 is int8 (no int8 step), 2 nf4 (none). */
	model(&mc);
	SC_ASSERT_OK(sc_layer_quant_apply(&mc, "0:int8,2:nf4"));
	sc_aq_order(&mc, 0, 4, e8, e4, s, &n);
	expect(s, n, (const int[]){ 1, I, 3, I, 1, N, 3, N, 0, N }, 5);
	/* Equal errors: the lower layer first; a range: its layers only. */
	model(&mc);
	const double flat[4] = { 0.2, 0.2, 0.2, 0.2 };
	sc_aq_order(&mc, 1, 3, flat, flat, s, &n);
	expect(s, n, (const int[]){ 1, I, 2, I, 1, N, 2, N }, 4);
}

/* fits: SC_OK once at least want steps are taken (layers lowered, or
 * gone on to nf4); counts its calls and what it saw last. */
typedef struct probe {
	int want, calls, last;
} probe;

static int steps_taken(const sc_model_config *mc)
{
	int k = 0;
	for (int l = 0; l < mc->n_layer; l++)
		k += mc->layer_quant[l] ? (mc->layer_quant[l] == SC_QUANT_NF4 + 1 ? 2 : 1) : 0;
	return k;
}

static sc_err fits_after(void *arg, const sc_model_config *mc)
{
	probe *p = arg;
	p->calls++;
	p->last = steps_taken(mc);
	return p->last >= p->want ? SC_OK : sc_errf(SC_ERANGE, "short of %d", p->want - p->last);
}

/* fits: SC_OK once every layer is nf4. */
static sc_err fits_all_nf4(void *arg, const sc_model_config *mc)
{
	(void)arg;
	for (int l = 0; l < mc->n_layer; l++)
		if (sc_layer_quant_of(mc, l) != SC_QUANT_NF4)
			return SC_ERANGE;
	return SC_OK;
}

static sc_err fits_never(void *arg, const sc_model_config *mc)
{
	(void)mc;
	++*(int *)arg;
	return sc_errf(SC_ERANGE, "does not fit");
}

static sc_err fits_broken(void *arg, const sc_model_config *mc)
{
	(void)arg;
	(void)mc;
	return sc_errf(SC_EINVAL, "a bad plan");
}

static void lowering_stops_when_it_fits(void **state)
{
	sc_model_config mc;
	sc_aq_step s[8];
	char text[128];
	int n, used, calls = 0;
	(void)state;

	model(&mc);
	sc_aq_order(&mc, 0, 4, e8, e4, s, &n);
	/* Every prefix from 1 to 8 steps: the fewest that fit, found by
	 * bisection in at most 1 + 3 + 1 plans, the last of them that one. */
	for (int want = 1; want <= 8; want++) {
		probe p = { .want = want };
		model(&mc);
		SC_ASSERT_OK(sc_aq_lower(&mc, s, n, fits_after, &p, &used));
		assert_int_equal(used, want);
		assert_int_equal(steps_taken(&mc), want);
		assert_int_equal(p.last, want);
		assert_true(p.calls <= 5);
	}
	probe three = { .want = 3 };
	model(&mc);
	SC_ASSERT_OK(sc_aq_lower(&mc, s, n, fits_after, &three, &used));
	assert_int_equal(used, 3); /* the three smallest int8 errors: 1, 2, 0 */
	SC_ASSERT_OK(sc_layer_quant_format(mc.layer_quant, 0, 4, text, sizeof(text)));
	assert_string_equal(text, "0-2:int8");
	probe five = { .want = 5 };
	model(&mc);
	SC_ASSERT_OK(sc_aq_lower(&mc, s, n, fits_after, &five, &used));
	SC_ASSERT_OK(sc_layer_quant_format(mc.layer_quant, 0, 4, text, sizeof(text)));
	assert_string_equal(text, "0:int8,1:nf4,2-3:int8"); /* then 1 on to nf4 */
	/* Going on to nf4 until it fits. */
	model(&mc);
	SC_ASSERT_OK(sc_aq_lower(&mc, s, n, fits_all_nf4, NULL, &used));
	assert_int_equal(used, 8);
	SC_ASSERT_OK(sc_layer_quant_format(mc.layer_quant, 0, 4, text, sizeof(text)));
	assert_string_equal(text, "0-3:nf4");
	/* Nothing fits: all of them tried first, one plan, SC_ERANGE. */
	model(&mc);
	SC_ASSERT_ERR(sc_aq_lower(&mc, s, n, fits_never, &calls, &used), SC_ERANGE);
	assert_int_equal(used, 8);
	assert_int_equal(calls, 1);
	assert_string_equal(sc_err_detail(), "does not fit"); /* the planner's own words */
	/* Nothing to lower at all. */
	SC_ASSERT_ERR(sc_aq_lower(&mc, s, 0, fits_never, &calls, &used), SC_ERANGE);
	assert_int_equal(used, 0);
	assert_int_equal(calls, 1);
	/* Another error stops at once and is passed on. */
	model(&mc);
	SC_ASSERT_ERR(sc_aq_lower(&mc, s, n, fits_broken, NULL, &used), SC_EINVAL);
	assert_int_equal(used, 8);
}

static void stage_memory_counts_each_layer(void **state)
{
	sc_stage_mem m = { .lc = { .rank = 4, .alpha = 8, .targets = SC_GPT2_ALL, .seed = 1 },
			   .B = 2,
			   .T = 16,
			   .M = 2 };
	(void)state;
	model(&m.mc);
	double f01 = sc_stage_mem_bytes(&m, SC_MEM_CPU, 1, 3, 1, 2);
	double f23 = sc_stage_mem_bytes(&m, SC_MEM_CPU, 1, 3, 2, 3);
	assert_true(f01 == f23); /* alike at one format */
	SC_ASSERT_OK(sc_layer_quant_apply(&m.mc, "2:nf4"));
	sc_stage_mem_reset(&m);
	double l1 = sc_stage_mem_bytes(&m, SC_MEM_CPU, 1, 3, 1, 2);
	double l2 = sc_stage_mem_bytes(&m, SC_MEM_CPU, 1, 3, 2, 3);
	assert_true(l1 == f01); /* layer 1 is still fp32 */
	/* Layer 2's projections (12 C^2 floats) at about 4.5 of 32 bits, less
	 * the tile gemm_q dequantizes into (16 K floats here): the stage
	 * holds a quantized layer now. */
	double proj = 12.0 * 64 * 64 * 4;
	print_message("one layer: %.0f bytes fp32, %.0f with nf4 projections (%.0f of them)\n", f23,
		      l2, proj);
	assert_true(l2 < f23 - 0.45 * proj && l2 > f23 - proj);
	assert_false(m.failed);
	sc_stage_mem_free(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(order_of_lowerings),
		cmocka_unit_test(lowering_stops_when_it_fits),
		cmocka_unit_test(stage_memory_counts_each_layer),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
