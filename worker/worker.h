/* worker.h — the splitchain-worker daemon: its state and the pieces its
 * files share.
 *
 * Files: main.c (flags, start-up, compute-rate probe, shutdown), announce.c
 * (Coordinator.Register and the heartbeat thread), worker.c (the
 * Worker.Assign / Restore / Apply / GetState handlers and the job's
 * lifetime), schedule.c (Worker.Step: the 1F1B and GPipe schedules over the
 * data plane), gen.c (Worker.GenOpen / GenStep / GenClose: generation
 * sessions with key/value caches, beside the job), probe.c (Worker.Echo and
 * the link prober thread: RTT and bandwidth to the coordinator and the other
 * workers, reported with Coordinator.ReportLinks).
 *
 * Job slots (--jobs N, parameter sharing): the worker serves up to N jobs
 * at once, one per slot. Each slot has its own data-plane listeners, bound
 * at start and registered (a job's neighbours dial its slot's), its own
 * sockets toward its job's neighbours and its own mutex. Jobs whose
 * segments have the same model and layers share one copy of the frozen
 * weights (sc_segment_new_sharing), as do generation sessions.
 *
 * Concurrency: RPC handlers run on the RPC server's context threads. A
 * slot's job (segments, data-plane sockets, host buffers) is guarded by
 * its slot's mu; every handler that touches it takes that mu for its whole
 * run, so a Step that runs for minutes holds it and other methods of the
 * same job wait, while other slots' jobs go on. A slot's `cancel` asks a
 * Step blocked on the data plane to give up (a new Assign, a release,
 * shutdown). The heartbeat thread takes a slot's mu only to drop a job it
 * was told to drop (or whose lease ran out), after setting `cancel`.
 * The device runs one segment call at a time (compute_mu, WORKER_ON_DEVICE):
 * never held while a Step waits on the data plane, so steps of the jobs
 * interleave call by call.
 *
 * worker.mu guards which job each slot holds (a slot's job pointer changes
 * with both its slot's mu and mu held, so code that holds mu may look at
 * every slot's segments: the search for a base to share) and the
 * generation sessions (gen.c).
 *
 * Holding and lease: what each slot holds (job, placement version, stage)
 * is copied under hold_mu, so the heartbeat thread can report it without
 * the slots' locks. Every heartbeat carries it; the coordinator answers
 * with the holdings to drop that are not current placements (a restart of
 * either side, a worker that was counted lost). An assignment is a lease:
 * when no heartbeat has been answered for the lease the coordinator gave
 * at register (its lost-after interval), the worker drops its jobs and
 * data-plane sockets on its own, as the coordinator will have re-planned
 * without it.
 *
 * Lock order: a slot's mu, then mu, then compute_mu; hold_mu and notice_mu
 * are leaves, never held across a call that blocks.
 */
#ifndef SC_WORKER_H
#define SC_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "deliver.h"
#include "sc_backend.h"
#include "sc_data.h"
#include "sc_dataplane.h"
#include "sc_rpc.h"
#include "sc_segment.h"
#include "sc_train.h"
#include "splitchain.pb-c.h"
#include "tcache.h"

#define WORKER_URL_MAX    300
#define WORKER_MAX_OWNERS 16 /* data owners of one ring (= SC_TRAIN_MAX_SOURCES) */
#define WORKER_MAX_SLOTS  8  /* --jobs: jobs served at once */

typedef struct worker_opts {
	const char *coordinator;    /* RPC address of the coordinator */
	const char *listen;         /* our RPC listen address */
	const char *data;           /* our data-plane listen address */
	const char *name;           /* NULL: hostname-pid */
	const char *device;         /* "cpu", "cuda:N" */
	int threads;                /* CPU threads, 0 = default */
	int data_timeout_ms;        /* longest wait for a neighbour's tensor */
	int probe_every_s;          /* measure each link again this often; 0: once */
	const char *memory_reserve; /* --memory-reserve: a size or "N%" */
	const char *cache_dir;      /* --cache: registered models' tensors (NULL: none) */
	uint64_t cache_limit;       /* --cache-limit in bytes, 0: none */
	const char *owner_data;     /* --owner-data: a data owner's directory (NULL: none) */
	int jobs;                   /* --jobs: job slots, 1 .. WORKER_MAX_SLOTS */
	const char *metrics_listen; /* --metrics-listen HOST:PORT (NULL: none) */
	const char *join_token;     /* --join-token-file: the file (NULL: none) */

	/* --tls-cert, --tls-key, --tls-ca: this party's TLS identity (NULL: none);
	 * --insecure: plaintext tcp:// addresses allowed. */
	const char *tls_cert, *tls_key, *tls_ca;
	int insecure;
} worker_opts;

