/* adapter_test.c — adapters in memory, and PEFT adapter files written and
 * read back, including the variants PEFT produces and the files we refuse. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "sc_adapter.h"
#include "sc_safetensors.h"
#include "testutil.h"

#define L 3
#define C 8
#define R 4

/* A GPT-2 of L layers, 2 heads, C channels (set by group_setup). */
static sc_model_config cfg;

static const unsigned QKV = 1u << SC_GPT2_ATTN_QKV, APROJ = 1u << SC_GPT2_ATTN_PROJ,
		      FC = 1u << SC_GPT2_MLP_FC, MPROJ = 1u << SC_GPT2_MLP_PROJ;

static const char *tdir(const char *name)
{
	static char buf[4][512];
	static int k;
	k = (k + 1) % 4;
	return sc_test_path(buf[k], sizeof(buf[k]), name);
}

static const char *join(const char *dir, const char *file)
{
	static char buf[4][600];
	static int k;
	k = (k + 1) % 4;
	snprintf(buf[k], sizeof(buf[k]), "%s/%s", dir, file);
	return buf[k];
}

static void assert_detail_has(const char *word)
{
	if (!strstr(sc_err_detail(), word))
		fail_msg("detail '%s' does not mention '%s'", sc_err_detail(), word);
}

/* A new adapter of layers layers and the given targets, random values. */
static sc_adapter *random_adapter(unsigned targets, int layers, uint64_t seed)
{
	sc_lora_config lc = { .rank = R, .alpha = 8.0f, .targets = targets, .seed = seed };
	sc_model_config mc = cfg;
	sc_adapter *ad;
	mc.n_layer = layers;
	SC_ASSERT_OK(sc_adapter_new(&ad, &lc, &mc));
	sc_test_fill_normal(ad->data, ad->n_floats, seed, 0.5f);
	return ad;
}

static void assert_same_adapter(const sc_adapter *a, const sc_adapter *b)
{
	assert_int_equal(a->lora.rank, b->lora.rank);
	assert_true(a->lora.alpha == b->lora.alpha);
	assert_int_equal(a->lora.targets, b->lora.targets);
	assert_int_equal(a->n_layer, b->n_layer);
	assert_int_equal(a->n_embd, b->n_embd);
	assert_int_equal(a->n_floats, b->n_floats);
	assert_memory_equal(a->data, b->data, a->n_floats * sizeof(float));
}

static cJSON *read_json(const char *path)
{
	FILE *fp = fopen(path, "rb");
	assert_non_null(fp);
	static char text[1 << 16];
	size_t n = fread(text, 1, sizeof(text) - 1, fp);
	fclose(fp);
	text[n] = 0;
	cJSON *root = cJSON_Parse(text);
	assert_non_null(root);
	return root;
}

/* Replaces key in dir's adapter_config.json with the JSON value (NULL:
 * removes it). */
static void edit_config(const char *dir, const char *key, const char *value)
{
	const char *path = join(dir, "adapter_config.json");
	cJSON *root = read_json(path);
	cJSON_DeleteItemFromObjectCaseSensitive(root, key);
	if (value) {
		cJSON *v = cJSON_Parse(value);
		assert_non_null(v);
		cJSON_AddItemToObject(root, key, v);
	}
	char *text = cJSON_Print(root);
	assert_int_equal(sc_test_write_file(path, text, strlen(text)), 0);
	cJSON_free(text);
	cJSON_Delete(root);
}

/* How write_tensors departs from what sc_adapter_save writes. */
struct variant {
	const char *infix; /* between lora_X and .weight, e.g. ".default" */
	int skip;          /* index of a tensor to leave out, or -1 */
	int reshape;       /* index of a tensor written transposed, or -1 */
	const char *extra; /* name of one more tensor, or NULL */
};

