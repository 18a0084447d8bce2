/* placement_test.c — the planner (coordinator/placement.h): compute alone
 * places exactly as the planner did before links counted; a slow link is
 * avoided by reordering the chain; a cut moves away from the stage that
 * sends over a slow link; an unmeasured link takes the default (or the
 * other direction's measurement) and the reason says so; more stages than
 * the exhaustive search takes are ordered greedily; bad arguments. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "placement.h"
#include "sc_rng.h"
#include "testutil.h"

/* ---- the planner before links counted, kept here as the reference ---- */

static int ref_by_rate_desc(const void *a, const void *b)
{
	const sc_place_worker *x = *(const sc_place_worker *const *)a;
	const sc_place_worker *y = *(const sc_place_worker *const *)b;
	if (x->gflops != y->gflops)
		return x->gflops < y->gflops ? 1 : -1;
	return x->id < y->id ? -1 : x->id > y->id;
}

static int ref_by_index(const void *a, const void *b)
{
	const sc_place_worker *x = *(const sc_place_worker *const *)a;
	const sc_place_worker *y = *(const sc_place_worker *const *)b;
	return x < y ? -1 : x > y;
}

/* The S fastest in the given order, min-max cuts by compute: out[s] =
 * {worker, first, last}. */
static void ref_place(const sc_place_worker *w, int nw, int S, int L, double lg, double hg,
		      int (*out)[3])
{
	const sc_place_worker *pick[64];
	double best[16 * 65];
	int split[16 * 65];
	assert_true(nw <= 64 && S < 16 && L <= 64);
	for (int i = 0; i < nw; i++)
		pick[i] = &w[i];
	qsort(pick, (size_t)nw, sizeof(*pick), ref_by_rate_desc);
	qsort(pick, (size_t)S, sizeof(*pick), ref_by_index);
	for (int i = 0; i <= S * (L + 1) + L; i++)
		best[i] = DBL_MAX;
	best[0] = 0;
	for (int s = 1; s <= S; s++)
		for (int l = s; l <= L - (S - s); l++)
			for (int a = s - 1; a < l; a++) {
				double prev = best[(s - 1) * (L + 1) + a], t, m;
				if (prev == DBL_MAX)
					continue;
				t = ((l - a) * lg + (s == S ? hg : 0)) / pick[s - 1]->gflops;
				m = prev > t ? prev : t;
				if (m < best[s * (L + 1) + l]) {
					best[s * (L + 1) + l] = m;
					split[s * (L + 1) + l] = a;
				}
			}
	for (int s = S, l = L; s >= 1; s--) {
		int a = split[s * (L + 1) + l];
		out[s - 1][0] = (int)(pick[s - 1] - w);
		out[s - 1][1] = a;
		out[s - 1][2] = l;
		l = a;
	}
}

/* ---- helpers ---- */

/* nw x nw links, every one measured at mbit / rtt. */
static sc_place_link *links_all(int nw, double mbit, double rtt)
{
	sc_place_link *ls = calloc((size_t)nw * nw, sizeof(*ls));
	assert_non_null(ls);
	for (int i = 0; i < nw * nw; i++)
		ls[i] = (sc_place_link){ rtt, mbit };
	return ls;
}

static void set_link(sc_place_link *ls, int nw, int a, int b, double mbit, double rtt)
{
	ls[a * nw + b] = (sc_place_link){ rtt, mbit };
}

/* Nonzero when workers a and b are next to each other in the chain. */
static int adjacent(const sc_place_stage *out, int S, int a, int b)
{
	for (int s = 0; s + 1 < S; s++)
		if ((out[s].worker == a && out[s + 1].worker == b) ||
		    (out[s].worker == b && out[s + 1].worker == a))
			return 1;
	return 0;
}

/* The cuts are contiguous and cover [0, L); each stage's prediction is
 * its pace for M - 1 micro-batches plus one path, the same for every stage
 * and at least one micro-batch's compute through all (M = 0: no links,
 * the prediction is the compute). */
