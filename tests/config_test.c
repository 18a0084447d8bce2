/* config_test.c — parsing, validating and writing GPT-2 config.json. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "sc_config.h"
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
	SC_ASSERT_ERR(parse_edited(&c, "model_type", "\"llama\""), SC_ENOTSUP);
	assert_detail_has("model_type 'llama' is not supported (supported: gpt2)");
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
	sc_model_config c = { .n_layer = 3,
			      .n_head = 4,
			      .n_embd = 64,
			      .vocab_size = 100,
			      .n_positions = 32,
			      .ln_eps = 1e-5f };
	SC_ASSERT_OK(sc_config_save(&c, path));
	sc_model_config got;
	SC_ASSERT_OK(sc_config_load(&got, path));
	assert_memory_equal(&got, &c, sizeof(c));

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

	c.n_head = 5;
	SC_ASSERT_ERR(sc_config_save(&c, path), SC_EFORMAT);
}

static void test_load_errors(void **state)
{
	(void)state;
	char path[512];
	sc_model_config c;
	SC_ASSERT_ERR(sc_config_load(&c, sc_test_path(path, sizeof(path), "absent.json")),
		      SC_ENOENT);
	sc_test_path(path, sizeof(path), "llama.json");
	const char *llama = "{\"model_type\": \"llama\"}";
	assert_int_equal(sc_test_write_file(path, llama, strlen(llama)), 0);
	SC_ASSERT_ERR(sc_config_load(&c, path), SC_ENOTSUP);
	assert_detail_has(path);
	assert_detail_has("llama");
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
