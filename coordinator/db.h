/* db.h — the coordinator's durable state: one SQLite database in WAL mode.
 *
 * The coordinator is the database's only writer; dashboards and the sqlite3
 * shell read it at any time (WAL: readers never block the writer, nor it
 * them). docs/state.md documents the schema and the dashboard views.
 *
 * Schema version: PRAGMA user_version, raised by ordered migrations run at
 * open, all of them in one transaction; PRAGMA application_id marks the file
 * as splitchain's. A database newer than this code is refused (SC_ENOTSUP),
 * a file that is not a splitchain database gives SC_EFORMAT.
 *
 * Durability: rows that were acknowledged to someone — a submitted job, a
 * job's state change, a placement, a checkpoint — are committed with
 * synchronous=FULL, so they survive a power cut once the call returns.
 * Per-step rows (metrics, progress, events, heartbeats, links) use NORMAL: a crash
 * may lose the last few, never corrupt the file.
 *
 * Threads: an sc_db may be used from several threads. Every call takes the
 * handle's one mutex for its whole statement or transaction; no call holds
 * it on return. Error details go to the calling thread (sc_err_detail).
 *
 * Records handed out (workers, jobs, placements, checkpoints) are one
 * malloc'd block each: the struct array and every string, blob and tensor it
 * points to. Free the block with free(); all its pointers die with it.
 * Ids are SQLite rowids (> 0); 0 means "none" wherever an id is optional.
 * Times are Unix milliseconds (wall clock); 0 means "not yet".
 */
#ifndef SC_DB_H
#define SC_DB_H

#include <stddef.h>
#include <stdint.h>

#include "sc_err.h"
#include "sc_log.h"

/* The schema version this code writes; a file with a higher one is refused. */
#define SC_DB_SCHEMA_VERSION 11
/* PRAGMA application_id of a splitchain database: "SPLD". */
#define SC_DB_APPLICATION_ID 0x53504C44
#define SC_DB_MAX_DIMS       8

typedef struct sc_db sc_db;

/* Opens path, creating it if missing, and brings its schema up to
 * SC_DB_SCHEMA_VERSION. *out = new handle; close with sc_db_close.
 * SC_EFORMAT: not a SQLite file, or another program's database.
 * SC_ENOTSUP: the schema is newer than this code. SC_EIO: cannot open or
 * cannot use WAL mode there (e.g. some network file systems). */
sc_err sc_db_open(sc_db **out, const char *path);
/* Finalizes every cached statement and closes the file. Accepts NULL.
 * No other thread may be inside a call on db. */
void sc_db_close(sc_db *db);

/* The wall clock in Unix milliseconds, as the database records it. */
int64_t sc_db_now_ms(void);

/* ---- workers ---- */
enum sc_worker_state { SC_WORKER_IDLE, SC_WORKER_BUSY, SC_WORKER_LOST, SC_WORKER_STATE_COUNT };

/* "idle", "busy", "lost"; "?" for a value out of range. Static. */
const char *sc_worker_state_name(enum sc_worker_state s);
/* Parses a name of sc_worker_state_name; SC_EINVAL naming it otherwise. */
sc_err sc_worker_state_parse(const char *name, enum sc_worker_state *out);

typedef struct sc_db_worker {
	int64_t id;
	const char *name;   /* unique */
	const char *device; /* "cpu", "cuda:0" */
	uint64_t memory_bytes;
	uint64_t memory_reserve_bytes; /* of memory_bytes, kept back from the jobs */
	double gflops;                 /* measured compute rate */
	const char *control_addr;      /* the worker's RPC address */
	const char *data_addr;         /* its data-plane listen address */
	enum sc_worker_state state;
	int64_t registered_ms; /* this incarnation's registration */
	int64_t last_seen_ms;
	int data_owner; /* started with --owner-data */
	int job_slots;  /* jobs it serves at once (splitchain-worker --jobs) */
	/* Memory (heartbeats): the frozen weights it holds, each copy shared
	 * by jobs once; each job's own is in worker_job_memory. */
	uint64_t base_bytes;
} sc_db_worker;

