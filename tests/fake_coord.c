/* fake_coord.c — see fake_coord.h. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fake_coord.h"
#include "sc_rpc_pb.h"
#include "splitchain.pb-c.h"

#define MSG(x) ((ProtobufCMessage *)(x))

static struct {
	pthread_mutex_t mu;
	fake_worker w[FAKE_WORKERS];
	uint64_t next_id, min_valid_id; /* heartbeats of older ids: NOT_FOUND */
	uint64_t fence_job[FAKE_WORKERS];
	uint32_t fence_version[FAKE_WORKERS];
	int muted;
	sc_rpc_server *srv;
	char url[300];
} coord = { .mu = PTHREAD_MUTEX_INITIALIZER, .next_id = 1 };

static int worker_index(const char *name)
{
	for (int k = 0; k < FAKE_WORKERS; k++) {
		char want[16];
		snprintf(want, sizeof(want), "wk%d", k);
		if (!strcmp(name, want))
			return k;
	}
	return -1;
}

/* Called with coord.mu held. */
static void record_holding(fake_worker *f, const Splitchain__Holding *h)
{
	f->held_job = h ? h->job_id : 0;
	f->held_version = h ? h->placement_version : 0;
	f->held_stage = h ? h->stage : 0;
}

static int muted(sc_rpc_reply *rep)
{
	int m;
	pthread_mutex_lock(&coord.mu);
	m = coord.muted;
	pthread_mutex_unlock(&coord.mu);
	if (m)
		sc_rpc_reply_err(rep, SC_STATUS_UNAVAILABLE, "muted by the test");
	return m;
}

static void coord_register(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	Splitchain__RegisterRequest *r;
	Splitchain__RegisterReply out = SPLITCHAIN__REGISTER_REPLY__INIT;
	fake_worker *f;
	int k;

	if (muted(rep) || sc_rpc_unpack(&splitchain__register_request__descriptor, req, len,
					(ProtobufCMessage **)&r, rep))
		return;
	k = worker_index(r->name);
	if (k < 0 || !r->control_addr[0] || !r->data_addr[0] || r->gflops <= 0 ||
	    r->memory_bytes == 0 || strcmp(r->device, "cpu")) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT, "bad registration of '%s'",
				 r->name);
		goto out;
	}
	pthread_mutex_lock(&coord.mu);
	f = &coord.w[k];
	snprintf(f->name, sizeof(f->name), "%s", r->name);
	snprintf(f->control, sizeof(f->control), "%s", r->control_addr);
	snprintf(f->data, sizeof(f->data), "%s", r->data_addr);
	snprintf(f->secret, sizeof(f->secret), "%.*s", (int)r->coordinator_secret.len,
		 (const char *)r->coordinator_secret.data);
	f->id = coord.next_id++;
	f->registrations++;
	record_holding(f, r->n_holdings ? r->holdings[0] : NULL);
	out.worker_id = f->id;
	out.heartbeat_ms = FAKE_HEARTBEAT_MS;
	out.lease_ms = FAKE_LEASE_MS;
	pthread_mutex_unlock(&coord.mu);
	sc_rpc_reply_pb(rep, MSG(&out));
out:
	protobuf_c_message_free_unpacked(MSG(r), NULL);
}

static void coord_heartbeat(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	Splitchain__HeartbeatRequest *r;
	Splitchain__HeartbeatReply out = SPLITCHAIN__HEARTBEAT_REPLY__INIT;
	Splitchain__Holding rel = SPLITCHAIN__HOLDING__INIT, *relp = &rel;
	int known = 0;

	if (muted(rep) || sc_rpc_unpack(&splitchain__heartbeat_request__descriptor, req, len,
					(ProtobufCMessage **)&r, rep))
		return;
	pthread_mutex_lock(&coord.mu);
	for (int k = 0; k < FAKE_WORKERS; k++)
		if (coord.w[k].id == r->worker_id && r->worker_id >= coord.min_valid_id &&
		    (!strcmp(r->state, "idle") || !strcmp(r->state, "busy"))) {
			fake_worker *f = &coord.w[k];
			f->heartbeats++;
			record_holding(f, r->n_holdings ? r->holdings[0] : NULL);
			f->notices += (int)r->n_notices;
			if (r->n_notices)
				snprintf(f->last_notice, sizeof(f->last_notice), "%s",
					 r->notices[r->n_notices - 1]);
			rel.job_id = coord.fence_job[k];
			rel.placement_version = coord.fence_version[k];
			out.n_releases = rel.job_id ? 1 : 0;
			out.releases = &relp;
			known = 1;
		}
	pthread_mutex_unlock(&coord.mu);
	if (known)
		sc_rpc_reply_pb(rep, MSG(&out));
	else
		sc_rpc_reply_err(rep, SC_STATUS_NOT_FOUND, "no worker %llu",
				 (unsigned long long)r->worker_id);
	protobuf_c_message_free_unpacked(MSG(r), NULL);
}

static const sc_rpc_method coord_methods[] = {
	{ "Coordinator.Register", coord_register },
	{ "Coordinator.Heartbeat", coord_heartbeat },
	{ NULL, NULL },
};

sc_err fake_coord_open(const char *url)
{
	SC_TRY(sc_rpc_server_open(&coord.srv, url, coord_methods, NULL, 4));
	snprintf(coord.url, sizeof(coord.url), "%s", sc_rpc_server_url(coord.srv));
	return SC_OK;
}

void fake_coord_close(void)
{
	sc_rpc_server_close(coord.srv);
	coord.srv = NULL;
}

const char *fake_coord_url(void)
{
	return coord.url;
}

int fake_coord_get(int k, fake_worker *out)
{
	pthread_mutex_lock(&coord.mu);
	*out = coord.w[k];
	pthread_mutex_unlock(&coord.mu);
	return out->registrations;
}

void fake_coord_fence(int k, uint64_t job, uint32_t version)
{
	pthread_mutex_lock(&coord.mu);
	coord.fence_job[k] = job;
	coord.fence_version[k] = version;
	pthread_mutex_unlock(&coord.mu);
}

void fake_coord_mute(int on)
{
	pthread_mutex_lock(&coord.mu);
	coord.muted = on;
	pthread_mutex_unlock(&coord.mu);
}

uint64_t fake_coord_forget(void)
{
	uint64_t id;
	pthread_mutex_lock(&coord.mu);
	id = coord.min_valid_id = coord.next_id;
	pthread_mutex_unlock(&coord.mu);
	return id;
}

int fake_wait_all(int (*cond)(int k, void *arg), void *arg, double secs)
{
	for (int i = 0; i < secs * 20; i++) {
		int all = 1;
		for (int k = 0; k < FAKE_WORKERS; k++)
			all &= cond(k, arg);
		if (all)
			return 0;
		usleep(50000);
	}
	return 1;
}

pid_t fake_spawn_worker(const char *bin, int k)
{
	char name[16];
	char *argv[] = { (char *)bin, "--coordinator",  coord.url, "--name",     name, "--threads",
			 "1",         "--data-timeout", "30",      "--insecure", NULL };
	pid_t pid;

	snprintf(name, sizeof(name), "wk%d", k);
	pid = fork();
	if (pid == 0) {
		setenv("SPLITCHAIN_LOG", "warn", 1);
		execv(bin, argv);
		_exit(127);
	}
	return pid;
}

int fake_wait_exit(pid_t pid, double secs)
{
	int st;
	for (int i = 0; i < secs * 20; i++) {
		if (waitpid(pid, &st, WNOHANG) == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		usleep(50000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	return -1;
}
