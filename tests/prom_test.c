/* prom_test.c — the Prometheus text writer (sc_prom.h) and the HTTP
 * endpoint that serves it (sc_http_metrics.h). */
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "sc_http_metrics.h"
#include "sc_prom.h"
#include "testutil.h"

static void family_and_samples(void **state)
{
	sc_prom p;
	(void)state;
	sc_prom_init(&p);
	sc_prom_family(&p, "x_bytes", "gauge", "Bytes \\ of x\nsecond line.");
	sc_prom_sample(&p, "x_bytes", 42, NULL);
	sc_prom_sample(&p, "x_bytes", 1.5, "a", "1", "b", "two", NULL);
	SC_ASSERT_OK(sc_prom_done(&p));
	assert_string_equal(p.buf, "# HELP x_bytes Bytes \\\\ of x\\nsecond line.\n"
				   "# TYPE x_bytes gauge\n"
				   "x_bytes 42\n"
				   "x_bytes{a=\"1\",b=\"two\"} 1.5\n");
	assert_int_equal(p.len, strlen(p.buf));
	sc_prom_free(&p);
	sc_prom_free(NULL);
}

static void label_values_escaped(void **state)
{
	static const struct {
		const char *value, *want;
	} cases[] = {
		{ "plain", "v{l=\"plain\"} 1\n" },
		{ "say \"hi\"", "v{l=\"say \\\"hi\\\"\"} 1\n" },
		{ "back\\slash", "v{l=\"back\\\\slash\"} 1\n" },
		{ "two\nlines", "v{l=\"two\\nlines\"} 1\n" },
		{ "", "v{l=\"\"} 1\n" },
		{ NULL, "v{l=\"\"} 1\n" },
		{ "ünï", "v{l=\"ünï\"} 1\n" },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		sc_prom p;
		sc_prom_init(&p);
		sc_prom_sample(&p, "v", 1, "l", cases[i].value, NULL);
		SC_ASSERT_OK(sc_prom_done(&p));
		if (strcmp(p.buf, cases[i].want))
			fail_msg("case %zu: got '%s', want '%s'", i, p.buf, cases[i].want);
		sc_prom_free(&p);
	}
}

static void numbers(void **state)
{
	static const struct {
		double v;
		const char *want;
	} cases[] = {
		{ 0, "n 0\n" },
		{ -3, "n -3\n" },
		{ 25276194816.0, "n 25276194816\n" },
		{ 0.1, "n 0.1\n" },
		{ 0.119, "n 0.119\n" },
		{ 5.4544497858732939, "n 5.4544497858732939\n" }, /* needs all 17 digits */
		{ NAN, "n NaN\n" },
		{ INFINITY, "n +Inf\n" },
		{ -INFINITY, "n -Inf\n" },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		sc_prom p;
		sc_prom_init(&p);
		sc_prom_sample(&p, "n", cases[i].v, NULL);
		SC_ASSERT_OK(sc_prom_done(&p));
		if (strcmp(p.buf, cases[i].want))
			fail_msg("case %zu: got '%s', want '%s'", i, p.buf, cases[i].want);
		if (isfinite(cases[i].v) && strtod(p.buf + 2, NULL) != cases[i].v)
			fail_msg("case %zu: '%s' does not read back", i, p.buf);
		sc_prom_free(&p);
	}
}

static void grows_past_first_block(void **state)
{
	sc_prom p;
	char label[32];
	(void)state;
	sc_prom_init(&p);
	for (int i = 0; i < 5000; i++) {
		snprintf(label, sizeof(label), "%d", i);
		sc_prom_sample(&p, "many", i, "i", label, NULL);
	}
	SC_ASSERT_OK(sc_prom_done(&p));
	assert_true(p.len > 50000);
	assert_non_null(strstr(p.buf, "many{i=\"4999\"} 4999\n"));
	sc_prom_free(&p);
}

static void listen_values(void **state)
{
	static const struct {
		const char *in, *url; /* url NULL: refused */
	} cases[] = {
		{ "127.0.0.1:9400", "http://127.0.0.1:9400" },
		{ "0.0.0.0:0", "http://0.0.0.0:0" },
		{ "localhost:65535", "http://localhost:65535" },
		{ "metrics-1.example.org:80", "http://metrics-1.example.org:80" },
		{ "[::1]:9400", "http://[::1]:9400" },
		{ "127.0.0.1", NULL },
		{ ":9400", NULL },
		{ "127.0.0.1:", NULL },
		{ "127.0.0.1:65536", NULL },
		{ "127.0.0.1:-1", NULL },
		{ "127.0.0.1:+80", NULL },
		{ "127.0.0.1:9x", NULL },
		{ "127.0.0.1:000009400", NULL },
		{ "[::1:9400", NULL },
		{ "[]:9400", NULL },
		{ "host/path:9400", NULL },
		{ "http://h:1", NULL },
		{ "a b:1", NULL },
		{ "", NULL },
		{ NULL, NULL },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char url[300];
		if (cases[i].url) {
			SC_ASSERT_OK(sc_http_metrics_url_of(cases[i].in, url, sizeof(url)));
			assert_string_equal(url, cases[i].url);
		} else {
			SC_ASSERT_ERR(sc_http_metrics_url_of(cases[i].in, url, sizeof(url)),
				      SC_EINVAL);
			assert_non_null(strstr(sc_err_detail(), "HOST:PORT"));
		}
	}
}

/* ---- the endpoint ---- */

typedef struct fixture {
	atomic_int calls;
	atomic_int fail; /* render fails */
} fixture;

