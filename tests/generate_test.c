/* generate_test.c — generation in one process: the sampler's rules, a
 * prompt run at once or one position at a time through the key/value cache
 * giving the same logits, the refusals of generation segments, and --stop
 * strings over the generated text (sc_stop_text). Greedy
 * ids against transformers + PEFT are in tests/ref/test_generate_hf.py. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "sc_family.h"
#include "sc_generate.h"
#include "sc_modelgen.h"
#include "sc_rng.h"
#include "sc_segment.h"

static void sampler_rules(void **state)
{
	float logits[6] = { 0.5f, 2.0f, -1.0f, 2.0f, 1.9f, -3.0f }, scratch[12];
	int order[6];
	sc_rng rng;
	uint64_t key = 3;
	sc_rng_seed(&rng, &key, 1);
	sc_sampling greedy = { .temperature = 0, .top_p = 1 };
	assert_int_equal(sc_sample(logits, 6, &greedy, &rng, scratch, order), 1); /* first max */
	/* top-k 2 keeps both 2.0s (ties at the k-th value), never anything else */
	sc_sampling k2 = { .temperature = 1.0f, .top_k = 2, .top_p = 1 };
	for (int i = 0; i < 2000; i++) {
		int id = sc_sample(logits, 6, &k2, &rng, scratch, order);
		assert_true(id == 1 || id == 3);
	}
	/* top-p this small keeps only the most likely (the lower id of a tie) */
	sc_sampling p = { .temperature = 1.0f, .top_p = 0.01f };
	for (int i = 0; i < 200; i++)
		assert_int_equal(sc_sample(logits, 6, &p, &rng, scratch, order), 1);
	/* plain sampling follows softmax(logits / T) */
	sc_sampling t = { .temperature = 2.0f, .top_p = 1 };
	int hits[6] = { 0 }, n = 60000;
	for (int i = 0; i < n; i++)
		hits[sc_sample(logits, 6, &t, &rng, scratch, order)]++;
	double z = 0;
	for (int i = 0; i < 6; i++)
		z += exp(logits[i] / 2.0);
	for (int i = 0; i < 6; i++) {
		double want = exp(logits[i] / 2.0) / z, got = (double)hits[i] / n;
		if (fabs(got - want) > 0.01)
			fail_msg("id %d drawn %.4f of the time, softmax says %.4f", i, got, want);
	}
}

typedef struct fixture {
	sc_model_config mc;
	char dir[512];
	sc_backend *be;
	sc_weights *w;
	sc_adapter *ad;
} fixture;

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	sc_config_shape sh = { .n_layer = 3,
			       .n_head = 4,
			       .n_kv_head = 2,
			       .n_embd = 32,
			       .n_inner = 48,
			       .vocab_size = 97,
			       .n_positions = 64,
			       .tie = 0,
			       .sliding_window = 5 };
	sc_modelgen_opts o = { .seed = 4, .dtype = SC_F32, .random_norms = 1 };
	SC_ASSERT_OK(sc_config_make(&f->mc, "llama-tiny", "mistral", &sh));
	sc_test_path(f->dir, sizeof(f->dir), "genmodel");
	SC_ASSERT_OK(sc_modelgen_write(f->dir, &f->mc, &o));
	SC_ASSERT_OK(sc_backend_cpu_open(&f->be, 1));
	SC_ASSERT_OK(sc_weights_open(&f->w, f->dir));
	sc_lora_config lc = { .rank = 2, .alpha = 4, .targets = 0x7f, .seed = 1 };
	SC_ASSERT_OK(sc_adapter_new(&f->ad, &lc, &f->mc));
	sc_test_fill_normal(f->ad->data, f->ad->n_floats, 9, 0.2f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	sc_adapter_free(f->ad);
	sc_weights_close(f->w);
	sc_backend_free(f->be);
	free(f);
	return 0;
}

static sc_segment *gen_segment(fixture *f, int T, int P)
{
	sc_segment *seg;
	sc_segment_spec sp = { .model = f->mc,
			       .lora = f->ad->lora,
			       .first = 0,
			       .last = f->mc.n_layer,
			       .B = 1,
			       .T = T,
			       .slots = 1,
			       .kv_positions = P };
	SC_ASSERT_OK(sc_segment_new(&seg, f->be, &sp));
	SC_ASSERT_OK(sc_segment_load_weights(seg, f->w));
	SC_ASSERT_OK(sc_segment_set_lora(seg, f->ad));
	return seg;
}