static void write_tensors(const char *dir, const sc_adapter *ad, const struct variant *v)
{
	static char names[2 * L * SC_GPT2_TARGETS + 1][128];
	int n = 0, k = 0;
	sc_st_writer *w;
	SC_ASSERT_OK(sc_st_writer_new(&w));
	for (int l = 0; l < ad->n_layer; l++)
		for (int t = 0; t < SC_GPT2_TARGETS; t++)
			for (int ab = 0; ab < 2 && ad->a[l][t]; ab++, k++) {
				int in, out;
				sc_lora_target_dims(&cfg, t, &in, &out);
				int64_t shape[2] = { ab ? out : R, ab ? R : in };
				if (k == v->skip)
					continue;
				if (k == v->reshape) {
					int64_t s0 = shape[0];
					shape[0] = shape[1];
					shape[1] = s0;
				}
				snprintf(names[n], sizeof(names[n]),
					 "base_model.model.transformer.h.%d.%s.lora_%c%s.weight", l,
					 sc_lora_target_name(&cfg, t), ab ? 'B' : 'A', v->infix);
				SC_ASSERT_OK(sc_st_writer_add(w, names[n++], SC_F32, 2, shape,
							      ab ? ad->b[l][t] : ad->a[l][t]));
			}
	if (v->extra) {
		int64_t shape[2] = { R, C };
		SC_ASSERT_OK(sc_st_writer_add(w, v->extra, SC_F32, 2, shape, ad->data));
	}
	SC_ASSERT_OK(sc_st_writer_save(w, join(dir, "adapter_model.safetensors")));
	sc_st_writer_free(w);
}

/* ---- in memory ---- */

static void test_new_layout(void **state)
{
	(void)state;
	sc_lora_config lc = { .rank = R, .alpha = 16, .targets = QKV | MPROJ, .seed = 7 };
	sc_adapter *ad;
	SC_ASSERT_OK(sc_adapter_new(&ad, &lc, &cfg));
	assert_int_equal(ad->n_floats, L * sc_lora_layer_floats(&lc, &cfg));
	float *p = ad->data;
	for (int l = 0; l < L; l++) {
		assert_null(ad->a[l][SC_GPT2_ATTN_PROJ]);
		assert_null(ad->b[l][SC_GPT2_MLP_FC]);
		/* Layer-major: layer l's adapters follow layer l-1's. */
		assert_ptr_equal(ad->a[l][SC_GPT2_ATTN_QKV], p);
		assert_ptr_equal(ad->b[l][SC_GPT2_ATTN_QKV], p + R * C);
		assert_ptr_equal(ad->a[l][SC_GPT2_MLP_PROJ], p + R * C + 3 * C * R);
		assert_ptr_equal(ad->b[l][SC_GPT2_MLP_PROJ], p + R * C + 3 * C * R + R * 4 * C);
		p += sc_lora_layer_floats(&lc, &cfg);
	}
	for (size_t i = 0; i < ad->n_floats; i++)
		assert_true(ad->data[i] == 0.0f);
	sc_adapter_free(ad);
	sc_adapter_free(NULL);

	sc_model_config deep = cfg, thin = cfg;
	deep.n_layer = SC_ADAPTER_MAX_LAYERS + 1;
	thin.n_embd = 0;
	lc.rank = 0;
	SC_ASSERT_ERR(sc_adapter_new(&ad, &lc, &cfg), SC_EINVAL);
	lc.rank = R;
	/* The model's shape is checked by sc_config_validate, with its codes:
	 * too deep is a limit (ENOTSUP), a zero width a bad config (EFORMAT). */
	SC_ASSERT_ERR(sc_adapter_new(&ad, &lc, &deep), SC_ENOTSUP);
	assert_detail_has("n_layer");
	SC_ASSERT_ERR(sc_adapter_new(&ad, &lc, &thin), SC_EFORMAT);
	assert_detail_has("n_embd");
	/* Targets outside the family's. */
	lc.targets = 1u << SC_GPT2_TARGETS;
	SC_ASSERT_ERR(sc_adapter_new(&ad, &lc, &cfg), SC_EINVAL);
}

static void test_init(void **state)
{
	(void)state;
	sc_adapter *ad = random_adapter(SC_GPT2_ALL, L, 11);
	sc_adapter_init(ad);
	for (int l = 0; l < L; l++)
		for (int t = 0; t < SC_GPT2_TARGETS; t++) {
			int in, out;
			sc_lora_target_dims(&cfg, t, &in, &out);
			float *want = malloc((size_t)R * in * sizeof(float));
			sc_lora_init_a(want, 11, l, t, R, in);
			assert_memory_equal(ad->a[l][t], want, (size_t)R * in * sizeof(float));
			for (int i = 0; i < out * R; i++)
				assert_true(ad->b[l][t][i] == 0.0f);
			free(want);
		}
	sc_adapter_free(ad);
}

/* ---- files ---- */

