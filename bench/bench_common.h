/* bench_common.h — what the step benchmarks (bench_step.c on the CPU,
 * bench_cuda.c on a GPU) share: the model shapes, a random model with a
 * random token stream, the FLOP count and the clock. */
#ifndef SC_BENCH_COMMON_H
#define SC_BENCH_COMMON_H

#include "sc_data.h"
#include "sc_safetensors.h"
#include "sc_train.h"
#include "sc_weights.h"

/* Monotonic seconds. */
double bench_now(void);

/* A sample of the machine's CPU time, for telling whether something else
 * ran during a measurement. */
typedef struct bench_cpu_sample {
	double wall; /* bench_now() */
	double busy; /* CPU-seconds all processes spent busy (/proc/stat), < 0 unknown */
	double own;  /* CPU-seconds this process spent (getrusage) */
} bench_cpu_sample;

void bench_cpu_sample_take(bench_cpu_sample *s);

/* The CPUs other processes kept busy between a and b, on average (0.5:
 * half a core), steal time included; -1 when /proc/stat is unreadable. */
double bench_foreign_load(const bench_cpu_sample *a, const bench_cpu_sample *b);

/* sc_step_flops over the whole model, per token. */
double bench_flops_per_token(const sc_model_config *mc, int T, int r);

/* *mc = the shape "small" (a 4-layer GPT-2) or a make-model preset
 * (sc_config_preset: gpt2, smollm2-135m, ...); -1 for another name. */
int bench_shape(const char *name, sc_model_config *mc);

/* Writes a random f32 model of mc's shape into dir (unless dir already
 * holds a model of that shape, from an earlier run), opens its weights as
 * *wf and fills *tk with ntokens random ids below the vocabulary (free
 * tk->ids and close *wf after). */
sc_err bench_model(const char *dir, const sc_model_config *mc, size_t ntokens, sc_weights **wf,
		   sc_tokens *tk);

#endif
