/* stage_mem.c — a training stage's memory, for the planner (stage_mem.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "placement.h"
#include "sc_codec.h"
#include "sc_layer_quant.h"
#include "sc_segment.h"
#include "stage_mem.h"

enum sc_mem_kind sc_mem_kind_of(const char *device)
{
	return device && !strncmp(device, "cuda", 4) ? SC_MEM_CUDA : SC_MEM_CPU;
}

/* What a CPU worker's process adds to run any stage besides the segment
 * and the buffers below: OpenBLAS's GEMM buffer for the thread that runs
 * the steps and that thread's malloc arena. Measured: 17.0 MB on every end
 * stage of memplan_test (gpt2 width, 1 thread, OpenBLAS 0.3.21). */
#define CPU_RUNTIME_BYTES 17.0e6

/* The worker's own buffers for the job on stage s of S (worker/worker.c's
 * build_job and its data plane), in bytes: its activations and gradients
 * in and out, the step's tokens and targets, the error feedback of a
 * lossy wire, and the micro-batches queued between it and each neighbour
 * (up to M each way: nng holds a sent message until the peer takes it). */
static double io_bytes(const sc_stage_mem *m, int s, int S)
{
	double btc = (double)m->B * m->T * m->mc.n_embd;
	double bt = (double)m->M * m->B * m->T;
	size_t msg =
	    sc_wire_bytes((enum sc_wire)m->wire, (size_t)m->B * m->T, (size_t)m->mc.n_embd);
	double v = 4 * btc * 4 + 2 * bt * 4; /* x, y, dy, dx; tokens, targets */
	if (m->wire != SC_WIRE_FP32 && s > 0)
		v += m->M * btc * 4; /* the error feedback of every micro-batch */
	int sides = (s > 0) + (s + 1 < S);
	return CPU_RUNTIME_BYTES + v +
	       2.0 * m->M * sides * (msg == SIZE_MAX ? btc * 4 : (double)msg);
}

/* The most entries the memo keeps (8 bytes each). */
#define MEMO_MAX ((size_t)1 << 22)

double sc_stage_mem_bytes(void *arg, int kind, int s, int S, int first, int last)
{
	sc_stage_mem *m = arg;
	int L = m->mc.n_layer, n = last - first, isf = first == 0, isl = last == L;
	/* Layers of one format are alike: a range's bytes depend on its length
	 * and ends alone; with per-layer formats, on where it lies. */
	int by_range = sc_layer_quant_count(&m->mc, 0, L) > 0;
	size_t len = (size_t)SC_PLACE_MEM_KINDS * S * (L + 1) * (by_range ? (size_t)L + 1 : 4);
	double *slot = NULL;
	if (len <= MEMO_MAX && (!m->memo || m->memo_s != S || m->memo_len != len)) {
		free(m->memo);
		m->memo_s = S;
		m->memo_len = len;
		if (!(m->memo = malloc(len * sizeof(double)))) {
			m->failed = 1;
			return INFINITY;
		}
		for (size_t i = 0; i < len; i++)
			m->memo[i] = -1;
	}
	if (len <= MEMO_MAX) /* else every range predicted afresh */
		slot =
		    m->memo +
		    (by_range ? (((size_t)kind * S + s) * (L + 1) + (size_t)first) * (L + 1) +
				    (size_t)last
			      : ((((size_t)kind * S + s) * 4 + (size_t)(isf * 2 + isl)) * (L + 1)) +
				    (size_t)n);
	if (slot && *slot >= 0)
		return *slot;
	int slots = m->gpipe ? m->M : (S - s < m->M ? S - s : m->M);
	sc_segment_spec sp = { .model = m->mc,
			       .lora = m->lc,
			       .first = first,
			       .last = last,
			       .B = m->B,
			       .T = m->T,
			       .slots = slots };
	sc_segment_bytes b;
	double v;
	if (sc_segment_predict(&sp, kind == SC_MEM_CUDA ? "cuda" : "cpu", &b)) {
		m->failed = 1; /* a shape the segment refuses: nowhere to put it */
		v = INFINITY;
	} else {
		v = (double)b.total + (kind == SC_MEM_CPU ? io_bytes(m, s, S) : 0);
	}
	if (slot)
		*slot = v;
	return v;
}

void sc_stage_mem_reset(sc_stage_mem *m)
{
	sc_stage_mem_free(m);
	m->failed = 0;
}

void sc_stage_mem_free(sc_stage_mem *m)
{
	free(m->memo);
	m->memo = NULL;
}
