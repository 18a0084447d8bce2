/* dataplane_test.c — tensors over pair sockets: round trips, every kind of
 * corrupt or unexpected message refused with a named error, timeouts. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/pair0/pair.h>
#include <zlib.h>

#include "sc_dataplane.h"
#include "sc_rng.h"
#include "splitchain.pb-c.h"
#include "testutil.h"

enum { D0 = 2, D1 = 3, D2 = 4, NUMEL = D0 * D1 * D2 };
static const int64_t shape[3] = { D0, D1, D2 };
static const sc_dp_tag tag = { .job = 7, .step = 5, .micro_batch = 3, .direction = SC_DP_FORWARD };

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void fill(float *x, uint64_t seed)
{
	sc_test_fill_normal(x, NUMEL, seed, 1.0f);
}

static char *inproc_url(char *buf, size_t size)
{
	static int n;
	snprintf(buf, size, "inproc://dp-%ld-%d", (long)getpid(), n++);
	return buf;
}

/* A listener, and a raw nng pair socket dialed to it that sends anything. */
typedef struct pair {
	sc_dp_socket *dp;
	nng_socket raw;
} pair;

/* Sends the hello of `from` on the raw socket. */
static void raw_hello(nng_socket raw, const sc_dp_peer *from)
{
	uint8_t *msg;
	size_t len;
	SC_ASSERT_OK(sc_dp_encode_hello(&msg, &len, from, NULL));
	assert_int_equal(nng_send(raw, msg, len, 0), 0);
	free(msg);
}

static nng_socket raw_dial(const char *url)
{
	nng_socket raw;
	assert_int_equal(nng_pair0_open(&raw), 0);
	assert_int_equal(nng_socket_set_ms(raw, NNG_OPT_SENDTIMEO, 2000), 0);
	assert_int_equal(nng_dial(raw, url, NULL, 0), 0);
	return raw;
}

/* The raw dialer opens with the hello the listener expects (o's peer). */
static void pair_open(pair *p, const sc_dp_opts *o)
{
	char url[64];
	sc_dp_peer none = { 0, 0, 0 };
	SC_ASSERT_OK(sc_dp_listen(&p->dp, inproc_url(url, sizeof(url)), o));
	p->raw = raw_dial(sc_dp_url(p->dp));
	raw_hello(p->raw, o ? &o->peer : &none);
}

static void pair_close(pair *p)
{
	nng_close(p->raw);
	sc_dp_close(p->dp);
}

static void raw_send(pair *p, const void *buf, size_t len)
{
	assert_int_equal(nng_send(p->raw, (void *)buf, len, 0), 0);
}

/* ------------------------------------------------------------- messages */

/* A message built field by field, so that any one can be wrong. */
typedef struct spec {
	uint32_t magic;
	sc_dp_tag tag;
	int dtype;
	int ndim;
	int64_t shape[4];
	int64_t payload_delta; /* payload_bytes = real payload + delta */
	int crc_delta;         /* crc32 = real crc + delta */
	size_t extra;          /* zero bytes appended to the payload */
} spec;

static spec good_spec(void)
{
	spec s = {
		.magic = SC_DP_MAGIC, .tag = tag, .dtype = 0, .ndim = 3, .shape = { D0, D1, D2 }
	};
	return s;
}

static uint8_t *build(const spec *s, const float *data, size_t *len)
{
	Splitchain__TensorHeader h = SPLITCHAIN__TENSOR_HEADER__INIT;
	size_t payload = NUMEL * sizeof(float) + s->extra, hlen;
	uint8_t *buf, *body = calloc(1, payload);

	assert_non_null(body);
	memcpy(body, data, NUMEL * sizeof(float));
	h.magic = s->magic;
	h.job = s->tag.job;
	h.step = s->tag.step;
	h.micro_batch = s->tag.micro_batch;
	h.direction = (Splitchain__Direction)s->tag.direction;
	h.dtype = (Splitchain__Dtype)s->dtype;
	h.n_shape = (size_t)s->ndim;
	h.shape = (int64_t *)s->shape;
	h.crc32 = (uint32_t)crc32_z(0L, body, payload) + (uint32_t)s->crc_delta;
	h.payload_bytes = (uint64_t)((int64_t)payload + s->payload_delta);
	hlen = splitchain__tensor_header__get_packed_size(&h);
	buf = malloc(4 + hlen + payload);
	assert_non_null(buf);
	splitchain__tensor_header__pack(&h, buf + 4);
	memcpy(buf + 4 + hlen, body, payload);
	buf[0] = (uint8_t)hlen;
	buf[1] = (uint8_t)(hlen >> 8);
	buf[2] = buf[3] = 0;
	free(body);
	*len = 4 + hlen + payload;
	return buf;
}

