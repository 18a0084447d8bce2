/* tls.c — the process's TLS identity and its use on nng listeners and
 * dialers (sc_tls.h). The files are checked with mbedTLS, the library
 * Debian's nng does its TLS with. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/error.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>
#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>

#include "sc_tls.h"

#define PATH_CAP  4096
#define MAX_WATCH 256 /* TLS listeners watched for refusals */
#define URL_CAP   256

typedef struct watched {
	int id; /* nng_listener_id */
	char url[URL_CAP];
	uint64_t seen; /* auth + proto errors counted so far */
} watched;

static struct {
	pthread_mutex_t mu;
	int on;
	char *cert, *key, *ca;  /* the files' PEM text (malloc'd) */
	nng_tls_config *server; /* shared by every listener; a reference of ours */
	watched w[MAX_WATCH];
	int nw;
} g = { .mu = PTHREAD_MUTEX_INITIALIZER };

int sc_tls_url(const char *url)
{
	return url && strncmp(url, "tls+tcp", 7) == 0;
}

static const char *mbed_str(int rv, char *buf, size_t cap)
{
	mbedtls_strerror(rv, buf, cap);
	return buf;
}

/* A file we can open: 0, else an error naming it. */
static sc_err readable(const char *what, const char *path)
{
	FILE *f;

	if (!path || !path[0])
		return sc_errf(SC_EINVAL, "tls: no %s file given", what);
	if (strlen(path) >= PATH_CAP)
		return sc_errf(SC_EINVAL, "tls: %s path too long", what);
	if (!(f = fopen(path, "rb")))
		return sc_errf(errno == ENOENT ? SC_ENOENT : SC_EIO,
			       "tls: cannot read %s file %s: %s", what, path, strerror(errno));
	fclose(f);
	return SC_OK;
}

/* Parses and cross-checks the three files with mbedTLS. */
static sc_err check_files(const char *cert, const char *key, const char *ca)
{
	mbedtls_x509_crt crt, cas;
	mbedtls_pk_context pk;
	uint32_t flags = 0;
	char msg[160];
	sc_err err = SC_OK;
	int rv;

	SC_TRY(readable("certificate", cert));
	SC_TRY(readable("key", key));
	SC_TRY(readable("CA", ca));
	mbedtls_x509_crt_init(&crt);
	mbedtls_x509_crt_init(&cas);
	mbedtls_pk_init(&pk);
	if ((rv = mbedtls_x509_crt_parse_file(&crt, cert)) != 0)
		err = sc_errf(SC_EFORMAT, "tls: certificate file %s is not a PEM certificate: %s",
			      cert, mbed_str(rv, msg, sizeof(msg)));
	else if ((rv = mbedtls_x509_crt_parse_file(&cas, ca)) != 0)
		err = sc_errf(SC_EFORMAT, "tls: CA file %s is not a PEM certificate: %s", ca,
			      mbed_str(rv, msg, sizeof(msg)));
	else if ((rv = mbedtls_pk_parse_keyfile(&pk, key, NULL)) != 0)
		err = sc_errf(SC_EFORMAT,
			      "tls: key file %s is not an unencrypted PEM private key: %s", key,
			      mbed_str(rv, msg, sizeof(msg)));
	else if ((rv = mbedtls_pk_check_pair(&crt.pk, &pk)) != 0)
		err = sc_errf(SC_EINVAL, "tls: key file %s does not belong to certificate %s", key,
			      cert);
	else if ((rv = mbedtls_x509_crt_verify(&crt, &cas, NULL, NULL, &flags, NULL, NULL)) != 0) {
		char why[256];
		mbedtls_x509_crt_verify_info(why, sizeof(why), "", flags);
		why[strcspn(why, "\n")] = '\0';
		err = sc_errf(SC_EINVAL, "tls: certificate %s is not valid under CA %s: %s", cert,
			      ca, why);
	}
	mbedtls_pk_free(&pk);
	mbedtls_x509_crt_free(&cas);
	mbedtls_x509_crt_free(&crt);
	return err;
}

/* A configuration for mode with the PEM texts (and the peer's name for a
 * client). *out: a new reference, free with nng_tls_config_free. */
