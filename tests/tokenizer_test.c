/* tokenizer_test.c — loading tokenizer.json (refusals, malformed files),
 * added-token flags, invalid UTF-8, GPT-2's legacy files, decoding, 32-bit
 * token files. Exact agreement with Hugging Face tokenizers is checked by
 * tests/ref/test_tokenizer_hf.py. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sc_data.h"
#include "sc_file.h"
#include "sc_tokenizer.h"
#include "sc_utf8.h"
#include "testutil.h"

/* GPT-2's byte -> character map, for writing byte-level vocabularies. */
static void byte_char(int b, char *out)
{
	int keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE, n = 0;
	unsigned cp = (unsigned)b;
	if (!keep) {
		cp = 256;
		for (int c = 0; c < b; c++)
			cp += !((c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || c >= 0xAE);
	}
	if (cp < 0x80) {
		out[n++] = (char)cp;
	} else {
		out[n++] = (char)(0xC0 | cp >> 6);
		out[n++] = (char)(0x80 | (cp & 0x3F));
	}
	out[n] = '\0';
}

/* A byte-level BPE: ids 0..255 the bytes, 256 "ab", 257 "Ġb"; then added. */
static char *byte_level_json(const char *added, const char *extra)
{
	size_t cap = 1 << 16, n = 0;
	char *s = malloc(cap), c[4];
	n += (size_t)snprintf(s + n, cap - n,
			      "{\"version\":\"1.0\",\"added_tokens\":[%s],%s"
			      "\"pre_tokenizer\":{\"type\":\"ByteLevel\","
			      "\"add_prefix_space\":false},\"decoder\":{\"type\":"
			      "\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"vocab\":{",
			      added, extra);
	for (int b = 0; b < 256; b++) {
		byte_char(b, c);
		n += (size_t)snprintf(s + n, cap - n, "\"%s%s\":%d,", c[0] == '"' ? "\\" : "",
				      c[0] == '\\' ? "\\\\" : c, b);
	}
	n += (size_t)snprintf(s + n, cap - n,
			      "\"ab\":256,\"\xC4\xA0"
			      "b\":257},\"merges\":[\"a b\",[\"\xC4\xA0\",\"b\"]]}}");
	return s;
}

static sc_tokenizer *load_text(const char *name, const char *json)
{
	char p[512];
	sc_tokenizer *t = NULL;
	sc_test_path(p, sizeof(p), name);
	assert_int_equal(sc_test_write_file(p, json, strlen(json)), 0);
	SC_ASSERT_OK(sc_tokenizer_load(&t, p));
	return t;
}

static void expect_ids(const sc_tokenizer *t, const char *text, size_t len, int special,
		       const int32_t *want, size_t nwant)
{
	int32_t *ids;
	size_t n;
	SC_ASSERT_OK(sc_tokenizer_encode(t, text, len, special, &ids, &n));
	if (n != nwant || (n && memcmp(ids, want, n * sizeof(*ids)))) {
		for (size_t i = 0; i < n; i++)
			fprintf(stderr, "%d ", ids[i]);
		fail_msg("'%s': %zu ids, want %zu", text, n, nwant);
	}
	free(ids);
}

static void refuses_unsupported_components(void **state)
{
	static const struct {
		const char *json, *named;
	} cases[] = {
		{ "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}", "WordPiece" },
		{ "{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}", "Unigram" },
		{ "{\"model\":{\"type\":\"WordLevel\",\"vocab\":{}}}", "WordLevel" },
		{ "{\"model\":{\"type\":\"BPE\",\"dropout\":0.1,\"vocab\":{},\"merges\":[]}}",
		  "dropout" },
		{ "{\"normalizer\":{\"type\":\"BertNormalizer\"},\"model\":{\"type\":\"BPE\","
		  "\"vocab\":{},\"merges\":[]}}",
		  "BertNormalizer" },
		{ "{\"pre_tokenizer\":{\"type\":\"Punctuation\"},\"model\":{\"type\":\"BPE\","
		  "\"vocab\":{},\"merges\":[]}}",
		  "Punctuation" },
		{ "{\"decoder\":{\"type\":\"WordPiece\"},\"model\":{\"type\":\"BPE\","
		  "\"vocab\":{},\"merges\":[]}}",
		  "WordPiece" },
		{ "{\"post_processor\":{\"type\":\"Fancy\"},\"model\":{\"type\":\"BPE\","
		  "\"vocab\":{},\"merges\":[]}}",
		  "Fancy" },
	};
	char p[512];
	sc_tokenizer *t;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		sc_test_path(p, sizeof(p), "unsupported.json");
		assert_int_equal(sc_test_write_file(p, cases[i].json, strlen(cases[i].json)), 0);
		SC_ASSERT_ERR(sc_tokenizer_load(&t, p), SC_ENOTSUP);
		assert_null(t);
		if (!strstr(sc_err_detail(), cases[i].named))
			fail_msg("case %zu: '%s' does not name %s", i, sc_err_detail(),
				 cases[i].named);
	}
}

