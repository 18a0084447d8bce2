/* listen_guard.c — a thread per long-lived listener that proves, every
 * couple of seconds, that a new connection can still be accepted, and
 * listens again when it cannot; and the dialers' counterpart, sc_redial
 * (sc_listen_guard.h). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sc_listen_guard.h"
#include "sc_log.h"
#include "sc_pipes.h"
#include "sc_tls.h"

#define URL_CAP 300
#define STEP_MS 50 /* how often a probe looks for its connection */

struct sc_listen_guard {
	nng_socket sock;
	nng_listener l;
	char url[URL_CAP];  /* where the listener listens */
	char dial[URL_CAP]; /* where the probe dials: a wildcard host made loopback */
	sc_listen_guard_peer_fn open_peer;
	nng_socket probe;
	int probe_open;
	atomic_uint accepted; /* connections the guarded socket has taken in */
	sc_pipes pipes;       /* the probe's connection */
	atomic_uint relistens;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int stop;
	int started; /* the thread runs */
	pthread_t thread;
};

/* The probe's side: which connection to drop next. */
static void on_probe_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	sc_pipes_event(&((sc_listen_guard *)arg)->pipes, nng_pipe_id(p), ev);
}

/* The guarded socket's side: a connection the listener accepted and handed
 * to the socket (what stops when nng's listener stops accepting; the
 * probe's own connection completes its handshake either way). */
static void on_accepted(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	(void)p;
	(void)ev;
	atomic_fetch_add(&((sc_listen_guard *)arg)->accepted, 1);
}

/* g->dial from g->url: a wildcard host (0.0.0.0, ::, *, none) is dialled
 * on the loopback address of its family. */
static void dial_url(sc_listen_guard *g)
{
	static const struct {
		const char *host, *loop;
	} wild[] = { { "0.0.0.0:", "127.0.0.1:" },
		     { "[::]:", "[::1]:" },
		     { "*:", "127.0.0.1:" },
		     { ":", "127.0.0.1:" } };
	const char *sep = strstr(g->url, "://");

	snprintf(g->dial, sizeof(g->dial), "%s", g->url);
	if (!sep || strncmp(g->url, "ipc", 3) == 0)
		return;
	sep += 3;
	for (size_t i = 0; i < sizeof(wild) / sizeof(wild[0]); i++)
		if (strncmp(sep, wild[i].host, strlen(wild[i].host)) == 0) {
			snprintf(g->dial, sizeof(g->dial), "%.*s%s%s", (int)(sep - g->url), g->url,
				 wild[i].loop, sep + strlen(wild[i].host));
			return;
		}
}

static int open_probe(sc_listen_guard *g)
{
	nng_dialer d;
	sc_err err;
	int rv;

	if (g->probe_open)
		return 0;
	if ((rv = g->open_peer(&g->probe)) != 0) {
		sc_warn("net", "listener %s: cannot open its probe: %s", g->url, nng_strerror(rv));
		return -1;
	}
	g->probe_open = 1;
	if ((rv = nng_socket_set_ms(g->probe, NNG_OPT_RECONNMINT, STEP_MS)) ||
	    (rv = nng_socket_set_ms(g->probe, NNG_OPT_RECONNMAXT, 500)) ||
	    (rv = nng_pipe_notify(g->probe, NNG_PIPE_EV_ADD_POST, on_probe_pipe, g)) ||
	    (rv = nng_pipe_notify(g->probe, NNG_PIPE_EV_REM_POST, on_probe_pipe, g)) ||
	    (rv = nng_dialer_create(&d, g->probe, g->dial))) {
		sc_warn("net", "listener %s: cannot set its probe up: %s", g->url,
			nng_strerror(rv));
		return -1;
	}
	if ((err = sc_tls_probe_dialer_setup(d, g->dial))) {
		sc_warn("net", "listener %s: probe: %s", g->url, sc_err_detail());
		return -1;
	}
	if ((rv = nng_dialer_start(d, NNG_FLAG_NONBLOCK))) {
		sc_warn("net", "listener %s: cannot start its probe: %s", g->url, nng_strerror(rv));
		return -1;
	}
	return 0;
}

/* Waits up to ms (or until stop) under g->mu: 1 when stopped. */
static int wait_ms(sc_listen_guard *g, int ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	while (!g->stop && pthread_cond_timedwait(&g->cv, &g->mu, &ts) == 0)
		;
	return g->stop;
}

/* Drops the probe's connection and waits for the socket to accept a new
 * one (the probe's next, or anyone's): 1 when it did (or the guard is
 * stopping), 0 when none came within SC_LISTEN_GUARD_WAIT_MS. */
static int probe(sc_listen_guard *g)
{
	unsigned before = atomic_load(&g->accepted), pipe = sc_pipes_newest(&g->pipes);
	int ok = 0, stopped = 0;

	if (pipe) {
		nng_pipe p = NNG_PIPE_INITIALIZER;
		p.id = pipe;
		nng_pipe_close(p);
	}
	pthread_mutex_lock(&g->mu);
	for (int t = 0; t < SC_LISTEN_GUARD_WAIT_MS && !ok && !stopped; t += STEP_MS) {
		stopped = wait_ms(g, STEP_MS);
		ok = atomic_load(&g->accepted) != before;
	}
	pthread_mutex_unlock(&g->mu);
	return ok || stopped;
}

