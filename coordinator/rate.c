/* rate.c — token buckets per key in a fixed table (rate.h). */
#include <math.h>
#include <stdlib.h>

#include "rate.h"

typedef struct bucket {
	uint64_t key;
	double tokens;
	double last_s; /* when tokens was last brought up to date */
	int used;
} bucket;

struct sc_rate {
	pthread_mutex_t mu;
	double rate, burst;
	int cap;
	bucket *b; /* cap; looked up by a hash, probing a few slots */
};

#define PROBES 8 /* slots tried per key: a miss reuses the stalest of them */

sc_err sc_rate_new(sc_rate **out, double rate, double burst, int cap)
{
	sc_rate *r;

	*out = NULL;
	if (!(rate > 0) || !isfinite(rate) || !(burst >= 1) || !isfinite(burst) || cap < 1 ||
	    cap > (1 << 20))
		return sc_errf(SC_EINVAL,
			       "a rate limit needs a positive rate, a burst of at least 1 and 1 "
			       "to %d buckets",
			       1 << 20);
	if (!(r = calloc(1, sizeof(*r))) || !(r->b = calloc((size_t)cap, sizeof(bucket)))) {
		free(r);
		return sc_errf(SC_ENOMEM, "out of memory for a rate limiter");
	}
	pthread_mutex_init(&r->mu, NULL);
	r->rate = rate;
	r->burst = burst;
	r->cap = cap;
	*out = r;
	return SC_OK;
}

void sc_rate_free(sc_rate *r)
{
	if (!r)
		return;
	pthread_mutex_destroy(&r->mu);
	free(r->b);
	free(r);
}

static uint64_t mix(uint64_t k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdULL;
	k ^= k >> 33;
	return k;
}

int sc_rate_take(sc_rate *r, uint64_t key, double now_s, double *retry_s)
{
	bucket *b = NULL, *stale = NULL;
	uint64_t h = mix(key);
	int ok;

	pthread_mutex_lock(&r->mu);
	for (int i = 0; i < PROBES && !b; i++) {
		bucket *c = &r->b[(h + (uint64_t)i) % (uint64_t)r->cap];
		if (c->used && c->key == key)
			b = c;
		else if (!stale || !c->used || (stale->used && c->last_s < stale->last_s))
			stale = c;
	}
	if (!b) {
		b = stale;
		*b = (bucket){ .key = key, .tokens = r->burst, .last_s = now_s, .used = 1 };
	}
	if (now_s > b->last_s) {
		b->tokens = fmin(r->burst, b->tokens + (now_s - b->last_s) * r->rate);
		b->last_s = now_s;
	}
	ok = b->tokens >= 1.0;
	if (ok)
		b->tokens -= 1.0;
	if (retry_s)
		*retry_s = ok ? 0 : (1.0 - b->tokens) / r->rate;
	pthread_mutex_unlock(&r->mu);
	return ok;
}