static void encode_decode_round_trip(void **state)
{
	float x[NUMEL], y[NUMEL];
	uint8_t *msg, *mine;
	size_t len, mylen;
	spec s = good_spec();

	fill(x, 1);
	SC_ASSERT_OK(sc_dp_encode(&msg, &len, &tag, NULL, 3, shape, x));
	SC_ASSERT_OK(sc_dp_decode(msg, len, &tag, NULL, 3, shape, y));
	assert_memory_equal(x, y, sizeof(x));
	/* The test's own builder agrees with the library byte for byte. */
	mine = build(&s, x, &mylen);
	assert_int_equal(mylen, len);
	assert_memory_equal(mine, msg, len);
	free(mine);
	/* Every truncation is refused. */
	for (size_t n = 0; n < len; n++)
		SC_ASSERT_ERR(sc_dp_decode(msg, n, &tag, NULL, 3, shape, y), SC_EFORMAT);
	/* So is every single flipped bit. */
	for (size_t i = 0; i < len * 8; i++) {
		msg[i / 8] ^= (uint8_t)(1u << (i % 8));
		if (sc_dp_decode(msg, len, &tag, NULL, 3, shape, y) != SC_EFORMAT)
			fail_msg("flipping bit %zu of byte %zu went unnoticed", i % 8, i / 8);
		msg[i / 8] ^= (uint8_t)(1u << (i % 8));
	}
	free(msg);
}

static void random_bytes_refused(void **state)
{
	uint8_t buf[512];
	float y[NUMEL];
	sc_rng r;
	uint64_t seed = 11;

	sc_rng_seed(&r, &seed, 1);
	for (int it = 0; it < 20000; it++) {
		size_t len = sc_rng_u64(&r) % sizeof(buf);
		for (size_t i = 0; i < len; i++)
			buf[i] = (uint8_t)sc_rng_u64(&r);
		if (it % 2) { /* a plausible length prefix, so the header parser runs */
			size_t h = len > 4 ? sc_rng_u64(&r) % (len - 4 + 1) : 0;
			buf[0] = (uint8_t)h, buf[1] = (uint8_t)(h >> 8), buf[2] = buf[3] = 0;
		}
		SC_ASSERT_ERR(sc_dp_decode(buf, len, &tag, NULL, 3, shape, y), SC_EFORMAT);
	}
}

/* -------------------------------------------------------------- sockets */

/* The listener's side of round_trip_both_ways: four forward tensors. */
typedef struct receiver {
	sc_dp_socket *down;
	float x[NUMEL];
	sc_err rc[4];
	int same[4];
} receiver;

static void *receive_four(void *arg)
{
	receiver *r = arg;
	float y[NUMEL];
	for (uint32_t m = 0; m < 4; m++) {
		sc_dp_tag t = tag;
		t.micro_batch = m;
		r->rc[m] = sc_dp_recv(r->down, &t, 3, shape, y);
		r->x[0] = (float)m;
		r->same[m] = memcmp(r->x, y, sizeof(y)) == 0;
	}
	return NULL;
}

static void round_trip_both_ways(const char *url)
{
	sc_dp_socket *down, *up;
	sc_dp_tag back = tag;
	float x[NUMEL], y[NUMEL];
	receiver r;
	pthread_t th;
	uint8_t *msg;
	size_t len, want_up = 0;

	SC_ASSERT_OK(sc_dp_listen(&down, url, NULL));
	SC_ASSERT_OK(sc_dp_dial(&up, sc_dp_url(down), NULL));
	fill(x, 2);
	memcpy(r.x, x, sizeof(x));
	r.down = down;
	/* The first send waits for the listener's answer to its hello, which a
	 * receive gives: receive on a thread, as the next stage does. */
	assert_int_equal(pthread_create(&th, NULL, receive_four, &r), 0);
	for (uint32_t m = 0; m < 4; m++) {
		sc_dp_tag t = tag;
		t.micro_batch = m;
		x[0] = (float)m;
		SC_ASSERT_OK(sc_dp_send(up, &t, 3, shape, x));
		SC_ASSERT_OK(sc_dp_encode(&msg, &len, &t, NULL, 3, shape, x));
		want_up += len;
		free(msg);
	}
	pthread_join(th, NULL);
	for (uint32_t m = 0; m < 4; m++) {
		SC_ASSERT_OK(r.rc[m]);
		assert_true(r.same[m]);
	}
	back.direction = SC_DP_BACKWARD;
	fill(x, 3);
	SC_ASSERT_OK(sc_dp_send(down, &back, 3, shape, x));
	SC_ASSERT_OK(sc_dp_recv(up, &back, 3, shape, y));
	assert_memory_equal(x, y, sizeof(x));
	SC_ASSERT_OK(sc_dp_encode(&msg, &len, &back, NULL, 3, shape, x));
	assert_int_equal(sc_dp_bytes_sent(up), want_up);
	assert_int_equal(sc_dp_bytes_received(down), want_up);
	assert_int_equal(sc_dp_bytes_sent(down), len);
	assert_int_equal(sc_dp_bytes_received(up), len);
	free(msg);
	sc_dp_close(up);
	sc_dp_close(down);
}

