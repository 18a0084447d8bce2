/* dataplane.c — one nng pair socket per hop carrying tensors: the hello
 * handshake on each connection, screening of peers, and send / receive with
 * timeouts (sc_dataplane.h); the frame layout and its checks are in
 * dp_frame.c.
 *
 * Threads: a dialer's pipe callback (an nng thread) only sets need_hello;
 * everything else runs on the caller's thread. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nng/nng.h>
#include <nng/protocol/pair0/pair.h>
#include <zlib.h>

#include "dp_frame.h"
#include "sc_codec.h"
#include "sc_listen_guard.h"
#include "sc_log.h"
#include "sc_pipes.h"
#include "sc_tls.h"
#include "splitchain.pb-c.h"

#define SLICE_MS      100  /* socket timeout: how often a waiting call looks at the clock */
#define HELLO_WAIT_MS 1000 /* a listener closes a connection silent this long without a hello */

struct sc_dp_socket {
	nng_socket sock;
	int open;
	int listener;
	sc_dp_opts o;
	char url[256];
	_Atomic uint64_t sent, received;
	atomic_int need_hello;   /* dialer: a new connection has not had its hello yet */
	int accepted;            /* listener: the id of the connection whose hello was right */
	sc_pipes pipes;          /* the connection nng holds now: attached() */
	_Atomic double quiet_ms; /* last connection change, redial or relisten */
	nng_dialer dialer;       /* dialer: replaced by keep_dialing */
	nng_listener lst;        /* listener: replaced by keep_dialing */
	uint32_t refused_id; /* listener: the last connection refused (its queued messages go) */
	uint32_t silent_id;  /* listener: a connection without a hello, watched since */
	double silent_since;
	void *enc; /* an encoded tensor before it is framed (wire != fp32) */
	size_t enc_cap;
	int delay_ms; /* SPLITCHAIN_TEST_LINK_DELAY_MS: a tensor is delivered no sooner */
};

/* SPLITCHAIN_TEST_LINK_DELAY_MS=D (tests and benchmarks only): every tensor
 * is handed to the receiver no sooner than D ms after its sender stamped it
 * (both on one machine's clock): a one-way link latency where the kernel
 * cannot add one (no netem). The sender never waits. */
static int test_link_delay_ms(void)
{
	const char *v = getenv("SPLITCHAIN_TEST_LINK_DELAY_MS");
	long d = v && *v ? strtol(v, NULL, 10) : 0;
	return d > 0 && d <= 10000 ? (int)d : 0;
}

/* Waits until D ms after msg was sent (the test-only link delay). */
static void link_delay(const sc_dp_socket *s, const uint8_t *msg, size_t len)
{
	uint64_t sent = s->delay_ms ? dp_frame_sent_us(msg, len) : 0, now;
	struct timespec ts;
	if (!sent)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	now = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
	if (now < sent + (uint64_t)s->delay_ms * 1000u) {
		uint64_t us = sent + (uint64_t)s->delay_ms * 1000u - now;
		ts.tv_sec = (time_t)(us / 1000000u);
		ts.tv_nsec = (long)(us % 1000000u) * 1000;
		nanosleep(&ts, NULL);
	}
}

void sc_dp_opts_defaults(sc_dp_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->timeout_ms = 120000;
	o->max_msg = (size_t)1 << 30;
	o->queue = 16;
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* ---------------------------------------------------------------- sockets */

static sc_err nng_fail(int rv, const char *what, const char *url)
{
	return sc_errf(SC_EIO, "data plane: %s %s: %s", what, url, nng_strerror(rv));
}

/* nng thread: which connection is attached; each new connection of a
 * dialer owes its hello. */
static void on_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	sc_dp_socket *s = arg;

	if (!sc_pipes_event(&s->pipes, nng_pipe_id(p), ev))
		return; /* a removal before its addition (sc_pipes.h), or the addition it voids */
	if (ev == NNG_PIPE_EV_ADD_POST)
		atomic_store(&s->need_hello, 1);
	atomic_store(&s->quiet_ms, now_ms());
}

/* The id of the connection nng holds now, 0 for none. */
static unsigned attached(sc_dp_socket *s)
{
	return sc_pipes_newest(&s->pipes);
}

