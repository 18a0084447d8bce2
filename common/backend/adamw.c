/* adamw.c — the scalars of one AdamW step, shared by every backend. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "sc_adamw.h"

/* The double a hyperparameter most likely was before it became a float: the
 * shortest decimal that rounds to f (0.9f -> 0.9). */
static double intended_double(float f)
{
	char buf[32];
	for (int prec = 1; prec <= 9; prec++) {
		snprintf(buf, sizeof(buf), "%.*g", prec, (double)f);
		if (strtof(buf, NULL) == f)
			return strtod(buf, NULL);
	}
	return f;
}

sc_err sc_adamw_scalars_at(sc_adamw_scalars *s, float lr, float beta1, float beta2, float eps,
			   float weight_decay, int t)
{
	if (t < 1)
		return sc_errf(SC_EINVAL, "adamw: step %d is not 1-based", t);
	double lr_d = intended_double(lr), b1 = intended_double(beta1);
	double b2 = intended_double(beta2), wd = intended_double(weight_decay);
	s->decay = (float)(1.0 - lr_d * wd);
	s->w1 = (float)(1.0 - b1);
	s->small = fabsf(s->w1) < 0.5f;
	s->beta2 = (float)b2;
	s->w2 = (float)(1.0 - b2);
	s->step = (float)-(lr_d / (1.0 - pow(b1, t)));
	s->bc2_sqrt = (float)sqrt(1.0 - pow(b2, t));
	s->eps = (float)intended_double(eps);
	return SC_OK;
}
