/* safetensors_test.c — round trips of every dtype, F16/BF16 conversion, and
 * every kind of malformed file the reader must refuse without crashing. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sc_safetensors.h"
#include "testutil.h"

static const char *tpath(const char *name)
{
	static char buf[4][512];
	static int k;
	k = (k + 1) % 4;
	return sc_test_path(buf[k], sizeof(buf[k]), name);
}

/* Writes a file of an 8-byte header length hlen (the JSON's length when
 * hlen is UINT64_MAX), the JSON and data_len zero bytes. */
static void write_raw(const char *path, const char *json, uint64_t hlen, size_t data_len)
{
	size_t jlen = strlen(json);
	unsigned char *buf = calloc(1, 8 + jlen + data_len);
	assert_non_null(buf);
	if (hlen == UINT64_MAX)
		hlen = jlen;
	for (int i = 0; i < 8; i++)
		buf[i] = (unsigned char)(hlen >> (8 * i));
	memcpy(buf + 8, json, jlen);
	assert_int_equal(sc_test_write_file(path, buf, 8 + jlen + data_len), 0);
	free(buf);
}

static long file_size(const char *path)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	return (long)st.st_size;
}

static unsigned char *read_all(const char *path, long *len)
{
	FILE *fp = fopen(path, "rb");
	assert_non_null(fp);
	*len = file_size(path);
	unsigned char *buf = malloc((size_t)*len + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)*len, fp), (size_t)*len);
	fclose(fp);
	return buf;
}

/* ---- round trips ---- */

static void test_roundtrip_all_dtypes(void **state)
{
	(void)state;
	float f32[6], scalar = 3.25f;
	uint16_t f16[5] = { 0x3c00, 0xc000, 0x7bff, 0x0001, 0x8000 };
	uint16_t bf16[3] = { 0x3f80, 0xc0a0, 0x0001 };
	int32_t i32[4] = { 1, -2, 2147483647, -2147483647 - 1 };
	int64_t i64[3] = { 1, -1, 9007199254740993ll };
	uint8_t u8[7] = { 0, 1, 2, 3, 250, 255, 7 };
	sc_test_fill_normal(f32, 6, 1, 1.0f);
	struct {
		const char *name;
		enum sc_dtype dtype;
		int ndim;
		int64_t shape[SC_ST_MAX_DIMS];
		const void *data;
	} in[] = {
		{ "odd.u8", SC_U8, 1, { 7 }, u8 },
		{ "w.f32", SC_F32, 2, { 2, 3 }, f32 },
		{ "h.f16", SC_F16, 1, { 5 }, f16 },
		{ "b.bf16", SC_BF16, 3, { 1, 1, 3 }, bf16 },
		{ "i.i32", SC_I32, 1, { 4 }, i32 },
		{ "l.i64", SC_I64, 1, { 3 }, i64 },
		{ "scalar", SC_F32, 0, { 0 }, &scalar },
		{ "empty", SC_F32, 1, { 0 }, NULL },
		{ "empty2d", SC_I64, 2, { 3, 0 }, NULL },
		{ "eight", SC_F32, 8, { 1, 1, 1, 2, 1, 3, 1, 1 }, f32 },
	};
	int n = (int)(sizeof(in) / sizeof(in[0]));
	const char *path = tpath("all.safetensors");
	sc_st_writer *w;
	SC_ASSERT_OK(sc_st_writer_new(&w));
	for (int i = 0; i < n; i++)
		SC_ASSERT_OK(sc_st_writer_add(w, in[i].name, in[i].dtype, in[i].ndim, in[i].shape,
					      in[i].data));
	SC_ASSERT_OK(sc_st_writer_meta(w, "format", "pt"));
	SC_ASSERT_OK(sc_st_writer_meta(w, "k", "first"));
	SC_ASSERT_OK(sc_st_writer_meta(w, "k", "second \"quoted\""));
	SC_ASSERT_OK(sc_st_writer_save(w, path));
	sc_st_writer_free(w);
	assert_int_not_equal(access(tpath("all.safetensors.tmp"), F_OK), 0);

	sc_st_file *f;
	SC_ASSERT_OK(sc_st_open(&f, path));
	assert_int_equal(sc_st_count(f), n);
	size_t total = 0;
	for (int i = 0; i < n; i++) {
		const sc_st_tensor *t = sc_st_at(f, i);
		assert_string_equal(t->name, in[i].name);
		assert_ptr_equal(sc_st_find(f, in[i].name), t);
		assert_int_equal(t->dtype, in[i].dtype);
		assert_int_equal(t->ndim, in[i].ndim);
		size_t numel = 1;
		for (int k = 0; k < t->ndim; k++) {
			assert_int_equal(t->shape[k], in[i].shape[k]);
			numel *= (size_t)in[i].shape[k];
		}
		assert_int_equal(t->nbytes, numel * sc_dtype_size(in[i].dtype));
		if (t->nbytes)
			assert_memory_equal(t->data, in[i].data, t->nbytes);
		/* Every tensor aligned to its element size. */
		assert_int_equal((uintptr_t)t->data % sc_dtype_size(t->dtype), 0);
		total += t->nbytes;
	}
	assert_null(sc_st_at(f, n));
	assert_null(sc_st_at(f, -1));
	assert_null(sc_st_find(f, "absent"));
	assert_string_equal(sc_st_metadata(f, "format"), "pt");
	assert_string_equal(sc_st_metadata(f, "k"), "second \"quoted\"");
	assert_null(sc_st_metadata(f, "absent"));

	float got[6];
	SC_ASSERT_OK(sc_st_read_f32(got, sc_st_find(f, "w.f32"), 6));
	assert_memory_equal(got, f32, sizeof(f32));
	SC_ASSERT_OK(sc_st_read_f32(got, sc_st_find(f, "scalar"), 1));
	assert_true(got[0] == 3.25f);
	SC_ASSERT_OK(sc_st_read_f32(got, sc_st_find(f, "empty"), 0));
	sc_st_close(f);

	/* The data section starts 8-aligned and is covered without gaps, as
	 * Hugging Face's reader requires. */
	long len;
	unsigned char *raw = read_all(path, &len);
	uint64_t hlen = 0;
	for (int i = 0; i < 8; i++)
		hlen |= (uint64_t)raw[i] << (8 * i);
	assert_int_equal((8 + hlen) % 8, 0);
	assert_int_equal((uint64_t)len, 8 + hlen + total);
	assert_int_equal(raw[8], '{');
	free(raw);
}

