/* adapter.c — a model's LoRA adapters in one allocation, and their files in
 * Hugging Face PEFT's layout (adapter_model.safetensors, adapter_config.json). */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "sc_adapter.h"
#include "sc_file.h"
#include "sc_quant.h"
#include "sc_safetensors.h"

#define MAX_JSON_BYTES (1 << 20)
#define MAX_EMBD       (1 << 16)
#define NAME_MAX_LEN   128

sc_err sc_adapter_new(sc_adapter **out, const sc_lora_config *lora, const sc_model_config *mc)
{
	if (!out || !lora || !mc)
		return sc_errf(SC_EINVAL, "sc_adapter_new: NULL argument");
	*out = NULL;
	SC_TRY(sc_config_validate(mc));
	SC_TRY(sc_lora_config_validate(lora, mc));
	const sc_family *fam = sc_family_of(mc);
	int n_layer = mc->n_layer, n_embd = mc->n_embd;
	if (n_layer > SC_ADAPTER_MAX_LAYERS || n_embd > MAX_EMBD)
		return sc_errf(SC_EINVAL, "adapter for %d layers of %d channels: out of range",
			       n_layer, n_embd);
	sc_adapter *ad = calloc(1, sizeof(*ad));
	size_t n = (size_t)n_layer * sc_lora_layer_floats(lora, mc);
	if (!ad || !(ad->data = calloc(n, sizeof(float)))) {
		free(ad);
		return sc_errf(SC_ENOMEM, "adapter of %zu floats: out of memory", n);
	}
	ad->lora = *lora;
	ad->mc = *mc;
	ad->n_layer = n_layer;
	ad->n_embd = n_embd;
	ad->n_floats = n;
	/* Layer by layer, so a segment's layers are one contiguous range. */
	float *p = ad->data;
	for (int l = 0; l < n_layer; l++)
		for (int t = 0; t < fam->n_targets; t++) {
			int in, dout, r = lora->rank;
			if (!(lora->targets & (1u << t)))
				continue;
			fam->target_dims(mc, t, &in, &dout);
			ad->a[l][t] = p;
			p += (size_t)r * (size_t)in;
			ad->b[l][t] = p;
			p += (size_t)dout * (size_t)r;
		}
	*out = ad;
	return SC_OK;
}

void sc_adapter_free(sc_adapter *ad)
{
	if (!ad)
		return;
	free(ad->data);
	free(ad);
}

void sc_adapter_init(sc_adapter *ad)
{
	for (int l = 0; l < ad->n_layer; l++)
		for (int t = 0; t < SC_LORA_MAX_TARGETS; t++) {
			int in, out, r = ad->lora.rank;
			if (!ad->a[l][t])
				continue;
			sc_lora_target_dims(&ad->mc, t, &in, &out);
			sc_lora_init_a(ad->a[l][t], ad->lora.seed, l, t, r, in);
			memset(ad->b[l][t], 0, (size_t)out * (size_t)r * sizeof(float));
		}
}

/* ---- files ---- */

/* The shortest decimal that reads back as f, as a double. */
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

static sc_err join(char *buf, size_t size, const char *dir, const char *file)
{
	if ((size_t)snprintf(buf, size, "%s/%s", dir, file) >= size)
		return sc_errf(SC_EINVAL, "%s: path too long", dir);
	return SC_OK;
}

void sc_adapter_peft_name(const sc_adapter *ad, int l, int t, int ab, char *buf, size_t size)
{
	snprintf(buf, size, "%s%d.%s.lora_%c.weight", sc_family_of(&ad->mc)->peft_prefix, l,
		 sc_lora_target_name(&ad->mc, t), ab ? 'B' : 'A');
}

static void tensor_name(const sc_adapter *ad, char *buf, int layer, int t, int ab)
{
	sc_adapter_peft_name(ad, layer, t, ab, buf, NAME_MAX_LEN);
}

