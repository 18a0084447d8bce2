/* daemon_poke.c — bad input sent to a running coordinator's (and a
 * worker's) RPC socket: random bytes, truncated and oversized messages,
 * valid envelopes with bodies that do not decode, and well-formed requests
 * with nonsense fields. Each must be answered with an error status or
 * dropped, and the daemon must go on serving: every case is followed by a
 * normal request that must succeed. The coordinator is called with the
 * user token in $SPLITCHAIN_TOKEN (and the join token of
 * $SPLITCHAIN_JOIN_TOKEN_FILE for Register); the worker with no credential
 * at all: it must refuse every call PERMISSION_DENIED (only its coordinator
 * controls it) and go on serving.
 *   daemon_poke COORDINATOR_URL [WORKER_URL MODEL_DIR]
 * Prints one line per case and "N passed, N failed". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "sc_rpc_pb.h"
#include "sc_tls.h"
#include "splitchain.pb-c.h"

static int passed, failed;
static const char *poke_auth = ""; /* the credential of the envelopes built here */

static void check(const char *name, int ok, const char *detail)
{
	printf("%s %s%s%s\n", ok ? "ok  " : "FAIL", name, detail[0] ? ": " : "", detail);
	if (ok)
		passed++;
	else
		failed++;
}

/* Sends raw bytes on a fresh REQ socket; returns 1 if any reply came. */
static int send_raw(const char *url, const void *buf, size_t len, int wait_ms, char *reply_status,
		    size_t rs)
{
	nng_socket s;
	nng_dialer d;
	nng_msg *m;
	int got = 0;

	reply_status[0] = '\0';
	if (nng_req0_open(&s) != 0)
		return 0;
	nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, wait_ms);
	nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, 5000);
	nng_socket_set_ms(s, NNG_OPT_REQ_RESENDTIME, 60000);
	nng_socket_set_size(s, NNG_OPT_RECVMAXSZ, 0);
	if (nng_dialer_create(&d, s, url) == 0 && sc_tls_dialer_setup(d, url) == SC_OK &&
	    nng_dialer_start(d, 0) == 0 && nng_msg_alloc(&m, 0) == 0) {
		nng_msg_append(m, buf, len);
		if (nng_sendmsg(s, m, 0) != 0) {
			nng_msg_free(m);
		} else if (nng_recvmsg(s, &m, 0) == 0) {
			Splitchain__Envelope *e =
			    splitchain__envelope__unpack(NULL, nng_msg_len(m), nng_msg_body(m));
			got = 1;
			if (e) {
				snprintf(reply_status, rs, "%s: %s", sc_status_name(e->status),
					 e->status_message);
				splitchain__envelope__free_unpacked(e, NULL);
			}
			nng_msg_free(m);
		}
	}
	nng_close(s);
	return got;
}

/* Sends an SP/TCP frame announcing a message over SC_RPC_MAX_MSG; returns
 * 1 when the peer drops the connection, 0 when it stays open, -1 when the
 * handshake fails. */
static int oversized(const char *url)
{
	static const uint8_t hello[8] = { 0, 'S', 'P', 0, 0, NNG_REQ0_SELF, 0, 0 };
	uint64_t big = (uint64_t)SC_RPC_MAX_MSG + 16;
	struct sockaddr_in sa = { .sin_family = AF_INET };
	struct timeval tv = { 5, 0 };
	uint8_t peer[8], frame[8 + 4 + 16] = { 0 }, byte;
	unsigned port;
	ssize_t got;
	int fd, ret = -1;

	/* On a tls+tcp:// port these plaintext bytes fail the TLS handshake,
	 * which must drop the connection just the same. */
	if (sscanf(url, "tcp://127.0.0.1:%u", &port) != 1 &&
	    sscanf(url, "tls+tcp://127.0.0.1:%u", &port) != 1)
		return -1;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((fd = socket(AF_INET, SOCK_STREAM, 0)) < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    send(fd, hello, sizeof(hello), MSG_NOSIGNAL) != sizeof(hello) ||
	    recv(fd, peer, sizeof(peer), MSG_WAITALL) != sizeof(peer))
		goto out;
	for (int i = 0; i < 8; i++) /* the length prefix, big-endian */
		frame[i] = (uint8_t)(big >> (56 - 8 * i));
	frame[8] = 0x80; /* the first bytes of a REQ message that big */
	if (send(fd, frame, sizeof(frame), MSG_NOSIGNAL) != sizeof(frame))
		goto out;
	got = recv(fd, &byte, 1, 0);
	ret = got == 0 || (got < 0 && errno == ECONNRESET);
out:
	close(fd);
	return ret;
}