/* A prompt of 12 positions (window 5) at once, in chunks of 5, and one at a
 * time: the last position's logits agree. */
static void cache_matches_whole_prompt(void **state)
{
	fixture *f = *state;
	int32_t ids[12] = { 3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26 };
	int V = f->mc.vocab_size;
	float *whole = malloc(V * sizeof(float)), *step = malloc(V * sizeof(float));
	sc_segment *a = gen_segment(f, 12, 16), *b = gen_segment(f, 1, 16),
		   *c = gen_segment(f, 5, 16);
	SC_ASSERT_OK(sc_segment_infer(a, 0, 12, ids, whole));
	for (int i = 0; i < 12; i++)
		SC_ASSERT_OK(sc_segment_infer(b, i, 1, ids + i, step));
	double err = sc_test_max_rel_err(step, whole, V, 1e-6);
	if (!(err < 1e-5))
		fail_msg("one position at a time: max rel err %.3g", err);
	SC_ASSERT_OK(sc_segment_infer(c, 0, 5, ids, step));
	SC_ASSERT_OK(sc_segment_infer(c, 5, 5, ids + 5, step));
	SC_ASSERT_OK(sc_segment_infer(c, 10, 2, ids + 10, step));
	err = sc_test_max_rel_err(step, whole, V, 1e-6);
	if (!(err < 1e-5))
		fail_msg("in chunks of 5: max rel err %.3g", err);
	/* running from position 0 again starts a new prompt */
	SC_ASSERT_OK(sc_segment_infer(b, 0, 1, ids + 3, step));
	SC_ASSERT_OK(sc_segment_infer(a, 0, 1, ids + 3, whole));
	assert_memory_equal(step, whole, V * sizeof(float));
	sc_segment_free(a);
	sc_segment_free(b);
	sc_segment_free(c);
	free(whole);
	free(step);
}

static void generation_refusals(void **state)
{
	fixture *f = *state;
	int32_t ids[4] = { 1, 2, 3, 4 }, bad = 97;
	float logits[97];
	sc_segment *seg = gen_segment(f, 4, 8);
	SC_ASSERT_ERR(sc_segment_infer(seg, 6, 3, ids, logits), SC_EINVAL); /* past the cache */
	SC_ASSERT_ERR(sc_segment_infer(seg, 0, 5, ids, logits), SC_EINVAL); /* more than T */
	SC_ASSERT_ERR(sc_segment_infer(seg, 0, 1, &bad, logits), SC_ERANGE);
	SC_ASSERT_ERR(sc_segment_zero_grad(seg), SC_EINVAL);
	double loss;
	SC_ASSERT_ERR(sc_segment_forward(seg, 0, ids, ids, 1.0f, NULL, &loss), SC_EINVAL);
	sc_segment_free(seg);
	/* a training segment does not generate */
	sc_segment_spec sp = { .model = f->mc,
			       .lora = f->ad->lora,
			       .first = 0,
			       .last = f->mc.n_layer,
			       .B = 1,
			       .T = 4,
			       .slots = 1 };
	SC_ASSERT_OK(sc_segment_new(&seg, f->be, &sp));
	SC_ASSERT_ERR(sc_segment_infer(seg, 0, 1, ids, logits), SC_EINVAL);
	sc_segment_free(seg);
	/* a cache longer than the model's positions */
	sp.kv_positions = f->mc.n_positions + 1;
	SC_ASSERT_ERR(sc_segment_new(&seg, f->be, &sp), SC_EINVAL);
	/* the generator: a prompt that does not fit, an id outside the vocabulary */
	sc_generator *g;
	int32_t out[8];
	int n;
	sc_gen_stats st;
	sc_sampling s = { .top_p = 1 };
	SC_ASSERT_OK(sc_generator_new(&g, f->be, &f->mc, f->w, f->ad, 2, 8, 4));
	SC_ASSERT_ERR(sc_generator_run(g, ids, 4, 5, &s, NULL, 0, NULL, NULL, out, &n, &st),
		      SC_EINVAL);
	SC_ASSERT_ERR(sc_generator_run(g, &bad, 1, 2, &s, NULL, 0, NULL, NULL, out, &n, &st),
		      SC_ERANGE);
	/* a stop id ends the run after it */
	SC_ASSERT_OK(sc_generator_run(g, ids, 4, 4, &s, NULL, 0, NULL, NULL, out, &n, &st));
	assert_int_equal(n, 4);
	int32_t stop = out[1];
	SC_ASSERT_OK(sc_generator_run(g, ids, 4, 4, &s, &stop, 1, NULL, NULL, out, &n, &st));
	assert_true(n <= 2 && out[n - 1] == stop);
	sc_generator_free(g);
}

