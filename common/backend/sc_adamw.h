/* sc_adamw.h — the per-step scalars every backend's AdamW uses, computed
 * once on the host so that the CPU and CUDA backends agree to the bit. Its
 * own module so that the backends and the backend registry (backend.c) do
 * not include each other. */
#ifndef SC_ADAMW_H
#define SC_ADAMW_H

#include "sc_err.h"

/* The per-step scalars of torch.optim.AdamW for every backend's adamw, so
 * that they agree to the bit: torch does this arithmetic in double on the
 * hyperparameters' Python values (taken as the shortest decimal that rounds
 * to each float: 0.9f -> 0.9), then rounds each result to float. */
typedef struct sc_adamw_scalars {
	float decay;    /* 1 - lr * weight_decay */
	float w1;       /* 1 - beta1, the weight of exp_avg.lerp_ */
	int small;      /* |w1| < 0.5: lerp as m + w1 (g - m), else g - (g - m)(1 - w1) */
	float beta2;    /* beta2 */
	float w2;       /* 1 - beta2 */
	float step;     /* -lr / (1 - beta1^t) */
	float bc2_sqrt; /* sqrt(1 - beta2^t) */
	float eps;
} sc_adamw_scalars;

/* Fills *s for 1-based step t; SC_EINVAL when t < 1. */
sc_err sc_adamw_scalars_at(sc_adamw_scalars *s, float lr, float beta1, float beta2, float eps,
			   float weight_decay, int t);

#endif