/* A one-token vocabulary whose TemplateProcessing special token has id ID. */
#define TEMPLATE_WITH_ID(ID)                                                                       \
	"{\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{"     \
	"\"id\":\"<s>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],"             \
	"\"special_tokens\":{\"<s>\":{\"id\":\"<s>\",\"ids\":[" ID "],\"tokens\":[\"<s>\"]}}},"    \
	"\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}"

static void refuses_malformed_files(void **state)
{
	static const char *cases[] = {
		"{",
		"[]",
		"{\"added_tokens\":[]}",
		"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a b\"]}}",
		"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a\"]}}",
		"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":\"x\"},\"merges\":[]}}",
		"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":0},\"merges\":[]}}",
		"{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},\"behavior\":"
		"\"Isolated\"},\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}",
		/* A pattern that is not UTF-8 (crashed PCRE2's compiler; tests/fuzz). */
		"{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(?i:'s|\xff\xff"
		"'t)\"},\"behavior\":\"Isolated\"},\"model\":{\"type\":\"BPE\",\"vocab\":{},"
		"\"merges\":[]}}",
		/* Ids that would size the tables at tens of GB (tests/fuzz). */
		"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":2147483646},\"merges\":[]}}",
		"{\"added_tokens\":[{\"id\":2147483646,\"content\":\"<x>\"}],\"model\":{\"type\":"
		"\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
		/* Strip counts that are not counts (1e48 was undefined behaviour). */
		"{\"decoder\":{\"type\":\"Strip\",\"content\":\" \",\"start\":1e48,\"stop\":0},"
		"\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
		"{\"decoder\":{\"type\":\"Strip\",\"content\":\" \",\"start\":-1,\"stop\":0},"
		"\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
		"{\"decoder\":{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0.5},"
		"\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
		/* Post-processor ids that are no token ids: encode gave -1 (tests/fuzz),
		 * a huge one, a fraction, one past the vocabulary, a Bert pair's. */
		TEMPLATE_WITH_ID("-1"),
		TEMPLATE_WITH_ID("1e12"),
		TEMPLATE_WITH_ID("0.5"),
		TEMPLATE_WITH_ID("1"),
		"{\"post_processor\":{\"type\":\"BertProcessing\",\"cls\":[\"a\",-3],\"sep\":"
		"[\"a\",0]},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
	};
	char p[512];
	sc_tokenizer *t;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		sc_test_path(p, sizeof(p), "malformed.json");
		assert_int_equal(sc_test_write_file(p, cases[i], strlen(cases[i])), 0);
		SC_ASSERT_ERR(sc_tokenizer_load(&t, p), SC_EFORMAT);
		assert_null(t);
	}
	sc_test_path(p, sizeof(p), "no-such-tokenizer.json");
	SC_ASSERT_ERR(sc_tokenizer_load(&t, p), SC_ENOENT);
}

/* Decoders read token pieces as bytes that may not be UTF-8: a piece that
 * ends inside a sequence, stripped and Metaspace-decoded, is copied as it
 * is and never read past (ASan found the read past, tests/fuzz). */
static void decoders_take_pieces_that_are_not_utf8(void **state)
{
	static const char *json[] = {
		"{\"decoder\":{\"type\":\"Strip\",\"content\":\"\xe2\x96\x81\",\"start\":2,"
		"\"stop\":2},\"model\":{\"type\":\"BPE\",\"vocab\":{\"\xe2\":0,\"b\":1},"
		"\"merges\":[]}}",
		"{\"decoder\":{\"type\":\"Metaspace\",\"replacement\":\"\xe2\x96\x81\"},"
		"\"model\":{\"type\":\"BPE\",\"vocab\":{\"\xe2\":0,\"b\":1},\"merges\":[]}}",
	};
	for (size_t i = 0; i < sizeof(json) / sizeof(json[0]); i++) {
		sc_tokenizer *t = load_text("pieces.json", json[i]);
		char *out = NULL;
		size_t len = 0;
		assert_int_equal(sc_tokenizer_decode(t, (int32_t[]){ 1, 0 }, 2, 1, &out, &len),
				 SC_OK);
		assert_int_equal(len, 2);
		assert_memory_equal(out, "b\xe2", 2);
		free(out);
		sc_tokenizer_free(t);
	}
	(void)state;
}

