/* cli_conn.c — connection options and calls to the coordinator, shared by
 * the CLI's coordinator commands. */
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_conn.h"
#include "sc_codec.h"
#include "sc_rpc_pb.h"
#include "sc_tls.h"
#include "sc_token.h"
#include "sc_wire.h"

#define DEFAULT_COORDINATOR "tcp://127.0.0.1:7700"

const char cli_conn_help[] =
    "connection:\n"
    "  --coordinator URL    the coordinator's address (default $SPLITCHAIN_COORDINATOR,\n"
    "                       else " DEFAULT_COORDINATOR ")\n"
    "  --timeout-ms N       give up after N ms without a reply               (default 10000)\n"
    "  the API token: $SPLITCHAIN_TOKEN, else ~/.config/splitchain/token (mode 600)\n"
    "  --tls-cert FILE      this user's certificate, for a tls+tcp:// coordinator\n"
    "                       (default $SPLITCHAIN_TLS_CERT)\n"
    "  --tls-key FILE       its private key                     (default $SPLITCHAIN_TLS_KEY)\n"
    "  --tls-ca FILE        the cluster CA's certificate        (default $SPLITCHAIN_TLS_CA)\n";

/* The TLS files given as options; NULL: the environment's. */
static const char *tls_cert, *tls_key, *tls_ca;

int cli_tls_ready(const char *cmd, const char *url)
{
	const char *cert = tls_cert ? tls_cert : getenv("SPLITCHAIN_TLS_CERT");
	const char *key = tls_key ? tls_key : getenv("SPLITCHAIN_TLS_KEY");
	const char *ca = tls_ca ? tls_ca : getenv("SPLITCHAIN_TLS_CA");

	if (!sc_tls_url(url) || sc_tls_enabled())
		return CLI_OK;
	if (!cert || !*cert || !key || !*key || !ca || !*ca) {
		fprintf(stderr,
			"splitchain %s: %s is a TLS address: give --tls-cert FILE --tls-key FILE "
			"--tls-ca FILE (or set SPLITCHAIN_TLS_CERT, SPLITCHAIN_TLS_KEY and "
			"SPLITCHAIN_TLS_CA) with a certificate signed by the cluster's CA\n",
			cmd, url);
		return CLI_ERROR;
	}
	if (sc_tls_init(cert, key, ca)) {
		fprintf(stderr, "splitchain %s: %s\n", cmd, sc_err_detail());
		return CLI_ERROR;
	}
	return CLI_OK;
}

void cli_conn_defaults(cli_conn *c)
{
	c->url = cli_default_coordinator();
	c->json = 0;
	c->timeout_ms = 10000;
}

/* Handles a connection option; 0 done, 1 bad, -1 not one. */
int cli_conn_option(const char *cmd, int c, const char *arg, cli_conn *co)
{
	long v;
	switch (c) {
	case 'C': co->url = arg; return 0;
	case CLI_OPT_TLS_CERT: tls_cert = arg; return 0;
	case CLI_OPT_TLS_KEY: tls_key = arg; return 0;
	case CLI_OPT_TLS_CA: tls_ca = arg; return 0;
	case 'J': co->json = 1; return 0;
	case 'O':
		if (cli_int(cmd, "--timeout-ms", arg, 1, 86400000, &v))
			return 1;
		co->timeout_ms = (int)v;
		return 0;
	default: return -1;
	}
}

int cli_token(const char *cmd, char *out, size_t size)
{
	const char *env = getenv("SPLITCHAIN_TOKEN"), *home = getenv("HOME");
	char path[PATH_MAX];
	sc_err rc;

	out[0] = '\0';
	if (env && *env) {
		if (strlen(env) >= size || strchr(env, '\n')) {
			fprintf(stderr,
				"splitchain %s: not authorised: SPLITCHAIN_TOKEN is not a token\n",
				cmd);
			return CLI_ERROR;
		}
		snprintf(out, size, "%s", env);
		return CLI_OK;
	}
	if (!home || !*home)
		return CLI_OK;
	snprintf(path, sizeof(path), "%s/.config/splitchain/token", home);
	rc = sc_token_read_file(path, 1, out, size);
	if (rc == SC_ENOENT)
		return CLI_OK; /* none: the coordinator says what to do */
	if (rc) {
		fprintf(stderr, "splitchain %s: not authorised: %s\n", cmd, sc_err_detail());
		return CLI_ERROR;
	}
	return CLI_OK;
}

