/* rpc_client.c — the RPC client of sc_rpc.h: one nng REQ socket, one context per call.
 *
 * A call packs an Envelope with a fresh request id (a random per-client base plus a counter)
 * and a deadline of now + timeout. nng's REQ protocol resends the same message, same id,
 * after RESEND_MS or when a connection is lost, so a request that a restarting peer missed
 * reaches it later, and the server's retry memory keeps it from running twice.
 *
 * Abort and close. sc_rpc_client_abort never closes the socket: nng 1.5.2 (Debian 12) can
 * hang in nng_close for good (nng issue #1813, fixed in 1.9.0): when a tcp connection closes
 * as a message arrives on it, the connection's receive is stranded and nng's reaper thread
 * waits on it, so that every later nng_close in the process hangs too. Abort sets
 * cl->aborted (until sc_rpc_client_rearm clears it) and cancels (nng_aio_cancel) the aio of
 * every call in flight, which then fails with NNG_ECANCELED. Only sc_rpc_client_close closes
 * the socket, and its callers guarantee that no call is in flight by then; a late reply can
 * still make that close hang, hence long-lived clients that are rearmed rather than closed.
 *
 * Concurrency contract. cl->mu guards cl->aborted and cl->calls, the list of the calls in
 * flight (each an entry on its caller's stack holding the call's aio).
 *  - sc_rpc_call takes cl->mu to link its entry (after allocating the aio, before any nng
 *    operation), to start each operation (nng_ctx_send, nng_ctx_recv: only when aborted is
 *    still 0) and to unlink its entry (before nng_aio_free). So an abort either finds the
 *    operation started and cancels it, or the call sees the flag before starting the next
 *    one and returns at once: no cancel falls in the gap between a send's completion and
 *    the receive's start, and abort never touches a freed aio.
 *  - sc_rpc_client_abort takes cl->mu, sets aborted and cancels the listed aios;
 *    sc_rpc_client_rearm takes it to clear aborted.
 * cl->mu is never held across a wait (nng_aio_wait, nng_aio_free, nng_ctx_close, nng_close);
 * nng_aio_cancel does not wait: the protocol's cancel function takes nng's socket lock
 * briefly and completes the aio. Lock order: cl->mu, then nng's internal locks; on_pipe, the
 * only callback nng makes into this file, takes only the pipe set's own lock (sc_pipes.h).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "sc_listen_guard.h"
#include "sc_log.h"
#include "sc_pipes.h"
#include "sc_rpc.h"
#include "sc_tls.h"
#include "splitchain.pb-c.h"

#define RESEND_MS          1000                  /* resend a small request after this long */
#define RESEND_BYTES_PER_S (32u << 20)           /* a big one: 1 s more per 32 MiB, not to flood */
#define REQUEST_MAX        (SC_RPC_MAX_MSG - 64) /* room for the SP routing header */

/* A call in flight: lives on its caller's stack, linked into cl->calls under cl->mu. */
typedef struct call {
	nng_aio *aio; /* the call's; freed only after the entry is unlinked */
	struct call *prev, *next;
} call;

struct sc_rpc_client {
	nng_socket sock;
	int sock_open;
	uint64_t id_base;         /* random, per client */
	atomic_uint_fast64_t seq; /* calls so far */
	sc_pipes pipes; /* live connections: dial again when none, and the timeout message */
	atomic_ullong quiet_ms; /* monotonic ms of the last connection change or dial */
	nng_dialer dialer;      /* under mu once open: replaced by keep_dialing */
	pthread_mutex_t mu;     /* guards aborted and calls; never held across a wait */
	int aborted;            /* under mu: aborted, until sc_rpc_client_rearm */
	call *calls;            /* under mu: the calls in flight */
	atomic_int resend_ms;   /* a small request's resend time (sc_rpc_client_set_resend) */
	uint8_t auth[SC_RPC_MAX_AUTH]; /* under mu: the credential requests carry */
	size_t auth_len;               /* under mu */
	char url[256];
};

void sc_rpc_client_set_resend(sc_rpc_client *cl, int ms)
{
	atomic_store(&cl->resend_ms, ms > 0 ? ms : RESEND_MS);
}

sc_err sc_rpc_client_set_auth(sc_rpc_client *cl, const void *cred, size_t len)
{
	if (!cl || len > SC_RPC_MAX_AUTH || (len && !cred))
		return sc_errf(SC_EINVAL, "rpc client: a credential of %zu bytes (at most %d)", len,
			       SC_RPC_MAX_AUTH);
	pthread_mutex_lock(&cl->mu);
	if (len)
		memcpy(cl->auth, cred, len);
	cl->auth_len = len;
	pthread_mutex_unlock(&cl->mu);
	return SC_OK;
}

