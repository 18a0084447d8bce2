/* rpc_pb_test.c — protobuf messages over sc_rpc (common/net/rpc_pb.c): what
 * sc_rpc_unpack accepts and refuses. The bodies are built byte by byte, as a
 * hostile client would send them. */
#include <stdlib.h>
#include <string.h>

#include "sc_rpc_pb.h"
#include "splitchain.pb-c.h"
#include "testutil.h"

/* Unpacks body as a SubmitRequest: the status sc_rpc_unpack leaves (OK when
 * it accepted), and on acceptance checks that the message packs to bytes
 * that unpack again — what the coordinator does with a job's spec. */
static int submit_status(const uint8_t *body, size_t len)
{
	sc_rpc_reply rep = { .status = SC_STATUS_OK };
	ProtobufCMessage *m = NULL;
	uint8_t buf[256];
	size_t n;
	if (sc_rpc_unpack(&splitchain__submit_request__descriptor, body, len, &m, &rep))
		return rep.status;
	n = protobuf_c_message_get_packed_size(m);
	assert_true(n <= sizeof(buf));
	assert_int_equal(protobuf_c_message_pack(m, buf), n);
	ProtobufCMessage *again =
	    protobuf_c_message_unpack(&splitchain__submit_request__descriptor, NULL, n, buf);
	assert_non_null(again);
	protobuf_c_message_free_unpacked(again, NULL);
	protobuf_c_message_free_unpacked(m, NULL);
	return SC_STATUS_OK;
}

static void test_unpack_cases(void **state)
{
	(void)state;
	/* lora (field 4) { rank 2, <the nested bytes> } */
	static const struct {
		const char *name;
		uint8_t body[16];
		size_t len;
		int want;
	} cases[] = {
		{ "lora with rank 2", { 0x22, 0x02, 0x08, 0x02 }, 4, SC_STATUS_OK },
		{ "an unknown field 99 (a newer client's)", { 0x98, 0x06, 0x01 }, 3, SC_STATUS_OK },
		{ "an unknown field in lora",
		  { 0x22, 0x04, 0x08, 0x02, 0x40, 0x15 },
		  6,
		  SC_STATUS_OK },
		/* Found by tests/fuzz/fuzz_rpc_request: the overlong tag 0x80 0x00
		 * names field 0; protobuf-c kept it and repacked it as a tag its
		 * unpack refuses, so a job's stored spec would not read back. */
		{ "field 0 in an overlong tag",
		  { 0x80, 0x00, 0x03 },
		  3,
		  SC_STATUS_INVALID_ARGUMENT },
		{ "field 0 inside lora",
		  { 0x22, 0x05, 0x08, 0x02, 0x80, 0x00, 0x03 },
		  7,
		  SC_STATUS_INVALID_ARGUMENT },
		{ "a truncated field", { 0x22, 0x09, 0x08 }, 3, SC_STATUS_INVALID_ARGUMENT },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int got = submit_status(cases[i].body, cases[i].len);
		if (got != cases[i].want)
			fail_msg("%s: status %s, want %s", cases[i].name, sc_status_name(got),
				 sc_status_name(cases[i].want));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unpack_cases),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
