/* announce.c — telling the coordinator the worker exists and what it holds:
 * Coordinator.Register (retried every second until the coordinator
 * answers), then Coordinator.Heartbeat every heartbeat_ms. Both carry the
 * holding (job, placement version, stage) and are answered with a holding
 * to drop when it is not current; the worker drops it at once and reports
 * again. A heartbeat answered NOT_FOUND (a coordinator that restarted, or
 * forgot us) registers again; an unreachable coordinator is retried for as
 * long as the worker runs, but once nothing has been answered for the
 * lease the worker drops its job (see worker.h). A device that reports a
 * lasting failure ends the heartbeats and the process (exit status 3). */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>

#include "auth.h"
#include "sc_log.h"
#include "sc_rpc_pb.h"
#include "splitchain.pb-c.h"
#include "worker.h"

#define REGISTER_TIMEOUT_MS 5000
#define MIN_CALL_MS         200 /* shortest wait for a heartbeat's answer */
#define LOG_EVERY           30  /* failed attempts between two log lines while waiting */

int worker_sleep(worker *w, int ms)
{
	struct timespec ts;
	int stop;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&w->stop_mu);
	while (!(stop = atomic_load(&w->stop)))
		if (pthread_cond_timedwait(&w->stop_cv, &w->stop_mu, &ts) == ETIMEDOUT)
			break;
	stop = atomic_load(&w->stop);
	pthread_mutex_unlock(&w->stop_mu);
	return stop;
}

/* The coordinator's answer about our holdings: what to drop. */
typedef struct fence {
	int n;
	struct {
		uint64_t job;
		uint32_t version;
	} h[WORKER_MAX_SLOTS];
} fence;

static void fence_of(fence *f, Splitchain__Holding *const *h, size_t n)
{
	f->n = 0;
	for (size_t i = 0; i < n && f->n < WORKER_MAX_SLOTS; i++)
		if (h[i]->job_id) {
			f->h[f->n].job = h[i]->job_id;
			f->h[f->n++].version = h[i]->placement_version;
		}
}

/* Keeps the coordinator's tensor listener: addr as it said, a wildcard
 * host (0.0.0.0, ::, none) replaced by the host this worker dials. */
static void set_fetch_url(worker *w, const char *addr)
{
	char url[WORKER_URL_MAX] = "";
	nng_url *a = NULL, *c = NULL;
	if (addr && addr[0] && !nng_url_parse(&a, addr) && !nng_url_parse(&c, w->o.coordinator) &&
	    strstr(a->u_scheme, "tcp") &&
	    (!a->u_hostname[0] || !strcmp(a->u_hostname, "0.0.0.0") ||
	     !strcmp(a->u_hostname, "::")))
		snprintf(url, sizeof(url),
			 strchr(c->u_hostname, ':') ? "%s://[%s]:%s" : "%s://%s:%s", a->u_scheme,
			 c->u_hostname, a->u_port);
	else if (addr)
		snprintf(url, sizeof(url), "%s", addr);
	nng_url_free(a);
	nng_url_free(c);
	pthread_mutex_lock(&w->hold_mu);
	snprintf(w->fetch_url, sizeof(w->fetch_url), "%s", url);
	pthread_mutex_unlock(&w->hold_mu);
}

/* What the slots hold, as a message's repeated Holding (slots that hold
 * nothing left out). */
typedef struct held {
	Splitchain__Holding h[WORKER_MAX_SLOTS], *ptr[WORKER_MAX_SLOTS];
	size_t n;
} held;

static void held_get(worker *w, held *out)
{
	struct worker_holding h[WORKER_MAX_SLOTS];
	worker_holdings_get(w, h);
	out->n = 0;
	for (int k = 0; k < w->n_slots; k++) {
		if (!h[k].job)
			continue;
		Splitchain__Holding *m = &out->h[out->n];
		splitchain__holding__init(m);
		m->job_id = h[k].job;
		m->placement_version = h[k].version;
		m->stage = h[k].stage;
		m->slot = (uint32_t)k;
		out->ptr[out->n++] = m;
	}
}

