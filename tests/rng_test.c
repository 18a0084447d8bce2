/* rng_test.c — the deterministic stream and LoRA initialisation. */
#include <math.h>
#include <string.h>

#include "sc_family.h"
#include "sc_lora.h"
#include "sc_rng.h"
#include "testutil.h"

static void same_keys_same_stream(void **state)
{
	uint64_t k[3] = { 7, 3, 1 };
	sc_rng a, b;
	sc_rng_seed(&a, k, 3);
	sc_rng_seed(&b, k, 3);
	for (int i = 0; i < 1000; i++)
		assert_int_equal(sc_rng_u64(&a), sc_rng_u64(&b));
	k[2] = 2;
	sc_rng_seed(&b, k, 3);
	sc_rng_seed(&a, (uint64_t[]){ 7, 3, 1 }, 3);
	assert_true(sc_rng_u64(&a) != sc_rng_u64(&b));
}

static void uniform_and_normal_moments(void **state)
{
	uint64_t k = 11;
	sc_rng r;
	double su = 0, sn = 0, sn2 = 0;
	int n = 200000;
	sc_rng_seed(&r, &k, 1);
	for (int i = 0; i < n; i++) {
		float u = sc_rng_uniform(&r), z = sc_rng_normal(&r);
		assert_true(u >= 0.0f && u < 1.0f);
		su += u;
		sn += z;
		sn2 += (double)z * z;
	}
	assert_true(fabs(su / n - 0.5) < 0.01);
	assert_true(fabs(sn / n) < 0.01);
	assert_true(fabs(sn2 / n - 1.0) < 0.02);
}

static void below_stays_below(void **state)
{
	uint64_t k = 5;
	sc_rng r;
	int hits[7] = { 0 };
	sc_rng_seed(&r, &k, 1);
	for (int i = 0; i < 70000; i++) {
		uint64_t x = sc_rng_below(&r, 7);
		assert_true(x < 7);
		hits[x]++;
	}
	for (int i = 0; i < 7; i++)
		assert_true(hits[i] > 9000 && hits[i] < 11000);
}

static void lora_init_depends_only_on_seed_layer_target(void **state)
{
	float a[4 * 32], b[4 * 32], c[4 * 32];
	sc_lora_init_a(a, 42, 5, SC_GPT2_MLP_FC, 4, 32);
	sc_lora_init_a(b, 42, 5, SC_GPT2_MLP_FC, 4, 32);
	assert_memory_equal(a, b, sizeof(a));
	sc_lora_init_a(c, 42, 6, SC_GPT2_MLP_FC, 4, 32);
	assert_memory_not_equal(a, c, sizeof(a));
	sc_lora_init_a(c, 42, 5, SC_GPT2_ATTN_QKV, 4, 32);
	assert_memory_not_equal(a, c, sizeof(a));
	for (int i = 0; i < 4 * 32; i++)
		assert_true(fabsf(a[i]) <= 1.0f / sqrtf(32.0f));
}

static sc_model_config gpt2_cfg(void)
{
	sc_model_config c;
	sc_gpt2_config(&c, 2, 2, 8, 16, 8);
	return c;
}

static sc_model_config llama_cfg(void)
{
	sc_model_config c;
	assert_int_equal(sc_config_preset(&c, "llama-tiny"), SC_OK);
	return c;
}

static void targets_parse(void **state)
{
	sc_model_config g = gpt2_cfg();
	unsigned m;
	SC_ASSERT_OK(sc_lora_parse_targets(&m, &g, "all"));
	assert_int_equal(m, SC_GPT2_ALL);
	SC_ASSERT_OK(sc_lora_parse_targets(&m, &g, "attn.c_attn,mlp.c_proj"));
	assert_int_equal(m, (1u << SC_GPT2_ATTN_QKV) | (1u << SC_GPT2_MLP_PROJ));
	SC_ASSERT_OK(sc_lora_parse_targets(&m, &g, "c_attn,c_fc"));
	assert_int_equal(m, (1u << SC_GPT2_ATTN_QKV) | (1u << SC_GPT2_MLP_FC));
	SC_ASSERT_ERR(sc_lora_parse_targets(&m, &g, "attn.c_attn,lm_head"), SC_EINVAL);
	assert_non_null(strstr(sc_err_detail(), "lm_head"));
	SC_ASSERT_ERR(sc_lora_parse_targets(&m, &g, ""), SC_EINVAL);
	/* PEFT's suffix rule: c_proj is both attention's and the MLP's. */
	SC_ASSERT_OK(sc_lora_parse_targets(&m, &g, "c_proj"));
	assert_int_equal(m, (1u << SC_GPT2_ATTN_PROJ) | (1u << SC_GPT2_MLP_PROJ));
}