static void test_roundtrip_empty_file(void **state)
{
	(void)state;
	const char *path = tpath("none.safetensors");
	sc_st_writer *w;
	SC_ASSERT_OK(sc_st_writer_new(&w));
	SC_ASSERT_OK(sc_st_writer_save(w, path));
	/* Saving again replaces the file. */
	SC_ASSERT_OK(sc_st_writer_save(w, path));
	sc_st_writer_free(w);
	sc_st_file *f;
	SC_ASSERT_OK(sc_st_open(&f, path));
	assert_int_equal(sc_st_count(f), 0);
	assert_null(sc_st_metadata(f, "format"));
	sc_st_close(f);
	sc_st_close(NULL);
}

static void test_reads_foreign_layout(void **state)
{
	(void)state;
	/* Header padded with spaces, tensors out of offset order, a hole. */
	const char *path = tpath("foreign.safetensors");
	write_raw(path,
		  "{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]},"
		  "\"a\":{\"shape\":[2],\"data_offsets\":[0,4],\"dtype\":\"BF16\"},"
		  "\"__metadata__\":{}}   ",
		  UINT64_MAX, 12);
	sc_st_file *f;
	SC_ASSERT_OK(sc_st_open(&f, path));
	assert_int_equal(sc_st_count(f), 2);
	assert_string_equal(sc_st_at(f, 0)->name, "b");
	assert_int_equal(sc_st_find(f, "a")->dtype, SC_BF16);
	sc_st_close(f);
}

/* ---- conversions ---- */

struct conv {
	uint16_t bits;
	float want;
};

