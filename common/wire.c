/* wire.c — adapters from protobuf NamedTensor lists. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "sc_wire.h"

sc_err sc_wire_to_adapter(sc_adapter *ad, int first, int last, Splitchain__NamedTensor *const *ts,
			  size_t n, const char *what)
{
	sc_adapter_tensor *list = NULL, at;
	char *seen = NULL;
	int nl = 0;
	sc_err rc;

	if ((rc = sc_adapter_tensors(ad, first, last, &list, &nl)))
		return rc;
	if (!(seen = calloc((size_t)nl + 1, 1))) {
		rc = sc_errf(SC_ENOMEM, "%s: out of memory", what);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		const Splitchain__NamedTensor *t = ts[i];
		int k = 0;
		if (sc_adapter_find(ad, t->name, &at)) {
			rc = sc_errf(SC_EFORMAT, "%s: unknown tensor '%.100s'", what, t->name);
			goto out;
		}
		if (at.layer < first || at.layer >= last)
			continue;
		if (t->n_shape != 2 || t->shape[0] != at.shape[0] || t->shape[1] != at.shape[1] ||
		    t->data.len != at.numel * sizeof(float)) {
			rc = sc_errf(SC_EFORMAT,
				     "%s %s: want shape (%" PRId64 ", %" PRId64
				     ") and %zu bytes, got "
				     "%zu dimensions and %zu bytes",
				     what, at.name, at.shape[0], at.shape[1],
				     at.numel * sizeof(float), t->n_shape, t->data.len);
			goto out;
		}
		while (k < nl && strcmp(list[k].name, at.name))
			k++;
		if (k == nl || seen[k]) {
			rc = sc_errf(SC_EFORMAT, "%s: %s appears twice", what, at.name);
			goto out;
		}
		seen[k] = 1;
		memcpy(at.data, t->data.data, t->data.len);
	}
	for (int k = 0; k < nl; k++)
		if (!seen[k]) {
			rc = sc_errf(SC_EFORMAT, "%s lacks %s", what, list[k].name);
			goto out;
		}
	rc = SC_OK;
out:
	free(seen);
	free(list);
	return rc;
}
