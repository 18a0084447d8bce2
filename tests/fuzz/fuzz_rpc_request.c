/* fuzz_rpc_request.c — the body of an RPC request (proto/splitchain.proto):
 * the first byte picks the method (fuzz_requests.h), the rest is its body,
 * unpacked and checked as the method's handler does before it acts. */
#include "fuzz_requests.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	fuzz_dir(); /* silences logging */
	fuzz_request(data[0] % FUZZ_N_METHODS, data + 1, size - 1);
	return 0;
}
