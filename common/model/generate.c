/* generate.c — generation in one process: a chain of generation segments,
 * prefill in chunks, one-token decode steps, greedy or seeded sampling. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sc_generate.h"
#include "sc_rng.h"
#include "sc_segment.h"

#define MAX_STAGES 256

struct sc_generator {
	sc_model_config mc;
	int nstages, max_positions, chunk;
	sc_segment *st[MAX_STAGES];
	float *act; /* (chunk, C) the hand-over between stages */
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int by_logit_desc(const void *a, const void *b, void *arg)
{
	const float *v = arg;
	float x = v[*(const int *)a], y = v[*(const int *)b];
	if (x != y)
		return x > y ? -1 : 1;
	return *(const int *)a - *(const int *)b; /* ties: the lower id first */
}

int sc_sample(const float *logits, int V, const sc_sampling *s, sc_rng *rng, float *scratch,
	      int *order)
{
	int best = 0;
	for (int i = 1; i < V; i++)
		if (logits[i] > logits[best])
			best = i;
	if (!(s->temperature > 0))
		return best;
	/* candidates by logit, largest first */
	float *p = scratch;
	for (int i = 0; i < V; i++)
		order[i] = i;
	qsort_r(order, (size_t)V, sizeof(int), by_logit_desc, (void *)logits);
	int n = s->top_k > 0 && s->top_k < V ? s->top_k : V;
	while (n < V && logits[order[n]] == logits[order[n - 1]])
		n++; /* keep the ties at the k-th value, as HF's >= threshold does */
	double mx = logits[order[0]] / s->temperature, sum = 0;
	for (int i = 0; i < n; i++) {
		p[i] = (float)exp(logits[order[i]] / s->temperature - mx);
		sum += p[i];
	}
	if (s->top_p > 0 && s->top_p < 1) { /* the smallest head holding top_p */
		double cum = 0;
		int keep = n;
		for (int i = 0; i < n; i++) {
			cum += p[i] / sum;
			if (cum >= s->top_p) {
				keep = i + 1;
				break;
			}
		}
		n = keep;
		sum = 0;
		for (int i = 0; i < n; i++)
			sum += p[i];
	}
	double u = sc_rng_uniform(rng) * sum, cum = 0;
	for (int i = 0; i < n; i++) {
		cum += p[i];
		if (u < cum)
			return order[i];
	}
	return order[n - 1];
}

sc_err sc_generator_new(sc_generator **out, sc_backend *be, const sc_model_config *mc,
			sc_weights *w, const sc_adapter *ad, int nstages, int max_positions,
			int chunk)
{
	sc_generator *g;
	sc_adapter *fresh = NULL;
	sc_err rc = SC_OK;

	*out = NULL;
	SC_TRY(sc_config_validate(mc));
	if (nstages < 1 || nstages > mc->n_layer || nstages > MAX_STAGES)
		return sc_errf(SC_EINVAL, "%d stages for a model of %d layers", nstages,
			       mc->n_layer);
	if (max_positions < 2 || max_positions > mc->n_positions)
		return sc_errf(SC_EINVAL, "%d positions: the model takes 2..%d", max_positions,
			       mc->n_positions);
	if (chunk < 1 || chunk > max_positions)
		chunk = max_positions < 256 ? max_positions : 256;
	if (!(g = calloc(1, sizeof(*g))))
		return sc_errf(SC_ENOMEM, "out of memory");
	g->mc = *mc;
	g->nstages = nstages;
	g->max_positions = max_positions;
	g->chunk = chunk;
	g->act = malloc((size_t)chunk * mc->n_embd * sizeof(float));
	if (!g->act) {
		rc = sc_errf(SC_ENOMEM, "out of memory");
		goto fail;
	}
	sc_lora_config lc = { .rank = 1, .alpha = 1, .targets = 1, .seed = 1 };
	if (ad) {
		lc = ad->lora;
	} else { /* no adapter: a zero one (B = 0) adds nothing */
		if ((rc = sc_adapter_new(&fresh, &lc, mc)))
			goto fail;
		ad = fresh;
	}
	for (int i = 0; i < nstages; i++) {
		sc_segment_spec sp = { .model = *mc,
				       .lora = lc,
				       .first = (int)((long)mc->n_layer * i / nstages),
				       .last = (int)((long)mc->n_layer * (i + 1) / nstages),
				       .B = 1,
				       .T = chunk,
				       .slots = 1,
				       .kv_positions = max_positions };
		if ((rc = sc_segment_new(&g->st[i], be, &sp)) ||
		    (rc = sc_segment_load_weights(g->st[i], w)) ||
		    (rc = sc_segment_set_lora(g->st[i], ad)))
			goto fail;
	}
	sc_adapter_free(fresh);
	*out = g;
	return SC_OK;
fail:
	sc_adapter_free(fresh);
	sc_generator_free(g);
	return rc;
}

