/* cli_jobs.c — the CLI's coordinator commands jobs, status, cancel, workers
 * and export (submit and watch have files of their own). Each is one or a
 * few RPCs to the coordinator. */
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli_conn.h"
#include "sc_adapter.h"
#include "sc_codec.h"
#include "sc_rpc_pb.h"
#include "sc_wire.h"
#include "splitchain.pb-c.h"

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
	cli_conn co;
	int p = cli_parse_simple("jobs", jobs_help, argc, argv, &co, NULL, 0);
	if (p)
		return p < 0 ? CLI_OK : p;
	if ((p = cli_call("jobs", &co, "Coordinator.Jobs", &req.base,
			  &splitchain__jobs_reply__descriptor, (ProtobufCMessage **)&rep)))
		return p;
	if (co.json) {
		cJSON *a = cJSON_CreateArray();
		for (size_t i = 0; i < rep->n_jobs; i++)
			cJSON_AddItemToArray(a, cli_job_json(rep->jobs[i]));
		cli_print_json(a);
	} else {
		printf("%-6s %-10s %15s %9s %10s  %s\n", "JOB", "STATE", "STEP", "LOSS", "TOK/S",
		       "NAME");
		for (size_t i = 0; i < rep->n_jobs; i++)
			print_job_line(rep->jobs[i]);
	}
	splitchain__jobs_reply__free_unpacked(rep, NULL);
	return CLI_OK;
}

static void print_status(const Splitchain__JobInfo *j)
{
	printf("job %llu %s%s%s\n", (unsigned long long)j->job_id, j->name[0] ? "(" : "", j->name,
	       j->name[0] ? ")" : "");
	printf("  state       %s%s%s\n", j->state, j->error[0] ? ": " : "", j->error);
	printf("  step        %u / %u\n", j->step, j->steps);
	printf("  loss        %.4f\n", j->loss);
	if (j->eval_step)
		printf("  eval loss   %.4f (perplexity %.3f) after step %u\n", j->eval_loss,
		       exp(j->eval_loss), j->eval_step);
	printf("  tokens/s    %.0f\n", j->tokens_per_s);
	if (j->eta_s > 0)
		printf("  eta         %.0f s\n", j->eta_s);
	if (!strcmp(j->state, "running"))
		printf(
		    "  last step   %.1f s ago (a step silent for %.0f s is treated as a fault)\n",
		    j->since_step_s, j->stall_after_s);
	if (j->spec && j->spec->model && j->spec->model[0]) /* registered (models add) */
		printf("  model       %s (registered, digest %.16s; served from %s)\n",
		       j->spec->model, j->spec->model_digest, j->model_path);
	else
		printf("  model       %s\n", j->model_path);
	if (j->spec && j->spec->lora && j->spec->train) {
		const Splitchain__LoraConfig *l = j->spec->lora;
		const Splitchain__TrainConfig *t = j->spec->train;
		char targets[128];
		snprintf(targets, sizeof(targets), "%s", l->target_names ? l->target_names : "");
		printf("  lora        rank %u, alpha %g, targets %s\n", l->rank, (double)l->alpha,
		       targets);
		printf("  training    %u x %u tokens x %u micro-batches, lr %g -> %g, warm-up %u, "
		       "%s, %s GEMMs, %s between stages\n",
		       t->batch, t->seq, t->micro_batches, (double)t->lr, (double)t->min_lr,
		       t->warmup, j->spec->schedule ? "GPipe" : "1F1B",
		       t->allow_tf32 ? "TF32 (on GPUs)" : "fp32",
		       t->wire < SC_WIRE_COUNT ? sc_wire_name(t->wire) : "?");
		sc_train_config tc;
		sc_wire_train_config(&tc, t);
		printf("  frozen base %s (--base-quant %s%s --precision %s)\n",
		       sc_train_base_word(&tc), sc_base_quant_name(tc.base_quant),
		       tc.double_quant ? " --double-quant" : "", sc_precision_name(tc.precision));
		const Splitchain__SubmitRequest *q = j->spec;
		if (q->n_owners) { /* private data: where it lives, how the owners meet */
			printf("  owners      ");
			for (size_t k = 0; k < q->n_owners; k++)
				printf("%s%s", k ? ", " : "", q->owners[k]);
			printf(" (data '%s' under each owner's directory; %u block(s) at each "
			       "end",
			       q->data_path, q->owner_layers ? q->owner_layers : 1);
			if (q->n_owners > 1)
				q->fedavg_every > 1
				    ? printf("; adapters averaged every %u steps)\n",
					     q->fedavg_every)
				    : printf("; gradients added up every step)\n");
			else
				printf(")\n");
		}
		printf("  data        %s%s", q->no_pack ? "unpacked" : "packed",
		       q->skip_bad_lines ? ", bad lines skipped" : "");
		if (q->eval_split > 0)
			printf(", %g held out", q->eval_split);
		else if (q->eval_data_path && *q->eval_data_path)
			printf(", held out: %s", q->eval_data_path);
		if ((q->eval_split > 0 || (q->eval_data_path && *q->eval_data_path)) &&
		    q->eval_every)
			printf(", eval every %u step(s) and after the last", q->eval_every);
		else if (q->eval_split > 0 || (q->eval_data_path && *q->eval_data_path))
			printf(", eval after the last step");
		printf("\n");
	}
	printf("  placement   %u stage(s)\n", j->stages);
	for (size_t i = 0; i < j->n_placement; i++) {
		const Splitchain__StageInfo *s = j->placement[i];
		if (s->tail_last_layer)
			printf("    stage %u: layers [%u, %u) + [%u, %u) with the head on worker "
			       "%llu (%s), the data owner\n",
			       s->stage, s->first_layer, s->last_layer, s->tail_first_layer,
			       s->tail_last_layer, (unsigned long long)s->worker_id,
			       s->worker_name);
		else
			printf("    stage %u: layers [%u, %u) on worker %llu (%s)\n", s->stage,
			       s->first_layer, s->last_layer, (unsigned long long)s->worker_id,
			       s->worker_name);
		if (s->layer_quant && *s->layer_quant) /* lowered by the planner to fit */
			printf("      base lowered: %s — %s\n", s->layer_quant,
			       s->quant_reason ? s->quant_reason : "");
	}
}