static void test_roundtrip_subset(void **state)
{
	(void)state;
	const char *dir = tdir("subset");
	sc_adapter *ad = random_adapter(QKV | MPROJ, L, 1), *got;
	SC_ASSERT_OK(sc_adapter_save(ad, dir, "gpt2"));
	SC_ASSERT_OK(sc_adapter_load(&got, dir, &cfg));
	assert_same_adapter(got, ad);
	sc_adapter_free(got);

	/* The files are what PEFT writes. */
	cJSON *root = read_json(join(dir, "adapter_config.json"));
	assert_string_equal(cJSON_GetObjectItem(root, "peft_type")->valuestring, "LORA");
	assert_string_equal(cJSON_GetObjectItem(root, "task_type")->valuestring, "CAUSAL_LM");
	assert_int_equal(cJSON_GetObjectItem(root, "r")->valueint, R);
	assert_true(cJSON_GetObjectItem(root, "lora_alpha")->valuedouble == 8.0);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(root, "fan_in_fan_out")));
	assert_string_equal(cJSON_GetObjectItem(root, "base_model_name_or_path")->valuestring,
			    "gpt2");
	assert_string_equal(cJSON_GetObjectItem(root, "bias")->valuestring, "none");
	/* PEFT 0.7 refuses keys its LoraConfig lacks, such as later versions'. */
	assert_null(cJSON_GetObjectItem(root, "use_dora"));
	assert_null(cJSON_GetObjectItem(root, "use_rslora"));
	assert_string_equal(cJSON_GetObjectItem(root, "megatron_core")->valuestring,
			    "megatron.core");
	assert_true(cJSON_IsObject(cJSON_GetObjectItem(root, "rank_pattern")));
	assert_true(cJSON_IsNull(cJSON_GetObjectItem(root, "modules_to_save")));
	const cJSON *mods = cJSON_GetObjectItem(root, "target_modules");
	assert_int_equal(cJSON_GetArraySize(mods), 2);
	assert_string_equal(cJSON_GetArrayItem(mods, 0)->valuestring, "attn.c_attn");
	assert_string_equal(cJSON_GetArrayItem(mods, 1)->valuestring, "mlp.c_proj");
	cJSON_Delete(root);

	sc_st_file *f;
	SC_ASSERT_OK(sc_st_open(&f, join(dir, "adapter_model.safetensors")));
	assert_int_equal(sc_st_count(f), L * 2 * 2);
	assert_string_equal(sc_st_metadata(f, "format"), "pt");
	int64_t sa[2] = { R, 4 * C }, sb[2] = { C, R };
	SC_ASSERT_OK(sc_st_expect_shape(
	    sc_st_find(f, "base_model.model.transformer.h.2.mlp.c_proj.lora_A.weight"), 2, sa));
	SC_ASSERT_OK(sc_st_expect_shape(
	    sc_st_find(f, "base_model.model.transformer.h.2.mlp.c_proj.lora_B.weight"), 2, sb));
	sc_st_close(f);
	char name[128];
	sc_adapter_peft_name(ad, 2, SC_GPT2_MLP_PROJ, 1, name, sizeof(name));
	assert_string_equal(name, "base_model.model.transformer.h.2.mlp.c_proj.lora_B.weight");

	/* Saving over an existing adapter replaces it. */
	sc_adapter *ad2 = random_adapter(QKV | MPROJ, L, 2);
	SC_ASSERT_OK(sc_adapter_save(ad2, dir, NULL));
	SC_ASSERT_OK(sc_adapter_load(&got, dir, &cfg));
	assert_same_adapter(got, ad2);
	sc_adapter_free(got);
	sc_adapter_free(ad2);
	sc_adapter_free(ad);
}

static void test_roundtrip_all_targets(void **state)
{
	(void)state;
	const char *dir = tdir("all");
	sc_adapter *ad = random_adapter(SC_GPT2_ALL, L, 3), *got;
	ad->lora.alpha = 0.1f;
	SC_ASSERT_OK(sc_adapter_save(ad, dir, NULL));
	cJSON *root = read_json(join(dir, "adapter_config.json"));
	assert_true(cJSON_IsNull(cJSON_GetObjectItem(root, "base_model_name_or_path")));
	cJSON_Delete(root);
	SC_ASSERT_OK(sc_adapter_load(&got, dir, &cfg));
	assert_same_adapter(got, ad);
	sc_adapter_free(got);
	sc_adapter_free(ad);
}

