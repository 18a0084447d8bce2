/* coord_rpc.c — the coordinator's RPC methods: worker registration and
 * heartbeats, and the CLI's submit, jobs, status, cancel, workers, export. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "coord.h"
#include "coord_models.h"
#include "db_users.h"
#include "sc_config.h"
#include "sc_file.h"
#include "sc_lora.h"
#include "sc_rpc_pb.h"
#include "sc_train.h"
#include "sc_units.h"
#include "sc_weights.h"
#include "sc_wire.h"
#include "splitchain.pb-c.h"

static int nonempty(const char *s)
{
	return s && *s;
}

int coord_slot_of(const live_worker *w, int64_t job)
{
	for (int k = 0; k < w->n_slots; k++)
		if (job ? w->slot[k].job == job : !w->slot[k].job && !w->slot[k].held_job)
			return k;
	return -1;
}

int coord_jobs_on(const live_worker *w)
{
	int n = 0;
	for (int k = 0; k < w->n_slots; k++)
		n += w->slot[k].job != 0;
	return n;
}

/* The holdings a worker is told to drop, one reply's worth. */
typedef struct fences {
	Splitchain__Holding h[COORD_MAX_SLOTS], *ptr[COORD_MAX_SLOTS];
	int news[COORD_MAX_SLOTS];
	size_t n;
} fences;

/* Called with mu held: records what worker lw says its slots hold, and
 * adds to rel each holding that is not the current placement of a running
 * job that slot serves. The worker drops exactly that holding, never a
 * newer one, so an answer that crosses an Assign does no harm. news[i]:
 * 1 when the fence is news (worth an event), 0 when it repeats the last. */
static void fence(coord *c, live_worker *lw, Splitchain__Holding *const *h, size_t n, fences *rel)
{
	rel->n = 0;
	for (int k = 0; k < lw->n_slots; k++) {
		live_slot *s = &lw->slot[k];
		s->held_job = 0;
		s->held_version = s->held_stage = 0;
	}
	for (size_t i = 0; i < n && rel->n < COORD_MAX_SLOTS; i++) {
		live_slot *s = h[i]->slot < (uint32_t)lw->n_slots ? &lw->slot[h[i]->slot] : NULL;
		int64_t job = (int64_t)h[i]->job_id;
		live_job *lj;
		if (!job)
			continue;
		if (s) {
			s->held_job = job;
			s->held_version = h[i]->placement_version;
			s->held_stage = h[i]->stage;
			lj = coord_live_job(c, job);
			if (s->job == job && lj && !lj->done && lj->version == s->held_version)
				continue; /* current */
		}
		Splitchain__Holding *r = &rel->h[rel->n];
		splitchain__holding__init(r);
		r->job_id = (uint64_t)job;
		r->placement_version = h[i]->placement_version;
		r->slot = h[i]->slot;
		rel->news[rel->n] =
		    !s || s->fenced_job != job || s->fenced_version != r->placement_version;
		if (s) {
			s->fenced_job = job;
			s->fenced_version = r->placement_version;
		}
		rel->ptr[rel->n] = r;
		rel->n++;
	}
}

/* Records new fences and the worker's notices as events (no lock held). */
static void record_fence(coord *c, int64_t worker, const char *name, const fences *rel,
			 char **notices, size_t n)
{
	for (size_t i = 0; i < rel->n; i++)
		if (rel->news[i])
			sc_db_event(c->db, (int64_t)rel->h[i].job_id, worker, SC_LOG_WARN,
				    "worker_fenced",
				    "%s still held placement %u of job %llu, which is not current: "
				    "told to drop it",
				    name, rel->h[i].placement_version,
				    (unsigned long long)rel->h[i].job_id);
	for (size_t i = 0; i < n; i++)
		sc_db_event(c->db, 0, worker, SC_LOG_WARN,
			    /* worker/auth.c's: a call not from us */
			    strncmp(notices[i], "refused a Worker.", 17) ? "dataplane_refused"
									 : "auth_denied",
			    "%s: %s", name, notices[i]);
}

