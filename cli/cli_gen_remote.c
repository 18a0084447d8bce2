/* cli_gen_remote.c — generation through workers: each hop (a worker holding
 * a layer range) keeps a generation session with a key/value cache; the loop
 * (sc_gen_loop) runs here and sends each hop only the new positions. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cli_conn.h"
#include "cli_gen.h"
#include "sc_rpc_pb.h"
#include "sc_wire.h"
#include "splitchain.pb-c.h"

/* ---- through workers ---- */

/* One call to hop h; an error names the hop and what the worker said. */
static sc_err hop_call(const remote *r, const hop *h, const char *method,
		       const ProtobufCMessage *req, const ProtobufCMessageDescriptor *desc,
		       ProtobufCMessage **rep)
{
	char msg[512] = "";
	int status = SC_STATUS_UNKNOWN;
	sc_err rc =
	    sc_rpc_call_pb(h->cl, method, req, desc, r->timeout_ms, &status, msg, sizeof(msg), rep);
	if (rc)
		return sc_err_wrap(rc, "worker %s (layers [%d, %d))", h->url, h->first, h->last);
	if (status != SC_STATUS_OK)
		return sc_errf(SC_EIO, "worker %s (layers [%d, %d)): %s: %s", h->url, h->first,
			       h->last, sc_status_name(status), msg[0] ? msg : "(no message)");
	return SC_OK;
}

/* sc_gen_chain over the hops: ids to the first, hidden states along, the
 * last one's logits back. */
sc_err cli_remote_chain(void *arg, const int32_t *ids, int pos0, int n, float *logits)
{
	remote *r = arg;
	for (int i = 0; i < r->n; i++) {
		Splitchain__GenStepRequest req = SPLITCHAIN__GEN_STEP_REQUEST__INIT;
		Splitchain__GenStepReply *rep = NULL;
		int last = i == r->n - 1;
		size_t want =
		    last ? (size_t)r->V * sizeof(float) : (size_t)n * r->C * sizeof(float);
		req.session = r->session + (uint64_t)i; /* one a hop: a worker may hold two */
		req.pos0 = (uint32_t)pos0;
		req.n = (uint32_t)n;
		if (i == 0)
			req.ids =
			    (ProtobufCBinaryData){ (size_t)n * sizeof(int32_t), (uint8_t *)ids };
		else
			req.hidden = (ProtobufCBinaryData){ (size_t)n * r->C * sizeof(float),
							    (uint8_t *)r->act };
		SC_TRY(hop_call(r, &r->h[i], "Worker.GenStep", &req.base,
				&splitchain__gen_step_reply__descriptor,
				(ProtobufCMessage **)&rep));
		const ProtobufCBinaryData *got = last ? &rep->logits : &rep->hidden;
		if (got->len != want) {
			protobuf_c_message_free_unpacked(&rep->base, NULL);
			return sc_errf(SC_EFORMAT, "worker %s answered %zu bytes, not %zu",
				       r->h[i].url, got->len, want);
		}
		memcpy(last ? logits : r->act, got->data, want);
		protobuf_c_message_free_unpacked(&rep->base, NULL);
	}
	return SC_OK;
}

