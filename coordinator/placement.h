/* placement.h — which worker holds which layers, in which order along the
 * chain: contiguous layer ranges balanced by each worker's measured compute
 * rate (the LM head's cost counted on the last stage) and by what each
 * stage sends its neighbours over the measured links.
 *
 * Cost model, per step of M micro-batches (M = `messages`): stage k
 * computes C_k seconds (its layers' GFLOP, plus the head's on the last
 * stage, over its rate) and keeps its link busy X_k seconds (its
 * activations to the next stage and its gradients to the previous one:
 * hop_bytes each way over each link's bandwidth; a worker's sends share
 * its uplink, so they add). Sends are queued while the next micro-batch
 * computes, so a stage's pace is max(C_k, X_k) / M per micro-batch, and
 * the chain is a pipeline: step = (M - 1) * the slowest pace + the path of
 * one micro-batch through the chain (every C_k / M, and every hop's message
 * both ways: its bytes / M over the link plus half a round trip) — the
 * fill and the drain. The planner balances the paces: for each order of
 * the chosen workers a dynamic programme over the cut points minimises
 * the slowest max(C_k, X_k); orders are compared by the predicted step.
 * Every order is tried for up to SC_PLACE_EXHAUSTIVE_MAX stages, beyond
 * that pairwise swaps of the given order are taken greedily while one
 * helps. Another order than the given one is taken only when it predicts
 * a step SC_PLACE_MARGIN
 * lower, so that measurement noise does not reshuffle the chain. A link
 * that was not measured in its direction takes the other direction's
 * measurement, else SC_PLACE_DEFAULT_MBIT_S and SC_PLACE_DEFAULT_RTT_MS. */
#ifndef SC_PLACEMENT_H
#define SC_PLACEMENT_H

#include <stddef.h>
#include <stdint.h>

#include "sc_config.h"
#include "sc_err.h"

#define SC_PLACE_DEFAULT_MBIT_S 1000.0
#define SC_PLACE_DEFAULT_RTT_MS 0.2
#define SC_PLACE_EXHAUSTIVE_MAX 7    /* stages up to which every order is tried (7! = 5040) */
#define SC_PLACE_MARGIN         0.01 /* relative gain another order must bring */
#define SC_PLACE_EXPLAIN_MAX    16   /* stages a reason lists one by one */

typedef struct sc_place_worker {
	uint64_t id;
	double gflops;    /* measured rate, > 0 */
	double mem_bytes; /* memory a stage may use on it; 0: not limited */
	int mem_kind;     /* which memory model applies (e.g. its device: CPU, CUDA),
			   * 0 .. SC_PLACE_MEM_KINDS - 1 */
} sc_place_worker;

#define SC_PLACE_MEM_KINDS 4

/* A stage's memory: the bytes stage `stage` of `stages` needs to hold
 * layers [first, last) on a worker of memory kind `kind` (its base
 * weights, adapters and optimizer state, the activations of the
 * micro-batches it keeps in flight, its scratch and buffers). Called while
 * planning, once per (kind in use, stage, range), from the planning thread. */
typedef double (*sc_place_mem_fn)(void *arg, int kind, int stage, int stages, int first, int last);

/* A link's measurement; mbit_s <= 0: not measured. */
typedef struct sc_place_link {
	double rtt_ms;
	double mbit_s;
} sc_place_link;

/* What crosses the links: the links between the workers and the bytes each
 * hop carries. */
typedef struct sc_place_net {
	const sc_place_link *links; /* (nw, nw): [i * nw + j] from w[i] to w[j]; NULL: none */
	double hop_bytes;           /* bytes per step a stage sends a neighbour, each way;
				     * 0: compute alone (the given order, as before links) */
	int messages;               /* messages per step each way on a hop (M micro-batches) */
	/* NULL: memory is not planned. Else a stage is placed on a worker only
	 * where mem(...) <= its mem_bytes (when that is > 0). */
	sc_place_mem_fn mem;
	void *mem_arg;
	/* Overrides (splitchain submit --split, --workers): the cuts, NULL or
	 * stages + 1 layer bounds 0 = bounds[0] < ... < bounds[stages] = n_layer
	 * (stage s holds [bounds[s], bounds[s + 1])); and keep_order nonzero:
	 * the workers' given order, not searched. Memory is checked all the
	 * same: SC_ERANGE when the given cuts do not fit. */
	const int *bounds;
	int keep_order;
	/* NULL: nothing to fetch. Else what worker w (index into the workers
	 * array) must fetch to hold layers [first, last) — *bytes, and the
	 * return value in seconds — once, before the job's `steps` steps: orders
	 * are compared by steps x the predicted step + the slowest stage's
	 * fetch (the stages fetch at once), so a worker that caches a segment
	 * wins it when the transfer would dominate. Called from the planning
	 * thread. */
	double (*fetch)(void *arg, int worker, int first, int last, double *bytes);
	void *fetch_arg;
	double steps;
} sc_place_net;

typedef struct sc_place_stage {
	int worker;         /* index into the workers array */
	int first, last;    /* layer range [first, last) */
	double predicted_s; /* predicted seconds per step with this stage the slowest:
			     * (M - 1) / M * max(compute_s, transfer_s) + the path
			     * (above); the largest is the chain's step. Without
			     * links: compute_s */
	double compute_s;
	double transfer_s; /* its link busy sending activations forward and gradients back */
	double mem_bytes;  /* what it needs (net->mem), 0 when not planned */
	double fetch_bytes, fetch_s; /* what it must fetch first (net->fetch), 0: none */
} sc_place_stage;

/* GFLOP of one optimizer step per layer and for the head (final norm, LM
 * head and loss) for a job of tokens_per_step tokens of sequence length T
 * and LoRA rank r. */
void sc_place_costs(const sc_model_config *mc, int T, int r, double tokens_per_step,
		    double *layer_gflop, double *head_gflop);

/* Chooses `stages` workers from w[0..nw) — the fastest — and their order
 * along the chain, and splits the n_layer layers into contiguous ranges,
 * minimising the slowest stage's predicted time (see above). net is
 * borrowed (NULL: compute alone). out has `stages` entries, in chain order.
 * reason (reason_size bytes) receives one line saying why: the order, the
 * bytes per hop, the expected transfer, which links were measured and the
 * memory each stage needs. With net->mem, only cuts whose every stage fits
 * its worker are taken; SC_ERANGE when no order and cuts fit, with the
 * reason saying the least each stage needs against what its worker has.
 * SC_EINVAL when stages > nw or stages > n_layer; SC_ENOMEM. */
sc_err sc_place(const sc_place_worker *w, int nw, int stages, int n_layer, double layer_gflop,
		double head_gflop, const sc_place_net *net, sc_place_stage *out, char *reason,
		size_t reason_size);

/* Which `stages` of n candidate workers a job takes (the scheduler's
 * choice, before sc_place orders them): each candidate's cost is an even
 * share of the job — share_gflop GFLOP per step for steps steps at its
 * rate, plus fetch_bytes[i] (what its cache lacks of an even share of a
 * registered model; NULL: nothing to fetch) over mbit_s[i] (its link from
 * the coordinator; <= 0: the default) — so a short job takes slower
 * workers that cache the model over faster ones that would fetch it, and
 * a long one the faster. Ties: the faster, then the lower index. pick
 * receives the chosen indices, cheapest first. */
void sc_place_pick(const double *gflops, const double *fetch_bytes, const double *mbit_s, int n,
		   int stages, double share_gflop, double steps, int *pick);

#endif
