/* cli_submit.c — `splitchain submit`: a fine-tuning job for the coordinator. */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli_conn.h"
#include "sc_units.h"
#include "sc_wire.h"

static const char submit_help[] =
    "usage: splitchain submit --model DIR --data FILE [options]\n"
    "\n"
    "Submits a LoRA fine-tuning job to the coordinator and prints its id. A model\n"
    "directory must be readable by every worker; a model registered with `splitchain\n"
    "models add NAME DIR` is named by NAME and fetched by the workers (--cache).\n"
    "The data must be readable by the coordinator — unless the job names a data\n"
    "owner (--owner): then the data stays on the owner, which reads FILE (and\n"
    "--eval-data, --tokenizer) relative to its --owner-data directory, and neither\n"
    "the coordinator nor any other worker sees a token of it (docs/privacy.md).\n"
    "\n"
    "job:\n"
    "  --model DIR|NAME     Hugging Face checkpoint directory (gpt2, llama,\n"
    "                       mistral or qwen2), or a registered model's name   (required)\n"
    "  --data FILE          token file (.bin), text, or JSONL ({\"text\"} or\n"
    "                       {\"prompt\", \"completion\"}: loss on the completion) (required)\n"
    "  --name NAME          a label for the job\n"
    "  --stages N           workers in the chain                              (default 2)\n"
    "  --split RANGES       the stages' layers instead of the planner's cuts, e.g.\n"
    "                       0-7,8-15,16-23 (one range a stage, inclusive)\n"
    "  --workers A,B,C      the workers by name, in chain order, instead of the\n"
    "                       fastest free ones (the job waits for them to be free)\n"
    "                       Both are checked against the workers' memory.\n"
    "  --no-auto-quant      when no placement fits the workers' memory, refuse the\n"
    "                       job instead of lowering layers' frozen base to int8,\n"
    "                       then nf4 (least sensitive layers first, measured once\n"
    "                       per model; splitchain status shows the choice)\n"
    "  --schedule S         1f1b or gpipe                                     (default 1f1b)\n"
    "  --checkpoint-every N checkpoint every N steps (and at the end)         (default 10)\n"
    "\n"
    "private data (U-shaped):\n"
    "  --owner NAME         the data owner, a worker started with --owner-data: it\n"
    "                       holds the embeddings, the first and last K blocks, the\n"
    "                       head and the loss; --stages workers hold the middle\n"
    "  --owner-layers K     blocks the owner holds at each end            (default 1)\n"
    "  --owner NAME2 ...    several owners (up to 16): each step runs every owner's\n"
    "                       micro-batches through the middle; the owners' gradients\n"
    "                       are added up, so the job equals `splitchain finetune\n"
    "                       --data F1 --data F2 ...` on their files\n"
    "  --fedavg-every K     instead, each owner updates from its own micro-batches\n"
    "                       and the owners' adapters are averaged every K steps\n"
    "                       (and before each checkpoint): less traffic, not exact\n"
    "                                                                   (default 1)\n";

/* Beside the shared options' codes (cli.h). */
enum { OPT_SPLIT = 3001, OPT_WORKERS, OPT_OWNER, OPT_OWNER_LAYERS, OPT_FEDAVG, OPT_NO_AUTO_QUANT };

