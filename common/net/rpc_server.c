/* rpc_server.c — the RPC server of sc_rpc.h: an nng REP socket served by nctx contexts.
 *
 * Each context has its own thread running recv -> handle -> send in a loop. Handlers are
 * allowed to block for long (a Worker.Step runs a whole pipeline step and moves tensors over
 * the data plane meanwhile), so they run on these threads rather than in nng completion
 * callbacks: a blocked callback holds one of nng's few shared task threads, and enough of them
 * would stall every socket of the process, the data plane included.
 *
 * The retry memory remembers the last MEMO_CAP request ids in arrival order. An id whose
 * handler is still running is marked so; a copy that arrives meanwhile (nng's REQ resends the
 * same envelope after its resend time, or at once on a new connection) is dropped without a
 * reply: the first execution answers it, or its next resend finds the finished reply here.
 * Stored replies are bounded by MEMO_BYTES: past it, the oldest replies are forgotten (the id
 * stays known, and a retry of it is answered ABORTED rather than run again).
 *
 * Credentials. With an authorisation hook (sc_rpc_server_open_auth), every request that names
 * a known method is shown to it first; a refusal is answered at once and reaches neither the
 * retry memory nor the handler. The handler finds the caller in a thread-local
 * (sc_rpc_caller). The retry memory keys each reply by request id and the SHA-256 of the
 * credential, so a request id replayed under another credential never gets that reply.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/util/platform.h>

#include "sc_listen_guard.h"
#include "sc_log.h"
#include "sc_rpc.h"
#include "sc_sha256.h"
#include "sc_tls.h"
#include "splitchain.pb-c.h"

#define MEMO_CAP   4096        /* request ids remembered */
#define MEMO_BYTES (64u << 20) /* packed replies kept, in bytes (plus the newest one) */
#define MAX_CTX    256
#define REPLY_MAX  (SC_RPC_MAX_MSG - 64) /* room for the SP routing header */

enum { MEMO_NEW, MEMO_RUNNING, MEMO_DONE, MEMO_FORGOTTEN };

typedef struct memo_entry {
	uint64_t id;
	uint8_t cred[SC_SHA256_BYTES]; /* the SHA-256 of the credential it came with */
	int state;                     /* MEMO_RUNNING, MEMO_DONE or MEMO_FORGOTTEN */
	nng_msg *reply;                /* MEMO_DONE: the packed reply envelope, owned */
} memo_entry;

/* A FIFO ring of the most recent request ids. */
typedef struct memo {
	pthread_mutex_t mu;
	memo_entry *e; /* MEMO_CAP slots; the oldest at head */
	size_t head, n;
	size_t bytes; /* sum of the stored replies' lengths */
} memo;

typedef struct rpc_ctx {
	sc_rpc_server *srv;
	nng_ctx ctx;
	nng_aio *aio; /* used only by this context's thread */
	pthread_t thread;
	int started;
} rpc_ctx;

struct sc_rpc_server {
	nng_socket sock;
	int sock_open;
	const sc_rpc_method *methods; /* borrowed */
	int nmethods;
	atomic_ullong *calls, *failures; /* (nmethods) sc_rpc_server_stats */
	const char *const *idempotent;   /* borrowed, NULL-terminated; NULL: none */
	void *arg;                       /* borrowed */
	sc_rpc_auth_fn auth;             /* NULL: no checks */
	void *auth_arg;                  /* borrowed */
	rpc_ctx *ctxs;                   /* nctx */
	int nctx;
	memo memo;
	atomic_int closing;
	atomic_int busy; /* requests received whose reply is not yet handed to nng */
	/* Held shared around each nng_ctx_recv / nng_ctx_send call and
	 * exclusively by close around nng_close: nng 1.5 panics ("pthread_mutex_lock:
	 * Invalid argument") when a context call races the socket's close. The
	 * waits for those calls happen outside it; close fails them. */
	pthread_rwlock_t close_lock;
	sc_listen_guard *guard; /* keeps the listener accepting (nng 1.5.2) */
	char url[300];
};

