/* coord_calib.h — each layer's measured quantization error for the
 * planner's per-layer formats (auto_quant.h): read from the database when
 * this model was measured before, else measured here (sc_calib.h, on the
 * coordinator's CPU) and recorded. */
#ifndef SC_COORD_CALIB_H
#define SC_COORD_CALIB_H

#include "db.h"
#include "sc_config.h"

/* key (65 bytes: hex) = the fingerprint of the model in dir: a registered
 * model's manifest digest when digest is non-empty, else config.json's
 * bytes and every *.safetensors / *.json file's name, size and change
 * time; and the calibration batch. A changed model has another key. */
sc_err coord_model_key(const char *dir, const char *digest, char key[65]);

/* int8[l], nf4[l] (n_layer each) = mc's layers' errors; *measured = 1
 * when they were measured now (0: the database had them). mc is the
 * model's own configuration (float weights in dir). Errors of
 * sc_calib_layer_errors, of opening the weights, of the database. Slow the
 * first time (a forward pass of every layer three times, each layer's
 * projections quantized twice); called without any lock held. */
sc_err coord_layer_errors(sc_db *db, const char *dir, const char *digest, const sc_model_config *mc,
			  double *int8, double *nf4, int *measured);

#endif
