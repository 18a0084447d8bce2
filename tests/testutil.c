/* testutil.c — see testutil.h. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

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
