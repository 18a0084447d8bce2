/* dp_frame.c — the data plane's message layout: a 4-byte header length, a
 * TensorHeader protobuf (job, step, micro-batch, direction, shape, the
 * sender's placement and stage, crc32) and the raw little-endian floats;
 * the hello that opens a connection; and every check a received frame
 * passes before its payload is used (sc_dataplane.h, dp_frame.h). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zlib.h>

#include "dp_frame.h"
#include "sc_codec.h"
#include "splitchain.pb-c.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the data plane sends host floats as little-endian: port it to this platform first"
#endif

const char *dp_dir_name(int d)
{
	return d == SC_DP_FORWARD ? "forward" : d == SC_DP_BACKWARD ? "backward" : "unknown";
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

/* The header's dtype for each encoding (enum sc_wire). */
static const int wire_dtype[SC_WIRE_COUNT] = {
	[SC_WIRE_FP32] = SPLITCHAIN__DTYPE__DTYPE_F32,
	[SC_WIRE_BF16] = SPLITCHAIN__DTYPE__DTYPE_BF16,
	[SC_WIRE_FP16] = SPLITCHAIN__DTYPE__DTYPE_F16,
	[SC_WIRE_INT8] = SPLITCHAIN__DTYPE__DTYPE_INT8,
	[SC_WIRE_INT4] = SPLITCHAIN__DTYPE__DTYPE_INT4,
};

/* rows = every dimension but the last, cols = the last (1 for a scalar). */
static void rows_cols(size_t ndim, const int64_t *shape, size_t numel, size_t *rows, size_t *cols)
{
	*cols = ndim ? (size_t)shape[ndim - 1] : 1;
	*rows = *cols ? numel / *cols : 0;
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
sc_err dp_pack_prefix(uint8_t *buf, size_t *n, const sc_dp_tag *tag, const sc_dp_peer *from,
		      int ndim, const int64_t *shape, int wire, const void *payload_data,
		      size_t payload, int stamp)
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
	if (wire < 0 || wire >= SC_WIRE_COUNT)
		return sc_errf(SC_EINVAL, "data plane: wire encoding %d", wire);
	h.dtype = wire_dtype[wire];
	h.n_shape = (size_t)ndim;
	h.shape = (int64_t *)shape; /* only read by pack */
	h.crc32 = (uint32_t)crc32_z(0L, (const Bytef *)payload_data, payload);
	h.payload_bytes = payload;
	if (from) {
		h.placement_version = from->version;
		h.stage = from->stage;
	}
	if (stamp) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		h.sent_unix_us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
	}
	hlen = splitchain__tensor_header__get_packed_size(&h);
	if (hlen > SC_DP_MAX_HEADER)
		return sc_errf(SC_EINVAL, "data plane: header of %zu bytes is too long", hlen);
	splitchain__tensor_header__pack(&h, buf + 4);
	put_prefix(buf, hlen);
	*n = 4 + hlen;
	return SC_OK;
}

sc_err dp_payload_size(int ndim, const int64_t *shape, int wire, size_t *bytes)
{
	size_t numel = 0, rows, cols;
	if (ndim < 0 || ndim > SC_DP_MAX_DIMS)
		return sc_errf(SC_EINVAL, "data plane: %d dimensions (at most %d)", ndim,
			       SC_DP_MAX_DIMS);
	if (wire < 0 || wire >= SC_WIRE_COUNT)
		return sc_errf(SC_EINVAL, "data plane: wire encoding %d", wire);
	SC_TRY(shape_numel((size_t)ndim, shape, &numel));
	rows_cols((size_t)ndim, shape, numel, &rows, &cols);
	*bytes = sc_wire_bytes(wire, rows, cols);
	return SC_OK;
}

sc_err sc_dp_encode(uint8_t **out, size_t *len, const sc_dp_tag *tag, const sc_dp_peer *from,
		    int ndim, const int64_t *shape, const float *data)
{
	uint8_t pre[4 + SC_DP_MAX_HEADER];
	size_t payload = 0, n = 0;

	*out = NULL;
	SC_TRY(dp_payload_size(ndim, shape, SC_WIRE_FP32, &payload));
	SC_TRY(dp_pack_prefix(pre, &n, tag, from, ndim, shape, SC_WIRE_FP32, data, payload, 0));
	if (!(*out = malloc(n + payload)))
		return sc_errf(SC_ENOMEM, "data plane: out of memory for a %zu-byte message",
			       n + payload);
	memcpy(*out, pre, n);
	if (payload)
		memcpy(*out + n, data, payload);
	*len = n + payload;
	return SC_OK;
}

