/* sc_segment.h — a contiguous range of a model's layers [first, last) on
 * one backend: the unit a worker holds, for any family (sc_family.h). The
 * first segment (first == 0) also holds the token embedding (and learned
 * positions, if the family has them); the last (last == L) also holds the
 * final norm, the LM head (the token embedding when tied) and the loss. A chain of segments computes exactly what the whole model computes:
 * each layer runs the same operations on the same data wherever it lives.
 *
 * Memory, one allocation per tensor group (all device memory of the backend):
 *   base    frozen weights of the segment's layers (+ embedding, final
 *           norm, head; rotary tables), each tensor once
 *   lora    adapters of the segment's layers, laid out layer by layer, then
 *           target by target, A (r, in) then B (out, r): one flat vector
 *   grad    LoRA gradients, same layout;  m, v   AdamW moments, same layout
 *   acts    one block per activation slot (an in-flight micro-batch)
 *   scratch backward buffers shared by all slots
 * No gradient buffers exist for frozen weights; backward computes input
 * gradients and LoRA gradients only.
 *
 * Host interface: inputs and outputs of forward/backward are host arrays,
 * so the caller (a worker, the single-process trainer, a test) need not know
 * the backend. Inputs are queued to the device (upload_async) and every
 * call returns only after its output is on the host, so a call's arrays are
 * the caller's again when it returns; from the backend's host_alloc memory
 * the copies are DMA. Not thread-safe: one caller at a time per segment.
 */
#ifndef SC_SEGMENT_H
#define SC_SEGMENT_H

#include <stdint.h>

#include "sc_adapter.h"
#include "sc_backend.h"
#include "sc_config.h"
#include "sc_lora.h"
#include "sc_safetensors.h"
#include "sc_weights.h"

typedef struct sc_segment sc_segment;

typedef struct sc_segment_spec {
	sc_model_config model;
	sc_lora_config lora;
	int first, last; /* layer range [first, last), 0 <= first < last <= L */
	int B, T;        /* micro-batch shape; T <= n_positions */
	int slots;       /* activation slots (in-flight micro-batches), >= 1 */
	/* > 0: a generation segment with a key/value cache of this many
	 * positions per row of the batch (<= n_positions): B sequences, up to
	 * T new positions per sc_segment_infer call, one slot, no gradients,
	 * optimizer state or backward buffers. 0: a training segment. */
	int kv_positions;
} sc_segment_spec;

/* *out = new segment on be (borrowed: must outlive the segment) with all
 * memory allocated once, weights zero; free with sc_segment_free. */
sc_err sc_segment_new(sc_segment **out, sc_backend *be, const sc_segment_spec *spec);
void sc_segment_free(sc_segment *seg);
/* Parameter sharing: a segment of the same model (sc_config_equal: family,
 * shape and base format) and the same layers, on the same backend, made
 * with sc_segment_new_sharing, uses donor's frozen weights instead of a
 * copy of its own: only its adapters, optimizer state, activations,
 * scratch and rotary tables are new (a generation segment's key/value
 * cache too). The weights are reference-counted and freed with the last
 * segment that uses them, whichever it is; they are read-only once loaded,
 * so segments sharing them may run on different threads (each segment
 * itself still has one caller at a time). sc_segment_load_* on a sharing
 * segment loads nothing but its rotary tables; on a segment whose weights
 * others share, it is refused (SC_EINVAL). donor must be loaded. */
int sc_segment_can_share(const sc_segment *donor, const sc_backend *be,
			 const sc_segment_spec *spec);
sc_err sc_segment_new_sharing(sc_segment **out, sc_backend *be, const sc_segment_spec *spec,
			      const sc_segment *donor);
/* Identifies the segment's frozen weights (equal for segments sharing
 * them), and how many segments use them now. */
const void *sc_segment_base_id(const sc_segment *seg);
int sc_segment_base_users(const sc_segment *seg);