const char *sc_status_name(int status)
{
	static const char *const names[] = {
		"OK",
		"CANCELLED",
		"UNKNOWN",
		"INVALID_ARGUMENT",
		"DEADLINE_EXCEEDED",
		"NOT_FOUND",
		"ALREADY_EXISTS",
		"PERMISSION_DENIED",
		"RESOURCE_EXHAUSTED",
		"FAILED_PRECONDITION",
		"ABORTED",
		"OUT_OF_RANGE",
		"UNIMPLEMENTED",
		"INTERNAL",
		"UNAVAILABLE",
		"DATA_LOSS",
		"UNAUTHENTICATED",
	};
	if (status < 0 || status >= (int)(sizeof(names) / sizeof(names[0])))
		return "INVALID_STATUS";
	return names[status];
}

static uint64_t clock_ms(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Runs on an nng thread when a connection comes or goes. */
static void on_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	sc_rpc_client *cl = arg;

	if (sc_pipes_event(&cl->pipes, nng_pipe_id(p), ev))
		atomic_store(&cl->quiet_ms, clock_ms(CLOCK_MONOTONIC));
}

/* A client that has had no connection for SC_REDIAL_AFTER_MS replaces its
 * dialer, which nng 1.5.2 may have stopped for good (sc_listen_guard.h). */
static void keep_dialing(sc_rpc_client *cl)
{
	uint64_t now = clock_ms(CLOCK_MONOTONIC);

	if (sc_pipes_count(&cl->pipes) > 0 || now - atomic_load(&cl->quiet_ms) < SC_REDIAL_AFTER_MS)
		return;
	pthread_mutex_lock(&cl->mu);
	if (sc_pipes_count(&cl->pipes) == 0 &&
	    now - atomic_load(&cl->quiet_ms) >= SC_REDIAL_AFTER_MS) {
		atomic_store(&cl->quiet_ms, now);
		if (sc_redial(cl->sock, &cl->dialer, cl->url))
			sc_warn("rpc", "%s", sc_err_detail());
	}
	pthread_mutex_unlock(&cl->mu);
}

static uint64_t random_base(void)
{
	uint64_t b = 0;

	if (getrandom(&b, sizeof(b), 0) != (ssize_t)sizeof(b)) /* mix what is at hand */
		b = clock_ms(CLOCK_REALTIME) * 0x9E3779B97F4A7C15ull ^ (uint64_t)getpid() << 32 ^
		    (uint64_t)(uintptr_t)&b;
	return b;
}

sc_err sc_rpc_client_open(sc_rpc_client **out, const char *url)
{
	sc_rpc_client *cl;
	nng_dialer d;
	sc_err err;
	int rv;

	*out = NULL;
	if (!url)
		return sc_errf(SC_EINVAL, "rpc client: no url");
	if (!(cl = calloc(1, sizeof(*cl))))
		return sc_errf(SC_ENOMEM, "rpc client: out of memory");
	pthread_mutex_init(&cl->mu, NULL);
	sc_pipes_init(&cl->pipes);
	snprintf(cl->url, sizeof(cl->url), "%s", url);
	atomic_init(&cl->resend_ms, RESEND_MS);
	cl->id_base = random_base();
	if ((rv = nng_req0_open(&cl->sock)) != 0) {
		err = sc_errf(rv == NNG_ENOMEM ? SC_ENOMEM : SC_EIO, "rpc client: open socket: %s",
			      nng_strerror(rv));
		goto fail;
	}
	cl->sock_open = 1;
	if ((rv = nng_socket_set_size(cl->sock, NNG_OPT_RECVMAXSZ, SC_RPC_MAX_MSG)) != 0 ||
	    (rv = nng_socket_set_ms(cl->sock, NNG_OPT_REQ_RESENDTIME, RESEND_MS)) != 0 ||
	    (rv = nng_socket_set_ms(cl->sock, NNG_OPT_RECONNMINT, 50)) != 0 ||
	    (rv = nng_socket_set_ms(cl->sock, NNG_OPT_RECONNMAXT, 1000)) != 0 ||
	    (rv = nng_pipe_notify(cl->sock, NNG_PIPE_EV_ADD_POST, on_pipe, cl)) != 0 ||
	    (rv = nng_pipe_notify(cl->sock, NNG_PIPE_EV_REM_POST, on_pipe, cl)) != 0) {
		err = sc_errf(SC_EIO, "rpc client: socket options: %s", nng_strerror(rv));
		goto fail;
	}
	/* Non-blocking: the dialer keeps retrying in the background until the peer is up. */
	if ((rv = nng_dialer_create(&d, cl->sock, url)) != 0) {
		err = sc_errf(rv == NNG_ENOMEM ? SC_ENOMEM : SC_EINVAL, "rpc client: dial %s: %s",
			      url, nng_strerror(rv));
		goto fail;
	}
	if ((err = sc_tls_dialer_setup(d, url)))
		goto fail;
	if ((rv = nng_dialer_start(d, NNG_FLAG_NONBLOCK)) != 0) {
		err = sc_errf(rv == NNG_ENOMEM ? SC_ENOMEM : SC_EINVAL, "rpc client: dial %s: %s",
			      url, nng_strerror(rv));
		goto fail;
	}
	cl->dialer = d;
	atomic_store(&cl->quiet_ms, clock_ms(CLOCK_MONOTONIC));
	*out = cl;
	return SC_OK;
fail:
	sc_rpc_client_close(cl);
	return err;
}

