/* pipes.c — a socket's live pipes from notifications that may arrive out
 * of order (sc_pipes.h). */
#include <nng/nng.h>
#include <string.h>

#include "sc_pipes.h"

void sc_pipes_init(sc_pipes *ps)
{
	memset(ps, 0, sizeof(*ps));
	pthread_mutex_init(&ps->mu, NULL);
}

void sc_pipes_fini(sc_pipes *ps)
{
	pthread_mutex_destroy(&ps->mu);
}

/* Called with mu held: where id is in the live set, -1 when it is not. */
static int live_at(const sc_pipes *ps, uint32_t id)
{
	for (int i = 0; i < ps->n_live; i++)
		if (ps->live[i] == id)
			return i;
	return -1;
}

/* Called with mu held: takes id out of the ring of early removals; 1 when
 * it was there. */
static int take_gone(sc_pipes *ps, uint32_t id)
{
	unsigned n = ps->n_gone < SC_PIPES_GONE ? ps->n_gone : SC_PIPES_GONE;
	for (unsigned i = 0; i < n; i++)
		if (ps->gone[i] == id) {
			ps->gone[i] = 0;
			return 1;
		}
	return 0;
}

int sc_pipes_event(sc_pipes *ps, uint32_t id, int ev)
{
	int changed = 0, at;

	if (!id || (ev != NNG_PIPE_EV_ADD_POST && ev != NNG_PIPE_EV_REM_POST))
		return 0;
	pthread_mutex_lock(&ps->mu);
	at = live_at(ps, id);
	if (ev == NNG_PIPE_EV_ADD_POST) {
		if (at < 0 && !take_gone(ps, id)) {
			if (ps->n_live == SC_PIPES_LIVE) { /* the oldest makes room */
				memmove(ps->live, ps->live + 1,
					sizeof(ps->live[0]) * (SC_PIPES_LIVE - 1));
				ps->n_live--;
			}
			ps->live[ps->n_live++] = id;
			changed = 1;
		}
	} else if (at >= 0) {
		memmove(ps->live + at, ps->live + at + 1,
			sizeof(ps->live[0]) * (size_t)(ps->n_live - at - 1));
		ps->n_live--;
		changed = 1;
	} else { /* gone before it came (or never will): its addition is void */
		ps->gone[ps->n_gone % SC_PIPES_GONE] = id;
		ps->n_gone++;
		ps->early++;
	}
	pthread_mutex_unlock(&ps->mu);
	return changed;
}

int sc_pipes_count(sc_pipes *ps)
{
	pthread_mutex_lock(&ps->mu);
	int n = ps->n_live;
	pthread_mutex_unlock(&ps->mu);
	return n;
}

uint32_t sc_pipes_newest(sc_pipes *ps)
{
	pthread_mutex_lock(&ps->mu);
	uint32_t id = ps->n_live ? ps->live[ps->n_live - 1] : 0;
	pthread_mutex_unlock(&ps->mu);
	return id;
}

unsigned long long sc_pipes_early(sc_pipes *ps)
{
	pthread_mutex_lock(&ps->mu);
	unsigned long long n = ps->early;
	pthread_mutex_unlock(&ps->mu);
	return n;
}
