/* segment_exec.c — forward and backward of a segment: the embedding on the
 * first, each layer through its family (sc_family.h), the final norm, LM head
 * and loss on the last (embedding and head bf16 on a bf16 base, or under bf16 products), and the
 * optimizer step. Shapes: see the legend in
 * sc_backend.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "segment_impl.h"

#define OPS(seg)             ((seg)->be->ops)
#define TRY_OP(seg, op, ...) SC_TRY(OPS(seg)->op((seg)->be, __VA_ARGS__))

static sc_err layer_forward(sc_segment *seg, int l, slot *s, const float *x)
{
	const float *A[SC_LORA_MAX_TARGETS];
	float *dA[SC_LORA_MAX_TARGETS];
	sc_layer L;
	sc_segment_layer_view(seg, l, s, &L, A, dA);
	return seg->fam->layer_forward(&L, x);
}

/* dcur (N,C): on entry the gradient of the layer's output, on return that of
 * its input x. */
static sc_err layer_backward(sc_segment *seg, int l, slot *s, const float *x, float *dcur)
{
	const float *A[SC_LORA_MAX_TARGETS];
	float *dA[SC_LORA_MAX_TARGETS];
	sc_layer L;
	sc_segment_layer_view(seg, l, s, &L, A, dA);
	return seg->fam->layer_backward(&L, x, dcur);
}

static const float *layer_output(const sc_segment *seg, const slot *s, int l)
{
	return s->layers[l].a[seg->fam->out_act];
}

static const float *layer_input(const sc_segment *seg, const slot *s, int l)
{
	return l == 0 ? s->x : layer_output(seg, s, l - 1);
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

/* The final norm of N rows of x into s->lnf. */
static sc_err norm_forward(sc_segment *seg, slot *s, const float *x, int N)
{
	const sc_segment_spec *sp = &seg->spec;
	int C = sp->model.n_embd;
	if (seg->fam->rms_norm)
		TRY_OP(seg, rmsnorm_forward, s->lnf, s->lnf_rstd, x, seg->gp[SC_GP_NORM_W], N, C,
		       sp->model.ln_eps);
	else
		TRY_OP(seg, layernorm_forward, s->lnf, s->lnf_mean, s->lnf_rstd, x,
		       seg->gp[SC_GP_NORM_W], seg->gp[SC_GP_NORM_B], N, C, sp->model.ln_eps);
	return SC_OK;
}

/* dx (N,C) += the final norm's backward of dout. */
static sc_err norm_backward(sc_segment *seg, slot *s, float *dx, const float *dout, const float *x)
{
	int N = (int)seg_N(seg), C = seg->spec.model.n_embd;
	if (seg->fam->rms_norm)
		TRY_OP(seg, rmsnorm_backward, dx, dout, x, seg->gp[SC_GP_NORM_W], s->lnf_rstd, N,
		       C);
	else
		TRY_OP(seg, layernorm_backward, dx, dout, x, seg->gp[SC_GP_NORM_W], s->lnf_mean,
		       s->lnf_rstd, N, C);
	return SC_OK;
}

/* c (m,n) = a (m,k) times the LM head W (V,C): a W^T forward (logits, n
 * = V, k = C), a W backward (the input gradient, n = C, k = V); through
 * gemm_q when the head is bf16 (seg->head_q), else gemm. */
static sc_err head_gemm(sc_segment *seg, int backward, int m, int n, int k, const float *a, int lda,
			float *c, int ldc)
{
	if (seg->head_q)
		return sc_backend_gemm_q(seg->be, 0, !backward, m, n, k, 1.0f, a, lda, seg->head_q,
					 0.0f, c, ldc, seg->qtile, seg->qtile_floats);
	int C = seg->spec.model.n_embd;
	TRY_OP(seg, gemm, 0, !backward, m, n, k, 1.0f, a, lda, seg->head, C, 0.0f, c, ldc);
	return SC_OK;
}

/* The embedding of n positions per row of tokens (B,n) into out (B,n,C),
 * positions from pos (NULL: none). */
static sc_err embed(sc_segment *seg, float *out, const int32_t *tokens, const float *pos, int B,
		    int n)
{
	int C = seg->spec.model.n_embd;
	if (seg->gq[SC_GP_EMBED].q)
		return sc_backend_encoder_forward_q(seg->be, out, tokens, &seg->gq[SC_GP_EMBED],
						    pos, B, n, C);
	TRY_OP(seg, encoder_forward, out, tokens, seg->gp[SC_GP_EMBED], pos, B, n, C);
	return SC_OK;
}

/* Final norm, LM head (tied or not), loss and its gradient down to the last
 * layer's output, stored in s->dlast. */
static sc_err head_forward(sc_segment *seg, slot *s, const int32_t *targets, float grad_scale,
			   double *loss)
{
	const sc_segment_spec *sp = &seg->spec;
	int N = (int)seg_N(seg), C = sp->model.n_embd, V = sp->model.vocab_size;
	const float *xl = layer_output(seg, s, seg->nl - 1);
	size_t valid = 0;
	double sum = 0;

	for (int i = 0; i < N; i++)
		valid += targets[i] >= 0;
	TRY_OP(seg, upload_async, s->targets, targets, (size_t)N * sizeof(int32_t));
	SC_TRY(norm_forward(seg, s, xl, N));
	SC_TRY(head_gemm(seg, 0, N, V, C, s->lnf, C, seg->logits, V));
	TRY_OP(seg, crossentropy, seg->losses, seg->logits, s->targets, N, V,
	       valid ? grad_scale / (float)valid : 0.0f);
	TRY_OP(seg, download, seg->host_losses, seg->losses, (size_t)N * sizeof(float));
	for (int i = 0; i < N; i++) /* in position order: independent of the backend's threads */
		sum += seg->host_losses[i];
	*loss = valid ? sum / (double)valid : 0.0;
	/* dnorm = dlogits @ head, then through the final norm. */
	SC_TRY(head_gemm(seg, 1, N, C, V, seg->logits, V, seg->dnorm, C));
	TRY_OP(seg, zero, s->dlast, (size_t)N * C * sizeof(float));
	return norm_backward(seg, s, s->dlast, seg->dnorm, xl);
}

sc_err sc_segment_forward(sc_segment *seg, int slot_i, const void *in, const int32_t *targets,
			  float grad_scale, float *out, double *loss)
{
	const sc_segment_spec *sp = &seg->spec;
	size_t N = seg_N(seg), C = (size_t)sp->model.n_embd;
	slot *s;

	if (seg_generating(seg))
		return sc_errf(SC_EINVAL, "a generation segment does not train");
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
		SC_TRY(embed(seg, s->x, s->tokens, seg->gp[SC_GP_POS], sp->B, sp->T));
	} else {
		TRY_OP(seg, upload_async, s->x, in, N * C * sizeof(float));
	}
	for (int l = 0; l < seg->nl; l++)
		SC_TRY(layer_forward(seg, l, s, layer_input(seg, s, l)));
	if (sc_segment_is_last(seg))
		return head_forward(seg, s, targets, grad_scale, loss);
	return OPS(seg)->download(seg->be, out, layer_output(seg, s, seg->nl - 1),
				  N * C * sizeof(float));
}

