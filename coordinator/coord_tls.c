/* coord_tls.c — the coordinator's side of transport security: its
 * addresses checked against its TLS identity at start, the TLS listeners'
 * refused handshakes recorded as events, and plaintext registers warned
 * of (or refused). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "coord.h"
#include "sc_log.h"
#include "sc_tls.h"

static int plaintext(const char *url)
{
	return url && strncmp(url, "tcp", 3) == 0;
}

int coord_transport_check(coord *c, const char *listen, const char *fetch, const char *cert,
			  const char *key, const char *ca)
{
	if (cert && sc_tls_init(cert, key, ca)) {
		sc_error("coordinator", "%s", sc_err_detail());
		return 1;
	}
	if (sc_tls_check_url("--listen", listen, c->insecure) ||
	    sc_tls_check_url("--fetch-listen", fetch, c->insecure)) {
		sc_error("coordinator", "%s", sc_err_detail());
		return 1;
	}
	c->listen_plain = plaintext(listen);
	if (plaintext(listen) || plaintext(fetch))
		sc_warn("coordinator",
			"--insecure: plaintext tcp:// addresses; anyone on the network "
			"can read and inject this cluster's traffic");
	return 0;
}

static void record_refusal(void *arg, const char *url, uint64_t n)
{
	coord *c = arg;

	sc_warn("coordinator",
		"%s: refused %" PRIu64 " connection%s at the TLS handshake (no certificate from "
		"the cluster CA, or not TLS)",
		url, n, n == 1 ? "" : "s");
	sc_db_event(c->db, 0, 0, SC_LOG_WARN, "tls_refused",
		    "%s: %" PRIu64 " connection%s refused at the TLS handshake (no certificate "
		    "from the cluster CA, or not TLS)",
		    url, n, n == 1 ? "" : "s");
}

void coord_tls_poll(coord *c)
{
	sc_tls_refusals(record_refusal, c);
}

int coord_register_transport(coord *c, const char *name, const char *control, const char *data,
			     char *msg, size_t cap)
{
	if (!c->listen_plain && !plaintext(control) && !plaintext(data))
		return 0;
	if (!c->insecure) {
		snprintf(
		    msg, cap,
		    "worker %s registers plaintext addresses (control %s, data %s): this "
		    "coordinator runs with TLS; start the worker with --tls-cert, --tls-key and "
		    "--tls-ca and tls+tcp:// addresses",
		    name, control, data);
		sc_warn("coordinator", "%s", msg);
		sc_db_event(c->db, 0, 0, SC_LOG_WARN, "plaintext_refused", "%s", msg);
		return 1;
	}
	sc_warn("coordinator",
		"worker %s registered over plaintext (--insecure): control %s, data %s", name,
		control, data);
	sc_db_event(c->db, 0, 0, SC_LOG_WARN, "plaintext_register",
		    "worker %s registered over plaintext (--insecure): control %s, data %s", name,
		    control, data);
	return 0;
}
