/* cli_models.c — `splitchain models add|list|show|rm`: models registered
 * with the coordinator as content-addressed tensors (Coordinator.ModelAdd,
 * Models, ModelShow, ModelRemove), which jobs then name with
 * `submit --model NAME` and workers fetch into their caches. */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli_conn.h"
#include "sc_rpc_pb.h"
#include "splitchain.pb-c.h"

static const char models_help[] =
    "usage: splitchain models add NAME DIR   register the model in DIR as NAME\n"
    "       splitchain models list           the registered models\n"
    "       splitchain models show NAME      one model and its tensors (--tensors)\n"
    "       splitchain models rm NAME        forget a model\n"
    "\n"
    "A registered model is config.json, its tokenizer files and a manifest of every\n"
    "tensor of model.safetensors (or of the shards of model.safetensors.index.json):\n"
    "name, dtype, shape, file, byte range and sha256. The coordinator reads DIR (a\n"
    "path on its machine) once to hash it and serves the tensors from there; a job\n"
    "submitted with --model NAME runs on workers started with --cache DIR, each of\n"
    "which fetches only its segment's tensors and checks every hash.\n"
    "\n"
    "  --tensors            show: list every tensor\n";

/* Bytes as "1.5 GiB". */
static const char *human(char *buf, size_t size, double b)
{
	const char *u[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	int i = 0;
	while (b >= 1024 && i < 4) {
		b /= 1024;
		i++;
	}
	snprintf(buf, size, i ? "%.1f %s" : "%.0f %s", b, u[i]);
	return buf;
}

static cJSON *info_json(const Splitchain__ModelInfo *m)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "name", m->name);
	cJSON_AddStringToObject(o, "model_type", m->model_type);
	cJSON_AddNumberToObject(o, "n_layer", m->n_layer);
	cJSON_AddNumberToObject(o, "tensors", m->tensor_count);
	cJSON_AddNumberToObject(o, "bytes", (double)m->bytes);
	cJSON_AddStringToObject(o, "digest", m->digest);
	cJSON_AddStringToObject(o, "dir", m->dir);
	cJSON_AddNumberToObject(o, "created_ms", (double)m->created_unix_ms);
	if (m->n_tensors) {
		cJSON *a = cJSON_AddArrayToObject(o, "manifest");
		for (size_t i = 0; i < m->n_tensors; i++) {
			const Splitchain__ModelTensor *t = m->tensors[i];
			cJSON *e = cJSON_CreateObject(), *sh = cJSON_AddArrayToObject(e, "shape");
			cJSON_AddStringToObject(e, "name", t->name);
			cJSON_AddStringToObject(e, "dtype", t->dtype);
			for (size_t k = 0; k < t->n_shape; k++)
				cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t->shape[k]));
			cJSON_AddStringToObject(e, "file", t->file);
			cJSON_AddNumberToObject(e, "offset", (double)t->offset);
			cJSON_AddNumberToObject(e, "nbytes", (double)t->nbytes);
			cJSON_AddStringToObject(e, "sha256", t->sha256);
			cJSON_AddItemToArray(a, e);
		}
	}
	if (m->n_files) {
		cJSON *a = cJSON_AddArrayToObject(o, "files");
		for (size_t i = 0; i < m->n_files; i++)
			cJSON_AddItemToArray(a, cJSON_CreateString(m->files[i]->name));
	}
	return o;
}

static void print_info(const Splitchain__ModelInfo *m)
{
	char b[32];
	printf("model       %s\n", m->name);
	printf("family      %s, %u layers\n", m->model_type, m->n_layer);
	printf("tensors     %u, %s\n", m->tensor_count, human(b, sizeof(b), (double)m->bytes));
	printf("digest      %s\n", m->digest);
	printf("directory   %s\n", m->dir);
	for (size_t i = 0; i < m->n_files; i++)
		printf("file        %s (%zu bytes)\n", m->files[i]->name, m->files[i]->data.len);
	if (m->n_tensors)
		printf("\n%-48s %-5s %-18s %12s  %s\n", "TENSOR", "DTYPE", "SHAPE", "BYTES",
		       "SHA256");
	for (size_t i = 0; i < m->n_tensors; i++) {
		const Splitchain__ModelTensor *t = m->tensors[i];
		char shape[64];
		size_t k = (size_t)snprintf(shape, sizeof(shape), "(");
		for (size_t d = 0; d < t->n_shape && k < sizeof(shape); d++)
			k += (size_t)snprintf(shape + k, sizeof(shape) - k, "%s%lld", d ? ", " : "",
					      (long long)t->shape[d]);
		if (k < sizeof(shape))
			snprintf(shape + k, sizeof(shape) - k, ")");
		printf("%-48s %-5s %-18s %12llu  %.16s\n", t->name, t->dtype, shape,
		       (unsigned long long)t->nbytes, t->sha256);
	}
}

