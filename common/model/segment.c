/* segment.c — a segment's memory: validates the spec, lays out and allocates
 * every device buffer group once (see sc_segment.h), and frees them. What a
 * layer holds is its family's business (sc_family.h); this file only sizes
 * and carves. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sc_layer_quant.h"
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

static size_t numel(const sc_param_desc *p)
{
	return p->ndim ? (size_t)p->shape[0] * (size_t)(p->ndim == 2 ? p->shape[1] : 1) : 0;
}

/* Whether the segment holds model-wide tensor g. */
static int holds_global(const sc_segment *seg, int g)
{
	int first = sc_segment_is_first(seg), last = sc_segment_is_last(seg);
	switch (g) {
	case SC_GP_EMBED: return first || (last && seg->spec.model.tie_embeddings);
	case SC_GP_POS: return first;
	default: return last; /* final norm and head */
	}
}

int seg_quant_target(const sc_segment *seg, const sc_param_desc *p)
{
	char suffix[128];
	size_t n = strlen(p->name);
	for (int t = 0; p->ndim == 2 && t < seg->fam->n_targets; t++) {
		size_t m =
		    (size_t)snprintf(suffix, sizeof(suffix), ".%s.weight", seg->fam->targets[t]);
		if (n > m && !strcmp(p->name + n - m, suffix))
			return t;
	}
	return -1;
}

int seg_layer_format(const sc_segment *seg, int l)
{
	return sc_layer_quant_of(&seg->spec.model, seg->spec.first + l);
}

/* Whether any layer of the segment holds quantized projections. */
static int seg_any_quant(const sc_segment *seg)
{
	for (int l = 0; l < seg->nl; l++)
		if (seg_layer_format(seg, l) >= 0)
			return 1;
	return 0;
}

void seg_quant_spec(const sc_segment *seg, int l, const sc_param_desc *p, sc_quant_spec *qs)
{
	const sc_model_config *mc = &seg->spec.model;
	/* l < 0: the token embedding or LM head, which a segment holds
	 * quantized only as bf16 (seg_bf16_globals) */
	int f = l < 0 ? SC_QUANT_BF16 : seg_layer_format(seg, l);
	/* Double quantization is the job's nf4 base's; a layer lowered to
	 * nf4 from another base has none. */
	int dq = f == SC_QUANT_NF4 && mc->quantized && mc->quant_format == SC_QUANT_NF4 &&
		 mc->quant_double;
	*qs = (sc_quant_spec){ .format = (enum sc_quant_format)f,
			       .rows = (size_t)p->shape[0],
			       .cols = (size_t)p->shape[1],
			       .row_major_out = !seg->fam->fan_in_fan_out,
			       .double_quant = dq };
}

/* Floats that hold bytes bytes. */
static size_t byte_floats(size_t bytes)
{
	return (bytes + sizeof(float) - 1) / sizeof(float);
}

/* The parts of quantized projection p, sized by sc_quant_size. */
static void layout_qweight(sc_segment *seg, arena *a, int l, const sc_param_desc *p, sc_qweight *q)
{
	sc_quant_spec qs;
	sc_quant_sizes z;
	seg_quant_spec(seg, l, p, &qs);
	if (sc_quant_size(&qs, &z)) /* checked in sc_segment_new */
		memset(&z, 0, sizeof(z));
	*q = (sc_qweight){
		.format = qs.format == SC_QUANT_NF4    ? SC_QW_NF4
			  : qs.format == SC_QUANT_BF16 ? SC_QW_BF16
						       : SC_QW_INT8,
		.rows = (int)qs.rows,
		.cols = (int)qs.cols,
		.scale_rows = qs.row_major_out,
		.q = (const uint8_t *)take(a, byte_floats(z.qweight)),
		.scales = z.scales ? take(a, z.scales) : NULL,
		.scales_q = z.scales_q ? (const uint8_t *)take(a, byte_floats(z.scales_q)) : NULL,
		.scales_scale = z.scales_scale ? take(a, z.scales_scale) : NULL,
		.scales_offset = z.scales_offset ? take(a, z.scales_offset) : NULL,
	};
}

