/* coord.h — the coordinator daemon's state, shared by its RPC handlers
 * (coord_rpc.c), its job runners (coord_job.c), its scheduler
 * (coord_sched.c), the helpers they share (coord_state.c) and main
 * (coord_main.c). Calls go one way: sched -> job -> state, rpc -> job.
 *
 * Locking: `mu` guards the live registry (workers[]) and the live jobs
 * list. Under mu nothing blocks: no RPC, no socket close, no database
 * call, no thread join, no sleep — decide under mu, act after releasing
 * it. Aborting a job's calls (coord_abort_job) is allowed under mu because
 * it never waits: it cancels the calls' aios (sc_rpc_client_abort) and
 * takes only each client's own leaf mutex.
 *
 * Lock order: mu → an RPC client's internal mutex (sc_rpc.h). The
 * database's own lock (db.h) is never taken while mu is held, and mu is
 * never taken while the database's lock is held (a database call is never
 * made with mu held).
 *
 * Fencing: each live worker's last report says what it holds (job,
 * placement version, stage). A holding that is not the current placement
 * of a running job is answered with a release (coord_rpc.c), and such a
 * worker is not free for placement until it reports holding nothing, so
 * no worker of an older placement is still talking when a new one starts.
 */
#ifndef SC_COORD_H
#define SC_COORD_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "coord_auth.h"
#include "db.h"
#include "sc_config.h"
#include "sc_rpc.h"
#include "sc_train.h"
#include "splitchain.pb-c.h"

#define COORD_MAX_SLOTS 8 /* job slots of a worker (splitchain-worker --jobs) */

/* One job slot of a worker: it serves one job at a time. */
typedef struct live_slot {
	int64_t job; /* job it serves, 0 when free */
	/* what the worker last said the slot holds (register / heartbeat) */
	int64_t held_job; /* 0: nothing */
	uint32_t held_version, held_stage;
	int64_t fenced_job; /* the last holding it was told to drop (one event each) */
	uint32_t fenced_version;
	uint64_t job_bytes;   /* its job's memory besides the frozen weights (heartbeat) */
	char data_addr[256];  /* its data listener */
	char owner_addr[256]; /* a data owner's head listener */
} live_slot;

typedef struct live_worker {
	int64_t id;
	int64_t last_seen_ms; /* 0 until it registers with this incarnation */
	int n_slots;          /* >= 1 */
	live_slot slot[COORD_MAX_SLOTS];
	uint64_t base_bytes; /* frozen weights it holds, shared copies once (heartbeat) */
	double gflops;
	char host_id[64];                      /* the machine it runs on ("" unknown): Register's */
	unsigned host_cpus;                    /* CPUs it may run on */
	unsigned threads;                      /* its compute threads (CPU workers; 0 otherwise) */
	uint64_t memory_bytes, memory_reserve; /* its device's, and what it keeps back */
	char device[32];                       /* "cpu", "cuda:0" */
	int data_owner;                        /* started with --owner-data */
	char name[128];
	char control_addr[256];
	char secret[SC_TOKEN_MAX]; /* what it takes from us (RegisterRequest; memory only) */
} live_worker;

/* Called with mu held: the slot of w that serves job (0: a free slot, one
 * that serves nothing and holds nothing), or -1. */
int coord_slot_of(const live_worker *w, int64_t job);
/* Called with mu held: how many of w's slots serve a job. */
int coord_jobs_on(const live_worker *w);

typedef struct live_job {
	int64_t id;
	atomic_int cancel; /* set by Coordinator.Cancel */
	uint32_t version;  /* its placement, 0 until placed */
	uint32_t step;     /* steps completed */
	uint32_t steps;
	double loss;
	double tokens_per_s;
	double step_s; /* recent step time, for the ETA */
	/* Stuck detection (coord_sched.c): while running, the time of the
	 * last progress (a step completed, or running began) and the recent
	 * interval between progress points (checkpoints included). */
	int running;
	int64_t progress_ms;  /* monotonic */
	double interval_s;    /* smoothed; 0 until two progress points */
	double predicted_s;   /* the placement's predicted step time */
	int stalled;          /* the scheduler interrupted it: no progress */
	double stalled_for_s; /* how long, when it did */
	int done;             /* the runner thread has finished */
	void *runner;         /* its runner (coord_job.c) while done == 0 */
	pthread_t thread;
	struct live_job *next;
} live_job;

/* A worker's control address and the coordinator's client for it. */
typedef struct coord_peer {
	char addr[256];
	sc_rpc_client *cl;
} coord_peer;

typedef struct coord {
	sc_db *db;
	sc_rpc_server *srv;
	pthread_mutex_t mu;
	pthread_cond_t wake;  /* a worker registered, a job was submitted or ended */
	live_worker *workers; /* (nworkers) */
	int nworkers, capworkers;
	live_job *jobs;    /* running jobs */
	coord_peer *peers; /* (npeers) under mu: one long-lived client per worker address */
	int npeers, cappeers;
	int heartbeat_ms;
	int lost_after_ms;
	int step_timeout_ms;
	int stall_after_ms; /* a running job with no step for this long is interrupted; 0: auto */
	int checkpoint_keep;
	char fetch_addr[256]; /* the bulk server's bound address (RegisterReply.fetch_addr) */
	coord_auth *auth;     /* credentials, owners, limits, roots (coord_auth.h) */
	/* Under mu: writes of a job's placement or checkpoint that the
	 * database refused (a full disk) since it last took one, and the last
	 * error; recorded as a "db_write_failed" event by the next that
	 * succeeds (coord_ckpt.c), since none can be recorded meanwhile. */
	int db_failures;
	char db_error[256];
	atomic_int stopping;
	int insecure; /* --insecure: plaintext tcp:// allowed (warned of at every register) */
	/* --listen is plaintext tcp://: set by coord_transport_check, before the
	 * server starts, so that handlers never read c->srv, which main writes
	 * once the server runs. */
	int listen_plain;
	/* Set (release) by main once fetch_addr holds the tensor listener's
	 * address; Register answers UNAVAILABLE until then (the worker retries). */
	atomic_int serving;
} coord;

