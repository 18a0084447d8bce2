/* backend.c — choosing a backend by device name; what every backend's
 * AdamW shares. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sc_backend.h"

sc_err sc_backend_open(sc_backend **out, const char *device, int threads)
{
	*out = NULL;
	if (!device || !strcmp(device, "cpu"))
		return sc_backend_cpu_open(out, threads);
	if (!strncmp(device, "cuda", 4)) {
		const char *p = device + 4;
		long ord = 0;
		if (*p == ':') {
			char *end;
			ord = strtol(p + 1, &end, 10);
			if (end == p + 1 || *end || ord < 0 || ord > 255)
				return sc_errf(SC_EINVAL, "bad device '%s': expected cuda:N",
					       device);
		} else if (*p) {
			return sc_errf(SC_EINVAL, "bad device '%s': expected cpu or cuda:N",
				       device);
		}
		return sc_backend_cuda_open(out, (int)ord);
	}
	return sc_errf(SC_EINVAL, "unknown device '%s': expected cpu or cuda:N", device);
}

void sc_backend_free(sc_backend *be)
{
	if (be)
		be->ops->destroy(be);
}

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
