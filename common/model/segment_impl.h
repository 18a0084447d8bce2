/* segment_impl.h — the private layout of sc_segment, shared by segment.c
 * (memory), segment_io.c (weights and adapter state) and segment_exec.c
 * (forward, backward, optimizer). Not a public header. */
#ifndef SC_SEGMENT_IMPL_H
#define SC_SEGMENT_IMPL_H

#include "sc_segment.h"

#define BE_CALL(seg, op, ...) ((seg)->be->ops->op((seg)->be, __VA_ARGS__))

typedef struct layer_base {
	float *ln1_w, *ln1_b, *ln2_w, *ln2_b; /* (C) */
	float *w[SC_T_COUNT];                 /* (in, out), HF Conv1D layout */
	float *b[SC_T_COUNT];                 /* (out) */
} layer_base;

typedef struct layer_acts {
	float *ln1;                 /* (B,T,C) */
	float *ln1_mean, *ln1_rstd; /* (B,T) */
	float *qkv;                 /* (B,T,3C) */
	float *atty;                /* (B,T,C) */
	float *att;                 /* attention state, attn_state floats */
	float *res2;                /* (B,T,C) */
	float *ln2;                 /* (B,T,C) */
	float *ln2_mean, *ln2_rstd; /* (B,T) */
	float *fch;                 /* (B,T,4C) */
	float *fch_gelu;            /* (B,T,4C) */
	float *res3;                /* (B,T,C) the layer's output */
	float *u[SC_T_COUNT];       /* (B,T,r) x @ A^T, adapted targets only */
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

struct sc_segment {
	sc_backend *be;
	sc_segment_spec spec;
	int nl;      /* layers held: last - first */
	float scale; /* LoRA alpha / r */

	void *base_mem;       /* frozen weights */
	float *wte;           /* (V,C) first or last segment */
	float *wpe;           /* (P,C) first segment */
	float *lnf_w, *lnf_b; /* (C) last segment */
	layer_base *base;     /* (nl) */

	/* LoRA groups: one flat vector each, lora_floats long. */
	size_t lora_floats;
	size_t *layer_off;             /* (nl + 1) start of each layer in the vector */
	size_t (*tgt_off)[SC_T_COUNT]; /* (nl) start of A of each target; B follows */
	float *group[4];               /* params, grad, m, v (sc_segment_group order) */

	slot *slots;                     /* (spec.slots) */
	size_t attn_state, attn_scratch; /* floats, as the backend's attention_sizes says */

	void *scratch_mem;
	float *dcur;   /* (B,T,C) gradient flowing down the layers */
	float *dln;    /* (B,T,C) */
	float *dbig;   /* (B,T,4C), also dqkv (B,T,3C) */
	float *datt;   /* attention scratch, attn_scratch floats */
	float *du;     /* (B,T,r) */
	float *logits; /* (B,T,V) last segment */
	float *losses; /* (B,T) last segment */

	float *host_losses; /* (B,T) */
	float *host_stage;  /* staging for weight loads: the largest tensor */
	size_t host_stage_floats;
	size_t device_bytes;
};

static inline size_t seg_N(const sc_segment *seg)
{
	return (size_t)seg->spec.B * (size_t)seg->spec.T;
}

#endif