/* An Envelope for method with body, packed into a malloc'd buffer. */
static uint8_t *envelope(const char *method, const void *body, size_t blen, uint64_t id,
			 size_t *len)
{
	Splitchain__Envelope e = SPLITCHAIN__ENVELOPE__INIT;
	uint8_t *buf;
	e.magic = SC_RPC_MAGIC;
	e.version = SC_RPC_VERSION;
	e.method = (char *)method;
	e.request_id = id;
	e.body.data = (uint8_t *)body;
	e.body.len = blen;
	e.auth.data = (uint8_t *)poke_auth;
	e.auth.len = strlen(poke_auth);
	*len = splitchain__envelope__get_packed_size(&e);
	buf = malloc(*len);
	splitchain__envelope__pack(&e, buf);
	return buf;
}

/* Calls method with a packed protobuf and expects status want. */
static void expect(sc_rpc_client *cl, const char *name, const char *method,
		   const ProtobufCMessage *req, int want)
{
	char msg[512] = "", line[700];
	int status = -1;
	ProtobufCMessage *rep = NULL;
	sc_rpc_call_pb(cl, method, req, &splitchain__empty__descriptor, 10000, &status, msg,
		       sizeof(msg), &rep);
	if (rep)
		protobuf_c_message_free_unpacked(rep, NULL);
	snprintf(line, sizeof(line), "%s (want %s): %s", sc_status_name(status),
		 sc_status_name(want), msg);
	check(name, status == want && (want == SC_STATUS_OK || msg[0]), line);
}

/* The daemon still answers a normal request. */
static void still_serving(sc_rpc_client *cl, const char *after, const char *method)
{
	Splitchain__Empty e = SPLITCHAIN__EMPTY__INIT;
	Splitchain__JobRef ref = SPLITCHAIN__JOB_REF__INIT;
	char name[128], msg[512] = "";
	int status = -1;
	ProtobufCMessage *rep = NULL;
	const ProtobufCMessage *req = strcmp(method, "Coordinator.Jobs") ? &ref.base : &e.base;
	const ProtobufCMessageDescriptor *d = strcmp(method, "Coordinator.Jobs")
						  ? &splitchain__state_reply__descriptor
						  : &splitchain__jobs_reply__descriptor;
	ref.job_id = 424242;
	sc_rpc_call_pb(cl, method, req, d, 10000, &status, msg, sizeof(msg), &rep);
	if (rep)
		protobuf_c_message_free_unpacked(rep, NULL);
	snprintf(name, sizeof(name), "serving after %s", after);
	/* An idle worker refuses a state request for a job it does not hold:
	 * any answer with a message proves it serves. */
	check(name,
	      status == SC_STATUS_OK || (status > 0 && status != SC_STATUS_UNAVAILABLE &&
					 status != SC_STATUS_DEADLINE_EXCEEDED && msg[0]),
	      msg);
}

/* Bytes that are no splitchain message at all, and broken envelopes. */
static void garbage(const char *url, sc_rpc_client *cl, const char *healthy, const char *method,
		    const char *undecodable)
{
	uint8_t junk[4096], *env;
	char st[600];
	size_t len;
	unsigned seed = 12345;
	int got;

	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(rand_r(&seed) >> 7);
	got = send_raw(url, junk, sizeof(junk), 700, st, sizeof(st));
	check("random bytes dropped or refused", !got || strstr(st, "INVALID_ARGUMENT") != NULL,
	      st);
	still_serving(cl, "random bytes", healthy);

	env = envelope(method, junk, 64, 777, &len);
	got = send_raw(url, env, len / 2, 700, st, sizeof(st));
	check("truncated envelope dropped or refused", !got || strstr(st, "INVALID_ARGUMENT"), st);
	still_serving(cl, "a truncated envelope", healthy);

	got = send_raw(url, env, len, 3000, st, sizeof(st));
	char what[100];
	snprintf(what, sizeof(what), "body that does not decode -> %s", undecodable);
	check(what, got && strstr(st, undecodable) != NULL, st);
	free(env);
	still_serving(cl, "an undecodable body", healthy);

	env = envelope("Nobody.Knows", NULL, 0, 778, &len);
	got = send_raw(url, env, len, 3000, st, sizeof(st));
	check("unknown method -> UNIMPLEMENTED", got && strstr(st, "UNIMPLEMENTED") != NULL, st);
	free(env);

	{
		Splitchain__Envelope e = SPLITCHAIN__ENVELOPE__INIT;
		uint8_t buf[256];
		e.magic = 0xDEADBEEF;
		e.version = 1;
		e.method = (char *)healthy;
		e.request_id = 779;
		len = splitchain__envelope__pack(&e, buf);
		got = send_raw(url, buf, len, 700, st, sizeof(st));
		check("wrong magic dropped or refused", !got || strstr(st, "INVALID_ARGUMENT"), st);
	}
	/* Over the socket's maximum receive size: the transport drops the
	 * connection once it reads the length. Sent on a plain TCP socket
	 * speaking the SP handshake: nng 1.5 can hang closing a socket whose
	 * peer reset it in the middle of a large send. */
	got = oversized(url);
	check("oversized message: connection dropped", got == 1, got < 0 ? "cannot connect" : "");
	still_serving(cl, "an oversized message", healthy);
}