static uint64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static sc_err nng_to_err(int rv)
{
	switch (rv) {
	case NNG_ENOMEM: return SC_ENOMEM;
	case NNG_EADDRINVAL:
	case NNG_EINVAL:
	case NNG_ENOTSUP: return SC_EINVAL;
	default: return SC_EIO;
	}
}

/* ---------------------------------------------------------- retry memory */

/* Called with m->mu held. Newest first: a retry usually follows its original closely. */
static memo_entry *memo_find(memo *m, uint64_t id, const uint8_t *cred)
{
	for (size_t i = m->n; i-- > 0;) {
		memo_entry *e = &m->e[(m->head + i) % MEMO_CAP];
		if (e->id == id && !memcmp(e->cred, cred, SC_SHA256_BYTES))
			return e;
	}
	return NULL;
}

/* Called with m->mu held. Drops e's stored reply, keeping the id known. */
static void memo_forget(memo *m, memo_entry *e)
{
	if (e->reply) {
		m->bytes -= nng_msg_len(e->reply);
		nng_msg_free(e->reply);
		e->reply = NULL;
	}
	e->state = MEMO_FORGOTTEN;
}

/* Looks id up. Unknown: records it as running and returns MEMO_NEW. Known: returns its state,
 * and for MEMO_DONE a copy of the stored reply in *cached (new, or NULL when out of memory). */
static int memo_begin(memo *m, uint64_t id, const uint8_t *cred, nng_msg **cached)
{
	memo_entry *e;
	int state;

	*cached = NULL;
	pthread_mutex_lock(&m->mu);
	if ((e = memo_find(m, id, cred)) != NULL) {
		state = e->state;
		if (state == MEMO_DONE && nng_msg_dup(cached, e->reply) != 0)
			*cached = NULL;
		pthread_mutex_unlock(&m->mu);
		return state;
	}
	if (m->n == MEMO_CAP) { /* the oldest id goes */
		memo_forget(m, &m->e[m->head]);
		m->head = (m->head + 1) % MEMO_CAP;
		m->n--;
	}
	e = &m->e[(m->head + m->n++) % MEMO_CAP];
	*e = (memo_entry){ .id = id, .state = MEMO_RUNNING };
	memcpy(e->cred, cred, SC_SHA256_BYTES);
	pthread_mutex_unlock(&m->mu);
	return MEMO_NEW;
}

/* Stores a copy of reply (borrowed; NULL: the reply was lost) as id's answer, then trims the
 * oldest stored replies back under MEMO_BYTES. */
static void memo_finish(memo *m, uint64_t id, const uint8_t *cred, const nng_msg *reply)
{
	memo_entry *e;

	pthread_mutex_lock(&m->mu);
	if ((e = memo_find(m, id, cred)) == NULL) { /* pushed out while running */
		pthread_mutex_unlock(&m->mu);
		return;
	}
	if (reply && nng_msg_dup(&e->reply, reply) == 0) {
		e->state = MEMO_DONE;
		m->bytes += nng_msg_len(e->reply);
	} else {
		e->reply = NULL;
		e->state = MEMO_FORGOTTEN;
	}
	for (size_t i = 0; i < m->n && m->bytes > MEMO_BYTES; i++) {
		memo_entry *old = &m->e[(m->head + i) % MEMO_CAP];
		if (old != e && old->reply)
			memo_forget(m, old);
	}
	pthread_mutex_unlock(&m->mu);
}

static void memo_free(memo *m)
{
	if (!m->e)
		return;
	for (size_t i = 0; i < m->n; i++)
		memo_forget(m, &m->e[(m->head + i) % MEMO_CAP]);
	free(m->e);
	m->e = NULL;
	pthread_mutex_destroy(&m->mu);
}

/* ---------------------------------------------------------- requests */