sc_err sc_dp_encode_hello(uint8_t **out, size_t *len, const sc_dp_peer *self, const uint8_t *secret)
{
	Splitchain__DataHello h = SPLITCHAIN__DATA_HELLO__INIT;
	size_t hlen;

	h.magic = SC_DP_HELLO;
	h.job = self->job;
	h.placement_version = self->version;
	h.stage = self->stage;
	if (secret) {
		h.secret.data = (uint8_t *)secret;
		h.secret.len = SC_DP_SECRET_LEN;
	}
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

/* 1 when a and b (n bytes each) are equal, in time independent of where they differ. */
static int same_secret(const uint8_t *a, const uint8_t *b, size_t n)
{
	volatile uint8_t diff = 0;

	for (size_t i = 0; i < n; i++)
		diff |= a[i] ^ b[i];
	return diff == 0;
}

sc_err sc_dp_check_hello(const uint8_t *msg, size_t len, const sc_dp_peer *want,
			 const uint8_t *secret)
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
	else if (secret && h->secret.len == 0)
		sc_errf(SC_EFORMAT,
			"hello from job %" PRIu64 " placement %u stage %u without the placement's "
			"secret",
			h->job, h->placement_version, h->stage);
	else if (secret && (h->secret.len != SC_DP_SECRET_LEN ||
			    !same_secret(h->secret.data, secret, SC_DP_SECRET_LEN)))
		sc_errf(SC_EFORMAT,
			"hello from job %" PRIu64 " placement %u stage %u with a wrong secret",
			h->job, h->placement_version, h->stage);
	else
		rc = SC_OK;
	splitchain__data_hello__free_unpacked(h, NULL);
	return rc;
}

/* Checks msg against want / shape (and the sender's stamp against from
 * unless NULL) and copies the payload into data. *stale = 1 when a
 * well-formed header names this job's earlier step. */
uint64_t dp_frame_sent_us(const uint8_t *msg, size_t len)
{
	Splitchain__TensorHeader *h;
	size_t hlen = len >= 4 ? (size_t)msg[0] | (size_t)msg[1] << 8 | (size_t)msg[2] << 16 |
				     (size_t)msg[3] << 24
			       : 0;
	uint64_t t = 0;
	if (!hlen || hlen > SC_DP_MAX_HEADER || hlen > len - 4 ||
	    !(h = splitchain__tensor_header__unpack(NULL, hlen, msg + 4)))
		return 0;
	t = h->sent_unix_us;
	splitchain__tensor_header__free_unpacked(h, NULL);
	return t;
}

sc_err dp_decode_frame(const uint8_t *msg, size_t len, const sc_dp_tag *want,
		       const sc_dp_peer *from, int ndim, const int64_t *shape, int wire,
		       float *data, int *stale)
{
	Splitchain__TensorHeader *h = NULL;
	char s1[160], s2[160];
	size_t hlen, rest, numel = 0, rows, cols;
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
	if (wire < 0 || wire >= SC_WIRE_COUNT || (int)h->dtype != wire_dtype[wire]) {
		sc_errf(SC_EFORMAT, "tensor dtype %d where this hop carries %s (dtype %d)",
			(int)h->dtype, wire >= 0 && wire < SC_WIRE_COUNT ? sc_wire_name(wire) : "?",
			wire >= 0 && wire < SC_WIRE_COUNT ? wire_dtype[wire] : -1);
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
	rows_cols(h->n_shape, h->shape, numel, &rows, &cols);
	shape_str(s2, sizeof(s2), (size_t)ndim, shape);
	if (sc_wire_bytes(wire, rows, cols) != rest) {
		sc_errf(SC_EFORMAT,
			"payload size mismatch: %zu bytes cannot hold %s %s (%zu bytes)", rest,
			sc_wire_name(wire), s2, sc_wire_bytes(wire, rows, cols));
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
			dp_dir_name(h->direction), dp_dir_name(want->direction), want->step,
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
	if (wire == SC_WIRE_FP32) {
		if (rest)
			memcpy(data, msg + 4 + hlen, rest);
		rc = SC_OK;
	} else {
		rc = sc_wire_decode(wire, msg + 4 + hlen, rest, rows, cols, data);
	}
out:
	splitchain__tensor_header__free_unpacked(h, NULL);
	return rc;
}

sc_err sc_dp_decode(const uint8_t *msg, size_t len, const sc_dp_tag *want, const sc_dp_peer *from,
		    int ndim, const int64_t *shape, float *data)
{
	int stale;
	return dp_decode_frame(msg, len, want, from, ndim, shape, SC_WIRE_FP32, data, &stale);
}
