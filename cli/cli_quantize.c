/* cli_quantize.c — `splitchain quantize`: a model's frozen projection weights
 * to int8, NF4 or bf16 (formats in common/format/sc_quant.h), everything
 * else copied as it is. */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "sc_family.h"
#include "sc_file.h"
#include "sc_quant.h"
#include "sc_rng.h"
#include "sc_weights.h"

static const char quantize_help[] =
    "usage: splitchain quantize --model DIR --to int8|nf4|bf16 [--double-quant] --out DIR\n"
    "                           [--error N]\n"
    "       splitchain quantize --model QDIR --to f32 --out DIR\n"
    "\n"
    "Quantizes the frozen attention and MLP projection weights of the model in DIR\n"
    "(the projections LoRA adapts: GPT-2 attn.c_attn, attn.c_proj, mlp.c_fc,\n"
    "mlp.c_proj; Llama family q/k/v/o_proj, gate/up/down_proj). The token embedding,\n"
    "learned positions, norms, biases, the LM head and any other tensor are copied\n"
    "unchanged (F32, F16 or BF16 as they are; a job on a bf16 base rounds the token\n"
    "embedding and LM head to bf16 as it loads them). Writes OUT/model.safetensors (one\n"
    "file, also from a sharded model), OUT/config.json (the model's, plus a\n"
    "\"quantization_config\") and copies the tokenizer files. For projection P:\n"
    "P.qweight, P.scales (int8, nf4), or P.scales_q, P.scales_scale,\n"
    "P.scales_offset (nf4 --double-quant); nf4 also P.shape; bf16 keeps P.weight,\n"
    "as BF16 (a Hugging Face checkpoint stored in bfloat16 already is one: a job\n"
    "runs it with --precision bf16, no quantize needed). Exact formats:\n"
    "common/format/sc_quant.h. --to f32 turns a quantized model back into float32\n"
    "weights (the dequantized values; the other tensors and files copied as above).\n"
    "finetune, submit and generate read the output directory as they read any model:\n"
    "its base runs in the recorded format (--base-quant none, or the same format).\n"
    "\n"
    "options:\n"
    "  --model DIR       the model (config.json + safetensors)              (required)\n"
    "  --to int8         int8, one float32 scale per output channel (~1 byte/weight)\n"
    "  --to nf4          4-bit NormalFloat (QLoRA), one float32 absmax per block of\n"
    "                    64 weights (0.5625 bytes/weight)\n"
    "  --to bf16         bfloat16, rounded to nearest even (2 bytes/weight); the\n"
    "                    job's frozen GEMMs (the LM head's too) then take bf16\n"
    "                    inputs with fp32 accumulation\n"
    "  --to f32          dequantize a model quantized by this command\n"
    "  --double-quant    nf4: the block absmax in int8 too, one float32 scale per 256\n"
    "                    blocks and one offset (~0.516 bytes/weight)\n"
    "  --out DIR         output directory, created if missing, not DIR     (required)\n"
    "  --error N         also measure each projection's relative output error\n"
    "                    ||W x - W' x|| / ||W x|| on N random normal inputs x\n";

/* Files copied beside the weights when the model has them. */
static const char *const side_files[] = { "tokenizer.json",
					  "tokenizer_config.json",
					  "special_tokens_map.json",
					  "vocab.json",
					  "merges.txt",
					  "tokenizer.model",
					  "added_tokens.json",
					  "generation_config.json",
					  NULL };

enum { PART_QWEIGHT, PART_SCALES, PART_SCALES_Q, PART_SCALE, PART_OFFSET, PART_SHAPE, N_PARTS };
static const char *const part_suffix[N_PARTS] = { "qweight",      "scales",        "scales_q",
						  "scales_scale", "scales_offset", "shape" };

/* One projection weight being quantized (or dequantized: then out.scales
 * holds the float32 weight and names[PART_QWEIGHT] its name). The writer
 * borrows names and parts until it has saved. */
