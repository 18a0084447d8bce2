/* layer.c — the linear projection with its LoRA adapter, and the rotary
 * tables, shared by every family's layer. */
#include <math.h>

#include "layer.h"

static void dims(const sc_layer *L, int t, int *in, int *out)
{
	L->fam->target_dims(L->mc, t, in, out);
}

/* W's (rows, cols) and whether gemm must transpose it to get (in, out). */
static void weight_view(const sc_layer *L, int in, int o, int *ldw, int *trans)
{
	*trans = !L->fam->fan_in_fan_out;
	*ldw = *trans ? in : o;
}

/* c (N,n) = op(a) @ op(W) + beta * c for target t's frozen weight: W, or
 * the quantized qw[t] through the backend's tiled gemm_q (as bf16
 * products when the job's precision is bf16: mc->compute_bf16). */
static sc_err proj_gemm(const sc_layer *L, int t, const float *W, int trans_b, int n, int k,
			const float *a, int lda, int ldw, float beta, float *c, int ldc)
{
	if (L->qw) {
		sc_qweight q = L->qw[t];
		q.bf16_compute = L->mc->compute_bf16;
		return sc_backend_gemm_q(L->be, 0, trans_b, L->N, n, k, 1.0f, a, lda, &q, beta, c,
					 ldc, L->qtile, L->qtile_floats);
	}
	LAYER_OP(L, gemm, 0, trans_b, L->N, n, k, 1.0f, a, lda, W, ldw, beta, c, ldc);
	return SC_OK;
}

sc_err sc_layer_linear_forward(const sc_layer *L, int t, const float *W, const float *bias,
			       float *out, int ldo, const float *inp)
{
	int in, o, ldw, trans, r = L->r;
	dims(L, t, &in, &o);
	weight_view(L, in, o, &ldw, &trans);
	SC_TRY(proj_gemm(L, t, W, trans, o, in, inp, in, ldw, 0.0f, out, ldo));
	if (bias)
		LAYER_OP(L, add_bias, out, bias, L->N, o, ldo);
	if (L->A[t]) {
		const float *A = L->A[t], *B = A + (size_t)r * in;
		LAYER_OP(L, gemm, 0, 1, L->N, r, in, 1.0f, inp, in, A, in, 0.0f, L->u[t], r);
		LAYER_OP(L, gemm, 0, 1, L->N, o, r, L->lora_scale, L->u[t], r, B, r, 1.0f, out,
			 ldo);
	}
	return SC_OK;
}

sc_err sc_layer_linear_backward(const sc_layer *L, int t, const float *W, float *dinp,
				int accumulate, const float *dout, int lddo, const float *inp)
{
	int in, o, ldw, trans, r = L->r, N = L->N;
	dims(L, t, &in, &o);
	weight_view(L, in, o, &ldw, &trans);
	SC_TRY(
	    proj_gemm(L, t, W, !trans, in, o, dout, lddo, ldw, accumulate ? 1.0f : 0.0f, dinp, in));
	if (L->A[t]) {
		const float *A = L->A[t], *B = A + (size_t)r * in;
		float *dA = L->dA[t], *dB = dA + (size_t)r * in, *du = L->du;
		/* du (N,r) = scale * dout @ B */
		LAYER_OP(L, gemm, 0, 0, N, r, o, L->lora_scale, dout, lddo, B, r, 0.0f, du, r);
		LAYER_OP(L, gemm, 1, 0, o, r, N, L->lora_scale, dout, lddo, L->u[t], r, 1.0f, dB,
			 r);
		LAYER_OP(L, gemm, 1, 0, r, in, N, 1.0f, du, r, inp, in, 1.0f, dA, in);
		LAYER_OP(L, gemm, 0, 0, N, in, r, 1.0f, du, r, A, in, 1.0f, dinp, in);
	}
	return SC_OK;
}

sc_err sc_layer_attention(const sc_layer *L, float *out, float *state, float *qkv)
{
	if (L->kc)
		LAYER_OP(L, attention_kv, out, L->kc, L->vc, qkv, L->pos0, L->P, &L->attn);
	else
		LAYER_OP(L, attention_forward, out, state, qkv, &L->attn);
	return SC_OK;
}

/* The inverse frequency of pair i of hs, scaled as c->rope_scaling says. */
static double inv_freq(const sc_model_config *c, int i)
{
	double f = 1.0 / pow(c->rope_theta, (2.0 * i) / c->head_dim);
	if (c->rope_scaling == SC_ROPE_LINEAR)
		return f / c->rope_factor;
	if (c->rope_scaling == SC_ROPE_LLAMA3) {
		/* Long wavelengths are slowed by factor, short ones kept, and
		 * those between blended smoothly. */
		double old = c->rope_original_max_positions, wavelen = 2.0 * M_PI / f;
		double low_wavelen = old / c->rope_low_freq_factor;
		double high_wavelen = old / c->rope_high_freq_factor;
		if (wavelen < high_wavelen)
			return f;
		if (wavelen > low_wavelen)
			return f / c->rope_factor;
		double smooth = (old / wavelen - c->rope_low_freq_factor) /
				(c->rope_high_freq_factor - c->rope_low_freq_factor);
		return (1.0 - smooth) * f / c->rope_factor + smooth * f;
	}
	return f;
}

void sc_rope_tables(const sc_model_config *c, int T, float *cos_t, float *sin_t)
{
	int half = c->head_dim / 2;
	for (int i = 0; i < half; i++) {
		double f = inv_freq(c, i);
		for (int t = 0; t < T; t++) {
			double a = (double)t * f;
			cos_t[(size_t)t * half + i] = (float)cos(a);
			sin_t[(size_t)t * half + i] = (float)sin(a);
		}
	}
}
