/* presets.c — named model configurations with the real shapes of the
 * checkpoints people fine-tune (make-model writes them with random
 * weights, benchmarks run their shapes). */
#include <stdio.h>
#include <string.h>

#include "sc_family.h"

typedef struct preset {
	const char *name, *model_type;
	int L, NH, NKV, hs, C, F, V, P, tie, qkv_bias;
	double theta;
	float eps;
	int llama3; /* Llama 3.2's rope_scaling */
} preset;

static const preset presets[] = {
	{ "gpt2", "gpt2", 12, 12, 12, 64, 768, 3072, 50257, 1024, 1, 1, 0, 1e-5f, 0 },
	{ "gpt2-tiny", "gpt2", 4, 4, 4, 32, 128, 512, 512, 256, 1, 1, 0, 1e-5f, 0 },
	{ "llama-tiny", "llama", 4, 4, 2, 16, 64, 172, 512, 256, 0, 0, 10000.0, 1e-5f, 0 },
	{ "smollm2-135m", "llama", 30, 9, 3, 64, 576, 1536, 49152, 8192, 1, 0, 100000.0, 1e-5f, 0 },
	{ "qwen2.5-0.5b", "qwen2", 24, 14, 2, 64, 896, 4864, 151936, 32768, 1, 1, 1000000.0, 1e-6f,
	  0 },
	{ "tinyllama-1.1b", "llama", 22, 32, 4, 64, 2048, 5632, 32000, 2048, 0, 0, 10000.0, 1e-5f,
	  0 },
	{ "llama-3.2-1b", "llama", 16, 32, 8, 64, 2048, 8192, 128256, 131072, 1, 0, 500000.0, 1e-5f,
	  1 },
};

sc_err sc_config_preset(sc_model_config *c, const char *name)
{
	const preset *p = NULL;
	for (size_t i = 0; i < sizeof(presets) / sizeof(presets[0]) && name; i++)
		if (!strcmp(presets[i].name, name))
			p = &presets[i];
	if (name && !strcmp(name, "tiny"))
		p = &presets[1]; /* the name before llama-tiny existed */
	if (!p) {
		char list[256];
		sc_config_presets(list, sizeof(list));
		return sc_errf(SC_EINVAL, "unknown preset '%s' (known: %s)", name ? name : "",
			       list);
	}
	if (!strcmp(p->model_type, "gpt2")) {
		sc_gpt2_config(c, p->L, p->NH, p->C, p->V, p->P);
		return sc_config_validate(c);
	}
	memset(c, 0, sizeof(*c));
	snprintf(c->model_type, sizeof(c->model_type), "%s", p->model_type);
	c->n_layer = p->L;
	c->n_head = p->NH;
	c->n_kv_head = p->NKV;
	c->head_dim = p->hs;
	c->n_embd = p->C;
	c->n_inner = p->F;
	c->vocab_size = p->V;
	c->n_positions = p->P;
	c->ln_eps = p->eps;
	c->tie_embeddings = p->tie;
	c->qkv_bias = p->qkv_bias;
	c->rope_theta = p->theta;
	if (p->llama3) {
		c->rope_scaling = SC_ROPE_LLAMA3;
		c->rope_factor = 32.0;
		c->rope_low_freq_factor = 1.0;
		c->rope_high_freq_factor = 4.0;
		c->rope_original_max_positions = 8192;
	}
	c->bos_token_id = 1;
	c->eos_token_id = 2;
	return sc_config_validate(c);
}

void sc_config_presets(char *buf, size_t size)
{
	size_t used = 0;
	if (!size)
		return;
	buf[0] = '\0';
	for (size_t i = 0; i < sizeof(presets) / sizeof(presets[0]); i++) {
		int n = snprintf(buf + used, size - used, "%s%s", i ? ", " : "", presets[i].name);
		if (n < 0 || (size_t)n >= size - used)
			return;
		used += (size_t)n;
	}
}

sc_err sc_config_make(sc_model_config *c, const char *base, const char *model_type,
		      const sc_config_shape *sh)
{
	SC_TRY(sc_config_preset(c, base ? base : "gpt2-tiny"));
	if (model_type) {
		const sc_family *f = sc_family_find(model_type);
		if (!f) {
			char list[128];
			sc_family_supported(list, sizeof(list));
			return sc_errf(SC_EINVAL, "--type '%s' is not supported (supported: %s)",
				       model_type, list);
		}
		if (f != sc_family_of(c))
			SC_TRY(
			    sc_config_preset(c, f == &sc_family_gpt2 ? "gpt2-tiny" : "llama-tiny"));
		snprintf(c->model_type, sizeof(c->model_type), "%s", model_type);
		if (f == &sc_family_llama) /* Qwen2's q, k, v always carry biases */
			c->qkv_bias = !strcmp(model_type, "qwen2");
	}
	int *fields[] = { &c->n_layer,  &c->n_head,  &c->n_kv_head,  &c->n_embd,
			  &c->head_dim, &c->n_inner, &c->vocab_size, &c->n_positions };
	const int given[] = { sh->n_layer,  sh->n_head,  sh->n_kv_head,  sh->n_embd,
			      sh->head_dim, sh->n_inner, sh->vocab_size, sh->n_positions };
	for (size_t k = 0; k < sizeof(given) / sizeof(given[0]); k++)
		if (given[k])
			*fields[k] = given[k];
	if (sc_family_of(c) == &sc_family_gpt2) {
		if (sh->n_kv_head || sh->head_dim || sh->n_inner || sh->tie == 0 ||
		    sh->sliding_window)
			return sc_errf(SC_EINVAL, "--kv-heads, --head-dim, --inner and --untied "
						  "are Llama-family options");
		sc_gpt2_config(c, c->n_layer, c->n_head, c->n_embd, c->vocab_size, c->n_positions);
		return sc_config_validate(c);
	}
	if (sh->n_head && !sh->n_kv_head)
		c->n_kv_head = c->n_head;
	if ((sh->n_embd || sh->n_head) && !sh->head_dim)
		c->head_dim = c->n_head > 0 ? c->n_embd / c->n_head : 0;
	if (sh->tie >= 0)
		c->tie_embeddings = sh->tie;
	if (sh->sliding_window) {
		if (strcmp(c->model_type, "mistral") != 0)
			return sc_errf(SC_EINVAL,
				       "--sliding-window is a Mistral option (--type mistral)");
		c->sliding_window = sh->sliding_window;
	}
	return sc_config_validate(c);
}