/* Byte fallback in a word that fills the scratch's first 64 symbols: the
 * symbols before the fallback survive the scratch's growth (they were lost
 * to uninitialised ids; tests/fuzz). */
static void byte_fallback_keeps_earlier_symbols(void **state)
{
	size_t cap = 256 * 16 + 256, at = 0;
	char *json = malloc(cap), text[64];
	int32_t want[63];
	at += (size_t)snprintf(json, cap,
			       "{\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,"
			       "\"vocab\":{");
	for (int b = 0; b < 256; b++)
		at += (size_t)snprintf(json + at, cap - at, "\"<0x%02X>\":%d,", b, b);
	snprintf(json + at, cap - at, "\"a\":256},\"merges\":[]}}");
	sc_tokenizer *t = load_text("fallback.json", json);
	memset(text, 'a', 61);
	memcpy(text + 61, "\xc3\xa9", 2); /* 63 bytes: the scratch holds 64 */
	for (int i = 0; i < 61; i++)
		want[i] = 256;
	want[61] = 0xC3;
	want[62] = 0xA9;
	expect_ids(t, text, 63, 0, want, 63);
	sc_tokenizer_free(t);
	free(json);
	(void)state;
}

static void merges_and_round_trip(void **state)
{
	char *json = byte_level_json("", "");
	sc_tokenizer *t = load_text("bl.json", json);
	const char *text = "ab b\tcaf\xC3\xA9 \xF0\x9F\x98\x80 ab";
	int32_t *ids;
	char *back;
	size_t n, len;

	expect_ids(t, "ab b", 4, 1, (int32_t[]){ 256, 257 }, 2);
	assert_int_equal(sc_tokenizer_vocab_size(t), 258);
	assert_int_equal(sc_tokenizer_token_id(t, "ab"), 256);
	assert_int_equal(sc_tokenizer_bos_id(t), -1);
	SC_ASSERT_OK(sc_tokenizer_encode(t, text, strlen(text), 1, &ids, &n));
	SC_ASSERT_OK(sc_tokenizer_decode(t, ids, n, 0, &back, &len));
	assert_int_equal(len, strlen(text));
	assert_memory_equal(back, text, len);
	free(ids);
	free(back);
	sc_tokenizer_free(t);
	free(json);
}

/* HF takes strings: the C side replaces each maximal invalid sequence by
 * U+FFFD (bytes EF BF BD), as Python's decode("utf-8", "replace"). */
static void invalid_utf8_becomes_replacement(void **state)
{
	char *json = byte_level_json("", "");
	sc_tokenizer *t = load_text("bl.json", json);
	/* \xE2\x82 is one truncated sequence, \xFF and \xC0 one each */
	expect_ids(t,
		   "a\xE2\x82"
		   "b",
		   4, 1, (int32_t[]){ 'a', 0xEF, 0xBF, 0xBD, 'b' }, 5);
	expect_ids(t, "\xFF\xC0", 2, 1, (int32_t[]){ 0xEF, 0xBF, 0xBD, 0xEF, 0xBF, 0xBD }, 6);
	expect_ids(t, "", 0, 1, NULL, 0);
	sc_tokenizer_free(t);
	free(json);
}