/* The command's connections, one per address, opened at its first call and
 * kept until the process exits: `watch` and `jobs --follow` call the same
 * coordinator every second, and the exit closes the sockets. They are never
 * closed here: nng 1.5.2 (Debian 12) can hang in nng_close for good when a
 * connection closes as a reply arrives (nng #1813, see rpc_client.c), which
 * left `watch` waiting forever on a coordinator that was slow to answer. */
static struct {
	char url[512];
	sc_rpc_client *cl;
} clients[8];

static int client_for(const char *cmd, const char *url, sc_rpc_client **out)
{
	char token[SC_RPC_MAX_AUTH];
	sc_err rc;
	size_t i;

	for (i = 0; i < sizeof(clients) / sizeof(clients[0]) && clients[i].cl; i++)
		if (strcmp(clients[i].url, url) == 0) {
			*out = clients[i].cl;
			return CLI_OK;
		}
	if (strlen(url) >= sizeof(clients[0].url))
		return cli_fail(cmd, sc_errf(SC_EINVAL, "the address is too long"), url);
	if (i == sizeof(clients) / sizeof(clients[0])) /* a command calls one coordinator */
		return cli_fail(cmd, sc_errf(SC_EINVAL, "more than %zu addresses", i), url);
	if (cli_token(cmd, token, sizeof(token)))
		return CLI_ERROR;
	if ((rc = sc_rpc_client_open(out, url)))
		return cli_fail(cmd, rc, url);
	if ((rc = sc_rpc_client_set_auth(*out, token, strlen(token)))) {
		sc_rpc_client_close(*out);
		return cli_fail(cmd, rc, "the token");
	}
	snprintf(clients[i].url, sizeof(clients[i].url), "%s", url);
	clients[i].cl = *out;
	return CLI_OK;
}

int cli_call_url(const char *cmd, const char *url, int timeout_ms, const char *method,
		 const ProtobufCMessage *req, const ProtobufCMessageDescriptor *desc,
		 ProtobufCMessage **rep)
{
	sc_rpc_client *cl = NULL;
	char msg[512] = "";
	int status = SC_STATUS_UNKNOWN;
	sc_err rc;

	if (cli_tls_ready(cmd, url) || client_for(cmd, url, &cl) != CLI_OK)
		return CLI_ERROR;
	rc = sc_rpc_call_pb(cl, method, req, desc, timeout_ms, &status, msg, sizeof(msg), rep);
	if (rc)
		return cli_fail(cmd, rc, method);
	if (status == SC_STATUS_UNAUTHENTICATED || status == SC_STATUS_PERMISSION_DENIED) {
		fprintf(stderr, "splitchain %s: not authorised: %s\n", cmd,
			msg[0] ? msg : sc_status_name(status));
		return CLI_ERROR;
	}
	if (status != SC_STATUS_OK) {
		fprintf(stderr, "splitchain %s: %s: %s\n", cmd, sc_status_name(status),
			msg[0] ? msg : "(no message)");
		if (status == SC_STATUS_UNAVAILABLE && strstr(msg, "no connection"))
			fprintf(
			    stderr, "splitchain %s: %s\n", cmd,
			    sc_tls_url(url)
				? "a TLS server refuses a certificate its CA did not sign: check "
				  "--tls-cert/--tls-ca (or SPLITCHAIN_TLS_*)"
				: "a TLS coordinator needs a tls+tcp:// address and --tls-cert, "
				  "--tls-key, --tls-ca (or SPLITCHAIN_TLS_*)");
		return CLI_ERROR;
	}
	return CLI_OK;
}

const char *cli_default_coordinator(void)
{
	const char *env = getenv("SPLITCHAIN_COORDINATOR");
	return env && *env ? env : DEFAULT_COORDINATOR;
}

/* One call to the coordinator; prints the error and returns CLI_ERROR
 * unless the status is OK. */
