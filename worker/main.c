/* main.c — splitchain-worker: flags, start-up (backend, compute-rate probe,
 * data-plane listener, RPC server, announcer thread) and a clean shutdown
 * on SIGTERM / SIGINT. Exit codes: 0 ok, 1 error, 2 usage. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <sched.h>

#include "auth.h"
#include "deliver.h"
#include "sc_http_metrics.h"
#include "sc_log.h"
#include "sc_tls.h"
#include "sc_units.h"
#include "sc_version.h"
#include "worker.h"

enum { EXIT_OK = 0, EXIT_ERROR = 1, EXIT_USAGE = 2, EXIT_DEVICE = 3 };

/* RPC contexts: a long Step of each job never starves the other methods. */
#define RPC_CONTEXTS(jobs) (4 + 4 * (jobs))

static const char usage_text[] =
    "usage: splitchain-worker --coordinator URL [options]\n\n"
    "Holds a segment of a model's layers for the splitchain coordinator: runs its\n"
    "forward and backward passes, keeps its LoRA adapters and optimizer state, and\n"
    "passes activations and gradients to its neighbours in the chain.\n\n"
    "options:\n  --coordinator URL    the coordinator's RPC address (required)\n"
    "  --listen URL         this worker's RPC address          (default tcp://127.0.0.1:0,\n"
    "                       tls+tcp://127.0.0.1:0 with --tls-cert)\n"
    "  --data URL           this worker's data-plane address   (the same default)\n"
    "                       port 0 picks a free port; the bound addresses are logged\n"
    "                       and reported to the coordinator\n"
    "  --name NAME          the name the coordinator shows     (default hostname-pid)\n"
    "  --device DEV         cpu or cuda:N                      (default cpu)\n"
    "  --threads N          CPU threads, 0 = all               (default 0)\n"
    "  --data-timeout S     seconds to wait for a neighbour's tensor before the step\n"
    "                       fails                              (default 120)\n"
    "  --probe-every-s N    measure the links to the coordinator and the other workers\n"
    "                       again every N s while idle, 0 = once (default 60)\n"
    "  --memory-reserve X   memory of the device kept back from the jobs: a size\n"
    "                       (512M, 2G) or a share (10%); the planner places on this\n"
    "                       worker only stages that fit the rest    (default 10%)\n"
    "  --cache DIR          keep registered models' tensors in DIR (content-addressed,\n"
    "                       kept across restarts): needed to take a job of a model\n"
    "                       registered with `splitchain models add`\n"
    "  --cache-limit SIZE   the cache's size limit, e.g. 2G, 500M (default: none);\n"
    "                       the least recently used tensors not in use go first\n"
    "  --owner-data DIR     make this worker a data owner: jobs submitted with\n"
    "                       --owner NAME read their data under DIR, on this machine\n"
    "                       only; tokens and targets never leave this process\n"
    "                       (docs/privacy.md)\n"
    "  --jobs N             serve up to N jobs at once (1..8, default 1): jobs of\n"
    "                       the same model share one copy of its frozen weights, each\n"
    "                       with its own adapters, optimizer state and activations;\n"
    "                       job slot k listens on the --data port + k (or a free port\n"
    "                       when --data's is 0)\n"
    "  --metrics-listen HOST:PORT  serve Prometheus metrics at http://HOST:PORT/metrics\n"
    "                       (port 0: a free one, logged at start; default: none)\n"
    "  --join-token-file F  the cluster's join token (the coordinator's\n"
    "                       --join-token-file): presented when registering\n"
    "                       (default $SPLITCHAIN_JOIN_TOKEN_FILE)\n"
    "  --tls-cert FILE      this worker's certificate (PEM, signed by the cluster CA)\n"
    "  --tls-key FILE       its private key (PEM)\n"
    "  --tls-ca FILE        the cluster CA's certificate: every tls+tcp:// address\n"
    "                       (RPC, data plane, fetches, probes) uses mutual TLS and\n"
    "                       accepts only peers with certificates the CA signed\n"
    "  --insecure           allow plaintext tcp:// addresses (a trusted network only)\n"
    "  --help               this text\n  --version            the version\n"
    "\nSPLITCHAIN_LOG=debug|info|warn|error sets the log level. SIGTERM or SIGINT\n"
    "stops the worker cleanly.\n"
    "\nexit status: 0 stopped by a signal, 1 could not start, 2 bad usage, 3 the\n"
    "device failed in a way this process cannot recover from (e.g. a CUDA illegal\n"
    "address): the error went to the coordinator; restart the worker; 4 a data-plane\n"
    "socket close never returned (a known hang of nng 1.5.2): restart the worker.\n";

