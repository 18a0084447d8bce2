/* config.c — the model architecture, read from and written as a Hugging Face
 * GPT-2 config.json. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "sc_adapter.h"
#include "sc_config.h"
#include "sc_file.h"

#define MAX_CONFIG_BYTES (1 << 20)
#define MAX_VOCAB        (1 << 24)
#define MAX_EMBD         (1 << 16)
#define MAX_POSITIONS    (1 << 20)

/* The first of keys present and not null, or NULL; *key names it (or the
 * first key when none is present). */
static const cJSON *field(const cJSON *root, const char *const *keys, const char **key)
{
	*key = keys[0];
	for (int i = 0; keys[i]; i++) {
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, keys[i]);
		if (v && !cJSON_IsNull(v)) {
			*key = keys[i];
			return v;
		}
	}
	return NULL;
}

/* Reads a required integer field, trying its aliases in order. */
static sc_err get_int(const cJSON *root, const char *const *keys, int *out)
{
	const char *key;
	const cJSON *v = field(root, keys, &key);
	if (!v)
		return sc_errf(SC_EFORMAT, "missing field %s", key);
	double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
	if (!(d >= -2147483648.0 && d <= 2147483647.0) || d != floor(d))
		return sc_errf(SC_EFORMAT, "field %s must be an integer", key);
	*out = (int)d;
	return SC_OK;
}

/* A boolean field that must be absent, null or equal to want. */
static sc_err check_bool(const cJSON *root, const char *key, int want, const char *why)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
	if (!v || cJSON_IsNull(v))
		return SC_OK;
	if (!cJSON_IsBool(v))
		return sc_errf(SC_EFORMAT, "field %s must be true or false", key);
	if (!!cJSON_IsTrue(v) != want)
		return sc_errf(SC_ENOTSUP, "%s %s is not supported (%s)", key,
			       want ? "false" : "true", why);
	return SC_OK;
}

static sc_err parse_root(sc_model_config *c, const cJSON *root)
{
	static const char *const k_layer[] = { "n_layer", "num_hidden_layers", NULL };
	static const char *const k_head[] = { "n_head", "num_attention_heads", NULL };
	static const char *const k_embd[] = { "n_embd", "hidden_size", NULL };
	static const char *const k_vocab[] = { "vocab_size", NULL };
	static const char *const k_pos[] = { "n_positions", "n_ctx", "max_position_embeddings",
					     NULL };
	if (!cJSON_IsObject(root))
		return sc_errf(SC_EFORMAT, "config is not a JSON object");
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "model_type");
	if (!cJSON_IsString(v))
		return sc_errf(SC_EFORMAT, "missing field model_type (a string)");
	if (strcmp(v->valuestring, "gpt2") != 0)
		return sc_errf(SC_ENOTSUP, "model_type '%.64s' is not supported (supported: gpt2)",
			       v->valuestring);
	SC_TRY(get_int(root, k_layer, &c->n_layer));
	SC_TRY(get_int(root, k_head, &c->n_head));
	SC_TRY(get_int(root, k_embd, &c->n_embd));
	SC_TRY(get_int(root, k_vocab, &c->vocab_size));
	SC_TRY(get_int(root, k_pos, &c->n_positions));

	c->ln_eps = 1e-5f;
	v = cJSON_GetObjectItemCaseSensitive(root, "layer_norm_epsilon");
	if (v && !cJSON_IsNull(v)) {
		double e = cJSON_IsNumber(v) ? v->valuedouble : NAN;
		if (!(e > 0 && e < 1))
			return sc_errf(SC_EFORMAT, "field layer_norm_epsilon must be in (0, 1)");
		c->ln_eps = (float)e;
	}
	v = cJSON_GetObjectItemCaseSensitive(root, "activation_function");
	if (v && !cJSON_IsNull(v)) {
		if (!cJSON_IsString(v))
			return sc_errf(SC_EFORMAT, "field activation_function must be a string");
		if (strcmp(v->valuestring, "gelu_new") != 0)
			return sc_errf(SC_ENOTSUP,
				       "activation_function '%.64s' is not supported (supported: "
				       "gelu_new)",
				       v->valuestring);
	}
	SC_TRY(check_bool(root, "tie_word_embeddings", 1,
			  "the output projection must be the token embedding"));
	SC_TRY(check_bool(root, "scale_attn_weights", 1, "attention is scaled by 1/sqrt(head)"));
	SC_TRY(check_bool(root, "scale_attn_by_inverse_layer_idx", 0,
			  "attention is scaled by 1/sqrt(head) only"));
	SC_TRY(check_bool(root, "add_cross_attention", 0, "decoder-only model"));
	v = cJSON_GetObjectItemCaseSensitive(root, "n_inner");
	if (v && !cJSON_IsNull(v)) {
		static const char *const k_inner[] = { "n_inner", NULL };
		int inner;
		SC_TRY(get_int(root, k_inner, &inner));
		if (inner != 4 * c->n_embd)
			return sc_errf(
			    SC_ENOTSUP,
			    "n_inner %d is not supported (the MLP width must be 4 * n_embd "
			    "= %d)",
			    inner, 4 * c->n_embd);
	}
	return sc_config_validate(c);
}

