/* sc_http_metrics.h — a daemon's Prometheus endpoint: `GET /metrics` over
 * nng's HTTP server (--metrics-listen HOST:PORT).
 *
 * Threads: nng parses the requests (a malformed one gets nng's 400 and
 * never reaches us) and hands each scrape of /metrics to this module's own
 * thread, which calls the daemon's render function and answers. So a
 * render that waits (a lock, a database read) holds only that thread,
 * never nng's, and scrapes are rendered one at a time; beyond
 * SC_HTTP_METRICS_QUEUE waiting scrapes the next ones are answered 503 at
 * once. Other paths get 404, other methods 405 (nng's).
 */
#ifndef SC_HTTP_METRICS_H
#define SC_HTTP_METRICS_H

#include <stddef.h>

#include "sc_err.h"
#include "sc_prom.h"

#define SC_HTTP_METRICS_QUEUE 8

/* Writes the daemon's metrics into out (an initialised, empty sc_prom).
 * Called on the endpoint's thread, one call at a time; an error answers
 * the scrape 500 with sc_err_detail(). */
typedef sc_err (*sc_http_metrics_render)(void *arg, sc_prom *out);

typedef struct sc_http_metrics sc_http_metrics;

/* Checks a --metrics-listen value, HOST:PORT (HOST a name, an IPv4
 * address or a bracketed IPv6 one; PORT 0 to 65535, 0: a free one), and
 * writes the URL nng serves it from ("http://HOST:PORT") into url (size
 * bytes). SC_EINVAL, with a detail saying what is expected, otherwise. */
sc_err sc_http_metrics_url_of(const char *hostport, char *url, size_t size);

/* Serves GET /metrics on hostport (sc_http_metrics_url_of) with render
 * (arg borrowed: it must outlive the endpoint). *out = new endpoint; stop
 * it with sc_http_metrics_stop. SC_EINVAL for a bad hostport, SC_EIO when
 * the address cannot be bound (in use, not this machine's). */
sc_err sc_http_metrics_start(sc_http_metrics **out, const char *hostport,
			     sc_http_metrics_render render, void *arg);

/* The endpoint's full address with its bound port, e.g.
 * "http://127.0.0.1:9400/metrics". Borrowed from m. */
const char *sc_http_metrics_where(const sc_http_metrics *m);

/* Stops serving: waiting scrapes are answered 503, the thread is joined
 * and the server released. Accepts NULL. Never call it from render. */
void sc_http_metrics_stop(sc_http_metrics *m);

#endif
