/* rpc_test.c — the RPC layer: round trips, concurrency, statuses, deadlines, aborts, the retry
 * memory, malformed and oversized input, a late server and closing under load. Everything runs
 * in this process over inproc:// or tcp://127.0.0.1:0, with a timeout on every call. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "sc_rpc.h"
#include "splitchain.pb-c.h"
#include "testutil.h"

/* What the handlers count. */
typedef struct counters {
	atomic_int calls;
	atomic_int running;
	atomic_int peak;
} counters;

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* ---------------------------------------------------------- handlers */

static void h_echo(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	counters *c = arg;
	int now = atomic_fetch_add(&c->running, 1) + 1, peak = atomic_load(&c->peak);
	while (now > peak && !atomic_compare_exchange_weak(&c->peak, &peak, now))
		;
	atomic_fetch_add(&c->calls, 1);
	if (len >= 5 && !memcmp(req, "wait:", 5))
		sleep_ms(3);
	if (len) {
		rep->body = malloc(len);
		memcpy(rep->body, req, len);
		rep->len = len;
	}
	atomic_fetch_sub(&c->running, 1);
}

static void h_fail(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	rep->status = SC_STATUS_NOT_FOUND;
	snprintf(rep->message, sizeof(rep->message), "job %d not found", 42);
}

/* Sleeps for the number of milliseconds in the body (decimal text), then answers "call <n>". */
static void h_slow(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	counters *c = arg;
	char text[32] = { 0 };
	int n = atomic_fetch_add(&c->calls, 1) + 1;
	memcpy(text, req, len < sizeof(text) - 1 ? len : sizeof(text) - 1);
	sleep_ms(atoi(text));
	rep->body = malloc(32);
	rep->len = (size_t)snprintf((char *)rep->body, 32, "call %d", n);
}

static const sc_rpc_method methods[] = {
	{ "Test.Echo", h_echo },
	{ "Test.Fail", h_fail },
	{ "Test.Slow", h_slow },
	{ NULL, NULL },
};

/* ---------------------------------------------------------- helpers */

static const char *inproc_url(void)
{
	static char url[64];
	static unsigned n;
	snprintf(url, sizeof(url), "inproc://rpc_test-%d-%u-%ld", (int)getpid(), n++,
		 (long)(mono_ms() % 100000));
	return url;
}

/* A call that must come back OK with body `want`. */
static void call_ok(sc_rpc_client *cl, const char *method, const char *body, const char *want)
{
	char msg[256];
	uint8_t *rep;
	size_t n;
	int st;
	SC_ASSERT_OK(sc_rpc_call(cl, method, (const uint8_t *)body, strlen(body), 5000, &st, msg,
				 sizeof(msg), &rep, &n));
	if (st != SC_STATUS_OK)
		fail_msg("%s: %s: %s", method, sc_status_name(st), msg);
	assert_int_equal(n, strlen(want));
	assert_memory_equal(rep, want, n);
	free(rep);
}

/* A packed envelope (malloc'd) for the raw-socket cases; body borrowed. */
static uint8_t *pack_env_bytes(size_t *len, uint32_t magic, uint32_t version, const char *method,
			       uint64_t id, uint64_t deadline, const void *body, size_t body_len)
{
	Splitchain__Envelope env = SPLITCHAIN__ENVELOPE__INIT;
	uint8_t *buf;
	env.magic = magic;
	env.version = version;
	env.method = (char *)method;
	env.request_id = id;
	env.deadline_unix_ms = deadline;
	env.body.data = (uint8_t *)body;
	env.body.len = body_len;
	*len = splitchain__envelope__get_packed_size(&env);
	buf = malloc(*len);
	assert_non_null(buf);
	splitchain__envelope__pack(&env, buf);
	return buf;
}

static uint8_t *pack_env(size_t *len, uint32_t magic, uint32_t version, const char *method,
			 uint64_t id, uint64_t deadline, const char *body)
{
	return pack_env_bytes(len, magic, version, method, id, deadline, body, strlen(body));
}

static nng_socket raw_socket(const char *url, int timeout_ms, int resend_ms)
{
	nng_socket s;
	assert_int_equal(nng_req0_open(&s), 0);
	assert_int_equal(nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, timeout_ms), 0);
	assert_int_equal(nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, timeout_ms), 0);
	assert_int_equal(nng_socket_set_ms(s, NNG_OPT_REQ_RESENDTIME, resend_ms), 0);
	assert_int_equal(nng_dial(s, url, NULL, 0), 0);
	return s;
}

/* Sends buf on s and waits for the reply: 0 and *reply (new), or nng's error. */
static int raw_exchange(nng_socket s, const void *buf, size_t len, nng_msg **reply)
{
	nng_msg *m;
	int rv;
	*reply = NULL;
	assert_int_equal(nng_msg_alloc(&m, len), 0);
	memcpy(nng_msg_body(m), buf, len);
	if ((rv = nng_sendmsg(s, m, 0)) != 0) {
		nng_msg_free(m);
		return rv;
	}
	return nng_recvmsg(s, reply, 0);
}

static Splitchain__Envelope *unpack_reply(nng_msg *m)
{
	Splitchain__Envelope *e =
	    splitchain__envelope__unpack(NULL, nng_msg_len(m), nng_msg_body(m));
	assert_non_null(e);
	assert_int_equal(e->magic, SC_RPC_MAGIC);
	assert_int_equal(e->version, SC_RPC_VERSION);
	return e;
}

/* ---------------------------------------------------------- credentials */

/* The hook: "alice" and "bob" (bob an admin) are users, anything else is refused. */
static int auth_hook(void *arg, const char *method, const uint8_t *cred, size_t len,
		     sc_rpc_principal *who, char *msg, size_t size)
{
	(void)arg;
	(void)method;
	if ((len == 5 && !memcmp(cred, "alice", 5)) || (len == 3 && !memcmp(cred, "bob", 3))) {
		who->kind = SC_PRINCIPAL_USER;
		who->id = len == 5 ? 1 : 2;
		who->admin = len == 3;
		snprintf(who->name, sizeof(who->name), "%.*s", (int)len, (const char *)cred);
		return SC_STATUS_OK;
	}
	snprintf(msg, size, "%s", len ? "unknown credential" : "no credential");
	return SC_STATUS_UNAUTHENTICATED;
}

/* Answers "<caller's name>#<calls so far>": each run's reply differs. */
static void h_who(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	counters *c = arg;
	int n = atomic_fetch_add(&c->calls, 1) + 1;
	(void)req;
	(void)len;
	rep->body = malloc(96);
	rep->len = (size_t)snprintf((char *)rep->body, 96, "%s%s#%d", sc_rpc_caller()->name,
				    sc_rpc_caller()->admin ? "(admin)" : "", n);
}

static const sc_rpc_method who_methods[] = { { "Test.Who", h_who }, { NULL, NULL } };

/* Refused before the handler with the hook's status and message; the
 * handler sees the principal the hook named. */