/* Opens a session on every hop, each with its layers of ad (NULL: none). */
sc_err cli_remote_open(remote *r, const char *model_path, sc_adapter *ad, int P, int chunk)
{
	for (int i = 0; i < r->n; i++) {
		hop *h = &r->h[i];
		Splitchain__GenOpenRequest req = SPLITCHAIN__GEN_OPEN_REQUEST__INIT;
		Splitchain__LoraConfig lora = SPLITCHAIN__LORA_CONFIG__INIT;
		Splitchain__Empty *rep = NULL;
		sc_adapter_tensor *list = NULL;
		Splitchain__NamedTensor *nts = NULL, **ptrs = NULL;
		int n = 0;
		sc_err rc;
		if (cli_tls_ready("generate", h->url))
			return sc_errf(SC_EINVAL, "%s: no TLS identity", h->url);
		SC_TRY(sc_rpc_client_open(&h->cl, h->url));
		SC_TRY(sc_rpc_client_set_auth(h->cl, h->ticket, strlen(h->ticket)));
		req.session = r->session + (uint64_t)i;
		req.model_path = (char *)model_path;
		req.model = r->model;
		req.model_digest = r->digest;
		req.first_layer = (uint32_t)h->first;
		req.last_layer = (uint32_t)h->last;
		req.max_positions = (uint32_t)P;
		req.chunk = (uint32_t)chunk;
		req.base_quant = (uint32_t)r->base.base_quant;
		req.double_quant = r->base.double_quant != 0;
		req.precision = (uint32_t)r->base.precision;
		req.layer_quant = h->layer_quant;
		if (ad) {
			SC_TRY(sc_adapter_tensors(ad, h->first, h->last, &list, &n));
			nts = calloc((size_t)n + 1, sizeof(*nts));
			ptrs = calloc((size_t)n + 1, sizeof(*ptrs));
			if (!nts || !ptrs) {
				free(list);
				free(nts);
				free(ptrs);
				return sc_errf(SC_ENOMEM, "out of memory");
			}
			for (int k = 0; k < n; k++) {
				splitchain__named_tensor__init(&nts[k]);
				nts[k].name = list[k].name;
				nts[k].n_shape = 2;
				nts[k].shape = list[k].shape;
				nts[k].data = (ProtobufCBinaryData){ list[k].numel * sizeof(float),
								     (uint8_t *)list[k].data };
				ptrs[k] = &nts[k];
			}
			lora.rank = (uint32_t)ad->lora.rank;
			lora.alpha = ad->lora.alpha;
			lora.targets = ad->lora.targets;
			lora.seed = ad->lora.seed;
			req.lora = &lora;
			req.n_tensors = (size_t)n;
			req.tensors = ptrs;
		}
		rc = hop_call(r, h, "Worker.GenOpen", &req.base, &splitchain__empty__descriptor,
			      (ProtobufCMessage **)&rep);
		if (rep)
			protobuf_c_message_free_unpacked(&rep->base, NULL);
		free(list);
		free(nts);
		free(ptrs);
		SC_TRY(rc);
		h->open = 1;
	}
	return SC_OK;
}

void cli_remote_close(remote *r)
{
	for (int i = 0; i < r->n; i++) {
		Splitchain__GenCloseRequest req = SPLITCHAIN__GEN_CLOSE_REQUEST__INIT;
		Splitchain__Empty *rep = NULL;
		req.session = r->session + (uint64_t)i;
		if (r->h[i].open &&
		    !hop_call(r, &r->h[i], "Worker.GenClose", &req.base,
			      &splitchain__empty__descriptor, (ProtobufCMessage **)&rep))
			protobuf_c_message_free_unpacked(&rep->base, NULL);
		sc_rpc_client_close(r->h[i].cl);
	}
	free(r->act);
}

/* The hops, model and adapter of job a->job: its placement (Status), its
 * workers' addresses (Workers) and its latest checkpoint (Export). */
