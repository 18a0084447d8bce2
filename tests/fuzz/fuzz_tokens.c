/* fuzz_tokens.c — a token file (common/format/data.c: the nanoGPT / llm.c
 * .bin header and uint16 or uint32 ids, anything else read as bytes),
 * loaded for a vocabulary of 300 and cut into a job's windows. */
#include "sc_data.h"

#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int32_t in[2 * 4], tg[2 * 4];
	sc_tokens *tk = NULL;
	sc_loader *ld = NULL;
	char p[512];

	fuzz_write("data.bin", data, size);
	if (sc_tokens_load(&tk, fuzz_path(p, sizeof(p), "data.bin"), 300))
		return 0;
	for (size_t i = 0; i < tk->n; i++)
		if (tk->ids[i] < 0 || tk->ids[i] >= 300)
			abort(); /* an id outside the vocabulary got through */
	if (sc_loader_new(&ld, tk, 4, 1) == SC_OK) {
		sc_loader_batch(ld, 0, 2, in, tg);
		sc_loader_micro_batch(ld, 5, 2, 1, 1, in, tg);
		sc_loader_free(ld);
	}
	sc_tokens_free(tk);
	return 0;
}
