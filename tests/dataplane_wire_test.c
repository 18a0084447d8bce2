/* dataplane_wire_test.c — tensors crossing a hop in a wire encoding: what
 * the receiver decodes is, bit for bit, what sc_wire_roundtrip makes of the
 * same tensor with the same rounding stream and error feedback (so a chain
 * equals one process); the bytes on the wire shrink accordingly; a frame in
 * another encoding than the hop's is refused, never decoded. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "testutil.h"

#include "sc_codec.h"
#include "sc_dataplane.h"

enum { B = 2, T = 5, C = 11, NUMEL = B * T * C };
static const int64_t shape[3] = { B, T, C };

typedef struct receiver {
	sc_dp_socket *s;
	sc_dp_tag tag;
	float y[NUMEL];
	sc_err rc;
	char why[512]; /* the receiving thread's error detail */
} receiver;

static void *receive_one(void *arg)
{
	receiver *r = arg;
	r->rc = sc_dp_recv(r->s, &r->tag, 3, shape, r->y);
	snprintf(r->why, sizeof(r->why), "%s", r->rc ? sc_err_detail() : "");
	return NULL;
}

/* A hop whose ends carry `send_wire` and `recv_wire`: sends x once (with
 * residual and a stream seeded by seed) and receives it into r. */
static void hop(int send_wire, int recv_wire, const float *x, float *residual, uint64_t seed,
		receiver *r, uint64_t *sent)
{
	static int port_n;
	char url[64];
	sc_dp_opts lo, dopts;
	sc_dp_socket *down, *up;
	sc_dp_tag tag = { .job = 3, .step = 7, .micro_batch = 1, .direction = SC_DP_FORWARD };
	pthread_t th;
	sc_rng rng;

	snprintf(url, sizeof(url), "inproc://wire-%d", port_n++);
	sc_dp_opts_defaults(&lo);
	lo.timeout_ms = 5000;
	dopts = lo;
	lo.wire = recv_wire;
	dopts.wire = send_wire;
	SC_ASSERT_OK(sc_dp_listen(&down, url, &lo));
	SC_ASSERT_OK(sc_dp_dial(&up, url, &dopts));
	r->s = down;
	r->tag = tag;
	assert_int_equal(pthread_create(&th, NULL, receive_one, r), 0);
	sc_wire_rng(&rng, seed, tag.step, tag.micro_batch, 0, SC_WIRE_FORWARD);
	SC_ASSERT_OK(sc_dp_send_coded(up, &tag, 3, shape, x, residual, &rng));
	pthread_join(th, NULL);
	*sent = sc_dp_bytes_sent(up);
	sc_dp_close(up);
	sc_dp_close(down);
}

static void decoded_equals_roundtrip(void **state)
{
	float x[NUMEL], want[NUMEL], res_hop[NUMEL], res_ref[NUMEL];
	void *scratch = malloc(sc_wire_bytes(SC_WIRE_FP32, B * T, C));
	uint64_t sent[SC_WIRE_COUNT];
	receiver r;

	sc_test_fill_normal(x, NUMEL, 5, 1.0f);
	for (int w = 0; w < SC_WIRE_COUNT; w++) {
		sc_rng rng;
		for (int i = 0; i < NUMEL; i++)
			res_hop[i] = res_ref[i] = 0.01f * (float)(i % 7); /* feedback carried in */
		memcpy(want, x, sizeof(x));
		sc_wire_rng(&rng, 42, 7, 1, 0, SC_WIRE_FORWARD);
		sc_wire_roundtrip(w, want, B * T, C, res_ref, &rng, scratch);
		hop(w, w, x, res_hop, 42, &r, &sent[w]);
		SC_ASSERT_OK(r.rc);
		if (memcmp(r.y, want, sizeof(want)))
			fail_msg("%s: the hop decoded other values than the round trip",
				 sc_wire_name(w));
		if (memcmp(res_hop, res_ref, sizeof(res_ref)))
			fail_msg("%s: the sender's error feedback differs", sc_wire_name(w));
		/* the message: header plus the encoded payload, no more */
		assert_true(sent[w] >= sc_wire_bytes(w, B * T, C));
		assert_true(sent[w] <= sc_wire_bytes(w, B * T, C) + 4 + SC_DP_MAX_HEADER);
	}
	assert_true(sent[SC_WIRE_INT8] < sent[SC_WIRE_BF16]);
	assert_true(sent[SC_WIRE_BF16] < sent[SC_WIRE_FP32]);
	assert_true(sent[SC_WIRE_INT4] < sent[SC_WIRE_INT8]);
	free(scratch);
}

static void another_encoding_refused(void **state)
{
	static const int pairs[][2] = { { SC_WIRE_INT8, SC_WIRE_FP32 },
					{ SC_WIRE_FP32, SC_WIRE_INT8 },
					{ SC_WIRE_INT4, SC_WIRE_INT8 },
					{ SC_WIRE_BF16, SC_WIRE_FP16 } };
	float x[NUMEL];
	receiver r;
	uint64_t sent;

	sc_test_fill_normal(x, NUMEL, 6, 1.0f);
	for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
		hop(pairs[i][0], pairs[i][1], x, NULL, 1, &r, &sent);
		if (r.rc != SC_EFORMAT)
			fail_msg("%s sent, %s expected: %s (%d)", sc_wire_name(pairs[i][0]),
				 sc_wire_name(pairs[i][1]), r.why, (int)r.rc);
		assert_non_null(strstr(r.why, "dtype"));
	}
}

static double mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* The test-only link latency: a tensor reaches the receiver no sooner than
 * the delay after it was sent; the sender does not wait. */
static void test_link_delay(void **state)
{
	float x[NUMEL];
	receiver r;
	uint64_t sent;
	double t0;

	sc_test_fill_normal(x, NUMEL, 9, 1.0f);
	t0 = mono_ms();
	hop(SC_WIRE_FP32, SC_WIRE_FP32, x, NULL, 1, &r, &sent);
	double plain = mono_ms() - t0;
	assert_int_equal(setenv("SPLITCHAIN_TEST_LINK_DELAY_MS", "150", 1), 0);
	t0 = mono_ms();
	hop(SC_WIRE_FP32, SC_WIRE_FP32, x, NULL, 1, &r, &sent);
	double delayed = mono_ms() - t0;
	unsetenv("SPLITCHAIN_TEST_LINK_DELAY_MS");
	SC_ASSERT_OK(r.rc);
	assert_memory_equal(r.y, x, sizeof(x));
	if (!(delayed >= 150 && delayed < plain + 1000))
		fail_msg("a hop took %.1f ms with a 150 ms delay, %.1f ms without", delayed, plain);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(decoded_equals_roundtrip),
		cmocka_unit_test(another_encoding_refused),
		cmocka_unit_test(test_link_delay),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