static void assert_sane(const sc_place_stage *out, int S, int L, int M)
{
	double path = -1, compute = 0;
	for (int s = 0; s < S; s++) {
		assert_int_equal(out[s].first, s ? out[s - 1].last : 0);
		assert_true(out[s].last > out[s].first);
		compute += out[s].compute_s;
	}
	for (int s = 0; s < S; s++) {
		double pace = fmax(out[s].compute_s, out[s].transfer_s), p;
		if (!M) {
			assert_true(out[s].predicted_s == out[s].compute_s);
			continue;
		}
		p = out[s].predicted_s - pace * (M - 1) / M;
		if (path < 0)
			path = p;
		if (fabs(p - path) > 1e-12 || p < compute / M - 1e-12)
			fail_msg("stage %d: predicted %g, pace %g: path %g (stage 0: %g, compute "
				 "of one micro-batch %g)",
				 s, out[s].predicted_s, pace, p, path, compute / M);
	}
	assert_int_equal(out[S - 1].last, L);
}

static double slowest(const sc_place_stage *out, int S)
{
	double m = 0;
	for (int s = 0; s < S; s++)
		m = out[s].predicted_s > m ? out[s].predicted_s : m;
	return m;
}

/* ---- cases ---- */

/* Without anything to send (no net, or hop_bytes 0 whatever the links),
 * the placement is the one before links counted, for random rates,
 * sizes and head costs. */
static void test_compute_only_unchanged(void **state)
{
	(void)state;
	const uint64_t key = 42;
	sc_rng rng;
	sc_rng_seed(&rng, &key, 1);
	for (int trial = 0; trial < 300; trial++) {
		sc_place_worker w[8];
		sc_place_stage out[8], out2[8];
		int want[8][3];
		int nw = 1 + (int)sc_rng_below(&rng, 8),
		    S = 1 + (int)sc_rng_below(&rng, (uint64_t)nw);
		int L = S + (int)sc_rng_below(&rng, 20);
		double lg = 0.1 + sc_rng_uniform(&rng), hg = 3 * sc_rng_uniform(&rng);
		char reason[1024];
		for (int i = 0; i < nw; i++)
			w[i] = (sc_place_worker){ (uint64_t)(10 + i),
						  trial % 3 ? 1 + 100 * sc_rng_uniform(&rng) : 50,
						  0, 0 };
		sc_place_link *ls = links_all(nw, 0.01, 500); /* terrible, but nothing crosses */
		sc_place_net none = { .links = ls, .hop_bytes = 0, .messages = 4 };
		ref_place(w, nw, S, L, lg, hg, want);
		SC_ASSERT_OK(sc_place(w, nw, S, L, lg, hg, NULL, out, reason, sizeof(reason)));
		SC_ASSERT_OK(sc_place(w, nw, S, L, lg, hg, &none, out2, NULL, 0));
		assert_sane(out, S, L, 0);
		for (int s = 0; s < S; s++) {
			if (out[s].worker != want[s][0] || out[s].first != want[s][1] ||
			    out[s].last != want[s][2])
				fail_msg("trial %d stage %d: worker %d [%d, %d), before links: "
					 "worker %d [%d, %d)",
					 trial, s, out[s].worker, out[s].first, out[s].last,
					 want[s][0], want[s][1], want[s][2]);
			assert_int_equal(out2[s].worker, out[s].worker);
			assert_int_equal(out2[s].first, out[s].first);
			assert_int_equal(out2[s].last, out[s].last);
			assert_true(out[s].transfer_s == 0 && out2[s].transfer_s == 0);
		}
		assert_non_null(strstr(reason, "no transfer counted"));
		free(ls);
	}
}

/* Workers 0 and 1 share a slow link; in the given order they are
 * neighbours. The planner puts worker 2 between them. */
