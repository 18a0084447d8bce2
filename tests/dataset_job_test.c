/* dataset_job_test.c — a job's data: the held-out split (deterministic, by
 * document), unpacked windows (no window spans two documents, padding is
 * never a target), the tokenized-data cache (hit, miss on changed data,
 * corrupt file rebuilt, unwritable place skipped) and refusals. Byte
 * tokens; the key's tokenizer part is checked with a tokenizer.json. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testutil.h"

#include "sc_dataset.h"

static char *write_tmp(const char *name, const char *text)
{
	static char path[512];
	sc_test_path(path, sizeof(path), name);
	assert_int_equal(sc_test_write_file(path, text, strlen(text)), 0);
	return path;
}

/* n JSONL documents "doc <i> ..." of different lengths. */
static char *jsonl_docs(const char *name, int n)
{
	size_t cap = (size_t)n * 96 + 1, k = 0;
	char *text = malloc(cap);
	assert_non_null(text);
	for (int i = 0; i < n; i++)
		k += (size_t)snprintf(text + k, cap - k, "{\"text\": \"doc %03d %.*s\"}\n", i,
				      i % 23, "abcdefghijklmnopqrstuvwxyz");
	char *p = write_tmp(name, text);
	free(text);
	return p;
}

/* A BPE whose vocabulary is printable ASCII (id = byte), plus "ab" = 200
 * when merges says so. */
static sc_tokenizer *char_tokenizer(const char *name, const char *merges)
{
	char json[8192], path[512];
	size_t n = 0;
	sc_tokenizer *t;
	n += (size_t)snprintf(json + n, sizeof(json) - n,
			      "{\"model\":{\"type\":\"BPE\",\"vocab\":{");
	for (int c = 32; c < 127; c++)
		n += (size_t)snprintf(json + n, sizeof(json) - n, "\"%s%c\":%d,",
				      c == '"' || c == '\\' ? "\\" : "", c, c);
	snprintf(json + n, sizeof(json) - n, "\"ab\":200},\"merges\":[%s]}}", merges);
	sc_test_path(path, sizeof(path), name);
	assert_int_equal(sc_test_write_file(path, json, strlen(json)), 0);
	SC_ASSERT_OK(sc_tokenizer_load(&t, path));
	return t;
}

static int same_tokens(const sc_tokens *a, const sc_tokens *b)
{
	return a->n == b->n && !memcmp(a->ids, b->ids, a->n * sizeof(int32_t)) &&
	       !a->mask == !b->mask && (!a->mask || !memcmp(a->mask, b->mask, a->n));
}

static void split_by_documents_is_seeded(void **state)
{
	const char *p = jsonl_docs("split.jsonl", 40);
	sc_dataset_opts o = { .eos_id = 10 };
	sc_tokens *all, *tr1, *ev1, *tr2, *ev2, *tr3, *ev3;
	SC_ASSERT_OK(sc_dataset_load(&all, p, NULL, 256, &o, NULL));
	assert_int_equal(all->ndocs, 40);
	SC_ASSERT_OK(sc_tokens_split(all, 0.2, 7, &tr1, &ev1));
	SC_ASSERT_OK(sc_tokens_split(all, 0.2, 7, &tr2, &ev2));
	SC_ASSERT_OK(sc_tokens_split(all, 0.2, 8, &tr3, &ev3));
	assert_true(same_tokens(tr1, tr2) && same_tokens(ev1, ev2)); /* same seed, same split */
	assert_false(same_tokens(ev1, ev3));                         /* another seed, another */
	assert_int_equal(ev1->ndocs, 8);
	assert_int_equal(tr1->ndocs, 32);
	assert_int_equal(tr1->n + ev1->n, all->n);
	/* every held-out document is a whole document of the data, none trains */
	for (size_t d = 0; d < ev1->ndocs; d++) {
		size_t a = ev1->docs[d], b = d + 1 < ev1->ndocs ? ev1->docs[d + 1] : ev1->n;
		char num[4] = { (char)ev1->ids[a + 4], (char)ev1->ids[a + 5], (char)ev1->ids[a + 6],
				0 };
		assert_int_equal(ev1->ids[a], 'd');
		assert_int_equal(ev1->ids[b - 1], 10);
		for (size_t e = 0; e < tr1->ndocs; e++) {
			size_t ta = tr1->docs[e];
			assert_false(tr1->ids[ta + 4] == num[0] && tr1->ids[ta + 5] == num[1] &&
				     tr1->ids[ta + 6] == num[2]);
		}
	}
	sc_tokens *t[] = { all, tr1, ev1, tr2, ev2, tr3, ev3 };
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		sc_tokens_free(t[i]);
}

