/* family_test.c — the model families: Llama-family config.json parsing and
 * its refusals, every preset's config round trip, tensor names and shapes,
 * and loading weights that are missing or mis-shaped. The numerics are
 * checked against PyTorch in tests/ref/test_llama_parity.py. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "sc_config.h"
#include "sc_family.h"
#include "sc_file.h"
#include "sc_modelgen.h"
#include "sc_segment.h"

#define LLAMA_BASE                                                                                 \
	"\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"hidden_size\": 64, "              \
	"\"intermediate_size\": 96, \"vocab_size\": 300, \"max_position_embeddings\": 128"

static sc_err parse(sc_model_config *c, const char *text)
{
	return sc_config_parse(c, text, strlen(text));
}

static void assert_detail_has(const char *word)
{
	if (!strstr(sc_err_detail(), word))
		fail_msg("error detail '%s' does not name '%s'", sc_err_detail(), word);
}

static void llama_defaults(void **state)
{
	sc_model_config c;
	SC_ASSERT_OK(parse(&c, "{\"model_type\": \"llama\", " LLAMA_BASE "}"));
	assert_string_equal(c.model_type, "llama");
	assert_ptr_equal(sc_family_of(&c), &sc_family_llama);
	assert_int_equal(c.n_kv_head, 4);
	assert_int_equal(c.head_dim, 16);
	assert_int_equal(c.n_inner, 96);
	assert_true(c.ln_eps == 1e-6f);
	assert_true(c.rope_theta == 10000.0);
	assert_int_equal(c.rope_scaling, SC_ROPE_NONE);
	assert_int_equal(c.tie_embeddings, 0);
	assert_int_equal(c.qkv_bias, 0);
	assert_int_equal(c.o_bias, 0);
	assert_int_equal(c.mlp_bias, 0);
	assert_int_equal(c.sliding_window, 0);
}

static void llama_fields(void **state)
{
	sc_model_config c;
	SC_ASSERT_OK(parse(&c, "{\"model_type\": \"llama\", " LLAMA_BASE
			       ", \"num_key_value_heads\": 1, \"head_dim\": 32, "
			       "\"rms_norm_eps\": 1e-5, \"rope_theta\": 500000.0, "
			       "\"tie_word_embeddings\": true, \"attention_bias\": true, "
			       "\"mlp_bias\": true, \"eos_token_id\": [128001, 128009], "
			       "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 32.0, "
			       "\"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
			       "\"original_max_position_embeddings\": 8192}}"));
	assert_int_equal(c.n_kv_head, 1);
	assert_int_equal(c.head_dim, 32);
	assert_true(c.ln_eps == 1e-5f);
	assert_true(c.rope_theta == 500000.0);
	assert_int_equal(c.tie_embeddings, 1);
	assert_int_equal(c.qkv_bias, 1);
	assert_int_equal(c.o_bias, 1);
	assert_int_equal(c.mlp_bias, 1);
	assert_int_equal(c.eos_token_id, 128001);
	assert_int_equal(c.rope_scaling, SC_ROPE_LLAMA3);
	assert_true(c.rope_factor == 32.0);
	assert_int_equal(c.rope_original_max_positions, 8192);
	/* "type", the older key, and linear scaling */
	SC_ASSERT_OK(parse(&c, "{\"model_type\": \"llama\", " LLAMA_BASE
			       ", \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}}"));
	assert_int_equal(c.rope_scaling, SC_ROPE_LINEAR);
	assert_true(c.rope_factor == 2.0);
}

static void qwen2_and_mistral(void **state)
{
	sc_model_config c;
	SC_ASSERT_OK(parse(&c, "{\"model_type\": \"qwen2\", " LLAMA_BASE
			       ", \"sliding_window\": 32, \"use_sliding_window\": false}"));
	assert_int_equal(c.qkv_bias, 1);
	assert_int_equal(c.o_bias, 0);
	assert_int_equal(c.sliding_window, 0); /* qwen2 ignores it unless asked */
	SC_ASSERT_ERR(
	    parse(&c, "{\"model_type\": \"qwen2\", " LLAMA_BASE ", \"use_sliding_window\": true}"),
	    SC_ENOTSUP);
	assert_detail_has("use_sliding_window");
	SC_ASSERT_OK(
	    parse(&c, "{\"model_type\": \"mistral\", " LLAMA_BASE ", \"sliding_window\": 24}"));
	assert_int_equal(c.sliding_window, 24);
	assert_int_equal(c.qkv_bias, 0);
	SC_ASSERT_OK(
	    parse(&c, "{\"model_type\": \"mistral\", " LLAMA_BASE ", \"sliding_window\": null}"));
	assert_int_equal(c.sliding_window, 0);
}