static void round_trip_inproc(void **state)
{
	char url[64];
	round_trip_both_ways(inproc_url(url, sizeof(url)));
}

static void round_trip_tcp_port_zero(void **state)
{
	sc_dp_socket *l;
	SC_ASSERT_OK(sc_dp_listen(&l, "tcp://127.0.0.1:0", NULL));
	assert_null(strstr(sc_dp_url(l), ":0"));
	assert_non_null(strstr(sc_dp_url(l), "tcp://127.0.0.1:"));
	sc_dp_close(l);
	round_trip_both_ways("tcp://127.0.0.1:0");
}

typedef void (*mutate_fn)(spec *s);
static void m_magic(spec *s)
{
	s->magic = 0x12345678;
}
static void m_dtype(spec *s)
{
	s->dtype = 3;
}
static void m_shape(spec *s)
{
	s->shape[0] = D1, s->shape[1] = D0;
}
static void m_ndim(spec *s)
{
	s->ndim = 2, s->shape[1] = D1 * D2;
}
static void m_payload(spec *s)
{
	s->payload_delta = 4;
}
static void m_extra(spec *s)
{
	s->extra = 8, s->payload_delta = 0;
}
static void m_job(spec *s)
{
	s->tag.job = 8;
}
static void m_step(spec *s)
{
	s->tag.step = 6;
}
static void m_micro(spec *s)
{
	s->tag.micro_batch = 2;
}
static void m_dir(spec *s)
{
	s->tag.direction = SC_DP_BACKWARD;
}
static void m_crc(spec *s)
{
	s->crc_delta = 1;
}

static const struct {
	const char *name;
	mutate_fn fn;
	const char *want; /* in the error's detail */
} corrupt_cases[] = {
	{ "wrong magic", m_magic, "magic" },
	{ "wrong dtype", m_dtype, "dtype" },
	{ "wrong shape", m_shape, "shape (3,2,4) differs from the expected (2,3,4)" },
	{ "wrong rank", m_ndim, "shape (2,12) differs" },
	{ "payload size field", m_payload, "payload size mismatch" },
	{ "payload too long", m_extra, "payload size mismatch" },
	{ "wrong job", m_job, "job 8 where job 7" },
	{ "wrong step", m_step, "step 6 where step 5" },
	{ "wrong micro-batch", m_micro, "micro-batch 2 where micro-batch 3" },
	{ "wrong direction", m_dir, "backward tensor where a forward one" },
	{ "crc mismatch", m_crc, "checksum mismatch" },
};

static void expect_refused(pair *p, const char *name, const char *want)
{
	float y[NUMEL];
	sc_err rc;
	sc_errf(SC_OK, "%s", "");
	rc = sc_dp_recv(p->dp, &tag, 3, shape, y);
	if (rc != SC_EFORMAT)
		fail_msg("%s: got %s (%s), want EFORMAT", name, sc_err_name(rc), sc_err_detail());
	if (!strstr(sc_err_detail(), want))
		fail_msg("%s: detail '%s' does not say '%s'", name, sc_err_detail(), want);
}

static void expect_good(pair *p)
{
	float x[NUMEL], y[NUMEL];
	uint8_t *msg;
	size_t len;
	fill(x, 4);
	SC_ASSERT_OK(sc_dp_encode(&msg, &len, &tag, NULL, 3, shape, x));
	raw_send(p, msg, len);
	free(msg);
	SC_ASSERT_OK(sc_dp_recv(p->dp, &tag, 3, shape, y));
	assert_memory_equal(x, y, sizeof(x));
}

static void corrupt_messages_refused(void **state)
{
	float x[NUMEL];
	uint8_t *msg, garbage[64];
	size_t len;
	pair p;

	pair_open(&p, NULL);
	fill(x, 5);
	for (size_t i = 0; i < sizeof(corrupt_cases) / sizeof(corrupt_cases[0]); i++) {
		spec s = good_spec();
		corrupt_cases[i].fn(&s);
		msg = build(&s, x, &len);
		raw_send(&p, msg, len);
		free(msg);
		expect_refused(&p, corrupt_cases[i].name, corrupt_cases[i].want);
		expect_good(&p); /* the socket goes on working */
	}
	/* Framing: a bad length prefix, a message cut inside its header or
	 * shorter than its prefix, a header that does not parse. */
	SC_ASSERT_OK(sc_dp_encode(&msg, &len, &tag, NULL, 3, shape, x));
	msg[3] = 0x7f;
	raw_send(&p, msg, len);
	expect_refused(&p, "huge length prefix", "bad length prefix");
	msg[3] = 0;
	raw_send(&p, msg, 4 + msg[0] / 2);
	expect_refused(&p, "cut inside the header", "bad length prefix");
	raw_send(&p, msg, 3);
	expect_refused(&p, "shorter than its prefix", "shorter than its 4-byte length prefix");
	memset(msg + 4, 0xff, msg[0]);
	raw_send(&p, msg, len);
	expect_refused(&p, "header garbage", "does not parse");
	free(msg);
	memset(garbage, 0, sizeof(garbage));
	raw_send(&p, garbage, sizeof(garbage));
	expect_refused(&p, "zero prefix", "bad length prefix");
	for (size_t i = 0; i < sizeof(garbage); i++)
		garbage[i] = (uint8_t)(i * 37 + 11);
	garbage[0] = 20, garbage[1] = garbage[2] = garbage[3] = 0;
	raw_send(&p, garbage, sizeof(garbage));
	expect_refused(&p, "random bytes", "");
	expect_good(&p);
	pair_close(&p);
}

