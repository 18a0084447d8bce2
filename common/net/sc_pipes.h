/* sc_pipes.h — the live connections of an nng socket, kept from its pipe
 * notifications in whatever order nng delivers them.
 *
 * nng 1.5.2 (Debian 12's libnng) can call a dialer's NNG_PIPE_EV_REM_POST
 * for a pipe before that pipe's NNG_PIPE_EV_ADD_POST (nng #961, fixed
 * upstream long after 1.5.2): a connection that closes while it is being
 * added is destroyed on nng's reaper thread, which calls REM_POST at once,
 * while the thread adding it has still to call ADD_POST. And a pipe
 * closed before it was started gets a REM_POST and no ADD_POST at all.
 * Counting ADD_POST minus REM_POST then drifts: one too high, a client
 * believes it holds a connection it lost, never dials again (nng's own
 * dialer may have stopped, sc_listen_guard.h) and waits out every call for
 * good — a worker that never hears from a restarted coordinator; one too
 * low, it dials again over a connection that works.
 *
 * A set remembers the removals that came first (the last SC_PIPES_GONE of
 * them) and drops the additions they cancel. It holds up to SC_PIPES_LIVE
 * live pipes (a dialer has one, two while one is replaced); more push the
 * oldest out. Callbacks may run on any nng thread: every call takes the
 * set's lock, never held while calling out.
 */
#ifndef SC_PIPES_H
#define SC_PIPES_H

#include <pthread.h>
#include <stdint.h>

#define SC_PIPES_LIVE 8
#define SC_PIPES_GONE 32

typedef struct sc_pipes {
	pthread_mutex_t mu;
	uint32_t live[SC_PIPES_LIVE]; /* oldest first */
	int n_live;
	uint32_t gone[SC_PIPES_GONE]; /* a ring of removals seen before their addition */
	unsigned n_gone;              /* removals recorded so far; the ring's next slot */
	unsigned long long early;     /* removals of pipes not live, for logs and tests */
} sc_pipes;

void sc_pipes_init(sc_pipes *ps);
void sc_pipes_fini(sc_pipes *ps);

/* Records NNG_PIPE_EV_ADD_POST or NNG_PIPE_EV_REM_POST (ev, as nng passes
 * it) of pipe id; other events are ignored. Returns 1 when the live set
 * changed (a pipe that became live, or one that went), else 0. */
int sc_pipes_event(sc_pipes *ps, uint32_t id, int ev);

/* How many pipes are live. */
int sc_pipes_count(sc_pipes *ps);

/* The live pipe added last, 0 when none is. */
uint32_t sc_pipes_newest(sc_pipes *ps);

/* How many removals so far were of a pipe not live: one whose addition
 * was still to come, or never came. */
unsigned long long sc_pipes_early(sc_pipes *ps);

#endif
