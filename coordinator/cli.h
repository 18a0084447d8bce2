/* cli.h — the splitchain command-line tool's subcommands and shared helpers.
 * Exit codes: 0 ok, 1 error, 2 usage. */
#ifndef SC_CLI_H
#define SC_CLI_H

#include <stdint.h>

#include "sc_err.h"

enum { CLI_OK = 0, CLI_ERROR = 1, CLI_USAGE = 2 };

int cli_make_model(int argc, char **argv);
int cli_tokenize(int argc, char **argv);
int cli_finetune(int argc, char **argv);

/* Prints "splitchain <cmd>: <what>: <detail>" for a failed call; returns CLI_ERROR. */
int cli_fail(const char *cmd, sc_err rc, const char *what);

/* Parses a whole decimal number in [lo, hi] into *out; on failure prints a
 * usage error naming the flag and returns nonzero. */
int cli_int(const char *cmd, const char *flag, const char *s, long lo, long hi, long *out);
/* Parses a finite float in [lo, hi]. */
int cli_float(const char *cmd, const char *flag, const char *s, double lo, double hi, float *out);

/* Prints "splitchain <cmd>: <msg>" and a pointer to --help; returns CLI_USAGE. */
int cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
