/* sc_rng.h — a small deterministic random stream (xoshiro256**, seeded by
 * splitmix64). Same seed, same numbers, on every machine and build.
 */
#ifndef SC_RNG_H
#define SC_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct sc_rng {
	uint64_t s[4];
} sc_rng;

/* Seeds r from a list of keys (e.g. seed, layer, target) hashed together. */
void sc_rng_seed(sc_rng *r, const uint64_t *keys, int nkeys);
uint64_t sc_rng_u64(sc_rng *r);
/* Uniform in [0, 1) with 24 bits (exactly representable as float). */
float sc_rng_uniform(sc_rng *r);
/* out[0..n) = uniforms in [0, 1) with 24 bits each, two from every 64-bit
 * draw (its top and next 24 bits): the stream of n / 2 rounded up
 * sc_rng_u64 calls, in order. For hot loops (stochastic rounding on every
 * hop): the state stays in registers. */
void sc_rng_uniform_fill(sc_rng *r, float *out, size_t n);
/* Standard normal (Box-Muller). */
float sc_rng_normal(sc_rng *r);
/* Uniform integer in [0, n), n > 0, without modulo bias. */
uint64_t sc_rng_below(sc_rng *r, uint64_t n);

#endif