/* Each refusal: the code, and the word the user needs to see. */
static void refusals(void **state)
{
	static const struct {
		const char *name, *json;
		sc_err code;
		const char *word;
	} cases[] = {
		{ "unknown model_type", "{\"model_type\": \"gptj\", " LLAMA_BASE "}", SC_ENOTSUP,
		  "gpt2, llama, mistral, qwen2" },
		{ "heads not divisible by kv heads",
		  "{\"model_type\": \"llama\", " LLAMA_BASE ", \"num_key_value_heads\": 3}",
		  SC_EFORMAT, "num_key_value_heads" },
		{ "hidden not divisible by heads",
		  "{\"model_type\": \"llama\", \"num_hidden_layers\": 2, "
		  "\"num_attention_heads\": 5, \"hidden_size\": 64, \"intermediate_size\": 96, "
		  "\"vocab_size\": 300, \"max_position_embeddings\": 128}",
		  SC_EFORMAT, "head_dim" },
		{ "odd head_dim", "{\"model_type\": \"llama\", " LLAMA_BASE ", \"head_dim\": 15}",
		  SC_EFORMAT, "head_dim" },
		{ "gelu activation",
		  "{\"model_type\": \"llama\", " LLAMA_BASE ", \"hidden_act\": \"gelu\"}",
		  SC_ENOTSUP, "hidden_act" },
		{ "yarn scaling",
		  "{\"model_type\": \"llama\", " LLAMA_BASE
		  ", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4}}",
		  SC_ENOTSUP, "yarn" },
		{ "llama3 scaling without its factors",
		  "{\"model_type\": \"llama\", " LLAMA_BASE
		  ", \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8}}",
		  SC_EFORMAT, "original_max_position_embeddings" },
		{ "missing intermediate_size",
		  "{\"model_type\": \"llama\", \"num_hidden_layers\": 2, "
		  "\"num_attention_heads\": 4, \"hidden_size\": 64, \"vocab_size\": 300, "
		  "\"max_position_embeddings\": 128}",
		  SC_EFORMAT, "intermediate_size" },
		{ "negative rope_theta",
		  "{\"model_type\": \"llama\", " LLAMA_BASE ", \"rope_theta\": -1}", SC_EFORMAT,
		  "rope_theta" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		sc_model_config c;
		sc_errf(SC_OK, "%s", "");
		sc_err rc = parse(&c, cases[i].json);
		if (rc != cases[i].code || !strstr(sc_err_detail(), cases[i].word))
			fail_msg("%s: got %s '%s', want %s naming '%s'", cases[i].name,
				 sc_err_name(rc), sc_err_detail(), sc_err_name(cases[i].code),
				 cases[i].word);
	}
}

/* Every preset is valid, and its config.json reads back as the same config. */
static void presets_round_trip(void **state)
{
	static const char *const names[] = { "gpt2",         "gpt2-tiny",    "llama-tiny",
					     "smollm2-135m", "qwen2.5-0.5b", "tinyllama-1.1b",
					     "llama-3.2-1b" };
	char path[4096];
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		sc_model_config a, b;
		SC_ASSERT_OK(sc_config_preset(&a, names[i]));
		sc_test_path(path, sizeof(path), "preset-config.json");
		SC_ASSERT_OK(sc_config_save(&a, path));
		SC_ASSERT_OK(sc_config_load(&b, path));
		if (memcmp(&a, &b, sizeof(a)) != 0)
			fail_msg("preset %s does not read back as itself", names[i]);
	}
	sc_model_config c;
	SC_ASSERT_ERR(sc_config_preset(&c, "llama-70b"), SC_EINVAL);
	assert_detail_has("smollm2-135m");
}

static void llama_tensor_names(void **state)
{
	sc_model_config c;
	sc_param_desc lp[SC_FAMILY_MAX_PARAMS], gp[SC_GP_COUNT];
	int found = 0;
	SC_ASSERT_OK(sc_config_preset(&c, "qwen2.5-0.5b"));
	const sc_family *f = sc_family_of(&c);
	f->layer_params(&c, 3, lp);
	for (int p = 0; p < f->n_layer_params; p++) {
		if (!strcmp(lp[p].name, "model.layers.3.self_attn.k_proj.weight")) {
			assert_int_equal(lp[p].ndim, 2);
			assert_int_equal(lp[p].shape[0], c.n_kv_head * c.head_dim); /* (out, in) */
			assert_int_equal(lp[p].shape[1], c.n_embd);
			found++;
		}
		if (!strcmp(lp[p].name, "model.layers.3.self_attn.k_proj.bias"))
			found++;
		if (strstr(lp[p].name, "o_proj.bias")) /* qwen2: no o_proj bias */
			fail_msg("qwen2 has no %s", lp[p].name);
	}
	assert_int_equal(found, 2);
	f->global_params(&c, gp);
	assert_string_equal(gp[SC_GP_EMBED].name, "model.embed_tokens.weight");
	assert_int_equal(gp[SC_GP_HEAD].ndim, 0); /* tied */
	assert_int_equal(gp[SC_GP_POS].ndim, 0);  /* rotary */
	assert_int_equal(gp[SC_GP_NORM_B].ndim, 0);
	assert_string_equal(f->targets[6], "mlp.down_proj");
}

/* A model whose file lacks one tensor, or holds one of the wrong shape:
 * loading names it. */