static void added_token_flags(void **state)
{
	char *json = byte_level_json(
	    "{\"id\":300,\"content\":\"<|x|>\",\"lstrip\":true,\"rstrip\":true,\"special\":true,"
	    "\"normalized\":false,\"single_word\":false},"
	    "{\"id\":301,\"content\":\"zz\",\"single_word\":true,\"special\":false,"
	    "\"normalized\":false,\"lstrip\":false,\"rstrip\":false},"
	    "{\"id\":302,\"content\":\"<|x|>y\",\"special\":false,\"normalized\":true}",
	    "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":"
	    "{\"id\":\"<|x|>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],"
	    "\"special_tokens\":{\"<|x|>\":{\"id\":\"<|x|>\",\"ids\":[300],\"tokens\":"
	    "[\"<|x|>\"]}}},");
	sc_tokenizer *t = load_text("added.json", json);
	char *text;
	size_t len;

	/* lstrip / rstrip swallow the spaces around the token */
	expect_ids(t, "a  <|x|>  c", 11, 0, (int32_t[]){ 'a', 300, 'c' }, 3);
	/* the post-processor's BOS */
	expect_ids(t, "c", 1, 1, (int32_t[]){ 300, 'c' }, 2);
	assert_int_equal(sc_tokenizer_bos_id(t), 300);
	/* single_word: not inside a word */
	expect_ids(t, "zz", 2, 0, (int32_t[]){ 301 }, 1);
	expect_ids(t, "azz", 3, 0, (int32_t[]){ 'a', 'z', 'z' }, 3);
	expect_ids(t, "a zz.", 5, 0, (int32_t[]){ 'a', ' ', 301, '.' }, 4);
	/* the non-normalized token is cut out first (leftmost-longest within a pass) */
	expect_ids(t, "<|x|>y", 6, 0, (int32_t[]){ 300, 'y' }, 2);
	SC_ASSERT_OK(sc_tokenizer_decode(t, (int32_t[]){ 300, 'c' }, 2, 0, &text, &len));
	assert_string_equal(text, "<|x|>c");
	free(text);
	SC_ASSERT_OK(sc_tokenizer_decode(t, (int32_t[]){ 300, 'c', 9999 }, 3, 1, &text, &len));
	assert_string_equal(text, "c");
	free(text);
	sc_tokenizer_free(t);
	free(json);
}

static void legacy_vocab_and_merges(void **state)
{
	char dir[512], p[600], c[4];
	size_t cap = 1 << 16, n = 0;
	char *vocab = malloc(cap);
	sc_tokenizer *t;

	sc_test_path(dir, sizeof(dir), "legacy");
	SC_ASSERT_OK(sc_file_mkdir(dir));
	n += (size_t)snprintf(vocab, cap, "{");
	for (int b = 0; b < 256; b++) {
		byte_char(b, c);
		n += (size_t)snprintf(vocab + n, cap - n, "\"%s%s\":%d,", c[0] == '"' ? "\\" : "",
				      c[0] == '\\' ? "\\\\" : c, b);
	}
	snprintf(vocab + n, cap - n, "\"ab\":256,\"<|endoftext|>\":257}");
	snprintf(p, sizeof(p), "%s/vocab.json", dir);
	assert_int_equal(sc_test_write_file(p, vocab, strlen(vocab)), 0);
	snprintf(p, sizeof(p), "%s/merges.txt", dir);
	assert_int_equal(sc_test_write_file(p, "#version: 0.2\na b\n", 18), 0);
	SC_ASSERT_OK(sc_tokenizer_load(&t, dir));
	expect_ids(t, "xab<|endoftext|>", 16, 1, (int32_t[]){ 'x', 256, 257 }, 3);
	assert_int_equal(sc_tokenizer_token_id(t, "<|endoftext|>"), 257);
	sc_tokenizer_free(t);
	free(vocab);
}

typedef struct {
	const sc_tokenizer *t;
	int ok;
} worker_arg;

static void *encode_many(void *p)
{
	worker_arg *a = p;
	const char *text = "ab b ab b abab bb";
	a->ok = 1;
	for (int i = 0; i < 2000 && a->ok; i++) {
		int32_t *ids;
		size_t n;
		if (sc_tokenizer_encode(a->t, text, strlen(text), 1, &ids, &n) || n != 10)
			a->ok = 0;
		free(ids);
	}
	return NULL;
}