static void test_load_short_names(void **state)
{
	(void)state;
	const char *dir = tdir("short");
	sc_adapter *ad = random_adapter(QKV | APROJ | MPROJ, L, 4), *got;
	SC_ASSERT_OK(sc_adapter_save(ad, dir, "gpt2"));
	/* PEFT matches by suffix: "c_proj" is both attn.c_proj and mlp.c_proj. */
	edit_config(dir, "target_modules", "[\"c_attn\", \"c_proj\"]");
	SC_ASSERT_OK(sc_adapter_load(&got, dir, &cfg));
	assert_same_adapter(got, ad);
	sc_adapter_free(got);
	sc_adapter_free(ad);

	/* So a file with attn.c_proj alone lacks mlp.c_proj's tensors. */
	ad = random_adapter(QKV | APROJ, L, 5);
	SC_ASSERT_OK(sc_adapter_save(ad, dir, "gpt2"));
	edit_config(dir, "target_modules", "[\"c_attn\", \"c_proj\", \"q_proj\"]");
	SC_ASSERT_ERR(sc_adapter_load(&got, dir, &cfg), SC_EFORMAT);
	assert_detail_has("mlp.c_proj.lora_A");
	edit_config(dir, "target_modules", "[\"attn.c_proj\", \"c_attn\"]");
	SC_ASSERT_OK(sc_adapter_load(&got, dir, &cfg));
	assert_same_adapter(got, ad);
	sc_adapter_free(got);
	sc_adapter_free(ad);
}

static void test_load_targets_from_tensors(void **state)
{
	(void)state;
	const char *dir = tdir("regex");
	sc_adapter *ad = random_adapter(APROJ | FC, L, 6), *got;
	SC_ASSERT_OK(sc_adapter_save(ad, dir, NULL));
	edit_config(dir, "target_modules", "\".*\\\\.(c_proj|c_fc)\"");
	SC_ASSERT_OK(sc_adapter_load(&got, dir, &cfg));
	assert_same_adapter(got, ad);
	sc_adapter_free(got);
	edit_config(dir, "target_modules", NULL);
	SC_ASSERT_OK(sc_adapter_load(&got, dir, &cfg));
	assert_same_adapter(got, ad);
	sc_adapter_free(got);
	sc_adapter_free(ad);
}

static void test_load_adapter_name_kept(void **state)
{
	(void)state;
	const char *dir = tdir("named");
	sc_adapter *ad = random_adapter(QKV | FC, L, 7), *got;
	SC_ASSERT_OK(sc_adapter_save(ad, dir, NULL));
	write_tensors(dir, ad, &(struct variant){ ".default", -1, -1, NULL });
	SC_ASSERT_OK(sc_adapter_load(&got, dir, &cfg));
	assert_same_adapter(got, ad);
	sc_adapter_free(got);
	/* The same weight twice, with and without the name. */
	write_tensors(
	    dir, ad,
	    &(struct variant){ "", -1, -1,
			       "base_model.model.transformer.h.0.mlp.c_fc.lora_A.default.weight" });
	SC_ASSERT_ERR(sc_adapter_load(&got, dir, &cfg), SC_EFORMAT);
	assert_detail_has("same weight");
	sc_adapter_free(ad);
}

static void test_load_wrong_shape(void **state)
{
	(void)state;
	const char *dir = tdir("shape");
	sc_adapter *ad = random_adapter(QKV, L, 8), *got = (sc_adapter *)1;
	SC_ASSERT_OK(sc_adapter_save(ad, dir, NULL));
	write_tensors(dir, ad, &(struct variant){ "", -1, 3, NULL }); /* h.1 lora_B */
	SC_ASSERT_ERR(sc_adapter_load(&got, dir, &cfg), SC_EFORMAT);
	assert_null(got);
	assert_detail_has("h.1.attn.c_attn.lora_B.weight");
	/* A rank that disagrees with the tensors. */
	SC_ASSERT_OK(sc_adapter_save(ad, dir, NULL));
	edit_config(dir, "r", "2");
	SC_ASSERT_ERR(sc_adapter_load(&got, dir, &cfg), SC_EFORMAT);
	assert_detail_has("lora_A");
	sc_adapter_free(ad);
}