static void test_slow_link_avoided_by_reordering(void **state)
{
	(void)state;
	sc_place_worker w[3] = { { 1, 10, 0, 0 }, { 2, 10, 0, 0 }, { 3, 10, 0, 0 } };
	sc_place_stage out[3];
	sc_place_link *ls = links_all(3, 1000, 0.2);
	char reason[2048];
	set_link(ls, 3, 0, 1, 5, 20);
	set_link(ls, 3, 1, 0, 5, 20);
	sc_place_net net = { .links = ls,
			     .hop_bytes = 8e6,
			     .messages = 4 }; /* 64 Mbit per hop: 12.8 s at 5 Mbit/s */
	SC_ASSERT_OK(sc_place(w, 3, 3, 6, 1.0, 0, &net, out, reason, sizeof(reason)));
	print_message("%s\n", reason);
	assert_sane(out, 3, 6, 4);
	if (adjacent(out, 3, 0, 1))
		fail_msg("the slow link is still in the chain: %s", reason);
	assert_int_equal(out[1].worker, 2);
	assert_true(slowest(out, 3) < 1.0); /* 0.2 s compute, 2 x 0.064 s transfer */
	assert_non_null(strstr(reason, "best of every order"));
	assert_non_null(strstr(reason, "4 of 4 link directions measured"));
	assert_non_null(strstr(reason, "8.000 MB per hop"));
	free(ls);
}

/* Two stages over one link that is slow one way, 8 micro-batches: stage 0
 * is bound by its link (0.7 s of sends a step against 0.5 s of compute at
 * the even cut), so the step is 7/8 of 0.7 s plus one micro-batch's path:
 * 1/8 of the whole compute, its message down (0.7 / 8 s plus half of 2 ms)
 * and its gradient back (at 1e6 Mbit/s). Stage 1 is given no more compute
 * than the link's pace; the given order is kept (the other is as slow). */
static void test_link_bound_stage(void **state)
{
	(void)state;
	sc_place_worker w[2] = { { 7, 10, 0, 0 }, { 8, 10, 0, 0 } };
	sc_place_stage out[2];
	sc_place_link ls[4] = { { 0, 0 }, { 2.0, 80 }, { 0, 1e6 }, { 0, 0 } };
	char reason[2048];
	sc_place_net net = { .links = ls,
			     .hop_bytes = 7e6,
			     .messages = 8 }; /* 56 Mbit: 0.7 s at 80 Mbit/s */
	SC_ASSERT_OK(sc_place(w, 2, 2, 10, 1.0, 0, NULL, out, NULL, 0));
	assert_int_equal(out[0].last, 5); /* compute alone: even */
	SC_ASSERT_OK(sc_place(w, 2, 2, 10, 1.0, 0, &net, out, reason, sizeof(reason)));
	print_message("%s\n", reason);
	assert_sane(out, 2, 10, 8);
	assert_int_equal(out[0].worker, 0);
	assert_true(fabs(out[0].transfer_s - 0.7) < 1e-9);
	assert_true(fabs(out[1].transfer_s - 5.6e-5) < 1e-12);
	assert_true(out[1].compute_s <= 0.7 + 1e-12);
	double step = 0.7 * 7 / 8 + 1.0 / 8 + (0.7 / 8 + 0.001) + 5.6e-5 / 8;
	if (fabs(slowest(out, 2) - step) > 1e-9)
		fail_msg("predicted step %.9f s, by hand %.9f s", slowest(out, 2), step);
	assert_non_null(strstr(reason, "the given order; none of the others is 1% faster"));
	assert_non_null(strstr(reason, "predicted step (pipelined over the links) 0.826"));
}

/* The pipeline's terms, each on its own: compute-bound (M - 1 paces of
 * the slowest compute plus a path), and one micro-batch (M = 1: the path
 * alone, every compute and message in turn). */
