/* coord_main.c — splitchain-coordinator: the database's only writer, the
 * worker registry, the job queue, placement and the step loop. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "coord.h"
#include "coord_prom.h"
#include "sc_http_metrics.h"
#include "sc_log.h"
#include "sc_version.h"

static const char help[] =
    "usage: splitchain-coordinator [options]\n"
    "\n"
    "Runs the splitchain coordinator: workers register with it, the CLI submits\n"
    "jobs to it, and it keeps every durable fact in one SQLite database.\n"
    "\n"
    "options:\n"
    "  --listen URL          RPC address for workers and the CLI (default tcp://127.0.0.1:7700,\n"
    "                        tls+tcp://127.0.0.1:7700 with --tls-cert)\n"
    "  --fetch-listen URL    where workers fetch registered models' tensors, apart from\n"
    "                        the RPCs (default: --listen's host and port + 1, else a free port)\n"
    "  --db PATH             the SQLite database (default splitchain.db)\n"
    "  --heartbeat-ms N      workers' heartbeat interval            (default 1000)\n"
    "  --lost-after-ms N     a worker silent this long is lost      (default 10000)\n"
    "  --step-timeout-ms N   longest a stage may take for one step  (default 600000)\n"
    "  --stall-after-ms N    a running job with no step for this long is interrupted\n"
    "                        and resumed from its last checkpoint; 0: 10 x its recent\n"
    "                        step time, at least 5000                (default 0)\n"
    "  --keep-checkpoints N  checkpoints kept per job               (default 3)\n"
    "  --tls-cert FILE       the coordinator's certificate (PEM, signed by the cluster CA)\n"
    "  --tls-key FILE        its private key (PEM)\n"
    "  --tls-ca FILE         the cluster CA's certificate: tls+tcp:// addresses use mutual\n"
    "                        TLS, with workers and the CLI alike; a peer without a\n"
    "                        certificate the CA signed is refused (event tls_refused)\n"
    "  --insecure            allow plaintext tcp:// addresses and workers without a join\n"
    "                        token (a trusted network only): warned of at start and at\n"
    "                        every worker's register\n"
    "  --metrics-listen HOST:PORT  serve Prometheus metrics at http://HOST:PORT/metrics\n"
    "                        (port 0: a free one, logged at start; default: none)\n"
    "  --join-token-file F   the secret workers present to join (only its hash is kept);\n"
    "                        required unless --insecure (default $SPLITCHAIN_JOIN_TOKEN_FILE)\n"
    "  --model-root DIR      models and tokenizers are opened only under DIR\n"
    "                        (default: the working directory)\n"
    "  --data-root DIR       training and eval data are opened only under DIR\n"
    "                        (default: the working directory)\n"
    "  --max-jobs-per-user N a user's queued + running jobs, at most (default 0: no cap)\n"
    "  --rate-limit N        a user's requests per second, at most  (default 0: no limit)\n"
    "  --rate-burst N        ... in bursts of up to N               (default 2 x --rate-limit)\n"
    "  --help\n"
    "\n"
    "users (on the coordinator's host, whether or not the daemon runs):\n"
    "  splitchain-coordinator --db FILE users add NAME [--admin]   prints the new token once\n"
    "  splitchain-coordinator --db FILE users list\n"
    "  splitchain-coordinator --db FILE users revoke NAME\n";

static int int_opt(const char *flag, const char *s, long lo, long hi, int *out)
{
	char *end;
	long v = strtol(s, &end, 10);
	if (end == s || *end || v < lo || v > hi) {
		fprintf(stderr,
			"splitchain-coordinator: %s expects a whole number in [%ld, %ld], got "
			"'%s'\n",
			flag, lo, hi, s);
		return 1;
	}
	*out = (int)v;
	return 0;
}

/* The bulk server (coord_bulk_methods) on fetch, or beside the RPC
 * server: tcp's port + 1 (a free port when that is taken or the port is
 * 0), an ipc path + ".fetch". 0, or 1 with the error printed. */