static void m_register(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	coord *c = arg;
	Splitchain__RegisterRequest *r;
	Splitchain__RegisterReply out = SPLITCHAIN__REGISTER_REPLY__INIT;
	fences rel;
	sc_db_worker w = { 0 };
	live_worker *lw;
	live_job *lj;
	int64_t id, restarted;
	size_t slots;
	char session[SC_TOKEN_MAX];
	sc_rpc_client *peer = NULL;

	if (sc_rpc_unpack(&splitchain__register_request__descriptor, req, len,
			  (ProtobufCMessage **)&r, rep))
		return;
	if (!nonempty(r->name) || strlen(r->name) >= sizeof(lw->name) ||
	    !nonempty(r->control_addr) || strlen(r->control_addr) >= sizeof(lw->control_addr) ||
	    !nonempty(r->data_addr) || strlen(r->data_addr) >= sizeof(lw->slot[0].data_addr) ||
	    !(r->gflops > 0) || !isfinite(r->gflops)) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT,
				 "a worker registers with a name, control and data addresses and "
				 "a positive compute rate");
		goto out;
	}
	if (!atomic_load_explicit(&c->serving, memory_order_acquire)) {
		sc_rpc_reply_err(rep, SC_STATUS_UNAVAILABLE,
				 "the coordinator is starting: register again in a moment");
		goto out;
	}
	if (coord_register_transport(c, r->name, r->control_addr, r->data_addr, rep->message,
				     sizeof(rep->message))) {
		rep->status = SC_STATUS_PERMISSION_DENIED;
		goto out;
	}
	/* Job slots: each with a data address (and a data owner's head
	 * listener); none listed is one slot at data_addr. */
	slots = r->n_slot_data_addrs ? r->n_slot_data_addrs : 1;
	int bad =
	    slots > COORD_MAX_SLOTS || (r->n_slot_owner_addrs && r->n_slot_owner_addrs != slots);
	for (size_t k = 0; k < r->n_slot_data_addrs; k++)
		bad |= !nonempty(r->slot_data_addrs[k]) ||
		       strlen(r->slot_data_addrs[k]) >= sizeof(lw->slot[0].data_addr);
	for (size_t k = 0; k < r->n_slot_owner_addrs; k++)
		bad |= strlen(r->slot_owner_addrs[k]) >= sizeof(lw->slot[0].owner_addr);
	if (bad) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT,
				 "%zu job slots with %zu data and %zu owner addresses: a worker "
				 "has 1 to %d slots, each with a data address of its own",
				 slots, r->n_slot_data_addrs, r->n_slot_owner_addrs,
				 COORD_MAX_SLOTS);
		goto out;
	}
	if (r->coordinator_secret.len < 16 || r->coordinator_secret.len >= SC_TOKEN_MAX) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT,
				 "a worker registers with a secret of 16 to %d bytes for the "
				 "coordinator to present (coordinator_secret)",
				 SC_TOKEN_MAX - 1);
		goto out;
	}
	/* The secret goes on our client of its address before anything can
	 * call it: every call we make to it presents it. */
	if (coord_peer_client(c, r->control_addr, &peer) ||
	    sc_rpc_client_set_auth(peer, r->coordinator_secret.data, r->coordinator_secret.len)) {
		sc_rpc_reply_err(rep, SC_STATUS_RESOURCE_EXHAUSTED, "%s", sc_err_detail());
		goto out;
	}
	w.name = r->name;
	w.device = nonempty(r->device) ? r->device : "cpu";
	w.memory_bytes = r->memory_bytes;
	w.memory_reserve_bytes = r->memory_reserve_bytes;
	w.data_owner = r->data_owner;
	w.gflops = r->gflops;
	w.control_addr = r->control_addr;
	w.data_addr = r->data_addr;
	w.job_slots = r->n_slot_data_addrs ? (int)r->n_slot_data_addrs : 1;
	w.state = SC_WORKER_IDLE;
	if (sc_db_worker_upsert(c->db, &w, &id)) {
		sc_rpc_reply_err(rep, SC_STATUS_INTERNAL, "database: %s", sc_err_detail());
		goto out;
	}
	coord_models_worker_cache(c, id, r);
	if (coord_auth_session(c->auth, id, session)) {
		sc_rpc_reply_err(rep, SC_STATUS_UNAVAILABLE, "%s", sc_err_detail());
		goto out;
	}
	pthread_mutex_lock(&c->mu);
	lw = coord_worker(c, id);
	if (!lw) {
		if (c->nworkers == c->capworkers) {
			int cap = c->capworkers ? 2 * c->capworkers : 16;
			live_worker *nw = realloc(c->workers, (size_t)cap * sizeof(*nw));
			if (!nw) {
				pthread_mutex_unlock(&c->mu);
				sc_rpc_reply_err(rep, SC_STATUS_RESOURCE_EXHAUSTED,
						 "out of memory");
				goto out;
			}
			c->workers = nw;
			c->capworkers = cap;
		}
		lw = &c->workers[c->nworkers++];
		memset(lw, 0, sizeof(*lw));
		lw->id = id;
	}
	/* A worker that registers while it serves a job (its process restarted,
	 * or it forgot us) and does not hold that job's placement has lost its
	 * segment: the job's calls to it would only wait out the stall limit. */
	restarted = 0;
	for (int k = 0; k < lw->n_slots; k++) {
		int64_t job = lw->slot[k].job;
		int holds = 0;
		if (!job || !(lj = coord_live_job(c, job)) || lj->done)
			continue;
		for (size_t i = 0; i < r->n_holdings; i++)
			holds |= r->holdings[i]->slot == (uint32_t)k &&
				 (int64_t)r->holdings[i]->job_id == job &&
				 r->holdings[i]->placement_version == lj->version;
		if (!holds || k >= (int)slots) {
			coord_abort_job(c, lj);
			restarted = job;
		}
	}
	lw->last_seen_ms = coord_now_ms();
	lw->gflops = r->gflops;
	snprintf(lw->host_id, sizeof(lw->host_id), "%s", r->host_id ? r->host_id : "");
	lw->host_cpus = r->host_cpus;
	lw->memory_bytes = r->memory_bytes;
	lw->memory_reserve = r->memory_reserve_bytes;
	lw->data_owner = r->data_owner;
	/* A slot the worker no longer has keeps its job until that job's
	 * runner lets go (it was aborted above). */
	for (int k = (int)slots; k < lw->n_slots; k++)
		if (lw->slot[k].job)
			slots = (size_t)k + 1;
	lw->n_slots = (int)slots;
	for (size_t k = 0; k < slots; k++) {
		live_slot *s = &lw->slot[k];
		const char *data = k < r->n_slot_data_addrs ? r->slot_data_addrs[k]
				   : k == 0                 ? r->data_addr
							    : "";
		const char *owner = k < r->n_slot_owner_addrs      ? r->slot_owner_addrs[k]
				    : k == 0 && r->owner_head_addr ? r->owner_head_addr
								   : "";
		snprintf(s->data_addr, sizeof(s->data_addr), "%s", data);
		snprintf(s->owner_addr, sizeof(s->owner_addr), "%s", owner);
	}
	snprintf(lw->device, sizeof(lw->device), "%s", w.device);
	lw->threads = r->threads;
	snprintf(lw->name, sizeof(lw->name), "%s", r->name);
	snprintf(lw->control_addr, sizeof(lw->control_addr), "%s", r->control_addr);
	snprintf(lw->secret, sizeof(lw->secret), "%.*s", (int)r->coordinator_secret.len,
		 (const char *)r->coordinator_secret.data);
	fence(c, lw, r->holdings, r->n_holdings, &rel);
	pthread_cond_broadcast(&c->wake);
	pthread_mutex_unlock(&c->mu);
	sc_db_event(c->db, 0, id, SC_LOG_INFO, "worker_registered", "%s (%s, %.1f GFLOP/s) at %s",
		    r->name, w.device, r->gflops, r->control_addr);
	record_fence(c, id, r->name, &rel, NULL, 0);
	if (restarted)
		sc_db_event(c->db, restarted, id, SC_LOG_WARN, "worker_restarted",
			    "%s registered again without its segment of job %lld: the job's calls "
			    "to it were aborted",
			    r->name, (long long)restarted);
	out.worker_id = (uint64_t)id;
	out.heartbeat_ms = (uint32_t)c->heartbeat_ms;
	out.lease_ms = (uint32_t)c->lost_after_ms;
	out.n_releases = rel.n;
	out.releases = rel.ptr;
	out.fetch_addr = c->fetch_addr;
	out.session.data = (uint8_t *)session;
	out.session.len = strlen(session);
	sc_rpc_reply_pb(rep, &out.base);
out:
	splitchain__register_request__free_unpacked(r, NULL);
}

