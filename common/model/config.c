/* config.c — a model's config.json: picks the family by model_type, lets it
 * read its own keys, checks what every family shares, and writes the file
 * back through the family. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_impl.h"
#include "sc_adapter.h"
#include "sc_family.h"
#include "sc_file.h"
#include "sc_quant.h"

#define MAX_CONFIG_BYTES (1 << 20)
#define MAX_VOCAB        (1 << 24)
#define MAX_EMBD         (1 << 16)
#define MAX_POSITIONS    (1 << 24)

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

sc_err sc_cfg_int(const cJSON *root, const char *const *keys, int *out)
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

sc_err sc_cfg_int_opt(const cJSON *root, const char *key, int dflt, int *out)
{
	const char *const keys[] = { key, NULL };
	const char *k;
	*out = dflt;
	if (!field(root, keys, &k))
		return SC_OK;
	return sc_cfg_int(root, keys, out);
}

sc_err sc_cfg_num_opt(const cJSON *root, const char *key, double dflt, double lo, double hi,
		      double *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
	*out = dflt;
	if (!v || cJSON_IsNull(v))
		return SC_OK;
	double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
	if (!(d > lo && d < hi))
		return sc_errf(SC_EFORMAT, "field %s must be a number in (%g, %g)", key, lo, hi);
	*out = d;
	return SC_OK;
}

sc_err sc_cfg_bool_opt(const cJSON *root, const char *key, int dflt, int *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
	*out = dflt;
	if (!v || cJSON_IsNull(v))
		return SC_OK;
	if (!cJSON_IsBool(v))
		return sc_errf(SC_EFORMAT, "field %s must be true or false", key);
	*out = !!cJSON_IsTrue(v);
	return SC_OK;
}

sc_err sc_cfg_bool_must(const cJSON *root, const char *key, int want, const char *why)
{
	int got;
	SC_TRY(sc_cfg_bool_opt(root, key, want, &got));
	if (got != want)
		return sc_errf(SC_ENOTSUP, "%s %s is not supported (%s)", key,
			       want ? "false" : "true", why);
	return SC_OK;
}

sc_err sc_cfg_str_one_of(const cJSON *root, const char *key, const char *const *allowed,
			 const char **out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
	char list[256] = "";
	*out = NULL;
	if (!v || cJSON_IsNull(v))
		return SC_OK;
	if (!cJSON_IsString(v))
		return sc_errf(SC_EFORMAT, "field %s must be a string", key);
	for (int i = 0; allowed[i]; i++) {
		if (!strcmp(v->valuestring, allowed[i])) {
			*out = v->valuestring;
			return SC_OK;
		}
		size_t n = strlen(list);
		snprintf(list + n, sizeof(list) - n, "%s%s", i ? ", " : "", allowed[i]);
	}
	return sc_errf(SC_ENOTSUP, "%s '%.64s' is not supported (supported: %s)", key,
		       v->valuestring, list);
}

double sc_cfg_short_float(float f)
{
	char buf[32];
	for (int p = 6; p <= 9; p++) {
		snprintf(buf, sizeof(buf), "%.*g", p, (double)f);
		if (strtof(buf, NULL) == f)
			break;
	}
	return strtod(buf, NULL);
}

/* quantization_config, as `splitchain quantize` writes it (sc_quant.h). */
static sc_err parse_quant(sc_model_config *c, const sc_family *fam, const cJSON *root)
{
	static const char *const method[] = { "splitchain", NULL };
	static const char *const formats[] = { "int8_channel", "nf4", "bf16", NULL };
	const char *layouts[] = { fam->fan_in_fan_out ? "in_out" : "out_in", NULL };
	const cJSON *q = cJSON_GetObjectItemCaseSensitive(root, "quantization_config");
	const char *m, *f, *layout;
	int block;
	if (!q || cJSON_IsNull(q))
		return SC_OK;
	if (!cJSON_IsObject(q))
		return sc_errf(SC_EFORMAT, "field quantization_config must be an object");
	SC_TRY(sc_cfg_str_one_of(q, "quant_method", method, &m));
	SC_TRY(sc_cfg_str_one_of(q, "format", formats, &f));
	SC_TRY(sc_cfg_str_one_of(q, "weight_layout", layouts, &layout));
	if (!m || !f)
		return sc_errf(SC_EFORMAT, "quantization_config lacks quant_method or format");
	c->quantized = 1;
	c->quant_format = !strcmp(f, "nf4")    ? SC_QUANT_NF4
			  : !strcmp(f, "bf16") ? SC_QUANT_BF16
					       : SC_QUANT_INT8;
	SC_TRY(sc_cfg_bool_opt(q, "double_quant", 0, &c->quant_double));
	SC_TRY(sc_cfg_int_opt(q, "block_size", SC_NF4_BLOCK, &block));
	if (c->quant_double && c->quant_format != SC_QUANT_NF4)
		return sc_errf(SC_EFORMAT, "quantization_config: double_quant is for nf4 only");
	if (c->quant_format == SC_QUANT_NF4 && block != SC_NF4_BLOCK)
		return sc_errf(SC_ENOTSUP, "quantization_config: nf4 block_size %d is not %d",
			       block, SC_NF4_BLOCK);
	return SC_OK;
}