int cli_call(const char *cmd, const cli_conn *co, const char *method, const ProtobufCMessage *req,
	     const ProtobufCMessageDescriptor *desc, ProtobufCMessage **rep)
{
	return cli_call_url(cmd, co->url, co->timeout_ms, method, req, desc, rep);
}

/* Parses a command with only connection options and an optional JOB id. */
int cli_parse_simple(const char *cmd, const char *help, int argc, char **argv, cli_conn *co,
		     uint64_t *job, int need_job)
{
	static const struct option opts[] = { CLI_CONN_OPTIONS, { 0, 0, 0, 0 } };
	long v;
	int c;

	cli_conn_defaults(co);
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'h') {
			fputs(help, stdout);
			fputs(cli_conn_help, stdout);
			return -1;
		}
		int bad = cli_conn_option(cmd, c, optarg, co);
		if (bad > 0)
			return CLI_USAGE;
		if (bad < 0)
			return cli_usage(cmd, "unknown or incomplete option '%s'",
					 argv[optind - 1]);
	}
	if (need_job) {
		if (optind >= argc)
			return cli_usage(cmd, "a JOB id is required");
		if (cli_int(cmd, "JOB", argv[optind], 1, LONG_MAX, &v))
			return CLI_USAGE;
		*job = (uint64_t)v;
		optind++;
	}
	if (optind < argc)
		return cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
	return 0;
}

