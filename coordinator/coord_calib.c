/* coord_calib.c — the model fingerprint and the cached layer errors
 * (coord_calib.h). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "coord_calib.h"
#include "sc_calib.h"
#include "sc_log.h"
#include "sc_sha256.h"
#include "sc_weights.h"

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int is_model_file(const char *n)
{
	size_t len = strlen(n);
	return (len > 12 && !strcmp(n + len - 12, ".safetensors")) ||
	       (len > 5 && !strcmp(n + len - 5, ".json"));
}

sc_err coord_model_key(const char *dir, const char *digest, char key[65])
{
	char head[256], *text = NULL, **names = NULL;
	size_t len, cap = 0, n = 0;
	uint8_t d[SC_SHA256_BYTES];
	DIR *dp = NULL;
	sc_err rc = SC_OK;

	len = (size_t)snprintf(head, sizeof(head), "splitchain layer errors 1: B %d T %d seed %d\n",
			       SC_CALIB_B, SC_CALIB_T, SC_CALIB_SEED);
	if (digest && *digest) {
		size_t m = len + strlen(digest) + 1;
		if (!(text = malloc(m)))
			return sc_errf(SC_ENOMEM, "out of memory");
		snprintf(text, m, "%sdigest %s", head, digest);
		sc_sha256(text, strlen(text), d);
		free(text);
		sc_sha256_hex(d, key);
		return SC_OK;
	}
	if (!(dp = opendir(dir)))
		return sc_errf(SC_EIO, "%s: cannot list the model directory", dir);
	for (struct dirent *e; (e = readdir(dp));) {
		if (!is_model_file(e->d_name))
			continue;
		if (n == cap) {
			char **g = realloc(names, (cap = cap ? 2 * cap : 16) * sizeof(*names));
			if (!g) {
				rc = sc_errf(SC_ENOMEM, "out of memory");
				goto out;
			}
			names = g;
		}
		if (!(names[n] = strdup(e->d_name))) {
			rc = sc_errf(SC_ENOMEM, "out of memory");
			goto out;
		}
		n++;
	}
	qsort(names, n, sizeof(*names), by_name);
	/* The text hashed: the header, then a line per file. */
	size_t used = 0, tcap = len + n * 512 + 128;
	if (!(text = malloc(tcap))) {
		rc = sc_errf(SC_ENOMEM, "out of memory");
		goto out;
	}
	memcpy(text, head, len);
	used = len;
	for (size_t i = 0; i < n; i++) {
		char path[4096];
		struct stat st;
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		if (stat(path, &st) != 0)
			continue;
		used += (size_t)snprintf(text + used, tcap - used, "%.400s %lld %lld.%09ld\n",
					 names[i], (long long)st.st_size,
					 (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
	}
	/* config.json's own bytes too: an edit within the same second. */
	char cfg[4096];
	snprintf(cfg, sizeof(cfg), "%s/config.json", dir);
	uint8_t cd[SC_SHA256_BYTES];
	char chex[SC_SHA256_HEX];
	if (sc_sha256_file(cfg, cd) == SC_OK) {
		sc_sha256_hex(cd, chex);
		used += (size_t)snprintf(text + used, tcap - used, "config %s\n", chex);
	}
	sc_sha256(text, used, d);
	sc_sha256_hex(d, key);
out:
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	free(text);
	closedir(dp);
	return rc;
}

sc_err coord_layer_errors(sc_db *db, const char *dir, const char *digest, const sc_model_config *mc,
			  double *int8, double *nf4, int *measured)
{
	char key[65];
	sc_weights *w = NULL;
	sc_backend *be = NULL;
	sc_err rc;

	*measured = 0;
	SC_TRY(coord_model_key(dir, digest, key));
	if (sc_db_layer_errors_get(db, key, mc->n_layer, int8, nf4) == SC_OK)
		return SC_OK;
	int T = mc->n_positions < SC_CALIB_T ? mc->n_positions : SC_CALIB_T;
	sc_info("coordinator", "measuring the %d layers' quantization errors of %s", mc->n_layer,
		dir);
	if (!(rc = sc_weights_open(&w, dir)) && !(rc = sc_backend_open(&be, "cpu", 1)) &&
	    !(rc = sc_calib_layer_errors(be, mc, w, SC_CALIB_B, T, SC_CALIB_SEED, int8, nf4)) &&
	    !(rc = sc_db_layer_errors_put(db, key, mc->n_layer, int8, nf4)))
		*measured = 1;
	if (be)
		sc_backend_free(be);
	sc_weights_close(w);
	return rc ? sc_err_wrap(rc, "measuring the layers' quantization errors") : SC_OK;
}
