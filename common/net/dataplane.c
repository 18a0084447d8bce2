/* dataplane.c — one nng pair socket per hop carrying tensors: the message
 * layout, its checks, the hello that opens each connection, and send /
 * receive with timeouts (sc_dataplane.h).
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

#include "sc_dataplane.h"
#include "sc_log.h"
#include "splitchain.pb-c.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the data plane sends host floats as little-endian: port it to this platform first"
#endif

#define SLICE_MS      100  /* socket timeout: how often a waiting call looks at the clock */
#define HELLO_WAIT_MS 1000 /* a listener closes a connection silent this long without a hello */

struct sc_dp_socket {
	nng_socket sock;
	int open;
	int listener;
	sc_dp_opts o;
	char url[256];
	_Atomic uint64_t sent, received;
	atomic_int need_hello; /* dialer: a new connection has not had its hello yet */
	int accepted;          /* listener: the id of the connection whose hello was right */
	atomic_uint attached;  /* the id of the connection nng holds now, 0 for none */
	uint32_t refused_id;   /* listener: the last connection refused (its queued messages go) */
	uint32_t silent_id;    /* listener: a connection without a hello, watched since */
	double silent_since;
};

void sc_dp_opts_defaults(sc_dp_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->timeout_ms = 120000;
	o->max_msg = (size_t)1 << 30;
	o->queue = 16;
}

static const char *dir_name(int d)
{
	return d == SC_DP_FORWARD ? "forward" : d == SC_DP_BACKWARD ? "backward" : "unknown";
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* "(2,8,16)" into buf. */
static const char *shape_str(char *buf, size_t size, size_t ndim, const int64_t *shape)
{
	size_t n = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < ndim && n + 1 < size; i++)
		n += (size_t)snprintf(buf + n, size - n, "%s%" PRId64, i ? "," : "(", shape[i]);
	if (n + 1 < size)
		snprintf(buf + n, size - n, "%s", ndim ? ")" : "()");
	return buf;
}

/* *numel = product of shape; SC_EFORMAT on a negative dimension or when
 * numel * 4 bytes would overflow. */
static sc_err shape_numel(size_t ndim, const int64_t *shape, size_t *numel)
{
	size_t n = 1;
	for (size_t i = 0; i < ndim; i++) {
		if (shape[i] < 0)
			return sc_errf(SC_EFORMAT, "tensor dimension %zu is negative (%" PRId64 ")",
				       i, shape[i]);
		if (shape[i] > 0 && n > (SIZE_MAX / 4) / (uint64_t)shape[i])
			return sc_errf(SC_EFORMAT, "tensor shape overflows");
		n *= (size_t)shape[i];
	}
	*numel = n;
	return SC_OK;
}

static void put_prefix(uint8_t *buf, size_t hlen)
{
	buf[0] = (uint8_t)hlen;
	buf[1] = (uint8_t)(hlen >> 8);
	buf[2] = (uint8_t)(hlen >> 16);
	buf[3] = (uint8_t)(hlen >> 24);
}

/* Writes the length prefix and packed header for a tensor of payload bytes
 * into buf (4 + SC_DP_MAX_HEADER bytes); *n = bytes written. */
static sc_err pack_prefix(uint8_t *buf, size_t *n, const sc_dp_tag *tag, const sc_dp_peer *from,
			  int ndim, const int64_t *shape, const float *data, size_t payload)
{
	Splitchain__TensorHeader h = SPLITCHAIN__TENSOR_HEADER__INIT;
	size_t hlen;

	if (ndim < 0 || ndim > SC_DP_MAX_DIMS)
		return sc_errf(SC_EINVAL, "data plane: %d dimensions (at most %d)", ndim,
			       SC_DP_MAX_DIMS);
	h.magic = SC_DP_MAGIC;
	h.job = tag->job;
	h.step = tag->step;
	h.micro_batch = tag->micro_batch;
	h.direction = tag->direction == SC_DP_BACKWARD ? SPLITCHAIN__DIRECTION__BACKWARD
						       : SPLITCHAIN__DIRECTION__FORWARD;
	h.dtype = SPLITCHAIN__DTYPE__DTYPE_F32;
	h.n_shape = (size_t)ndim;
	h.shape = (int64_t *)shape; /* only read by pack */
	h.crc32 = (uint32_t)crc32_z(0L, (const Bytef *)data, payload);
	h.payload_bytes = payload;
	if (from) {
		h.placement_version = from->version;
		h.stage = from->stage;
	}
	hlen = splitchain__tensor_header__get_packed_size(&h);
	if (hlen > SC_DP_MAX_HEADER)
		return sc_errf(SC_EINVAL, "data plane: header of %zu bytes is too long", hlen);
	splitchain__tensor_header__pack(&h, buf + 4);
	put_prefix(buf, hlen);
	*n = 4 + hlen;
	return SC_OK;
}

