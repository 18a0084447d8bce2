/* fuzz_dp_frame.c — a tensor message on the data plane (common/net/dp_frame.c
 * and the codecs of common/format/codec.c under it), checked and decoded as
 * a stage's receive does. The first byte picks the hop's wire encoding and
 * the shape the receiver expects (fuzz_dp_shape); the rest is the message.
 * make_seeds.c writes seeds from the real encoder with the same tag and
 * peer. */
#include "dp_frame.h"
#include "sc_codec.h"

#include "fuzz_util.h"

/* The expectation of selector byte s: wire s % SC_WIRE_COUNT, and one of a
 * few shapes (s / SC_WIRE_COUNT). */
static int fuzz_dp_shape(uint8_t s, int *wire, int64_t *shape)
{
	static const int64_t shapes[][3] = { { 2, 4, 8 }, { 1, 1, 1 }, { 3, 5, 7 }, { 2, 2, 0 } };
	int k = (s / SC_WIRE_COUNT) % 4;
	*wire = s % SC_WIRE_COUNT;
	memcpy(shape, shapes[k], sizeof(shapes[k]));
	return 3;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const sc_dp_tag want = FUZZ_DP_TAG_INIT;
	const sc_dp_peer from = FUZZ_DP_PEER_INIT;
	float x[2 * 4 * 8 > 3 * 5 * 7 ? 2 * 4 * 8 : 3 * 5 * 7];
	int64_t shape[3];
	int wire, ndim, stale = 0;

	if (size < 1)
		return 0;
	fuzz_dir(); /* silences logging */
	ndim = fuzz_dp_shape(data[0], &wire, shape);
	dp_decode_frame(data + 1, size - 1, &want, &from, ndim, shape, wire, x, &stale);
	dp_decode_frame(data + 1, size - 1, &want, NULL, ndim, shape, wire, x, &stale);
	dp_frame_sent_us(data + 1, size - 1);
	return 0;
}