/* One Register call, reporting our holding in *held. 0 and *id / *hb_ms /
 * *lease_ms / *drop set when the coordinator accepted us; else the status
 * and its message in msg. */
static int register_once(worker *w, held *hd, uint64_t *id, int *hb_ms, int *lease_ms, fence *drop,
			 int *status, char *msg, size_t size)
{
	Splitchain__RegisterRequest req = SPLITCHAIN__REGISTER_REQUEST__INIT;
	Splitchain__RegisterReply *rep = NULL;
	char *data_addrs[WORKER_MAX_SLOTS], *owner_addrs[WORKER_MAX_SLOTS];

	req.name = w->name;
	req.device = (char *)w->be->name;
	req.memory_bytes = w->memory_bytes;
	req.memory_reserve_bytes = w->memory_reserve;
	req.data_owner = w->o.owner_data != NULL;
	req.owner_head_addr = w->slots[0].owner_addr;
	for (int k = 0; k < w->n_slots; k++) {
		data_addrs[k] = w->slots[k].data_addr;
		owner_addrs[k] = w->slots[k].owner_addr;
	}
	req.n_slot_data_addrs = (size_t)w->n_slots;
	req.slot_data_addrs = data_addrs;
	if (w->o.owner_data) {
		req.n_slot_owner_addrs = (size_t)w->n_slots;
		req.slot_owner_addrs = owner_addrs;
	}
	req.gflops = w->gflops;
	req.host_id = w->host_id;
	req.host_cpus = w->host_cpus;
	req.threads = w->threads;
	req.control_addr = w->control_addr;
	req.data_addr = w->slots[0].data_addr;
	req.n_holdings = hd->n;
	req.holdings = hd->ptr;
	msg[0] = '\0';
	/* What the cache holds, so that the coordinator knows after a restart. */
	char **cached = NULL;
	size_t ncached = 0;
	if (w->cache && sc_tcache_list(w->cache, &cached, &ncached))
		sc_warn("worker", "listing the cache: %s", sc_err_detail());
	req.n_cached_sha256 = ncached;
	req.cached_sha256 = cached;
	req.coordinator_secret.data = (uint8_t *)worker_auth_secret();
	req.coordinator_secret.len = strlen(worker_auth_secret());
	/* A new registration: the join token, for this call alone; the
	 * client's other callers (the link prober, deliveries) keep the old
	 * session meanwhile, which the coordinator answers "unknown session"
	 * without taking it for an intrusion. */
	const char *join = worker_auth_join_token();
	sc_err rc =
	    sc_rpc_call_pb_as(w->coord, join, strlen(join), "Coordinator.Register", &req.base,
			      &splitchain__register_reply__descriptor, REGISTER_TIMEOUT_MS, status,
			      msg, size, (ProtobufCMessage **)&rep);
	sc_tcache_list_free(cached, ncached);
	if (rc) {
		*status = SC_STATUS_RESOURCE_EXHAUSTED;
		snprintf(msg, size, "%s", sc_err_detail());
		return 1;
	}
	if (*status != SC_STATUS_OK)
		return 1;
	*id = rep->worker_id;
	*hb_ms = rep->heartbeat_ms ? (int)rep->heartbeat_ms : 1000;
	if (*hb_ms < 10)
		*hb_ms = 10;
	if (*hb_ms > 600000)
		*hb_ms = 600000;
	*lease_ms = (int)(rep->lease_ms > 86400000 ? 86400000 : rep->lease_ms);
	fence_of(drop, rep->releases, rep->n_releases);
	set_fetch_url(w, rep->fetch_addr);
	worker_auth_set_session(w->coord, rep->session.data, rep->session.len);
	protobuf_c_message_free_unpacked(&rep->base, NULL);
	return 0;
}

/* How long a heartbeat waits for its answer: long enough for a busy
 * coordinator, short enough that the lease is looked at in time. */
