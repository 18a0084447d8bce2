/* coord_prom.c — the coordinator's metrics (coord_prom.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coord_prom.h"
#include "db_prom.h"
#include "sc_http_metrics.h"
#include "sc_version.h"

struct coord_prom {
	coord *c;
	sc_db_reader *db;
	sc_http_metrics *http;
};

/* A live worker's figures, copied under mu. */
typedef struct worker_live {
	int64_t id;
	int64_t last_seen_ms; /* 0: not registered with this incarnation */
	int slots, slots_used;
	uint64_t used_bytes; /* frozen weights + its jobs' own */
} worker_live;

/* A running job's live figures, copied under mu. */
typedef struct job_live {
	int64_t id;
	uint32_t step;
	double loss, tokens_per_s;
} job_live;

typedef struct snapshot {
	worker_live *w;
	int nw;
	job_live *j;
	int nj;
} snapshot;

/* Takes mu: copies what only the live registry knows; nothing under mu
 * but the copy. */
static sc_err take_snapshot(coord *c, snapshot *s)
{
	int nj = 0;
	memset(s, 0, sizeof(*s));
	pthread_mutex_lock(&c->mu);
	for (live_job *j = c->jobs; j; j = j->next)
		nj++;
	s->w = calloc(c->nworkers ? (size_t)c->nworkers : 1, sizeof(*s->w));
	s->j = calloc(nj ? (size_t)nj : 1, sizeof(*s->j));
	if (!s->w || !s->j) {
		pthread_mutex_unlock(&c->mu);
		free(s->w);
		free(s->j);
		return sc_errf(SC_ENOMEM, "out of memory for the metrics");
	}
	for (int i = 0; i < c->nworkers; i++) {
		const live_worker *lw = &c->workers[i];
		worker_live *o = &s->w[s->nw++];
		o->id = lw->id;
		o->last_seen_ms = lw->last_seen_ms;
		o->slots = lw->n_slots;
		o->slots_used = coord_jobs_on(lw);
		o->used_bytes = lw->base_bytes;
		for (int k = 0; k < lw->n_slots && k < COORD_MAX_SLOTS; k++)
			o->used_bytes += lw->slot[k].job_bytes;
	}
	for (live_job *j = c->jobs; j; j = j->next)
		if (!j->done)
			s->j[s->nj++] = (job_live){ .id = j->id,
						    .step = j->step,
						    .loss = j->loss,
						    .tokens_per_s = j->tokens_per_s };
	pthread_mutex_unlock(&c->mu);
	return SC_OK;
}

static const worker_live *live_worker_of(const snapshot *s, int64_t id)
{
	for (int i = 0; i < s->nw; i++)
		if (s->w[i].id == id)
			return &s->w[i];
	return NULL;
}

static const job_live *live_job_of(const snapshot *s, int64_t id)
{
	for (int i = 0; i < s->nj; i++)
		if (s->j[i].id == id)
			return &s->j[i];
	return NULL;
}

/* Per-job families: one sample per job, labelled job_id, job_name, state. */
enum job_fig { JF_STEP, JF_STEPS, JF_LOSS, JF_EVAL, JF_TPS, JF_COUNT };

static double job_fig(const sc_db_prom_job *j, const job_live *l, enum job_fig f)
{
	switch (f) {
	case JF_STEP: return l ? l->step : j->step_done;
	case JF_STEPS: return j->steps;
	case JF_LOSS: return l && l->step ? l->loss : j->last_loss;
	case JF_EVAL: return j->eval_loss;
	case JF_TPS: return l && l->tokens_per_s > 0 ? l->tokens_per_s : j->tokens_per_s;
	default: return NAN;
	}
}