static sc_err sock_open(sc_dp_socket **out, const char *url, const sc_dp_opts *o)
{
	sc_dp_socket *s;
	int rv;

	*out = NULL;
	if (!url || !url[0] || strlen(url) >= sizeof(s->url))
		return sc_errf(SC_EINVAL, "data plane: bad address '%s'", url ? url : "");
	if (!(s = calloc(1, sizeof(*s))))
		return sc_errf(SC_ENOMEM, "data plane: out of memory");
	sc_dp_opts_defaults(&s->o);
	s->delay_ms = test_link_delay_ms();
	if (s->delay_ms)
		sc_warn("dataplane",
			"SPLITCHAIN_TEST_LINK_DELAY_MS: every tensor arrives %d ms "
			"late (a test setting)",
			s->delay_ms);
	if (o) {
		s->o = *o;
		if (s->o.timeout_ms <= 0)
			s->o.timeout_ms = 120000;
		if (s->o.max_msg == 0)
			s->o.max_msg = (size_t)1 << 30;
		if (s->o.queue <= 0)
			s->o.queue = 16;
		if (s->o.queue > 8192)
			s->o.queue = 8192;
	}
	snprintf(s->url, sizeof(s->url), "%s", url);
	sc_pipes_init(&s->pipes);
	if ((rv = nng_pair0_open(&s->sock))) {
		sc_pipes_fini(&s->pipes);
		free(s);
		return nng_fail(rv, "opening a socket for", url);
	}
	s->open = 1;
	if ((rv = nng_pipe_notify(s->sock, NNG_PIPE_EV_ADD_POST, on_pipe, s)) ||
	    (rv = nng_pipe_notify(s->sock, NNG_PIPE_EV_REM_POST, on_pipe, s))) {
		sc_dp_close(s);
		return nng_fail(rv, "watching the connections of", url);
	}
	if ((rv = nng_socket_set_size(s->sock, NNG_OPT_RECVMAXSZ, s->o.max_msg)) ||
	    (rv = nng_socket_set_ms(s->sock, NNG_OPT_RECVTIMEO, SLICE_MS)) ||
	    (rv = nng_socket_set_ms(s->sock, NNG_OPT_SENDTIMEO, SLICE_MS)) ||
	    (rv = nng_socket_set_int(s->sock, NNG_OPT_RECVBUF, s->o.queue)) ||
	    (rv = nng_socket_set_int(s->sock, NNG_OPT_SENDBUF, s->o.queue)) ||
	    (rv = nng_socket_set_ms(s->sock, NNG_OPT_RECONNMINT, 20)) ||
	    (rv = nng_socket_set_ms(s->sock, NNG_OPT_RECONNMAXT, 500))) {
		sc_dp_close(s);
		return nng_fail(rv, "setting options for", url);
	}
	*out = s;
	return SC_OK;
}

sc_err sc_dp_listen(sc_dp_socket **out, const char *url, const sc_dp_opts *o)
{
	sc_dp_socket *s;
	nng_listener l;
	nng_url *u = NULL;
	int rv, port = 0;
	sc_err rc;

	SC_TRY(sock_open(&s, url, o));
	s->listener = 1;
	if ((rv = nng_listener_create(&l, s->sock, url))) {
		rc = nng_fail(rv, "listening on", url);
		goto fail;
	}
	if ((rc = sc_tls_listener_setup(l, url)))
		goto fail;
	if ((rv = nng_listener_start(l, 0))) {
		rc = nng_fail(rv, "listening on", url);
		goto fail;
	}
	s->lst = l;
	atomic_store(&s->quiet_ms, now_ms());
	/* A tcp port 0 becomes the port the kernel chose. */
	if ((strncmp(url, "tcp", 3) == 0 || sc_tls_url(url)) &&
	    nng_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &port) == 0 &&
	    nng_url_parse(&u, url) == 0) {
		const char *host = u->u_hostname && u->u_hostname[0] ? u->u_hostname : "0.0.0.0";
		int v6 = strchr(host, ':') != NULL;
		snprintf(s->url, sizeof(s->url), "%s://%s%s%s:%d", u->u_scheme, v6 ? "[" : "", host,
			 v6 ? "]" : "", port);
		nng_url_free(u);
	}
	*out = s;
	return SC_OK;
fail:
	sc_dp_close(s);
	return rc;
}

static sc_err send_hello(sc_dp_socket *s, double deadline);