static void test_auth_hook(void **state)
{
	counters c = { 0 };
	sc_rpc_server *srv;
	sc_rpc_client *cl;
	char msg[256];
	uint8_t *rep;
	size_t n;
	int st;
	(void)state;
	SC_ASSERT_OK(
	    sc_rpc_server_open_auth(&srv, inproc_url(), who_methods, &c, 2, NULL, auth_hook, NULL));
	SC_ASSERT_OK(sc_rpc_client_open(&cl, sc_rpc_server_url(srv)));
	static const struct {
		const char *cred;
		int status;
		const char *msg;
	} cases[] = {
		{ "", SC_STATUS_UNAUTHENTICATED, "no credential" },
		{ "mallory", SC_STATUS_UNAUTHENTICATED, "unknown credential" },
		{ "alic", SC_STATUS_UNAUTHENTICATED, "unknown credential" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		SC_ASSERT_OK(sc_rpc_client_set_auth(cl, cases[i].cred, strlen(cases[i].cred)));
		SC_ASSERT_OK(
		    sc_rpc_call(cl, "Test.Who", NULL, 0, 5000, &st, msg, sizeof(msg), &rep, &n));
		assert_int_equal(st, cases[i].status);
		assert_string_equal(msg, cases[i].msg);
		assert_null(rep);
	}
	assert_int_equal(atomic_load(&c.calls), 0); /* no handler ran */
	SC_ASSERT_OK(sc_rpc_client_set_auth(cl, "alice", 5));
	call_ok(cl, "Test.Who", "", "alice#1");
	SC_ASSERT_OK(sc_rpc_client_set_auth(cl, "bob", 3));
	call_ok(cl, "Test.Who", "", "bob(admin)#2");
	/* A credential for one call: that call carries it, the client's own
	 * stays for the next; none at all is none. */
	SC_ASSERT_OK(sc_rpc_call_as(cl, "alice", 5, "Test.Who", NULL, 0, 5000, &st, msg,
				    sizeof(msg), &rep, &n));
	assert_int_equal(st, SC_STATUS_OK);
	assert_int_equal(n, 7);
	assert_memory_equal(rep, "alice#3", 7);
	free(rep);
	call_ok(cl, "Test.Who", "", "bob(admin)#4");
	SC_ASSERT_OK(sc_rpc_call_as(cl, NULL, 0, "Test.Who", NULL, 0, 5000, &st, msg, sizeof(msg),
				    &rep, &n));
	assert_int_equal(st, SC_STATUS_UNAUTHENTICATED);
	assert_string_equal(msg, "no credential");
	assert_null(rep);
	call_ok(cl, "Test.Who", "", "bob(admin)#5");
	/* An unknown method is UNIMPLEMENTED whoever asks; a credential too
	 * long for a request is refused by the client. */
	SC_ASSERT_OK(
	    sc_rpc_call(cl, "Test.Nobody", NULL, 0, 5000, &st, msg, sizeof(msg), &rep, &n));
	assert_int_equal(st, SC_STATUS_UNIMPLEMENTED);
	char big[SC_RPC_MAX_AUTH + 1];
	memset(big, 'x', sizeof(big));
	SC_ASSERT_ERR(sc_rpc_client_set_auth(cl, big, sizeof(big)), SC_EINVAL);
	SC_ASSERT_ERR(sc_rpc_call_as(cl, big, sizeof(big), "Test.Who", NULL, 0, 5000, &st, msg,
				     sizeof(msg), &rep, &n),
		      SC_EINVAL);
	sc_rpc_client_close(cl);
	sc_rpc_server_close(srv);
}

/* A raw envelope of Test.Who with request id and credential cred. */
static uint8_t *who_env(size_t *len, uint64_t id, const char *cred)
{
	Splitchain__Envelope env = SPLITCHAIN__ENVELOPE__INIT;
	uint8_t *buf;
	env.magic = SC_RPC_MAGIC;
	env.version = SC_RPC_VERSION;
	env.method = "Test.Who";
	env.request_id = id;
	env.auth.data = (uint8_t *)cred;
	env.auth.len = strlen(cred);
	*len = splitchain__envelope__get_packed_size(&env);
	buf = malloc(*len);
	assert_non_null(buf);
	splitchain__envelope__pack(&env, buf);
	return buf;
}

static void who_reply(nng_socket s, uint64_t id, const char *cred, const char *want)
{
	size_t len;
	uint8_t *buf = who_env(&len, id, cred);
	nng_msg *m;
	assert_int_equal(raw_exchange(s, buf, len, &m), 0);
	Splitchain__Envelope *e = unpack_reply(m);
	assert_int_equal(e->status, SC_STATUS_OK);
	if (e->body.len != strlen(want) || memcmp(e->body.data, want, e->body.len))
		fail_msg("request %llu as %s: got '%.*s', want '%s'", (unsigned long long)id, cred,
			 (int)e->body.len, (const char *)e->body.data, want);
	splitchain__envelope__free_unpacked(e, NULL);
	nng_msg_free(m);
	free(buf);
}

/* A retried request id is answered from the retry memory only for the
 * credential that made it: the same id under another credential runs anew
 * and never sees the first caller's reply. */
static void test_retry_memory_per_credential(void **state)
{
	counters c = { 0 };
	sc_rpc_server *srv;
	(void)state;
	SC_ASSERT_OK(
	    sc_rpc_server_open_auth(&srv, inproc_url(), who_methods, &c, 2, NULL, auth_hook, NULL));
	nng_socket s = raw_socket(sc_rpc_server_url(srv), 5000, 60000);
	who_reply(s, 4242, "alice", "alice#1");
	who_reply(s, 4242, "alice", "alice#1"); /* a retry: from the memory */
	who_reply(s, 4242, "bob", "bob(admin)#2");
	who_reply(s, 4242, "alice", "alice#1");
	who_reply(s, 4242, "bob", "bob(admin)#2");
	assert_int_equal(atomic_load(&c.calls), 2);
	nng_close(s);
	sc_rpc_server_close(srv);
}

/* ---------------------------------------------------------- cases */

static void test_status_names(void **state)
{
	assert_string_equal(sc_status_name(SC_STATUS_OK), "OK");
	assert_string_equal(sc_status_name(SC_STATUS_DEADLINE_EXCEEDED), "DEADLINE_EXCEEDED");
	assert_string_equal(sc_status_name(SC_STATUS_UNAVAILABLE), "UNAVAILABLE");
	assert_string_equal(sc_status_name(SC_STATUS_DATA_LOSS), "DATA_LOSS");
	assert_string_equal(sc_status_name(-1), "INVALID_STATUS");
	assert_string_equal(sc_status_name(99), "INVALID_STATUS");
}

static void test_open_errors(void **state)
{
	sc_rpc_server *srv;
	sc_rpc_client *cl;
	int st;
	SC_ASSERT_ERR(sc_rpc_server_open(&srv, inproc_url(), methods, NULL, 0), SC_EINVAL);
	assert_null(srv);
	SC_ASSERT_ERR(sc_rpc_server_open(&srv, "nosuch://where", methods, NULL, 2), SC_EINVAL);
	SC_ASSERT_ERR(sc_rpc_client_open(&cl, "nosuch://where"), SC_EINVAL);
	assert_null(cl);
	SC_ASSERT_OK(sc_rpc_client_open(&cl, inproc_url()));
	SC_ASSERT_ERR(sc_rpc_call(cl, "Test.Echo", NULL, 0, 0, &st, NULL, 0, NULL, NULL),
		      SC_EINVAL);
	sc_rpc_client_close(cl);
	sc_rpc_server_close(NULL);
	sc_rpc_client_close(NULL);
}

static void test_server_url(void **state)
{
	sc_rpc_server *srv, *dup;
	const char *url = inproc_url();
	unsigned port = 0;
	SC_ASSERT_OK(sc_rpc_server_open(&srv, url, methods, NULL, 1));
	assert_string_equal(sc_rpc_server_url(srv), url);
	sc_rpc_server_close(srv);

	SC_ASSERT_OK(sc_rpc_server_open(&srv, "tcp://127.0.0.1:0", methods, NULL, 1));
	assert_int_equal(sscanf(sc_rpc_server_url(srv), "tcp://127.0.0.1:%u", &port), 1);
	assert_true(port > 0 && port < 65536);
	/* The bound address is taken: a second server there fails with a message. */
	SC_ASSERT_ERR(sc_rpc_server_open(&dup, sc_rpc_server_url(srv), methods, NULL, 1), SC_EIO);
	sc_rpc_server_close(srv);
}

static void test_echo_round_trip(void **state)
{
	counters c = { 0 };
	sc_rpc_server *srv;
	sc_rpc_client *cl;
	uint8_t *rep = (uint8_t *)"x";
	size_t n = 7;
	int st;
	SC_ASSERT_OK(sc_rpc_server_open(&srv, inproc_url(), methods, &c, 2));
	SC_ASSERT_OK(sc_rpc_client_open(&cl, sc_rpc_server_url(srv)));
	call_ok(cl, "Test.Echo", "hello, chain", "hello, chain");
	/* An empty body comes back as NULL; msg may be NULL. */
	SC_ASSERT_OK(sc_rpc_call(cl, "Test.Echo", NULL, 0, 2000, &st, NULL, 0, &rep, &n));
	assert_int_equal(st, SC_STATUS_OK);
	assert_null(rep);
	assert_int_equal(n, 0);
	assert_int_equal(atomic_load(&c.calls), 2);
	sc_rpc_client_close(cl);
	sc_rpc_server_close(srv);
}

typedef struct caller {
	sc_rpc_client *cl;
	int id, ok;
	char why[256];
} caller;

static void *caller_main(void *p)
{
	caller *a = p;
	for (int i = 0; i < 25; i++) {
		char body[64], msg[128];
		uint8_t *rep = NULL;
		size_t n = 0;
		int st = -1;
		snprintf(body, sizeof(body), "wait: caller %d call %d", a->id, i);
		if (sc_rpc_call(a->cl, "Test.Echo", (uint8_t *)body, strlen(body), 5000, &st, msg,
				sizeof(msg), &rep, &n) != SC_OK ||
		    st != SC_STATUS_OK) {
			snprintf(a->why, sizeof(a->why), "call %d: %s %s", i, sc_status_name(st),
				 msg);
			return NULL;
		}
		if (n != strlen(body) || memcmp(rep, body, n)) {
			snprintf(a->why, sizeof(a->why), "call %d: someone else's answer", i);
			free(rep);
			return NULL;
		}
		free(rep);
		a->ok++;
	}
	return NULL;
}

static void test_concurrent_callers(void **state)
{
	counters c = { 0 };
	sc_rpc_server *srv;
	sc_rpc_client *cl;
	pthread_t th[8];
	caller a[8];
	SC_ASSERT_OK(sc_rpc_server_open(&srv, "tcp://127.0.0.1:0", methods, &c, 4));
	SC_ASSERT_OK(sc_rpc_client_open(&cl, sc_rpc_server_url(srv)));
	for (int i = 0; i < 8; i++) {
		a[i] = (caller){ .cl = cl, .id = i };
		assert_int_equal(pthread_create(&th[i], NULL, caller_main, &a[i]), 0);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(th[i], NULL);
		if (a[i].ok != 25)
			fail_msg("caller %d: %s", i, a[i].why);
	}
	assert_int_equal(atomic_load(&c.calls), 8 * 25);
	assert_true(atomic_load(&c.peak) >= 2); /* the contexts did serve at once */
	assert_true(atomic_load(&c.peak) <= 4);
	sc_rpc_client_close(cl);
	sc_rpc_server_close(srv);
}

static void test_error_status_and_unimplemented(void **state)
{
	counters c = { 0 };
	sc_rpc_server *srv;
	sc_rpc_client *cl;
	char msg[256];
	uint8_t *rep = (uint8_t *)"x";
	size_t n = 3;
	int st;
	SC_ASSERT_OK(sc_rpc_server_open(&srv, inproc_url(), methods, &c, 1));
	SC_ASSERT_OK(sc_rpc_client_open(&cl, sc_rpc_server_url(srv)));
	SC_ASSERT_OK(sc_rpc_call(cl, "Test.Fail", NULL, 0, 2000, &st, msg, sizeof(msg), &rep, &n));
	assert_int_equal(st, SC_STATUS_NOT_FOUND);
	assert_string_equal(msg, "job 42 not found");
	assert_null(rep);
	assert_int_equal(n, 0);
	SC_ASSERT_OK(sc_rpc_call(cl, "No.Such", NULL, 0, 2000, &st, msg, sizeof(msg), &rep, &n));
	assert_int_equal(st, SC_STATUS_UNIMPLEMENTED);
	assert_non_null(strstr(msg, "No.Such"));
	/* A short message buffer is cut, never overrun. */
	SC_ASSERT_OK(sc_rpc_call(cl, "Test.Fail", NULL, 0, 2000, &st, msg, 5, NULL, NULL));
	assert_string_equal(msg, "job ");
	call_ok(cl, "Test.Echo", "hi", "hi");
	/* The counters: handlers run per method, and their failures; the
	 * unknown method ran no handler. */
	sc_rpc_method_stats s[4];
	memset(s, 0, sizeof(s));
	assert_int_equal(sc_rpc_server_stats(srv, s, 4), 3);
	assert_string_equal(s[0].method, "Test.Echo");
	assert_int_equal(s[0].calls, 1);
	assert_int_equal(s[0].failures, 0);
	assert_string_equal(s[1].method, "Test.Fail");
	assert_int_equal(s[1].calls, 2);
	assert_int_equal(s[1].failures, 2);
	assert_int_equal(s[2].calls, 0);
	assert_null(s[3].method); /* beyond the table: untouched */
	assert_int_equal(sc_rpc_server_stats(srv, s, 1), 3);
	sc_rpc_client_close(cl);
	sc_rpc_server_close(srv);
}

static void test_deadline_exceeded(void **state)
{
	counters c = { 0 };
	sc_rpc_server *srv;
	sc_rpc_client *cl;
	Splitchain__Envelope *e;
	nng_socket s;
	nng_msg *m;
	char msg[256];
	uint8_t *rep, *buf;
	size_t n, len;
	uint64_t t0, took;
	int st;
	SC_ASSERT_OK(sc_rpc_server_open(&srv, inproc_url(), methods, &c, 2));
	SC_ASSERT_OK(sc_rpc_client_open(&cl, sc_rpc_server_url(srv)));
	/* The handler outlives the call's timeout. */
	t0 = mono_ms();
	SC_ASSERT_OK(sc_rpc_call(cl, "Test.Slow", (const uint8_t *)"800", 3, 200, &st, msg,
				 sizeof(msg), &rep, &n));
	took = mono_ms() - t0;
	assert_int_equal(st, SC_STATUS_DEADLINE_EXCEEDED);
	assert_non_null(strstr(msg, "200 ms"));
	assert_true(took >= 150 && took < 700);
	assert_null(rep);

	/* A request already past its deadline on arrival is refused without running. */
	buf = pack_env(&len, SC_RPC_MAGIC, SC_RPC_VERSION, "Test.Slow", 77,
		       (uint64_t)time(NULL) * 1000u - 5000u, "0");
	s = raw_socket(sc_rpc_server_url(srv), 2000, 60000);
	assert_int_equal(raw_exchange(s, buf, len, &m), 0);
	e = unpack_reply(m);
	assert_int_equal(e->status, SC_STATUS_DEADLINE_EXCEEDED);
	assert_int_equal(e->request_id, 77);
	assert_int_equal(atomic_load(&c.calls), 1);
	splitchain__envelope__free_unpacked(e, NULL);
	nng_msg_free(m);
	nng_close(s);
	free(buf);
	sc_rpc_client_close(cl);
	sc_rpc_server_close(srv); /* waits for the slow handler */
	assert_int_equal(atomic_load(&c.calls), 1);
}

static void test_retry_runs_once(void **state)
{
	counters c = { 0 };
	sc_rpc_server *srv;
	nng_socket s;
	nng_msg *m1, *m2, *m3;
	uint8_t *buf;
	size_t len;
	Splitchain__Envelope *e;
	SC_ASSERT_OK(sc_rpc_server_open(&srv, inproc_url(), methods, &c, 2));
	s = raw_socket(sc_rpc_server_url(srv), 2000, 60000);
	buf = pack_env(&len, SC_RPC_MAGIC, SC_RPC_VERSION, "Test.Slow", 0x5eed1234abcdull, 0, "1");
	assert_int_equal(raw_exchange(s, buf, len, &m1), 0);
	assert_int_equal(raw_exchange(s, buf, len, &m2), 0);
	assert_int_equal(atomic_load(&c.calls), 1);
	assert_int_equal(nng_msg_len(m1), nng_msg_len(m2));
	assert_memory_equal(nng_msg_body(m1), nng_msg_body(m2), nng_msg_len(m1));
	e = unpack_reply(m1);
	assert_int_equal(e->status, SC_STATUS_OK);
	assert_int_equal(e->request_id, 0x5eed1234abcdull);
	assert_string_equal(e->method, "Test.Slow");
	assert_int_equal(e->body.len, 6);
	assert_memory_equal(e->body.data, "call 1", 6);
	splitchain__envelope__free_unpacked(e, NULL);
	free(buf);
	/* Another id runs. */
	buf = pack_env(&len, SC_RPC_MAGIC, SC_RPC_VERSION, "Test.Slow", 0x5eed1234abceull, 0, "1");
	assert_int_equal(raw_exchange(s, buf, len, &m3), 0);
	assert_int_equal(atomic_load(&c.calls), 2);
	nng_msg_free(m1);
	nng_msg_free(m2);
	nng_msg_free(m3);
	free(buf);
	nng_close(s);
	sc_rpc_server_close(srv);
}

/* Sends an Echo envelope with id and a body of body_len zero bytes on s; returns the reply's
 * status and, through *msg_out (may be NULL), a copy of its message. */
static int raw_echo(nng_socket s, uint64_t id, size_t body_len, char *msg_out, size_t msg_size)
{
	uint8_t *body = calloc(1, body_len + 1), *buf;
	Splitchain__Envelope *e;
	nng_msg *m;
	size_t len;
	int st;
	buf =
	    pack_env_bytes(&len, SC_RPC_MAGIC, SC_RPC_VERSION, "Test.Echo", id, 0, body, body_len);
	assert_int_equal(raw_exchange(s, buf, len, &m), 0);
	e = unpack_reply(m);
	assert_int_equal(e->request_id, id);
	st = e->status;
	if (st == SC_STATUS_OK)
		assert_int_equal(e->body.len, body_len);
	if (msg_out)
		snprintf(msg_out, msg_size, "%s", e->status_message);
	splitchain__envelope__free_unpacked(e, NULL);
	nng_msg_free(m);
	free(buf);
	free(body);
	return st;
}

/* A method named idempotent (a read) runs again for a retried copy: its
 * reply is never kept in the retry memory; the others still run once. */
static void test_idempotent_runs_again(void **state)
{
	static const char *const reads[] = { "Test.Slow", NULL };
	counters c = { 0 };
	sc_rpc_server *srv;
	nng_socket s;
	nng_msg *m1, *m2;
	uint8_t *buf;
	size_t len;
	Splitchain__Envelope *e;
	(void)state;
	SC_ASSERT_OK(sc_rpc_server_open_idem(&srv, inproc_url(), methods, &c, 2, reads));
	s = raw_socket(sc_rpc_server_url(srv), 2000, 60000);
	buf = pack_env(&len, SC_RPC_MAGIC, SC_RPC_VERSION, "Test.Slow", 0x1de1ull, 0, "1");
	assert_int_equal(raw_exchange(s, buf, len, &m1), 0);
	assert_int_equal(raw_exchange(s, buf, len, &m2), 0);
	assert_int_equal(atomic_load(&c.calls), 2);
	e = unpack_reply(m2);
	assert_int_equal(e->status, SC_STATUS_OK);
	assert_memory_equal(e->body.data, "call 2", 6);
	splitchain__envelope__free_unpacked(e, NULL);
	nng_msg_free(m1);
	nng_msg_free(m2);
	free(buf);
	/* Test.Echo is not named: a retry of it is answered from memory. */
	assert_int_equal(raw_echo(s, 0x1de2ull, 8, NULL, 0), SC_STATUS_OK);
	assert_int_equal(raw_echo(s, 0x1de2ull, 8, NULL, 0), SC_STATUS_OK);
	nng_close(s);
	sc_rpc_server_close(srv);
	assert_int_equal(atomic_load(&c.calls), 3);
}

/* The retry memory is bounded in bytes (the oldest big replies are forgotten: a retry of one
 * is refused, not run again) and in ids (the oldest ids go). */
static void test_retry_memory_bounds(void **state)
{
	counters c = { 0 };
	sc_rpc_server *srv;
	nng_socket s;
	char msg[256];
	SC_ASSERT_OK(sc_rpc_server_open(&srv, inproc_url(), methods, &c, 1));
	s = raw_socket(sc_rpc_server_url(srv), 10000, 60000);
	for (uint64_t id = 1; id <= 3; id++)
		assert_int_equal(raw_echo(s, id, 30u << 20, NULL, 0), SC_STATUS_OK);
	assert_int_equal(atomic_load(&c.calls), 3);
	assert_int_equal(raw_echo(s, 1, 30u << 20, msg, sizeof(msg)), SC_STATUS_ABORTED);
	assert_non_null(strstr(msg, "no longer kept"));
	assert_int_equal(raw_echo(s, 3, 30u << 20, NULL, 0), SC_STATUS_OK);
	assert_int_equal(atomic_load(&c.calls), 3);

	for (uint64_t id = 100; id < 100 + 4096; id++)
		assert_int_equal(raw_echo(s, id, 8, NULL, 0), SC_STATUS_OK);
	assert_int_equal(atomic_load(&c.calls), 3 + 4096);
	assert_int_equal(raw_echo(s, 100 + 4095, 8, NULL, 0), SC_STATUS_OK); /* remembered */
	assert_int_equal(atomic_load(&c.calls), 3 + 4096);
	assert_int_equal(raw_echo(s, 3, 30u << 20, NULL, 0), SC_STATUS_OK); /* pushed out: runs */
	assert_int_equal(atomic_load(&c.calls), 3 + 4096 + 1);
	nng_close(s);
	sc_rpc_server_close(srv);
}

typedef struct raw_job {
	const char *url;
	const uint8_t *buf;
	size_t len;
	int rv;
	nng_msg *reply;
} raw_job;

static void *raw_job_main(void *p)
{
	raw_job *j = p;
	nng_socket s;
	nng_msg *m;
	nng_req0_open(&s);
	nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 5000);
	if ((j->rv = nng_dial(s, j->url, NULL, 0)) == 0 &&
	    (j->rv = nng_msg_alloc(&m, j->len)) == 0) {
		memcpy(nng_msg_body(m), j->buf, j->len);
		if ((j->rv = nng_sendmsg(s, m, 0)) != 0)
			nng_msg_free(m);
		else
			j->rv = nng_recvmsg(s, &j->reply, 0);
	}
	nng_close(s);
	return NULL;
}

