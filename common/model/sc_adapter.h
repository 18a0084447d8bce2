/* sc_adapter.h — a whole model's LoRA adapters in host memory, and their
 * files in the Hugging Face PEFT layout: DIR/adapter_model.safetensors with
 * tensors "<family's PEFT prefix><i>.<target>.lora_A.weight" (r, in) and
 * "...lora_B.weight" (out, r) — e.g. base_model.model.transformer.h.3.
 * attn.c_attn (GPT-2) or base_model.model.model.layers.3.self_attn.q_proj
 * (Llama) — plus DIR/adapter_config.json (peft_type LORA, task_type
 * CAUSAL_LM, r, lora_alpha, target_modules, fan_in_fan_out: true for GPT-2's
 * Conv1D weights, false for nn.Linear).
 */
#ifndef SC_ADAPTER_H
#define SC_ADAPTER_H

#include "sc_config.h"
#include "sc_family.h"
#include "sc_lora.h"

#define SC_ADAPTER_MAX_LAYERS 256

typedef struct sc_adapter {
	sc_lora_config lora;
	sc_model_config mc; /* the model it adapts: family, target shapes */
	int n_layer;        /* L */
	int n_embd;         /* C */
	/* a[l][t] (r, in) and b[l][t] (out, r) for each target in lora.targets,
	 * NULL for the others. All in one allocation (data). */
	float *a[SC_ADAPTER_MAX_LAYERS][SC_LORA_MAX_TARGETS];
	float *b[SC_ADAPTER_MAX_LAYERS][SC_LORA_MAX_TARGETS];
	float *data;
	size_t n_floats;
	/* The frozen base it was trained on when that was not float: mc's
	 * quantized, quant_format and quant_double as sc_adapter_save records
	 * them (adapter_model.safetensors' metadata "splitchain_base": "bf16",
	 * "int8", "nf4" or "nf4+dq"; PEFT ignores it, and adapter_config.json
	 * cannot carry it: PEFT 0.7 refuses unknown keys). sc_adapter_load
	 * sets these from that record (0: none), and leaves mc as cfg. */
	int trained_quantized, trained_format, trained_double;
} sc_adapter;

/* *out = new adapter for every layer of model mc, zero-filled; free with
 * sc_adapter_free. */
sc_err sc_adapter_new(sc_adapter **out, const sc_lora_config *lora, const sc_model_config *mc);
void sc_adapter_free(sc_adapter *ad);

/* Sets every A from sc_lora_init_a and every B to zero. */
void sc_adapter_init(sc_adapter *ad);

/* Writes ad to dir (created if missing) in PEFT's layout. base_model is
 * recorded as base_model_name_or_path (may be NULL); a quantized or bf16
 * ad->mc (the job's frozen base, sc_train_base_format) as "splitchain_base". */
sc_err sc_adapter_save(const sc_adapter *ad, const char *dir, const char *base_model);

/* Reads a PEFT LoRA adapter from dir for a model of cfg's shape. *out = new
 * adapter (free with sc_adapter_free). Rank, alpha and targets come from
 * adapter_config.json; every tensor is checked for presence and shape; a
 * non-LoRA peft_type, a fan_in_fan_out that does not match the family's
 * weight layout, another family's names, or layers beyond cfg give a clear
 * error. */
sc_err sc_adapter_load(sc_adapter **out, const char *dir, const sc_model_config *cfg);

/* The PEFT file name of layer l, target t, A (ab 0) or B (1) of ad's
 * family, into buf. */
void sc_adapter_peft_name(const sc_adapter *ad, int l, int t, int ab, char *buf, size_t size);

/* One adapter matrix seen by name, for moving adapters, gradients or
 * optimizer moments between processes and into checkpoints. Names are
 * "h.<layer>.<target>.lora_A" (r, in) and "h.<layer>.<target>.lora_B"
 * (out, r), keyed by the global layer index, with the family's target
 * names. */
typedef struct sc_adapter_tensor {
	char name[64];
	int layer;
	int64_t shape[2];
	float *data; /* borrowed from the adapter */
	size_t numel;
} sc_adapter_tensor;

/* Lists the matrices of layers [first, last) of ad, layer by layer, target
 * by target, A before B. *out = new array of *n entries (free with free());
 * the data pointers borrow ad. */
sc_err sc_adapter_tensors(sc_adapter *ad, int first, int last, sc_adapter_tensor **out, int *n);

/* Finds the matrix called name in ad; SC_ENOENT when ad has no such
 * matrix (unknown layer or target, or a malformed name). *t borrows ad. */
sc_err sc_adapter_find(sc_adapter *ad, const char *name, sc_adapter_tensor *t);

#endif
