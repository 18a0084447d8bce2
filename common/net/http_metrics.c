/* http_metrics.c — GET /metrics over nng's HTTP server, rendered on a
 * thread of our own (sc_http_metrics.h). */
#include <arpa/inet.h>
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/supplemental/http/http.h>

#include "sc_http_metrics.h"
#include "sc_log.h"

struct sc_http_metrics {
	nng_http_server *srv;
	nng_http_handler *h; /* owned by srv once added */
	sc_http_metrics_render render;
	void *arg;
	char where[300];
	pthread_t thread;
	pthread_mutex_t mu; /* guards queue, n and stop; a leaf */
	pthread_cond_t cv;
	nng_aio *queue[SC_HTTP_METRICS_QUEUE]; /* scrapes waiting, oldest first */
	int n;
	int stop;
};

sc_err sc_http_metrics_url_of(const char *hostport, char *url, size_t size)
{
	const char *colon = hostport ? strrchr(hostport, ':') : NULL;
	size_t hlen = colon ? (size_t)(colon - hostport) : 0;
	char *end;
	long port;

	if (!colon || hlen == 0 || !colon[1] || strlen(colon + 1) > 5)
		goto bad;
	port = strtol(colon + 1, &end, 10);
	if (*end || port < 0 || port > 65535 || !isdigit((unsigned char)colon[1]))
		goto bad;
	if (hostport[0] == '[') { /* [v6]:port */
		if (hlen < 3 || hostport[hlen - 1] != ']')
			goto bad;
		for (size_t i = 1; i < hlen - 1; i++)
			if (!isxdigit((unsigned char)hostport[i]) && hostport[i] != ':' &&
			    hostport[i] != '.')
				goto bad;
	} else {
		for (size_t i = 0; i < hlen; i++)
			if (!isalnum((unsigned char)hostport[i]) && hostport[i] != '.' &&
			    hostport[i] != '-')
				goto bad;
	}
	if ((size_t)snprintf(url, size, "http://%s", hostport) >= size)
		goto bad;
	return SC_OK;
bad:
	return sc_errf(SC_EINVAL,
		       "--metrics-listen expects HOST:PORT (e.g. 127.0.0.1:9400, 0.0.0.0:9400 "
		       "for every interface, [::1]:9400; port 0 picks a free one), got '%s'",
		       hostport ? hostport : "");
}

/* Answers aio with status and body (copied); the scrape ends there. */
static void answer(nng_aio *aio, uint16_t status, const char *type, const char *body, size_t len)
{
	nng_http_res *res = NULL;
	if (nng_http_res_alloc(&res) || nng_http_res_set_status(res, status) ||
	    nng_http_res_set_header(res, "Content-Type", type) ||
	    nng_http_res_copy_data(res, body, len)) {
		nng_http_res_free(res);
		nng_aio_finish(aio, NNG_ENOMEM); /* nng closes the connection */
		return;
	}
	nng_aio_set_output(aio, 0, res);
	nng_aio_finish(aio, 0);
}

static void busy(nng_aio *aio)
{
	static const char msg[] = "metrics endpoint busy or stopping\n";
	answer(aio, NNG_HTTP_STATUS_SERVICE_UNAVAILABLE, "text/plain", msg, sizeof(msg) - 1);
}

/* nng's callback for GET /metrics: queues the scrape for our thread. */
static void on_scrape(nng_aio *aio)
{
	nng_http_handler *h = nng_aio_get_input(aio, 1);
	sc_http_metrics *m = nng_http_handler_get_data(h);
	int queued = 0;

	pthread_mutex_lock(&m->mu);
	if (!m->stop && m->n < SC_HTTP_METRICS_QUEUE) {
		m->queue[m->n++] = aio;
		queued = 1;
		pthread_cond_signal(&m->cv);
	}
	pthread_mutex_unlock(&m->mu);
	if (!queued)
		busy(aio);
}