/* A copy arriving while the first is still running is not run either: it gets the same
 * answer once the first is done. */
static void test_retry_while_running(void **state)
{
	counters c = { 0 };
	sc_rpc_server *srv;
	pthread_t th;
	raw_job first = { 0 };
	nng_socket s;
	nng_msg *m;
	uint8_t *buf;
	size_t len;
	SC_ASSERT_OK(sc_rpc_server_open(&srv, "tcp://127.0.0.1:0", methods, &c, 3));
	buf = pack_env(&len, SC_RPC_MAGIC, SC_RPC_VERSION, "Test.Slow", 0xfeedull, 0, "400");
	first = (raw_job){ .url = sc_rpc_server_url(srv), .buf = buf, .len = len };
	assert_int_equal(pthread_create(&th, NULL, raw_job_main, &first), 0);
	sleep_ms(100);
	s = raw_socket(sc_rpc_server_url(srv), 5000, 200); /* resends the same envelope */
	assert_int_equal(raw_exchange(s, buf, len, &m), 0);
	pthread_join(th, NULL);
	assert_int_equal(first.rv, 0);
	assert_int_equal(atomic_load(&c.calls), 1);
	assert_int_equal(nng_msg_len(m), nng_msg_len(first.reply));
	assert_memory_equal(nng_msg_body(m), nng_msg_body(first.reply), nng_msg_len(m));
	nng_msg_free(m);
	nng_msg_free(first.reply);
	nng_close(s);
	free(buf);
	sc_rpc_server_close(srv);
}

