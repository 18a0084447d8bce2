/* sc_calib.h — how much each layer of a model suffers when its frozen
 * projections are held in a lower format: for the memory planner, which
 * lowers first the layers that suffer least (coordinator/placement.h).
 *
 * The measure: a calibration batch (B sequences of T token ids drawn from
 * seed, uniform over the vocabulary) runs through the model in fp32; for
 * each layer l, with x_l its input there, y = layer_l(x_l) in fp32 and
 * y_q = layer_l(x_l) with layer l's projections in format q (int8, nf4;
 * everything else fp32), and err_q(l) = ||y_q - y|| / ||y|| (Frobenius
 * norms in double over the batch's B T C outputs). Each layer is measured
 * on the fp32 model's own input, so one layer's error does not feed the
 * next's. The layers run as generation segments (sc_segment_infer) of one
 * layer each, without adapters; a layer's float weights are read once per
 * format. */
#ifndef SC_CALIB_H
#define SC_CALIB_H

#include <stdint.h>

#include "sc_backend.h"
#include "sc_config.h"
#include "sc_weights.h"

/* The calibration batch the planner measures with. */
#define SC_CALIB_B    2
#define SC_CALIB_T    64 /* or the model's positions, if fewer */
#define SC_CALIB_SEED 18

/* int8[l], nf4[l] = layer l's relative output error (above) for every
 * layer of the model mc describes (its float weights in w; borrowed), on
 * backend be (borrowed; one that runs quantized projections: the CPU).
 * SC_EINVAL for a model whose projections are stored quantized (no float
 * weights to compare with) or a bad B or T; the segments' errors. */
sc_err sc_calib_layer_errors(sc_backend *be, const sc_model_config *mc, sc_weights *w, int B, int T,
			     uint64_t seed, double *int8, double *nf4);

#endif