int cli_remote_job(const gen_args *a, remote *r, sc_model_config *mc, sc_adapter **ad,
		   char *model_path, char *tokenizer, size_t path_size)
{
	const char *cmd = "generate";
	Splitchain__JobRef ref = SPLITCHAIN__JOB_REF__INIT;
	Splitchain__JobInfo *info = NULL;
	Splitchain__WorkersReply *ws = NULL;
	Splitchain__ExportReply *ex = NULL;
	Splitchain__Empty empty = SPLITCHAIN__EMPTY__INIT;
	int ret;
	sc_err rc;

	ref.job_id = (uint64_t)a->job;
	if ((ret = cli_call_url(cmd, a->coordinator, 10000, "Coordinator.Status", &ref.base,
				&splitchain__job_info__descriptor, (ProtobufCMessage **)&info)) ||
	    (ret =
		 cli_call_url(cmd, a->coordinator, 10000, "Coordinator.Workers", &empty.base,
			      &splitchain__workers_reply__descriptor, (ProtobufCMessage **)&ws)) ||
	    (ret = cli_call_url(cmd, a->coordinator, 60000, "Coordinator.Export", &ref.base,
				&splitchain__export_reply__descriptor, (ProtobufCMessage **)&ex)))
		goto done;
	ret = CLI_ERROR;
	if (!info->n_placement || info->n_placement > MAX_HOPS) {
		fprintf(stderr, "splitchain generate: job %ld has no placement to generate on\n",
			a->job);
		goto done;
	}
	/* Hops in stage order. A data owners' job: the first owner's head, the
	 * middle, the first owner's tail (the others hold the same layers). */
	const Splitchain__StageInfo *tail = NULL;
	const char *tail_url = NULL, *tail_ticket = "";
	r->n = 0;
	for (size_t i = 0; i < info->n_placement; i++) {
		const Splitchain__StageInfo *p = info->placement[i];
		const char *url = NULL;
		int owner = p->tail_last_layer > p->tail_first_layer;
		if (p->stage >= info->n_placement) {
			fprintf(stderr, "splitchain generate: job %ld: bad stage %u\n", a->job,
				p->stage);
			goto done;
		}
		if (owner && tail)
			continue;
		for (size_t k = 0; k < ws->n_workers; k++)
			if (ws->workers[k]->worker_id == p->worker_id)
				url = ws->workers[k]->control_addr;
		if (!url || !*url) {
			fprintf(stderr,
				"splitchain generate: job %ld: worker %llu of stage %u is not "
				"known to the coordinator\n",
				a->job, (unsigned long long)p->worker_id, p->stage);
			goto done;
		}
		hop *h = &r->h[r->n++];
		snprintf(h->url, sizeof(h->url), "%s", url);
		snprintf(h->ticket, sizeof(h->ticket), "%s",
			 i < info->n_gen_tickets ? info->gen_tickets[i] : "");
		h->first = (int)p->first_layer;
		h->last = (int)p->last_layer;
		if (p->layer_quant && strlen(p->layer_quant) >= sizeof(h->layer_quant)) {
			fprintf(stderr,
				"splitchain generate: job %ld: stage %u's layer formats are "
				"too long\n",
				a->job, p->stage);
			goto done;
		}
		snprintf(h->layer_quant, sizeof(h->layer_quant), "%s",
			 p->layer_quant ? p->layer_quant : "");
		if (owner) {
			tail = p;
			tail_url = url;
			tail_ticket = h->ticket;
		}
	}
	if (tail && r->n < MAX_HOPS) {
		hop *t = &r->h[r->n++];
		snprintf(t->url, sizeof(t->url), "%s", tail_url);
		snprintf(t->ticket, sizeof(t->ticket), "%s", tail_ticket);
		t->first = (int)tail->tail_first_layer;
		t->last = (int)tail->tail_last_layer;
		snprintf(t->layer_quant, sizeof(t->layer_quant), "%s",
			 tail->layer_quant ? tail->layer_quant : "");
	}
	/* The frozen base the job trained on (its stored resolution). */
	sc_train_config_defaults(&r->base);
	if (info->spec && info->spec->train) {
		sc_train_config tc;
		sc_wire_train_config(&tc, info->spec->train);
		r->base.base_quant = tc.base_quant;
		r->base.double_quant = tc.double_quant;
		r->base.precision = tc.precision;
	}
	snprintf(model_path, path_size, "%s", info->model_path ? info->model_path : "");
	/* A registered model: the workers take it from their caches. */
	snprintf(r->model, sizeof(r->model), "%s",
		 info->spec && info->spec->model ? info->spec->model : "");
	snprintf(r->digest, sizeof(r->digest), "%s",
		 info->spec && info->spec->model_digest ? info->spec->model_digest : "");
	snprintf(tokenizer, path_size, "%s",
		 info->spec && info->spec->tokenizer_path ? info->spec->tokenizer_path : "");
	const char *cfg = ex->model_config ? ex->model_config : "";
	sc_lora_config lc = { .rank = (int)ex->lora->rank,
			      .alpha = ex->lora->alpha,
			      .targets = ex->lora->targets,
			      .seed = ex->lora->seed };
	if ((rc = sc_config_parse(mc, cfg, strlen(cfg))) || (rc = sc_adapter_new(ad, &lc, mc)) ||
	    (rc = sc_wire_to_adapter(*ad, 0, mc->n_layer, ex->tensors, ex->n_tensors,
				     "checkpoint"))) {
		cli_fail(cmd, rc, "the job's adapter");
		goto done;
	}
	ret = CLI_OK;
done:
	if (info)
		protobuf_c_message_free_unpacked(&info->base, NULL);
	if (ws)
		protobuf_c_message_free_unpacked(&ws->base, NULL);
	if (ex)
		protobuf_c_message_free_unpacked(&ex->base, NULL);
	return ret;
}

