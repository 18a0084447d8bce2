/* segment_exec.c — forward and backward of a segment's layers with LoRA, the
 * loss on the last segment, and the optimizer step, each composed from
 * backend operations. Shapes: see the legend in sc_backend.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "segment_impl.h"

#define OPS(seg)             ((seg)->be->ops)
#define TRY_OP(seg, op, ...) SC_TRY(OPS(seg)->op((seg)->be, __VA_ARGS__))

static const float *lora_a(const sc_segment *seg, int g, int l, int t)
{
	return seg->group[g] + seg->tgt_off[l][t];
}

/* out (N,out) = inp (N,in) @ W (in,out) + b, plus the adapter's
 * scale * (inp @ A^T) @ B^T with u = inp @ A^T (N,r) kept for backward. */
static sc_err linear_forward(sc_segment *seg, int l, int t, float *out, float *u, const float *inp)
{
	const layer_base *lb = &seg->base[l];
	int N = (int)seg_N(seg), in, o, r = seg->spec.lora.rank;

	sc_lora_target_dims(t, seg->spec.model.n_embd, &in, &o);
	TRY_OP(seg, gemm, 0, 0, N, o, in, 1.0f, inp, in, lb->w[t], o, 0.0f, out, o);
	TRY_OP(seg, add_bias, out, lb->b[t], N, o);
	if (u) {
		const float *A = lora_a(seg, SC_G_LORA, l, t), *B = A + (size_t)r * in;
		TRY_OP(seg, gemm, 0, 1, N, r, in, 1.0f, inp, in, A, in, 0.0f, u, r);
		TRY_OP(seg, gemm, 0, 1, N, o, r, seg->scale, u, r, B, r, 1.0f, out, o);
	}
	return SC_OK;
}

/* dinp (N,in) = dout (N,out) @ W^T (+ the adapter's share), overwritten;
 * the adapter's dA (r,in) and dB (out,r) accumulate. */
static sc_err linear_backward(sc_segment *seg, int l, int t, float *dinp, const float *dout,
			      const float *inp, const float *u)
{
	const layer_base *lb = &seg->base[l];
	int N = (int)seg_N(seg), in, o, r = seg->spec.lora.rank;

	sc_lora_target_dims(t, seg->spec.model.n_embd, &in, &o);
	TRY_OP(seg, gemm, 0, 1, N, in, o, 1.0f, dout, o, lb->w[t], o, 0.0f, dinp, in);
	if (u) {
		const float *A = lora_a(seg, SC_G_LORA, l, t), *B = A + (size_t)r * in;
		float *dA = seg->group[SC_G_GRAD] + seg->tgt_off[l][t], *dB = dA + (size_t)r * in;
		float *du = seg->du; /* (N,r) = scale * dout @ B */
		TRY_OP(seg, gemm, 0, 0, N, r, o, seg->scale, dout, o, B, r, 0.0f, du, r);
		TRY_OP(seg, gemm, 1, 0, o, r, N, seg->scale, dout, o, u, r, 1.0f, dB, r);
		TRY_OP(seg, gemm, 1, 0, r, in, N, 1.0f, du, r, inp, in, 1.0f, dA, in);
		TRY_OP(seg, gemm, 0, 0, N, in, r, 1.0f, du, r, A, in, 1.0f, dinp, in);
	}
	return SC_OK;
}

static sc_err layer_forward(sc_segment *seg, int l, layer_acts *a, const float *x)
{
	const layer_base *lb = &seg->base[l];
	const sc_segment_spec *sp = &seg->spec;
	int N = (int)seg_N(seg), C = sp->model.n_embd;
	size_t NC = (size_t)N * C;
	float eps = sp->model.ln_eps;

	TRY_OP(seg, layernorm_forward, a->ln1, a->ln1_mean, a->ln1_rstd, x, lb->ln1_w, lb->ln1_b, N,
	       C, eps);
	SC_TRY(linear_forward(seg, l, SC_T_ATTN_QKV, a->qkv, a->u[SC_T_ATTN_QKV], a->ln1));
	TRY_OP(seg, attention_forward, a->atty, a->att, a->qkv, sp->B, sp->T, C, sp->model.n_head);
	SC_TRY(linear_forward(seg, l, SC_T_ATTN_PROJ, a->res2, a->u[SC_T_ATTN_PROJ], a->atty));
	TRY_OP(seg, add, a->res2, a->res2, x, NC);
	TRY_OP(seg, layernorm_forward, a->ln2, a->ln2_mean, a->ln2_rstd, a->res2, lb->ln2_w,
	       lb->ln2_b, N, C, eps);
	SC_TRY(linear_forward(seg, l, SC_T_MLP_FC, a->fch, a->u[SC_T_MLP_FC], a->ln2));
	TRY_OP(seg, gelu_forward, a->fch_gelu, a->fch, 4 * NC);
	SC_TRY(linear_forward(seg, l, SC_T_MLP_PROJ, a->res3, a->u[SC_T_MLP_PROJ], a->fch_gelu));
	TRY_OP(seg, add, a->res3, a->res3, a->res2, NC);
	return SC_OK;
}

