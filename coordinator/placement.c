/* placement.c — the chain's order and its min-max balanced contiguous layer
 * ranges (dynamic programming over stages and cut points, for each order
 * tried; see placement.h). */
#include <float.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "placement.h"
#include "sc_train.h"

void sc_place_costs(const sc_model_config *mc, int T, int r, double tokens_per_step,
		    double *layer_gflop, double *head_gflop)
{
	double layer, head;
	sc_step_flops(mc, T, r, &layer, &head);
	*layer_gflop = layer * tokens_per_step / 1e9;
	*head_gflop = head * tokens_per_step / 1e9;
}

/* One planning problem and its scratch. */
typedef struct plan {
	const sc_place_worker *w;
	int nw, S, L;
	double lg, hg;
	const sc_place_net *net; /* NULL or hop_bytes 0: compute alone */
	double *best; /* (S + 1, L + 1): min-max time of stages [0, s) over layers [0, l) */
	int *split;   /* (S + 1, L + 1): its last cut */
	double *xfer; /* (S): each stage's transfer seconds in the order balanced */
	/* (SC_PLACE_MEM_KINDS, S, L + 1, L + 1): the bytes stage s needs for
	 * layers [a, l) on a worker of each kind in use; NULL: not planned */
	double *need;
} plan;

static double need_of(const plan *p, int kind, int s, int a, int l)
{
	return p->need ? p->need[(((size_t)kind * p->S + s) * (p->L + 1) + a) * (p->L + 1) + l] : 0;
}

/* Whether stage s fits layers [a, l) on w[worker]. */
static int fits(const plan *p, int s, int a, int l, int worker)
{
	double have = p->w[worker].mem_bytes;
	return !p->need || !(have > 0) || need_of(p, p->w[worker].mem_kind, s, a, l) <= have;
}

enum { LINK_DEFAULT, LINK_MEASURED, LINK_REVERSE };

/* The link from w[a] to w[b]; *how says where it came from. */
static sc_place_link link_of(const plan *p, int a, int b, int *how)
{
	const sc_place_link *ls = p->net ? p->net->links : NULL;
	if (ls && ls[a * p->nw + b].mbit_s > 0) {
		*how = LINK_MEASURED;
		return ls[a * p->nw + b];
	}
	if (ls && ls[b * p->nw + a].mbit_s > 0) {
		*how = LINK_REVERSE;
		return ls[b * p->nw + a];
	}
	*how = LINK_DEFAULT;
	return (sc_place_link){ SC_PLACE_DEFAULT_RTT_MS, SC_PLACE_DEFAULT_MBIT_S };
}

static int counts_links(const plan *p)
{
	return p->net && p->net->hop_bytes > 0;
}

/* Seconds per step the link from w[a] to w[b] is busy with one hop's
 * bytes (the messages stream: their round trips overlap). */
static double hop_s(const plan *p, int a, int b)
{
	int how;
	sc_place_link l = link_of(p, a, b, &how);
	return p->net->hop_bytes * 8 / (l.mbit_s * 1e6);
}

static int micro_batches(const plan *p)
{
	return p->net && p->net->messages > 0 ? p->net->messages : 1;
}

/* Seconds one micro-batch's message takes from w[a] to w[b]: its bytes
 * over the link plus half a round trip. */
static double message_s(const plan *p, int a, int b)
{
	int how;
	sc_place_link l = link_of(p, a, b, &how);
	double rtt = l.rtt_ms > 0 ? l.rtt_ms : 0;
	return hop_s(p, a, b) / micro_batches(p) + rtt / 2000;
}

static double rate_of(const plan *p, int i)
{
	return p->w[i].gflops > 0 ? p->w[i].gflops : 1e-9;
}

static double compute_s(const plan *p, int s, int layers, int worker)
{
	return (layers * p->lg + (s == p->S - 1 ? p->hg : 0)) / rate_of(p, worker);
}

/* The slowest stage of order o (S worker indices) with the best cuts,
 * which are left in p->split, and each stage's transfer in p->xfer. */
