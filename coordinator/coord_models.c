/* coord_models.c — registered models: Coordinator.ModelAdd / Models /
 * ModelShow / ModelRemove (the `splitchain models` commands), FetchTensor
 * (a worker's byte range of one tensor, by content), and what submit and
 * register need of the registry (coord_models.h). No handler takes mu. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "coord.h"
#include "coord_models.h"
#include "db_models.h"
#include "sc_config.h"
#include "sc_file.h"
#include "sc_manifest.h"
#include "sc_rpc_pb.h"
#include "splitchain.pb-c.h"

#define MAX_CONFIG_BYTES ((size_t)1 << 20)
#define MAX_FILE_BYTES   ((size_t)64 << 20)

/* The small files kept with a model, where the directory has them. */
static const char *const kept_files[] = {
	"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
	"merges.txt",     "tokenizer.model",       "generation_config.json",
};
#define N_KEPT (int)(sizeof(kept_files) / sizeof(kept_files[0]))

static int name_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n < 1 || n > 64 || s[0] == '.' || s[0] == '-')
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '_' || s[i] == '-'))
			return 0;
	return 1;
}

static int status_of(sc_err rc)
{
	switch (rc) {
	case SC_ENOENT: return SC_STATUS_NOT_FOUND;
	case SC_EINVAL:
	case SC_EFORMAT:
	case SC_ENOTSUP: return SC_STATUS_INVALID_ARGUMENT;
	case SC_ENOMEM: return SC_STATUS_RESOURCE_EXHAUSTED;
	default: return SC_STATUS_INTERNAL;
	}
}

/* info = m's fields (borrowed from m). */
static void model_info(Splitchain__ModelInfo *info, const sc_db_model *m)
{
	splitchain__model_info__init(info);
	info->name = (char *)m->name;
	info->dir = (char *)m->dir;
	info->digest = (char *)m->digest;
	info->bytes = m->bytes;
	info->tensor_count = (uint32_t)m->n_tensors;
	info->created_unix_ms = m->created_ms;
	info->config_json = (char *)m->config_json;
	info->model_type = (char *)m->model_type;
	info->n_layer = (uint32_t)m->n_layer;
}

/* Reads the kept files of dir into files[] (n of them; data malloc'd). */
static sc_err read_kept(const char *dir, sc_db_model_file *files, int *n)
{
	char path[4096], *data;
	size_t len;
	*n = 0;
	for (int i = 0; i < N_KEPT; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, kept_files[i]);
		sc_err rc = sc_file_read(path, MAX_FILE_BYTES, &data, &len);
		if (rc == SC_ENOENT)
			continue;
		if (rc)
			return rc;
		files[(*n)++] = (sc_db_model_file){ kept_files[i], data, len };
	}
	return SC_OK;
}

void coord_m_model_add(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	coord *c = arg;
	Splitchain__ModelAddRequest *r;
	Splitchain__ModelInfo out;
	sc_db_model m = { 0 }, *got = NULL;
	sc_manifest mf = { 0 };
	sc_model_config mc;
	sc_db_model_file files[N_KEPT];
	char digest[SC_SHA256_HEX], path[4096], *config = NULL;
	size_t config_len;
	struct stat st;
	int nfiles = 0;
	int64_t id;
	sc_err rc;

	if (sc_rpc_unpack(&splitchain__model_add_request__descriptor, req, len,
			  (ProtobufCMessage **)&r, rep))
		return;
	if (!name_ok(r->name)) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT,
				 "model name '%s': want 1 to 64 of A-Z a-z 0-9 . _ -, not starting "
				 "with . or -",
				 r->name);
		goto out;
	}
	/* Under --model-root, like a job's model. */
	char real[PATH_MAX];
	if (coord_auth_path(c->auth, COORD_MODEL_ROOT, "model directory", r->dir, real)) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT, "%s", sc_err_detail());
		coord_auth_deny(c->auth, 0, "user %s: %s", sc_rpc_caller()->name, sc_err_detail());
		goto out;
	}
	if (!r->dir || r->dir[0] != '/' || stat(r->dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT,
				 "model directory '%s' is not a directory the coordinator can read "
				 "(an absolute path on its machine)",
				 r->dir);
		goto out;
	}
	snprintf(path, sizeof(path), "%s/config.json", r->dir);
	if ((rc = sc_file_read(path, MAX_CONFIG_BYTES, &config, &config_len)) ||
	    (rc = sc_config_parse(&mc, config, config_len))) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT, "model %s: %s", r->name,
				 sc_err_detail());
		goto out;
	}
	if ((rc = sc_manifest_build(&mf, r->dir))) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT, "model %s: %s", r->name,
				 sc_err_detail());
		goto out;
	}
	if ((rc = read_kept(r->dir, files, &nfiles))) {
		sc_rpc_reply_err(rep, status_of(rc), "model %s: %s", r->name, sc_err_detail());
		goto out;
	}
	sc_manifest_digest(config, config_len, mf.t, mf.n, digest);
	m.name = r->name;
	m.dir = r->dir;
	m.digest = digest;
	m.config_json = config;
	m.model_type = mc.model_type;
	m.n_layer = mc.n_layer;
	if ((rc = sc_db_model_add(c->db, &m, &mf, files, nfiles, &id)) ||
	    (rc = sc_db_model_get(c->db, r->name, &got))) {
		sc_rpc_reply_err(rep, rc == SC_EINVAL ? SC_STATUS_ALREADY_EXISTS : status_of(rc),
				 "%s", sc_err_detail());
		goto out;
	}
	sc_db_event(c->db, 0, 0, SC_LOG_INFO, "model_added",
		    "model %s (%s, %d layers): %d tensors, %llu bytes, digest %.16s, from %s",
		    r->name, mc.model_type, mc.n_layer, mf.n, (unsigned long long)mf.bytes, digest,
		    r->dir);
	model_info(&out, got);
	sc_rpc_reply_pb(rep, &out.base);
