/* fuzz_safetensors.c — a .safetensors file (common/format/safetensors.c):
 * opened, every tensor looked up by name, its shape and byte range checked,
 * and read as float32 as a segment loads it. */
#include "sc_safetensors.h"

#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char p[512];
	sc_st_file *f = NULL;

	fuzz_write("model.safetensors", data, size);
	if (sc_st_open(&f, fuzz_path(p, sizeof(p), "model.safetensors")))
		return 0;
	sc_st_metadata(f, "format");
	for (int i = 0; i < sc_st_count(f); i++) {
		const sc_st_tensor *t = sc_st_at(f, i);
		size_t numel = 1;
		float *x;
		if (sc_st_find(f, t->name) == NULL)
			abort(); /* a listed tensor cannot be found by its name */
		sc_st_file_offset(f, t);
		sc_st_expect_shape(t, t->ndim, t->shape);
		for (int d = 0; d < t->ndim; d++)
			numel *= (size_t)t->shape[d];
		if (numel > (1u << 16))
			continue;
		if ((x = malloc((numel ? numel : 1) * sizeof(float))) == NULL)
			continue;
		sc_st_read_f32(x, t, numel);
		free(x);
	}
	sc_st_close(f);
	return 0;
}