/* Registers w by name: a new name gets a new id, a known one keeps its id and
 * has device, memory, gflops, addresses and state replaced, and registered_ms
 * and last_seen_ms set to now. Reads w's fields except id and the times
 * (borrowed for the call). *id_out = the worker's id. */
sc_err sc_db_worker_upsert(sc_db *db, const sc_db_worker *w, int64_t *id_out);
/* Records a worker's memory: its frozen weights (base_bytes) and each
 * job's own bytes besides them (jobs[0 .. n), replacing the last record),
 * in one transaction. */
typedef struct sc_db_job_memory {
	int64_t job_id;
	uint64_t bytes;
} sc_db_job_memory;
sc_err sc_db_worker_memory(sc_db *db, int64_t worker_id, uint64_t base_bytes,
			   const sc_db_job_memory *jobs, size_t n);
/* Sets last_seen_ms to now. SC_ENOENT for an unknown id. */
sc_err sc_db_worker_seen(sc_db *db, int64_t worker_id);
/* Sets the state. SC_ENOENT for an unknown id. */
sc_err sc_db_worker_set_state(sc_db *db, int64_t worker_id, enum sc_worker_state state);
/* Every worker in id order. *out = new block of *n records (NULL when none);
 * free with free(). */
sc_err sc_db_workers_list(sc_db *db, sc_db_worker **out, int *n);

/* ---- jobs ---- */
enum sc_job_state {
	SC_JOB_QUEUED,
	SC_JOB_RUNNING,
	SC_JOB_DONE, /* finished: done, failed and cancelled are final */
	SC_JOB_FAILED,
	SC_JOB_CANCELLED,
	SC_JOB_STATE_COUNT
};

/* "queued", "running", "done", "failed", "cancelled"; "?" out of range. */
const char *sc_job_state_name(enum sc_job_state s);
sc_err sc_job_state_parse(const char *name, enum sc_job_state *out);

typedef struct sc_db_job {
	int64_t id;
	const char *name;
	enum sc_job_state state;
	const char *model_path;
	const char *data_path;
	const void *spec; /* the packed SubmitRequest protobuf */
	size_t spec_len;
	uint32_t stages;
	uint32_t steps;
	uint32_t step_done; /* steps completed */
	double last_loss;   /* NAN until the first step */
	const char *error;  /* "" unless failed */
	int64_t created_ms, started_ms, finished_ms;
	/* The frozen base, as sc_base_quant_name / sc_precision_name say it
	 * (the coordinator's resolution of --base-quant, --double-quant and
	 * --precision; a quantized model directory's own format). NULL on
	 * insert: "none", 0, "fp32". */
	const char *base_quant; /* "none", "int8", "nf4" */
	int double_quant;       /* nf4 with double quantization */
	const char *precision;  /* "fp32", "bf16" */
	int64_t owner_id;       /* the user who submitted it (users table); 0: none */
} sc_db_job;

/* Queues a new job. Reads name, model_path, data_path, spec/spec_len (the
 * exact bytes the job resumes from), stages, steps, base_quant,
 * double_quant, precision and owner_id (borrowed for the call); the rest is set here.
 * SC_EINVAL for a base_quant or precision the schema does not allow. *id_out = the new job's id. Durable. */
sc_err sc_db_job_insert(sc_db *db, const sc_db_job *job, int64_t *id_out);
/* *out = new block holding job id; free with free(). SC_ENOENT if none. */
sc_err sc_db_job_get(sc_db *db, int64_t job_id, sc_db_job **out);
/* Every job in id order. *out = new block of *n (NULL when none); free(). */
sc_err sc_db_jobs_list(sc_db *db, sc_db_job **out, int *n);
/* The jobs to resume after a restart: queued or running, in id order. */
sc_err sc_db_jobs_resumable(sc_db *db, sc_db_job **out, int *n);
/* Moves job to state, recording error (borrowed; NULL or "" clears it).
 * Entering running sets started_ms the first time; entering a final state
 * sets finished_ms. A final state is never left: SC_EINVAL. SC_ENOENT for
 * an unknown id. Durable. */
sc_err sc_db_job_set_state(sc_db *db, int64_t job_id, enum sc_job_state state, const char *error);
/* Records that step_done steps are complete, the last with loss last_loss. */
sc_err sc_db_job_progress(sc_db *db, int64_t job_id, uint32_t step_done, double last_loss);