static void check_conv(enum sc_dtype dtype, const struct conv *c, int n, const char *name)
{
	uint16_t bits[16];
	float got[16];
	int64_t shape[1] = { n };
	for (int i = 0; i < n; i++)
		bits[i] = c[i].bits;
	const char *path = tpath(name);
	sc_st_writer *w;
	SC_ASSERT_OK(sc_st_writer_new(&w));
	SC_ASSERT_OK(sc_st_writer_add(w, "x", dtype, 1, shape, bits));
	SC_ASSERT_OK(sc_st_writer_save(w, path));
	sc_st_writer_free(w);
	sc_st_file *f;
	SC_ASSERT_OK(sc_st_open(&f, path));
	SC_ASSERT_OK(sc_st_read_f32(got, sc_st_find(f, "x"), (size_t)n));
	sc_st_close(f);
	for (int i = 0; i < n; i++) {
		if (isnan(c[i].want)) {
			if (!isnan(got[i]))
				fail_msg("0x%04x: got %g, want nan", c[i].bits, got[i]);
		} else if (memcmp(&got[i], &c[i].want, sizeof(float)) != 0) {
			fail_msg("0x%04x: got %a, want %a", c[i].bits, got[i], c[i].want);
		}
	}
}

static void test_f16_to_f32(void **state)
{
	(void)state;
	static const struct conv c[] = {
		{ 0x3c00, 1.0f },
		{ 0xc000, -2.0f },
		{ 0x3555, 0.333251953125f },
		{ 0x7bff, 65504.0f },        /* largest normal */
		{ 0x0400, 0x1p-14f },        /* smallest normal */
		{ 0x0001, 0x1p-24f },        /* smallest subnormal */
		{ 0x03ff, 1023 * 0x1p-24f }, /* largest subnormal */
		{ 0x8200, -512 * 0x1p-24f }, /* negative subnormal */
		{ 0x0000, 0.0f },
		{ 0x8000, -0.0f },
		{ 0x7c00, INFINITY },
		{ 0xfc00, -INFINITY },
		{ 0x7e00, NAN },
		{ 0xfd01, NAN },
	};
	check_conv(SC_F16, c, (int)(sizeof(c) / sizeof(c[0])), "f16.safetensors");
}

static void test_bf16_to_f32(void **state)
{
	(void)state;
	static const struct conv c[] = {
		{ 0x3f80, 1.0f },      { 0xc0a0, -5.0f }, { 0x3eaa, 0.33203125f },
		{ 0x0001, 0x1p-133f }, { 0x8000, -0.0f }, { 0x7f80, INFINITY },
		{ 0xff80, -INFINITY }, { 0x7fc0, NAN },   { 0x7f7f, 0x1.fep127f },
	};
	check_conv(SC_BF16, c, (int)(sizeof(c) / sizeof(c[0])), "bf16.safetensors");
}

static void test_read_errors(void **state)
{
	(void)state;
	int32_t i32[4] = { 1, 2, 3, 4 };
	float f32[4] = { 1, 2, 3, 4 }, got[4];
	int64_t s4[1] = { 4 }, s22[2] = { 2, 2 }, s41[2] = { 4, 1 };
	const char *path = tpath("errs.safetensors");
	sc_st_writer *w;
	SC_ASSERT_OK(sc_st_writer_new(&w));
	SC_ASSERT_OK(sc_st_writer_add(w, "ints", SC_I32, 1, s4, i32));
	SC_ASSERT_OK(sc_st_writer_add(w, "sq", SC_F32, 2, s22, f32));
	SC_ASSERT_OK(sc_st_writer_save(w, path));
	sc_st_writer_free(w);
	sc_st_file *f;
	SC_ASSERT_OK(sc_st_open(&f, path));
	SC_ASSERT_ERR(sc_st_read_f32(got, sc_st_find(f, "ints"), 4), SC_EFORMAT);
	assert_non_null(strstr(sc_err_detail(), "ints"));
	SC_ASSERT_ERR(sc_st_read_f32(got, sc_st_find(f, "sq"), 3), SC_EFORMAT);
	assert_non_null(strstr(sc_err_detail(), "sq"));
	SC_ASSERT_OK(sc_st_expect_shape(sc_st_find(f, "sq"), 2, s22));
	SC_ASSERT_ERR(sc_st_expect_shape(sc_st_find(f, "sq"), 2, s41), SC_EFORMAT);
	assert_non_null(strstr(sc_err_detail(), "(2, 2)"));
	assert_non_null(strstr(sc_err_detail(), "(4, 1)"));
	SC_ASSERT_ERR(sc_st_expect_shape(sc_st_find(f, "sq"), 1, s4), SC_EFORMAT);
	sc_st_close(f);
}