/* Packs a reply to req into a new message; NULL when out of memory. body/len borrowed. */
static nng_msg *pack_reply(const Splitchain__Envelope *req, int status, const char *message,
			   const uint8_t *body, size_t len)
{
	Splitchain__Envelope rep = SPLITCHAIN__ENVELOPE__INIT;
	char big[160];
	nng_msg *msg;
	size_t size;

	rep.magic = SC_RPC_MAGIC;
	rep.version = SC_RPC_VERSION;
	rep.method = req->method;
	rep.request_id = req->request_id;
	rep.status = status;
	rep.status_message = (char *)(message ? message : "");
	rep.body.data = (uint8_t *)body;
	rep.body.len = status == SC_STATUS_OK ? len : 0;
	size = splitchain__envelope__get_packed_size(&rep);
	if (size > REPLY_MAX) {
		snprintf(big, sizeof(big),
			 "the reply of %zu bytes exceeds the %u-byte message limit", size,
			 SC_RPC_MAX_MSG);
		sc_warn("rpc", "%.64s: %s", req->method, big);
		rep.status = SC_STATUS_RESOURCE_EXHAUSTED;
		rep.status_message = big;
		rep.body.data = NULL;
		rep.body.len = 0;
		size = splitchain__envelope__get_packed_size(&rep);
	}
	if (nng_msg_alloc(&msg, size) != 0)
		return NULL;
	splitchain__envelope__pack(&rep, nng_msg_body(msg));
	return msg;
}

static int is_idempotent(const sc_rpc_server *srv, const char *name)
{
	for (const char *const *p = srv->idempotent; p && *p; p++)
		if (!strcmp(*p, name))
			return 1;
	return 0;
}

static const sc_rpc_method *find_method(const sc_rpc_server *srv, const char *name)
{
	for (const sc_rpc_method *m = srv->methods; m->name; m++)
		if (!strcmp(m->name, name))
			return m;
	return NULL;
}

/* The caller of the request this thread's handler runs. */
static _Thread_local sc_rpc_principal current;

const sc_rpc_principal *sc_rpc_caller(void)
{
	return &current;
}

/* Runs the handler of a new request for who (borrowed) and returns its packed reply (NULL:
 * out of memory). */
static nng_msg *run_handler(sc_rpc_server *srv, const sc_rpc_method *m,
			    const Splitchain__Envelope *req, const sc_rpc_principal *who)
{
	sc_rpc_reply rep = { .status = SC_STATUS_OK };
	nng_msg *msg;

	current = *who;
	m->fn(srv->arg, req->body.data, req->body.len, &rep);
	current = (sc_rpc_principal){ 0 };
	rep.message[sizeof(rep.message) - 1] = '\0';
	if (rep.status < 0 || rep.status > SC_STATUS_UNAUTHENTICATED) {
		sc_warn("rpc", "%s returned status %d, not a status code", m->name, rep.status);
		rep.status = SC_STATUS_UNKNOWN;
	}
	atomic_fetch_add(&srv->calls[m - srv->methods], 1);
	if (rep.status != SC_STATUS_OK)
		atomic_fetch_add(&srv->failures[m - srv->methods], 1);
	msg = pack_reply(req, rep.status, rep.status == SC_STATUS_OK ? "" : rep.message, rep.body,
			 rep.len);
	free(rep.body);
	return msg;
}

/* Handles one received request (msg borrowed); returns the reply to send, or NULL to send
 * none. */