/* ---- placements ---- */
/* One stage of a placement: the chain is stage 0 (embedding) to n-1 (head). */
typedef struct sc_db_stage {
	uint32_t stage;
	int64_t worker_id;
	const char *worker_name; /* output only: the worker's name */
	uint32_t first_layer;    /* global layer range [first_layer, last_layer) */
	uint32_t last_layer;
	double predicted_step_s;      /* the planner's predicted time of one step */
	double worker_gflops;         /* the rate the planner assumed */
	const char *reason;           /* why the planner chose this; may be NULL */
	uint64_t predicted_mem_bytes; /* the planner's: what the stage holds (0: not planned) */
	uint64_t peak_mem_bytes;      /* output only: the most the stage reported (0: none) */
	/* A U-shaped job's data owner (stage 0): it also holds the last layers
	 * [tail_first_layer, tail_last_layer) and the head; 0, 0: none. The
	 * stages' ranges then run from 0 to tail_first_layer. */
	uint32_t tail_first_layer, tail_last_layer;
	/* The stage's layers the planner lowered to their own base format
	 * (sc_layer_quant.h's SPEC; NULL or "": none) and why. */
	const char *layer_quant;
	const char *quant_reason;
} sc_db_stage;

/* Records a new placement of job: stages[i] for i in [0, n), with
 * stages[i].stage == i and contiguous non-empty layer ranges (SC_EINVAL
 * otherwise), all in one transaction. *version_out = its version: 1 for the
 * job's first placement, then one more than the last. Borrows stages. */
sc_err sc_db_placement_insert(sc_db *db, int64_t job_id, const sc_db_stage *stages, int n,
			      uint32_t *version_out);

/* Records that stage `stage` of placement `version` of job peaked at bytes
 * (keeps the largest reported). A placement that is gone is not an error. */
sc_err sc_db_placement_peak(sc_db *db, int64_t job_id, uint32_t version, uint32_t stage,
			    uint64_t bytes);
/* The job's newest placement: *out = new block of *n stages in stage order
 * (free with free()), *version = its version. SC_ENOENT if the job has none. */
sc_err sc_db_placement_latest(sc_db *db, int64_t job_id, uint32_t *version, sc_db_stage **out,
			      int *n);

/* ---- per-layer quantization errors (sc_calib.h) ---- */
/* Each layer's relative output error under int8 and nf4 of the model
 * keyed by key (its fingerprint: a changed model has another key), as the
 * planner measured them once. *_get: int8[l], nf4[l] for l in [0,
 * n_layer); SC_ENOENT unless every layer is recorded. *_put records them
 * all in one transaction (non-finite or negative errors: SC_EINVAL). */
sc_err sc_db_layer_errors_get(sc_db *db, const char *key, int n_layer, double *int8, double *nf4);
sc_err sc_db_layer_errors_put(sc_db *db, const char *key, int n_layer, const double *int8,
			      const double *nf4);

/* ---- checkpoints ---- */
enum sc_tensor_kind { SC_TENSOR_LORA, SC_TENSOR_ADAM_M, SC_TENSOR_ADAM_V, SC_TENSOR_KIND_COUNT };

/* "lora", "adam_m", "adam_v"; "?" out of range. */
const char *sc_tensor_kind_name(enum sc_tensor_kind k);

/* A float32 tensor of a checkpoint, keyed by (kind, name). */
typedef struct sc_db_tensor {
	const char *name; /* PEFT-style, "h.3.attn.c_attn.lora_A" */
	enum sc_tensor_kind kind;
	int32_t layer; /* global layer index */
	int ndim;
	int64_t shape[SC_DB_MAX_DIMS];
	const float *data; /* prod(shape) floats */
} sc_db_tensor;

typedef struct sc_db_checkpoint {
	int64_t id;
	int64_t job_id;
	uint32_t step; /* steps completed when taken */
	uint32_t placement_version;
	int64_t created_ms;
	int64_t bytes; /* tensor data, all tensors */
	int n_tensors;
	sc_db_tensor *tensors; /* in the order written */
} sc_db_checkpoint;

