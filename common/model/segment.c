/* segment.c — a segment's memory: validates the spec, lays out and allocates
 * every device buffer group once (see sc_segment.h), and frees them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segment_impl.h"

/* Lays buffers out in one allocation. A first pass with base == NULL only
 * measures (the views it hands out are NULL); the second carves real views. */
typedef struct arena {
	float *base;
	size_t used; /* floats */
} arena;

static float *take(arena *a, size_t floats)
{
	float *p = a->base ? a->base + a->used : NULL;
	a->used += (floats + 15) & ~(size_t)15; /* keep every view 64-byte aligned */
	return p;
}

static int has_target(const sc_segment *seg, int t)
{
	return (seg->spec.lora.targets >> t) & 1u;
}

/* The frozen weights. */
static void layout_base(sc_segment *seg, arena *a)
{
	const sc_model_config *mc = &seg->spec.model;
	size_t C = (size_t)mc->n_embd;
	int first = sc_segment_is_first(seg), last = sc_segment_is_last(seg);

	if (first || last)
		seg->wte = take(a, (size_t)mc->vocab_size * C);
	if (first)
		seg->wpe = take(a, (size_t)mc->n_positions * C);
	if (last) {
		seg->lnf_w = take(a, C);
		seg->lnf_b = take(a, C);
	}
	for (int l = 0; l < seg->nl; l++) {
		layer_base *lb = &seg->base[l];
		lb->ln1_w = take(a, C);
		lb->ln1_b = take(a, C);
		lb->ln2_w = take(a, C);
		lb->ln2_b = take(a, C);
		for (int t = 0; t < SC_T_COUNT; t++) {
			int in, out;
			sc_lora_target_dims(t, mc->n_embd, &in, &out);
			lb->w[t] = take(a, (size_t)in * out);
			lb->b[t] = take(a, (size_t)out);
		}
	}
}

/* One activation slot. */
static void layout_slot(sc_segment *seg, slot *s, arena *a)
{
	const sc_segment_spec *sp = &seg->spec;
	size_t N = seg_N(seg), C = (size_t)sp->model.n_embd, r = (size_t)sp->lora.rank;

	if (sc_segment_is_first(seg))
		s->tokens = (int32_t *)take(a, N); /* int32 and float are both 4 bytes */
	if (sc_segment_is_last(seg)) {
		s->targets = (int32_t *)take(a, N);
		s->lnf = take(a, N * C);
		s->lnf_mean = take(a, N);
		s->lnf_rstd = take(a, N);
		s->dlast = take(a, N * C);
	}
	s->x = take(a, N * C);
	for (int l = 0; l < seg->nl; l++) {
		layer_acts *la = &s->layers[l];
		la->ln1 = take(a, N * C);
		la->ln1_mean = take(a, N);
		la->ln1_rstd = take(a, N);
		la->qkv = take(a, 3 * N * C);
		la->atty = take(a, N * C);
		la->att = take(a, seg->attn_state);
		la->res2 = take(a, N * C);
		la->ln2 = take(a, N * C);
		la->ln2_mean = take(a, N);
		la->ln2_rstd = take(a, N);
		la->fch = take(a, 4 * N * C);
		la->fch_gelu = take(a, 4 * N * C);
		la->res3 = take(a, N * C);
		for (int t = 0; t < SC_T_COUNT; t++)
			la->u[t] = has_target(seg, t) ? take(a, N * r) : NULL;
	}
}

/* Backward buffers shared by all slots. */
static void layout_scratch(sc_segment *seg, arena *a)
{
	const sc_segment_spec *sp = &seg->spec;
	size_t N = seg_N(seg), C = (size_t)sp->model.n_embd;

	seg->dcur = take(a, N * C);
	seg->dln = take(a, N * C);
	seg->dbig = take(a, 4 * N * C);
	seg->datt = take(a, seg->attn_scratch);
	seg->du = take(a, N * (size_t)sp->lora.rank);
	if (sc_segment_is_last(seg)) {
		seg->logits = take(a, N * (size_t)sp->model.vocab_size);
		seg->losses = take(a, N);
	}
}

/* Measures a layout, allocates it, and lays it out for real. */
static sc_err alloc_laid_out(sc_segment *seg, void **mem, void (*fn)(sc_segment *, void *, arena *),
			     void *arg)
{
	arena a = { NULL, 0 };
	fn(seg, arg, &a);
	seg->device_bytes += a.used * sizeof(float);
	SC_TRY(seg->be->ops->alloc(seg->be, mem, a.used * sizeof(float)));
	a.base = *mem;
	a.used = 0;
	fn(seg, arg, &a);
	return SC_OK;
}

static void base_fn(sc_segment *seg, void *arg, arena *a)
{
	layout_base(seg, a);
}

static void slot_fn(sc_segment *seg, void *arg, arena *a)
{
	layout_slot(seg, arg, a);
}

static void scratch_fn(sc_segment *seg, void *arg, arena *a)
{
	layout_scratch(seg, a);
}

