/* stale_dialer.c — plays a stage of an older placement that keeps dialing a
 * worker's data address: for SECONDS it opens a data-plane dialer with the
 * hello (JOB, VERSION, STAGE), holds it HOLD_MS (its hello goes out on the
 * first connection), closes it and dials again. Used by the recovery test to
 * make a stale dialer race the right one for a listener that was just
 * reopened; with SECRET (64 hex digits) its hello carries that data-plane
 * secret, the TLS test's right hello with a wrong secret, and it also
 * tries to send a tensor, which says the hello again once connected (a
 * TLS handshake can outlast the dial's first hello). Prints how many
 * dials it made. TLS addresses take the files in $SPLITCHAIN_TLS_CERT,
 * $SPLITCHAIN_TLS_KEY and $SPLITCHAIN_TLS_CA. A close that hangs in nng 1.5.2
 * (the hang the worker's close watchdog handles) does not hold the caller:
 * 3 s past SECONDS and two HOLD_MS a watchdog thread reports it and ends the
 * process.
 *   stale_dialer URL JOB VERSION STAGE SECONDS [HOLD_MS [SECRET]] */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sc_dataplane.h"
#include "sc_tls.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static atomic_long dials;
static double end, deadline; /* the loop's end, the watchdog's */

static void *watchdog(void *arg)
{
	(void)arg;
	for (;;) {
		struct timespec ts = { 1, 0 };
		nanosleep(&ts, NULL);
		if (now_s() > deadline) {
			fprintf(stderr, "stale_dialer: a socket close hung (nng 1.5.2); exiting\n");
			printf("%ld dials\n", atomic_load(&dials));
			fflush(NULL);
			_exit(0);
		}
	}
	return NULL;
}

int main(int argc, char **argv)
{
	sc_dp_opts o;
	pthread_t wd;
	int hold_ms;

	if (argc < 6 || argc > 8) {
		fprintf(stderr,
			"usage: stale_dialer URL JOB VERSION STAGE SECONDS [HOLD_MS [SECRET]]\n");
		return 2;
	}
	if (sc_tls_url(argv[1]) &&
	    sc_tls_init(getenv("SPLITCHAIN_TLS_CERT"), getenv("SPLITCHAIN_TLS_KEY"),
			getenv("SPLITCHAIN_TLS_CA"))) {
		fprintf(stderr, "stale_dialer: %s\n", sc_err_detail());
		return 1;
	}
	sc_dp_opts_defaults(&o);
	o.self = (sc_dp_peer){ strtoull(argv[2], NULL, 10), (uint32_t)strtoul(argv[3], NULL, 10),
			       (uint32_t)strtoul(argv[4], NULL, 10) };
	o.peer = (sc_dp_peer){ o.self.job, o.self.version, o.self.stage + 1 };
	end = now_s() + atof(argv[5]);
	hold_ms = argc >= 7 ? atoi(argv[6]) : 50;
	deadline = end + 2e-3 * hold_ms + 3;
	if (pthread_create(&wd, NULL, watchdog, NULL) || pthread_detach(wd)) {
		fprintf(stderr, "stale_dialer: cannot start its watchdog\n");
		return 1;
	}
	if (argc == 8) {
		if (strlen(argv[7]) != 2 * SC_DP_SECRET_LEN) {
			fprintf(stderr, "stale_dialer: SECRET must be %d hex digits\n",
				2 * SC_DP_SECRET_LEN);
			return 2;
		}
		for (int i = 0; i < SC_DP_SECRET_LEN; i++) {
			unsigned v;
			if (sscanf(argv[7] + 2 * i, "%2x", &v) != 1) {
				fprintf(stderr, "stale_dialer: SECRET must be hex digits\n");
				return 2;
			}
			o.secret[i] = (uint8_t)v;
		}
		o.has_secret = 1;
		o.timeout_ms = hold_ms;
	}
	while (now_s() < end) {
		sc_dp_socket *s = NULL;
		struct timespec ts = { hold_ms / 1000, (long)(hold_ms % 1000) * 1000000L };
		if (sc_dp_dial(&s, argv[1], &o) == SC_OK) {
			atomic_fetch_add(&dials, 1);
			if (o.has_secret) { /* waits up to HOLD_MS for the listener's answer */
				static const int64_t one[1] = { 1 };
				static const float x[1] = { 0 };
				sc_dp_tag tag = { o.self.job, 0, 0, SC_DP_FORWARD };
				sc_dp_send(s, &tag, 1, one, x);
			}
		}
		nanosleep(&ts, NULL);
		sc_dp_close(s);
	}
	printf("%ld dials\n", atomic_load(&dials));
	return 0;
}