/* A data owner's data for one job (owner.c): read on this worker, batched
 * as the coordinator batches a chain's data. */
typedef struct worker_owner_data {
	sc_tokens *train, *eval; /* eval NULL: none held out */
	sc_loader *ld;           /* over train */
	size_t eval_batches;     /* held-out micro-batches */
	size_t bad_lines;        /* JSONL lines skipped */
} worker_owner_data;

/* The assigned job: one segment of one placement — or, on the data owner
 * of a U-shaped job (ring), two: the first layers with the embeddings
 * (seg) and the last with the head and the loss (tail). */
typedef struct job {
	uint64_t id;
	uint32_t version; /* placement version */
	int stage, n_stages;
	int ring;                  /* U-shaped: stage 0 is the data owners, the last stage's next */
	int depth;                 /* stages along a micro-batch's path: n_stages (+ 1: the
		    * owner's tail in a ring) */
	int n_owners, owner_index; /* a ring's owners; which one this is (owners) */
	int M_owner;               /* micro-batches of one owner (M of a chain) */
	char head_addrs[WORKER_MAX_OWNERS][WORKER_URL_MAX]; /* first middle stage: the owners' */
	char tail_addrs[WORKER_MAX_OWNERS][WORKER_URL_MAX]; /* last middle stage: the owners' */
	float *fold_acc, *fold_tmp; /* middle stage of several owners: sc_segment_grad_fold */
	int gpipe;                  /* 0: 1F1B, 1: GPipe */
	int M, B, T, slots;         /* M: micro-batches this stage runs a step (a ring's middle:
			     * every owner's) */
	uint64_t rss0; /* the process's resident bytes before the job was built (CPU) */
	sc_model_config mc;
	sc_lora_config lc;
	sc_adamw_hparams hp;
	sc_segment *seg;
	sc_segment *tail;     /* the owner's last layers and head; NULL: none */
	int shared[2];        /* seg's, tail's frozen weights were another's (sharing) */
	worker_owner_data od; /* the owner's data (tail set) */
	int tail_slots;
	sc_backend *be;                 /* the worker's, which allocated x, y, dy, dx */
	float *x, *y, *dy, *dx;         /* (B,T,C) hand-over buffers, be's host_alloc */
	int32_t *tokens;                /* (M,B,T) first stage */
	int32_t *targets;               /* (M,B,T) last stage */
	int64_t grads_step;             /* step whose gradients the segment holds, -1: none */
	int64_t applied_step;           /* last step applied, -1: none */
	int wire;                       /* enum sc_wire: how tensors cross the hops */
	uint64_t seed;                  /* the job's seed: stochastic rounding's streams */
	float *ef;                      /* (M,B,T,C) error feedback of the gradients this
					 * stage sends back; NULL: fp32, or stage 0 */
	char next_addr[WORKER_URL_MAX]; /* the next stage's data address, "" on the last */

	/* The placement's data-plane secret (has_secret nonzero): sent in this
	 * stage's hellos and required in its neighbours'. Never logged. */
	uint8_t secret[SC_DP_SECRET_LEN];
	int has_secret;
} job;

/* What a slot holds, as the heartbeat reports it. */
struct worker_holding {
	uint64_t job; /* 0: nothing */
	uint32_t version, stage;
};

/* What the worker has done since it started, for its metrics (prom.c):
 * written by Worker.Step (schedule.c) and the heartbeat thread
 * (announce.c), read by a scrape without any of the worker's locks. */
enum { WORKER_DP_PREV, WORKER_DP_NEXT }; /* the hop toward the previous / next stage */
enum { WORKER_DP_SENT, WORKER_DP_RECV };
struct worker_counters {
	atomic_ullong steps;          /* training steps computed and answered */
	atomic_ullong step_failures;  /* steps (training or evaluation) that failed */
	atomic_ullong micro_batches;  /* micro-batches of those steps */
	atomic_ullong compute_us;     /* their time on the device, microseconds */
	atomic_ullong dp_bytes[2][2]; /* [WORKER_DP_PREV/NEXT][WORKER_DP_SENT/RECV] */
	atomic_llong heartbeat_ok_ms; /* monotonic ms of the last answered heartbeat, 0: none */
};

