/* tcache_test.c — the worker's content-addressed tensor cache (tcache.h):
 * fills checked by hash, resumed fills, the index across a reopen, LRU
 * eviction that spares tensors in use, corrupted and stray files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tcache.h"
#include "testutil.h"

#define N 100

static const char *dir_of(const char *name)
{
	static char buf[4][512];
	static int k;
	k = (k + 1) % 4;
	return sc_test_path(buf[k], sizeof(buf[k]), name);
}

/* data[N] filled from seed, and its hash. */
static void tensor(uint8_t *data, char sha[SC_SHA256_HEX], int seed)
{
	uint8_t d[SC_SHA256_BYTES];
	for (int i = 0; i < N; i++)
		data[i] = (uint8_t)(i * 13 + seed * 101 + 1);
	sc_sha256(data, N, d);
	sc_sha256_hex(d, sha);
}

/* Puts tensor seed into c in chunks of 32 bytes. */
static void put(sc_tcache *c, int seed, char sha[SC_SHA256_HEX])
{
	uint8_t data[N];
	sc_tcache_fill *f;
	tensor(data, sha, seed);
	SC_ASSERT_OK(sc_tcache_fill_begin(c, sha, N, 32, &f));
	assert_int_equal(f->nchunks, 4);
	for (uint32_t i = 0; i < f->nchunks; i++)
		SC_ASSERT_OK(sc_tcache_fill_write(f, i, data + i * 32, i == 3 ? 4 : 32));
	SC_ASSERT_OK(sc_tcache_fill_end(c, f, 1));
	usleep(3000); /* distinct use times */
}

static int cached(sc_tcache *c, const char *sha)
{
	char **l;
	size_t n;
	int found = 0;
	SC_ASSERT_OK(sc_tcache_list(c, &l, &n));
	for (size_t i = 0; i < n; i++)
		found |= !strcmp(l[i], sha);
	sc_tcache_list_free(l, n);
	return found;
}

static void test_fill_get_reopen(void **state)
{
	(void)state;
	const char *dir = dir_of("c1");
	sc_tcache *c;
	sc_tcache_ref *r;
	uint8_t data[N];
	char sha[SC_SHA256_HEX];
	SC_ASSERT_OK(sc_tcache_open(&c, dir, 0));
	SC_ASSERT_ERR(
	    sc_tcache_get(c, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", 0,
			  1, &r),
	    SC_ENOENT);
	put(c, 1, sha);
	tensor(data, sha, 1);
	SC_ASSERT_OK(sc_tcache_get(c, sha, N, 1, &r));
	assert_memory_equal(r->data, data, N);
	sc_tcache_release(c, r);
	assert_int_equal(sc_tcache_used(c), N);
	sc_tcache_close(c);

	/* The index survives a restart. */
	SC_ASSERT_OK(sc_tcache_open(&c, dir, 0));
	assert_true(cached(c, sha));
	assert_int_equal(sc_tcache_used(c), N);
	SC_ASSERT_OK(sc_tcache_get(c, sha, N, 1, &r));
	assert_memory_equal(r->data, data, N);
	sc_tcache_release(c, r);
	sc_tcache_close(c);
}

static void test_corrupted(void **state)
{
	(void)state;
	const char *dir = dir_of("c2");
	char sha[SC_SHA256_HEX], path[1024];
	sc_tcache *c;
	sc_tcache_ref *r;
	SC_ASSERT_OK(sc_tcache_open(&c, dir, 0));
	put(c, 2, sha);
	snprintf(path, sizeof(path), "%s/%s", dir, sha);
	FILE *f = fopen(path, "r+b");
	assert_non_null(f);
	fseek(f, 50, SEEK_SET);
	fputc(0xee, f);
	fclose(f);
	SC_ASSERT_ERR(sc_tcache_get(c, sha, N, 1, &r), SC_ENOENT);
	assert_non_null(strstr(sc_err_detail(), "corrupted"));
	assert_false(cached(c, sha));
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(sc_tcache_used(c), 0);
	sc_tcache_close(c);
}

