/* bench_common.h — what the step benchmarks (bench_step.c on the CPU,
 * bench_cuda.c on a GPU) share: the model shapes, a random model with a
 * random token stream, the FLOP count and the clock. */
#ifndef SC_BENCH_COMMON_H
#define SC_BENCH_COMMON_H

#include "sc_data.h"
#include "sc_safetensors.h"
#include "sc_train.h"

/* Monotonic seconds. */
double bench_now(void);

/* sc_step_flops over the whole model, per token. */
double bench_flops_per_token(const sc_model_config *mc, int T, int r);

/* *mc = the shape named "gpt2" (124M) or "small"; -1 for another name. */
int bench_shape(const char *name, sc_model_config *mc);

/* Writes a random f32 model of mc's shape into dir, opens its weights as
 * *wf and fills *tk with ntokens random ids below the vocabulary (free
 * tk->ids and close *wf after). */
sc_err bench_model(const char *dir, const sc_model_config *mc, size_t ntokens, sc_st_file **wf,
		   sc_tokens *tk);

#endif