static void stale_tensors_dropped_when_asked(void **state)
{
	sc_dp_opts o;
	float x[NUMEL], y[NUMEL];
	sc_dp_tag old = tag, next = tag;
	pair p;
	uint8_t *msg;
	size_t len;

	sc_dp_opts_defaults(&o);
	o.drop_stale = 1;
	pair_open(&p, &o);
	fill(x, 6);
	old.step = tag.step - 1;
	SC_ASSERT_OK(sc_dp_encode(&msg, &len, &old, NULL, 3, shape, x));
	raw_send(&p, msg, len);
	raw_send(&p, msg, len);
	free(msg);
	expect_good(&p); /* the two left-overs go, the right one arrives */
	/* A later step is never stale: it is an error. */
	next.step = tag.step + 1;
	SC_ASSERT_OK(sc_dp_encode(&msg, &len, &next, NULL, 3, shape, x));
	raw_send(&p, msg, len);
	free(msg);
	expect_refused(&p, "later step", "step 6 where step 5");
	pair_close(&p);
	/* Without drop_stale an earlier step is refused. */
	pair_open(&p, NULL);
	SC_ASSERT_OK(sc_dp_encode(&msg, &len, &old, NULL, 3, shape, x));
	raw_send(&p, msg, len);
	free(msg);
	expect_refused(&p, "earlier step", "step 4 where step 5");
	(void)y;
	pair_close(&p);
}

static void receive_times_out(void **state)
{
	sc_dp_opts o;
	float y[NUMEL];
	pair p;
	double t0;

	sc_dp_opts_defaults(&o);
	o.timeout_ms = 300;
	pair_open(&p, &o);
	t0 = now_s();
	SC_ASSERT_ERR(sc_dp_recv(p.dp, &tag, 3, shape, y), SC_EIO);
	assert_true(now_s() - t0 >= 0.29 && now_s() - t0 < 3);
	assert_non_null(strstr(sc_err_detail(), "within 300 ms"));
	assert_non_null(strstr(sc_err_detail(), "stopped sending"));
	pair_close(&p);
}

static void send_without_peer_times_out(void **state)
{
	sc_dp_opts o;
	sc_dp_socket *s;
	float x[NUMEL];
	int sent = 0;
	sc_err rc = SC_OK;

	sc_dp_opts_defaults(&o);
	o.timeout_ms = 200;
	o.queue = 2;
	fill(x, 7);
	SC_ASSERT_OK(sc_dp_dial(&s, "tcp://127.0.0.1:1", &o)); /* nobody there */
	for (int i = 0; i < 10 && rc == SC_OK; i++, sent++)
		rc = sc_dp_send(s, &tag, 3, shape, x);
	assert_int_equal(rc, SC_EIO);
	assert_non_null(strstr(sc_err_detail(), "did not answer the hello within 200 ms"));
	sc_dp_close(s);
}

static void cancel_stops_a_wait(void **state)
{
	atomic_int cancel = 1;
	sc_dp_opts o;
	float y[NUMEL];
	pair p;
	double t0;

	sc_dp_opts_defaults(&o);
	o.cancel = &cancel;
	pair_open(&p, &o);
	t0 = now_s();
	SC_ASSERT_ERR(sc_dp_recv(p.dp, &tag, 3, shape, y), SC_EIO);
	assert_true(now_s() - t0 < 1);
	assert_non_null(strstr(sc_err_detail(), "cancelled"));
	pair_close(&p);
}

static void oversized_message_never_delivered(void **state)
{
	sc_dp_opts o;
	float x[NUMEL], y[NUMEL];
	uint8_t *msg;
	size_t len;
	pair p;

	sc_dp_opts_defaults(&o);
	o.max_msg = 64; /* smaller than one tensor */
	o.timeout_ms = 500;
	fill(x, 8);
	/* tcp: inproc does not enforce the receive limit */
	SC_ASSERT_OK(sc_dp_listen(&p.dp, "tcp://127.0.0.1:0", &o));
	p.raw = raw_dial(sc_dp_url(p.dp));
	raw_hello(p.raw, &o.peer);
	SC_ASSERT_OK(sc_dp_encode(&msg, &len, &tag, NULL, 3, shape, x));
	raw_send(&p, msg, len);
	free(msg);
	SC_ASSERT_ERR(sc_dp_recv(p.dp, &tag, 3, shape, y), SC_EIO);
	pair_close(&p);
}