void sc_rpc_client_abort(sc_rpc_client *cl)
{
	if (!cl)
		return;
	pthread_mutex_lock(&cl->mu);
	cl->aborted = 1;
	for (call *c = cl->calls; c; c = c->next)
		nng_aio_cancel(c->aio); /* does not wait; the call sees NNG_ECANCELED */
	pthread_mutex_unlock(&cl->mu);
}

void sc_rpc_client_rearm(sc_rpc_client *cl)
{
	if (!cl)
		return;
	pthread_mutex_lock(&cl->mu);
	cl->aborted = 0;
	pthread_mutex_unlock(&cl->mu);
}

/* The caller guarantees that no call is in flight (sc_rpc.h). */
void sc_rpc_client_close(sc_rpc_client *cl)
{
	if (!cl)
		return;
	if (cl->sock_open)
		nng_close(cl->sock); /* no callback runs after it returns */
	sc_pipes_fini(&cl->pipes);
	pthread_mutex_destroy(&cl->mu);
	free(cl);
}

/* Links c (its aio set) into cl's calls: 0, or 1 (not linked) when cl was aborted. Takes
 * cl->mu. */
static int call_link(sc_rpc_client *cl, call *c)
{
	int aborted;

	pthread_mutex_lock(&cl->mu);
	if (!(aborted = cl->aborted)) {
		c->prev = NULL;
		c->next = cl->calls;
		if (cl->calls)
			cl->calls->prev = c;
		cl->calls = c;
	}
	pthread_mutex_unlock(&cl->mu);
	return aborted;
}

/* Unlinks c, so that an abort no longer sees its aio. Takes cl->mu. */
static void call_unlink(sc_rpc_client *cl, call *c)
{
	pthread_mutex_lock(&cl->mu);
	if (c->prev)
		c->prev->next = c->next;
	else
		cl->calls = c->next;
	if (c->next)
		c->next->prev = c->prev;
	pthread_mutex_unlock(&cl->mu);
}

/* Starts a send (send = 1) or a receive on ctx with c->aio unless cl was aborted, and waits
 * for it: nng's result, NNG_ECANCELED when aborted before or during the operation. Takes
 * cl->mu around the start only. */
static int call_op(sc_rpc_client *cl, call *c, nng_ctx ctx, int send)
{
	pthread_mutex_lock(&cl->mu);
	if (cl->aborted) {
		pthread_mutex_unlock(&cl->mu);
		return NNG_ECANCELED;
	}
	if (send)
		nng_ctx_send(ctx, c->aio);
	else
		nng_ctx_recv(ctx, c->aio);
	pthread_mutex_unlock(&cl->mu);
	nng_aio_wait(c->aio);
	return nng_aio_result(c->aio);
}

