/* backend.c — the backend registry: chooses a backend by device name. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sc_backend.h"

sc_err sc_backend_open(sc_backend **out, const char *device, int threads)
{
	*out = NULL;
	if (!device || !strcmp(device, "cpu"))
		return sc_backend_cpu_open(out, threads);
	if (!strncmp(device, "cuda", 4)) {
		const char *p = device + 4;
		long ord = 0;
		if (*p == ':') {
			char *end;
			ord = strtol(p + 1, &end, 10);
			if (end == p + 1 || *end || ord < 0 || ord > 255)
				return sc_errf(SC_EINVAL, "bad device '%s': expected cuda:N",
					       device);
		} else if (*p) {
			return sc_errf(SC_EINVAL, "bad device '%s': expected cpu or cuda:N",
				       device);
		}
		return sc_backend_cuda_open(out, (int)ord);
	}
	return sc_errf(SC_EINVAL, "unknown device '%s': expected cpu or cuda:N", device);
}

sc_err sc_backend_attention_sizes_of(const char *device, const sc_attn_shape *s, size_t *state,
				     size_t *scratch)
{
	*state = *scratch = 0;
	if (!device || !strcmp(device, "cpu")) {
		/* attention_cpu.c: the (B, NH, T, T) probabilities, kept and scratch */
		*state = *scratch = (size_t)s->B * s->NH * s->T * s->T;
		return SC_OK;
	}
	if (!strncmp(device, "cuda", 4)) {
		/* attention_cuda.cu: one softmax statistic per row and head */
		*state = *scratch = (size_t)s->B * s->NH * s->T;
		return SC_OK;
	}
	return sc_errf(SC_EINVAL, "unknown device '%s': expected cpu or cuda:N", device);
}

void sc_backend_free(sc_backend *be)
{
	if (be)
		be->ops->destroy(be);
}

int sc_backend_has_gemm_q(const sc_backend *be)
{
	return be && be->ops->gemm_q != NULL;
}

sc_err sc_backend_gemm_q(sc_backend *be, int trans_a, int trans_b, int m, int n, int k, float alpha,
			 const float *a, int lda, const sc_qweight *b, float beta, float *c,
			 int ldc, float *tile, size_t tile_floats)
{
	if (!sc_backend_has_gemm_q(be))
		return sc_errf(SC_ENOTSUP,
			       "quantized base weights need a backend with quantized GEMMs (%s "
			       "has none)",
			       be ? be->name : "(null)");
	return be->ops->gemm_q(be, trans_a, trans_b, m, n, k, alpha, a, lda, b, beta, c, ldc, tile,
			       tile_floats);
}

int sc_backend_has_encoder_q(const sc_backend *be)
{
	return be && be->ops->encoder_forward_q != NULL;
}

sc_err sc_backend_encoder_forward_q(sc_backend *be, float *out, const int32_t *tokens,
				    const sc_qweight *wte, const float *wpe, int B, int T, int C)
{
	if (!sc_backend_has_encoder_q(be))
		return sc_errf(SC_ENOTSUP,
			       "a quantized token embedding needs a backend that looks up "
			       "quantized rows (%s does not)",
			       be ? be->name : "(null)");
	return be->ops->encoder_forward_q(be, out, tokens, wte, wpe, B, T, C);
}