const sc_segment_spec *sc_segment_get_spec(const sc_segment *seg);
int sc_segment_is_first(const sc_segment *seg);
int sc_segment_is_last(const sc_segment *seg);

/* Loads the segment's frozen weights from a Hugging Face safetensors file
 * (its family's names, under any of its file prefixes; F32, F16 or BF16,
 * converted to fp32). Only the segment's own tensors are read. Missing
 * tensors or wrong shapes give SC_EFORMAT naming the tensor. Borrows f.
 * With spec.model.quantized the projections (the family's LoRA targets)
 * are held in that format (sc_quant.h), taken from either source: the
 * parts a quantized file holds (`splitchain quantize`: NAME.qweight, ...,
 * checked), or the float NAME.weight quantized here as it loads (a job's
 * --base-quant / --precision, sc_train_base_format), one tensor at a time
 * through a host staging buffer that is freed when loading ends. Both give
 * the same bits. A bf16 base (quant_format bf16), or an int8 / nf4 one
 * with bf16 products (compute_bf16), holds the token embedding and the LM
 * head bf16 too, rounded as they load when stored wider. */
sc_err sc_segment_load_base(sc_segment *seg, const sc_st_file *weights);
/* The same from a model's weights, one file or shards (sc_weights.h): only
 * the shards that hold the segment's tensors are opened. Borrows w. */
sc_err sc_segment_load_weights(sc_segment *seg, sc_weights *w);

/* Copies the segment's layers' adapters from ad (global layer indices) and
 * resets the optimizer state. ad's rank and targets must match. */
sc_err sc_segment_set_lora(sc_segment *seg, const sc_adapter *ad);
/* Copies the segment's adapters into the matching layers of ad. */
sc_err sc_segment_get_lora(const sc_segment *seg, sc_adapter *ad);

/* Number of floats in the flat LoRA vector (and in grad, m, v). */
size_t sc_segment_lora_floats(const sc_segment *seg);
/* Reads / writes a whole group as a flat host vector of
 * sc_segment_lora_floats floats: which = 0 params, 1 grad, 2 adam m, 3 adam v. */
enum sc_segment_group { SC_G_LORA, SC_G_GRAD, SC_G_ADAM_M, SC_G_ADAM_V };
sc_err sc_segment_read_group(const sc_segment *seg, enum sc_segment_group g, float *host);
sc_err sc_segment_write_group(sc_segment *seg, enum sc_segment_group g, const float *host);

/* Copies group g of the segment's layers into the matching layers of ad,
 * shaped as adapters (A (r,in), B (out,r)) — e.g. the gradients or AdamW
 * moments keyed by global layer, for checkpoints and tests. ad's rank and
 * targets must match. sc_segment_get_lora is export of SC_G_LORA. */
sc_err sc_segment_export(const sc_segment *seg, enum sc_segment_group g, sc_adapter *ad);
/* The inverse: copies group g of ad's matching layers into the segment. */
sc_err sc_segment_import(sc_segment *seg, enum sc_segment_group g, const sc_adapter *ad);

/* Forward one micro-batch into activation slot `slot` (0 <= slot < slots).
 *   first segment: in = tokens (B,T) int32, each < V (else SC_ERANGE);
 *   otherwise:     in = x (B,T,C) float, the previous segment's output.
 *   last segment:  targets (B,T) int32 (< 0: ignored position, else < V);
 *                  *loss = mean cross-entropy over the micro-batch's valid
 *                  positions; the output gradient for backward is computed
 *                  here and kept in the slot, already multiplied by
 *                  grad_scale (e.g. 1/M for M accumulated micro-batches).
 *   otherwise:     out = y (B,T,C) float, for the next segment.
 * Unused arguments may be NULL. */
sc_err sc_segment_forward(sc_segment *seg, int slot, const void *in, const int32_t *targets,
			  float grad_scale, float *out, double *loss);