static int open_bulk(sc_rpc_server **out, coord *c, const char *fetch)
{
	char url[300];
	const char *bound = sc_rpc_server_url(c->srv), *colon = strrchr(bound, ':');
	int tcp = !strncmp(bound, "tcp://", 6) || !strncmp(bound, "tls+tcp://", 10);
	long port = colon && tcp ? strtol(colon + 1, NULL, 10) : -1;
	if (fetch)
		snprintf(url, sizeof(url), "%s", fetch);
	else if (port > 0 && port < 65535)
		snprintf(url, sizeof(url), "%.*s:%ld", (int)(colon - bound), bound, port + 1);
	else if (port == 0 || colon)
		snprintf(url, sizeof(url), "%.*s:0", (int)(colon - bound), bound);
	else
		snprintf(url, sizeof(url), "%s.fetch", bound);
	if (sc_rpc_server_open_auth(out, url, coord_bulk_methods, c, 16, coord_idempotent,
				    coord_auth_check, c->auth) == SC_OK)
		return 0;
	if (!fetch && port > 0) { /* port + 1 taken: any free port */
		snprintf(url, sizeof(url), "%.*s:0", (int)(colon - bound), bound);
		if (sc_rpc_server_open_auth(out, url, coord_bulk_methods, c, 16, coord_idempotent,
					    coord_auth_check, c->auth) == SC_OK)
			return 0;
	}
	fprintf(stderr, "splitchain-coordinator: cannot listen for tensor fetches on %s: %s\n", url,
		sc_err_detail());
	return 1;
}

