/* probe.c — the worker's link measurements: the Worker.Echo method, and the
 * prober thread that measures the links to the coordinator and to the other
 * live workers (sc_probe.h) and reports them.
 *
 * The prober asks the coordinator with Coordinator.ReportLinks, every
 * POLL_MS, which carries the measurements made since the last report and
 * is answered with the other live workers (name, control address). A link
 * is measured when it first appears (a worker that registers is measured
 * by every other one within a poll) and again every --probe-every-s seconds
 * (0: once), only while this worker runs no step, and it gives up a probe
 * as soon as a step begins; a peer that runs one refuses Echo (UNAVAILABLE)
 * and is tried again later. Each probe stays within SC_PROBE_BUDGET_MS.
 *
 * Probes of one link must not meet the others': when a worker registers,
 * every other one sees it at the same poll, and all would send into its
 * downlink at once. So a new link is first probed after a random delay
 * (up to JITTER_MS per live peer), and every measurement is a pair of
 * probes CONFIRM_MIN_MS..CONFIRM_MAX_MS apart (at most --probe-every-s): the first is reported at
 * once, the pair's best (lowest RTT, highest rate) replaces it — a probe
 * that met other traffic only reads the link slow.
 *
 * Threads: all the state here is the prober thread's own; the Echo handler
 * reads only w->busy. One client per peer address, kept for the worker's
 * life (a worker that restarts comes back on a new address: a new entry). */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "sc_log.h"
#include "sc_probe.h"
#include "sc_rpc_pb.h"
#include "splitchain.pb-c.h"
#include "worker.h"

#define POLL_MS         2000
#define REPORT_MS       5000 /* the longest wait for ReportLinks' answer */
#define RETRY_FAILED_MS 30000
#define MAX_PEERS       128
#define JITTER_MS       1000 /* a new link's first probe: up to this per live peer */
#define CONFIRM_MIN_MS  1000 /* the second probe of a pair, after the first */
#define CONFIRM_MAX_MS  4000

typedef struct peer {
	char name[128];
	char addr[WORKER_URL_MAX];
	sc_rpc_client *cl; /* NULL for the coordinator's entry: w->coord */
	int live;          /* in the coordinator's latest list */
	int64_t next_ms;   /* monotonic: when it is due again; 0 now, -1 never */
	int measured;      /* measured at least once */
	int pending;       /* a measurement waits for the next report */
	int confirming;    /* the next probe is the second of a pair */
	sc_probe_result r;
} peer;

struct worker_probe {
	pthread_t th;
	int started;
	peer peers[MAX_PEERS + 1]; /* [0] is the coordinator */
	int npeers;
	int full_noted;
	unsigned seed; /* rand_r: the delays, different on every worker */
};

/* A random delay in [lo, hi] ms from now, on the monotonic clock. */
static int64_t due_in(struct worker_probe *p, int lo, int hi)
{
	return worker_mono_ms() + lo + (hi > lo ? rand_r(&p->seed) % (hi - lo + 1) : 0);
}

static int live_peers(const struct worker_probe *p)
{
	int n = 0;
	for (int i = 0; i < p->npeers; i++)
		n += p->peers[i].live;
	return n;
}

void worker_echo(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	worker *w = arg;
	if (atomic_load(&w->busy)) {
		sc_rpc_reply_err(rep, SC_STATUS_UNAVAILABLE, "busy with a step: probe again later");
		return;
	}
	sc_probe_echo(NULL, req, len, rep);
}

static int give_up(void *arg)
{
	worker *w = arg;
	return atomic_load(&w->busy) || atomic_load(&w->stop);
}

/* The entry for a peer of the coordinator's list, made on first sight. */
static peer *peer_of(struct worker_probe *p, const char *name, const char *addr)
{
	peer *e;
	for (int i = 1; i < p->npeers; i++)
		if (!strcmp(p->peers[i].addr, addr)) {
			snprintf(p->peers[i].name, sizeof(p->peers[i].name), "%s", name);
			return &p->peers[i];
		}
	if (p->npeers > MAX_PEERS || strlen(name) >= sizeof(e->name) ||
	    strlen(addr) >= sizeof(e->addr)) {
		if (!p->full_noted++)
			sc_warn("worker",
				"link probes: peer %s at %s not measured (at most %d "
				"peers, names and addresses of ordinary length)",
				name, addr, MAX_PEERS);
		return NULL;
	}
	e = &p->peers[p->npeers];
	memset(e, 0, sizeof(*e));
	if (sc_rpc_client_open(&e->cl, addr)) {
		sc_warn("worker", "link probes: cannot dial %s: %s", addr, sc_err_detail());
		return NULL;
	}
	worker_auth_peer(e->cl);
	snprintf(e->name, sizeof(e->name), "%s", name);
	snprintf(e->addr, sizeof(e->addr), "%s", addr);
	e->next_ms = due_in(p, 0, JITTER_MS * (live_peers(p) + 1));
	p->npeers++;
	return e;
}

/* Coordinator.ReportLinks with the pending measurements; on an answer
 * they are sent and the peers' liveness is the answer's. */