/* Writes a checkpoint of job after step steps: its row, every tensor, and
 * the job's step_done = step and last_loss = loss, in one durable
 * transaction — all of it or, on any error, none of it. Then deletes the
 * job's older checkpoints beyond the newest keep (keep >= 1) in the same
 * transaction. Borrows tensors. SC_EINVAL for a tensor without a name or
 * data, a bad shape or a duplicate (kind, name); SC_ENOENT for an unknown
 * job. *id_out (may be NULL) = the new checkpoint's id. */
sc_err sc_db_checkpoint_write(sc_db *db, int64_t job_id, uint32_t step, uint32_t placement_version,
			      double loss, const sc_db_tensor *tensors, int n, int keep,
			      int64_t *id_out);
/* The job's newest checkpoint (highest step, then highest id) with every
 * tensor. *out = new block; free with free(). SC_ENOENT if none;
 * SC_EFORMAT if a stored tensor's shape and data disagree. */
sc_err sc_db_checkpoint_latest(sc_db *db, int64_t job_id, sc_db_checkpoint **out);

/* ---- metrics and events ---- */
typedef struct sc_db_metric {
	uint32_t step; /* 1-based: the step just completed */
	double loss, lr, grad_norm, tokens_per_s, step_s;
	const uint64_t *bytes_per_hop; /* n_hops entries: data bytes each stage sent */
	int n_hops;
	const char *wire; /* the encoding they were sent in ("fp32", ...); NULL: none */
} sc_db_metric;

/* Records the metrics of job's step m->step. A step redone after a resume
 * replaces its earlier row. Borrows m. */
sc_err sc_db_metric_insert(sc_db *db, int64_t job_id, const sc_db_metric *m);

/* The newest metric row of job (step, loss, tokens_per_s and step_s are
 * filled; bytes_per_hop is not). SC_ENOENT when the job has none. */
sc_err sc_db_metric_latest(sc_db *db, int64_t job_id, sc_db_metric *out);

/* Records the held-out evaluation after step (1-based, its metric row
 * already recorded): mean loss over `tokens` targets. */
sc_err sc_db_metric_eval(sc_db *db, int64_t job_id, uint32_t step, double loss, uint64_t tokens);

/* One point of a job's loss curve. */
typedef struct sc_db_point {
	uint32_t step; /* 1-based */
	double loss;
	int has_eval;
	double eval_loss;
} sc_db_point;

/* Up to max points of job with step > after, in step order: *out = new
 * array (free with free()) of *n. */
sc_err sc_db_metric_curve(sc_db *db, int64_t job_id, uint32_t after, size_t max, sc_db_point **out,
			  size_t *n);

/* The newest evaluation of job: *step 0 when there is none. */
sc_err sc_db_metric_latest_eval(sc_db *db, int64_t job_id, uint32_t *step, double *loss);

/* Appends an event: job_id and worker_id may be 0 (none), kind is a short
 * tag ("placement", "worker_lost"), the message a printf format. */
sc_err sc_db_event(sc_db *db, int64_t job_id, int64_t worker_id, enum sc_log_level level,
		   const char *kind, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* ---- measured links (db_links.c) ---- */
/* The latest measurement of the link from one worker to another; worker id
 * 0 is the coordinator. */
typedef struct sc_db_link {
	int64_t from_worker, to_worker;
	const char *from_name, *to_name; /* output only: "" for the coordinator */
	double rtt_ms;                   /* round-trip time, > 0 */
	double mbit_s;                   /* bandwidth from -> to, > 0 */
	int64_t measured_ms;             /* when it was measured */
} sc_db_link;

/* Records l's measurement of (from_worker, to_worker), replacing the one
 * before. Reads the ids and numbers (borrowed for the call). SC_EINVAL for
 * a link to itself, a negative id, or an rtt or bandwidth not finite and
 * > 0. */
sc_err sc_db_link_upsert(sc_db *db, const sc_db_link *l);
/* Every link, by (from_worker, to_worker), with the workers' names. *out =
 * new block of *n records (NULL when none); free with free(). */
sc_err sc_db_links_list(sc_db *db, sc_db_link **out, int *n);

#endif