typedef struct qmod {
	const sc_st_tensor *t; /* the input weight (or qweight), borrowed from the sc_weights */
	sc_quant_spec spec;
	sc_quant_sizes z;
	sc_quant_out out; /* one allocation, at out.scales */
	int64_t shape[2];
	char names[N_PARTS][256];
	double rel; /* relative output error, with --error */
} qmod;

typedef struct job {
	const char *cmd, *model, *out;
	enum sc_quant_format fmt;
	int dq, error_rows, dequant; /* dequant: --to f32 */
	sc_model_config cfg;
	const sc_family *fam;
	cJSON *config, *index;
	sc_weights *w;
	sc_st_file *single; /* model.safetensors opened again to list its tensors */
	qmod *mods;         /* cap_mods entries, n_mods used */
	int n_mods, cap_mods;
	sc_st_writer *wr;
	size_t in_bytes, out_bytes;          /* tensor data in and out */
	size_t n_quant, q_in_bytes, q_bytes; /* the projections: weights, bytes in and out */
} job;

/* Reads DIR/config.json: the raw JSON (kept, to be written back with
 * quantization_config) and the parsed config. */
static sc_err read_config(job *j)
{
	char path[PATH_MAX], *text = NULL;
	size_t len;
	snprintf(path, sizeof(path), "%s/config.json", j->model);
	SC_TRY(sc_file_read(path, 1 << 24, &text, &len));
	sc_err rc = sc_config_parse(&j->cfg, text, len);
	if (rc)
		sc_err_wrap(rc, "%s", path);
	if (!rc && !(j->config = cJSON_ParseWithLength(text, len)))
		rc = sc_errf(SC_EFORMAT, "%s: not JSON", path);
	free(text);
	if (rc)
		return rc;
	j->fam = sc_family_of(&j->cfg);
	const cJSON *q = cJSON_GetObjectItemCaseSensitive(j->config, "quantization_config");
	if (q && !j->dequant)
		return sc_errf(SC_EINVAL,
			       "%s: the model is already quantized (it has a "
			       "quantization_config)",
			       path);
	if (!j->dequant)
		return SC_OK;
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(q, "quant_method");
	const cJSON *f = cJSON_GetObjectItemCaseSensitive(q, "format");
	const cJSON *d = cJSON_GetObjectItemCaseSensitive(q, "double_quant");
	int fmt = -1;
	for (int k = 0; cJSON_IsString(f) && k < SC_QUANT_COUNT; k++)
		fmt = strcmp(f->valuestring, sc_quant_format_name(k)) ? fmt : k;
	if (!cJSON_IsString(m) || strcmp(m->valuestring, "splitchain") || fmt < 0 ||
	    !cJSON_IsBool(d))
		return sc_errf(SC_EINVAL,
			       "%s: not a model quantized by splitchain quantize (no "
			       "quantization_config with quant_method \"splitchain\", "
			       "a known format and double_quant)",
			       path);
	j->fmt = (enum sc_quant_format)fmt;
	j->dq = cJSON_IsTrue(d);
	cJSON_DeleteItemFromObjectCaseSensitive(j->config, "quantization_config");
	return SC_OK;
}

/* The names of every tensor of the model: *names[0..*n), borrowed from
 * j->single or j->index. */