static nng_msg *handle(sc_rpc_server *srv, nng_msg *msg)
{
	Splitchain__Envelope *req;
	const sc_rpc_method *m;
	sc_rpc_principal who = { 0 };
	uint8_t cred[SC_SHA256_BYTES];
	nng_msg *rep = NULL;
	char text[200];
	uint64_t now;
	int state;

	req = splitchain__envelope__unpack(NULL, nng_msg_len(msg), nng_msg_body(msg));
	if (!req) {
		sc_warn("rpc", "dropped a %zu-byte message that is not an envelope",
			nng_msg_len(msg));
		return NULL;
	}
	if (req->magic != SC_RPC_MAGIC) {
		sc_warn("rpc", "dropped an envelope with magic 0x%08" PRIx32 " (want 0x%08x)",
			req->magic, SC_RPC_MAGIC);
		goto out;
	}
	if (req->version != SC_RPC_VERSION) {
		snprintf(text, sizeof(text), "wire version %" PRIu32 " is not supported (want %u)",
			 req->version, SC_RPC_VERSION);
		sc_warn("rpc", "request %016" PRIx64 ": %s", req->request_id, text);
		rep = pack_reply(req, SC_STATUS_INVALID_ARGUMENT, text, NULL, 0);
		goto out;
	}
	if (!req->method || !req->method[0]) {
		sc_warn("rpc", "request %016" PRIx64 " names no method", req->request_id);
		rep = pack_reply(req, SC_STATUS_INVALID_ARGUMENT, "the request names no method",
				 NULL, 0);
		goto out;
	}
	now = wall_ms();
	if (req->deadline_unix_ms && now > req->deadline_unix_ms) {
		snprintf(text, sizeof(text), "%.64s arrived %" PRIu64 " ms after its deadline",
			 req->method, now - req->deadline_unix_ms);
		sc_warn("rpc", "%s", text);
		rep = pack_reply(req, SC_STATUS_DEADLINE_EXCEEDED, text, NULL, 0);
		goto out;
	}
	if ((m = find_method(srv, req->method)) == NULL) {
		snprintf(text, sizeof(text), "unknown method \"%.64s\"", req->method);
		sc_warn("rpc", "%s", text);
		rep = pack_reply(req, SC_STATUS_UNIMPLEMENTED, text, NULL, 0);
		goto out;
	}
	if (srv->auth) {
		char why[300] = "";
		int st = srv->auth(srv->auth_arg, m->name, req->auth.data, req->auth.len, &who, why,
				   sizeof(why));
		if (st != SC_STATUS_OK) {
			why[sizeof(why) - 1] = '\0';
			sc_debug("rpc", "refused %s: %s: %s", m->name, sc_status_name(st), why);
			rep = pack_reply(req, st, why[0] ? why : "not authorised", NULL, 0);
			goto out;
		}
	}
	if (req->request_id == 0 || is_idempotent(srv, m->name)) { /* no retry memory */
		rep = run_handler(srv, m, req, &who);
		goto out;
	}
	sc_sha256(req->auth.data, req->auth.len, cred);
	state = memo_begin(&srv->memo, req->request_id, cred, &rep);
	if (state == MEMO_NEW) {
		rep = run_handler(srv, m, req, &who);
		memo_finish(&srv->memo, req->request_id, cred, rep);
	} else if (state == MEMO_DONE) {
		sc_debug("rpc", "request %016" PRIx64 " (%s) answered from the retry memory",
			 req->request_id, m->name);
	} else if (state == MEMO_RUNNING) {
		sc_debug("rpc", "request %016" PRIx64 " (%s) is running: dropped its copy",
			 req->request_id, m->name);
	} else if (state == MEMO_FORGOTTEN) {
		snprintf(text, sizeof(text),
			 "request %016" PRIx64 " (%.64s) already ran; its "
			 "reply is no longer kept",
			 req->request_id, m->name);
		sc_warn("rpc", "%s", text);
		rep = pack_reply(req, SC_STATUS_ABORTED, text, NULL, 0);
	}
out:
	splitchain__envelope__free_unpacked(req, NULL);
	return rep;
}

/* Starts a receive (send: rep != NULL) on c unless the server is closing;
 * 0 when started. */
static int ctx_start(rpc_ctx *c, nng_msg *rep)
{
	sc_rpc_server *srv = c->srv;
	int closing;

	pthread_rwlock_rdlock(&srv->close_lock);
	closing = atomic_load(&srv->closing);
	if (!closing && rep) {
		nng_aio_set_msg(c->aio, rep);
		nng_ctx_send(c->ctx, c->aio);
	} else if (!closing) {
		nng_ctx_recv(c->ctx, c->aio);
	}
	pthread_rwlock_unlock(&srv->close_lock);
	if (closing && rep)
		nng_msg_free(rep);
	return closing;
}

