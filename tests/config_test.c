/* config_test.c — parsing, validating and writing GPT-2 config.json. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "sc_config.h"
#include "sc_family.h"
#include "testutil.h"

/* The config.json of Hugging Face's gpt2 checkpoint. */
static const char gpt2_json[] =
    "{\"activation_function\": \"gelu_new\", \"architectures\": [\"GPT2LMHeadModel\"],"
    " \"attn_pdrop\": 0.1, \"bos_token_id\": 50256, \"embd_pdrop\": 0.1,"
    " \"eos_token_id\": 50256, \"initializer_range\": 0.02, \"layer_norm_epsilon\": 1e-05,"
    " \"model_type\": \"gpt2\", \"n_ctx\": 1024, \"n_embd\": 768, \"n_head\": 12,"
    " \"n_layer\": 12, \"n_positions\": 1024, \"resid_pdrop\": 0.1,"
    " \"summary_activation\": null, \"summary_first_dropout\": 0.1,"
    " \"summary_proj_to_labels\": true, \"summary_type\": \"cls_index\","
    " \"summary_use_proj\": true, \"task_specific_params\": {\"text-generation\":"
    " {\"do_sample\": true, \"max_length\": 50}}, \"vocab_size\": 50257}";

static sc_err parse(sc_model_config *c, const char *text)
{
	return sc_config_parse(c, text, strlen(text));
}

/* gpt2_json with the value of key replaced by value (NULL: key removed). */
static sc_err parse_edited(sc_model_config *c, const char *key, const char *value)
{
	cJSON *root = cJSON_Parse(gpt2_json);
	assert_non_null(root);
	cJSON_DeleteItemFromObjectCaseSensitive(root, key);
	if (value) {
		cJSON *v = cJSON_Parse(value);
		assert_non_null(v);
		cJSON_AddItemToObject(root, key, v);
	}
	char *text = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	sc_err rc = parse(c, text);
	cJSON_free(text);
	return rc;
}

static void assert_detail_has(const char *word)
{
	if (!strstr(sc_err_detail(), word))
		fail_msg("detail '%s' does not mention '%s'", sc_err_detail(), word);
}

/* Field by field (the struct has padding). */
static void assert_config_equal(const sc_model_config *a, const sc_model_config *b)
{
	assert_string_equal(a->model_type, b->model_type);
	assert_int_equal(a->n_layer, b->n_layer);
	assert_int_equal(a->n_head, b->n_head);
	assert_int_equal(a->n_kv_head, b->n_kv_head);
	assert_int_equal(a->head_dim, b->head_dim);
	assert_int_equal(a->n_embd, b->n_embd);
	assert_int_equal(a->n_inner, b->n_inner);
	assert_int_equal(a->vocab_size, b->vocab_size);
	assert_int_equal(a->n_positions, b->n_positions);
	assert_true(a->ln_eps == b->ln_eps);
	assert_int_equal(a->tie_embeddings, b->tie_embeddings);
	assert_int_equal(a->qkv_bias, b->qkv_bias);
	assert_int_equal(a->o_bias, b->o_bias);
	assert_int_equal(a->mlp_bias, b->mlp_bias);
	assert_int_equal(a->sliding_window, b->sliding_window);
	assert_true(a->rope_theta == b->rope_theta);
	assert_int_equal(a->rope_scaling, b->rope_scaling);
	assert_true(a->rope_factor == b->rope_factor);
	assert_true(a->rope_low_freq_factor == b->rope_low_freq_factor);
	assert_true(a->rope_high_freq_factor == b->rope_high_freq_factor);
	assert_int_equal(a->rope_original_max_positions, b->rope_original_max_positions);
	assert_int_equal(a->bos_token_id, b->bos_token_id);
	assert_int_equal(a->eos_token_id, b->eos_token_id);
}

