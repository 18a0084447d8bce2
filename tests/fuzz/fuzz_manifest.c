/* fuzz_manifest.c — a model directory's weights as the coordinator registers
 * them (common/format/manifest.c over weights.c): the input is
 * model.safetensors.index.json, FUZZ_SEP, the shard "a.safetensors",
 * FUZZ_SEP, the shard "b.safetensors". An empty index part writes the first
 * shard as the single model.safetensors instead. Every tensor of a built
 * manifest is found again by its name. */
#include "sc_manifest.h"

#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *part[3];
	size_t len[3];
	sc_manifest m = { 0 };
	char dir[512];
	int single;

	fuzz_split(data, size, 3, part, len);
	single = len[0] == 0;
	fuzz_write("model.safetensors.index.json", single ? NULL : part[0], len[0]);
	fuzz_write("model.safetensors", single ? part[1] : NULL, len[1]);
	fuzz_write("a.safetensors", single ? NULL : part[1], len[1]);
	fuzz_write("b.safetensors", single ? NULL : part[2], len[2]);
	if (sc_manifest_build(&m, fuzz_path(dir, sizeof(dir), ".")))
		return 0;
	for (int i = 0; i < m.n; i++)
		if (sc_manifest_find(&m, m.t[i].name) != &m.t[i])
			abort(); /* a manifest's tensor is not found by its name */
	sc_manifest_free(&m);
	return 0;
}
