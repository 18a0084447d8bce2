/* file_test.c — whole-file reads, atomic replacement and mkdir. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sc_file.h"
#include "testutil.h"

static const char *tpath(const char *name)
{
	static char buf[4][512];
	static int k;
	k = (k + 1) % 4;
	return sc_test_path(buf[k], sizeof(buf[k]), name);
}

static void assert_detail_has(const char *word)
{
	if (!strstr(sc_err_detail(), word))
		fail_msg("detail '%s' does not mention '%s'", sc_err_detail(), word);
}

static int exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

static void assert_no_tmp(const char *path)
{
	char tmp[600];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if (exists(tmp))
		fail_msg("%s was left behind", tmp);
}

/* Reads path and checks it holds exactly want (len bytes) plus a NUL. */
static void assert_holds(const char *path, const void *want, size_t len)
{
	char *got;
	size_t n;
	SC_ASSERT_OK(sc_file_read(path, 1 << 20, &got, &n));
	assert_int_equal(n, len);
	assert_memory_equal(got, want, len);
	assert_int_equal(got[n], '\0');
	free(got);
}

static void test_round_trip(void **state)
{
	(void)state;
	unsigned char data[3000];
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (unsigned char)(i * 7 + 1);
	data[10] = 0; /* binary, with NULs inside */
	const char *path = tpath("round.bin");
	SC_ASSERT_OK(sc_file_write_atomic(path, data, sizeof(data)));
	assert_holds(path, data, sizeof(data));
	assert_no_tmp(path);

	const char *empty = tpath("empty.bin");
	SC_ASSERT_OK(sc_file_write_atomic(empty, NULL, 0));
	assert_holds(empty, "", 0);
}

static void test_read_missing(void **state)
{
	(void)state;
	const char *path = tpath("absent.json");
	char *got = (char *)1;
	size_t n = 7;
	SC_ASSERT_ERR(sc_file_read(path, 100, &got, &n), SC_ENOENT);
	assert_detail_has(path);
	assert_null(got);
	assert_int_equal(n, 0);
	/* A component of the path is a regular file: unreadable, not missing. */
	const char *plain = tpath("plain-parent");
	assert_int_equal(sc_test_write_file(plain, "x", 1), 0);
	SC_ASSERT_ERR(sc_file_read(tpath("plain-parent/child"), 100, &got, &n), SC_EIO);
	assert_detail_has("plain-parent/child");
}

static void test_read_not_regular(void **state)
{
	(void)state;
	const char *dir = tpath("a-dir");
	char *got;
	size_t n;
	assert_int_equal(mkdir(dir, 0755), 0);
	SC_ASSERT_ERR(sc_file_read(dir, 100, &got, &n), SC_EIO);
	assert_detail_has(dir);
	assert_detail_has("not a regular file");
	assert_null(got);
	/* A FIFO is refused at once, not waited on for a writer. */
	const char *fifo = tpath("a-fifo");
	assert_int_equal(mkfifo(fifo, 0644), 0);
	SC_ASSERT_ERR(sc_file_read(fifo, 100, &got, &n), SC_EIO);
	assert_detail_has("not a regular file");
}

static void test_read_size_limit(void **state)
{
	(void)state;
	char data[100];
	memset(data, 'a', sizeof(data));
	const char *path = tpath("hundred.txt");
	char *got;
	size_t n;
	assert_int_equal(sc_test_write_file(path, data, sizeof(data)), 0);
	SC_ASSERT_ERR(sc_file_read(path, 99, &got, &n), SC_EFORMAT);
	assert_detail_has(path);
	assert_detail_has("larger than 99 bytes");
	assert_null(got);
	SC_ASSERT_OK(sc_file_read(path, 100, &got, &n)); /* exactly at the limit */
	assert_int_equal(n, 100);
	free(got);
}

static void test_atomic_replaces(void **state)
{
	(void)state;
	const char *path = tpath("replace.txt");
	const char *tmp = tpath("replace.txt.tmp");
	assert_int_equal(sc_test_write_file(path, "the old, longer contents", 24), 0);
	assert_int_equal(sc_test_write_file(tmp, "stale from a crash", 18), 0);
	SC_ASSERT_OK(sc_file_write_atomic(path, "new", 3));
	assert_holds(path, "new", 3);
	assert_no_tmp(path);
}

static void test_streamed(void **state)
{
	(void)state;
	const char *path = tpath("pieces.txt");
	sc_file_atomic *f;
	SC_ASSERT_OK(sc_file_begin(&f, path));
	SC_ASSERT_OK(sc_file_put(f, "one ", 4));
	SC_ASSERT_OK(sc_file_put(f, NULL, 0));
	SC_ASSERT_OK(sc_file_put(f, "two", 3));
	assert_false(exists(path)); /* nothing in place before commit */
	SC_ASSERT_OK(sc_file_commit(f));
	assert_holds(path, "one two", 7);
	assert_no_tmp(path);

	/* Abort leaves the old file as it was. */
	SC_ASSERT_OK(sc_file_begin(&f, path));
	SC_ASSERT_OK(sc_file_put(f, "three", 5));
	sc_file_abort(f);
	sc_file_abort(NULL);
	assert_holds(path, "one two", 7);
	assert_no_tmp(path);
}