static sc_err make_config(nng_tls_config **out, nng_tls_mode mode, nng_tls_auth_mode auth,
			  const char *cert, const char *key, const char *ca,
			  const char *server_name)
{
	nng_tls_config *cfg = NULL;
	int rv;

	*out = NULL;
	if ((rv = nng_tls_config_alloc(&cfg, mode)) != 0)
		return sc_errf(SC_ENOMEM, "tls: configuration: %s", nng_strerror(rv));
	if ((rv = nng_tls_config_version(cfg, NNG_TLS_1_2, NNG_TLS_1_3)) != 0 ||
	    (rv = nng_tls_config_auth_mode(cfg, auth)) != 0) {
		nng_tls_config_free(cfg);
		return sc_errf(SC_EINVAL, "tls: configuration: %s", nng_strerror(rv));
	}
	if ((rv = nng_tls_config_ca_chain(cfg, ca, NULL)) != 0 ||
	    (rv = nng_tls_config_own_cert(cfg, cert, key, NULL)) != 0) {
		nng_tls_config_free(cfg);
		return sc_errf(SC_EFORMAT, "tls: loading the certificates: %s", nng_strerror(rv));
	}
	if (server_name && (rv = nng_tls_config_server_name(cfg, server_name)) != 0) {
		nng_tls_config_free(cfg);
		return sc_errf(SC_EINVAL, "tls: server name %s: %s", server_name, nng_strerror(rv));
	}
	*out = cfg;
	return SC_OK;
}

/* *out = path's text, NUL-terminated (malloc'd). */
static sc_err slurp(const char *path, char **out)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long n;

	*out = NULL;
	if (!f)
		return sc_errf(SC_EIO, "tls: cannot read %s: %s", path, strerror(errno));
	if (fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 || n > (1 << 20) || fseek(f, 0, SEEK_SET) ||
	    !(buf = malloc((size_t)n + 1)) || fread(buf, 1, (size_t)n, f) != (size_t)n) {
		fclose(f);
		free(buf);
		return sc_errf(SC_EIO, "tls: cannot read %s (or larger than 1 MiB)", path);
	}
	fclose(f);
	buf[n] = '\0';
	*out = buf;
	return SC_OK;
}

sc_err sc_tls_init(const char *cert, const char *key, const char *ca)
{
	char *pem[3] = { NULL, NULL, NULL }, *oldpem[3];
	nng_tls_config *server = NULL, *old;
	sc_err err;

	SC_TRY(check_files(cert, key, ca));
	if ((err = slurp(cert, &pem[0])) || (err = slurp(key, &pem[1])) ||
	    (err = slurp(ca, &pem[2])) ||
	    (err = make_config(&server, NNG_TLS_MODE_SERVER, NNG_TLS_AUTH_MODE_REQUIRED, pem[0],
			       pem[1], pem[2], NULL))) {
		for (int i = 0; i < 3; i++)
			free(pem[i]);
		return err;
	}
	pthread_mutex_lock(&g.mu);
	old = g.server;
	oldpem[0] = g.cert, oldpem[1] = g.key, oldpem[2] = g.ca;
	g.server = server;
	g.cert = pem[0], g.key = pem[1], g.ca = pem[2];
	g.on = 1;
	pthread_mutex_unlock(&g.mu);
	if (old)
		nng_tls_config_free(old);
	for (int i = 0; i < 3; i++)
		free(oldpem[i]);
	return SC_OK;
}

void sc_tls_fini(void)
{
	nng_tls_config *old;
	char *oldpem[3];

	pthread_mutex_lock(&g.mu);
	old = g.server;
	oldpem[0] = g.cert, oldpem[1] = g.key, oldpem[2] = g.ca;
	g.server = NULL;
	g.cert = g.key = g.ca = NULL;
	g.on = 0;
	g.nw = 0;
	pthread_mutex_unlock(&g.mu);
	if (old)
		nng_tls_config_free(old);
	for (int i = 0; i < 3; i++)
		free(oldpem[i]);
}

int sc_tls_enabled(void)
{
	int on;

	pthread_mutex_lock(&g.mu);
	on = g.on;
	pthread_mutex_unlock(&g.mu);
	return on;
}

sc_err sc_tls_check_url(const char *what, const char *url, int insecure)
{
	if (!url)
		return SC_OK;
	if (sc_tls_url(url)) {
		if (!sc_tls_enabled())
			return sc_errf(
			    SC_EINVAL,
			    "%s %s is a TLS address but no certificate was given: pass "
			    "--tls-cert FILE --tls-key FILE --tls-ca FILE (deploy/certs.sh "
			    "makes them)",
			    what, url);
		return SC_OK;
	}
	if (strncmp(url, "tcp", 3) == 0 && !insecure)
		return sc_errf(SC_EINVAL,
			       "%s %s is plaintext: use tls+tcp:// with --tls-cert, --tls-key and "
			       "--tls-ca, or pass --insecure on a trusted network",
			       what, url);
	return SC_OK;
}