static void load_refuses_missing_and_misshaped(void **state)
{
	sc_model_config c;
	sc_modelgen_opts o = { .seed = 2, .dtype = SC_BF16 };
	char dir[4096], path[4200];
	sc_backend *be;
	sc_segment *seg;
	sc_weights *w;
	SC_ASSERT_OK(sc_config_preset(&c, "llama-tiny"));
	sc_test_path(dir, sizeof(dir), "llama-bad");
	SC_ASSERT_OK(sc_modelgen_write(dir, &c, &o));
	SC_ASSERT_OK(sc_backend_cpu_open(&be, 1));
	sc_segment_spec sp = { .model = c,
			       .lora = { .rank = 2, .alpha = 4, .targets = 0x7f, .seed = 1 },
			       .first = 1,
			       .last = 4,
			       .B = 1,
			       .T = 8,
			       .slots = 1 };
	SC_ASSERT_OK(sc_segment_new(&seg, be, &sp));
	/* the whole file, bf16: loads */
	SC_ASSERT_OK(sc_weights_open(&w, dir));
	SC_ASSERT_OK(sc_segment_load_weights(seg, w));
	sc_weights_close(w);

	/* rewrite the file without layer 2's up_proj and with a wrong gate_proj */
	sc_st_file *f;
	sc_st_writer *wr;
	snprintf(path, sizeof(path), "%s/model.safetensors", dir);
	SC_ASSERT_OK(sc_st_open(&f, path));
	SC_ASSERT_OK(sc_st_writer_new(&wr));
	static const uint16_t zeros[64 * 64] = { 0 };
	int64_t bad_shape[2] = { 64, 64 };
	for (int i = 0; i < sc_st_count(f); i++) {
		const sc_st_tensor *t = sc_st_at(f, i);
		if (!strcmp(t->name, "model.layers.2.mlp.up_proj.weight"))
			continue;
		if (!strcmp(t->name, "model.layers.3.mlp.gate_proj.weight"))
			SC_ASSERT_OK(sc_st_writer_add(wr, t->name, SC_BF16, 2, bad_shape, zeros));
		else
			SC_ASSERT_OK(
			    sc_st_writer_add(wr, t->name, t->dtype, t->ndim, t->shape, t->data));
	}
	snprintf(path, sizeof(path), "%s/edited", dir);
	SC_ASSERT_OK(sc_file_mkdir(path));
	snprintf(path, sizeof(path), "%s/edited/model.safetensors", dir);
	SC_ASSERT_OK(sc_st_writer_save(wr, path));
	sc_st_writer_free(wr);
	sc_st_close(f);
	snprintf(path, sizeof(path), "%s/edited", dir);
	SC_ASSERT_OK(sc_weights_open(&w, path));
	SC_ASSERT_ERR(sc_segment_load_weights(seg, w), SC_EFORMAT);
	assert_detail_has("model.layers.2.mlp.up_proj.weight");
	sc_segment_free(seg);
	/* a segment of the last layer only reaches the mis-shaped tensor */
	sp.first = 3;
	SC_ASSERT_OK(sc_segment_new(&seg, be, &sp));
	SC_ASSERT_ERR(sc_segment_load_weights(seg, w), SC_EFORMAT);
	assert_detail_has("model.layers.3.mlp.gate_proj.weight");
	sc_weights_close(w);
	sc_segment_free(seg);
	sc_backend_free(be);
}

/* A stage holds its own tensors once: the first stage's frozen bytes are the
 * embedding plus its layers; no other tensor is held. */
static void segment_holds_only_its_tensors(void **state)
{
	sc_model_config c;
	sc_backend *be;
	sc_segment *a, *b;
	SC_ASSERT_OK(sc_config_preset(&c, "llama-tiny"));
	SC_ASSERT_OK(sc_backend_cpu_open(&be, 1));
	sc_segment_spec sp = { .model = c,
			       .lora = { .rank = 2, .alpha = 4, .targets = 1, .seed = 1 },
			       .first = 0,
			       .last = 1,
			       .B = 1,
			       .T = 8,
			       .slots = 1 };
	SC_ASSERT_OK(sc_segment_new(&a, be, &sp));
	sp.first = 1;
	sp.last = 2;
	SC_ASSERT_OK(sc_segment_new(&b, be, &sp));
	/* the only difference between a first and a middle one-layer segment
	 * is the embedding (V,C) floats, up to alignment */
	double diff = (double)sc_segment_device_bytes(a) - (double)sc_segment_device_bytes(b);
	double emb = (double)c.vocab_size * c.n_embd * sizeof(float);
	assert_true(diff >= emb && diff <= emb + 64 * 4);
	sc_segment_free(a);
	sc_segment_free(b);
	sc_backend_free(be);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(llama_defaults),
		cmocka_unit_test(llama_fields),
		cmocka_unit_test(qwen2_and_mistral),
		cmocka_unit_test(refusals),
		cmocka_unit_test(presets_round_trip),
		cmocka_unit_test(llama_tensor_names),
		cmocka_unit_test(load_refuses_missing_and_misshaped),
		cmocka_unit_test(segment_holds_only_its_tensors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