/* ------------------------------------------------------- hello and peers */

/* One send on a thread: a dialer's send waits for the listener's answer to
 * its hello, which the listener gives while it receives. */
typedef struct sender {
	sc_dp_socket *s;
	sc_dp_tag tag;
	const float *x;
	sc_err rc;
	pthread_t th;
} sender;

static void *send_one(void *arg)
{
	sender *sd = arg;
	sd->rc = sc_dp_send(sd->s, &sd->tag, 3, shape, sd->x);
	return NULL;
}

static void send_async(sender *sd, sc_dp_socket *s, const sc_dp_tag *t, const float *x)
{
	*sd = (sender){ .s = s, .tag = *t, .x = x };
	assert_int_equal(pthread_create(&sd->th, NULL, send_one, sd), 0);
}

static void send_joined(sender *sd)
{
	pthread_join(sd->th, NULL);
	SC_ASSERT_OK(sd->rc);
}

/* Refusals reported by a listener. */
typedef struct refusals {
	int n;
	char first[600], last[600];
} refusals;

static void count_refusal(void *arg, const char *why)
{
	refusals *r = arg;
	if (!r->n++)
		snprintf(r->first, sizeof(r->first), "%s", why);
	snprintf(r->last, sizeof(r->last), "%s", why);
}

/* Listener options for the stage after `up` of job 7, placement 2. */
static sc_dp_opts listener_opts(refusals *r, int timeout_ms)
{
	sc_dp_opts o;
	sc_dp_opts_defaults(&o);
	o.timeout_ms = timeout_ms;
	o.self = (sc_dp_peer){ 7, 2, 1 };
	o.peer = (sc_dp_peer){ 7, 2, 0 };
	o.on_refuse = count_refusal;
	o.on_refuse_arg = r;
	return o;
}

static sc_dp_opts dialer_opts(uint32_t version, uint32_t stage)
{
	sc_dp_opts o;
	sc_dp_opts_defaults(&o);
	o.timeout_ms = 5000;
	o.self = (sc_dp_peer){ 7, version, stage };
	o.peer = (sc_dp_peer){ 7, version, stage + 1 };
	return o;
}

static void hello_round_trip_and_checks(void **state)
{
	sc_dp_peer me = { 7, 2, 0 }, other;
	uint8_t *msg, *t;
	size_t len, tlen;
	float x[NUMEL];

	SC_ASSERT_OK(sc_dp_encode_hello(&msg, &len, &me, NULL));
	SC_ASSERT_OK(sc_dp_check_hello(msg, len, &me, NULL));
	other = me, other.version = 1;
	SC_ASSERT_ERR(sc_dp_check_hello(msg, len, &other, NULL), SC_EFORMAT);
	assert_non_null(strstr(sc_err_detail(), "placement 2 stage 0 where job 7 placement 1"));
	other = me, other.stage = 1;
	SC_ASSERT_ERR(sc_dp_check_hello(msg, len, &other, NULL), SC_EFORMAT);
	other = me, other.job = 8;
	SC_ASSERT_ERR(sc_dp_check_hello(msg, len, &other, NULL), SC_EFORMAT);
	for (size_t n = 0; n < len; n++) /* every truncation */
		SC_ASSERT_ERR(sc_dp_check_hello(msg, n, &me, NULL), SC_EFORMAT);
	/* A tensor is no hello, even of the right peer. */
	fill(x, 20);
	SC_ASSERT_OK(sc_dp_encode(&t, &tlen, &tag, &me, 3, shape, x));
	SC_ASSERT_ERR(sc_dp_check_hello(t, tlen, &me, NULL), SC_EFORMAT);
	/* A tensor stamped by another placement or stage is refused. */
	other = me, other.version = 3;
	SC_ASSERT_ERR(sc_dp_decode(t, tlen, &tag, &other, 3, shape, x), SC_EFORMAT);
	assert_non_null(strstr(sc_err_detail(), "from placement 2 stage 0 where placement 3"));
	other = me, other.stage = 5;
	SC_ASSERT_ERR(sc_dp_decode(t, tlen, &tag, &other, 3, shape, x), SC_EFORMAT);
	SC_ASSERT_OK(sc_dp_decode(t, tlen, &tag, &me, 3, shape, x));
	free(t);
	free(msg);
}

/* A hello carries the placement's secret: the right one passes, another
 * or none is refused (and the detail never shows the secret); a listener
 * without a secret takes either. */
