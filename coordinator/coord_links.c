/* coord_links.c — the coordinator's side of link measurement:
 * Coordinator.ReportLinks (a worker's measurements in, the other live
 * workers to measure out), Coordinator.Links (the links table, for
 * `splitchain links`) and Coordinator.Echo (sc_probe_echo). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coord.h"
#include "sc_log.h"
#include "sc_probe.h"
#include "sc_rpc_pb.h"
#include "splitchain.pb-c.h"

/* A live worker's name and address, copied out from under mu. */
typedef struct peer_copy {
	char name[128];
	char addr[256];
} peer_copy;

/* Called with mu held: *to = the id of the live worker named name, or -1. */
static int64_t live_id(coord *c, const char *name)
{
	for (int i = 0; name && i < c->nworkers; i++)
		if (!strcmp(c->workers[i].name, name))
			return c->workers[i].id;
	return -1;
}

/* Records the measurements of r that are sane, each one logged and
 * dropped otherwise. to[i]: the id measured to (0 the coordinator, -1 not a
 * live worker). No lock held. */
static void record(coord *c, const Splitchain__ReportLinksRequest *r, const char *from,
		   const int64_t *to)
{
	int64_t now = coord_now_ms();
	for (size_t i = 0; i < r->n_links; i++) {
		const Splitchain__LinkMeasurement *m = r->links[i];
		const char *name = m->to_coordinator ? "the coordinator" : m->to_name;
		const char *why =
		    to[i] < 0 ? "no live worker has that name"
		    : to[i] == (int64_t)r->worker_id
			? "a link to itself"
			: sc_probe_check(m->rtt_ms, m->mbit_s, m->measured_unix_ms, now);
		if (!why) {
			sc_db_link l = { .from_worker = (int64_t)r->worker_id,
					 .to_worker = to[i],
					 .rtt_ms = m->rtt_ms,
					 .mbit_s = m->mbit_s,
					 .measured_ms = m->measured_unix_ms };
			if (sc_db_link_upsert(c->db, &l) == SC_OK)
				continue;
			why = sc_err_detail();
		}
		sc_warn("coordinator",
			"%s reported a link to %.128s (rtt %g ms, %g Mbit/s, at %" PRId64
			"): ignored: %s",
			from, name ? name : "", m->rtt_ms, m->mbit_s, m->measured_unix_ms, why);
	}
}

void coord_m_report_links(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	coord *c = arg;
	Splitchain__ReportLinksRequest *r;
	Splitchain__ReportLinksReply out = SPLITCHAIN__REPORT_LINKS_REPLY__INIT;
	Splitchain__ProbePeer *pp = NULL, **ptrs = NULL;
	peer_copy *peers = NULL;
	int64_t *to = NULL;
	live_worker *lw;
	char from[128] = "";
	int n = 0;

	if (sc_rpc_unpack(&splitchain__report_links_request__descriptor, req, len,
			  (ProtobufCMessage **)&r, rep))
		return;
	if (sc_rpc_caller()->kind == SC_PRINCIPAL_WORKER &&
	    sc_rpc_caller()->id != (int64_t)r->worker_id) {
		sc_rpc_reply_err(rep, SC_STATUS_PERMISSION_DENIED,
				 "worker %lld may report only its own links, not worker %llu's",
				 (long long)sc_rpc_caller()->id, (unsigned long long)r->worker_id);
		coord_auth_deny(c->auth, 0, "worker %lld reported links as worker %llu",
				(long long)sc_rpc_caller()->id, (unsigned long long)r->worker_id);
		splitchain__report_links_request__free_unpacked(r, NULL);
		return;
	}
	to = calloc(r->n_links + 1, sizeof(*to));
	pthread_mutex_lock(&c->mu);
	peers = calloc((size_t)c->nworkers + 1, sizeof(*peers));
	lw = coord_worker(c, (int64_t)r->worker_id);
	if (lw && to && peers) {
		snprintf(from, sizeof(from), "%s", lw->name);
		for (size_t i = 0; i < r->n_links; i++)
			to[i] = r->links[i]->to_coordinator ? 0 : live_id(c, r->links[i]->to_name);
		for (int i = 0; i < c->nworkers; i++) {
			const live_worker *o = &c->workers[i];
			if (o->id == lw->id || o->last_seen_ms == 0)
				continue; /* itself, or counted lost */
			snprintf(peers[n].name, sizeof(peers[n].name), "%s", o->name);
			snprintf(peers[n].addr, sizeof(peers[n].addr), "%s", o->control_addr);
			n++;
		}
	}
	pthread_mutex_unlock(&c->mu);
	if (!lw) {
		sc_rpc_reply_err(rep, SC_STATUS_NOT_FOUND,
				 "worker %" PRIu64 " is not registered with this coordinator",
				 r->worker_id);
		goto out;
	}
	pp = calloc((size_t)n + 1, sizeof(*pp));
	ptrs = calloc((size_t)n + 1, sizeof(*ptrs));
	if (!to || !peers || !pp || !ptrs) {
		sc_rpc_reply_err(rep, SC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	record(c, r, from, to);
	for (int i = 0; i < n; i++) {
		splitchain__probe_peer__init(&pp[i]);
		pp[i].name = peers[i].name;
		pp[i].control_addr = peers[i].addr;
		ptrs[i] = &pp[i];
	}
	out.n_peers = (size_t)n;
	out.peers = ptrs;
	sc_rpc_reply_pb(rep, &out.base);
out:
	free(ptrs);
	free(pp);
	free(peers);
	free(to);
	splitchain__report_links_request__free_unpacked(r, NULL);
}

void coord_m_echo(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	sc_probe_echo(arg, req, len, rep);
}

void coord_m_links(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	coord *c = arg;
	Splitchain__LinksReply out = SPLITCHAIN__LINKS_REPLY__INIT;
	Splitchain__LinkInfo *li = NULL, **ptrs = NULL;
	sc_db_link *ls = NULL;
	int64_t now = coord_now_ms();
	int n = 0;

	(void)req;
	(void)len;
	if (sc_db_links_list(c->db, &ls, &n)) {
		sc_rpc_reply_err(rep, SC_STATUS_INTERNAL, "database: %s", sc_err_detail());
		return;
	}
	li = calloc((size_t)n + 1, sizeof(*li));
	ptrs = calloc((size_t)n + 1, sizeof(*ptrs));
	if (!li || !ptrs) {
		sc_rpc_reply_err(rep, SC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	for (int i = 0; i < n; i++) {
		splitchain__link_info__init(&li[i]);
		li[i].from_worker = (uint64_t)ls[i].from_worker;
		li[i].from_name = (char *)(ls[i].from_worker ? ls[i].from_name : "coordinator");
		li[i].to_worker = (uint64_t)ls[i].to_worker;
		li[i].to_name = (char *)(ls[i].to_worker ? ls[i].to_name : "coordinator");
		li[i].rtt_ms = ls[i].rtt_ms;
		li[i].mbit_s = ls[i].mbit_s;
		li[i].measured_unix_ms = ls[i].measured_ms;
		li[i].age_s = (double)(now - ls[i].measured_ms) / 1000.0;
		ptrs[i] = &li[i];
	}
	out.n_links = (size_t)n;
	out.links = ptrs;
	sc_rpc_reply_pb(rep, &out.base);
out:
	free(ptrs);
	free(li);
	free(ls);
}