static sc_err render(void *arg, sc_prom *p)
{
	fixture *f = arg;
	int n = atomic_fetch_add(&f->calls, 1) + 1;
	if (atomic_load(&f->fail))
		return sc_errf(SC_EIO, "the test's render failed");
	sc_prom_family(p, "t_scrapes_total", "counter", "Scrapes so far.");
	sc_prom_sample(p, "t_scrapes_total", n, NULL);
	return SC_OK;
}

/* Sends req to the endpoint at where ("http://127.0.0.1:P/metrics") and
 * reads the whole answer into buf (size bytes, NUL-terminated). */
static void exchange(const char *where, const char *req, size_t req_len, char *buf, size_t size)
{
	unsigned port = 0;
	struct sockaddr_in sa = { .sin_family = AF_INET };
	struct timeval tv = { .tv_sec = 10 };
	size_t got = 0;
	ssize_t n;
	int fd;

	assert_int_equal(sscanf(where, "http://127.0.0.1:%u/metrics", &port), 1);
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	if (req_len)
		assert_int_equal(send(fd, req, req_len, MSG_NOSIGNAL), (ssize_t)req_len);
	shutdown(fd, SHUT_WR);
	while (got + 1 < size && (n = recv(fd, buf + got, size - 1 - got, 0)) > 0)
		got += (size_t)n;
	buf[got] = '\0';
	close(fd);
}

static void get(const char *where, const char *path, char *buf, size_t size)
{
	char req[256];
	int n = snprintf(req, sizeof(req),
			 "GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", path);
	exchange(where, req, (size_t)n, buf, size);
}

static void serves_scrapes(void **state)
{
	fixture f = { 0 };
	sc_http_metrics *m = NULL;
	char buf[8192];
	(void)state;
	SC_ASSERT_OK(sc_http_metrics_start(&m, "127.0.0.1:0", render, &f));
	assert_non_null(strstr(sc_http_metrics_where(m), "/metrics"));
	assert_null(strstr(sc_http_metrics_where(m), ":0/"));
	get(sc_http_metrics_where(m), "/metrics", buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 200"));
	assert_non_null(strstr(buf, "text/plain; version=0.0.4"));
	assert_non_null(strstr(buf, "\nt_scrapes_total 1\n"));
	get(sc_http_metrics_where(m), "/metrics", buf, sizeof(buf));
	assert_non_null(strstr(buf, "\nt_scrapes_total 2\n"));
	get(sc_http_metrics_where(m), "/other", buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 404"));
	assert_int_equal(atomic_load(&f.calls), 2);
	sc_http_metrics_stop(m);
	sc_http_metrics_stop(NULL);
}

static void render_error_is_500(void **state)
{
	fixture f = { .fail = 1 };
	sc_http_metrics *m = NULL;
	char buf[8192];
	(void)state;
	SC_ASSERT_OK(sc_http_metrics_start(&m, "127.0.0.1:0", render, &f));
	get(sc_http_metrics_where(m), "/metrics", buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 500"));
	assert_non_null(strstr(buf, "the test's render failed"));
	atomic_store(&f.fail, 0); /* the endpoint goes on serving */
	get(sc_http_metrics_where(m), "/metrics", buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 200"));
	sc_http_metrics_stop(m);
}

static void malformed_requests_harmless(void **state)
{
	static const char *const junk[] = {
		"",
		"\x01\x02\xff\xfe garbage\r\n\r\n",
		"GET /metrics HTTP/7.0\r\n\r\n",
		"GET\r\n\r\n",
		"GET /metrics HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789",
		"GET /metrics HTTP/1.1\r\nBad header line\r\n\r\n",
	};
	fixture f = { 0 };
	sc_http_metrics *m = NULL;
	char buf[8192];
	(void)state;
	SC_ASSERT_OK(sc_http_metrics_start(&m, "127.0.0.1:0", render, &f));
	for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
		exchange(sc_http_metrics_where(m), junk[i], strlen(junk[i]), buf, sizeof(buf));
		assert_null(strstr(buf, "HTTP/1.1 200")); /* never rendered for junk */
	}
	assert_int_equal(atomic_load(&f.calls), 0);
	get(sc_http_metrics_where(m), "/metrics", buf, sizeof(buf));
	assert_non_null(strstr(buf, "\nt_scrapes_total 1\n"));
	sc_http_metrics_stop(m);
}

static void bad_or_busy_address_refused(void **state)
{
	fixture f = { 0 };
	sc_http_metrics *m = NULL, *again = NULL;
	char hostport[64];
	unsigned port = 0;
	(void)state;
	SC_ASSERT_ERR(sc_http_metrics_start(&m, "nonsense", render, &f), SC_EINVAL);
	assert_null(m);
	SC_ASSERT_OK(sc_http_metrics_start(&m, "127.0.0.1:0", render, &f));
	assert_int_equal(sscanf(sc_http_metrics_where(m), "http://127.0.0.1:%u/", &port), 1);
	snprintf(hostport, sizeof(hostport), "127.0.0.1:%u", port);
	SC_ASSERT_ERR(sc_http_metrics_start(&again, hostport, render, &f), SC_EIO);
	assert_non_null(strstr(sc_err_detail(), hostport));
	assert_null(again);
	sc_http_metrics_stop(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(family_and_samples),
		cmocka_unit_test(label_values_escaped),
		cmocka_unit_test(numbers),
		cmocka_unit_test(grows_past_first_block),
		cmocka_unit_test(listen_values),
		cmocka_unit_test(serves_scrapes),
		cmocka_unit_test(render_error_is_500),
		cmocka_unit_test(malformed_requests_harmless),
		cmocka_unit_test(bad_or_busy_address_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
