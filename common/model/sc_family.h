/* sc_family.h — a model family behind one interface. The family is chosen
 * by config.json's model_type and supplies everything that differs between
 * families: its config keys, its tensors' names and shapes as stored in the
 * Hugging Face files, its LoRA targets and their PEFT names, and its block's
 * forward and backward composed from backend operations. The segment engine,
 * the trainer, checkpoints and the wire know no family; backends see only
 * shapes and pointers.
 *
 * Families: gpt2 (gpt2.c) and llama (llama.c: model_type llama, mistral,
 * qwen2).
 */
#ifndef SC_FAMILY_H
#define SC_FAMILY_H

#include <stddef.h>
#include <stdint.h>

#include "sc_config.h"

struct cJSON;

#define SC_LORA_MAX_TARGETS   8  /* LoRA-adaptable projections of a layer */
#define SC_FAMILY_MAX_PARAMS  16 /* frozen tensors of a layer */
#define SC_FAMILY_MAX_ACTS    16 /* activation buffers of a layer, per micro-batch */
#define SC_FAMILY_MAX_SCRATCH 8  /* backward buffers shared by all micro-batches */

/* How make-model initialises a tensor. */
enum sc_param_init {
	SC_INIT_NORMAL, /* normal(0, 0.02) */
	SC_INIT_RESID,  /* normal(0, 0.02 / sqrt(2 L)): projections into the residual */
	SC_INIT_POS,    /* normal(0, 0.01): learned positions */
	SC_INIT_ONE,    /* norm weights */
	SC_INIT_ZERO,   /* biases */
};

/* One frozen tensor as the Hugging Face files store it. */
typedef struct sc_param_desc {
	char name[96]; /* without the optional file prefix (sc_family.file_prefixes) */
	int ndim;      /* 0: the tensor does not exist in this configuration */
	int64_t shape[2];
	int init; /* enum sc_param_init */
} sc_param_desc;

/* The model-wide tensors, by role. */
enum sc_global_param {
	SC_GP_EMBED,  /* (V,C) token embedding */
	SC_GP_POS,    /* (P,C) learned positions; absent with rotary embeddings */
	SC_GP_NORM_W, /* (C) final norm */
	SC_GP_NORM_B, /* (C) final norm bias; absent for RMSNorm */
	SC_GP_HEAD,   /* (V,C) LM head; absent when tied to the embedding */
	SC_GP_COUNT
};

/* Fills *p, one of a family's tensor descriptions (name copied). */
void sc_param_set(sc_param_desc *p, const char *name, int ndim, int64_t d0, int64_t d1, int init);

typedef struct sc_layer sc_layer; /* layer.h: one layer as a family computes it */

typedef struct sc_family {
	const char *name;               /* "gpt2", "llama" */
	const char *const *model_types; /* NULL-terminated model_type values it reads */

	/* ---- config.json ---- */
	/* Reads the family's keys into c (model_type already set; the rest
	 * zeroed, bos/eos -1). */
	sc_err (*parse_config)(sc_model_config *c, const struct cJSON *root);
	/* Family-specific invariants, after the shared ones. */
	sc_err (*validate)(const sc_model_config *c);
	/* The config.json transformers loads for c; NULL on out of memory. */
	struct cJSON *(*config_json)(const sc_model_config *c);

	/* ---- LoRA ---- */
	int n_targets; /* bit t of sc_lora_config.targets adapts targets[t] */
	const char *const
	    *targets; /* module path below a layer: "attn.c_attn", "self_attn.q_proj" */
	/* Input and output features of target t. */
	void (*target_dims)(const sc_model_config *c, int t, int *in, int *out);
	const char *peft_prefix; /* PEFT's tensor names: prefix "<layer>.<target>.lora_A.weight" */
	int fan_in_fan_out;      /* 1: weights stored (in, out) (Conv1D), 0: (out, in) */

	/* ---- frozen tensors ---- */
	const char *const *file_prefixes; /* NULL-terminated; tried in order on lookup */
	int n_layer_params;
	/* The n_layer_params tensors of global layer `layer`. */
	void (*layer_params)(const sc_model_config *c, int layer, sc_param_desc *out);
	/* The SC_GP_COUNT model-wide tensors. */
	void (*global_params)(const sc_model_config *c, sc_param_desc *out);
	int rms_norm; /* final norm: 1 RMSNorm, 0 LayerNorm */

	/* ---- compute (layer.h) ---- */
	int n_layer_acts; /* activation buffers per layer and micro-batch */
	int n_scratch;    /* backward buffers */
	int out_act;      /* the act that holds the layer's output (B,T,C) */
	/* Floats of each act / scratch buffer for N rows, given what the
	 * backend's attention needs (sc_backend_ops.attention_sizes). */
	void (*act_sizes)(const sc_model_config *c, size_t N, size_t attn_state, size_t *acts);
	void (*scratch_sizes)(const sc_model_config *c, size_t N, size_t attn_scratch,
			      size_t *scratch);
	/* The layer's forward on input x (N,C), filling L's acts. */
	sc_err (*layer_forward)(const sc_layer *L, const float *x);
	/* dcur (N,C): on entry the gradient of the layer's output, on return
	 * that of its input x; LoRA gradients accumulate. */
	sc_err (*layer_backward)(const sc_layer *L, const float *x, float *dcur);
} sc_family;