static void test_load_missing_tensor(void **state)
{
	(void)state;
	const char *dir = tdir("missing");
	sc_adapter *ad = random_adapter(QKV | MPROJ, L, 9), *got;
	SC_ASSERT_OK(sc_adapter_save(ad, dir, NULL));
	write_tensors(dir, ad, &(struct variant){ "", 4, -1, NULL }); /* h.1 c_attn A */
	SC_ASSERT_ERR(sc_adapter_load(&got, dir, &cfg), SC_EFORMAT);
	assert_detail_has("base_model.model.transformer.h.1.attn.c_attn.lora_A.weight");
	sc_adapter_free(ad);
}

static void test_load_not_lora(void **state)
{
	(void)state;
	const char *dir = tdir("ia3");
	sc_adapter *ad = random_adapter(QKV, L, 10), *got;
	SC_ASSERT_OK(sc_adapter_save(ad, dir, NULL));
	edit_config(dir, "peft_type", "\"IA3\"");
	SC_ASSERT_ERR(sc_adapter_load(&got, dir, &cfg), SC_ENOTSUP);
	assert_detail_has("IA3");
	assert_detail_has("adapter_config.json");
	edit_config(dir, "peft_type", NULL);
	SC_ASSERT_ERR(sc_adapter_load(&got, dir, &cfg), SC_EFORMAT);
	assert_detail_has("peft_type");
	sc_adapter_free(ad);
}

static void test_load_layers_beyond_model(void **state)
{
	(void)state;
	const char *dir = tdir("deep");
	sc_adapter *ad = random_adapter(QKV, L, 12), *got;
	SC_ASSERT_OK(sc_adapter_save(ad, dir, NULL));
	sc_model_config small = cfg;
	small.n_layer = L - 1;
	SC_ASSERT_ERR(sc_adapter_load(&got, dir, &small), SC_EFORMAT);
	assert_detail_has("layer 2");
	/* And a model deeper than the adapter misses layer 3's tensors. */
	sc_model_config deep = cfg;
	deep.n_layer = L + 1;
	SC_ASSERT_ERR(sc_adapter_load(&got, dir, &deep), SC_EFORMAT);
	assert_detail_has("h.3.attn.c_attn.lora_A");
	/* A model of another width. */
	sc_model_config wide = cfg;
	wide.n_embd = 2 * C;
	SC_ASSERT_ERR(sc_adapter_load(&got, dir, &wide), SC_EFORMAT);
	sc_adapter_free(ad);
}

static void test_load_unsupported_options(void **state)
{
	(void)state;
	static const struct {
		const char *key, *value;
		sc_err want;
	} cases[] = {
		{ "use_dora", "true", SC_ENOTSUP },
		{ "use_rslora", "true", SC_ENOTSUP },
		{ "rank_pattern", "{\"h.0.attn.c_attn\": 8}", SC_ENOTSUP },
		{ "alpha_pattern", "{\"h.0.attn.c_attn\": 8}", SC_ENOTSUP },
		{ "modules_to_save", "[\"lm_head\"]", SC_ENOTSUP },
		{ "layers_to_transform", "[0, 1]", SC_ENOTSUP },
		{ "bias", "\"lora_only\"", SC_ENOTSUP },
		{ "fan_in_fan_out", "false", SC_EFORMAT },
		{ "r", "0", SC_EFORMAT },
		{ "r", "2.5", SC_EFORMAT },
		{ "lora_alpha", "-1", SC_EFORMAT },
		{ "target_modules", "[\"lm_head\"]", SC_ENOTSUP },
		{ "target_modules", "[3]", SC_EFORMAT },
		{ "target_modules", "{}", SC_EFORMAT },
	};
	const char *dir = tdir("options");
	sc_adapter *ad = random_adapter(QKV, L, 13), *got;
	SC_ASSERT_OK(sc_adapter_save(ad, dir, NULL));
	const char *path = join(dir, "adapter_config.json");
	cJSON *orig = read_json(path);
	char *orig_text = cJSON_Print(orig);
	cJSON_Delete(orig);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(sc_test_write_file(path, orig_text, strlen(orig_text)), 0);
		edit_config(dir, cases[i].key, cases[i].value);
		sc_errf(SC_OK, "%s", "");
		sc_err rc = sc_adapter_load(&got, dir, &cfg);
		if (rc != cases[i].want)
			fail_msg("%s = %s: got %s (want %s): %s", cases[i].key, cases[i].value,
				 sc_err_name(rc), sc_err_name(cases[i].want), sc_err_detail());
		assert_detail_has(cases[i].key);
	}
	/* Empty patterns and null lists are PEFT's defaults. */
	assert_int_equal(sc_test_write_file(path, orig_text, strlen(orig_text)), 0);
	edit_config(dir, "layers_to_transform", "null");
	edit_config(dir, "modules_to_save", "[]");
	edit_config(dir, "use_dora", "false");
	edit_config(dir, "use_rslora", "false");
	SC_ASSERT_OK(sc_adapter_load(&got, dir, &cfg));
	sc_adapter_free(got);
	cJSON_free(orig_text);
	assert_int_equal(sc_test_write_file(path, "{\"peft_type\": ", 14), 0);
	SC_ASSERT_ERR(sc_adapter_load(&got, dir, &cfg), SC_EFORMAT);
	sc_adapter_free(ad);
}