static sc_err list_tensors(job *j, const char ***names, int *n)
{
	char path[PATH_MAX], *text = NULL;
	size_t len;
	*names = NULL;
	*n = 0;
	if (!sc_weights_sharded(j->w)) {
		snprintf(path, sizeof(path), "%s/%s", j->model, SC_WEIGHTS_SINGLE);
		SC_TRY(sc_st_open(&j->single, path));
		*n = sc_st_count(j->single);
		if (!(*names = malloc((size_t)(*n ? *n : 1) * sizeof(**names))))
			return sc_errf(SC_ENOMEM, "out of memory");
		for (int i = 0; i < *n; i++)
			(*names)[i] = sc_st_at(j->single, i)->name;
		return SC_OK;
	}
	snprintf(path, sizeof(path), "%s/%s", j->model, SC_WEIGHTS_INDEX);
	SC_TRY(sc_file_read(path, 1 << 26, &text, &len));
	j->index = cJSON_ParseWithLength(text, len);
	free(text);
	const cJSON *map = cJSON_GetObjectItemCaseSensitive(j->index, "weight_map"), *it;
	*n = cJSON_GetArraySize(map); /* sc_weights_open checked it */
	if (!(*names = malloc((size_t)(*n ? *n : 1) * sizeof(**names))))
		return sc_errf(SC_ENOMEM, "out of memory");
	*n = 0;
	cJSON_ArrayForEach(it, map)
	{
		(*names)[(*n)++] = it->string;
	}
	return SC_OK;
}

/* 1 when layer tensor name is the weight of one of the family's
 * projections ("<...>.<target>.weight"). */
static int is_projection(const sc_family *fam, const char *name)
{
	char suffix[128];
	size_t n = strlen(name);
	for (int k = 0; k < fam->n_targets; k++) {
		size_t m = (size_t)snprintf(suffix, sizeof(suffix), ".%s.weight", fam->targets[k]);
		if (n > m && !strcmp(name + n - m, suffix))
			return 1;
	}
	return 0;
}

/* Finds every projection weight of the model (under the family's file
 * prefixes) and sizes its parts. */
static sc_err find_projections(job *j)
{
	sc_param_desc lp[SC_FAMILY_MAX_PARAMS];
	char full[256];
	j->cap_mods = j->cfg.n_layer * j->fam->n_layer_params;
	if (!(j->mods = calloc((size_t)j->cap_mods, sizeof(*j->mods))))
		return sc_errf(SC_ENOMEM, "out of memory");
	for (int l = 0; l < j->cfg.n_layer; l++) {
		j->fam->layer_params(&j->cfg, l, lp);
		for (int p = 0; p < j->fam->n_layer_params; p++) {
			if (lp[p].ndim != 2 || !is_projection(j->fam, lp[p].name))
				continue;
			qmod *m = &j->mods[j->n_mods++];
			for (int i = 0; j->fam->file_prefixes[i] && !m->t; i++) {
				snprintf(full, sizeof(full), "%s%s", j->fam->file_prefixes[i],
					 lp[p].name);
				SC_TRY(sc_weights_find(j->w, full, &m->t));
			}
			if (!m->t)
				return sc_errf(SC_EFORMAT, "model weights lack tensor '%s%s'",
					       j->fam->file_prefixes[0], lp[p].name);
			SC_TRY(sc_st_expect_shape(m->t, 2, lp[p].shape));
			m->shape[0] = lp[p].shape[0];
			m->shape[1] = lp[p].shape[1];
			m->spec = (sc_quant_spec){ .format = j->fmt,
						   .rows = (size_t)m->shape[0],
						   .cols = (size_t)m->shape[1],
						   .row_major_out = !j->fam->fan_in_fan_out,
						   .double_quant = j->dq };
			SC_TRY(sc_quant_size(&m->spec, &m->z));
			size_t module_len = strlen(m->t->name) - strlen(".weight");
			for (int k = 0; k < N_PARTS; k++)
				snprintf(m->names[k], sizeof(m->names[k]), "%.*s.%s",
					 (int)module_len, m->t->name, part_suffix[k]);
		}
	}
	return SC_OK;
}

