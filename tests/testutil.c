/* testutil.c — see testutil.h. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sc_backend.h"
#include "sc_rng.h"
#include "testutil.h"

const char *sc_test_dir(void)
{
	static char dir[512];
	if (!dir[0]) {
		const char *base = getenv("SC_TEST_TMP");
		if (!base || !*base)
			base = "/tmp";
		mkdir(base, 0755);
		snprintf(dir, sizeof(dir), "%s/sc-test-%ld", base, (long)getpid());
		mkdir(dir, 0755);
	}
	return dir;
}

char *sc_test_path(char *buf, size_t size, const char *name)
{
	snprintf(buf, size, "%s/%s", sc_test_dir(), name);
	return buf;
}

void sc_test_fill_normal(float *x, size_t n, uint64_t seed, float std)
{
	sc_rng r;
	uint64_t k = seed;
	sc_rng_seed(&r, &k, 1);
	for (size_t i = 0; i < n; i++)
		x[i] = std * sc_rng_normal(&r);
}

double sc_test_max_rel_err(const float *a, const float *b, size_t n, double floor)
{
	double maxdiff = 0, maxref = floor;
	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)a[i] - (double)b[i]);
		if (d > maxdiff || isnan(d))
			maxdiff = isnan(d) ? INFINITY : d;
		if (fabs(b[i]) > maxref)
			maxref = fabs(b[i]);
	}
	return maxdiff / maxref;
}

int sc_test_write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	if (!f)
		return -1;
	size_t w = fwrite(data, 1, len, f);
	return (fclose(f) != 0 || w != len) ? -1 : 0;
}

int sc_test_open_cuda(const char *prog, sc_backend **gpu, sc_backend **gpu_tf32, sc_backend **cpu)
{
	sc_err rc = sc_backend_cuda_open(gpu, 0);

	*gpu_tf32 = *cpu = NULL;
	if (rc == SC_ENODEV) {
		printf("%s: no CUDA device: skipping (%s)\n", prog, sc_err_detail());
		return 77;
	}
	if (rc == SC_OK && (rc = sc_backend_cuda_open(gpu_tf32, 0)) == SC_OK &&
	    (rc = (*gpu_tf32)->ops->set_tf32(*gpu_tf32, 1)) == SC_OK)
		rc = sc_backend_cpu_open(cpu, 0);
	if (rc != SC_OK) {
		fprintf(stderr, "%s: opening the backends: %s: %s\n", prog, sc_err_name(rc),
			sc_err_detail());
		sc_test_close_cuda(*gpu, *gpu_tf32, *cpu);
		*gpu = *gpu_tf32 = *cpu = NULL;
		return 1;
	}
	printf("%s: %s against %s\n", prog, (*gpu)->name, (*cpu)->name);
	return 0;
}

void sc_test_close_cuda(sc_backend *gpu, sc_backend *gpu_tf32, sc_backend *cpu)
{
	sc_backend_free(cpu);
	sc_backend_free(gpu_tf32);
	sc_backend_free(gpu);
}
