/* sc_tls.h — mutual TLS for every tls+tcp:// listener and dialer.
 *
 * One process-wide setting, made once at start from the party's
 * certificate, key and the cluster CA (--tls-cert/--tls-key/--tls-ca):
 * sc_tls_init checks the files (readable, PEM, the key matches the
 * certificate, the certificate is signed by the CA) and names the file at
 * fault. Afterwards every socket the RPC and data-plane modules open with a
 * tls+tcp:// URL gets nng's TLS (mbedTLS) with TLS 1.2 at least: a listener
 * requires a client certificate signed by the CA
 * (NNG_TLS_AUTH_MODE_REQUIRED), a dialer checks the server's certificate
 * against the CA and the URL's host name. Other schemes are left alone.
 *
 * Refused handshakes: nng 1.5.2 has no callback for them, but a listener's
 * statistics count them ("auth": the peer failed verification or the
 * handshake, which is what a plaintext peer or a foreign certificate
 * does; "proto": a broken exchange). sc_tls_refusals compares those
 * counters of every TLS listener with what it saw last, so a daemon that
 * calls it now and then learns of each refusal (not the peer's address:
 * nng keeps none for a connection that never became a pipe).
 *
 * Thread-safe: one internal lock, never held across a call into nng that
 * may block.
 */
#ifndef SC_TLS_H
#define SC_TLS_H

#include <stdint.h>

#include <nng/nng.h>

#include "sc_err.h"

/* Checks the three files and makes them this process's TLS identity
 * (replacing an earlier one). Paths are copied. On error nothing changes
 * and the detail names the file and what is wrong with it. */
sc_err sc_tls_init(const char *cert, const char *key, const char *ca);
/* Forgets the identity; tls+tcp:// URLs fail again. */
void sc_tls_fini(void);
/* 1 once sc_tls_init succeeded. */
int sc_tls_enabled(void);

/* 1 when url uses TLS (tls+tcp://). */
int sc_tls_url(const char *url);

/* A daemon's check of one of its addresses (what: "--listen"): tls+tcp://
 * needs sc_tls_init first; tcp:// needs insecure; ipc:// and inproc://
 * pass. On error the detail says what to do. */
sc_err sc_tls_check_url(const char *what, const char *url, int insecure);

/* Gives listener l (created on url, not started) the server side of the
 * TLS identity when url is tls+tcp://, and remembers it for
 * sc_tls_refusals; nothing for other schemes. */
sc_err sc_tls_listener_setup(nng_listener l, const char *url);
/* Gives dialer d (created on url, not started) a client configuration
 * that checks the server against the CA and url's host name. */
sc_err sc_tls_dialer_setup(nng_dialer d, const char *url);

/* For a dialer to one of this process's own listeners (sc_listen_guard's
 * probe): presents the process's certificate and checks nothing of the
 * server's. Nothing for other schemes. */
sc_err sc_tls_probe_dialer_setup(nng_dialer d, const char *url);

/* Called once per TLS listener with refusals since the last call: url
 * (borrowed for the call) and how many. */
typedef void (*sc_tls_refusal_fn)(void *arg, const char *url, uint64_t n);
/* Reads the TLS listeners' statistics and reports new refusals to fn.
 * Listeners that were closed are forgotten. Not for concurrent callers
 * (one poller per process). */
void sc_tls_refusals(sc_tls_refusal_fn fn, void *arg);

#endif