static int list(const char *cmd, const cli_conn *co)
{
	Splitchain__Empty req = SPLITCHAIN__EMPTY__INIT;
	Splitchain__ModelsReply *rep = NULL;
	char b[32];
	int p = cli_call(cmd, co, "Coordinator.Models", &req.base,
			 &splitchain__models_reply__descriptor, (ProtobufCMessage **)&rep);
	if (p)
		return p;
	if (co->json) {
		cJSON *a = cJSON_CreateArray();
		for (size_t i = 0; i < rep->n_models; i++)
			cJSON_AddItemToArray(a, info_json(rep->models[i]));
		cli_print_json(a);
	} else {
		printf("%-24s %-8s %6s %8s %10s  %s\n", "NAME", "FAMILY", "LAYERS", "TENSORS",
		       "SIZE", "DIGEST");
		for (size_t i = 0; i < rep->n_models; i++) {
			const Splitchain__ModelInfo *m = rep->models[i];
			printf("%-24s %-8s %6u %8u %10s  %.16s\n", m->name, m->model_type,
			       m->n_layer, m->tensor_count, human(b, sizeof(b), (double)m->bytes),
			       m->digest);
		}
		if (!rep->n_models)
			printf("(no models registered: splitchain models add NAME DIR)\n");
	}
	splitchain__models_reply__free_unpacked(rep, NULL);
	return CLI_OK;
}

int cli_models(int argc, char **argv)
{
	static const struct option opts[] = { { "tensors", 0, 0, 'T' },
					      CLI_CONN_OPTIONS,
					      { 0, 0, 0, 0 } };
	const char *cmd = "models", *sub;
	char dir[PATH_MAX];
	int c, tensors = 0, timeout_given = 0;
	cli_conn co;
	ProtobufCMessage *rep = NULL;

	cli_conn_defaults(&co);
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'h') {
			fputs(models_help, stdout);
			fputs(cli_conn_help, stdout);
			return CLI_OK;
		}
		if (c == 'T') {
			tensors = 1;
			continue;
		}
		timeout_given |= c == 'O';
		int bad = cli_conn_option(cmd, c, optarg, &co);
		if (bad > 0)
			return CLI_USAGE;
		if (bad < 0)
			return cli_usage(cmd, "unknown or incomplete option '%s'",
					 argv[optind - 1]);
	}
	if (optind >= argc)
		return cli_usage(cmd, "add, list, show or rm is required");
	sub = argv[optind++];
	int nargs = argc - optind;
	char **args = argv + optind;
	if (!strcmp(sub, "list")) {
		if (nargs)
			return cli_usage(cmd, "unexpected argument '%s'", args[0]);
		return list(cmd, &co);
	}
	if (!strcmp(sub, "add")) {
		Splitchain__ModelAddRequest req = SPLITCHAIN__MODEL_ADD_REQUEST__INIT;
		if (nargs != 2)
			return cli_usage(cmd, "models add NAME DIR");
		if (!realpath(args[1], dir)) {
			fprintf(stderr, "splitchain models: model directory '%s' not found\n",
				args[1]);
			return CLI_ERROR;
		}
		req.name = args[0];
		req.dir = dir;
		if (!timeout_given) /* hashing a large model takes a while */
			co.timeout_ms = 3600000;
		int p = cli_call(cmd, &co, "Coordinator.ModelAdd", &req.base,
				 &splitchain__model_info__descriptor, &rep);
		if (p)
			return p;
	} else if (!strcmp(sub, "show")) {
		Splitchain__ModelRef req = SPLITCHAIN__MODEL_REF__INIT;
		if (nargs != 1)
			return cli_usage(cmd, "models show NAME");
		req.name = args[0];
		req.tensors = tensors || co.json;
		req.files = 1;
		int p = cli_call(cmd, &co, "Coordinator.ModelShow", &req.base,
				 &splitchain__model_info__descriptor, &rep);
		if (p)
			return p;
	} else if (!strcmp(sub, "rm")) {
		Splitchain__ModelRef req = SPLITCHAIN__MODEL_REF__INIT;
		if (nargs != 1)
			return cli_usage(cmd, "models rm NAME");
		req.name = args[0];
		int p = cli_call(cmd, &co, "Coordinator.ModelRemove", &req.base,
				 &splitchain__empty__descriptor, &rep);
		if (p)
			return p;
		if (co.json) {
			cJSON *o = cJSON_CreateObject();
			cJSON_AddStringToObject(o, "removed", args[0]);
			cli_print_json(o);
		} else {
			printf("removed %s\n", args[0]);
		}
		protobuf_c_message_free_unpacked(rep, NULL);
		return CLI_OK;
	} else {
		return cli_usage(cmd, "unknown subcommand '%s': add, list, show or rm", sub);
	}
	const Splitchain__ModelInfo *m = (const Splitchain__ModelInfo *)rep;
	if (co.json)
		cli_print_json(info_json(m));
	else
		print_info(m);
	protobuf_c_message_free_unpacked(rep, NULL);
	return CLI_OK;
}
