/* fuzz_util.h — what the libFuzzer harnesses of tests/fuzz share: a private
 * scratch directory for decoders that read files, a whole-buffer write, the
 * split of one input into several files, and a small model configuration.
 * Header-only (each harness is one translation unit). */
#ifndef SC_FUZZ_UTIL_H
#define SC_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sc_config.h"
#include "sc_log.h"

/* Parts of one input are separated by this line (tests/fuzz/make_seeds.py
 * writes it; fuzz.dict teaches it to the mutator). */
#define FUZZ_SEP     "\n--8<--\n"
#define FUZZ_SEP_LEN 8

/* The tensor a data-plane receiver in fuzz_dp_frame.c waits for, and the
 * sender it expects (sc_dataplane.h). */
#define FUZZ_DP_TAG_INIT                                                                           \
	{                                                                                          \
		.job = 7, .step = 3, .micro_batch = 1, .direction = SC_DP_FORWARD                  \
	}
#define FUZZ_DP_PEER_INIT                                                                          \
	{                                                                                          \
		.job = 7, .version = 2, .stage = 1                                                 \
	}

static char fuzz_dir_path[256];

static inline void fuzz_dir_remove(void)
{
	char cmd[300];
	if (!fuzz_dir_path[0])
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fuzz_dir_path);
	if (system(cmd) != 0)
		fprintf(stderr, "fuzz: could not remove %s\n", fuzz_dir_path);
}

/* A directory of this process's own ($TMPDIR, else /dev/shm, else /tmp),
 * made on first use and removed at exit.
 * Logging is silenced at the same time: refusals are what a fuzzer mostly
 * produces, and printing each would halve its speed. Static. */
static inline const char *fuzz_dir(void)
{
	if (!fuzz_dir_path[0]) {
		/* Memory-backed when there is one: a disk's metadata writes
		 * would slow the file harnesses a hundredfold. */
		const char *tmp = getenv("TMPDIR");
		if (!tmp || !tmp[0])
			tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
		snprintf(fuzz_dir_path, sizeof(fuzz_dir_path), "%s/sc-fuzz-XXXXXX", tmp);
		if (!mkdtemp(fuzz_dir_path)) {
			perror("fuzz: mkdtemp");
			abort();
		}
		atexit(fuzz_dir_remove);
		sc_log_set_level(SC_LOG_OFF);
	}
	return fuzz_dir_path;
}

/* buf = fuzz_dir()/name (size bytes). Static storage is the caller's. */
static inline char *fuzz_path(char *buf, size_t size, const char *name)
{
	snprintf(buf, size, "%s/%s", fuzz_dir(), name);
	return buf;
}

/* Writes data to fuzz_dir()/name, replacing it; removes it when data is NULL.
 * A failure to write is the machine's, not the input's: abort. */
static inline void fuzz_write(const char *name, const uint8_t *data, size_t size)
{
	char p[512];
	FILE *f;
	fuzz_path(p, sizeof(p), name);
	if (!data) {
		unlink(p);
		return;
	}
	if (!(f = fopen(p, "wb")) || (size && fwrite(data, 1, size, f) != size) || fclose(f)) {
		perror(p);
		abort();
	}
}

/* Cuts data at FUZZ_SEP into at most n parts (the last takes the rest);
 * parts past the input's are NULL. Returns how many were found. Borrows. */
static inline int fuzz_split(const uint8_t *data, size_t size, int n, const uint8_t **part,
			     size_t *len)
{
	int k = 0;
	for (int i = 0; i < n; i++)
		part[i] = NULL, len[i] = 0;
	while (k < n) {
		const uint8_t *sep = k == n - 1 ? NULL : memmem(data, size, FUZZ_SEP, FUZZ_SEP_LEN);
		part[k] = data;
		len[k] = sep ? (size_t)(sep - data) : size;
		k++;
		if (!sep)
			break;
		size -= (size_t)(sep - data) + FUZZ_SEP_LEN;
		data = sep + FUZZ_SEP_LEN;
	}
	return k;
}

/* A tiny model of each family (2 layers, C 8): what adapters and wire
 * tensors are checked against. llama: 0 gpt2, 1 llama. */
static inline void fuzz_small_model(sc_model_config *mc, int llama)
{
	static const char gpt2[] =
	    "{\"model_type\":\"gpt2\",\"n_layer\":2,\"n_embd\":8,\"n_head\":2,"
	    "\"n_positions\":16,\"vocab_size\":64}";
	static const char lm[] =
	    "{\"model_type\":\"llama\",\"num_hidden_layers\":2,\"hidden_size\":8,"
	    "\"num_attention_heads\":2,\"num_key_value_heads\":1,\"intermediate_size\":16,"
	    "\"max_position_embeddings\":16,\"vocab_size\":64,\"rms_norm_eps\":1e-5}";
	const char *t = llama ? lm : gpt2;
	if (sc_config_parse(mc, t, strlen(t))) {
		fprintf(stderr, "fuzz: the built-in model does not parse: %s\n", sc_err_detail());
		abort();
	}
}

#endif
