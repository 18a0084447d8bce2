/* fuzz_requests.h — the request of every RPC method the daemons serve, as
 * the handlers take it apart before they touch any state: unpacked with
 * sc_rpc_unpack (the shared entry of every handler), then the fields the
 * handlers hand to common code checked by that code — the training and
 * LoRA configurations, the per-layer base formats, adapter tensors by name
 * and shape. Shared by fuzz_rpc_request.c and fuzz_rpc_envelope.c. */
#ifndef SC_FUZZ_REQUESTS_H
#define SC_FUZZ_REQUESTS_H

#include "sc_adapter.h"
#include "sc_layer_quant.h"
#include "sc_lora.h"
#include "sc_rpc_pb.h"
#include "sc_train.h"
#include "sc_wire.h"
#include "splitchain.pb-c.h"

#include "fuzz_util.h"

typedef struct fuzz_method {
	const char *name;
	const ProtobufCMessageDescriptor *desc;
} fuzz_method;

/* Every method of coordinator/coord_rpc.c and worker/main.c, with the
 * message its handler unpacks. */
static const fuzz_method fuzz_methods[] = {
	{ "Coordinator.Register", &splitchain__register_request__descriptor },
	{ "Coordinator.Heartbeat", &splitchain__heartbeat_request__descriptor },
	{ "Coordinator.Submit", &splitchain__submit_request__descriptor },
	{ "Coordinator.Jobs", &splitchain__empty__descriptor },
	{ "Coordinator.Status", &splitchain__job_ref__descriptor },
	{ "Coordinator.Cancel", &splitchain__job_ref__descriptor },
	{ "Coordinator.Workers", &splitchain__empty__descriptor },
	{ "Coordinator.Export", &splitchain__job_ref__descriptor },
	{ "Coordinator.Metrics", &splitchain__metrics_request__descriptor },
	{ "Coordinator.Echo", &splitchain__echo_request__descriptor },
	{ "Coordinator.ReportLinks", &splitchain__report_links_request__descriptor },
	{ "Coordinator.Links", &splitchain__empty__descriptor },
	{ "Coordinator.ModelAdd", &splitchain__model_add_request__descriptor },
	{ "Coordinator.Models", &splitchain__empty__descriptor },
	{ "Coordinator.ModelShow", &splitchain__model_ref__descriptor },
	{ "Coordinator.ModelRemove", &splitchain__model_ref__descriptor },
	{ "Coordinator.FetchTensor", &splitchain__fetch_tensor_request__descriptor },
	{ "Coordinator.ReportCache", &splitchain__report_cache_request__descriptor },
	{ "Coordinator.TensorSources", &splitchain__tensor_sources_request__descriptor },
	{ "Coordinator.GenTickets", &splitchain__gen_tickets_request__descriptor },
	{ "Worker.Assign", &splitchain__assign_request__descriptor },
	{ "Worker.Restore", &splitchain__restore_request__descriptor },
	{ "Worker.Step", &splitchain__step_request__descriptor },
	{ "Worker.Apply", &splitchain__apply_request__descriptor },
	{ "Worker.GetState", &splitchain__job_ref__descriptor },
	{ "Worker.Release", &splitchain__release_request__descriptor },
	{ "Worker.GenOpen", &splitchain__gen_open_request__descriptor },
	{ "Worker.GenStep", &splitchain__gen_step_request__descriptor },
	{ "Worker.GenClose", &splitchain__gen_close_request__descriptor },
	{ "Worker.Echo", &splitchain__echo_request__descriptor },
	{ "Worker.FetchTensor", &splitchain__fetch_tensor_request__descriptor },
	{ "Worker.DataCheck", &splitchain__data_check_request__descriptor },
	{ "Worker.SetGrads", &splitchain__set_grads_request__descriptor },
	/* Replies the coordinator takes from workers, which carry tensors
	 * (not methods: fuzz_rpc_envelope.c serves the FUZZ_N_SERVED above). */
	{ "reply StepReply", &splitchain__step_reply__descriptor },
	{ "reply StateReply", &splitchain__state_reply__descriptor },
};
#define FUZZ_N_METHODS ((int)(sizeof(fuzz_methods) / sizeof(fuzz_methods[0])))
#define FUZZ_N_SERVED  (FUZZ_N_METHODS - 2)

static sc_model_config fuzz_models[2]; /* gpt2, llama */
static sc_adapter *fuzz_adapters[2];

static inline void fuzz_requests_init(void)
{
	static const sc_lora_config lc = { .rank = 2, .alpha = 4.0f, .targets = 0x3, .seed = 1 };
	if (fuzz_adapters[0])
		return;
	for (int k = 0; k < 2; k++) {
		fuzz_small_model(&fuzz_models[k], k);
		if (sc_adapter_new(&fuzz_adapters[k], &lc, &fuzz_models[k]))
			abort();
	}
}

