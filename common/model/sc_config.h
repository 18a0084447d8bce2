/* sc_config.h — the model's architecture, as read from a Hugging Face
 * config.json (GPT-2 family: model_type "gpt2").
 */
#ifndef SC_CONFIG_H
#define SC_CONFIG_H

#include "sc_err.h"

typedef struct sc_model_config {
	int n_layer;     /* L */
	int n_head;      /* NH */
	int n_embd;      /* C */
	int vocab_size;  /* V */
	int n_positions; /* maximum T */
	float ln_eps;    /* layer_norm_epsilon */
} sc_model_config;

/* Parses the config.json at path into *out. Unknown model_type, a missing or
 * nonsensical field (n_embd not divisible by n_head, sizes <= 0), an
 * activation other than gelu_new, or untied embeddings give SC_ENOTSUP /
 * SC_EFORMAT with the field named in sc_err_detail(). */
sc_err sc_config_load(sc_model_config *out, const char *path);

/* Parses config.json text (len bytes, not necessarily NUL-terminated). */
sc_err sc_config_parse(sc_model_config *out, const char *text, size_t len);

/* Checks the invariants sc_config_parse enforces. */
sc_err sc_config_validate(const sc_model_config *cfg);

/* Writes cfg as a Hugging Face GPT-2 config.json at path. */
sc_err sc_config_save(const sc_model_config *cfg, const char *path);

#endif
