/* pipes_test.c — a socket's live connections from pipe notifications that
 * nng 1.5.2 may deliver out of order (sc_pipes.h): each order by hand,
 * the limits of the set, threads racing, and real nng sockets whose
 * connections close as they are added. */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>

#include "sc_pipes.h"
#include "testutil.h"

#define ADD NNG_PIPE_EV_ADD_POST
#define REM NNG_PIPE_EV_REM_POST

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

static void in_order(void **state)
{
	sc_pipes ps;
	(void)state;
	sc_pipes_init(&ps);
	assert_int_equal(sc_pipes_count(&ps), 0);
	assert_int_equal(sc_pipes_newest(&ps), 0);
	assert_int_equal(sc_pipes_event(&ps, 5, ADD), 1);
	assert_int_equal(sc_pipes_count(&ps), 1);
	assert_int_equal(sc_pipes_newest(&ps), 5);
	assert_int_equal(sc_pipes_event(&ps, 6, ADD), 1); /* a dialer being replaced */
	assert_int_equal(sc_pipes_newest(&ps), 6);
	assert_int_equal(sc_pipes_event(&ps, 6, REM), 1);
	assert_int_equal(sc_pipes_newest(&ps), 5);
	assert_int_equal(sc_pipes_event(&ps, 5, REM), 1);
	assert_int_equal(sc_pipes_count(&ps), 0);
	assert_int_equal(sc_pipes_early(&ps), 0);
	/* Repeats, other events and id 0 change nothing. */
	assert_int_equal(sc_pipes_event(&ps, 7, ADD), 1);
	assert_int_equal(sc_pipes_event(&ps, 7, ADD), 0);
	assert_int_equal(sc_pipes_event(&ps, 8, NNG_PIPE_EV_ADD_PRE), 0);
	assert_int_equal(sc_pipes_event(&ps, 0, ADD), 0);
	assert_int_equal(sc_pipes_count(&ps), 1);
	sc_pipes_fini(&ps);
}

/* nng #961: REM_POST first. A counter would end at 1 with nothing live. */
static void removal_before_addition(void **state)
{
	sc_pipes ps;
	(void)state;
	sc_pipes_init(&ps);
	assert_int_equal(sc_pipes_event(&ps, 9, REM), 0);
	assert_int_equal(sc_pipes_early(&ps), 1);
	assert_int_equal(sc_pipes_event(&ps, 9, ADD), 0); /* void */
	assert_int_equal(sc_pipes_count(&ps), 0);
	assert_int_equal(sc_pipes_newest(&ps), 0);
	/* The next connection counts, once. */
	assert_int_equal(sc_pipes_event(&ps, 10, ADD), 1);
	assert_int_equal(sc_pipes_count(&ps), 1);
	assert_int_equal(sc_pipes_event(&ps, 10, REM), 1);
	assert_int_equal(sc_pipes_count(&ps), 0);
	sc_pipes_fini(&ps);
}

/* A pipe closed before it started: REM_POST and no ADD_POST. A counter
 * would end at -1 and a live connection would look like none. */
static void removal_without_addition(void **state)
{
	sc_pipes ps;
	(void)state;
	sc_pipes_init(&ps);
	assert_int_equal(sc_pipes_event(&ps, 11, REM), 0);
	assert_int_equal(sc_pipes_event(&ps, 12, ADD), 1);
	assert_int_equal(sc_pipes_count(&ps), 1);
	assert_int_equal(sc_pipes_newest(&ps), 12);
	sc_pipes_fini(&ps);
}

static void limits(void **state)
{
	sc_pipes ps;
	(void)state;
	sc_pipes_init(&ps);
	/* More live pipes than the set holds: the oldest go. */
	for (uint32_t id = 100; id < 100 + SC_PIPES_LIVE + 3; id++)
		sc_pipes_event(&ps, id, ADD);
	assert_int_equal(sc_pipes_count(&ps), SC_PIPES_LIVE);
	assert_int_equal(sc_pipes_newest(&ps), 100 + SC_PIPES_LIVE + 2);
	assert_int_equal(sc_pipes_event(&ps, 100, REM), 0); /* pushed out before */
	for (uint32_t id = 103; id < 100 + SC_PIPES_LIVE + 3; id++)
		assert_int_equal(sc_pipes_event(&ps, id, REM), 1);
	assert_int_equal(sc_pipes_count(&ps), 0);
	/* Early removals: the last SC_PIPES_GONE are remembered. */
	for (uint32_t id = 1000; id < 1000 + SC_PIPES_GONE + 4; id++)
		sc_pipes_event(&ps, id, REM);
	for (uint32_t id = 1004; id < 1000 + SC_PIPES_GONE + 4; id++)
		assert_int_equal(sc_pipes_event(&ps, id, ADD), 0);
	assert_int_equal(sc_pipes_count(&ps), 0);
	sc_pipes_fini(&ps);
}

/* Two threads deliver each pipe's two events, in either order: batches of
 * BATCH pipes, a barrier between batches (nng's gap between the two events
 * of one pipe is short; the set remembers SC_PIPES_GONE early removals). */
enum { BATCH = 16, BATCHES = 20000 };

