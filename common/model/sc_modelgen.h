/* sc_modelgen.h — writing a randomly initialised checkpoint of any family in the
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

/* Initialisation as the family's tensors ask (sc_param_init): weights
 * normal(0, 0.02) (GPT-2's residual projections scaled by 1/sqrt(2L)), biases
 * 0, norm weights 1 (biases and norms jittered with random_norms). Names and
 * layout are what the family's save_pretrained writes (GPT-2: the
 * "transformer." prefix; a tied LM head is not stored). dir is created if
 * missing. The whole model is held in memory until the file is written. */
sc_err sc_modelgen_write(const char *dir, const sc_model_config *cfg, const sc_modelgen_opts *o);

#endif