sc_err sc_segment_backward(sc_segment *seg, int slot_i, const float *dout, float *dx)
{
	const sc_segment_spec *sp = &seg->spec;
	size_t N = seg_N(seg), C = (size_t)sp->model.n_embd;
	float *dcur;
	slot *s;

	if (seg_generating(seg))
		return sc_errf(SC_EINVAL, "a generation segment does not train");
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
		SC_TRY(layer_backward(seg, l, s, layer_input(seg, s, l), dcur));
	if (dx)
		return OPS(seg)->download(seg->be, dx, dcur, N * C * sizeof(float));
	return OPS(seg)->sync(seg->be);
}

sc_err sc_segment_zero_grad(sc_segment *seg)
{
	if (seg_generating(seg))
		return sc_errf(SC_EINVAL, "a generation segment does not train");
	TRY_OP(seg, zero, seg->group[SC_G_GRAD], seg->lora_floats * sizeof(float));
	return SC_OK;
}

sc_err sc_segment_grad_fold(sc_segment *seg, float *acc, float *tmp, int first)
{
	SC_TRY(sc_segment_read_group(seg, SC_G_GRAD, first ? acc : tmp));
	for (size_t i = 0; !first && i < seg->lora_floats; i++)
		acc[i] += tmp[i];
	return sc_segment_zero_grad(seg);
}

sc_err sc_segment_grad_sumsq(sc_segment *seg, double *per_layer)
{
	if (seg_generating(seg))
		return sc_errf(SC_EINVAL, "a generation segment does not train");
	for (int l = 0; l < seg->nl; l++) {
		size_t off = seg->layer_off[l], n = seg->layer_off[l + 1] - off;
		TRY_OP(seg, sumsq, &per_layer[l], seg->group[SC_G_GRAD] + off, n);
	}
	return SC_OK;
}