static void test_mismatch_and_resume(void **state)
{
	(void)state;
	const char *dir = dir_of("c3");
	char sha[SC_SHA256_HEX], path[1024];
	uint8_t data[N];
	sc_tcache *c;
	sc_tcache_fill *f;
	sc_tcache_ref *r;
	SC_ASSERT_OK(sc_tcache_open(&c, dir, 0));
	tensor(data, sha, 3);

	/* Wrong bytes: refused, nothing kept. */
	SC_ASSERT_OK(sc_tcache_fill_begin(c, sha, N, 64, &f));
	uint8_t wrong[N];
	memcpy(wrong, data, N);
	wrong[7] ^= 1;
	SC_ASSERT_OK(sc_tcache_fill_write(f, 0, wrong, 64));
	SC_ASSERT_OK(sc_tcache_fill_write(f, 1, wrong + 64, N - 64));
	SC_ASSERT_ERR(sc_tcache_fill_end(c, f, 1), SC_EFORMAT);
	assert_non_null(strstr(sc_err_detail(), sha));
	assert_false(cached(c, sha));
	snprintf(path, sizeof(path), "%s/%s.part", dir, sha);
	assert_int_equal(access(path, F_OK), -1);

	/* A fill that stops after chunk 1 resumes there, also after a reopen. */
	SC_ASSERT_OK(sc_tcache_fill_begin(c, sha, N, 32, &f));
	assert_int_equal(f->ndone, 0);
	SC_ASSERT_OK(sc_tcache_fill_write(f, 1, data + 32, 32));
	SC_ASSERT_OK(sc_tcache_fill_end(c, f, 0));
	sc_tcache_close(c);
	SC_ASSERT_OK(sc_tcache_open(&c, dir, 0));
	SC_ASSERT_OK(sc_tcache_fill_begin(c, sha, N, 32, &f));
	assert_int_equal(f->ndone, 1);
	assert_int_equal(f->done[1], 1);
	assert_int_equal(f->done[0], 0);
	for (uint32_t i = 0; i < f->nchunks; i++)
		if (!f->done[i])
			SC_ASSERT_OK(sc_tcache_fill_write(f, i, data + i * 32, i == 3 ? 4 : 32));
	SC_ASSERT_OK(sc_tcache_fill_end(c, f, 1));
	SC_ASSERT_OK(sc_tcache_get(c, sha, N, 1, &r));
	assert_memory_equal(r->data, data, N);
	sc_tcache_release(c, r);
	/* A chunk outside the tensor is refused. */
	SC_ASSERT_OK(sc_tcache_fill_begin(c, sha, N, 32, &f));
	SC_ASSERT_ERR(sc_tcache_fill_write(f, 4, data, 4), SC_EINVAL);
	SC_ASSERT_ERR(sc_tcache_fill_write(f, 3, data, 32), SC_EINVAL);
	sc_tcache_fill_end(c, f, 0);
	sc_tcache_close(c);
}

static void test_lru_and_pins(void **state)
{
	(void)state;
	const char *dir = dir_of("c4");
	char s1[SC_SHA256_HEX], s2[SC_SHA256_HEX], s3[SC_SHA256_HEX], s4[SC_SHA256_HEX];
	sc_tcache *c;
	sc_tcache_ref *r1, *r3;
	sc_tcache_fill *f;
	SC_ASSERT_OK(sc_tcache_open(&c, dir, 2 * N + N / 2)); /* room for two */
	put(c, 1, s1);
	put(c, 2, s2);
	SC_ASSERT_OK(sc_tcache_get(c, s1, N, 1, &r1)); /* 1 is now the more recent */
	sc_tcache_release(c, r1);
	usleep(3000);
	put(c, 3, s3); /* evicts 2, the least recently used */
	assert_true(cached(c, s1));
	assert_false(cached(c, s2));
	assert_true(cached(c, s3));
	assert_int_equal(sc_tcache_used(c), 2 * N);

	/* Tensors in use are never evicted: with both pinned, nothing fits. */
	SC_ASSERT_OK(sc_tcache_get(c, s1, N, 1, &r1));
	SC_ASSERT_OK(sc_tcache_get(c, s3, N, 1, &r3));
	uint8_t data[N];
	tensor(data, s4, 4);
	SC_ASSERT_ERR(sc_tcache_fill_begin(c, s4, N, 32, &f), SC_ERANGE);
	assert_non_null(strstr(sc_err_detail(), "--cache-limit"));
	sc_tcache_release(c, r3);
	put(c, 4, s4); /* 3 is free again: it goes, 1 (pinned) stays */
	assert_true(cached(c, s1));
	assert_false(cached(c, s3));
	assert_true(cached(c, s4));
	sc_tcache_release(c, r1);
	sc_tcache_close(c);
}

static void test_stray_files(void **state)
{
	(void)state;
	const char *dir = dir_of("c5");
	char sha[SC_SHA256_HEX], path[1024];
	uint8_t data[N];
	sc_tcache *c;
	SC_ASSERT_OK(sc_tcache_open(&c, dir, 0));
	sc_tcache_close(c);
	tensor(data, sha, 5);
	snprintf(path, sizeof(path), "%s/%s", dir, sha);
	assert_int_equal(sc_test_write_file(path, data, N), 0); /* not in the index */
	SC_ASSERT_OK(sc_tcache_open(&c, dir, 0));
	assert_false(cached(c, sha));
	assert_int_equal(access(path, F_OK), -1);
	/* An indexed file that went missing is forgotten. */
	put(c, 5, sha);
	sc_tcache_close(c);
	unlink(path);
	SC_ASSERT_OK(sc_tcache_open(&c, dir, 0));
	assert_false(cached(c, sha));
	assert_int_equal(sc_tcache_used(c), 0);
	sc_tcache_close(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fill_get_reopen),     cmocka_unit_test(test_corrupted),
		cmocka_unit_test(test_mismatch_and_resume), cmocka_unit_test(test_lru_and_pins),
		cmocka_unit_test(test_stray_files),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
