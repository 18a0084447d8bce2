/* wire.c — adapters from protobuf NamedTensor lists. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sc_dataset.h"
#include "sc_file.h"
#include "sc_wire.h"
#include <unistd.h>

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

void sc_wire_train_config(sc_train_config *tc, const Splitchain__TrainConfig *t)
{
	*tc = (sc_train_config){ .steps = (int)t->steps,
				 .B = (int)t->batch,
				 .T = (int)t->seq,
				 .micro_batches = (int)t->micro_batches,
				 .lr = t->lr,
				 .min_lr = t->min_lr,
				 .warmup = (int)t->warmup,
				 .weight_decay = t->weight_decay,
				 .beta1 = t->beta1,
				 .beta2 = t->beta2,
				 .eps = t->eps,
				 .grad_clip = t->grad_clip,
				 .seed = t->seed,
				 .allow_tf32 = t->allow_tf32 != 0,
				 .wire = t->wire <= INT32_MAX ? (int)t->wire : -1,
				 .base_quant = t->base_quant <= INT32_MAX ? (int)t->base_quant : -1,
				 .double_quant = t->double_quant != 0,
				 .precision = t->precision <= INT32_MAX ? (int)t->precision : -1 };
}

void sc_wire_gen_base(sc_train_config *tc, const Splitchain__GenOpenRequest *r)
{
	sc_train_config_defaults(tc);
	tc->base_quant = r->base_quant <= INT32_MAX ? (int)r->base_quant : -1;
	tc->double_quant = r->double_quant != 0;
	tc->precision = r->precision <= INT32_MAX ? (int)r->precision : -1;
}

void sc_wire_train_message(Splitchain__TrainConfig *t, const sc_train_config *tc)
{
	t->steps = (uint32_t)tc->steps;
	t->batch = (uint32_t)tc->B;
	t->seq = (uint32_t)tc->T;
	t->micro_batches = (uint32_t)tc->micro_batches;
	t->lr = tc->lr;
	t->min_lr = tc->min_lr;
	t->warmup = (uint32_t)tc->warmup;
	t->weight_decay = tc->weight_decay;
	t->beta1 = tc->beta1;
	t->beta2 = tc->beta2;
	t->eps = tc->eps;
	t->grad_clip = tc->grad_clip;
	t->seed = tc->seed;
	t->allow_tf32 = tc->allow_tf32 != 0;
	t->wire = (uint32_t)tc->wire;
	t->base_quant = (uint32_t)tc->base_quant;
	t->double_quant = tc->double_quant != 0;
	t->precision = (uint32_t)tc->precision;
}

sc_err sc_wire_model_tokenizer(const Splitchain__ModelInfo *info, sc_tokenizer **out)
{
	char dir[] = "/tmp/splitchain-tok-XXXXXX", path[PATH_MAX];
	sc_err rc = SC_OK;

	*out = NULL;
	if (!mkdtemp(dir))
		return sc_errf(SC_EIO, "a directory for model %s's tokenizer: %s", info->name,
			       strerror(errno));
	for (size_t i = 0; i < info->n_files && !rc; i++) {
		const char *name = info->files[i]->name;
		if (!name[0] || strchr(name, '/') || !strcmp(name, "..") || !strcmp(name, "."))
			continue; /* the registry keeps plain file names */
		snprintf(path, sizeof(path), "%s/%s", dir, name);
		rc =
		    sc_file_write_atomic(path, info->files[i]->data.data, info->files[i]->data.len);
	}
	if (!rc)
		rc = sc_dataset_tokenizer(out, dir, NULL);
	for (size_t i = 0; i < info->n_files; i++) {
		if (strchr(info->files[i]->name, '/'))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, info->files[i]->name);
		unlink(path);
	}
	rmdir(dir);
	return rc;
}