static void test_good_gpt2(void **state)
{
	(void)state;
	sc_model_config c;
	SC_ASSERT_OK(parse(&c, gpt2_json));
	assert_int_equal(c.n_layer, 12);
	assert_int_equal(c.n_head, 12);
	assert_int_equal(c.n_embd, 768);
	assert_int_equal(c.vocab_size, 50257);
	assert_int_equal(c.n_positions, 1024);
	assert_true(c.ln_eps == 1e-5f);
	SC_ASSERT_OK(sc_config_validate(&c));
	/* The rest is what GPT-2 implies, as sc_gpt2_config builds it. */
	sc_model_config want;
	sc_gpt2_config(&want, 12, 12, 768, 50257, 1024);
	want.bos_token_id = want.eos_token_id = 50256;
	assert_config_equal(&c, &want);
	assert_string_equal(c.model_type, "gpt2");
	assert_int_equal(c.n_kv_head, 12);
	assert_int_equal(c.head_dim, 64);
	assert_int_equal(c.n_inner, 3072);
	assert_true(c.tie_embeddings && c.qkv_bias && c.o_bias && c.mlp_bias);
	assert_true(c.rope_theta == 0.0 && c.sliding_window == 0);
	SC_ASSERT_OK(sc_config_validate(&want));
	/* A config with no family is refused. */
	want.model_type[0] = '\0';
	SC_ASSERT_ERR(sc_config_validate(&want), SC_ENOTSUP);
}

static void test_not_nul_terminated(void **state)
{
	(void)state;
	size_t len = strlen(gpt2_json);
	char *text = malloc(len);
	memcpy(text, gpt2_json, len);
	sc_model_config c;
	SC_ASSERT_OK(sc_config_parse(&c, text, len));
	SC_ASSERT_ERR(sc_config_parse(&c, text, len - 1), SC_EFORMAT);
	free(text);
}

static void test_n_ctx_fallback_and_defaults(void **state)
{
	(void)state;
	sc_model_config c;
	SC_ASSERT_OK(parse(&c, "{\"model_type\": \"gpt2\", \"n_layer\": 2, \"n_head\": 2,"
			       " \"n_embd\": 8, \"vocab_size\": 10, \"n_ctx\": 16}"));
	assert_int_equal(c.n_positions, 16);
	assert_true(c.ln_eps == 1e-5f);
	SC_ASSERT_OK(parse_edited(&c, "layer_norm_epsilon", "1e-6"));
	assert_true(c.ln_eps == 1e-6f);
	SC_ASSERT_OK(parse_edited(&c, "activation_function", NULL));
	SC_ASSERT_OK(parse_edited(&c, "tie_word_embeddings", "true"));
	SC_ASSERT_OK(parse_edited(&c, "n_inner", "3072"));
}

static void test_unknown_model_type(void **state)
{
	(void)state;
	sc_model_config c;
	SC_ASSERT_ERR(parse_edited(&c, "model_type", "\"gpt_neox\""), SC_ENOTSUP);
	assert_detail_has(
	    "model_type 'gpt_neox' is not supported (supported: gpt2, llama, mistral, qwen2)");
	SC_ASSERT_ERR(parse_edited(&c, "model_type", NULL), SC_EFORMAT);
	assert_detail_has("model_type");
}

static void test_missing_field(void **state)
{
	(void)state;
	static const char *const fields[] = { "n_layer", "n_head", "n_embd", "vocab_size" };
	sc_model_config c;
	for (int i = 0; i < 4; i++) {
		SC_ASSERT_ERR(parse_edited(&c, fields[i], NULL), SC_EFORMAT);
		assert_detail_has(fields[i]);
	}
	/* n_positions may be missing while n_ctx is there, not both. */
	SC_ASSERT_OK(parse_edited(&c, "n_positions", NULL));
	cJSON *root = cJSON_Parse(gpt2_json);
	cJSON_DeleteItemFromObjectCaseSensitive(root, "n_positions");
	cJSON_DeleteItemFromObjectCaseSensitive(root, "n_ctx");
	char *text = cJSON_PrintUnformatted(root);
	SC_ASSERT_ERR(parse(&c, text), SC_EFORMAT);
	assert_detail_has("n_positions");
	cJSON_free(text);
	cJSON_Delete(root);
}