static void hello_secret_checked(void **state)
{
	sc_dp_peer me = { 7, 2, 0 };
	uint8_t key[SC_DP_SECRET_LEN], wrong[SC_DP_SECRET_LEN], *msg, *bare;
	size_t len, blen;

	for (int i = 0; i < SC_DP_SECRET_LEN; i++)
		key[i] = (uint8_t)('a' + i % 26), wrong[i] = key[i];
	wrong[SC_DP_SECRET_LEN - 1] ^= 1; /* differs in the last byte only */
	SC_ASSERT_OK(sc_dp_encode_hello(&msg, &len, &me, key));
	SC_ASSERT_OK(sc_dp_encode_hello(&bare, &blen, &me, NULL));
	SC_ASSERT_OK(sc_dp_check_hello(msg, len, &me, key));
	SC_ASSERT_OK(sc_dp_check_hello(msg, len, &me, NULL));
	SC_ASSERT_OK(sc_dp_check_hello(bare, blen, &me, NULL));
	SC_ASSERT_ERR(sc_dp_check_hello(msg, len, &me, wrong), SC_EFORMAT);
	assert_non_null(strstr(sc_err_detail(), "with a wrong secret"));
	assert_null(strstr(sc_err_detail(), "abcdef"));
	SC_ASSERT_ERR(sc_dp_check_hello(bare, blen, &me, key), SC_EFORMAT);
	assert_non_null(strstr(sc_err_detail(), "without the placement's secret"));
	free(bare);
	free(msg);
}

/* Sends the hello of `from` with secret on the raw socket, then a tensor x. */
static void raw_hello_tensor(nng_socket raw, const sc_dp_peer *from, const uint8_t *secret,
			     const float *x)
{
	uint8_t *msg;
	size_t len;
	SC_ASSERT_OK(sc_dp_encode_hello(&msg, &len, from, secret));
	assert_int_equal(nng_send(raw, msg, len, 0), 0);
	free(msg);
	SC_ASSERT_OK(sc_dp_encode(&msg, &len, &tag, from, 3, shape, x));
	assert_int_equal(nng_send(raw, msg, len, 0), 0);
	free(msg);
}

/* A dialer with the right (job, placement, stage) but a wrong secret, or
 * none, is closed before its tensor is read; the right secret's tensor
 * arrives. */
static void wrong_secret_dialer_refused(void **state)
{
	refusals r = { 0 };
	sc_dp_opts o = listener_opts(&r, 400);
	sc_dp_peer right = { 7, 2, 0 };
	uint8_t wrong[SC_DP_SECRET_LEN];
	float x[NUMEL], y[NUMEL];
	sc_dp_socket *l;
	nng_socket raw;
	char url[64];

	memset(o.secret, 0x5a, sizeof(o.secret));
	o.has_secret = 1;
	memset(wrong, 0x5b, sizeof(wrong));
	SC_ASSERT_OK(sc_dp_listen(&l, inproc_url(url, sizeof(url)), &o));
	fill(x, 23);
	raw = raw_dial(sc_dp_url(l));
	raw_hello_tensor(raw, &right, wrong, x);
	SC_ASSERT_ERR(sc_dp_recv(l, &tag, 3, shape, y), SC_EIO);
	assert_int_equal(r.n, 1);
	assert_non_null(strstr(r.last, "with a wrong secret"));
	nng_close(raw);
	raw = raw_dial(sc_dp_url(l));
	raw_hello_tensor(raw, &right, NULL, x);
	SC_ASSERT_ERR(sc_dp_recv(l, &tag, 3, shape, y), SC_EIO);
	assert_int_equal(r.n, 2);
	assert_non_null(strstr(r.last, "without the placement's secret"));
	nng_close(raw);
	raw = raw_dial(sc_dp_url(l));
	raw_hello_tensor(raw, &right, o.secret, x);
	SC_ASSERT_OK(sc_dp_recv(l, &tag, 3, shape, y));
	assert_memory_equal(x, y, sizeof(x));
	assert_int_equal(r.n, 2);
	nng_close(raw);
	sc_dp_close(l);
}

/* A connection whose first message is another placement's hello, or no
 * hello at all, is closed before a tensor of it is read. */