static void report(worker *w, struct worker_probe *p, uint64_t id)
{
	Splitchain__ReportLinksRequest req = SPLITCHAIN__REPORT_LINKS_REQUEST__INIT;
	Splitchain__ReportLinksReply *rep = NULL;
	Splitchain__LinkMeasurement lm[MAX_PEERS + 1], *lp[MAX_PEERS + 1];
	char msg[256] = "";
	int status = SC_STATUS_OK;
	size_t n = 0;

	for (int i = 0; i < p->npeers; i++) {
		peer *e = &p->peers[i];
		if (!e->pending)
			continue;
		splitchain__link_measurement__init(&lm[n]);
		lm[n].to_name = i ? e->name : "";
		lm[n].to_coordinator = i == 0;
		lm[n].rtt_ms = e->r.rtt_ms;
		lm[n].mbit_s = e->r.mbit_s;
		lm[n].measured_unix_ms = e->r.measured_ms;
		lp[n] = &lm[n];
		n++;
	}
	req.worker_id = id;
	req.n_links = n;
	req.links = lp;
	if (sc_rpc_call_pb(w->coord, "Coordinator.ReportLinks", &req.base,
			   &splitchain__report_links_reply__descriptor, REPORT_MS, &status, msg,
			   sizeof(msg), (ProtobufCMessage **)&rep) ||
	    status != SC_STATUS_OK) {
		sc_debug("worker", "link report: %s%s%s", sc_status_name(status),
			 msg[0] ? ": " : "", msg);
		return; /* kept for the next report */
	}
	for (int i = 0; i < p->npeers; i++) {
		p->peers[i].pending = 0;
		p->peers[i].live = i == 0;
	}
	for (size_t k = 0; k < rep->n_peers; k++) {
		const Splitchain__ProbePeer *pp = rep->peers[k];
		peer *e;
		if (pp->name && pp->name[0] && pp->control_addr && pp->control_addr[0] &&
		    strcmp(pp->name, w->name) != 0 && (e = peer_of(p, pp->name, pp->control_addr)))
			e->live = 1;
	}
	splitchain__report_links_reply__free_unpacked(rep, NULL);
}

/* Probes every live link that is due, while no step runs; returns how many
 * were measured. */
static int probe_due(worker *w, struct worker_probe *p)
{
	int measured = 0;
	for (int i = 0; i < p->npeers; i++) {
		peer *e = &p->peers[i];
		int64_t now = worker_mono_ms();
		if (!e->live || e->next_ms < 0 || e->next_ms > now)
			continue;
		if (give_up(w))
			break;
		const char *to = i ? e->name : "the coordinator";
		sc_probe_result r;
		if (sc_probe_link(i ? e->cl : w->coord, i ? "Worker.Echo" : "Coordinator.Echo",
				  SC_PROBE_BUDGET_MS, give_up, w, &r) != SC_OK) {
			if (give_up(w))
				break; /* due again once the step is over */
			sc_debug("worker", "link to %s not measured: %s", to, sc_err_detail());
			e->next_ms = worker_mono_ms() + RETRY_FAILED_MS;
			continue;
		}
		if (e->confirming) {
			/* The pair's best; the newer time. */
			if (e->r.rtt_ms < r.rtt_ms)
				r.rtt_ms = e->r.rtt_ms;
			if (e->r.mbit_s > r.mbit_s)
				r.mbit_s = e->r.mbit_s;
		}
		e->r = r;
		if (!e->measured)
			sc_info("worker", "link to %s: rtt %.3f ms, %.0f Mbit/s", to, e->r.rtt_ms,
				e->r.mbit_s);
		else if (e->confirming)
			sc_debug("worker",
				 "link to %s, best of two probes: rtt %.3f ms, %.0f Mbit/s", to,
				 e->r.rtt_ms, e->r.mbit_s);
		e->measured = e->pending = 1;
		e->confirming = !e->confirming;
		if (e->confirming) {
			/* Never later than the next measurement is due. */
			int hi = CONFIRM_MAX_MS, every = w->o.probe_every_s;
			if (every > 0 && every * 1000 < hi)
				hi = every * 1000;
			e->next_ms =
			    due_in(p, CONFIRM_MIN_MS < hi / 2 ? CONFIRM_MIN_MS : hi / 2, hi);
		} else
			e->next_ms = w->o.probe_every_s > 0
					 ? worker_mono_ms() + (int64_t)w->o.probe_every_s * 1000
					 : -1;
		measured++;
	}
	return measured;
}

static void *prober_main(void *arg)
{
	worker *w = arg;
	struct worker_probe *p = w->probe;
	int wait_ms = 0;

	while (!worker_sleep(w, wait_ms)) {
		uint64_t id = atomic_load(&w->worker_id);
		wait_ms = POLL_MS;
		if (!id)
			continue; /* not registered yet */
		report(w, p, id);
		if (probe_due(w, p))
			wait_ms = 0; /* report them at once */
	}
	return NULL;
}

sc_err worker_probe_start(worker *w)
{
	struct worker_probe *p = calloc(1, sizeof(*p));
	if (!p)
		return sc_errf(SC_ENOMEM, "out of memory for the link prober");
	p->npeers = 1; /* the coordinator, measured soon after we are registered */
	p->peers[0].live = 1;
	p->seed = (unsigned)getpid() ^ (unsigned)worker_mono_ms();
	for (const char *c = w->name; *c; c++)
		p->seed = p->seed * 31u + (unsigned char)*c;
	p->peers[0].next_ms = due_in(p, 0, JITTER_MS);
	w->probe = p;
	if (pthread_create(&p->th, NULL, prober_main, w)) {
		w->probe = NULL;
		free(p);
		return sc_errf(SC_EIO, "cannot start the link prober thread");
	}
	p->started = 1;
	return SC_OK;
}

void worker_probe_stop(worker *w)
{
	struct worker_probe *p = w->probe;
	if (!p)
		return;
	if (p->started)
		pthread_join(p->th, NULL);
	for (int i = 1; i < p->npeers; i++)
		sc_rpc_client_close(p->peers[i].cl);
	free(p);
	w->probe = NULL;
}