sc_err sc_dp_dial(sc_dp_socket **out, const char *url, const sc_dp_opts *o)
{
	sc_dp_socket *s;
	nng_dialer d;
	sc_err rc;
	int rv;

	SC_TRY(sock_open(&s, url, o));
	if ((rv = nng_dialer_create(&d, s->sock, url))) {
		sc_dp_close(s);
		return nng_fail(rv, "dialing", url);
	}
	if ((rc = sc_tls_dialer_setup(d, url))) {
		sc_dp_close(s);
		return rc;
	}
	if ((rv = nng_dialer_start(d, NNG_FLAG_NONBLOCK))) {
		sc_dp_close(s);
		return nng_fail(rv, "dialing", url);
	}
	s->dialer = d;
	atomic_store(&s->quiet_ms, now_ms());
	/* Queued now, the hello leads on the first connection, so that the
	 * listener knows this peer before its first tensor; sends say it again
	 * on every new connection. */
	if (send_hello(s, now_ms() + SLICE_MS))
		sc_debug("dataplane", "%s: the hello waits for the first send", url);

	*out = s;
	return SC_OK;
}

void sc_dp_close(sc_dp_socket *s)
{
	if (!s)
		return;
	if (s->open)
		nng_close(s->sock); /* no callback runs after it returns */
	sc_pipes_fini(&s->pipes);
	free(s->enc);
	free(s);
}

const char *sc_dp_url(const sc_dp_socket *s)
{
	return s->url;
}

uint64_t sc_dp_bytes_sent(const sc_dp_socket *s)
{
	return s->sent;
}

uint64_t sc_dp_bytes_received(const sc_dp_socket *s)
{
	return s->received;
}

static int cancelled(const sc_dp_socket *s)
{
	return s->o.cancel && atomic_load(s->o.cancel);
}

/* Hands m to nng (which then owns it) before the deadline; frees m on
 * failure. tag names the tensor in errors (NULL: a hello). */
static sc_err send_msg(sc_dp_socket *s, nng_msg *m, double deadline, const sc_dp_tag *tag)
{
	int rv;

	for (;;) {
		if (cancelled(s)) {
			nng_msg_free(m);
			return sc_errf(SC_EIO, "data plane: sending to %s cancelled", s->url);
		}
		rv = nng_sendmsg(s->sock, m, 0);
		if (rv == 0)
			return SC_OK;
		if (rv != NNG_ETIMEDOUT || now_ms() >= deadline) {
			nng_msg_free(m);
			if (rv == NNG_ETIMEDOUT && tag)
				return sc_errf(SC_EIO,
					       "data plane: the %s tensor of step %" PRIu64
					       ", micro-batch %u found no taker at %s within "
					       "%d ms: is the neighbouring stage up?",
					       dp_dir_name(tag->direction), tag->step,
					       tag->micro_batch, s->url, s->o.timeout_ms);
			if (rv == NNG_ETIMEDOUT)
				return sc_errf(SC_EIO,
					       "data plane: the hello found no taker at %s within "
					       "%d ms: is the neighbouring stage up?",
					       s->url, s->o.timeout_ms);
			return nng_fail(rv, "sending to", s->url);
		}
	}
}

/* Sends this end's hello (opts.self). */
static sc_err send_hello(sc_dp_socket *s, double deadline)
{
	uint8_t *buf = NULL;
	nng_msg *m = NULL;
	size_t len = 0;

	SC_TRY(sc_dp_encode_hello(&buf, &len, &s->o.self, s->o.has_secret ? s->o.secret : NULL));
	if (nng_msg_alloc(&m, 0) || nng_msg_append(m, buf, len)) {
		free(buf);
		nng_msg_free(m);
		return sc_errf(SC_ENOMEM, "data plane: out of memory for a hello");
	}
	free(buf);
	return send_msg(s, m, deadline, NULL);
}

/* Closes connection p and reports why. */
static void refuse(sc_dp_socket *s, nng_pipe p, const char *why)
{
	char line[1024]; /* the URL and the reason, each bounded */

	snprintf(line, sizeof(line), "data plane %s: refused a connection: %s", s->url, why);
	s->refused_id = (uint32_t)nng_pipe_id(p);
	nng_pipe_close(p);
	sc_warn("dataplane", "%s", line);
	if (s->o.on_refuse)
		s->o.on_refuse(s->o.on_refuse_arg, line);
}

/* Looks at a received message m before it is read as a tensor. The peer's
 * right hello accepts its connection (a listener answers it with its own
 * hello); a listener closes any other connection whose message is no
 * tensor of the accepted one; a dialer drops what came before the
 * listener's answer (left-overs of an earlier connection). Returns 1 when
 * it took m, 0 when m is for the caller (a tensor, or garbage, of the
 * accepted connection). */