/* Malformed input: each case is dropped (no reply) or answered with an error, and the server
 * goes on serving. want: -1 = dropped, else the status of the reply. */
static void test_malformed_input(void **state)
{
	counters c = { 0 };
	sc_rpc_server *srv;
	sc_rpc_client *cl;
	uint8_t garbage[97];
	uint64_t x = 0x243F6A8885A308D3ull;
	size_t good_len;
	uint8_t *good = pack_env(&good_len, SC_RPC_MAGIC, SC_RPC_VERSION, "Test.Echo", 9, 0,
				 "a body long enough to cut in the middle");
	size_t len[3];
	uint8_t *bad[3] = {
		pack_env(&len[0], 0x12345678u, SC_RPC_VERSION, "Test.Echo", 10, 0, "x"),
		pack_env(&len[1], SC_RPC_MAGIC, 7, "Test.Echo", 11, 0, "x"),
		pack_env(&len[2], SC_RPC_MAGIC, SC_RPC_VERSION, "", 12, 0, "x"),
	};
	const struct {
		const char *name;
		const uint8_t *buf;
		size_t len;
		int want;
	} cases[] = {
		{ "random bytes", garbage, sizeof(garbage), -1 },
		{ "truncated envelope", good, good_len - 10, -1 },
		{ "empty message", garbage, 0, -1 },
		{ "wrong magic", bad[0], len[0], -1 },
		{ "wrong version", bad[1], len[1], SC_STATUS_INVALID_ARGUMENT },
		{ "no method", bad[2], len[2], SC_STATUS_INVALID_ARGUMENT },
	};
	for (size_t i = 0; i < sizeof(garbage); i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		garbage[i] = (uint8_t)x;
	}
	garbage[0] = 0xff; /* wire type 7: there is no such wire type */

	SC_ASSERT_OK(sc_rpc_server_open(&srv, "tcp://127.0.0.1:0", methods, &c, 2));
	for (int round = 0; round < 2; round++) { /* more bad messages than contexts */
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			nng_socket s = raw_socket(sc_rpc_server_url(srv), 300, 60000);
			nng_msg *m = NULL;
			int rv = raw_exchange(s, cases[i].buf, cases[i].len, &m);
			if (cases[i].want < 0) {
				if (rv != NNG_ETIMEDOUT)
					fail_msg("%s: expected no reply, got %s", cases[i].name,
						 rv ? nng_strerror(rv) : "a reply");
			} else {
				Splitchain__Envelope *e;
				if (rv != 0)
					fail_msg("%s: no reply: %s", cases[i].name,
						 nng_strerror(rv));
				e = unpack_reply(m);
				assert_int_equal(e->status, cases[i].want);
				assert_true(e->status_message[0] != '\0');
				splitchain__envelope__free_unpacked(e, NULL);
				nng_msg_free(m);
			}
			nng_close(s);
		}
	}
	assert_int_equal(atomic_load(&c.calls), 0);
	SC_ASSERT_OK(sc_rpc_client_open(&cl, sc_rpc_server_url(srv)));
	for (int i = 0; i < 4; i++)
		call_ok(cl, "Test.Echo", "still serving", "still serving");
	sc_rpc_client_close(cl);
	sc_rpc_server_close(srv);
	for (int i = 0; i < 3; i++)
		free(bad[i]);
	free(good);
}