out:
	for (int i = 0; i < nfiles; i++)
		free((void *)files[i].data);
	free(got);
	free(config);
	sc_manifest_free(&mf);
	splitchain__model_add_request__free_unpacked(r, NULL);
}

void coord_m_models(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	coord *c = arg;
	Splitchain__ModelsReply out = SPLITCHAIN__MODELS_REPLY__INIT;
	sc_db_model *ms = NULL;
	int n = 0;
	(void)req;
	(void)len;
	if (sc_db_models_list(c->db, &ms, &n)) {
		sc_rpc_reply_err(rep, SC_STATUS_INTERNAL, "database: %s", sc_err_detail());
		return;
	}
	Splitchain__ModelInfo *info = calloc((size_t)n + 1, sizeof(*info));
	Splitchain__ModelInfo **ip = calloc((size_t)n + 1, sizeof(*ip));
	if (!info || !ip) {
		sc_rpc_reply_err(rep, SC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	for (int i = 0; i < n; i++) {
		model_info(&info[i], &ms[i]);
		ip[i] = &info[i];
	}
	out.n_models = (size_t)n;
	out.models = ip;
	sc_rpc_reply_pb(rep, &out.base);
out:
	free(info);
	free(ip);
	free(ms);
}

/* Fills *t (and its storage) from manifest entry e; borrows e's strings. */
static void tensor_msg(Splitchain__ModelTensor *t, const sc_manifest_tensor *e)
{
	splitchain__model_tensor__init(t);
	t->name = e->name;
	t->dtype = (char *)sc_dtype_name(e->dtype);
	t->n_shape = (size_t)e->ndim;
	t->shape = (int64_t *)e->shape;
	t->file = e->file;
	t->offset = e->offset;
	t->nbytes = e->nbytes;
	t->sha256 = (char *)e->sha256;
}

void coord_m_model_show(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	coord *c = arg;
	Splitchain__ModelRef *r;
	Splitchain__ModelInfo out;
	sc_db_model *m = NULL;
	sc_db_model_file *fs = NULL;
	sc_manifest mf = { 0 };
	Splitchain__ModelTensor *ts = NULL, **tp = NULL;
	Splitchain__ModelFile *fm = NULL, **fp = NULL;
	int nf = 0;
	sc_err rc;

	if (sc_rpc_unpack(&splitchain__model_ref__descriptor, req, len, (ProtobufCMessage **)&r,
			  rep))
		return;
	if ((rc = sc_db_model_get(c->db, r->name ? r->name : "", &m)) ||
	    (r->tensors && (rc = sc_db_model_tensors(c->db, m->id, &mf))) ||
	    (r->files && (rc = sc_db_model_files(c->db, m->id, &fs, &nf)))) {
		sc_rpc_reply_err(rep, status_of(rc), "%s", sc_err_detail());
		goto out;
	}
	model_info(&out, m);
	ts = calloc((size_t)mf.n + 1, sizeof(*ts));
	tp = calloc((size_t)mf.n + 1, sizeof(*tp));
	fm = calloc((size_t)nf + 1, sizeof(*fm));
	fp = calloc((size_t)nf + 1, sizeof(*fp));
	if (!ts || !tp || !fm || !fp) {
		sc_rpc_reply_err(rep, SC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	for (int i = 0; i < mf.n; i++) {
		tensor_msg(&ts[i], &mf.t[i]);
		tp[i] = &ts[i];
	}
	for (int i = 0; i < nf; i++) {
		splitchain__model_file__init(&fm[i]);
		fm[i].name = (char *)fs[i].name;
		fm[i].data = (ProtobufCBinaryData){ fs[i].len, (uint8_t *)fs[i].data };
		fp[i] = &fm[i];
	}
	out.n_tensors = (size_t)mf.n;
	out.tensors = tp;
	out.n_files = (size_t)nf;
	out.files = fp;
	sc_rpc_reply_pb(rep, &out.base);
out:
	free(ts);
	free(tp);
	free(fm);
	free(fp);
	free(fs);
	free(m);
	sc_manifest_free(&mf);
	splitchain__model_ref__free_unpacked(r, NULL);
}

void coord_m_model_remove(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	coord *c = arg;
	Splitchain__ModelRef *r;
	Splitchain__Empty out = SPLITCHAIN__EMPTY__INIT;
	sc_err rc;
	if (sc_rpc_unpack(&splitchain__model_ref__descriptor, req, len, (ProtobufCMessage **)&r,
			  rep))
		return;
	int64_t user = 0;
	if ((rc = sc_db_model_user(c->db, r->name ? r->name : "", &user)) == SC_OK && user) {
		sc_rpc_reply_err(rep, SC_STATUS_FAILED_PRECONDITION,
				 "model %s is in use by job %lld (queued or running): cancel it or "
				 "let it finish first",
				 r->name, (long long)user);
	} else if (rc || (rc = sc_db_model_remove(c->db, r->name ? r->name : ""))) {
		sc_rpc_reply_err(rep, status_of(rc), "%s", sc_err_detail());
	} else {
		sc_db_event(c->db, 0, 0, SC_LOG_INFO, "model_removed", "model %s", r->name);
		sc_rpc_reply_pb(rep, &out.base);
	}
	splitchain__model_ref__free_unpacked(r, NULL);
}

void coord_m_fetch_tensor(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	coord *c = arg;
	Splitchain__FetchTensorRequest *r;
	Splitchain__FetchTensorReply out = SPLITCHAIN__FETCH_TENSOR_REPLY__INIT;
	char *path = NULL;
	uint8_t *buf = NULL;
	uint64_t offset, nbytes;
	int fd = -1;
	sc_err rc;

	if (sc_rpc_unpack(&splitchain__fetch_tensor_request__descriptor, req, len,
			  (ProtobufCMessage **)&r, rep))
		return;
	if (!sc_sha256_hex_valid(r->sha256) || r->length > SC_FETCH_MAX_CHUNK) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT,
				 "a fetch names a tensor by its sha256 (64 lower-case hex digits) "
				 "and asks for at most %u bytes",
				 SC_FETCH_MAX_CHUNK);
		goto out;
	}
	if ((rc = sc_db_tensor_source(c->db, r->sha256, &path, &offset, &nbytes))) {
		sc_rpc_reply_err(rep, status_of(rc), "%s", sc_err_detail());
		goto out;
	}
	if (r->offset > nbytes || r->length > nbytes - r->offset) {
		sc_rpc_reply_err(rep, SC_STATUS_OUT_OF_RANGE,
				 "bytes [%llu, +%u) are outside tensor %.16s... of %llu bytes",
				 (unsigned long long)r->offset, r->length, r->sha256,
				 (unsigned long long)nbytes);
		goto out;
	}
	if (!(buf = malloc(r->length ? r->length : 1))) {
		sc_rpc_reply_err(rep, SC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t got = 0;
	while (fd >= 0 && got < r->length) {
		ssize_t k =
		    pread(fd, buf + got, r->length - got, (off_t)(offset + r->offset + got));
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		got += (size_t)k;
	}
	if (got < r->length) {
		sc_rpc_reply_err(rep, SC_STATUS_DATA_LOSS, "%s: cannot read %u bytes at %llu: %s",
				 path, r->length, (unsigned long long)(offset + r->offset),
				 fd < 0 ? strerror(errno) : "short file");
		goto out;
	}
	out.data = (ProtobufCBinaryData){ r->length, buf };
	out.nbytes = nbytes;
	sc_rpc_reply_pb(rep, &out.base);
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	free(path);
	splitchain__fetch_tensor_request__free_unpacked(r, NULL);
}

int coord_models_resolve(coord *c, Splitchain__SubmitRequest *r, sc_rpc_reply *rep)
{
	sc_db_model *m = NULL;
	char *dir = NULL, *digest = NULL;
	if (!r->model || !r->model[0])
		return 0;
	if (sc_db_model_get(c->db, r->model, &m)) {
		sc_rpc_reply_err(rep, SC_STATUS_NOT_FOUND, "%s", sc_err_detail());
		return 1;
	}
	if (!(dir = strdup(m->dir)) || !(digest = strdup(m->digest))) {
		free(dir);
		free(m);
		sc_rpc_reply_err(rep, SC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		return 1;
	}
	/* Unpacked strings are the message's own, but for the shared default. */
	if (r->model_path != protobuf_c_empty_string)
		free(r->model_path);
	if (r->model_digest != protobuf_c_empty_string)
		free(r->model_digest);
	r->model_path = dir;
	r->model_digest = digest;
	free(m);
	return 0;
}

sc_err coord_model_config_text(coord *c, const char *model, const char *dir, char **text,
			       size_t *len)
{
	char path[4096];
	*text = NULL;
	*len = 0;
	if (model && model[0]) {
		sc_db_model *m = NULL;
		SC_TRY(sc_db_model_get(c->db, model, &m));
		*text = strdup(m->config_json);
		free(m);
		if (!*text)
			return sc_errf(SC_ENOMEM, "out of memory");
		*len = strlen(*text);
		return SC_OK;
	}
	snprintf(path, sizeof(path), "%s/config.json", dir);
	return sc_file_read(path, 1 << 20, text, len);
}

sc_err coord_model_config(coord *c, const char *model, const char *dir, sc_model_config *mc)
{
	char path[4096];
	if (model && model[0]) {
		sc_db_model *m = NULL;
		SC_TRY(sc_db_model_get(c->db, model, &m));
		sc_err rc = sc_config_parse(mc, m->config_json, strlen(m->config_json));
		free(m);
		return rc;
	}
	snprintf(path, sizeof(path), "%s/config.json", dir);
	return sc_config_load(mc, path);
}

void coord_models_worker_cache(coord *c, int64_t worker, const Splitchain__RegisterRequest *r)
{
	for (size_t i = 0; i < r->n_cached_sha256; i++)
		if (!sc_sha256_hex_valid(r->cached_sha256[i])) {
			sc_db_event(c->db, 0, worker, SC_LOG_WARN, "cache_report_refused",
				    "%s reported a cached tensor '%.70s' that is not a sha256",
				    r->name, r->cached_sha256[i]);
			return;
		}
	if (sc_db_worker_tensors_set(c->db, worker, r->cached_sha256, r->n_cached_sha256))
		sc_warn("coordinator", "worker %s's cache report: %s", r->name, sc_err_detail());
	else if (r->n_cached_sha256)
		sc_info("coordinator", "worker %s caches %zu tensors", r->name, r->n_cached_sha256);
}

void coord_m_report_cache(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	coord *c = arg;
	Splitchain__ReportCacheRequest *r;
	Splitchain__Empty out = SPLITCHAIN__EMPTY__INIT;
	if (sc_rpc_unpack(&splitchain__report_cache_request__descriptor, req, len,
			  (ProtobufCMessage **)&r, rep))
		return;
	for (size_t i = 0; i < r->n_cached_sha256; i++)
		if (!sc_sha256_hex_valid(r->cached_sha256[i])) {
			sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT,
					 "cached tensor %zu is not a sha256", i);
			goto out;
		}
	pthread_mutex_lock(&c->mu);
	int known = coord_worker(c, (int64_t)r->worker_id) != NULL;
	pthread_mutex_unlock(&c->mu);
	if (!known) {
		sc_rpc_reply_err(rep, SC_STATUS_NOT_FOUND, "worker %llu is not registered",
				 (unsigned long long)r->worker_id);
		goto out;
	}
	if (sc_db_worker_tensors_set(c->db, (int64_t)r->worker_id, r->cached_sha256,
				     r->n_cached_sha256))
		sc_rpc_reply_err(rep, SC_STATUS_INTERNAL, "database: %s", sc_err_detail());
	else
		sc_rpc_reply_pb(rep, &out.base);
out:
	splitchain__report_cache_request__free_unpacked(r, NULL);
}

/* A live peer of the asking worker, with the asker's link to it. */
typedef struct peer_link {
	int64_t id;
	char addr[256];
	double mbit_s; /* asker -> peer, 0: not measured */
} peer_link;

static int by_mbit_desc(const void *a, const void *b)
{
	double x = ((const peer_link *)a)->mbit_s, y = ((const peer_link *)b)->mbit_s;
	return (x < y) - (x > y);
}

void coord_m_tensor_sources(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	coord *c = arg;
	Splitchain__TensorSourcesRequest *r;
	Splitchain__TensorSourcesReply out = SPLITCHAIN__TENSOR_SOURCES_REPLY__INIT;
	Splitchain__TensorSource *src = NULL, **sp = NULL;
	char **addrs = NULL; /* (n_sha256 * np) borrowed from peers */
	peer_link *peers = NULL;
	sc_db_link *links = NULL;
	int np = 0, nl = 0;
	double to_coord = 0;

	if (sc_rpc_unpack(&splitchain__tensor_sources_request__descriptor, req, len,
			  (ProtobufCMessage **)&r, rep))
		return;
	/* The live workers but the asker (decided under mu, nothing blocks). */
	pthread_mutex_lock(&c->mu);
	int64_t now = coord_now_ms();
	peers = calloc((size_t)c->nworkers + 1, sizeof(*peers));
	for (int i = 0; peers && i < c->nworkers; i++) {
		const live_worker *lw = &c->workers[i];
		if (lw->id == (int64_t)r->worker_id || lw->last_seen_ms <= 0 ||
		    now - lw->last_seen_ms > c->lost_after_ms)
			continue;
		peers[np].id = lw->id;
		snprintf(peers[np].addr, sizeof(peers[np].addr), "%s", lw->control_addr);
		np++;
	}
	pthread_mutex_unlock(&c->mu);
	src = calloc(r->n_sha256 + 1, sizeof(*src));
	sp = calloc(r->n_sha256 + 1, sizeof(*sp));
	addrs = calloc(r->n_sha256 * (size_t)np + 1, sizeof(*addrs));
	if (!peers || !src || !sp || !addrs) {
		sc_rpc_reply_err(rep, SC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	/* Peer-first only over a link measured faster than the coordinator's. */
	if (sc_db_links_list(c->db, &links, &nl) == SC_OK)
		for (int i = 0; i < nl; i++) {
			if (links[i].from_worker != (int64_t)r->worker_id)
				continue;
			if (links[i].to_worker == 0)
				to_coord = links[i].mbit_s;
			for (int k = 0; k < np; k++)
				if (peers[k].id == links[i].to_worker)
					peers[k].mbit_s = links[i].mbit_s;
		}
	qsort(peers, (size_t)np, sizeof(*peers), by_mbit_desc);
	for (size_t i = 0; i < r->n_sha256; i++) {
		int64_t *ids = NULL;
		int nh = 0;
		splitchain__tensor_source__init(&src[i]);
		src[i].sha256 = r->sha256[i];
		src[i].peer_addrs = addrs + i * (size_t)np;
		sp[i] = &src[i];
		if (!sc_sha256_hex_valid(r->sha256[i]) || !(to_coord > 0) ||
		    sc_db_tensor_holders(c->db, r->sha256[i], &ids, &nh))
			continue;
		for (int k = 0; k < np; k++) {
			int holds = 0;
			for (int h = 0; h < nh; h++)
				holds |= ids[h] == peers[k].id;
			if (holds && peers[k].mbit_s > to_coord)
				src[i].peer_addrs[src[i].n_peer_addrs++] = peers[k].addr;
		}
		free(ids);
	}
	out.n_sources = r->n_sha256;
	out.sources = sp;
	sc_rpc_reply_pb(rep, &out.base);
out:
	free(links);
	free(addrs);
	free(sp);
	free(src);
	free(peers);
	splitchain__tensor_sources_request__free_unpacked(r, NULL);
}