sc_err sc_config_parse(sc_model_config *out, const char *text, size_t len)
{
	if (!out || (!text && len))
		return sc_errf(SC_EINVAL, "sc_config_parse: NULL argument");
	const char *end = NULL;
	cJSON *root = cJSON_ParseWithLengthOpts(text ? text : "", len, &end, 0);
	if (!root)
		return sc_errf(SC_EFORMAT, "config is not valid JSON (error near byte %ld)",
			       end && text ? (long)(end - text) : 0L);
	sc_model_config c = { 0 };
	sc_err rc = parse_root(&c, root);
	cJSON_Delete(root);
	if (rc == SC_OK)
		*out = c;
	return rc;
}

sc_err sc_config_validate(const sc_model_config *c)
{
	if (!c)
		return sc_errf(SC_EINVAL, "sc_config_validate: NULL config");
	if (c->n_layer < 1 || c->n_head < 1 || c->n_embd < 1 || c->vocab_size < 1 ||
	    c->n_positions < 1)
		return sc_errf(SC_EFORMAT,
			       "n_layer %d, n_head %d, n_embd %d, vocab_size %d and n_positions %d "
			       "must all be >= 1",
			       c->n_layer, c->n_head, c->n_embd, c->vocab_size, c->n_positions);
	if (c->n_embd % c->n_head != 0)
		return sc_errf(SC_EFORMAT, "n_embd %d is not divisible by n_head %d", c->n_embd,
			       c->n_head);
	if (!(c->ln_eps > 0 && c->ln_eps < 1))
		return sc_errf(SC_EFORMAT, "layer_norm_epsilon %g must be in (0, 1)",
			       (double)c->ln_eps);
	if (c->n_layer > SC_ADAPTER_MAX_LAYERS)
		return sc_errf(SC_ENOTSUP, "n_layer %d exceeds the supported maximum %d",
			       c->n_layer, SC_ADAPTER_MAX_LAYERS);
	if (c->vocab_size > MAX_VOCAB)
		return sc_errf(SC_ENOTSUP, "vocab_size %d exceeds the supported maximum %d",
			       c->vocab_size, MAX_VOCAB);
	if (c->n_embd > MAX_EMBD)
		return sc_errf(SC_ENOTSUP, "n_embd %d exceeds the supported maximum %d", c->n_embd,
			       MAX_EMBD);
	if (c->n_positions > MAX_POSITIONS)
		return sc_errf(SC_ENOTSUP, "n_positions %d exceeds the supported maximum %d",
			       c->n_positions, MAX_POSITIONS);
	return SC_OK;
}

sc_err sc_config_load(sc_model_config *out, const char *path)
{
	char *text = NULL;
	size_t len = 0;
	if (!out || !path)
		return sc_errf(SC_EINVAL, "sc_config_load: NULL argument");
	SC_TRY(sc_file_read(path, MAX_CONFIG_BYTES, &text, &len));
	sc_err rc = sc_config_parse(out, text, len);
	free(text);
	if (rc != SC_OK)
		return sc_err_wrap(rc, "%s", path);
	return SC_OK;
}

/* The shortest decimal that reads back as f, as a double (so that 1e-5f is
 * written "1e-05", not "9.99999974737875e-06"). */
