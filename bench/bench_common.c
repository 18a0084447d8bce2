/* bench_common.c — see bench_common.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "bench_common.h"
#include "sc_family.h"
#include "sc_modelgen.h"
#include "sc_rng.h"

double bench_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void bench_cpu_sample_take(bench_cpu_sample *s)
{
	unsigned long long user, nice, sys, idle, iowait, irq, softirq, steal = 0;
	struct rusage ru;
	FILE *f = fopen("/proc/stat", "r");

	s->busy = -1;
	if (f) {
		if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &user, &nice, &sys,
			   &idle, &iowait, &irq, &softirq, &steal) >= 7)
			s->busy = (double)(user + nice + sys + irq + softirq + steal) /
				  (double)sysconf(_SC_CLK_TCK);
		fclose(f);
	}
	getrusage(RUSAGE_SELF, &ru);
	s->own = (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
		 (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
	s->wall = bench_now();
}

double bench_foreign_load(const bench_cpu_sample *a, const bench_cpu_sample *b)
{
	double other;
	if (a->busy < 0 || b->busy < 0 || b->wall <= a->wall)
		return -1;
	other = (b->busy - a->busy) - (b->own - a->own);
	return other > 0 ? other / (b->wall - a->wall) : 0;
}

double bench_flops_per_token(const sc_model_config *mc, int T, int r)
{
	double layer, head;
	sc_step_flops(mc, T, r, &layer, &head);
	return mc->n_layer * layer + head;
}

int bench_shape(const char *name, sc_model_config *mc)
{
	if (!strcmp(name, "small"))
		sc_gpt2_config(mc, 4, 4, 256, 8192, 256);
	else if (sc_config_preset(mc, name))
		return -1;
	return 0;
}

/* Whether dir already holds a model of mc's shape (written by an earlier
 * run), so that a large one is not generated again. */
static int same_model(const char *dir, const sc_model_config *mc)
{
	char path[4200], want[256], have[256];
	sc_model_config old;

	snprintf(path, sizeof(path), "%s/model.safetensors", dir);
	if (access(path, R_OK))
		return 0;
	snprintf(path, sizeof(path), "%s/config.json", dir);
	if (sc_config_load(&old, path))
		return 0;
	sc_config_describe(mc, want, sizeof(want));
	sc_config_describe(&old, have, sizeof(have));
	return !strcmp(want, have) && old.tie_embeddings == mc->tie_embeddings &&
	       old.n_positions == mc->n_positions;
}

sc_err bench_model(const char *dir, const sc_model_config *mc, size_t ntokens, sc_weights **wf,
		   sc_tokens *tk)
{
	sc_modelgen_opts mo = { .seed = 1, .dtype = SC_F32 };
	sc_rng r;
	uint64_t k = 4;

	*wf = NULL;
	memset(tk, 0, sizeof(*tk));
	if (!same_model(dir, mc))
		SC_TRY(sc_modelgen_write(dir, mc, &mo));
	if (!(tk->ids = malloc(ntokens * sizeof(int32_t))))
		return sc_errf(SC_ENOMEM, "out of memory for %zu tokens", ntokens);
	tk->n = ntokens;
	sc_rng_seed(&r, &k, 1);
	for (size_t i = 0; i < ntokens; i++)
		tk->ids[i] = (int32_t)sc_rng_below(&r, (uint64_t)mc->vocab_size);
	return sc_weights_open(wf, dir);
}