/* Sets *status and the caller's message buffer; returns SC_OK. */
static sc_err give(int *status, char *msg, size_t msg_size, int code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static sc_err give(int *status, char *msg, size_t msg_size, int code, const char *fmt, ...)
{
	va_list ap;

	*status = code;
	if (msg && msg_size) {
		va_start(ap, fmt);
		vsnprintf(msg, msg_size, fmt, ap);
		va_end(ap);
	}
	return SC_OK;
}

/* Checks the reply envelope in m (borrowed) and hands out its status and body. */
static sc_err take_reply(sc_rpc_client *cl, nng_msg *m, uint64_t id, int *status, char *msg,
			 size_t msg_size, uint8_t **reply, size_t *reply_len)
{
	Splitchain__Envelope *env;
	sc_err err;

	env = splitchain__envelope__unpack(NULL, nng_msg_len(m), nng_msg_body(m));
	if (!env)
		return give(status, msg, msg_size, SC_STATUS_INTERNAL,
			    "%s sent a malformed reply (%zu bytes)", cl->url, nng_msg_len(m));
	if (env->magic != SC_RPC_MAGIC || env->version != SC_RPC_VERSION)
		err = give(status, msg, msg_size, SC_STATUS_INTERNAL,
			   "%s replied with magic 0x%08" PRIx32 " version %" PRIu32
			   " (want 0x%08x version %u)",
			   cl->url, env->magic, env->version, SC_RPC_MAGIC, SC_RPC_VERSION);
	else if (env->request_id != id)
		err = give(status, msg, msg_size, SC_STATUS_INTERNAL,
			   "%s answered request %016" PRIx64 " instead of %016" PRIx64, cl->url,
			   env->request_id, id);
	else if (env->status < 0 || env->status > SC_STATUS_UNAUTHENTICATED)
		err = give(status, msg, msg_size, SC_STATUS_UNKNOWN, "status %d from %s: %s",
			   (int)env->status, cl->url, env->status_message);
	else
		err = give(status, msg, msg_size, env->status, "%s", env->status_message);
	if (*status == SC_STATUS_OK && env->body.len > 0) {
		/* protobuf-c's default allocator is malloc: the body is the caller's to free. */
		if (reply && reply_len) {
			*reply = env->body.data;
			*reply_len = env->body.len;
			env->body.data = NULL;
			env->body.len = 0;
		}
	}
	splitchain__envelope__free_unpacked(env, NULL);
	return err;
}

/* One call; cred NULL: the client's own credential. */
static sc_err call_with(sc_rpc_client *cl, const void *cred, size_t cred_len, const char *method,
			const uint8_t *req, size_t len, int timeout_ms, int *status, char *msg,
			size_t msg_size, uint8_t **reply, size_t *reply_len)
{
	Splitchain__Envelope env = SPLITCHAIN__ENVELOPE__INIT;
	uint8_t auth[SC_RPC_MAX_AUTH];
	call c = { 0 };
	nng_msg *m = NULL;
	nng_ctx ctx;
	int ctx_open = 0;
	uint64_t t0, spent;
	size_t size;
	sc_err err;
	int rv;

	if (reply)
		*reply = NULL;
	if (reply_len)
		*reply_len = 0;
	if (msg && msg_size)
		msg[0] = '\0';
	if (!cl || !method || !status || (len && !req) || timeout_ms <= 0)
		return sc_errf(SC_EINVAL,
			       "rpc call: need a client, a method, a status and a "
			       "positive timeout (got %d ms)",
			       timeout_ms);
	*status = SC_STATUS_UNKNOWN;
	keep_dialing(cl);

	env.magic = SC_RPC_MAGIC;
	env.version = SC_RPC_VERSION;
	env.method = (char *)method;
	do
		env.request_id = cl->id_base + atomic_fetch_add(&cl->seq, 1);
	while (env.request_id == 0); /* 0 means "no id" to the server */
	t0 = clock_ms(CLOCK_MONOTONIC);
	env.deadline_unix_ms = clock_ms(CLOCK_REALTIME) + (uint64_t)timeout_ms;
	env.body.data = (uint8_t *)req;
	env.body.len = len;
	if (cred) {
		env.auth.len = cred_len;
		memcpy(auth, cred, cred_len);
	} else {
		pthread_mutex_lock(&cl->mu); /* a copy: the packed message keeps it for resends */
		env.auth.len = cl->auth_len;
		memcpy(auth, cl->auth, cl->auth_len);
		pthread_mutex_unlock(&cl->mu);
	}
	env.auth.data = auth;
	size = splitchain__envelope__get_packed_size(&env);
	if (size > REQUEST_MAX)
		return give(status, msg, msg_size, SC_STATUS_RESOURCE_EXHAUSTED,
			    "%s request of %zu bytes exceeds the %u-byte message limit", method,
			    size, SC_RPC_MAX_MSG);
	if ((rv = nng_msg_alloc(&m, size)) != 0)
		return sc_errf(SC_ENOMEM, "rpc call %s: %zu-byte message: %s", method, size,
			       nng_strerror(rv));
	splitchain__envelope__pack(&env, nng_msg_body(m));

	if ((rv = nng_aio_alloc(&c.aio, NULL, NULL)) != 0) {
		nng_msg_free(m);
		return sc_errf(SC_ENOMEM, "rpc call %s: aio: out of memory", method);
	}
	if (call_link(cl, &c)) {
		nng_aio_free(c.aio);
		nng_msg_free(m);
		return give(status, msg, msg_size, SC_STATUS_UNAVAILABLE,
			    "%s: the client for %s was aborted", method, cl->url);
	}
	if ((rv = nng_ctx_open(&ctx, cl->sock)) != 0) {
		nng_msg_free(m);
		if (rv == NNG_ENOMEM)
			err = sc_errf(SC_ENOMEM, "rpc call %s: context: out of memory", method);
		else
			err = give(status, msg, msg_size, SC_STATUS_UNAVAILABLE,
				   "client for %s: %s", cl->url, nng_strerror(rv));
		goto out;
	}
	ctx_open = 1;
	nng_ctx_set_ms(ctx, NNG_OPT_REQ_RESENDTIME,
		       atomic_load(&cl->resend_ms) +
			   (nng_duration)(size / RESEND_BYTES_PER_S * 1000u));
	/* Send: completes once the request is handed to a connection. */
	nng_aio_set_timeout(c.aio, timeout_ms);
	nng_aio_set_msg(c.aio, m);
	if ((rv = call_op(cl, &c, ctx, 1)) == 0) {
		spent = clock_ms(CLOCK_MONOTONIC) - t0;
		nng_aio_set_timeout(
		    c.aio, spent < (uint64_t)timeout_ms ? timeout_ms - (nng_duration)spent : 1);
		rv = call_op(cl, &c, ctx, 0);
	} else {
		nng_msg_free(nng_aio_get_msg(c.aio)); /* unsent: still ours */
	}
	if (rv == NNG_ETIMEDOUT && sc_pipes_count(&cl->pipes) == 0)
		err = give(status, msg, msg_size, SC_STATUS_UNAVAILABLE,
			   "%s: no connection to %s within %d ms: is the server running?", method,
			   cl->url, timeout_ms);
	else if (rv == NNG_ETIMEDOUT)
		err = give(status, msg, msg_size, SC_STATUS_DEADLINE_EXCEEDED,
			   "%s: no reply from %s within %d ms", method, cl->url, timeout_ms);
	else if (rv == NNG_ECANCELED)
		err = give(status, msg, msg_size, SC_STATUS_UNAVAILABLE, "%s to %s: aborted (%s)",
			   method, cl->url, nng_strerror(rv));
	else if (rv == NNG_ENOMEM)
		err = sc_errf(SC_ENOMEM, "rpc call %s: out of memory", method);
	else if (rv != 0)
		err = give(status, msg, msg_size, SC_STATUS_UNAVAILABLE, "%s to %s: %s", method,
			   cl->url, nng_strerror(rv));
	else {
		m = nng_aio_get_msg(c.aio);
		err = take_reply(cl, m, env.request_id, status, msg, msg_size, reply, reply_len);
		nng_msg_free(m);
	}
out:
	call_unlink(cl, &c); /* before the free: abort must not see a freed aio */
	nng_aio_free(c.aio);
	if (ctx_open)
		nng_ctx_close(ctx);
	return err;
}

sc_err sc_rpc_call(sc_rpc_client *cl, const char *method, const uint8_t *req, size_t len,
		   int timeout_ms, int *status, char *msg, size_t msg_size, uint8_t **reply,
		   size_t *reply_len)
{
	return call_with(cl, NULL, 0, method, req, len, timeout_ms, status, msg, msg_size, reply,
			 reply_len);
}

sc_err sc_rpc_call_as(sc_rpc_client *cl, const void *cred, size_t cred_len, const char *method,
		      const uint8_t *req, size_t len, int timeout_ms, int *status, char *msg,
		      size_t msg_size, uint8_t **reply, size_t *reply_len)
{
	if (cred_len > SC_RPC_MAX_AUTH || (cred_len && !cred))
		return sc_errf(SC_EINVAL, "rpc call %s: a credential of %zu bytes (at most %d)",
			       method ? method : "", cred_len, SC_RPC_MAX_AUTH);
	return call_with(cl, cred ? cred : "", cred_len, method, req, len, timeout_ms, status, msg,
			 msg_size, reply, reply_len);
}
