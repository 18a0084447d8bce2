/* access_test.c — the pieces of authorisation that stand alone: tokens and
 * token files (common/util/sc_token.h), the users store (coordinator/
 * db_users.h) and the request-rate limiter (coordinator/rate.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "db.h"
#include "db_users.h"
#include "rate.h"
#include "sc_token.h"
#include "testutil.h"

/* ---- tokens ---- */

static void tokens_are_random_hex_with_their_prefix(void **st)
{
	char a[SC_TOKEN_MAX], b[SC_TOKEN_MAX], h[SC_SHA256_HEX];
	(void)st;
	SC_ASSERT_OK(sc_token_new("sct_", a));
	SC_ASSERT_OK(sc_token_new("sct_", b));
	assert_int_equal(strlen(a), 4 + 2 * SC_TOKEN_RANDOM);
	assert_memory_equal(a, "sct_", 4);
	assert_int_equal(strspn(a + 4, "0123456789abcdef"), 2 * SC_TOKEN_RANDOM);
	assert_string_not_equal(a, b);
	SC_ASSERT_ERR(sc_token_new("toolongprefix", a), SC_EINVAL);
	sc_token_hash_hex("abc", 3, h); /* FIPS 180-2's example */
	assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	assert_true(sc_token_equal("same", "same", 4));
	assert_false(sc_token_equal("same", "sane", 4));
}

static void tickets_bind_the_secret_and_the_model(void **st)
{
	char t1[SC_TOKEN_MAX], t2[SC_TOKEN_MAX], t3[SC_TOKEN_MAX], t4[SC_TOKEN_MAX];
	(void)st;
	sc_token_gen_ticket("secret-1", "/m/llama", "", t1);
	sc_token_gen_ticket("secret-1", "/m/llama", "", t2);
	sc_token_gen_ticket("secret-2", "/m/llama", "", t3);
	sc_token_gen_ticket("secret-1", "/m/llam", "a", t4); /* no ambiguity at the join */
	assert_string_equal(t1, t2);
	assert_string_not_equal(t1, t3);
	assert_string_not_equal(t1, t4);
	assert_memory_equal(t1, "scg_", 4);
	sc_token_peer("join", t1);
	sc_token_peer("joim", t2);
	assert_memory_equal(t1, "scp_", 4);
	assert_string_not_equal(t1, t2);
}

static void token_files(void **st)
{
	static const struct {
		const char *name, *text;
		mode_t mode;
		sc_err want;
		const char *got; /* the token read, or a word of the error */
	} cases[] = {
		{ "ok", "sct_abc\n", 0600, SC_OK, "sct_abc" },
		{ "spaces", "  sct_abc \r\n\n", 0600, SC_OK, "sct_abc" },
		{ "group-readable", "sct_abc\n", 0640, SC_EINVAL, "chmod 600" },
		{ "world-readable", "sct_abc\n", 0644, SC_EINVAL, "chmod 600" },
		{ "empty", "\n", 0600, SC_EINVAL, "empty" },
		{ "two-lines", "sct_a\nsct_b\n", 0600, SC_EINVAL, "more than one line" },
	};
	char path[512], out[SC_TOKEN_MAX];
	(void)st;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		sc_test_path(path, sizeof(path), cases[i].name);
		assert_int_equal(sc_test_write_file(path, cases[i].text, strlen(cases[i].text)), 0);
		assert_int_equal(chmod(path, cases[i].mode), 0);
		sc_err rc = sc_token_read_file(path, 1, out, sizeof(out));
		if (rc != cases[i].want)
			fail_msg("%s: %s", cases[i].name, rc ? sc_err_detail() : "accepted");
		if (rc == SC_OK)
			assert_string_equal(out, cases[i].got);
		else if (!strstr(sc_err_detail(), cases[i].got))
			fail_msg("%s: '%s' does not say '%s'", cases[i].name, sc_err_detail(),
				 cases[i].got);
	}
	/* The join token file is not a user's: any mode is read. */
	sc_test_path(path, sizeof(path), "world-readable");
	SC_ASSERT_OK(sc_token_read_file(path, 0, out, sizeof(out)));
	/* Longer than the room given. */
	sc_test_path(path, sizeof(path), "ok");
	SC_ASSERT_ERR(sc_token_read_file(path, 1, out, 4), SC_EINVAL);
	sc_test_path(path, sizeof(path), "no-such-file");
	SC_ASSERT_ERR(sc_token_read_file(path, 1, out, sizeof(out)), SC_ENOENT);
}