static int screen(sc_dp_socket *s, nng_msg *m, double deadline)
{
	nng_pipe p = nng_msg_get_pipe(m);
	char why[400];

	if (sc_dp_check_hello(nng_msg_body(m), nng_msg_len(m), &s->o.peer,
			      s->o.has_secret ? s->o.secret : NULL) == SC_OK) {
		s->accepted = nng_pipe_id(p);
		nng_msg_free(m);
		if (s->listener && send_hello(s, deadline))
			sc_warn("dataplane", "%s: answering a hello: %s", s->url, sc_err_detail());
		return 1;
	}
	if (nng_pipe_id(p) == s->accepted)
		return 0;
	snprintf(why, sizeof(why), "%s", sc_err_detail());
	nng_msg_free(m);
	if (!s->listener)
		sc_debug("dataplane", "%s: dropped a message before the hello: %s", s->url, why);
	else if ((uint32_t)nng_pipe_id(p) != s->refused_id)
		refuse(s, p, why);
	return 1;
}

/* Listener, while a receive waits: a connection that has said no hello for
 * HELLO_WAIT_MS of that waiting holds pair0's only slot for nothing (a
 * stage of an older placement redialing, say): close it. A right peer
 * that was only quiet redials and says hello before its next tensor. */
static void close_silent(sc_dp_socket *s)
{
	unsigned id = attached(s);
	double now = now_ms();

	if (!id || (int)id == s->accepted) {
		s->silent_id = 0;
		return;
	}
	if (id != s->silent_id) {
		s->silent_id = id;
		s->silent_since = now;
		return;
	}
	if (now - s->silent_since < HELLO_WAIT_MS)
		return;
	refuse(s, (nng_pipe){ .id = id }, "a connection stayed silent without a hello");
	s->silent_id = 0;
}

/* A socket that has had no connection for SC_REDIAL_AFTER_MS while it
 * waits for its peer replaces its nng dialer or listener, either of which
 * nng 1.5.2 may have stopped for good: a dialer that met the previous
 * placement's listener as it closed, a listener a stale dialer left in the
 * middle of its handshake (sc_listen_guard.h). Caller's thread only. */
static void keep_dialing(sc_dp_socket *s)
{
	double now = now_ms();
	sc_err err;

	if (attached(s) || now - atomic_load(&s->quiet_ms) < SC_REDIAL_AFTER_MS)
		return;
	atomic_store(&s->quiet_ms, now);
	err = s->listener ? sc_relisten(s->sock, &s->lst, s->url)
			  : sc_redial(s->sock, &s->dialer, s->url);
	if (err)
		sc_warn("dataplane", "%s", sc_err_detail());
}

/* Waits for the next message not taken by screen(). */
static sc_err next_msg(sc_dp_socket *s, double deadline, nng_msg **out, const char *waiting_for)
{
	int rv;

	s->silent_id = 0; /* silence counts while a receive waits */
	for (;;) {
		if (cancelled(s))
			return sc_errf(SC_EIO, "data plane: receiving from %s cancelled", s->url);
		keep_dialing(s);
		/* A dialer that receives first says hello on each new connection
		 * all the same: the listener speaks once it has heard it. */
		if (!s->listener && attached(s) && atomic_exchange(&s->need_hello, 0))
			SC_TRY(send_hello(s, deadline));
		rv = nng_recvmsg(s->sock, out, 0);
		if (rv == NNG_ETIMEDOUT) {
			if (s->listener)
				close_silent(s);
			if (now_ms() < deadline)
				continue;
			return sc_errf(SC_EIO, "data plane: no %s arrived at %s within %d ms%s",
				       waiting_for, s->url, s->o.timeout_ms,
				       s->listener || (int)attached(s) == s->accepted
					   ? ": the neighbouring stage stopped sending"
					   : ": the neighbouring stage did not answer the hello");
		}
		if (rv)
			return nng_fail(rv, "receiving on", s->url);
		if (!screen(s, *out, deadline))
			return SC_OK;
	}
}

/* Before a tensor goes out, the connection nng holds must be the one whose
 * hello was right, so that no tensor is ever handed to a connection about
 * to be refused. A dialer says hello on each new connection and waits for
 * the listener's answer; a listener that speaks first (a data owner's head
 * toward its first middle stage) waits for its peer's hello and answers it
 * (screen). */
