/* probe.c — the Echo method and a bounded link probe (sc_probe.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sc_probe.h"
#include "sc_rpc_pb.h"
#include "splitchain.pb-c.h"

#define FIRST_BYTES (256u << 10) /* the first bandwidth payload */
#define BULK_MAX    (4u << 20)   /* the most a later one carries */
#define BULK_AIM_S  0.5          /* what a later one aims to take */
#define BULK_ECHOES 3            /* payloads in all: the first and two sized */
#define DAY_MS      86400000LL

void sc_probe_echo(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	Splitchain__EchoRequest *r;
	Splitchain__EchoReply out = SPLITCHAIN__ECHO_REPLY__INIT;
	uint8_t *zeros = NULL;

	(void)arg;
	if (sc_rpc_unpack(&splitchain__echo_request__descriptor, req, len, (ProtobufCMessage **)&r,
			  rep))
		return;
	if (r->payload.len > SC_PROBE_MAX_BYTES || r->reply_bytes > SC_PROBE_MAX_BYTES) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT,
				 "an echo carries at most %u bytes either way (payload %zu, reply "
				 "%u asked)",
				 SC_PROBE_MAX_BYTES, r->payload.len, r->reply_bytes);
		goto out;
	}
	if (r->reply_bytes && !(zeros = calloc(1, r->reply_bytes))) {
		sc_rpc_reply_err(rep, SC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	out.payload.data = zeros;
	out.payload.len = r->reply_bytes;
	sc_rpc_reply_pb(rep, &out.base);
out:
	free(zeros);
	splitchain__echo_request__free_unpacked(r, NULL);
}

static double mono_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One echo of `bytes` (from buf) within the budget's end; *took = its
 * seconds. SC_EIO when it was not answered OK in time. */
static sc_err echo(sc_rpc_client *cl, const char *method, const uint8_t *buf, size_t bytes,
		   double end, double *took)
{
	Splitchain__EchoRequest req = SPLITCHAIN__ECHO_REQUEST__INIT;
	Splitchain__EchoReply *rep = NULL;
	char msg[256] = "";
	int status = SC_STATUS_OK;
	double t0 = mono_s();
	int timeout_ms = (int)((end - t0) * 1000);

	if (timeout_ms < 1)
		return sc_errf(SC_EIO, "%s: out of time", method);
	req.payload.data = (uint8_t *)buf;
	req.payload.len = bytes;
	if (sc_rpc_call_pb(cl, method, &req.base, &splitchain__echo_reply__descriptor, timeout_ms,
			   &status, msg, sizeof(msg), (ProtobufCMessage **)&rep))
		return SC_EIO; /* out of memory: the detail says so */
	*took = mono_s() - t0;
	if (rep)
		splitchain__echo_reply__free_unpacked(rep, NULL);
	if (status != SC_STATUS_OK)
		return sc_errf(SC_EIO, "%s: %s%s%s", method, sc_status_name(status),
			       msg[0] ? ": " : "", msg);
	return SC_OK;
}

sc_err sc_probe_link(sc_rpc_client *cl, const char *method, int budget_ms, sc_probe_stop_fn stop,
		     void *arg, sc_probe_result *out)
{
	double end = mono_s() + budget_ms / 1000.0, rtt = INFINITY, took, bits_s = 0;
	uint8_t *buf = NULL;
	size_t bytes = FIRST_BYTES;
	sc_err rc;

	/* The first echo may wait for the connection: it does not count. */
	SC_TRY(echo(cl, method, NULL, 0, end, &took));
	for (int i = 0; i < SC_PROBE_RTT_ECHOES; i++) {
		if (stop && stop(arg))
			return sc_errf(SC_EINVAL, "%s: probe given up", method);
		SC_TRY(echo(cl, method, NULL, 0, end, &took));
		if (took < rtt)
			rtt = took;
	}
	if (!(buf = calloc(1, BULK_MAX)))
		return sc_errf(SC_ENOMEM, "out of memory for a probe payload");
	for (int i = 0; i < BULK_ECHOES; i++) {
		if (i > 0) {
			double next = bits_s / 8 * BULK_AIM_S;
			bytes = next < FIRST_BYTES ? FIRST_BYTES
				: next > BULK_MAX  ? BULK_MAX
						   : (size_t)next;
			/* A slow link's first payload measured it: no more than
			 * the budget surely holds. */
			if (mono_s() + 2 * 8.0 * (double)bytes / bits_s > end)
				break;
		}
		if (stop && stop(arg)) {
			rc = sc_errf(SC_EINVAL, "%s: probe given up", method);
			goto out;
		}
		if ((rc = echo(cl, method, buf, bytes, end, &took)) != SC_OK) {
			if (i > 0)
				break; /* cut short: an earlier payload measured it */
			goto out;
		}
		/* A transfer faster than the timer resolves is counted at its
		 * whole time: the estimate errs low, never infinite. */
		double t = took - rtt > 1e-6 ? took - rtt : took, b = 8.0 * (double)bytes / t;
		/* Other traffic on the link (a neighbour's probe, a job) only
		 * slows a payload down: the fastest sized one is the link's
		 * rate. The first sizes them: being small, it may pass within
		 * a shaper's burst, faster than the link carries. */
		if (i == 1 || b > bits_s)
			bits_s = b;
	}
	out->rtt_ms = rtt * 1000;
	out->mbit_s = bits_s / 1e6;
	out->measured_ms = wall_ms();
	rc = SC_OK;
out:
	free(buf);
	return rc;
}

const char *sc_probe_check(double rtt_ms, double mbit_s, int64_t measured_ms, int64_t now_ms)
{
	if (!isfinite(rtt_ms) || !(rtt_ms > 0) || rtt_ms >= 1e6)
		return "round-trip time not in (0, 1e6) ms";
	if (!isfinite(mbit_s) || !(mbit_s > 0) || mbit_s >= 1e7)
		return "bandwidth not in (0, 1e7) Mbit/s";
	if (measured_ms <= 0 || measured_ms > now_ms + DAY_MS)
		return "measurement time not in (0, now + 1 day]";
	return NULL;
}