static void test_pipeline_terms(void **state)
{
	(void)state;
	sc_place_worker w[3] = { { 1, 10, 0, 0 }, { 2, 10, 0, 0 }, { 3, 10, 0, 0 } };
	sc_place_stage out[3];
	sc_place_link *ls = links_all(3, 1000, 1.0); /* 1 ms round trips */
	sc_place_net net = { .links = ls,
			     .hop_bytes = 1e6,
			     .messages = 4 }; /* 8 ms a hop-step at 1000 Mbit/s */
	SC_ASSERT_OK(sc_place(w, 3, 3, 6, 1.0, 0, &net, out, NULL, 0));
	assert_sane(out, 3, 6, 4);
	/* 0.2 s a stage; path 0.6 / 4 + 2 hops x 2 x (0.008 / 4 + 0.0005) */
	double step = 0.2 * 3 / 4 + 0.6 / 4 + 4 * (0.002 + 0.0005);
	assert_true(fabs(slowest(out, 3) - step) < 1e-12);
	net.messages = 1;
	SC_ASSERT_OK(sc_place(w, 3, 3, 6, 1.0, 0, &net, out, NULL, 0));
	assert_sane(out, 3, 6, 1);
	assert_true(fabs(slowest(out, 3) - (0.6 + 4 * (0.008 + 0.0005))) < 1e-12);
	free(ls);
}

/* Nothing measured: every hop at the default, and the reason says so; one
 * direction measured stands for the other. */
static void test_default_link_when_unmeasured(void **state)
{
	(void)state;
	sc_place_worker w[3] = { { 1, 10, 0, 0 }, { 2, 10, 0, 0 }, { 3, 10, 0, 0 } };
	sc_place_stage out[3];
	char reason[2048];
	sc_place_net net = { .hop_bytes = 1e6, .messages = 4 };
	double hop = 8e6 / (SC_PLACE_DEFAULT_MBIT_S * 1e6);
	SC_ASSERT_OK(sc_place(w, 3, 3, 9, 1.0, 0, &net, out, reason, sizeof(reason)));
	assert_sane(out, 3, 9, 4);
	assert_true(fabs(out[0].transfer_s - hop) < 1e-12);
	assert_true(fabs(out[1].transfer_s - 2 * hop) < 1e-12);
	assert_true(fabs(out[2].transfer_s - hop) < 1e-12);
	assert_int_equal(out[0].worker, 0); /* all orders alike: the given one */
	assert_int_equal(out[1].worker, 1);
	assert_non_null(strstr(reason, "0 of 4 link directions measured"));
	assert_non_null(strstr(reason, "default 1000 Mbit/s, 0.2 ms"));
	assert_non_null(strstr(reason, "default, not measured"));

	/* Only 1 -> 2 and 2 -> 3 measured (slow): the reverse directions use them. */
	sc_place_link ls[9] = { { 0 } };
	ls[0 * 3 + 1] = (sc_place_link){ 1.0, 100 };
	ls[1 * 3 + 2] = (sc_place_link){ 1.0, 100 };
	net.links = ls;
	SC_ASSERT_OK(sc_place(w, 3, 3, 9, 1.0, 0, &net, out, reason, sizeof(reason)));
	assert_non_null(strstr(reason, "measured the other way"));
	assert_non_null(strstr(reason, "of 4 link directions measured"));
	double slow = 8e6 / 100e6;
	for (int s = 0; s < 3; s++) {
		/* whatever the order, a hop over a measured pair costs the slow time */
		assert_true(out[s].transfer_s >= hop - 1e-12);
		assert_true(out[s].transfer_s <= 2 * slow + 1e-12);
	}
}

/* More stages than the exhaustive search takes: greedy swaps still take
 * the slow link out of the chain. */
static void test_greedy_beyond_exhaustive(void **state)
{
	(void)state;
	enum { N = SC_PLACE_EXHAUSTIVE_MAX + 2 };
	sc_place_worker w[N];
	sc_place_stage out[N];
	char reason[2048];
	for (int i = 0; i < N; i++)
		w[i] = (sc_place_worker){ (uint64_t)(i + 1), 10, 0, 0 };
	sc_place_link *ls = links_all(N, 1000, 0.2);
	set_link(ls, N, 3, 4, 2, 50);
	set_link(ls, N, 4, 3, 2, 50);
	sc_place_net net = { .links = ls, .hop_bytes = 4e6, .messages = 2 };
	SC_ASSERT_OK(sc_place(w, N, N, 2 * N, 1.0, 0.5, &net, out, reason, sizeof(reason)));
	assert_sane(out, N, 2 * N, 2);
	if (adjacent(out, N, 3, 4))
		fail_msg("greedy order kept the slow link: %s", reason);
	assert_non_null(strstr(reason, "greedy swaps"));
	free(ls);
}