static void test_bad_values(void **state)
{
	(void)state;
	sc_model_config c;
	SC_ASSERT_ERR(parse_edited(&c, "n_layer", "1.5"), SC_EFORMAT);
	assert_detail_has("n_layer");
	SC_ASSERT_ERR(parse_edited(&c, "n_head", "\"12\""), SC_EFORMAT);
	SC_ASSERT_ERR(parse_edited(&c, "n_embd", "1e12"), SC_EFORMAT);
	SC_ASSERT_ERR(parse_edited(&c, "n_layer", "0"), SC_EFORMAT);
	SC_ASSERT_ERR(parse_edited(&c, "vocab_size", "-5"), SC_EFORMAT);
	SC_ASSERT_ERR(parse_edited(&c, "layer_norm_epsilon", "0"), SC_EFORMAT);
	SC_ASSERT_ERR(parse_edited(&c, "layer_norm_epsilon", "\"small\""), SC_EFORMAT);
}

static void test_n_embd_not_divisible(void **state)
{
	(void)state;
	sc_model_config c;
	SC_ASSERT_ERR(parse_edited(&c, "n_head", "10"), SC_EFORMAT);
	assert_detail_has("divisible");
}

static void test_limits(void **state)
{
	(void)state;
	sc_model_config c;
	SC_ASSERT_OK(parse_edited(&c, "n_layer", "256"));
	SC_ASSERT_ERR(parse_edited(&c, "n_layer", "257"), SC_ENOTSUP);
	assert_detail_has("n_layer");
	SC_ASSERT_OK(parse_edited(&c, "vocab_size", "16777216"));
	SC_ASSERT_ERR(parse_edited(&c, "vocab_size", "16777217"), SC_ENOTSUP);
	assert_detail_has("vocab_size");
}

static void test_bad_activation(void **state)
{
	(void)state;
	sc_model_config c;
	SC_ASSERT_ERR(parse_edited(&c, "activation_function", "\"relu\""), SC_ENOTSUP);
	assert_detail_has("relu");
	SC_ASSERT_ERR(parse_edited(&c, "activation_function", "3"), SC_EFORMAT);
}

static void test_untied_embeddings(void **state)
{
	(void)state;
	sc_model_config c;
	SC_ASSERT_ERR(parse_edited(&c, "tie_word_embeddings", "false"), SC_ENOTSUP);
	assert_detail_has("tie_word_embeddings");
}

static void test_other_unsupported(void **state)
{
	(void)state;
	sc_model_config c;
	SC_ASSERT_ERR(parse_edited(&c, "n_inner", "1000"), SC_ENOTSUP);
	assert_detail_has("n_inner");
	SC_ASSERT_ERR(parse_edited(&c, "scale_attn_by_inverse_layer_idx", "true"), SC_ENOTSUP);
	SC_ASSERT_ERR(parse_edited(&c, "scale_attn_weights", "false"), SC_ENOTSUP);
	SC_ASSERT_ERR(parse_edited(&c, "add_cross_attention", "true"), SC_ENOTSUP);
}

static void test_not_json(void **state)
{
	(void)state;
	sc_model_config c;
	SC_ASSERT_ERR(parse(&c, "{\"model_type\": \"gpt2\","), SC_EFORMAT);
	assert_detail_has("JSON");
	SC_ASSERT_ERR(parse(&c, ""), SC_EFORMAT);
	SC_ASSERT_ERR(parse(&c, "[\"gpt2\"]"), SC_EFORMAT);
	assert_detail_has("object");
}