static void wrong_first_messages_refused(void **state)
{
	refusals r = { 0 };
	sc_dp_opts o = listener_opts(&r, 400);
	sc_dp_peer stale = { 7, 1, 0 }, right = { 7, 2, 0 };
	float x[NUMEL], y[NUMEL];
	uint8_t *msg;
	size_t len;
	sc_dp_socket *l;
	nng_socket raw;
	char url[64];

	SC_ASSERT_OK(sc_dp_listen(&l, inproc_url(url, sizeof(url)), &o));
	fill(x, 21);
	/* Another placement's hello, then its tensor: never delivered. */
	raw = raw_dial(sc_dp_url(l));
	raw_hello(raw, &stale);
	SC_ASSERT_OK(sc_dp_encode(&msg, &len, &tag, &stale, 3, shape, x));
	assert_int_equal(nng_send(raw, msg, len, 0), 0);
	free(msg);
	SC_ASSERT_ERR(sc_dp_recv(l, &tag, 3, shape, y), SC_EIO);
	assert_int_equal(r.n, 1);
	assert_non_null(strstr(r.last, "refused a connection: hello from job 7 placement 1"));
	nng_close(raw);
	/* A tensor of the right peer as the first message: no hello, refused. */
	raw = raw_dial(sc_dp_url(l));
	SC_ASSERT_OK(sc_dp_encode(&msg, &len, &tag, &right, 3, shape, x));
	assert_int_equal(nng_send(raw, msg, len, 0), 0);
	free(msg);
	SC_ASSERT_ERR(sc_dp_recv(l, &tag, 3, shape, y), SC_EIO);
	assert_int_equal(r.n, 2);
	assert_non_null(strstr(r.last, "is not a hello"));
	nng_close(raw);
	/* The right hello, then the tensor: delivered. */
	raw = raw_dial(sc_dp_url(l));
	raw_hello(raw, &right);
	SC_ASSERT_OK(sc_dp_encode(&msg, &len, &tag, &right, 3, shape, x));
	assert_int_equal(nng_send(raw, msg, len, 0), 0);
	free(msg);
	SC_ASSERT_OK(sc_dp_recv(l, &tag, 3, shape, y));
	assert_memory_equal(x, y, sizeof(x));
	assert_int_equal(r.n, 2);
	nng_close(raw);
	sc_dp_close(l);
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* The stale dialer of an older placement reaches the listener first and
 * holds pair0's only slot: the listener closes it on its hello and the
 * right dialer's tensors arrive. The stale one keeps redialing (silently:
 * it sends nothing more), so each time the slot frees the two race for it
 * and the silent one is closed a second later: the right one wins within a
 * few rounds, not at once — on a loaded machine 4 lost rounds in a row were
 * seen, hence the long wait. */
static void stale_dialer_first_then_right_one(void **state)
{
	refusals r = { 0 };
	sc_dp_opts lo = listener_opts(&r, 30000), so = dialer_opts(1, 0), ro = dialer_opts(2, 0);
	sc_dp_socket *l, *stale, *right;
	float x[NUMEL], y[NUMEL];
	sc_dp_tag back = tag;

	SC_ASSERT_OK(sc_dp_listen(&l, "tcp://127.0.0.1:0", &lo));
	SC_ASSERT_OK(sc_dp_dial(&stale, sc_dp_url(l), &so));
	sleep_ms(200); /* connected, holding pair0's only slot */
	SC_ASSERT_OK(sc_dp_dial(&right, sc_dp_url(l), &ro));
	fill(x, 22);
	for (uint32_t m = 0; m < 3; m++) {
		sc_dp_tag t = tag;
		t.micro_batch = m;
		sender sd;
		x[0] = (float)m;
		send_async(&sd, right, &t, x);
		SC_ASSERT_OK(sc_dp_recv(l, &t, 3, shape, y));
		send_joined(&sd);
		assert_memory_equal(x, y, sizeof(x));
	}
	assert_true(r.n >= 1);
	assert_non_null(strstr(r.first, "placement 1 stage 0 where job 7 placement 2"));
	/* Gradients go back to the right dialer, stamped and checked. */
	back.direction = SC_DP_BACKWARD;
	SC_ASSERT_OK(sc_dp_send(l, &back, 3, shape, x));
	SC_ASSERT_OK(sc_dp_recv(right, &back, 3, shape, y));
	assert_memory_equal(x, y, sizeof(x));
	sc_dp_close(stale);
	sc_dp_close(right);
	sc_dp_close(l);
}

/* The silent peer of silent_connection_closed: it stops once its first
 * connection is closed (as a fenced worker does), so that the right peer
 * gets the slot; nng would otherwise redial it at once, every time, and
 * the test would race it against the right peer's backed-off redials. */
typedef struct silent_peer {
	refusals r;
	nng_socket raw;
	int stopped;
} silent_peer;

static void silent_refusal(void *arg, const char *why)
{
	silent_peer *sp = arg;
	count_refusal(&sp->r, why);
	if (!sp->stopped && strstr(why, "silent")) { /* on the receiving thread: no nng callback */
		nng_close(sp->raw);
		sp->stopped = 1;
	}
}

/* A connection that never speaks is closed once a receive has waited a
 * while, so that it cannot hold the slot from the right peer. (A peer that
 * is closed and at once redials, silent again, competes for the slot until
 * it stops: the coordinator fences a worker of an older placement.) */