sc_err sc_relisten(nng_socket s, nng_listener *l, const char *url)
{
	nng_listener nl;
	sc_err err;
	int rv;

	nng_listener_close(*l);
	if ((rv = nng_listener_create(&nl, s, url)) != 0)
		return sc_errf(SC_EIO, "listening on %s again: %s", url, nng_strerror(rv));
	if ((err = sc_tls_listener_setup(nl, url))) {
		nng_listener_close(nl);
		return err;
	}
	if ((rv = nng_listener_start(nl, 0)) != 0) {
		nng_listener_close(nl);
		return sc_errf(SC_EIO, "listening on %s again: %s", url, nng_strerror(rv));
	}
	*l = nl;
	return SC_OK;
}

static void relisten(sc_listen_guard *g)
{
	if (sc_relisten(g->sock, &g->l, g->url)) {
		sc_warn("net", "listener %s stopped accepting connections: %s", g->url,
			sc_err_detail());
		return;
	}
	atomic_fetch_add(&g->relistens, 1);
	sc_warn("net",
		"listener %s stopped accepting connections (no new connection for %d s): "
		"listening again",
		g->url, 2 * SC_LISTEN_GUARD_WAIT_MS / 1000);
}

static void *guard_main(void *arg)
{
	sc_listen_guard *g = arg;
	int fails = 0;

	for (;;) {
		pthread_mutex_lock(&g->mu);
		int stopped = wait_ms(g, SC_LISTEN_GUARD_PERIOD_MS);
		pthread_mutex_unlock(&g->mu);
		if (stopped)
			break;
		if (open_probe(g) != 0)
			break; /* logged; the listener goes unguarded */
		if (probe(g))
			fails = 0;
		else if (++fails >= 2) {
			relisten(g);
			fails = 0;
		}
	}
	return NULL;
}

sc_err sc_listen_guard_start(sc_listen_guard **out, nng_socket s, nng_listener l, const char *url,
			     sc_listen_guard_peer_fn open_peer)
{
	sc_listen_guard *g;
	int rv;

	*out = NULL;
	if (strncmp(url, "tcp", 3) != 0 && !sc_tls_url(url) && strncmp(url, "ipc", 3) != 0)
		return SC_OK;
	if (strlen(url) >= URL_CAP)
		return sc_errf(SC_EINVAL, "listen guard: address too long: %s", url);
	if (!(g = calloc(1, sizeof(*g))))
		return sc_errf(SC_ENOMEM, "listen guard: out of memory");
	g->sock = s;
	g->l = l;
	g->open_peer = open_peer;
	snprintf(g->url, sizeof(g->url), "%s", url);
	dial_url(g);
	pthread_mutex_init(&g->mu, NULL);
	pthread_cond_init(&g->cv, NULL);
	sc_pipes_init(&g->pipes);
	if ((rv = nng_pipe_notify(s, NNG_PIPE_EV_ADD_POST, on_accepted, g)) != 0) {
		sc_listen_guard_free(g);
		return sc_errf(SC_EIO, "listen guard %s: %s", url, nng_strerror(rv));
	}
	if (pthread_create(&g->thread, NULL, guard_main, g) != 0) {
		nng_pipe_notify(s, NNG_PIPE_EV_ADD_POST, NULL, NULL);
		sc_listen_guard_free(g);
		return sc_errf(SC_ENOMEM, "listen guard %s: cannot start a thread", url);
	}
	g->started = 1;
	*out = g;
	return SC_OK;
}

void sc_listen_guard_stop(sc_listen_guard *g)
{
	if (!g || !g->started)
		return;
	pthread_mutex_lock(&g->mu);
	g->stop = 1;
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->mu);
	pthread_join(g->thread, NULL);
	g->started = 0;
	if (g->probe_open)
		nng_close(g->probe);
	g->probe_open = 0;
}

void sc_listen_guard_free(sc_listen_guard *g)
{
	if (!g)
		return;
	sc_listen_guard_stop(g);
	sc_pipes_fini(&g->pipes);
	pthread_cond_destroy(&g->cv);
	pthread_mutex_destroy(&g->mu);
	free(g);
}

sc_err sc_redial(nng_socket s, nng_dialer *d, const char *url)
{
	nng_dialer nd;
	sc_err err;
	int rv;

	nng_dialer_close(*d);
	if ((rv = nng_dialer_create(&nd, s, url)) != 0)
		return sc_errf(SC_EIO, "dialing %s again: %s", url, nng_strerror(rv));
	if ((err = sc_tls_dialer_setup(nd, url))) {
		nng_dialer_close(nd);
		return err;
	}
	if ((rv = nng_dialer_start(nd, NNG_FLAG_NONBLOCK)) != 0) {
		nng_dialer_close(nd);
		return sc_errf(SC_EIO, "dialing %s again: %s", url, nng_strerror(rv));
	}
	*d = nd;
	sc_debug("net", "%s: no connection for %d ms: dialing again", url, SC_REDIAL_AFTER_MS);
	return SC_OK;
}

unsigned sc_listen_guard_relistens(const sc_listen_guard *g)
{
	return g ? atomic_load(&g->relistens) : 0;
}
