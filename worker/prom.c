/* prom.c — the worker's Prometheus metrics (--metrics-listen): what it has
 * computed and moved since it started, its memory and its heartbeat's age.
 * A scrape reads the counters (atomics), the memory figures through
 * worker_memory (which never waits) and /proc: it takes none of the
 * slots' locks, so a step that runs for minutes never delays it. */
#include <stdio.h>

#include "sc_http_metrics.h"
#include "sc_log.h"
#include "sc_version.h"
#include "worker.h"

static void counter(sc_prom *p, const char *name, const char *help, double v, const char *who)
{
	sc_prom_family(p, name, "counter", help);
	sc_prom_sample(p, name, v, "worker", who, NULL);
}

static void gauge(sc_prom *p, const char *name, const char *help, double v, const char *who)
{
	sc_prom_family(p, name, "gauge", help);
	sc_prom_sample(p, name, v, "worker", who, NULL);
}

static sc_err render(void *arg, sc_prom *p)
{
	static const char *const levels[SC_LOG_OFF] = { "debug", "info", "warn", "error" };
	static const char *const hops[2] = { "previous", "next" };
	worker *w = arg;
	struct worker_counters *c = &w->counters;
	uint64_t base = 0, jobs[WORKER_MAX_SLOTS];
	int64_t ok = atomic_load(&c->heartbeat_ok_ms);
	char slot[16];

	worker_memory(w, &base, jobs);
	sc_prom_family(p, "splitchain_build_info", "gauge", "The running splitchain's version.");
	sc_prom_sample(p, "splitchain_build_info", 1, "daemon", "worker", "version", SC_VERSION,
		       NULL);
	counter(p, "splitchain_worker_steps_total", "Training steps this worker computed.",
		(double)atomic_load(&c->steps), w->name);
	counter(p, "splitchain_worker_step_failures_total",
		"Steps (training or evaluation) that failed on this worker.",
		(double)atomic_load(&c->step_failures), w->name);
	counter(p, "splitchain_worker_micro_batches_total",
		"Micro-batches of the training steps this worker computed.",
		(double)atomic_load(&c->micro_batches), w->name);
	counter(p, "splitchain_worker_compute_seconds_total",
		"Seconds this worker's training steps spent computing on the device.",
		(double)atomic_load(&c->compute_us) / 1e6, w->name);
	sc_prom_family(p, "splitchain_worker_dataplane_sent_bytes_total", "counter",
		       "Data-plane bytes this worker's steps sent, by hop (toward the previous "
		       "or the next stage).");
	for (int h = 0; h < 2; h++)
		sc_prom_sample(p, "splitchain_worker_dataplane_sent_bytes_total",
			       (double)atomic_load(&c->dp_bytes[h][WORKER_DP_SENT]), "worker",
			       w->name, "hop", hops[h], NULL);
	sc_prom_family(p, "splitchain_worker_dataplane_received_bytes_total", "counter",
		       "Data-plane bytes this worker's steps received, by hop.");
	for (int h = 0; h < 2; h++)
		sc_prom_sample(p, "splitchain_worker_dataplane_received_bytes_total",
			       (double)atomic_load(&c->dp_bytes[h][WORKER_DP_RECV]), "worker",
			       w->name, "hop", hops[h], NULL);
	gauge(p, "splitchain_worker_resident_memory_bytes", "The process's resident set size.",
	      (double)worker_rss_bytes(0), w->name);
	gauge(p, "splitchain_worker_base_bytes",
	      "Frozen base weights held, each copy shared by jobs counted once.", (double)base,
	      w->name);
	sc_prom_family(p, "splitchain_worker_job_memory_bytes", "gauge",
		       "Memory each job slot's job holds besides the frozen weights.");
	for (int k = 0; k < w->n_slots; k++) {
		snprintf(slot, sizeof(slot), "%d", k);
		sc_prom_sample(p, "splitchain_worker_job_memory_bytes", (double)jobs[k], "worker",
			       w->name, "slot", slot, NULL);
	}
	gauge(p, "splitchain_worker_device_memory_bytes", "Memory of the worker's device.",
	      (double)w->memory_bytes, w->name);
	gauge(p, "splitchain_worker_steps_running", "Steps running on this worker now.",
	      (double)atomic_load(&w->busy), w->name);
	gauge(p, "splitchain_worker_registered",
	      "1 once the coordinator has accepted this worker's registration.",
	      atomic_load(&w->worker_id) ? 1 : 0, w->name);
	if (ok) /* none before the first answer */
		gauge(p, "splitchain_worker_coordinator_heartbeat_age_seconds",
		      "Seconds since the coordinator last answered a register or heartbeat.",
		      (double)(worker_mono_ms() - ok) / 1000.0, w->name);
	const char *const who[] = { "worker", w->name, NULL };
	sc_prom_rpc(p, w->srv, who);
	sc_prom_family(p, "splitchain_log_messages_total", "counter",
		       "Log records this process wrote (or would at a lower threshold), by level.");
	for (int l = 0; l < SC_LOG_OFF; l++)
		sc_prom_sample(p, "splitchain_log_messages_total",
			       (double)sc_log_count((enum sc_log_level)l), "worker", w->name,
			       "level", levels[l], NULL);
	return SC_OK;
}

sc_err worker_prom_start(worker *w, sc_http_metrics **out)
{
	return sc_http_metrics_start(out, w->o.metrics_listen, render, w);
}
