/* weights_test.c — a model's tensors from model.safetensors or from shards
 * listed in model.safetensors.index.json: lookups, lazy opening, and every
 * bad directory, index and shard refused with the culprit named.
 *
 * Links only sc_format (and so not testutil.c, which needs the backends):
 * the few helpers it would take from there are below. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka needs the four headers above first. */
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sc_err.h"
#include "sc_file.h"
#include "sc_safetensors.h"
#include "sc_weights.h"

#define ASSERT_OK(expr)                                                                            \
	do {                                                                                       \
		sc_err rc_ = (expr);                                                               \
		if (rc_ != SC_OK)                                                                  \
			fail_msg("%s -> %s: %s", #expr, sc_err_name(rc_), sc_err_detail());        \
	} while (0)

/* expr fails with code want and a detail that mentions every string of
 * the NULL-terminated list that follows. */
#define ASSERT_ERR(expr, want, ...)                                                                \
	do {                                                                                       \
		sc_errf(SC_OK, "%s", "");                                                          \
		sc_err rc_ = (expr);                                                               \
		if (rc_ != (want))                                                                 \
			fail_msg("%s -> %s (want %s): %s", #expr, sc_err_name(rc_),                \
				 sc_err_name(want), sc_err_detail());                              \
		assert_mentions((const char *[]){ __VA_ARGS__, NULL });                            \
	} while (0)

static void assert_mentions(const char *const *words)
{
	if (!sc_err_detail()[0])
		fail_msg("failed with no detail for the user");
	for (; *words; words++)
		if (!strstr(sc_err_detail(), *words))
			fail_msg("detail '%s' does not mention '%s'", sc_err_detail(), *words);
}

/* A fresh directory "<$SC_TEST_TMP or /tmp>/sc-weights-<pid>/<name>" in a
 * static buffer (one at a time). */
static const char *case_dir(const char *name)
{
	static char base[512], dir[768];
	if (!base[0]) {
		const char *tmp = getenv("SC_TEST_TMP");
		snprintf(base, sizeof(base), "%s/sc-weights-%ld", tmp && *tmp ? tmp : "/tmp",
			 (long)getpid());
		ASSERT_OK(sc_file_mkdir(base));
	}
	snprintf(dir, sizeof(dir), "%s/%s", base, name);
	ASSERT_OK(sc_file_mkdir(dir));
	return dir;
}

/* "<dir>/<name>" in one of four static buffers. */
static const char *in(const char *dir, const char *name)
{
	static char buf[4][1024];
	static int k;
	k = (k + 1) % 4;
	snprintf(buf[k], sizeof(buf[k]), "%s/%s", dir, name);
	return buf[k];
}

/* Writes text to dir/name, with ' standing for ". */
static void write_text(const char *dir, const char *name, const char *text)
{
	char *s = strdup(text);
	assert_non_null(s);
	for (char *q = s; *q; q++)
		if (*q == '\'')
			*q = '"';
	ASSERT_OK(sc_file_write_atomic(in(dir, name), s, strlen(s)));
	free(s);
}

/* ---- the model: six tensors of two floats each, {i + 1, -(i + 1)} ---- */

#define SHARD1 "model-00001-of-00003.safetensors"
#define SHARD2 "model-00002-of-00003.safetensors"
#define SHARD3 "model-00003-of-00003.safetensors"

static const struct {
	const char *name, *shard;
} model[] = {
	{ "embed", SHARD1 },      { "layers.0.w", SHARD1 }, { "layers.0.b", SHARD2 },
	{ "layers.1.w", SHARD2 }, { "layers.1.b", SHARD3 }, { "head", SHARD3 },
};
#define NMODEL ((int)(sizeof(model) / sizeof(model[0])))

static const char *const index_json = "{'metadata': {'total_size': 48}, 'weight_map': {"
				      "'embed': '" SHARD1 "', 'layers.0.w': '" SHARD1 "', "
				      "'layers.0.b': '" SHARD2 "', 'layers.1.w': '" SHARD2 "', "
				      "'layers.1.b': '" SHARD3 "', 'head': '" SHARD3 "'}}";

static float values[NMODEL][2];

/* Writes the model's tensors that live in shard (all of them for NULL) to
 * dir/file. */
static void write_tensors(const char *dir, const char *file, const char *shard)
{
	static const int64_t shape[1] = { 2 };
	sc_st_writer *st;
	ASSERT_OK(sc_st_writer_new(&st));
	for (int i = 0; i < NMODEL; i++) {
		values[i][0] = (float)(i + 1);
		values[i][1] = -(float)(i + 1);
		if (!shard || strcmp(shard, model[i].shard) == 0)
			ASSERT_OK(sc_st_writer_add(st, model[i].name, SC_F32, 1, shape, values[i]));
	}
	ASSERT_OK(sc_st_writer_save(st, in(dir, file)));
	sc_st_writer_free(st);
}

/* The sharded layout: three shards and the index. */
static void write_sharded(const char *dir)
{
	write_tensors(dir, SHARD1, SHARD1);
	write_tensors(dir, SHARD2, SHARD2);
	write_tensors(dir, SHARD3, SHARD3);
	write_text(dir, SC_WEIGHTS_INDEX, index_json);
}

/* Looks model[i] up in w and checks what comes back. */
static void expect_tensor(sc_weights *w, int i)
{
	const sc_st_tensor *t = NULL;
	ASSERT_OK(sc_weights_find(w, model[i].name, &t));
	if (!t)
		fail_msg("tensor '%s' not found", model[i].name);
	assert_string_equal(t->name, model[i].name);
	assert_int_equal(t->dtype, SC_F32);
	assert_int_equal(t->ndim, 1);
	assert_int_equal(t->shape[0], 2);
	float got[2];
	ASSERT_OK(sc_st_read_f32(got, t, 2));
	assert_true(got[0] == (float)(i + 1) && got[1] == -(float)(i + 1));
}

static void expect_absent(sc_weights *w, const char *name)
{
	const sc_st_tensor *t = (const sc_st_tensor *)1;
	ASSERT_OK(sc_weights_find(w, name, &t));
	assert_null(t);
}

/* ---- good models ---- */

static void test_single_file(void **state)
{
	(void)state;
	const char *dir = case_dir("single");
	write_tensors(dir, SC_WEIGHTS_SINGLE, NULL);
	sc_weights *w;
	ASSERT_OK(sc_weights_open(&w, dir));
	assert_int_equal(sc_weights_sharded(w), 0);
	for (int i = 0; i < NMODEL; i++)
		expect_tensor(w, i);
	expect_absent(w, "layers.2.w");
	expect_absent(w, "");
	ASSERT_OK(sc_weights_check_all(w));
	sc_weights_close(w);
}

static void test_single_preferred(void **state)
{
	(void)state;
	const char *dir = case_dir("both");
	write_tensors(dir, SC_WEIGHTS_SINGLE, NULL);
	/* An index whose shards are missing: never read. */
	write_text(dir, SC_WEIGHTS_INDEX, index_json);
	sc_weights *w;
	ASSERT_OK(sc_weights_open(&w, dir));
	assert_int_equal(sc_weights_sharded(w), 0);
	for (int i = 0; i < NMODEL; i++)
		expect_tensor(w, i);
	ASSERT_OK(sc_weights_check_all(w));
	sc_weights_close(w);
}

static void test_sharded(void **state)
{
	(void)state;
	const char *dir = case_dir("sharded");
	write_sharded(dir);
	char slashed[1024];
	snprintf(slashed, sizeof(slashed), "%s/", dir);
	const char *dirs[] = { dir, slashed };
	for (int d = 0; d < 2; d++) {
		sc_weights *w;
		ASSERT_OK(sc_weights_open(&w, dirs[d]));
		assert_int_equal(sc_weights_sharded(w), 1);
		for (int i = NMODEL - 1; i >= 0; i--)
			expect_tensor(w, i);
		for (int i = 0; i < NMODEL; i++) /* again, from open shards */
			expect_tensor(w, i);
		expect_absent(w, "layers.2.w");
		expect_absent(w, "");
		ASSERT_OK(sc_weights_check_all(w));
		sc_weights_close(w);
	}
}

/* A shard whose tensors are never looked up is never opened. */
static void test_lazy_open(void **state)
{
	(void)state;
	const char *dir = case_dir("lazy");
	write_sharded(dir);
	assert_int_equal(unlink(in(dir, SHARD3)), 0);
	sc_weights *w;
	ASSERT_OK(sc_weights_open(&w, dir));
	for (int i = 0; i < 4; i++)
		expect_tensor(w, i);
	const sc_st_tensor *t = (const sc_st_tensor *)1;
	ASSERT_ERR(sc_weights_find(w, "head", &t), SC_ENOENT, "tensor 'head'", "shard " SHARD3);
	assert_null(t);
	ASSERT_ERR(sc_weights_check_all(w), SC_ENOENT, SHARD3);
	/* The open shards still serve. */
	expect_tensor(w, 1);
	sc_weights_close(w);
}

/* Once open, a shard stays open: its file may go away. */
static void test_shard_opened_once(void **state)
{
	(void)state;
	const char *dir = case_dir("once");
	write_sharded(dir);
	sc_weights *w;
	ASSERT_OK(sc_weights_open(&w, dir));
	expect_tensor(w, 0);
	assert_int_equal(unlink(in(dir, SHARD1)), 0);
	expect_tensor(w, 1);
	expect_tensor(w, 0);
	expect_tensor(w, 2);
	ASSERT_OK(sc_weights_check_all(w));
	sc_weights_close(w);
}

/* ---- bad shards: found at lookup ---- */

static void test_missing_shard(void **state)
{
	(void)state;
	const char *dir = case_dir("missing");
	write_text(dir, SC_WEIGHTS_INDEX,
		   "{'weight_map': {'w': 'model-00009-of-00009.safetensors'}}");
	sc_weights *w;
	ASSERT_OK(sc_weights_open(&w, dir));
	const sc_st_tensor *t;
	ASSERT_ERR(sc_weights_find(w, "w", &t), SC_ENOENT, "tensor 'w'",
		   "shard model-00009-of-00009.safetensors");
	/* Not remembered as open: the next lookup tries again. */
	ASSERT_ERR(sc_weights_find(w, "w", &t), SC_ENOENT, "model-00009-of-00009.safetensors");
	ASSERT_ERR(sc_weights_check_all(w), SC_ENOENT, "model-00009-of-00009.safetensors");
	sc_weights_close(w);
}

static void test_truncated_shard(void **state)
{
	(void)state;
	const char *dir = case_dir("truncated");
	write_sharded(dir);
	struct stat st;
	assert_int_equal(stat(in(dir, SHARD2), &st), 0);
	assert_int_equal(truncate(in(dir, SHARD2), st.st_size - 3), 0);
	sc_weights *w;
	ASSERT_OK(sc_weights_open(&w, dir));
	expect_tensor(w, 0);
	const sc_st_tensor *t;
	ASSERT_ERR(sc_weights_find(w, "layers.1.w", &t), SC_EFORMAT, "tensor 'layers.1.w'",
		   "shard " SHARD2, "past the end");
	assert_null(t);
	expect_tensor(w, 5);
	ASSERT_ERR(sc_weights_check_all(w), SC_EFORMAT, SHARD2);
	sc_weights_close(w);
}

static void test_corrupt_single_file(void **state)
{
	(void)state;
	const char *dir = case_dir("corrupt-single");
	write_text(dir, SC_WEIGHTS_SINGLE, "not safetensors at all");
	sc_weights *w = (sc_weights *)1;
	ASSERT_ERR(sc_weights_open(&w, dir), SC_EFORMAT, in(dir, SC_WEIGHTS_SINGLE));
	assert_null(w);
}

static void test_tensor_absent_from_shard(void **state)
{
	(void)state;
	const char *dir = case_dir("absent");
	write_sharded(dir);
	write_text(dir, SC_WEIGHTS_INDEX,
		   "{'weight_map': {'embed': '" SHARD1 "', 'ghost': '" SHARD1 "'}}");
	sc_weights *w;
	ASSERT_OK(sc_weights_open(&w, dir));
	expect_tensor(w, 0);
	const sc_st_tensor *t;
	ASSERT_ERR(sc_weights_find(w, "ghost", &t), SC_EFORMAT, "'ghost'", SHARD1);
	assert_null(t);
	ASSERT_ERR(sc_weights_check_all(w), SC_EFORMAT, "'ghost'", SHARD1);
	/* Tensors in a shard that the index does not list are not the model's. */
	expect_absent(w, "head");
	sc_weights_close(w);
}

/* ---- no model, bad arguments ---- */

static void test_neither_file(void **state)
{
	(void)state;
	const char *dir = case_dir("empty");
	sc_weights *w = (sc_weights *)1;
	ASSERT_ERR(sc_weights_open(&w, dir), SC_ENOENT, dir, "model.safetensors ",
		   "model.safetensors.index.json");
	assert_null(w);
	const char *gone = in(dir, "no-such-dir");
	ASSERT_ERR(sc_weights_open(&w, gone), SC_ENOENT, gone);
}

static void test_null_args(void **state)
{
	(void)state;
	const char *dir = case_dir("null");
	write_tensors(dir, SC_WEIGHTS_SINGLE, NULL);
	sc_weights *w = (sc_weights *)1;
	const sc_st_tensor *t = (const sc_st_tensor *)1;
	ASSERT_ERR(sc_weights_open(NULL, dir), SC_EINVAL, "sc_weights_open");
	ASSERT_ERR(sc_weights_open(&w, NULL), SC_EINVAL, "sc_weights_open");
	assert_null(w);
	ASSERT_ERR(sc_weights_open(&w, ""), SC_EINVAL, "empty");
	ASSERT_ERR(sc_weights_find(NULL, "embed", &t), SC_EINVAL, "sc_weights_find");
	assert_null(t);
	ASSERT_OK(sc_weights_open(&w, dir));
	t = (const sc_st_tensor *)1;
	ASSERT_ERR(sc_weights_find(w, NULL, &t), SC_EINVAL, "sc_weights_find");
	assert_null(t);
	ASSERT_ERR(sc_weights_find(w, "embed", NULL), SC_EINVAL, "sc_weights_find");
	ASSERT_ERR(sc_weights_check_all(NULL), SC_EINVAL, "sc_weights_check_all");
	assert_int_equal(sc_weights_sharded(NULL), 0);
	sc_weights_close(w);
	sc_weights_close(NULL);
}

/* ---- bad indexes: refused at open, naming the index and the culprit ---- */

struct bad_index {
	const char *json; /* ' stands for " */
	sc_err want;
	const char *mention; /* besides the index's path */
};

static void test_bad_index(void **state)
{
	const struct bad_index *b = *state;
	const char *dir = case_dir("bad-index");
	write_text(dir, SC_WEIGHTS_INDEX, b->json);
	sc_weights *w = (sc_weights *)1;
	ASSERT_ERR(sc_weights_open(&w, dir), b->want, in(dir, SC_WEIGHTS_INDEX), b->mention);
	assert_null(w);
}

/* A named case of test_bad_index; the compound literal lives as long as main. */
#define BAD_INDEX(name, json, want, mention)                                                       \
	{                                                                                          \
		"bad_index_" #name, test_bad_index, NULL, NULL, (void *)&(const struct bad_index)  \
		{                                                                                  \
			json, want, mention                                                        \
		}                                                                                  \
	}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_single_file),
		cmocka_unit_test(test_single_preferred),
		cmocka_unit_test(test_sharded),
		cmocka_unit_test(test_lazy_open),
		cmocka_unit_test(test_shard_opened_once),
		cmocka_unit_test(test_missing_shard),
		cmocka_unit_test(test_truncated_shard),
		cmocka_unit_test(test_corrupt_single_file),
		cmocka_unit_test(test_tensor_absent_from_shard),
		cmocka_unit_test(test_neither_file),
		cmocka_unit_test(test_null_args),
		BAD_INDEX(not_json, "{'weight_map': {'w': oops}}", SC_EFORMAT, "JSON"),
		BAD_INDEX(not_object, "['w']", SC_EFORMAT, "object"),
		BAD_INDEX(weight_map_missing, "{'metadata': {}}", SC_EFORMAT, "weight_map"),
		BAD_INDEX(weight_map_not_object, "{'weight_map': ['w']}", SC_EFORMAT, "weight_map"),
		BAD_INDEX(weight_map_empty, "{'weight_map': {}}", SC_EFORMAT, "empty"),
		BAD_INDEX(value_not_string, "{'weight_map': {'a': 'x.safetensors', 'w': 3}}",
			  SC_EFORMAT, "'w'"),
		BAD_INDEX(value_null, "{'weight_map': {'w': null}}", SC_EFORMAT, "'w'"),
		BAD_INDEX(shard_in_parent, "{'weight_map': {'w': '../x'}}", SC_EFORMAT, "'../x'"),
		BAD_INDEX(shard_in_subdir, "{'weight_map': {'w': 'a/b'}}", SC_EFORMAT, "'a/b'"),
		BAD_INDEX(shard_absolute, "{'weight_map': {'w': '/etc/passwd'}}", SC_EFORMAT,
			  "'/etc/passwd'"),
		BAD_INDEX(shard_dotdot, "{'weight_map': {'w': '..'}}", SC_EFORMAT, "'..'"),
		BAD_INDEX(shard_dot, "{'weight_map': {'w': '.'}}", SC_EFORMAT, "'w'"),
		BAD_INDEX(shard_empty, "{'weight_map': {'w': ''}}", SC_EFORMAT, "'w'"),
		BAD_INDEX(duplicate_tensor, "{'weight_map': {'w': 'a', 'v': 'a', 'w': 'b'}}",
			  SC_EFORMAT, "'w' twice"),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