/* Pushes one token's text; checks what is released and whether it stopped. */
static void push_expect(sc_stop_text *m, const char *tok, const char *want, int want_stop)
{
	const char *out;
	size_t n;
	int stop;
	SC_ASSERT_OK(sc_stop_text_push(m, tok, strlen(tok), &out, &n, &stop));
	if (n != strlen(want) || memcmp(out, want, n))
		fail_msg("after '%s': released '%.*s', want '%s'", tok, (int)n, out, want);
	assert_int_equal(stop, want_stop);
}

static void finish_expect(sc_stop_text *m, const char *want)
{
	const char *out;
	size_t n;
	sc_stop_text_finish(m, &out, &n);
	if (n != strlen(want) || memcmp(out, want, n))
		fail_msg("at the end: released '%.*s', want '%s'", (int)n, out, want);
}

/* --stop: a string spanning two tokens, one inside a token, one never
 * matched, a held prefix that turns out not to match released later, the
 * first of two to complete, incomplete UTF-8 held, refusals. */
static void stop_strings(void **state)
{
	sc_stop_text m;
	const char *span[1] = { "lo w" };
	SC_ASSERT_OK(sc_stop_text_init(&m, span, 1));
	push_expect(&m, "hel", "he", 0); /* "l" could begin "lo w" */
	push_expect(&m, "lo", "l", 0);   /* "lo" still could */
	push_expect(&m, " wor", "lo w", 1);
	assert_string_equal(m.text, "hello w"); /* cut right after the stop string */
	push_expect(&m, "ld", "", 1);           /* nothing after a match */
	finish_expect(&m, "");
	sc_stop_text_free(&m);

	const char *inside[1] = { "ell" };
	SC_ASSERT_OK(sc_stop_text_init(&m, inside, 1));
	push_expect(&m, "hello", "hell", 1);
	assert_int_equal(m.len, 4);
	sc_stop_text_free(&m);

	const char *never[1] = { "xyz" };
	SC_ASSERT_OK(sc_stop_text_init(&m, never, 1));
	push_expect(&m, "abc", "abc", 0);
	push_expect(&m, "x", "", 0);
	push_expect(&m, "y", "", 0);
	push_expect(&m, "d", "xyd", 0); /* held "xy", then not a match after all */
	push_expect(&m, "xy", "", 0);
	finish_expect(&m, "xy"); /* the run ended: the held tail as it is */
	assert_string_equal(m.text, "abcxydxy");
	sc_stop_text_free(&m);

	const char *overlap[1] = { "abc" };
	SC_ASSERT_OK(sc_stop_text_init(&m, overlap, 1));
	push_expect(&m, "xa", "x", 0);
	push_expect(&m, "ab", "a", 0); /* "aab": only the last "ab" may begin "abc" */
	push_expect(&m, "abd", "ababd", 0);
	push_expect(&m, "a", "", 0);
	push_expect(&m, "bcz", "abc", 1);
	assert_string_equal(m.text, "xaababdabc");
	sc_stop_text_free(&m);

	/* two strings: the one completing first wins, wherever it starts */
	const char *two[2] = { "world", "or" };
	SC_ASSERT_OK(sc_stop_text_init(&m, two, 2));
	push_expect(&m, "hello w", "hello ", 0);
	push_expect(&m, "orld!", "wor", 1);
	assert_string_equal(m.text, "hello wor");
	sc_stop_text_free(&m);

	/* no stop strings: incomplete UTF-8 is held, never printed in halves */
	SC_ASSERT_OK(sc_stop_text_init(&m, NULL, 0));
	push_expect(&m, "a\xe2", "a", 0);
	push_expect(&m, "\x82", "", 0);
	push_expect(&m, "\xac\xc3", "\xe2\x82\xac", 0);
	push_expect(&m, "\xa9\xf0\x9f", "\xc3\xa9", 0);
	push_expect(&m, "x", "\xf0\x9fx", 0); /* broken: released as it is */
	push_expect(&m, "\xff", "\xff", 0);   /* not a lead byte: nothing to wait for */
	push_expect(&m, "\xf0", "", 0);
	finish_expect(&m, "\xf0");
	sc_stop_text_free(&m);

	/* a stop string with a multi-byte character, split across tokens */
	const char *euro[1] = { "\xe2\x82\xac!" };
	SC_ASSERT_OK(sc_stop_text_init(&m, euro, 1));
	push_expect(&m, "5 \xe2\x82", "5 ", 0);
	push_expect(&m, "\xac", "", 0);
	push_expect(&m, "!?", "\xe2\x82\xac!", 1);
	sc_stop_text_free(&m);

	const char *empty[1] = { "" }, *many[9] = { "a", "b", "c", "d", "e", "f", "g", "h", "i" };
	SC_ASSERT_ERR(sc_stop_text_init(&m, empty, 1), SC_EINVAL);
	SC_ASSERT_ERR(sc_stop_text_init(&m, many, 9), SC_EINVAL);
	SC_ASSERT_OK(sc_stop_text_init(&m, many, 8));
	sc_stop_text_free(&m);
	sc_stop_text_free(NULL);
}