static double balance(plan *p, const int *o)
{
	int S = p->S, L = p->L;

	for (int s = 0; s < S; s++) {
		p->xfer[s] = 0;
		if (!counts_links(p))
			continue;
		if (s + 1 < S)
			p->xfer[s] += hop_s(p, o[s], o[s + 1]); /* activations */
		if (s > 0)
			p->xfer[s] += hop_s(p, o[s], o[s - 1]); /* gradients */
	}
	for (int i = 0; i <= S * (L + 1) + L; i++)
		p->best[i] = DBL_MAX;
	p->best[0] = 0;
	for (int s = 1; s <= S; s++) {
		for (int l = s; l <= L - (S - s); l++) {
			for (int a = s - 1; a < l; a++) {
				double prev = p->best[(s - 1) * (L + 1) + a], t, m;
				if (prev == DBL_MAX || !fits(p, s - 1, a, l, o[s - 1]))
					continue;
				if (p->net && p->net->bounds && /* given cuts: only those */
				    (p->net->bounds[s - 1] != a || p->net->bounds[s] != l))
					continue;
				t = compute_s(p, s - 1, l - a, o[s - 1]);
				/* A stage's sends overlap its compute. */
				if (p->xfer[s - 1] > t)
					t = p->xfer[s - 1];
				m = prev > t ? prev : t;
				if (m < p->best[s * (L + 1) + l]) {
					p->best[s * (L + 1) + l] = m;
					p->split[s * (L + 1) + l] = a;
				}
			}
		}
	}
	return p->best[S * (L + 1) + L];
}

/* The cuts left in p->split by balance, stage s's layer count. */
static int layers_of(const plan *p, int s)
{
	int l = p->L;
	for (int k = p->S; k > s + 1; k--)
		l = p->split[k * (p->L + 1) + l];
	return l - p->split[(s + 1) * (p->L + 1) + l];
}

/* One micro-batch's way through order o with balance's cuts: every
 * stage's compute (its forward on the way down, its backward on the way
 * back) and every hop's message both ways. */
static double path_s(const plan *p, const int *o)
{
	double t = 0;
	int M = micro_batches(p);
	for (int s = 0; s < p->S; s++) {
		t += compute_s(p, s, layers_of(p, s), o[s]) / M;
		if (s + 1 < p->S)
			t += message_s(p, o[s], o[s + 1]) + message_s(p, o[s + 1], o[s]);
	}
	return t;
}

/* The step time stage s of order o would set as the chain's slowest: its
 * pace (compute and sends overlap, so the larger of the two) for M - 1
 * micro-batches, plus the path of one through the whole chain — the
 * pipeline's fill and drain. */
static double stage_step_s(const plan *p, const int *o, int s, double path)
{
	int M = micro_batches(p);
	double c = compute_s(p, s, layers_of(p, s), o[s]);
	double pace = c > p->xfer[s] ? c : p->xfer[s];
	return pace * (M - 1) / M + path;
}

/* Balances order o and predicts its step: with links, the slowest stage's
 * stage_step_s; compute alone, the slowest stage's compute (as before links
 * counted). */
static double evaluate(plan *p, const int *o)
{
	double slowest = balance(p, o), path, step = 0;
	if (!counts_links(p) || slowest == DBL_MAX) /* DBL_MAX: no cuts fit */
		return slowest;
	path = path_s(p, o);
	for (int s = 0; s < p->S; s++) {
		double t = stage_step_s(p, o, s, path);
		if (t > step)
			step = t;
	}
	return step;
}

/* The seconds stage s's fetch of order o with balance's cuts takes
 * (net->fetch), *bytes what it moves; 0 without a fetch cost. */
static double fetch_of(const plan *p, const int *o, int s, double *bytes)
{
	int l = p->L;
	*bytes = 0;
	if (!p->net || !p->net->fetch)
		return 0;
	for (int k = p->S; k > s + 1; k--)
		l = p->split[k * (p->L + 1) + l];
	return p->net->fetch(p->net->fetch_arg, o[s], p->split[(s + 1) * (p->L + 1) + l], l, bytes);
}

