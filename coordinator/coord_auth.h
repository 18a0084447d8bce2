/* coord_auth.h — who may call the coordinator, and what they may open
 * (docs/security.md).
 *
 * Credentials (Envelope.auth), told apart by their prefix:
 *  - the join token (any text; Coordinator.Register only): only its SHA-256
 *    is kept. Without --join-token-file the coordinator runs only with
 *    --insecure, and then any worker may join.
 *  - "scs_..." a worker's session credential, drawn at each registration
 *    and kept in memory only (a restarted coordinator answers the old one
 *    UNAUTHENTICATED and the worker registers again): the worker methods.
 *  - "sct_..." a user's API token (db_users.h): the CLI's methods. Admins
 *    may do everything; other users see and act on their own jobs only.
 * Every refusal is answered UNAUTHENTICATED (no valid credential),
 * PERMISSION_DENIED (valid, not allowed) or RESOURCE_EXHAUSTED (over a
 * limit) and recorded as an "auth_denied" event (at most EVENTS_PER_S a
 * second; the next one counts those left out). No event or log line holds a
 * credential.
 *
 * Paths: a job's model, data, eval data and tokenizer, and a registered
 * model's directory, are opened only under --model-root / --data-root
 * (default: the coordinator's working directory).
 *
 * Locking: the state has its own mutex (sessions), a leaf: taken with c->mu
 * held or not, and nothing is called under it. The rate limiter has its
 * own. Database calls (user lookups, events) are made with neither held.
 */
#ifndef SC_COORD_AUTH_H
#define SC_COORD_AUTH_H

#include <limits.h>
#include <stdint.h>

#include "db.h"
#include "sc_rpc.h"
#include "sc_token.h"

typedef struct coord_auth_opts {
	const char *join_token_file; /* NULL: none (then insecure must be set) */
	int insecure;                /* --insecure */
	const char *model_root;      /* NULL: the working directory */
	const char *data_root;       /* NULL: the working directory */
	int max_jobs_per_user;       /* queued + running; 0: no cap */
	double rate;                 /* a user's requests per second; 0: no limit */
	double burst;                /* ... in bursts of up to this many */
} coord_auth_opts;

typedef struct coord_auth coord_auth;

/* *out = new state from o (borrowed for the call); db is borrowed for the
 * state's life. SC_EINVAL (detail for the operator) for a missing join
 * token without --insecure, an unreadable token file or root. */
sc_err coord_auth_open(coord_auth **out, sc_db *db, const coord_auth_opts *o);
/* Accepts NULL. */
void coord_auth_free(coord_auth *a);

/* The RPC servers' hook (sc_rpc_auth_fn); arg is the coord_auth. */
int coord_auth_check(void *arg, const char *method, const uint8_t *cred, size_t len,
		     sc_rpc_principal *who, char *msg, size_t msg_size);

/* A new session credential for worker id (out: SC_TOKEN_MAX bytes),
 * replacing its last. SC_EIO when no randomness is to be had. */
sc_err coord_auth_session(coord_auth *a, int64_t worker_id, char *out);

/* In a handler: 1 when the caller may see and act on a job of owner_id (an
 * admin, or its owner); otherwise 0, with the refusal written into rep
 * (PERMISSION_DENIED) and recorded as an event. */
int coord_auth_job(coord_auth *a, int64_t job_id, int64_t owner_id, sc_rpc_reply *rep);

/* In a handler: 1 when the caller is an admin (or no credentials are
 * checked); otherwise 0, with the refusal in rep and an event. what names
 * the action ("registering a model"). */
int coord_auth_admin(coord_auth *a, const char *what, sc_rpc_reply *rep);

/* In Coordinator.Submit's handler: 0 when the caller may queue another
 * job; otherwise 1, with RESOURCE_EXHAUSTED in rep and an event. On 0 the
 * count stays valid until coord_auth_job_quota_done, which the handler
 * calls once the job is recorded (or refused): a capped user's submits are
 * counted and recorded one at a time, so that concurrent ones cannot all
 * take the last place. */
int coord_auth_job_quota(coord_auth *a, sc_rpc_reply *rep);
void coord_auth_job_quota_done(coord_auth *a);

/* The caller's user id for a new job's owner (0: none). */
int64_t coord_auth_owner(void);

/* Records a refusal as an event (bounded in rate), job_id 0 when none. */
void coord_auth_deny(coord_auth *a, int64_t job_id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

enum coord_root { COORD_MODEL_ROOT, COORD_DATA_ROOT };

/* Resolves path (absolute, inside the root, or relative to it) under root
 * into out (PATH_MAX bytes): its real path. SC_EINVAL when it leaves the
 * root (absolute elsewhere, "..", a symbolic link out) or is not there,
 * with a detail that names only path and the flag, never what lies
 * outside. what names the file ("data file"). */
sc_err coord_auth_path(const coord_auth *a, enum coord_root root, const char *what,
		       const char *path, char *out);

#endif