/* Fewer stages than workers: the fastest are chosen, as before. */
static void test_fastest_chosen(void **state)
{
	(void)state;
	sc_place_worker w[4] = { { 1, 5, 0, 0 }, { 2, 50, 0, 0 }, { 3, 1, 0, 0 }, { 4, 40, 0, 0 } };
	sc_place_stage out[2];
	sc_place_net net = { .hop_bytes = 1e6, .messages = 2 };
	SC_ASSERT_OK(sc_place(w, 4, 2, 8, 1.0, 0, &net, out, NULL, 0));
	assert_true((out[0].worker == 1 && out[1].worker == 3) ||
		    (out[0].worker == 3 && out[1].worker == 1));
}

/* A synthetic memory model: 1 GiB a layer, 2 GiB more on the first stage
 * (the embedding) and on the last (the head), 0.5 GiB per micro-batch in
 * flight per layer held (1F1B: stage s of S keeps S - s). */
static double toy_mem(void *arg, int kind, int s, int S, int first, int last)
{
	const double G = 1073741824.0;
	int *calls = arg;
	++*calls;
	assert_int_equal(kind, 0);
	return (last - first) * (1.0 + 0.5 * (S - s)) * G + (s == 0 ? 2 * G : 0) +
	       (s == S - 1 ? 2 * G : 0);
}

/* Memory bounds the cuts and the order (toy_mem, 8 layers, 2 stages): the
 * even split needs 10 GiB on stage 0 and 8 on stage 1. */
static void test_memory_bounds_the_cuts(void **state)
{
	(void)state;
	const double G = 1073741824.0;
	int calls = 0;
	sc_place_worker w[2] = { { 1, 10, 10 * G, 0 }, { 2, 10, 10 * G, 0 } };
	sc_place_stage out[2];
	char reason[2048];
	sc_place_net net = { .hop_bytes = 0, .messages = 2, .mem = toy_mem, .mem_arg = &calls };
	/* 10 GiB each: the even split fits (10 and 8 GiB). */
	SC_ASSERT_OK(sc_place(w, 2, 2, 8, 1.0, 0, &net, out, reason, sizeof(reason)));
	assert_int_equal(out[0].last, 4);
	assert_true(fabs(out[0].mem_bytes - 10 * G) < 1 && fabs(out[1].mem_bytes - 8 * G) < 1);
	assert_true(calls > 0);
	print_message("%s\n", reason);
	assert_non_null(strstr(reason, "memory stage 0 10.000 GiB of 10.000, stage 1 8.000 GiB"));
	/* Worker 1 has 8 GiB: in the given order stage 0 could hold 3 layers
	 * (8 GiB) and stage 1 the other 5 (9.5 of 10); the other order keeps
	 * the even cuts (10 GiB on worker 2, 8 on worker 1) and is taken. */
	w[0].mem_bytes = 8 * G;
	SC_ASSERT_OK(sc_place(w, 2, 2, 8, 1.0, 0, &net, out, reason, sizeof(reason)));
	assert_int_equal(out[0].worker, 1);
	assert_int_equal(out[0].last, 4);
	/* 9.5 GiB each: the even cuts need 10 GiB on stage 0 in either order;
	 * stage 0 takes 3 layers (8 GiB) and stage 1 five (9.5 GiB). */
	w[0].mem_bytes = w[1].mem_bytes = 9.5 * G;
	SC_ASSERT_OK(sc_place(w, 2, 2, 8, 1.0, 0, &net, out, reason, sizeof(reason)));
	assert_int_equal(out[0].last, 3); /* 8 GiB and 9.5 GiB */
	assert_true(out[0].mem_bytes <= 9.5 * G && out[1].mem_bytes <= 9.5 * G);
	/* Nothing fits: 6 GiB each. The error gives the numbers. */
	w[0].mem_bytes = w[1].mem_bytes = 6 * G;
	SC_ASSERT_ERR(sc_place(w, 2, 2, 8, 1.0, 0, &net, out, reason, sizeof(reason)), SC_ERANGE);
	print_message("%s\n", reason);
	assert_non_null(strstr(reason, "does not fit the memory of its 2 workers"));
	assert_non_null(
	    strstr(reason, "stage 0 (layers 0-3) needs 10.000 GiB, worker 1 has 6.000 GiB"));
	assert_non_null(strstr(sc_err_detail(), "stage 1 (layers 4-7) needs 8.000 GiB"));
	/* Memory unknown (0): not limited. */
	w[0].mem_bytes = w[1].mem_bytes = 0;
	SC_ASSERT_OK(sc_place(w, 2, 2, 8, 1.0, 0, &net, out, NULL, 0));
	assert_int_equal(out[0].last, 4);
}

