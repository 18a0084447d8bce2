/* cli_jobs.c — the CLI's coordinator commands: submit, jobs, status, watch,
 * cancel, workers, export. Each is one or a few RPCs to the coordinator. */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "sc_adapter.h"
#include "sc_rpc_pb.h"
#include "sc_wire.h"
#include "splitchain.pb-c.h"

#define DEFAULT_COORDINATOR "tcp://127.0.0.1:7700"

typedef struct conn_opts {
	const char *url;
	int json;
	int timeout_ms;
} conn_opts;

static const char conn_help[] =
    "connection:\n"
    "  --coordinator URL    the coordinator's address (default $SPLITCHAIN_COORDINATOR,\n"
    "                       else " DEFAULT_COORDINATOR ")\n"
    "  --timeout-ms N       give up after N ms without a reply               (default 10000)\n";

#define CONN_OPTIONS                                                                               \
	{ "coordinator", 1, 0, 'C' }, { "timeout-ms", 1, 0, 'O' }, { "json", 0, 0, 'J' },          \
	{                                                                                          \
		"help", 0, 0, 'h'                                                                  \
	}

static void conn_defaults(conn_opts *c)
{
	c->url = cli_default_coordinator();
	c->json = 0;
	c->timeout_ms = 10000;
}

/* Handles a connection option; 0 done, 1 bad, -1 not one. */
static int conn_option(const char *cmd, int c, const char *arg, conn_opts *co)
{
	long v;
	switch (c) {
	case 'C': co->url = arg; return 0;
	case 'J': co->json = 1; return 0;
	case 'O':
		if (cli_int(cmd, "--timeout-ms", arg, 1, 86400000, &v))
			return 1;
		co->timeout_ms = (int)v;
		return 0;
	default: return -1;
	}
}

int cli_call_url(const char *cmd, const char *url, int timeout_ms, const char *method,
		 const ProtobufCMessage *req, const ProtobufCMessageDescriptor *desc,
		 ProtobufCMessage **rep)
{
	sc_rpc_client *cl = NULL;
	char msg[512] = "";
	int status = SC_STATUS_UNKNOWN;
	sc_err rc;

	if ((rc = sc_rpc_client_open(&cl, url)))
		return cli_fail(cmd, rc, url);
	rc = sc_rpc_call_pb(cl, method, req, desc, timeout_ms, &status, msg, sizeof(msg), rep);
	sc_rpc_client_close(cl);
	if (rc)
		return cli_fail(cmd, rc, method);
	if (status != SC_STATUS_OK) {
		fprintf(stderr, "splitchain %s: %s: %s\n", cmd, sc_status_name(status),
			msg[0] ? msg : "(no message)");
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
static int call(const char *cmd, const conn_opts *co, const char *method,
		const ProtobufCMessage *req, const ProtobufCMessageDescriptor *desc,
		ProtobufCMessage **rep)
{
	return cli_call_url(cmd, co->url, co->timeout_ms, method, req, desc, rep);
}

/* Parses a command with only connection options and an optional JOB id. */
static int parse_simple(const char *cmd, const char *help, int argc, char **argv, conn_opts *co,
			uint64_t *job, int need_job)
{
	static const struct option opts[] = { CONN_OPTIONS, { 0, 0, 0, 0 } };
	long v;
	int c;

	conn_defaults(co);
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'h') {
			fputs(help, stdout);
			fputs(conn_help, stdout);
			return -1;
		}
		int bad = conn_option(cmd, c, optarg, co);
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

static cJSON *job_json(const Splitchain__JobInfo *j)
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
	if (!strcmp(j->state, "running")) {
		cJSON_AddNumberToObject(o, "since_step_s", j->since_step_s);
		cJSON_AddNumberToObject(o, "stall_after_s", j->stall_after_s);
	}
	cJSON_AddStringToObject(o, "error", j->error);
	cJSON_AddStringToObject(o, "model", j->model_path);
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
	}
	for (size_t i = 0; i < j->n_placement; i++) {
		const Splitchain__StageInfo *s = j->placement[i];
		cJSON *e = cJSON_CreateObject();
		cJSON_AddNumberToObject(e, "stage", s->stage);
		cJSON_AddNumberToObject(e, "worker", (double)s->worker_id);
		cJSON_AddStringToObject(e, "worker_name", s->worker_name);
		cJSON_AddNumberToObject(e, "first_layer", s->first_layer);
		cJSON_AddNumberToObject(e, "last_layer", s->last_layer);
		cJSON_AddItemToArray(pl, e);
	}
	return o;
}

