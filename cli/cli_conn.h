/* cli_conn.h — what the CLI's coordinator commands share: connection
 * options, one RPC to the coordinator, the job's JSON form. */
#ifndef SC_CLI_CONN_H
#define SC_CLI_CONN_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "splitchain.pb-c.h"

typedef struct cli_conn {
	const char *url;
	int json;
	int timeout_ms;
} cli_conn;

/* getopt values of the TLS options (above any character). */
enum { CLI_OPT_TLS_CERT = 0x201, CLI_OPT_TLS_KEY, CLI_OPT_TLS_CA };

#define CLI_CONN_OPTIONS                                                                           \
	{ "coordinator", 1, 0, 'C' }, { "timeout-ms", 1, 0, 'O' }, { "json", 0, 0, 'J' },          \
	    { "tls-cert", 1, 0, CLI_OPT_TLS_CERT }, { "tls-key", 1, 0, CLI_OPT_TLS_KEY },          \
	    { "tls-ca", 1, 0, CLI_OPT_TLS_CA },                                                    \
	{                                                                                          \
		"help", 0, 0, 'h'                                                                  \
	}

/* --coordinator, --timeout-ms, --json, --help */
extern const char cli_conn_help[];
void cli_conn_defaults(cli_conn *c);
/* Handles a connection option; 0 done, 1 bad (usage printed), -1 not one. */
int cli_conn_option(const char *cmd, int c, const char *arg, cli_conn *co);

/* Makes the CLI's TLS identity (--tls-* options, else $SPLITCHAIN_TLS_CERT,
 * $SPLITCHAIN_TLS_KEY, $SPLITCHAIN_TLS_CA) ready when url is tls+tcp://:
 * CLI_OK, or CLI_ERROR with the error printed. */
int cli_tls_ready(const char *cmd, const char *url);

/* One call to the coordinator; prints the error and returns CLI_ERROR
 * unless the status is OK. */
int cli_call(const char *cmd, const cli_conn *co, const char *method, const ProtobufCMessage *req,
	     const ProtobufCMessageDescriptor *desc, ProtobufCMessage **rep);

/* Parses a command with only connection options and, when need_job, a JOB
 * id: 0 go on, -1 help printed, else the exit code. */
int cli_parse_simple(const char *cmd, const char *help, int argc, char **argv, cli_conn *co,
		     uint64_t *job, int need_job);

/* The user's API token into out (size bytes): $SPLITCHAIN_TOKEN, else
 * ~/.config/splitchain/token ("" when neither is there). CLI_ERROR, with
 * "not authorised: ..." printed, for a token file others may read (the
 * user is told to chmod 600) or one that cannot be read. */
int cli_token(const char *cmd, char *out, size_t size);

/* Coordinator.Status of job. */
int cli_get_status(const char *cmd, const cli_conn *co, uint64_t job, Splitchain__JobInfo **out);

/* The job as a JSON object (new); printing frees it. */
cJSON *cli_job_json(const Splitchain__JobInfo *j);
void cli_print_json(cJSON *o);

#endif