static void m_heartbeat(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	coord *c = arg;
	Splitchain__HeartbeatRequest *r;
	Splitchain__HeartbeatReply out = SPLITCHAIN__HEARTBEAT_REPLY__INIT;
	fences rel = { .n = 0 };
	live_worker *lw;
	int back = 0, busy = 0, mem_changed = 0;
	char name[128] = "";

	if (sc_rpc_unpack(&splitchain__heartbeat_request__descriptor, req, len,
			  (ProtobufCMessage **)&r, rep))
		return;
	if (sc_rpc_caller()->kind == SC_PRINCIPAL_WORKER &&
	    sc_rpc_caller()->id != (int64_t)r->worker_id) {
		sc_rpc_reply_err(rep, SC_STATUS_PERMISSION_DENIED,
				 "a heartbeat for worker %llu with worker %lld's session",
				 (unsigned long long)r->worker_id, (long long)sc_rpc_caller()->id);
		coord_auth_deny(c->auth, 0, "worker %lld sent a heartbeat for worker %llu",
				(long long)sc_rpc_caller()->id, (unsigned long long)r->worker_id);
		splitchain__heartbeat_request__free_unpacked(r, NULL);
		return;
	}
	pthread_mutex_lock(&c->mu);
	lw = coord_worker(c, (int64_t)r->worker_id);
	if (lw) {
		int freed = 0;
		int64_t had[COORD_MAX_SLOTS];
		for (int k = 0; k < lw->n_slots; k++)
			had[k] = lw->slot[k].held_job;
		back = lw->last_seen_ms == 0; /* it had been counted lost */
		busy = coord_jobs_on(lw) != 0;
		lw->last_seen_ms = coord_now_ms();
		fence(c, lw, r->holdings, r->n_holdings, &rel);
		mem_changed = lw->base_bytes != r->base_bytes;
		for (int k = 0; k < lw->n_slots; k++) {
			uint64_t bytes = 0;
			freed |= had[k] && !lw->slot[k].held_job;
			for (size_t i = 0; i < r->n_jobs_memory; i++)
				if (lw->slot[k].held_job &&
				    (int64_t)r->jobs_memory[i]->job_id == lw->slot[k].held_job)
					bytes = r->jobs_memory[i]->bytes;
			mem_changed |= lw->slot[k].job_bytes != bytes;
			lw->slot[k].job_bytes = bytes;
		}
		lw->base_bytes = r->base_bytes;
		snprintf(name, sizeof(name), "%s", lw->name);
		if (back || freed) /* usable again, or a slot free now */
			pthread_cond_broadcast(&c->wake);
	}
	pthread_mutex_unlock(&c->mu);
	if (lw) {
		record_fence(c, (int64_t)r->worker_id, name, &rel, r->notices, r->n_notices);
		if (mem_changed) { /* jobs came or went: the dashboards' figures */
			sc_db_job_memory jm[COORD_MAX_SLOTS];
			size_t n = 0;
			for (size_t i = 0; i < r->n_jobs_memory && n < COORD_MAX_SLOTS; i++)
				jm[n++] = (sc_db_job_memory){ (int64_t)(r->jobs_memory[i]->job_id &
									INT64_MAX),
							      r->jobs_memory[i]->bytes };
			sc_db_worker_memory(c->db, (int64_t)r->worker_id, r->base_bytes, jm, n);
		}
	}
	if (back) {
		sc_db_worker_set_state(c->db, (int64_t)r->worker_id,
				       busy ? SC_WORKER_BUSY : SC_WORKER_IDLE);
		sc_db_event(c->db, 0, (int64_t)r->worker_id, SC_LOG_INFO, "worker_back",
			    "heartbeats resumed");
	}
	if (!lw)
		sc_rpc_reply_err(rep, SC_STATUS_NOT_FOUND,
				 "worker %llu is not registered with this coordinator: register "
				 "again",
				 (unsigned long long)r->worker_id);
	else {
		out.n_releases = rel.n;
		out.releases = rel.ptr;
		sc_rpc_reply_pb(rep, &out.base);
	}
	splitchain__heartbeat_request__free_unpacked(r, NULL);
}

/* Checks a job's data owners (submit --owner): live workers started with
 * --owner-data, each able to read the job's data under its own directory
 * (Worker.DataCheck, which loads it as the job will); the owner's and the
 * middle's layers. Any failure names the owner. Called without c->mu.
 * 0 or rep filled. */