static void print_json(cJSON *o)
{
	char *s = cJSON_PrintUnformatted(o);
	if (s)
		puts(s);
	free(s);
	cJSON_Delete(o);
}

static const char submit_help[] =
    "usage: splitchain submit --model DIR --data FILE [options]\n"
    "\n"
    "Submits a LoRA fine-tuning job to the coordinator and prints its id. The\n"
    "model directory must be readable by every worker, the data by the coordinator.\n"
    "\n"
    "job:\n"
    "  --model DIR          Hugging Face checkpoint directory: gpt2, llama,\n"
    "                       mistral or qwen2                                  (required)\n"
    "  --data FILE          token file (.bin), text, or JSONL ({\"text\"} or\n"
    "                       {\"prompt\", \"completion\"}: loss on the completion) (required)\n"
    "  --tokenizer PATH     tokenizer.json (default: the model directory's, if any;\n"
    "                       else text is read as bytes)\n"
    "  --skip-bad-lines     count and skip malformed JSONL lines instead of failing\n"
    "  --name NAME          a label for the job\n"
    "  --stages N           workers in the chain                              (default 2)\n"
    "  --schedule S         1f1b or gpipe                                     (default 1f1b)\n"
    "  --checkpoint-every N checkpoint every N steps (and at the end)         (default 10)\n";