static sc_err payload_size(int ndim, const int64_t *shape, size_t *bytes)
{
	size_t numel = 0;
	if (ndim < 0 || ndim > SC_DP_MAX_DIMS)
		return sc_errf(SC_EINVAL, "data plane: %d dimensions (at most %d)", ndim,
			       SC_DP_MAX_DIMS);
	SC_TRY(shape_numel((size_t)ndim, shape, &numel));
	*bytes = numel * sizeof(float);
	return SC_OK;
}

sc_err sc_dp_encode(uint8_t **out, size_t *len, const sc_dp_tag *tag, const sc_dp_peer *from,
		    int ndim, const int64_t *shape, const float *data)
{
	uint8_t pre[4 + SC_DP_MAX_HEADER];
	size_t payload = 0, n = 0;

	*out = NULL;
	SC_TRY(payload_size(ndim, shape, &payload));
	SC_TRY(pack_prefix(pre, &n, tag, from, ndim, shape, data, payload));
	if (!(*out = malloc(n + payload)))
		return sc_errf(SC_ENOMEM, "data plane: out of memory for a %zu-byte message",
			       n + payload);
	memcpy(*out, pre, n);
	if (payload)
		memcpy(*out + n, data, payload);
	*len = n + payload;
	return SC_OK;
}

sc_err sc_dp_encode_hello(uint8_t **out, size_t *len, const sc_dp_peer *self)
{
	Splitchain__DataHello h = SPLITCHAIN__DATA_HELLO__INIT;
	size_t hlen;

	h.magic = SC_DP_HELLO;
	h.job = self->job;
	h.placement_version = self->version;
	h.stage = self->stage;
	hlen = splitchain__data_hello__get_packed_size(&h);
	if (!(*out = malloc(4 + hlen)))
		return sc_errf(SC_ENOMEM, "data plane: out of memory for a hello");
	splitchain__data_hello__pack(&h, *out + 4);
	put_prefix(*out, hlen);
	*len = 4 + hlen;
	return SC_OK;
}

/* The header length of a framed message, checked against len; 0 when the
 * prefix is bad (the error is set). */
static size_t header_len(const uint8_t *msg, size_t len)
{
	size_t hlen;
	if (len < 4) {
		sc_errf(SC_EFORMAT, "message of %zu bytes is shorter than its 4-byte length prefix",
			len);
		return 0;
	}
	hlen = (size_t)msg[0] | (size_t)msg[1] << 8 | (size_t)msg[2] << 16 | (size_t)msg[3] << 24;
	if (hlen == 0 || hlen > SC_DP_MAX_HEADER || hlen > len - 4) {
		sc_errf(SC_EFORMAT,
			"bad length prefix: header of %zu bytes in a message of "
			"%zu (at most %u allowed)",
			hlen, len, SC_DP_MAX_HEADER);
		return 0;
	}
	return hlen;
}

sc_err sc_dp_check_hello(const uint8_t *msg, size_t len, const sc_dp_peer *want)
{
	Splitchain__DataHello *h;
	size_t hlen = header_len(msg, len);
	sc_err rc = SC_EFORMAT;

	if (!hlen)
		return SC_EFORMAT;
	if (len != 4 + hlen || !(h = splitchain__data_hello__unpack(NULL, hlen, msg + 4)))
		return sc_errf(SC_EFORMAT, "the first message (%zu bytes) is not a hello", len);
	if (h->magic != SC_DP_HELLO)
		sc_errf(SC_EFORMAT, "the first message is not a hello (magic 0x%08x)", h->magic);
	else if (h->job != want->job || h->placement_version != want->version ||
		 h->stage != want->stage)
		sc_errf(SC_EFORMAT,
			"hello from job %" PRIu64 " placement %u stage %u where job %" PRIu64
			" placement %u stage %u is expected",
			h->job, h->placement_version, h->stage, want->job, want->version,
			want->stage);
	else
		rc = SC_OK;
	splitchain__data_hello__free_unpacked(h, NULL);
	return rc;
}

/* Checks msg against want / shape (and the sender's stamp against from
 * unless NULL) and copies the payload into data. *stale = 1 when a
 * well-formed header names this job's earlier step. */
