/* rng.c — xoshiro256** seeded through splitmix64. */
#include <math.h>

#include "sc_rng.h"

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

void sc_rng_seed(sc_rng *r, const uint64_t *keys, int nkeys)
{
	uint64_t h = 0x5C0FFEE5EEDull;
	for (int i = 0; i < nkeys; i++) {
		h ^= keys[i];
		h = splitmix64(&h);
	}
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&h);
}

uint64_t sc_rng_u64(sc_rng *r)
{
	uint64_t *s = r->s;
	uint64_t res = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return res;
}

float sc_rng_uniform(sc_rng *r)
{
	return (float)(sc_rng_u64(r) >> 40) * (1.0f / 16777216.0f);
}

void sc_rng_uniform_fill(sc_rng *r, float *out, size_t n)
{
	uint64_t s0 = r->s[0], s1 = r->s[1], s2 = r->s[2], s3 = r->s[3];
	const float k = 1.0f / 16777216.0f;
	for (size_t i = 0; i < n; i += 2) {
		uint64_t x = rotl(s1 * 5, 7) * 9, t = s1 << 17;
		s2 ^= s0;
		s3 ^= s1;
		s1 ^= s2;
		s0 ^= s3;
		s2 ^= t;
		s3 = rotl(s3, 45);
		out[i] = (float)(x >> 40) * k;
		if (i + 1 < n)
			out[i + 1] = (float)((x >> 16) & 0xFFFFFFu) * k;
	}
	r->s[0] = s0, r->s[1] = s1, r->s[2] = s2, r->s[3] = s3;
}

float sc_rng_normal(sc_rng *r)
{
	double u1 = ((double)(sc_rng_u64(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
	double u2 = (double)(sc_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
	return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

uint64_t sc_rng_below(sc_rng *r, uint64_t n)
{
	uint64_t lim = -n % n; /* 2^64 mod n */
	for (;;) {
		uint64_t x = sc_rng_u64(r);
		if (x >= lim)
			return x % n;
	}
}