static void put_jobs(sc_prom *p, const sc_db_prom_job *jobs, int n, const snapshot *s)
{
	static const struct {
		const char *name, *help;
	} fam[JF_COUNT] = {
		{ "splitchain_job_step", "Optimizer steps the job has completed." },
		{ "splitchain_job_target_steps", "Optimizer steps the job was submitted for." },
		{ "splitchain_job_loss", "Training loss of the job's newest step." },
		{ "splitchain_job_eval_loss", "Held-out loss of the job's newest evaluation." },
		{ "splitchain_job_tokens_per_second",
		  "Training tokens per second over the job's newest step." },
	};
	char id[24];
	for (int f = 0; f < JF_COUNT; f++) {
		sc_prom_family(p, fam[f].name, "gauge", fam[f].help);
		for (int i = 0; i < n; i++) {
			const sc_db_prom_job *j = &jobs[i];
			double v = job_fig(j, live_job_of(s, j->id), (enum job_fig)f);
			if (isnan(v)) /* no such figure yet: no sample */
				continue;
			snprintf(id, sizeof(id), "%lld", (long long)j->id);
			sc_prom_sample(p, fam[f].name, v, "job_id", id, "job_name", j->name,
				       "state", sc_job_state_name(j->state), NULL);
		}
	}
	sc_prom_family(p, "splitchain_job_hop_step_bytes", "gauge",
		       "Data-plane bytes each stage of the job sent on its hop in its newest step "
		       "(stage k sends to stage k+1 and back to k-1).");
	for (int i = 0; i < n; i++)
		for (int h = 0; h < jobs[i].n_hops; h++) {
			char stage[16];
			snprintf(id, sizeof(id), "%lld", (long long)jobs[i].id);
			snprintf(stage, sizeof(stage), "%d", h);
			sc_prom_sample(p, "splitchain_job_hop_step_bytes",
				       (double)jobs[i].hop_bytes[h], "job_id", id, "job_name",
				       jobs[i].name, "stage", stage, NULL);
		}
	sc_prom_family(p, "splitchain_jobs", "gauge", "Jobs in the database by state.");
	for (int st = 0; st < SC_JOB_STATE_COUNT; st++) {
		int k = 0;
		for (int i = 0; i < n; i++)
			k += jobs[i].state == (enum sc_job_state)st;
		sc_prom_sample(p, "splitchain_jobs", k, "state",
			       sc_job_state_name((enum sc_job_state)st), NULL);
	}
}

/* Per-worker families, labelled worker_id and worker (its name). */
enum worker_fig { WF_UP, WF_AGE, WF_MEM, WF_RESERVE, WF_USED, WF_SLOTS, WF_SLOTS_USED, WF_COUNT };

static double worker_fig(const sc_db_prom_worker *w, const worker_live *l, int64_t now,
			 enum worker_fig f)
{
	int up = l && l->last_seen_ms > 0;
	switch (f) {
	case WF_UP: return up;
	case WF_AGE: return up ? (double)(now - l->last_seen_ms) / 1000.0 : NAN;
	case WF_MEM: return (double)w->memory_bytes;
	case WF_RESERVE: return (double)w->memory_reserve_bytes;
	case WF_USED: return up ? (double)l->used_bytes : NAN;
	case WF_SLOTS: return l ? l->slots : w->job_slots;
	case WF_SLOTS_USED: return up ? l->slots_used : NAN;
	default: return NAN;
	}
}

static void put_workers(sc_prom *p, const sc_db_prom_worker *ws, int n, const snapshot *s)
{
	static const struct {
		const char *name, *help;
	} fam[WF_COUNT] = {
		{ "splitchain_worker_up",
		  "1 while the worker is registered and heartbeating, 0 when lost." },
		{ "splitchain_worker_heartbeat_age_seconds",
		  "Seconds since the worker's last register or heartbeat (live workers)." },
		{ "splitchain_worker_memory_bytes", "Memory of the worker's device." },
		{ "splitchain_worker_memory_reserve_bytes",
		  "Of the device's memory, what the worker keeps back from the jobs." },
		{ "splitchain_worker_memory_used_bytes",
		  "Memory the worker reported in use: frozen weights plus its jobs' own." },
		{ "splitchain_worker_job_slots", "Jobs the worker can serve at once." },
		{ "splitchain_worker_job_slots_used", "Jobs the worker serves now." },
	};
	int64_t now = coord_now_ms();
	char id[24];
	for (int f = 0; f < WF_COUNT; f++) {
		sc_prom_family(p, fam[f].name, "gauge", fam[f].help);
		for (int i = 0; i < n; i++) {
			double v = worker_fig(&ws[i], live_worker_of(s, ws[i].id), now,
					      (enum worker_fig)f);
			if (isnan(v))
				continue;
			snprintf(id, sizeof(id), "%lld", (long long)ws[i].id);
			sc_prom_sample(p, fam[f].name, v, "worker_id", id, "worker", ws[i].name,
				       NULL);
		}
	}
}