static void one_document_holds_out_its_tail(void **state)
{
	const char *p = write_tmp("one.txt", "0123456789abcdefghij");
	sc_dataset_opts o = { .eos_id = -1 };
	sc_tokens *all, *tr, *ev;
	SC_ASSERT_OK(sc_dataset_load(&all, p, NULL, 256, &o, NULL));
	SC_ASSERT_OK(sc_tokens_split(all, 0.25, 1, &tr, &ev));
	assert_int_equal(tr->n, 15);
	assert_int_equal(ev->n, 5);
	assert_int_equal(ev->ids[0], 'f');
	sc_tokens_free(tr);
	sc_tokens_free(ev);
	SC_ASSERT_ERR(sc_tokens_split(all, 0, 1, &tr, &ev), SC_EINVAL);
	assert_null(tr);
	sc_tokens_free(all);
}

/* Unpacked: each window lies inside one document, every target of every
 * document is predicted exactly once, padding never is. */
static void unpacked_windows_keep_documents_apart(void **state)
{
	const char *p = write_tmp("docs.jsonl", "{\"text\": \"abcdefghijk\"}\n" /* 11 + EOS */
						"{\"text\": \"x\"}\n"           /* 1 + EOS */
						"{\"text\": \"\"}\n"            /* EOS only */
						"{\"prompt\": \"pq\", \"completion\": \"rstu\"}\n");
	sc_dataset_opts o = { .eos_id = 3 };
	sc_tokens *all, *u;
	enum { T = 4 };
	SC_ASSERT_OK(sc_dataset_load(&all, p, NULL, 256, &o, NULL));
	SC_ASSERT_OK(sc_tokens_unpack(all, T, &u));
	/* 12 tokens: 3 windows; 2: 1; 1: none; 7: 2 */
	assert_int_equal(u->nwin, 6);
	assert_int_equal(sc_eval_batches(u, T, 1, 0), 6);
	int32_t in[T], tg[T];
	size_t targets = 0;
	int seen[256] = { 0 };
	for (size_t w = 0; w < u->nwin; w++) {
		size_t valid = sc_eval_batch(u, T, 1, w, in, tg);
		assert_true(valid > 0); /* no window without a target */
		targets += valid;
		for (int t = 0; t < T; t++)
			if (tg[t] >= 0)
				seen[tg[t]]++;
	}
	/* targets: 11 of doc 1, 1 of doc 2, completion r s t u + EOS of doc 4 */
	assert_int_equal(targets, 11 + 1 + 5);
	for (const char *c = "bcdefghijkrstu"; *c; c++)
		assert_int_equal(seen[(unsigned char)*c], 1);
	assert_int_equal(seen['a'], 0); /* a document's first token predicts nothing before */
	assert_int_equal(seen['p'] + seen['q'], 0);
	assert_int_equal(seen[3], 3); /* EOS of docs 1, 2 and 4 */
	/* the loader takes the windows too, and never reads past them */
	sc_loader *ld;
	int32_t bin[2 * T], btg[2 * T];
	SC_ASSERT_OK(sc_loader_new(&ld, u, T, 5));
	assert_int_equal(sc_loader_windows(ld), 6);
	for (int k = 0; k < 12; k++)
		sc_loader_batch(ld, (uint64_t)k * 2, 2, bin, btg);
	sc_loader_free(ld);
	sc_tokens_free(u);
	sc_tokens_free(all);
}

