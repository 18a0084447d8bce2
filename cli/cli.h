/* cli.h — the splitchain command-line tool's subcommands and shared helpers.
 * Exit codes: 0 ok, 1 error, 2 usage. */
#ifndef SC_CLI_H
#define SC_CLI_H

#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "sc_err.h"
#include "sc_lora.h"
#include "sc_train.h"

enum { CLI_OK = 0, CLI_ERROR = 1, CLI_USAGE = 2 };

int cli_make_model(int argc, char **argv);
int cli_tokenize(int argc, char **argv);
int cli_detokenize(int argc, char **argv);
int cli_finetune(int argc, char **argv);
int cli_generate(int argc, char **argv);
int cli_quantize(int argc, char **argv);

/* Prints "splitchain <cmd>: <what>: <detail>" for a failed call; returns CLI_ERROR. */
int cli_fail(const char *cmd, sc_err rc, const char *what);

/* Parses a whole decimal number in [lo, hi] into *out; on failure prints a
 * usage error naming the flag and returns nonzero. */
int cli_int(const char *cmd, const char *flag, const char *s, long lo, long hi, long *out);
/* Parses a finite float in [lo, hi]. */
int cli_float(const char *cmd, const char *flag, const char *s, double lo, double hi, float *out);

/* One RPC to url (a coordinator or a worker) with a timeout: CLI_OK with
 * *rep the reply (free with protobuf_c_message_free_unpacked), or the error
 * printed and CLI_ERROR. */
int cli_call_url(const char *cmd, const char *url, int timeout_ms, const char *method,
		 const ProtobufCMessage *req, const ProtobufCMessageDescriptor *desc,
		 ProtobufCMessage **rep);
/* $SPLITCHAIN_COORDINATOR, else the default address. */
const char *cli_default_coordinator(void);

/* Prints "splitchain <cmd>: <msg>" and a pointer to --help; returns CLI_USAGE. */
int cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The LoRA, schedule and frozen-base options shared by finetune and submit
 * (option codes 'r' 'a' 't' 'n' 'b' 'T' 'u' 'l' 'L' 'w' 'W' 'c' 's' and the
 * CLI_OPT_ ones below). */
enum {
	CLI_OPT_TF32 = 1001,
	CLI_OPT_WIRE,
	CLI_OPT_BASE_QUANT,
	CLI_OPT_DOUBLE_QUANT,
	CLI_OPT_PRECISION
};
#define CLI_TRAIN_OPTIONS                                                                          \
	{ "rank", 1, 0, 'r' }, { "alpha", 1, 0, 'a' }, { "targets", 1, 0, 't' },                   \
	    { "steps", 1, 0, 'n' }, { "batch", 1, 0, 'b' }, { "seq", 1, 0, 'T' },                  \
	    { "micro", 1, 0, 'u' }, { "lr", 1, 0, 'l' }, { "min-lr", 1, 0, 'L' },                  \
	    { "warmup", 1, 0, 'w' }, { "weight-decay", 1, 0, 'W' }, { "clip", 1, 0, 'c' },         \
	    { "seed", 1, 0, 's' }, { "wire", 1, 0, CLI_OPT_WIRE }, CLI_BASE_OPTIONS,               \
	{                                                                                          \
		"tf32", 0, 0, CLI_OPT_TF32                                                         \
	}
/* The frozen-base options alone (--base-quant, --double-quant, --precision),
 * for generate: cli_train_option handles them, cli_train_finish checks them;
 * CLI_BASE_HELP is their help text, part of cli_train_help. */
#define CLI_BASE_OPTIONS                                                                           \
	{ "base-quant", 1, 0, CLI_OPT_BASE_QUANT },                                                \
	    { "double-quant", 0, 0, CLI_OPT_DOUBLE_QUANT },                                        \
	{                                                                                          \
		"precision", 1, 0, CLI_OPT_PRECISION                                               \
	}
