/* dataset_test.c — training data as researchers bring it: JSONL text and
 * prompt/completion (the loss masked to the completion and its EOS), plain
 * text, token files, and every malformed input refused with its line. Byte
 * tokens here; tokenizer.json files are checked against HF in
 * tests/ref/test_tokenizer_hf.py. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "sc_dataset.h"

static char *write_tmp(const char *name, const char *text)
{
	static char path[512];
	sc_test_path(path, sizeof(path), name);
	assert_int_equal(sc_test_write_file(path, text, strlen(text)), 0);
	return path;
}

static void jsonl_prompt_completion_masks_the_prompt(void **state)
{
	const char *p = write_tmp("pc.jsonl", "{\"prompt\": \"ab\", \"completion\": \"cd\"}\n"
					      "\n"
					      "{\"text\": \"xy\"}\n");
	sc_dataset_opts o = { .eos_id = 7 };
	sc_dataset_stats st;
	sc_tokens *tk;
	SC_ASSERT_OK(sc_dataset_load(&tk, p, NULL, 256, &o, &st));
	/* a b c d EOS x y EOS */
	int32_t want[] = { 'a', 'b', 'c', 'd', 7, 'x', 'y', 7 };
	uint8_t mask[] = { 0, 0, 1, 1, 1, 1, 1, 1 };
	assert_int_equal(tk->n, 8);
	assert_memory_equal(tk->ids, want, sizeof(want));
	assert_non_null(tk->mask);
	assert_memory_equal(tk->mask, mask, sizeof(mask));
	assert_int_equal(st.documents, 2);
	assert_int_equal(st.format, 3);
	assert_int_equal(st.target_tokens, 6);
	/* the loader: a target that is a prompt token is ignored (-1) */
	sc_loader *ld;
	int32_t in[7], tg[7];
	SC_ASSERT_OK(sc_loader_new(&ld, tk, 7, 1));
	assert_int_equal(sc_loader_windows(ld), 1);
	sc_loader_batch(ld, 0, 1, in, tg);
	int32_t want_tg[] = { -1, 'c', 'd', 7, 'x', 'y', 7 };
	assert_memory_equal(in, want, sizeof(in));
	assert_memory_equal(tg, want_tg, sizeof(tg));
	sc_loader_free(ld);
	sc_tokens_free(tk);
}

static void text_is_bytes_without_a_mask(void **state)
{
	const char *p = write_tmp("plain.txt", "hello");
	sc_dataset_opts o = { .eos_id = -1 };
	sc_dataset_stats st;
	sc_tokens *tk;
	SC_ASSERT_OK(sc_dataset_load(&tk, p, NULL, 256, &o, &st));
	assert_int_equal(tk->n, 5);
	assert_null(tk->mask); /* every token a target: as before */
	assert_int_equal(tk->ids[4], 'o');
	assert_int_equal(st.format, 1);
	sc_tokens_free(tk);
	/* a token file reads through the token-file reader */
	int32_t ids[3] = { 1, 2, 300 };
	char path[512];
	sc_test_path(path, sizeof(path), "tok.bin");
	SC_ASSERT_OK(sc_tokens_save(path, ids, 3));
	SC_ASSERT_OK(sc_dataset_load(&tk, path, NULL, 400, &o, &st));
	assert_int_equal(tk->n, 3);
	assert_int_equal(tk->ids[2], 300);
	sc_tokens_free(tk);
	SC_ASSERT_ERR(sc_dataset_load(&tk, path, NULL, 300, &o, &st), SC_ERANGE);
}

static void refusals(void **state)
{
	static const struct {
		const char *name, *text;
		sc_err code;
		const char *word;
	} cases[] = {
		{ "not JSON", "{\"text\": \"a\"}\n{oops\n", SC_EFORMAT, ":2" },
		{ "no text", "{\"text\": \"a\"}\n{\"body\": \"b\"}\n", SC_EFORMAT,
		  "\"completion\"" },
		{ "text not a string", "{\"text\": 5}\n", SC_EFORMAT, ":1" },
		{ "prompt without completion", "{\"prompt\": \"a\"}\n", SC_EFORMAT, ":1" },
		{ "chat data", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n",
		  SC_ENOTSUP, "chat template" },
		{ "empty", "", SC_EINVAL, "empty dataset" },
		{ "only blank lines", "{\"text\": \"\"}\n", SC_EINVAL, "empty dataset" },
	};
	sc_dataset_opts o = { .eos_id = -1 };
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		sc_tokens *tk = NULL;
		const char *p = write_tmp("bad.jsonl", cases[i].text);
		sc_errf(SC_OK, "%s", "");
		sc_err rc = sc_dataset_load(&tk, p, NULL, 256, &o, NULL);
		if (rc != cases[i].code || !strstr(sc_err_detail(), cases[i].word))
			fail_msg("%s: got %s '%s', want %s naming '%s'", cases[i].name,
				 sc_err_name(rc), sc_err_detail(), sc_err_name(cases[i].code),
				 cases[i].word);
		assert_null(tk);
	}
	/* skipping bad lines: counted, the good ones kept */
	const char *p = write_tmp("skip.jsonl", "{\"text\": \"ab\"}\nnot json\n{\"x\": 1}\n"
						"{\"text\": \"c\"}\n");
	sc_dataset_opts skip = { .eos_id = -1, .skip_bad_lines = 1 };
	sc_dataset_stats st;
	sc_tokens *tk;
	SC_ASSERT_OK(sc_dataset_load(&tk, p, NULL, 256, &skip, &st));
	assert_int_equal(st.bad_lines, 2);
	assert_int_equal(st.documents, 2);
	assert_int_equal(tk->n, 3);
	sc_tokens_free(tk);
	/* chat data is not a "bad line" to skip: it is refused */
	p = write_tmp("chat.jsonl", "{\"messages\": []}\n");
	SC_ASSERT_ERR(sc_dataset_load(&tk, p, NULL, 256, &skip, &st), SC_ENOTSUP);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(jsonl_prompt_completion_masks_the_prompt),
		cmocka_unit_test(text_is_bytes_without_a_mask),
		cmocka_unit_test(refusals),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
