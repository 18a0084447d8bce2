/* bench_common.c — see bench_common.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_common.h"
#include "sc_modelgen.h"
#include "sc_rng.h"

double bench_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double bench_flops_per_token(const sc_model_config *mc, int T, int r)
{
	double layer, head;
	sc_step_flops(mc, T, r, &layer, &head);
	return mc->n_layer * layer + head;
}

int bench_shape(const char *name, sc_model_config *mc)
{
	if (!strcmp(name, "gpt2"))
		*mc = (sc_model_config){ 12, 12, 768, 50257, 1024, 1e-5f };
	else if (!strcmp(name, "small"))
		*mc = (sc_model_config){ 4, 4, 256, 8192, 256, 1e-5f };
	else
		return -1;
	return 0;
}

sc_err bench_model(const char *dir, const sc_model_config *mc, size_t ntokens, sc_st_file **wf,
		   sc_tokens *tk)
{
	sc_modelgen_opts mo = { .seed = 1, .dtype = SC_F32 };
	char path[4200];
	sc_rng r;
	uint64_t k = 4;

	*wf = NULL;
	memset(tk, 0, sizeof(*tk));
	SC_TRY(sc_modelgen_write(dir, mc, &mo));
	snprintf(path, sizeof(path), "%s/model.safetensors", dir);
	if (!(tk->ids = malloc(ntokens * sizeof(uint16_t))))
		return sc_errf(SC_ENOMEM, "out of memory for %zu tokens", ntokens);
	tk->n = ntokens;
	sc_rng_seed(&r, &k, 1);
	for (size_t i = 0; i < ntokens; i++)
		tk->ids[i] = (uint16_t)sc_rng_below(&r, (uint64_t)mc->vocab_size);
	return sc_st_open(wf, path);
}