/* dcur (N,C): on entry the gradient of the layer's output, on return that of
 * its input x. */
static sc_err layer_backward(sc_segment *seg, int l, const layer_acts *a, const float *x,
			     float *dcur)
{
	const layer_base *lb = &seg->base[l];
	const sc_segment_spec *sp = &seg->spec;
	int N = (int)seg_N(seg), C = sp->model.n_embd;
	float *dln = seg->dln, *dbig = seg->dbig;

	/* MLP: res3 = res2 + c_proj(gelu(c_fc(ln2(res2)))) */
	SC_TRY(
	    linear_backward(seg, l, SC_T_MLP_PROJ, dbig, dcur, a->fch_gelu, a->u[SC_T_MLP_PROJ]));
	TRY_OP(seg, gelu_backward, dbig, a->fch, dbig, (size_t)4 * N * C);
	SC_TRY(linear_backward(seg, l, SC_T_MLP_FC, dln, dbig, a->ln2, a->u[SC_T_MLP_FC]));
	TRY_OP(seg, layernorm_backward, dcur, dln, a->res2, lb->ln2_w, a->ln2_mean, a->ln2_rstd, N,
	       C);
	/* Attention: res2 = x + c_proj(attn(c_attn(ln1(x)))) */
	SC_TRY(linear_backward(seg, l, SC_T_ATTN_PROJ, dln, dcur, a->atty, a->u[SC_T_ATTN_PROJ]));
	TRY_OP(seg, attention_backward, dbig, seg->datt, dln, a->qkv, a->atty, a->att, sp->B, sp->T,
	       C, sp->model.n_head);
	SC_TRY(linear_backward(seg, l, SC_T_ATTN_QKV, dln, dbig, a->ln1, a->u[SC_T_ATTN_QKV]));
	TRY_OP(seg, layernorm_backward, dcur, dln, x, lb->ln1_w, a->ln1_mean, a->ln1_rstd, N, C);
	return SC_OK;
}

static const float *layer_input(const slot *s, int l)
{
	return l == 0 ? s->x : s->layers[l - 1].res3;
}

static sc_err check_ids(const int32_t *ids, size_t n, int V, int allow_negative, const char *what)
{
	for (size_t i = 0; i < n; i++)
		if (ids[i] >= V || (ids[i] < 0 && !allow_negative))
			return sc_errf(SC_ERANGE,
				       "%s id %d at position %zu is outside the "
				       "vocabulary [0, %d)",
				       what, ids[i], i, V);
	return SC_OK;
}

/* Final norm, LM head (tied to wte), loss and its gradient down to the last
 * layer's output, stored in s->dlast. */
static sc_err head_forward(sc_segment *seg, slot *s, const int32_t *targets, float grad_scale,
			   double *loss)
{
	const sc_segment_spec *sp = &seg->spec;
	int N = (int)seg_N(seg), C = sp->model.n_embd, V = sp->model.vocab_size;
	const float *xl = s->layers[seg->nl - 1].res3;
	size_t valid = 0;
	double sum = 0;

	for (int i = 0; i < N; i++)
		valid += targets[i] >= 0;
	TRY_OP(seg, upload_async, s->targets, targets, (size_t)N * sizeof(int32_t));
	TRY_OP(seg, layernorm_forward, s->lnf, s->lnf_mean, s->lnf_rstd, xl, seg->lnf_w, seg->lnf_b,
	       N, C, sp->model.ln_eps);
	TRY_OP(seg, gemm, 0, 1, N, V, C, 1.0f, s->lnf, C, seg->wte, C, 0.0f, seg->logits, V);
	TRY_OP(seg, crossentropy, seg->losses, seg->logits, s->targets, N, V,
	       valid ? grad_scale / (float)valid : 0.0f);
	TRY_OP(seg, download, seg->host_losses, seg->losses, (size_t)N * sizeof(float));
	for (int i = 0; i < N; i++) /* in position order: independent of the backend's threads */
		sum += seg->host_losses[i];
	*loss = valid ? sum / (double)valid : 0.0;
	/* dlnf = dlogits @ wte, then through the final norm. */
	TRY_OP(seg, gemm, 0, 0, N, C, V, 1.0f, seg->logits, V, seg->wte, C, 0.0f, seg->dln, C);
	TRY_OP(seg, zero, s->dlast, (size_t)N * C * sizeof(float));
	TRY_OP(seg, layernorm_backward, s->dlast, seg->dln, xl, seg->lnf_w, s->lnf_mean,
	       s->lnf_rstd, N, C);
	return SC_OK;
}