static sc_err decode(const uint8_t *msg, size_t len, const sc_dp_tag *want, const sc_dp_peer *from,
		     int ndim, const int64_t *shape, float *data, int *stale)
{
	Splitchain__TensorHeader *h = NULL;
	char s1[160], s2[160];
	size_t hlen, rest, numel = 0;
	uint32_t crc;
	sc_err rc = SC_EFORMAT;

	*stale = 0;
	if (!(hlen = header_len(msg, len)))
		return SC_EFORMAT;
	h = splitchain__tensor_header__unpack(NULL, hlen, msg + 4);
	if (!h)
		return sc_errf(SC_EFORMAT,
			       "tensor header (%zu bytes) does not parse: truncated or corrupt",
			       hlen);
	rest = len - 4 - hlen;
	if (h->magic != SC_DP_MAGIC) {
		sc_errf(SC_EFORMAT, "bad magic 0x%08x (want 0x%08x): not a splitchain tensor",
			h->magic, SC_DP_MAGIC);
		goto out;
	}
	if (h->dtype != SPLITCHAIN__DTYPE__DTYPE_F32) {
		sc_errf(SC_EFORMAT, "tensor dtype %d: only float32 (%d) is carried", (int)h->dtype,
			SPLITCHAIN__DTYPE__DTYPE_F32);
		goto out;
	}
	*stale = h->job == want->job && h->step < want->step;
	if (h->n_shape != (size_t)ndim || memcmp(h->shape, shape, (size_t)ndim * sizeof(*shape))) {
		sc_errf(SC_EFORMAT, "tensor shape %s differs from the expected %s",
			shape_str(s1, sizeof(s1), h->n_shape, h->shape),
			shape_str(s2, sizeof(s2), (size_t)ndim, shape));
		goto out;
	}
	if (h->payload_bytes != rest) {
		sc_errf(SC_EFORMAT,
			"payload size mismatch: header announces %" PRIu64 " bytes but %zu follow",
			h->payload_bytes, rest);
		goto out;
	}
	if ((rc = shape_numel(h->n_shape, h->shape, &numel)))
		goto out;
	rc = SC_EFORMAT;
	if (numel * sizeof(float) != rest) {
		sc_errf(SC_EFORMAT,
			"payload size mismatch: %zu bytes cannot hold float32 %s (%zu bytes)", rest,
			s2, numel * sizeof(float));
		goto out;
	}
	if (h->job != want->job) {
		sc_errf(SC_EFORMAT, "tensor of job %" PRIu64 " where job %" PRIu64 " was expected",
			h->job, want->job);
		goto out;
	}
	if (from && (h->placement_version != from->version || h->stage != from->stage)) {
		sc_errf(SC_EFORMAT,
			"tensor from placement %u stage %u where placement %u stage %u was "
			"expected",
			h->placement_version, h->stage, from->version, from->stage);
		goto out;
	}
	if (h->step != want->step) {
		sc_errf(SC_EFORMAT,
			"tensor of step %" PRIu64 " where step %" PRIu64 " was expected", h->step,
			want->step);
		goto out;
	}
	if (h->micro_batch != want->micro_batch) {
		sc_errf(SC_EFORMAT,
			"tensor of micro-batch %u where micro-batch %u was expected "
			"(step %" PRIu64 ")",
			h->micro_batch, want->micro_batch, want->step);
		goto out;
	}
	if ((int)h->direction != (int)want->direction) {
		sc_errf(SC_EFORMAT,
			"%s tensor where a %s one was expected (step %" PRIu64 ", micro-batch %u)",
			dir_name(h->direction), dir_name(want->direction), want->step,
			want->micro_batch);
		goto out;
	}
	crc = (uint32_t)crc32_z(0L, msg + 4 + hlen, rest);
	if (crc != h->crc32) {
		sc_errf(SC_EFORMAT,
			"checksum mismatch: payload crc32 0x%08x, header says 0x%08x "
			"(step %" PRIu64 ", micro-batch %u): corrupted in transit",
			crc, h->crc32, want->step, want->micro_batch);
		goto out;
	}
	if (rest)
		memcpy(data, msg + 4 + hlen, rest);
	rc = SC_OK;
out:
	splitchain__tensor_header__free_unpacked(h, NULL);
	return rc;
}

