/* auto_quant.h — per-layer bit-width chosen by the memory planner: when no
 * placement of a job fits its workers' memory at the job's base format,
 * the planner lowers layers' frozen projections one at a time (the job's
 * base, fp32 or bf16 → int8 for every layer first, then → nf4), each time
 * the layer whose measured error (sc_calib.h) is smallest among those
 * left, and plans again after each, until every stage fits or nothing is
 * left to lower. The formats go in the model configuration's layer_quant
 * (sc_layer_quant.h), which the segments, the memory prediction
 * (stage_mem.h) and the workers all read. */
#ifndef SC_AUTO_QUANT_H
#define SC_AUTO_QUANT_H

#include "sc_config.h"
#include "sc_err.h"

/* One lowering: layer `layer` from format `from` to `to` (enum
 * sc_quant_format; from -1: float), whose measured error is err. */
typedef struct sc_aq_step {
	int layer;
	int from, to;
	double err;
} sc_aq_step;

/* out[0 .. *n) = the lowerings of mc's layers [first, last) in the order
 * the planner takes them: every layer held above int8 (float or bf16, by
 * sc_layer_quant_of) to int8, smallest int8[l] first, then every layer
 * not yet nf4 to nf4, smallest nf4[l] first; equal errors in layer order.
 * out has room for 2 * (last - first) steps. */
void sc_aq_order(const sc_model_config *mc, int first, int last, const double *int8,
		 const double *nf4, sc_aq_step *out, int *n);

/* The fewest of steps[0 ..) that, taken in order into mc->layer_quant,
 * make fits(arg, mc) say SC_OK — as taking them one by one and planning
 * after each would find, since a stage's memory only falls as its layers
 * are lowered, but by bisection over how many are taken: about log2(n) + 2
 * plans, not n. fits is first asked with all n taken (SC_ERANGE from it:
 * nothing fits, *used = n, the detail fits' own), and last with the
 * prefix returned (*used steps taken, mc as they leave it), so the caller's
 * plan is that one's. The caller has found that none taken does not fit.
 * Another error from fits is returned at once (*used: the prefix it was
 * asked about). n = 0: SC_ERANGE. */
sc_err sc_aq_lower(sc_model_config *mc, const sc_aq_step *steps, int n,
		   sc_err (*fits)(void *arg, const sc_model_config *mc), void *arg, int *used);

#endif