static void test_writer_errors(void **state)
{
	(void)state;
	float x[4] = { 0 };
	int64_t s[SC_ST_MAX_DIMS + 1] = { 1, 1, 1, 1, 1, 1, 1, 1, 1 }, neg[1] = { -1 };
	sc_st_writer *w;
	SC_ASSERT_OK(sc_st_writer_new(&w));
	SC_ASSERT_OK(sc_st_writer_add(w, "a", SC_F32, 1, s, x));
	SC_ASSERT_ERR(sc_st_writer_add(w, "a", SC_F32, 1, s, x), SC_EINVAL);
	SC_ASSERT_ERR(sc_st_writer_add(w, "__metadata__", SC_F32, 1, s, x), SC_EINVAL);
	SC_ASSERT_ERR(sc_st_writer_add(w, "b", (enum sc_dtype)99, 1, s, x), SC_EINVAL);
	SC_ASSERT_ERR(sc_st_writer_add(w, "b", SC_F32, SC_ST_MAX_DIMS + 1, s, x), SC_EINVAL);
	SC_ASSERT_ERR(sc_st_writer_add(w, "b", SC_F32, 1, neg, x), SC_EINVAL);
	SC_ASSERT_ERR(sc_st_writer_add(w, "b", SC_F32, 1, s, NULL), SC_EINVAL);
	SC_ASSERT_ERR(sc_st_writer_save(w, tpath("no-such-dir/x.safetensors")), SC_EIO);
	sc_st_writer_free(w);
	sc_st_writer_free(NULL);
}

static void test_open_missing(void **state)
{
	(void)state;
	sc_st_file *f = (sc_st_file *)1;
	SC_ASSERT_ERR(sc_st_open(&f, tpath("absent.safetensors")), SC_ENOENT);
	assert_null(f);
	SC_ASSERT_ERR(sc_st_open(&f, sc_test_dir()), SC_EIO);
}

/* ---- malformed files: each gives its error with a detail, never a crash ---- */

struct bad {
	const char *json; /* ' stands for " */
	uint64_t hlen;    /* AUTO: the JSON's length */
	size_t data_len;
	sc_err want;
	const char *mention; /* a word the detail must contain */
};

#define AUTO UINT64_MAX

static void test_bad(void **state)
{
	const struct bad *b = *state;
	const char *path = tpath("bad.safetensors");
	char json[512];
	snprintf(json, sizeof(json), "%s", b->json);
	for (char *q = json; *q; q++)
		if (*q == '\'')
			*q = '"';
	write_raw(path, json, b->hlen, b->data_len);
	sc_st_file *f = NULL;
	SC_ASSERT_ERR(sc_st_open(&f, path), b->want);
	assert_null(f);
	assert_non_null(strstr(sc_err_detail(), path));
	if (!strstr(sc_err_detail(), b->mention))
		fail_msg("detail '%s' does not mention '%s'", sc_err_detail(), b->mention);
}

static void test_bad_empty_file(void **state)
{
	(void)state;
	const char *path = tpath("empty.safetensors");
	assert_int_equal(sc_test_write_file(path, "", 0), 0);
	sc_st_file *f;
	SC_ASSERT_ERR(sc_st_open(&f, path), SC_EFORMAT);
	assert_non_null(strstr(sc_err_detail(), "empty"));
}

static void test_bad_truncated_header_length(void **state)
{
	(void)state;
	const char *path = tpath("short.safetensors");
	assert_int_equal(sc_test_write_file(path, "\x02\0\0\0\0", 5), 0);
	sc_st_file *f;
	SC_ASSERT_ERR(sc_st_open(&f, path), SC_EFORMAT);
}

/* A small valid file with three tensors and metadata; returns its bytes. */
static unsigned char *valid_file(const char *path, long *len)
{
	float a[6] = { 1, 2, 3, 4, 5, 6 };
	uint16_t h[3] = { 0x3c00, 0x4000, 0x4200 };
	int64_t sa[2] = { 2, 3 }, sh[1] = { 3 };
	sc_st_writer *w;
	SC_ASSERT_OK(sc_st_writer_new(&w));
	SC_ASSERT_OK(sc_st_writer_add(w, "a", SC_F32, 2, sa, a));
	SC_ASSERT_OK(sc_st_writer_add(w, "h", SC_F16, 1, sh, h));
	SC_ASSERT_OK(sc_st_writer_add(w, "s", SC_F32, 0, NULL, a));
	SC_ASSERT_OK(sc_st_writer_meta(w, "format", "pt"));
	SC_ASSERT_OK(sc_st_writer_save(w, path));
	sc_st_writer_free(w);
	return read_all(path, len);
}

