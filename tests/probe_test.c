/* probe_test.c — link probing (sc_probe.h): the Echo method's answers and
 * refusals, a probe over tcp loopback and inproc, a probe of a peer that
 * is not there (bounded by its budget), a probe given up, and the checks a
 * reported measurement must pass. Everything in this process, with a
 * timeout on every call. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sc_probe.h"
#include "sc_rpc_pb.h"
#include "splitchain.pb-c.h"
#include "testutil.h"

/* Echo, but the second payload of each probe (the first sized one) waits
 * 300 ms, as behind a neighbour's transfer. */
static void slow_second(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	static int payloads; /* since the last small echo */
	if (len <= 1024)
		payloads = 0;
	else if (++payloads == 2) {
		struct timespec d = { 0, 300 * 1000000L };
		nanosleep(&d, NULL);
	}
	sc_probe_echo(arg, req, len, rep);
}

static const sc_rpc_method methods[] = { { "Test.Echo", sc_probe_echo },
					 { "Test.SlowSecond", slow_second },
					 { NULL, NULL } };

static const char *inproc_url(void)
{
	static char url[128];
	static unsigned n;
	snprintf(url, sizeof(url), "inproc://probe_test-%d-%u", (int)getpid(), n++);
	return url;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double mono_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* One Echo call: the status, and the reply's payload size in *got. */
static int echo(sc_rpc_client *cl, size_t send, uint32_t want, size_t *got, char *msg, size_t n)
{
	Splitchain__EchoRequest req = SPLITCHAIN__ECHO_REQUEST__INIT;
	Splitchain__EchoReply *rep = NULL;
	uint8_t *buf = calloc(1, send + 1);
	int status = -1;
	assert_non_null(buf);
	req.payload.data = buf;
	req.payload.len = send;
	req.reply_bytes = want;
	SC_ASSERT_OK(sc_rpc_call_pb(cl, "Test.Echo", &req.base, &splitchain__echo_reply__descriptor,
				    5000, &status, msg, n, (ProtobufCMessage **)&rep));
	*got = 0;
	if (rep) {
		*got = rep->payload.len;
		for (size_t i = 0; i < rep->payload.len; i++)
			assert_int_equal(rep->payload.data[i], 0);
		splitchain__echo_reply__free_unpacked(rep, NULL);
	}
	free(buf);
	return status;
}

static void test_echo_answers_and_refuses(void **state)
{
	(void)state;
	static const struct {
		const char *name;
		size_t send;
		uint32_t want;
		int status;
	} cases[] = {
		{ "empty", 0, 0, SC_STATUS_OK },
		{ "a payload, nothing back", 100000, 0, SC_STATUS_OK },
		{ "a reply asked for", 0, 65536, SC_STATUS_OK },
		{ "both at the limit", SC_PROBE_MAX_BYTES, SC_PROBE_MAX_BYTES, SC_STATUS_OK },
		{ "an absurd reply size", 0, 1u << 30, SC_STATUS_INVALID_ARGUMENT },
		{ "the largest reply size", 0, UINT32_MAX, SC_STATUS_INVALID_ARGUMENT },
		{ "a reply one over", 0, SC_PROBE_MAX_BYTES + 1, SC_STATUS_INVALID_ARGUMENT },
		{ "a payload one over", SC_PROBE_MAX_BYTES + 1, 0, SC_STATUS_INVALID_ARGUMENT },
	};
	const char *url = inproc_url();
	sc_rpc_server *srv = NULL;
	sc_rpc_client *cl = NULL;
	SC_ASSERT_OK(sc_rpc_server_open(&srv, url, methods, NULL, 2));
	SC_ASSERT_OK(sc_rpc_client_open(&cl, url));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char msg[512] = "";
		size_t got = 0;
		int st = echo(cl, cases[i].send, cases[i].want, &got, msg, sizeof(msg));
		if (st != cases[i].status)
			fail_msg("%s: status %s (%s), want %s", cases[i].name, sc_status_name(st),
				 msg, sc_status_name(cases[i].status));
		if (st == SC_STATUS_OK && got != cases[i].want)
			fail_msg("%s: %zu bytes back, want %u", cases[i].name, got, cases[i].want);
		if (st != SC_STATUS_OK && !strstr(msg, "at most"))
			fail_msg("%s: the refusal does not say the limit: '%s'", cases[i].name,
				 msg);
	}
	/* A body that is not an EchoRequest. */
	int status = -1;
	uint8_t junk[] = { 0xff, 0xff, 0xff, 0xff, 0x0f }, *rep = NULL;
	size_t rep_len = 0;
	SC_ASSERT_OK(sc_rpc_call(cl, "Test.Echo", junk, sizeof(junk), 5000, &status, NULL, 0, &rep,
				 &rep_len));
	assert_int_equal(status, SC_STATUS_INVALID_ARGUMENT);
	free(rep);
	sc_rpc_client_close(cl);
	sc_rpc_server_close(srv);
}

