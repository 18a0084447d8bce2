/* sc_modelgen.h — writing a randomly initialised GPT-2 checkpoint in the
 * Hugging Face layout (DIR/config.json + DIR/model.safetensors), for tests,
 * benchmarks and the demo: no model hub is needed to try splitchain.
 */
#ifndef SC_MODELGEN_H
#define SC_MODELGEN_H

#include <stdint.h>

#include "sc_config.h"
#include "sc_safetensors.h"

typedef struct sc_modelgen_opts {
	uint64_t seed;
	enum sc_dtype dtype; /* SC_F32, SC_F16 or SC_BF16 */
	int random_norms;    /* nonzero: LayerNorm weights/biases and all biases random too */
} sc_modelgen_opts;

/* GPT-2's initialisation: weights normal(0, 0.02), residual projections
 * scaled by 1/sqrt(2L), biases 0, LayerNorm weight 1 / bias 0 (unless
 * random_norms). Tensor names carry the "transformer." prefix and the LM
 * head is tied (not stored), as GPT2LMHeadModel.save_pretrained writes. dir
 * is created if missing. */
sc_err sc_modelgen_write(const char *dir, const sc_model_config *cfg, const sc_modelgen_opts *o);

#endif