/* What orders are compared by: the predicted step, and with a fetch cost
 * the job's remaining steps at that step plus the slowest stage's fetch. */
static double order_cost(plan *p, const int *o)
{
	double step = evaluate(p, o), most = 0, b;
	if (!p->net || !p->net->fetch || step == DBL_MAX)
		return step;
	for (int s = 0; s < p->S; s++) {
		double f = fetch_of(p, o, s, &b);
		most = f > most ? f : most;
	}
	return p->net->steps * step + most;
}

/* The next permutation of perm[0..n) in lexicographic order; 0 after the last. */
static int next_perm(int *perm, int n)
{
	int i = n - 2, j = n - 1, t;
	while (i >= 0 && perm[i] >= perm[i + 1])
		i--;
	if (i < 0)
		return 0;
	while (perm[j] <= perm[i])
		j--;
	t = perm[i], perm[i] = perm[j], perm[j] = t;
	for (int a = i + 1, b = n - 1; a < b; a++, b--)
		t = perm[a], perm[a] = perm[b], perm[b] = t;
	return 1;
}

/* Every order of cand: the best into *best_o; returns its time and counts
 * the orders tried in *tried. */
static double search_all(plan *p, const int *cand, int *best_o, int *perm, int *o, long *tried)
{
	double best = DBL_MAX;
	for (int i = 0; i < p->S; i++)
		perm[i] = i;
	do {
		for (int i = 0; i < p->S; i++)
			o[i] = cand[perm[i]];
		double v = order_cost(p, o);
		++*tried;
		if (v < best) {
			best = v;
			memcpy(best_o, o, (size_t)p->S * sizeof(*o));
		}
	} while (next_perm(perm, p->S));
	return best;
}

/* Greedy: from cand's order, takes the best swap of two stages while one
 * shortens the slowest stage, at most S times. */
static double search_swaps(plan *p, const int *cand, int *best_o, int *o, long *tried)
{
	double cur;
	memcpy(best_o, cand, (size_t)p->S * sizeof(*o));
	cur = order_cost(p, best_o);
	++*tried;
	for (int round = 0; round < p->S; round++) {
		double v, found = cur;
		int bi = -1, bj = -1, t;
		for (int i = 0; i < p->S; i++)
			for (int j = i + 1; j < p->S; j++) {
				memcpy(o, best_o, (size_t)p->S * sizeof(*o));
				t = o[i], o[i] = o[j], o[j] = t;
				v = order_cost(p, o);
				++*tried;
				if (v < found)
					found = v, bi = i, bj = j;
			}
		if (bi < 0)
			break;
		t = best_o[bi], best_o[bi] = best_o[bj], best_o[bj] = t;
		cur = found;
	}
	return cur;
}

static int by_rate_desc(const void *a, const void *b)
{
	const sc_place_worker *x = *(const sc_place_worker *const *)a;
	const sc_place_worker *y = *(const sc_place_worker *const *)b;
	if (x->gflops != y->gflops)
		return x->gflops < y->gflops ? 1 : -1;
	return x->id < y->id ? -1 : x->id > y->id;
}

static int by_index(const void *a, const void *b)
{
	const sc_place_worker *x = *(const sc_place_worker *const *)a;
	const sc_place_worker *y = *(const sc_place_worker *const *)b;
	return x < y ? -1 : x > y;
}