/* adapter_config.json as PEFT 0.7 writes it for a LoRA adapter (keys sorted).
 * Only keys that PEFT 0.7's LoraConfig knows: it refuses any other (later
 * versions' use_rslora and use_dora included), while later versions read
 * these. */
static cJSON *peft_config(const sc_adapter *ad, const char *base_model)
{
	cJSON *o = cJSON_CreateObject(), *mods = cJSON_CreateArray();
	int ok = o && mods;
	for (int t = 0; ok && t < sc_family_of(&ad->mc)->n_targets; t++)
		if (ad->lora.targets & (1u << t))
			ok = cJSON_AddItemToArray(
			    mods, cJSON_CreateString(sc_lora_target_name(&ad->mc, t)));
	ok = ok && cJSON_AddObjectToObject(o, "alpha_pattern");
	ok = ok && cJSON_AddNullToObject(o, "auto_mapping");
	ok = ok && (base_model ? cJSON_AddStringToObject(o, "base_model_name_or_path", base_model)
			       : cJSON_AddNullToObject(o, "base_model_name_or_path"));
	ok = ok && cJSON_AddStringToObject(o, "bias", "none");
	ok = ok &&
	     (sc_family_of(&ad->mc)->fan_in_fan_out ? cJSON_AddTrueToObject(o, "fan_in_fan_out")
						    : cJSON_AddFalseToObject(o, "fan_in_fan_out"));
	ok = ok && cJSON_AddTrueToObject(o, "inference_mode");
	ok = ok && cJSON_AddTrueToObject(o, "init_lora_weights");
	ok = ok && cJSON_AddNullToObject(o, "layers_pattern");
	ok = ok && cJSON_AddNullToObject(o, "layers_to_transform");
	ok = ok && cJSON_AddObjectToObject(o, "loftq_config");
	ok = ok && cJSON_AddNumberToObject(o, "lora_alpha", short_float(ad->lora.alpha));
	ok = ok && cJSON_AddNumberToObject(o, "lora_dropout", 0.0);
	ok = ok && cJSON_AddNullToObject(o, "megatron_config");
	ok = ok && cJSON_AddStringToObject(o, "megatron_core", "megatron.core");
	ok = ok && cJSON_AddNullToObject(o, "modules_to_save");
	ok = ok && cJSON_AddStringToObject(o, "peft_type", "LORA");
	ok = ok && cJSON_AddNumberToObject(o, "r", ad->lora.rank);
	ok = ok && cJSON_AddObjectToObject(o, "rank_pattern");
	ok = ok && cJSON_AddNullToObject(o, "revision");
	ok = ok && cJSON_AddItemToObject(o, "target_modules", mods);
	if (!ok)
		cJSON_Delete(mods);
	ok = ok && cJSON_AddStringToObject(o, "task_type", "CAUSAL_LM");
	if (!ok) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

static sc_err save_config(const sc_adapter *ad, const char *path, const char *base_model)
{
	cJSON *o = peft_config(ad, base_model);
	char *text = o ? cJSON_Print(o) : NULL;
	cJSON_Delete(o);
	if (!text)
		return sc_errf(SC_ENOMEM, "%s: out of memory", path);
	sc_err rc = sc_file_write_atomic(path, text, strlen(text));
	cJSON_free(text);
	return rc;
}

static sc_err save_tensors(const sc_adapter *ad, const char *path)
{
	int n = 0, r = ad->lora.rank;
	sc_err rc = SC_OK;
	sc_st_writer *w = NULL;
	char(*names)[NAME_MAX_LEN] =
	    malloc((size_t)ad->n_layer * SC_LORA_MAX_TARGETS * 2 * NAME_MAX_LEN);
	if (!names)
		return sc_errf(SC_ENOMEM, "%s: out of memory", path);
	if ((rc = sc_st_writer_new(&w)) != SC_OK)
		goto done;
	for (int l = 0; l < ad->n_layer; l++)
		for (int t = 0; t < SC_LORA_MAX_TARGETS && !rc; t++) {
			int in, out;
			if (!ad->a[l][t])
				continue;
			sc_lora_target_dims(&ad->mc, t, &in, &out);
			int64_t sa[2] = { r, in }, sb[2] = { out, r };
			tensor_name(ad, names[n], l, t, 0);
			rc = sc_st_writer_add(w, names[n++], SC_F32, 2, sa, ad->a[l][t]);
			tensor_name(ad, names[n], l, t, 1);
			if (!rc)
				rc = sc_st_writer_add(w, names[n++], SC_F32, 2, sb, ad->b[l][t]);
		}
	if (!rc)
		rc = sc_st_writer_meta(w, "format", "pt");
	if (!rc && ad->mc.quantized) { /* the frozen base it was trained on */
		char base[32];
		snprintf(base, sizeof(base), "%s%s",
			 sc_quant_name((enum sc_quant_format)ad->mc.quant_format),
			 ad->mc.quant_double ? "+dq" : "");
		rc = sc_st_writer_meta(w, "splitchain_base", base);
	}
	if (!rc)
		rc = sc_st_writer_save(w, path);
done:
	sc_st_writer_free(w);
	free(names);
	return rc;
}

sc_err sc_adapter_save(const sc_adapter *ad, const char *dir, const char *base_model)
{
	char path[4096];
	if (!ad || !dir)
		return sc_errf(SC_EINVAL, "sc_adapter_save: NULL argument");
	SC_TRY(sc_file_mkdir(dir));
	SC_TRY(join(path, sizeof(path), dir, "adapter_model.safetensors"));
	SC_TRY(save_tensors(ad, path));
	SC_TRY(join(path, sizeof(path), dir, "adapter_config.json"));
	return save_config(ad, path, base_model);
}

/* The "splitchain_base" record of f, if any, into ad's trained_ fields. */
static sc_err read_base(sc_adapter *ad, const sc_st_file *f, const char *path)
{
	const char *b = sc_st_metadata(f, "splitchain_base");
	if (!b)
		return SC_OK;
	for (int k = 0; k < SC_QUANT_COUNT; k++) {
		const char *name = sc_quant_name((enum sc_quant_format)k);
		size_t n = strlen(name);
		if (strncmp(b, name, n))
			continue;
		int dq = !strcmp(b + n, "+dq");
		if (b[n] && !(dq && k == SC_QUANT_NF4))
			continue;
		ad->trained_quantized = 1;
		ad->trained_format = k;
		ad->trained_double = dq;
		return SC_OK;
	}
	return sc_errf(SC_EFORMAT,
		       "%s: metadata splitchain_base '%s' is not bf16, int8, nf4 or nf4+dq", path,
		       b);
}

/* What adapter_config.json says. */
struct peft_info {
	int rank;
	float alpha;
	unsigned listed; /* targets selected by target_modules */
	int has_list;    /* 0: targets come from the tensors present */
};

/* PEFT selects a module when a target_modules entry equals its full name or
 * is a suffix of it after a dot: "c_proj" selects attn.c_proj and mlp.c_proj. */
static unsigned match_targets(const sc_family *fam, const char *entry)
{
	unsigned mask = 0;
	size_t n = strlen(entry);
	for (int t = 0; t < fam->n_targets; t++) {
		const char *full = fam->targets[t];
		size_t m = strlen(full);
		if (strcmp(full, entry) == 0 ||
		    (n < m && full[m - n - 1] == '.' && strcmp(full + m - n, entry) == 0))
			mask |= 1u << t;
	}
	return mask;
}

/* A field that must be absent, null, or (when empty_ok) an empty object or
 * list, for this adapter to mean what we would compute. */
static sc_err check_unused(const cJSON *root, const char *key, const char *why)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
	if (!v || cJSON_IsNull(v) || cJSON_IsFalse(v) ||
	    ((cJSON_IsObject(v) || cJSON_IsArray(v)) && !v->child))
		return SC_OK;
	return sc_errf(SC_ENOTSUP, "%s is set, which is not supported (%s)", key, why);
}