static void test_save_load_roundtrip(void **state)
{
	(void)state;
	char path[512];
	sc_test_path(path, sizeof(path), "config.json");
	sc_model_config c, got, want;
	sc_gpt2_config(&c, 3, 4, 64, 100, 32);
	SC_ASSERT_OK(sc_config_save(&c, path));
	SC_ASSERT_OK(sc_config_load(&got, path));
	/* Everything comes back, and the token ids c leaves unset (-1) are
	 * written as GPT-2 has them: the last token of the vocabulary. */
	want = c;
	want.bos_token_id = want.eos_token_id = 99;
	assert_config_equal(&got, &want);
	SC_ASSERT_OK(sc_config_save(&got, path));
	SC_ASSERT_OK(sc_config_load(&c, path));
	assert_config_equal(&c, &got);

	/* What Hugging Face needs to build GPT2LMHeadModel. */
	FILE *fp = fopen(path, "rb");
	char text[8192];
	size_t n = fread(text, 1, sizeof(text) - 1, fp);
	fclose(fp);
	text[n] = 0;
	assert_non_null(strstr(text, "1e-05"));
	cJSON *root = cJSON_Parse(text);
	assert_non_null(root);
	assert_string_equal(cJSON_GetObjectItem(root, "model_type")->valuestring, "gpt2");
	assert_string_equal(
	    cJSON_GetArrayItem(cJSON_GetObjectItem(root, "architectures"), 0)->valuestring,
	    "GPT2LMHeadModel");
	assert_string_equal(cJSON_GetObjectItem(root, "activation_function")->valuestring,
			    "gelu_new");
	assert_true(cJSON_IsNull(cJSON_GetObjectItem(root, "n_inner")));
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(root, "tie_word_embeddings")));
	assert_int_equal(cJSON_GetObjectItem(root, "eos_token_id")->valueint, 99);
	assert_int_equal(cJSON_GetObjectItem(root, "bos_token_id")->valueint, 99);
	assert_int_equal(cJSON_GetObjectItem(root, "n_ctx")->valueint, 32);
	assert_true(cJSON_GetObjectItem(root, "resid_pdrop")->valuedouble == 0.0);
	assert_string_equal(cJSON_GetObjectItem(root, "torch_dtype")->valuestring, "float32");
	cJSON_Delete(root);

	sc_gpt2_config(&c, 3, 5, 64, 100, 32); /* 64 channels over 5 heads */
	SC_ASSERT_ERR(sc_config_save(&c, path), SC_EFORMAT);
	assert_detail_has("divisible");
	c.model_type[0] = '\0'; /* no family */
	SC_ASSERT_ERR(sc_config_save(&c, path), SC_ENOTSUP);
}

static void test_load_errors(void **state)
{
	(void)state;
	char path[512];
	sc_model_config c;
	SC_ASSERT_ERR(sc_config_load(&c, sc_test_path(path, sizeof(path), "absent.json")),
		      SC_ENOENT);
	sc_test_path(path, sizeof(path), "bert.json");
	const char *bert = "{\"model_type\": \"bert\"}";
	assert_int_equal(sc_test_write_file(path, bert, strlen(bert)), 0);
	SC_ASSERT_ERR(sc_config_load(&c, path), SC_ENOTSUP);
	assert_detail_has(path);
	assert_detail_has("bert");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_gpt2),
		cmocka_unit_test(test_not_nul_terminated),
		cmocka_unit_test(test_n_ctx_fallback_and_defaults),
		cmocka_unit_test(test_unknown_model_type),
		cmocka_unit_test(test_missing_field),
		cmocka_unit_test(test_bad_values),
		cmocka_unit_test(test_n_embd_not_divisible),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_bad_activation),
		cmocka_unit_test(test_untied_embeddings),
		cmocka_unit_test(test_other_unsupported),
		cmocka_unit_test(test_not_json),
		cmocka_unit_test(test_save_load_roundtrip),
		cmocka_unit_test(test_load_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
