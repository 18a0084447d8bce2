/* lora.c — LoRA targets (named by the model's family), configuration checks
 * and initialisation. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "sc_family.h"
#include "sc_lora.h"
#include "sc_rng.h"

const char *sc_lora_target_name(const sc_model_config *mc, int t)
{
	const sc_family *f = sc_family_of(mc);
	return f && t >= 0 && t < f->n_targets ? f->targets[t] : "?";
}

unsigned sc_lora_all_targets(const sc_model_config *mc)
{
	const sc_family *f = sc_family_of(mc);
	return f ? (1u << f->n_targets) - 1 : 0;
}

/* The targets the word (n bytes) selects: equal to a target's path, or a
 * dot-separated suffix of it. */
static unsigned target_bits(const sc_family *f, const char *w, size_t n)
{
	unsigned mask = 0;
	if ((n == 3 && !strncmp(w, "all", 3)) || (n == 10 && !strncmp(w, "all-linear", 10)))
		return (1u << f->n_targets) - 1;
	for (int t = 0; t < f->n_targets; t++) {
		const char *full = f->targets[t];
		size_t m = strlen(full);
		if ((m == n && !strncmp(full, w, n)) ||
		    (n < m && full[m - n - 1] == '.' && !strncmp(full + m - n, w, n)))
			mask |= 1u << t;
	}
	return mask;
}

static void list_targets(const sc_family *f, char *buf, size_t size)
{
	size_t used = 0;
	buf[0] = '\0';
	for (int t = 0; t < f->n_targets; t++) {
		int n = snprintf(buf + used, size - used, ", %s", f->targets[t]);
		if (n < 0 || (size_t)n >= size - used)
			return;
		used += (size_t)n;
	}
}

sc_err sc_lora_parse_targets(unsigned *out, const sc_model_config *mc, const char *list)
{
	const sc_family *f = sc_family_of(mc);
	unsigned mask = 0;
	const char *p = list;
	char known[512];

	*out = 0;
	if (!f)
		return sc_errf(SC_EINVAL, "LoRA targets: unknown model family");
	list_targets(f, known, sizeof(known));
	if (!list || !*list)
		return sc_errf(SC_EINVAL,
			       "empty LoRA target list (use all, all-linear or some of%s)",
			       known + 1);
	while (*p) {
		size_t n = strcspn(p, ",");
		unsigned bits = target_bits(f, p, n);
		if (!bits)
			return sc_errf(
			    SC_EINVAL,
			    "unknown LoRA target '%.*s' for %s (known: all, all-linear%s)", (int)n,
			    p, mc->model_type, known);
		mask |= bits;
		p += n;
		if (*p == ',')
			p++;
	}
	*out = mask;
	return SC_OK;
}

void sc_lora_targets_string(char *buf, size_t size, const sc_model_config *mc, unsigned mask)
{
	const sc_family *f = sc_family_of(mc);
	size_t used = 0;
	if (!size)
		return;
	buf[0] = '\0';
	if (f && (mask & sc_lora_all_targets(mc)) == sc_lora_all_targets(mc)) {
		snprintf(buf, size, "all");
		return;
	}
	for (int t = 0; f && t < f->n_targets; t++) {
		if (!(mask >> t & 1u))
			continue;
		int n = snprintf(buf + used, size - used, "%s%s", used ? "," : "", f->targets[t]);
		if (n < 0 || (size_t)n >= size - used)
			return; /* truncated */
		used += (size_t)n;
	}
}

void sc_lora_target_dims(const sc_model_config *mc, int t, int *in, int *out)
{
	sc_family_of(mc)->target_dims(mc, t, in, out);
}

sc_err sc_lora_config_validate(const sc_lora_config *lc, const sc_model_config *mc)
{
	unsigned all = sc_lora_all_targets(mc);
	if (lc->rank < 1 || lc->rank > 4096)
		return sc_errf(SC_EINVAL, "LoRA rank %d out of range (1..4096)", lc->rank);
	if (!(lc->alpha > 0) || !isfinite(lc->alpha))
		return sc_errf(SC_EINVAL, "LoRA alpha %g must be a positive number", lc->alpha);
	if (!all)
		return sc_errf(SC_EINVAL, "LoRA targets: unknown model family");
	if (!lc->targets || (lc->targets & ~all)) {
		char known[512];
		list_targets(sc_family_of(mc), known, sizeof(known));
		return sc_errf(SC_EINVAL, "LoRA targets must name at least one of%s, and no other",
			       known + 1);
	}
	return SC_OK;
}

void sc_lora_init_a(float *A, uint64_t seed, int layer, int t, int r, int in)
{
	uint64_t keys[3] = { seed, (uint64_t)layer, (uint64_t)t };
	float bound = 1.0f / sqrtf((float)in);
	sc_rng rng;

	sc_rng_seed(&rng, keys, 3);
	for (size_t i = 0; i < (size_t)r * (size_t)in; i++)
		A[i] = bound * (2.0f * sc_rng_uniform(&rng) - 1.0f);
}

size_t sc_lora_layer_floats(const sc_lora_config *lc, const sc_model_config *mc)
{
	const sc_family *f = sc_family_of(mc);
	size_t n = 0;
	for (int t = 0; f && t < f->n_targets; t++) {
		int in, out;
		if (!(lc->targets & (1u << t)))
			continue;
		f->target_dims(mc, t, &in, &out);
		n += (size_t)lc->rank * (size_t)(in + out);
	}
	return n;
}
