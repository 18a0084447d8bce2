/* fake_coord.h — a stand-in coordinator for testing splitchain-worker: it
 * answers Coordinator.Register and Coordinator.Heartbeat over sc_rpc and
 * records what the workers told it; plus starting and reaping worker
 * processes. One per test process (module state). */
#ifndef SC_FAKE_COORD_H
#define SC_FAKE_COORD_H

#include <stdint.h>
#include <sys/types.h>

#include "sc_err.h"

#define FAKE_WORKERS      2 /* workers named wk0, wk1; any other name is refused */
#define FAKE_HEARTBEAT_MS 100
#define FAKE_LEASE_MS     1000

typedef struct fake_worker {
	char name[64], control[300], data[300];
	char secret[128]; /* what it takes from its coordinator (RegisterRequest) */
	uint64_t id;      /* from the latest registration */
	int registrations, heartbeats;
	/* what its latest register / heartbeat said it holds */
	uint64_t held_job;
	uint32_t held_version, held_stage;
	int notices;           /* data-plane refusals reported so far */
	char last_notice[300]; /* the latest of them */
} fake_worker;

/* Serves on url (tcp://127.0.0.1:0 picks a port). */
sc_err fake_coord_open(const char *url);
/* Stops serving; fake_coord_url() stays valid for a later open. */
void fake_coord_close(void);
/* The address bound by the last open. Borrowed. */
const char *fake_coord_url(void);

/* Copies worker k's record into *out; returns its registrations. */
int fake_coord_get(int k, fake_worker *out);
/* Forgets every worker: heartbeats of ids issued so far get NOT_FOUND.
 * Returns the first id still valid. */
uint64_t fake_coord_forget(void);

/* From now on, answers worker k's heartbeats with a release of (job,
 * version); job 0 stops. */
void fake_coord_fence(int k, uint64_t job, uint32_t version);
/* Nonzero: register and heartbeat are answered UNAVAILABLE, as by a
 * coordinator the worker cannot reach. */
void fake_coord_mute(int on);

/* Waits up to secs for cond(k, arg) to hold for every worker k; 0 when it
 * did, 1 on timeout. */
int fake_wait_all(int (*cond)(int k, void *arg), void *arg, double secs);

/* Starts worker process k (name wk<k>) of the binary bin, registering with
 * the fake coordinator, 1 CPU thread, logging warnings only. */
pid_t fake_spawn_worker(const char *bin, int k);
/* pid's exit status if it exits within secs (128 + signal if killed);
 * otherwise kills it and returns -1. */
int fake_wait_exit(pid_t pid, double secs);

#endif