int main(int argc, char **argv)
{
	/* One option a line, so that adding one changes one line. */
	/* clang-format off */
	static const struct option opts[] = {
		{ "listen", 1, 0, 'l' },
		{ "db", 1, 0, 'd' },
		{ "heartbeat-ms", 1, 0, 'H' },
		{ "lost-after-ms", 1, 0, 'L' },
		{ "step-timeout-ms", 1, 0, 'S' },
		{ "stall-after-ms", 1, 0, 'A' },
		{ "keep-checkpoints", 1, 0, 'K' },
		{ "help", 0, 0, 'h' },
		{ "version", 0, 0, 'V' },
		{ "fetch-listen", 1, 0, 'F' },
		{ "metrics-listen", 1, 0, 'P' },
		{ "join-token-file", 1, 0, 'j' },
		{ "insecure", 0, 0, 'I' },
		{ "model-root", 1, 0, 'M' },
		{ "data-root", 1, 0, 'D' },
		{ "max-jobs-per-user", 1, 0, 'Q' },
		{ "rate-limit", 1, 0, 'R' },
		{ "rate-burst", 1, 0, 'B' },
		{ "tls-cert", 1, 0, 'C' },
		{ "tls-key", 1, 0, 'Y' },
		{ "tls-ca", 1, 0, 'T' },
		{ 0, 0, 0, 0 },
	};
	/* clang-format on */
	static const char default_listen[] = "tcp://127.0.0.1:7700";
	const char *listen = default_listen, *dbpath = "splitchain.db", *fetch = NULL;
	const char *cert = NULL, *key = NULL, *ca = NULL;
	sc_rpc_server *bulk = NULL;
	const char *metrics = NULL;
	coord_prom *prom = NULL;
	char murl[300];
	coord c = { .heartbeat_ms = 1000,
		    .lost_after_ms = 10000,
		    .step_timeout_ms = 600000,
		    .checkpoint_keep = 3 };
	coord_auth_opts ao = { 0 };
	int rate = 0, burst = 0;
	pthread_t sched;
	sigset_t sigs;
	int sig = 0;
	int ch;
	sc_err rc;

	opterr = 0;
	/* "+": options end at the first word, so that `users add NAME --admin`
	 * keeps its own flag. */
	while ((ch = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
		int bad = 0;
		switch (ch) {
		case 'l': listen = optarg; break;
		case 'F': fetch = optarg; break;
		case 'P':
			if (sc_http_metrics_url_of(optarg, murl, sizeof(murl))) {
				fprintf(stderr, "splitchain-coordinator: %s\n", sc_err_detail());
				return 2;
			}
			metrics = optarg;
			break;
		case 'C': cert = optarg; break;
		case 'Y': key = optarg; break;
		case 'T': ca = optarg; break;
		case 'd': dbpath = optarg; break;
		case 'H':
			bad = int_opt("--heartbeat-ms", optarg, 10, 3600000, &c.heartbeat_ms);
			break;
		case 'L':
			bad = int_opt("--lost-after-ms", optarg, 100, 86400000, &c.lost_after_ms);
			break;
		case 'S':
			bad =
			    int_opt("--step-timeout-ms", optarg, 100, 86400000, &c.step_timeout_ms);
			break;
		case 'A':
			bad = int_opt("--stall-after-ms", optarg, 0, 86400000, &c.stall_after_ms);
			break;
		case 'K':
			bad = int_opt("--keep-checkpoints", optarg, 1, 1000000, &c.checkpoint_keep);
			break;
		case 'j': ao.join_token_file = optarg; break;
		case 'I': ao.insecure = c.insecure = 1; break;
		case 'M': ao.model_root = optarg; break;
		case 'D': ao.data_root = optarg; break;
		case 'Q':
			bad = int_opt("--max-jobs-per-user", optarg, 0, 1000000,
				      &ao.max_jobs_per_user);
			break;
		case 'R': bad = int_opt("--rate-limit", optarg, 0, 1000000, &rate); break;
		case 'B': bad = int_opt("--rate-burst", optarg, 1, 1000000, &burst); break;
		case 'h': fputs(help, stdout); return 0;
		case 'V': printf("splitchain-coordinator %s\n", SC_VERSION); return 0;
		default:
			fprintf(stderr,
				"splitchain-coordinator: unknown or incomplete option '%s'\n"
				"Run 'splitchain-coordinator --help' for usage.\n",
				argv[optind - 1]);
			return 2;
		}
		if (bad)
			return 2;
	}
	if (optind < argc && !strcmp(argv[optind], "users"))
		return coord_users_main(dbpath, argc - optind - 1, argv + optind + 1);
	if (optind < argc) {
		fprintf(stderr, "splitchain-coordinator: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (!ao.join_token_file && getenv("SPLITCHAIN_JOIN_TOKEN_FILE") &&
	    *getenv("SPLITCHAIN_JOIN_TOKEN_FILE"))
		ao.join_token_file = getenv("SPLITCHAIN_JOIN_TOKEN_FILE");
	ao.rate = rate;
	ao.burst = burst ? burst : 2 * rate;
	if ((cert || key || ca) && !(cert && key && ca)) {
		fprintf(stderr, "splitchain-coordinator: --tls-cert, --tls-key and --tls-ca go "
				"together\n");
		return 2;
	}
	if (cert && listen == default_listen) /* with a certificate, TLS by default */
		listen = "tls+tcp://127.0.0.1:7700";
	if (coord_transport_check(&c, listen, fetch, cert, key, ca))
		return 1;
	/* Every thread (nng's, ours) inherits the blocked signals; only the
	 * sigwait below takes them. (A handler with pause() here could miss a
	 * signal that a thread other than main received.) */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	pthread_mutex_init(&c.mu, NULL);
	pthread_cond_init(&c.wake, NULL);
	if ((rc = sc_db_open(&c.db, dbpath))) {
		fprintf(stderr, "splitchain-coordinator: %s\n", sc_err_detail());
		return 1;
	}
	if ((rc = coord_auth_open(&c.auth, c.db, &ao))) {
		fprintf(stderr, "splitchain-coordinator: %s\n", sc_err_detail());
		sc_db_close(c.db);
		return 2;
	}
	if (!ao.join_token_file) {
		sc_warn("coordinator",
			"--insecure without --join-token-file: ANY host that reaches "
			"%s may join as a worker and receive model segments",
			listen);
		sc_db_event(c.db, 0, 0, SC_LOG_WARN, "insecure",
			    "no join token (--insecure): any host may join as a worker");
	}
	/* Workers known from an earlier run count as lost until they register. */
	{
		sc_db_worker *ws = NULL;
		int n = 0;
		if (sc_db_workers_list(c.db, &ws, &n) == SC_OK)
			for (int i = 0; i < n; i++)
				if (ws[i].state != SC_WORKER_LOST)
					sc_db_worker_set_state(c.db, ws[i].id, SC_WORKER_LOST);
		free(ws);
	}
	if ((rc = sc_rpc_server_open_auth(&c.srv, listen, coord_methods, &c, 16, coord_idempotent,
					  coord_auth_check, c.auth))) {
		fprintf(stderr, "splitchain-coordinator: cannot listen on %s: %s\n", listen,
			sc_err_detail());
		sc_db_close(c.db);
		return 1;
	}
	if (open_bulk(&bulk, &c, fetch)) {
		sc_rpc_server_close(c.srv);
		sc_db_close(c.db);
		return 1;
	}
	snprintf(c.fetch_addr, sizeof(c.fetch_addr), "%s", sc_rpc_server_url(bulk));
	atomic_store_explicit(&c.serving, 1, memory_order_release);
	if (metrics && coord_prom_start(&prom, &c, dbpath, metrics)) {
		fprintf(stderr, "splitchain-coordinator: %s\n", sc_err_detail());
		sc_rpc_server_close(bulk);
		sc_rpc_server_close(c.srv);
		sc_db_close(c.db);
		return 1;
	}
	if (prom)
		sc_info("coordinator", "metrics on %s", coord_prom_where(prom));
	sc_db_event(c.db, 0, 0, SC_LOG_INFO, "coordinator_started",
		    "listening on %s (tensors on %s)", sc_rpc_server_url(c.srv), c.fetch_addr);
	sc_info("coordinator", "splitchain-coordinator %s listening on %s, database %s", SC_VERSION,
		sc_rpc_server_url(c.srv), dbpath);
	if (pthread_create(&sched, NULL, coord_scheduler, &c) != 0) {
		fprintf(stderr, "splitchain-coordinator: cannot start the scheduler\n");
		coord_prom_stop(prom);
		sc_rpc_server_close(c.srv);
		sc_db_close(c.db);
		return 1;
	}
	for (;;) { /* once a second: the TLS listeners' refused handshakes */
		struct timespec tick = { 1, 0 };
		if ((sig = sigtimedwait(&sigs, NULL, &tick)) > 0)
			break;
		coord_tls_poll(&c);
	}
	sc_info("coordinator", "signal %d: stopping (running jobs resume at the next start)", sig);
	pthread_mutex_lock(&c.mu);
	atomic_store(&c.stopping, 1);
	for (live_job *j = c.jobs; j; j = j->next) /* a runner waiting on a call ends now */
		coord_abort_job(&c, j);
	pthread_cond_broadcast(&c.wake);
	pthread_mutex_unlock(&c.mu);
	pthread_join(sched, NULL);
	coord_join_jobs(&c);
	coord_prom_stop(prom); /* before the database and the registry it reads */
	sc_rpc_server_close(bulk);
	sc_rpc_server_close(c.srv);
	/* The workers' clients (c.peers) are left to the process's exit: closing
	 * them could hang in nng 1.5.2 should a late reply arrive (coord.h). */
	sc_db_event(c.db, 0, 0, SC_LOG_INFO, "coordinator_stopped", "clean shutdown");
	sc_db_close(c.db);
	coord_auth_free(c.auth);
	free(c.workers);
	return 0;
}