static sc_err parse_number(const cJSON *root, const char *key, double dflt, double *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
	*out = dflt;
	if (!v || cJSON_IsNull(v))
		return SC_OK;
	if (!cJSON_IsNumber(v))
		return sc_errf(SC_EFORMAT, "field %s must be a number", key);
	*out = v->valuedouble;
	return SC_OK;
}

static sc_err parse_peft(struct peft_info *pi, const cJSON *root, const sc_family *fam)
{
	double r, alpha;
	if (!cJSON_IsObject(root))
		return sc_errf(SC_EFORMAT, "not a JSON object");
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "peft_type");
	if (!cJSON_IsString(v))
		return sc_errf(SC_EFORMAT, "missing field peft_type");
	if (strcmp(v->valuestring, "LORA") != 0)
		return sc_errf(SC_ENOTSUP, "peft_type '%.64s' is not supported (supported: LORA)",
			       v->valuestring);
	/* Absent fields take PEFT's defaults. */
	SC_TRY(parse_number(root, "r", 8, &r));
	if (!(r >= 1 && r <= 4096) || r != floor(r))
		return sc_errf(SC_EFORMAT, "r must be an integer in 1..4096");
	SC_TRY(parse_number(root, "lora_alpha", 8, &alpha));
	if (!(alpha > 0 && alpha < 1e30))
		return sc_errf(SC_EFORMAT, "lora_alpha must be a positive number");
	pi->rank = (int)r;
	pi->alpha = (float)alpha;
	SC_TRY(check_unused(root, "use_rslora", "the scale must be lora_alpha / r"));
	SC_TRY(check_unused(root, "use_dora", "DoRA adapters"));
	SC_TRY(check_unused(root, "rank_pattern", "one rank for every module"));
	SC_TRY(check_unused(root, "alpha_pattern", "one lora_alpha for every module"));
	SC_TRY(check_unused(root, "modules_to_save", "only LoRA weights are trained"));
	SC_TRY(check_unused(root, "layers_to_transform", "every layer is adapted"));
	v = cJSON_GetObjectItemCaseSensitive(root, "bias");
	if (v && !cJSON_IsNull(v) && !(cJSON_IsString(v) && !strcmp(v->valuestring, "none")))
		return sc_errf(SC_ENOTSUP, "bias other than \"none\" is not supported");
	v = cJSON_GetObjectItemCaseSensitive(root, "fan_in_fan_out");
	if (fam->fan_in_fan_out && cJSON_IsFalse(v))
		return sc_errf(SC_EFORMAT,
			       "fan_in_fan_out is false, but %s's projections are "
			       "Conv1D (PEFT saves true)",
			       fam->name);
	if (!fam->fan_in_fan_out && cJSON_IsTrue(v))
		return sc_errf(SC_EFORMAT,
			       "fan_in_fan_out is true, but %s's projections are "
			       "nn.Linear (PEFT saves false)",
			       fam->name);

	pi->listed = 0;
	pi->has_list = 0;
	v = cJSON_GetObjectItemCaseSensitive(root, "target_modules");
	if (cJSON_IsArray(v)) {
		const cJSON *e;
		pi->has_list = 1;
		cJSON_ArrayForEach(e, v)
		{
			if (!cJSON_IsString(e))
				return sc_errf(SC_EFORMAT,
					       "target_modules entries must be strings");
			pi->listed |= match_targets(fam, e->valuestring);
		}
		if (!pi->listed)
			return sc_errf(SC_ENOTSUP,
				       "target_modules selects none of %s's projections",
				       fam->name);
	} else if (v && !cJSON_IsNull(v) && !cJSON_IsString(v)) {
		/* A string is a regular expression: the tensors tell the targets. */
		return sc_errf(SC_EFORMAT, "target_modules must be a list or a string");
	}
	return SC_OK;
}

