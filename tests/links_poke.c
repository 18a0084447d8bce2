/* links_poke.c — bad link probes and reports sent to a running coordinator
 * and worker (tests/integration/links_test.sh): echoes of absurd sizes are
 * refused with INVALID_ARGUMENT, a report from an unknown worker with
 * NOT_FOUND, and a report of malformed measurements (negative, NaN or
 * infinite values, no time, an unknown name, a link to itself) is answered
 * but stores none of them — the shell test reads the links table after.
 * Every malformed measurement carries an rtt or bandwidth of BAD_MARK or
 * below 0, for the shell test to look for.
 * Credentials: Worker.Echo carries the peer credential of the join token in
 * $SPLITCHAIN_JOIN_TOKEN_FILE (and is refused without it), Coordinator.Echo
 * the user token in $SPLITCHAIN_TOKEN; the reports come from a worker this
 * program registers with the join token ("links-poke", too slow and small
 * for any stage, at an address nobody listens on), with its session.
 *   links_poke COORDINATOR_URL WORKER_URL WORKER_ID WORKER_NAME OTHER_NAME
 * Prints one line per case and "N passed, N failed"; exits 1 on a failure. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sc_probe.h"
#include "sc_rpc_pb.h"
#include "sc_tls.h"
#include "sc_token.h"
#include "splitchain.pb-c.h"

#define BAD_MARK 123.456 /* a value no real measurement gives */
#define CALL_MS  5000

static int passed, failed;