int cli_submit(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "model", 1, 0, 'm' },
		{ "data", 1, 0, 'd' },
		{ "name", 1, 0, 'N' },
		{ "stages", 1, 0, 'S' },
		{ "schedule", 1, 0, 'G' },
		{ "checkpoint-every", 1, 0, 'K' },
		{ "tokenizer", 1, 0, 'Z' },
		{ "skip-bad-lines", 0, 0, 'Y' },
		CLI_TRAIN_OPTIONS,
		CONN_OPTIONS,
		{ 0, 0, 0, 0 },
	};
	const char *cmd = "submit", *model = NULL, *data = NULL, *name = "", *targets,
		   *tokenizer = NULL;
	char tok_abs[PATH_MAX];
	int skip_bad = 0;
	char model_abs[PATH_MAX], data_abs[PATH_MAX];
	Splitchain__SubmitRequest req = SPLITCHAIN__SUBMIT_REQUEST__INIT;
	Splitchain__LoraConfig lora = SPLITCHAIN__LORA_CONFIG__INIT;
	Splitchain__TrainConfig train = SPLITCHAIN__TRAIN_CONFIG__INIT;
	Splitchain__SubmitReply *rep = NULL;
	sc_lora_config lc;
	sc_train_config tc;
	conn_opts co;
	long stages = 2, every = 10;
	int c, ret, schedule = SPLITCHAIN__SCHEDULE__SCHEDULE_1F1B;

	conn_defaults(&co);
	cli_train_defaults(&lc, &tc, &targets);
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		int bad = 0;
		switch (c) {
		case 'm': model = optarg; break;
		case 'd': data = optarg; break;
		case 'N': name = optarg; break;
		case 'Z': tokenizer = optarg; break;
		case 'Y': skip_bad = 1; break;
		case 'S': bad = cli_int(cmd, "--stages", optarg, 1, 256, &stages); break;
		case 'K':
			bad = cli_int(cmd, "--checkpoint-every", optarg, 1, 100000000, &every);
			break;
		case 'G':
			if (!strcmp(optarg, "1f1b"))
				schedule = SPLITCHAIN__SCHEDULE__SCHEDULE_1F1B;
			else if (!strcmp(optarg, "gpipe"))
				schedule = SPLITCHAIN__SCHEDULE__SCHEDULE_GPIPE;
			else
				return cli_usage(cmd, "--schedule must be 1f1b or gpipe, got '%s'",
						 optarg);
			break;
		case 'h':
			fputs(submit_help, stdout);
			fputs(cli_train_help, stdout);
			fputs(conn_help, stdout);
			return CLI_OK;
		default:
			bad = conn_option(cmd, c, optarg, &co);
			if (bad < 0)
				bad = cli_train_option(cmd, c, optarg, &lc, &tc, &targets);
			if (bad < 0)
				return cli_usage(cmd, "unknown or incomplete option '%s'",
						 argv[optind - 1]);
		}
		if (bad)
			return CLI_USAGE;
	}
	if (optind < argc)
		return cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
	if (!model || !data)
		return cli_usage(cmd, "--model DIR and --data FILE are required");
	cli_train_finish(&lc, &tc);
	/* Paths travel to other processes: make them absolute here. */
	if (!realpath(model, model_abs)) {
		fprintf(stderr, "splitchain submit: model directory '%s' not found\n", model);
		return CLI_ERROR;
	}
	if (!realpath(data, data_abs)) {
		fprintf(stderr, "splitchain submit: data file '%s' not found\n", data);
		return CLI_ERROR;
	}
	if (tokenizer && !realpath(tokenizer, tok_abs)) {
		fprintf(stderr, "splitchain submit: tokenizer '%s' not found\n", tokenizer);
		return CLI_ERROR;
	}
	req.tokenizer_path = tokenizer ? tok_abs : (char *)"";
	req.skip_bad_lines = skip_bad;
	lora.rank = (uint32_t)lc.rank;
	lora.alpha = lc.alpha;
	lora.target_names = (char *)targets; /* resolved by the coordinator */
	lora.seed = lc.seed;
	sc_wire_train_message(&train, &tc);
	req.name = (char *)name;
	req.model_path = model_abs;
	req.data_path = data_abs;
	req.lora = &lora;
	req.train = &train;
	req.stages = (uint32_t)stages;
	req.schedule = schedule;
	req.checkpoint_every = (uint32_t)every;
	ret = call(cmd, &co, "Coordinator.Submit", &req.base, &splitchain__submit_reply__descriptor,
		   (ProtobufCMessage **)&rep);
	if (ret)
		return ret;
	if (co.json) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddNumberToObject(o, "job", (double)rep->job_id);
		print_json(o);
	} else {
		printf("%llu\n", (unsigned long long)rep->job_id);
	}
	splitchain__submit_reply__free_unpacked(rep, NULL);
	return CLI_OK;
}

static void print_job_line(const Splitchain__JobInfo *j)
{
	printf("%-6llu %-10s %7u/%-7u %9.4f %10.0f  %s\n", (unsigned long long)j->job_id, j->state,
	       j->step, j->steps, j->loss, j->tokens_per_s, j->name);
}

static const char jobs_help[] = "usage: splitchain jobs [--json]\n\nLists every job.\n\n";

int cli_jobs(int argc, char **argv)
{
	Splitchain__Empty req = SPLITCHAIN__EMPTY__INIT;
	Splitchain__JobsReply *rep = NULL;
	conn_opts co;
	int p = parse_simple("jobs", jobs_help, argc, argv, &co, NULL, 0);
	if (p)
		return p < 0 ? CLI_OK : p;
	if ((p = call("jobs", &co, "Coordinator.Jobs", &req.base,
		      &splitchain__jobs_reply__descriptor, (ProtobufCMessage **)&rep)))
		return p;
	if (co.json) {
		cJSON *a = cJSON_CreateArray();
		for (size_t i = 0; i < rep->n_jobs; i++)
			cJSON_AddItemToArray(a, job_json(rep->jobs[i]));
		print_json(a);
	} else {
		printf("%-6s %-10s %15s %9s %10s  %s\n", "JOB", "STATE", "STEP", "LOSS", "TOK/S",
		       "NAME");
		for (size_t i = 0; i < rep->n_jobs; i++)
			print_job_line(rep->jobs[i]);
	}
	splitchain__jobs_reply__free_unpacked(rep, NULL);
	return CLI_OK;
}

