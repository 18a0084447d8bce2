/* auto_quant.c — the order in which the planner lowers layers, and the
 * lowering loop (auto_quant.h). */
#include <stdlib.h>
#include <string.h>

#include "auto_quant.h"
#include "sc_layer_quant.h"
#include "sc_quant.h"

static int by_error(const void *a, const void *b)
{
	const sc_aq_step *x = a, *y = b;
	if (x->err != y->err)
		return x->err < y->err ? -1 : 1;
	return (x->layer > y->layer) - (x->layer < y->layer);
}

void sc_aq_order(const sc_model_config *mc, int first, int last, const double *int8,
		 const double *nf4, sc_aq_step *out, int *n)
{
	int k = 0, m;
	for (int l = first; l < last; l++) {
		int f = sc_layer_quant_of(mc, l);
		if (f < 0 || f == SC_QUANT_BF16)
			out[k++] = (sc_aq_step){ l, f, SC_QUANT_INT8, int8[l] };
	}
	qsort(out, (size_t)k, sizeof(*out), by_error);
	m = k;
	for (int l = first; l < last; l++) {
		int f = sc_layer_quant_of(mc, l);
		/* A layer lowered to int8 above comes to nf4 from int8. */
		if (f != SC_QUANT_NF4)
			out[k++] = (sc_aq_step){ l, SC_QUANT_INT8, SC_QUANT_NF4, nf4[l] };
	}
	qsort(out + m, (size_t)(k - m), sizeof(*out), by_error);
	*n = k;
}

/* mc->layer_quant = from, then steps[0 .. k) taken. */
static void take(sc_model_config *mc, const unsigned char *from, const sc_aq_step *steps, int k)
{
	int base = mc->quantized ? mc->quant_format : -1;
	memcpy(mc->layer_quant, from, sizeof(mc->layer_quant));
	for (int i = 0; i < k; i++)
		mc->layer_quant[steps[i].layer] =
		    steps[i].to == base ? 0 : (unsigned char)(steps[i].to + 1);
}

sc_err sc_aq_lower(sc_model_config *mc, const sc_aq_step *steps, int n,
		   sc_err (*fits)(void *arg, const sc_model_config *mc), void *arg, int *used)
{
	unsigned char from[SC_LAYER_QUANT_MAX];
	int lo = 0, hi = n, last;
	sc_err rc;

	*used = 0;
	if (n < 1)
		return sc_errf(SC_ERANGE, "no layer is left to lower");
	memcpy(from, mc->layer_quant, sizeof(from));
	take(mc, from, steps, n);
	*used = last = n;
	if ((rc = fits(arg, mc)))
		return rc;    /* not even all of them */
	while (hi - lo > 1) { /* lo does not fit, hi does */
		int mid = lo + (hi - lo) / 2;
		take(mc, from, steps, mid);
		*used = last = mid;
		rc = fits(arg, mc);
		if (rc == SC_OK)
			hi = mid;
		else if (rc == SC_ERANGE)
			lo = mid;
		else
			return rc;
	}
	take(mc, from, steps, hi);
	*used = hi;
	return last == hi ? SC_OK : fits(arg, mc);
}
