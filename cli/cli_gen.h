/* cli_gen.h — `splitchain generate`'s pieces shared by cli_generate.c (the
 * command, in-process generation) and cli_gen_remote.c (generation through
 * workers' sessions). Private to cli/. */
#ifndef SC_CLI_GEN_H
#define SC_CLI_GEN_H

#include <stdint.h>

#include "sc_adapter.h"
#include "sc_config.h"
#include "sc_generate.h"
#include "sc_rpc.h"
#include "sc_train.h"

#define MAX_STOP 16

typedef struct gen_args {
	const char *model, *adapter, *prompt, *prompt_ids, *prompt_file, *device;
	const char *workers, *coordinator, *tokenizer;
	long max_new, top_k, seed, stages, threads, job, timeout_ms;
	float temperature, top_p;
	int32_t stop[MAX_STOP];
	const char *stop_text[SC_MAX_STOP_TEXT]; /* --stop, borrowed from argv */
	int n_stop, n_stop_text, json, ignore_eos;
	sc_train_config base; /* the frozen base's format alone: --base-quant, --precision */
	int base_given;       /* any of those options given */
} gen_args;

#define MAX_HOPS 256

typedef struct hop {
	char url[256];
	int first, last;
	sc_rpc_client *cl;
	int open;              /* its session was opened */
	char ticket[128];      /* the coordinator's generation ticket for it ("": none) */
	char layer_quant[256]; /* its layers held in their own format ("": none) */
} hop;

typedef struct remote {
	hop h[MAX_HOPS];
	int n;
	uint64_t session;
	char model[128], digest[80]; /* a registered model ("": a directory) */
	sc_train_config base;        /* the frozen base's format (GenOpenRequest) */
	int C, V, timeout_ms;
	float *act; /* (chunk, C) */
} remote;

/* sc_gen_chain over the hops (arg: a remote). */
sc_err cli_remote_chain(void *arg, const int32_t *ids, int pos0, int n, float *logits);
/* Opens a session for r->session on every hop, each with its layers of ad
 * (NULL: the base model), caches of P positions, chunk positions a step. */
sc_err cli_remote_open(remote *r, const char *model_path, sc_adapter *ad, int P, int chunk);
/* Closes the sessions opened and the clients; frees r->act (not r). */
void cli_remote_close(remote *r);
/* The hops, model config and adapter of job a->job (Status, Workers and
 * Export of the coordinator), its model directory and tokenizer ("": the
 * model directory's); CLI_OK or the error printed. *ad: new, free with
 * sc_adapter_free. */
int cli_remote_job(const gen_args *a, remote *r, sc_model_config *mc, sc_adapter **ad,
		   char *model_path, char *tokenizer, size_t path_size);
/* The hops of --workers, layers split evenly; CLI_OK or usage printed. */
int cli_remote_workers(const gen_args *a, remote *r, const sc_model_config *mc);
/* Asks the coordinator (a->coordinator) for the tickets of r's hops to
 * open generation sessions on model_path (Coordinator.GenTickets). */
int cli_remote_tickets(const gen_args *a, remote *r, const char *model_path);
/* A random session id, never 0. */
uint64_t cli_remote_session_id(void);

#endif