/* Quantizes m (its parts in one allocation) and adds them to the writer. */
static sc_err quantize_one(job *j, qmod *m)
{
	const sc_quant_sizes *z = &m->z;
	size_t n = m->spec.rows * m->spec.cols;
	size_t nf = z->scales + z->scales_scale + z->scales_offset;
	float *w = malloc(n * sizeof(float)), *x = NULL;
	sc_err rc = SC_OK;
	if (!w || !(m->out.scales = malloc(nf * sizeof(float) + z->qweight + z->scales_q))) {
		rc = sc_errf(SC_ENOMEM, "%s: out of memory", m->t->name);
		goto done;
	}
	m->out.scales_scale = m->out.scales + z->scales;
	m->out.scales_offset = m->out.scales_scale + z->scales_scale;
	m->out.qweight = (uint8_t *)(m->out.scales + nf);
	m->out.scales_q = m->out.qweight + z->qweight;
	if ((rc = sc_st_read_f32(w, m->t, n)) || (rc = sc_quant_quantize(&m->spec, w, &m->out))) {
		sc_err_wrap(rc, "%s", m->t->name);
		goto done;
	}
	sc_quant_view v = { m->out.qweight, m->out.scales, m->out.scales_q, m->out.scales_scale,
			    m->out.scales_offset };
	if (j->error_rows) {
		size_t in = m->spec.row_major_out ? m->spec.cols : m->spec.rows;
		uint64_t key[2] = { 0x51554e54u, (uint64_t)(m - j->mods) }; /* "QUNT", module */
		sc_rng r;
		if (!(x = malloc((size_t)j->error_rows * in * sizeof(float)))) {
			rc = sc_errf(SC_ENOMEM, "%s: out of memory", m->t->name);
			goto done;
		}
		sc_rng_seed(&r, key, 2);
		for (size_t i = 0; i < (size_t)j->error_rows * in; i++)
			x[i] = sc_rng_normal(&r);
		if ((rc = sc_quant_rel_error(&m->spec, w, &v, x, (size_t)j->error_rows, &m->rel)))
			goto done;
	}
	if (m->spec.format == SC_QUANT_BF16) { /* P.weight itself, BF16 */
		if ((rc =
			 sc_st_writer_add(j->wr, m->t->name, SC_BF16, 2, m->shape, m->out.qweight)))
			goto done;
		j->out_bytes += z->qweight;
		j->q_bytes += z->qweight;
		j->q_in_bytes += m->t->nbytes;
		j->n_quant += n;
		goto done;
	}
	const int64_t qshape1[1] = { (int64_t)z->qweight }, one[1] = { 1 };
	const int64_t ns[1] = { (int64_t)z->scales }, nq[1] = { (int64_t)z->scales_q };
	const int64_t ng[1] = { (int64_t)z->scales_scale }, two[1] = { 2 };
	int nf4 = m->spec.format == SC_QUANT_NF4;
	if ((rc = sc_st_writer_add(j->wr, m->names[PART_QWEIGHT], SC_U8, nf4 ? 1 : 2,
				   nf4 ? qshape1 : m->shape, m->out.qweight)) ||
	    (z->scales &&
	     (rc = sc_st_writer_add(j->wr, m->names[PART_SCALES], SC_F32, 1, ns, m->out.scales))) ||
	    (z->scales_q && ((rc = sc_st_writer_add(j->wr, m->names[PART_SCALES_Q], SC_U8, 1, nq,
						    m->out.scales_q)) ||
			     (rc = sc_st_writer_add(j->wr, m->names[PART_SCALE], SC_F32, 1, ng,
						    m->out.scales_scale)) ||
			     (rc = sc_st_writer_add(j->wr, m->names[PART_OFFSET], SC_F32, 1, one,
						    m->out.scales_offset)))) ||
	    (nf4 && (rc = sc_st_writer_add(j->wr, m->names[PART_SHAPE], SC_I64, 1, two, m->shape))))
		goto done;
	size_t bytes = z->qweight + z->scales_q + nf * sizeof(float) + (nf4 ? 16 : 0);
	j->out_bytes += bytes;
	j->q_bytes += bytes;
	j->q_in_bytes += m->t->nbytes;
	j->n_quant += n;
done:
	free(w);
	free(x);
	return rc;
}