static void poke_coordinator(const char *url)
{
	sc_rpc_client *cl;
	Splitchain__SubmitRequest sub = SPLITCHAIN__SUBMIT_REQUEST__INIT;
	Splitchain__LoraConfig lora = SPLITCHAIN__LORA_CONFIG__INIT;
	Splitchain__TrainConfig train = SPLITCHAIN__TRAIN_CONFIG__INIT;
	Splitchain__JobRef ref = SPLITCHAIN__JOB_REF__INIT;
	Splitchain__RegisterRequest reg = SPLITCHAIN__REGISTER_REQUEST__INIT;
	Splitchain__HeartbeatRequest hb = SPLITCHAIN__HEARTBEAT_REQUEST__INIT;

	sc_rpc_client *anon = NULL, *join = NULL;
	char token[1024] = "";
	const char *jf = getenv("SPLITCHAIN_JOIN_TOKEN_FILE");
	FILE *f;

	poke_auth = getenv("SPLITCHAIN_TOKEN") ? getenv("SPLITCHAIN_TOKEN") : "";
	if (jf && (f = fopen(jf, "r"))) {
		if (!fgets(token, sizeof(token), f))
			token[0] = '\0';
		token[strcspn(token, "\r\n")] = '\0';
		fclose(f);
	}
	if (sc_rpc_client_open(&cl, url) || sc_rpc_client_open(&anon, url) ||
	    sc_rpc_client_open(&join, url) ||
	    sc_rpc_client_set_auth(cl, poke_auth, strlen(poke_auth)) ||
	    sc_rpc_client_set_auth(join, token, strlen(token))) {
		check("connect to the coordinator", 0, sc_err_detail());
		return;
	}
	garbage(url, cl, "Coordinator.Jobs", "Coordinator.Submit", "INVALID_ARGUMENT");

	expect(anon, "jobs without a token -> UNAUTHENTICATED", "Coordinator.Jobs", &sub.base,
	       SC_STATUS_UNAUTHENTICATED);
	sc_rpc_client_set_auth(anon, "sct_0000", 8);
	expect(anon, "jobs with a made-up token -> UNAUTHENTICATED", "Coordinator.Jobs", &sub.base,
	       SC_STATUS_UNAUTHENTICATED);
	expect(cl, "register with a user's token -> UNAUTHENTICATED", "Coordinator.Register",
	       &reg.base, SC_STATUS_UNAUTHENTICATED);
	expect(cl, "heartbeat with a user's token -> PERMISSION_DENIED", "Coordinator.Heartbeat",
	       &hb.base, SC_STATUS_PERMISSION_DENIED);

	expect(cl, "submit without model -> INVALID_ARGUMENT", "Coordinator.Submit", &sub.base,
	       SC_STATUS_INVALID_ARGUMENT);
	sub.model_path = "/nonexistent/model";
	sub.data_path = "/nonexistent/data";
	sub.lora = &lora;
	sub.train = &train;
	sub.stages = 2;
	expect(cl, "submit with a missing model -> INVALID_ARGUMENT", "Coordinator.Submit",
	       &sub.base, SC_STATUS_INVALID_ARGUMENT);
	ref.job_id = 987654321;
	expect(cl, "status of an unknown job -> NOT_FOUND", "Coordinator.Status", &ref.base,
	       SC_STATUS_NOT_FOUND);
	expect(cl, "cancel of an unknown job -> NOT_FOUND", "Coordinator.Cancel", &ref.base,
	       SC_STATUS_NOT_FOUND);
	expect(cl, "export of an unknown job -> NOT_FOUND", "Coordinator.Export", &ref.base,
	       SC_STATUS_NOT_FOUND);
	expect(join, "register without name -> INVALID_ARGUMENT", "Coordinator.Register", &reg.base,
	       SC_STATUS_INVALID_ARGUMENT);
	reg.name = "poke";
	reg.control_addr = "tcp://127.0.0.1:1";
	reg.data_addr = "tcp://127.0.0.1:2";
	reg.gflops = -5;
	expect(join, "register with a negative rate -> INVALID_ARGUMENT", "Coordinator.Register",
	       &reg.base, SC_STATUS_INVALID_ARGUMENT);
	hb.worker_id = 99999;
	sc_rpc_client_set_auth(anon, "scs_0000", 8);
	expect(anon, "heartbeat with an unknown session -> UNAUTHENTICATED",
	       "Coordinator.Heartbeat", &hb.base, SC_STATUS_UNAUTHENTICATED);
	still_serving(cl, "nonsense fields", "Coordinator.Jobs");
	sc_rpc_client_close(cl);
	sc_rpc_client_close(anon);
	sc_rpc_client_close(join);
}

