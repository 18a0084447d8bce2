/* data_test.c — token files, byte-level text and the seeded sample order. */
#include <stdlib.h>
#include <string.h>

#include "sc_data.h"
#include "testutil.h"

static void text_is_bytes(void **state)
{
	char p[512];
	sc_tokens *tk;
	sc_test_path(p, sizeof(p), "hello.txt");
	assert_int_equal(sc_test_write_file(p, "hi\xff", 3), 0);
	SC_ASSERT_OK(sc_tokens_load(&tk, p, 256));
	assert_int_equal(tk->n, 3);
	assert_int_equal(tk->ids[0], 'h');
	assert_int_equal(tk->ids[2], 255);
	sc_tokens_free(tk);
	SC_ASSERT_ERR(sc_tokens_load(&tk, p, 100), SC_ERANGE);
	assert_null(tk);
}

static void token_file_round_trip(void **state)
{
	char p[512];
	int32_t ids[100];
	sc_tokens *tk;
	for (int i = 0; i < 100; i++)
		ids[i] = (int32_t)(i * 500);
	sc_test_path(p, sizeof(p), "t.bin");
	SC_ASSERT_OK(sc_tokens_save(p, ids, 100));
	SC_ASSERT_OK(sc_tokens_load(&tk, p, 50257));
	assert_int_equal(tk->n, 100);
	assert_memory_equal(tk->ids, ids, sizeof(ids));
	sc_tokens_free(tk);
	/* id 49500 is beyond a vocabulary of 40000: named by position */
	SC_ASSERT_ERR(sc_tokens_load(&tk, p, 40000), SC_ERANGE);
	assert_non_null(strstr(sc_err_detail(), "position 80"));
}

static void bad_token_files(void **state)
{
	char p[512];
	int32_t hdr[256] = { SC_TOKENS_MAGIC, 1, 10 };
	unsigned char buf[1024 + 20];
	sc_tokens *tk;
	sc_test_path(p, sizeof(p), "bad.bin");

	/* header says 10 tokens, file has 4 */
	memcpy(buf, hdr, sizeof(hdr));
	memset(buf + 1024, 0, 8);
	assert_int_equal(sc_test_write_file(p, buf, 1024 + 8), 0);
	SC_ASSERT_ERR(sc_tokens_load(&tk, p, 256), SC_EFORMAT);
	/* truncated header */
	assert_int_equal(sc_test_write_file(p, buf, 100), 0);
	SC_ASSERT_ERR(sc_tokens_load(&tk, p, 256), SC_EFORMAT);
	/* unknown version */
	hdr[1] = 7;
	hdr[2] = 0;
	memcpy(buf, hdr, sizeof(hdr));
	assert_int_equal(sc_test_write_file(p, buf, 1024), 0);
	SC_ASSERT_ERR(sc_tokens_load(&tk, p, 256), SC_EFORMAT);
	/* odd payload */
	hdr[1] = 1;
	memcpy(buf, hdr, sizeof(hdr));
	assert_int_equal(sc_test_write_file(p, buf, 1025), 0);
	SC_ASSERT_ERR(sc_tokens_load(&tk, p, 256), SC_EFORMAT);
	/* missing file */
	sc_test_path(p, sizeof(p), "does-not-exist.bin");
	SC_ASSERT_ERR(sc_tokens_load(&tk, p, 256), SC_ENOENT);
}

static sc_tokens *counting_tokens(size_t n)
{
	sc_tokens *tk = calloc(1, sizeof(*tk));
	tk->ids = malloc(n * sizeof(int32_t));
	tk->n = n;
	for (size_t i = 0; i < n; i++)
		tk->ids[i] = (int32_t)i;
	return tk;
}

static void order_is_seeded_and_covers_each_window(void **state)
{
	enum { T = 4, W = 25 };
	sc_tokens *tk = counting_tokens(W * T + 1);
	sc_loader *a, *b, *c;
	int32_t in1[W * T], tg1[W * T], in2[W * T], tg2[W * T];
	int seen[W] = { 0 };

	SC_ASSERT_OK(sc_loader_new(&a, tk, T, 9));
	SC_ASSERT_OK(sc_loader_new(&b, tk, T, 9));
	SC_ASSERT_OK(sc_loader_new(&c, tk, T, 10));
	assert_int_equal(sc_loader_windows(a), W);
	sc_loader_batch(a, 0, W, in1, tg1);
	sc_loader_batch(b, 0, W, in2, tg2);
	assert_memory_equal(in1, in2, sizeof(in1));
	for (int w = 0; w < W; w++) {
		assert_int_equal(in1[w * T] % T, 0); /* windows start on multiples of T */
		seen[in1[w * T] / T]++;
		for (int t = 0; t < T; t++)
			assert_int_equal(tg1[w * T + t], in1[w * T + t] + 1);
	}
	for (int w = 0; w < W; w++)
		assert_int_equal(seen[w], 1);
	sc_loader_batch(c, 0, W, in2, tg2);
	assert_memory_not_equal(in1, in2, sizeof(in1));
	/* A sample is a function of its index: reading 30..31 directly equals
	 * reading them after a walk through epoch 0. */
	sc_loader_batch(a, 30, 2, in1, tg1);
	sc_loader_batch(b, 0, 10, in2, tg2);
	sc_loader_batch(b, 30, 2, in2, tg2);
	assert_memory_equal(in1, in2, 2 * T * sizeof(int32_t));
	sc_loader_free(a);
	sc_loader_free(b);
	sc_loader_free(c);
	sc_tokens_free(tk);
}

static void too_little_data(void **state)
{
	sc_tokens *tk = counting_tokens(8);
	sc_loader *ld;
	SC_ASSERT_ERR(sc_loader_new(&ld, tk, 8, 1), SC_EINVAL);
	SC_ASSERT_OK(sc_loader_new(&ld, tk, 7, 1));
	sc_loader_free(ld);
	sc_tokens_free(tk);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(text_is_bytes),
		cmocka_unit_test(token_file_round_trip),
		cmocka_unit_test(bad_token_files),
		cmocka_unit_test(order_is_seeded_and_covers_each_window),
		cmocka_unit_test(too_little_data),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