static void check(const char *name, int ok, const char *detail)
{
	printf("%s %s%s%s\n", ok ? "ok  " : "FAIL", name, detail[0] ? ": " : "", detail);
	if (ok)
		passed++;
	else
		failed++;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void echo_case(sc_rpc_client *cl, const char *method, const char *name, size_t send,
		      uint32_t want, int status_want)
{
	Splitchain__EchoRequest req = SPLITCHAIN__ECHO_REQUEST__INIT;
	Splitchain__EchoReply *rep = NULL;
	uint8_t *buf = calloc(1, send + 1);
	char msg[512] = "", detail[700];
	int status = -1;
	req.payload.data = buf;
	req.payload.len = send;
	req.reply_bytes = want;
	if (!buf || sc_rpc_call_pb(cl, method, &req.base, &splitchain__echo_reply__descriptor,
				   CALL_MS, &status, msg, sizeof(msg), (ProtobufCMessage **)&rep))
		status = -1;
	snprintf(detail, sizeof(detail), "%s %s", sc_status_name(status), msg);
	check(name, status == status_want, detail);
	if (rep)
		splitchain__echo_reply__free_unpacked(rep, NULL);
	free(buf);
}

static Splitchain__LinkMeasurement measurement(const char *to, int to_coord, double rtt,
					       double mbit, int64_t at)
{
	Splitchain__LinkMeasurement m = SPLITCHAIN__LINK_MEASUREMENT__INIT;
	m.to_name = (char *)to;
	m.to_coordinator = to_coord;
	m.rtt_ms = rtt;
	m.mbit_s = mbit;
	m.measured_unix_ms = at;
	return m;
}

static int report(sc_rpc_client *co, uint64_t id, Splitchain__LinkMeasurement *ms, size_t n,
		  size_t *peers, char *msg, size_t size)
{
	Splitchain__ReportLinksRequest req = SPLITCHAIN__REPORT_LINKS_REQUEST__INIT;
	Splitchain__ReportLinksReply *rep = NULL;
	Splitchain__LinkMeasurement *ptrs[16];
	int status = -1;
	for (size_t i = 0; i < n; i++)
		ptrs[i] = &ms[i];
	req.worker_id = id;
	req.n_links = n;
	req.links = ptrs;
	if (sc_rpc_call_pb(co, "Coordinator.ReportLinks", &req.base,
			   &splitchain__report_links_reply__descriptor, CALL_MS, &status, msg, size,
			   (ProtobufCMessage **)&rep))
		status = -1;
	*peers = rep ? rep->n_peers : 0;
	if (rep)
		splitchain__report_links_reply__free_unpacked(rep, NULL);
	return status;
}

int main(int argc, char **argv)
{
	sc_rpc_client *co = NULL, *wk = NULL;
	char msg[512], detail[700];
	size_t peers = 0;
	int64_t now = now_ms();
	int st;

	if (argc != 6) {
		fprintf(stderr, "usage: links_poke COORDINATOR_URL WORKER_URL WORKER_ID "
				"WORKER_NAME OTHER_NAME\n");
		return 2;
	}
	const char *self = "links-poke", *other = argv[5];
	const char *jf = getenv("SPLITCHAIN_JOIN_TOKEN_FILE"), *user = getenv("SPLITCHAIN_TOKEN");
	char join[256], peer[SC_TOKEN_MAX];
	Splitchain__RegisterRequest reg = SPLITCHAIN__REGISTER_REQUEST__INIT;
	Splitchain__RegisterReply *got = NULL;
	uint64_t id = 0;
	(void)argv[3];
	(void)argv[4];
	if (!jf || !user || sc_token_read_file(jf, 0, join, sizeof(join)) ||
	    (sc_tls_url(argv[1]) &&
	     sc_tls_init(getenv("SPLITCHAIN_TLS_CERT"), getenv("SPLITCHAIN_TLS_KEY"),
			 getenv("SPLITCHAIN_TLS_CA"))) ||
	    sc_rpc_client_open(&co, argv[1]) || sc_rpc_client_open(&wk, argv[2])) {
		fprintf(stderr,
			"links_poke: %s (needs SPLITCHAIN_JOIN_TOKEN_FILE and SPLITCHAIN_TOKEN)\n",
			sc_err_detail());
		return 1;
	}
	echo_case(wk, "Worker.Echo", "Worker.Echo without the peer credential is refused", 10, 10,
		  SC_STATUS_PERMISSION_DENIED);
	sc_token_peer(join, peer);
	sc_rpc_client_set_auth(wk, peer, strlen(peer));
	echo_case(co, "Coordinator.Echo", "Coordinator.Echo without a token is refused", 10, 10,
		  SC_STATUS_UNAUTHENTICATED);
	sc_rpc_client_set_auth(co, user, strlen(user));
	st = report(co, 1, NULL, 0, &peers, msg, sizeof(msg));
	snprintf(detail, sizeof(detail), "%s %s", sc_status_name(st), msg);
	check("ReportLinks with a user's token is refused", st == SC_STATUS_PERMISSION_DENIED,
	      detail);

	echo_case(wk, "Worker.Echo", "Worker.Echo: a 1 GiB reply is refused", 0, 1u << 30,
		  SC_STATUS_INVALID_ARGUMENT);
	echo_case(wk, "Worker.Echo", "Worker.Echo: the largest reply size is refused", 0,
		  UINT32_MAX, SC_STATUS_INVALID_ARGUMENT);
	echo_case(wk, "Worker.Echo", "Worker.Echo: a payload over the limit is refused",
		  SC_PROBE_MAX_BYTES + 1, 0, SC_STATUS_INVALID_ARGUMENT);
	echo_case(co, "Coordinator.Echo", "Coordinator.Echo: a 1 GiB reply is refused", 0, 1u << 30,
		  SC_STATUS_INVALID_ARGUMENT);
	echo_case(wk, "Worker.Echo", "Worker.Echo: still answers an ordinary echo", 1000, 1000,
		  SC_STATUS_OK);
	echo_case(co, "Coordinator.Echo", "Coordinator.Echo: still answers an ordinary echo", 1000,
		  1000, SC_STATUS_OK);

	/* A worker of our own, for the reports. */
	sc_rpc_client_set_auth(co, join, strlen(join));
	reg.name = (char *)self;
	reg.device = "cpu";
	reg.memory_bytes = 1;
	reg.gflops = 1e-6;
	/* Addresses of the coordinator's scheme: a TLS coordinator refuses
	 * plaintext ones. Never dialled. */
	reg.control_addr = sc_tls_url(argv[1]) ? "tls+tcp://127.0.0.1:1" : "tcp://127.0.0.1:1";
	reg.data_addr = reg.control_addr;
	reg.coordinator_secret.data = (uint8_t *)"links-poke-secret-0123456789";
	reg.coordinator_secret.len = strlen("links-poke-secret-0123456789");
	st = -1;
	if (sc_rpc_call_pb(co, "Coordinator.Register", &reg.base,
			   &splitchain__register_reply__descriptor, CALL_MS, &st, msg, sizeof(msg),
			   (ProtobufCMessage **)&got) ||
	    st != SC_STATUS_OK) {
		check("register links-poke with the join token", 0, msg);
		return 1;
	}
	id = got->worker_id;
	sc_rpc_client_set_auth(co, got->session.data, got->session.len);
	splitchain__register_reply__free_unpacked(got, NULL);

	Splitchain__LinkMeasurement good = measurement(other, 0, 0.5, 900, now);
	st = report(co, 987654321, &good, 1, &peers, msg, sizeof(msg));
	snprintf(detail, sizeof(detail), "%s %s", sc_status_name(st), msg);
	check("ReportLinks as another worker: PERMISSION_DENIED", st == SC_STATUS_PERMISSION_DENIED,
	      detail);

	Splitchain__LinkMeasurement bad[] = {
		measurement(other, 0, -BAD_MARK, 100, now),
		measurement(other, 0, 1, -BAD_MARK, now),
		measurement(other, 0, NAN, BAD_MARK, now),
		measurement(other, 0, BAD_MARK, NAN, now),
		measurement(other, 0, INFINITY, BAD_MARK, now),
		measurement(other, 0, BAD_MARK, 0, now),
		measurement(other, 0, BAD_MARK, BAD_MARK, 0),
		measurement("no-such-worker", 0, BAD_MARK, BAD_MARK, now),
		measurement(self, 0, BAD_MARK, BAD_MARK, now),
		measurement("", 1, BAD_MARK, -1, now),
	};
	st = report(co, id, bad, sizeof(bad) / sizeof(bad[0]), &peers, msg, sizeof(msg));
	snprintf(detail, sizeof(detail), "%s %s, %zu peers", sc_status_name(st), msg, peers);
	check("ReportLinks with malformed measurements: answered, with the live peers",
	      st == SC_STATUS_OK && peers >= 1, detail);

	uint8_t junk[] = { 0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f }, *body = NULL;
	size_t body_len = 0;
	st = -1;
	if (sc_rpc_call(co, "Coordinator.ReportLinks", junk, sizeof(junk), CALL_MS, &st, msg,
			sizeof(msg), &body, &body_len))
		st = -1;
	free(body);
	snprintf(detail, sizeof(detail), "%s %s", sc_status_name(st), msg);
	check("ReportLinks with a body that does not decode: INVALID_ARGUMENT",
	      st == SC_STATUS_INVALID_ARGUMENT, detail);

	sc_rpc_client_close(wk);
	sc_rpc_client_close(co);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
