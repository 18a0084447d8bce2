/* sc_rpc.h — gRPC-like request/response over nng.
 *
 * Every message is a protobuf Envelope (proto/splitchain.proto): magic and
 * version (anything else is dropped and logged), method name, request id,
 * deadline, and in replies a gRPC status code with a message. The server
 * runs several nng REP contexts at once, so one process serves many
 * callers; each context has its own thread, on which its handlers run (so a
 * handler may block, e.g. for a whole pipelined step). The server remembers the
 * replies to recent request ids: a retried request is answered from that
 * memory and never executed twice. Every socket has a maximum receive size
 * and every call a deadline; malformed input gets an error reply or is
 * dropped with a log line, never a crash.
 */
#ifndef SC_RPC_H
#define SC_RPC_H

#include <stddef.h>
#include <stdint.h>

#include "sc_err.h"

#define SC_RPC_MAGIC   0x53504C43u /* "SPLC" */
#define SC_RPC_VERSION 1u
#define SC_RPC_MAX_MSG (512u << 20) /* largest message a socket accepts */

/* gRPC's status codes. */
enum sc_status {
	SC_STATUS_OK = 0,
	SC_STATUS_CANCELLED = 1,
	SC_STATUS_UNKNOWN = 2,
	SC_STATUS_INVALID_ARGUMENT = 3,
	SC_STATUS_DEADLINE_EXCEEDED = 4,
	SC_STATUS_NOT_FOUND = 5,
	SC_STATUS_ALREADY_EXISTS = 6,
	SC_STATUS_PERMISSION_DENIED = 7,
	SC_STATUS_RESOURCE_EXHAUSTED = 8,
	SC_STATUS_FAILED_PRECONDITION = 9,
	SC_STATUS_ABORTED = 10,
	SC_STATUS_OUT_OF_RANGE = 11,
	SC_STATUS_UNIMPLEMENTED = 12,
	SC_STATUS_INTERNAL = 13,
	SC_STATUS_UNAVAILABLE = 14,
	SC_STATUS_DATA_LOSS = 15,
	SC_STATUS_UNAUTHENTICATED = 16,
};

/* "OK", "INVALID_ARGUMENT", ... Static. */
const char *sc_status_name(int status);

/* ------------------------------------------------------------ server */

/* What a handler returns: status (SC_STATUS_OK or an error code), a message
 * for errors (copied), and on success a reply body the handler allocated
 * with malloc (the server takes ownership and frees it). */
typedef struct sc_rpc_reply {
	int status;
	char message[512];
	uint8_t *body; /* malloc'd, or NULL for an empty body */
	size_t len;
} sc_rpc_reply;

/* A method handler. req/len are borrowed for the call. Called on one of the
 * server's threads, possibly concurrently with other handlers: the handler does its
 * own locking. */
typedef void (*sc_rpc_handler)(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep);

typedef struct sc_rpc_method {
	const char *name; /* "Coordinator.Submit" */
	sc_rpc_handler fn;
} sc_rpc_method;

typedef struct sc_rpc_server sc_rpc_server;
typedef struct sc_rpc_client sc_rpc_client;

/* Listens on url with nctx concurrent contexts. methods (terminated by a
 * {NULL, NULL} entry) and arg are borrowed for the server's lifetime.
 * *out = new server; stop and free with sc_rpc_server_close. */
sc_err sc_rpc_server_open(sc_rpc_server **out, const char *url, const sc_rpc_method *methods,
			  void *arg, int nctx);
/* The same, with idempotent (NULL-terminated, borrowed for the server's
 * lifetime) naming methods that give the same reply when run twice (reads,
 * such as a tensor chunk): a retried copy of one runs again, and its reply
 * is not kept in the retry memory, whose room goes to replies that must
 * not be made twice. */
sc_err sc_rpc_server_open_idem(sc_rpc_server **out, const char *url, const sc_rpc_method *methods,
			       void *arg, int nctx, const char *const *idempotent);