/* The coordinator's tickets for r's hops (--workers) to open sessions on
 * model_path. */
int cli_remote_tickets(const gen_args *a, remote *r, const char *model_path)
{
	Splitchain__GenTicketsRequest req = SPLITCHAIN__GEN_TICKETS_REQUEST__INIT;
	Splitchain__GenTicketsReply *rep = NULL;
	char *addrs[MAX_HOPS];
	int ret;

	for (int i = 0; i < r->n; i++)
		addrs[i] = r->h[i].url;
	req.model_path = (char *)model_path;
	req.model = r->model;
	req.n_worker_addrs = (size_t)r->n;
	req.worker_addrs = addrs;
	if ((ret = cli_call_url("generate", a->coordinator, 10000, "Coordinator.GenTickets",
				&req.base, &splitchain__gen_tickets_reply__descriptor,
				(ProtobufCMessage **)&rep)))
		return ret;
	for (int i = 0; i < r->n && (size_t)i < rep->n_tickets; i++)
		snprintf(r->h[i].ticket, sizeof(r->h[i].ticket), "%s", rep->tickets[i]);
	protobuf_c_message_free_unpacked(&rep->base, NULL);
	return CLI_OK;
}

/* The hops of --workers: the layers split evenly over the listed workers. */
int cli_remote_workers(const gen_args *a, remote *r, const sc_model_config *mc)
{
	const char *p = a->workers;
	while (*p) {
		size_t n = strcspn(p, ",");
		if (!n || n >= sizeof(r->h[0].url) || r->n == MAX_HOPS)
			return cli_usage("generate", "--workers: a comma list of worker addresses");
		snprintf(r->h[r->n++].url, sizeof(r->h[0].url), "%.*s", (int)n, p);
		p += n + (p[n] == ',');
	}
	if (r->n < 1 || r->n > mc->n_layer)
		return cli_usage("generate", "--workers: %d workers for a model of %d layers", r->n,
				 mc->n_layer);
	for (int i = 0; i < r->n; i++) {
		r->h[i].first = (int)((long)mc->n_layer * i / r->n);
		r->h[i].last = (int)((long)mc->n_layer * (i + 1) / r->n);
	}
	return CLI_OK;
}

uint64_t cli_remote_session_id(void)
{
	uint64_t id = 0;
	FILE *f = fopen("/dev/urandom", "rb");
	if (!f || fread(&id, sizeof(id), 1, f) != 1)
		id = (uint64_t)time(NULL) * 6364136223846793005ULL ^ (uint64_t)getpid();
	if (f)
		fclose(f);
	return id ? id : 1;
}
