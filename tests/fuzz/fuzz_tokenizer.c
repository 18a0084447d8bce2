/* fuzz_tokenizer.c — a tokenizer.json (common/format/tokenizer.c and
 * tok_*.c) and text encoded with it: the input is the tokenizer file, then
 * FUZZ_SEP and the text (absent: a fixed sentence). A tokenizer that loads
 * encodes the text with and without special tokens, and decodes the ids
 * back with and without them. */
#include "sc_tokenizer.h"

#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char fixed[] = "Hello world! 123 <|endoftext|> caf\xc3\xa9\n\tend";
	const uint8_t *part[2];
	size_t len[2];
	sc_tokenizer *tok = NULL;
	const char *text = fixed;
	size_t tlen = sizeof(fixed) - 1;
	char p[512];
	uint8_t digest[32];

	fuzz_split(data, size, 2, part, len);
	fuzz_write("tokenizer.json", part[0], len[0]);
	if (sc_tokenizer_load(&tok, fuzz_path(p, sizeof(p), "tokenizer.json")))
		return 0;
	if (part[1])
		text = (const char *)part[1], tlen = len[1];
	sc_tokenizer_vocab_size(tok);
	sc_tokenizer_bos_id(tok);
	sc_tokenizer_eos_id(tok);
	sc_tokenizer_token_id(tok, "a");
	sc_tokenizer_digest(tok, digest);
	for (int special = 0; special < 2; special++) {
		int32_t *ids = NULL;
		size_t n = 0;
		char *out = NULL;
		size_t olen = 0;
		if (sc_tokenizer_encode(tok, text, tlen, special, &ids, &n))
			continue;
		for (size_t i = 0; i < n; i++)
			if (ids[i] < 0)
				abort(); /* encode gave a negative id */
		if (sc_tokenizer_decode(tok, ids, n, special, &out, &olen) == SC_OK)
			free(out);
		free(ids);
	}
	sc_tokenizer_free(tok);
	return 0;
}