void sc_generator_free(sc_generator *g)
{
	if (!g)
		return;
	for (int i = 0; i < g->nstages; i++)
		sc_segment_free(g->st[i]);
	free(g->act);
	free(g);
}

/* sc_gen_chain over the in-process segments: the last stage leaves the
 * logits of the last position. */
static sc_err run_chain(void *arg, const int32_t *ids, int pos0, int n, float *logits)
{
	sc_generator *g = arg;
	for (int i = 0; i < g->nstages; i++) {
		const void *in = i ? (const void *)g->act : (const void *)ids;
		float *o = i == g->nstages - 1 ? logits : g->act;
		SC_TRY(sc_segment_infer(g->st[i], pos0, n, in, o));
	}
	return SC_OK;
}

sc_err sc_gen_loop(sc_gen_chain chain, void *chain_arg, int V, int P, int chunk,
		   const int32_t *prompt, int n_prompt, int max_new, const sc_sampling *s,
		   const int32_t *stop, int n_stop, sc_gen_emit emit, void *arg, int32_t *out,
		   int *n_out, sc_gen_stats *st)
{
	sc_rng rng;
	uint64_t key = s->seed;
	float *logits = NULL, *scratch = NULL;
	int *order = NULL;
	double t0;
	int32_t id;
	sc_err rc = SC_OK;

	*n_out = 0;
	memset(st, 0, sizeof(*st));
	if (n_prompt < 1 || max_new < 0 || (long)n_prompt + max_new > P || chunk < 1)
		return sc_errf(SC_EINVAL,
			       "a prompt of %d ids and %d new ones do not fit %d positions",
			       n_prompt, max_new, P);
	if (s->temperature < 0 || s->top_k < 0 || !(s->top_p > 0 && s->top_p <= 1))
		return sc_errf(SC_EINVAL, "temperature %g >= 0, top-k %d >= 0, top-p %g in (0, 1]",
			       (double)s->temperature, s->top_k, (double)s->top_p);
	for (int i = 0; i < n_prompt; i++)
		if (prompt[i] < 0 || prompt[i] >= V)
			return sc_errf(
			    SC_ERANGE,
			    "prompt id %d at position %d is outside the vocabulary [0, %d)",
			    prompt[i], i, V);
	logits = malloc((size_t)V * sizeof(float));
	scratch = malloc((size_t)V * sizeof(float));
	order = malloc((size_t)V * sizeof(int));
	if (!logits || !scratch || !order) {
		rc = sc_errf(SC_ENOMEM, "out of memory");
		goto done;
	}
	sc_rng_seed(&rng, &key, 1);
	st->n_prompt = n_prompt;
	t0 = now_s();
	for (int p = 0; p < n_prompt && !rc; p += chunk)
		rc = chain(chain_arg, prompt + p, p, n_prompt - p < chunk ? n_prompt - p : chunk,
			   logits);
	st->prefill_s = now_s() - t0;
	t0 = now_s();
	for (int k = 0; k < max_new && !rc; k++) {
		int halt = 0;
		if (k && (rc = chain(chain_arg, &id, n_prompt + k - 1, 1, logits)))
			break;
		id = sc_sample(logits, V, s, &rng, scratch, order);
		out[(*n_out)++] = id;
		for (int i = 0; i < n_stop; i++)
			halt |= id == stop[i];
		if (emit && emit(arg, id))
			halt = 1;
		if (halt)
			break;
	}
	st->decode_s = now_s() - t0;
	st->n_new = *n_out;
done:
	free(logits);
	free(scratch);
	free(order);
	return rc;
}