/* One job slot: a job, its data-plane listeners and sockets. */
typedef struct worker_slot {
	int index;
	pthread_mutex_t mu; /* guards job and the sockets (see above) */
	job *job;
	/* Toward the previous stage: up[0] the listener it dials — on a ring's
	 * first middle stage, a dialer to each owner's head listener, by owner.
	 * Toward the next: down[0] a dialer — on a ring's last middle stage,
	 * one to each owner's data listener; on an owner, the listener for its
	 * head's hop (its first middle stage dials it). */
	sc_dp_socket *up[WORKER_MAX_OWNERS];
	sc_dp_socket *down[WORKER_MAX_OWNERS];
	int n_up, n_down;
	char data_bind[WORKER_URL_MAX];  /* where the slot's data listener is bound */
	char data_addr[WORKER_URL_MAX];  /* ... as advertised to the coordinator */
	char owner_bind[WORKER_URL_MAX]; /* a data owner's head listener ("" none) */
	char owner_addr[WORKER_URL_MAX]; /* ... as advertised */
	atomic_int cancel;               /* nonzero: the slot's running Step gives up */
	struct worker_holding holding;   /* under the worker's hold_mu */
} worker_slot;

typedef struct worker {
	worker_opts o;
	char name[128];
	sc_backend *be;
	double gflops;
	uint64_t memory_bytes;
	uint64_t memory_reserve;           /* kept back from the jobs, of memory_bytes */
	char host_id[64];                  /* the kernel's boot_id; "" unknown */
	unsigned host_cpus;                /* CPUs this process may run on */
	unsigned threads;                  /* compute threads (CPU device) */
	char control_addr[WORKER_URL_MAX]; /* advertised to the coordinator */
	sc_rpc_server *srv;
	sc_rpc_client *coord;
	sc_tcache *cache; /* --cache (deliver.h), NULL without one; thread-safe */

	pthread_mutex_t mu; /* which job each slot holds; the generation sessions */
	int n_slots;
	worker_slot slots[WORKER_MAX_SLOTS];
	pthread_mutex_t compute_mu;                    /* the device: one segment call at a time */
	uint64_t mem_base, mem_jobs[WORKER_MAX_SLOTS]; /* worker_memory's last, under hold_mu */

	pthread_mutex_t hold_mu; /* guards the slots' holdings, fetch_url, mem_base, mem_jobs */
	char fetch_url[WORKER_URL_MAX]; /* the coordinator's tensor listener ("" unknown) */
	pthread_mutex_t notice_mu;      /* guards notices */
	char notices[8][256];           /* refused data-plane peers, for the next heartbeat */
	int n_notices, lost_notices;
	atomic_int busy;          /* Steps running */
	atomic_int stop;          /* shutting down */
	atomic_int device_failed; /* the backend reported a failure: exit with EXIT_DEVICE */
	atomic_llong closing_ms;  /* monotonic ms a data-plane close began, 0: none running */
	pthread_mutex_t stop_mu;
	pthread_cond_t stop_cv; /* signalled when stop is set */
	pthread_t announcer;
	int announcer_started;
	atomic_ullong worker_id;         /* the coordinator's id for us, 0 until registered */
	struct worker_probe *probe;      /* the link prober's own state (probe.c) */
	struct worker_counters counters; /* for the metrics endpoint (prom.c) */
	struct sc_http_metrics *metrics; /* --metrics-listen's endpoint, NULL: none */
} worker;

/* Serves the worker's metrics on w->o.metrics_listen (prom.c); *out = the
 * endpoint, stop it with sc_http_metrics_stop before w is torn down. */
sc_err worker_prom_start(worker *w, struct sc_http_metrics **out);

/* RPC handlers (arg is the worker). */
void worker_assign(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep);
void worker_restore(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep);
void worker_step(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep);
void worker_apply(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep);
void worker_get_state(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep);
/* Worker.Release (JobRef): drops the job (0: whichever it holds) with its
 * segment and data-plane sockets, so that no dialer of a finished placement
 * lingers to take a neighbour's only peer slot. Idempotent. */