/* The family of c (by c->model_type), or NULL. Static. */
const sc_family *sc_family_of(const sc_model_config *c);
/* The family that reads model_type, or NULL. Static. */
const sc_family *sc_family_find(const char *model_type);
/* "gpt2, llama, mistral, qwen2" into buf. */
void sc_family_supported(char *buf, size_t size);

/* The families (gpt2.c, llama.c). */
extern const sc_family sc_family_gpt2, sc_family_llama;

/* GPT-2's targets in bit order, for callers that name them (tests). */
enum sc_gpt2_target {
	SC_GPT2_ATTN_QKV,  /* attn.c_attn (C -> 3C) */
	SC_GPT2_ATTN_PROJ, /* attn.c_proj (C -> C) */
	SC_GPT2_MLP_FC,    /* mlp.c_fc (C -> 4C) */
	SC_GPT2_MLP_PROJ,  /* mlp.c_proj (4C -> C) */
	SC_GPT2_TARGETS
};
#define SC_GPT2_ALL ((1u << SC_GPT2_TARGETS) - 1)

/* A GPT-2 configuration of L layers, NH heads, C channels, vocabulary V
 * and P positions, everything else as GPT-2 has it. */
void sc_gpt2_config(sc_model_config *c, int L, int NH, int C, int V, int P);

/* A named configuration with real shapes (make-model --preset): gpt2,
 * gpt2-tiny, llama-tiny, smollm2-135m, qwen2.5-0.5b, tinyllama-1.1b,
 * llama-3.2-1b. SC_EINVAL naming the known ones for any other name. */
sc_err sc_config_preset(sc_model_config *c, const char *name);
/* "gpt2, gpt2-tiny, ..." into buf. */
void sc_config_presets(char *buf, size_t size);

/* Changes to a preset's shape; 0 keeps the preset's value (tie: -1). */
typedef struct sc_config_shape {
	int n_layer, n_head, n_kv_head, n_embd, head_dim, n_inner, vocab_size, n_positions;
	int tie;            /* -1 keep, 0 untied LM head, 1 tied */
	int sliding_window; /* > 0: each query sees its last W keys (Mistral) */
} sc_config_shape;

/* *c = preset base (NULL: gpt2-tiny) as model_type (NULL: the preset's; another
 * family's type starts from that family's small preset), reshaped by sh.
 * Changing heads or channels recomputes what derives from them (GPT-2:
 * head size and MLP width; Llama: head_dim unless given, key/value heads
 * unless given). Options the model does not have (GPT-2: key/value heads,
 * head_dim, MLP width, an untied head; a sliding window outside Mistral)
 * give SC_EINVAL naming them. */
sc_err sc_config_make(sc_model_config *c, const char *base, const char *model_type,
		      const sc_config_shape *sh);

#endif