typedef struct racer_arg {
	sc_pipes *ps;
	pthread_barrier_t *bar;
	int adds_odd; /* this thread adds the odd ids and removes the even */
} racer_arg;

static void *racer(void *arg)
{
	racer_arg *a = arg;
	for (uint32_t b = 0; b < BATCHES; b++) {
		pthread_barrier_wait(a->bar);
		for (uint32_t i = 0; i < BATCH; i++) {
			uint32_t id = 1 + b * BATCH + i;
			sc_pipes_event(a->ps, id, (int)(id & 1) == a->adds_odd ? ADD : REM);
		}
	}
	return NULL;
}

static void threads_race(void **state)
{
	sc_pipes ps;
	pthread_barrier_t bar;
	racer_arg a[2];
	pthread_t t[2];
	(void)state;
	sc_pipes_init(&ps);
	pthread_barrier_init(&bar, NULL, 2);
	for (int k = 0; k < 2; k++) {
		a[k] = (racer_arg){ .ps = &ps, .bar = &bar, .adds_odd = k };
		assert_int_equal(pthread_create(&t[k], NULL, racer, &a[k]), 0);
	}
	for (int k = 0; k < 2; k++)
		pthread_join(t[k], NULL);
	/* Every pipe came and went: none is live, whatever the order. */
	assert_int_equal(sc_pipes_count(&ps), 0);
	assert_true(sc_pipes_early(&ps) > 0); /* both orders happened */
	assert_true(sc_pipes_early(&ps) < (unsigned long long)BATCH * BATCHES);
	pthread_barrier_destroy(&bar);
	sc_pipes_fini(&ps);
}

/* Real sockets: a REP server closes every connection as it takes it in,
 * and the REQ client's own additions are slowed (an ADD_PRE callback that
 * sleeps), so that connections close while nng adds them — the moment
 * nng 1.5.2 reports out of order. Once the server is gone the client
 * holds nothing, and its set must say so. */
typedef struct churn {
	sc_pipes ps;
	atomic_int naive; /* ADD_POST minus REM_POST */
	atomic_int accepted;
} churn;

static void client_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	churn *c = arg;
	if (ev == NNG_PIPE_EV_ADD_PRE) {
		sleep_ms(1);
		return;
	}
	atomic_fetch_add(&c->naive, ev == ADD ? 1 : -1);
	sc_pipes_event(&c->ps, nng_pipe_id(p), ev);
}

static void server_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	(void)ev;
	atomic_fetch_add(&((churn *)arg)->accepted, 1);
	nng_pipe_close(p);
}

static void connections_closed_as_added(void **state)
{
	churn c = { 0 };
	nng_socket srv, cli;
	nng_listener l;
	nng_dialer d;
	nng_sockaddr sa;
	char url[64];
	(void)state;
	sc_pipes_init(&c.ps);
	assert_int_equal(nng_rep0_open(&srv), 0);
	assert_int_equal(nng_pipe_notify(srv, NNG_PIPE_EV_ADD_POST, server_pipe, &c), 0);
	assert_int_equal(nng_listen(srv, "tcp://127.0.0.1:0", &l, 0), 0);
	assert_int_equal(nng_listener_get_addr(l, NNG_OPT_LOCADDR, &sa), 0);
	snprintf(url, sizeof(url), "tcp://127.0.0.1:%u", ntohs(sa.s_in.sa_port));
	assert_int_equal(nng_req0_open(&cli), 0);
	assert_int_equal(nng_socket_set_ms(cli, NNG_OPT_RECONNMINT, 1), 0);
	assert_int_equal(nng_socket_set_ms(cli, NNG_OPT_RECONNMAXT, 5), 0);
	for (int ev = NNG_PIPE_EV_ADD_PRE; ev <= NNG_PIPE_EV_REM_POST; ev++)
		assert_int_equal(nng_pipe_notify(cli, (nng_pipe_ev)ev, client_pipe, &c), 0);
	assert_int_equal(nng_dialer_create(&d, cli, url), 0);
	assert_int_equal(nng_dialer_start(d, NNG_FLAG_NONBLOCK), 0);
	for (int i = 0; i < 1000 && atomic_load(&c.accepted) < 300; i++)
		sleep_ms(10);
	assert_true(atomic_load(&c.accepted) >= 300);
	nng_close(srv);
	/* Every connection the client had is closed now; the last removals
	 * reach the callbacks within moments. */
	int n = -1;
	for (int i = 0; i < 300 && (n = sc_pipes_count(&c.ps)) != 0; i++)
		sleep_ms(10);
	printf("# %d connections, the client's counter %d, its set %d live, %llu removals "
	       "of pipes not live\n",
	       atomic_load(&c.accepted), atomic_load(&c.naive), n, sc_pipes_early(&c.ps));
	assert_int_equal(n, 0);
	nng_close(cli);
	sc_pipes_fini(&c.ps);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(in_order),
		cmocka_unit_test(removal_before_addition),
		cmocka_unit_test(removal_without_addition),
		cmocka_unit_test(limits),
		cmocka_unit_test(threads_race),
		cmocka_unit_test(connections_closed_as_added),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
