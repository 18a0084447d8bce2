/* cli_watch.c — `splitchain watch`: follows a job until it ends. On a
 * terminal, the train and eval loss curves (Coordinator.Metrics, fetched a
 * step range at a time) redrawn above a progress bar; otherwise one line
 * per step (or one JSON object). */
#include <langinfo.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "cli_chart.h"
#include "cli_conn.h"

#define CHART_ROWS 12

static int finished(const char *state)
{
	return !strcmp(state, "done") || !strcmp(state, "failed") || !strcmp(state, "cancelled");
}

static const char watch_help[] =
    "usage: splitchain watch JOB [--json]\n\nFollows a job until it ends: on a terminal, the "
    "train and eval loss curves\nabove a progress bar; otherwise one line per step and per "
    "evaluation (--json:\none JSON object per step). Exits 0 when the job is done, 1 when it "
    "failed or\nwas cancelled. NO_COLOR set: no colours; a locale without UTF-8: an ASCII "
    "chart.\n\n";

/* The job's curve so far: train loss per step, eval loss where evaluated. */
typedef struct curve {
	double *x, *y, *ex, *ey;
	size_t n, ne, cap;
	uint32_t last; /* the newest step held */
} curve;

static int curve_push(curve *c, const Splitchain__MetricPoint *p)
{
	if (c->n && p->step <= c->last) { /* fetched again for its evaluation */
		if (p->has_eval && (!c->ne || c->ex[c->ne - 1] < p->step)) {
			c->ex[c->ne] = p->step;
			c->ey[c->ne++] = p->eval_loss;
		}
		return 0;
	}
	if (c->n == c->cap) {
		size_t cap = c->cap ? 2 * c->cap : 256;
		double *b[4] = { c->x, c->y, c->ex, c->ey };
		for (int i = 0; i < 4; i++) {
			double *nb = realloc(b[i], cap * sizeof(double));
			if (!nb)
				return -1;
			b[i] = nb;
		}
		c->x = b[0], c->y = b[1], c->ex = b[2], c->ey = b[3];
		c->cap = cap;
	}
	c->x[c->n] = p->step;
	c->y[c->n++] = p->loss;
	if (p->has_eval) {
		c->ex[c->ne] = p->step;
		c->ey[c->ne++] = p->eval_loss;
	}
	c->last = p->step;
	return 0;
}

/* Fetches the points after c->last — from eval_step on when that
 * evaluation (recorded after its step) is not held yet; 0, or the CLI exit
 * code. */
static int curve_update(curve *c, const cli_conn *co, uint64_t job, uint32_t eval_step)
{
	Splitchain__MetricsRequest req = SPLITCHAIN__METRICS_REQUEST__INIT;
	Splitchain__MetricsReply *rep = NULL;
	int p;
	req.job_id = job;
	req.after_step = c->last;
	if (eval_step && eval_step <= c->last && (!c->ne || c->ex[c->ne - 1] < eval_step))
		req.after_step = eval_step - 1;
	if ((p = cli_call("watch", co, "Coordinator.Metrics", &req.base,
			  &splitchain__metrics_reply__descriptor, (ProtobufCMessage **)&rep)))
		return p;
	for (size_t i = 0; i < rep->n_points && !p; i++)
		if (curve_push(c, rep->points[i]))
			p = cli_fail("watch", sc_errf(SC_ENOMEM, "out of memory"), "loss curve");
	splitchain__metrics_reply__free_unpacked(rep, NULL);
	return p;
}

static void curve_free(curve *c)
{
	free(c->x);
	free(c->y);
	free(c->ex);
	free(c->ey);
}

static int term_cols(void)
{
	struct winsize ws;
	if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20)
		return ws.ws_col > 120 ? 120 : ws.ws_col;
	return 80;
}

/* Draws the chart and the progress line, over the previous drawing. */
static void draw(const Splitchain__JobInfo *j, const curve *c, int *drawn, int style)
{
	cli_series s[2] = { { c->x, c->y, c->n, "train" }, { c->ex, c->ey, c->ne, "eval" } };
	int cols = term_cols();
	char *chart = cli_chart_render(s, 2, cols - 1, CHART_ROWS, style);
	int w = 30, filled = j->steps ? (int)((double)w * j->step / j->steps) : 0;

	if (*drawn)
		printf("\r\x1b[%dA", CHART_ROWS); /* back to the chart's first line */
	if (chart)
		fputs(chart, stdout);
	free(chart);
	printf("\r\x1b[K[%.*s%*s] %u/%u %-9s loss %.4f", filled, "##############################",
	       w - filled, "", j->step, j->steps, j->state, j->loss);
	if (j->eval_step)
		printf("  eval %.4f (ppl %.2f)", j->eval_loss, exp(j->eval_loss));
	printf("  %.0f tok/s  eta %.0fs", j->tokens_per_s, j->eta_s);
	*drawn = 1;
}

/* The chart's style for this terminal: colour, monochrome braille or ASCII. */
static int chart_style(void)
{
	const char *nc = getenv("NO_COLOR"), *term = getenv("TERM");
	setlocale(LC_CTYPE, "");
	if (strcmp(nl_langinfo(CODESET), "UTF-8"))
		return CLI_CHART_ASCII;
	return (nc && *nc) || !term || !strcmp(term, "dumb") ? 0 : 1;
}

int cli_watch(int argc, char **argv)
{
	cli_conn co;
	curve c = { 0 };
	uint64_t job = 0;
	long last_step = -1;
	uint32_t last_eval = 0;
	int tty = isatty(STDOUT_FILENO), p, ret = CLI_ERROR, drawn = 0, style = 0;
	char last_state[32] = "";

	if ((p = cli_parse_simple("watch", watch_help, argc, argv, &co, &job, 1)))
		return p < 0 ? CLI_OK : p;
	if (tty && !co.json)
		style = chart_style();
	for (;;) {
		Splitchain__JobInfo *j = NULL;
		if ((p = cli_get_status("watch", &co, job, &j))) {
			ret = p;
			break;
		}
		int changed = (long)j->step != last_step || j->eval_step != last_eval ||
			      strcmp(last_state, j->state);
		if (changed && tty && !co.json && (p = curve_update(&c, &co, job, j->eval_step))) {
			splitchain__job_info__free_unpacked(j, NULL);
			ret = p;
			break;
		}
		if (changed) {
			if (co.json) {
				cli_print_json(cli_job_json(j));
			} else if (tty) {
				draw(j, &c, &drawn, style);
			} else if ((long)j->step != last_step || strcmp(last_state, j->state)) {
				printf("job %llu %s step %u/%u loss %.4f tok/s %.0f eta %.0fs\n",
				       (unsigned long long)j->job_id, j->state, j->step, j->steps,
				       j->loss, j->tokens_per_s, j->eta_s);
			}
			if (!co.json && !tty && j->eval_step && j->eval_step != last_eval)
				printf("job %llu eval after step %u loss %.4f perplexity %.3f\n",
				       (unsigned long long)j->job_id, j->eval_step, j->eval_loss,
				       exp(j->eval_loss));
			fflush(stdout);
			last_step = (long)j->step;
			last_eval = j->eval_step;
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
			break;
		}
		splitchain__job_info__free_unpacked(j, NULL);
		usleep(500 * 1000);
	}
	curve_free(&c);
	return ret;
}