/* Checks quantized part k of m: dtype and element count; floats aligned. */
static sc_err check_part(const qmod *m, int k, const sc_st_tensor *t, size_t want)
{
	static const enum sc_dtype dt[N_PARTS] = { SC_U8, SC_F32, SC_U8, SC_F32, SC_F32, SC_I64 };
	if (!want && t)
		return sc_errf(SC_EFORMAT, "tensor '%s' does not belong to this format", t->name);
	if (!want)
		return SC_OK;
	if (!t)
		return sc_errf(SC_EFORMAT, "model weights lack tensor '%s'", m->names[k]);
	if (t->dtype != dt[k] || t->nbytes != want * sc_dtype_size(dt[k]) ||
	    (uintptr_t)t->data % sc_dtype_size(dt[k]))
		return sc_errf(SC_EFORMAT, "tensor '%s' is not %zu aligned %s values", t->name,
			       want, sc_dtype_name(dt[k]));
	return SC_OK;
}

/* Dequantizes the module whose qweight is qw into m and adds its weight. */
static sc_err dequantize_one(job *j, qmod *m, const sc_st_tensor *qw)
{
	const sc_st_tensor *p[N_PARTS] = { qw };
	int64_t shape[2] = { qw->ndim == 2 ? qw->shape[0] : 0, qw->ndim == 2 ? qw->shape[1] : 0 };
	int ml = (int)(strlen(qw->name) - strlen(".qweight")), nf4 = j->fmt == SC_QUANT_NF4;
	for (int k = 0; k < N_PARTS; k++) {
		snprintf(m->names[k], sizeof(m->names[k]), "%.*s.%s", ml, qw->name, part_suffix[k]);
		SC_TRY(sc_weights_find(j->w, m->names[k], &p[k]));
	}
	SC_TRY(check_part(m, PART_SHAPE, p[PART_SHAPE], nf4 ? 2 : 0));
	if (nf4)
		memcpy(shape, p[PART_SHAPE]->data, sizeof(shape));
	if (shape[0] < 1 || shape[1] < 1 || (!nf4 && qw->ndim != 2))
		return sc_errf(SC_EFORMAT, "%.*s: no valid (rows, cols) shape", ml, qw->name);
	m->t = qw;
	m->spec = (sc_quant_spec){ j->fmt, (size_t)shape[0], (size_t)shape[1],
				   !j->fam->fan_in_fan_out, j->dq };
	SC_TRY(sc_quant_size(&m->spec, &m->z));
	const size_t want[PART_SHAPE] = { m->z.qweight, m->z.scales, m->z.scales_q,
					  m->z.scales_scale, m->z.scales_offset };
	for (int k = 0; k < PART_SHAPE; k++)
		SC_TRY(check_part(m, k, p[k], want[k]));
	const void *d[PART_SHAPE] = { 0 };
	for (int k = 0; k < PART_SHAPE; k++)
		d[k] = p[k] ? p[k]->data : NULL;
	sc_quant_view v = { d[0], d[1], d[2], d[3], d[4] };
	size_t n = m->spec.rows * m->spec.cols;
	if (sc_quant_check(&m->spec, &v))
		return sc_err_wrap(SC_EFORMAT, "%.*s", ml, qw->name);
	if (!(m->out.scales = malloc(n * sizeof(float))))
		return sc_errf(SC_ENOMEM, "%s: out of memory", qw->name);
	SC_TRY(sc_quant_dequantize(&m->spec, &v, m->out.scales));
	snprintf(m->names[PART_QWEIGHT], sizeof(m->names[0]), "%.*s.weight", ml, qw->name);
	m->shape[0] = shape[0];
	m->shape[1] = shape[1];
	j->n_mods++;
	j->n_quant += n;
	j->out_bytes += n * sizeof(float);
	return sc_st_writer_add(j->wr, m->names[PART_QWEIGHT], SC_F32, 2, m->shape, m->out.scales);
}

/* Dequantizing a bf16 model: its projection m, BF16 under its own name,
 * widened (exactly) to F32. */