sc_err sc_segment_forward(sc_segment *seg, int slot_i, const void *in, const int32_t *targets,
			  float grad_scale, float *out, double *loss)
{
	const sc_segment_spec *sp = &seg->spec;
	size_t N = seg_N(seg), C = (size_t)sp->model.n_embd;
	slot *s;

	if (slot_i < 0 || slot_i >= sp->slots)
		return sc_errf(SC_EINVAL, "activation slot %d out of range [0, %d)", slot_i,
			       sp->slots);
	if (!in || (sc_segment_is_last(seg) && (!targets || !loss)) ||
	    (!sc_segment_is_last(seg) && !out))
		return sc_errf(SC_EINVAL, "segment forward: missing input, targets or output");
	s = &seg->slots[slot_i];
	if (sc_segment_is_last(seg))
		SC_TRY(check_ids(targets, N, sp->model.vocab_size, 1, "target"));
	if (sc_segment_is_first(seg)) {
		SC_TRY(check_ids(in, N, sp->model.vocab_size, 0, "token"));
		TRY_OP(seg, upload_async, s->tokens, in, N * sizeof(int32_t));
		TRY_OP(seg, encoder_forward, s->x, s->tokens, seg->wte, seg->wpe, sp->B, sp->T,
		       (int)C);
	} else {
		TRY_OP(seg, upload_async, s->x, in, N * C * sizeof(float));
	}
	for (int l = 0; l < seg->nl; l++)
		SC_TRY(layer_forward(seg, l, &s->layers[l], layer_input(s, l)));
	if (sc_segment_is_last(seg))
		return head_forward(seg, s, targets, grad_scale, loss);
	return OPS(seg)->download(seg->be, out, s->layers[seg->nl - 1].res3, N * C * sizeof(float));
}

sc_err sc_segment_backward(sc_segment *seg, int slot_i, const float *dout, float *dx)
{
	const sc_segment_spec *sp = &seg->spec;
	size_t N = seg_N(seg), C = (size_t)sp->model.n_embd;
	float *dcur;
	slot *s;

	if (slot_i < 0 || slot_i >= sp->slots)
		return sc_errf(SC_EINVAL, "activation slot %d out of range [0, %d)", slot_i,
			       sp->slots);
	if ((!sc_segment_is_last(seg) && !dout) || (!sc_segment_is_first(seg) && !dx))
		return sc_errf(SC_EINVAL, "segment backward: missing output gradient or input "
					  "gradient buffer");
	s = &seg->slots[slot_i];
	if (sc_segment_is_last(seg)) {
		dcur = s->dlast;
	} else {
		dcur = seg->dcur;
		TRY_OP(seg, upload_async, dcur, dout, N * C * sizeof(float));
	}
	for (int l = seg->nl - 1; l >= 0; l--)
		SC_TRY(layer_backward(seg, l, &s->layers[l], layer_input(s, l), dcur));
	if (dx)
		return OPS(seg)->download(seg->be, dx, dcur, N * C * sizeof(float));
	return OPS(seg)->sync(seg->be);
}

sc_err sc_segment_zero_grad(sc_segment *seg)
{
	TRY_OP(seg, zero, seg->group[SC_G_GRAD], seg->lora_floats * sizeof(float));
	return SC_OK;
}

sc_err sc_segment_grad_sumsq(sc_segment *seg, double *per_layer)
{
	for (int l = 0; l < seg->nl; l++) {
		size_t off = seg->layer_off[l], n = seg->layer_off[l + 1] - off;
		TRY_OP(seg, sumsq, &per_layer[l], seg->group[SC_G_GRAD] + off, n);
	}
	return SC_OK;
}

sc_err sc_segment_adamw(sc_segment *seg, const sc_adamw_hparams *hp, float lr, float grad_scale,
			int t)
{
	if (t < 1)
		return sc_errf(SC_EINVAL, "AdamW step count %d must be >= 1", t);
	TRY_OP(seg, adamw, seg->group[SC_G_LORA], seg->group[SC_G_ADAM_M], seg->group[SC_G_ADAM_V],
	       seg->group[SC_G_GRAD], seg->lora_floats, lr, hp->beta1, hp->beta2, hp->eps,
	       hp->weight_decay, grad_scale, t);
	return OPS(seg)->sync(seg->be);
}