/* quantization_config for c (as `splitchain quantize` writes it) into o. */
static int add_quant(cJSON *o, const sc_model_config *c)
{
	const sc_family *fam = sc_family_of(c);
	int nf4 = c->quant_format == SC_QUANT_NF4, bits = nf4 ? 4 : 8;
	if (c->quant_format == SC_QUANT_BF16)
		bits = 16;
	cJSON *q = cJSON_AddObjectToObject(o, "quantization_config"), *mods = NULL;
	int ok = q && cJSON_AddStringToObject(q, "quant_method", "splitchain") &&
		 cJSON_AddNumberToObject(q, "bits", bits) &&
		 cJSON_AddStringToObject(q, "format", sc_quant_format_name(c->quant_format)) &&
		 (!nf4 || cJSON_AddNumberToObject(q, "block_size", SC_NF4_BLOCK)) &&
		 cJSON_AddBoolToObject(q, "double_quant", c->quant_double) &&
		 (!c->quant_double ||
		  cJSON_AddNumberToObject(q, "double_quant_block_size", SC_NF4_DQ_BLOCK)) &&
		 cJSON_AddStringToObject(q, "weight_layout",
					 fam->fan_in_fan_out ? "in_out" : "out_in") &&
		 (mods = cJSON_AddArrayToObject(q, "modules"));
	for (int k = 0; ok && k < fam->n_targets; k++) {
		cJSON *s = cJSON_CreateString(fam->targets[k]);
		ok = s && cJSON_AddItemToArray(mods, s);
	}
	return ok;
}

static sc_err parse_root(sc_model_config *c, const cJSON *root)
{
	if (!cJSON_IsObject(root))
		return sc_errf(SC_EFORMAT, "config is not a JSON object");
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "model_type");
	if (!cJSON_IsString(v))
		return sc_errf(SC_EFORMAT, "missing field model_type (a string)");
	const sc_family *fam = sc_family_find(v->valuestring);
	if (!fam) {
		char list[128];
		sc_family_supported(list, sizeof(list));
		return sc_errf(SC_ENOTSUP, "model_type '%.64s' is not supported (supported: %s)",
			       v->valuestring, list);
	}
	memset(c, 0, sizeof(*c));
	snprintf(c->model_type, sizeof(c->model_type), "%s", v->valuestring);
	c->bos_token_id = c->eos_token_id = -1;
	SC_TRY(fam->parse_config(c, root));
	SC_TRY(parse_quant(c, fam, root));
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
	sc_model_config c;
	sc_err rc = parse_root(&c, root);
	cJSON_Delete(root);
	if (rc == SC_OK)
		*out = c;
	return rc;
}

int sc_config_equal(const sc_model_config *a, const sc_model_config *b)
{
#define SAME(f) (a->f == b->f)
	return !strcmp(a->model_type, b->model_type) && SAME(n_layer) && SAME(n_head) &&
	       SAME(n_kv_head) && SAME(head_dim) && SAME(n_embd) && SAME(n_inner) &&
	       SAME(vocab_size) && SAME(n_positions) && SAME(ln_eps) && SAME(tie_embeddings) &&
	       SAME(qkv_bias) && SAME(o_bias) && SAME(mlp_bias) && SAME(sliding_window) &&
	       SAME(rope_theta) && SAME(rope_scaling) && SAME(rope_factor) &&
	       SAME(rope_low_freq_factor) && SAME(rope_high_freq_factor) &&
	       SAME(rope_original_max_positions) && SAME(bos_token_id) && SAME(eos_token_id) &&
	       SAME(quantized) && SAME(quant_format) && SAME(quant_double) && SAME(compute_bf16) &&
	       !memcmp(a->layer_quant, b->layer_quant, sizeof(a->layer_quant));
#undef SAME
}

