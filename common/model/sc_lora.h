/* sc_lora.h — LoRA adapter configuration, targets and initialisation.
 *
 * A target is one of GPT-2's four Conv1D projections. HF stores a Conv1D
 * weight as W (in, out) and computes y = x @ W + b. The adapter adds
 * scale * (x @ A^T) @ B^T with A (r, in), B (out, r) — the shapes PEFT saves —
 * and scale = alpha / r.
 */
#ifndef SC_LORA_H
#define SC_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "sc_config.h"
#include "sc_err.h"

enum sc_lora_target {
	SC_T_ATTN_QKV,  /* attn.c_attn  (C -> 3C) */
	SC_T_ATTN_PROJ, /* attn.c_proj  (C -> C)  */
	SC_T_MLP_FC,    /* mlp.c_fc     (C -> 4C) */
	SC_T_MLP_PROJ,  /* mlp.c_proj   (4C -> C) */
	SC_T_COUNT
};

#define SC_T_ALL ((1u << SC_T_COUNT) - 1)

typedef struct sc_lora_config {
	int rank;         /* r >= 1 */
	float alpha;      /* scale = alpha / r */
	unsigned targets; /* bit (1u << sc_lora_target) per adapted projection */
	uint64_t seed;    /* initialisation seed */
} sc_lora_config;

/* "attn.c_attn" etc.: the module path below "h.<i>." Static string. */
const char *sc_lora_target_name(enum sc_lora_target t);

/* Parses a comma-separated list of target names ("attn.c_attn,mlp.c_fc"),
 * also accepting "all" and the short names c_attn, attn.c_proj, c_fc,
 * mlp.c_proj. Unknown names give SC_EINVAL naming the word. */
sc_err sc_lora_parse_targets(unsigned *out, const char *list);

/* The inverse: "all", or the names of mask's targets joined by commas, into
 * buf (truncated to size). */
void sc_lora_targets_string(char *buf, size_t size, unsigned mask);

/* Input and output features of target t for a model of C channels. */
void sc_lora_target_dims(enum sc_lora_target t, int C, int *in, int *out);

/* Checks rank >= 1, alpha > 0, targets nonempty and within SC_T_ALL. */
sc_err sc_lora_config_validate(const sc_lora_config *lc);

/* Fills A (r, in) with the initial value of global layer `layer`, target t:
 * uniform in [-1/sqrt(in), 1/sqrt(in)] (PEFT's default Kaiming-uniform bound)
 * drawn from a stream that is a function of (seed, layer, t) only — never of
 * which segment holds the layer. B starts at zero. */
void sc_lora_init_a(float *A, uint64_t seed, int layer, enum sc_lora_target t, int r, int in);

/* Number of floats of all adapters of one layer: sum over targets in mask
 * of r * (in + out). */
size_t sc_lora_layer_floats(const sc_lora_config *lc, int C);

#endif
