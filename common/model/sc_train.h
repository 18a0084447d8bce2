/* sc_train.h — the optimizer step: learning-rate schedule, gradient
 * accumulation over micro-batches, global-norm clipping, AdamW; and the
 * single-process trainer that runs a chain of segments in one process
 * (the reference every distributed run must match bit for bit).
 */
#ifndef SC_TRAIN_H
#define SC_TRAIN_H

#include <stdint.h>

#include "sc_adapter.h"
#include "sc_backend.h"
#include "sc_config.h"
#include "sc_data.h"
#include "sc_segment.h"

typedef struct sc_train_config {
	int steps;         /* optimizer steps */
	int B, T;          /* micro-batch shape */
	int micro_batches; /* M micro-batches accumulated per step */
	float lr;          /* peak learning rate */
	float min_lr;      /* floor of the cosine decay */
	int warmup;        /* linear warm-up steps */
	float weight_decay;
	float beta1, beta2, eps;
	float grad_clip; /* max global norm; <= 0 disables clipping */
	uint64_t seed;   /* data order */
	int allow_tf32;  /* GPU backends may use TF32 tensor cores for GEMMs (off: fp32) */
	int wire;        /* enum sc_wire: how activations and gradients cross a stage
			  * boundary (sc_codec.h); SC_WIRE_FP32 (0) changes nothing */
	/* The frozen base's format (sc_train_base_format): the projections
	 * quantized as each segment loads them. 0s change nothing. */
	int base_quant;   /* enum sc_base_quant */
	int double_quant; /* nf4: double quantization of the block absmax */
	int precision;    /* enum sc_precision */
} sc_train_config;

/* --base-quant: the format a job keeps its frozen projections in, made from
 * the model's float weights as each segment loads them (sc_quant.h; the
 * same layout as a model `splitchain quantize` wrote). NONE keeps the
 * model directory's own (float, or the format it was quantized to). */
enum sc_base_quant {
	SC_BASE_QUANT_NONE,
	SC_BASE_QUANT_INT8,
	SC_BASE_QUANT_NF4,
	SC_BASE_QUANT_COUNT
};
/* --precision: FP32 (everything fp32) or BF16 (the frozen projections
 * stored bf16, SC_QUANT_BF16, unless the base is int8 or nf4, which are
 * then dequantized to bf16 for bf16 products where the CPU has them;
 * adapters, optimizer state, norms, softmax and loss stay fp32). */
enum sc_precision { SC_PRECISION_FP32, SC_PRECISION_BF16, SC_PRECISION_COUNT };

/* "none", "int8", "nf4" / "fp32", "bf16" (the command line's words); "?"
 * outside the enum. Static strings. */
const char *sc_base_quant_name(int q);
const char *sc_precision_name(int p);
/* *out = the value called name; SC_EINVAL naming the allowed words
 * otherwise (NULL included). */
sc_err sc_base_quant_parse(const char *name, int *out);
sc_err sc_precision_parse(const char *name, int *out);

/* Applies tc's base format to mc, the model directory's configuration as
 * sc_config_load read it, giving the configuration every segment of the job
 * is made with: --base-quant int8 / nf4 (with double_quant) sets
 * mc->quantized and the format, and segments quantize the float
 * projections at load (sc_segment_load_weights); else --precision bf16
 * sets SC_QUANT_BF16; else mc is left as it is. mc->compute_bf16 says
 * whether the products run in bf16: --precision bf16 (with int8 / nf4
 * too: the weights dequantized to bf16) or a bf16 base. A directory that is
 * already quantized keeps its format; SC_EINVAL, naming both, when tc asks
 * for another one (a --base-quant or --double-quant that differs), and for
 * values outside the enums or double_quant without nf4. Idempotent: mc
 * that went through it once is left as it is. */
sc_err sc_train_base_format(sc_model_config *mc, const sc_train_config *tc);

/* Sets tc's base_quant, double_quant and precision to say what base (a
 * configuration sc_train_base_format gave) holds, so that applying them to
 * the model directory's configuration again gives base: a directory
 * quantized on disk shows its own format (bf16 as precision bf16). */
void sc_train_base_of(sc_train_config *tc, const sc_model_config *base);

/* A short description of mc's frozen projections for people and
 * dashboards: "fp32", "bf16", "int8", "nf4" or "nf4+dq". Static. */
const char *sc_train_base_describe(const sc_model_config *mc);
/* The same word from a job's options as the coordinator resolved them
 * (sc_train_base_of): what v_job_progress.base says. "?" for values
 * outside the enums. Static. */
const char *sc_train_base_word(const sc_train_config *tc);

/* Fills tc with the defaults (lr 2e-4, min_lr 2e-5, warmup 10, wd 0,
 * betas 0.9/0.999, eps 1e-8, clip 1.0, M 1, B 4, T 64, steps 100, seed 1). */
void sc_train_config_defaults(sc_train_config *tc);

/* Checks ranges (sizes >= 1, lr > 0, betas in [0,1), ...); SC_EINVAL
 * naming the field. */
sc_err sc_train_config_validate(const sc_train_config *tc);

/* Learning rate of 0-based step s: linear warm-up over the first `warmup`
 * steps to lr, then cosine decay to min_lr at step `steps - 1`. */
float sc_lr_at(const sc_train_config *tc, int step);

/* Clip factor min(1, clip / (norm + 1e-6)) as torch.nn.utils.clip_grad_norm_. */
float sc_clip_factor(double norm, float clip);