static sc_err validate_spec(const sc_segment_spec *sp)
{
	SC_TRY(sc_config_validate(&sp->model));
	SC_TRY(sc_lora_config_validate(&sp->lora));
	if (sp->first < 0 || sp->first >= sp->last || sp->last > sp->model.n_layer)
		return sc_errf(SC_EINVAL,
			       "layer range [%d, %d) is not within the model's %d layers",
			       sp->first, sp->last, sp->model.n_layer);
	if (sp->B < 1 || sp->T < 1 || sp->slots < 1)
		return sc_errf(SC_EINVAL, "batch %d, sequence %d and slots %d must all be >= 1",
			       sp->B, sp->T, sp->slots);
	if (sp->T > sp->model.n_positions)
		return sc_errf(SC_EINVAL, "sequence length %d exceeds the model's %d positions",
			       sp->T, sp->model.n_positions);
	if ((double)sp->B * sp->T * sp->model.vocab_size > 2e9)
		return sc_errf(SC_EINVAL,
			       "micro-batch %dx%d is too large for one buffer; use more "
			       "micro-batches of fewer rows",
			       sp->B, sp->T);
	return SC_OK;
}

sc_err sc_segment_new(sc_segment **out, sc_backend *be, const sc_segment_spec *spec)
{
	sc_segment *seg;
	size_t off = 0;
	sc_err rc;

	*out = NULL;
	SC_TRY(validate_spec(spec));
	seg = calloc(1, sizeof(*seg));
	if (!seg)
		return sc_errf(SC_ENOMEM, "out of memory");
	seg->be = be;
	seg->spec = *spec;
	seg->nl = spec->last - spec->first;
	seg->scale = spec->lora.alpha / (float)spec->lora.rank;
	seg->base = calloc((size_t)seg->nl, sizeof(*seg->base));
	seg->layer_off = calloc((size_t)seg->nl + 1, sizeof(size_t));
	seg->tgt_off = calloc((size_t)seg->nl, sizeof(*seg->tgt_off));
	seg->slots = calloc((size_t)spec->slots, sizeof(slot));
	seg->host_losses = malloc(seg_N(seg) * sizeof(float));
	if (!seg->base || !seg->layer_off || !seg->tgt_off || !seg->slots || !seg->host_losses) {
		rc = sc_errf(SC_ENOMEM, "out of memory");
		goto fail;
	}

	/* LoRA vector layout: layer by layer, target by target, A then B. */
	for (int l = 0; l < seg->nl; l++) {
		seg->layer_off[l] = off;
		for (int t = 0; t < SC_T_COUNT; t++) {
			int in, o;
			if (!has_target(seg, t))
				continue;
			sc_lora_target_dims(t, spec->model.n_embd, &in, &o);
			seg->tgt_off[l][t] = off;
			off += (size_t)spec->lora.rank * (size_t)(in + o);
		}
	}
	seg->layer_off[seg->nl] = off;
	seg->lora_floats = off;
	rc = BE_CALL(seg, attention_sizes, spec->B, spec->T, spec->model.n_embd, spec->model.n_head,
		     &seg->attn_state, &seg->attn_scratch);
	if (rc == SC_OK && (seg->attn_state > (size_t)2e9 || seg->attn_scratch > (size_t)2e9))
		rc = sc_errf(SC_EINVAL,
			     "micro-batch %dx%d needs %zu floats of attention state on %s, too "
			     "many for one buffer; use more micro-batches of fewer rows",
			     spec->B, spec->T, seg->attn_state, seg->be->name);
	if (rc != SC_OK)
		goto fail;
	for (int g = 0; g < 4; g++) {
		seg->device_bytes += off * sizeof(float);
		if ((rc = BE_CALL(seg, alloc, (void **)&seg->group[g], off * sizeof(float))))
			goto fail;
	}
	if ((rc = alloc_laid_out(seg, &seg->base_mem, base_fn, NULL)))
		goto fail;

	for (int i = 0; i < spec->slots; i++) {
		slot *s = &seg->slots[i];
		s->layers = calloc((size_t)seg->nl, sizeof(layer_acts));
		if (!s->layers) {
			rc = sc_errf(SC_ENOMEM, "out of memory");
			goto fail;
		}
		if ((rc = alloc_laid_out(seg, &s->mem, slot_fn, s)))
			goto fail;
	}
	if ((rc = alloc_laid_out(seg, &seg->scratch_mem, scratch_fn, NULL)))
		goto fail;
	*out = seg;
	return SC_OK;
fail:
	sc_segment_free(seg);
	return sc_err_wrap(rc, "segment [%d, %d)", spec->first, spec->last);
}

void sc_segment_free(sc_segment *seg)
{
	if (!seg)
		return;
	for (int g = 0; g < 4; g++)
		BE_CALL(seg, free_buf, seg->group[g]);
	seg->be->ops->free_buf(seg->be, seg->base_mem);
	seg->be->ops->free_buf(seg->be, seg->scratch_mem);
	for (int i = 0; seg->slots && i < seg->spec.slots; i++) {
		seg->be->ops->free_buf(seg->be, seg->slots[i].mem);
		free(seg->slots[i].layers);
	}
	free(seg->slots);
	free(seg->base);
	free(seg->layer_off);
	free(seg->tgt_off);
	free(seg->host_losses);
	free(seg->host_stage);
	free(seg);
}

const sc_segment_spec *sc_segment_get_spec(const sc_segment *seg)
{
	return &seg->spec;
}

int sc_segment_is_first(const sc_segment *seg)
{
	return seg->spec.first == 0;
}

int sc_segment_is_last(const sc_segment *seg)
{
	return seg->spec.last == seg->spec.model.n_layer;
}

size_t sc_segment_lora_floats(const sc_segment *seg)
{
	return seg->lora_floats;
}

size_t sc_segment_device_bytes(const sc_segment *seg)
{
	return seg->device_bytes;
}