static int get_status(const char *cmd, const conn_opts *co, uint64_t job, Splitchain__JobInfo **out)
{
	Splitchain__JobRef ref = SPLITCHAIN__JOB_REF__INIT;
	ref.job_id = job;
	return call(cmd, co, "Coordinator.Status", &ref.base, &splitchain__job_info__descriptor,
		    (ProtobufCMessage **)out);
}

static void print_status(const Splitchain__JobInfo *j)
{
	printf("job %llu %s%s%s\n", (unsigned long long)j->job_id, j->name[0] ? "(" : "", j->name,
	       j->name[0] ? ")" : "");
	printf("  state       %s%s%s\n", j->state, j->error[0] ? ": " : "", j->error);
	printf("  step        %u / %u\n", j->step, j->steps);
	printf("  loss        %.4f\n", j->loss);
	printf("  tokens/s    %.0f\n", j->tokens_per_s);
	if (j->eta_s > 0)
		printf("  eta         %.0f s\n", j->eta_s);
	if (!strcmp(j->state, "running"))
		printf(
		    "  last step   %.1f s ago (a step silent for %.0f s is treated as a fault)\n",
		    j->since_step_s, j->stall_after_s);
	printf("  model       %s\n", j->model_path);
	if (j->spec && j->spec->lora && j->spec->train) {
		const Splitchain__LoraConfig *l = j->spec->lora;
		const Splitchain__TrainConfig *t = j->spec->train;
		char targets[128];
		snprintf(targets, sizeof(targets), "%s", l->target_names ? l->target_names : "");
		printf("  lora        rank %u, alpha %g, targets %s\n", l->rank, (double)l->alpha,
		       targets);
		printf("  training    %u x %u tokens x %u micro-batches, lr %g -> %g, warm-up %u, "
		       "%s, %s GEMMs\n",
		       t->batch, t->seq, t->micro_batches, (double)t->lr, (double)t->min_lr,
		       t->warmup, j->spec->schedule ? "GPipe" : "1F1B",
		       t->allow_tf32 ? "TF32 (on GPUs)" : "fp32");
	}
	printf("  placement   %u stage(s)\n", j->stages);
	for (size_t i = 0; i < j->n_placement; i++) {
		const Splitchain__StageInfo *s = j->placement[i];
		printf("    stage %u: layers [%u, %u) on worker %llu (%s)\n", s->stage,
		       s->first_layer, s->last_layer, (unsigned long long)s->worker_id,
		       s->worker_name);
	}
}

static const char status_help[] =
    "usage: splitchain status JOB [--json]\n\nShows a job's state, step, loss, speed and "
    "placement.\n\n";

int cli_status(int argc, char **argv)
{
	Splitchain__JobInfo *j = NULL;
	conn_opts co;
	uint64_t job = 0;
	int p = parse_simple("status", status_help, argc, argv, &co, &job, 1);
	if (p)
		return p < 0 ? CLI_OK : p;
	if ((p = get_status("status", &co, job, &j)))
		return p;
	if (co.json)
		print_json(job_json(j));
	else
		print_status(j);
	splitchain__job_info__free_unpacked(j, NULL);
	return CLI_OK;
}

static int finished(const char *state)
{
	return !strcmp(state, "done") || !strcmp(state, "failed") || !strcmp(state, "cancelled");
}

static const char watch_help[] =
    "usage: splitchain watch JOB [--json]\n\nFollows a job until it ends: a progress bar "
    "on a terminal, one line per step\notherwise (--json: one JSON object per step). Exits 0 "
    "when the job is done,\n1 when it failed or was cancelled.\n\n";

