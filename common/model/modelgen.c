/* modelgen.c — random checkpoints of any family in the Hugging Face layout. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sc_family.h"
#include "sc_modelgen.h"
#include "sc_rng.h"

/* float32 -> IEEE half, round to nearest even. */
static uint16_t f32_to_f16(float f)
{
	uint32_t x;
	memcpy(&x, &f, 4);
	uint32_t sign = (x >> 16) & 0x8000u, mant = x & 0x7FFFFFu;
	int exp = (int)((x >> 23) & 0xFF) - 127 + 15;
	if (((x >> 23) & 0xFF) == 0xFF)
		return (uint16_t)(sign | 0x7C00u | (mant ? 0x200u : 0));
	if (exp >= 31)
		return (uint16_t)(sign | 0x7C00u);
	if (exp <= 0) {
		if (exp < -10)
			return (uint16_t)sign;
		mant |= 0x800000u;
		uint32_t shift = (uint32_t)(14 - exp), half = 1u << (shift - 1);
		uint32_t r = mant >> shift, rem = mant & ((1u << shift) - 1);
		if (rem > half || (rem == half && (r & 1)))
			r++;
		return (uint16_t)(sign | r);
	}
	uint32_t r = (uint32_t)exp << 10 | mant >> 13, rem = mant & 0x1FFFu;
	if (rem > 0x1000u || (rem == 0x1000u && (r & 1)))
		r++;
	return (uint16_t)(sign | r);
}

static uint16_t f32_to_bf16(float f)
{
	uint32_t x;
	memcpy(&x, &f, 4);
	if ((x & 0x7FFFFFFFu) > 0x7F800000u)
		return (uint16_t)((x >> 16) | 0x40);
	return (uint16_t)((x + 0x7FFFu + ((x >> 16) & 1)) >> 16);
}

typedef struct gen {
	sc_st_writer *w;
	sc_rng rng;
	enum sc_dtype dtype;
	void **bufs; /* every tensor's data, kept until the file is saved */
	char **names;
	int n, cap;
} gen;

enum fill { FILL_NORMAL, FILL_ONE, FILL_ZERO };

static sc_err add(gen *g, const char *name, int ndim, int64_t d0, int64_t d1, enum fill how,
		  float std)
{
	int64_t shape[2] = { d0, d1 };
	size_t n = (size_t)d0 * (size_t)(ndim == 2 ? d1 : 1), es = sc_dtype_size(g->dtype);
	void *buf;
	char *nm;

	if (g->n == g->cap) {
		int cap = g->cap ? 2 * g->cap : 64;
		void **b = realloc(g->bufs, (size_t)cap * sizeof(*b));
		if (!b)
			return sc_errf(SC_ENOMEM, "out of memory");
		g->bufs = b;
		char **nn = realloc(g->names, (size_t)cap * sizeof(*nn));
		if (!nn)
			return sc_errf(SC_ENOMEM, "out of memory");
		g->names = nn;
		g->cap = cap;
	}
	buf = malloc(n * es > 0 ? n * es : 1);
	nm = strdup(name);
	if (!buf || !nm) {
		free(buf);
		free(nm);
		return sc_errf(SC_ENOMEM, "out of memory for %s", name);
	}
	g->bufs[g->n] = buf;
	g->names[g->n++] = nm;
	for (size_t i = 0; i < n; i++) {
		float v = how == FILL_ONE ? 1.0f : 0.0f;
		if (how == FILL_NORMAL)
			v = std * sc_rng_normal(&g->rng);
		else if (std > 0) /* random_norms: jitter ones and zeros */
			v += std * sc_rng_normal(&g->rng);
		if (g->dtype == SC_F32)
			((float *)buf)[i] = v;
		else if (g->dtype == SC_F16)
			((uint16_t *)buf)[i] = f32_to_f16(v);
		else
			((uint16_t *)buf)[i] = f32_to_bf16(v);
	}
	return sc_st_writer_add(g->w, nm, g->dtype, ndim, shape, buf);
}

/* Adds tensor p (if it exists) under the family's file prefix. */
static sc_err add_param(gen *g, const char *prefix, const sc_param_desc *p, float jitter,
			float resid_std)
{
	char name[160];
	static const float std_of[] = { [SC_INIT_NORMAL] = 0.02f, [SC_INIT_POS] = 0.01f };
	enum fill how = p->init == SC_INIT_ONE    ? FILL_ONE
			: p->init == SC_INIT_ZERO ? FILL_ZERO
						  : FILL_NORMAL;
	float std = how != FILL_NORMAL         ? jitter
		    : p->init == SC_INIT_RESID ? resid_std
					       : std_of[p->init];
	if (!p->ndim)
		return SC_OK;
	snprintf(name, sizeof(name), "%s%s", prefix, p->name);
	return add(g, name, p->ndim, p->shape[0], p->shape[1], how, std);
}

sc_err sc_modelgen_write(const char *dir, const sc_model_config *cfg, const sc_modelgen_opts *o)
{
	gen g = { 0 };
	char path[4096];
	float jitter = o->random_norms ? 0.1f : 0.0f;
	float resid_std = 0.02f / sqrtf(2.0f * (float)cfg->n_layer);
	uint64_t key = o->seed;
	sc_param_desc gp[SC_GP_COUNT], lp[SC_FAMILY_MAX_PARAMS];
	sc_err rc;

	SC_TRY(sc_config_validate(cfg));
	const sc_family *fam = sc_family_of(cfg);
	const char *prefix = fam->file_prefixes[0];
	if (o->dtype != SC_F32 && o->dtype != SC_F16 && o->dtype != SC_BF16)
		return sc_errf(SC_EINVAL, "model dtype must be f32, f16 or bf16");
	if (mkdir(dir, 0755) != 0 && errno != EEXIST)
		return sc_errf(SC_EIO, "%s: cannot create directory: %s", dir, strerror(errno));
	snprintf(path, sizeof(path), "%s/config.json", dir);
	SC_TRY(sc_config_save(cfg, path));

	sc_rng_seed(&g.rng, &key, 1);
	g.dtype = o->dtype;
	fam->global_params(cfg, gp);
	SC_TRY(sc_st_writer_new(&g.w));
	if ((rc = sc_st_writer_meta(g.w, "format", "pt")) ||
	    (rc = add_param(&g, prefix, &gp[SC_GP_EMBED], jitter, resid_std)) ||
	    (rc = add_param(&g, prefix, &gp[SC_GP_POS], jitter, resid_std)))
		goto out;
	for (int l = 0; l < cfg->n_layer; l++) {
		fam->layer_params(cfg, l, lp);
		for (int p = 0; p < fam->n_layer_params; p++)
			if ((rc = add_param(&g, prefix, &lp[p], jitter, resid_std)))
				goto out;
	}
	for (int k = SC_GP_NORM_W; k <= SC_GP_HEAD; k++)
		if ((rc = add_param(&g, prefix, &gp[k], jitter, resid_std)))
			goto out;
	snprintf(path, sizeof(path), "%s/model.safetensors", dir);
	rc = sc_st_writer_save(g.w, path);
out:
	sc_st_writer_free(g.w);
	for (int i = 0; i < g.n; i++) {
		free(g.bufs[i]);
		free(g.names[i]);
	}
	free(g.bufs);
	free(g.names);
	return rc;
}
