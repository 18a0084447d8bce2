/* fuzz_peft.c — a PEFT adapter directory (common/model/adapter.c): the
 * input is adapter_config.json, FUZZ_SEP, adapter_model.safetensors; both
 * are written to a directory and loaded as `splitchain` and the coordinator
 * load an adapter, for a small GPT-2 and a small Llama model. */
#include "sc_adapter.h"

#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static sc_model_config mc[2];
	static int ready;
	const uint8_t *part[2];
	size_t len[2];
	char dir[512];

	if (!ready) {
		fuzz_small_model(&mc[0], 0);
		fuzz_small_model(&mc[1], 1);
		ready = 1;
	}
	fuzz_split(data, size, 2, part, len);
	fuzz_write("adapter_config.json", part[0], len[0]);
	fuzz_write("adapter_model.safetensors", part[1], len[1]);
	for (int k = 0; k < 2; k++) {
		sc_adapter *ad = NULL;
		if (sc_adapter_load(&ad, fuzz_path(dir, sizeof(dir), "."), &mc[k]) == SC_OK) {
			/* Loaded: every tensor it holds is reachable by its PEFT name. */
			sc_adapter_tensor *t = NULL;
			int n = 0;
			if (sc_adapter_tensors(ad, 0, ad->n_layer, &t, &n) == SC_OK)
				free(t);
			sc_adapter_free(ad);
		}
	}
	return 0;
}
