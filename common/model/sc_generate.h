/* sc_generate.h — text generation in this process: a chain of generation
 * segments (sc_segment_infer, each holding its layers' key/value caches),
 * the prompt run in chunks (prefill), then one token at a time (decode),
 * each next token chosen from the last position's logits by greedy argmax
 * or seeded sampling (temperature, top-k, top-p, applied in that order, as
 * Hugging Face's generate does).
 */
#ifndef SC_GENERATE_H
#define SC_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "sc_adapter.h"
#include "sc_backend.h"
#include "sc_config.h"
#include "sc_weights.h"

typedef struct sc_sampling {
	float temperature; /* 0: greedy (the first of the largest logits) */
	int top_k;         /* 0: off */
	float top_p;       /* 1: off */
	uint64_t seed;     /* the sampling stream: same seed, same ids */
} sc_sampling;

/* The next id from logits (V); rng_state carries the sampling stream from
 * call to call (sc_rng, seeded by the caller). scratch holds 2 V floats and
 * V ints. Greedy when temperature is 0. */
struct sc_rng;
int sc_sample(const float *logits, int V, const sc_sampling *s, struct sc_rng *rng, float *scratch,
	      int *order);

typedef struct sc_generator sc_generator;

/* *out = new generator of model mc on be (borrowed: outlives it): nstages
 * in-process segments (layers split evenly), caches for max_positions
 * positions (<= n_positions), prompts run chunk positions at a time.
 * Weights from w (borrowed for the call); adapters from ad (borrowed for
 * the call; NULL: the base model alone). Free with sc_generator_free. */
sc_err sc_generator_new(sc_generator **out, sc_backend *be, const sc_model_config *mc,
			sc_weights *w, const sc_adapter *ad, int nstages, int max_positions,
			int chunk);
void sc_generator_free(sc_generator *g);

/* Called with each new id as it is chosen; a nonzero return stops the run
 * after this id. */
typedef int (*sc_gen_emit)(void *arg, int32_t id);

typedef struct sc_gen_stats {
	int n_prompt, n_new;
	double prefill_s, decode_s;
} sc_gen_stats;

/* A chain that runs positions pos0 .. pos0+n-1 (ids, n <= its chunk) and
 * leaves the logits (V) of the last one in logits: in-process segments, or
 * workers over the network (splitchain generate --job). */
typedef sc_err (*sc_gen_chain)(void *arg, const int32_t *ids, int pos0, int n, float *logits);

/* The generation loop over any chain: the prompt in chunks of `chunk`,
 * then one position per new id, as sc_generator_run describes; V the
 * vocabulary, P the chain's positions. */
sc_err sc_gen_loop(sc_gen_chain chain, void *chain_arg, int V, int P, int chunk,
		   const int32_t *prompt, int n_prompt, int max_new, const sc_sampling *s,
		   const int32_t *stop, int n_stop, sc_gen_emit emit, void *arg, int32_t *out,
		   int *n_out, sc_gen_stats *st);

/* Generates up to max_new ids after prompt (n_prompt >= 1 ids, each < V),
 * stopping early at any id of stop (n_stop of them, included in the
 * output) or when emit says so. out (max_new) receives the new ids,
 * *n_out their number. prompt + new ids must fit max_positions (SC_EINVAL
 * otherwise, before anything runs). */
sc_err sc_generator_run(sc_generator *g, const int32_t *prompt, int n_prompt, int max_new,
			const sc_sampling *s, const int32_t *stop, int n_stop, sc_gen_emit emit,
			void *arg, int32_t *out, int *n_out, sc_gen_stats *st);

/* Stop strings over the text of a run (splitchain generate --stop): the
 * text of each new id is pushed as it is chosen, and what can be printed
 * is released: never a tail that could still begin a stop string, nor one
 * that ends inside a UTF-8 sequence (held until the next push resolves it).
 * Once the text contains a stop string, it ends right after the first
 * occurrence (the one that completes first), the stop string kept, as
 * Hugging Face's stop_strings keeps the matched tokens. Strings are taken
 * literally, bytes against bytes. */
#define SC_MAX_STOP_TEXT 8

typedef struct sc_stop_text {
	const char *stop[SC_MAX_STOP_TEXT]; /* borrowed: outlive the matcher */
	size_t stop_len[SC_MAX_STOP_TEXT];
	int n_stop;
	char *text; /* the text so far (len bytes, NUL-terminated), owned */
	size_t len, cap;
	size_t released; /* text[0 .. released) was handed out */
	int matched;     /* a stop string occurred: text ends right after it */
} sc_stop_text;

/* Sets m up for the n_stop (0..SC_MAX_STOP_TEXT) non-empty strings of stop
 * (borrowed: they outlive m). With none, m only assembles the text and
 * holds back incomplete UTF-8. SC_EINVAL on too many or an empty one. */
sc_err sc_stop_text_init(sc_stop_text *m, const char *const *stop, int n_stop);
/* Appends one id's text (n bytes). *out, *n_out: the bytes ready to print
 * (a pointer into m->text, valid until the next call on m); *stop: 1 once
 * a stop string occurred (the ready bytes then end right after it; later
 * pushes add nothing). SC_ENOMEM leaves m as it was. */
sc_err sc_stop_text_push(sc_stop_text *m, const char *bytes, size_t n, const char **out,
			 size_t *n_out, int *stop);
/* At the end of a run: the bytes still held back, as they are. */
void sc_stop_text_finish(sc_stop_text *m, const char **out, size_t *n_out);
/* Frees m's text (not m); NULL is fine. */
void sc_stop_text_free(sc_stop_text *m);

#endif