static void padding_rows_count_nothing(void **state)
{
	const char *p = write_tmp("pad.txt", "abcdefghij"); /* 10 tokens: 3 windows of T=3 */
	sc_dataset_opts o = { .eos_id = -1 };
	sc_tokens *tk;
	SC_ASSERT_OK(sc_dataset_load(&tk, p, NULL, 256, &o, NULL));
	assert_int_equal(sc_eval_batches(tk, 3, 2, 0), 2);
	assert_int_equal(sc_eval_batches(tk, 3, 2, 1), 1);
	int32_t in[6], tg[6];
	assert_int_equal(sc_eval_batch(tk, 3, 2, 1, in, tg), 3);
	int32_t want_in[] = { 'g', 'h', 'i', 0, 0, 0 }, want_tg[] = { 'h', 'i', 'j', -1, -1, -1 };
	assert_memory_equal(in, want_in, sizeof(in));
	assert_memory_equal(tg, want_tg, sizeof(tg));
	sc_tokens_free(tk);
}

static void cache_hits_misses_and_rebuilds(void **state)
{
	char dir[512], data[600], cache[700];
	char cmd[1600];
	sc_test_path(dir, sizeof(dir), "cachecase");
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir); /* from an earlier run */
	assert_int_equal(system(cmd), 0);
	assert_int_equal(mkdir(dir, 0755), 0);
	snprintf(data, sizeof(data), "%s/data.jsonl", dir);
	snprintf(cache, sizeof(cache), "%s/.splitchain-cache", dir);
	const char *text =
	    "{\"prompt\": \"ab\", \"completion\": \"cdefgh\"}\n{\"text\": \"ijklmn\"}\n";
	assert_int_equal(sc_test_write_file(data, text, strlen(text)), 0);
	sc_data_spec ds = { .path = data, .T = 4, .seed = 1 };
	sc_job_data a, b, c;
	SC_ASSERT_OK(sc_job_data_load(&a, &ds, NULL, 256, 2));
	assert_int_equal(a.cache, 2); /* tokenized and written */
	SC_ASSERT_OK(sc_job_data_load(&b, &ds, NULL, 256, 2));
	assert_int_equal(b.cache, 1); /* read back */
	assert_true(same_tokens(a.train, b.train));
	assert_int_equal(b.train->ndocs, 2);
	assert_int_equal(b.st.documents, 2);
	assert_int_equal(b.st.format, 3);
	sc_job_data_free(&b);
	/* a vocabulary too small for the cached ids is refused as for the data */
	SC_ASSERT_ERR(sc_job_data_load(&b, &ds, NULL, 100, 2), SC_ERANGE);
	/* bytes take no EOS: another model EOS is the same key */
	SC_ASSERT_OK(sc_job_data_load(&b, &ds, NULL, 256, 5));
	assert_int_equal(b.cache, 1);
	sc_job_data_free(&b);
	/* a tokenizer is part of the key: another one (one merge more) is a miss,
	 * the first one again a hit */
	sc_tokenizer *t1 = char_tokenizer("tok1.json", ""),
		     *t2 = char_tokenizer("tok2.json", "\"a b\"");
	SC_ASSERT_OK(sc_job_data_load(&b, &ds, t1, 256, 2));
	assert_int_equal(b.cache, 2);
	sc_job_data_free(&b);
	SC_ASSERT_OK(sc_job_data_load(&b, &ds, t2, 256, 2));
	assert_int_equal(b.cache, 2);
	sc_job_data_free(&b);
	SC_ASSERT_OK(sc_job_data_load(&b, &ds, t1, 256, 2));
	assert_int_equal(b.cache, 1);
	assert_int_equal(b.train->ids[b.train->n - 1], 2); /* with a tokenizer: EOS */
	sc_job_data_free(&b);
	sc_tokenizer_free(t1);
	sc_tokenizer_free(t2);
	/* a corrupt cache file is rebuilt, the tokens are the same */
	snprintf(cmd, sizeof(cmd), "for f in '%s'/*; do printf 'garbage' > \"$f\"; done", cache);
	assert_int_equal(system(cmd), 0);
	SC_ASSERT_OK(sc_job_data_load(&c, &ds, NULL, 256, 2));
	assert_int_equal(c.cache, 2);
	assert_true(same_tokens(a.train, c.train));
	sc_job_data_free(&c);
	/* changed data: a new key, new tokens */
	assert_int_equal(sc_test_write_file(data, "{\"text\": \"zzzzzz\"}\n", 19), 0);
	SC_ASSERT_OK(sc_job_data_load(&c, &ds, NULL, 256, 2));
	assert_int_equal(c.cache, 2);
	assert_int_equal(c.train->ids[0], 'z');
	sc_job_data_free(&c);
	/* no_cache: neither read nor written */
	ds.no_cache = 1;
	SC_ASSERT_OK(sc_job_data_load(&c, &ds, NULL, 256, 2));
	assert_int_equal(c.cache, 0);
	sc_job_data_free(&c);
	/* no place for a cache (its folder name taken by a file): skipped */
	ds.no_cache = 0;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s' && printf x > '%s'", cache, cache);
	assert_int_equal(system(cmd), 0);
	SC_ASSERT_OK(sc_job_data_load(&c, &ds, NULL, 256, 2));
	assert_int_equal(c.cache, 0);
	assert_int_equal(c.train->ids[0], 'z');
	sc_job_data_free(&c);
	sc_job_data_free(&a);
}