/* ---- the users store ---- */

static sc_db *fresh_db(const char *name)
{
	char path[512], wal[600];
	sc_db *db = NULL;
	sc_test_path(path, sizeof(path), name);
	unlink(path);
	snprintf(wal, sizeof(wal), "%s-wal", path);
	unlink(wal);
	snprintf(wal, sizeof(wal), "%s-shm", path);
	unlink(wal);
	SC_ASSERT_OK(sc_db_open(&db, path));
	return db;
}

static void users_add_find_list_revoke(void **st)
{
	char alice[SC_TOKEN_MAX], root[SC_TOKEN_MAX], again[SC_TOKEN_MAX], h[SC_SHA256_HEX];
	sc_db *db = fresh_db("users.db");
	sc_db_user u, *list = NULL;
	int64_t ida = 0, idr = 0;
	int n = 0;
	(void)st;
	SC_ASSERT_OK(sc_db_user_add(db, "alice", 0, alice, &ida));
	SC_ASSERT_OK(sc_db_user_add(db, "root.admin_1", 1, root, &idr));
	assert_true(ida > 0 && idr > ida);
	assert_memory_equal(alice, "sct_", 4);
	/* Names: taken, empty, too long, odd characters, a leading '-'. */
	SC_ASSERT_ERR(sc_db_user_add(db, "alice", 1, again, NULL), SC_EINVAL);
	assert_non_null(strstr(sc_err_detail(), "exists"));
	static const char *const bad[] = {
		"",
		"-admin",
		"a b",
		"a/b",
		"x'; DROP TABLE users;--",
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		"aaaa"
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		SC_ASSERT_ERR(sc_db_user_add(db, bad[i], 0, again, NULL), SC_EINVAL);
	/* Found by the token's hash only; the token itself is stored nowhere. */
	sc_token_hash_hex(alice, strlen(alice), h);
	SC_ASSERT_OK(sc_db_user_by_token(db, h, &u));
	assert_int_equal(u.id, ida);
	assert_string_equal(u.name, "alice");
	assert_false(u.admin);
	sc_token_hash_hex(root, strlen(root), h);
	SC_ASSERT_OK(sc_db_user_by_token(db, h, &u));
	assert_true(u.admin);
	sc_token_hash_hex("sct_made_up", 11, h);
	SC_ASSERT_ERR(sc_db_user_by_token(db, h, &u), SC_ENOENT);
	SC_ASSERT_OK(sc_db_users_list(db, &list, &n));
	assert_int_equal(n, 2);
	assert_string_equal(list[0].name, "alice");
	assert_int_equal(list[0].revoked_ms, 0);
	assert_true(list[0].created_ms > 0);
	free(list);
	/* Revoked: the token stops working, the name stays taken. */
	SC_ASSERT_OK(sc_db_user_revoke(db, "alice"));
	SC_ASSERT_ERR(sc_db_user_revoke(db, "alice"), SC_ENOENT);
	SC_ASSERT_ERR(sc_db_user_revoke(db, "nobody"), SC_ENOENT);
	sc_token_hash_hex(alice, strlen(alice), h);
	SC_ASSERT_ERR(sc_db_user_by_token(db, h, &u), SC_ENOENT);
	SC_ASSERT_ERR(sc_db_user_add(db, "alice", 0, again, NULL), SC_EINVAL);
	SC_ASSERT_OK(sc_db_users_list(db, &list, &n));
	assert_int_equal(n, 2);
	assert_true(list[0].revoked_ms > 0);
	free(list);
	char name[64];
	sc_db_user_name(db, idr, name, sizeof(name));
	assert_string_equal(name, "root.admin_1");
	sc_db_user_name(db, 999, name, sizeof(name));
	assert_string_equal(name, "");
	sc_db_close(db);
}

/* Jobs keep their owner. */
static void jobs_have_owners(void **st)
{
	sc_db *db = fresh_db("owners.db");
	char tok[SC_TOKEN_MAX];
	int64_t uid = 0, j1 = 0, j2 = 0;
	sc_db_job job = { .name = "j",
			  .model_path = "/m",
			  .data_path = "/d",
			  .spec = "x",
			  .spec_len = 1,
			  .stages = 1,
			  .steps = 1 },
		  *got = NULL;
	(void)st;
	SC_ASSERT_OK(sc_db_user_add(db, "carol", 0, tok, &uid));
	job.owner_id = uid;
	SC_ASSERT_OK(sc_db_job_insert(db, &job, &j1));
	job.owner_id = 0;
	SC_ASSERT_OK(sc_db_job_insert(db, &job, &j2));
	SC_ASSERT_OK(sc_db_job_get(db, j1, &got));
	assert_int_equal(got->owner_id, uid);
	free(got);
	SC_ASSERT_OK(sc_db_job_get(db, j2, &got));
	assert_int_equal(got->owner_id, 0);
	free(got);
	sc_db_close(db);
}

/* ---- the rate limiter ---- */

static void rate_bucket_bursts_then_refills(void **st)
{
	sc_rate *r = NULL;
	double retry = -1;
	(void)st;
	SC_ASSERT_OK(sc_rate_new(&r, 10, 5, 64));
	for (int i = 0; i < 5; i++) /* the burst */
		assert_true(sc_rate_take(r, 7, 100.0, &retry));
	assert_false(sc_rate_take(r, 7, 100.0, &retry));
	assert_true(retry > 0.09 && retry <= 0.1 + 1e-9);
	assert_true(sc_rate_take(r, 8, 100.0, NULL));   /* another key: its own bucket */
	assert_false(sc_rate_take(r, 7, 100.05, NULL)); /* half a token back */
	assert_true(sc_rate_take(r, 7, 100.11, NULL));  /* one */
	assert_false(sc_rate_take(r, 7, 100.11, NULL));
	/* Refilled up to the burst, never beyond. */
	int n = 0;
	while (sc_rate_take(r, 7, 1000.0, NULL))
		n++;
	assert_int_equal(n, 5);
	/* The clock going back lends nothing. */
	assert_false(sc_rate_take(r, 7, 10.0, NULL));
	sc_rate_free(r);
}

static void rate_table_stays_bounded(void **st)
{
	sc_rate *r = NULL;
	(void)st;
	SC_ASSERT_OK(sc_rate_new(&r, 1, 2, 16));
	/* Far more keys than buckets: each new one still gets its burst, and a
	 * flooding key stays limited meanwhile. */
	for (uint64_t k = 1; k <= 100000; k++)
		assert_true(sc_rate_take(r, k, 5.0, NULL));
	assert_true(sc_rate_take(r, 424242, 6.0, NULL));
	assert_true(sc_rate_take(r, 424242, 6.0, NULL));
	assert_false(sc_rate_take(r, 424242, 6.0, NULL));
	sc_rate_free(r);
	SC_ASSERT_ERR(sc_rate_new(&r, 0, 1, 16), SC_EINVAL);
	SC_ASSERT_ERR(sc_rate_new(&r, 1, 0.5, 16), SC_EINVAL);
	SC_ASSERT_ERR(sc_rate_new(&r, 1, 1, 0), SC_EINVAL);
	sc_rate_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(tokens_are_random_hex_with_their_prefix),
		cmocka_unit_test(tickets_bind_the_secret_and_the_model),
		cmocka_unit_test(token_files),
		cmocka_unit_test(users_add_find_list_revoke),
		cmocka_unit_test(jobs_have_owners),
		cmocka_unit_test(rate_bucket_bursts_then_refills),
		cmocka_unit_test(rate_table_stays_bounded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
