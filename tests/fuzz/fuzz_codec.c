/* fuzz_codec.c — a tensor's payload in a hop's wire encoding
 * (common/format/codec.c: fp32, bf16, fp16, int8 and int4 with per-row
 * scales), decoded as a receive does. Bytes 0-2: encoding, rows and
 * columns; the rest is the payload. */
#include "sc_codec.h"

#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	float x[64 * 64];
	size_t rows, cols;
	int w;

	if (size < 3)
		return 0;
	fuzz_dir();                        /* silences logging */
	w = data[0] % (SC_WIRE_COUNT + 1); /* one past the enum: refused */
	rows = data[1] % 65, cols = data[2] % 65;
	sc_wire_decode((enum sc_wire)w, data + 3, size - 3, rows, cols, x);
	return 0;
}