static void eval_options_and_refusals(void **state)
{
	const char *p = jsonl_docs("opts.jsonl", 30);
	char path[512];
	snprintf(path, sizeof(path), "%s", p);
	const char *ev = write_tmp("held.txt", "held-out text, long enough for a window or two");
	char evp[512];
	snprintf(evp, sizeof(evp), "%s", ev);
	sc_data_spec ds = { .path = path, .T = 8, .seed = 3, .no_cache = 1 };
	sc_job_data jd;
	/* an eval file */
	ds.eval_path = evp;
	SC_ASSERT_OK(sc_job_data_load(&jd, &ds, NULL, 256, -1));
	assert_non_null(jd.eval);
	assert_int_equal(jd.eval->ids[0], 'h');
	sc_job_data_free(&jd);
	/* both: refused */
	ds.eval_split = 0.1;
	SC_ASSERT_ERR(sc_job_data_load(&jd, &ds, NULL, 256, -1), SC_EINVAL);
	/* a split */
	ds.eval_path = NULL;
	SC_ASSERT_OK(sc_job_data_load(&jd, &ds, NULL, 256, -1));
	assert_int_equal(jd.eval->ndocs, 3);
	sc_job_data_free(&jd);
	/* out of range */
	ds.eval_split = 0.7;
	SC_ASSERT_ERR(sc_job_data_load(&jd, &ds, NULL, 256, -1), SC_EINVAL);
	/* held-out data shorter than one window: refused, naming it */
	ds.eval_split = 0;
	ds.eval_path = write_tmp("tiny.txt", "abc");
	SC_ASSERT_ERR(sc_job_data_load(&jd, &ds, NULL, 256, -1), SC_EINVAL);
	assert_non_null(strstr(sc_err_detail(), "held-out"));
	/* training data shorter than one window: refused */
	ds.eval_path = NULL;
	ds.path = write_tmp("short.txt", "abcd");
	SC_ASSERT_ERR(sc_job_data_load(&jd, &ds, NULL, 256, -1), SC_EINVAL);
	assert_non_null(strstr(sc_err_detail(), "training data"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(split_by_documents_is_seeded),
		cmocka_unit_test(one_document_holds_out_its_tail),
		cmocka_unit_test(unpacked_windows_keep_documents_apart),
		cmocka_unit_test(padding_rows_count_nothing),
		cmocka_unit_test(cache_hits_misses_and_rebuilds),
		cmocka_unit_test(eval_options_and_refusals),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
