/* calib.c — each layer's relative output error under int8 and nf4 on a
 * calibration batch (sc_calib.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sc_calib.h"
#include "sc_family.h"
#include "sc_quant.h"
#include "sc_rng.h"
#include "sc_segment.h"

/* y (B,T,C) = layer l's output for in (tokens (B,T) when l == 0, else
 * x (B,T,C)) with its projections in format f (-1: as mc says). */
static sc_err run_layer(sc_backend *be, const sc_model_config *mc, sc_weights *w, int l, int f,
			int B, int T, const void *in, float *y)
{
	sc_segment_spec sp = { .model = *mc,
			       .lora = { .rank = 1, .alpha = 1, .targets = 1u, .seed = 0 },
			       .first = l,
			       .last = l + 1,
			       .B = B,
			       .T = T,
			       .slots = 1,
			       .kv_positions = T };
	sc_segment *seg = NULL;
	float *logits = NULL;
	sc_err rc;

	if (f >= 0)
		sp.model.layer_quant[l] = (unsigned char)(f + 1);
	/* The last layer's segment also computes the head: room for it. */
	if (l + 1 == mc->n_layer &&
	    !(logits = malloc((size_t)B * (size_t)mc->vocab_size * sizeof(float))))
		return sc_errf(SC_ENOMEM, "out of memory for the calibration's logits");
	if (!(rc = sc_segment_new(&seg, be, &sp)) && !(rc = sc_segment_load_weights(seg, w)) &&
	    !(rc = sc_segment_infer(seg, 0, T, in, logits ? logits : y)))
		rc = sc_segment_infer_hidden(seg, T, y);
	sc_segment_free(seg);
	free(logits);
	return rc ? sc_err_wrap(rc, "calibrating layer %d", l) : SC_OK;
}

/* ||a - b|| / ||b||, 0 when both are 0, +inf when only b's norm is. */
static double rel_error(const float *a, const float *b, size_t n)
{
	double d = 0, s = 0;
	for (size_t i = 0; i < n; i++) {
		double e = (double)a[i] - (double)b[i];
		d += e * e;
		s += (double)b[i] * (double)b[i];
	}
	return s > 0 ? sqrt(d / s) : d > 0 ? INFINITY : 0.0;
}

sc_err sc_calib_layer_errors(sc_backend *be, const sc_model_config *mc, sc_weights *w, int B, int T,
			     uint64_t seed, double *int8, double *nf4)
{
	const int fmts[2] = { SC_QUANT_INT8, SC_QUANT_NF4 };
	double *out[2] = { int8, nf4 };
	sc_model_config m = *mc;
	size_t BT = (size_t)B * (size_t)T, n = BT * (size_t)mc->n_embd;
	int32_t *tokens = NULL;
	float *x = NULL, *y = NULL, *yq = NULL;
	sc_rng r;
	sc_err rc = SC_OK;

	if (mc->quantized)
		return sc_errf(SC_EINVAL,
			       "the model's projections are stored quantized (%s): its layers' "
			       "errors are measured against float weights",
			       sc_quant_name((enum sc_quant_format)mc->quant_format));
	if (B < 1 || T < 1 || T > mc->n_positions)
		return sc_errf(SC_EINVAL, "a calibration batch of %d x %d tokens (T <= %d)", B, T,
			       mc->n_positions);
	memset(m.layer_quant, 0, sizeof(m.layer_quant));
	tokens = malloc(BT * sizeof(int32_t));
	x = malloc(n * sizeof(float));
	y = malloc(n * sizeof(float));
	yq = malloc(n * sizeof(float));
	if (!tokens || !x || !y || !yq) {
		rc = sc_errf(SC_ENOMEM, "out of memory for a calibration batch of %zu tokens", BT);
		goto out;
	}
	sc_rng_seed(&r, &seed, 1);
	for (size_t i = 0; i < BT; i++)
		tokens[i] = (int32_t)sc_rng_below(&r, (uint64_t)mc->vocab_size);
	for (int l = 0; l < mc->n_layer && !rc; l++) {
		const void *in = l ? (const void *)x : (const void *)tokens;
		if ((rc = run_layer(be, &m, w, l, -1, B, T, in, y)))
			break;
		for (int k = 0; k < 2 && !rc; k++)
			if (!(rc = run_layer(be, &m, w, l, fmts[k], B, T, in, yq)))
				out[k][l] = rel_error(yq, y, n);
		memcpy(x, y, n * sizeof(float)); /* the fp32 model's next input */
	}
out:
	free(tokens);
	free(x);
	free(y);
	free(yq);
	return rc;
}
