/* fuzz_dp_hello.c — the first message of a data-plane connection, the
 * dialer's hello (common/net/dataplane.c), checked as a listener does
 * before it reads any tensor from that connection. */
#include "sc_dataplane.h"

#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const sc_dp_peer want = { .job = 7, .version = 2, .stage = 1 };
	const sc_dp_peer zero = { 0 };
	uint8_t secret[SC_DP_SECRET_LEN];

	fuzz_dir(); /* silences logging */
	for (size_t i = 0; i < sizeof(secret); i++)
		secret[i] = (uint8_t)(0xa5 ^ i);
	sc_dp_check_hello(data, size, &want, NULL);
	sc_dp_check_hello(data, size, &want, secret);
	sc_dp_check_hello(data, size, &zero, secret);
	return 0;
}