/* Appends to a line, truncating at its end. */
static void add(char *buf, size_t size, size_t *used, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void add(char *buf, size_t size, size_t *used, const char *fmt, ...)
{
	va_list ap;
	int n;
	if (!buf || *used + 1 >= size)
		return;
	va_start(ap, fmt);
	n = vsnprintf(buf + *used, size - *used, fmt, ap);
	va_end(ap);
	if (n > 0)
		*used = *used + (size_t)n < size ? *used + (size_t)n : size - 1;
}

/* The reason line: what was balanced, the order, the transfer and each
 * link direction the chain uses. */
static void explain(const plan *p, const int *o, const char *how, int kept, long tried,
		    double slowest, const sc_place_stage *out, char *buf, size_t size)
{
	static const char *const kinds[] = { "default, not measured", "measured",
					     "measured the other way" };
	size_t used = 0;
	double most = 0;
	int measured = 0, dirs = 0;

	if (!buf || !size)
		return;
	buf[0] = '\0';
	add(buf, size, &used,
	    "%s %d layers (%.2f GFLOP each, head %.2f GFLOP on the last stage) "
	    "over the %d fastest of %d workers, chain",
	    p->net && p->net->bounds ? "the given split (--split) of" : "min-max balance of", p->L,
	    p->lg, p->hg, p->S, p->nw);
	for (int s = 0; s < p->S; s++)
		add(buf, size, &used, "%s%llu", s ? "->" : " ", (unsigned long long)p->w[o[s]].id);
	add(buf, size, &used, " (%s", how);
	if (kept)
		add(buf, size, &used, "; none of the others is %g%% faster", SC_PLACE_MARGIN * 100);
	add(buf, size, &used, "; %ld order%s tried): %s %.3f s/step", tried, tried == 1 ? "" : "s",
	    counts_links(p) ? "predicted step (pipelined over the links)" : "slowest stage",
	    slowest);
	if (p->need) {
		add(buf, size, &used, "; memory");
		for (int s = 0; s < p->S && s < SC_PLACE_EXPLAIN_MAX; s++) {
			double have = p->w[o[s]].mem_bytes;
			add(buf, size, &used, "%s stage %d %.3f GiB", s ? "," : "", s,
			    out[s].mem_bytes / 1073741824.0);
			if (have > 0)
				add(buf, size, &used, " of %.3f", have / 1073741824.0);
		}
	}
	if (p->net && p->net->fetch) {
		add(buf, size, &used, "; to fetch first (%.0f steps to run)", p->net->steps);
		for (int s = 0; s < p->S && s < SC_PLACE_EXPLAIN_MAX; s++)
			add(buf, size, &used, "%s stage %d %.1f MB %.2f s", s ? "," : "", s,
			    out[s].fetch_bytes / 1e6, out[s].fetch_s);
	}
	if (!counts_links(p) || p->S == 1) {
		add(buf, size, &used, "; no transfer counted");
		return;
	}
	for (int s = 0; s < p->S; s++)
		if (out[s].transfer_s > most)
			most = out[s].transfer_s;
	for (int s = 0; s + 1 < p->S; s++)
		for (int d = 0; d < 2; d++) {
			int a = o[s + d], b = o[s + 1 - d], k;
			link_of(p, a, b, &k);
			measured += k != LINK_DEFAULT;
			dirs++;
		}
	add(buf, size, &used,
	    "; %.3f MB per hop per step each way in %d messages, a stage's sends busy its link "
	    "up to %.4f s/step; "
	    "%d of %d link directions measured%s",
	    p->net->hop_bytes / 1e6, p->net->messages, most, measured, dirs,
	    measured < dirs ? " (default 1000 Mbit/s, 0.2 ms for the others)" : "");
	for (int s = 0; s + 1 < p->S; s++)
		for (int d = 0; d < 2; d++) {
			int a = o[s + d], b = o[s + 1 - d], k;
			sc_place_link l = link_of(p, a, b, &k);
			add(buf, size, &used, "%s%llu->%llu %.0f Mbit/s %.2f ms %s",
			    s || d ? ", " : ": ", (unsigned long long)p->w[a].id,
			    (unsigned long long)p->w[b].id, l.mbit_s, l.rtt_ms, kinds[k]);
		}
}

/* No order and cuts fit: SC_ERANGE, and the reason says, for the cuts
 * compute alone would take in the given order o, what each stage needs
 * against what its worker has. */
static sc_err no_fit(plan *p, const int *o, char *buf, size_t size)
{
	double *need = p->need;
	int first[SC_PLACE_EXPLAIN_MAX], last[SC_PLACE_EXPLAIN_MAX];
	int S = p->S < SC_PLACE_EXPLAIN_MAX ? p->S : SC_PLACE_EXPLAIN_MAX;
	size_t used;
	char line[1024];

	p->need = NULL;
	balance(p, o);
	p->need = need;
	for (int s = p->S, l = p->L; s >= 1; s--) {
		int a = p->split[s * (p->L + 1) + l];
		if (s - 1 < S)
			first[s - 1] = a, last[s - 1] = l;
		l = a;
	}
	used = (size_t)snprintf(line, sizeof(line),
				"the job does not fit the memory of its %d workers in any order or "
				"cuts; at the cuts compute alone would take:",
				p->S);
	for (int s = 0; s < S && used < sizeof(line); s++)
		used += (size_t)snprintf(
		    line + used, sizeof(line) - used,
		    "%s stage %d (layers %d-%d) needs %.3f GiB, worker %llu has %.3f GiB",
		    s ? ";" : "", s, first[s], last[s] - 1,
		    need_of(p, p->w[o[s]].mem_kind, s, first[s], last[s]) / 1073741824.0,
		    (unsigned long long)p->w[o[s]].id, p->w[o[s]].mem_bytes / 1073741824.0);
	if (S < p->S && used < sizeof(line))
		snprintf(line + used, sizeof(line) - used, "; ...");
	if (buf && size)
		snprintf(buf, size, "%s", line);
	return sc_errf(SC_ERANGE, "%s", line);
}

sc_err sc_place(const sc_place_worker *w, int nw, int stages, int n_layer, double layer_gflop,
		double head_gflop, const sc_place_net *net, sc_place_stage *out, char *reason,
		size_t reason_size)
{
	const sc_place_worker **pick = NULL;
	int *ints = NULL, *cand, *order, *best_o, *perm, *o;
	int L = n_layer, S = stages;
	plan p = { w, nw, S, L, layer_gflop, head_gflop, net, NULL, NULL, NULL, NULL };
	const char *how =
	    net && net->keep_order ? "the order given (--workers)" : "the given order";
	long tried = 1;
	int kept = 0;
	double given, best, slowest, path;
	sc_err rc = SC_OK;

	if (S < 1 || S > nw || S > L)
		return sc_errf(SC_EINVAL, "cannot place %d stages on %d workers for %d layers", S,
			       nw, L);
	for (int s = 0; net && net->bounds && s < S; s++)
		if (net->bounds[0] != 0 || net->bounds[s + 1] <= net->bounds[s] ||
		    net->bounds[S] != L)
			return sc_errf(SC_EINVAL,
				       "the given layer split does not cut %d layers into %d "
				       "non-empty ranges from layer 0",
				       L, S);
	pick = malloc((size_t)nw * sizeof(*pick));
	ints = malloc((size_t)S * 5 * sizeof(*ints));
	p.best = malloc((size_t)(S + 1) * (L + 1) * sizeof(double));
	p.split = malloc((size_t)(S + 1) * (L + 1) * sizeof(int));
	p.xfer = malloc((size_t)S * sizeof(double));
	if (net && net->mem)
		p.need =
		    malloc((size_t)SC_PLACE_MEM_KINDS * S * (L + 1) * (L + 1) * sizeof(double));
	if (!pick || !ints || !p.best || !p.split || !p.xfer || (net && net->mem && !p.need)) {
		rc = sc_errf(SC_ENOMEM, "out of memory");
		goto out;
	}
	for (int i = 0; i < nw; i++)
		if (w[i].mem_kind < 0 || w[i].mem_kind >= SC_PLACE_MEM_KINDS) {
			rc = sc_errf(SC_EINVAL, "worker %llu: memory kind %d",
				     (unsigned long long)w[i].id, w[i].mem_kind);
			goto out;
		}
	for (int k = 0; p.need && k < SC_PLACE_MEM_KINDS; k++) { /* each kind in use, once */
		int used = 0;
		for (int i = 0; i < nw; i++)
			used |= w[i].mem_kind == k;
		for (int s = 0; used && s < S; s++)
			for (int a = 0; a < L; a++)
				for (int l = a + 1; l <= L; l++)
					p.need[(((size_t)k * S + s) * (L + 1) + a) * (L + 1) + l] =
					    net->mem(net->mem_arg, k, s, S, a, l);
	}
	cand = ints, order = ints + S, best_o = ints + 2 * S, perm = ints + 3 * S, o = ints + 4 * S;
	for (int i = 0; i < nw; i++)
		pick[i] = &w[i];
	qsort(pick, (size_t)nw, sizeof(*pick), by_rate_desc);
	qsort(pick, (size_t)S, sizeof(*pick), by_index); /* the S fastest, in the given order */
	for (int s = 0; s < S; s++)
		cand[s] = (int)(pick[s] - w);

	memcpy(order, cand, (size_t)S * sizeof(*order));
	given = order_cost(&p, cand);
	/* Orders are searched for the links, and for memory: another order
	 * may put a stage with more to hold on a larger worker, and so keep
	 * the cuts compute would choose. Not when the order is given. */
	if ((counts_links(&p) || p.need || (net && net->fetch)) && S > 1 &&
	    !(net && net->keep_order)) {
		tried = 0;
		if (S <= SC_PLACE_EXHAUSTIVE_MAX) {
			best = search_all(&p, cand, best_o, perm, o, &tried);
			how = "best of every order";
		} else {
			best = search_swaps(&p, cand, best_o, o, &tried);
			how = "greedy swaps from the given order";
		}
		if (best < given * (1 - SC_PLACE_MARGIN))
			memcpy(order, best_o, (size_t)S * sizeof(*order));
		else
			how = "the given order", kept = 1;
	}
	slowest = evaluate(&p, order); /* the chosen order's cuts, in p.split */
	if (slowest == DBL_MAX) {
		rc = no_fit(&p, cand, reason, reason_size);
		goto out;
	}
	path = counts_links(&p) ? path_s(&p, order) : 0;
	for (int s = S, l = L; s >= 1; s--) {
		int a = p.split[s * (L + 1) + l];
		out[s - 1].worker = order[s - 1];
		out[s - 1].first = a;
		out[s - 1].last = l;
		out[s - 1].compute_s = compute_s(&p, s - 1, l - a, order[s - 1]);
		out[s - 1].transfer_s = p.xfer[s - 1];
		out[s - 1].mem_bytes = need_of(&p, w[order[s - 1]].mem_kind, s - 1, a, l);
		out[s - 1].predicted_s =
		    counts_links(&p) ? stage_step_s(&p, order, s - 1, path) : out[s - 1].compute_s;
		out[s - 1].fetch_s = fetch_of(&p, order, s - 1, &out[s - 1].fetch_bytes);
		l = a;
	}
	explain(&p, order, how, kept, tried, slowest, out, reason, reason_size);
out:
	free(pick);
	free(ints);
	free(p.best);
	free(p.split);
	free(p.xfer);
	free(p.need);
	return rc;
}

void sc_place_pick(const double *gflops, const double *fetch_bytes, const double *mbit_s, int n,
		   int stages, double share_gflop, double steps, int *pick)
{
	int chosen = 0;
	while (chosen < stages && chosen < n) {
		int best = -1;
		double best_cost = 0;
		for (int i = 0; i < n; i++) {
			int taken = 0;
			for (int k = 0; k < chosen; k++)
				taken |= pick[k] == i;
			if (taken)
				continue;
			double rate = mbit_s && mbit_s[i] > 0 ? mbit_s[i] : SC_PLACE_DEFAULT_MBIT_S;
			double cost = steps * share_gflop / (gflops[i] > 0 ? gflops[i] : 1e-9) +
				      (fetch_bytes ? fetch_bytes[i] * 8 / (rate * 1e6) : 0);
			if (best < 0 || cost < best_cost ||
			    (cost == best_cost && gflops[i] > gflops[best])) {
				best = i;
				best_cost = cost;
			}
		}
		pick[chosen++] = best;
	}
}