/* Backward for the micro-batch in slot: dout (B,T,C) is the gradient of the
 * segment's output (NULL for the last segment, which kept its own); dx
 * (B,T,C) receives the gradient of the segment's input (NULL for the first
 * segment: embeddings are frozen). LoRA gradients are accumulated (+=). */
sc_err sc_segment_backward(sc_segment *seg, int slot, const float *dout, float *dx);

/* Zeroes the LoRA gradients (start of an optimizer step). */
sc_err sc_segment_zero_grad(sc_segment *seg);

/* Gradients accumulated in groups (several data owners' micro-batches, or
 * several data files): a step's gradient is the sum of each group's own
 * sequential sum, added in group order. sc_segment_grad_fold moves the
 * gradient accumulated since the last fold into acc (host, lora_floats
 * floats; first nonzero: acc = it, else acc += it, tmp the scratch) and
 * zeroes the segment's; sc_segment_write_group(SC_G_GRAD, acc) then makes
 * acc the step's gradient. */
sc_err sc_segment_grad_fold(sc_segment *seg, float *acc, float *tmp, int first);

/* per_layer[i] = sum of squares of layer (first + i)'s LoRA gradients, in
 * double, in a fixed order. The caller sums layers in global order. */
sc_err sc_segment_grad_sumsq(sc_segment *seg, double *per_layer);

/* AdamW on every adapter of the segment, with gradients multiplied by
 * grad_scale (the global clip factor); t is the 1-based step. */
typedef struct sc_adamw_hparams {
	float beta1, beta2, eps, weight_decay;
} sc_adamw_hparams;
sc_err sc_segment_adamw(sc_segment *seg, const sc_adamw_hparams *hp, float lr, float grad_scale,
			int t);

/* Generation (a segment made with kv_positions > 0): runs n new positions
 * pos0 .. pos0+n-1 of each of the B sequences (1 <= n <= T, pos0 + n <=
 * kv_positions; the positions before pos0 must have been run before, their
 * keys and values are in the cache).
 *   first segment: in = tokens (B,n) int32 < V;  otherwise in = x (B,n,C).
 *   last segment:  out = logits (B,V) of each sequence's last new position;
 *   otherwise:     out = y (B,n,C) for the next segment.
 * Host arrays, as sc_segment_forward's. Running pos0 again overwrites the
 * cache from there (a new prompt starts at 0). */
sc_err sc_segment_infer(sc_segment *seg, int pos0, int n, const void *in, float *out);

/* After an sc_segment_infer call of n positions: out (B,n,C) = the
 * segment's last layer's output for them (before the final norm, on the
 * last segment too), e.g. to measure a layer's error under another base
 * format (sc_calib.h). SC_EINVAL outside a generation segment or for n
 * outside 1..T. */
sc_err sc_segment_infer_hidden(const sc_segment *seg, int n, float *out);

/* Bytes of device memory the segment holds (base, LoRA, optimizer, acts). */
size_t sc_segment_device_bytes(const sc_segment *seg);

/* The device memory of a segment, by group. */
typedef struct sc_segment_bytes {
	size_t base;    /* frozen weights, as stored (quantized or not) */
	size_t lora;    /* adapters, and for training their gradients and AdamW moments */
	size_t acts;    /* every slot's saved activations */
	size_t scratch; /* backward buffers, gemm_q tiles */
	size_t kv;      /* generation: the key/value cache */
	size_t total;   /* the sum: what sc_segment_device_bytes would say */
} sc_segment_bytes;

/* The device memory seg holds, by group (a shared base counted whole). */
void sc_segment_bytes_of(const sc_segment *seg, sc_segment_bytes *out);
/* What sc_segment_new(spec) would allocate on a backend of kind device
 * ("cpu", "cuda", "cuda:N"), without a backend or any device memory: the
 * same layout, run dry. For planning (the coordinator places stages by
 * it). Errors: those of sc_segment_new's checks; SC_EINVAL for an unknown
 * device. */
sc_err sc_segment_predict(const sc_segment_spec *spec, const char *device, sc_segment_bytes *out);

#endif
