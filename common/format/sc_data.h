/* sc_data.h — training data: token files and plain text, and the
 * deterministic order in which a job reads them.
 *
 * Token file (as nanoGPT / llm.c .bin files): a header of 256 little-endian
 * int32 — [0] magic 20240520, [1] version, [2] number of tokens — then the
 * tokens: version 1 as uint16, version 2 as little-endian uint32 (ids of
 * 65536 and up: Llama 3, Qwen2). The writer picks version 1 when every id
 * fits in 16 bits; the reader takes both. Any other file is plain text, tokenized byte by byte
 * (token id = byte value; the model's vocabulary must cover 256 ids).
 *
 * Order: the stream is cut into W = (n - 1) / T windows of T + 1 tokens
 * (inputs and shifted targets), or W given windows (sc_tokens.win). Sample i of a job reads window
 * perm_e[i mod W], where e = i / W is the epoch and perm_e a permutation
 * drawn from (seed, e). The sample index of step s, micro-batch m, row b is
 * (s * M + m) * B + b, so any step's data is a function of (seed, s) alone —
 * which a resumed job relies on.
 */
#ifndef SC_DATA_H
#define SC_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "sc_err.h"

#define SC_TOKENS_MAGIC      20240520
#define SC_TOKENS_VERSION    1 /* uint16 ids */
#define SC_TOKENS_VERSION_32 2 /* uint32 ids */

typedef struct sc_tokens {
	int32_t *ids;  /* (n) owned, each in [0, vocab_size) */
	uint8_t *mask; /* (n) owned, or NULL: 0 where a token is not a target (a
			* prompt token of prompt/completion data), 1 where its
			* loss counts */
	size_t n;
	size_t *docs; /* (ndocs) owned, or NULL: where each document starts
		       * (docs[0] = 0; text and JSONL data); NULL: the stream
		       * is one document (a token file) */
	size_t ndocs;
	size_t *win; /* (nwin) owned, or NULL: where each window starts when
		      * the data is not packed (sc_tokens_unpack); NULL:
		      * every T tokens from 0 */
	size_t nwin;
} sc_tokens;

/* Reads path (token file or text, see above); every id must be < vocab_size
 * (else SC_ERANGE naming the first offending position). *out = new tokens,
 * free with sc_tokens_free. A token file whose header or size is wrong gives
 * SC_EFORMAT. */
sc_err sc_tokens_load(sc_tokens **out, const char *path, int vocab_size);
void sc_tokens_free(sc_tokens *tk);

/* Writes n ids (borrowed) as a token file at path: version 1 when all are
 * below 65536, else version 2. A negative id gives SC_ERANGE. */
sc_err sc_tokens_save(const char *path, const int32_t *ids, size_t n);

typedef struct sc_loader sc_loader;

/* *out = new loader over tk (borrowed: must outlive it) for windows of T;
 * SC_EINVAL when tk holds fewer than T + 1 tokens. Free with sc_loader_free. */
sc_err sc_loader_new(sc_loader **out, const sc_tokens *tk, int T, uint64_t seed);
void sc_loader_free(sc_loader *ld);

/* Fills inputs (B,T) and targets (B,T) with samples first .. first + B - 1;
 * a target whose token is masked out (sc_tokens.mask) is -1 (ignored). */
void sc_loader_batch(sc_loader *ld, uint64_t first, int B, int32_t *inputs, int32_t *targets);

/* Micro-batch m of 0-based optimizer step `step` of M micro-batches of B
 * samples: samples (step * M + m) * B onward. Every party that cuts a
 * step's data (the single-process trainer, the coordinator, a data owner)
 * cuts it here, so all cut the same. */
void sc_loader_micro_batch(sc_loader *ld, uint64_t step, int M, int m, int B, int32_t *inputs,
			   int32_t *targets);

/* Number of windows W. */
size_t sc_loader_windows(const sc_loader *ld);

/* Held-out evaluation reads the windows of tk (of T + 1 tokens, as the
 * loader cuts them) in order, B per micro-batch. The number of micro-batches
 * that cover every window, at most max (0: no limit). */
size_t sc_eval_batches(const sc_tokens *tk, int T, int B, size_t max);

/* Fills micro-batch k's inputs and targets (B,T) (targets of masked tokens
 * -1, as sc_loader_batch); rows past the last window are padding (inputs 0,
 * targets -1). Returns the number of targets >= 0. */
size_t sc_eval_batch(const sc_tokens *tk, int T, int B, size_t k, int32_t *inputs,
		     int32_t *targets);

#endif
