/* layer.h — one layer of a segment as a family's forward and backward see
 * it, and the pieces every family composes: the frozen linear projection
 * with its LoRA adapter, and the rotary tables. Private to common/model/. */
#ifndef SC_LAYER_H
#define SC_LAYER_H

#include "sc_backend.h"
#include "sc_family.h"

/* Views into the segment's buffers (all device memory of be), valid for one
 * call of layer_forward / layer_backward. */
struct sc_layer {
	sc_backend *be;
	const sc_family *fam;
	const sc_model_config *mc;
	int N;            /* rows = B * T */
	int r;            /* LoRA rank */
	float lora_scale; /* alpha / r */
	sc_attn_shape attn;
	float *const *w; /* (fam->n_layer_params) frozen tensors; NULL when absent */
	/* (targets) a quantized model's projections, or NULL (float weights):
	 * the linear functions then use qw[t] in place of W, dequantized a
	 * tile at a time into qtile (qtile_floats). */
	const sc_qweight *qw;
	float *qtile;
	size_t qtile_floats;
	float *const *a;       /* (fam->n_layer_acts) this micro-batch's activations */
	float *const *s;       /* (fam->n_scratch) backward scratch */
	const float *const *A; /* (targets) A (r,in), B (out,r) follows; NULL: not adapted */
	float *const *dA;      /* (targets) dA, dB follows */
	float *const *u;       /* (targets) (N,r) inp @ A^T, kept for the backward */
	float *du;             /* (N,r) scratch */
	const float *rope_cos, *rope_sin; /* (T, hs/2) from this call's first position, or NULL */
	/* Generation: the layer's key/value caches (B,P,NKV*hs) and the first
	 * position of this call's rows; kc NULL when training. */
	float *kc, *vc;
	int pos0, P;
};

/* Causal self-attention of the layer's qkv (B,T,QKV) into out: training's
 * attention_forward (state kept for the backward), or with a KV cache the
 * new rows against the cache (attention_kv; state unused). */
sc_err sc_layer_attention(const sc_layer *L, float *out, float *state, float *qkv);

/* out (N,o), rows ldo apart, = inp (N,in) @ W^T (+ bias (o) when not NULL),
 * plus target t's adapter scale * (inp @ A^T) @ B^T when t is adapted
 * (t < 0: no adapter). W is (in,out) when the family's fan_in_fan_out,
 * else (out,in); with L->qw (a quantized model) W is ignored (NULL) and
 * L->qw[t] is used. */
sc_err sc_layer_linear_forward(const sc_layer *L, int t, const float *W, const float *bias,
			       float *out, int ldo, const float *inp);

/* dinp (N,in) = dout @ W (+ the adapter's share), added to dinp when
 * accumulate, else overwritten; dout (N,o) rows lddo apart; inp is the
 * forward's input. The adapter's dA, dB accumulate. */
sc_err sc_layer_linear_backward(const sc_layer *L, int t, const float *W, float *dinp,
				int accumulate, const float *dout, int lddo, const float *inp);

/* The rotary tables of c for positions 0..T-1: cos, sin (T, hs/2), with
 * rope_theta and rope_scaling applied as Hugging Face computes them (the
 * angles in double, then rounded). */
void sc_rope_tables(const sc_model_config *c, int T, float *cos_t, float *sin_t);

#define LAYER_OP(L, op, ...) SC_TRY((L)->be->ops->op((L)->be, __VA_ARGS__))

#endif
