/* placement.h — which worker holds which layers: contiguous layer ranges
 * balanced by each worker's measured compute rate, with the LM head's cost
 * counted on the last stage. */
#ifndef SC_PLACEMENT_H
#define SC_PLACEMENT_H

#include <stddef.h>
#include <stdint.h>

#include "sc_config.h"
#include "sc_err.h"

typedef struct sc_place_worker {
	uint64_t id;
	double gflops; /* measured rate, > 0 */
} sc_place_worker;

typedef struct sc_place_stage {
	int worker;         /* index into the workers array */
	int first, last;    /* layer range [first, last) */
	double predicted_s; /* predicted compute seconds per step */
} sc_place_stage;

/* GFLOP of one optimizer step per layer and for the head (final norm, LM
 * head and loss) for a job of tokens_per_step tokens of sequence length T
 * and LoRA rank r. */
void sc_place_costs(const sc_model_config *mc, int T, int r, double tokens_per_step,
		    double *layer_gflop, double *head_gflop);

/* Chooses `stages` workers from w[0..nw) — the fastest, kept in the given
 * order along the chain — and splits the n_layer layers into contiguous
 * ranges minimising the slowest stage's predicted time. out has `stages`
 * entries. reason (reason_size bytes) receives one line saying why.
 * SC_EINVAL when stages > nw or stages > n_layer. */
sc_err sc_place(const sc_place_worker *w, int nw, int stages, int n_layer, double layer_gflop,
		double head_gflop, sc_place_stage *out, char *reason, size_t reason_size);

#endif