cJSON *cli_job_json(const Splitchain__JobInfo *j)
{
	cJSON *o = cJSON_CreateObject(), *pl = cJSON_AddArrayToObject(o, "placement");
	cJSON_AddNumberToObject(o, "job", (double)j->job_id);
	cJSON_AddStringToObject(o, "name", j->name);
	cJSON_AddStringToObject(o, "state", j->state);
	cJSON_AddNumberToObject(o, "step", j->step);
	cJSON_AddNumberToObject(o, "steps", j->steps);
	cJSON_AddNumberToObject(o, "loss", j->loss);
	cJSON_AddNumberToObject(o, "tokens_per_s", j->tokens_per_s);
	cJSON_AddNumberToObject(o, "eta_s", j->eta_s);
	if (j->eval_step) {
		cJSON_AddNumberToObject(o, "eval_step", j->eval_step);
		cJSON_AddNumberToObject(o, "eval_loss", j->eval_loss);
		cJSON_AddNumberToObject(o, "eval_perplexity", exp(j->eval_loss));
	}
	if (!strcmp(j->state, "running")) {
		cJSON_AddNumberToObject(o, "since_step_s", j->since_step_s);
		cJSON_AddNumberToObject(o, "stall_after_s", j->stall_after_s);
	}
	cJSON_AddStringToObject(o, "error", j->error);
	cJSON_AddStringToObject(o, "model", j->model_path);
	if (j->spec && j->spec->model && j->spec->model[0]) { /* registered (models add) */
		cJSON_AddStringToObject(o, "registered_model", j->spec->model);
		cJSON_AddStringToObject(o, "model_digest", j->spec->model_digest);
	}
	cJSON_AddNumberToObject(o, "stages", j->stages);
	if (j->spec && j->spec->lora && j->spec->train) {
		const Splitchain__LoraConfig *l = j->spec->lora;
		const Splitchain__TrainConfig *t = j->spec->train;
		char targets[256];
		cJSON *r = cJSON_AddObjectToObject(o, "recipe");
		snprintf(targets, sizeof(targets), "%s", l->target_names ? l->target_names : "");
		cJSON_AddNumberToObject(r, "rank", l->rank);
		cJSON_AddNumberToObject(r, "alpha", l->alpha);
		cJSON_AddStringToObject(r, "targets", targets);
		cJSON_AddNumberToObject(r, "batch", t->batch);
		cJSON_AddNumberToObject(r, "seq", t->seq);
		cJSON_AddNumberToObject(r, "micro_batches", t->micro_batches);
		cJSON_AddNumberToObject(r, "lr", t->lr);
		cJSON_AddNumberToObject(r, "min_lr", t->min_lr);
		cJSON_AddNumberToObject(r, "warmup", t->warmup);
		cJSON_AddNumberToObject(r, "weight_decay", t->weight_decay);
		cJSON_AddNumberToObject(r, "clip", t->grad_clip);
		cJSON_AddNumberToObject(r, "seed", (double)t->seed);
		cJSON_AddStringToObject(r, "schedule", j->spec->schedule ? "gpipe" : "1f1b");
		cJSON_AddBoolToObject(r, "tf32", t->allow_tf32);
		cJSON_AddStringToObject(r, "wire",
					t->wire < SC_WIRE_COUNT ? sc_wire_name(t->wire) : "?");
		sc_train_config tc;
		sc_wire_train_config(&tc, t);
		cJSON_AddStringToObject(r, "base", sc_train_base_word(&tc));
		cJSON_AddStringToObject(r, "base_quant", sc_base_quant_name((int)t->base_quant));
		cJSON_AddBoolToObject(r, "double_quant", t->double_quant);
		cJSON_AddStringToObject(r, "precision", sc_precision_name((int)t->precision));
		const Splitchain__SubmitRequest *q = j->spec;
		cJSON *d = cJSON_AddObjectToObject(o, "data");
		cJSON_AddStringToObject(d, "tokenizer", q->tokenizer_path ? q->tokenizer_path : "");
		cJSON_AddStringToObject(d, "eval_data", q->eval_data_path ? q->eval_data_path : "");
		cJSON_AddNumberToObject(d, "eval_split", q->eval_split);
		cJSON_AddNumberToObject(d, "eval_every", q->eval_every);
		cJSON_AddNumberToObject(d, "eval_batches", q->eval_batches);
		cJSON_AddBoolToObject(d, "pack", !q->no_pack);
		cJSON_AddBoolToObject(d, "skip_bad_lines", q->skip_bad_lines);
		if (q->n_owners) { /* private data: the owners, and how they meet */
			cJSON *ow = cJSON_AddArrayToObject(d, "owners");
			for (size_t k = 0; k < q->n_owners; k++)
				cJSON_AddItemToArray(ow, cJSON_CreateString(q->owners[k]));
			cJSON_AddNumberToObject(d, "owner_layers",
						q->owner_layers ? q->owner_layers : 1);
			cJSON_AddNumberToObject(d, "fedavg_every",
						q->fedavg_every ? q->fedavg_every : 1);
		}
	}
	for (size_t i = 0; i < j->n_placement; i++) {
		const Splitchain__StageInfo *s = j->placement[i];
		cJSON *e = cJSON_CreateObject();
		cJSON_AddNumberToObject(e, "stage", s->stage);
		cJSON_AddNumberToObject(e, "worker", (double)s->worker_id);
		cJSON_AddStringToObject(e, "worker_name", s->worker_name);
		cJSON_AddNumberToObject(e, "first_layer", s->first_layer);
		cJSON_AddNumberToObject(e, "last_layer", s->last_layer);
		if (s->tail_last_layer) { /* a data owner's two ends */
			cJSON_AddStringToObject(e, "role", "owner");
			cJSON_AddNumberToObject(e, "tail_first_layer", s->tail_first_layer);
			cJSON_AddNumberToObject(e, "tail_last_layer", s->tail_last_layer);
		}
		/* The planner's per-layer base formats ("": the job's base). */
		cJSON_AddStringToObject(e, "layer_quant", s->layer_quant ? s->layer_quant : "");
		if (s->quant_reason && *s->quant_reason)
			cJSON_AddStringToObject(e, "quant_reason", s->quant_reason);
		cJSON_AddItemToArray(pl, e);
	}
	return o;
}

void cli_print_json(cJSON *o)
{
	char *s = cJSON_PrintUnformatted(o);
	if (s)
		puts(s);
	free(s);
	cJSON_Delete(o);
}

int cli_get_status(const char *cmd, const cli_conn *co, uint64_t job, Splitchain__JobInfo **out)
{
	Splitchain__JobRef ref = SPLITCHAIN__JOB_REF__INIT;
	ref.job_id = job;
	return cli_call(cmd, co, "Coordinator.Status", &ref.base, &splitchain__job_info__descriptor,
			(ProtobufCMessage **)out);
}