sc_err sc_dp_decode(const uint8_t *msg, size_t len, const sc_dp_tag *want, const sc_dp_peer *from,
		    int ndim, const int64_t *shape, float *data)
{
	int stale;
	return decode(msg, len, want, from, ndim, shape, data, &stale);
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
	unsigned id = (unsigned)nng_pipe_id(p);

	if (ev == NNG_PIPE_EV_ADD_POST) {
		atomic_store(&s->attached, id);
		atomic_store(&s->need_hello, 1);
	} else {
		atomic_compare_exchange_strong(&s->attached, &id, 0u);
	}
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
	if ((rv = nng_pair0_open(&s->sock))) {
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
	if ((rv = nng_listen(s->sock, url, &l, 0))) {
		rc = nng_fail(rv, "listening on", url);
		goto fail;
	}
	/* A tcp port 0 becomes the port the kernel chose. */
	if (strncmp(url, "tcp", 3) == 0 &&
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
	int rv;

	SC_TRY(sock_open(&s, url, o));
	if ((rv = nng_dial(s->sock, url, NULL, NNG_FLAG_NONBLOCK))) {
		sc_dp_close(s);
		return nng_fail(rv, "dialing", url);
	}
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
		nng_close(s->sock);
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
					       dir_name(tag->direction), tag->step,
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

	SC_TRY(sc_dp_encode_hello(&buf, &len, &s->o.self));
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
	char line[600];

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

	if (sc_dp_check_hello(nng_msg_body(m), nng_msg_len(m), &s->o.peer) == SC_OK) {
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
	unsigned id = atomic_load(&s->attached);
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

/* Waits for the next message not taken by screen(). */
static sc_err next_msg(sc_dp_socket *s, double deadline, nng_msg **out, const char *waiting_for)
{
	int rv;

	s->silent_id = 0; /* silence counts while a receive waits */
	for (;;) {
		if (cancelled(s))
			return sc_errf(SC_EIO, "data plane: receiving from %s cancelled", s->url);
		rv = nng_recvmsg(s->sock, out, 0);
		if (rv == NNG_ETIMEDOUT) {
			if (s->listener)
				close_silent(s);
			if (now_ms() < deadline)
				continue;
			return sc_errf(SC_EIO, "data plane: no %s arrived at %s within %d ms%s",
				       waiting_for, s->url, s->o.timeout_ms,
				       s->listener || (int)atomic_load(&s->attached) == s->accepted
					   ? ": the neighbouring stage stopped sending"
					   : ": the neighbouring stage did not answer the hello");
		}
		if (rv)
			return nng_fail(rv, "receiving on", s->url);
		if (!screen(s, *out, deadline))
			return SC_OK;
	}
}

/* Dialer: before a tensor goes out, the connection nng holds must have
 * been answered by the right listener, so that no tensor is ever handed
 * to a connection the listener is about to refuse. Says hello on each new
 * connection and waits for the answer. */
static sc_err handshake(sc_dp_socket *s, double deadline)
{
	nng_msg *m;
	int rv;

	while (!atomic_load(&s->attached) || (int)atomic_load(&s->attached) != s->accepted) {
		if (cancelled(s))
			return sc_errf(SC_EIO, "data plane: sending to %s cancelled", s->url);
		if (atomic_load(&s->attached) && atomic_exchange(&s->need_hello, 0))
			SC_TRY(send_hello(s, deadline));
		rv = nng_recvmsg(s->sock, &m, 0);
		if (rv == 0) {
			if (!screen(s, m, deadline)) { /* a tensor of an accepted connection */
				sc_debug("dataplane", "%s: dropped a tensor before the hello",
					 s->url);
				nng_msg_free(m);
			}
			continue;
		}
		if (rv != NNG_ETIMEDOUT)
			return nng_fail(rv, "receiving on", s->url);
		if (now_ms() >= deadline)
			return sc_errf(SC_EIO,
				       "data plane: %s did not answer the hello within %d ms: is "
				       "the neighbouring stage up and assigned to this placement?",
				       s->url, s->o.timeout_ms);
	}
	return SC_OK;
}

sc_err sc_dp_send(sc_dp_socket *s, const sc_dp_tag *tag, int ndim, const int64_t *shape,
		  const float *data)
{
	uint8_t pre[4 + SC_DP_MAX_HEADER];
	size_t payload = 0, n = 0;
	nng_msg *m = NULL;
	double deadline = now_ms() + s->o.timeout_ms;

	SC_TRY(payload_size(ndim, shape, &payload));
	SC_TRY(pack_prefix(pre, &n, tag, &s->o.self, ndim, shape, data, payload));
	if (!s->listener)
		SC_TRY(handshake(s, deadline));
	if (nng_msg_alloc(&m, 0) || nng_msg_reserve(m, n + payload) || nng_msg_append(m, pre, n) ||
	    nng_msg_append(m, data, payload)) {
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
		 dir_name(want->direction), want->job, want->step, want->micro_batch);
	for (;;) {
		SC_TRY(next_msg(s, deadline, &m, what));
		s->received += nng_msg_len(m);
		rc = decode(nng_msg_body(m), nng_msg_len(m), want, &s->o.peer, ndim, shape, data,
			    &stale);
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
