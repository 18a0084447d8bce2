/* segment_io.c — moving a segment's state in and out: frozen weights from a
 * model's safetensors files (only the segment's own tensors; quantized
 * projections as the file holds them or quantized as they load), adapters
 * to and from an sc_adapter, and whole groups (LoRA, gradients, AdamW
 * moments) as flat host vectors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segment_impl.h"

/* Where the segment's tensors come from: a single safetensors file or a
 * model's (maybe sharded) weights. */
typedef struct source {
	const sc_st_file *file;
	sc_weights *weights;
} source;

static sc_err lookup(const source *src, const char *name, const sc_st_tensor **t)
{
	if (src->file) {
		*t = sc_st_find(src->file, name);
		return SC_OK;
	}
	return sc_weights_find(src->weights, name, t);
}

/* Finds name under each of the family's file prefixes in turn; *t = NULL
 * (and SC_OK) when the model has it under none. */
static sc_err find_opt(const sc_segment *seg, const source *src, const char *name,
		       const sc_st_tensor **t)
{
	char full[256];
	*t = NULL;
	for (int i = 0; seg->fam->file_prefixes[i] && !*t; i++) {
		snprintf(full, sizeof(full), "%s%s", seg->fam->file_prefixes[i], name);
		SC_TRY(lookup(src, full, t));
	}
	return SC_OK;
}

/* As find_opt, with a missing tensor an SC_EFORMAT naming it. */
static sc_err find_weight(const sc_segment *seg, const source *src, const char *name,
			  const sc_st_tensor **t)
{
	SC_TRY(find_opt(seg, src, name, t));
	if (!*t)
		return sc_errf(SC_EFORMAT, "model weights lack tensor '%s%s'",
			       seg->fam->file_prefixes[0], name);
	return SC_OK;
}

/* Grows the host staging buffer to at least floats floats. */
static sc_err stage(sc_segment *seg, size_t floats, const char *name)
{
	if (floats > seg->host_stage_floats) {
		float *q = realloc(seg->host_stage, floats * sizeof(float));
		if (!q)
			return sc_errf(SC_ENOMEM, "out of memory staging '%s'", name);
		seg->host_stage = q;
		seg->host_stage_floats = floats;
	}
	return SC_OK;
}

/* Reads tensor p into device buffer dst. */
static sc_err load_weight(sc_segment *seg, const source *src, float *dst, const sc_param_desc *p)
{
	const sc_st_tensor *t;
	size_t numel = (size_t)p->shape[0] * (size_t)(p->ndim == 2 ? p->shape[1] : 1);

	SC_TRY(find_weight(seg, src, p->name, &t));
	SC_TRY(sc_st_expect_shape(t, p->ndim, p->shape));
	SC_TRY(stage(seg, numel, p->name));
	SC_TRY(sc_st_read_f32(seg->host_stage, t, numel));
	return seg->be->ops->upload(seg->be, dst, seg->host_stage, numel * sizeof(float));
}

enum { Q_QWEIGHT, Q_SCALES, Q_SCALES_Q, Q_SCALES_SCALE, Q_SCALES_OFFSET, Q_PARTS };

/* A bf16 projection p (sc_quant.h: the weight under its own name), or a
 * bf16 base's token embedding or LM head, into
 * q's device buffer: a BF16 tensor is checked (finite) and uploaded from
 * the file's mapping as it is, with no float32 copy; an F32 or F16 one is
 * read as float32 and rounded (sc_quant_quantize), so a float model runs
 * with a bf16 base too. */