/* A context's thread: recv -> handle -> send until the socket closes. */
static void *serve(void *p)
{
	rpc_ctx *c = p;
	sc_rpc_server *srv = c->srv;
	nng_msg *msg, *rep;
	int rv;

	for (;;) {
		if (ctx_start(c, NULL))
			break;
		nng_aio_wait(c->aio);
		if ((rv = nng_aio_result(c->aio)) != 0) {
			if (rv == NNG_ECLOSED || atomic_load(&srv->closing))
				break;
			sc_warn("rpc", "%s: receive failed: %s", srv->url, nng_strerror(rv));
			nng_msleep(10);
			continue;
		}
		msg = nng_aio_get_msg(c->aio);
		nng_aio_set_msg(c->aio, NULL);
		atomic_fetch_add(&srv->busy, 1);
		rep = handle(srv, msg);
		nng_msg_free(msg);
		if (!rep) {
			atomic_fetch_sub(&srv->busy, 1);
			continue;
		}
		if (ctx_start(c, rep)) {
			atomic_fetch_sub(&srv->busy, 1);
			break;
		}
		nng_aio_wait(c->aio);
		atomic_fetch_sub(&srv->busy, 1);
		if ((rv = nng_aio_result(c->aio)) != 0) {
			nng_msg_free(nng_aio_get_msg(c->aio));
			nng_aio_set_msg(c->aio, NULL);
			if (rv == NNG_ECLOSED || atomic_load(&srv->closing))
				break;
			sc_warn("rpc", "%s: reply not sent: %s", srv->url, nng_strerror(rv));
		}
	}
	return NULL;
}

/* Writes the address l is bound to, in url's scheme, into srv->url. */
static void bound_url(sc_rpc_server *srv, nng_listener l, const char *url)
{
	const char *sep = strstr(url, "://");
	int scheme = sep ? (int)(sep - url) : 0;
	char host[INET6_ADDRSTRLEN];
	nng_sockaddr sa;

	snprintf(srv->url, sizeof(srv->url), "%s", url);
	if (!sep || nng_listener_get_addr(l, NNG_OPT_LOCADDR, &sa) != 0)
		return;
	if (sa.s_family == NNG_AF_INET) {
		inet_ntop(AF_INET, &sa.s_in.sa_addr, host, sizeof(host));
		snprintf(srv->url, sizeof(srv->url), "%.*s://%s:%u", scheme, url, host,
			 (unsigned)ntohs(sa.s_in.sa_port));
	} else if (sa.s_family == NNG_AF_INET6) {
		inet_ntop(AF_INET6, sa.s_in6.sa_addr, host, sizeof(host));
		snprintf(srv->url, sizeof(srv->url), "%.*s://[%s]:%u", scheme, url, host,
			 (unsigned)ntohs(sa.s_in6.sa_port));
	}
}

sc_err sc_rpc_server_open(sc_rpc_server **out, const char *url, const sc_rpc_method *methods,
			  void *arg, int nctx)
{
	return sc_rpc_server_open_idem(out, url, methods, arg, nctx, NULL);
}

sc_err sc_rpc_server_open_idem(sc_rpc_server **out, const char *url, const sc_rpc_method *methods,
			       void *arg, int nctx, const char *const *idempotent)
{
	return sc_rpc_server_open_auth(out, url, methods, arg, nctx, idempotent, NULL, NULL);
}