/* Stops serving (waits for handlers in flight) and frees. Accepts NULL. */
void sc_rpc_server_close(sc_rpc_server *srv);
/* The address actually bound (useful with tcp://127.0.0.1:0). Borrowed. */
const char *sc_rpc_server_url(const sc_rpc_server *srv);
/* How often the server's listener stopped accepting new connections and
 * listened again (sc_listen_guard.h). */
unsigned sc_rpc_server_relistens(const sc_rpc_server *srv);
/* Requests being handled: received, their replies not yet handed to nng.
 * A process about to stop waits for 0 so that its last answers go out. */
int sc_rpc_server_busy(sc_rpc_server *srv);

/* What the server's handlers have done since it opened, per method of its
 * table (the metrics endpoints): requests a handler ran (answers from the
 * retry memory and requests refused before any handler are not counted),
 * and of those the ones answered with a status other than OK. */
typedef struct sc_rpc_method_stats {
	const char *method; /* the table's name, borrowed */
	uint64_t calls, failures;
} sc_rpc_method_stats;
/* Fills out[0 .. min(n, methods)) in table order and returns how many
 * methods the table has. Thread-safe; never blocks. */
int sc_rpc_server_stats(const sc_rpc_server *srv, sc_rpc_method_stats *out, int n);
/* ------------------------------------------------------------ credentials */

/* Who made a request, as the server's authorisation hook decided. */
enum sc_principal_kind {
	SC_PRINCIPAL_ANYONE = 0,  /* a server without a hook: nobody was checked */
	SC_PRINCIPAL_USER,        /* a user's API token (id, name, admin) */
	SC_PRINCIPAL_JOINING,     /* a worker presenting the join token (Register) */
	SC_PRINCIPAL_WORKER,      /* a registered worker's session credential (id) */
	SC_PRINCIPAL_COORDINATOR, /* the coordinator, to a worker */
	SC_PRINCIPAL_PEER,        /* another worker of the cluster, to a worker */
	SC_PRINCIPAL_GENERATOR,   /* a user generating with job id, to a worker */
};

typedef struct sc_rpc_principal {
	enum sc_principal_kind kind;
	int64_t id; /* the user's, the worker's or the job's id; 0 otherwise */
	int admin;  /* users: an admin */
	char name[64];
	/* A keyed proof the credential carried that only the handler can
	 * check against the request (SC_PRINCIPAL_GENERATOR: the ticket's). */
	uint8_t proof[64];
} sc_rpc_principal;

/* The authorisation hook: decides from method and the request's credential
 * (cred/len borrowed for the call; len 0: none) who is calling. Returns
 * SC_STATUS_OK with *who filled, or a refusal (SC_STATUS_UNAUTHENTICATED,
 * SC_STATUS_PERMISSION_DENIED, SC_STATUS_RESOURCE_EXHAUSTED, ...) with a
 * message for the caller in msg (msg_size bytes; never the credential).
 * Runs on the server's threads before the retry memory and the handler,
 * possibly concurrently: it does its own locking. */
typedef int (*sc_rpc_auth_fn)(void *arg, const char *method, const uint8_t *cred, size_t len,
			      sc_rpc_principal *who, char *msg, size_t msg_size);

/* As sc_rpc_server_open_idem, with auth (may be NULL: every request runs,
 * as SC_PRINCIPAL_ANYONE) run on every request before anything else.
 * auth_arg is borrowed for the server's lifetime. The retry memory keys
 * replies by request id and credential, so that a retry is answered only
 * to the credential that made it. */
sc_err sc_rpc_server_open_auth(sc_rpc_server **out, const char *url, const sc_rpc_method *methods,
			       void *arg, int nctx, const char *const *idempotent,
			       sc_rpc_auth_fn auth, void *auth_arg);