/* Opens path; if it opens, reads every float tensor (under ASan). */
static sc_err open_and_touch(const char *path)
{
	sc_st_file *f;
	sc_err rc = sc_st_open(&f, path);
	if (rc != SC_OK) {
		assert_true(sc_err_detail()[0] != '\0');
		return rc;
	}
	for (int i = 0; i < sc_st_count(f); i++) {
		const sc_st_tensor *t = sc_st_at(f, i);
		size_t numel = t->nbytes / sc_dtype_size(t->dtype);
		float *buf = malloc(numel * sizeof(float) + 1);
		sc_st_read_f32(buf, t, numel);
		free(buf);
	}
	sc_st_close(f);
	return SC_OK;
}

static void test_bad_truncated_data(void **state)
{
	(void)state;
	long len;
	const char *path = tpath("trunc.safetensors");
	unsigned char *raw = valid_file(path, &len);
	assert_int_equal(sc_test_write_file(path, raw, (size_t)len - 3), 0);
	sc_st_file *f;
	SC_ASSERT_ERR(sc_st_open(&f, path), SC_EFORMAT);
	assert_non_null(strstr(sc_err_detail(), "past the end"));
	free(raw);
}

static void test_every_truncation(void **state)
{
	(void)state;
	long len;
	const char *path = tpath("cut.safetensors");
	unsigned char *raw = valid_file(path, &len);
	for (long cut = 0; cut < len; cut++) {
		assert_int_equal(sc_test_write_file(path, raw, (size_t)cut), 0);
		sc_errf(SC_OK, "%s", "");
		if (open_and_touch(path) == SC_OK)
			fail_msg("a file cut to %ld of %ld bytes opened", cut, len);
	}
	free(raw);
}

static void test_header_byte_flips(void **state)
{
	(void)state;
	static const unsigned char subst[] = { '{', '}', '[', ']', '"', ':',  ',', '9',
					       '-', '.', 'e', ' ', 0,   0x80, 0xff };
	long len;
	const char *path = tpath("flip.safetensors");
	unsigned char *raw = valid_file(path, &len);
	uint64_t hlen = 0;
	for (int i = 0; i < 8; i++)
		hlen |= (uint64_t)raw[i] << (8 * i);
	for (long pos = 0; pos < 8 + (long)hlen; pos++) {
		unsigned char keep = raw[pos];
		for (size_t s = 0; s < sizeof(subst); s++) {
			raw[pos] = subst[s];
			assert_int_equal(sc_test_write_file(path, raw, (size_t)len), 0);
			open_and_touch(path);
		}
		raw[pos] = keep;
	}
	free(raw);
}