static void probe_url(const char *url, const char *what)
{
	sc_rpc_server *srv = NULL;
	sc_rpc_client *cl = NULL;
	sc_probe_result r = { 0 };
	int64_t before = now_ms();
	double t0;
	SC_ASSERT_OK(sc_rpc_server_open(&srv, url, methods, NULL, 2));
	SC_ASSERT_OK(sc_rpc_client_open(&cl, sc_rpc_server_url(srv)));
	t0 = mono_s();
	SC_ASSERT_OK(sc_probe_link(cl, "Test.Echo", SC_PROBE_BUDGET_MS, NULL, NULL, &r));
	if (!(r.rtt_ms > 0 && r.rtt_ms < 1000) || !(r.mbit_s > 1) || r.measured_ms < before ||
	    r.measured_ms > now_ms())
		fail_msg("%s: rtt %g ms, %g Mbit/s, at %lld", what, r.rtt_ms, r.mbit_s,
			 (long long)r.measured_ms);
	assert_true(mono_s() - t0 < SC_PROBE_BUDGET_MS / 1000.0 + 0.5);
	assert_null(sc_probe_check(r.rtt_ms, r.mbit_s, r.measured_ms, now_ms()));
	printf("%s: rtt %.3f ms, %.0f Mbit/s\n", what, r.rtt_ms, r.mbit_s);
	sc_rpc_client_close(cl);
	sc_rpc_server_close(srv);
}

static void test_probe_measures(void **state)
{
	(void)state;
	probe_url(inproc_url(), "inproc");
	probe_url("tcp://127.0.0.1:0", "tcp loopback");
}

/* A peer that is not there: no measurement, and no longer than the budget. */
static void test_probe_absent_peer(void **state)
{
	(void)state;
	sc_rpc_client *cl = NULL;
	sc_probe_result r = { 0 };
	SC_ASSERT_OK(sc_rpc_client_open(&cl, inproc_url()));
	double t0 = mono_s();
	SC_ASSERT_ERR(sc_probe_link(cl, "Test.Echo", 300, NULL, NULL, &r), SC_EIO);
	double took = mono_s() - t0;
	if (took > 1.0)
		fail_msg("a probe of an absent peer took %.2f s, budget 0.3 s", took);
	sc_rpc_client_close(cl);
}

/* A method the peer does not serve: the refusal is the error. */
static void test_probe_refused(void **state)
{
	(void)state;
	const char *url = inproc_url();
	sc_rpc_server *srv = NULL;
	sc_rpc_client *cl = NULL;
	sc_probe_result r = { 0 };
	SC_ASSERT_OK(sc_rpc_server_open(&srv, url, methods, NULL, 1));
	SC_ASSERT_OK(sc_rpc_client_open(&cl, url));
	SC_ASSERT_ERR(sc_probe_link(cl, "Test.Nothing", 1000, NULL, NULL, &r), SC_EIO);
	assert_non_null(strstr(sc_err_detail(), "Test.Nothing"));
	sc_rpc_client_close(cl);
	sc_rpc_server_close(srv);
}

