/* sc_layer_quant.h — per-layer formats of the frozen base: each layer of a
 * model may hold its projections (the family's LoRA targets) in its own
 * format, the job's base (float, bf16, or the --base-quant format) or int8
 * or nf4, as sc_model_config.layer_quant records by global layer. The
 * memory planner lowers layers this way when a chain cannot hold the
 * model at the job's precision (coordinator/placement.h); `splitchain
 * finetune --layer-quant SPEC` does the same in one process.
 *
 * SPEC text: items "RANGE:FORMAT" separated by commas, RANGE a layer "N"
 * or an inclusive range "N-M" of global 0-based layers, FORMAT "int8" or
 * "nf4"; e.g. "0-3:nf4,4-7:int8". Layers not named keep the job's base. A
 * layer named twice, a range outside the model's layers or backwards, a
 * number that is not one, an unknown format or an empty item is refused.
 * The canonical form (sc_layer_quant_format) lists layers in order, runs
 * of one format merged: it is what the coordinator sends a worker and
 * records in `placements`. */
#ifndef SC_LAYER_QUANT_H
#define SC_LAYER_QUANT_H

#include <stddef.h>

#include "sc_config.h"
#include "sc_err.h"

/* out[0 .. SC_LAYER_QUANT_MAX) = the formats text names for a model of
 * n_layer layers (0: not named, else enum sc_quant_format + 1). SC_EINVAL
 * naming the item and what is wrong with it; out is then all 0. */
sc_err sc_layer_quant_parse(const char *text, int n_layer, unsigned char *out);

/* buf (size bytes) = the canonical SPEC of lq's layers [first, last) that
 * are not 0, "" when none is. SC_ERANGE when it does not fit. */
sc_err sc_layer_quant_format(const unsigned char *lq, int first, int last, char *buf, size_t size);

/* Parses text (NULL or "": nothing) for mc's layers into
 * mc->layer_quant, dropping a layer whose format is mc's own (a job whose
 * base is nf4 asks nothing of "0:nf4"). mc's base format must be set first
 * (sc_train_base_format). Errors as sc_layer_quant_parse; mc unchanged on
 * error. */
sc_err sc_layer_quant_apply(sc_model_config *mc, const char *text);

/* The format layer (global) holds its projections in: enum
 * sc_quant_format, or -1 for float (fp32). */
int sc_layer_quant_of(const sc_model_config *mc, int layer);

/* Layers of [first, last) whose format differs from mc's base. */
int sc_layer_quant_count(const sc_model_config *mc, int first, int last);

#endif