static int call_timeout(int hb_ms, int lease_ms)
{
	int t = hb_ms < 2000 ? 2000 : hb_ms;
	if (lease_ms > 0 && t > lease_ms / 3)
		t = lease_ms / 3;
	return t < MIN_CALL_MS ? MIN_CALL_MS : t;
}

/* The refusals noted since the last heartbeat, moved into notes (freed by
 * the caller), and put back when the heartbeat was not answered. */
static int take_notices(worker *w, char ***notes)
{
	int n = 0;
	pthread_mutex_lock(&w->notice_mu);
	*notes = calloc((size_t)w->n_notices + 2, sizeof(**notes));
	if (*notes) {
		for (int i = 0; i < w->n_notices; i++)
			if (((*notes)[n] = strdup(w->notices[i])))
				n++;
		if (w->lost_notices && ((*notes)[n] = malloc(80)))
			snprintf((*notes)[n++], 80, "%d more refusals not kept", w->lost_notices);
		w->n_notices = w->lost_notices = 0;
	}
	pthread_mutex_unlock(&w->notice_mu);
	return n;
}

static void free_notices(char **notes, int n)
{
	for (int i = 0; i < n; i++)
		free(notes[i]);
	free(notes);
}

static int heartbeat_once(worker *w, uint64_t id, held *hd, int timeout, fence *drop, char *msg,
			  size_t size)
{
	Splitchain__HeartbeatRequest req = SPLITCHAIN__HEARTBEAT_REQUEST__INIT;
	Splitchain__HeartbeatReply *rep = NULL;
	Splitchain__JobMemory jm[WORKER_MAX_SLOTS], *jmp[WORKER_MAX_SLOTS];
	uint64_t job_bytes[WORKER_MAX_SLOTS];
	struct worker_holding h[WORKER_MAX_SLOTS];
	int status = SC_STATUS_OK, n;
	char **notes = NULL;

	req.worker_id = id;
	req.state = atomic_load(&w->busy) ? "busy" : "idle";
	req.n_holdings = hd->n;
	req.holdings = hd->ptr;
	/* Memory: the frozen weights once, each job's own besides them. */
	worker_memory(w, &req.base_bytes, job_bytes);
	worker_holdings_get(w, h);
	for (int k = 0; k < w->n_slots; k++)
		if (h[k].job && job_bytes[k]) {
			splitchain__job_memory__init(&jm[req.n_jobs_memory]);
			jm[req.n_jobs_memory].job_id = h[k].job;
			jm[req.n_jobs_memory].bytes = job_bytes[k];
			jmp[req.n_jobs_memory] = &jm[req.n_jobs_memory];
			req.n_jobs_memory++;
		}
	req.jobs_memory = jmp;
	n = take_notices(w, &notes);
	req.n_notices = (size_t)n;
	req.notices = notes;
	msg[0] = '\0';
	drop->n = 0;
	if (sc_rpc_call_pb(w->coord, "Coordinator.Heartbeat", &req.base,
			   &splitchain__heartbeat_reply__descriptor, timeout, &status, msg, size,
			   (ProtobufCMessage **)&rep)) {
		snprintf(msg, size, "%s", sc_err_detail());
		status = SC_STATUS_RESOURCE_EXHAUSTED;
	}
	if (status != SC_STATUS_OK)
		for (int i = 0; i < n; i++) /* keep them for the next heartbeat */
			worker_note(w, notes[i]);
	if (rep) {
		fence_of(drop, rep->releases, rep->n_releases);
		protobuf_c_message_free_unpacked(&rep->base, NULL);
	}
	free_notices(notes, n);
	return status;
}

/* Drops what the coordinator said to drop; 1 when something was dropped. */
static int obey(worker *w, const fence *drop)
{
	char why[160];
	int dropped = 0;
	for (int i = 0; i < drop->n; i++) {
		snprintf(why, sizeof(why),
			 "the coordinator fenced placement %u, which is not current",
			 drop->h[i].version);
		dropped += worker_drop(w, drop->h[i].job, drop->h[i].version, why);
	}
	return dropped;
}