/* *out = the bytes --memory-reserve text keeps back of total: a size, or a
 * share "N%" (0 to 100, a whole or decimal number). */
static sc_err reserve_of(const char *text, uint64_t total, uint64_t *out)
{
	size_t n = strlen(text);
	uint64_t v = 0;
	if (n > 1 && text[n - 1] == '%') {
		char *end;
		double pct = strtod(text, &end);
		if (end != text + n - 1 || !(pct >= 0 && pct <= 100))
			return sc_errf(SC_EINVAL, "'%s' is not a share: 0%% to 100%%", text);
		v = (uint64_t)((double)total * pct / 100.0);
	} else {
		SC_TRY(sc_parse_bytes(text, &v));
	}
	if (out)
		*out = v;
	return SC_OK;
}

static int usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "splitchain-worker: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nRun 'splitchain-worker --help' for usage.\n");
	return EXIT_USAGE;
}

static int parse_int(const char *s, long lo, long hi, int *out)
{
	char *end;
	long v;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return 1;
	*out = (int)v;
	return 0;
}

static const char default_addr[] = "tcp://127.0.0.1:0";
static const char default_tls_addr[] = "tls+tcp://127.0.0.1:0";

/* 0: run with *o; otherwise the exit code (help printed or usage error). */
static int parse_args(int argc, char **argv, worker_opts *o, int *done)
{
	/* One option a line, so that adding one changes one line. */
	/* clang-format off */
	static const struct option longopts[] = {
		{ "coordinator", 1, 0, 'c' },
		{ "listen", 1, 0, 'l' },
		{ "data", 1, 0, 'd' },
		{ "name", 1, 0, 'n' },
		{ "device", 1, 0, 'D' },
		{ "threads", 1, 0, 't' },
		{ "data-timeout", 1, 0, 'T' },
		{ "probe-every-s", 1, 0, 'P' },
		{ "memory-reserve", 1, 0, 'R' },
		{ "cache", 1, 0, 'K' },
		{ "cache-limit", 1, 0, 'L' },
		{ "owner-data", 1, 0, 'O' },
		{ "jobs", 1, 0, 'J' },
		{ "help", 0, 0, 'h' },
		{ "version", 0, 0, 'V' },
		{ "metrics-listen", 1, 0, 'M' },
		{ "join-token-file", 1, 0, 'j' },
		{ "tls-cert", 1, 0, 'C' },
		{ "tls-key", 1, 0, 'Y' },
		{ "tls-ca", 1, 0, 'A' },
		{ "insecure", 0, 0, 'I' },
		{ 0, 0, 0, 0 },
	};
	/* clang-format on */
	int c, secs;

	*done = 0;
	*o = (worker_opts){ .listen = default_addr,
			    .data = default_addr,
			    .device = "cpu",
			    .data_timeout_ms = 120000,
			    .probe_every_s = 60,
			    .memory_reserve = "10%",
			    .jobs = 1 };
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'c': o->coordinator = optarg; break;
		case 'l': o->listen = optarg; break;
		case 'd': o->data = optarg; break;
		case 'n': o->name = optarg; break;
		case 'D': o->device = optarg; break;
		case 't':
			if (parse_int(optarg, 0, 4096, &o->threads))
				return usage(
				    "--threads expects a whole number in [0, 4096], got '%s'",
				    optarg);
			break;
		case 'T':
			if (parse_int(optarg, 1, 86400, &secs))
				return usage(
				    "--data-timeout expects seconds in [1, 86400], got '%s'",
				    optarg);
			o->data_timeout_ms = secs * 1000;
			break;
		case 'P':
			if (parse_int(optarg, 0, 86400, &o->probe_every_s))
				return usage(
				    "--probe-every-s expects seconds in [0, 86400], got '%s'",
				    optarg);
			break;
		case 'K': o->cache_dir = optarg; break;
		case 'M': {
			char url[300];
			if (sc_http_metrics_url_of(optarg, url, sizeof(url)))
				return usage("%s", sc_err_detail());
			o->metrics_listen = optarg;
			break;
		}
		case 'j': o->join_token = optarg; break;
		case 'J':
			if (parse_int(optarg, 1, WORKER_MAX_SLOTS, &o->jobs))
				return usage("--jobs expects a whole number in [1, %d], got '%s'",
					     WORKER_MAX_SLOTS, optarg);
			break;
		case 'O': {
			struct stat st;
			if (!optarg[0] || stat(optarg, &st) || !S_ISDIR(st.st_mode))
				return usage("--owner-data expects a directory, got '%s'", optarg);
			o->owner_data = optarg;
			break;
		}
		case 'L':
			if (sc_parse_bytes(optarg, &o->cache_limit) || !o->cache_limit)
				return usage("--cache-limit expects a size such as 500M or 2G, got "
					     "'%s'",
					     optarg);
			break;
		case 'R':
			if (reserve_of(optarg, 1, NULL))
				return usage("--memory-reserve: %s", sc_err_detail());
			o->memory_reserve = optarg;
			break;
		case 'C': o->tls_cert = optarg; break;
		case 'Y': o->tls_key = optarg; break;
		case 'A': o->tls_ca = optarg; break;
		case 'I': o->insecure = 1; break;
		case 'h':
			fputs(usage_text, stdout);
			*done = 1;
			return EXIT_OK;
		case 'V':
			printf("splitchain-worker %s\n", SC_VERSION);
			*done = 1;
			return EXIT_OK;
		default: return usage("unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return usage("unexpected argument '%s'", argv[optind]);
	if (!o->coordinator || !o->coordinator[0])
		return usage("%s", "--coordinator URL is required");
	if (o->name && (!o->name[0] || strlen(o->name) >= 128))
		return usage("--name must have 1 to 127 characters, got '%s'", o->name);
	if ((o->tls_cert || o->tls_key || o->tls_ca) && !(o->tls_cert && o->tls_key && o->tls_ca))
		return usage("%s", "--tls-cert, --tls-key and --tls-ca go together");
	if (o->tls_cert && o->listen == default_addr) /* with a certificate, TLS by default */
		o->listen = default_tls_addr;
	if (o->tls_cert && o->data == default_addr)
		o->data = default_tls_addr;
	return EXIT_OK;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* GFLOP/s of the backend's sgemm on GPT-2 small's qkv projection of a
 * 1024-row micro-batch: the median of nine windows of about 0.06 s, so that
 * neither a neighbour busy for a moment (workers often start together) nor
 * a short burst of clock boost decides the placement. 0 when it cannot run. */
#define PROBE_WINDOWS 9

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double probe_gflops(sc_backend *be)
{
	double rates[PROBE_WINDOWS];
	const int m = 1024, n = 2304, k = 768;
	void *a = NULL, *b = NULL, *c = NULL;
	double t0, t = 0, rate = 0;
	int calls = 0;

	if (be->ops->alloc(be, &a, (size_t)m * k * sizeof(float)) ||
	    be->ops->alloc(be, &b, (size_t)k * n * sizeof(float)) ||
	    be->ops->alloc(be, &c, (size_t)m * n * sizeof(float)) ||
	    be->ops->gemm(be, 0, 0, m, n, k, 1.0f, a, k, b, n, 0.0f, c, n) || be->ops->sync(be))
		goto out;
	for (int w = 0; w < PROBE_WINDOWS; w++) {
		calls = 0;
		t0 = now_s();
		do {
			if (be->ops->gemm(be, 0, 0, m, n, k, 1.0f, a, k, b, n, 0.0f, c, n) ||
			    be->ops->sync(be))
				goto out;
			calls++;
			t = now_s() - t0;
		} while (t < 0.06);
		rates[w] = 2.0 * m * n * k * calls / t / 1e9;
	}
	qsort(rates, PROBE_WINDOWS, sizeof(double), cmp_double);
	rate = rates[PROBE_WINDOWS / 2];
out:
	be->ops->free_buf(be, a);
	be->ops->free_buf(be, b);
	be->ops->free_buf(be, c);
	return rate;
}

/* Where our compute runs, for the planner: the kernel's boot id (equal for
 * every process, container or network namespace on one machine), the CPUs
 * we may run on and the threads the CPU backend runs. */
static void host_of(worker *w)
{
	FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
	cpu_set_t set;
	w->host_id[0] = '\0';
	if (f) {
		if (!fgets(w->host_id, sizeof(w->host_id), f))
			w->host_id[0] = '\0';
		w->host_id[strcspn(w->host_id, "\r\n")] = '\0';
		fclose(f);
	}
	w->host_cpus = sched_getaffinity(0, sizeof(set), &set) == 0
			   ? (unsigned)CPU_COUNT(&set)
			   : (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
	/* The CPU backend's default is OpenMP's: OMP_NUM_THREADS, else every CPU. */
	const char *env = getenv("OMP_NUM_THREADS");
	long def = env ? strtol(env, NULL, 10) : 0;
	w->threads = strcmp(w->be->name, "cpu") ? 0
		     : w->o.threads > 0         ? (unsigned)w->o.threads
		     : def > 0 && def < 4096    ? (unsigned)def
						: w->host_cpus;
}

/* The length of url's "tcp://" or "tls+tcp://", else 0. */
static int tcp_scheme(const char *url)
{
	return !strncmp(url, "tcp://", 6) ? 6 : !strncmp(url, "tls+tcp://", 10) ? 10 : 0;
}

/* A data owner's head listener beside its data listener bound at data. */
/* Job slot k's data address from --data: tcp's port + k (a port 0 stays
 * 0: any free port), an ipc path + ".k"; slot 0's is --data itself. */
static sc_err slot_url(char *out, size_t size, const char *data, int k)
{
	const char *colon = strrchr(data, ':');
	int scheme = tcp_scheme(data);
	char *end;
	long port;
	if (k == 0 || !scheme) {
		if (k == 0)
			snprintf(out, size, "%s", data);
		else
			snprintf(out, size, "%s.%d", data, k);
		return SC_OK;
	}
	port = colon ? strtol(colon + 1, &end, 10) : -1;
	if (!colon || colon <= data + scheme || *end || port < 0 || port + k > 65535)
		return sc_errf(SC_EINVAL, "--data %s: job slot %d needs port + %d", data, k, k);
	snprintf(out, size, "%.*s:%ld", (int)(colon - data), data, port ? port + k : 0);
	return SC_OK;
}

static void owner_url(char *out, size_t size, const char *data)
{
	const char *colon = strrchr(data, ':');
	if (tcp_scheme(data) && colon && colon > data + tcp_scheme(data))
		snprintf(out, size, "%.*s:0", (int)(colon - data), data);
	else
		snprintf(out, size, "%.*s.owner", (int)(size > 7 ? size - 7 : 0), data);
}

/* The address to give others for a bound url: a wildcard host ("tcp://:5555",
 * 0.0.0.0, ::) becomes this machine's hostname. */
static void advertise(char *out, size_t size, const char *bound)
{
	nng_url *u = NULL;
	char host[256];

	snprintf(out, size, "%s", bound);
	if (nng_url_parse(&u, bound))
		return;
	if (strstr(u->u_scheme, "tcp") &&
	    (!u->u_hostname[0] || !strcmp(u->u_hostname, "0.0.0.0") ||
	     !strcmp(u->u_hostname, "::") || !strcmp(u->u_hostname, "*")) &&
	    gethostname(host, sizeof(host)) == 0) {
		host[sizeof(host) - 1] = '\0';
		snprintf(out, size, "%s://%s:%s", u->u_scheme, host, u->u_port);
	}
	nng_url_free(u);
}

static const sc_rpc_method methods[] = {
	{ "Worker.Assign", worker_assign },
	{ "Worker.Restore", worker_restore },
	{ "Worker.Step", worker_step },
	{ "Worker.Apply", worker_apply },
	{ "Worker.GetState", worker_get_state },
	{ "Worker.Release", worker_release },
	{ "Worker.GenOpen", worker_gen_open },
	{ "Worker.GenStep", worker_gen_step },
	{ "Worker.GenClose", worker_gen_close },
	{ "Worker.Echo", worker_echo },
	{ "Worker.FetchTensor", worker_fetch_tensor }, /* deliver.h: peers fetch from our cache */
	{ "Worker.DataCheck", worker_data_check },     /* owner.c: a data owner's data */
	{ "Worker.SetGrads", worker_set_grads },       /* schedule.c: several owners' sum */
	{ NULL, NULL },
};

static void log_refusal(void *arg, const char *url, uint64_t n)
{
	(void)arg;
	sc_warn("worker",
		"%s: refused %" PRIu64 " connection%s at the TLS handshake (no certificate "
		"from the cluster CA, or not TLS)",
		url, n, n == 1 ? "" : "s");
}

/* Loads the TLS identity and checks every address against it: 0, or 1
 * with the error logged. */
static int worker_transport_check(const worker_opts *o)
{
	const char *what[] = { "--coordinator", "--listen", "--data" };
	const char *url[] = { o->coordinator, o->listen, o->data };
	int plain = 0;

	if (o->tls_cert && sc_tls_init(o->tls_cert, o->tls_key, o->tls_ca)) {
		sc_error("worker", "%s", sc_err_detail());
		return 1;
	}
	for (int i = 0; i < 3; i++) {
		if (sc_tls_check_url(what[i], url[i], o->insecure)) {
			sc_error("worker", "%s", sc_err_detail());
			return 1;
		}
		plain |= !strncmp(url[i], "tcp", 3);
	}
	if (plain)
		sc_warn("worker", "--insecure: plaintext tcp:// addresses; anyone on the network "
				  "can read and inject this worker's traffic");
	return 0;
}

static int fail(const char *what)
{
	sc_error("worker", "%s: %s", what, sc_err_detail());
	return EXIT_ERROR;
}

/* Everything after the flags. Returns the exit code; w is torn down by
 * the caller. */
static int serve(worker *w, const sigset_t *sigs)
{
	char host[100];
	int sig = 0;

	if (worker_transport_check(&w->o))
		return EXIT_ERROR;
	if (sc_backend_open(&w->be, w->o.device, w->o.threads))
		return fail("opening the device");
	if (!strcmp(w->be->name, "cpu"))
		sc_info("worker", "cpu: %s; bf16 weights: %s", sc_backend_cpu_describe(),
			sc_backend_cpu_bf16_kernel(w->be));
	w->gflops = probe_gflops(w->be);
	w->memory_bytes = w->be->ops->memory_bytes(w->be);
	if (reserve_of(w->o.memory_reserve, w->memory_bytes, &w->memory_reserve))
		return fail("--memory-reserve");
	if (w->memory_reserve >= w->memory_bytes && w->memory_bytes)
		sc_warn(
		    "worker",
		    "--memory-reserve %s keeps all of the device's %.2f GiB back: no stage will "
		    "be placed here",
		    w->o.memory_reserve, (double)w->memory_bytes / (1u << 30));
	host_of(w);
	if (w->o.name)
		snprintf(w->name, sizeof(w->name), "%s", w->o.name);
	else {
		if (gethostname(host, sizeof(host)))
			snprintf(host, sizeof(host), "worker");
		host[sizeof(host) - 1] = '\0';
		snprintf(w->name, sizeof(w->name), "%s-%ld", host, (long)getpid());
	}
	/* Each job slot's data listener exists from the start, so its address
	 * can be registered; each Assign reopens it on the same address. */
	for (int k = 0; k < w->n_slots; k++) {
		worker_slot *s = &w->slots[k];
		char url[WORKER_URL_MAX];
		if (slot_url(url, sizeof(url), w->o.data, k) || sc_dp_listen(&s->up[0], url, NULL))
			return fail("opening the data plane");
		s->n_up = 1;
		snprintf(s->data_bind, sizeof(s->data_bind), "%s", sc_dp_url(s->up[0]));
		advertise(s->data_addr, sizeof(s->data_addr), s->data_bind);
		/* A data owner listens for its head's hop too, on a port of its
		 * own beside the data address (a tcp port 0; an ipc path +
		 * ".owner"). */
		if (w->o.owner_data) {
			owner_url(url, sizeof(url), s->data_bind);
			if (sc_dp_listen(&s->down[0], url, NULL))
				return fail("opening the data owner's head listener");
			s->n_down = 1;
			snprintf(s->owner_bind, sizeof(s->owner_bind), "%s", sc_dp_url(s->down[0]));
			advertise(s->owner_addr, sizeof(s->owner_addr), s->owner_bind);
		}
	}
	static const char *const reads[] = { "Worker.FetchTensor", NULL };
	if (!w->o.join_token && getenv("SPLITCHAIN_JOIN_TOKEN_FILE") &&
	    *getenv("SPLITCHAIN_JOIN_TOKEN_FILE"))
		w->o.join_token = getenv("SPLITCHAIN_JOIN_TOKEN_FILE");
	if (worker_auth_init(w->o.join_token))
		return fail("--join-token-file");
	if (sc_rpc_server_open_auth(&w->srv, w->o.listen, methods, w, RPC_CONTEXTS(w->n_slots),
				    reads, worker_auth_check, w))
		return fail("starting the RPC server");
	advertise(w->control_addr, sizeof(w->control_addr), sc_rpc_server_url(w->srv));
	if (w->o.cache_dir && sc_tcache_open(&w->cache, w->o.cache_dir, w->o.cache_limit))
		return fail("opening the cache");
	if (sc_rpc_client_open(&w->coord, w->o.coordinator))
		return fail("dialing the coordinator");
	if (pthread_create(&w->announcer, NULL, worker_announce_main, w)) {
		sc_error("worker", "cannot start the heartbeat thread");
		return EXIT_ERROR;
	}
	w->announcer_started = 1;
	if (worker_probe_start(w))
		return fail("starting the link prober");
	if (w->o.metrics_listen) {
		if (worker_prom_start(w, &w->metrics))
			return fail("starting the metrics endpoint");
		sc_info("worker", "metrics on %s", sc_http_metrics_where(w->metrics));
	}
	sc_info("worker",
		"%s ready: control %s, data %s%s, device %s (%.1f GFLOP/s, %.1f GiB), %d job "
		"slot%s",
		w->name, w->control_addr, w->slots[0].data_addr, w->n_slots > 1 ? " (slot 0)" : "",
		w->be->name, w->gflops, (double)w->memory_bytes / (1u << 30), w->n_slots,
		w->n_slots == 1 ? "" : "s");
	/* Once a second: the TLS listeners' refused handshakes, and a socket
	 * close stuck in nng (worker_check_wedged; the thread that is stuck
	 * may be the heartbeat thread, which checks it too otherwise). */
	for (;;) {
		struct timespec tick = { 1, 0 };
		if ((sig = sigtimedwait(sigs, NULL, &tick)) > 0)
			break;
		sc_tls_refusals(log_refusal, w);
		worker_check_wedged(w);
	}
	sc_info("worker", "%s: stopping", strsignal(sig));
	return EXIT_OK;
}

int main(int argc, char **argv)
{
	worker w;
	sigset_t sigs;
	int code, done;

	memset(&w, 0, sizeof(w));
	if ((code = parse_args(argc, argv, &w.o, &done)) || done)
		return code;
	/* Every thread (nng's, OpenMP's, ours) inherits the blocked signals;
	 * only sigwait below takes them. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	pthread_mutex_init(&w.mu, NULL);
	pthread_mutex_init(&w.compute_mu, NULL);
	w.n_slots = w.o.jobs;
	for (int k = 0; k < WORKER_MAX_SLOTS; k++) {
		w.slots[k].index = k;
		pthread_mutex_init(&w.slots[k].mu, NULL);
	}
	pthread_mutex_init(&w.hold_mu, NULL);
	pthread_mutex_init(&w.notice_mu, NULL);
	pthread_mutex_init(&w.stop_mu, NULL);
	pthread_cond_init(&w.stop_cv, NULL);

	code = serve(&w, &sigs);

	/* Shutdown: stop announcing, make a running Step give up, stop
	 * serving (waits for handlers), then free the job and the device. */
	pthread_mutex_lock(&w.stop_mu);
	atomic_store(&w.stop, 1);
	for (int k = 0; k < w.n_slots; k++)
		atomic_store(&w.slots[k].cancel, 1);
	pthread_cond_broadcast(&w.stop_cv);
	pthread_mutex_unlock(&w.stop_mu);
	sc_http_metrics_stop(w.metrics);
	if (w.announcer_started)
		pthread_join(w.announcer, NULL);
	worker_probe_stop(&w);
	sc_rpc_server_close(w.srv);
	sc_rpc_client_close(w.coord);
	for (int k = 0; k < w.n_slots; k++) {
		worker_job_free(w.slots[k].job);
		for (int i = 0; i < WORKER_MAX_OWNERS; i++) {
			sc_dp_close(w.slots[k].down[i]);
			sc_dp_close(w.slots[k].up[i]);
		}
	}
	worker_gen_free_all();
	sc_backend_free(w.be);
	sc_tcache_close(w.cache);
	/* No nng_fini(): nng 1.5.2's nng_fini destroys its global locks while a TLS
	 * connection still in negotiation or teardown on its task threads can
	 * take them; nng then aborts on a destroyed mutex (seen under
	 * ThreadSanitizer in recovery_test). Exit closes every socket. */
	pthread_cond_destroy(&w.stop_cv);
	pthread_mutex_destroy(&w.stop_mu);
	pthread_mutex_destroy(&w.notice_mu);
	pthread_mutex_destroy(&w.hold_mu);
	for (int k = 0; k < WORKER_MAX_SLOTS; k++)
		pthread_mutex_destroy(&w.slots[k].mu);
	pthread_mutex_destroy(&w.compute_mu);
	pthread_mutex_destroy(&w.mu);
	return atomic_load(&w.device_failed) ? EXIT_DEVICE : code;
}
