/* auth.h — who may call this worker (docs/security.md, "Workers").
 *
 * The worker draws a secret at start and sends it in its RegisterRequest over
 * the connection it dialled to the coordinator; the coordinator presents it
 * in every call it makes here. Other workers present the peer credential
 * (derived from the join token: only the cluster's workers have it) for
 * Worker.Echo and Worker.FetchTensor; a user generating with a job presents
 * the ticket the coordinator gave its owner (an HMAC under the secret of the
 * job and its model) for Worker.Gen*. Everything else is refused
 * PERMISSION_DENIED, logged, and reported in the next heartbeat (an event).
 *
 * The state is set once by worker_auth_init before any thread starts and
 * only read afterwards.
 */
#ifndef SC_WORKER_AUTH_H
#define SC_WORKER_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "sc_err.h"
#include "sc_rpc.h"

/* Draws the secret and reads the join token from join_token_file (NULL:
 * none; then peers' calls are not checked and only a coordinator started
 * with --insecure takes this worker). Borrows the path. */
sc_err worker_auth_init(const char *join_token_file);

/* The secret for RegisterRequest.coordinator_secret (static). */
const char *worker_auth_secret(void);

/* The join token (Register's credential, passed with that call alone:
 * sc_rpc_call_pb_as); "" without one. Static. */
const char *worker_auth_join_token(void);

/* Keeps the session credential of the latest registration (len bytes at
 * cred; none: 0) and sets it on the client of the coordinator, and on each
 * later worker_auth_session call's client. Thread-safe. */
void worker_auth_set_session(sc_rpc_client *coord, const uint8_t *cred, size_t len);
/* Sets the latest session credential on cl (another client of the
 * coordinator's, e.g. its tensor listener's). */
void worker_auth_session(sc_rpc_client *cl);

/* Sets the peer credential on cl (a client of another worker). */
void worker_auth_peer(sc_rpc_client *cl);

/* The server's hook (sc_rpc_auth_fn); arg is the worker. */
int worker_auth_check(void *arg, const char *method, const uint8_t *cred, size_t len,
		      sc_rpc_principal *who, char *msg, size_t msg_size);

/* For Worker.GenOpen, in its handler: 1 when the caller may open a session
 * on model_path / model (NULL: ""): the coordinator, or a ticket for
 * exactly these. */
int worker_auth_gen_allowed(const char *model_path, const char *model);

#endif
