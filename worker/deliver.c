/* deliver.c — a registered model's tensors on a worker: from the cache, or
 * fetched from the coordinator and checked (deliver.h). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "deliver.h"
#include "sc_log.h"
#include "sc_manifest.h"
#include "sc_rpc_pb.h"
#include "splitchain.pb-c.h"
#include "worker.h"

#define SHOW_TIMEOUT_MS  30000
#define FETCH_TIMEOUT_MS 60000
#define FETCH_TRIES      3
/* A chunk's reply is 4 MiB: resent only when its connection is lost, or
 * after this long (not after the 1 s of a small call, which over a slow
 * link would have the server send every chunk several times). */
#define CHUNK_RESEND_MS 30000

struct worker_model {
	sc_rpc_client *cl;
	sc_rpc_client *bulk; /* the coordinator's tensor listener; NULL: cl serves */
	char bulk_url[256];  /* its address, "" none */
	sc_tcache *cache;
	char name[128];
	sc_manifest mf;
	sc_st_tensor *ts;     /* (mf.n) handed out, by manifest index */
	sc_tcache_ref **refs; /* (mf.n) pins of the tensors handed out */
	int cached, fetched;
	uint64_t fetched_bytes;
	int broken;       /* a transfer broke (not a hash): worth assigning again */
	uint64_t self_id; /* our worker id for TensorSources, 0: no peers */
	int peer_fetched;
	uint64_t peer_bytes;
	struct peer_cl {
		char addr[256];
		sc_rpc_client *cl;
	} peers[DELIVER_MAX_PEERS]; /* clients of the peers fetched from, opened on use */
	int npeers;
};