/* The order follows memory: stage 0 (embedding, most micro-batches in
 * flight) needs the most, so the large worker, given last, is put first,
 * where the even cuts fit; in the given order they do not (9.5 GiB on a
 * 9 GiB worker), and the cuts would have to leave compute unbalanced. */
static void test_memory_reorders(void **state)
{
	(void)state;
	const double G = 1073741824.0;
	int calls = 0;
	sc_place_worker w[3] = { { 1, 10, 9 * G, 0 }, { 2, 10, 9 * G, 0 }, { 3, 10, 13 * G, 0 } };
	sc_place_stage out[3];
	char reason[2048];
	sc_place_net net = { .hop_bytes = 0, .messages = 4, .mem = toy_mem, .mem_arg = &calls };
	/* 9 layers, 3 a stage: stage 0 needs 2 + 3 * 2.5 = 9.5 GiB, stage 1
	 * 3 * 2 = 6, stage 2 2 + 3 * 1.5 = 6.5. */
	SC_ASSERT_OK(sc_place(w, 3, 3, 9, 1.0, 0, &net, out, reason, sizeof(reason)));
	print_message("%s\n", reason);
	for (int s = 0; s < 3; s++)
		assert_true(out[s].mem_bytes <= w[out[s].worker].mem_bytes);
	assert_int_equal(out[0].worker, 2);
	assert_int_equal(out[0].last, 3); /* the even cuts: the big worker holds stage 0 */
	assert_int_equal(out[1].last, 6);
	assert_non_null(strstr(reason, "best of every order"));
}

/* A toy cache: worker i (0, 1) holds layers [2 - 2i, 4 - 2i) of 4: 100 MB
 * a layer it lacks, at 100 MB/s. */
static double toy_fetch(void *arg, int worker, int first, int last, double *bytes)
{
	(void)arg;
	*bytes = 0;
	for (int l = first; l < last; l++)
		if (l < 2 - 2 * worker || l >= 4 - 2 * worker)
			*bytes += 100e6;
	return *bytes / 100e6;
}

/* The fetch counts against the steps to run: a short job takes the order
 * whose workers already hold their layers; over many steps a faster chain
 * is worth its fetch. */