static sc_err widen_one(job *j, qmod *m)
{
	size_t n = m->spec.rows * m->spec.cols;
	if (m->t->dtype != SC_BF16)
		return sc_errf(SC_EFORMAT, "'%s' is %s; a bf16 model's projections are BF16",
			       m->t->name, sc_dtype_name(m->t->dtype));
	if (!(m->out.scales = malloc(n * sizeof(float))))
		return sc_errf(SC_ENOMEM, "%s: out of memory", m->t->name);
	SC_TRY(sc_st_read_f32(m->out.scales, m->t, n));
	j->n_quant += n;
	j->out_bytes += n * sizeof(float);
	return sc_st_writer_add(j->wr, m->t->name, SC_F32, 2, m->shape, m->out.scales);
}

/* 1 when t is a part of a quantized module other than its qweight. */
static sc_err is_other_part(job *j, const char *name, int *yes)
{
	const char *dot = strrchr(name, '.');
	char q[300];
	const sc_st_tensor *t = NULL;
	*yes = 0;
	for (int k = PART_SCALES; dot && k < N_PARTS; k++)
		if (!strcmp(dot + 1, part_suffix[k])) {
			snprintf(q, sizeof(q), "%.*s.qweight", (int)(dot - name), name);
			SC_TRY(sc_weights_find(j->w, q, &t));
			*yes = t != NULL;
		}
	return SC_OK;
}

/* Every tensor of the model into the writer: projections quantized (or,
 * dequantizing, quantized modules turned back into weights), the rest
 * borrowed from the mapping as it is. */
static sc_err convert(job *j)
{
	const char **names = NULL;
	int n = 0, bf16 = j->fmt == SC_QUANT_BF16; /* its modules are found up front */
	sc_err rc;
	if ((rc = list_tensors(j, &names, &n)))
		goto done;
	if (j->dequant && !bf16 && !(j->mods = calloc((size_t)(n ? n : 1), sizeof(*j->mods)))) {
		rc = sc_errf(SC_ENOMEM, "out of memory");
		goto done;
	}
	j->cap_mods = j->dequant && !bf16 ? n : j->cap_mods;
	for (int i = 0; i < n; i++) {
		const sc_st_tensor *t;
		const char *dot = strrchr(names[i], '.');
		int qw = dot && !strcmp(dot, ".qweight"), skip = 0;
		qmod *m = NULL;
		if (!j->dequant && (qw || (dot && !strcmp(dot, ".scales_q")))) {
			rc = sc_errf(SC_EINVAL, "%s: the model is already quantized (it has '%s')",
				     j->model, names[i]);
			goto done;
		}
		if ((rc = sc_weights_find(j->w, names[i], &t)) ||
		    (j->dequant && (rc = is_other_part(j, names[i], &skip))))
			goto done;
		j->in_bytes += t->nbytes;
		for (int k = 0; (!j->dequant || bf16) && k < j->n_mods && !m; k++)
			m = j->mods[k].t == t ? &j->mods[k] : NULL;
		if (j->dequant && bf16 && m)
			rc = widen_one(j, m);
		else if (j->dequant && qw)
			rc = dequantize_one(j, &j->mods[j->n_mods], t);
		else if (m)
			rc = quantize_one(j, m);
		else if (!skip && !(rc = sc_st_writer_add(j->wr, t->name, t->dtype, t->ndim,
							  t->shape, t->data)))
			j->out_bytes += t->nbytes;
		if (rc)
			goto done;
	}
done:
	free(names);
	return rc;
}

/* OUT/config.json: the model's config.json plus quantization_config (less
 * it, dequantizing). */