void worker_release(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep);
/* Generation sessions (gen.c): Worker.GenOpen / GenStep / GenClose. */
void worker_gen_open(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep);
void worker_gen_step(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep);
void worker_gen_close(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep);
/* Frees every generation session (shutdown, with the RPC server closed). */
void worker_gen_free_all(void);
/* Worker.Echo (probe.c): sc_probe_echo, refused UNAVAILABLE while a Step
 * runs, so that a probe never competes with a step's tensors. */
void worker_echo(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep);
/* Starts the link prober thread (probe.c); it reads w->worker_id, w->busy
 * and w->o.probe_every_s and calls the coordinator on w->coord. */
sc_err worker_probe_start(worker *w);
/* Joins the prober (w->stop must be set and signalled first) and frees its
 * state and clients. Accepts a worker whose prober never started. */
void worker_probe_stop(worker *w);

/* Drops every job held that is job_id (0: any) at placement version
 * `version` or older (0: any), with its segments and data-plane sockets;
 * why goes to the log. Waits for a Step of it to give up. Returns how many
 * were dropped. Takes the slots' mu. */
int worker_drop(worker *w, uint64_t job_id, uint32_t version, const char *why);

/* Keeps why for the next heartbeat, which makes it an event; beyond the
 * slots, the oldest are counted, not kept. Takes notice_mu. */
void worker_note(worker *w, const char *why);

/* The coordinator's address for tensor chunks as its last registration
 * said (copied under hold_mu into buf, WORKER_URL_MAX bytes); "" unknown. */
const char *worker_fetch_url(worker *w, char *buf);

/* What each slot holds now (copied under hold_mu) into h[0 .. n_slots). */
void worker_holdings_get(worker *w, struct worker_holding *h);

/* Memory in use for jobs and generation: *base the frozen weights (each
 * copy once, however many jobs share it); job_bytes[i] what slot i's job
 * holds besides them (0: none). Takes mu when free, else gives the last
 * figures it took (it never waits). */
void worker_memory(worker *w, uint64_t *base, uint64_t job_bytes[WORKER_MAX_SLOTS]);

/* Called with mu held: a loaded segment of any job or generation session
 * whose frozen weights a new segment of spec can share, or NULL. */
const sc_segment *worker_base_donor(worker *w, const sc_segment_spec *spec);
/* *out = a segment of spec for a job or a generation session: sharing the
 * frozen weights of a loaded segment of the same model and layers when the
 * worker has one (another job's, a generation session's), else loaded
 * from the model's weights (*wf: opened on first use from wm, a registered
 * model, or model_path; the caller closes it). *shared says which. Takes
 * mu (briefly: never while weights load) and compute_mu. */
sc_err worker_new_segment(worker *w, const sc_segment_spec *sp, worker_model *wm,
			  const char *model_path, sc_weights **wf, sc_segment **out, int *shared);
/* gen.c's part of it: a generation session's segment. */
const sc_segment *worker_gen_donor(worker *w, const sc_segment_spec *spec);
/* Adds seg's bytes to *base (its frozen weights, when their copy is not in
 * seen[0 .. *n_seen) yet: then added to it, up to cap entries) and to *own
 * (the rest). */
void worker_count_segment(const sc_segment *seg, const void **seen, int *n_seen, int cap,
			  uint64_t *base, uint64_t *own);
/* gen.c: worker_count_segment of each generation session's segment. */
void worker_gen_memory(const void **seen, int *n_seen, int cap, uint64_t *base, uint64_t *own);

/* A segment call with the device to itself: locks compute_mu, evaluates
 * call, unlocks, and gives call's sc_err. */
#define WORKER_ON_DEVICE(w, call) (worker_device_enter(w), worker_device_leave((w), (call)))
void worker_device_enter(worker *w);
sc_err worker_device_leave(worker *w, sc_err rc);

/* ---- a data owner (owner.c) ---- */

/* Resolves rel (relative, no ".." component) under dir into out (size
 * bytes): SC_EINVAL for an absolute path, "..", or a symbolic link that
 * leads out of dir; SC_ENOENT when nothing is there. */