/* The frozen weights. */
static void layout_base(sc_segment *seg, arena *a)
{
	const sc_model_config *mc = &seg->spec.model;
	sc_param_desc gp[SC_GP_COUNT], lp[SC_FAMILY_MAX_PARAMS];

	seg->fam->global_params(mc, gp);
	for (int g = 0; g < SC_GP_COUNT; g++) {
		int held = holds_global(seg, g) && gp[g].ndim, q = seg_bf16_global(seg, g);
		seg->gp[g] = held && !q ? take(a, numel(&gp[g])) : NULL;
		if (held && q)
			layout_qweight(seg, a, -1, &gp[g], &seg->gq[g]);
	}
	seg->head = seg->gp[SC_GP_HEAD]       ? seg->gp[SC_GP_HEAD]
		    : sc_segment_is_last(seg) ? seg->gp[SC_GP_EMBED]
					      : NULL;
	seg->head_q = seg->gq[SC_GP_HEAD].q                               ? &seg->gq[SC_GP_HEAD]
		      : sc_segment_is_last(seg) && seg->gq[SC_GP_EMBED].q ? &seg->gq[SC_GP_EMBED]
									  : NULL;
	for (int l = 0; l < seg->nl; l++) {
		seg->fam->layer_params(mc, seg->spec.first + l, lp);
		for (int p = 0; p < seg->fam->n_layer_params; p++) {
			int t = seg->lq && seg_layer_format(seg, l) >= 0
				    ? seg_quant_target(seg, &lp[p])
				    : -1;
			seg->lw[l][p] = lp[p].ndim && t < 0 ? take(a, numel(&lp[p])) : NULL;
			if (t >= 0)
				layout_qweight(seg, a, l, &lp[p], &seg->lq[l][t]);
		}
	}
}

/* One activation slot. */
static void layout_slot(sc_segment *seg, slot *s, arena *a)
{
	const sc_segment_spec *sp = &seg->spec;
	size_t N = seg_N(seg), C = (size_t)sp->model.n_embd, r = (size_t)sp->lora.rank;
	size_t sizes[SC_FAMILY_MAX_ACTS];

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
	seg->fam->act_sizes(&sp->model, N, seg->attn_state, sizes);
	for (int l = 0; l < seg->nl; l++) {
		layer_acts *la = &s->layers[l];
		for (int k = 0; k < seg->fam->n_layer_acts; k++)
			la->a[k] = take(a, sizes[k]);
		for (int t = 0; t < seg->fam->n_targets; t++)
			la->u[t] = seg_has_target(seg, t) ? take(a, N * r) : NULL;
	}
}

/* Backward buffers shared by all slots. */
static void layout_scratch(sc_segment *seg, arena *a)
{
	const sc_segment_spec *sp = &seg->spec;
	size_t N = seg_N(seg), C = (size_t)sp->model.n_embd;
	size_t sizes[SC_FAMILY_MAX_SCRATCH];

	/* The rotary tables depend on the positions the segment runs, not on
	 * the weights: they are the segment's own, beside a shared base. */
	if (sp->model.rope_theta > 0) {
		int P = seg_generating(seg) ? sp->kv_positions : sp->T;
		size_t n = (size_t)P * (size_t)(sp->model.head_dim / 2);
		seg->rope_cos = take(a, n);
		seg->rope_sin = take(a, n);
	}
	if (seg->lq)
		seg->qtile = take(a, seg->qtile_floats);
	if (seg_generating(seg)) { /* no backward: only the logits */
		if (sc_segment_is_last(seg))
			seg->infer_logits = take(a, (size_t)sp->B * (size_t)sp->model.vocab_size);
		return;
	}
	seg->dcur = take(a, N * C);
	seg->fam->scratch_sizes(&sp->model, N, seg->attn_scratch, sizes);
	for (int k = 0; k < seg->fam->n_scratch; k++)
		seg->s[k] = take(a, sizes[k]);
	seg->du = take(a, N * (size_t)sp->lora.rank);
	if (sc_segment_is_last(seg)) {
		seg->dnorm = take(a, N * C);
		seg->logits = take(a, N * (size_t)sp->model.vocab_size);
		seg->losses = take(a, N);
	}
}

