/* dataplane.c — one nng pair socket per hop carrying tensors: the message
 * layout, its checks, and send / receive with timeouts (sc_dataplane.h). */
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

#define SLICE_MS 100 /* socket timeout: how often a waiting call looks at the clock */

struct sc_dp_socket {
	nng_socket sock;
	int open;
	sc_dp_opts o;
	char url[256];
	_Atomic uint64_t sent, received;
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

/* Writes the length prefix and packed header for a tensor of payload bytes
 * into buf (4 + SC_DP_MAX_HEADER bytes); *n = bytes written. */
static sc_err pack_prefix(uint8_t *buf, size_t *n, const sc_dp_tag *tag, int ndim,
			  const int64_t *shape, const float *data, size_t payload)
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
	hlen = splitchain__tensor_header__get_packed_size(&h);
	if (hlen > SC_DP_MAX_HEADER)
		return sc_errf(SC_EINVAL, "data plane: header of %zu bytes is too long", hlen);
	splitchain__tensor_header__pack(&h, buf + 4);
	buf[0] = (uint8_t)hlen;
	buf[1] = (uint8_t)(hlen >> 8);
	buf[2] = (uint8_t)(hlen >> 16);
	buf[3] = (uint8_t)(hlen >> 24);
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

sc_err sc_dp_encode(uint8_t **out, size_t *len, const sc_dp_tag *tag, int ndim,
		    const int64_t *shape, const float *data)
{
	uint8_t pre[4 + SC_DP_MAX_HEADER];
	size_t payload = 0, n = 0;

	*out = NULL;
	SC_TRY(payload_size(ndim, shape, &payload));
	SC_TRY(pack_prefix(pre, &n, tag, ndim, shape, data, payload));
	if (!(*out = malloc(n + payload)))
		return sc_errf(SC_ENOMEM, "data plane: out of memory for a %zu-byte message",
			       n + payload);
	memcpy(*out, pre, n);
	if (payload)
		memcpy(*out + n, data, payload);
	*len = n + payload;
	return SC_OK;
}

/* Checks msg against want / shape and copies the payload into data.
 * *stale = 1 when a well-formed header names this job's earlier step. */
static sc_err decode(const uint8_t *msg, size_t len, const sc_dp_tag *want, int ndim,
		     const int64_t *shape, float *data, int *stale)
{
	Splitchain__TensorHeader *h = NULL;
	char s1[160], s2[160];
	size_t hlen, rest, numel = 0;
	uint32_t crc;
	sc_err rc = SC_EFORMAT;

	*stale = 0;
	if (len < 4)
		return sc_errf(SC_EFORMAT,
			       "message of %zu bytes is shorter than its 4-byte length prefix",
			       len);
	hlen = (size_t)msg[0] | (size_t)msg[1] << 8 | (size_t)msg[2] << 16 | (size_t)msg[3] << 24;
	if (hlen == 0 || hlen > SC_DP_MAX_HEADER || hlen > len - 4)
		return sc_errf(SC_EFORMAT,
			       "bad length prefix: header of %zu bytes in a message of "
			       "%zu (at most %u allowed)",
			       hlen, len, SC_DP_MAX_HEADER);
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

sc_err sc_dp_decode(const uint8_t *msg, size_t len, const sc_dp_tag *want, int ndim,
		    const int64_t *shape, float *data)
{
	int stale;
	return decode(msg, len, want, ndim, shape, data, &stale);
}

/* ---------------------------------------------------------------- sockets */

static sc_err nng_fail(int rv, const char *what, const char *url)
{
	return sc_errf(SC_EIO, "data plane: %s %s: %s", what, url, nng_strerror(rv));
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

sc_err sc_dp_dial(sc_dp_socket **out, const char *url, const sc_dp_opts *o)
{
	sc_dp_socket *s;
	int rv;

	SC_TRY(sock_open(&s, url, o));
	if ((rv = nng_dial(s->sock, url, NULL, NNG_FLAG_NONBLOCK))) {
		sc_dp_close(s);
		return nng_fail(rv, "dialing", url);
	}
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

sc_err sc_dp_send(sc_dp_socket *s, const sc_dp_tag *tag, int ndim, const int64_t *shape,
		  const float *data)
{
	uint8_t pre[4 + SC_DP_MAX_HEADER];
	size_t payload = 0, n = 0;
	nng_msg *m = NULL;
	double deadline;
	int rv;

	SC_TRY(payload_size(ndim, shape, &payload));
	SC_TRY(pack_prefix(pre, &n, tag, ndim, shape, data, payload));
	if (nng_msg_alloc(&m, 0) || nng_msg_reserve(m, n + payload) || nng_msg_append(m, pre, n) ||
	    nng_msg_append(m, data, payload)) {
		nng_msg_free(m);
		return sc_errf(SC_ENOMEM, "data plane: out of memory for a %zu-byte message",
			       n + payload);
	}
	deadline = now_ms() + s->o.timeout_ms;
	for (;;) {
		if (cancelled(s)) {
			nng_msg_free(m);
			return sc_errf(SC_EIO, "data plane: sending to %s cancelled", s->url);
		}
		rv = nng_sendmsg(s->sock, m, 0);
		if (rv == 0)
			break; /* nng owns m now */
		if (rv != NNG_ETIMEDOUT || now_ms() >= deadline) {
			nng_msg_free(m);
			if (rv == NNG_ETIMEDOUT)
				return sc_errf(SC_EIO,
					       "data plane: the %s tensor of step %" PRIu64
					       ", micro-batch %u found no taker at %s within "
					       "%d ms: is the neighbouring stage up?",
					       dir_name(tag->direction), tag->step,
					       tag->micro_batch, s->url, s->o.timeout_ms);
			return nng_fail(rv, "sending to", s->url);
		}
	}
	s->sent += n + payload;
	return SC_OK;
}

sc_err sc_dp_recv(sc_dp_socket *s, const sc_dp_tag *want, int ndim, const int64_t *shape,
		  float *data)
{
	double deadline = now_ms() + s->o.timeout_ms;
	nng_msg *m;
	int rv, stale;
	sc_err rc;

	for (;;) {
		if (cancelled(s))
			return sc_errf(SC_EIO, "data plane: receiving from %s cancelled", s->url);
		rv = nng_recvmsg(s->sock, &m, 0);
		if (rv == NNG_ETIMEDOUT) {
			if (now_ms() < deadline)
				continue;
			return sc_errf(SC_EIO,
				       "data plane: no %s tensor (job %" PRIu64 ", step %" PRIu64
				       ", micro-batch %u) arrived at %s within %d ms: the "
				       "neighbouring stage stopped sending",
				       dir_name(want->direction), want->job, want->step,
				       want->micro_batch, s->url, s->o.timeout_ms);
		}
		if (rv)
			return nng_fail(rv, "receiving on", s->url);
		s->received += nng_msg_len(m);
		rc = decode(nng_msg_body(m), nng_msg_len(m), want, ndim, shape, data, &stale);
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