static void put_links(sc_prom *p, const sc_db_prom_link *l, int n)
{
	sc_prom_family(p, "splitchain_link_rtt_seconds", "gauge",
		       "Round-trip time of the newest measurement of each link (from, to).");
	for (int i = 0; i < n; i++)
		sc_prom_sample(p, "splitchain_link_rtt_seconds", l[i].rtt_ms / 1000.0, "from",
			       l[i].from, "to", l[i].to, NULL);
	sc_prom_family(p, "splitchain_link_bandwidth_bytes_per_second", "gauge",
		       "Bandwidth of the newest measurement of each link (from, to).");
	for (int i = 0; i < n; i++)
		sc_prom_sample(p, "splitchain_link_bandwidth_bytes_per_second",
			       l[i].mbit_s * 1e6 / 8.0, "from", l[i].from, "to", l[i].to, NULL);
}

static void put_levels(sc_prom *p, const char *name, const char *help, const uint64_t *counts)
{
	static const char *const levels[SC_LOG_OFF] = { "debug", "info", "warn", "error" };
	sc_prom_family(p, name, "counter", help);
	for (int l = 0; l < SC_LOG_OFF; l++)
		sc_prom_sample(p, name, (double)counts[l], "level", levels[l], NULL);
}

/* The endpoint's render (sc_http_metrics_render): on its own thread. */
static sc_err render(void *arg, sc_prom *p)
{
	coord_prom *cp = arg;
	sc_db_prom_job *jobs = NULL;
	sc_db_prom_worker *ws = NULL;
	sc_db_prom_link *links = NULL;
	uint64_t events[SC_LOG_OFF], logs[SC_LOG_OFF];
	int nj = 0, nw = 0, nl = 0;
	snapshot s;
	sc_err err;

	SC_TRY(take_snapshot(cp->c, &s));
	if ((err = sc_db_prom_jobs(cp->db, &jobs, &nj)) ||
	    (err = sc_db_prom_workers(cp->db, &ws, &nw)) ||
	    (err = sc_db_prom_links(cp->db, &links, &nl)) ||
	    (err = sc_db_prom_events(cp->db, events)))
		goto out;
	for (int l = 0; l < SC_LOG_OFF; l++)
		logs[l] = sc_log_count((enum sc_log_level)l);
	sc_prom_family(p, "splitchain_build_info", "gauge", "The running splitchain's version.");
	sc_prom_sample(p, "splitchain_build_info", 1, "daemon", "coordinator", "version",
		       SC_VERSION, NULL);
	put_jobs(p, jobs, nj, &s);
	put_workers(p, ws, nw, &s);
	put_links(p, links, nl);
	put_levels(p, "splitchain_events_total",
		   "Events the coordinator recorded in its database, by level.", events);
	sc_prom_rpc(p, cp->c->srv, NULL);
	put_levels(p, "splitchain_log_messages_total",
		   "Log records this process wrote (or would at a lower threshold), by level.",
		   logs);
out:
	sc_db_prom_jobs_free(jobs, nj);
	sc_db_prom_workers_free(ws, nw);
	sc_db_prom_links_free(links, nl);
	free(s.w);
	free(s.j);
	return err;
}

sc_err coord_prom_start(coord_prom **out, coord *c, const char *dbpath, const char *hostport)
{
	coord_prom *p = calloc(1, sizeof(*p));
	sc_err err;
	*out = NULL;
	if (!p)
		return sc_errf(SC_ENOMEM, "out of memory for the metrics endpoint");
	p->c = c;
	if ((err = sc_db_reader_open(&p->db, dbpath)) ||
	    (err = sc_http_metrics_start(&p->http, hostport, render, p))) {
		coord_prom_stop(p);
		return err;
	}
	*out = p;
	return SC_OK;
}

const char *coord_prom_where(const coord_prom *p)
{
	return sc_http_metrics_where(p->http);
}

void coord_prom_stop(coord_prom *p)
{
	if (!p)
		return;
	sc_http_metrics_stop(p->http);
	sc_db_reader_close(p->db);
	free(p);
}