/* A payload slowed by other traffic does not set the rate: the probe
 * measures again with sized payloads and keeps the fastest. */
static void test_probe_keeps_fastest(void **state)
{
	(void)state;
	const char *url = inproc_url();
	sc_rpc_server *srv = NULL;
	sc_rpc_client *cl = NULL;
	sc_probe_result r = { 0 };
	SC_ASSERT_OK(sc_rpc_server_open(&srv, url, methods, NULL, 1));
	SC_ASSERT_OK(sc_rpc_client_open(&cl, url));
	SC_ASSERT_OK(sc_probe_link(cl, "Test.SlowSecond", SC_PROBE_BUDGET_MS, NULL, NULL, &r));
	/* The slowed payload reads at most 4 MiB in 0.3 s, 112 Mbit/s; the
	 * third, in process, several Gbit/s. */
	if (!(r.mbit_s > 500))
		fail_msg("the slowed payload set the rate: %g Mbit/s", r.mbit_s);
	sc_rpc_client_close(cl);
	sc_rpc_server_close(srv);
}

static int stop_after(void *arg)
{
	int *left = arg;
	return --*left < 0;
}

/* The prober became busy: the probe stops between echoes, measuring nothing. */
static void test_probe_given_up(void **state)
{
	(void)state;
	const char *url = inproc_url();
	sc_rpc_server *srv = NULL;
	sc_rpc_client *cl = NULL;
	sc_probe_result r = { 0 };
	SC_ASSERT_OK(sc_rpc_server_open(&srv, url, methods, NULL, 1));
	SC_ASSERT_OK(sc_rpc_client_open(&cl, url));
	for (int at = 0; at <= SC_PROBE_RTT_ECHOES; at++) {
		int left = at;
		SC_ASSERT_ERR(sc_probe_link(cl, "Test.Echo", 2000, stop_after, &left, &r),
			      SC_EINVAL);
	}
	sc_rpc_client_close(cl);
	sc_rpc_server_close(srv);
}

static void test_check(void **state)
{
	(void)state;
	const int64_t now = 1700000000000LL;
	static const struct {
		const char *name;
		double rtt, mbit;
		int64_t at_from_now;
		int ok;
	} cases[] = {
		{ "ordinary", 0.25, 940, -5000, 1 },
		{ "slow and far", 600, 0.5, -1, 1 },
		{ "a little in the future (skew)", 1, 100, 60000, 1 },
		{ "negative rtt", -1, 100, 0, 0 },
		{ "zero rtt", 0, 100, 0, 0 },
		{ "NaN rtt", NAN, 100, 0, 0 },
		{ "infinite rtt", INFINITY, 100, 0, 0 },
		{ "absurd rtt", 2e6, 100, 0, 0 },
		{ "negative bandwidth", 1, -5, 0, 0 },
		{ "zero bandwidth", 1, 0, 0, 0 },
		{ "NaN bandwidth", 1, NAN, 0, 0 },
		{ "infinite bandwidth", 1, INFINITY, 0, 0 },
		{ "absurd bandwidth", 1, 1e9, 0, 0 },
		{ "no time", 1, 100, -now, 0 },
		{ "two days ahead", 1, 100, 2 * 86400000LL, 0 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *why =
		    sc_probe_check(cases[i].rtt, cases[i].mbit, now + cases[i].at_from_now, now);
		if ((why == NULL) != cases[i].ok)
			fail_msg("%s: %s", cases[i].name, why ? why : "accepted");
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_echo_answers_and_refuses),
		cmocka_unit_test(test_probe_measures),
		cmocka_unit_test(test_probe_absent_peer),
		cmocka_unit_test(test_probe_refused),
		cmocka_unit_test(test_probe_keeps_fastest),
		cmocka_unit_test(test_probe_given_up),
		cmocka_unit_test(test_check),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
