/* sc_dataplane.h — tensors between adjacent stages of a chain.
 *
 * One nng message per tensor:
 *   4 bytes   little-endian length h of the header
 *   h bytes   a packed TensorHeader (proto/splitchain.proto): magic
 *             0x53504454, job, step, micro-batch, direction, dtype, shape,
 *             zlib crc32 of the payload, payload_bytes, and the sender's
 *             placement version and stage
 *   payload   payload_bytes: the tensor in the hop's wire encoding (dtype:
 *             float32, bf16, fp16, or int8 / int4 with per-row scales,
 *             sc_codec.h)
 * The payload is copied once into the nng message, which nng then sends
 * without copying again.
 *
 * Every connection opens with a hello: the dialing (upstream) end sends a
 * DataHello (job, placement version, its stage) as the first message on
 * each new connection, framed the same way with no payload. A listener
 * accepts a connection only when its hello names exactly the peer it was
 * opened for (opts.peer); any other connection — a stage of an older
 * placement still redialing, a stray client, a first message that is no
 * hello — is closed before a tensor of it is read, reported through
 * opts.on_refuse and logged. nng's pair0 keeps one connection at a time,
 * so a refused one frees the slot for the right peer. Tensors are stamped
 * with the sender's placement and stage (opts.self) and checked against
 * opts.peer on receipt, on both ends.
 *
 * Sockets are nng pair0, one per hop: the downstream stage listens on its
 * data address, the upstream stage dials it; activations go down
 * (SC_DP_FORWARD) and gradients come back up (SC_DP_BACKWARD) on the same
 * socket. A receive checks everything before a byte reaches the caller —
 * length prefix, header, magic, dtype, shape against what the caller
 * expects, payload size, job / step / micro-batch / direction against the
 * schedule, checksum — and fails with SC_EFORMAT naming what was wrong;
 * bad input never crashes. Every socket has a maximum message size, and a
 * send or receive that waits longer than its timeout fails with SC_EIO
 * naming the peer's address. Float data is assumed little-endian (the host
 * order of every supported platform).
 */
#ifndef SC_DATAPLANE_H
#define SC_DATAPLANE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "sc_err.h"
#include "sc_rng.h"

#define SC_DP_MAGIC      0x53504454u /* "SPDT" */
#define SC_DP_HELLO      0x53504448u /* "SPDH" */
#define SC_DP_MAX_DIMS   8
#define SC_DP_MAX_HEADER 1024u /* a longer header is refused */
#define SC_DP_SECRET_LEN 32    /* bytes of a placement's data-plane secret */

enum sc_dp_direction { SC_DP_FORWARD = 0, SC_DP_BACKWARD = 1 };

/* One end of a hop: the job, the placement version and the stage. */
typedef struct sc_dp_peer {
	uint64_t job;
	uint32_t version;
	uint32_t stage;
} sc_dp_peer;

/* Which tensor of which step a message carries. */
typedef struct sc_dp_tag {
	uint64_t job;
	uint64_t step;
	uint32_t micro_batch;
	enum sc_dp_direction direction;
} sc_dp_tag;

typedef struct sc_dp_opts {
	int timeout_ms; /* longest wait of one send or receive (default 120000) */
	size_t max_msg; /* largest message a receive accepts (default 1 GiB) */
	int queue;      /* messages buffered each way in the socket (default 16) */
	/* Nonzero: a well-formed message of the same job but an earlier step
	 * (left over from a failed step) is dropped with a log line instead
	 * of failing the receive. Default 0. */
	int drop_stale;
	/* Borrowed, may be NULL: once *cancel is nonzero, a send or receive
	 * that is waiting gives up with SC_EIO within about 100 ms. */
	const atomic_int *cancel;
	sc_dp_peer self; /* this end: a dialer's hello, the stamp on sent tensors */
	sc_dp_peer peer; /* the other end: the hello a listener accepts, the stamp
			    received tensors must carry. Defaults: all zero. */
	/* May be NULL: called on the receiving thread with a one-line reason
	 * each time a connection is refused (arg is on_refuse_arg). */
	void (*on_refuse)(void *arg, const char *why);
	void *on_refuse_arg;
	/* The placement's secret (has_secret nonzero): sent in this end's
	 * hello and required, compared in constant time, in the peer's;
	 * a hello without it or with another is refused like a stale one.
	 * has_secret 0: none sent, none required. Never logged. */
	uint8_t secret[SC_DP_SECRET_LEN];
	int has_secret;
	/* How tensors cross this hop, both ways (enum sc_wire, sc_codec.h):
	 * sends encode, receives expect exactly this encoding and decode it.
	 * Default 0: float32. */
	int wire;
} sc_dp_opts;

