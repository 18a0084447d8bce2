/* lora.c — LoRA targets, configuration checks and initialisation. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "sc_lora.h"
#include "sc_rng.h"

static const char *const target_names[SC_T_COUNT] = {
	[SC_T_ATTN_QKV] = "attn.c_attn",
	[SC_T_ATTN_PROJ] = "attn.c_proj",
	[SC_T_MLP_FC] = "mlp.c_fc",
	[SC_T_MLP_PROJ] = "mlp.c_proj",
};

const char *sc_lora_target_name(enum sc_lora_target t)
{
	return (t >= 0 && t < SC_T_COUNT) ? target_names[t] : "?";
}

static unsigned target_bits(const char *w, size_t n)
{
	if (n == 3 && !strncmp(w, "all", 3))
		return SC_T_ALL;
	if (n == 6 && !strncmp(w, "c_attn", 6))
		return 1u << SC_T_ATTN_QKV;
	if (n == 4 && !strncmp(w, "c_fc", 4))
		return 1u << SC_T_MLP_FC;
	for (int t = 0; t < SC_T_COUNT; t++)
		if (strlen(target_names[t]) == n && !strncmp(w, target_names[t], n))
			return 1u << t;
	return 0;
}

sc_err sc_lora_parse_targets(unsigned *out, const char *list)
{
	unsigned mask = 0;
	const char *p = list;

	*out = 0;
	if (!list || !*list)
		return sc_errf(SC_EINVAL, "empty LoRA target list (use e.g. 'all' or "
					  "'attn.c_attn,mlp.c_fc')");
	while (*p) {
		size_t n = strcspn(p, ",");
		unsigned bits = target_bits(p, n);
		if (!bits)
			return sc_errf(SC_EINVAL,
				       "unknown LoRA target '%.*s' (known: all, attn.c_attn, "
				       "attn.c_proj, mlp.c_fc, mlp.c_proj)",
				       (int)n, p);
		mask |= bits;
		p += n;
		if (*p == ',')
			p++;
	}
	*out = mask;
	return SC_OK;
}

void sc_lora_targets_string(char *buf, size_t size, unsigned mask)
{
	size_t used = 0;
	if (!size)
		return;
	buf[0] = '\0';
	if ((mask & SC_T_ALL) == SC_T_ALL) {
		snprintf(buf, size, "all");
		return;
	}
	for (int t = 0; t < SC_T_COUNT; t++) {
		if (!(mask >> t & 1u))
			continue;
		int n = snprintf(buf + used, size - used, "%s%s", used ? "," : "",
				 sc_lora_target_name((enum sc_lora_target)t));
		if (n < 0 || (size_t)n >= size - used)
			return; /* truncated */
		used += (size_t)n;
	}
}

void sc_lora_target_dims(enum sc_lora_target t, int C, int *in, int *out)
{
	static const int mul_in[SC_T_COUNT] = { 1, 1, 1, 4 };
	static const int mul_out[SC_T_COUNT] = { 3, 1, 4, 1 };
	*in = mul_in[t] * C;
	*out = mul_out[t] * C;
}

sc_err sc_lora_config_validate(const sc_lora_config *lc)
{
	if (lc->rank < 1 || lc->rank > 4096)
		return sc_errf(SC_EINVAL, "LoRA rank %d out of range (1..4096)", lc->rank);
	if (!(lc->alpha > 0) || !isfinite(lc->alpha))
		return sc_errf(SC_EINVAL, "LoRA alpha %g must be a positive number", lc->alpha);
	if (!lc->targets || (lc->targets & ~SC_T_ALL))
		return sc_errf(SC_EINVAL, "LoRA targets must name at least one of attn.c_attn, "
					  "attn.c_proj, mlp.c_fc, mlp.c_proj");
	return SC_OK;
}

void sc_lora_init_a(float *A, uint64_t seed, int layer, enum sc_lora_target t, int r, int in)
{
	uint64_t keys[3] = { seed, (uint64_t)layer, (uint64_t)t };
	float bound = 1.0f / sqrtf((float)in);
	sc_rng rng;

	sc_rng_seed(&rng, keys, 3);
	for (size_t i = 0; i < (size_t)r * (size_t)in; i++)
		A[i] = bound * (2.0f * sc_rng_uniform(&rng) - 1.0f);
}

size_t sc_lora_layer_floats(const sc_lora_config *lc, int C)
{
	size_t n = 0;
	for (int t = 0; t < SC_T_COUNT; t++) {
		int in, out;
		if (!(lc->targets & (1u << t)))
			continue;
		sc_lora_target_dims(t, C, &in, &out);
		n += (size_t)lc->rank * (size_t)(in + out);
	}
	return n;
}