static inline void fuzz_lora(const Splitchain__LoraConfig *l)
{
	if (!l)
		return;
	for (int k = 0; k < 2; k++) {
		sc_lora_config lc = { (int)l->rank, l->alpha, l->targets, l->seed };
		if (l->target_names && l->target_names[0])
			sc_lora_parse_targets(&lc.targets, &fuzz_models[k], l->target_names);
		sc_lora_config_validate(&lc, &fuzz_models[k]);
	}
}

/* The frozen base of tc (and the per-layer formats) on each small model. */
static inline void fuzz_base(const sc_train_config *tc, const char *layer_quant)
{
	for (int k = 0; k < 2; k++) {
		sc_model_config mc = fuzz_models[k];
		if (sc_train_base_format(&mc, tc) == SC_OK && layer_quant)
			sc_layer_quant_apply(&mc, layer_quant);
	}
}

static inline void fuzz_train(const Splitchain__TrainConfig *t, const char *layer_quant)
{
	sc_train_config tc;
	if (!t)
		return;
	sc_wire_train_config(&tc, t);
	if (sc_train_config_validate(&tc))
		return;
	fuzz_base(&tc, layer_quant);
}

/* Adapter tensors as Worker.Restore, Apply, SetGrads and GenOpen take them:
 * into layers [0, 2) and [1, 2) of each small model. */
static inline void fuzz_tensors(Splitchain__NamedTensor *const *ts, size_t n)
{
	for (int k = 0; k < 2; k++) {
		sc_wire_to_adapter(fuzz_adapters[k], 0, 2, ts, n, "fuzz");
		sc_wire_to_adapter(fuzz_adapters[k], 1, 2, ts, n, "fuzz");
	}
}

/* Unpacks body as method i's request, as its handler does, and checks its
 * fields with the code the handler calls. */
static inline void fuzz_request(int i, const uint8_t *body, size_t len)
{
	const ProtobufCMessageDescriptor *d = fuzz_methods[i].desc;
	sc_rpc_reply rep = { 0 };
	ProtobufCMessage *m = NULL;
	uint8_t *again;
	size_t n;

	fuzz_requests_init();
	if (sc_rpc_unpack(d, body, len, &m, &rep)) {
		if (rep.status != SC_STATUS_INVALID_ARGUMENT)
			abort(); /* a request that does not unpack must be refused as such */
		return;
	}
	if (d == &splitchain__submit_request__descriptor) {
		Splitchain__SubmitRequest *r = (Splitchain__SubmitRequest *)m;
		fuzz_lora(r->lora);
		fuzz_train(r->train, NULL);
	} else if (d == &splitchain__assign_request__descriptor) {
		Splitchain__AssignRequest *r = (Splitchain__AssignRequest *)m;
		fuzz_lora(r->lora);
		fuzz_train(r->train, r->layer_quant);
	} else if (d == &splitchain__restore_request__descriptor) {
		Splitchain__RestoreRequest *r = (Splitchain__RestoreRequest *)m;
		fuzz_tensors(r->lora, r->n_lora);
		fuzz_tensors(r->adam_m, r->n_adam_m);
	} else if (d == &splitchain__state_reply__descriptor) {
		Splitchain__StateReply *r = (Splitchain__StateReply *)m;
		fuzz_tensors(r->lora, r->n_lora);
		fuzz_tensors(r->adam_v, r->n_adam_v);
	} else if (d == &splitchain__set_grads_request__descriptor) {
		Splitchain__SetGradsRequest *r = (Splitchain__SetGradsRequest *)m;
		fuzz_tensors(r->grads, r->n_grads);
	} else if (d == &splitchain__step_reply__descriptor) {
		Splitchain__StepReply *r = (Splitchain__StepReply *)m;
		fuzz_tensors(r->grads, r->n_grads);
	} else if (d == &splitchain__gen_open_request__descriptor) {
		Splitchain__GenOpenRequest *r = (Splitchain__GenOpenRequest *)m;
		sc_train_config tc;
		sc_wire_gen_base(&tc, r);
		fuzz_base(&tc, r->layer_quant);
		fuzz_tensors(r->tensors, r->n_tensors);
	}
	/* What was accepted packs again to a message that unpacks again. Not
	 * checked with unknown fields: protobuf-c keeps those as they came and
	 * accepts a field number 0 in an overlong tag, which it then repacks in
	 * a form it refuses (the library's quirk; splitchain reads no unknown
	 * field). */
	n = protobuf_c_message_get_packed_size(m);
	if (m->n_unknown_fields == 0 && (again = malloc(n ? n : 1)) != NULL) {
		ProtobufCMessage *m2;
		if (protobuf_c_message_pack(m, again) != n)
			abort();
		if ((m2 = protobuf_c_message_unpack(d, NULL, n, again)) == NULL)
			abort(); /* an accepted message that does not survive a round trip */
		protobuf_c_message_free_unpacked(m2, NULL);
		free(again);
	}
	protobuf_c_message_free_unpacked(m, NULL);
	free(rep.body);
}

#endif