static void encode_is_thread_safe(void **state)
{
	char *json = byte_level_json("", "");
	sc_tokenizer *t = load_text("bl.json", json);
	pthread_t th[4];
	worker_arg a[4];
	for (int i = 0; i < 4; i++) {
		a[i].t = t;
		assert_int_equal(pthread_create(&th[i], NULL, encode_many, &a[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		assert_true(a[i].ok);
	}
	sc_tokenizer_free(t);
	free(json);
}

static void token_files_16_and_32_bit(void **state)
{
	static const struct {
		const char *name;
		int32_t top;
		int version;
	} cases[] = { { "ids below 65536: version 1", 65535, 1 },
		      { "an id of 65536: version 2", 65536, 2 },
		      { "Llama 3 ids: version 2", 128255, 2 } };
	char p[512], *raw;
	size_t len;
	sc_tokens *tk;
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		int32_t ids[5] = { 0, 1, 300, cases[c].top, 7 };
		sc_test_path(p, sizeof(p), "v.bin");
		SC_ASSERT_OK(sc_tokens_save(p, ids, 5));
		SC_ASSERT_OK(sc_file_read(p, SIZE_MAX, &raw, &len));
		if (((int32_t *)raw)[1] != cases[c].version ||
		    len != 1024 + 5 * (cases[c].version == 1 ? 2 : 4))
			fail_msg("%s: version %d, %zu bytes", cases[c].name, ((int32_t *)raw)[1],
				 len);
		free(raw);
		SC_ASSERT_OK(sc_tokens_load(&tk, p, 200000));
		assert_int_equal(tk->n, 5);
		assert_memory_equal(tk->ids, ids, sizeof(ids));
		sc_tokens_free(tk);
		SC_ASSERT_ERR(sc_tokens_load(&tk, p, cases[c].top), SC_ERANGE);
	}
	SC_ASSERT_ERR(sc_tokens_save(p, (int32_t[]){ 1, -1 }, 2), SC_ERANGE);
}

/* One UTF-8 validity for the project: well-formed sequences only, and
 * lossy repair by maximal subparts (Python's errors="replace"). */
static void utf8_validity_and_repair(void **state)
{
	(void)state;
	static const struct {
		const char *s;
		size_t n, len;
	} one[] = {
		{ "a", 1, 1 },
		{ "\xC3\xA9", 2, 2 },         /* U+00E9 */
		{ "\xE2\x82\xAC", 3, 3 },     /* U+20AC */
		{ "\xF0\x9F\x98\x80", 4, 4 }, /* U+1F600 */
		{ "\xF4\x8F\xBF\xBF", 4, 4 }, /* U+10FFFF */
		{ "\xC0\xAF", 2, 0 },         /* overlong '/' */
		{ "\xC1\xBF", 2, 0 },         /* overlong */
		{ "\xE0\x80\xAF", 3, 0 },     /* overlong */
		{ "\xF0\x80\x80\xAF", 4, 0 }, /* overlong */
		{ "\xED\xA0\x80", 3, 0 },     /* U+D800, a surrogate */
		{ "\xED\xBF\xBF", 3, 0 },     /* U+DFFF */
		{ "\xF4\x90\x80\x80", 4, 0 }, /* U+110000 */
		{ "\xF5\x80\x80\x80", 4, 0 }, /* no such lead byte */
		{ "\x80", 1, 0 },             /* a stray continuation */
		{ "\xE2\x82", 2, 0 },         /* cut short */
		{ "\xE2\x28\xA1", 3, 0 },     /* bad continuation */
	};
	for (size_t i = 0; i < sizeof(one) / sizeof(one[0]); i++)
		if (sc_utf8_len(one[i].s, one[i].n) != one[i].len)
			fail_msg("case %zu: %zu, want %zu", i, sc_utf8_len(one[i].s, one[i].n),
				 one[i].len);
	assert_int_equal(sc_utf8_len("abc", 0), 0);

	/* As Python: b"...".decode("utf-8", "replace"). */
	static const struct {
		const char *in, *out;
	} fix[] = {
		{ "ok \xC3\xA9", "ok \xC3\xA9" },
		{ "a\xF0\x9F\x98", "a\xEF\xBF\xBD" },       /* one maximal subpart */
		{ "\xC0\xAF", "\xEF\xBF\xBD\xEF\xBF\xBD" }, /* two */
		{ "\xED\xA0\x80x", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBDx" }, /* three */
		{ "\xE2\x28\xA1", "\xEF\xBF\xBD(\xEF\xBF\xBD" },
		{ "", "" },
	};
	for (size_t i = 0; i < sizeof(fix) / sizeof(fix[0]); i++) {
		size_t len = 99;
		char *o = sc_utf8_lossy(fix[i].in, strlen(fix[i].in), &len);
		assert_non_null(o);
		assert_string_equal(o, fix[i].out);
		assert_int_equal(len, strlen(fix[i].out));
		free(o);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(refuses_unsupported_components),
		cmocka_unit_test(refuses_malformed_files),
		cmocka_unit_test(merges_and_round_trip),
		cmocka_unit_test(decoders_take_pieces_that_are_not_utf8),
		cmocka_unit_test(byte_fallback_keeps_earlier_symbols),
		cmocka_unit_test(invalid_utf8_becomes_replacement),
		cmocka_unit_test(added_token_flags),
		cmocka_unit_test(legacy_vocab_and_merges),
		cmocka_unit_test(encode_is_thread_safe),
		cmocka_unit_test(token_files_16_and_32_bit),
		cmocka_unit_test(utf8_validity_and_repair),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