#define CLI_BASE_HELP                                                                              \
	"  --base-quant Q       hold the frozen projections as none (the model directory's\n"      \
	"                       own format), int8 (one scale per output channel) or nf4\n"         \
	"                       (QLoRA's 4-bit NormalFloat, blocks of 64), quantized in\n"         \
	"                       memory as each stage loads its layers; a model quantized\n"        \
	"                       by 'splitchain quantize' needs none or its own format\n"           \
	"                                                                  (default none)\n"       \
	"  --double-quant       with --base-quant nf4: quantize the block scales too\n"            \
	"  --precision P        fp32, or bf16: the frozen projections (unless int8 or nf4),\n"     \
	"                       the token embedding and the LM head stored bf16, their\n"          \
	"                       GEMMs bf16 (int8 / nf4: dequantized to bf16 for them where\n"      \
	"                       the CPU multiplies bf16); adapters, optimizer state, norms,\n"     \
	"                       softmax and the loss stay fp32              (default fp32)\n"
extern const char cli_train_help[];
/* Defaults; *targets = "all". The targets stay a list of names until the
 * model (and so its family) is known: cli_train_targets resolves them. */
void cli_train_defaults(sc_lora_config *lc, sc_train_config *tc, const char **targets);
/* Handles option c of CLI_TRAIN_OPTIONS: 0 done, 1 bad value (usage
 * printed), -1 not a training option. --targets sets *targets (borrows
 * arg). */
int cli_train_option(const char *cmd, int c, const char *arg, sc_lora_config *lc,
		     sc_train_config *tc, const char **targets);
/* Sets lc->targets from the names for model mc; 1 with usage printed when a
 * name is not one of the family's projections. */
int cli_train_targets(const char *cmd, sc_lora_config *lc, const sc_model_config *mc,
		      const char *targets);
/* Final adjustments and checks after parsing (min-lr capped at lr;
 * --double-quant only with --base-quant nf4): 0, or 1 with usage printed. */
int cli_train_finish(const char *cmd, sc_lora_config *lc, sc_train_config *tc);

/* The data options shared by finetune and submit. */
enum {
	CLI_OPT_TOKENIZER = 2001,
	CLI_OPT_SKIP_BAD,
	CLI_OPT_EVAL_SPLIT,
	CLI_OPT_EVAL_DATA,
	CLI_OPT_EVAL_EVERY,
	CLI_OPT_EVAL_BATCHES,
	CLI_OPT_NO_PACK,
	CLI_OPT_NO_CACHE,
};
#define CLI_DATA_OPTIONS                                                                           \
	{ "tokenizer", 1, 0, CLI_OPT_TOKENIZER }, { "skip-bad-lines", 0, 0, CLI_OPT_SKIP_BAD },    \
	    { "eval-split", 1, 0, CLI_OPT_EVAL_SPLIT }, { "eval-data", 1, 0, CLI_OPT_EVAL_DATA },  \
	    { "eval-every", 1, 0, CLI_OPT_EVAL_EVERY },                                            \
	    { "eval-batches", 1, 0, CLI_OPT_EVAL_BATCHES }, { "no-pack", 0, 0, CLI_OPT_NO_PACK },  \
	{                                                                                          \
		"no-data-cache", 0, 0, CLI_OPT_NO_CACHE                                            \
	}
typedef struct cli_data_opts {
	const char *tokenizer, *eval_data; /* NULL: none */
	double eval_split;
	long eval_every, eval_batches;
	int skip_bad_lines, no_pack, no_cache;
} cli_data_opts;
extern const char cli_data_help[];
/* As cli_train_option, for CLI_DATA_OPTIONS. */
int cli_data_option(const char *cmd, int c, const char *arg, cli_data_opts *d);
/* Checks the data options together: 0, or 1 with usage printed. */
int cli_data_finish(const char *cmd, const cli_data_opts *d);

int cli_submit(int argc, char **argv);
int cli_jobs(int argc, char **argv);
int cli_status(int argc, char **argv);
int cli_watch(int argc, char **argv);
int cli_cancel(int argc, char **argv);
int cli_workers(int argc, char **argv);
int cli_links(int argc, char **argv);
int cli_models(int argc, char **argv);
int cli_export(int argc, char **argv);

#endif