static sc_err load_bf16(sc_segment *seg, const source *src, int l, const sc_param_desc *p,
			const sc_qweight *q)
{
	const sc_st_tensor *t;
	sc_quant_spec qs;
	sc_quant_sizes z;
	sc_err rc;

	seg_quant_spec(seg, l, p, &qs);
	SC_TRY(sc_quant_size(&qs, &z));
	SC_TRY(find_weight(seg, src, p->name, &t));
	SC_TRY(sc_st_expect_shape(t, p->ndim, p->shape));
	if (t->dtype == SC_BF16) {
		sc_quant_view v = { .qweight = t->data };
		if ((rc = sc_quant_check(&qs, &v)))
			return sc_err_wrap(rc, "%s", t->name);
		return seg->be->ops->upload(seg->be, (void *)q->q, t->data, z.qweight);
	}
	size_t n = qs.rows * qs.cols;
	SC_TRY(stage(seg, n + (z.qweight + 3) / 4, p->name));
	SC_TRY(sc_st_read_f32(seg->host_stage, t, n));
	sc_quant_out o = { .qweight = (uint8_t *)(seg->host_stage + n) };
	if ((rc = sc_quant_quantize(&qs, seg->host_stage, &o)))
		return sc_err_wrap(rc, "%s to bf16", t->name);
	return seg->be->ops->upload(seg->be, (void *)q->q, o.qweight, z.qweight);
}

/* Where the parts of a quantized projection lie in the staging buffer
 * (floats from its start, each part 4-byte aligned) and how big they are. */
typedef struct qparts {
	sc_quant_spec qs;
	size_t bytes[Q_PARTS];
	size_t off[Q_PARTS];
	size_t floats; /* all parts */
} qparts;

static const char *const qpart_name[Q_PARTS] = { "qweight", "scales", "scales_q", "scales_scale",
						 "scales_offset" };

/* Reads the parts of p as a quantized model file stores them (NAME.qweight,
 * NAME.scales, ... with NAME the weight's name less ".weight", as sc_quant.h
 * lists them; qw is NAME.qweight, found) into the staging buffer, checking
 * them there (sc_quant_check). */
static sc_err read_qparts(sc_segment *seg, const source *src, const sc_param_desc *p,
			  const qparts *z, const sc_st_tensor *qw)
{
	static const enum sc_dtype dt[Q_PARTS] = { SC_U8, SC_F32, SC_U8, SC_F32, SC_F32 };
	int mlen = (int)(strlen(p->name) - strlen(".weight"));
	const sc_st_tensor *t;
	char name[160];

	for (int k = 0; k < Q_PARTS; k++) {
		if (!z->bytes[k])
			continue;
		snprintf(name, sizeof(name), "%.*s.%s", mlen, p->name, qpart_name[k]);
		if (k == Q_QWEIGHT)
			t = qw;
		else
			SC_TRY(find_weight(seg, src, name, &t));
		if (t->dtype != dt[k] || t->nbytes != z->bytes[k])
			return sc_errf(SC_EFORMAT,
				       "'%s' holds %zu bytes of %s; a %s (%zu, %zu) weight needs "
				       "%zu bytes of %s",
				       t->name, t->nbytes, sc_dtype_name(t->dtype),
				       sc_quant_name(z->qs.format), z->qs.rows, z->qs.cols,
				       z->bytes[k], sc_dtype_name(dt[k]));
		if (k == Q_QWEIGHT && z->qs.format == SC_QUANT_INT8)
			SC_TRY(sc_st_expect_shape(t, 2, p->shape));
		memcpy(seg->host_stage + z->off[k], t->data, z->bytes[k]);
	}
	if (z->qs.format == SC_QUANT_NF4) { /* the packed form's shape, stated */
		int64_t shape[2];
		snprintf(name, sizeof(name), "%.*s.shape", mlen, p->name);
		SC_TRY(find_weight(seg, src, name, &t));
		if (t->dtype != SC_I64 || t->nbytes != sizeof(shape))
			return sc_errf(SC_EFORMAT, "'%s' is not two I64 values", t->name);
		memcpy(shape, t->data, sizeof(shape));
		if (shape[0] != p->shape[0] || shape[1] != p->shape[1])
			return sc_errf(SC_EFORMAT,
				       "'%s' is (%lld, %lld); the model needs (%lld, %lld)",
				       t->name, (long long)shape[0], (long long)shape[1],
				       (long long)p->shape[0], (long long)p->shape[1]);
	}
	const float *h = seg->host_stage;
	const size_t *b = z->bytes, *o = z->off;
	sc_quant_view v = {
		(const uint8_t *)(h + o[Q_QWEIGHT]),
		b[Q_SCALES] ? h + o[Q_SCALES] : NULL,
		b[Q_SCALES_Q] ? (const uint8_t *)(h + o[Q_SCALES_Q]) : NULL,
		b[Q_SCALES_SCALE] ? h + o[Q_SCALES_SCALE] : NULL,
		b[Q_SCALES_OFFSET] ? h + o[Q_SCALES_OFFSET] : NULL,
	};
	sc_err rc = sc_quant_check(&z->qs, &v);
	return rc ? sc_err_wrap(rc, "%.*s", mlen, p->name) : SC_OK;
}