sc_err worker_owner_path(const char *dir, const char *rel, char *out, size_t size);
/* *out = the registered model called model as the coordinator describes
 * it, with its tokenizer files (Coordinator.ModelShow); free with
 * protobuf_c_message_free_unpacked. */
sc_err worker_owner_model(worker *w, const char *model, Splitchain__ModelInfo **out);
/* Reads the data d names under the owner's directory as the job's
 * coordinator would (tokenizer: d's, else the registered model's files in
 * registered, else model_path's): fills *out. Errors name what was wrong,
 * never the data's contents. */
sc_err worker_owner_load(worker *w, const Splitchain__OwnerData *d, const char *model_path,
			 const Splitchain__ModelInfo *registered, const sc_model_config *mc,
			 const sc_train_config *tc, worker_owner_data *out);
void worker_owner_free(worker_owner_data *od);
/* Worker.DataCheck: loads the data as a job would, reports its size. */
void worker_data_check(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep);

/* Frees j and its segment. Accepts NULL. */
void worker_job_free(job *j);

/* The slot that holds job_id, locked (its mu): NULL with rep set to
 * ABORTED when no slot holds it (never assigned, or dropped). Unlock with
 * pthread_mutex_unlock(&slot->mu). */
worker_slot *worker_slot_lock(worker *w, uint64_t job_id, sc_rpc_reply *rep);

/* Called with s->mu held: closes the slot's data-plane sockets and opens
 * fresh ones for its job (listening on its data_bind; dialing the job's
 * next_addr unless it is the last stage). Queued tensors are discarded. */
sc_err worker_reset_dataplane(worker *w, worker_slot *s);

/* Monotonic clock in ms (lease, close timing). */
/* The process's resident memory (VmRSS), or its peak since the last
 * worker_reset_peak (VmHWM), in bytes; 0 where /proc cannot tell. */
uint64_t worker_rss_bytes(int peak);
/* Makes the current resident memory the peak again (/proc/self/clear_refs). */
void worker_reset_peak(void);
/* What a step reports as its stage's peak memory: the process's peak
 * since the job was loaded less what it held before (CPU devices; 0 on
 * others, whose memory is not the process's). */
uint64_t worker_job_peak(const worker *w, const job *j);
int64_t worker_mono_ms(void);

/* The matrices of group g of a job's segments (keyed by global layer) as
 * NamedTensors: ptr[0..n), valid until worker_tensors_free. */
typedef struct worker_tensors {
	sc_adapter *ad;
	sc_adapter_tensor *list;
	Splitchain__NamedTensor *nt, **ptr;
	int64_t *shapes;
	int n;
} worker_tensors;
sc_err worker_tensors_get(const job *j, enum sc_segment_group g, worker_tensors *t);
void worker_tensors_free(worker_tensors *t); /* accepts a zeroed or failed one */

/* Called with s->mu held: closes the slot's data-plane sockets
 * (worker_close_socket). */
void worker_close_dataplane(worker *w, worker_slot *s);
/* Worker.SetGrads (schedule.c): a data owner's step gradient, summed over
 * the ring's owners by the coordinator; replies its layers' sums of squares. */
void worker_set_grads(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep);

/* Called with mu held: closes *s (sc_dp_close) and sets it NULL, timing
 * the close for the heartbeat thread: nng 1.5.2 can hang for good closing
 * a tcp connection that a message reaches at that moment (nng #1813). */
void worker_close_socket(worker *w, sc_dp_socket **s);

/* Exit status of a worker whose data-plane close never returned. */
#define WORKER_EXIT_WEDGED 4

/* A data-plane close stuck in nng holds the job's mutex for good: no job
 * method can run again. When one has run for 10 s, exits the process with
 * WORKER_EXIT_WEDGED so that the supervisor starts a fresh one (which
 * registers anew and is fenced like any restarted worker). Called by the
 * heartbeat thread, also while it waits for mu. */
void worker_check_wedged(worker *w);

/* The gRPC status for a failed sc_err in a job method. */
int worker_status_of(sc_err rc);

/* Runs the registration / heartbeat loop until w->stop (thread body). */
void *worker_announce_main(void *arg);

/* Sleeps ms milliseconds or until w->stop is set; returns w->stop. */
int worker_sleep(worker *w, int ms);

#endif