/* A named case of test_bad; the compound literal lives as long as main. */
#define BAD(name, json, hlen, data_len, want, mention)                                             \
	{                                                                                          \
		"bad_" #name, test_bad, NULL, NULL, (void *)&(const struct bad)                    \
		{                                                                                  \
			json, hlen, data_len, want, mention                                        \
		}                                                                                  \
	}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip_all_dtypes),
		cmocka_unit_test(test_roundtrip_empty_file),
		cmocka_unit_test(test_reads_foreign_layout),
		cmocka_unit_test(test_f16_to_f32),
		cmocka_unit_test(test_bf16_to_f32),
		cmocka_unit_test(test_read_errors),
		cmocka_unit_test(test_writer_errors),
		cmocka_unit_test(test_open_missing),
		cmocka_unit_test(test_bad_empty_file),
		cmocka_unit_test(test_bad_truncated_header_length),
		BAD(header_length_beyond_file, "{}", 4096, 0, SC_EFORMAT, "4096"),
		BAD(header_too_large, "{}", 200u << 20, 0, SC_EFORMAT, "100 MiB"),
		BAD(header_not_json, "{'w': oops}", AUTO, 0, SC_EFORMAT, "JSON"),
		BAD(json_not_object, "[1, 2]", AUTO, 0, SC_EFORMAT, "object"),
		BAD(trailing_bytes, "{}  x", AUTO, 0, SC_EFORMAT, "after"),
		BAD(unknown_dtype, "{'w':{'dtype':'F99','shape':[1],'data_offsets':[0,4]}}", AUTO,
		    4, SC_EFORMAT, "F99"),
		BAD(unsupported_dtype, "{'w':{'dtype':'F64','shape':[1],'data_offsets':[0,8]}}",
		    AUTO, 8, SC_ENOTSUP, "F64"),
		BAD(offsets_past_end, "{'w':{'dtype':'F32','shape':[4],'data_offsets':[0,16]}}",
		    AUTO, 8, SC_EFORMAT, "past the end"),
		BAD(offsets_reversed, "{'w':{'dtype':'F32','shape':[1],'data_offsets':[8,4]}}",
		    AUTO, 8, SC_EFORMAT, "reversed"),
		BAD(offsets_not_integers,
		    "{'w':{'dtype':'F32','shape':[1],'data_offsets':[0,4.5]}}", AUTO, 8, SC_EFORMAT,
		    "'w'"),
		BAD(offsets_huge, "{'w':{'dtype':'F32','shape':[1],'data_offsets':[0,1e300]}}",
		    AUTO, 8, SC_EFORMAT, "'w'"),
		BAD(offsets_missing, "{'w':{'dtype':'F32','shape':[1],'data_offsets':[0]}}", AUTO,
		    4, SC_EFORMAT, "data_offsets"),
		BAD(size_mismatch, "{'w':{'dtype':'F32','shape':[3],'data_offsets':[0,16]}}", AUTO,
		    16, SC_EFORMAT, "12 bytes"),
		BAD(shape_overflow,
		    "{'w':{'dtype':'F32','shape':[4294967296,4294967296,4294967296],"
		    "'data_offsets':[0,16]}}",
		    AUTO, 16, SC_EFORMAT, "overflow"),
		BAD(shape_negative, "{'w':{'dtype':'F32','shape':[-1],'data_offsets':[0,4]}}", AUTO,
		    4, SC_EFORMAT, "shape[0]"),
		BAD(shape_fractional, "{'w':{'dtype':'F32','shape':[2,1.5],'data_offsets':[0,12]}}",
		    AUTO, 12, SC_EFORMAT, "shape[1]"),
		BAD(shape_not_list, "{'w':{'dtype':'F32','shape':4,'data_offsets':[0,16]}}", AUTO,
		    16, SC_EFORMAT, "shape"),
		BAD(too_many_dims,
		    "{'w':{'dtype':'F32','shape':[1,1,1,1,1,1,1,1,1],'data_offsets':[0,4]}}", AUTO,
		    4, SC_ENOTSUP, "dimensions"),
		BAD(missing_dtype, "{'w':{'shape':[1],'data_offsets':[0,4]}}", AUTO, 4, SC_EFORMAT,
		    "dtype"),
		BAD(entry_not_object, "{'w': 3}", AUTO, 0, SC_EFORMAT, "'w'"),
		BAD(duplicate_name,
		    "{'w':{'dtype':'F32','shape':[1],'data_offsets':[0,4]},"
		    "'w':{'dtype':'F32','shape':[1],'data_offsets':[4,8]}}",
		    AUTO, 8, SC_EFORMAT, "duplicate"),
		BAD(overlap,
		    "{'a':{'dtype':'F32','shape':[1],'data_offsets':[0,4]},"
		    "'b':{'dtype':'F32','shape':[2],'data_offsets':[2,10]}}",
		    AUTO, 12, SC_EFORMAT, "overlap"),
		BAD(metadata_not_strings, "{'__metadata__':{'k':1}}", AUTO, 0, SC_EFORMAT,
		    "__metadata__"),
		BAD(metadata_twice, "{'__metadata__':{},'__metadata__':{}}", AUTO, 0, SC_EFORMAT,
		    "__metadata__"),
		cmocka_unit_test(test_bad_truncated_data),
		cmocka_unit_test(test_every_truncation),
		cmocka_unit_test(test_header_byte_flips),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
