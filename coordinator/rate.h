/* rate.h — per-caller request-rate limits: one token bucket per key (a
 * principal), refilled at `rate` tokens a second up to `burst`. The table has
 * a fixed number of buckets; when full, the one idle longest is reused (it
 * was full, or nearly, so forgetting it lets no one through early by more
 * than one burst). Memory is fixed however many callers come.
 * Thread-safe: one mutex, never held across anything that blocks. */
#ifndef SC_RATE_H
#define SC_RATE_H

#include <pthread.h>
#include <stdint.h>

#include "sc_err.h"

typedef struct sc_rate sc_rate;

/* *out = new limiter of cap buckets (1..1<<20) giving each key rate
 * requests a second (> 0) with bursts of burst (>= 1); free with
 * sc_rate_free. */
sc_err sc_rate_new(sc_rate **out, double rate, double burst, int cap);
/* Accepts NULL. */
void sc_rate_free(sc_rate *r);

/* Takes one token of key's bucket at time now_s (seconds, monotonic): 1
 * when the request may run, 0 when it is over the limit (then *retry_s, if
 * not NULL, says how long until a token is back). */
int sc_rate_take(sc_rate *r, uint64_t key, double now_s, double *retry_s);

#endif