static void test_cache_wins_short_jobs(void **state)
{
	(void)state;
	sc_place_worker w[2] = { { 1, 10, 0, 0 }, { 2, 10, 0, 0 } };
	sc_place_stage out[2];
	char reason[2048];
	sc_place_net net = { .hop_bytes = 0, .messages = 4, .fetch = toy_fetch, .steps = 10 };
	/* Given order 1 -> 2: worker 1 would hold [0, 2), which it lacks (2 s
	 * to fetch); worker 2 holds it. Both orders step alike (0.2 s). */
	SC_ASSERT_OK(sc_place(w, 2, 2, 4, 1.0, 0, &net, out, reason, sizeof(reason)));
	print_message("%s\n", reason);
	assert_int_equal(out[0].worker, 1);
	assert_int_equal(out[1].worker, 0);
	assert_true(out[0].fetch_bytes == 0 && out[1].fetch_bytes == 0);
	assert_non_null(strstr(reason, "to fetch first"));
	assert_non_null(strstr(reason, "stage 0 0.0 MB"));
	/* Worker 1 four times faster: the cuts give it 3 layers whichever its
	 * place. Over 10 steps the cached order still wins; over a million the
	 * faster pace of the other order decides, fetch or not. */
	w[0].gflops = 40;
	net.steps = 1e6;
	SC_ASSERT_OK(sc_place(w, 2, 2, 4, 1.0, 0, &net, out, reason, sizeof(reason)));
	print_message("%s\n", reason);
	double most = 0;
	for (int s = 0; s < 2; s++)
		most = out[s].fetch_s > most ? out[s].fetch_s : most;
	assert_true(most > 0); /* the job fetches: its steps are worth more */
}

/* The scheduler's choice of workers: a short job of a registered model
 * takes the slow workers that cache it, a long one the fast that would
 * fetch it; without a model, the fastest. */
static void test_pick_cached_workers(void **state)
{
	(void)state;
	/* 0: fast, empty cache; 1, 2: a quarter as fast, the model cached;
	 * 3: slow, empty. Each share: 1 GFLOP a step, 400 MB to fetch. */
	double gflops[4] = { 100, 25, 25, 10 }, fetch[4] = { 400e6, 0, 0, 400e6 };
	double mbit[4] = { 100, 100, 0, 100 };
	int pick[3];
	sc_place_pick(gflops, fetch, mbit, 4, 2, 1.0, 10, pick);
	assert_int_equal(pick[0], 1); /* 0.4 s vs 32.1 s for worker 0 */
	assert_int_equal(pick[1], 2);
	sc_place_pick(gflops, fetch, mbit, 4, 2, 1.0, 1e5, pick);
	assert_int_equal(pick[0], 0); /* 1032 s vs 4000 s: the fast one fetches */
	assert_int_equal(pick[1], 1);
	sc_place_pick(gflops, NULL, NULL, 4, 3, 1.0, 10, pick);
	assert_int_equal(pick[0], 0);
	assert_int_equal(pick[1], 1); /* equal rates: the lower index */
	assert_int_equal(pick[2], 2);
	/* A faster link makes fetching cheap: the fast worker wins even a
	 * short job. */
	mbit[0] = 1e5;
	sc_place_pick(gflops, fetch, mbit, 4, 1, 1.0, 10, pick);
	assert_int_equal(pick[0], 0);
}

static void test_bad_arguments(void **state)
{
	(void)state;
	sc_place_worker w[2] = { { 1, 10, 0, 0 }, { 2, 10, 0, 0 } };
	sc_place_stage out[3];
	SC_ASSERT_ERR(sc_place(w, 2, 3, 8, 1, 0, NULL, out, NULL, 0), SC_EINVAL);
	SC_ASSERT_ERR(sc_place(w, 2, 2, 1, 1, 0, NULL, out, NULL, 0), SC_EINVAL);
	SC_ASSERT_ERR(sc_place(w, 2, 0, 8, 1, 0, NULL, out, NULL, 0), SC_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_compute_only_unchanged),
		cmocka_unit_test(test_slow_link_avoided_by_reordering),
		cmocka_unit_test(test_link_bound_stage),
		cmocka_unit_test(test_pipeline_terms),
		cmocka_unit_test(test_default_link_when_unmeasured),
		cmocka_unit_test(test_greedy_beyond_exhaustive),
		cmocka_unit_test(test_fastest_chosen),
		cmocka_unit_test(test_memory_bounds_the_cuts),
		cmocka_unit_test(test_memory_reorders),
		cmocka_unit_test(test_cache_wins_short_jobs),
		cmocka_unit_test(test_pick_cached_workers),
		cmocka_unit_test(test_bad_arguments),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