static sc_err write_config(job *j)
{
	char path[PATH_MAX];
	cJSON *q = j->dequant ? NULL : cJSON_AddObjectToObject(j->config, "quantization_config");
	cJSON *mods = NULL;
	int nf4 = j->fmt == SC_QUANT_NF4, bits = nf4 ? 4 : j->fmt == SC_QUANT_BF16 ? 16 : 8;
	int ok =
	    j->dequant ||
	    (cJSON_AddStringToObject(q, "quant_method", "splitchain") &&
	     cJSON_AddNumberToObject(q, "bits", bits) &&
	     cJSON_AddStringToObject(q, "format", sc_quant_format_name(j->fmt)) &&
	     (!nf4 || cJSON_AddNumberToObject(q, "block_size", SC_NF4_BLOCK)) &&
	     cJSON_AddBoolToObject(q, "double_quant", j->dq) &&
	     (!j->dq || cJSON_AddNumberToObject(q, "double_quant_block_size", SC_NF4_DQ_BLOCK)) &&
	     cJSON_AddStringToObject(q, "weight_layout",
				     j->fam->fan_in_fan_out ? "in_out" : "out_in") &&
	     (mods = cJSON_AddArrayToObject(q, "modules")));
	for (int k = 0; ok && mods && k < j->fam->n_targets; k++) {
		cJSON *s = cJSON_CreateString(j->fam->targets[k]);
		ok = s && cJSON_AddItemToArray(mods, s);
	}
	char *text = ok ? cJSON_Print(j->config) : NULL;
	if (!text)
		return sc_errf(SC_ENOMEM, "config.json: out of memory");
	snprintf(path, sizeof(path), "%s/config.json", j->out);
	size_t len = strlen(text);
	text[len] = '\n'; /* over the NUL: the file ends with a newline */
	sc_err rc = sc_file_write_atomic(path, text, len + 1);
	free(text);
	return rc;
}

static sc_err copy_side_files(job *j)
{
	char src[PATH_MAX], dst[PATH_MAX], *data;
	size_t len;
	for (int i = 0; side_files[i]; i++) {
		snprintf(src, sizeof(src), "%s/%s", j->model, side_files[i]);
		sc_err rc = sc_file_read(src, SIZE_MAX, &data, &len);
		if (rc == SC_ENOENT)
			continue;
		SC_TRY(rc);
		snprintf(dst, sizeof(dst), "%s/%s", j->out, side_files[i]);
		rc = sc_file_write_atomic(dst, data, len);
		free(data);
		SC_TRY(rc);
	}
	return SC_OK;
}

static void report(const job *j)
{
	if (j->dequant) {
		printf("wrote %s: %d projections dequantized from %s%s to F32, %zu weights; "
		       "tensor data %.3f MB (was %.3f MB)\n",
		       j->out, j->n_mods, sc_quant_name(j->fmt), j->dq ? " with double quant" : "",
		       j->n_quant, (double)j->out_bytes / 1e6, (double)j->in_bytes / 1e6);
		return;
	}
	printf("wrote %s: %d projections to %s%s, %zu weights at %.4f bytes each (were %.4f); "
	       "tensor data %.3f MB (was %.3f MB)\n",
	       j->out, j->n_mods, sc_quant_name(j->fmt), j->dq ? " with double quant" : "",
	       j->n_quant, (double)j->q_bytes / (double)j->n_quant,
	       (double)j->q_in_bytes / (double)j->n_quant, (double)j->out_bytes / 1e6,
	       (double)j->in_bytes / 1e6);
	if (!j->error_rows)
		return;
	double sum = 0.0;
	const qmod *worst = &j->mods[0];
	for (int k = 0; k < j->n_mods; k++) {
		sum += j->mods[k].rel;
		worst = j->mods[k].rel > worst->rel ? &j->mods[k] : worst;
	}
	printf("relative output error ||W x - W' x|| / ||W x|| on %d random normal inputs: "
	       "mean %.3e, max %.3e (%s)\n",
	       j->error_rows, sum / j->n_mods, worst->rel, worst->t->name);
}