typedef struct stop_run {
	sc_stop_text m;
	char printed[256];
	size_t n;
} stop_run;

static int stop_emit(void *arg, int32_t id)
{
	stop_run *r = arg;
	char b = (char)id;
	const char *out;
	size_t n;
	int stop;
	SC_ASSERT_OK(sc_stop_text_push(&r->m, &b, 1, &out, &n, &stop));
	memcpy(r->printed + r->n, out, n);
	r->n += n;
	return stop;
}

/* Through the generation loop: the run ends with the id completing the
 * first occurrence of a stop string taken from its own greedy text. */
static void stop_string_ends_run(void **state)
{
	fixture *f = *state;
	int32_t ids[4] = { 5, 6, 7, 8 }, out[12], out2[12];
	int n, n2;
	sc_gen_stats st;
	sc_sampling s = { .top_p = 1 };
	sc_generator *g;
	char text[13] = { 0 }, stop[3] = { 0 };
	SC_ASSERT_OK(sc_generator_new(&g, f->be, &f->mc, f->w, f->ad, 1, 16, 4));
	SC_ASSERT_OK(sc_generator_run(g, ids, 4, 12, &s, NULL, 0, NULL, NULL, out, &n, &st));
	assert_int_equal(n, 12);
	for (int i = 0; i < n; i++)
		text[i] = (char)(out[i] ? out[i] : 1); /* the test's stop string has no NUL */
	int at = -1;
	for (int i = 2; i + 2 <= 8 && at < 0; i++)
		if (out[i] && out[i + 1])
			at = i;
	if (at < 0) {
		sc_generator_free(g);
		skip();
	}
	memcpy(stop, text + at, 2);
	size_t first = (size_t)((char *)memmem(text, 12, stop, 2) - text) + 2;
	const char *sv[1] = { stop };
	stop_run r = { .n = 0 };
	SC_ASSERT_OK(sc_stop_text_init(&r.m, sv, 1));
	SC_ASSERT_OK(sc_generator_run(g, ids, 4, 12, &s, NULL, 0, stop_emit, &r, out2, &n2, &st));
	assert_int_equal(n2, (int)first); /* one id a byte here */
	assert_memory_equal(out2, out, (size_t)n2 * sizeof(int32_t));
	assert_int_equal(r.n, first);
	assert_memory_equal(r.printed, text, first);
	sc_stop_text_free(&r.m);
	sc_generator_free(g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(sampler_rules),
		cmocka_unit_test(cache_matches_whole_prompt),
		cmocka_unit_test(generation_refusals),
		cmocka_unit_test(stop_strings),
		cmocka_unit_test(stop_string_ends_run),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