static void silent_connection_closed(void **state)
{
	silent_peer sp = { 0 };
	refusals *rp = &sp.r;
	sc_dp_opts lo = listener_opts(rp, 8000), ro = dialer_opts(2, 0);
	sc_dp_socket *l, *right;
	float x[NUMEL], y[NUMEL];
	nng_socket raw;
	sender sd;
	double t0;

	lo.on_refuse = silent_refusal;
	lo.on_refuse_arg = &sp;
	SC_ASSERT_OK(sc_dp_listen(&l, "tcp://127.0.0.1:0", &lo));
	/* Connected (a synchronous dial), says nothing, and once closed does
	 * not come back (silent_refusal stops it). */
	assert_int_equal(nng_pair0_open(&raw), 0);
	sp.raw = raw;
	assert_int_equal(nng_socket_set_ms(raw, NNG_OPT_RECONNMINT, 60000), 0);
	assert_int_equal(nng_socket_set_ms(raw, NNG_OPT_RECONNMAXT, 60000), 0);
	assert_int_equal(nng_dial(raw, sc_dp_url(l), NULL, 0), 0);
	SC_ASSERT_OK(sc_dp_dial(&right, sc_dp_url(l), &ro));
	fill(x, 23);
	send_async(&sd, right, &tag, x);
	t0 = now_s();
	SC_ASSERT_OK(sc_dp_recv(l, &tag, 3, shape, y));
	send_joined(&sd);
	assert_memory_equal(x, y, sizeof(x));
	assert_true(now_s() - t0 < 6);
	/* The silent connection is closed as silent: once, or twice when nng
	 * redialed the raw socket before it was stopped. Or never, when the
	 * right peer's connection reached the listener first (the raw dial
	 * returns once connected, before the listener has taken the pipe; seen
	 * on a loaded machine): pair0 then turns the silent one away itself. */
	assert_true(rp->n <= 2);
	if (rp->n >= 1) {
		assert_non_null(strstr(rp->first, "silent"));
		assert_non_null(strstr(rp->last, "silent"));
		assert_true(sp.stopped);
	}
	sc_dp_close(right);
	sc_dp_close(l);
}

/* A dialer says hello again on every new connection: a listener that went
 * away and came back at the same address accepts it. */
static void hello_again_after_reconnect(void **state)
{
	refusals r = { 0 };
	sc_dp_opts lo = listener_opts(&r, 5000), ro = dialer_opts(2, 0);
	sc_dp_socket *l, *right;
	float x[NUMEL], y[NUMEL];
	char url[128];
	sender sd;

	SC_ASSERT_OK(sc_dp_listen(&l, "tcp://127.0.0.1:0", &lo));
	snprintf(url, sizeof(url), "%s", sc_dp_url(l));
	SC_ASSERT_OK(sc_dp_dial(&right, url, &ro));
	fill(x, 24);
	send_async(&sd, right, &tag, x);
	SC_ASSERT_OK(sc_dp_recv(l, &tag, 3, shape, y));
	send_joined(&sd);
	sc_dp_close(l);
	SC_ASSERT_OK(sc_dp_listen(&l, url, &lo));
	sleep_ms(1000); /* the dialer notices the loss and redials */
	x[0] = 42;
	send_async(&sd, right, &tag, x);
	SC_ASSERT_OK(sc_dp_recv(l, &tag, 3, shape, y));
	send_joined(&sd);
	assert_memory_equal(x, y, sizeof(x));
	assert_int_equal(r.n, 0);
	sc_dp_close(right);
	sc_dp_close(l);
}

static void bad_arguments(void **state)
{
	sc_dp_socket *s;
	int64_t big[SC_DP_MAX_DIMS + 1] = { 0 };
	int64_t neg[2] = { 2, -1 };
	float x[1] = { 0 };
	uint8_t *msg;
	size_t len;

	SC_ASSERT_ERR(sc_dp_listen(&s, "", NULL), SC_EINVAL);
	SC_ASSERT_ERR(sc_dp_listen(&s, "nonsense://x", NULL), SC_EIO);
	SC_ASSERT_ERR(sc_dp_encode(&msg, &len, &tag, NULL, SC_DP_MAX_DIMS + 1, big, x), SC_EINVAL);
	SC_ASSERT_ERR(sc_dp_encode(&msg, &len, &tag, NULL, 2, neg, x), SC_EFORMAT);
	sc_dp_close(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(encode_decode_round_trip),
		cmocka_unit_test(random_bytes_refused),
		cmocka_unit_test(round_trip_inproc),
		cmocka_unit_test(round_trip_tcp_port_zero),
		cmocka_unit_test(corrupt_messages_refused),
		cmocka_unit_test(stale_tensors_dropped_when_asked),
		cmocka_unit_test(receive_times_out),
		cmocka_unit_test(send_without_peer_times_out),
		cmocka_unit_test(cancel_stops_a_wait),
		cmocka_unit_test(oversized_message_never_delivered),
		cmocka_unit_test(bad_arguments),
		cmocka_unit_test(hello_round_trip_and_checks),
		cmocka_unit_test(wrong_first_messages_refused),
		cmocka_unit_test(hello_secret_checked),
		cmocka_unit_test(wrong_secret_dialer_refused),
		cmocka_unit_test(stale_dialer_first_then_right_one),
		cmocka_unit_test(silent_connection_closed),
		cmocka_unit_test(hello_again_after_reconnect),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