/* Splits a PEFT tensor name into layer, target and A (0) or B (1). Accepts
 * "...lora_A.weight" and "...lora_A.<adapter name>.weight". */
static int parse_name(const sc_family *fam, const char *name, int *layer, int *target, int *ab)
{
	const char *p = name;
	size_t plen = strlen(fam->peft_prefix);
	if (strncmp(p, fam->peft_prefix, plen) != 0)
		return -1;
	p += plen;
	int l = 0, digits = 0;
	for (; isdigit((unsigned char)*p); p++)
		if (++digits > 6)
			return -1;
		else
			l = 10 * l + (*p - '0');
	if (!digits || *p++ != '.')
		return -1;
	*target = -1;
	for (int t = 0; t < fam->n_targets && *target < 0; t++) {
		size_t n = strlen(fam->targets[t]);
		if (strncmp(p, fam->targets[t], n) == 0 && p[n] == '.') {
			*target = t;
			p += n + 1;
		}
	}
	if (*target < 0 || strncmp(p, "lora_", 5) != 0 || (p[5] != 'A' && p[5] != 'B'))
		return -1;
	*ab = p[5] == 'B';
	p += 6;
	if (*p == '.' && strcmp(p, ".weight") != 0) { /* an adapter name segment */
		size_t seg = strcspn(p + 1, ".");
		if (seg == 0)
			return -1;
		p += 1 + seg;
	}
	if (strcmp(p, ".weight") != 0)
		return -1;
	*layer = l;
	return 0;
}

