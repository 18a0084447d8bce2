/* manifest_test.c — a model directory as content-addressed tensors
 * (sc_manifest.h): byte ranges and hashes of single-file and sharded
 * models, the digest, and directories that are not models. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sc_file.h"
#include "sc_manifest.h"
#include "testutil.h"

static float a[6] = { 1, 2, 3, 4, 5, 6 };
static uint16_t b[4] = { 0x3f80, 0x4000, 0x4040, 0x4080 }; /* bf16 */
static int32_t c[3] = { 7, 8, 9 };

static const char *dir_of(const char *name)
{
	static char buf[4][512];
	static int k;
	k = (k + 1) % 4;
	sc_test_path(buf[k], sizeof(buf[k]), name);
	mkdir(buf[k], 0755);
	return buf[k];
}

/* Writes the tensors [from, to) of the three into path. */
static void write_st(const char *path, int from, int to)
{
	sc_st_writer *w;
	const int64_t sa[2] = { 2, 3 }, sb[1] = { 4 }, sc[1] = { 3 };
	SC_ASSERT_OK(sc_st_writer_new(&w));
	if (from <= 0 && to > 0)
		SC_ASSERT_OK(sc_st_writer_add(w, "h.0.w", SC_F32, 2, sa, a));
	if (from <= 1 && to > 1)
		SC_ASSERT_OK(sc_st_writer_add(w, "h.1.b", SC_BF16, 1, sb, b));
	if (from <= 2 && to > 2)
		SC_ASSERT_OK(sc_st_writer_add(w, "a.ids", SC_I32, 1, sc, c));
	SC_ASSERT_OK(sc_st_writer_save(w, path));
	sc_st_writer_free(w);
}

/* Each entry's bytes, read at its offset in its file, are the tensor's and
 * hash to its sha256. */
static void check_ranges(const char *dir, const sc_manifest *m)
{
	for (int i = 0; i < m->n; i++) {
		const sc_manifest_tensor *t = &m->t[i];
		char path[1024], *text, hex[SC_SHA256_HEX];
		uint8_t d[SC_SHA256_BYTES];
		size_t len;
		snprintf(path, sizeof(path), "%s/%s", dir, t->file);
		SC_ASSERT_OK(sc_file_read(path, 1 << 20, &text, &len));
		assert_true(t->offset + t->nbytes <= len);
		const void *want = !strcmp(t->name, "h.0.w")   ? (const void *)a
				   : !strcmp(t->name, "h.1.b") ? (const void *)b
							       : (const void *)c;
		assert_memory_equal(text + t->offset, want, t->nbytes);
		sc_sha256(text + t->offset, t->nbytes, d);
		sc_sha256_hex(d, hex);
		assert_string_equal(hex, t->sha256);
		free(text);
	}
}

static void test_single_file(void **state)
{
	(void)state;
	const char *dir = dir_of("single");
	char path[1024];
	sc_manifest m;
	snprintf(path, sizeof(path), "%s/model.safetensors", dir);
	write_st(path, 0, 3);
	SC_ASSERT_OK(sc_manifest_build(&m, dir));
	assert_int_equal(m.n, 3);
	assert_string_equal(m.t[0].name, "a.ids"); /* sorted by name */
	assert_string_equal(m.t[1].name, "h.0.w");
	assert_string_equal(m.t[2].name, "h.1.b");
	assert_int_equal(m.t[1].dtype, SC_F32);
	assert_int_equal(m.t[1].ndim, 2);
	assert_int_equal(m.t[1].shape[1], 3);
	assert_int_equal(m.t[2].dtype, SC_BF16);
	assert_int_equal(m.bytes, sizeof(a) + sizeof(b) + sizeof(c));
	assert_string_equal(m.t[0].file, "model.safetensors");
	check_ranges(dir, &m);
	assert_non_null(sc_manifest_find(&m, "h.1.b"));
	assert_null(sc_manifest_find(&m, "h.9.b"));

	/* The digest is a function of config and manifest. */
	char d1[SC_SHA256_HEX], d2[SC_SHA256_HEX], d3[SC_SHA256_HEX];
	sc_manifest_digest("{}", 2, m.t, m.n, d1);
	sc_manifest_digest("{}", 2, m.t, m.n, d2);
	assert_string_equal(d1, d2);
	sc_manifest_digest("{ }", 3, m.t, m.n, d3);
	assert_string_not_equal(d1, d3);
	m.t[0].sha256[0] = m.t[0].sha256[0] == '0' ? '1' : '0';
	sc_manifest_digest("{}", 2, m.t, m.n, d3);
	assert_string_not_equal(d1, d3);
	sc_manifest_free(&m);
	assert_int_equal(m.n, 0);
}

