/* segment_impl.h — the private layout of sc_segment, shared by segment.c
 * (memory), segment_io.c (weights and adapter state) and segment_exec.c
 * (forward, backward, optimizer). Not a public header. */
#ifndef SC_SEGMENT_IMPL_H
#define SC_SEGMENT_IMPL_H

#include <stdatomic.h>

#include "layer.h"
#include "sc_quant.h"
#include "sc_segment.h"

#define BE_CALL(seg, op, ...) ((seg)->be->ops->op((seg)->be, __VA_ARGS__))

typedef struct layer_acts {
	float *a[SC_FAMILY_MAX_ACTS];  /* the family's activations (act_sizes) */
	float *u[SC_LORA_MAX_TARGETS]; /* (N,r) inp @ A^T, adapted targets only */
} layer_acts;

typedef struct slot {
	void *mem;                  /* the slot's one allocation */
	int32_t *tokens;            /* (B,T) first segment */
	int32_t *targets;           /* (B,T) last segment */
	float *x;                   /* (B,T,C) the segment's input (encoded tokens on the first) */
	float *lnf;                 /* (B,T,C) last segment: final norm output */
	float *lnf_mean, *lnf_rstd; /* (B,T) */
	float *dlast;       /* (B,T,C) last segment: loss gradient at the last layer's output */
	layer_acts *layers; /* (nl) host array of views */
} slot;

/* A segment's frozen weights, shared by every segment made to share them
 * and freed by the last one freed. Never written once loaded. */
typedef struct seg_base {
	void *mem;
	atomic_int refs;
	int loaded; /* weights are in (a sharer may only join then) */
	size_t bytes;
} seg_base;

struct sc_segment {
	sc_backend *be;
	const sc_family *fam;
	sc_segment_spec spec;
	int nl;      /* layers held: last - first */
	float scale; /* LoRA alpha / r */
	sc_attn_shape attn;

	/* Frozen weights: base_mem is base->mem, which other segments of the
	 * same model and layers may share (sc_segment_new_sharing). */
	struct seg_base *base;
	int sharer; /* made by sc_segment_new_sharing: base is another's */
	void *base_mem;
	sc_segment_bytes bytes; /* by group, as built */
	float *gp[SC_GP_COUNT]; /* model-wide tensors held, else NULL */
	float *head;            /* (V,C) last segment: LM head (maybe gp[EMBED]) */
	/* A bf16 base (seg_bf16_globals): the token embedding and the LM head
	 * kept bf16 here instead (their gp entries NULL, head NULL, no fp32
	 * copy): the lookup widens rows (encoder_forward_q), the head's two
	 * products run through gemm_q. */
	sc_qweight gq[SC_GP_COUNT];
	const sc_qweight *head_q;           /* last segment: gq[HEAD], or gq[EMBED] when tied */
	float *rope_cos, *rope_sin;         /* (T, hs/2) with rotary positions */
	float *(*lw)[SC_FAMILY_MAX_PARAMS]; /* (nl) each layer's frozen tensors */
	/* A quantized model (spec.model.quantized), or any layer given its own
	 * format (spec.model.layer_quant): each quantized layer's projections,
	 * target by target, kept quantized in base (their lw entries NULL; a
	 * float layer's lq entries stay empty), and the tile scratch gemm_q
	 * dequantizes into (in scratch_mem). */
	sc_qweight (*lq)[SC_LORA_MAX_TARGETS]; /* (nl) */
	float *qtile;
	size_t qtile_floats;

	/* LoRA groups: one flat vector each, lora_floats long. */
	size_t lora_floats;
	size_t *layer_off;                      /* (nl + 1) start of each layer in the vector */
	size_t (*tgt_off)[SC_LORA_MAX_TARGETS]; /* (nl) start of A of each target; B follows */
	float *group[4];                        /* params, grad, m, v (sc_segment_group order) */

	slot *slots;                     /* (spec.slots) */
	size_t attn_state, attn_scratch; /* floats, as the backend's attention_sizes says */

	void *scratch_mem;
	float *s[SC_FAMILY_MAX_SCRATCH]; /* the family's backward scratch */
	float *dcur;                     /* (B,T,C) gradient flowing down the layers */
	float *du;                       /* (B,T,r) */
	float *dnorm;                    /* (B,T,C) last segment: gradient at the final norm */
	float *logits;                   /* (B,T,V) last segment */
	float *losses;                   /* (B,T) last segment */
	float *infer_logits;             /* (B,V) last generation segment */

	void *kv_mem;     /* generation: the key/value caches */
	float **kc, **vc; /* (nl) each layer's (B,P,NKV*hs) caches */

	float *host_losses; /* (B,T) */
	float *host_stage;  /* staging for weight loads: the largest tensor */
	size_t host_stage_floats;
	size_t device_bytes;
};

static inline size_t seg_N(const sc_segment *seg)
{
	return (size_t)seg->spec.B * (size_t)seg->spec.T;
}

static inline int seg_generating(const sc_segment *seg)
{
	return seg->spec.kv_positions > 0;
}

static inline int seg_has_target(const sc_segment *seg, int t)
{
	return (seg->spec.lora.targets >> t) & 1u;
}

/* Nonzero when the segment's base is bf16, or int8 / nf4 with bf16
 * products (a job's --precision bf16, compute_bf16): then the token
 * embedding and the LM head are held bf16 too (gq), and the head's two
 * products are bf16 ones. */
static inline int seg_bf16_globals(const sc_segment *seg)
{
	return seg->spec.model.quantized &&
	       (seg->spec.model.quant_format == SC_QUANT_BF16 || seg->spec.model.compute_bf16);
}

/* Whether model-wide tensor g is one seg_bf16_globals holds bf16. */
static inline int seg_bf16_global(const sc_segment *seg, int g)
{
	return seg_bf16_globals(seg) && (g == SC_GP_EMBED || g == SC_GP_HEAD);
}

/* The output columns gemm_q dequantizes at a time: the tile scratch holds
 * SC_QTILE_COLS * k floats for the largest k of the segment's projections. */
#define SC_QTILE_COLS 128

/* The LoRA target whose weight p is, or -1; on a quantized model exactly
 * these are kept quantized (as `splitchain quantize` writes them). */
/* Computes the rotary tables into the segment's own memory (segment_io.c). */
sc_err seg_load_rope(sc_segment *seg);
int seg_quant_target(const sc_segment *seg, const sc_param_desc *p);

/* The format segment layer l (0-based within the segment) holds its
 * projections in (sc_layer_quant_of: the layer's own, else the model's):
 * enum sc_quant_format, or -1 for float. */
int seg_layer_format(const sc_segment *seg, int l);

/* The sc_quant_spec (sc_quant.h) of quantized projection p: of segment
 * layer l (0-based within the segment), or l = -1 for a model-wide tensor
 * (an embedding or head held bf16: seg_bf16_globals). */
void seg_quant_spec(const sc_segment *seg, int l, const sc_param_desc *p, sc_quant_spec *qs);

/* The view of layer l (0-based within the segment) in slot s for the
 * family's forward / backward; A, dA (targets) are the caller's storage. */
void sc_segment_layer_view(const sc_segment *seg, int l, const slot *s, sc_layer *L,
			   const float **A, float **dA);

#endif
