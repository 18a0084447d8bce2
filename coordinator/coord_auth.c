/* coord_auth.c — credentials, owners, limits and roots (coord_auth.h). */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "coord_auth.h"
#include "db_users.h"
#include "rate.h"
#include "sc_file.h"
#include "sc_log.h"
#include "sc_rpc_pb.h"

#define MAX_SESSIONS 4096 /* registered workers remembered (one session each) */
#define RATE_BUCKETS 4096 /* callers whose request rates are tracked */
#define EVENTS_PER_S 20   /* refusals recorded as events, at most */

typedef struct session {
	int64_t worker_id;
	uint8_t hash[SC_SHA256_BYTES];
} session;

struct coord_auth {
	sc_db *db; /* borrowed */
	int insecure;
	int has_join;
	uint8_t join_hash[SC_SHA256_BYTES];
	char model_root[PATH_MAX], data_root[PATH_MAX]; /* real paths */
	int max_jobs;
	pthread_mutex_t quota_mu; /* a capped user's submit: count, then record */
	sc_rate *rate;            /* NULL: no limit */
	sc_rate *events;          /* refusals recorded, key 0 */
	pthread_mutex_t mu;
	session *sessions; /* under mu: (nsessions), oldest first */
	int nsessions;
	unsigned long dropped_events; /* under mu */
};

static double mono_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static sc_err root_of(const char *flag, const char *dir, char *out)
{
	char cwd[PATH_MAX];
	if (!dir) {
		if (!getcwd(cwd, sizeof(cwd)))
			return sc_errf(SC_EIO, "the working directory: %s", strerror(errno));
		dir = cwd;
	}
	if (!realpath(dir, out))
		return sc_errf(SC_EINVAL, "%s %s: %s", flag, dir, strerror(errno));
	if (!strcmp(out, "/"))
		return sc_errf(SC_EINVAL, "%s /: the whole file system is not a root", flag);
	return SC_OK;
}

sc_err coord_auth_open(coord_auth **out, sc_db *db, const coord_auth_opts *o)
{
	char token[1024];
	coord_auth *a;
	sc_err err;

	*out = NULL;
	if (!o->join_token_file && !o->insecure)
		return sc_errf(SC_EINVAL,
			       "no --join-token-file: any host could join as a worker; give one "
			       "(the same file to every worker) or --insecure");
	if (!(a = calloc(1, sizeof(*a))) ||
	    !(a->sessions = calloc(MAX_SESSIONS, sizeof(*a->sessions)))) {
		free(a);
		return sc_errf(SC_ENOMEM, "out of memory");
	}
	pthread_mutex_init(&a->mu, NULL);
	pthread_mutex_init(&a->quota_mu, NULL);
	a->db = db;
	a->insecure = o->insecure;
	a->max_jobs = o->max_jobs_per_user;
	if (o->join_token_file) {
		if ((err = sc_token_read_file(o->join_token_file, 0, token, sizeof(token))))
			goto fail;
		sc_sha256(token, strlen(token), a->join_hash);
		memset(token, 0, sizeof(token));
		a->has_join = 1;
	}
	if ((err = root_of("--model-root", o->model_root, a->model_root)) ||
	    (err = root_of("--data-root", o->data_root, a->data_root)))
		goto fail;
	if (o->rate > 0 &&
	    (err = sc_rate_new(&a->rate, o->rate, o->burst >= 1 ? o->burst : 1, RATE_BUCKETS)))
		goto fail;
	if ((err = sc_rate_new(&a->events, EVENTS_PER_S, EVENTS_PER_S, 1)))
		goto fail;
	*out = a;
	return SC_OK;
fail:
	coord_auth_free(a);
	return err;
}

void coord_auth_free(coord_auth *a)
{
	if (!a)
		return;
	sc_rate_free(a->rate);
	sc_rate_free(a->events);
	pthread_mutex_destroy(&a->mu);
	pthread_mutex_destroy(&a->quota_mu);
	free(a->sessions);
	free(a);
}

