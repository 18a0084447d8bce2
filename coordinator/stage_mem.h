/* stage_mem.h — what a stage of a training job needs to hold, for the
 * planner's memory (placement.h, sc_place_mem_fn): the segment's device
 * memory as sc_segment_predict lays it out (base weights in the job's
 * format, LoRA + gradients + AdamW moments, the activations of the
 * micro-batches the schedule keeps in flight, scratch), and on a CPU
 * worker, whose device memory is its RAM, the worker's own buffers for the
 * job (activations and gradients in and out, the step's tokens and
 * targets, the wire encoding's error feedback, the micro-batches its
 * neighbours may queue to it) and the process's runtime for a stage (the
 * BLAS buffer, a thread's arena: a measured constant). A CUDA stage counts
 * its device memory alone. */
#ifndef SC_STAGE_MEM_H
#define SC_STAGE_MEM_H

#include "sc_config.h"
#include "sc_lora.h"

enum sc_mem_kind { SC_MEM_CPU, SC_MEM_CUDA };

typedef struct sc_stage_mem {
	sc_model_config mc; /* the job's base format applied (sc_train_base_format),
			     * and any per-layer formats (mc.layer_quant) */
	sc_lora_config lc;
	int B, T, M; /* micro-batch shape, micro-batches per step */
	int gpipe;   /* GPipe keeps all M in flight; 1F1B stage s of S keeps S - s */
	int wire;    /* enum sc_wire between stages */
	/* lazily: (kind, stage, first?, last?, layers), or with per-layer
	 * formats (kind, stage, first, last) */
	double *memo;
	int memo_s;      /* the stages it was made for */
	size_t memo_len; /* its entries */
	int failed;      /* a prediction failed: its bytes counted as infinite */
} sc_stage_mem;

/* The memory kind of a device name ("cpu", "cuda:N"). */
enum sc_mem_kind sc_mem_kind_of(const char *device);

/* sc_place_mem_fn: arg is an sc_stage_mem (borrowed; its memo grows). */
double sc_stage_mem_bytes(void *arg, int kind, int stage, int stages, int first, int last);

/* Forgets what was predicted: after a change to m->mc (its per-layer
 * formats). */
void sc_stage_mem_reset(sc_stage_mem *m);

void sc_stage_mem_free(sc_stage_mem *m);

#endif