int cli_submit(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "model", 1, 0, 'm' },
		{ "data", 1, 0, 'd' },
		{ "name", 1, 0, 'N' },
		{ "stages", 1, 0, 'S' },
		{ "schedule", 1, 0, 'G' },
		{ "checkpoint-every", 1, 0, 'K' },
		{ "split", 1, 0, OPT_SPLIT },
		{ "workers", 1, 0, OPT_WORKERS },
		{ "owner", 1, 0, OPT_OWNER },
		{ "owner-layers", 1, 0, OPT_OWNER_LAYERS },
		{ "fedavg-every", 1, 0, OPT_FEDAVG },
		{ "no-auto-quant", 0, 0, OPT_NO_AUTO_QUANT },
		CLI_TRAIN_OPTIONS,
		CLI_DATA_OPTIONS,
		CLI_CONN_OPTIONS,
		{ 0, 0, 0, 0 },
	};
	const char *cmd = "submit", *model = NULL, *data = NULL, *name = "", *targets;
	char model_abs[PATH_MAX], data_abs[PATH_MAX], tok_abs[PATH_MAX], eval_abs[PATH_MAX];
	cli_data_opts dat = { 0 };
	Splitchain__SubmitRequest req = SPLITCHAIN__SUBMIT_REQUEST__INIT;
	Splitchain__LoraConfig lora = SPLITCHAIN__LORA_CONFIG__INIT;
	Splitchain__TrainConfig train = SPLITCHAIN__TRAIN_CONFIG__INIT;
	Splitchain__SubmitReply *rep = NULL;
	sc_lora_config lc;
	sc_train_config tc;
	cli_conn co;
	long stages = 2, every = 10;
	int c, ret, schedule = SPLITCHAIN__SCHEDULE__SCHEDULE_1F1B, stages_given = 0;
	const char *split = NULL;
	static char workers_list[8192]; /* the names, cut at the commas */
	char *workers[256];
	int bounds[257], n_split = 0, n_workers = 0, n_owners = 0;
	char *owners[16];
	long owner_layers = 1, fedavg = 1;

	cli_conn_defaults(&co);
	cli_train_defaults(&lc, &tc, &targets);
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		int bad = 0;
		switch (c) {
		case 'm': model = optarg; break;
		case 'd': data = optarg; break;
		case 'N': name = optarg; break;
		case 'S':
			bad = cli_int(cmd, "--stages", optarg, 1, 256, &stages);
			stages_given = 1;
			break;
		case OPT_NO_AUTO_QUANT: req.no_auto_quant = 1; break;
		case OPT_SPLIT:
			if (sc_parse_split(optarg, bounds, 256, &n_split))
				return cli_usage(cmd, "--split: %s", sc_err_detail());
			split = optarg;
			break;
		case OPT_WORKERS:
			if (strlen(optarg) >= sizeof(workers_list))
				return cli_usage(cmd, "--workers: the list is too long");
			snprintf(workers_list, sizeof(workers_list), "%s", optarg);
			n_workers = 0;
			for (char *save = NULL, *t = strtok_r(workers_list, ",", &save); t;
			     t = strtok_r(NULL, ",", &save)) {
				for (int k = 0; k < n_workers; k++)
					if (!strcmp(workers[k], t))
						return cli_usage(cmd, "--workers names '%s' twice",
								 t);
				if (n_workers == 256)
					return cli_usage(cmd, "--workers: at most 256 names");
				workers[n_workers++] = t;
			}
			if (!n_workers)
				return cli_usage(cmd, "--workers expects names, e.g. a,b,c");
			break;
		case 'K':
			bad = cli_int(cmd, "--checkpoint-every", optarg, 1, 100000000, &every);
			break;
		case OPT_OWNER:
			if (!optarg[0])
				return cli_usage(cmd, "--owner expects a worker's name");
			for (int k = 0; k < n_owners; k++)
				if (!strcmp(owners[k], optarg))
					return cli_usage(cmd, "--owner names '%s' twice", optarg);
			if (n_owners == (int)(sizeof(owners) / sizeof(owners[0])))
				return cli_usage(cmd, "at most 16 --owner");
			owners[n_owners++] = optarg;
			break;
		case OPT_OWNER_LAYERS:
			bad = cli_int(cmd, "--owner-layers", optarg, 1, 4096, &owner_layers);
			break;
		case OPT_FEDAVG:
			bad = cli_int(cmd, "--fedavg-every", optarg, 1, 1000000, &fedavg);
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
			fputs(cli_data_help, stdout);
			fputs(cli_train_help, stdout);
			fputs(cli_conn_help, stdout);
			return CLI_OK;
		default:
			bad = cli_conn_option(cmd, c, optarg, &co);
			if (bad < 0)
				bad = cli_train_option(cmd, c, optarg, &lc, &tc, &targets);
			if (bad < 0)
				bad = cli_data_option(cmd, c, optarg, &dat);
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
	/* --split and --workers say how many stages; --stages must agree. */
	long implied = n_split ? n_split : n_workers;
	if (n_split && n_workers && n_split != n_workers)
		return cli_usage(cmd, "--split gives %d stages, --workers %d", n_split, n_workers);
	if (implied && stages_given && stages != implied)
		return cli_usage(cmd, "--stages %ld, but --%s gives %ld", stages,
				 n_split ? "split" : "workers", implied);
	if (implied)
		stages = implied;
	if (cli_data_finish(cmd, &dat))
		return CLI_USAGE;
	if (cli_train_finish(cmd, &lc, &tc))
		return CLI_USAGE;
	/* Paths travel to other processes: make them absolute here. A model
	 * that is no directory here and has no '/' is a registered model's name. */
	struct stat mst;
	if (!strchr(model, '/') && (stat(model, &mst) != 0 || !S_ISDIR(mst.st_mode))) {
		req.model = (char *)model;
		model_abs[0] = '\0';
	} else if (!realpath(model, model_abs)) {
		fprintf(stderr, "splitchain submit: model directory '%s' not found\n", model);
		return CLI_ERROR;
	}
	if (fedavg > 1 && n_owners < 2)
		return cli_usage(cmd, "--fedavg-every averages several owners: give two or more "
				      "--owner");
	if (n_owners && (n_split || n_workers))
		return cli_usage(cmd,
				 "--owner places the job itself: not with --split or --workers");
	/* An owner's paths are its own, relative to its --owner-data
	 * directory: they travel as given and are never looked at here. */
	if (n_owners) {
		snprintf(data_abs, sizeof(data_abs), "%s", data);
		snprintf(tok_abs, sizeof(tok_abs), "%s", dat.tokenizer ? dat.tokenizer : "");
		snprintf(eval_abs, sizeof(eval_abs), "%s", dat.eval_data ? dat.eval_data : "");
	} else if (!realpath(data, data_abs)) {
		fprintf(stderr, "splitchain submit: data file '%s' not found\n", data);
		return CLI_ERROR;
	}
	if (!n_owners && dat.tokenizer && !realpath(dat.tokenizer, tok_abs)) {
		fprintf(stderr, "splitchain submit: tokenizer '%s' not found\n", dat.tokenizer);
		return CLI_ERROR;
	}
	if (!n_owners && dat.eval_data && !realpath(dat.eval_data, eval_abs)) {
		fprintf(stderr, "splitchain submit: eval data file '%s' not found\n",
			dat.eval_data);
		return CLI_ERROR;
	}
	req.tokenizer_path = dat.tokenizer ? tok_abs : (char *)"";
	req.skip_bad_lines = dat.skip_bad_lines;
	req.eval_data_path = dat.eval_data ? eval_abs : (char *)"";
	req.eval_split = dat.eval_split;
	req.eval_every = (uint32_t)dat.eval_every;
	req.eval_batches = (uint32_t)dat.eval_batches;
	req.no_pack = dat.no_pack;
	req.no_data_cache = dat.no_cache;
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
	req.split = (char *)(split ? split : "");
	req.n_workers = (size_t)n_workers;
	req.workers = workers;
	req.n_owners = (size_t)n_owners;
	req.owners = owners;
	req.owner_layers = n_owners ? (uint32_t)owner_layers : 0;
	req.fedavg_every = (uint32_t)fedavg;
	req.schedule = schedule;
	req.checkpoint_every = (uint32_t)every;
	ret = cli_call(cmd, &co, "Coordinator.Submit", &req.base,
		       &splitchain__submit_reply__descriptor, (ProtobufCMessage **)&rep);
	if (ret)
		return ret;
	if (co.json) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddNumberToObject(o, "job", (double)rep->job_id);
		cli_print_json(o);
	} else {
		printf("%llu\n", (unsigned long long)rep->job_id);
	}
	splitchain__submit_reply__free_unpacked(rep, NULL);
	return CLI_OK;
}
