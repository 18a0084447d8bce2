/* sc_listen_guard.h — keeps a long-lived nng listener accepting.
 *
 * nng 1.5.2 (Debian 12's libnng) can stop accepting on a listener for good:
 * a client that closes its connection at the wrong moment of the TLS
 * handshake leaves the listener with that connection half negotiated and
 * no accept in flight (nng issue #1518 and its relatives, fixed upstream
 * after 1.5.2). Established connections keep working, so nothing fails
 * until a new peer — a restarted worker, the CLI — is never answered. Any
 * host that can reach the port could provoke it on purpose.
 *
 * A guard watches one listener from a thread of its own. It holds one
 * connection of the peer protocol to the listener's address (a REQ socket
 * for a REP server), and every SC_LISTEN_GUARD_PERIOD_MS drops it and
 * waits for the guarded socket to take a new connection in (its pipe
 * notification; the probe's own side completes its handshake even when
 * the listener no longer hands connections to the socket, so that proves
 * nothing). Two probes in a row after which the socket took no connection
 * within SC_LISTEN_GUARD_WAIT_MS close the listener and listen
 * again on the same address (its port, when it was 0, stays the one the
 * kernel chose), which a warning logs; peers reconnect by themselves.
 * Over TLS the probe presents the process's own certificate
 * (sc_tls_probe_dialer_setup). The probe sends no message, so a server
 * sees only a connection come and go.
 */
#ifndef SC_LISTEN_GUARD_H
#define SC_LISTEN_GUARD_H

#include <nng/nng.h>

#include "sc_err.h"

#define SC_LISTEN_GUARD_PERIOD_MS 2000
#define SC_LISTEN_GUARD_WAIT_MS   4000

typedef struct sc_listen_guard sc_listen_guard;

/* Opens a socket of the protocol that talks to the listener's (nng_req0_open
 * for a REP server). */
typedef int (*sc_listen_guard_peer_fn)(nng_socket *s);

/* Starts guarding listener l of socket s, bound at url (tcp, tls+tcp or ipc,
 * with the port it is bound to). It takes s's NNG_PIPE_EV_ADD_POST
 * notification. Other schemes (inproc) need no guard: *out is NULL and the
 * call succeeds. */
sc_err sc_listen_guard_start(sc_listen_guard **out, nng_socket s, nng_listener l, const char *url,
			     sc_listen_guard_peer_fn open_peer);
/* Stops the guard's thread and its probe: before closing the socket. */
void sc_listen_guard_stop(sc_listen_guard *g);
/* Frees it (stopping it first): after closing the socket, whose pipe
 * notifications reach the guard until then. NULL is fine. */
void sc_listen_guard_free(sc_listen_guard *g);
/* How many times the guard has listened again. */
unsigned sc_listen_guard_relistens(const sc_listen_guard *g);

/* The dialing side of the same nng 1.5.2 fault: a dialer whose connection
 * is closed in the middle of its handshake (its server restarted, or
 * closed the socket it dialled) stops dialing for good. Callers that have
 * had no connection for SC_REDIAL_AFTER_MS while they need one replace
 * their dialer: sc_redial closes *d and starts a new one on url
 * (non-blocking, with sc_tls_dialer_setup), into *d. A dialer that is
 * merely retrying an absent server loses nothing by it. */
#define SC_REDIAL_AFTER_MS 1500
sc_err sc_redial(nng_socket s, nng_dialer *d, const char *url);

/* Closes listener *l of socket s and listens again on url (a resolved
 * port), into *l: for a listener that waits for one known peer (a data
 * plane's) and has had no connection for SC_REDIAL_AFTER_MS, which may be
 * one nng 1.5.2 stopped. */
sc_err sc_relisten(nng_socket s, nng_listener *l, const char *url);

#endif
