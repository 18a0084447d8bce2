/* segment_io.c — moving a segment's state in and out: frozen weights from a
 * safetensors file, adapters to and from an sc_adapter, and whole groups
 * (LoRA, gradients, AdamW moments) as flat host vectors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segment_impl.h"

/* Finds name with or without the "transformer." prefix HF's LM-head models
 * write. */
static const sc_st_tensor *find_weight(const sc_st_file *f, const char *name)
{
	char full[256];
	const sc_st_tensor *t;

	snprintf(full, sizeof(full), "transformer.%s", name);
	t = sc_st_find(f, full);
	return t ? t : sc_st_find(f, name);
}

/* Reads tensor `name` of shape (d0[, d1]) into device buffer dst. */
static sc_err load_weight(sc_segment *seg, const sc_st_file *f, float *dst, const char *name,
			  int ndim, int64_t d0, int64_t d1)
{
	const sc_st_tensor *t = find_weight(f, name);
	int64_t shape[2] = { d0, d1 };
	size_t numel = (size_t)d0 * (size_t)(ndim == 2 ? d1 : 1);

	if (!t)
		return sc_errf(SC_EFORMAT, "model weights lack tensor '%s' (or 'transformer.%s')",
			       name, name);
	SC_TRY(sc_st_expect_shape(t, ndim, shape));
	if (numel > seg->host_stage_floats) {
		float *p = realloc(seg->host_stage, numel * sizeof(float));
		if (!p)
			return sc_errf(SC_ENOMEM, "out of memory staging '%s'", name);
		seg->host_stage = p;
		seg->host_stage_floats = numel;
	}
	SC_TRY(sc_st_read_f32(seg->host_stage, t, numel));
	return seg->be->ops->upload(seg->be, dst, seg->host_stage, numel * sizeof(float));
}

sc_err sc_segment_load_base(sc_segment *seg, const sc_st_file *f)
{
	const sc_model_config *mc = &seg->spec.model;
	int64_t C = mc->n_embd;
	char name[128];

	if (seg->wte)
		SC_TRY(load_weight(seg, f, seg->wte, "wte.weight", 2, mc->vocab_size, C));
	if (seg->wpe)
		SC_TRY(load_weight(seg, f, seg->wpe, "wpe.weight", 2, mc->n_positions, C));
	if (seg->lnf_w) {
		SC_TRY(load_weight(seg, f, seg->lnf_w, "ln_f.weight", 1, C, 0));
		SC_TRY(load_weight(seg, f, seg->lnf_b, "ln_f.bias", 1, C, 0));
	}
	for (int l = 0; l < seg->nl; l++) {
		const layer_base *lb = &seg->base[l];
		int g = seg->spec.first + l;
#define LOAD(ptr, suffix, ...)                                                                     \
	do {                                                                                       \
		snprintf(name, sizeof(name), "h.%d.%s", g, suffix);                                \
		SC_TRY(load_weight(seg, f, ptr, name, __VA_ARGS__));                               \
	} while (0)
		LOAD(lb->ln1_w, "ln_1.weight", 1, C, 0);
		LOAD(lb->ln1_b, "ln_1.bias", 1, C, 0);
		LOAD(lb->ln2_w, "ln_2.weight", 1, C, 0);
		LOAD(lb->ln2_b, "ln_2.bias", 1, C, 0);
		for (int t = 0; t < SC_T_COUNT; t++) {
			char suffix[64];
			int in, out;
			sc_lora_target_dims(t, (int)C, &in, &out);
			snprintf(suffix, sizeof(suffix), "%s.weight", sc_lora_target_name(t));
			LOAD(lb->w[t], suffix, 2, in, out);
			snprintf(suffix, sizeof(suffix), "%s.bias", sc_lora_target_name(t));
			LOAD(lb->b[t], suffix, 1, out, 0);
		}
#undef LOAD
	}
	/* The staging buffer only serves loading; give it back. */
	free(seg->host_stage);
	seg->host_stage = NULL;
	seg->host_stage_floats = 0;
	return seg->be->ops->sync(seg->be);
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
	if (ad->n_layer < seg->spec.last || ad->n_embd != seg->spec.model.n_embd)
		return sc_errf(SC_EINVAL,
			       "adapter covers %d layers of %d channels; the segment needs "
			       "layers up to %d of %d channels",
			       ad->n_layer, ad->n_embd, seg->spec.last, seg->spec.model.n_embd);
	return SC_OK;
}

static sc_err check_group(enum sc_segment_group g)
{
	if (g < SC_G_LORA || g > SC_G_ADAM_V)
		return sc_errf(SC_EINVAL, "unknown segment group %d", (int)g);
	return SC_OK;
}

/* Moves group g between the device and ad, layer by layer: to_device
 * uploads from ad, otherwise downloads into ad. */
static sc_err transfer(const sc_segment *seg, enum sc_segment_group g, sc_adapter *ad,
		       int to_device)
{
	sc_backend *be = seg->be;
	size_t r = (size_t)seg->spec.lora.rank;

	SC_TRY(check_group(g));
	SC_TRY(check_adapter(seg, ad));
	for (int l = 0; l < seg->nl; l++) {
		for (int t = 0; t < SC_T_COUNT; t++) {
			int in, out, gl = seg->spec.first + l;
			float *dev;
			if (!(seg->spec.lora.targets & (1u << t)))
				continue;
			sc_lora_target_dims(t, seg->spec.model.n_embd, &in, &out);
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
	for (int g = SC_G_GRAD; g <= SC_G_ADAM_V; g++)
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
	SC_TRY(check_group(g));
	return seg->be->ops->download(seg->be, host, seg->group[g],
				      seg->lora_floats * sizeof(float));
}

sc_err sc_segment_write_group(sc_segment *seg, enum sc_segment_group g, const float *host)
{
	SC_TRY(check_group(g));
	SC_TRY(
	    seg->be->ops->upload(seg->be, seg->group[g], host, seg->lora_floats * sizeof(float)));
	return seg->be->ops->sync(seg->be);
}