sc_err sc_tls_listener_setup(nng_listener l, const char *url)
{
	nng_tls_config *cfg = NULL;
	int rv;

	if (!sc_tls_url(url))
		return SC_OK;
	pthread_mutex_lock(&g.mu);
	if ((cfg = g.server))
		nng_tls_config_hold(cfg);
	pthread_mutex_unlock(&g.mu);
	if (!cfg)
		return sc_errf(SC_EINVAL,
			       "%s: a TLS address needs --tls-cert, --tls-key and --tls-ca", url);
	rv = nng_listener_set_ptr(l, NNG_OPT_TLS_CONFIG, cfg);
	nng_tls_config_free(cfg); /* the listener holds its own reference */
	if (rv != 0)
		return sc_errf(SC_EIO, "%s: TLS configuration: %s", url, nng_strerror(rv));
	pthread_mutex_lock(&g.mu);
	if (g.nw == MAX_WATCH) { /* forget the oldest */
		memmove(&g.w[0], &g.w[1], sizeof(g.w[0]) * (MAX_WATCH - 1));
		g.nw--;
	}
	g.w[g.nw].id = nng_listener_id(l);
	g.w[g.nw].seen = 0;
	snprintf(g.w[g.nw].url, URL_CAP, "%s", url);
	g.nw++;
	pthread_mutex_unlock(&g.mu);
	return SC_OK;
}

/* Gives dialer d a client configuration of the identity: auth checks the
 * server (REQUIRED, against server_name) or not (NONE). Each dialer has its
 * own, made under the lock (the PEM texts are the identity's). */
static sc_err client_setup(nng_dialer d, const char *url, nng_tls_auth_mode auth,
			   const char *server_name)
{
	nng_tls_config *cfg = NULL;
	sc_err err;
	int rv;

	pthread_mutex_lock(&g.mu);
	if (!g.on)
		err = sc_errf(SC_EINVAL,
			      "%s: a TLS address needs --tls-cert, --tls-key and --tls-ca", url);
	else
		err =
		    make_config(&cfg, NNG_TLS_MODE_CLIENT, auth, g.cert, g.key, g.ca, server_name);
	pthread_mutex_unlock(&g.mu);
	if (err)
		return err;
	rv = nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, cfg);
	nng_tls_config_free(cfg);
	if (rv != 0)
		return sc_errf(SC_EIO, "%s: TLS configuration: %s", url, nng_strerror(rv));
	return SC_OK;
}

sc_err sc_tls_dialer_setup(nng_dialer d, const char *url)
{
	nng_url *u = NULL;
	sc_err err;
	int rv;

	if (!sc_tls_url(url))
		return SC_OK;
	if ((rv = nng_url_parse(&u, url)) != 0)
		return sc_errf(SC_EINVAL, "%s: %s", url, nng_strerror(rv));
	err = client_setup(d, url, NNG_TLS_AUTH_MODE_REQUIRED, u->u_hostname);
	nng_url_free(u);
	return err;
}

sc_err sc_tls_probe_dialer_setup(nng_dialer d, const char *url)
{
	if (!sc_tls_url(url))
		return SC_OK;
	/* the process's own listener: nothing to verify, no secret sent */
	return client_setup(d, url, NNG_TLS_AUTH_MODE_NONE, NULL);
}

/* The "listener" scope of listener id under st, or NULL. (nng 1.5.2's
 * nng_stat_find_listener returns the first listener of any id.) */
static nng_stat *find_listener(nng_stat *st, int id)
{
	nng_stat *c, *found;

	if (!strcmp(nng_stat_name(st), "listener") && (c = nng_stat_find(st, "id")) &&
	    nng_stat_value(c) == (uint64_t)id)
		return st;
	for (c = nng_stat_child(st); c; c = nng_stat_next(c))
		if ((found = find_listener(c, id)))
			return found;
	return NULL;
}

/* auth + proto errors of listener id in the snapshot st; 0 when it is gone. */
static int refusals_of(nng_stat *st, int id, uint64_t *n)
{
	nng_stat *ls, *c;

	if (!(ls = find_listener(st, id)))
		return 0;
	*n = 0;
	if ((c = nng_stat_find(ls, "auth")))
		*n += nng_stat_value(c);
	if ((c = nng_stat_find(ls, "proto")))
		*n += nng_stat_value(c);
	return 1;
}

void sc_tls_refusals(sc_tls_refusal_fn fn, void *arg)
{
	struct {
		char url[URL_CAP];
		uint64_t n;
	} news[MAX_WATCH];
	nng_stat *st = NULL;
	int nnew = 0, keep = 0;

	pthread_mutex_lock(&g.mu);
	if (g.nw == 0 || nng_stats_get(&st) != 0) {
		pthread_mutex_unlock(&g.mu);
		return;
	}
	for (int i = 0; i < g.nw; i++) {
		uint64_t n;
		if (!refusals_of(st, g.w[i].id, &n))
			continue; /* closed: forget it */
		if (n > g.w[i].seen) {
			snprintf(news[nnew].url, URL_CAP, "%s", g.w[i].url);
			news[nnew++].n = n - g.w[i].seen;
		}
		g.w[i].seen = n;
		g.w[keep++] = g.w[i];
	}
	g.nw = keep;
	pthread_mutex_unlock(&g.mu);
	nng_stats_free(st);
	for (int i = 0; i < nnew; i++)
		fn(arg, news[i].url, news[i].n);
}