static int check_owners(coord *c, Splitchain__SubmitRequest *r, const sc_model_config *mc,
			sc_rpc_reply *rep)
{
	int K = r->owner_layers ? (int)r->owner_layers : 1, L = mc->n_layer;

	if (r->n_owners > 16) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT, "%zu owners: at most 16",
				 r->n_owners);
		return 1;
	}
	if (r->fedavg_every > 1 && r->n_owners < 2) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT,
				 "fedavg_every %u averages several owners: the job has %zu",
				 r->fedavg_every, r->n_owners);
		return 1;
	}
	if (r->n_owners > 1 && r->train && r->train->wire != 0) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT,
				 "several owners train over an fp32 wire only (--wire fp32)");
		return 1;
	}
	for (size_t i = 0; i < r->n_owners; i++)
		for (size_t k = 0; k < i; k++)
			if (!strcmp(r->owners[i], r->owners[k])) {
				sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT,
						 "--owner names '%s' twice", r->owners[i]);
				return 1;
			}
	if (nonempty(r->split) || r->n_workers) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT,
				 "--owner places the job itself: not with --split or --workers");
		return 1;
	}
	if (r->stages < 1 || 2 * K + (int)r->stages > L) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT,
				 "the owner holds %d block(s) at each end of the model's %d: %d "
				 "left for %u middle stage(s) (need at least one each)",
				 K, L, L - 2 * K > 0 ? L - 2 * K : 0, r->stages);
		return 1;
	}
	r->owner_layers = (uint32_t)K;
	for (size_t i = 0; i < r->n_owners; i++) {
		const char *name = r->owners[i];
		char control[256] = "", secret[SC_TOKEN_MAX] = "";
		int64_t now = coord_now_ms(), found = 0, owner = 0, alive = 0;
		pthread_mutex_lock(&c->mu);
		for (int k = 0; k < c->nworkers && !found; k++) {
			live_worker *w = &c->workers[k];
			if (strcmp(w->name, name))
				continue;
			found = 1;
			owner = w->data_owner;
			alive = w->last_seen_ms > 0 && now - w->last_seen_ms <= c->lost_after_ms;
			snprintf(control, sizeof(control), "%s", w->control_addr);
			snprintf(secret, sizeof(secret), "%s", w->secret);
		}
		pthread_mutex_unlock(&c->mu);
		if (!found || !owner || !alive) {
			sc_rpc_reply_err(
			    rep,
			    !found   ? SC_STATUS_NOT_FOUND
			    : !owner ? SC_STATUS_INVALID_ARGUMENT
				     : SC_STATUS_UNAVAILABLE,
			    !found   ? "owner '%s': no worker of that name has registered"
			    : !owner ? "owner '%s' is not a data owner (start it with "
				       "--owner-data DIR)"
				     : "owner '%s' is not reachable now (lost): its data "
				       "lives nowhere else",
			    name);
			return 1;
		}
		/* Ask the owner to read the data as the job will. */
		Splitchain__OwnerData od = SPLITCHAIN__OWNER_DATA__INIT;
		Splitchain__DataCheckRequest q = SPLITCHAIN__DATA_CHECK_REQUEST__INIT;
		Splitchain__DataCheckReply *a = NULL;
		sc_rpc_client *cl = NULL;
		char msg[1024];
		int status = 0;
		coord_owner_data(r, &od);
		q.data = &od;
		q.model_path = r->model_path;
		q.model = r->model;
		q.train = r->train;
		sc_err rc = sc_rpc_client_open(&cl, control);
		if (!rc)
			rc = sc_rpc_client_set_auth(cl, secret, strlen(secret));
		if (!rc)
			rc = sc_rpc_call_pb(cl, "Worker.DataCheck", &q.base,
					    &splitchain__data_check_reply__descriptor, 600000,
					    &status, msg, sizeof(msg), (ProtobufCMessage **)&a);
		sc_rpc_client_close(cl);
		if (rc || status != SC_STATUS_OK) {
			sc_rpc_reply_err(rep,
					 rc ? SC_STATUS_UNAVAILABLE
					 : status == SC_STATUS_NOT_FOUND
					     ? SC_STATUS_FAILED_PRECONDITION
					     : status,
					 "owner '%s': %s", name, rc ? sc_err_detail() : msg);
			return 1;
		}
		if (a)
			splitchain__data_check_reply__free_unpacked(a, NULL);
	}
	return 0;
}

/* Checks a submission against its model; resolves r's LoRA targets given
 * by name for the model's family into r->lora->targets. */
static int check_submit(coord *c, Splitchain__SubmitRequest *r, sc_model_config *mc,
			sc_rpc_reply *rep)
{
	struct stat st;
	sc_lora_config lc;
	sc_train_config tc;

	if (!r->lora || !r->train || !nonempty(r->model_path) || !nonempty(r->data_path)) {
		sc_rpc_reply_err(
		    rep, SC_STATUS_INVALID_ARGUMENT,
		    "a job needs a model path, a data path, LoRA and training settings");
		return 1;
	}
	/* A registered model's configuration is the registry's copy, and its
	 * weights were checked when it was registered. */
	if (coord_model_config(c, r->model, r->model_path, mc)) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT, "model: %s", sc_err_detail());
		return 1;
	}
	sc_weights *w = NULL;
	if (!nonempty(r->model) && sc_weights_open(&w, r->model_path)) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT, "model weights: %s",
				 sc_err_detail());
		return 1;
	}
	sc_weights_close(w);
	/* A data owner's data is its own: the coordinator never opens it. */
	if (!r->n_owners && (stat(r->data_path, &st) != 0 || !S_ISREG(st.st_mode))) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT, "data file %s not found",
				 r->data_path);
		return 1;
	}
	if (r->n_owners && check_owners(c, r, mc, rep))
		return 1;
	if (!r->n_owners && (r->stages < 1 || (int)r->stages > mc->n_layer)) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT,
				 "%u stages for a model of %d layers: need 1..%d", r->stages,
				 mc->n_layer, mc->n_layer);
		return 1;
	}
	if (nonempty(r->split)) {       /* the planner's cuts, overridden */
		int bounds[257], n = 0; /* MAX_STAGES (coord_run.h) + 1 */
		if (sc_parse_split(r->split, bounds, 256, &n)) {
			sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT, "--split: %s",
					 sc_err_detail());
			return 1;
		}
		if (n != (int)r->stages || bounds[n] != mc->n_layer) {
			sc_rpc_reply_err(
			    rep, SC_STATUS_INVALID_ARGUMENT,
			    "--split '%s' gives %d stages over layers 0-%d; the job has "
			    "%u stages and the model %d layers (0-%d)",
			    r->split, n, bounds[n] - 1, r->stages, mc->n_layer, mc->n_layer - 1);
			return 1;
		}
	}
	if (r->n_workers && r->n_workers != r->stages) { /* the planner's workers, overridden */
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT,
				 "--workers names %zu workers for %u stages", r->n_workers,
				 r->stages);
		return 1;
	}
	for (size_t i = 0; i < r->n_workers; i++) {
		if (!nonempty(r->workers[i]) || strlen(r->workers[i]) >= 128) {
			sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT,
					 "--workers: a name of 1 to 127 characters");
			return 1;
		}
		for (size_t k = 0; k < i; k++)
			if (!strcmp(r->workers[k], r->workers[i])) {
				sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT,
						 "--workers names '%s' twice", r->workers[i]);
				return 1;
			}
	}
	if (r->checkpoint_every < 1) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT,
				 "checkpoint interval must be >= 1");
		return 1;
	}
	if (!(r->eval_split >= 0 && r->eval_split <= 0.5) ||
	    (r->eval_split > 0 && nonempty(r->eval_data_path))) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT,
				 "eval split %g: want 0..0.5, and not with an eval data file",
				 r->eval_split);
		return 1;
	}
	if (!r->n_owners && nonempty(r->eval_data_path) &&
	    (stat(r->eval_data_path, &st) != 0 || !S_ISREG(st.st_mode))) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT, "eval data file %s not found",
				 r->eval_data_path);
		return 1;
	}
	/* Targets by name are resolved for the model's family; the request then
	 * carries the mask and the resolved names (m_submit stores it so). */
	if (nonempty(r->lora->target_names) &&
	    sc_lora_parse_targets(&r->lora->targets, mc, r->lora->target_names)) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT, "%s", sc_err_detail());
		return 1;
	}
	lc =
	    (sc_lora_config){ (int)r->lora->rank, r->lora->alpha, r->lora->targets, r->lora->seed };
	sc_wire_train_config(&tc, r->train);
	if (sc_lora_config_validate(&lc, mc) || sc_train_config_validate(&tc)) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT, "%s", sc_err_detail());
		return 1;
	}
	/* The frozen base as every stage will hold it: the request then says
	 * it (a directory quantized on disk, its own format). */
	sc_model_config base = *mc;
	if (sc_train_base_format(&base, &tc)) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT, "model: %s", sc_err_detail());
		return 1;
	}
	sc_train_base_of(&tc, &base);
	r->train->base_quant = (uint32_t)tc.base_quant;
	r->train->double_quant = tc.double_quant != 0;
	r->train->precision = (uint32_t)tc.precision;
	if (tc.T > mc->n_positions || tc.steps < 1 || r->train->steps > 100000000 ||
	    r->train->batch > 65536 || r->train->micro_batches > 65536) {
		sc_rpc_reply_err(
		    rep, SC_STATUS_INVALID_ARGUMENT,
		    "sizes out of range: steps %u (>= 1), sequence %u (<= %d positions)",
		    r->train->steps, r->train->seq, mc->n_positions);
		return 1;
	}
	/* A job that cannot fit the workers' memory is refused now, with the
	 * numbers, not started to be killed for memory. */
	sc_err fit = coord_fit_check(c, r, mc, &tc);
	if (fit != SC_OK) {
		sc_rpc_reply_err(rep,
				 fit == SC_ERANGE   ? SC_STATUS_RESOURCE_EXHAUSTED
				 : fit == SC_ENOENT ? SC_STATUS_NOT_FOUND
						    : SC_STATUS_INVALID_ARGUMENT,
				 "%s", sc_err_detail());
		return 1;
	}
	return 0;
}