/* `splitchain-coordinator --db dbpath users VERB ...` (coord_users.c):
 * argv[0] is the verb. Returns the exit code. */
int coord_users_main(const char *dbpath, int argc, char **argv);
/* Transport security (coord_tls.c). coord_transport_check loads the TLS
 * identity (cert NULL: none) and checks the listen addresses: 0, or 1 with
 * the error logged. coord_tls_poll records the TLS listeners' refused
 * handshakes as events (one caller: the main thread). coord_register_transport
 * is a worker's register seen from the transport: 0 to go on (a plaintext
 * one under --insecure is logged and recorded), 1 to refuse it with msg
 * (plaintext addresses given to a TLS coordinator). Neither takes c->mu. */
int coord_transport_check(coord *c, const char *listen, const char *fetch, const char *cert,
			  const char *key, const char *ca);
void coord_tls_poll(coord *c);
int coord_register_transport(coord *c, const char *name, const char *control, const char *data,
			     char *msg, size_t cap);

/* The RPC method table (coord_rpc.c). */
extern const sc_rpc_method coord_methods[];
/* The bulk server's (coord_main.c): Coordinator.FetchTensor alone, on a
 * listener of its own, so that tensor chunks streaming to many workers
 * never hold the contexts that heartbeats and the CLI need. */
extern const sc_rpc_method coord_bulk_methods[];
/* The methods of either table that are reads (sc_rpc_server_open_idem). */
extern const char *const coord_idempotent[];

/* The scheduler loop (coord_sched.c): places waiting jobs on free live
 * workers and starts a runner thread per job; returns when c->stopping. */
void *coord_scheduler(void *c);

/* Called with mu held: starts a runner for job (which it then owns) on the
 * n reserved workers w, in chain order. Returns 1 when started, 0 when not
 * (the caller keeps job). (coord_job.c) */
int coord_start_job(coord *c, sc_db_job *job, live_worker *const *w, int n);
/* The data a U-shaped job's owner reads (spec's data fields), as a
 * message borrowing spec's strings. (coord_calls.c) */
void coord_owner_data(const Splitchain__SubmitRequest *spec, Splitchain__OwnerData *out);
/* Puts the k fastest of w[0..n) first, those k in id order (the chain the
 * scheduler gives a job). */
void coord_fastest(live_worker **w, int n, int k);
/* SC_ERANGE (the detail says what each stage needs against what its worker
 * has) when the job of spec (model config mc, training tc) cannot fit the
 * memory of the live workers the scheduler would give it (or the ones
 * --workers names); SC_ENOENT when it names a worker never registered;
 * SC_EINVAL when its --split cannot be placed; SC_OK when it fits, or
 * there are too few live workers to judge (the placement checks again).
 * Takes c->mu. */
sc_err coord_fit_check(coord *c, Splitchain__SubmitRequest *spec, const sc_model_config *mc,
		       const sc_train_config *tc);

/* Called with mu held: a worker of job j was lost; fails the job's calls in
 * flight so that it returns to the queue at once instead of waiting out
 * its step timeout (coord_job.c). */
void coord_abort_job(coord *c, live_job *j);

/* Stops every runner thread and waits for them (coord_sched.c). */
void coord_join_jobs(coord *c);

/* ---- shared helpers (coord_state.c) ---- */

/* Points nt at checkpoint tensor t (2-D) for a reply or request: borrows t's
 * name and data; shape (2 entries) is the caller's storage. */
void coord_tensor_view(Splitchain__NamedTensor *nt, int64_t *shape, const sc_db_tensor *t);

/* The client for a worker's control address, made on first use and kept
 * for the coordinator's life (borrowed: never close it). Runners abort
 * its calls and re-arm it; it is never closed while the coordinator runs,
 * because closing an nng 1.5.2 REQ socket that a late reply reaches can
 * hang in nng_close. Takes mu (not held across the socket's opening). */
sc_err coord_peer_client(coord *c, const char *addr, sc_rpc_client **out);

/* Monotonic-free wall clock in ms (the database's clock). */
int64_t coord_now_ms(void);
/* Monotonic clock in ms. */
int64_t coord_mono_ms(void);

/* Coordinator.Metrics (coord_metrics.c): a job's loss curve. */
void coord_m_metrics(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep);

/* Coordinator.ReportLinks (coord_links.c): records a worker's sane link
 * measurements (each other one is logged and dropped) and answers with the
 * other live workers for it to measure. Takes mu, then writes the database
 * without it. */
void coord_m_report_links(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep);
/* Coordinator.Echo (coord_links.c): sc_probe_echo, for the workers' probes. */
void coord_m_echo(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep);
/* Coordinator.Links (coord_links.c): the links table. */
void coord_m_links(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep);

/* Called with mu held: how long job j may go without a step before it is
 * treated as stuck, in ms. */
int64_t coord_stall_limit_ms(const coord *c, const live_job *j);

/* Called with mu held: the live record of worker id, or NULL. */
live_worker *coord_worker(coord *c, int64_t id);
/* Called with mu held: the live record of job id, or NULL. */
live_job *coord_live_job(coord *c, int64_t id);

#endif
