/* gen.c — generation sessions: Worker.GenOpen makes a generation segment
 * (sc_segment_infer, with its layers' key/value caches) for a layer range
 * of a model and an adapter, Worker.GenStep runs new positions through it,
 * Worker.GenClose frees it. Sessions live beside the training jobs and
 * share their frozen weights when they run the same model's same layers
 * (worker_new_segment), and are freed when unused for their idle timeout
 * or when a new one needs the room. The session table is under worker.mu;
 * a session is built outside it (its weights may load for long) and
 * entered when ready. The device runs one segment call at a time
 * (WORKER_ON_DEVICE), so a generation step interleaves with the jobs'
 * steps call by call. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "deliver.h"
#include "sc_layer_quant.h"
#include "sc_log.h"
#include "sc_rpc_pb.h"
#include "sc_train.h"
#include "sc_wire.h"
#include "splitchain.pb-c.h"
#include "worker.h"

#define GEN_SESSIONS     4
#define GEN_IDLE_DEFAULT 300
#define GEN_MAX_ROWS     4096 /* positions per GenStep */

typedef struct gen_session {
	uint64_t id; /* 0: free */
	int opening; /* reserved by a GenOpen that is building it: seg not yet set */
	sc_segment *seg;
	sc_model_config mc;
	int first, last, chunk, P;
	int64_t used_ms, idle_ms;
	float *out;         /* (chunk, C) or (V) */
	uint8_t ticket[64]; /* the ticket that opened it (auth.h); zeros: the coordinator */
} gen_session;

static gen_session sessions[GEN_SESSIONS]; /* under worker.mu */

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void session_free(gen_session *s)
{
	sc_segment_free(s->seg);
	free(s->out);
	memset(s, 0, sizeof(*s));
}

/* Called with mu held: frees the sessions idle past their timeout. */
static void reap(int64_t now)
{
	for (int i = 0; i < GEN_SESSIONS; i++)
		if (sessions[i].id && !sessions[i].opening &&
		    now - sessions[i].used_ms > sessions[i].idle_ms) {
			sc_info("worker", "generation session %016" PRIx64 " idle: freed",
				sessions[i].id);
			session_free(&sessions[i]);
		}
}

static gen_session *find(uint64_t id)
{
	for (int i = 0; i < GEN_SESSIONS; i++)
		if (id && sessions[i].id == id && !sessions[i].opening)
			return &sessions[i];
	return NULL;
}

/* Session id for the caller: the coordinator, or the ticket that opened it. */
static gen_session *find_mine(uint64_t id)
{
	const sc_rpc_principal *who = sc_rpc_caller();
	gen_session *s = find(id);
	if (s && who->kind != SC_PRINCIPAL_COORDINATOR && who->kind != SC_PRINCIPAL_ANYONE &&
	    memcmp(who->proof, s->ticket, sizeof(s->ticket)))
		return NULL;
	return s;
}

const sc_segment *worker_gen_donor(worker *w, const sc_segment_spec *spec)
{
	for (int i = 0; i < GEN_SESSIONS; i++)
		if (sessions[i].id && !sessions[i].opening &&
		    sc_segment_can_share(sessions[i].seg, w->be, spec))
			return sessions[i].seg;
	return NULL;
}

void worker_gen_memory(const void **seen, int *n_seen, int cap, uint64_t *base, uint64_t *own)
{
	for (int i = 0; i < GEN_SESSIONS; i++)
		if (sessions[i].id && !sessions[i].opening)
			worker_count_segment(sessions[i].seg, seen, n_seen, cap, base, own);
}

void worker_gen_free_all(void)
{
	for (int i = 0; i < GEN_SESSIONS; i++)
		if (sessions[i].id)
			session_free(&sessions[i]);
}