sc_err worker_model_open(sc_rpc_client *cl, const char *bulk, sc_tcache *cache, uint64_t self_id,
			 const char *name, const char *digest, sc_model_config *mc,
			 worker_model **out)
{
	Splitchain__ModelRef req = SPLITCHAIN__MODEL_REF__INIT;
	Splitchain__ModelInfo *info = NULL;
	worker_model *m;
	char msg[512] = "";
	int status;
	sc_err rc;

	*out = NULL;
	if (!cache)
		return sc_errf(SC_EINVAL,
			       "model %s is registered with the coordinator and this worker has "
			       "no cache to fetch it into: start it with --cache DIR",
			       name);
	if (!(m = calloc(1, sizeof(*m))))
		return sc_errf(SC_ENOMEM, "out of memory");
	m->cl = cl;
	if (bulk && bulk[0] && !sc_rpc_client_open(&m->bulk, bulk)) {
		sc_rpc_client_set_resend(m->bulk, CHUNK_RESEND_MS);
		worker_auth_session(m->bulk);
		snprintf(m->bulk_url, sizeof(m->bulk_url), "%s", bulk);
	} else if (bulk && bulk[0]) {
		sc_warn("deliver", "model %s: tensors over the RPC connection: %s", name,
			sc_err_detail());
	}
	m->cache = cache;
	m->self_id = self_id;
	snprintf(m->name, sizeof(m->name), "%s", name);
	req.name = (char *)name;
	req.tensors = 1;
	if ((rc = sc_rpc_call_pb(cl, "Coordinator.ModelShow", &req.base,
				 &splitchain__model_info__descriptor, SHOW_TIMEOUT_MS, &status, msg,
				 sizeof(msg), (ProtobufCMessage **)&info)))
		goto fail;
	if (status != SC_STATUS_OK) {
		rc = sc_errf(status == SC_STATUS_NOT_FOUND ? SC_ENOENT : SC_EIO,
			     "model %s from the coordinator: %s: %s", name, sc_status_name(status),
			     msg);
		goto fail;
	}
	if (digest && digest[0] && strcmp(digest, info->digest) != 0) {
		rc = sc_errf(SC_EINVAL,
			     "model %s was registered again since the job was submitted (digest "
			     "%.16s, the job's %.16s)",
			     name, info->digest, digest);
		goto fail;
	}
	if ((rc = sc_config_parse(mc, info->config_json, strlen(info->config_json))))
		goto fail;
	m->ts = calloc(info->n_tensors + 1, sizeof(*m->ts));
	m->refs = calloc(info->n_tensors + 1, sizeof(*m->refs));
	m->mf.t = calloc(info->n_tensors + 1, sizeof(*m->mf.t));
	if (!m->ts || !m->refs || !m->mf.t) {
		rc = sc_errf(SC_ENOMEM, "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < info->n_tensors; i++) {
		const Splitchain__ModelTensor *t = info->tensors[i];
		sc_manifest_tensor *e = &m->mf.t[m->mf.n];
		if (!sc_sha256_hex_valid(t->sha256) || t->n_shape > SC_ST_MAX_DIMS ||
		    (i > 0 && strcmp(info->tensors[i - 1]->name, t->name) >= 0)) {
			rc = sc_errf(SC_EFORMAT,
				     "model %s: the coordinator's manifest entry '%s' "
				     "is malformed",
				     name, t->name);
			goto fail;
		}
		if ((rc = sc_dtype_parse(t->dtype, &e->dtype)))
			goto fail;
		if (!(e->name = strdup(t->name)) || !(e->file = strdup(t->file))) {
			free(e->name);
			rc = sc_errf(SC_ENOMEM, "out of memory");
			goto fail;
		}
		m->mf.n++;
		e->ndim = (int)t->n_shape;
		memcpy(e->shape, t->shape, t->n_shape * sizeof(int64_t));
		e->offset = t->offset;
		e->nbytes = t->nbytes;
		snprintf(e->sha256, sizeof(e->sha256), "%s", t->sha256);
		m->mf.bytes += t->nbytes;
	}
	splitchain__model_info__free_unpacked(info, NULL);
	*out = m;
	return SC_OK;
fail:
	if (info)
		splitchain__model_info__free_unpacked(info, NULL);
	worker_model_close(m);
	return rc;
}

/* One tensor's transfer: fetch threads take the next missing chunk. */
typedef struct transfer {
	sc_rpc_client *cl;
	const char *method; /* Coordinator.FetchTensor or Worker.FetchTensor */
	const char *from;   /* "the coordinator" or a peer's address, for errors */
	sc_tcache_fill *f;
	pthread_mutex_t mu; /* guards next, rc, detail */
	uint32_t next;
	sc_err rc;
	char detail[512];
	uint64_t bytes; /* fetched this time */
} transfer;

/* SPLITCHAIN_TEST_FETCH_DELAY_MS=D (tests only): every chunk is asked for
 * D ms late, so that a test can stop a worker in the middle of a transfer. */
static unsigned test_fetch_delay_ms(void)
{
	const char *v = getenv("SPLITCHAIN_TEST_FETCH_DELAY_MS");
	long d = v ? strtol(v, NULL, 10) : 0;
	return d > 0 && d < 60000 ? (unsigned)d : 0;
}

/* Fetches chunk i into the fill; SC_OK or an error with the detail set. */
static sc_err fetch_chunk(transfer *x, uint32_t i, uint64_t *got)
{
	Splitchain__FetchTensorRequest req = SPLITCHAIN__FETCH_TENSOR_REQUEST__INIT;
	Splitchain__FetchTensorReply *rep = NULL;
	uint64_t at = (uint64_t)i * x->f->chunk;
	uint32_t len =
	    (uint32_t)(x->f->nbytes - at < x->f->chunk ? x->f->nbytes - at : x->f->chunk);
	char msg[512] = "";
	int status = SC_STATUS_UNKNOWN;
	sc_err rc = SC_OK;

	req.sha256 = x->f->sha256;
	req.offset = at;
	req.length = len;
	if (test_fetch_delay_ms())
		usleep(1000u * test_fetch_delay_ms());
	for (int t = 0; t < FETCH_TRIES; t++) {
		if (t)
			usleep(200000u * (unsigned)t);
		rc = sc_rpc_call_pb(x->cl, x->method, &req.base,
				    &splitchain__fetch_tensor_reply__descriptor, FETCH_TIMEOUT_MS,
				    &status, msg, sizeof(msg), (ProtobufCMessage **)&rep);
		if (rc)
			return rc;
		if (status == SC_STATUS_OK && rep->data.len == len) {
			rc = sc_tcache_fill_write(x->f, i, rep->data.data, len);
			splitchain__fetch_tensor_reply__free_unpacked(rep, NULL);
			*got = len;
			return rc;
		}
		if (status == SC_STATUS_OK) {
			snprintf(msg, sizeof(msg), "%zu bytes came for %u asked", rep->data.len,
				 len);
			splitchain__fetch_tensor_reply__free_unpacked(rep, NULL);
		}
		rep = NULL;
		if (status == SC_STATUS_NOT_FOUND || status == SC_STATUS_INVALID_ARGUMENT)
			break; /* asking again changes nothing */
	}
	return sc_errf(SC_EIO, "chunk %u from %s: %s: %s", i, x->from, sc_status_name(status), msg);
}

static void *fetch_main(void *arg)
{
	transfer *x = arg;
	for (;;) {
		uint64_t got = 0;
		pthread_mutex_lock(&x->mu);
		while (x->next < x->f->nchunks && x->f->done[x->next])
			x->next++;
		if (x->rc || x->next >= x->f->nchunks) {
			pthread_mutex_unlock(&x->mu);
			return NULL;
		}
		uint32_t i = x->next++;
		pthread_mutex_unlock(&x->mu);
		sc_err rc = fetch_chunk(x, i, &got);
		pthread_mutex_lock(&x->mu);
		x->bytes += got;
		if (rc && !x->rc) {
			x->rc = rc;
			snprintf(x->detail, sizeof(x->detail), "%s", sc_err_detail());
		}
		pthread_mutex_unlock(&x->mu);
	}
}

/* Fetches tensor e into the cache, resuming a partial one; checks its hash. */
static sc_err fetch(worker_model *m, const sc_manifest_tensor *e, sc_rpc_client *cl,
		    const char *method, const char *from, uint64_t *bytes)
{
	transfer x = { .cl = cl, .method = method, .from = from };
	pthread_t th[DELIVER_WINDOW];
	int nth = 0;

	*bytes = 0;
	SC_TRY(sc_tcache_fill_begin(m->cache, e->sha256, e->nbytes, DELIVER_CHUNK, &x.f));
	if (x.f->ndone)
		sc_info("deliver", "tensor '%s': resuming at %u of %u chunks", e->name, x.f->ndone,
			x.f->nchunks);
	pthread_mutex_init(&x.mu, NULL);
	for (int i = 0; i < DELIVER_WINDOW && (uint32_t)i < x.f->nchunks; i++)
		if (pthread_create(&th[nth], NULL, fetch_main, &x) == 0)
			nth++;
	if (!nth && x.f->nchunks)
		fetch_main(&x); /* no thread to be had: one request at a time */
	for (int i = 0; i < nth; i++)
		pthread_join(th[i], NULL);
	pthread_mutex_destroy(&x.mu);
	*bytes = x.bytes;
	if (x.rc) {
		sc_tcache_fill_end(m->cache, x.f, 0); /* kept: the next try resumes */
		return sc_errf(x.rc, "%s", x.detail);
	}
	return sc_tcache_fill_end(m->cache, x.f, 1);
}

/* The peers that cache e over a link faster than the coordinator's
 * (Coordinator.TensorSources), fastest first, into addrs; their count. */
static int peers_of(worker_model *m, const sc_manifest_tensor *e, char addrs[][256], int max)
{
	Splitchain__TensorSourcesRequest req = SPLITCHAIN__TENSOR_SOURCES_REQUEST__INIT;
	Splitchain__TensorSourcesReply *rep = NULL;
	char *sha = (char *)e->sha256, msg[256];
	int status, n = 0;
	if (!m->self_id)
		return 0;
	req.worker_id = m->self_id;
	req.n_sha256 = 1;
	req.sha256 = &sha;
	if (sc_rpc_call_pb(m->cl, "Coordinator.TensorSources", &req.base,
			   &splitchain__tensor_sources_reply__descriptor, SHOW_TIMEOUT_MS, &status,
			   msg, sizeof(msg), (ProtobufCMessage **)&rep) ||
	    status != SC_STATUS_OK)
		return 0; /* the coordinator serves it then */
	if (rep->n_sources == 1)
		for (size_t i = 0; i < rep->sources[0]->n_peer_addrs && n < max; i++)
			snprintf(addrs[n++], 256, "%s", rep->sources[0]->peer_addrs[i]);
	splitchain__tensor_sources_reply__free_unpacked(rep, NULL);
	return n;
}

/* The client of peer addr, opened on first use (closed with m). */
static sc_err peer_client(worker_model *m, const char *addr, sc_rpc_client **out)
{
	for (int i = 0; i < m->npeers; i++)
		if (!strcmp(m->peers[i].addr, addr)) {
			*out = m->peers[i].cl;
			return SC_OK;
		}
	if (m->npeers == DELIVER_MAX_PEERS)
		return sc_errf(SC_ERANGE, "more than %d peers", DELIVER_MAX_PEERS);
	SC_TRY(sc_rpc_client_open(out, addr));
	sc_rpc_client_set_resend(*out, CHUNK_RESEND_MS);
	worker_auth_peer(*out);
	snprintf(m->peers[m->npeers].addr, sizeof(m->peers[0].addr), "%.255s", addr);
	m->peers[m->npeers++].cl = *out;
	return SC_OK;
}

/* Fetches e from the peers that cache it over faster links, then (what is
 * still missing: the chunks kept resume) from the coordinator. */
static sc_err fetch_any(worker_model *m, const sc_manifest_tensor *e, uint64_t *bytes)
{
	char addrs[DELIVER_MAX_PEERS][256];
	sc_rpc_client *cl;
	uint64_t b;
	sc_err rc;
	int n = peers_of(m, e, addrs, DELIVER_MAX_PEERS);
	*bytes = 0;
	for (int k = 0; k < n; k++) {
		if ((rc = peer_client(m, addrs[k], &cl)) == SC_OK) {
			rc = fetch(m, e, cl, "Worker.FetchTensor", addrs[k], &b);
			*bytes += b;
			if (rc == SC_OK) {
				m->peer_fetched++;
				m->peer_bytes += b;
				return SC_OK;
			}
		}
		sc_warn("deliver", "model %s tensor '%s' from peer %s: %s: trying the next source",
			m->name, e->name, addrs[k], sc_err_detail());
	}
	rc = fetch(m, e, m->bulk ? m->bulk : m->cl, "Coordinator.FetchTensor", "the coordinator",
		   &b);
	*bytes += b;
	return rc;
}

static sc_err lookup(void *arg, const char *name, const sc_st_tensor **out)
{
	worker_model *m = arg;
	const sc_manifest_tensor *e = sc_manifest_find(&m->mf, name);
	sc_tcache_ref *ref = NULL;
	uint64_t bytes;
	sc_err rc;

	*out = NULL;
	if (!e)
		return SC_OK;
	int k = (int)(e - m->mf.t);
	if (m->refs[k]) {
		*out = &m->ts[k];
		return SC_OK;
	}
	rc = sc_tcache_get(m->cache, e->sha256, e->nbytes, 1, &ref);
	if (rc == SC_OK) {
		m->cached++;
	} else if (rc == SC_ENOENT) {
		for (int t = 0; t < 2; t++) {
			rc = fetch_any(m, e, &bytes);
			m->fetched_bytes += bytes;
			if (rc != SC_EFORMAT)
				break;
			sc_warn("deliver", "model %s tensor '%s' (sha256 %s): %s: not used%s",
				m->name, e->name, e->sha256, sc_err_detail(),
				t ? "" : "; fetching it again");
		}
		if (rc == SC_EFORMAT) { /* the detail is copied: sc_errf overwrites it */
			char why[256];
			snprintf(why, sizeof(why), "%s", sc_err_detail());
			return sc_errf(
			    SC_EFORMAT,
			    "model %s tensor '%s': sha256 mismatch (%s): the "
			    "coordinator's copy no longer matches its manifest; not used",
			    m->name, e->name, why);
		}
		if (rc) {
			m->broken = 1;
			return sc_err_wrap(rc, "model %s tensor '%s'", m->name, e->name);
		}
		m->fetched++;
		if ((rc = sc_tcache_get(m->cache, e->sha256, e->nbytes, 0, &ref)))
			return sc_err_wrap(rc, "model %s tensor '%s'", m->name, e->name);
	} else {
		return sc_err_wrap(rc, "model %s tensor '%s'", m->name, e->name);
	}
	m->refs[k] = ref;
	m->ts[k] = (sc_st_tensor){ .name = e->name,
				   .dtype = e->dtype,
				   .ndim = e->ndim,
				   .data = ref->data,
				   .nbytes = e->nbytes };
	memcpy(m->ts[k].shape, e->shape, sizeof(e->shape));
	*out = &m->ts[k];
	return SC_OK;
}

sc_err worker_model_weights(worker_model *m, sc_weights **out)
{
	return sc_weights_open_lookup(out, lookup, m);
}

void worker_model_stats(const worker_model *m, int *cached, int *fetched, uint64_t *bytes,
			int *from_peers, uint64_t *peer_bytes)
{
	*cached = m->cached;
	*fetched = m->fetched;
	*bytes = m->fetched_bytes;
	*from_peers = m->peer_fetched;
	*peer_bytes = m->peer_bytes;
}

int worker_model_broken(const worker_model *m)
{
	return m && m->broken;
}

const char *worker_model_bulk(const worker_model *m)
{
	return m->bulk_url[0] ? m->bulk_url : "the RPC connection";
}

void worker_model_close(worker_model *m)
{
	if (!m)
		return;
	for (int i = 0; i < m->mf.n && m->refs; i++)
		sc_tcache_release(m->cache, m->refs[i]);
	for (int i = 0; i < m->npeers; i++) /* every call on them has returned */
		sc_rpc_client_close(m->peers[i].cl);
	sc_rpc_client_close(m->bulk);
	free(m->refs);
	free(m->ts);
	sc_manifest_free(&m->mf);
	free(m);
}

void worker_fetch_tensor(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	worker *w = arg;
	Splitchain__FetchTensorRequest *r;
	Splitchain__FetchTensorReply out = SPLITCHAIN__FETCH_TENSOR_REPLY__INIT;
	sc_tcache_ref *ref = NULL;
	uint64_t nbytes = 0;

	if (sc_rpc_unpack(&splitchain__fetch_tensor_request__descriptor, req, len,
			  (ProtobufCMessage **)&r, rep))
		return;
	if (!sc_sha256_hex_valid(r->sha256) || r->length > DELIVER_MAX_REPLY) {
		sc_rpc_reply_err(
		    rep, SC_STATUS_INVALID_ARGUMENT,
		    "a fetch names a tensor by its sha256 and asks for at most %u bytes",
		    DELIVER_MAX_REPLY);
		goto out;
	}
	/* Pinned while it is read, so that it is not evicted under us. */
	if (!w->cache || sc_tcache_size(w->cache, r->sha256, &nbytes) ||
	    sc_tcache_get(w->cache, r->sha256, nbytes, 0, &ref)) {
		sc_rpc_reply_err(rep, SC_STATUS_NOT_FOUND, "worker %s does not cache tensor %s",
				 w->name, r->sha256);
		goto out;
	}
	if (r->offset > nbytes || r->length > nbytes - r->offset) {
		sc_rpc_reply_err(rep, SC_STATUS_OUT_OF_RANGE,
				 "bytes [%llu, +%u) are outside tensor %.16s of %llu bytes",
				 (unsigned long long)r->offset, r->length, r->sha256,
				 (unsigned long long)nbytes);
		goto out;
	}
	out.data = (ProtobufCBinaryData){ r->length, (uint8_t *)ref->data + r->offset };
	out.nbytes = nbytes;
	sc_rpc_reply_pb(rep, &out.base); /* packs a copy */
out:
	if (ref)
		sc_tcache_release(w->cache, ref);
	splitchain__fetch_tensor_request__free_unpacked(r, NULL);
}

void worker_report_cache(sc_rpc_client *cl, sc_tcache *cache, uint64_t self_id)
{
	Splitchain__ReportCacheRequest req = SPLITCHAIN__REPORT_CACHE_REQUEST__INIT;
	Splitchain__Empty *rep = NULL;
	char **shas = NULL, msg[256] = "";
	size_t n = 0;
	int status = SC_STATUS_OK;
	if (!cache || !self_id || sc_tcache_list(cache, &shas, &n))
		return;
	req.worker_id = self_id;
	req.n_cached_sha256 = n;
	req.cached_sha256 = shas;
	if (sc_rpc_call_pb(cl, "Coordinator.ReportCache", &req.base, &splitchain__empty__descriptor,
			   SHOW_TIMEOUT_MS, &status, msg, sizeof(msg), (ProtobufCMessage **)&rep) ||
	    status != SC_STATUS_OK)
		sc_warn("deliver", "reporting the cache to the coordinator: %s: %s",
			sc_status_name(status), msg);
	if (rep)
		splitchain__empty__free_unpacked(rep, NULL);
	sc_tcache_list_free(shas, n);
}