/* Connects a plain TCP socket to the tcp:// url and does the SP handshake as a REQ peer;
 * returns the descriptor. */
static int sp_connect(const char *url)
{
	static const uint8_t hello[8] = { 0, 'S', 'P', 0, 0, NNG_REQ0_SELF, 0, 0 };
	struct sockaddr_in sa = { .sin_family = AF_INET };
	struct timeval tv = { 2, 0 };
	uint8_t peer[8];
	unsigned port;
	int fd;
	assert_int_equal(sscanf(url, "tcp://127.0.0.1:%u", &port), 1);
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_true((fd = socket(AF_INET, SOCK_STREAM, 0)) >= 0);
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(send(fd, hello, sizeof(hello), MSG_NOSIGNAL), sizeof(hello));
	assert_int_equal(recv(fd, peer, sizeof(peer), MSG_WAITALL), sizeof(peer));
	assert_int_equal(peer[5], NNG_REQ0_PEER);
	return fd;
}

/* A message over SC_RPC_MAX_MSG is refused by the transport, which drops the connection as
 * soon as it reads the length; the server goes on serving. The client refuses to send one
 * (without touching the big buffer's pages). */
static void test_oversized_message(void **state)
{
	counters c = { 0 };
	sc_rpc_server *srv;
	sc_rpc_client *cl;
	uint64_t big_len = (uint64_t)SC_RPC_MAX_MSG + 16;
	uint8_t frame[8 + 4 + 16] = { 0 }, byte;
	char msg[256];
	uint8_t *big;
	ssize_t got;
	int fd, st;
	SC_ASSERT_OK(sc_rpc_server_open(&srv, "tcp://127.0.0.1:0", methods, &c, 2));
	/* A length prefix (big-endian) and the first bytes of a REQ message that big. */
	for (int i = 0; i < 8; i++)
		frame[i] = (uint8_t)(big_len >> (56 - 8 * i));
	frame[8] = 0x80;
	fd = sp_connect(sc_rpc_server_url(srv));
	assert_int_equal(send(fd, frame, sizeof(frame), MSG_NOSIGNAL), sizeof(frame));
	got = recv(fd, &byte, 1, 0);
	if (got != 0 && !(got < 0 && errno == ECONNRESET))
		fail_msg("the connection stayed open after an oversized message (recv: %zd, %s)",
			 got, strerror(errno));
	close(fd);
	assert_int_equal(atomic_load(&c.calls), 0);

	SC_ASSERT_OK(sc_rpc_client_open(&cl, sc_rpc_server_url(srv)));
	call_ok(cl, "Test.Echo", "after the big one", "after the big one");
	/* Bigger than nng's default limit (1 MiB) both ways, well under ours. */
	big = malloc(3u << 20);
	assert_non_null(big);
	for (size_t i = 0; i < (3u << 20); i++)
		big[i] = (uint8_t)(i * 7 + (i >> 11));
	{
		uint8_t *rep;
		size_t n;
		SC_ASSERT_OK(sc_rpc_call(cl, "Test.Echo", big, 3u << 20, 5000, &st, msg,
					 sizeof(msg), &rep, &n));
		if (st != SC_STATUS_OK)
			fail_msg("3 MiB echo: %s: %s", sc_status_name(st), msg);
		assert_int_equal(n, 3u << 20);
		assert_memory_equal(rep, big, n);
		free(rep);
	}
	free(big);
	big = malloc(SC_RPC_MAX_MSG);
	assert_non_null(big);
	SC_ASSERT_OK(sc_rpc_call(cl, "Test.Echo", big, SC_RPC_MAX_MSG, 2000, &st, msg, sizeof(msg),
				 NULL, NULL));
	assert_int_equal(st, SC_STATUS_RESOURCE_EXHAUSTED);
	assert_non_null(strstr(msg, "limit"));
	free(big);
	sc_rpc_client_close(cl);
	sc_rpc_server_close(srv);
}