/* Puts *field (a path of r, malloc'd by protobuf-c's default allocator)
 * through the roots' policy, replacing it with its real path. 0, or 1 with
 * rep filled and the refusal recorded. */
static int check_path(coord *c, enum coord_root root, const char *what, char **field,
		      sc_rpc_reply *rep)
{
	char real[PATH_MAX], *copy;
	if (coord_auth_path(c->auth, root, what, *field, real)) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT, "%s", sc_err_detail());
		coord_auth_deny(c->auth, 0, "user %s: %s", sc_rpc_caller()->name, sc_err_detail());
		return 1;
	}
	if (!(copy = strdup(real))) {
		sc_rpc_reply_err(rep, SC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		return 1;
	}
	if (*field != protobuf_c_empty_string)
		free(*field);
	*field = copy;
	return 0;
}

/* The files a job names, each under its root (--model-root, --data-root):
 * a registered model's come from the registry, a data owner's job's data
 * lies on the owner. */
static int check_paths(coord *c, Splitchain__SubmitRequest *r, sc_rpc_reply *rep)
{
	if (!nonempty(r->model) && check_path(c, COORD_MODEL_ROOT, "model", &r->model_path, rep))
		return 1;
	if (r->n_owners)
		return 0;
	return check_path(c, COORD_DATA_ROOT, "data file", &r->data_path, rep) ||
	       (nonempty(r->eval_data_path) &&
		check_path(c, COORD_DATA_ROOT, "eval data file", &r->eval_data_path, rep)) ||
	       (nonempty(r->tokenizer_path) &&
		check_path(c, COORD_MODEL_ROOT, "tokenizer", &r->tokenizer_path, rep));
}

