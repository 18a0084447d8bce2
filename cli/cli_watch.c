/* cli_watch.c — `splitchain watch`: follows a job until it ends. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_conn.h"

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
	cli_conn co;
	uint64_t job = 0;
	long last_step = -1;
	int tty = isatty(STDOUT_FILENO), p, ret;
	char last_state[32] = "";

	if ((p = cli_parse_simple("watch", watch_help, argc, argv, &co, &job, 1)))
		return p < 0 ? CLI_OK : p;
	for (;;) {
		Splitchain__JobInfo *j = NULL;
		if ((p = cli_get_status("watch", &co, job, &j)))
			return p;
		if ((long)j->step != last_step || strcmp(last_state, j->state)) {
			if (co.json) {
				cli_print_json(cli_job_json(j));
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
