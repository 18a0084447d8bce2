/* auth.c — the worker's side of who may call it (auth.h). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "auth.h"
#include "sc_log.h"
#include "sc_token.h"
#include "worker.h"

static struct {
	char secret[SC_TOKEN_MAX]; /* the coordinator presents it */
	char join[SC_TOKEN_MAX];   /* "": none */
	char peer[SC_TOKEN_MAX];   /* from join; "" without one */
} st;

static pthread_mutex_t session_mu = PTHREAD_MUTEX_INITIALIZER;
static uint8_t session[SC_RPC_MAX_AUTH]; /* under session_mu */
static size_t session_len;               /* under session_mu */

static atomic_ulong refusals; /* logged: the first and every 100th */

sc_err worker_auth_init(const char *join_token_file)
{
	SC_TRY(sc_token_new("scw_", st.secret));
	if (join_token_file) {
		SC_TRY(sc_token_read_file(join_token_file, 0, st.join, sizeof(st.join)));
		sc_token_peer(st.join, st.peer);
	}
	return SC_OK;
}

const char *worker_auth_secret(void)
{
	return st.secret;
}

const char *worker_auth_join_token(void)
{
	return st.join;
}

void worker_auth_set_session(sc_rpc_client *coord, const uint8_t *cred, size_t len)
{
	pthread_mutex_lock(&session_mu);
	session_len = len <= sizeof(session) ? len : 0;
	if (session_len)
		memcpy(session, cred, session_len);
	pthread_mutex_unlock(&session_mu);
	worker_auth_session(coord);
}

void worker_auth_session(sc_rpc_client *cl)
{
	pthread_mutex_lock(&session_mu);
	(void)sc_rpc_client_set_auth(cl, session, session_len);
	pthread_mutex_unlock(&session_mu);
}

void worker_auth_peer(sc_rpc_client *cl)
{
	(void)sc_rpc_client_set_auth(cl, st.peer, strlen(st.peer));
}

static int is(const uint8_t *cred, size_t len, const char *want)
{
	size_t n = strlen(want);
	return n && len == n && sc_token_equal(cred, want, n);
}

static int peer_method(const char *m)
{
	return !strcmp(m, "Worker.Echo") || !strcmp(m, "Worker.FetchTensor");
}

static int gen_method(const char *m)
{
	return !strncmp(m, "Worker.Gen", 10);
}

int worker_auth_check(void *arg, const char *method, const uint8_t *cred, size_t len,
		      sc_rpc_principal *who, char *msg, size_t msg_size)
{
	worker *w = arg;
	char note[200];

	if (is(cred, len, st.secret)) {
		who->kind = SC_PRINCIPAL_COORDINATOR;
		snprintf(who->name, sizeof(who->name), "coordinator");
		return SC_STATUS_OK;
	}
	if (peer_method(method) && (!st.peer[0] || is(cred, len, st.peer))) {
		who->kind = SC_PRINCIPAL_PEER;
		snprintf(who->name, sizeof(who->name), "peer");
		return SC_STATUS_OK;
	}
	if (gen_method(method) && len == 4 + 2 * SC_SHA256_BYTES && !memcmp(cred, "scg_", 4)) {
		/* Checked against the model it opens in Worker.GenOpen; a session
		 * id is the key to GenStep and GenClose. */
		who->kind = SC_PRINCIPAL_GENERATOR;
		snprintf(who->name, sizeof(who->name), "generator");
		_Static_assert(sizeof(who->proof) == 2 * SC_SHA256_BYTES, "a ticket's hex digits");
		memcpy(who->proof, cred + 4, sizeof(who->proof));
		return SC_STATUS_OK;
	}
	snprintf(msg, msg_size, "%s: this worker takes it only from its coordinator%s (%s)", method,
		 peer_method(method) ? " or the cluster's workers" : "",
		 len ? "the credential is not the coordinator's" : "no credential");
	snprintf(note, sizeof(note), "refused a %.64s call: %s", method,
		 len ? "wrong credential" : "no credential");
	if (atomic_fetch_add(&refusals, 1) % 100 == 0)
		sc_warn("worker", "%s (PERMISSION_DENIED)", note);
	if (w)
		worker_note(w, note);
	return SC_STATUS_PERMISSION_DENIED;
}

int worker_auth_gen_allowed(const char *model_path, const char *model)
{
	const sc_rpc_principal *who = sc_rpc_caller();
	char ticket[SC_TOKEN_MAX];

	if (who->kind == SC_PRINCIPAL_COORDINATOR)
		return 1;
	if (who->kind != SC_PRINCIPAL_GENERATOR)
		return 0;
	sc_token_gen_ticket(st.secret, model_path, model, ticket);
	return sc_token_equal(ticket + 4, who->proof, sizeof(who->proof));
}