static void m_submit(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	coord *c = arg;
	Splitchain__SubmitRequest *r;
	Splitchain__SubmitReply out = SPLITCHAIN__SUBMIT_REPLY__INIT;
	sc_model_config mc;
	sc_db_job job = { 0 };
	uint8_t *spec = NULL;
	size_t spec_len;
	int64_t id;
	int quota = 0;

	if (sc_rpc_unpack(&splitchain__submit_request__descriptor, req, len,
			  (ProtobufCMessage **)&r, rep))
		return;
	if (check_paths(c, r, rep) || coord_models_resolve(c, r, rep) ||
	    check_submit(c, r, &mc, rep) || coord_auth_job_quota(c->auth, rep))
		goto out;
	quota = 1; /* counted: recorded (or refused) before the next is counted */
	/* The request as resolved (targets as a mask and by name): the job
	 * resumes from it. The names are ours only while packing. */
	char names[256], *given = r->lora->target_names;
	sc_lora_targets_string(names, sizeof(names), &mc, r->lora->targets);
	r->lora->target_names = names;
	spec_len = protobuf_c_message_get_packed_size(&r->base);
	spec = malloc(spec_len ? spec_len : 1);
	if (spec)
		protobuf_c_message_pack(&r->base, spec);
	r->lora->target_names = given;
	if (!spec) {
		sc_rpc_reply_err(rep, SC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	job.name = r->name ? r->name : "";
	job.model_path = r->model_path;
	job.data_path = r->data_path;
	job.spec = spec;
	job.spec_len = spec_len;
	job.stages = r->stages;
	job.steps = r->train->steps;
	job.base_quant = sc_base_quant_name((int)r->train->base_quant);
	job.double_quant = r->train->double_quant;
	job.precision = sc_precision_name((int)r->train->precision);
	job.owner_id = coord_auth_owner();
	if (sc_db_job_insert(c->db, &job, &id)) {
		sc_rpc_reply_err(rep, SC_STATUS_INTERNAL, "database: %s", sc_err_detail());
		goto out;
	}
	sc_db_event(c->db, id, 0, SC_LOG_INFO, "job_submitted",
		    "%u steps of %ux%ux%u tokens on %u stages", r->train->steps, r->train->batch,
		    r->train->seq, r->train->micro_batches, r->stages);
	pthread_mutex_lock(&c->mu);
	pthread_cond_broadcast(&c->wake);
	pthread_mutex_unlock(&c->mu);
	out.job_id = (uint64_t)id;
	sc_rpc_reply_pb(rep, &out.base);
out:
	if (quota)
		coord_auth_job_quota_done(c->auth);
	free(spec);
	splitchain__submit_request__free_unpacked(r, NULL);
}

/* A job's newest placement as reply fields; release with view_free. */
typedef struct placement_view {
	Splitchain__SubmitRequest *spec; /* decoded from the job record */
	sc_db_stage *stages;             /* from the database; the strings live here */
	Splitchain__StageInfo *si;       /* (n) */
	Splitchain__StageInfo **sp;      /* (n) pointers into si */
	char (*tickets)[SC_TOKEN_MAX];   /* (n) generation tickets (Status only) */
	char **tp;                       /* (n) pointers into tickets */
	char owner[SC_USER_NAME_MAX + 1];
} placement_view;

static void view_free(placement_view *v)
{
	if (v->spec)
		splitchain__submit_request__free_unpacked(v->spec, NULL);
	free(v->stages);
	free(v->si);
	free(v->sp);
	free(v->tickets);
	free(v->tp);
}

/* Fills info from a job record, its live progress and its newest placement
 * (kept in *v). Strings borrow job and *v, which must outlive info. */
static void job_info(coord *c, const sc_db_job *job, Splitchain__JobInfo *info, placement_view *v)
{
	live_job *lj;
	uint32_t version;
	int n = 0;

	splitchain__job_info__init(info);
	memset(v, 0, sizeof(*v));
	info->job_id = (uint64_t)job->id;
	info->name = (char *)job->name;
	info->state = (char *)sc_job_state_name(job->state);
	info->step = job->step_done;
	info->steps = job->steps;
	info->loss = isnan(job->last_loss) ? 0 : job->last_loss;
	info->error = (char *)job->error;
	info->model_path = (char *)job->model_path;
	info->stages = job->stages;
	info->created_unix_ms = job->created_ms;
	if (job->owner_id)
		sc_db_user_name(c->db, job->owner_id, v->owner, sizeof(v->owner));
	info->owner = v->owner;
	v->spec = splitchain__submit_request__unpack(NULL, job->spec_len, job->spec);
	info->spec = v->spec; /* NULL if the stored bytes do not decode: sent without it */
	pthread_mutex_lock(&c->mu);
	lj = coord_live_job(c, job->id);
	if (lj && !lj->done) {
		info->step = lj->step;
		info->loss = lj->loss;
		info->tokens_per_s = lj->tokens_per_s;
		info->eta_s = lj->step_s * (lj->steps - lj->step);
		if (lj->running) {
			info->since_step_s = (double)(coord_mono_ms() - lj->progress_ms) / 1000.0;
			info->stall_after_s = (double)coord_stall_limit_ms(c, lj) / 1000.0;
		}
	}
	pthread_mutex_unlock(&c->mu);
	sc_db_metric_latest_eval(c->db, job->id, &info->eval_step, &info->eval_loss);
	if (!info->tokens_per_s) {
		sc_db_metric m;
		if (sc_db_metric_latest(c->db, job->id, &m) == SC_OK)
			info->tokens_per_s = m.tokens_per_s;
	}
	if (sc_db_placement_latest(c->db, job->id, &version, &v->stages, &n) != SC_OK || n < 1)
		return;
	v->si = calloc((size_t)n, sizeof(*v->si));
	v->sp = calloc((size_t)n, sizeof(*v->sp));
	if (!v->si || !v->sp)
		return; /* the reply goes out without its placement */
	for (int i = 0; i < n; i++) {
		const sc_db_stage *st = &v->stages[i];
		splitchain__stage_info__init(&v->si[i]);
		v->si[i].stage = st->stage;
		v->si[i].worker_id = (uint64_t)st->worker_id;
		v->si[i].worker_name = (char *)(st->worker_name ? st->worker_name : "");
		v->si[i].first_layer = st->first_layer;
		v->si[i].last_layer = st->last_layer;
		v->si[i].tail_first_layer = st->tail_first_layer;
		v->si[i].tail_last_layer = st->tail_last_layer;
		v->si[i].layer_quant = (char *)(st->layer_quant ? st->layer_quant : "");
		v->si[i].quant_reason = (char *)(st->quant_reason ? st->quant_reason : "");
		v->sp[i] = &v->si[i];
	}
	info->n_placement = (size_t)n;
	info->placement = v->sp;
}

/* Adds to info (of job, filled by job_info into v) the generation tickets
 * of its placement's workers: for its owner or an admin (Status). */
static void gen_tickets(coord *c, Splitchain__JobInfo *info, placement_view *v)
{
	size_t n = info->n_placement;
	const char *model = v->spec && v->spec->model ? v->spec->model : "";
	char secret[SC_TOKEN_MAX];

	if (!n || !(v->tickets = calloc(n, sizeof(*v->tickets))) ||
	    !(v->tp = calloc(n, sizeof(*v->tp))))
		return;
	for (size_t i = 0; i < n; i++) {
		live_worker *lw;
		secret[0] = '\0';
		pthread_mutex_lock(&c->mu);
		if ((lw = coord_worker(c, (int64_t)info->placement[i]->worker_id)))
			snprintf(secret, sizeof(secret), "%s", lw->secret);
		pthread_mutex_unlock(&c->mu);
		if (secret[0])
			sc_token_gen_ticket(secret, info->model_path, model, v->tickets[i]);
		v->tp[i] = v->tickets[i];
	}
	info->n_gen_tickets = n;
	info->gen_tickets = v->tp;
}

/* Reads the JobRef of a request and its job record; 0 or fills rep. */
static int find_job(coord *c, const uint8_t *req, size_t len, sc_rpc_reply *rep, sc_db_job **job)
{
	Splitchain__JobRef *r;
	sc_err rc;
	if (sc_rpc_unpack(&splitchain__job_ref__descriptor, req, len, (ProtobufCMessage **)&r, rep))
		return 1;
	rc = sc_db_job_get(c->db, (int64_t)r->job_id, job);
	if (rc == SC_ENOENT)
		sc_rpc_reply_err(rep, SC_STATUS_NOT_FOUND, "no job %llu (see 'splitchain jobs')",
				 (unsigned long long)r->job_id);
	else if (rc)
		sc_rpc_reply_err(rep, SC_STATUS_INTERNAL, "database: %s", sc_err_detail());
	else if (!coord_auth_job(c->auth, (*job)->id, (*job)->owner_id, rep)) {
		free(*job);
		*job = NULL;
		rc = SC_EINVAL;
	}
	splitchain__job_ref__free_unpacked(r, NULL);
	return rc != SC_OK;
}

static void reply_job(coord *c, const sc_db_job *job, sc_rpc_reply *rep)
{
	Splitchain__JobInfo info;
	placement_view v;
	job_info(c, job, &info, &v);
	sc_rpc_reply_pb(rep, &info.base);
	view_free(&v);
}

static void m_status(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	coord *c = arg;
	sc_db_job *job;
	Splitchain__JobInfo info;
	placement_view v;
	if (find_job(c, req, len, rep, &job))
		return;
	job_info(c, job, &info, &v);
	gen_tickets(c, &info, &v);
	sc_rpc_reply_pb(rep, &info.base);
	view_free(&v);
	free(job);
}

static void m_cancel(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	coord *c = arg;
	sc_db_job *job, *now = NULL;
	live_job *lj;
	int live;

	if (find_job(c, req, len, rep, &job))
		return;
	pthread_mutex_lock(&c->mu);
	lj = coord_live_job(c, job->id);
	live = lj && !lj->done;
	if (live)
		atomic_store(&lj->cancel, 1); /* the runner stops at the next step boundary */
	pthread_mutex_unlock(&c->mu);
	if (!live && (job->state == SC_JOB_QUEUED || job->state == SC_JOB_RUNNING)) {
		if (sc_db_job_set_state(c->db, job->id, SC_JOB_CANCELLED, NULL)) {
			sc_rpc_reply_err(rep, SC_STATUS_INTERNAL, "database: %s", sc_err_detail());
			free(job);
			return;
		}
		sc_db_event(c->db, job->id, 0, SC_LOG_INFO, "job_cancelled",
			    "cancelled while queued");
	} else if (!live) {
		sc_rpc_reply_err(rep, SC_STATUS_FAILED_PRECONDITION, "job %lld is already %s",
				 (long long)job->id, sc_job_state_name(job->state));
		free(job);
		return;
	}
	if (sc_db_job_get(c->db, job->id, &now) == SC_OK) {
		reply_job(c, now, rep);
		free(now);
	} else {
		reply_job(c, job, rep);
	}
	free(job);
}

static void m_jobs(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	coord *c = arg;
	Splitchain__JobsReply out = SPLITCHAIN__JOBS_REPLY__INIT;
	Splitchain__JobInfo *infos = NULL, **ptrs = NULL;
	placement_view *views = NULL;
	sc_db_job *jobs = NULL;
	int n = 0;

	if (sc_db_jobs_list(c->db, &jobs, &n)) {
		sc_rpc_reply_err(rep, SC_STATUS_INTERNAL, "database: %s", sc_err_detail());
		return;
	}
	/* A user sees their own jobs; an admin every job. */
	const sc_rpc_principal *who = sc_rpc_caller();
	if (who->kind == SC_PRINCIPAL_USER && !who->admin) {
		int k = 0;
		for (int i = 0; i < n; i++)
			if (jobs[i].owner_id == who->id)
				jobs[k++] = jobs[i];
		n = k;
	}
	infos = calloc((size_t)n + 1, sizeof(*infos));
	ptrs = calloc((size_t)n + 1, sizeof(*ptrs));
	views = calloc((size_t)n + 1, sizeof(*views));
	if (!infos || !ptrs || !views) {
		sc_rpc_reply_err(rep, SC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	for (int i = 0; i < n; i++) {
		job_info(c, &jobs[i], &infos[i], &views[i]);
		ptrs[i] = &infos[i];
	}
	out.n_jobs = (size_t)n;
	out.jobs = ptrs;
	sc_rpc_reply_pb(rep, &out.base);
out:
	for (int i = 0; views && i < n; i++)
		view_free(&views[i]);
	free(views);
	free(ptrs);
	free(infos);
	free(jobs);
	(void)req;
	(void)len;
}

static void m_gen_tickets(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	coord *c = arg;
	Splitchain__GenTicketsRequest *r;
	Splitchain__GenTicketsReply out = SPLITCHAIN__GEN_TICKETS_REPLY__INIT;
	char real[PATH_MAX], secret[SC_TOKEN_MAX], (*t)[SC_TOKEN_MAX] = NULL, **tp = NULL;
	size_t n;

	if (sc_rpc_unpack(&splitchain__gen_tickets_request__descriptor, req, len,
			  (ProtobufCMessage **)&r, rep))
		return;
	n = r->n_worker_addrs;
	if (!nonempty(r->model) &&
	    coord_auth_path(c->auth, COORD_MODEL_ROOT, "model", r->model_path, real)) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT, "%s", sc_err_detail());
		coord_auth_deny(c->auth, 0, "user %s: %s", sc_rpc_caller()->name, sc_err_detail());
		goto out;
	}
	if (n > 256 || !(t = calloc(n + 1, sizeof(*t))) || !(tp = calloc(n + 1, sizeof(*tp)))) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT, "at most 256 workers");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		secret[0] = '\0';
		pthread_mutex_lock(&c->mu);
		for (int k = 0; k < c->nworkers && !secret[0]; k++)
			if (!strcmp(c->workers[k].control_addr, r->worker_addrs[i]))
				snprintf(secret, sizeof(secret), "%s", c->workers[k].secret);
		pthread_mutex_unlock(&c->mu);
		if (secret[0])
			sc_token_gen_ticket(secret, r->model_path, r->model, t[i]);
		tp[i] = t[i];
	}
	out.n_tickets = n;
	out.tickets = tp;
	sc_rpc_reply_pb(rep, &out.base);
out:
	free(t);
	free(tp);
	splitchain__gen_tickets_request__free_unpacked(r, NULL);
}