/* A client that starts before its server: UNAVAILABLE within the timeout, then served once the
 * server is up, over inproc and over tcp. */
static void test_late_server(void **state)
{
	char url[2][128], msg[256];
	counters c = { 0 };
	sc_rpc_server *srv;
	sc_rpc_client *cl;
	uint64_t t0, took;
	int st;
	snprintf(url[0], sizeof(url[0]), "%s", inproc_url());
	SC_ASSERT_OK(sc_rpc_server_open(&srv, "tcp://127.0.0.1:0", methods, NULL, 1));
	snprintf(url[1], sizeof(url[1]), "%s", sc_rpc_server_url(srv));
	sc_rpc_server_close(srv); /* a port with nobody behind it */
	for (int i = 0; i < 2; i++) {
		SC_ASSERT_OK(sc_rpc_client_open(&cl, url[i]));
		t0 = mono_ms();
		SC_ASSERT_OK(
		    sc_rpc_call(cl, "Test.Echo", NULL, 0, 300, &st, msg, sizeof(msg), NULL, NULL));
		took = mono_ms() - t0;
		if (st != SC_STATUS_UNAVAILABLE)
			fail_msg("%s: %s %s", url[i], sc_status_name(st), msg);
		assert_non_null(strstr(msg, url[i]));
		assert_non_null(strstr(msg, "is the server running?"));
		assert_true(took >= 250 && took < 1000);
		SC_ASSERT_OK(sc_rpc_server_open(&srv, url[i], methods, &c, 1));
		call_ok(cl, "Test.Echo", "you came", "you came");
		sc_rpc_client_close(cl);
		sc_rpc_server_close(srv);
	}
}

typedef struct slow_caller {
	sc_rpc_client *cl;
	const char *method; /* NULL: "Test.Slow" */
	const char *body;   /* NULL: "300" (Test.Slow's sleep in ms) */
	int timeout_ms;
	int status;
	sc_err err;
	uint64_t took_ms, end_ms; /* end_ms: mono_ms() when the call returned */
	char msg[256];
} slow_caller;

static void *slow_caller_main(void *p)
{
	slow_caller *a = p;
	const char *body = a->body ? a->body : "300";
	uint8_t *rep = NULL;
	size_t n;
	uint64_t t0 = mono_ms();
	a->err =
	    sc_rpc_call(a->cl, a->method ? a->method : "Test.Slow", (const uint8_t *)body,
			strlen(body), a->timeout_ms, &a->status, a->msg, sizeof(a->msg), &rep, &n);
	a->end_ms = mono_ms();
	a->took_ms = a->end_ms - t0;
	free(rep);
	return NULL;
}

static void test_close_with_calls_in_flight(void **state)
{
	counters c = { 0 };
	sc_rpc_server *srv;
	sc_rpc_client *cl;
	pthread_t th[4];
	slow_caller a[4];
	SC_ASSERT_OK(sc_rpc_server_open(&srv, "tcp://127.0.0.1:0", methods, &c, 2));
	SC_ASSERT_OK(sc_rpc_client_open(&cl, sc_rpc_server_url(srv)));
	for (int i = 0; i < 4; i++) {
		a[i] = (slow_caller){ .cl = cl, .timeout_ms = 1000, .status = -1 };
		assert_int_equal(pthread_create(&th[i], NULL, slow_caller_main, &a[i]), 0);
	}
	sleep_ms(100);
	sc_rpc_server_close(srv); /* two handlers are running */
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		SC_ASSERT_OK(a[i].err);
		if (a[i].status != SC_STATUS_OK && a[i].status != SC_STATUS_UNAVAILABLE &&
		    a[i].status != SC_STATUS_DEADLINE_EXCEEDED)
			fail_msg("caller %d: %s", i, sc_status_name(a[i].status));
	}
	assert_true(atomic_load(&c.calls) <= 2);
	sc_rpc_client_close(cl);
}

/* sc_rpc_client_abort fails the calls in flight at once (the coordinator's
 * answer to a worker known to be dead) and every later call on the client, which
 * stays open until closed. */