int cli_watch(int argc, char **argv)
{
	conn_opts co;
	uint64_t job = 0;
	long last_step = -1;
	int tty = isatty(STDOUT_FILENO), p, ret;
	char last_state[32] = "";

	if ((p = parse_simple("watch", watch_help, argc, argv, &co, &job, 1)))
		return p < 0 ? CLI_OK : p;
	for (;;) {
		Splitchain__JobInfo *j = NULL;
		if ((p = get_status("watch", &co, job, &j)))
			return p;
		if ((long)j->step != last_step || strcmp(last_state, j->state)) {
			if (co.json) {
				print_json(job_json(j));
			} else if (tty && j->steps) {
				int w = 30, filled = (int)((double)w * j->step / j->steps);
				printf("\r[%.*s%*s] %u/%u %-9s loss %.4f  %.0f tok/s  eta %.0fs   ",
				       filled, "##############################", w - filled, "",
				       j->step, j->steps, j->state, j->loss, j->tokens_per_s,
				       j->eta_s);
			} else {
				printf("job %llu %s step %u/%u loss %.4f tok/s %.0f eta %.0fs\n",
				       (unsigned long long)j->job_id, j->state, j->step, j->steps,
				       j->loss, j->tokens_per_s, j->eta_s);
			}
			fflush(stdout);
			last_step = (long)j->step;
			snprintf(last_state, sizeof(last_state), "%s", j->state);
		}
		if (finished(j->state)) {
			if (tty && !co.json)
				printf("\n");
			if (j->error[0])
				fprintf(stderr, "job %llu %s: %s\n", (unsigned long long)j->job_id,
					j->state, j->error);
			ret = strcmp(j->state, "done") ? CLI_ERROR : CLI_OK;
			splitchain__job_info__free_unpacked(j, NULL);
			return ret;
		}
		splitchain__job_info__free_unpacked(j, NULL);
		usleep(500 * 1000);
	}
}

static const char cancel_help[] = "usage: splitchain cancel JOB\n\nCancels a queued or running "
				  "job (its checkpoints stay exportable).\n\n";

int cli_cancel(int argc, char **argv)
{
	Splitchain__JobRef ref = SPLITCHAIN__JOB_REF__INIT;
	Splitchain__JobInfo *j = NULL;
	conn_opts co;
	uint64_t job = 0;
	int p = parse_simple("cancel", cancel_help, argc, argv, &co, &job, 1);
	if (p)
		return p < 0 ? CLI_OK : p;
	ref.job_id = job;
	if ((p = call("cancel", &co, "Coordinator.Cancel", &ref.base,
		      &splitchain__job_info__descriptor, (ProtobufCMessage **)&j)))
		return p;
	if (co.json)
		print_json(job_json(j));
	else
		printf("job %llu %s\n", (unsigned long long)j->job_id, j->state);
	splitchain__job_info__free_unpacked(j, NULL);
	return CLI_OK;
}

static const char workers_help[] = "usage: splitchain workers [--json]\n\nLists the registered "
				   "workers.\n\n";

int cli_workers(int argc, char **argv)
{
	Splitchain__Empty req = SPLITCHAIN__EMPTY__INIT;
	Splitchain__WorkersReply *rep = NULL;
	conn_opts co;
	int p = parse_simple("workers", workers_help, argc, argv, &co, NULL, 0);
	if (p)
		return p < 0 ? CLI_OK : p;
	if ((p = call("workers", &co, "Coordinator.Workers", &req.base,
		      &splitchain__workers_reply__descriptor, (ProtobufCMessage **)&rep)))
		return p;
	if (co.json) {
		cJSON *a = cJSON_CreateArray();
		for (size_t i = 0; i < rep->n_workers; i++) {
			const Splitchain__WorkerInfo *w = rep->workers[i];
			cJSON *o = cJSON_CreateObject();
			cJSON_AddNumberToObject(o, "worker", (double)w->worker_id);
			cJSON_AddStringToObject(o, "name", w->name);
			cJSON_AddStringToObject(o, "device", w->device);
			cJSON_AddStringToObject(o, "state", w->state);
			cJSON_AddNumberToObject(o, "gflops", w->gflops);
			cJSON_AddNumberToObject(o, "memory_bytes", (double)w->memory_bytes);
			cJSON_AddNumberToObject(o, "last_seen_ms", (double)w->last_seen_unix_ms);
			cJSON_AddStringToObject(o, "address", w->control_addr);
			cJSON_AddItemToArray(a, o);
		}
		print_json(a);
	} else {
		printf("%-7s %-20s %-8s %-6s %9s %9s  %s\n", "WORKER", "NAME", "DEVICE", "STATE",
		       "GFLOP/S", "MEM GiB", "ADDRESS");
		for (size_t i = 0; i < rep->n_workers; i++) {
			const Splitchain__WorkerInfo *w = rep->workers[i];
			printf("%-7llu %-20s %-8s %-6s %9.1f %9.1f  %s\n",
			       (unsigned long long)w->worker_id, w->name, w->device, w->state,
			       w->gflops, (double)w->memory_bytes / (1 << 30), w->control_addr);
		}
	}
	splitchain__workers_reply__free_unpacked(rep, NULL);
	return CLI_OK;
}