/* Builds session s from r; rep gets the refusal on failure. */
static int open_session(worker *w, gen_session *s, const Splitchain__GenOpenRequest *r,
			sc_rpc_reply *rep)
{
	char path[4096], fetch_url[WORKER_URL_MAX];
	sc_weights *wf = NULL;
	sc_adapter *ad = NULL;
	worker_model *wm = NULL;
	sc_err rc;

	/* A registered model: its configuration from the coordinator, its
	 * tensors from the cache or fetched, as for a training job. */
	snprintf(path, sizeof(path), "%s/config.json", r->model_path ? r->model_path : "");
	if (r->model && r->model[0]
		? (rc = worker_model_open(w->coord, worker_fetch_url(w, fetch_url), w->cache,
					  atomic_load(&w->worker_id), r->model, r->model_digest,
					  &s->mc, &wm))
		: (rc = sc_config_load(&s->mc, path))) {
		sc_rpc_reply_err(rep, worker_status_of(rc), "model: %s", sc_err_detail());
		return 1;
	}
	/* The frozen base as the job trained on it: a job's training segment
	 * on this worker, when there is one, is then shared (worker_base_donor). */
	sc_train_config tc;
	sc_wire_gen_base(&tc, r);
	if ((rc = sc_train_base_format(&s->mc, &tc)) ||
	    (rc = sc_layer_quant_apply(&s->mc, r->layer_quant))) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT, "frozen base: %s",
				 sc_err_detail());
		worker_model_close(wm);
		return 1;
	}
	if (r->first_layer >= r->last_layer || r->last_layer > (uint32_t)s->mc.n_layer ||
	    r->max_positions < 1 || r->max_positions > (uint32_t)s->mc.n_positions ||
	    r->chunk < 1 || r->chunk > r->max_positions || r->chunk > GEN_MAX_ROWS) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT,
				 "layers [%u, %u) of %d, %u positions (<= %d), chunk %u (1..%d)",
				 r->first_layer, r->last_layer, s->mc.n_layer, r->max_positions,
				 s->mc.n_positions, r->chunk, GEN_MAX_ROWS);
		worker_model_close(wm);
		return 1;
	}
	sc_lora_config lc = { .rank = 1, .alpha = 1, .targets = 1, .seed = 1 };
	if (r->lora)
		lc = (sc_lora_config){ .rank = (int)r->lora->rank,
				       .alpha = r->lora->alpha,
				       .targets = r->lora->targets,
				       .seed = r->lora->seed };
	if ((rc = sc_adapter_new(&ad, &lc, &s->mc)) ||
	    (r->lora && (rc = sc_wire_to_adapter(ad, (int)r->first_layer, (int)r->last_layer,
						 r->tensors, r->n_tensors, "adapter")))) {
		sc_rpc_reply_err(rep, worker_status_of(rc), "adapter: %s", sc_err_detail());
		sc_adapter_free(ad);
		worker_model_close(wm);
		return 1;
	}
	sc_segment_spec sp = { .model = s->mc,
			       .lora = lc,
			       .first = (int)r->first_layer,
			       .last = (int)r->last_layer,
			       .B = 1,
			       .T = (int)r->chunk,
			       .slots = 1,
			       .kv_positions = (int)r->max_positions };
	size_t out_floats =
	    sp.last == s->mc.n_layer ? (size_t)s->mc.vocab_size : (size_t)r->chunk * s->mc.n_embd;
	int shared;
	if ((rc = worker_new_segment(w, &sp, wm, r->model_path, &wf, &s->seg, &shared)) ||
	    (rc = WORKER_ON_DEVICE(w, sc_segment_set_lora(s->seg, ad))) ||
	    !(s->out = malloc(out_floats * sizeof(float)))) {
		sc_rpc_reply_err(rep, rc ? worker_status_of(rc) : SC_STATUS_RESOURCE_EXHAUSTED,
				 "generation segment: %s", rc ? sc_err_detail() : "out of memory");
		sc_weights_close(wf);
		sc_adapter_free(ad);
		session_free(s);
		worker_model_close(wm);
		return 1;
	}
	sc_weights_close(wf);
	sc_adapter_free(ad);
	if (wm) {
		int cached, fetched, peers;
		uint64_t bytes, peer_bytes;
		worker_model_stats(wm, &cached, &fetched, &bytes, &peers, &peer_bytes);
		if (fetched) /* so that peers may fetch from us */
			worker_report_cache(w->coord, w->cache, atomic_load(&w->worker_id));
	}
	worker_model_close(wm);
	s->id = r->session;
	s->first = sp.first;
	s->last = sp.last;
	s->chunk = sp.T;
	s->P = sp.kv_positions;
	s->idle_ms = 1000LL * (r->idle_timeout_s ? r->idle_timeout_s : GEN_IDLE_DEFAULT);
	s->used_ms = mono_ms();
	return 0;
}