/* The Llama family's seven projections, by PEFT's names. */
static void targets_parse_llama(void **state)
{
	sc_model_config l = llama_cfg();
	unsigned m;
	char buf[256];
	SC_ASSERT_OK(sc_lora_parse_targets(&m, &l, "all-linear"));
	assert_int_equal(m, 0x7f);
	assert_int_equal(sc_lora_all_targets(&l), 0x7f);
	SC_ASSERT_OK(sc_lora_parse_targets(&m, &l, "q_proj,v_proj"));
	assert_int_equal(m, 0x5);
	SC_ASSERT_OK(sc_lora_parse_targets(&m, &l, "self_attn.o_proj,mlp.down_proj,gate_proj"));
	assert_int_equal(m, (1u << 3) | (1u << 6) | (1u << 4));
	sc_lora_targets_string(buf, sizeof(buf), &l, m);
	assert_string_equal(buf, "self_attn.o_proj,mlp.gate_proj,mlp.down_proj");
	/* GPT-2's names mean nothing to a Llama model, and the error says what does. */
	SC_ASSERT_ERR(sc_lora_parse_targets(&m, &l, "c_attn"), SC_EINVAL);
	assert_non_null(strstr(sc_err_detail(), "c_attn"));
	assert_non_null(strstr(sc_err_detail(), "q_proj"));
	assert_string_equal(sc_lora_target_name(&l, 5), "mlp.up_proj");
	int in, out;
	sc_lora_target_dims(&l, 1, &in, &out); /* k_proj: C -> NKV * hs */
	assert_int_equal(in, l.n_embd);
	assert_int_equal(out, l.n_kv_head * l.head_dim);
}

/* Formatting is the parser's inverse; a short buffer truncates cleanly. */
static void targets_string(void **state)
{
	sc_model_config g = gpt2_cfg();
	char buf[64], tiny[8];
	unsigned m;
	sc_lora_targets_string(buf, sizeof(buf), &g, SC_GPT2_ALL);
	assert_string_equal(buf, "all");
	sc_lora_targets_string(buf, sizeof(buf), &g,
			       (1u << SC_GPT2_ATTN_QKV) | (1u << SC_GPT2_MLP_PROJ));
	assert_string_equal(buf, "attn.c_attn,mlp.c_proj");
	SC_ASSERT_OK(sc_lora_parse_targets(&m, &g, buf));
	assert_int_equal(m, (1u << SC_GPT2_ATTN_QKV) | (1u << SC_GPT2_MLP_PROJ));
	sc_lora_targets_string(tiny, sizeof(tiny), &g, 1u << SC_GPT2_MLP_FC);
	assert_true(strlen(tiny) < sizeof(tiny));
}

static void lora_config_rejects_rank_zero(void **state)
{
	sc_model_config g = gpt2_cfg(), l = llama_cfg();
	sc_lora_config lc = { .rank = 0, .alpha = 16, .targets = SC_GPT2_ALL };
	SC_ASSERT_ERR(sc_lora_config_validate(&lc, &g), SC_EINVAL);
	assert_non_null(strstr(sc_err_detail(), "rank"));
	lc.rank = 8;
	lc.alpha = -1;
	SC_ASSERT_ERR(sc_lora_config_validate(&lc, &g), SC_EINVAL);
	lc.alpha = 16;
	lc.targets = 0;
	SC_ASSERT_ERR(sc_lora_config_validate(&lc, &g), SC_EINVAL);
	lc.targets = SC_GPT2_ALL;
	SC_ASSERT_OK(sc_lora_config_validate(&lc, &g));
	/* bits beyond the family's targets */
	lc.targets = 0x7f;
	SC_ASSERT_ERR(sc_lora_config_validate(&lc, &g), SC_EINVAL);
	SC_ASSERT_OK(sc_lora_config_validate(&lc, &l));
	lc.targets = 0xff;
	SC_ASSERT_ERR(sc_lora_config_validate(&lc, &l), SC_EINVAL);
}

/* A filled batch is the u64 stream cut in 24-bit halves: top bits first,
 * then bits 16..39; an odd count leaves the last draw's second half
 * unused. */
static void uniform_fill_is_the_stream(void **state)
{
	(void)state;
	for (size_t n = 0; n <= 9; n++) {
		sc_rng a, b;
		float got[9];
		sc_rng_seed(&a, (uint64_t[]){ 11, n }, 2);
		b = a;
		sc_rng_uniform_fill(&a, got, n);
		for (size_t i = 0; i < n; i += 2) {
			uint64_t x = sc_rng_u64(&b);
			assert_true(got[i] == (float)(x >> 40) / 16777216.0f);
			if (i + 1 < n)
				assert_true(got[i + 1] ==
					    (float)((x >> 16) & 0xFFFFFF) / 16777216.0f);
		}
		assert_true(sc_rng_u64(&a) == sc_rng_u64(&b)); /* in step after */
	}
	/* Moments of a long batch. */
	enum { M = 1 << 16 };
	static float u[M];
	sc_rng r;
	double sum = 0, sq = 0;
	sc_rng_seed(&r, (uint64_t[]){ 3 }, 1);
	sc_rng_uniform_fill(&r, u, M);
	for (int i = 0; i < M; i++) {
		assert_true(u[i] >= 0 && u[i] < 1);
		sum += u[i], sq += (double)u[i] * u[i];
	}
	assert_true(fabs(sum / M - 0.5) < 0.005);
	assert_true(fabs(sq / M - sum / M * sum / M - 1.0 / 12) < 0.002);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(same_keys_same_stream),
		cmocka_unit_test(uniform_and_normal_moments),
		cmocka_unit_test(uniform_fill_is_the_stream),
		cmocka_unit_test(below_stays_below),
		cmocka_unit_test(lora_init_depends_only_on_seed_layer_target),
		cmocka_unit_test(targets_parse),
		cmocka_unit_test(targets_parse_llama),
		cmocka_unit_test(targets_string),
		cmocka_unit_test(lora_config_rejects_rank_zero),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