void *worker_announce_main(void *arg)
{
	worker *w = arg;
	char msg[512];
	uint64_t id = 0;
	int hb_ms = 1000, lease_ms = 0, registered = 0, failures = 0, status;
	int64_t last_ok = worker_mono_ms();
	fence drop = { 0 };

	while (!atomic_load(&w->stop)) {
		/* A device that cannot work again (the call that hit it has
		 * answered the coordinator): no more heartbeats, so no more
		 * work; stop the process so that its supervisor starts a fresh
		 * one. */
		const char *why = w->be->ops->failure(w->be);
		if (why) {
			sc_error("worker",
				 "device %s failed and cannot recover in this process: %s; "
				 "stopping (exit status 3)",
				 w->be->name, why);
			atomic_store(&w->device_failed, 1);
			/* The call that hit the failure answers the coordinator
			 * first (its error is what the job records): wait, at
			 * most 5 s, until no request is being handled, and a
			 * moment for the last reply to leave, then stop. */
			for (int i = 0; i < 100 && sc_rpc_server_busy(w->srv) > 0; i++)
				nng_msleep(50);
			nng_msleep(200);
			kill(getpid(), SIGTERM); /* main's sigwait takes it */
			break;
		}
		worker_check_wedged(w);
		/* The lease: cut off from the coordinator for longer than it
		 * waits before re-planning without us, the job is not ours. */
		int64_t silent = worker_mono_ms() - last_ok;
		if (lease_ms > 0 && silent > lease_ms) {
			char lease[160];
			snprintf(lease, sizeof(lease),
				 "no answer from the coordinator for %lld ms (lease %d ms)",
				 (long long)silent, lease_ms);
			worker_drop(w, 0, 0, lease);
		}
		held hd;
		held_get(w, &hd);
		if (!registered) {
			if (register_once(w, &hd, &id, &hb_ms, &lease_ms, &drop, &status, msg,
					  sizeof(msg)) == 0) {
				registered = 1;
				failures = 0;
				atomic_store(&w->worker_id, id); /* for the link prober */
				last_ok = worker_mono_ms();
				atomic_store(&w->counters.heartbeat_ok_ms, last_ok);
				sc_info("worker",
					"registered with %s as worker %" PRIu64
					" (heartbeat every %d ms, lease %d ms)",
					w->o.coordinator, id, hb_ms, lease_ms);
				obey(w, &drop);
				continue; /* the first heartbeat reports what was dropped */
			}
			if (failures++ % LOG_EVERY == 0)
				sc_warn("worker",
					"waiting for the coordinator at %s: %s%s%s; retrying "
					"every second",
					w->o.coordinator, sc_status_name(status),
					msg[0] ? ": " : "", msg);
			worker_sleep(w, lease_ms > 0 && lease_ms < 1000 ? lease_ms : 1000);
			continue;
		}
		status = heartbeat_once(w, id, &hd, call_timeout(hb_ms, lease_ms), &drop, msg,
					sizeof(msg));
		if (status == SC_STATUS_NOT_FOUND || status == SC_STATUS_UNAUTHENTICATED) {
			sc_warn("worker",
				"the coordinator does not know worker %" PRIu64
				" (%s): registering again",
				id, msg);
			registered = 0;
			continue;
		}
		if (status != SC_STATUS_OK) {
			if (failures++ % LOG_EVERY == 0)
				sc_warn("worker", "heartbeat to %s: %s%s%s; still trying",
					w->o.coordinator, sc_status_name(status),
					msg[0] ? ": " : "", msg);
		} else {
			last_ok = worker_mono_ms();
			atomic_store(&w->counters.heartbeat_ok_ms, last_ok);
			if (failures)
				sc_info("worker", "the coordinator answers heartbeats again");
			failures = 0;
			if (obey(w, &drop))
				continue; /* say so at once: the coordinator waits for it */
		}
		worker_sleep(w, hb_ms);
	}
	return NULL;
}