void coord_auth_deny(coord_auth *a, int64_t job_id, const char *fmt, ...)
{
	char text[400];
	unsigned long dropped;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&a->mu);
	if (!sc_rate_take(a->events, 0, mono_s(), NULL)) {
		a->dropped_events++;
		pthread_mutex_unlock(&a->mu);
		return;
	}
	dropped = a->dropped_events;
	a->dropped_events = 0;
	pthread_mutex_unlock(&a->mu);
	sc_warn("auth", "%s", text); /* as bounded as the events */
	if (dropped)
		sc_db_event(a->db, job_id, 0, SC_LOG_WARN, "auth_denied",
			    "%s (and %lu more not recorded)", text, dropped);
	else
		sc_db_event(a->db, job_id, 0, SC_LOG_WARN, "auth_denied", "%s", text);
}

/* ---- which credential each method takes ---- */

enum who_may { USERS, ADMINS, WORKERS, USERS_OR_WORKERS, JOINING };

static enum who_may who_may(const char *m)
{
	static const struct {
		const char *name;
		enum who_may who;
	} t[] = {
		{ "Coordinator.Register", JOINING },
		{ "Coordinator.Heartbeat", WORKERS },
		{ "Coordinator.ReportLinks", WORKERS },
		{ "Coordinator.ReportCache", WORKERS },
		{ "Coordinator.TensorSources", WORKERS },
		{ "Coordinator.FetchTensor", WORKERS },
		{ "Coordinator.Echo", USERS_OR_WORKERS },
		{ "Coordinator.ModelShow", USERS_OR_WORKERS },
		{ "Coordinator.ModelAdd", ADMINS },
		{ "Coordinator.ModelRemove", ADMINS },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (!strcmp(t[i].name, m))
			return t[i].who;
	return USERS; /* every other method, those added later included */
}

static int has_prefix(const uint8_t *cred, size_t len, const char *p)
{
	size_t n = strlen(p);
	return len > n && !memcmp(cred, p, n);
}

/* 1 when cred is a live session; *id = its worker. */
static int session_of(coord_auth *a, const uint8_t *cred, size_t len, int64_t *id)
{
	uint8_t h[SC_SHA256_BYTES];
	int found = 0;
	sc_sha256(cred, len, h);
	pthread_mutex_lock(&a->mu);
	for (int i = 0; i < a->nsessions && !found; i++)
		if (sc_token_equal(a->sessions[i].hash, h, sizeof(h))) {
			*id = a->sessions[i].worker_id;
			found = 1;
		}
	pthread_mutex_unlock(&a->mu);
	return found;
}

sc_err coord_auth_session(coord_auth *a, int64_t worker_id, char *out)
{
	session s = { .worker_id = worker_id };
	int i;

	SC_TRY(sc_token_new("scs_", out));
	sc_sha256(out, strlen(out), s.hash);
	pthread_mutex_lock(&a->mu);
	for (i = 0; i < a->nsessions && a->sessions[i].worker_id != worker_id; i++)
		;
	if (i == a->nsessions && a->nsessions == MAX_SESSIONS)
		i = 0; /* the oldest goes; that worker registers again */
	if (i < a->nsessions)
		memmove(&a->sessions[i], &a->sessions[i + 1],
			(size_t)(a->nsessions - i - 1) * sizeof(session));
	else
		a->nsessions++;
	a->sessions[a->nsessions - 1] = s;
	pthread_mutex_unlock(&a->mu);
	return SC_OK;
}

static int refuse(coord_auth *a, int status, char *msg, size_t size, const char *method,
		  const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static int refuse(coord_auth *a, int status, char *msg, size_t size, const char *method,
		  const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, size, fmt, ap);
	va_end(ap);
	coord_auth_deny(a, 0, "%s refused (%s): %s", method, sc_status_name(status), msg);
	return status;
}

int coord_auth_check(void *arg, const char *method, const uint8_t *cred, size_t len,
		     sc_rpc_principal *who, char *msg, size_t msg_size)
{
	coord_auth *a = arg;
	enum who_may may = who_may(method);
	uint8_t h[SC_SHA256_BYTES];
	char hex[SC_SHA256_HEX];
	sc_db_user u;
	sc_err err;
	int64_t id;

	if (may == JOINING) {
		sc_sha256(cred, len, h);
		if (a->has_join ? !sc_token_equal(h, a->join_hash, sizeof(h)) : !a->insecure)
			return refuse(a, SC_STATUS_UNAUTHENTICATED, msg, msg_size, method,
				      "%s join token: start the worker with the coordinator's "
				      "--join-token-file",
				      len ? "a wrong" : "no");
		who->kind = SC_PRINCIPAL_JOINING;
		return SC_STATUS_OK;
	}
	if (has_prefix(cred, len, "scs_") && (may == WORKERS || may == USERS_OR_WORKERS)) {
		if (!session_of(a, cred, len, &id))
			/* not an event: every worker meets this once after a restart */
			return snprintf(msg, msg_size,
					"unknown session: register again (the coordinator "
					"restarted, or the worker was replaced)"),
			       SC_STATUS_UNAUTHENTICATED;
		who->kind = SC_PRINCIPAL_WORKER;
		who->id = id;
		return SC_STATUS_OK;
	}
	if (may == WORKERS)
		return refuse(a, len ? SC_STATUS_PERMISSION_DENIED : SC_STATUS_UNAUTHENTICATED, msg,
			      msg_size, method, "only registered workers may call %s", method);
	if (!has_prefix(cred, len, "sct_"))
		return refuse(a, SC_STATUS_UNAUTHENTICATED, msg, msg_size, method,
			      "%s: give an API token in SPLITCHAIN_TOKEN or "
			      "~/.config/splitchain/token (an admin makes one with "
			      "`splitchain-coordinator --db FILE users add NAME`)",
			      len ? "not an API token" : "no API token");
	sc_token_hash_hex(cred, len, hex);
	if ((err = sc_db_user_by_token(a->db, hex, &u)))
		return refuse(a,
			      err == SC_ENOENT ? SC_STATUS_UNAUTHENTICATED : SC_STATUS_UNAVAILABLE,
			      msg, msg_size, method, "%s",
			      err == SC_ENOENT ? "the API token is unknown or revoked"
					       : "cannot check the API token now; try again");
	who->kind = SC_PRINCIPAL_USER;
	who->id = u.id;
	who->admin = u.admin;
	snprintf(who->name, sizeof(who->name), "%s", u.name);
	double retry = 0;
	if (a->rate && !sc_rate_take(a->rate, (uint64_t)u.id, mono_s(), &retry))
		return refuse(a, SC_STATUS_RESOURCE_EXHAUSTED, msg, msg_size, method,
			      "user %s is over the request-rate limit (--rate-limit); retry in "
			      "%.2f s",
			      u.name, retry);
	if (may == ADMINS && !u.admin)
		return refuse(a, SC_STATUS_PERMISSION_DENIED, msg, msg_size, method,
			      "user %s is not an admin: %s changes what every user shares", u.name,
			      method);
	return SC_STATUS_OK;
}

/* ---- in handlers ---- */

int coord_auth_job(coord_auth *a, int64_t job_id, int64_t owner_id, sc_rpc_reply *rep)
{
	const sc_rpc_principal *who = sc_rpc_caller();
	if (!a || who->kind != SC_PRINCIPAL_USER || who->admin || (owner_id && who->id == owner_id))
		return 1;
	sc_rpc_reply_err(rep, SC_STATUS_PERMISSION_DENIED,
			 "job %" PRId64 " is not yours (user %s): only its owner or an admin "
			 "may see or act on it",
			 job_id, who->name);
	coord_auth_deny(a, job_id, "user %s was refused job %" PRId64 " (not the owner)", who->name,
			job_id);
	return 0;
}

int coord_auth_admin(coord_auth *a, const char *what, sc_rpc_reply *rep)
{
	const sc_rpc_principal *who = sc_rpc_caller();
	if (!a || who->kind != SC_PRINCIPAL_USER || who->admin)
		return 1;
	sc_rpc_reply_err(rep, SC_STATUS_PERMISSION_DENIED, "%s is for admins; user %s is not one",
			 what, who->name);
	coord_auth_deny(a, 0, "user %s was refused %s (not an admin)", who->name, what);
	return 0;
}

int coord_auth_job_quota(coord_auth *a, sc_rpc_reply *rep)
{
	const sc_rpc_principal *who = sc_rpc_caller();
	sc_db_job *jobs = NULL;
	int n = 0, mine = 0;

	if (!a || !a->max_jobs || who->kind != SC_PRINCIPAL_USER)
		return 0;
	pthread_mutex_lock(&a->quota_mu);
	if (sc_db_jobs_resumable(a->db, &jobs, &n)) {
		pthread_mutex_unlock(&a->quota_mu);
		sc_rpc_reply_err(rep, SC_STATUS_UNAVAILABLE, "cannot count your jobs: %s",
				 sc_err_detail());
		return 1;
	}
	for (int i = 0; i < n; i++)
		mine += jobs[i].owner_id == who->id;
	free(jobs);
	if (mine < a->max_jobs)
		return 0; /* quota_mu held until coord_auth_job_quota_done */
	pthread_mutex_unlock(&a->quota_mu);
	sc_rpc_reply_err(rep, SC_STATUS_RESOURCE_EXHAUSTED,
			 "user %s has %d jobs queued or running, the most allowed "
			 "(--max-jobs-per-user %d): wait for one to end or cancel one",
			 who->name, mine, a->max_jobs);
	coord_auth_deny(a, 0, "user %s is at the job cap (%d queued or running)", who->name, mine);
	return 1;
}

void coord_auth_job_quota_done(coord_auth *a)
{
	if (a && a->max_jobs && sc_rpc_caller()->kind == SC_PRINCIPAL_USER)
		pthread_mutex_unlock(&a->quota_mu);
}

int64_t coord_auth_owner(void)
{
	const sc_rpc_principal *who = sc_rpc_caller();
	return who->kind == SC_PRINCIPAL_USER ? who->id : 0;
}

sc_err coord_auth_path(const coord_auth *a, enum coord_root root, const char *what,
		       const char *path, char *out)
{
	const char *dir = root == COORD_MODEL_ROOT ? a->model_root : a->data_root;
	const char *flag = root == COORD_MODEL_ROOT ? "--model-root" : "--data-root";
	size_t n = strlen(dir);
	const char *rel = path;
	sc_err err;

	if (!path || !path[0])
		return sc_errf(SC_EINVAL, "no %s path", what);
	if (path[0] == '/') {
		if (strncmp(path, dir, n) != 0 || (path[n] != '/' && path[n] != '\0'))
			return sc_errf(SC_EINVAL,
				       "%s '%s' is outside the coordinator's %s %s: give a path "
				       "under it",
				       what, path, flag, dir);
		rel = path[n] ? path + n + 1 : ".";
		while (*rel == '/')
			rel++;
		if (!*rel)
			rel = ".";
	}
	err = sc_file_under(dir, rel, what, out, PATH_MAX);
	if (err == SC_EINVAL || err == SC_ENOENT)
		/* One answer whether it is missing or leads out through a link,
		 * so that nothing is learnt of what lies outside the root. */
		return sc_errf(SC_EINVAL,
			       "%s '%s' is not a file or directory under the coordinator's %s %s "
			       "(it is missing, or it leads out of the root)",
			       what, path, flag, dir);
	return err ? sc_errf(err, "%s '%s': %s", what, path, sc_err_detail()) : SC_OK;
}