/* Quantizes float weight t (F32, F16 or BF16) of p into the parts in the
 * staging buffer: the weight is read as fp32 into the buffer behind the
 * parts, one tensor at a time, and only the parts go to the device. */
static sc_err quantize_parts(sc_segment *seg, const sc_param_desc *p, const qparts *z,
			     const sc_st_tensor *t)
{
	size_t n = z->qs.rows * z->qs.cols;
	float *h = seg->host_stage, *w = h + z->floats;
	const size_t *b = z->bytes, *o = z->off;
	sc_quant_out q = {
		(uint8_t *)(h + o[Q_QWEIGHT]),
		b[Q_SCALES] ? h + o[Q_SCALES] : NULL,
		b[Q_SCALES_Q] ? (uint8_t *)(h + o[Q_SCALES_Q]) : NULL,
		b[Q_SCALES_SCALE] ? h + o[Q_SCALES_SCALE] : NULL,
		b[Q_SCALES_OFFSET] ? h + o[Q_SCALES_OFFSET] : NULL,
	};
	SC_TRY(sc_st_expect_shape(t, p->ndim, p->shape));
	SC_TRY(sc_st_read_f32(w, t, n));
	sc_err rc = sc_quant_quantize(&z->qs, w, &q);
	return rc ? sc_err_wrap(rc, "quantizing '%s' to %s", t->name, sc_quant_name(z->qs.format))
		  : SC_OK;
}

/* Fills quantized projection p's device buffers q. One mechanism for both
 * sources: a model quantized on disk (`splitchain quantize`: NAME.qweight
 * and its other parts, checked) and a float model whose job asked for a
 * quantized base (NAME.weight, quantized here as it loads,
 * sc_train_base_format); either way the parts are laid out in the staging
 * buffer, then uploaded. */
static sc_err load_qweight(sc_segment *seg, const source *src, int l, const sc_param_desc *p,
			   const sc_qweight *q)
{
	void *dev[Q_PARTS] = { (void *)q->q, (void *)q->scales, (void *)q->scales_q,
			       (void *)q->scales_scale, (void *)q->scales_offset };
	int mlen = (int)(strlen(p->name) - strlen(".weight"));
	const sc_st_tensor *qw, *fw = NULL;
	sc_quant_sizes zs;
	qparts z = { .floats = 0 };
	char name[160];

	seg_quant_spec(seg, l, p, &z.qs);
	SC_TRY(sc_quant_size(&z.qs, &zs));
	const size_t bytes[Q_PARTS] = { zs.qweight, zs.scales * sizeof(float), zs.scales_q,
					zs.scales_scale * sizeof(float),
					zs.scales_offset * sizeof(float) };
	for (int k = 0; k < Q_PARTS; k++) {
		z.bytes[k] = bytes[k];
		z.off[k] = z.floats;
		z.floats += (bytes[k] + 3) / 4;
	}
	snprintf(name, sizeof(name), "%.*s.qweight", mlen, p->name);
	SC_TRY(find_opt(seg, src, name, &qw));
	if (!qw) {
		SC_TRY(find_opt(seg, src, p->name, &fw));
		if (!fw)
			return sc_errf(SC_EFORMAT,
				       "model weights lack tensor '%s%s' (or its quantized form "
				       "'%s%s')",
				       seg->fam->file_prefixes[0], p->name,
				       seg->fam->file_prefixes[0], name);
	}
	SC_TRY(stage(seg, z.floats + (fw ? z.qs.rows * z.qs.cols : 0), p->name));
	SC_TRY(qw ? read_qparts(seg, src, p, &z, qw) : quantize_parts(seg, p, &z, fw));
	for (int k = 0; k < Q_PARTS; k++)
		if (bytes[k])
			SC_TRY(seg->be->ops->upload(seg->be, dev[k], seg->host_stage + z.off[k],
						    bytes[k]));
	return SC_OK;
}