/* Parses the options into *j; CLI_OK, or the usage error printed. */
static int parse(job *j, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "model", required_argument, 0, 'm' },
		{ "to", required_argument, 0, 't' },
		{ "double-quant", no_argument, 0, 'q' },
		{ "out", required_argument, 0, 'o' },
		{ "error", required_argument, 0, 'e' },
		{ "help", no_argument, 0, 'H' },
		{ 0, 0, 0, 0 },
	};
	const char *to = NULL;
	long v;
	int c;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'm': j->model = optarg; break;
		case 't': to = optarg; break;
		case 'q': j->dq = 1; break;
		case 'o': j->out = optarg; break;
		case 'e':
			if (cli_int(j->cmd, "--error", optarg, 1, 4096, &v))
				return CLI_USAGE;
			j->error_rows = (int)v;
			break;
		case 'H': fputs(quantize_help, stdout); return -1;
		default:
			return cli_usage(j->cmd, "unknown or incomplete option '%s'",
					 argv[optind - 1]);
		}
	}
	if (optind < argc)
		return cli_usage(j->cmd, "unexpected argument '%s'", argv[optind]);
	if (!j->model || !j->out || !to)
		return cli_usage(j->cmd,
				 "--model DIR, --to int8|nf4|bf16 and --out DIR are required");
	j->dequant = !strcmp(to, "f32");
	if (!j->dequant && sc_quant_parse(to, &j->fmt))
		return cli_usage(j->cmd, "--to must be int8, nf4, bf16 or f32, got '%s'", to);
	if (j->dq && (j->dequant || j->fmt != SC_QUANT_NF4))
		return cli_usage(j->cmd, "--double-quant is for --to nf4");
	if (j->error_rows && j->dequant)
		return cli_usage(j->cmd, "--error is for --to int8, nf4 or bf16");
	char a[PATH_MAX], b[PATH_MAX];
	if (realpath(j->model, a) && realpath(j->out, b) && !strcmp(a, b))
		return cli_usage(j->cmd, "--out must be another directory than --model");
	return CLI_OK;
}

int cli_quantize(int argc, char **argv)
{
	job j = { .cmd = "quantize" };
	char path[PATH_MAX];
	int ret = CLI_ERROR;
	sc_err rc;

	int u = parse(&j, argc, argv);
	if (u)
		return u < 0 ? CLI_OK : u;
	if ((rc = read_config(&j)) || (rc = sc_weights_open(&j.w, j.model)) ||
	    ((!j.dequant || j.fmt == SC_QUANT_BF16) && (rc = find_projections(&j)))) {
		cli_fail(j.cmd, rc, "cannot read the model");
		goto done;
	}
	if ((rc = sc_file_mkdir(j.out))) {
		cli_fail(j.cmd, rc, "cannot create the output directory");
		goto done;
	}
	if ((rc = sc_st_writer_new(&j.wr)) || (rc = sc_st_writer_meta(j.wr, "format", "pt")) ||
	    (!j.dequant &&
	     (rc = sc_st_writer_meta(j.wr, "quantization", sc_quant_format_name(j.fmt)))) ||
	    (rc = convert(&j))) {
		cli_fail(j.cmd, rc,
			 j.dequant ? "cannot dequantize the model" : "cannot quantize the model");
		goto done;
	}
	if (j.dequant && !j.n_mods) {
		fprintf(stderr, "splitchain %s: %s holds no quantized weight (no *.qweight)\n",
			j.cmd, j.model);
		goto done;
	}
	snprintf(path, sizeof(path), "%s/%s", j.out, SC_WEIGHTS_SINGLE);
	if ((rc = sc_st_writer_save(j.wr, path)) || (rc = write_config(&j)) ||
	    (rc = copy_side_files(&j))) {
		cli_fail(j.cmd, rc, "cannot write the model");
		goto done;
	}
	report(&j);
	ret = CLI_OK;
done:
	sc_st_writer_free(j.wr);
	for (int k = 0; j.mods && k < j.cap_mods; k++)
		free(j.mods[k].out.scales);
	free(j.mods);
	sc_st_close(j.single);
	sc_weights_close(j.w);
	cJSON_Delete(j.index);
	cJSON_Delete(j.config);
	return ret;
}
