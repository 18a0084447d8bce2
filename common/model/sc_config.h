/* sc_config.h — a model's architecture, as read from (and written as) a
 * Hugging Face config.json. One struct serves every family; the family
 * (sc_family.h), chosen by config.json's model_type, says which fields it
 * reads and what they mean. Fields a family does not use keep the values
 * that make them inert (no bias, no window, no rotary scaling).
 */
#ifndef SC_CONFIG_H
#define SC_CONFIG_H

#include <stddef.h>

#include "sc_err.h"

/* Rotary-embedding frequency scaling (Llama family's rope_scaling). */
enum sc_rope_scaling {
	SC_ROPE_NONE,   /* inv_freq = theta^(-2i/hs) */
	SC_ROPE_LINEAR, /* positions divided by factor */
	SC_ROPE_LLAMA3, /* Llama 3.1's frequency-dependent scaling */
};

/* The most layers a per-layer format can name (= SC_ADAPTER_MAX_LAYERS,
 * the most layers a model may have). */
#define SC_LAYER_QUANT_MAX 256

typedef struct sc_model_config {
	char model_type[16]; /* as config.json names it: gpt2, llama, mistral, qwen2 */
	int n_layer;         /* L */
	int n_head;          /* NH */
	int n_kv_head;       /* NKV: key/value heads (GPT-2: NH) */
	int head_dim;        /* hs (GPT-2: C / NH; Llama: head_dim or C / NH) */
	int n_embd;          /* C */
	int n_inner;         /* F: the MLP's width (GPT-2: 4C) */
	int vocab_size;      /* V */
	int n_positions;     /* maximum T */
	float ln_eps;        /* layer_norm_epsilon / rms_norm_eps */
	int tie_embeddings;  /* the LM head is the token embedding */
	int qkv_bias;        /* q, k, v projections have biases */
	int o_bias;          /* the attention output projection has a bias */
	int mlp_bias;        /* the MLP's projections have biases */
	int sliding_window;  /* 0: none; else each query sees its last W keys */
	double rope_theta;   /* rotary base (0: no rotary embedding) */
	int rope_scaling;    /* enum sc_rope_scaling */
	double rope_factor;  /* linear / llama3 */
	double rope_low_freq_factor, rope_high_freq_factor; /* llama3 */
	int rope_original_max_positions;                    /* llama3 */
	int bos_token_id, eos_token_id;                     /* -1: none */
	/* The frozen projections (the family's LoRA targets in every layer)
	 * as `splitchain quantize` stores them: config.json's
	 * quantization_config (sc_quant.h). Other tensors stay float. */
	int quantized;    /* 0: float projections */
	int quant_format; /* enum sc_quant_format, when quantized */
	int quant_double; /* nf4 with double quantization of the block absmax */
	/* The job's --precision is bf16 (sc_train_base_format; never read from
	 * or written to config.json): int8 / nf4 projections multiply as bf16
	 * too, dequantized to bf16 (sc_backend.h's sc_qweight.bf16_compute),
	 * on backends that multiply bf16 in hardware. A bf16 base sets it. */
	int compute_bf16;
	/* Per-layer formats of the projections (sc_layer_quant.h), by global
	 * layer: 0 keeps the format above (float, or quant_format), k > 0
	 * holds that layer's projections in enum sc_quant_format k - 1 (int8
	 * or nf4), quantized from the float weights as the layer loads. */
	unsigned char layer_quant[SC_LAYER_QUANT_MAX];
} sc_model_config;

/* Parses the config.json at path into *out. An unknown model_type (the
 * message lists the supported ones), a missing or nonsensical field, or a
 * feature the family does not support give SC_ENOTSUP / SC_EFORMAT with the
 * field named in sc_err_detail(). */
sc_err sc_config_load(sc_model_config *out, const char *path);

/* Parses config.json text (len bytes, not necessarily NUL-terminated). */
sc_err sc_config_parse(sc_model_config *out, const char *text, size_t len);

/* Nonzero when a and b describe the same model: every field equal (the
 * family, the shape, the rotary settings and the base format,
 * per-layer formats included). */
int sc_config_equal(const sc_model_config *a, const sc_model_config *b);

/* Checks the invariants sc_config_parse enforces. */
sc_err sc_config_validate(const sc_model_config *cfg);

/* Writes cfg as its family's Hugging Face config.json at path (atomically),
 * one that transformers loads. */
sc_err sc_config_save(const sc_model_config *cfg, const char *path);

/* A short description for people: "llama, 30 layers, 9/3 heads of 64,
 * 576 channels, MLP 1536, vocabulary 49152". */
void sc_config_describe(const sc_model_config *cfg, char *buf, size_t size);

#endif
