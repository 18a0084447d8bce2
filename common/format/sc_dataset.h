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

#endif