static void test_sharded(void **state)
{
	(void)state;
	const char *dir = dir_of("sharded");
	char path[1024];
	static const char index[] = "{\"metadata\": {}, \"weight_map\": {\"h.0.w\": "
				    "\"model-1.safetensors\", \"h.1.b\": \"model-2.safetensors\", "
				    "\"a.ids\": \"model-2.safetensors\"}}";
	sc_manifest m;
	snprintf(path, sizeof(path), "%s/model-1.safetensors", dir);
	write_st(path, 0, 1);
	snprintf(path, sizeof(path), "%s/model-2.safetensors", dir);
	write_st(path, 1, 3);
	snprintf(path, sizeof(path), "%s/model.safetensors.index.json", dir);
	assert_int_equal(sc_test_write_file(path, index, strlen(index)), 0);
	SC_ASSERT_OK(sc_manifest_build(&m, dir));
	assert_int_equal(m.n, 3);
	assert_string_equal(sc_manifest_find(&m, "h.0.w")->file, "model-1.safetensors");
	assert_string_equal(sc_manifest_find(&m, "h.1.b")->file, "model-2.safetensors");
	check_ranges(dir, &m);
	sc_manifest_free(&m);

	/* An index entry its shard lacks. */
	static const char bad[] = "{\"weight_map\": {\"h.0.w\": \"model-2.safetensors\"}}";
	assert_int_equal(sc_test_write_file(path, bad, strlen(bad)), 0);
	SC_ASSERT_ERR(sc_manifest_build(&m, dir), SC_EFORMAT);
	assert_non_null(strstr(sc_err_detail(), "h.0.w"));
	assert_int_equal(m.n, 0);
}

static void test_not_a_model(void **state)
{
	(void)state;
	const char *dir = dir_of("empty");
	sc_manifest m;
	SC_ASSERT_ERR(sc_manifest_build(&m, dir), SC_ENOENT);
	assert_non_null(strstr(sc_err_detail(), "model.safetensors"));
	char path[1024];
	snprintf(path, sizeof(path), "%s/model.safetensors", dir);
	assert_int_equal(sc_test_write_file(path, "garbage!", 8), 0);
	SC_ASSERT_ERR(sc_manifest_build(&m, dir), SC_EFORMAT);
}

static void test_names(void **state)
{
	(void)state;
	enum sc_dtype d;
	SC_ASSERT_OK(sc_dtype_parse("BF16", &d));
	assert_int_equal(d, SC_BF16);
	SC_ASSERT_ERR(sc_dtype_parse("F99", &d), SC_EFORMAT);
	assert_true(sc_sha256_hex_valid(
	    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
	assert_false(sc_sha256_hex_valid(
	    "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"));
	assert_false(sc_sha256_hex_valid("e3b0"));
	assert_false(sc_sha256_hex_valid("../../../../etc/passwd"));
	assert_false(sc_sha256_hex_valid(NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_single_file),
		cmocka_unit_test(test_sharded),
		cmocka_unit_test(test_not_a_model),
		cmocka_unit_test(test_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
