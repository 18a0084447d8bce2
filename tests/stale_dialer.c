/* stale_dialer.c — plays a stage of an older placement that keeps dialing a
 * worker's data address: for SECONDS it opens a data-plane dialer with the
 * hello (JOB, VERSION, STAGE), holds it HOLD_MS (its hello goes out on the
 * first connection), closes it and dials again. Used by the recovery test to
 * make a stale dialer race the right one for a listener that was just
 * reopened. Prints how many dials it made.
 *   stale_dialer URL JOB VERSION STAGE SECONDS [HOLD_MS] */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "sc_dataplane.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
	sc_dp_opts o;
	double end;
	long dials = 0;
	int hold_ms;

	if (argc < 6 || argc > 7) {
		fprintf(stderr, "usage: stale_dialer URL JOB VERSION STAGE SECONDS [HOLD_MS]\n");
		return 2;
	}
	sc_dp_opts_defaults(&o);
	o.self = (sc_dp_peer){ strtoull(argv[2], NULL, 10), (uint32_t)strtoul(argv[3], NULL, 10),
			       (uint32_t)strtoul(argv[4], NULL, 10) };
	o.peer = (sc_dp_peer){ o.self.job, o.self.version, o.self.stage + 1 };
	end = now_s() + atof(argv[5]);
	hold_ms = argc == 7 ? atoi(argv[6]) : 50;
	while (now_s() < end) {
		sc_dp_socket *s = NULL;
		struct timespec ts = { hold_ms / 1000, (long)(hold_ms % 1000) * 1000000L };
		if (sc_dp_dial(&s, argv[1], &o) == SC_OK)
			dials++;
		nanosleep(&ts, NULL);
		sc_dp_close(s);
	}
	printf("%ld dials\n", dials);
	return 0;
}