/* Maps every tensor of f to idx[layer][target][ab]; *found = targets seen. */
static sc_err index_tensors(int (*idx)[SC_LORA_MAX_TARGETS][2], unsigned *found,
			    const sc_st_file *f, const char *path, const sc_family *fam,
			    int n_layer)
{
	*found = 0;
	for (int i = 0; i < sc_st_count(f); i++) {
		const char *name = sc_st_at(f, i)->name;
		int l, t, ab;
		if (parse_name(fam, name, &l, &t, &ab) != 0)
			return sc_errf(SC_ENOTSUP,
				       "%s: tensor '%s' is not a LoRA A or B weight of a %s "
				       "projection (%s<i>.<target>.lora_<A|B>.weight)",
				       path, name, fam->name, fam->peft_prefix);
		if (l >= n_layer)
			return sc_errf(
			    SC_EFORMAT,
			    "%s: tensor '%s' is for layer %d, but the model has %d layers", path,
			    name, l, n_layer);
		if (idx[l][t][ab] >= 0)
			return sc_errf(SC_EFORMAT, "%s: tensors '%s' and '%s' are the same weight",
				       path, sc_st_at(f, idx[l][t][ab])->name, name);
		idx[l][t][ab] = i;
		*found |= 1u << t;
	}
	return SC_OK;
}

/* Copies every expected tensor of f into ad, checking presence and shape. */
static sc_err load_tensors(sc_adapter *ad, int (*idx)[SC_LORA_MAX_TARGETS][2], const sc_st_file *f,
			   const char *path)
{
	int r = ad->lora.rank;
	for (int l = 0; l < ad->n_layer; l++)
		for (int t = 0; t < SC_LORA_MAX_TARGETS; t++)
			for (int ab = 0; ab < 2 && ad->a[l][t]; ab++) {
				int in, out;
				sc_lora_target_dims(&ad->mc, t, &in, &out);
				int64_t shape[2] = { ab ? out : r, ab ? r : in };
				float *dst = ab ? ad->b[l][t] : ad->a[l][t];
				if (idx[l][t][ab] < 0) {
					char name[NAME_MAX_LEN];
					tensor_name(ad, name, l, t, ab);
					return sc_errf(SC_EFORMAT, "%s: missing tensor '%s'", path,
						       name);
				}
				const sc_st_tensor *st = sc_st_at(f, idx[l][t][ab]);
				sc_err rc = sc_st_expect_shape(st, 2, shape);
				if (!rc)
					rc = sc_st_read_f32(dst, st, (size_t)shape[0] * shape[1]);
				if (rc)
					return sc_err_wrap(rc, "%s", path);
			}
	return SC_OK;
}