static double short_float(float f)
{
	char buf[32];
	for (int p = 6; p <= 9; p++) {
		snprintf(buf, sizeof(buf), "%.*g", p, (double)f);
		if (strtof(buf, NULL) == f)
			break;
	}
	return strtod(buf, NULL);
}

static cJSON *config_json(const sc_model_config *c)
{
	cJSON *o = cJSON_CreateObject(), *arch = cJSON_CreateArray();
	int ok = o && arch && cJSON_AddItemToArray(arch, cJSON_CreateString("GPT2LMHeadModel"));
	ok = ok && cJSON_AddStringToObject(o, "activation_function", "gelu_new");
	ok = ok && cJSON_AddItemToObject(o, "architectures", arch);
	if (!ok)
		cJSON_Delete(arch);
	ok = ok && cJSON_AddNumberToObject(o, "attn_pdrop", 0.0);
	ok = ok && cJSON_AddNumberToObject(o, "bos_token_id", c->vocab_size - 1);
	ok = ok && cJSON_AddNumberToObject(o, "embd_pdrop", 0.0);
	ok = ok && cJSON_AddNumberToObject(o, "eos_token_id", c->vocab_size - 1);
	ok = ok && cJSON_AddNumberToObject(o, "initializer_range", 0.02);
	ok = ok && cJSON_AddNumberToObject(o, "layer_norm_epsilon", short_float(c->ln_eps));
	ok = ok && cJSON_AddStringToObject(o, "model_type", "gpt2");
	ok = ok && cJSON_AddNumberToObject(o, "n_ctx", c->n_positions);
	ok = ok && cJSON_AddNumberToObject(o, "n_embd", c->n_embd);
	ok = ok && cJSON_AddNumberToObject(o, "n_head", c->n_head);
	ok = ok && cJSON_AddNullToObject(o, "n_inner");
	ok = ok && cJSON_AddNumberToObject(o, "n_layer", c->n_layer);
	ok = ok && cJSON_AddNumberToObject(o, "n_positions", c->n_positions);
	ok = ok && cJSON_AddFalseToObject(o, "reorder_and_upcast_attn");
	ok = ok && cJSON_AddNumberToObject(o, "resid_pdrop", 0.0);
	ok = ok && cJSON_AddFalseToObject(o, "scale_attn_by_inverse_layer_idx");
	ok = ok && cJSON_AddTrueToObject(o, "scale_attn_weights");
	ok = ok && cJSON_AddNullToObject(o, "summary_activation");
	ok = ok && cJSON_AddNumberToObject(o, "summary_first_dropout", 0.1);
	ok = ok && cJSON_AddTrueToObject(o, "summary_proj_to_labels");
	ok = ok && cJSON_AddStringToObject(o, "summary_type", "cls_index");
	ok = ok && cJSON_AddTrueToObject(o, "summary_use_proj");
	ok = ok && cJSON_AddTrueToObject(o, "tie_word_embeddings");
	ok = ok && cJSON_AddStringToObject(o, "torch_dtype", "float32");
	ok = ok && cJSON_AddTrueToObject(o, "use_cache");
	ok = ok && cJSON_AddNumberToObject(o, "vocab_size", c->vocab_size);
	if (!ok) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

sc_err sc_config_save(const sc_model_config *cfg, const char *path)
{
	if (!cfg || !path)
		return sc_errf(SC_EINVAL, "sc_config_save: NULL argument");
	SC_TRY(sc_config_validate(cfg));
	cJSON *o = config_json(cfg);
	char *text = o ? cJSON_Print(o) : NULL;
	cJSON_Delete(o);
	if (!text)
		return sc_errf(SC_ENOMEM, "%s: out of memory", path);
	sc_file_atomic *f = NULL;
	sc_err rc = sc_file_begin(&f, path);
	if (rc == SC_OK)
		rc = sc_file_put(f, text, strlen(text));
	if (rc == SC_OK)
		rc = sc_file_put(f, "\n", 1); /* cJSON_Print ends without one */
	if (rc == SC_OK)
		rc = sc_file_commit(f);
	else
		sc_file_abort(f);
	cJSON_free(text);
	return rc;
}