sc_err sc_generator_run(sc_generator *g, const int32_t *prompt, int n_prompt, int max_new,
			const sc_sampling *s, const int32_t *stop, int n_stop, sc_gen_emit emit,
			void *arg, int32_t *out, int *n_out, sc_gen_stats *st)
{
	return sc_gen_loop(run_chain, g, g->mc.vocab_size, g->max_positions, g->chunk, prompt,
			   n_prompt, max_new, s, stop, n_stop, emit, arg, out, n_out, st);
}

sc_err sc_stop_text_init(sc_stop_text *m, const char *const *stop, int n_stop)
{
	memset(m, 0, sizeof(*m));
	if (n_stop < 0 || n_stop > SC_MAX_STOP_TEXT)
		return sc_errf(SC_EINVAL, "%d stop strings: at most %d", n_stop, SC_MAX_STOP_TEXT);
	for (int i = 0; i < n_stop; i++) {
		if (!stop[i] || !stop[i][0])
			return sc_errf(SC_EINVAL, "stop string %d is empty", i + 1);
		m->stop[i] = stop[i];
		m->stop_len[i] = strlen(stop[i]);
	}
	m->n_stop = n_stop;
	return SC_OK;
}

/* The end of the first occurrence of a stop string in m->text that ends
 * past `from` (the text before it held none); 0 when there is none. */
static size_t stop_end(const sc_stop_text *m, size_t from)
{
	size_t best = 0;
	for (int i = 0; i < m->n_stop; i++) {
		size_t L = m->stop_len[i], s = from >= L - 1 ? from - (L - 1) : 0;
		const char *p = memmem(m->text + s, m->len - s, m->stop[i], L);
		size_t end = p ? (size_t)(p - m->text) + L : 0;
		if (end && (!best || end < best))
			best = end;
	}
	return best;
}

/* How much of m->text can be printed: not the longest tail that is a
 * proper prefix of a stop string, nor a UTF-8 sequence still incomplete. */
static size_t safe_end(const sc_stop_text *m)
{
	size_t hold = 0, safe;
	for (int i = 0; i < m->n_stop; i++)
		for (size_t k = m->stop_len[i] - 1; k > hold; k--)
			if (k <= m->len && !memcmp(m->text + m->len - k, m->stop[i], k)) {
				hold = k;
				break;
			}
	safe = m->len - hold;
	for (size_t i = safe; i > 0 && safe - i < 4; i--) {
		unsigned char c = (unsigned char)m->text[i - 1];
		if ((c & 0xC0) == 0x80)
			continue; /* a continuation byte: look further back */
		size_t need = c >= 0xF8 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
		if (i - 1 + need > safe)
			safe = i - 1; /* a lead byte whose sequence is not complete yet */
		break;
	}
	return safe > m->released ? safe : m->released;
}

sc_err sc_stop_text_push(sc_stop_text *m, const char *bytes, size_t n, const char **out,
			 size_t *n_out, int *stop)
{
	size_t from = m->len, end;
	*out = m->text ? m->text + m->released : "";
	*n_out = 0;
	*stop = m->matched;
	if (m->matched)
		return SC_OK;
	if (m->len + n + 1 > m->cap) {
		size_t cap = m->cap ? m->cap : 256;
		while (cap < m->len + n + 1)
			cap *= 2;
		char *t = realloc(m->text, cap);
		if (!t)
			return sc_errf(SC_ENOMEM, "out of memory");
		m->text = t;
		m->cap = cap;
	}
	memcpy(m->text + m->len, bytes, n);
	m->len += n;
	m->text[m->len] = '\0';
	if ((end = stop_end(m, from))) {
		m->len = end;
		m->text[end] = '\0';
		m->matched = 1;
		*stop = 1;
	}
	end = m->matched ? m->len : safe_end(m);
	*out = m->text + m->released;
	*n_out = end - m->released;
	m->released = end;
	return SC_OK;
}

void sc_stop_text_finish(sc_stop_text *m, const char **out, size_t *n_out)
{
	*out = m->text ? m->text + m->released : "";
	*n_out = m->len - m->released;
	m->released = m->len;
}

void sc_stop_text_free(sc_stop_text *m)
{
	if (!m)
		return;
	free(m->text);
	m->text = NULL;
	m->len = m->cap = m->released = 0;
}
