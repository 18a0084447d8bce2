/* coord_run.h — a job runner's state (coord_job.c), shared with the files
 * that make its calls to the stages: the call machinery (coord_calls.c) and
 * restore / checkpoint (coord_ckpt.c). Private to the coordinator. A runner
 * is used by its own thread only, except clients_live and the clients'
 * aborts, which are under c->mu (coord.h). */
#ifndef SC_COORD_RUN_H
#define SC_COORD_RUN_H

#include <pthread.h>
#include <stdatomic.h>

#include "coord.h"
#include "sc_config.h"
#include "sc_data.h"
#include "sc_rpc_pb.h"
#include "sc_train.h"
#include "splitchain.pb-c.h"

#define MAX_STAGES         256
#define ASSIGN_TIMEOUT_MS  300000
#define RELEASE_TIMEOUT_MS 1000 /* a worker that misses it is fenced by its heartbeats */

/* One stage of a running job and the call in flight to its worker. */
struct runner;

typedef struct stage {
	struct runner *run;
	int index;
	int64_t worker_id;
	int slot; /* the worker's job slot this stage takes */
	char name[128], control[256], data[256];
	char owner_addr[256]; /* a data owner's head listener */
	double gflops;
	char host_id[64]; /* the live worker's, for the planner */
	unsigned host_cpus, threads;
	char device[32];
	uint64_t memory_bytes, memory_reserve;
	uint64_t others_bytes; /* what the worker's other jobs hold (parameter sharing) */
	uint64_t peak_mem;     /* the most its steps reported of this placement (recorded) */
	uint32_t first, last;
	uint32_t tail_first, tail_last; /* a ring's owner (stage 0): its last layers; 0, 0 */
	sc_rpc_client *cl;
	/* the current call */
	const char *method;
	const ProtobufCMessage *req;
	const ProtobufCMessageDescriptor *desc;
	ProtobufCMessage *rep;
	int timeout_ms, status;
	char msg[512];
	sc_err rc;
	pthread_t th;
	int threaded;
} stage;

typedef struct runner {
	coord *c;
	live_job *lj;
	/* The run ended because the database refused a write of its placement
	 * or checkpoint (a full disk): the job is not at fault, it goes back to
	 * the queue after run_db_backoff. */
	int db_failed;
	sc_db_job *job;
	Splitchain__SubmitRequest *spec;
	sc_model_config mc;
	sc_train_config tc;
	int n;
	stage st[MAX_STAGES];
	uint32_t version;
	sc_tokens *tk, *eval; /* training and held-out data (eval NULL: none) */
	sc_loader *ld;
	/* A data owners' job (docs/privacy.md): the chain is a ring whose
	 * stage 0 is the owners, each holding [0, K) and [L - K, L) with its
	 * data, st[0 .. n_owners); the middle follows. tk, eval and ld stay
	 * NULL; each owner says how many held-out micro-batches it has at
	 * assign. */
	int ring, owner_layers, n_owners; /* st[0 .. n_owners) are the owners */
	size_t owner_eval_batches[16];    /* each owner's held-out micro-batches */
	size_t eval_passes;               /* a ring's: passes that cover every owner's */
	int clients_live;                 /* under c->mu: the clients may be aborted */
	atomic_int first_bad; /* call_all: the stage whose call failed first, -1: none */
	/* The planner's per-layer base formats (auto_quant.h), set by each
	 * plan: layer_quant as sc_model_config's (all 0: every layer in the
	 * job's base), its SPEC text for the workers, each layer's measured
	 * errors (int8, nf4) and each stage's bytes at the job's own base. */
	unsigned char layer_quant[SC_LAYER_QUANT_MAX];
	char layer_quant_text[4096];
	double quant_err[2][SC_LAYER_QUANT_MAX];
	double base_mem[MAX_STAGES];
} runner;

/* ---- calls to every stage at once (coord_calls.c) ---- */