/* The rotary tables for every position the segment runs (T, or the cache's
 * positions when generating), computed on the host. */
sc_err seg_load_rope(sc_segment *seg)
{
	int P = seg->spec.kv_positions ? seg->spec.kv_positions : seg->spec.T;
	size_t n = (size_t)P * (size_t)(seg->spec.model.head_dim / 2);
	float *host = malloc(2 * n * sizeof(float));
	sc_err rc;
	if (!host)
		return sc_errf(SC_ENOMEM, "out of memory for the rotary tables");
	sc_rope_tables(&seg->spec.model, P, host, host + n);
	rc = seg->be->ops->upload(seg->be, seg->rope_cos, host, n * sizeof(float));
	if (!rc)
		rc = seg->be->ops->upload(seg->be, seg->rope_sin, host + n, n * sizeof(float));
	free(host);
	return rc;
}

static sc_err load_base(sc_segment *seg, const source *src)
{
	const sc_model_config *mc = &seg->spec.model;
	sc_param_desc gp[SC_GP_COUNT], lp[SC_FAMILY_MAX_PARAMS];
	sc_err rc = SC_OK;

	if (seg->sharer) { /* another segment's weights: only its own tables */
		rc = seg->rope_cos ? seg_load_rope(seg) : SC_OK;
		return rc ? rc : seg->be->ops->sync(seg->be);
	}
	if (atomic_load(&seg->base->refs) > 1) /* shared weights are never written again */
		return sc_errf(SC_EINVAL,
			       "segment [%d, %d): its frozen weights are shared by %d segments and "
			       "cannot be loaded again",
			       seg->spec.first, seg->spec.last, atomic_load(&seg->base->refs));
	seg->fam->global_params(mc, gp);
	for (int g = 0; g < SC_GP_COUNT && !rc; g++)
		if (seg->gp[g])
			rc = load_weight(seg, src, seg->gp[g], &gp[g]);
		else if (seg->gq[g].q) /* a bf16 base's embedding or head */
			rc = load_bf16(seg, src, -1, &gp[g], &seg->gq[g]);
	if (!rc && seg->rope_cos)
		rc = seg_load_rope(seg);
	for (int l = 0; l < seg->nl && !rc; l++) {
		seg->fam->layer_params(mc, seg->spec.first + l, lp);
		for (int p = 0; p < seg->fam->n_layer_params && !rc; p++) {
			int f = seg_layer_format(seg, l);
			int t = seg->lq && f >= 0 ? seg_quant_target(seg, &lp[p]) : -1;
			if (t >= 0 && f == SC_QUANT_BF16)
				rc = load_bf16(seg, src, l, &lp[p], &seg->lq[l][t]);
			else if (t >= 0)
				rc = load_qweight(seg, src, l, &lp[p], &seg->lq[l][t]);
			else if (seg->lw[l][p])
				rc = load_weight(seg, src, seg->lw[l][p], &lp[p]);
		}
	}
	/* The staging buffer only serves loading; give it back. */
	free(seg->host_stage);
	seg->host_stage = NULL;
	seg->host_stage_floats = 0;
	if (!rc && !(rc = seg->be->ops->sync(seg->be)))
		seg->base->loaded = 1;
	return rc;
}

sc_err sc_segment_load_base(sc_segment *seg, const sc_st_file *f)
{
	source src = { .file = f };
	return load_base(seg, &src);
}

sc_err sc_segment_load_weights(sc_segment *seg, sc_weights *w)
{
	source src = { .weights = w };
	return load_base(seg, &src);
}

