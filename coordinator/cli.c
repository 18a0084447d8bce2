/* cli.c — the splitchain command-line tool: dispatch, help, and the
 * argument helpers the subcommands share. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "sc_version.h"

static const char usage_text[] =
	"usage: splitchain <command> [options]\n"
	"\n"
	"LoRA fine-tuning of GPT-2 models split across a chain of edge workers.\n"
	"\n"
	"commands:\n"
	"  finetune     fine-tune LoRA adapters in this process and export them (PEFT format)\n"
	"  make-model   write a randomly initialised GPT-2 checkpoint (Hugging Face layout)\n"
	"  tokenize     turn a text file into a token file (byte-level tokens)\n"
	"  version      print the version\n"
	"\n"
	"Run 'splitchain <command> --help' for a command's options.\n";

int cli_usage(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "splitchain %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nRun 'splitchain %s --help' for usage.\n", cmd);
	return CLI_USAGE;
}

int cli_fail(const char *cmd, sc_err rc, const char *what)
{
	const char *d = sc_err_detail();
	fprintf(stderr, "splitchain %s: %s: %s\n", cmd, what, d[0] ? d : sc_err_name(rc));
	return CLI_ERROR;
}

int cli_int(const char *cmd, const char *flag, const char *s, long lo, long hi, long *out)
{
	char *end;
	long v;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi) {
		cli_usage(cmd, "%s expects a whole number in [%ld, %ld], got '%s'", flag, lo, hi, s);
		return 1;
	}
	*out = v;
	return 0;
}

int cli_float(const char *cmd, const char *flag, const char *s, double lo, double hi, float *out)
{
	char *end;
	double v;
	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) {
		cli_usage(cmd, "%s expects a number in [%g, %g], got '%s'", flag, lo, hi, s);
		return 1;
	}
	*out = (float)v;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(int, char **);
	} cmds[] = {
		{"finetune", cli_finetune},
		{"make-model", cli_make_model},
		{"tokenize", cli_tokenize},
	};

	if (argc < 2) {
		fputs(usage_text, stderr);
		return CLI_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		fputs(usage_text, stdout);
		return CLI_OK;
	}
	if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version")) {
		printf("splitchain %s\n", SC_VERSION);
		return CLI_OK;
	}
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (!strcmp(argv[1], cmds[i].name))
			return cmds[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "splitchain: unknown command '%s'\n\n%s", argv[1], usage_text);
	return CLI_USAGE;
}