static void test_client_abort(void **state)
{
	counters c = { 0 };
	sc_rpc_server *srv;
	sc_rpc_client *cl;
	pthread_t th[2];
	slow_caller a[2];
	char msg[256];
	int st = -1;
	uint8_t *rep = NULL;
	size_t n;
	SC_ASSERT_OK(sc_rpc_server_open(&srv, "tcp://127.0.0.1:0", methods, &c, 2));
	SC_ASSERT_OK(sc_rpc_client_open(&cl, sc_rpc_server_url(srv)));
	for (int i = 0; i < 2; i++) {
		a[i] = (slow_caller){ .cl = cl, .timeout_ms = 20000, .status = -1 };
		assert_int_equal(pthread_create(&th[i], NULL, slow_caller_main, &a[i]), 0);
	}
	sleep_ms(100);
	sc_rpc_client_abort(cl);
	sc_rpc_client_abort(cl); /* idempotent */
	for (int i = 0; i < 2; i++) {
		pthread_join(th[i], NULL);
		SC_ASSERT_OK(a[i].err);
		assert_int_equal(a[i].status, SC_STATUS_UNAVAILABLE);
		assert_non_null(strstr(a[i].msg, "aborted"));
		assert_true(a[i].took_ms < 2000);
	}
	SC_ASSERT_OK(sc_rpc_call(cl, "Test.Echo", (const uint8_t *)"x", 1, 5000, &st, msg,
				 sizeof(msg), &rep, &n));
	assert_int_equal(st, SC_STATUS_UNAVAILABLE);
	assert_non_null(strstr(msg, "was aborted"));
	free(rep);
	sc_rpc_client_close(cl);
	sc_rpc_server_close(srv);
}

/* sc_rpc_client_rearm undoes an abort once its calls are joined: the same client serves again,
 * and the aborted calls' late replies never reach a later call. */
static void test_client_rearm(void **state)
{
	counters c = { 0 };
	sc_rpc_server *srv;
	sc_rpc_client *cl;
	pthread_t th[2];
	slow_caller a[2];
	char body[32];
	SC_ASSERT_OK(sc_rpc_server_open(&srv, inproc_url(), methods, &c, 4));
	SC_ASSERT_OK(sc_rpc_client_open(&cl, sc_rpc_server_url(srv)));
	for (int cycle = 0; cycle < 3; cycle++) {
		for (int i = 0; i < 2; i++) {
			a[i] = (slow_caller){
				.cl = cl, .body = "150", .timeout_ms = 20000, .status = -1
			};
			assert_int_equal(pthread_create(&th[i], NULL, slow_caller_main, &a[i]), 0);
		}
		sleep_ms(50);
		sc_rpc_client_abort(cl);
		for (int i = 0; i < 2; i++) {
			pthread_join(th[i], NULL);
			SC_ASSERT_OK(a[i].err);
			assert_int_equal(a[i].status, SC_STATUS_UNAVAILABLE);
			assert_true(a[i].took_ms < 1000);
		}
		sc_rpc_client_rearm(cl);
		snprintf(body, sizeof(body), "after abort %d", cycle);
		call_ok(cl, "Test.Echo", body, body);
		sleep_ms(150); /* the aborted calls' replies come, and go nowhere */
		call_ok(cl, "Test.Echo", body, body);
	}
	sc_rpc_client_rearm(NULL);
	sc_rpc_client_close(cl);
	sc_rpc_server_close(srv);
}

static int xorshift_next(uint64_t *x)
{
	*x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
	return (int)(*x >> 33);
}

/* A gate that h_gate's handlers wait at: they go on when gen changes or the gate closes. */
typedef struct gate {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned gen; /* under mu */
	int closed;   /* under mu */
} gate;

static void gate_open(gate *g, int close)
{
	pthread_mutex_lock(&g->mu);
	g->gen++;
	g->closed |= close;
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->mu);
}

/* Body "now": answers at once. Anything else: waits for the gate to open (or 3 s), then
 * answers. */
static void h_gate(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	gate *g = arg;
	struct timespec until;
	unsigned gen;
	if (len == 3 && !memcmp(req, "now", 3))
		return;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 3;
	pthread_mutex_lock(&g->mu);
	gen = g->gen;
	while (g->gen == gen && !g->closed && pthread_cond_timedwait(&g->cv, &g->mu, &until) == 0)
		;
	pthread_mutex_unlock(&g->mu);
}

static const sc_rpc_method gate_methods[] = {
	{ "Test.Gate", h_gate },
	{ NULL, NULL },
};

/* Aborts raced against calls at every stage, 2400 times: a fresh client each round (so its first
 * sends wait for the dial), 3 callers with a 10 s timeout, and the abort 0-2 ms later (a quarter
 * of the rounds at once, racing the calls' start). Caller 0's handler answers at once, so that
 * call may finish first; the others' handlers wait at a gate opened only once the round's client
 * is closed, so an abort lost on them shows as a 3 s wait. Every call returns OK or UNAVAILABLE
 * within 2 s of the abort, never at its timeout, and a call after the abort is refused at once.
 * Over inproc only: nng 1.5.2's tcp transport hangs nng_close for good (its reaper thread waits
 * on a stranded receive) when a connection's end closes as a message arrives (nng issue #1813,
 * fixed in 1.9.0), which a round's late requests and replies make likely here. */
static void test_abort_races_calls(void **state)
{
	enum { ROUNDS = 2400, CALLERS = 3 };
	gate g = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };
	sc_rpc_server *srv;
	uint64_t x = 0x9E3779B97F4A7C15ull, t_start = mono_ms(), worst = 0;
	int n_ok = 0, n_cancelled = 0, n_refused = 0;
	SC_ASSERT_OK(sc_rpc_server_open(&srv, inproc_url(), gate_methods, &g, 4));
	for (int round = 0; round < ROUNDS; round++) {
		int r = xorshift_next(&x), delay_us = r % 4 == 0 ? 0 : r / 4 % 2001, st = -1;
		sc_rpc_client *cl;
		pthread_t th[CALLERS];
		slow_caller a[CALLERS];
		uint64_t t_abort, t0, late;
		char msg[256];
		SC_ASSERT_OK(sc_rpc_client_open(&cl, sc_rpc_server_url(srv)));
		for (int i = 0; i < CALLERS; i++) {
			a[i] = (slow_caller){ .cl = cl,
					      .method = "Test.Gate",
					      .body = i == 0 ? "now" : "wait",
					      .timeout_ms = 10000,
					      .status = -1 };
			assert_int_equal(pthread_create(&th[i], NULL, slow_caller_main, &a[i]), 0);
		}
		if (delay_us)
			nanosleep(&(struct timespec){ 0, delay_us * 1000L }, NULL);
		t_abort = mono_ms();
		sc_rpc_client_abort(cl);
		for (int i = 0; i < CALLERS; i++) {
			pthread_join(th[i], NULL);
			SC_ASSERT_OK(a[i].err);
			late = a[i].end_ms > t_abort ? a[i].end_ms - t_abort : 0;
			worst = late > worst ? late : worst;
			if ((a[i].status != SC_STATUS_OK && a[i].status != SC_STATUS_UNAVAILABLE) ||
			    late > 2000)
				fail_msg(
				    "round %d (abort after %d us), caller %d: %s %llu ms after "
				    "the abort: %s",
				    round, delay_us, i, sc_status_name(a[i].status),
				    (unsigned long long)late, a[i].msg);
			if (a[i].status == SC_STATUS_OK)
				n_ok++;
			else if (strstr(a[i].msg, "was aborted"))
				n_refused++; /* started after the abort */
			else if (strstr(a[i].msg, "aborted ("))
				n_cancelled++; /* in flight */
			else
				fail_msg("round %d, caller %d: UNAVAILABLE, but not aborted: %s",
					 round, i, a[i].msg);
		}
		t0 = mono_ms();
		SC_ASSERT_OK(sc_rpc_call(cl, "Test.Gate", (const uint8_t *)"now", 3, 10000, &st,
					 msg, sizeof(msg), NULL, NULL));
		assert_int_equal(st, SC_STATUS_UNAVAILABLE);
		assert_non_null(strstr(msg, "was aborted"));
		assert_true(mono_ms() - t0 < 100);
		sc_rpc_client_close(cl);
		gate_open(&g, 0);
	}
	print_message("[          ] %d aborts in %llu ms: %d calls cancelled in flight, %d "
		      "refused, %d finished first; the latest returned %llu ms after its abort\n",
		      ROUNDS, (unsigned long long)(mono_ms() - t_start), n_cancelled, n_refused,
		      n_ok, (unsigned long long)worst);
	assert_true(n_cancelled > 0); /* the case did race calls in flight */
	gate_open(&g, 1);
	sc_rpc_server_close(srv);
}