static void test_write_errors(void **state)
{
	(void)state;
	/* No parent directory: the temporary file cannot be made. */
	const char *orphan = tpath("no/such/parent.txt");
	SC_ASSERT_ERR(sc_file_write_atomic(orphan, "x", 1), SC_EIO);
	assert_detail_has(orphan);
	/* A non-empty directory in the way: the rename fails, and the
	 * temporary file is removed. */
	const char *dir = tpath("in-the-way");
	assert_int_equal(mkdir(dir, 0755), 0);
	assert_int_equal(sc_test_write_file(tpath("in-the-way/f"), "x", 1), 0);
	SC_ASSERT_ERR(sc_file_write_atomic(dir, "x", 1), SC_EIO);
	assert_detail_has(dir);
	assert_no_tmp(dir);
}

/* A path under a root: relative, no "..", no symbolic link out. */
static void test_under(void **state)
{
	(void)state;
	char root[600], out[4096], small[8];
	snprintf(root, sizeof(root), "%s", tpath("under"));
	SC_ASSERT_OK(sc_file_mkdir(root));
	char sub[700], f[700], g[700], in[700], away[700], outside[700];
	snprintf(sub, sizeof(sub), "%s/sub", root);
	SC_ASSERT_OK(sc_file_mkdir(sub));
	snprintf(f, sizeof(f), "%s/a.txt", root);
	snprintf(g, sizeof(g), "%s/sub/b.txt", root);
	SC_ASSERT_OK(sc_file_write_atomic(f, "a", 1));
	SC_ASSERT_OK(sc_file_write_atomic(g, "b", 1));
	snprintf(outside, sizeof(outside), "%s", tpath("outside.txt"));
	SC_ASSERT_OK(sc_file_write_atomic(outside, "x", 1));
	snprintf(in, sizeof(in), "%s/in", root);
	snprintf(away, sizeof(away), "%s/away", root);
	unlink(in);
	unlink(away);
	assert_int_equal(symlink("sub/b.txt", in), 0);
	assert_int_equal(symlink(outside, away), 0);

	SC_ASSERT_OK(sc_file_under(root, "a.txt", "the root", out, sizeof(out)));
	assert_non_null(strstr(out, "/under/a.txt"));
	assert_int_equal(out[0], '/');
	SC_ASSERT_OK(sc_file_under(root, "sub//b.txt", "the root", out, sizeof(out)));
	assert_non_null(strstr(out, "/under/sub/b.txt"));
	SC_ASSERT_OK(sc_file_under(root, "./in", "the root", out, sizeof(out)));
	assert_non_null(strstr(out, "/under/sub/b.txt")); /* a link within is fine */

	SC_ASSERT_ERR(sc_file_under(root, "../outside.txt", "the root", out, sizeof(out)),
		      SC_EINVAL);
	assert_detail_has("leaves the root");
	SC_ASSERT_ERR(sc_file_under(root, "sub/../a.txt", "the root", out, sizeof(out)), SC_EINVAL);
	SC_ASSERT_ERR(sc_file_under(root, outside, "the root", out, sizeof(out)), SC_EINVAL);
	assert_detail_has("absolute");
	SC_ASSERT_ERR(sc_file_under(root, "away", "the root", out, sizeof(out)), SC_EINVAL);
	assert_detail_has("symbolic link");
	SC_ASSERT_ERR(sc_file_under(root, "nothere.txt", "the root", out, sizeof(out)), SC_ENOENT);
	assert_detail_has("nothere.txt");
	SC_ASSERT_ERR(sc_file_under(root, "", "the root", out, sizeof(out)), SC_EINVAL);
	SC_ASSERT_ERR(sc_file_under(root, "a.txt", "the root", small, sizeof(small)), SC_ERANGE);
	SC_ASSERT_ERR(sc_file_under(tpath("no-such-root"), "a.txt", "the root", out, sizeof(out)),
		      SC_EIO);
}

static void test_mkdir(void **state)
{
	(void)state;
	const char *dir = tpath("made");
	struct stat st;
	SC_ASSERT_OK(sc_file_mkdir(dir));
	assert_int_equal(stat(dir, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	SC_ASSERT_OK(sc_file_mkdir(dir)); /* already there */

	const char *file = tpath("regular");
	assert_int_equal(sc_test_write_file(file, "x", 1), 0);
	SC_ASSERT_ERR(sc_file_mkdir(file), SC_EIO);
	assert_detail_has(file);
	assert_detail_has("not a directory");
	const char *under = tpath("regular/sub");
	SC_ASSERT_ERR(sc_file_mkdir(under), SC_EIO);
	assert_detail_has(under);
	assert_detail_has("mkdir");
	SC_ASSERT_ERR(sc_file_mkdir(tpath("missing/sub")), SC_EIO);
	assert_detail_has("missing/sub");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_read_missing),
		cmocka_unit_test(test_read_not_regular),
		cmocka_unit_test(test_read_size_limit),
		cmocka_unit_test(test_atomic_replaces),
		cmocka_unit_test(test_streamed),
		cmocka_unit_test(test_write_errors),
		cmocka_unit_test(test_mkdir),
		cmocka_unit_test(test_under),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