static void *scrape_main(void *arg)
{
	sc_http_metrics *m = arg;
	for (;;) {
		nng_aio *aio;
		pthread_mutex_lock(&m->mu);
		while (!m->n && !m->stop)
			pthread_cond_wait(&m->cv, &m->mu);
		if (m->stop) {
			int n = m->n;
			nng_aio *left[SC_HTTP_METRICS_QUEUE];
			memcpy(left, m->queue, sizeof(left));
			m->n = 0;
			pthread_mutex_unlock(&m->mu);
			for (int i = 0; i < n; i++)
				busy(left[i]);
			return NULL;
		}
		aio = m->queue[0];
		memmove(m->queue, m->queue + 1, (size_t)(m->n - 1) * sizeof(m->queue[0]));
		m->n--;
		pthread_mutex_unlock(&m->mu);

		sc_prom p;
		sc_prom_init(&p);
		if (m->render(m->arg, &p) == SC_OK && sc_prom_done(&p) == SC_OK) {
			answer(aio, NNG_HTTP_STATUS_OK, "text/plain; version=0.0.4; charset=utf-8",
			       p.buf ? p.buf : "", p.len);
		} else {
			char msg[600];
			int len = snprintf(msg, sizeof(msg), "cannot render the metrics: %s\n",
					   sc_err_detail());
			sc_warn("metrics", "cannot render the metrics: %s", sc_err_detail());
			answer(aio, NNG_HTTP_STATUS_INTERNAL_SERVER_ERROR, "text/plain", msg,
			       (size_t)len < sizeof(msg) ? (size_t)len : sizeof(msg) - 1);
		}
		sc_prom_free(&p);
	}
}

/* "http://host:port/metrics" with the port the server bound. */
static void where_of(sc_http_metrics *m, const char *url)
{
	nng_sockaddr sa;
	const char *colon = strrchr(url, ':');
	unsigned port = 0;
	if (nng_http_server_get_addr(m->srv, &sa) == 0) {
		if (sa.s_family == NNG_AF_INET)
			port = ntohs(sa.s_in.sa_port);
		else if (sa.s_family == NNG_AF_INET6)
			port = ntohs(sa.s_in6.sa_port);
	}
	snprintf(m->where, sizeof(m->where), "%.*s:%u/metrics", (int)(colon - url), url, port);
}

sc_err sc_http_metrics_start(sc_http_metrics **out, const char *hostport,
			     sc_http_metrics_render render, void *arg)
{
	char url[300];
	nng_url *u = NULL;
	sc_http_metrics *m;
	int rv, thread = 0, added = 0;

	*out = NULL;
	SC_TRY(sc_http_metrics_url_of(hostport, url, sizeof(url)));
	if (!(m = calloc(1, sizeof(*m))))
		return sc_errf(SC_ENOMEM, "out of memory for the metrics endpoint");
	m->render = render;
	m->arg = arg;
	pthread_mutex_init(&m->mu, NULL);
	pthread_cond_init(&m->cv, NULL);
	if ((rv = nng_url_parse(&u, url)) || (rv = nng_http_server_hold(&m->srv, u)))
		goto fail;
	if ((rv = nng_http_handler_alloc(&m->h, "/metrics", on_scrape)) ||
	    (rv = nng_http_handler_set_method(m->h, "GET")) ||
	    (rv = nng_http_handler_collect_body(m->h, true, 0)) ||
	    (rv = nng_http_handler_set_data(m->h, m, NULL)))
		goto fail;
	if ((rv = nng_http_server_add_handler(m->srv, m->h)))
		goto fail;
	added = 1;
	if (pthread_create(&m->thread, NULL, scrape_main, m)) {
		rv = NNG_ENOMEM;
		goto fail;
	}
	thread = 1;
	if ((rv = nng_http_server_start(m->srv)))
		goto fail;
	where_of(m, url);
	nng_url_free(u);
	*out = m;
	return SC_OK;
fail:
	if (thread) {
		pthread_mutex_lock(&m->mu);
		m->stop = 1;
		pthread_cond_signal(&m->cv);
		pthread_mutex_unlock(&m->mu);
		pthread_join(m->thread, NULL);
	}
	if (!added)
		nng_http_handler_free(m->h); /* accepts NULL */
	if (m->srv)
		nng_http_server_release(m->srv);
	nng_url_free(u);
	pthread_cond_destroy(&m->cv);
	pthread_mutex_destroy(&m->mu);
	free(m);
	return sc_errf(SC_EIO, "--metrics-listen %s: cannot serve metrics there: %s", hostport,
		       nng_strerror(rv));
}

const char *sc_http_metrics_where(const sc_http_metrics *m)
{
	return m->where;
}

void sc_http_metrics_stop(sc_http_metrics *m)
{
	if (!m)
		return;
	/* Stop taking scrapes first, so no new one is queued after the drain;
	 * nng_http_server_stop waits for callbacks that run, which only queue. */
	pthread_mutex_lock(&m->mu);
	m->stop = 1;
	pthread_cond_signal(&m->cv);
	pthread_mutex_unlock(&m->mu);
	pthread_join(m->thread, NULL);
	nng_http_server_stop(m->srv);
	nng_http_server_release(m->srv);
	pthread_cond_destroy(&m->cv);
	pthread_mutex_destroy(&m->mu);
	free(m);
}