static void poke_worker(const char *url)
{
	sc_rpc_client *cl;
	Splitchain__AssignRequest as = SPLITCHAIN__ASSIGN_REQUEST__INIT;
	Splitchain__LoraConfig lora = SPLITCHAIN__LORA_CONFIG__INIT;
	Splitchain__TrainConfig train = SPLITCHAIN__TRAIN_CONFIG__INIT;
	Splitchain__StepRequest step = SPLITCHAIN__STEP_REQUEST__INIT;
	Splitchain__JobRef ref = SPLITCHAIN__JOB_REF__INIT;

	if (sc_rpc_client_open(&cl, url)) {
		check("connect to the worker", 0, sc_err_detail());
		return;
	}
	poke_auth = "";
	garbage(url, cl, "Worker.GetState", "Worker.Assign", "PERMISSION_DENIED");
	step.job_id = 5;
	step.tokens.data = (uint8_t *)"abc";
	step.tokens.len = 3;
	expect(cl, "step from anyone but the coordinator -> PERMISSION_DENIED", "Worker.Step",
	       &step.base, SC_STATUS_PERMISSION_DENIED);
	ref.job_id = 5;
	expect(cl, "state for anyone but the coordinator -> PERMISSION_DENIED", "Worker.GetState",
	       &ref.base, SC_STATUS_PERMISSION_DENIED);
	expect(cl, "release from anyone but the coordinator -> PERMISSION_DENIED", "Worker.Release",
	       &ref.base, SC_STATUS_PERMISSION_DENIED);
	as.job_id = 5;
	as.model_path = "/nonexistent/model";
	as.first_layer = 3;
	as.last_layer = 1;
	as.n_stages = 1;
	as.lora = &lora;
	as.train = &train;
	expect(cl, "assign from anyone but the coordinator -> PERMISSION_DENIED", "Worker.Assign",
	       &as.base, SC_STATUS_PERMISSION_DENIED);
	sc_rpc_client_set_auth(cl, "scw_00000000000000000000000000000000", 36);
	expect(cl, "assign with a wrong secret -> PERMISSION_DENIED", "Worker.Assign", &as.base,
	       SC_STATUS_PERMISSION_DENIED);
	as.first_layer = 0;
	as.last_layer = 1;
	lora.rank = 4;
	lora.alpha = 8;
	lora.targets = 15;
	train.batch = 0x7FFFFFFF;
	train.seq = 0x7FFFFFFF;
	train.micro_batches = 1;
	train.steps = 1;
	train.lr = 1e-3f;
	train.beta1 = 0.9f;
	train.beta2 = 0.999f;
	train.eps = 1e-8f;
	expect(cl, "assign with absurd sizes, wrong secret -> PERMISSION_DENIED", "Worker.Assign",
	       &as.base, SC_STATUS_PERMISSION_DENIED);
	still_serving(cl, "nonsense fields", "Worker.GetState");
	sc_rpc_client_close(cl);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: daemon_poke COORDINATOR_URL [WORKER_URL]\n");
		return 2;
	}
	/* TLS addresses: the CLI's identity from the environment. */
	if (sc_tls_url(argv[1]) &&
	    sc_tls_init(getenv("SPLITCHAIN_TLS_CERT"), getenv("SPLITCHAIN_TLS_KEY"),
			getenv("SPLITCHAIN_TLS_CA"))) {
		fprintf(stderr, "daemon_poke: %s\n", sc_err_detail());
		return 1;
	}
	poke_coordinator(argv[1]);
	if (argc > 2)
		poke_worker(argv[2]);
	printf("%d passed, %d failed\n", passed, failed);
	return failed != 0;
}