void worker_gen_open(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	worker *w = arg;
	Splitchain__GenOpenRequest *r = NULL;
	Splitchain__Empty out = SPLITCHAIN__EMPTY__INIT;
	gen_session *s = NULL;

	if (sc_rpc_unpack(&splitchain__gen_open_request__descriptor, req, len,
			  (ProtobufCMessage **)&r, rep))
		return;
	if (!worker_auth_gen_allowed(r->model_path, r->model)) {
		sc_rpc_reply_err(rep, SC_STATUS_PERMISSION_DENIED,
				 "the generation ticket does not cover this model: ask the "
				 "coordinator for the job's tickets (splitchain generate --job)");
		worker_note(w, "refused a Worker.GenOpen whose ticket does not cover its model");
		protobuf_c_message_free_unpacked(&r->base, NULL);
		return;
	}
	pthread_mutex_lock(&w->mu);
	reap(mono_ms());
	int taken = 0;
	for (int i = 0; i < GEN_SESSIONS; i++)
		taken |= r->session && sessions[i].id == r->session;
	if (!r->session || taken) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT,
				 "session id %016" PRIx64 " is zero or already open", r->session);
		goto out;
	}
	for (int i = 0; i < GEN_SESSIONS && !s; i++)
		if (!sessions[i].id)
			s = &sessions[i];
	if (!s) {
		sc_rpc_reply_err(
		    rep, SC_STATUS_RESOURCE_EXHAUSTED,
		    "%d generation sessions are open on this worker; close one or wait "
		    "for its idle timeout",
		    GEN_SESSIONS);
		goto out;
	}
	s->id = r->session; /* reserved while it is built, without mu */
	s->opening = 1;
	pthread_mutex_unlock(&w->mu);
	gen_session built;
	memset(&built, 0, sizeof(built));
	int failed = open_session(w, &built, r, rep);
	pthread_mutex_lock(&w->mu);
	if (failed) {
		memset(s, 0, sizeof(*s));
		goto out;
	}
	*s = built;
	if (sc_rpc_caller()->kind == SC_PRINCIPAL_GENERATOR)
		memcpy(s->ticket, sc_rpc_caller()->proof, sizeof(s->ticket));
	sc_info("worker", "generation session %016" PRIx64 ": layers [%d, %d), %d positions%s",
		s->id, s->first, s->last, s->P,
		sc_segment_base_users(s->seg) > 1 ? ", weights shared" : "");
	sc_rpc_reply_pb(rep, &out.base);
out:
	pthread_mutex_unlock(&w->mu);
	protobuf_c_message_free_unpacked(&r->base, NULL);
}

void worker_gen_step(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	worker *w = arg;
	Splitchain__GenStepRequest *r = NULL;
	Splitchain__GenStepReply out = SPLITCHAIN__GEN_STEP_REPLY__INIT;
	gen_session *s;
	sc_err rc;

	if (sc_rpc_unpack(&splitchain__gen_step_request__descriptor, req, len,
			  (ProtobufCMessage **)&r, rep))
		return;
	pthread_mutex_lock(&w->mu);
	reap(mono_ms());
	if (!(s = find_mine(r->session))) {
		sc_rpc_reply_err(rep, SC_STATUS_NOT_FOUND,
				 "no generation session %016" PRIx64 " (closed, or idle too long)",
				 r->session);
		goto out;
	}
	int first = s->first == 0, last = s->last == s->mc.n_layer, C = s->mc.n_embd;
	size_t want = first ? (size_t)r->n * sizeof(int32_t) : (size_t)r->n * C * sizeof(float);
	const ProtobufCBinaryData *in = first ? &r->ids : &r->hidden;
	if (r->n < 1 || r->n > (uint32_t)s->chunk || (uint64_t)r->pos0 + r->n > (uint64_t)s->P ||
	    in->len != want) {
		sc_rpc_reply_err(
		    rep, SC_STATUS_INVALID_ARGUMENT,
		    "positions %u + %u (chunk %d, cache %d), %zu input bytes (want %zu)", r->pos0,
		    r->n, s->chunk, s->P, in->len, want);
		goto out;
	}
	/* the bytes may be unaligned inside the message: copy them */
	void *buf = malloc(want);
	if (!buf) {
		sc_rpc_reply_err(rep, SC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	memcpy(buf, in->data, want);
	rc = WORKER_ON_DEVICE(w, sc_segment_infer(s->seg, (int)r->pos0, (int)r->n, buf, s->out));
	free(buf);
	if (rc) {
		sc_rpc_reply_err(rep, worker_status_of(rc), "generation: %s", sc_err_detail());
		goto out;
	}
	s->used_ms = mono_ms();
	ProtobufCBinaryData o = { .data = (uint8_t *)s->out,
				  .len = last ? (size_t)s->mc.vocab_size * sizeof(float)
					      : (size_t)r->n * C * sizeof(float) };
	if (last)
		out.logits = o;
	else
		out.hidden = o;
	sc_rpc_reply_pb(rep, &out.base);
out:
	pthread_mutex_unlock(&w->mu);
	protobuf_c_message_free_unpacked(&r->base, NULL);
}

void worker_gen_close(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	worker *w = arg;
	Splitchain__GenCloseRequest *r = NULL;
	Splitchain__Empty out = SPLITCHAIN__EMPTY__INIT;
	gen_session *s;

	if (sc_rpc_unpack(&splitchain__gen_close_request__descriptor, req, len,
			  (ProtobufCMessage **)&r, rep))
		return;
	pthread_mutex_lock(&w->mu);
	if ((s = find_mine(r->session)))
		session_free(s);
	pthread_mutex_unlock(&w->mu);
	sc_rpc_reply_pb(rep, &out.base); /* closing a closed session is no error */
	protobuf_c_message_free_unpacked(&r->base, NULL);
}