static sc_err check_adapter(const sc_segment *seg, const sc_adapter *ad)
{
	const sc_lora_config *a = &ad->lora, *s = &seg->spec.lora;
	if (a->rank != s->rank || a->targets != s->targets || a->alpha != s->alpha)
		return sc_errf(SC_EINVAL,
			       "adapter (rank %d, alpha %g, targets 0x%x) does not match "
			       "the segment's LoRA configuration (rank %d, alpha %g, "
			       "targets 0x%x)",
			       a->rank, a->alpha, a->targets, s->rank, s->alpha, s->targets);
	if (ad->n_layer < seg->spec.last || ad->n_embd != seg->spec.model.n_embd ||
	    sc_family_of(&ad->mc) != seg->fam)
		return sc_errf(SC_EINVAL,
			       "adapter covers %d layers of %d channels (%s); the segment needs "
			       "layers up to %d of %d channels (%s)",
			       ad->n_layer, ad->n_embd, ad->mc.model_type, seg->spec.last,
			       seg->spec.model.n_embd, seg->spec.model.model_type);
	return SC_OK;
}

static sc_err check_group(const sc_segment *seg, enum sc_segment_group g)
{
	if (g < SC_G_LORA || g > SC_G_ADAM_V)
		return sc_errf(SC_EINVAL, "unknown segment group %d", (int)g);
	if (g != SC_G_LORA && !seg->group[g])
		return sc_errf(SC_EINVAL, "a generation segment holds no gradients or optimizer "
					  "state");
	return SC_OK;
}

/* Moves group g between the device and ad, layer by layer: to_device
 * uploads from ad, otherwise downloads into ad. */
static sc_err transfer(const sc_segment *seg, enum sc_segment_group g, sc_adapter *ad,
		       int to_device)
{
	sc_backend *be = seg->be;
	size_t r = (size_t)seg->spec.lora.rank;

	SC_TRY(check_group(seg, g));
	SC_TRY(check_adapter(seg, ad));
	for (int l = 0; l < seg->nl; l++) {
		for (int t = 0; t < seg->fam->n_targets; t++) {
			int in, out, gl = seg->spec.first + l;
			float *dev;
			if (!seg_has_target(seg, t))
				continue;
			seg->fam->target_dims(&seg->spec.model, t, &in, &out);
			dev = seg->group[g] + seg->tgt_off[l][t];
			if (to_device) {
				SC_TRY(
				    be->ops->upload(be, dev, ad->a[gl][t], r * in * sizeof(float)));
				SC_TRY(be->ops->upload(be, dev + r * in, ad->b[gl][t],
						       out * r * sizeof(float)));
			} else {
				SC_TRY(be->ops->download(be, ad->a[gl][t], dev,
							 r * in * sizeof(float)));
				SC_TRY(be->ops->download(be, ad->b[gl][t], dev + r * in,
							 out * r * sizeof(float)));
			}
		}
	}
	return to_device ? be->ops->sync(be) : SC_OK;
}

sc_err sc_segment_export(const sc_segment *seg, enum sc_segment_group g, sc_adapter *ad)
{
	return transfer(seg, g, ad, 0);
}

sc_err sc_segment_import(sc_segment *seg, enum sc_segment_group g, const sc_adapter *ad)
{
	return transfer(seg, g, (sc_adapter *)ad, 1); /* not written when uploading */
}

sc_err sc_segment_set_lora(sc_segment *seg, const sc_adapter *ad)
{
	SC_TRY(sc_segment_import(seg, SC_G_LORA, ad));
	for (int g = SC_G_GRAD; g <= SC_G_ADAM_V && seg->group[g]; g++)
		SC_TRY(
		    seg->be->ops->zero(seg->be, seg->group[g], seg->lora_floats * sizeof(float)));
	return seg->be->ops->sync(seg->be);
}

sc_err sc_segment_get_lora(const sc_segment *seg, sc_adapter *ad)
{
	return sc_segment_export(seg, SC_G_LORA, ad);
}

sc_err sc_segment_read_group(const sc_segment *seg, enum sc_segment_group g, float *host)
{
	SC_TRY(check_group(seg, g));
	return seg->be->ops->download(seg->be, host, seg->group[g],
				      seg->lora_floats * sizeof(float));
}

sc_err sc_segment_write_group(sc_segment *seg, enum sc_segment_group g, const float *host)
{
	SC_TRY(check_group(seg, g));
	SC_TRY(
	    seg->be->ops->upload(seg->be, seg->group[g], host, seg->lora_floats * sizeof(float)));
	return seg->be->ops->sync(seg->be);
}