sc_err sc_segment_adamw(sc_segment *seg, const sc_adamw_hparams *hp, float lr, float grad_scale,
			int t)
{
	if (seg_generating(seg))
		return sc_errf(SC_EINVAL, "a generation segment does not train");
	if (t < 1)
		return sc_errf(SC_EINVAL, "AdamW step count %d must be >= 1", t);
	TRY_OP(seg, adamw, seg->group[SC_G_LORA], seg->group[SC_G_ADAM_M], seg->group[SC_G_ADAM_V],
	       seg->group[SC_G_GRAD], seg->lora_floats, lr, hp->beta1, hp->beta2, hp->eps,
	       hp->weight_decay, grad_scale, t);
	return OPS(seg)->sync(seg->be);
}

sc_err sc_segment_infer(sc_segment *seg, int pos0, int n, const void *in, float *out)
{
	const sc_segment_spec *sp = &seg->spec;
	int B = sp->B, C = sp->model.n_embd, V = sp->model.vocab_size, P = sp->kv_positions;
	size_t rows = (size_t)B * (size_t)n;
	slot *s = &seg->slots[0];

	if (!seg_generating(seg))
		return sc_errf(SC_EINVAL, "not a generation segment (made with kv_positions 0)");
	if (!in || !out)
		return sc_errf(SC_EINVAL, "segment infer: missing input or output");
	if (n < 1 || n > sp->T || pos0 < 0 || pos0 + n > P)
		return sc_errf(SC_EINVAL,
			       "positions %d..%d: a call takes 1..%d new positions within the "
			       "cache's %d",
			       pos0, pos0 + n - 1, sp->T, P);
	if (sc_segment_is_first(seg)) {
		const float *pos = seg->gp[SC_GP_POS];
		SC_TRY(check_ids(in, rows, V, 0, "token"));
		TRY_OP(seg, upload_async, s->tokens, in, rows * sizeof(int32_t));
		SC_TRY(embed(seg, s->x, s->tokens, pos ? pos + (size_t)pos0 * C : NULL, B, n));
	} else {
		TRY_OP(seg, upload_async, s->x, in, rows * C * sizeof(float));
	}
	size_t half = (size_t)(sp->model.head_dim / 2);
	for (int l = 0; l < seg->nl; l++) {
		const float *A[SC_LORA_MAX_TARGETS];
		float *dA[SC_LORA_MAX_TARGETS];
		sc_layer L;
		sc_segment_layer_view(seg, l, s, &L, A, dA);
		L.N = (int)rows;
		L.attn.T = n;
		L.kc = seg->kc[l];
		L.vc = seg->vc[l];
		L.pos0 = pos0;
		L.P = P;
		if (seg->rope_cos) {
			L.rope_cos = seg->rope_cos + (size_t)pos0 * half;
			L.rope_sin = seg->rope_sin + (size_t)pos0 * half;
		}
		SC_TRY(seg->fam->layer_forward(&L, layer_input(seg, s, l)));
	}
	const float *xl = layer_output(seg, s, seg->nl - 1);
	if (!sc_segment_is_last(seg))
		return OPS(seg)->download(seg->be, out, xl, rows * C * sizeof(float));
	/* The final norm of every new row (cheap), the head of each sequence's
	 * last one. */
	SC_TRY(norm_forward(seg, s, xl, (int)rows));
	for (int b = 0; b < B; b++)
		SC_TRY(head_gemm(seg, 0, 1, V, C, s->lnf + ((size_t)b * n + n - 1) * C, C,
				 seg->infer_logits + (size_t)b * V, V));
	return OPS(seg)->download(seg->be, out, seg->infer_logits, (size_t)B * V * sizeof(float));
}

sc_err sc_segment_infer_hidden(const sc_segment *seg, int n, float *out)
{
	const sc_segment_spec *sp = &seg->spec;
	size_t rows = (size_t)sp->B * (size_t)n;
	if (!seg_generating(seg) || n < 1 || n > sp->T || !out)
		return sc_errf(SC_EINVAL,
			       "segment hidden state: a generation segment's last 1..%d positions "
			       "(asked for %d)",
			       sp->T, n);
	const float *xl = layer_output(seg, &seg->slots[0], seg->nl - 1);
	return OPS(seg)->download(seg->be, out, xl, rows * sp->model.n_embd * sizeof(float));
}