static const char status_help[] =
    "usage: splitchain status JOB [--json]\n\nShows a job's state, step, loss, speed and "
    "placement.\n\n";

int cli_status(int argc, char **argv)
{
	Splitchain__JobInfo *j = NULL;
	cli_conn co;
	uint64_t job = 0;
	int p = cli_parse_simple("status", status_help, argc, argv, &co, &job, 1);
	if (p)
		return p < 0 ? CLI_OK : p;
	if ((p = cli_get_status("status", &co, job, &j)))
		return p;
	if (co.json)
		cli_print_json(cli_job_json(j));
	else
		print_status(j);
	splitchain__job_info__free_unpacked(j, NULL);
	return CLI_OK;
}

static const char cancel_help[] = "usage: splitchain cancel JOB\n\nCancels a queued or running "
				  "job (its checkpoints stay exportable).\n\n";

int cli_cancel(int argc, char **argv)
{
	Splitchain__JobRef ref = SPLITCHAIN__JOB_REF__INIT;
	Splitchain__JobInfo *j = NULL;
	cli_conn co;
	uint64_t job = 0;
	int p = cli_parse_simple("cancel", cancel_help, argc, argv, &co, &job, 1);
	if (p)
		return p < 0 ? CLI_OK : p;
	ref.job_id = job;
	if ((p = cli_call("cancel", &co, "Coordinator.Cancel", &ref.base,
			  &splitchain__job_info__descriptor, (ProtobufCMessage **)&j)))
		return p;
	if (co.json)
		cli_print_json(cli_job_json(j));
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
	cli_conn co;
	int p = cli_parse_simple("workers", workers_help, argc, argv, &co, NULL, 0);
	if (p)
		return p < 0 ? CLI_OK : p;
	if ((p = cli_call("workers", &co, "Coordinator.Workers", &req.base,
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
			cJSON_AddNumberToObject(o, "memory_reserve_bytes",
						(double)w->memory_reserve_bytes);
			cJSON_AddNumberToObject(o, "last_seen_ms", (double)w->last_seen_unix_ms);
			cJSON_AddBoolToObject(o, "data_owner", w->data_owner);
			cJSON_AddStringToObject(o, "address", w->control_addr);
			cJSON_AddNumberToObject(o, "job_slots", w->job_slots ? w->job_slots : 1);
			cJSON_AddNumberToObject(o, "base_bytes", (double)w->base_bytes);
			cJSON *jobs = cJSON_AddArrayToObject(o, "jobs_memory");
			for (size_t k = 0; k < w->n_jobs_memory; k++) {
				cJSON *m = cJSON_CreateObject();
				cJSON_AddNumberToObject(m, "job",
							(double)w->jobs_memory[k]->job_id);
				cJSON_AddNumberToObject(m, "bytes",
							(double)w->jobs_memory[k]->bytes);
				cJSON_AddItemToArray(jobs, m);
			}
			cJSON_AddItemToArray(a, o);
		}
		cli_print_json(a);
	} else {
		printf("%-7s %-20s %-8s %-6s %9s %9s %9s %5s %9s  %s\n", "WORKER", "NAME", "DEVICE",
		       "STATE", "GFLOP/S", "MEM GiB", "FOR JOBS", "JOBS", "BASE MiB", "ADDRESS");
		for (size_t i = 0; i < rep->n_workers; i++) {
			const Splitchain__WorkerInfo *w = rep->workers[i];
			uint64_t use = w->memory_bytes > w->memory_reserve_bytes
					   ? w->memory_bytes - w->memory_reserve_bytes
					   : 0;
			char jobs[16];
			snprintf(jobs, sizeof(jobs), "%zu/%u", w->n_jobs_memory,
				 w->job_slots ? w->job_slots : 1);
			printf("%-7llu %-20s %-8s %-6s %9.1f %9.1f %9.1f %5s %9.1f  %s%s\n",
			       (unsigned long long)w->worker_id, w->name, w->device, w->state,
			       w->gflops, (double)w->memory_bytes / (1 << 30),
			       (double)use / (1 << 30), jobs, (double)w->base_bytes / (1 << 20),
			       w->control_addr, w->data_owner ? "  (data owner)" : "");
			for (size_t k = 0; k < w->n_jobs_memory; k++)
				printf("%-7s   job %llu: %.1f MiB of its own\n", "",
				       (unsigned long long)w->jobs_memory[k]->job_id,
				       (double)w->jobs_memory[k]->bytes / (1 << 20));
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
	static const struct option opts[] = { { "out", 1, 0, 'o' },
					      CLI_CONN_OPTIONS,
					      { 0, 0, 0, 0 } };
	const char *cmd = "export", *out = NULL;
	Splitchain__JobRef ref = SPLITCHAIN__JOB_REF__INIT;
	Splitchain__ExportReply *rep = NULL;
	sc_adapter *ad = NULL;
	sc_lora_config lc;
	sc_model_config mc;
	cli_conn co;
	long v;
	int c, p;
	sc_err rc;

	cli_conn_defaults(&co);
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'o') {
			out = optarg;
			continue;
		}
		if (c == 'h') {
			fputs(export_help, stdout);
			fputs(cli_conn_help, stdout);
			return CLI_OK;
		}
		p = cli_conn_option(cmd, c, optarg, &co);
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
	if ((p = cli_call(cmd, &co, "Coordinator.Export", &ref.base,
			  &splitchain__export_reply__descriptor, (ProtobufCMessage **)&rep)))
		return p;
	lc = (sc_lora_config){ .rank = (int)rep->lora->rank,
			       .alpha = rep->lora->alpha,
			       .targets = rep->lora->targets,
			       .seed = rep->lora->seed };
	/* the job's frozen base, which the adapter records as finetune's does */
	Splitchain__JobInfo *info = NULL;
	sc_train_config base;
	sc_train_config_defaults(&base);
	if ((p = cli_get_status(cmd, &co, ref.job_id, &info))) {
		splitchain__export_reply__free_unpacked(rep, NULL);
		return p;
	}
	if (info->spec && info->spec->train) {
		sc_train_config tc;
		sc_wire_train_config(&tc, info->spec->train);
		base.base_quant = tc.base_quant;
		base.double_quant = tc.double_quant;
		base.precision = tc.precision;
	}
	splitchain__job_info__free_unpacked(info, NULL);
	const char *cfg_text = rep->model_config ? rep->model_config : "";
	if ((rc = sc_config_parse(&mc, cfg_text, strlen(cfg_text))) ||
	    (rc = sc_train_base_format(&mc, &base)) || (rc = sc_adapter_new(&ad, &lc, &mc)) ||
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
			cli_print_json(o);
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
