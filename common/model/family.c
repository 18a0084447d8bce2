/* family.c — the registry of model families, by model_type. */
#include <stdio.h>
#include <string.h>

#include "sc_family.h"

static const sc_family *const families[] = { &sc_family_gpt2, &sc_family_llama, NULL };

const sc_family *sc_family_find(const char *model_type)
{
	if (!model_type)
		return NULL;
	for (int f = 0; families[f]; f++)
		for (int i = 0; families[f]->model_types[i]; i++)
			if (!strcmp(families[f]->model_types[i], model_type))
				return families[f];
	return NULL;
}

const sc_family *sc_family_of(const sc_model_config *c)
{
	return c ? sc_family_find(c->model_type) : NULL;
}

void sc_family_supported(char *buf, size_t size)
{
	size_t used = 0;
	if (!size)
		return;
	buf[0] = '\0';
	for (int f = 0; families[f]; f++)
		for (int i = 0; families[f]->model_types[i]; i++) {
			int n = snprintf(buf + used, size - used, "%s%s", used ? ", " : "",
					 families[f]->model_types[i]);
			if (n < 0 || (size_t)n >= size - used)
				return;
			used += (size_t)n;
		}
}

void sc_param_set(sc_param_desc *p, const char *name, int ndim, int64_t d0, int64_t d1, int init)
{
	snprintf(p->name, sizeof(p->name), "%s", name);
	p->ndim = ndim;
	p->shape[0] = d0;
	p->shape[1] = d1;
	p->init = init;
}
