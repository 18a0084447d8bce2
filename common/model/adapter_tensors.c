/* adapter_tensors.c — an adapter's matrices by name ("h.3.mlp.c_fc.lora_A"),
 * for the wire and for checkpoints. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sc_adapter.h"

static void describe(sc_adapter *ad, int l, int t, int is_b, sc_adapter_tensor *out)
{
	int in, o, r = ad->lora.rank;
	sc_lora_target_dims(&ad->mc, t, &in, &o);
	snprintf(out->name, sizeof(out->name), "h.%d.%s.lora_%c", l,
		 sc_lora_target_name(&ad->mc, t), is_b ? 'B' : 'A');
	out->layer = l;
	out->shape[0] = is_b ? o : r;
	out->shape[1] = is_b ? r : in;
	out->data = is_b ? ad->b[l][t] : ad->a[l][t];
	out->numel = (size_t)out->shape[0] * (size_t)out->shape[1];
}

sc_err sc_adapter_tensors(sc_adapter *ad, int first, int last, sc_adapter_tensor **out, int *n)
{
	sc_adapter_tensor *v;
	int k = 0, per_layer = 0;

	*out = NULL;
	*n = 0;
	if (first < 0 || first > last || last > ad->n_layer)
		return sc_errf(SC_EINVAL, "layer range [%d, %d) outside the adapter's %d layers",
			       first, last, ad->n_layer);
	for (int t = 0; t < SC_LORA_MAX_TARGETS; t++)
		per_layer += 2 * !!(ad->lora.targets & (1u << t));
	v = calloc((size_t)((last - first) * per_layer) + 1, sizeof(*v));
	if (!v)
		return sc_errf(SC_ENOMEM, "out of memory");
	for (int l = first; l < last; l++)
		for (int t = 0; t < SC_LORA_MAX_TARGETS; t++)
			if (ad->lora.targets & (1u << t)) {
				describe(ad, l, t, 0, &v[k++]);
				describe(ad, l, t, 1, &v[k++]);
			}
	*out = v;
	*n = k;
	return SC_OK;
}

sc_err sc_adapter_find(sc_adapter *ad, const char *name, sc_adapter_tensor *t)
{
	int l;

	/* Names are few (at most 16 per layer): match by layer number, then by name. */
	if (sscanf(name, "h.%d.", &l) == 1 && l >= 0 && l < ad->n_layer)
		for (int k = 0; k < SC_LORA_MAX_TARGETS; k++)
			for (int is_b = 0; is_b < 2 && (ad->lora.targets & (1u << k)); is_b++) {
				describe(ad, l, k, is_b, t);
				if (!strcmp(t->name, name))
					return SC_OK;
			}
	memset(t, 0, sizeof(*t));
	return sc_errf(SC_ENOENT, "no adapter matrix named '%s'", name);
}