/* The client that h_abort_caller aborts, and the gate that holds its reply back. */
typedef struct arrival {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	sc_rpc_client *cl; /* under mu */
	int released;      /* under mu: the test has its call's result */
	int handled;       /* under mu: aborting handlers finished */
} arrival;

/* With an empty body: aborts the caller's own client the moment its request arrives, then holds
 * the reply back until released (or 3 s). With a body: answers at once. */
static void h_abort_caller(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	arrival *a = arg;
	struct timespec until;
	if (len)
		return;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 3;
	pthread_mutex_lock(&a->mu);
	sc_rpc_client_abort(a->cl); /* takes no lock of the caller's for long: fine under a->mu */
	while (!a->released && pthread_cond_timedwait(&a->cv, &a->mu, &until) == 0)
		;
	a->handled++;
	pthread_cond_broadcast(&a->cv);
	pthread_mutex_unlock(&a->mu);
}

static const sc_rpc_method arrival_methods[] = {
	{ "Test.AbortMe", h_abort_caller },
	{ NULL, NULL },
};

/* An abort that lands between a send's completion and the receive's start is not lost. The
 * server aborts the client as soon as the request arrives, which is often before the calling
 * thread has woken from the send's completion (a fresh client's first send waits for the dial
 * and completes on nng's thread), and then holds its reply back for 3 s: a lost abort shows as
 * OK after 3 s. Every other round warms the connection up first, so the send completes at once
 * and the abort mostly cancels a started receive. Over inproc, as the reply goes out as the
 * client closes (see test_abort_races_calls on tcp). */
static void test_abort_between_send_and_receive(void **state)
{
	enum { ROUNDS = 2000 };
	arrival a = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };
	sc_rpc_server *srv;
	uint64_t t_start = mono_ms(), worst = 0;
	SC_ASSERT_OK(sc_rpc_server_open(&srv, inproc_url(), arrival_methods, &a, 2));
	for (int round = 0; round < ROUNDS; round++) {
		struct timespec until;
		sc_rpc_client *cl;
		uint64_t t0, took;
		char msg[256];
		int st = -1;
		SC_ASSERT_OK(sc_rpc_client_open(&cl, sc_rpc_server_url(srv)));
		if (round & 1) {
			SC_ASSERT_OK(sc_rpc_call(cl, "Test.AbortMe", (const uint8_t *)"warm", 4,
						 5000, &st, msg, sizeof(msg), NULL, NULL));
			assert_int_equal(st, SC_STATUS_OK);
		}
		pthread_mutex_lock(&a.mu);
		a.cl = cl;
		a.released = 0;
		pthread_mutex_unlock(&a.mu);
		t0 = mono_ms();
		SC_ASSERT_OK(sc_rpc_call(cl, "Test.AbortMe", NULL, 0, 10000, &st, msg, sizeof(msg),
					 NULL, NULL));
		took = mono_ms() - t0;
		worst = took > worst ? took : worst;
		if (st != SC_STATUS_UNAVAILABLE || took > 1000)
			fail_msg("round %d: %s after %llu ms: %s", round, sc_status_name(st),
				 (unsigned long long)took, msg);
		assert_non_null(strstr(msg, "aborted"));
		/* Let the handler go, and wait until it is done with cl. */
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += 5;
		pthread_mutex_lock(&a.mu);
		a.released = 1;
		pthread_cond_broadcast(&a.cv);
		while (a.handled < round + 1 && pthread_cond_timedwait(&a.cv, &a.mu, &until) == 0)
			;
		pthread_mutex_unlock(&a.mu);
		assert_int_equal(a.handled, round + 1);
		sc_rpc_client_close(cl);
	}
	print_message("[          ] %d aborts on arrival in %llu ms; the slowest call took %llu "
		      "ms\n",
		      ROUNDS, (unsigned long long)(mono_ms() - t_start), (unsigned long long)worst);
	sc_rpc_server_close(srv);
}

/* The server goes away mid-call and comes back on the same address: nng resends the request
 * on the new connection and the call still succeeds within its timeout. */
static void test_server_restart_mid_call(void **state)
{
	counters c1 = { 0 }, c2 = { 0 };
	sc_rpc_server *srv;
	sc_rpc_client *cl;
	pthread_t th;
	slow_caller a = { .status = -1 };
	char url[128];
	SC_ASSERT_OK(sc_rpc_server_open(&srv, "tcp://127.0.0.1:0", methods, &c1, 2));
	snprintf(url, sizeof(url), "%s", sc_rpc_server_url(srv));
	SC_ASSERT_OK(sc_rpc_client_open(&cl, url));
	a.cl = cl;
	a.timeout_ms = 5000;
	assert_int_equal(pthread_create(&th, NULL, slow_caller_main, &a), 0);
	sleep_ms(100);
	sc_rpc_server_close(srv); /* its handler finishes, but the reply has nowhere to go */
	assert_int_equal(atomic_load(&c1.calls), 1);
	SC_ASSERT_OK(sc_rpc_server_open(&srv, url, methods, &c2, 2));
	pthread_join(th, NULL);
	SC_ASSERT_OK(a.err);
	assert_int_equal(a.status, SC_STATUS_OK);
	assert_true(a.took_ms < 3000); /* resent on the new connection, not after a timeout */
	assert_int_equal(atomic_load(&c2.calls), 1);
	sc_rpc_client_close(cl);
	sc_rpc_server_close(srv);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_status_names),
		cmocka_unit_test(test_open_errors),
		cmocka_unit_test(test_server_url),
		cmocka_unit_test(test_echo_round_trip),
		cmocka_unit_test(test_concurrent_callers),
		cmocka_unit_test(test_error_status_and_unimplemented),
		cmocka_unit_test(test_deadline_exceeded),
		cmocka_unit_test(test_client_abort),
		cmocka_unit_test(test_client_rearm),
		cmocka_unit_test(test_abort_races_calls),
		cmocka_unit_test(test_abort_between_send_and_receive),
		cmocka_unit_test(test_retry_runs_once),
		cmocka_unit_test(test_retry_while_running),
		cmocka_unit_test(test_retry_memory_bounds),
		cmocka_unit_test(test_idempotent_runs_again),
		cmocka_unit_test(test_malformed_input),
		cmocka_unit_test(test_oversized_message),
		cmocka_unit_test(test_late_server),
		cmocka_unit_test(test_close_with_calls_in_flight),
		cmocka_unit_test(test_server_restart_mid_call),
		cmocka_unit_test(test_auth_hook),
		cmocka_unit_test(test_retry_memory_per_credential),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