sc_err sc_rpc_server_open_auth(sc_rpc_server **out, const char *url, const sc_rpc_method *methods,
			       void *arg, int nctx, const char *const *idempotent,
			       sc_rpc_auth_fn auth, void *auth_arg)
{
	sc_rpc_server *srv = NULL;
	nng_listener l;
	sc_err err;
	int rv;

	*out = NULL;
	if (!url || !methods || nctx < 1 || nctx > MAX_CTX)
		return sc_errf(SC_EINVAL,
			       "rpc server: need a url, a method table and 1..%d "
			       "contexts (got %d)",
			       MAX_CTX, nctx);
	if (!(srv = calloc(1, sizeof(*srv))))
		return sc_errf(SC_ENOMEM, "rpc server: out of memory");
	pthread_rwlock_init(&srv->close_lock, NULL);
	if (!(srv->ctxs = calloc((size_t)nctx, sizeof(rpc_ctx))) ||
	    !(srv->memo.e = calloc(MEMO_CAP, sizeof(memo_entry)))) {
		err = sc_errf(SC_ENOMEM, "rpc server: out of memory");
		goto fail;
	}
	pthread_mutex_init(&srv->memo.mu, NULL);
	srv->methods = methods;
	while (methods[srv->nmethods].name)
		srv->nmethods++;
	if (!(srv->calls = calloc((size_t)srv->nmethods + 1, sizeof(*srv->calls))) ||
	    !(srv->failures = calloc((size_t)srv->nmethods + 1, sizeof(*srv->failures)))) {
		err = sc_errf(SC_ENOMEM, "rpc server: out of memory");
		goto fail;
	}
	srv->idempotent = idempotent;
	srv->arg = arg;
	srv->auth = auth;
	srv->auth_arg = auth_arg;
	snprintf(srv->url, sizeof(srv->url), "%s", url);
	if ((rv = nng_rep0_open(&srv->sock)) != 0) {
		err = sc_errf(nng_to_err(rv), "rpc server: open socket: %s", nng_strerror(rv));
		goto fail;
	}
	srv->sock_open = 1;
	if ((rv = nng_socket_set_size(srv->sock, NNG_OPT_RECVMAXSZ, SC_RPC_MAX_MSG)) != 0 ||
	    (rv = nng_listener_create(&l, srv->sock, url)) != 0) {
		err =
		    sc_errf(nng_to_err(rv), "rpc server: listen on %s: %s", url, nng_strerror(rv));
		goto fail;
	}
	if ((err = sc_tls_listener_setup(l, url)))
		goto fail;
	if ((rv = nng_listener_start(l, 0)) != 0) {
		err =
		    sc_errf(nng_to_err(rv), "rpc server: listen on %s: %s", url, nng_strerror(rv));
		goto fail;
	}
	bound_url(srv, l, url);
	if ((err = sc_listen_guard_start(&srv->guard, srv->sock, l, srv->url, nng_req0_open)))
		goto fail;
	for (int i = 0; i < nctx; i++) {
		rpc_ctx *c = &srv->ctxs[i];
		c->srv = srv;
		if ((rv = nng_ctx_open(&c->ctx, srv->sock)) != 0 ||
		    (rv = nng_aio_alloc(&c->aio, NULL, NULL)) != 0) {
			err = sc_errf(nng_to_err(rv), "rpc server %s: context: %s", srv->url,
				      nng_strerror(rv));
			goto fail;
		}
		srv->nctx = i + 1;
		if (pthread_create(&c->thread, NULL, serve, c) != 0) {
			err = sc_errf(SC_ENOMEM, "rpc server %s: cannot start a thread", srv->url);
			goto fail;
		}
		c->started = 1;
	}
	sc_debug("rpc", "serving %s with %d contexts", srv->url, nctx);
	*out = srv;
	return SC_OK;
fail:
	sc_rpc_server_close(srv);
	return err;
}

void sc_rpc_server_close(sc_rpc_server *srv)
{
	if (!srv)
		return;
	/* Closing the socket fails every pending receive and send with NNG_ECLOSED; a thread in
	 * a handler finishes it first, then finds closing set and starts nothing. */
	sc_listen_guard_stop(srv->guard);
	pthread_rwlock_wrlock(&srv->close_lock);
	atomic_store(&srv->closing, 1);
	if (srv->sock_open)
		nng_close(srv->sock);
	pthread_rwlock_unlock(&srv->close_lock);
	sc_listen_guard_free(srv->guard);
	for (int i = 0; i < srv->nctx; i++) {
		rpc_ctx *c = &srv->ctxs[i];
		if (c->started)
			pthread_join(c->thread, NULL);
		if (c->aio)
			nng_aio_free(c->aio);
	}
	memo_free(&srv->memo);
	pthread_rwlock_destroy(&srv->close_lock);
	free(srv->ctxs);
	free(srv->calls);
	free(srv->failures);
	free(srv);
}

int sc_rpc_server_busy(sc_rpc_server *srv)
{
	return srv ? atomic_load(&srv->busy) : 0;
}

unsigned sc_rpc_server_relistens(const sc_rpc_server *srv)
{
	return srv ? sc_listen_guard_relistens(srv->guard) : 0;
}

const char *sc_rpc_server_url(const sc_rpc_server *srv)
{
	return srv ? srv->url : "";
}

int sc_rpc_server_stats(const sc_rpc_server *srv, sc_rpc_method_stats *out, int n)
{
	for (int i = 0; i < n && i < srv->nmethods; i++) {
		out[i].method = srv->methods[i].name;
		out[i].calls = atomic_load(&srv->calls[i]);
		out[i].failures = atomic_load(&srv->failures[i]);
	}
	return srv->nmethods;
}