static sc_err handshake(sc_dp_socket *s, double deadline)
{
	nng_msg *m;
	int rv;

	while (!attached(s) || (int)attached(s) != s->accepted) {
		if (cancelled(s))
			return sc_errf(SC_EIO, "data plane: sending to %s cancelled", s->url);
		keep_dialing(s);
		if (!s->listener && attached(s) && atomic_exchange(&s->need_hello, 0))
			SC_TRY(send_hello(s, deadline));
		rv = nng_recvmsg(s->sock, &m, 0);
		if (rv == 0) {
			if (!screen(s, m, deadline)) { /* an earlier connection's tensor */
				sc_debug("dataplane", "%s: dropped a tensor before the hello",
					 s->url);
				nng_msg_free(m);
			}
			continue;
		}
		if (rv != NNG_ETIMEDOUT)
			return nng_fail(rv, "receiving on", s->url);
		if (s->listener)
			close_silent(s);
		if (now_ms() >= deadline)
			return sc_errf(SC_EIO,
				       s->listener
					   ? "data plane: no peer said hello at %s within %d "
					     "ms: is the neighbouring stage up and assigned "
					     "to this placement?"
					   : "data plane: %s did not answer the hello within %d "
					     "ms: is the neighbouring stage up and assigned to "
					     "this placement?",
				       s->url, s->o.timeout_ms);
	}
	return SC_OK;
}

sc_err sc_dp_send(sc_dp_socket *s, const sc_dp_tag *tag, int ndim, const int64_t *shape,
		  const float *data)
{
	return sc_dp_send_coded(s, tag, ndim, shape, data, NULL, NULL);
}

sc_err sc_dp_send_coded(sc_dp_socket *s, const sc_dp_tag *tag, int ndim, const int64_t *shape,
			const float *data, float *residual, sc_rng *rng)
{
	uint8_t pre[4 + SC_DP_MAX_HEADER];
	size_t payload = 0, n = 0;
	nng_msg *m = NULL;
	double deadline = now_ms() + s->o.timeout_ms;
	const void *bytes = data;

	SC_TRY(dp_payload_size(ndim, shape, s->o.wire, &payload));
	if (s->o.wire != SC_WIRE_FP32 || residual) { /* encoded into the socket's buffer */
		size_t cols = ndim ? (size_t)shape[ndim - 1] : 1;
		size_t numel = 1;
		for (int i = 0; i < ndim; i++) /* dp_payload_size checked the shape */
			numel *= (size_t)shape[i];
		size_t rows = cols ? numel / cols : 0;
		if (payload > s->enc_cap) {
			void *b = realloc(s->enc, payload);
			if (!b)
				return sc_errf(SC_ENOMEM,
					       "data plane: out of memory for a %zu-byte tensor",
					       payload);
			s->enc = b;
			s->enc_cap = payload;
		}
		sc_wire_encode(s->o.wire, data, rows, cols, residual, rng, s->enc);
		bytes = s->enc;
	}
	SC_TRY(dp_pack_prefix(pre, &n, tag, &s->o.self, ndim, shape, s->o.wire, bytes, payload,
			      s->delay_ms > 0));
	SC_TRY(handshake(s, deadline));
	if (nng_msg_alloc(&m, 0) || nng_msg_reserve(m, n + payload) || nng_msg_append(m, pre, n) ||
	    nng_msg_append(m, bytes, payload)) {
		nng_msg_free(m);
		return sc_errf(SC_ENOMEM, "data plane: out of memory for a %zu-byte message",
			       n + payload);
	}
	SC_TRY(send_msg(s, m, deadline, tag));
	s->sent += n + payload;
	return SC_OK;
}

sc_err sc_dp_recv(sc_dp_socket *s, const sc_dp_tag *want, int ndim, const int64_t *shape,
		  float *data)
{
	double deadline = now_ms() + s->o.timeout_ms;
	char what[160];
	nng_msg *m;
	int stale;
	sc_err rc;

	snprintf(what, sizeof(what),
		 "%s tensor (job %" PRIu64 ", step %" PRIu64 ", micro-batch %u)",
		 dp_dir_name(want->direction), want->job, want->step, want->micro_batch);
	for (;;) {
		SC_TRY(next_msg(s, deadline, &m, what));
		s->received += nng_msg_len(m);
		link_delay(s, nng_msg_body(m), nng_msg_len(m));
		rc = dp_decode_frame(nng_msg_body(m), nng_msg_len(m), want, &s->o.peer, ndim, shape,
				     s->o.wire, data, &stale);
		nng_msg_free(m);
		if (rc == SC_EFORMAT && stale && s->o.drop_stale) {
			sc_warn("dataplane",
				"%s: dropped a tensor left over from an earlier step (%s)", s->url,
				sc_err_detail());
			continue;
		}
		if (rc)
			return sc_err_wrap(rc, "data plane %s", s->url);
		return SC_OK;
	}
}
