/* fuzz_dataset.c — a job's training data (common/format/dataset.c: JSONL
 * text or prompt/completion, plain text, token files), optionally with a
 * tokenizer: the input is the data file, then FUZZ_SEP and a tokenizer.json
 * when there is one (else bytes). Loaded as a job loads it (malformed lines
 * skipped, and again refused), then split for held-out data and laid out
 * unpacked. */
#include "sc_dataset.h"

#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *part[2];
	size_t len[2];
	sc_tokenizer *tok = NULL;
	char p[512], tp[512];
	int vocab = 256;

	fuzz_split(data, size, 2, part, len);
	fuzz_write("data.txt", part[0], len[0]);
	if (part[1]) {
		fuzz_write("tokenizer.json", part[1], len[1]);
		if (sc_tokenizer_load(&tok, fuzz_path(tp, sizeof(tp), "tokenizer.json")))
			return 0;
		vocab = sc_tokenizer_vocab_size(tok);
	}
	for (int skip = 0; skip < 2; skip++) {
		sc_tokens *tk = NULL, *tr = NULL, *ev = NULL, *un = NULL;
		sc_dataset_stats st;
		if (sc_dataset_load_for(&tk, fuzz_path(p, sizeof(p), "data.txt"), tok, vocab,
					tok ? -1 : 255, skip, &st))
			continue;
		for (size_t i = 0; i < tk->n; i++)
			if (tk->ids[i] < 0 || tk->ids[i] >= vocab)
				abort(); /* an id outside the vocabulary got through */
		if (sc_tokens_split(tk, 0.25, 3, &tr, &ev) == SC_OK) {
			sc_tokens_free(tr);
			sc_tokens_free(ev);
		}
		if (sc_tokens_unpack(tk, 4, &un) == SC_OK)
			sc_tokens_free(un);
		sc_tokens_free(tk);
	}
	sc_tokenizer_free(tok);
	return 0;
}