/* Fails every stage's call in flight; called with c->mu held. */
void run_abort_locked(runner *r);
/* The same, taking c->mu. */
void run_abort_calls(runner *r);
/* Calls every stage at once (each stage's method/req/desc set by the
 * caller; a stage with no method is skipped: its status reads CANCELLED, no
 * failure); returns the index of the stage that failed first (the others'
 * calls are then aborted), or -1. */
int run_call_all(runner *r, int timeout_ms);
/* Makes req[0..r->n) the step's Worker.Step calls of every stage: the
 * step's token ids (rows of them) to the first stage, its targets to the
 * last; the caller adds what else it needs (eval) and runs run_call_all.
 * tokens, targets and req stay the caller's until the calls return. */
void run_step_calls(runner *r, Splitchain__StepRequest *req, uint32_t step, const int32_t *tokens,
		    const int32_t *targets, size_t rows);
/* Frees every stage's reply. */
void run_free_replies(runner *r);
/* Nonzero when a failed call ends the job for good (the worker refused the
 * job itself); a lost or slow worker only sends it back to the queue. */
int run_permanent(const stage *s);
/* "stage i on worker W (name): STATUS: message" into buf. */
void run_describe(const stage *s, int i, char *buf, size_t size);
/* The job's LoRA settings as a message (borrows spec's fields). */
void run_lora_msg(const Splitchain__SubmitRequest *spec, Splitchain__LoraConfig *out);

/* ---- several data owners (coord_owners.c) ---- */

/* After a step's Worker.Step calls of a ring with several owners: *loss =
 * the mean of every owner's micro-batch losses, in order; the owners'
 * gradients added up in owner order and handed to each (Worker.SetGrads);
 * sumsq[0..n_sumsq) = the owners' per-layer sums of squares of that total
 * (their first layers, then their tail's). Frees the step's replies.
 * Returns as run_call_all (r->n: the coordinator's own failure); err says
 * why. */
int run_owner_grads(runner *r, uint32_t step, double *loss, double *sumsq, size_t n_sumsq,
		    char *err, size_t esize);
/* The loss alone (fedavg: the owners update from their own gradients):
 * returns -1, or the owner whose reply was malformed. */
int run_owner_loss(runner *r, double *loss, char *err, size_t esize);
/* fedavg: the owners' adapters and AdamW moments averaged (in owner order)
 * and restored to every owner. Returns as run_call_all. */
int run_owner_average(runner *r, char *err, size_t esize);

/* ---- held-out evaluation (coord_eval.c) ---- */

/* Evaluates the chain's adapters after `step` completed steps on r->eval:
 * *loss the mean over *tokens targets. Returns as run_restore. */
int run_eval(runner *r, uint32_t step, double *loss, size_t *tokens, char *err, size_t esize);

/* ---- checkpoints (coord_ckpt.c) ---- */

/* Restores every stage from the job's newest checkpoint, if any; *start =
 * the steps it holds. -1 on success, else the failing stage's index (r->n:
 * the coordinator's own failure); err says why. */
int run_restore(runner *r, uint32_t *start, char *err, size_t esize);
/* Takes a checkpoint of `step` completed steps with loss: every stage's
 * adapters and AdamW moments, written in one transaction. Returns as
 * run_restore. */
int run_checkpoint(runner *r, uint32_t step, double loss, char *err, size_t esize);

/* The database refused the run's placement or checkpoint (detail in
 * sc_err_detail): marks r->db_failed and counts it in c->db_failures.
 * Takes c->mu. (coord_ckpt.c) */
void run_db_failed(runner *r);
/* The database took the run's placement or checkpoint: records the failed
 * writes counted since the last one, if any, as a "db_write_failed" event.
 * Takes c->mu (not held across the write). */
void run_db_recovered(runner *r);
/* Waits about 2 s (less when the coordinator stops) before a run ended by
 * run_db_failed returns its workers: the scheduler would otherwise place
 * the job again at once, fail again at once, and spin while the disk is
 * full. Called with no lock held. */
void run_db_backoff(runner *r);

#endif