/* Measures a layout, allocates it, and lays it out for real. */
/* Lays out one allocation with fn: sizes it, allocates it (not in a dry
 * run: seg->be NULL), then lays it out for real. *counted (may be NULL)
 * receives its bytes as well as seg->device_bytes. */
static sc_err alloc_laid_out(sc_segment *seg, void **mem, void (*fn)(sc_segment *, void *, arena *),
			     void *arg, size_t *counted)
{
	arena a = { NULL, 0 };
	fn(seg, arg, &a);
	seg->device_bytes += a.used * sizeof(float);
	if (counted)
		*counted += a.used * sizeof(float);
	if (!seg->be)
		return SC_OK;
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

/* Generation: each layer's key and value caches. */
static void kv_fn(sc_segment *seg, void *arg, arena *a)
{
	const sc_model_config *mc = &seg->spec.model;
	size_t n = (size_t)seg->spec.B * (size_t)seg->spec.kv_positions * (size_t)mc->n_kv_head *
		   (size_t)mc->head_dim;
	for (int l = 0; l < seg->nl; l++) {
		seg->kc[l] = take(a, n);
		seg->vc[l] = take(a, n);
	}
}

static sc_err validate_spec(const sc_segment_spec *sp)
{
	SC_TRY(sc_config_validate(&sp->model));
	SC_TRY(sc_lora_config_validate(&sp->lora, &sp->model));
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
	if (sp->kv_positions < 0 || sp->kv_positions > sp->model.n_positions ||
	    (sp->kv_positions && (sp->slots != 1 || sp->T > sp->kv_positions)))
		return sc_errf(
		    SC_EINVAL,
		    "a generation segment needs one slot, %d <= %d cached positions <= the "
		    "model's %d",
		    sp->T, sp->kv_positions, sp->model.n_positions);
	if ((double)sp->B * sp->T * sp->model.vocab_size > 2e9 ||
	    (double)sp->B * sp->T * 2 * sp->model.n_inner > 2e9)
		return sc_errf(SC_EINVAL,
			       "micro-batch %dx%d is too large for one buffer; use more "
			       "micro-batches of fewer rows",
			       sp->B, sp->T);
	return SC_OK;
}

/* A bf16 base (or int8 / nf4 with bf16 products: seg_bf16_globals) also
 * holds the token embedding and LM head bf16: the first
 * segment's lookup needs encoder_forward_q; the last segment's head runs
 * logits (N,V) = lnf (N,C) W^T and dnorm (N,C) = dlogits (N,V) W through
 * gemm_q, whose tile holds SC_QTILE_COLS output columns of k = C forward,
 * k = V backward (oneDNN: then dlogits goes 2 SC_QTILE_COLS rows at a
 * time, rounded to bf16, not all N * V of it). */
static sc_err bf16_globals_setup(sc_segment *seg)
{
	const sc_model_config *mc = &seg->spec.model;
	size_t C = (size_t)mc->n_embd, V = (size_t)mc->vocab_size, cols = SC_QTILE_COLS;
	if (seg->be && sc_segment_is_first(seg) && !sc_backend_has_encoder_q(seg->be))
		return sc_errf(SC_ENOTSUP,
			       "a bf16 base holds the token embedding in bf16: its lookup needs "
			       "a backend that looks up quantized rows (%s does not)",
			       seg->be->name);
	if (!sc_segment_is_last(seg))
		return SC_OK;
	size_t fwd = (V < cols ? V : cols) * C,
	       bwd = seg_generating(seg) ? 0 : (C < cols ? C : cols) * V;
	fwd = fwd > bwd ? fwd : bwd;
	seg->qtile_floats = fwd > seg->qtile_floats ? fwd : seg->qtile_floats;
	return SC_OK;
}

/* The floats of gemm_q's tile for bf16 products of N rows over k with
 * cols output columns (sc_qweight.bf16_compute): N rows of k bf16, a
 * panel of min(cols, 2 SC_QTILE_COLS) columns of k bf16, 32 bf16 of
 * alignment. */
static size_t bf16_need(size_t N, size_t k, size_t cols)
{
	size_t panel = cols < 2 * SC_QTILE_COLS ? cols : 2 * SC_QTILE_COLS;
	return (N * k + panel * k + 32 + 1) / 2;
}

/* A quantized model: the tile scratch gemm_q needs (SC_QTILE_COLS output
 * columns of the largest k: forward k = in, backward k = out; for bf16
 * also the whole activation op(a) (N, k) rounded to bf16, N * k / 2
 * floats, so that a bf16 x bf16 product takes all N rows in one call),
 * and whether the backend can run it at all. */
static sc_err quant_setup(sc_segment *seg)
{
	const sc_model_config *mc = &seg->spec.model;
	sc_param_desc lp[SC_FAMILY_MAX_PARAMS];
	sc_quant_spec qs;
	sc_quant_sizes z;
	int bf16_panels = 0; /* an int8 / nf4 layer multiplied as bf16 */

	for (int l = 0; l < seg->nl; l++) {
		int f = seg_layer_format(seg, l);
		if (f < 0)
			continue;
		bf16_panels |= mc->compute_bf16 && f != SC_QUANT_BF16;
		seg->fam->layer_params(mc, seg->spec.first + l, lp);
		for (int p = 0; p < seg->fam->n_layer_params; p++) {
			if (seg_quant_target(seg, &lp[p]) < 0)
				continue;
			if (seg->be && !sc_backend_has_gemm_q(seg->be))
				return sc_errf(
				    SC_ENOTSUP,
				    "'%s' is quantized (%s): quantized base weights need a backend "
				    "with quantized GEMMs (this segment is on %s)",
				    lp[p].name,
				    sc_quant_name((enum sc_quant_format)seg_layer_format(seg, l)),
				    seg->be->name);
			seg_quant_spec(seg, l, &lp[p], &qs);
			SC_TRY(sc_quant_size(&qs, &z));
		}
	}
	for (int t = 0; t < seg->fam->n_targets; t++) {
		int in, o;
		seg->fam->target_dims(mc, t, &in, &o);
		size_t fwd = (size_t)(o < SC_QTILE_COLS ? o : SC_QTILE_COLS) * (size_t)in;
		size_t bwd = (size_t)(in < SC_QTILE_COLS ? in : SC_QTILE_COLS) * (size_t)o;
		if (seg_generating(seg))
			bwd = 0;
		fwd = fwd > bwd ? fwd : bwd;
		if (mc->quantized && mc->quant_format == SC_QUANT_BF16) {
			size_t k = (size_t)(seg_generating(seg) || in > o ? in : o);
			size_t act = (seg_N(seg) * k + 1) / 2;
			fwd = act > fwd ? act : fwd;
		}
		if (bf16_panels) {
			/* all N rows of op(a) in bf16 and a panel of up to 2
			 * SC_QTILE_COLS bf16 columns of W, each k long, plus
			 * 32 bf16 to align the rows after the panel */
			size_t pf = bf16_need(seg_N(seg), (size_t)in, (size_t)o);
			size_t pb =
			    seg_generating(seg) ? 0 : bf16_need(seg_N(seg), (size_t)o, (size_t)in);
			pf = pf > pb ? pf : pb;
			fwd = pf > fwd ? pf : fwd;
		}
		seg->qtile_floats = fwd > seg->qtile_floats ? fwd : seg->qtile_floats;
	}
	if (seg_bf16_globals(seg))
		SC_TRY(bf16_globals_setup(seg));
	seg->lq = calloc((size_t)seg->nl, sizeof(*seg->lq));
	return seg->lq ? SC_OK : sc_errf(SC_ENOMEM, "out of memory");
}

/* The LoRA vector's layout: layer by layer, target by target, A then B. */
static size_t layout_lora(sc_segment *seg)
{
	size_t off = 0;
	for (int l = 0; l < seg->nl; l++) {
		seg->layer_off[l] = off;
		for (int t = 0; t < seg->fam->n_targets; t++) {
			int in, o;
			if (!seg_has_target(seg, t))
				continue;
			seg->fam->target_dims(&seg->spec.model, t, &in, &o);
			seg->tgt_off[l][t] = off;
			off += (size_t)seg->spec.lora.rank * (size_t)(in + o);
		}
	}
	seg->layer_off[seg->nl] = off;
	return off;
}

/* sc_segment_new, or its dry run (be NULL): everything laid out and counted
 * in seg->device_bytes (by group in *bytes, may be NULL), no device memory
 * allocated; attn gives the attention sizes then (state, scratch floats). */
static sc_err build(sc_segment **out, sc_backend *be, const sc_segment_spec *spec,
		    const size_t *attn, sc_segment_bytes *bytes, const sc_segment *donor)
{
	sc_segment_bytes by = { 0 };
	sc_segment *seg;
	sc_err rc;

	*out = NULL;
	SC_TRY(validate_spec(spec));
	seg = calloc(1, sizeof(*seg));
	if (!seg)
		return sc_errf(SC_ENOMEM, "out of memory");
	seg->be = be;
	seg->fam = sc_family_of(&spec->model);
	seg->spec = *spec;
	seg->nl = spec->last - spec->first;
	seg->scale = spec->lora.alpha / (float)spec->lora.rank;
	seg->attn = (sc_attn_shape){ .B = spec->B,
				     .T = spec->T,
				     .NH = spec->model.n_head,
				     .NKV = spec->model.n_kv_head,
				     .hs = spec->model.head_dim,
				     .window = spec->model.sliding_window };
	seg->lw = calloc((size_t)seg->nl, sizeof(*seg->lw));
	seg->layer_off = calloc((size_t)seg->nl + 1, sizeof(size_t));
	seg->tgt_off = calloc((size_t)seg->nl, sizeof(*seg->tgt_off));
	seg->slots = calloc((size_t)spec->slots, sizeof(slot));
	seg->host_losses = malloc(seg_N(seg) * sizeof(float));
	if (!seg->lw || !seg->layer_off || !seg->tgt_off || !seg->slots || !seg->host_losses) {
		rc = sc_errf(SC_ENOMEM, "out of memory");
		goto fail;
	}
	seg->lora_floats = layout_lora(seg);
	if (seg_any_quant(seg) && (rc = quant_setup(seg)))
		goto fail;
	if (spec->kv_positions) { /* attention reads the cache: nothing kept, no backward */
		seg->kc = calloc((size_t)seg->nl, sizeof(float *));
		seg->vc = calloc((size_t)seg->nl, sizeof(float *));
		if (!seg->kc || !seg->vc) {
			rc = sc_errf(SC_ENOMEM, "out of memory");
			goto fail;
		}
		rc = SC_OK;
	} else if (!be) {
		seg->attn_state = attn[0];
		seg->attn_scratch = attn[1];
		rc = SC_OK;
	} else {
		rc =
		    BE_CALL(seg, attention_sizes, &seg->attn, &seg->attn_state, &seg->attn_scratch);
	}
	if (rc == SC_OK && (seg->attn_state > (size_t)2e9 || seg->attn_scratch > (size_t)2e9))
		rc = sc_errf(SC_EINVAL,
			     "micro-batch %dx%d needs %zu floats of attention state on %s, too "
			     "many for one buffer; use more micro-batches of fewer rows",
			     spec->B, spec->T, seg->attn_state, be ? be->name : "this device");
	if (rc != SC_OK)
		goto fail;
	for (int g = 0; g < (spec->kv_positions ? 1 : 4); g++) {
		seg->device_bytes += seg->lora_floats * sizeof(float);
		by.lora += seg->lora_floats * sizeof(float);
		if (be && (rc = BE_CALL(seg, alloc, (void **)&seg->group[g],
					seg->lora_floats * sizeof(float))))
			goto fail;
	}
	if (donor) { /* the donor's weights, laid out as its own */
		arena a = { donor->base_mem, 0 };
		layout_base(seg, &a);
		seg->base = donor->base;
		seg->sharer = 1;
		seg->base_mem = donor->base_mem;
		atomic_fetch_add(&seg->base->refs, 1);
		seg->device_bytes += seg->base->bytes;
		by.base = seg->base->bytes;
	} else {
		if (be && !(seg->base = calloc(1, sizeof(*seg->base)))) {
			rc = sc_errf(SC_ENOMEM, "out of memory");
			goto fail;
		}
		if ((rc = alloc_laid_out(seg, &seg->base_mem, base_fn, NULL, &by.base)))
			goto fail;
		if (seg->base) {
			seg->base->mem = seg->base_mem;
			seg->base->bytes = by.base;
			atomic_init(&seg->base->refs, 1);
		}
	}
	for (int i = 0; i < spec->slots; i++) {
		slot *s = &seg->slots[i];
		s->layers = calloc((size_t)seg->nl, sizeof(layer_acts));
		if (!s->layers) {
			rc = sc_errf(SC_ENOMEM, "out of memory");
			goto fail;
		}
		if ((rc = alloc_laid_out(seg, &s->mem, slot_fn, s, &by.acts)))
			goto fail;
	}
	if ((rc = alloc_laid_out(seg, &seg->scratch_mem, scratch_fn, NULL, &by.scratch)))
		goto fail;
	if (spec->kv_positions && (rc = alloc_laid_out(seg, &seg->kv_mem, kv_fn, NULL, &by.kv)))
		goto fail;
	by.total = seg->device_bytes;
	seg->bytes = by;
	if (bytes)
		*bytes = by;
	*out = seg;
	return SC_OK;
fail:
	sc_segment_free(seg);
	return sc_err_wrap(rc, "segment [%d, %d)", spec->first, spec->last);
}

sc_err sc_segment_new(sc_segment **out, sc_backend *be, const sc_segment_spec *spec)
{
	return build(out, be, spec, NULL, NULL, NULL);
}

int sc_segment_can_share(const sc_segment *donor, const sc_backend *be, const sc_segment_spec *spec)
{
	return donor && donor->be == be && be && donor->base && donor->base->loaded &&
	       donor->spec.first == spec->first && donor->spec.last == spec->last &&
	       sc_config_equal(&donor->spec.model, &spec->model);
}

sc_err sc_segment_new_sharing(sc_segment **out, sc_backend *be, const sc_segment_spec *spec,
			      const sc_segment *donor)
{
	*out = NULL;
	if (!sc_segment_can_share(donor, be, spec))
		return sc_errf(SC_EINVAL,
			       "segment [%d, %d) cannot share the frozen weights of segment [%d, "
			       "%d): another model, format, layer range or device, or not loaded",
			       spec->first, spec->last, donor ? donor->spec.first : 0,
			       donor ? donor->spec.last : 0);
	SC_TRY(build(out, be, spec, NULL, NULL, donor));
	sc_err rc = (*out)->rope_cos ? seg_load_rope(*out) : SC_OK;
	if (rc) {
		sc_segment_free(*out);
		*out = NULL;
	}
	return rc;
}

const void *sc_segment_base_id(const sc_segment *seg)
{
	return seg->base;
}

void sc_segment_bytes_of(const sc_segment *seg, sc_segment_bytes *out)
{
	*out = seg->bytes;
}

int sc_segment_base_users(const sc_segment *seg)
{
	return seg->base ? atomic_load(&seg->base->refs) : 0;
}

sc_err sc_segment_predict(const sc_segment_spec *spec, const char *device, sc_segment_bytes *out)
{
	sc_segment *seg = NULL;
	sc_attn_shape sh = { .B = spec->B,
			     .T = spec->T,
			     .NH = spec->model.n_head,
			     .NKV = spec->model.n_kv_head,
			     .hs = spec->model.head_dim,
			     .window = spec->model.sliding_window };
	size_t attn[2] = { 0, 0 };
	sc_err rc;

	memset(out, 0, sizeof(*out));
	SC_TRY(validate_spec(spec));
	if (!spec->kv_positions)
		SC_TRY(sc_backend_attention_sizes_of(device, &sh, &attn[0], &attn[1]));
	rc = build(&seg, NULL, spec, attn, out, NULL);
	sc_segment_free(seg);
	return rc;
}

void sc_segment_free(sc_segment *seg)
{
	if (!seg)
		return;
	for (int g = 0; seg->be && g < 4; g++)
		BE_CALL(seg, free_buf, seg->group[g]);
	if (seg->be) { /* else a dry run: nothing allocated on a device */
		if (seg->base && atomic_fetch_sub(&seg->base->refs, 1) == 1) {
			seg->be->ops->free_buf(seg->be, seg->base->mem);
			free(seg->base);
		}
		seg->be->ops->free_buf(seg->be, seg->scratch_mem);
		seg->be->ops->free_buf(seg->be, seg->kv_mem);
	}
	free(seg->kc);
	free(seg->vc);
	for (int i = 0; seg->slots && i < seg->spec.slots; i++) {
		if (seg->be)
			seg->be->ops->free_buf(seg->be, seg->slots[i].mem);
		free(seg->slots[i].layers);
	}
	free(seg->slots);
	free(seg->lw);
	free(seg->lq);
	free(seg->layer_off);
	free(seg->tgt_off);
	free(seg->host_losses);
	free(seg->host_stage);
	free(seg);
}

void sc_segment_layer_view(const sc_segment *seg, int l, const slot *s, sc_layer *L,
			   const float **A, float **dA)
{
	for (int t = 0; t < SC_LORA_MAX_TARGETS; t++) {
		int on = t < seg->fam->n_targets && seg_has_target(seg, t);
		A[t] = on ? seg->group[SC_G_LORA] + seg->tgt_off[l][t] : NULL;
		dA[t] =
		    on && seg->group[SC_G_GRAD] ? seg->group[SC_G_GRAD] + seg->tgt_off[l][t] : NULL;
	}
	*L = (sc_layer){
		.be = seg->be,
		.fam = seg->fam,
		.mc = &seg->spec.model,
		.N = (int)seg_N(seg),
		.r = seg->spec.lora.rank,
		.lora_scale = seg->scale,
		.attn = seg->attn,
		.w = seg->lw[l],
		.qw = seg->lq && seg_layer_format(seg, l) >= 0 ? seg->lq[l] : NULL,
		.qtile = seg->qtile,
		.qtile_floats = seg->qtile_floats,
		.a = s->layers[l].a,
		.s = seg->s,
		.A = A,
		.dA = dA,
		.u = s->layers[l].u,
		.du = seg->du,
		.rope_cos = seg->rope_cos,
		.rope_sin = seg->rope_sin,
	};
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