static void test_load_unexpected_tensors(void **state)
{
	(void)state;
	const char *dir = tdir("extra");
	sc_adapter *ad = random_adapter(QKV, L, 14), *got;
	SC_ASSERT_OK(sc_adapter_save(ad, dir, NULL));
	write_tensors(dir, ad,
		      &(struct variant){ "", -1, -1, "base_model.model.lm_head.lora_A.weight" });
	SC_ASSERT_ERR(sc_adapter_load(&got, dir, &cfg), SC_ENOTSUP);
	assert_detail_has("lm_head");
	/* A target the config does not list. */
	write_tensors(dir, ad,
		      &(struct variant){
			  "", -1, -1, "base_model.model.transformer.h.0.mlp.c_fc.lora_A.weight" });
	SC_ASSERT_ERR(sc_adapter_load(&got, dir, &cfg), SC_EFORMAT);
	assert_detail_has("mlp.c_fc");
	sc_adapter_free(ad);
}

static void test_load_missing_files(void **state)
{
	(void)state;
	const char *dir = tdir("nofiles");
	sc_adapter *ad = random_adapter(QKV, L, 15), *got;
	SC_ASSERT_ERR(sc_adapter_load(&got, dir, &cfg), SC_ENOENT);
	assert_detail_has("adapter_config.json");
	SC_ASSERT_OK(sc_adapter_save(ad, dir, NULL));
	assert_int_equal(remove(join(dir, "adapter_model.safetensors")), 0);
	SC_ASSERT_ERR(sc_adapter_load(&got, dir, &cfg), SC_ENOENT);
	assert_detail_has("adapter_model.safetensors");
	sc_model_config bad;
	sc_gpt2_config(&bad, L, 3, C, 50, 16); /* C not divisible by the heads */
	SC_ASSERT_ERR(sc_adapter_load(&got, dir, &bad), SC_EFORMAT);
	assert_detail_has("divisible");
	sc_adapter_free(ad);
}

static void test_save_errors(void **state)
{
	(void)state;
	sc_adapter *ad = random_adapter(QKV, L, 16);
	const char *file = tdir("plain-file");
	assert_int_equal(sc_test_write_file(file, "x", 1), 0);
	SC_ASSERT_ERR(sc_adapter_save(ad, file, NULL), SC_EIO);
	assert_detail_has("plain-file");
	SC_ASSERT_ERR(sc_adapter_save(ad, tdir("no/such/parent"), NULL), SC_EIO);
	sc_adapter_free(ad);
}

static int group_setup(void **state)
{
	(void)state;
	sc_gpt2_config(&cfg, L, 2, C, 50, 16);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_new_layout),
		cmocka_unit_test(test_init),
		cmocka_unit_test(test_roundtrip_subset),
		cmocka_unit_test(test_roundtrip_all_targets),
		cmocka_unit_test(test_load_short_names),
		cmocka_unit_test(test_load_targets_from_tensors),
		cmocka_unit_test(test_load_adapter_name_kept),
		cmocka_unit_test(test_load_wrong_shape),
		cmocka_unit_test(test_load_missing_tensor),
		cmocka_unit_test(test_load_not_lora),
		cmocka_unit_test(test_load_layers_beyond_model),
		cmocka_unit_test(test_load_unsupported_options),
		cmocka_unit_test(test_load_unexpected_tensors),
		cmocka_unit_test(test_load_missing_files),
		cmocka_unit_test(test_save_errors),
	};
	return cmocka_run_group_tests(tests, group_setup, NULL);
}
