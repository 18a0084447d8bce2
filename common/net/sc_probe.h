/* sc_probe.h — measuring a control-plane link: round-trip time and
 * bandwidth to a peer that serves the Echo method (Worker.Echo,
 * Coordinator.Echo), with a short, bounded probe.
 *
 * A probe is a few small echoes (the shortest round trip is the RTT), then
 * payloads sent one way: a first of 256 KiB that sizes the others, then
 * two sized from the rate so far to take about half a second each
 * (256 KiB to 4 MiB: many times a shaper's burst), each sent only while
 * the budget surely holds it. Bandwidth = payload bits / (transfer time -
 * RTT), the best of the sized payloads — others' traffic on the link only
 * slows a payload, so the fastest is the nearest to what the link carries;
 * the first does not count, as it may pass within a shaper's burst — or
 * the first's alone on a link too slow for more. The whole probe stays
 * within its time budget (a payload the budget cuts short is dropped when
 * an earlier one measured the link); a peer that does not answer in it
 * gives no measurement. Nothing here keeps state between probes.
 */
#ifndef SC_PROBE_H
#define SC_PROBE_H

#include <stddef.h>
#include <stdint.h>

#include "sc_err.h"
#include "sc_rpc.h"

#define SC_PROBE_MAX_BYTES  (8u << 20) /* the most an echo carries either way */
#define SC_PROBE_BUDGET_MS  2000       /* the longest probe of one peer */
#define SC_PROBE_RTT_ECHOES 5          /* small echoes for the RTT */

/* The Echo method: EchoRequest -> EchoReply of reply_bytes zero bytes (the
 * request's payload is dropped). INVALID_ARGUMENT when the payload or
 * reply_bytes is over SC_PROBE_MAX_BYTES. arg is unused. */
void sc_probe_echo(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep);

typedef struct sc_probe_result {
	double rtt_ms;       /* > 0 */
	double mbit_s;       /* > 0, from this side to the peer */
	int64_t measured_ms; /* Unix ms when the probe ended */
} sc_probe_result;

/* Says whether a probe should stop now (the prober became busy, or is
 * shutting down); checked between echoes. */
typedef int (*sc_probe_stop_fn)(void *arg);

/* Probes the link to cl's peer with method ("Worker.Echo") within
 * budget_ms. cl is borrowed; stop (may be NULL) is called with arg between
 * echoes. SC_OK with *out filled; SC_EIO when the peer did not answer in
 * time or refused (the detail says which); SC_EINVAL when stop asked to
 * give up before the end (nothing measured). */
sc_err sc_probe_link(sc_rpc_client *cl, const char *method, int budget_ms, sc_probe_stop_fn stop,
		     void *arg, sc_probe_result *out);

/* NULL when a reported measurement is sane: rtt_ms in (0, 1e6), mbit_s in
 * (0, 1e7) (both finite) and measured_ms in (0, now_ms + 1 day]; else what
 * is wrong with it (a static string). */
const char *sc_probe_check(double rtt_ms, double mbit_s, int64_t measured_ms, int64_t now_ms);

#endif
