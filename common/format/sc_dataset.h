/* sc_dataset.h — a job's training data from any of the files a researcher
 * brings, as one token stream (sc_data.h) for the loader:
 *   - a token file (sc_data.h's header): read as it is;
 *   - JSONL (the first non-blank byte is '{'): one JSON object per line,
 *     {"text": ...} (every token a target) or {"prompt": ..., "completion":
 *     ...} (the prompt's tokens predict nothing: the loss is masked to the
 *     completion and the EOS after it); chat data ({"messages": [...]}) is
 *     refused — it needs the model's chat template;
 *   - anything else: plain text, one document.
 * Text is tokenized with the tokenizer (its post-processor's BOS etc. on each
 * document), or byte by byte without one. Documents are packed back to back,
 * each followed by EOS when there is one, and the loader cuts windows of T+1
 * across them.
 */
#ifndef SC_DATASET_H
#define SC_DATASET_H

#include "sc_data.h"
#include "sc_tokenizer.h"

typedef struct sc_dataset_opts {
	int eos_id;         /* appended after each document; < 0: none */
	int skip_bad_lines; /* nonzero: a malformed JSONL line is counted and skipped */
} sc_dataset_opts;

typedef struct sc_dataset_stats {
	size_t documents, bad_lines, target_tokens;
	int format; /* 0 token file, 1 text, 2 JSONL text, 3 JSONL prompt/completion */
} sc_dataset_stats;

/* The tokenizer of a job: tokenizer_path when given (a tokenizer.json, or a
 * directory with one or with vocab.json + merges.txt), else
 * model_dir/tokenizer.json when there is one, else none (*out = NULL: text
 * is read as bytes). Free with sc_tokenizer_free. */
sc_err sc_dataset_tokenizer(sc_tokenizer **out, const char *model_dir, const char *tokenizer_path);

/* sc_dataset_load for a model: with a tokenizer, each document ends with
 * EOS — the one the tokenizer's post-processor appends, else model_eos (the
 * model's eos_token_id; < 0: none); bytes (tok NULL) get none. */
sc_err sc_dataset_load_for(sc_tokens **out, const char *path, const sc_tokenizer *tok,
			   int vocab_size, int model_eos, int skip_bad_lines, sc_dataset_stats *st);

/* *out = the tokens of the file at path (free with sc_tokens_free); tok
 * borrowed, NULL for bytes; every id must be < vocab_size (SC_ERANGE
 * naming the position). A malformed JSONL line gives SC_EFORMAT naming
 * the file and line (unless skip_bad_lines); an empty dataset SC_EINVAL.
 * st (may be NULL) says what was read. */
sc_err sc_dataset_load(sc_tokens **out, const char *path, const sc_tokenizer *tok, int vocab_size,
		       const sc_dataset_opts *o, sc_dataset_stats *st);

/* ---- a job's data: training and held-out streams ----
 * What finetune (in one process) and the coordinator (for a chain) both do
 * with a job's data options, so that both see the same windows:
 *   1. the training file is read (sc_dataset_load_for) or, when it is text or
 *      JSONL, taken from the cache of its tokenized form: a safetensors file
 *      in .splitchain-cache/ beside the data, named by a SHA-256 key of the
 *      data's bytes, the tokenizer's file, the EOS used and skip_bad_lines —
 *      a second job with the same data and tokenizer does not tokenize again.
 *      A cache that cannot be written (a read-only directory) is skipped; one
 *      that does not read back (corrupt, or another key) is rebuilt.
 *   2. held-out data: the eval file, or else a fraction of the documents
 *      (JSONL lines), drawn with the seed (same seed, same split); data of
 *      one document (plain text, a token file) gives its last tokens.
 *   3. no_pack: each document is laid out alone, starting a window, its last
 *      window padded; padding and the first token of each document are
 *      masked, so no window spans two documents and none predicts across. */
typedef struct sc_data_spec {
	const char *path;      /* training data (required) */
	const char *eval_path; /* held-out data, or NULL / "" */
	double eval_split;     /* without eval_path: fraction held out, in [0, 0.5] */
	int skip_bad_lines;
	int no_pack;
	int no_cache; /* neither read nor write the cache */
	int T;        /* window length (sequence), for no_pack and the checks */
	uint64_t seed;
} sc_data_spec;

typedef struct sc_job_data {
	sc_tokens *train, *eval; /* eval NULL: no held-out data */
	sc_dataset_stats st;     /* of the training file */
	int cache;               /* 0 not used, 1 read from the cache, 2 written to it */
} sc_job_data;

/* Fills jd (free with sc_job_data_free) for a model of vocab_size with EOS
 * model_eos, tokenizer tok (borrowed; NULL: bytes). Errors name the file;
 * the training stream must hold one window of T + 1 tokens, the held-out
 * stream (when asked for) too. */
sc_err sc_job_data_load(sc_job_data *jd, const sc_data_spec *ds, const sc_tokenizer *tok,
			int vocab_size, int model_eos);
void sc_job_data_free(sc_job_data *jd);

/* Splits tk into training and held-out streams as step 2 above (frac in
 * (0, 1)). *train, *eval new. */
sc_err sc_tokens_split(const sc_tokens *tk, double frac, uint64_t seed, sc_tokens **train,
		       sc_tokens **eval);

/* *out = tk laid out for windows of T + 1 without packing (step 3 above). */
sc_err sc_tokens_unpack(const sc_tokens *tk, int T, sc_tokens **out);

#endif