/* The caller of the request a handler is running: valid only inside a
 * handler, on the thread that runs it (borrowed; never NULL). */
const sc_rpc_principal *sc_rpc_caller(void);

/* ------------------------------------------------------------ client */

/* Sets the credential every later request of cl carries (Envelope.auth):
 * cred/len copied (len 0: none, at most SC_RPC_MAX_AUTH bytes, longer ones
 * SC_EINVAL). A resend of a request carries the credential it was packed
 * with. Thread-safe. */
#define SC_RPC_MAX_AUTH 256
sc_err sc_rpc_client_set_auth(sc_rpc_client *cl, const void *cred, size_t len);

/* Sets how long a call waits for its reply before nng resends the request
 * on another try (ms <= 0: the default, 1 s; a big request adds 1 s per 32
 * MiB). Calls whose replies are big (tensor chunks over a slow link) want
 * a long one: a resend of a read makes the server send it all again, while
 * a lost connection resends at once anyway. For calls started afterwards. */
void sc_rpc_client_set_resend(sc_rpc_client *cl, int ms);

/* Dials url (asynchronously: the peer may come up later). *out = new
 * client; free with sc_rpc_client_close. Thread-safe: calls from several
 * threads run concurrently. */
sc_err sc_rpc_client_open(sc_rpc_client **out, const char *url);
/* Closes cl's socket and frees cl. Accepts NULL. Call it only once no call
 * is in flight on cl and none can start (join the calling threads first):
 * it must not race sc_rpc_call or sc_rpc_client_abort. */
void sc_rpc_client_close(sc_rpc_client *cl);

/* Makes every call in flight on cl, and every later one, return at once
 * with SC_STATUS_UNAVAILABLE — e.g. when its peer is known to be dead. It
 * marks cl aborted (until sc_rpc_client_rearm) and cancels the nng
 * operation of each call in flight; it does not close the socket and does
 * not wait for the calls to return (it takes only a short client-internal
 * lock). A call that had already got its reply may still return that.
 * Idempotent; safe from any thread while calls run, and with a lock of the
 * caller's held. cl must still be freed with sc_rpc_client_close once no
 * call uses it. */
void sc_rpc_client_abort(sc_rpc_client *cl);

/* Undoes sc_rpc_client_abort: later calls run again. Call it only once no
 * call of the aborted ones is in flight (join their threads first). Lets a
 * long-lived client (one per peer) be aborted and reused instead of closed,
 * which nng 1.5.2 can hang on when a late reply arrives. Accepts NULL. */
void sc_rpc_client_rearm(sc_rpc_client *cl);

/* Calls method with request body req/len, waiting at most timeout_ms.
 * On return *status holds the server's status (or UNAVAILABLE /
 * DEADLINE_EXCEEDED when no reply came) and msg (msg_size bytes, may be
 * NULL) its message; on SC_STATUS_OK *reply / *reply_len hold the reply
 * body (malloc'd, caller frees; NULL when empty). Returns SC_OK whenever a
 * status was obtained, including error statuses; an sc_err only for local
 * failures (out of memory). */
sc_err sc_rpc_call(sc_rpc_client *cl, const char *method, const uint8_t *req, size_t len,
		   int timeout_ms, int *status, char *msg, size_t msg_size, uint8_t **reply,
		   size_t *reply_len);

/* sc_rpc_call with credential cred/cred_len (at most SC_RPC_MAX_AUTH
 * bytes; cred_len 0: none) for this call only, in place of the client's
 * own (sc_rpc_client_set_auth), which other threads' calls keep carrying:
 * a worker registers with its join token over the client whose session
 * credential its other threads use meanwhile. */
sc_err sc_rpc_call_as(sc_rpc_client *cl, const void *cred, size_t cred_len, const char *method,
		      const uint8_t *req, size_t len, int timeout_ms, int *status, char *msg,
		      size_t msg_size, uint8_t **reply, size_t *reply_len);

#endif
