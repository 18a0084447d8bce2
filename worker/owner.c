/* owner.c — a data owner's own data (docs/privacy.md): a U-shaped job's
 * data path resolved under --owner-data DIR, read, tokenized and batched
 * on this worker exactly as the coordinator batches a chain's data, and
 * Worker.DataCheck, which the coordinator calls at submit. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sc_dataset.h"
#include "sc_file.h"
#include "sc_log.h"
#include "sc_rpc_pb.h"
#include "sc_tokenizer.h"
#include "sc_wire.h"
#include "splitchain.pb-c.h"
#include "worker.h"

#define SHOW_TIMEOUT_MS 60000

sc_err worker_owner_path(const char *dir, const char *rel, char *out, size_t size)
{
	if (!dir || !dir[0])
		return sc_errf(SC_EINVAL, "this worker is not a data owner (no --owner-data)");
	return sc_file_under(dir, rel, "the owner's data directory", out, size);
}

void worker_owner_free(worker_owner_data *od)
{
	if (!od)
		return;
	sc_loader_free(od->ld);
	sc_tokens_free(od->train);
	sc_tokens_free(od->eval);
	memset(od, 0, sizeof(*od));
}

sc_err worker_owner_model(worker *w, const char *model, Splitchain__ModelInfo **out)
{
	Splitchain__ModelRef req = SPLITCHAIN__MODEL_REF__INIT;
	char msg[512];
	int status;

	*out = NULL;
	req.name = (char *)model;
	req.files = 1;
	SC_TRY(sc_rpc_call_pb(w->coord, "Coordinator.ModelShow", &req.base,
			      &splitchain__model_info__descriptor, SHOW_TIMEOUT_MS, &status, msg,
			      sizeof(msg), (ProtobufCMessage **)out));
	if (status == SC_STATUS_OK)
		return SC_OK;
	if (*out)
		protobuf_c_message_free_unpacked(&(*out)->base, NULL);
	*out = NULL;
	return sc_errf(SC_EIO, "model %s from the coordinator: %s: %s", model,
		       sc_status_name(status), msg);
}

sc_err worker_owner_load(worker *w, const Splitchain__OwnerData *d, const char *model_path,
			 const Splitchain__ModelInfo *registered, const sc_model_config *mc,
			 const sc_train_config *tc, worker_owner_data *out)
{
	char data[PATH_MAX], eval[PATH_MAX], tokp[PATH_MAX];
	sc_tokenizer *tok = NULL;
	sc_job_data jd = { 0 };
	sc_err rc;

	memset(out, 0, sizeof(*out));
	SC_TRY(worker_owner_path(w->o.owner_data, d->path, data, sizeof(data)));
	if (d->eval_path[0])
		SC_TRY(worker_owner_path(w->o.owner_data, d->eval_path, eval, sizeof(eval)));
	/* The tokenizer is the model's — or one of the owner's own files. */
	if (d->tokenizer_path[0]) {
		SC_TRY(worker_owner_path(w->o.owner_data, d->tokenizer_path, tokp, sizeof(tokp)));
		SC_TRY(sc_dataset_tokenizer(&tok, NULL, tokp));
	} else if (registered) {
		SC_TRY(sc_wire_model_tokenizer(registered, &tok));
	} else {
		SC_TRY(sc_dataset_tokenizer(&tok, model_path, NULL));
	}
	sc_data_spec ds = { .path = data,
			    .eval_path = d->eval_path[0] ? eval : NULL,
			    .eval_split = d->eval_split,
			    .skip_bad_lines = d->skip_bad_lines,
			    .no_pack = d->no_pack,
			    .no_cache = d->no_cache,
			    .T = tc->T,
			    .seed = tc->seed };
	rc = sc_job_data_load(&jd, &ds, tok, mc->vocab_size, mc->eos_token_id);
	sc_tokenizer_free(tok);
	if (rc)
		return rc;
	out->train = jd.train;
	out->eval = jd.eval;
	out->bad_lines = jd.st.bad_lines;
	if ((rc = sc_loader_new(&out->ld, out->train, tc->T, tc->seed)))
		goto fail;
	if (sc_loader_windows(out->ld) < (size_t)tc->B) {
		rc = sc_errf(SC_EINVAL,
			     "data '%s' gives %zu sequence(s) of %d + 1 tokens, fewer than one "
			     "micro-batch of %d",
			     d->path, sc_loader_windows(out->ld), tc->T, tc->B);
		goto fail;
	}
	out->eval_batches =
	    out->eval ? sc_eval_batches(out->eval, tc->T, tc->B, d->eval_batches) : 0;
	return SC_OK;
fail:
	worker_owner_free(out);
	return rc;
}

void worker_data_check(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	worker *w = arg;
	Splitchain__DataCheckRequest *r = NULL;
	Splitchain__DataCheckReply out = SPLITCHAIN__DATA_CHECK_REPLY__INIT;
	Splitchain__ModelInfo *info = NULL;
	worker_owner_data od = { 0 };
	sc_model_config mc;
	sc_train_config tc;
	char path[PATH_MAX + 16];
	sc_err rc;

	if (sc_rpc_unpack(&splitchain__data_check_request__descriptor, req, len,
			  (ProtobufCMessage **)&r, rep))
		return;
	if (!r->data || !r->train) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT, "data and train are required");
		goto out;
	}
	sc_wire_train_config(&tc, r->train);
	if (sc_train_config_validate(&tc)) {
		sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT, "train: %s", sc_err_detail());
		goto out;
	}
	/* A registered model: its configuration and tokenizer in one answer. */
	if (r->model[0]) {
		if (!(rc = worker_owner_model(w, r->model, &info)))
			rc = sc_config_parse(&mc, info->config_json, strlen(info->config_json));
	} else {
		snprintf(path, sizeof(path), "%s/config.json", r->model_path);
		rc = sc_config_load(&mc, path);
	}
	if (!rc)
		rc = worker_owner_load(w, r->data, r->model_path, info, &mc, &tc, &od);
	if (rc) {
		sc_rpc_reply_err(rep, worker_status_of(rc), "%s", sc_err_detail());
		goto out;
	}
	out.train_windows = sc_loader_windows(od.ld);
	out.eval_batches = od.eval_batches;
	sc_info("worker",
		"data check of '%s': %" PRIu64 " training sequences, %" PRIu64
		" held-out micro-batches",
		r->data->path, out.train_windows, out.eval_batches);
	sc_rpc_reply_pb(rep, &out.base);
out:
	worker_owner_free(&od);
	if (info)
		protobuf_c_message_free_unpacked(&info->base, NULL);
	protobuf_c_message_free_unpacked(&r->base, NULL);
}