/* Useful floating-point work of one LoRA training step, per token: per
 * layer the frozen GEMMs forward (24 C^2) and their input-gradient backward
 * (24 C^2), the causal half of the attention products (2 T C forward, 4 T C
 * backward) and LoRA (6 r (in + out) per target, all four counted); head:
 * the tied LM head forward and backward (4 C V). Shared by placement's cost
 * model and the benchmarks' GFLOP/s. */
void sc_step_flops(const sc_model_config *mc, int T, int r, double *per_layer, double *head);

/* Global gradient norm from per-layer sums of squares, summed in layer order. */
double sc_global_norm(const double *per_layer, int n_layer);

typedef struct sc_step_stats {
	int step;         /* 0-based */
	double loss;      /* mean of the micro-batches' losses */
	double grad_norm; /* before clipping */
	float lr;
	double seconds; /* wall time of the step */
	long tokens;    /* B * T * M */
} sc_step_stats;

typedef struct sc_trainer sc_trainer;

/* A chain of nstages segments in this process, with stage boundaries
 * bounds[0] = 0 < bounds[1] < ... < bounds[nstages] = L (NULL: one stage).
 * Loads base weights from weights (borrowed for the call), adapters from
 * init (borrowed; NULL = fresh sc_adapter_init), reads data from tk
 * (borrowed; must outlive the trainer). *out = new trainer, free with
 * sc_trainer_free. The segments hold the frozen base in the format
 * sc_train_base_format(mc, tc) gives (its errors are returned), as a
 * chain's workers do.
 * At every boundary the activations (forward) and gradients (backward) go
 * through tc->wire's encoding as a chain's data plane carries them
 * (sc_wire_roundtrip; stochastic rounding keyed by sc_wire_rng; the
 * gradients' error feedback kept per sending stage and micro-batch, carried
 * from step to step), so a chain with the same encoding computes the same
 * bits. Evaluation rounds to nearest, without feedback. */
sc_err sc_trainer_new(sc_trainer **out, sc_backend *be, const sc_model_config *mc,
		      const sc_lora_config *lc, const sc_train_config *tc, sc_weights *weights,
		      const sc_adapter *init, const sc_tokens *tk, int nstages, const int *bounds);
void sc_trainer_free(sc_trainer *tr);

/* Adds another data source (borrowed; must outlive the trainer), e.g. a
 * second data owner's file: each step then runs the M micro-batches of
 * every source in the order added — source o's micro-batch j is the step's
 * o * M + j, cut from its own stream as a single source's would be — with
 * every loss scaled by 1 / (sources * M), and each source's gradients
 * summed by themselves, the sums added in source order
 * (sc_segment_grad_fold). A chain whose data owners hold those sources
 * computes the same bits. At most SC_TRAIN_MAX_SOURCES sources. */
#define SC_TRAIN_MAX_SOURCES 16
sc_err sc_trainer_add_data(sc_trainer *tr, const sc_tokens *tk);

/* sc_trainer_eval over one held-out stream per source (evals[i] NULL: none
 * for that source), in the order a chain of data owners evaluates: pass p
 * of each source's micro-batches p * M .. p * M + M - 1, sources in order
 * within a pass. One source: sc_trainer_eval's bits. */
sc_err sc_trainer_eval_sources(sc_trainer *tr, const sc_tokens *const *evals, int n,
			       size_t max_batches, double *loss, size_t *tokens);

/* Bytes of device memory stage i holds (sc_segment_device_bytes); its layer
 * range in *first, *last. */
size_t sc_trainer_stage_memory(const sc_trainer *tr, int i, int *first, int *last);

/* Runs 0-based optimizer step `step` (data and lr are functions of it). */
sc_err sc_trainer_step(sc_trainer *tr, int step, sc_step_stats *st);

/* Computes loss and LoRA gradients for step's data without updating
 * anything (gradients left in the segments). *loss as in sc_step_stats. */
sc_err sc_trainer_grad(sc_trainer *tr, int step, double *loss);

/* Held-out loss: the mean cross-entropy over every target of an eval
 * stream's micro-batches (sc_eval_batch), combined micro-batch by
 * micro-batch in order as sum(loss_k * targets_k) / sum(targets_k). A chain
 * gets loss_k from its last stage and combines them the same way, so both
 * give the same bits. */
typedef struct sc_eval_acc {
	double sum;    /* of loss_k * targets_k */
	size_t tokens; /* targets counted */
} sc_eval_acc;
void sc_eval_add(sc_eval_acc *a, double loss, size_t targets);
/* The mean; NaN when no target was counted. */
double sc_eval_mean(const sc_eval_acc *a);

/* Evaluates the current adapters on eval (borrowed; windows of the
 * trainer's T) over its first max_batches micro-batches of B rows (0: all):
 * forward passes only, nothing trained. *loss as above, *tokens its count. */
sc_err sc_trainer_eval(sc_trainer *tr, const sc_tokens *eval, size_t max_batches, double *loss,
		       size_t *tokens);

/* Copies the current adapters of every stage into ad (L layers). */
sc_err sc_trainer_get_lora(const sc_trainer *tr, sc_adapter *ad);

/* The chain's stage i segment (borrowed). */
sc_segment *sc_trainer_stage(sc_trainer *tr, int i);
int sc_trainer_stages(const sc_trainer *tr);

#endif
