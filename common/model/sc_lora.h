/* sc_lora.h — LoRA adapter configuration, targets and initialisation.
 *
 * A target is one of the linear projections of a layer, as the model's
 * family lists them (sc_family.h): bit t of `targets` adapts the family's
 * target t. The adapter adds scale * (x @ A^T) @ B^T to the projection's
 * output, with A (r, in), B (out, r) — the shapes PEFT saves — and
 * scale = alpha / r.
 */
#ifndef SC_LORA_H
#define SC_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "sc_config.h"
#include "sc_err.h"

typedef struct sc_lora_config {
	int rank;         /* r >= 1 */
	float alpha;      /* scale = alpha / r */
	unsigned targets; /* bit (1u << t) per adapted target of the family */
	uint64_t seed;    /* initialisation seed */
} sc_lora_config;

/* The module path of target t below a layer ("attn.c_attn",
 * "self_attn.q_proj"), or "?" when mc's family has no target t. Static. */
const char *sc_lora_target_name(const sc_model_config *mc, int t);

/* Every target of mc's family. */
unsigned sc_lora_all_targets(const sc_model_config *mc);

/* Parses a comma-separated list of targets for mc's family: "all" or
 * "all-linear" (every projection), or names as PEFT matches them — a full
 * module path or a dot-separated suffix of it ("q_proj", "c_attn"; a suffix
 * that several targets share selects them all, as in PEFT). An unknown name
 * gives SC_EINVAL naming the word and the family's targets. */
sc_err sc_lora_parse_targets(unsigned *out, const sc_model_config *mc, const char *list);

/* The inverse: "all", or the names of mask's targets joined by commas, into
 * buf (truncated to size). */
void sc_lora_targets_string(char *buf, size_t size, const sc_model_config *mc, unsigned mask);

/* Input and output features of target t of mc. */
void sc_lora_target_dims(const sc_model_config *mc, int t, int *in, int *out);

/* Checks rank >= 1, alpha > 0, targets nonempty and within mc's family. */
sc_err sc_lora_config_validate(const sc_lora_config *lc, const sc_model_config *mc);

/* Fills A (r, in) with the initial value of global layer `layer`, target t:
 * uniform in [-1/sqrt(in), 1/sqrt(in)] (PEFT's default Kaiming-uniform bound)
 * drawn from a stream that is a function of (seed, layer, t) only — never of
 * which segment holds the layer. B starts at zero. */
void sc_lora_init_a(float *A, uint64_t seed, int layer, int t, int r, int in);

/* Number of floats of all adapters of one layer: sum over targets in mask
 * of r * (in + out). */
size_t sc_lora_layer_floats(const sc_lora_config *lc, const sc_model_config *mc);

#endif