/* Fills o with the defaults above. */
void sc_dp_opts_defaults(sc_dp_opts *o);

typedef struct sc_dp_socket sc_dp_socket;

/* Opens a pair socket listening on url ("tcp://host:0" picks a free port).
 * o is copied (NULL: defaults). *out = new socket; close with sc_dp_close. */
sc_err sc_dp_listen(sc_dp_socket **out, const char *url, const sc_dp_opts *o);

/* Opens a pair socket dialing url in the background: the peer may come up
 * later, and a lost connection is redialed. o as for sc_dp_listen. */
sc_err sc_dp_dial(sc_dp_socket **out, const char *url, const sc_dp_opts *o);

/* Closes the socket (queued messages are discarded). Accepts NULL. */
void sc_dp_close(sc_dp_socket *s);

/* The address: for a listener the one actually bound (a tcp port 0
 * replaced by the port chosen), for a dialer the peer's. Borrowed. */
const char *sc_dp_url(const sc_dp_socket *s);

/* Sends tensor (shape[0..ndim), float32, data borrowed for the call) with
 * tag. Returns once nng has queued the message, so the caller's next
 * computation overlaps the transfer. Thread-safe. */
sc_err sc_dp_send(sc_dp_socket *s, const sc_dp_tag *tag, int ndim, const int64_t *shape,
		  const float *data);

/* sc_dp_send in the socket's wire encoding with its options: residual
 * (numel floats, may be NULL) the sender's error feedback, rng (may be
 * NULL) the stochastic rounding stream (sc_wire_encode). */
sc_err sc_dp_send_coded(sc_dp_socket *s, const sc_dp_tag *tag, int ndim, const int64_t *shape,
			const float *data, float *residual, sc_rng *rng);

/* Waits for the next tensor and checks it is exactly want (tag) of shape
 * shape[0..ndim); on success its values are in data (numel floats). On
 * SC_EFORMAT data may hold garbage; the message has been consumed. One
 * receiver at a time. */
sc_err sc_dp_recv(sc_dp_socket *s, const sc_dp_tag *want, int ndim, const int64_t *shape,
		  float *data);

/* Bytes (whole tensor messages; hellos are not counted) sent / received
 * since the socket opened. */
uint64_t sc_dp_bytes_sent(const sc_dp_socket *s);
uint64_t sc_dp_bytes_received(const sc_dp_socket *s);

/* ---- the wire format alone, for tests and tools ---- */

/* Encodes a message as sc_dp_send would send it, stamped with from's
 * placement version and stage (NULL: zeros). *out = new buffer of *len
 * bytes (free with free()). */
sc_err sc_dp_encode(uint8_t **out, size_t *len, const sc_dp_tag *tag, const sc_dp_peer *from,
		    int ndim, const int64_t *shape, const float *data);

/* Checks msg (len bytes, borrowed) as sc_dp_recv does — the sender's stamp
 * against from unless from is NULL — and copies its payload into data. */
sc_err sc_dp_decode(const uint8_t *msg, size_t len, const sc_dp_tag *want, const sc_dp_peer *from,
		    int ndim, const int64_t *shape, float *data);

/* Encodes the hello a dialer of self sends, with secret (SC_DP_SECRET_LEN
 * bytes, borrowed; NULL: none). *out as for sc_dp_encode. */
sc_err sc_dp_encode_hello(uint8_t **out, size_t *len, const sc_dp_peer *self,
			  const uint8_t *secret);

/* Checks that msg is a hello from exactly want carrying secret
 * (SC_DP_SECRET_LEN bytes, compared in constant time; NULL: any or none):
 * SC_OK, or SC_EFORMAT with what was wrong in sc_err_detail() (which never
 * shows a secret). */
sc_err sc_dp_check_hello(const uint8_t *msg, size_t len, const sc_dp_peer *want,
			 const uint8_t *secret);

#endif