sc_err sc_config_validate(const sc_model_config *c)
{
	if (!c)
		return sc_errf(SC_EINVAL, "sc_config_validate: NULL config");
	const sc_family *fam = sc_family_of(c);
	if (!fam)
		return sc_errf(SC_ENOTSUP, "model_type '%s' is not supported", c->model_type);
	if (c->n_layer < 1 || c->n_head < 1 || c->n_embd < 1 || c->vocab_size < 1 ||
	    c->n_positions < 1)
		return sc_errf(SC_EFORMAT,
			       "n_layer %d, n_head %d, n_embd %d, vocab_size %d and n_positions %d "
			       "must all be >= 1",
			       c->n_layer, c->n_head, c->n_embd, c->vocab_size, c->n_positions);
	if (c->n_kv_head < 1 || c->n_head % c->n_kv_head != 0)
		return sc_errf(SC_EFORMAT,
			       "num_attention_heads %d is not divisible by num_key_value_heads %d",
			       c->n_head, c->n_kv_head);
	if (c->head_dim < 1 || c->n_inner < 1)
		return sc_errf(SC_EFORMAT, "head_dim %d and MLP width %d must be >= 1", c->head_dim,
			       c->n_inner);
	if (!(c->ln_eps > 0 && c->ln_eps < 1))
		return sc_errf(SC_EFORMAT, "norm epsilon %g must be in (0, 1)", (double)c->ln_eps);
	if (c->n_layer > SC_ADAPTER_MAX_LAYERS)
		return sc_errf(SC_ENOTSUP, "n_layer %d exceeds the supported maximum %d",
			       c->n_layer, SC_ADAPTER_MAX_LAYERS);
	if (c->vocab_size > MAX_VOCAB)
		return sc_errf(SC_ENOTSUP, "vocab_size %d exceeds the supported maximum %d",
			       c->vocab_size, MAX_VOCAB);
	if (c->n_embd > MAX_EMBD || (double)c->n_head * c->head_dim > MAX_EMBD ||
	    c->n_inner > 8 * MAX_EMBD)
		return sc_errf(SC_ENOTSUP,
			       "hidden size %d, %d heads of %d or MLP width %d exceed the "
			       "supported maximum",
			       c->n_embd, c->n_head, c->head_dim, c->n_inner);
	if (c->n_positions > MAX_POSITIONS)
		return sc_errf(SC_ENOTSUP, "n_positions %d exceeds the supported maximum %d",
			       c->n_positions, MAX_POSITIONS);
	if (c->sliding_window < 0)
		return sc_errf(SC_EFORMAT, "sliding_window %d must be >= 0", c->sliding_window);
	return fam->validate(c);
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

sc_err sc_config_save(const sc_model_config *cfg, const char *path)
{
	if (!cfg || !path)
		return sc_errf(SC_EINVAL, "sc_config_save: NULL argument");
	SC_TRY(sc_config_validate(cfg));
	cJSON *o = sc_family_of(cfg)->config_json(cfg);
	char *text = o && (!cfg->quantized || add_quant(o, cfg)) ? cJSON_Print(o) : NULL;
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

void sc_config_describe(const sc_model_config *c, char *buf, size_t size)
{
	if (c->n_kv_head != c->n_head)
		snprintf(buf, size,
			 "%s, %d layers, %d heads (%d key/value) of %d, %d channels, MLP %d, "
			 "vocabulary %d",
			 c->model_type, c->n_layer, c->n_head, c->n_kv_head, c->head_dim, c->n_embd,
			 c->n_inner, c->vocab_size);
	else
		snprintf(buf, size,
			 "%s, %d layers, %d heads of %d, %d channels, MLP %d, vocabulary %d",
			 c->model_type, c->n_layer, c->n_head, c->head_dim, c->n_embd, c->n_inner,
			 c->vocab_size);
}