static const char export_help[] =
    "usage: splitchain export JOB --out DIR\n\nWrites the adapter of the job's latest "
    "checkpoint to DIR in the Hugging Face\nPEFT format (adapter_model.safetensors + "
    "adapter_config.json).\n\n";

int cli_export(int argc, char **argv)
{
	static const struct option opts[] = { { "out", 1, 0, 'o' }, CONN_OPTIONS, { 0, 0, 0, 0 } };
	const char *cmd = "export", *out = NULL;
	Splitchain__JobRef ref = SPLITCHAIN__JOB_REF__INIT;
	Splitchain__ExportReply *rep = NULL;
	sc_adapter *ad = NULL;
	sc_lora_config lc;
	sc_model_config mc;
	conn_opts co;
	long v;
	int c, p;
	sc_err rc;

	conn_defaults(&co);
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'o') {
			out = optarg;
			continue;
		}
		if (c == 'h') {
			fputs(export_help, stdout);
			fputs(conn_help, stdout);
			return CLI_OK;
		}
		p = conn_option(cmd, c, optarg, &co);
		if (p > 0)
			return CLI_USAGE;
		if (p < 0)
			return cli_usage(cmd, "unknown or incomplete option '%s'",
					 argv[optind - 1]);
	}
	if (optind >= argc)
		return cli_usage(cmd, "a JOB id is required");
	if (cli_int(cmd, "JOB", argv[optind], 1, LONG_MAX, &v))
		return CLI_USAGE;
	if (++optind < argc)
		return cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
	if (!out)
		return cli_usage(cmd, "--out DIR is required");
	ref.job_id = (uint64_t)v;
	if ((p = call(cmd, &co, "Coordinator.Export", &ref.base,
		      &splitchain__export_reply__descriptor, (ProtobufCMessage **)&rep)))
		return p;
	lc = (sc_lora_config){ .rank = (int)rep->lora->rank,
			       .alpha = rep->lora->alpha,
			       .targets = rep->lora->targets,
			       .seed = rep->lora->seed };
	const char *cfg_text = rep->model_config ? rep->model_config : "";
	if ((rc = sc_config_parse(&mc, cfg_text, strlen(cfg_text))) ||
	    (rc = sc_adapter_new(&ad, &lc, &mc)) ||
	    (rc = sc_wire_to_adapter(ad, 0, ad->n_layer, rep->tensors, rep->n_tensors,
				     "checkpoint")) ||
	    (rc = sc_adapter_save(ad, out, rep->model_path))) {
		p = cli_fail(cmd, rc, "cannot export the adapter");
	} else {
		if (co.json) {
			cJSON *o = cJSON_CreateObject();
			cJSON_AddNumberToObject(o, "job", (double)v);
			cJSON_AddNumberToObject(o, "step", rep->step);
			cJSON_AddStringToObject(o, "out", out);
			print_json(o);
		} else {
			printf("job %ld: adapter of step %u written to %s (PEFT format)\n", v,
			       rep->step, out);
		}
		p = CLI_OK;
	}
	sc_adapter_free(ad);
	splitchain__export_reply__free_unpacked(rep, NULL);
	return p;
}