static void m_workers(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	coord *c = arg;
	Splitchain__WorkersReply out = SPLITCHAIN__WORKERS_REPLY__INIT;
	Splitchain__WorkerInfo *infos = NULL, **ptrs = NULL;
	Splitchain__JobMemory *jm = NULL, **jmp = NULL;
	sc_db_worker *ws = NULL;
	int n = 0;

	if (sc_db_workers_list(c->db, &ws, &n)) {
		sc_rpc_reply_err(rep, SC_STATUS_INTERNAL, "database: %s", sc_err_detail());
		return;
	}
	infos = calloc((size_t)n + 1, sizeof(*infos));
	ptrs = calloc((size_t)n + 1, sizeof(*ptrs));
	jm = calloc((size_t)n * COORD_MAX_SLOTS + 1, sizeof(*jm));
	jmp = calloc((size_t)n * COORD_MAX_SLOTS + 1, sizeof(*jmp));
	if (!infos || !ptrs || !jm || !jmp) {
		sc_rpc_reply_err(rep, SC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	for (int i = 0; i < n; i++) {
		splitchain__worker_info__init(&infos[i]);
		infos[i].worker_id = (uint64_t)ws[i].id;
		infos[i].name = (char *)ws[i].name;
		infos[i].device = (char *)ws[i].device;
		infos[i].state = (char *)sc_worker_state_name(ws[i].state);
		infos[i].gflops = ws[i].gflops;
		infos[i].memory_bytes = ws[i].memory_bytes;
		infos[i].memory_reserve_bytes = ws[i].memory_reserve_bytes;
		infos[i].data_owner = ws[i].data_owner;
		infos[i].last_seen_unix_ms = ws[i].last_seen_ms;
		infos[i].control_addr = (char *)ws[i].control_addr;
		infos[i].job_slots = ws[i].job_slots > 0 ? (uint32_t)ws[i].job_slots : 1;
		ptrs[i] = &infos[i];
	}
	/* Memory as the workers' last heartbeats said, while they are live. */
	pthread_mutex_lock(&c->mu);
	for (int i = 0; i < n; i++) {
		const live_worker *lw = coord_worker(c, ws[i].id);
		Splitchain__JobMemory **first = jmp + (size_t)i * COORD_MAX_SLOTS;
		if (!lw || lw->last_seen_ms <= 0)
			continue;
		infos[i].base_bytes = lw->base_bytes;
		infos[i].jobs_memory = first;
		for (int k = 0; k < lw->n_slots; k++) {
			Splitchain__JobMemory *m = &jm[(size_t)i * COORD_MAX_SLOTS + k];
			if (!lw->slot[k].held_job)
				continue;
			splitchain__job_memory__init(m);
			m->job_id = (uint64_t)lw->slot[k].held_job;
			m->bytes = lw->slot[k].job_bytes;
			first[infos[i].n_jobs_memory++] = m;
		}
	}
	pthread_mutex_unlock(&c->mu);
	out.n_workers = (size_t)n;
	out.workers = ptrs;
	sc_rpc_reply_pb(rep, &out.base);
out:
	free(jmp);
	free(jm);
	free(ptrs);
	free(infos);
	free(ws);
	(void)req;
	(void)len;
}

static void m_export(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	coord *c = arg;
	Splitchain__ExportReply out = SPLITCHAIN__EXPORT_REPLY__INIT;
	Splitchain__LoraConfig lora = SPLITCHAIN__LORA_CONFIG__INIT;
	Splitchain__SubmitRequest *spec = NULL;
	char *cfg_text = NULL;
	size_t cfg_len;
	Splitchain__NamedTensor *nts = NULL, **ptrs = NULL;
	int64_t(*shapes)[2] = NULL;
	sc_db_checkpoint *ck = NULL;
	sc_model_config mc;
	sc_db_job *job;
	size_t k = 0;

	if (find_job(c, req, len, rep, &job))
		return;
	spec = splitchain__submit_request__unpack(NULL, job->spec_len, job->spec);
	/* A registered model's configuration is the registry's: its directory
	 * may be gone from the coordinator's disk. */
	if (!spec || !spec->lora ||
	    coord_model_config_text(c, spec->model, job->model_path, &cfg_text, &cfg_len) ||
	    sc_config_parse(&mc, cfg_text, cfg_len)) {
		sc_rpc_reply_err(rep, SC_STATUS_FAILED_PRECONDITION,
				 "job %lld's model or specification cannot be read",
				 (long long)job->id);
		goto out;
	}
	if (sc_db_checkpoint_latest(c->db, job->id, &ck)) {
		sc_rpc_reply_err(rep, SC_STATUS_FAILED_PRECONDITION,
				 "job %lld has no checkpoint yet (state %s, step %u): try again "
				 "after its first checkpoint",
				 (long long)job->id, sc_job_state_name(job->state), job->step_done);
		goto out;
	}
	nts = calloc((size_t)ck->n_tensors + 1, sizeof(*nts));
	ptrs = calloc((size_t)ck->n_tensors + 1, sizeof(*ptrs));
	shapes = calloc((size_t)ck->n_tensors + 1, sizeof(*shapes));
	if (!nts || !ptrs || !shapes) {
		sc_rpc_reply_err(rep, SC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	for (int i = 0; i < ck->n_tensors; i++) {
		const sc_db_tensor *t = &ck->tensors[i];
		if (t->kind != SC_TENSOR_LORA || t->ndim != 2)
			continue;
		coord_tensor_view(&nts[k], shapes[k], t);
		ptrs[k] = &nts[k];
		k++;
	}
	lora = *spec->lora;
	out.step = ck->step;
	out.lora = &lora;
	out.n_layer = (uint32_t)mc.n_layer;
	out.n_embd = (uint32_t)mc.n_embd;
	out.n_tensors = k;
	out.tensors = ptrs;
	out.model_path = (char *)job->model_path;
	out.model_config = cfg_text;
	sc_rpc_reply_pb(rep, &out.base);
out:
	free(cfg_text);
	free(shapes);
	free(ptrs);
	free(nts);
	free(ck);
	if (spec)
		splitchain__submit_request__free_unpacked(spec, NULL);
	free(job);
}

const sc_rpc_method coord_bulk_methods[] = {
	{ "Coordinator.FetchTensor", coord_m_fetch_tensor },
	{ NULL, NULL },
};

const char *const coord_idempotent[] = { "Coordinator.FetchTensor", NULL };

const sc_rpc_method coord_methods[] = {
	{ "Coordinator.Register", m_register },
	{ "Coordinator.Heartbeat", m_heartbeat },
	{ "Coordinator.Submit", m_submit },
	{ "Coordinator.Jobs", m_jobs },
	{ "Coordinator.Status", m_status },
	{ "Coordinator.Cancel", m_cancel },
	{ "Coordinator.Workers", m_workers },
	{ "Coordinator.Export", m_export },
	{ "Coordinator.Metrics", coord_m_metrics },
	{ "Coordinator.Echo", coord_m_echo },
	{ "Coordinator.ReportLinks", coord_m_report_links },
	{ "Coordinator.Links", coord_m_links },
	{ "Coordinator.ModelAdd", coord_m_model_add },
	{ "Coordinator.Models", coord_m_models },
	{ "Coordinator.ModelShow", coord_m_model_show },
	{ "Coordinator.ModelRemove", coord_m_model_remove },
	{ "Coordinator.FetchTensor", coord_m_fetch_tensor },
	{ "Coordinator.ReportCache", coord_m_report_cache },
	{ "Coordinator.TensorSources", coord_m_tensor_sources },
	{ "Coordinator.GenTickets", m_gen_tickets },
	{ NULL, NULL },
};