static sc_err read_peft(struct peft_info *pi, const char *path, const sc_family *fam)
{
	char *text = NULL;
	size_t len = 0;
	SC_TRY(sc_file_read(path, MAX_JSON_BYTES, &text, &len));
	cJSON *root = cJSON_ParseWithLength(text, len);
	free(text);
	if (!root)
		return sc_errf(SC_EFORMAT, "%s: not valid JSON", path);
	sc_err rc = parse_peft(pi, root, fam);
	cJSON_Delete(root);
	return rc ? sc_err_wrap(rc, "%s", path) : SC_OK;
}

sc_err sc_adapter_load(sc_adapter **out, const char *dir, const sc_model_config *cfg)
{
	char cpath[4096], tpath[4096];
	struct peft_info pi = { 0 };
	sc_st_file *f = NULL;
	sc_adapter *ad = NULL;
	int(*idx)[SC_LORA_MAX_TARGETS][2] = NULL;
	unsigned found;
	sc_err rc;
	if (!out || !dir || !cfg)
		return sc_errf(SC_EINVAL, "sc_adapter_load: NULL argument");
	*out = NULL;
	SC_TRY(sc_config_validate(cfg));
	SC_TRY(join(cpath, sizeof(cpath), dir, "adapter_config.json"));
	SC_TRY(join(tpath, sizeof(tpath), dir, "adapter_model.safetensors"));
	const sc_family *fam = sc_family_of(cfg);
	SC_TRY(read_peft(&pi, cpath, fam));
	if ((rc = sc_st_open(&f, tpath)) != SC_OK) {
		if (rc == SC_ENOENT)
			sc_err_wrap(rc, "no adapter_model.safetensors (older PEFT versions' "
					"adapter_model.bin is not read)");
		return rc;
	}
	idx = malloc((size_t)cfg->n_layer * sizeof(*idx));
	if (!idx) {
		rc = sc_errf(SC_ENOMEM, "%s: out of memory", tpath);
		goto fail;
	}
	memset(idx, 0xff, (size_t)cfg->n_layer * sizeof(*idx)); /* all -1 */
	if ((rc = index_tensors(idx, &found, f, tpath, fam, cfg->n_layer)) != SC_OK)
		goto fail;
	if (pi.has_list && (found & ~pi.listed)) {
		int t = __builtin_ctz(found & ~pi.listed);
		rc = sc_errf(SC_EFORMAT,
			     "%s: has tensors for %s, which target_modules in %s "
			     "does not select",
			     tpath, sc_lora_target_name(cfg, t), cpath);
		goto fail;
	}
	sc_lora_config lc = { .rank = pi.rank,
			      .alpha = pi.alpha,
			      .targets = pi.has_list ? pi.listed : found };
	if (!lc.targets) {
		rc = sc_errf(SC_EFORMAT, "%s: no LoRA tensors", tpath);
		goto fail;
	}
	if ((rc = sc_adapter_new(&ad, &lc, cfg)) != SC_OK ||
	    (rc = load_tensors(ad, idx, f, tpath)) != SC_OK || (rc = read_base(ad, f, tpath)))
		goto fail;
	sc_st_close(f);
	free(idx);
	*out = ad;
	return SC_OK;
fail:
	sc_st_close(f);
	free(idx);
	sc_adapter_free(ad);
	return rc;
}
