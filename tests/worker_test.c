/* worker_test.c — two splitchain-worker processes driven by a fake
 * coordinator over tcp://127.0.0.1: registration (before and after the
 * coordinator comes up), heartbeats and re-registration, training in 1F1B
 * and GPipe order bit-identical to the single-process trainer, restoring a
 * checkpoint, refusing bad requests, cancelling a blocked step, and a clean
 * exit on SIGTERM.
 *
 * Usage: worker_test PATH-TO-splitchain-worker */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fake_coord.h"
#include "sc_dataplane.h"
#include "sc_modelgen.h"
#include "sc_rpc_pb.h"
#include "sc_train.h"
#include "splitchain.pb-c.h"
#include "testutil.h"

enum { L = 4, C = 16, V = 256, M = 4, B = 2, T = 8, STEPS = 3, NW = FAKE_WORKERS };
static const int bounds[NW + 1] = { 0, 2, L };

#define CALL_MS 60000
#define MSG(x)  ((ProtobufCMessage *)(x))

static const char *worker_bin;
static char model_dir[512];

/* ----------------------------------------------------------------- workers */

static pid_t pids[NW];
static sc_rpc_client *cl[NW];

static int status_of(int k, const char *method, const ProtobufCMessage *req,
		     const ProtobufCMessageDescriptor *rd, ProtobufCMessage **rep, char *msg)
{
	int st = -1;
	ProtobufCMessage *tmp = NULL;
	msg[0] = '\0';
	SC_ASSERT_OK(
	    sc_rpc_call_pb(cl[k], method, req, rd, CALL_MS, &st, msg, 512, rep ? rep : &tmp));
	if (tmp)
		protobuf_c_message_free_unpacked(tmp, NULL);
	return st;
}

/* Calls and asserts the status is want (and, for errors, that the message
 * mentions what). */
static void expect(int k, const char *method, const ProtobufCMessage *req, int want,
		   const char *what)
{
	char msg[512];
	int st = status_of(k, method, req, &splitchain__empty__descriptor, NULL, msg);
	if (st != want)
		fail_msg("%s: got %s (%s), want %s", method, sc_status_name(st), msg,
			 sc_status_name(want));
	if (what && !strstr(msg, what))
		fail_msg("%s: message '%s' does not mention '%s'", method, msg, what);
}

/* ------------------------------------------------------ the reference run */

typedef struct state {
	sc_adapter *g[3]; /* lora, adam m, adam v */
} state;

static struct {
	sc_model_config mc;
	sc_lora_config lc;
	sc_train_config tc;
	sc_tokens *tk;
	sc_loader *ld;
	double loss[STEPS], norm[STEPS];
	state after[STEPS]; /* state after step s */
} ref;

static void state_new(state *s)
{
	for (int g = 0; g < 3; g++)
		SC_ASSERT_OK(sc_adapter_new(&s->g[g], &ref.lc, &ref.mc));
}

static void state_free(state *s)
{
	for (int g = 0; g < 3; g++)
		sc_adapter_free(s->g[g]);
}

static void state_equal(const state *a, const state *b, const char *what)
{
	static const char *names[3] = { "lora", "adam_m", "adam_v" };
	for (int g = 0; g < 3; g++)
		if (memcmp(a->g[g]->data, b->g[g]->data, a->g[g]->n_floats * sizeof(float)))
			fail_msg("%s: %s differs from the single-process trainer's", what,
				 names[g]);
}

static void reference_run(void)
{
	static const char text[] = "splitchain trains LoRA adapters across a chain of edge "
				   "workers; a chain computes what one process computes. ";
	static const enum sc_segment_group groups[3] = { SC_G_LORA, SC_G_ADAM_M, SC_G_ADAM_V };
	sc_modelgen_opts o = { .seed = 2, .dtype = SC_F32, .random_norms = 1 };
	char path[600];
	sc_backend *be;
	sc_weights *wf;
	sc_trainer *tr;

	sc_gpt2_config(&ref.mc, L, 2, C, V, 32);
	ref.lc = (sc_lora_config){ .rank = 2, .alpha = 4, .targets = SC_GPT2_ALL, .seed = 3 };
	sc_train_config_defaults(&ref.tc);
	ref.tc.steps = STEPS;
	ref.tc.B = B;
	ref.tc.T = T;
	ref.tc.micro_batches = M;
	ref.tc.lr = 1e-2f;
	ref.tc.min_lr = 1e-3f;
	ref.tc.warmup = 1;
	ref.tc.weight_decay = 0.01f;
	ref.tc.grad_clip = 0.5f;
	ref.tc.seed = 5;
	sc_test_path(model_dir, sizeof(model_dir), "model");
	SC_ASSERT_OK(sc_modelgen_write(model_dir, &ref.mc, &o));
	sc_test_path(path, sizeof(path), "text.txt");
	assert_int_equal(sc_test_write_file(path, text, sizeof(text) - 1), 0);
	SC_ASSERT_OK(sc_tokens_load(&ref.tk, path, V));
	SC_ASSERT_OK(sc_loader_new(&ref.ld, ref.tk, T, ref.tc.seed));
	SC_ASSERT_OK(sc_weights_open(&wf, model_dir));
	SC_ASSERT_OK(sc_backend_cpu_open(&be, 1));
	SC_ASSERT_OK(
	    sc_trainer_new(&tr, be, &ref.mc, &ref.lc, &ref.tc, wf, NULL, ref.tk, NW, bounds));
	for (int s = 0; s < STEPS; s++) {
		sc_step_stats st;
		SC_ASSERT_OK(sc_trainer_step(tr, s, &st));
		ref.loss[s] = st.loss;
		ref.norm[s] = st.grad_norm;
		state_new(&ref.after[s]);
		for (int i = 0; i < NW; i++)
			for (int g = 0; g < 3; g++)
				SC_ASSERT_OK(sc_segment_export(sc_trainer_stage(tr, i), groups[g],
							       ref.after[s].g[g]));
	}
	sc_trainer_free(tr);
	sc_backend_free(be);
	sc_weights_close(wf);
}

/* --------------------------------------------------------- driving a job */

static Splitchain__LoraConfig lora_msg(void)
{
	Splitchain__LoraConfig m = SPLITCHAIN__LORA_CONFIG__INIT;
	m.rank = (uint32_t)ref.lc.rank;
	m.alpha = ref.lc.alpha;
	m.targets = ref.lc.targets;
	m.seed = ref.lc.seed;
	return m;
}

static Splitchain__TrainConfig train_msg(void)
{
	Splitchain__TrainConfig m = SPLITCHAIN__TRAIN_CONFIG__INIT;
	const sc_train_config *t = &ref.tc;
	m.steps = (uint32_t)t->steps;
	m.batch = B;
	m.seq = T;
	m.micro_batches = M;
	m.lr = t->lr;
	m.min_lr = t->min_lr;
	m.warmup = (uint32_t)t->warmup;
	m.weight_decay = t->weight_decay;
	m.beta1 = t->beta1;
	m.beta2 = t->beta2;
	m.eps = t->eps;
	m.grad_clip = t->grad_clip;
	m.seed = t->seed;
	return m;
}

/* Placement versions only grow, across jobs too. */
static uint32_t last_version;

/* The AssignRequest for stage k of placement `version` (lora / train point
 * at the caller's). */
static Splitchain__AssignRequest assign_msg(int k, uint64_t job, uint32_t version, int gpipe,
					    Splitchain__LoraConfig *lm, Splitchain__TrainConfig *tm,
					    fake_worker *fw)
{
	Splitchain__AssignRequest a = SPLITCHAIN__ASSIGN_REQUEST__INIT;
	a.job_id = job;
	a.placement_version = version;
	a.stage = (uint32_t)k;
	a.n_stages = NW;
	a.model_path = model_dir;
	a.first_layer = (uint32_t)bounds[k];
	a.last_layer = (uint32_t)bounds[k + 1];
	a.lora = lm;
	a.train = tm;
	a.schedule =
	    gpipe ? SPLITCHAIN__SCHEDULE__SCHEDULE_GPIPE : SPLITCHAIN__SCHEDULE__SCHEDULE_1F1B;
	a.prev_data_addr = k > 0 ? fw[k - 1].data : "";
	a.next_data_addr = k + 1 < NW ? fw[k + 1].data : "";
	return a;
}

static void assign_all(uint64_t job, int gpipe)
{
	Splitchain__LoraConfig lm = lora_msg();
	Splitchain__TrainConfig tm = train_msg();
	fake_worker fw[NW];
	uint32_t version = ++last_version; /* one placement: every stage the same */
	for (int k = 0; k < NW; k++)
		fake_coord_get(k, &fw[k]);
	for (int k = NW - 1; k >= 0; k--) {
		Splitchain__AssignRequest a = assign_msg(k, job, version, gpipe, &lm, &tm, fw);
		Splitchain__AssignReply *r = NULL;
		char msg[512];
		int st =
		    status_of(k, "Worker.Assign", MSG(&a), &splitchain__assign_reply__descriptor,
			      (ProtobufCMessage **)&r, msg);
		if (st != SC_STATUS_OK)
			fail_msg("Assign stage %d: %s %s", k, sc_status_name(st), msg);
		assert_true(r->device_bytes > 0);
		protobuf_c_message_free_unpacked(MSG(r), NULL);
	}
}

typedef struct step_call {
	int k;
	int timeout_ms; /* 0: CALL_MS */
	Splitchain__StepRequest req;
	Splitchain__StepReply *rep;
	int status;
	char msg[512];
} step_call;

static void *step_thread(void *arg)
{
	step_call *c = arg;
	c->status = -1;
	if (sc_rpc_call_pb(cl[c->k], "Worker.Step", MSG(&c->req),
			   &splitchain__step_reply__descriptor,
			   c->timeout_ms ? c->timeout_ms : CALL_MS, &c->status, c->msg,
			   sizeof(c->msg), (ProtobufCMessage **)&c->rep))
		c->status = -1;
	return NULL;
}

/* One Step left running in the background on stage 1 with targets only:
 * static, and joined by teardown too, so a failed assertion never leaves
 * the thread using freed memory. */
static step_call bg;
static int32_t bg_targets[M * B * T];
static pthread_t bg_thread;
static int bg_running;

static void bg_start(uint64_t job, int step, int timeout_ms)
{
	memset(&bg, 0, sizeof(bg));
	splitchain__step_request__init(&bg.req);
	bg.k = 1;
	bg.timeout_ms = timeout_ms;
	bg.req.job_id = job;
	bg.req.step = (uint32_t)step;
	bg.req.targets = (ProtobufCBinaryData){ sizeof(bg_targets), (uint8_t *)bg_targets };
	assert_int_equal(pthread_create(&bg_thread, NULL, step_thread, &bg), 0);
	bg_running = 1;
}

static void bg_join(void)
{
	if (bg_running)
		pthread_join(bg_thread, NULL);
	bg_running = 0;
	if (bg.rep)
		protobuf_c_message_free_unpacked(MSG(bg.rep), NULL);
	bg.rep = NULL;
}

static void batch_of(int step, int32_t *in, int32_t *tg)
{
	for (int m = 0; m < M; m++)
		sc_loader_batch(ref.ld, ((uint64_t)step * M + m) * B, B, in + m * B * T,
				tg + m * B * T);
}

/* Step and Apply on both stages; checks loss and norm against the trainer. */
static void run_step(uint64_t job, int step)
{
	int32_t in[M * B * T], tg[M * B * T];
	step_call c[NW];
	pthread_t th[NW];
	double per_layer[L] = { 0 }, norm;
	Splitchain__ApplyRequest ap = SPLITCHAIN__APPLY_REQUEST__INIT;

	batch_of(step, in, tg);
	for (int k = 0; k < NW; k++) {
		memset(&c[k], 0, sizeof(c[k]));
		splitchain__step_request__init(&c[k].req);
		c[k].k = k;
		c[k].req.job_id = job;
		c[k].req.step = (uint32_t)step;
		if (k == 0)
			c[k].req.tokens = (ProtobufCBinaryData){ sizeof(in), (uint8_t *)in };
		if (k == NW - 1)
			c[k].req.targets = (ProtobufCBinaryData){ sizeof(tg), (uint8_t *)tg };
		assert_int_equal(pthread_create(&th[k], NULL, step_thread, &c[k]), 0);
	}
	for (int k = 0; k < NW; k++)
		pthread_join(th[k], NULL);
	for (int k = 0; k < NW; k++) {
		if (c[k].status != SC_STATUS_OK)
			fail_msg("Step %d stage %d: %s %s", step, k, sc_status_name(c[k].status),
				 c[k].msg);
		assert_int_equal(c[k].rep->n_layer_sumsq, bounds[k + 1] - bounds[k]);
		memcpy(per_layer + bounds[k], c[k].rep->layer_sumsq,
		       c[k].rep->n_layer_sumsq * sizeof(double));
		/* Stage 0 sends M activations, stage 1 M gradients. */
		assert_true(c[k].rep->bytes_sent > (uint64_t)M * B * T * C * 4);
		assert_true(c[k].rep->compute_s > 0);
	}
	if (c[NW - 1].rep->loss != ref.loss[step])
		fail_msg("step %d: loss %.17g, the trainer's %.17g", step, c[NW - 1].rep->loss,
			 ref.loss[step]);
	norm = sc_global_norm(per_layer, L);
	if (norm != ref.norm[step])
		fail_msg("step %d: norm %.17g, the trainer's %.17g", step, norm, ref.norm[step]);
	for (int k = 0; k < NW; k++)
		protobuf_c_message_free_unpacked(MSG(c[k].rep), NULL);
	ap.job_id = job;
	ap.step = (uint32_t)step;
	ap.lr = sc_lr_at(&ref.tc, step);
	ap.clip_factor = sc_clip_factor(norm, ref.tc.grad_clip);
	for (int k = 0; k < NW; k++)
		expect(k, "Worker.Apply", MSG(&ap), SC_STATUS_OK, NULL);
}

/* GetState of both workers into s; also returns the replies (for Restore). */
static void get_state(uint64_t job, state *s, Splitchain__StateReply **keep)
{
	Splitchain__JobRef ref_msg = SPLITCHAIN__JOB_REF__INIT;
	ref_msg.job_id = job;
	state_new(s);
	for (int k = 0; k < NW; k++) {
		Splitchain__StateReply *r = NULL;
		char msg[512];
		int st =
		    status_of(k, "Worker.GetState", MSG(&ref_msg),
			      &splitchain__state_reply__descriptor, (ProtobufCMessage **)&r, msg);
		if (st != SC_STATUS_OK)
			fail_msg("GetState %d: %s %s", k, sc_status_name(st), msg);
		Splitchain__NamedTensor **lists[3] = { r->lora, r->adam_m, r->adam_v };
		size_t ns[3] = { r->n_lora, r->n_adam_m, r->n_adam_v };
		for (int g = 0; g < 3; g++) {
			assert_int_equal(ns[g], (bounds[k + 1] - bounds[k]) * SC_GPT2_TARGETS * 2);
			for (size_t i = 0; i < ns[g]; i++) {
				sc_adapter_tensor t;
				SC_ASSERT_OK(sc_adapter_find(s->g[g], lists[g][i]->name, &t));
				assert_true(t.layer >= bounds[k] && t.layer < bounds[k + 1]);
				assert_int_equal(lists[g][i]->data.len, t.numel * sizeof(float));
				memcpy(t.data, lists[g][i]->data.data, lists[g][i]->data.len);
			}
		}
		if (keep)
			keep[k] = r;
		else
			protobuf_c_message_free_unpacked(MSG(r), NULL);
	}
}

/* ------------------------------------------------------------------ tests */

static void methods_before_assign(void **st)
{
	Splitchain__StepRequest s = SPLITCHAIN__STEP_REQUEST__INIT;
	Splitchain__ApplyRequest a = SPLITCHAIN__APPLY_REQUEST__INIT;
	Splitchain__JobRef j = SPLITCHAIN__JOB_REF__INIT;
	s.job_id = a.job_id = j.job_id = 1;
	a.lr = 1e-3f;
	a.clip_factor = 1;
	expect(0, "Worker.Step", MSG(&s), SC_STATUS_ABORTED, "Worker.Assign first");
	expect(0, "Worker.Apply", MSG(&a), SC_STATUS_ABORTED, "Worker.Assign first");
	expect(1, "Worker.GetState", MSG(&j), SC_STATUS_ABORTED, NULL);
}

static Splitchain__StateReply *checkpoint[NW]; /* job 1 after step 1 */

static void train(uint64_t job, int gpipe)
{
	state got;
	assign_all(job, gpipe);
	for (int s = 0; s < STEPS; s++) {
		run_step(job, s);
		if (!gpipe && s == 1) {
			get_state(job, &got, checkpoint);
			state_equal(&got, &ref.after[1], "state after step 1");
			state_free(&got);
		}
	}
	get_state(job, &got, NULL);
	state_equal(&got, &ref.after[STEPS - 1], gpipe ? "GPipe" : "1F1B");
	state_free(&got);
}

static void train_1f1b_matches_trainer(void **st)
{
	train(1, 0);
}

static void train_gpipe_matches_trainer(void **st)
{
	train(2, 1);
}

/* Job 3 starts from job 1's checkpoint after step 1 (every stage gets all
 * layers' tensors) and runs step 2: the same state as job 1's end. */
static void restore_resumes_bit_identically(void **st)
{
	Splitchain__RestoreRequest r = SPLITCHAIN__RESTORE_REQUEST__INIT;
	Splitchain__NamedTensor *all[3][L * SC_GPT2_TARGETS * 2];
	size_t n[3] = { 0, 0, 0 };
	state got;

	assert_non_null(checkpoint[0]);
	for (int k = 0; k < NW; k++) {
		Splitchain__StateReply *c = checkpoint[k];
		for (size_t i = 0; i < c->n_lora; i++)
			all[0][n[0]++] = c->lora[i];
		for (size_t i = 0; i < c->n_adam_m; i++)
			all[1][n[1]++] = c->adam_m[i];
		for (size_t i = 0; i < c->n_adam_v; i++)
			all[2][n[2]++] = c->adam_v[i];
	}
	assign_all(3, 0);
	r.job_id = 3;
	r.n_lora = n[0], r.lora = all[0];
	r.n_adam_m = n[1], r.adam_m = all[1];
	r.n_adam_v = n[2], r.adam_v = all[2];
	for (int k = 0; k < NW; k++)
		expect(k, "Worker.Restore", MSG(&r), SC_STATUS_OK, NULL);
	run_step(3, 2);
	get_state(3, &got, NULL);
	state_equal(&got, &ref.after[2], "restored and resumed");
	state_free(&got);
}

static void raw_call(int k, const char *method, const void *body, size_t len, int want)
{
	char msg[512];
	uint8_t *rep = NULL;
	size_t rlen = 0;
	int st = -1;
	SC_ASSERT_OK(
	    sc_rpc_call(cl[k], method, body, len, CALL_MS, &st, msg, sizeof(msg), &rep, &rlen));
	free(rep);
	if (st != want)
		fail_msg("%s with %zu raw bytes: %s (%s), want %s", method, len, sc_status_name(st),
			 msg, sc_status_name(want));
}

static int noticed_refusal(int k, void *arg)
{
	fake_worker f;
	(void)arg;
	fake_coord_get(k, &f);
	return k != 0 || strstr(f.last_notice, "refus") !=
			     NULL; /* "refused a Worker.Step call", "N more refusals" */
}

/* Only the coordinator (its secret from the registration) controls a
 * worker: a call with no credential or another one is refused
 * PERMISSION_DENIED, before its body is read, and reported in a heartbeat. */
static void calls_without_the_coordinators_secret_refused(void **st)
{
	static const char *const methods[] = { "Worker.Assign",   "Worker.Step",
					       "Worker.GetState", "Worker.Release",
					       "Worker.Restore",  "Worker.Apply",
					       "Worker.GenOpen",  "Worker.DataCheck",
					       "Worker.SetGrads" };
	static const char *const creds[] = { "", "scw_0123456789abcdef0123456789abcdef",
					     "scg_not-a-ticket" };
	Splitchain__JobRef jr = SPLITCHAIN__JOB_REF__INIT;
	uint8_t body[64];
	size_t len = splitchain__job_ref__pack(&jr, body);
	fake_worker f;
	(void)st;
	fake_coord_get(0, &f);
	for (size_t c = 0; c < sizeof(creds) / sizeof(creds[0]); c++) {
		sc_rpc_client *other = NULL;
		SC_ASSERT_OK(sc_rpc_client_open(&other, f.control));
		SC_ASSERT_OK(sc_rpc_client_set_auth(other, creds[c], strlen(creds[c])));
		for (size_t m = 0; m < sizeof(methods) / sizeof(methods[0]); m++) {
			char msg[512] = "";
			uint8_t *rep = NULL;
			size_t rlen = 0;
			int status = -1;
			SC_ASSERT_OK(sc_rpc_call(other, methods[m], body, len, CALL_MS, &status,
						 msg, sizeof(msg), &rep, &rlen));
			free(rep);
			if (status != SC_STATUS_PERMISSION_DENIED || !strstr(msg, "coordinator"))
				fail_msg("%s with credential '%s': %s (%s), want PERMISSION_DENIED",
					 methods[m], creds[c], sc_status_name(status), msg);
		}
		sc_rpc_client_close(other);
	}
	if (fake_wait_all(noticed_refusal, NULL, 10))
		fail_msg("no heartbeat reported the refusals");
	/* ... while the coordinator's own calls still run. */
	expect(0, "Worker.Release", MSG(&jr), SC_STATUS_OK, NULL);
}

static void bad_requests_refused(void **st)
{
	Splitchain__LoraConfig lm = lora_msg();
	Splitchain__TrainConfig tm = train_msg();
	Splitchain__StepRequest s = SPLITCHAIN__STEP_REQUEST__INIT;
	Splitchain__ApplyRequest ap = SPLITCHAIN__APPLY_REQUEST__INIT;
	Splitchain__RestoreRequest rs = SPLITCHAIN__RESTORE_REQUEST__INIT;
	Splitchain__NamedTensor nt = SPLITCHAIN__NAMED_TENSOR__INIT, *ntp = &nt;
	Splitchain__JobRef jr = SPLITCHAIN__JOB_REF__INIT;
	const int bad = SC_STATUS_INVALID_ARGUMENT;
	int32_t tok[M * B * T] = { 0 };
	int64_t shape[2] = { 3, C }; /* lora_A of attn.c_attn is (2, C) */
	float zeros[2 * C] = { 0 };
	uint8_t garbage[64], packed[1024];
	fake_worker fw[NW];
	size_t n;

	for (int k = 0; k < NW; k++)
		fake_coord_get(k, &fw[k]);
	for (size_t i = 0; i < sizeof(garbage); i++)
		garbage[i] = (uint8_t)(i * 131 + 7);
	/* Bytes that are no request at all, or half of one. */
	raw_call(0, "Worker.Assign", garbage, sizeof(garbage), bad);
	raw_call(0, "Worker.Step", garbage, sizeof(garbage), bad);
	raw_call(0, "Worker.GetState", garbage, 3, bad);
	Splitchain__AssignRequest a = assign_msg(0, 3, ++last_version, 0, &lm, &tm, fw);
	n = splitchain__assign_request__pack(&a, packed);
	raw_call(0, "Worker.Assign", packed, n / 2, bad);
	raw_call(0, "Worker.Assign", packed, n - 1, bad);
	raw_call(0, "Worker.Nope", packed, n, SC_STATUS_UNIMPLEMENTED);
	/* Nonsense fields. Each leaves job 3 in place. */
#define ASSIGN_BAD(field_change, want, what)                                                       \
	do {                                                                                       \
		Splitchain__LoraConfig lm2 = lora_msg();                                           \
		Splitchain__TrainConfig tm2 = train_msg();                                         \
		Splitchain__AssignRequest a2 = assign_msg(0, 3, last_version, 0, &lm2, &tm2, fw);  \
		field_change;                                                                      \
		expect(0, "Worker.Assign", MSG(&a2), want, what);                                  \
	} while (0)
	ASSIGN_BAD(a2.last_layer = L + 1, bad, "outside the model");
	ASSIGN_BAD(a2.last_layer = 0, bad, "is empty");
	ASSIGN_BAD(a2.n_stages = 0, bad, "impossible");
	ASSIGN_BAD(a2.stage = 5, bad, "impossible");
	ASSIGN_BAD(a2.first_layer = 1, bad, "only stage 0");
	ASSIGN_BAD(a2.last_layer = L, bad, "exactly the last stage");
	ASSIGN_BAD(a2.next_data_addr = "", bad, "next_data_addr");
	ASSIGN_BAD(tm2.batch = 0, bad, "train");
	ASSIGN_BAD(tm2.micro_batches = 0, bad, "train");
	ASSIGN_BAD(tm2.seq = 1000, bad, "positions");
	ASSIGN_BAD(tm2.lr = -1, bad, "learning rate");
	ASSIGN_BAD(lm2.rank = 0, bad, "lora");
	ASSIGN_BAD(a2.train = NULL, bad, "required");
	ASSIGN_BAD(a2.job_id = 0, bad, "job_id 0");
	ASSIGN_BAD(a2.schedule = 7, bad, "schedule");
	ASSIGN_BAD(a2.layer_quant = "0-99:int8", bad, "layer 99 is outside the model's");
	ASSIGN_BAD(a2.layer_quant = "0:int3", bad, "format 'int3'");
	ASSIGN_BAD(a2.slot = 1, bad, "job slot 1");
	ASSIGN_BAD(a2.model_path = "/nonexistent-model", SC_STATUS_FAILED_PRECONDITION, "model");
	/* Steps: unknown job (a placement the worker does not hold: ABORTED,
	 * to be placed again), wrong token bytes, ids out of range. */
	s.job_id = 99;
	expect(0, "Worker.Step", MSG(&s), SC_STATUS_ABORTED, "job 99");
	s.job_id = 3;
	s.step = 3;
	s.tokens = (ProtobufCBinaryData){ sizeof(tok) - 4, (uint8_t *)tok };
	expect(0, "Worker.Step", MSG(&s), bad, "tokens");
	tok[5] = V;
	s.tokens = (ProtobufCBinaryData){ sizeof(tok), (uint8_t *)tok };
	expect(0, "Worker.Step", MSG(&s), bad, "position 5");
	s.tokens = (ProtobufCBinaryData){ 0, NULL };
	s.targets = (ProtobufCBinaryData){ 3, (uint8_t *)tok };
	expect(1, "Worker.Step", MSG(&s), bad, "targets");
	/* Apply: no gradients, a step applied already, a nonsense factor. */
	ap.job_id = 3;
	ap.step = 3;
	ap.lr = 1e-3f;
	ap.clip_factor = 1;
	expect(0, "Worker.Apply", MSG(&ap), SC_STATUS_FAILED_PRECONDITION, "no gradients");
	ap.step = 2;
	expect(0, "Worker.Apply", MSG(&ap), SC_STATUS_FAILED_PRECONDITION, "already applied");
	ap.clip_factor = 0.0f / 0.0f;
	expect(0, "Worker.Apply", MSG(&ap), bad, "clip");
	/* Restore: an unknown name, a wrong shape, missing tensors. */
	rs.job_id = 3;
	rs.n_lora = 1;
	rs.lora = &ntp;
	nt.name = "h.0.attn.c_attn.lora_Z";
	nt.n_shape = 2;
	nt.shape = shape;
	nt.data = (ProtobufCBinaryData){ sizeof(zeros), (uint8_t *)zeros };
	expect(0, "Worker.Restore", MSG(&rs), bad, "unknown tensor");
	nt.name = "h.0.attn.c_attn.lora_A";
	expect(0, "Worker.Restore", MSG(&rs), bad, "want shape");
	nt.name = "h.3.attn.c_attn.lora_A"; /* another stage's: ignored */
	expect(0, "Worker.Restore", MSG(&rs), bad, "lora lacks h.0.attn.c_attn.lora_A");
	/* After all that, the job is intact and answers normally. */
	jr.job_id = 3;
	expect(0, "Worker.GetState", MSG(&jr), SC_STATUS_OK, NULL);
	state got;
	get_state(3, &got, NULL);
	state_equal(&got, &ref.after[2], "after bad requests");
	state_free(&got);
}

typedef struct counts {
	int n[NW];
	uint64_t min_id;
} counts;

static int reregistered(int k, void *arg)
{
	const counts *c = arg;
	fake_worker f;
	fake_coord_get(k, &f);
	return f.registrations > c->n[k] && f.id >= c->min_id;
}

static int heartbeating(int k, void *arg)
{
	const counts *c = arg;
	fake_worker f;
	fake_coord_get(k, &f);
	return f.heartbeats >= c->n[k] + 3;
}

static void heartbeat_not_found_registers_again(void **st)
{
	counts regs, beats;
	fake_worker f;

	for (int k = 0; k < NW; k++)
		regs.n[k] = fake_coord_get(k, &f);
	regs.min_id = fake_coord_forget(); /* as a coordinator that lost its memory */
	assert_int_equal(fake_wait_all(reregistered, &regs, 10), 0);
	for (int k = 0; k < NW; k++) {
		fake_coord_get(k, &f);
		beats.n[k] = f.heartbeats;
	}
	assert_int_equal(fake_wait_all(heartbeating, &beats, 10), 0);
}

/* Stage 1 waits for activations stage 0 never sends; a new Assign ends
 * the wait at once (ABORTED) and takes over. */
static void assign_cancels_a_blocked_step(void **st)
{
	struct timespec t0, t1;

	bg_start(3, 3, 20000);
	usleep(300000);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assign_all(4, 0);
	bg_join();
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_int_equal(bg.status, SC_STATUS_ABORTED);
	assert_true(t1.tv_sec - t0.tv_sec < 10);
	/* The new job trains from scratch like job 1. */
	run_step(4, 0);
}

/* ---------------------------------------------- holdings, fences, lease */

typedef struct holding {
	uint64_t job; /* 0: nothing */
	uint32_t version;
} holding;

static int holds(int k, void *arg)
{
	const holding *h = arg;
	fake_worker f;
	fake_coord_get(k, &f);
	return f.held_job == h[k].job && (!h[k].job || f.held_version == h[k].version);
}

/* Every heartbeat says what the worker holds; a release of an older
 * placement leaves the current one alone; a release of the current one
 * drops it, and the next heartbeat says so. */
static void heartbeats_report_holdings_and_fences_drop_them(void **st)
{
	Splitchain__StepRequest s = SPLITCHAIN__STEP_REQUEST__INIT;
	holding h[NW];
	fake_worker f;

	assign_all(5, 0);
	for (int k = 0; k < NW; k++)
		h[k] = (holding){ 5, last_version };
	assert_int_equal(fake_wait_all(holds, h, 10), 0);
	fake_coord_get(1, &f);
	assert_int_equal(f.held_stage, 1);
	fake_coord_fence(1, 5, last_version - 1); /* an older placement: not this one */
	usleep(5 * FAKE_HEARTBEAT_MS * 1000);
	assert_int_equal(fake_wait_all(holds, h, 1), 0);
	fake_coord_fence(1, 5, last_version);
	h[1] = (holding){ 0, 0 };
	assert_int_equal(fake_wait_all(holds, h, 10), 0);
	fake_coord_fence(1, 0, 0);
	s.job_id = 5;
	expect(1, "Worker.Step", MSG(&s), SC_STATUS_ABORTED, "Worker.Assign first");
	/* Worker 0 still holds its stage. */
	fake_coord_get(0, &f);
	assert_int_equal(f.held_job, 5);
}

/* A worker whose heartbeats go unanswered for the lease drops its job,
 * with a Step of it that was waiting on the data plane. */
static void lease_runs_out_without_the_coordinator(void **st)
{
	struct timespec t0, t1;
	holding none[NW] = { { 0, 0 } };
	double secs;

	assign_all(6, 0);
	bg_start(6, 0, 20000); /* stage 1 waits for activations that never come */
	usleep(300000);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	fake_coord_mute(1);
	bg_join();
	clock_gettime(CLOCK_MONOTONIC, &t1);
	secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
	assert_int_equal(bg.status, SC_STATUS_ABORTED);
	assert_true(secs > FAKE_LEASE_MS / 1000.0 * 0.8 && secs < FAKE_LEASE_MS / 1000.0 + 3);
	fake_coord_mute(0);
	assert_int_equal(fake_wait_all(holds, none, 10), 0);
}

/* A stage of an older placement that dials a worker's data address is
 * refused there, and the refusal reaches the coordinator. */
static void stale_peer_refused_and_reported(void **st)
{
	sc_dp_opts o;
	sc_dp_socket *stale = NULL;
	fake_worker f0, f;
	float x[B * T * C];

	Splitchain__LoraConfig lm = lora_msg();
	Splitchain__TrainConfig tm = train_msg();
	Splitchain__AssignRequest a;
	fake_worker fw[NW];
	char msg[512];

	/* Only stage 1 is assigned: the stale dialer finds its listener free. */
	for (int k = 0; k < NW; k++)
		fake_coord_get(k, &fw[k]);
	a = assign_msg(1, 7, ++last_version, 0, &lm, &tm, fw);
	assert_int_equal(status_of(1, "Worker.Assign", MSG(&a),
				   &splitchain__assign_reply__descriptor, NULL, msg),
			 SC_STATUS_OK);
	fake_coord_get(1, &f0);
	bg_start(7, 0, 20000); /* stage 1 receives */
	sc_dp_opts_defaults(&o);
	o.timeout_ms = 3000;
	o.self = (sc_dp_peer){ 7, last_version - 1, 0 };
	o.peer = (sc_dp_peer){ 7, last_version - 1, 1 };
	memset(x, 0, sizeof(x));
	SC_ASSERT_OK(sc_dp_dial(&stale, f0.data, &o));
	for (int i = 0; i < 100; i++) {
		fake_coord_get(1, &f);
		if (f.notices > f0.notices)
			break;
		usleep(100000);
	}
	assert_true(f.notices > f0.notices);
	assert_non_null(strstr(f.last_notice, "refused a connection"));
	sc_dp_close(stale);
	assign_all(8, 0); /* ends the waiting step */
	bg_join();
	assert_int_equal(bg.status, SC_STATUS_ABORTED);
}

/* SIGTERM while a step waits on the data plane: exit 0, promptly. */
static void sigterm_exits_cleanly(void **st)
{
	int code[NW];

	bg_start(4, 1, 3000); /* a worker that stops sends no reply: the call times out */
	usleep(300000);
	for (int k = 0; k < NW; k++)
		kill(pids[k], SIGTERM);
	for (int k = 0; k < NW; k++) {
		code[k] = fake_wait_exit(pids[k], 10);
		pids[k] = 0;
	}
	bg_join();
	for (int k = 0; k < NW; k++)
		if (code[k] != 0)
			fail_msg("worker %d exited with %d after SIGTERM, want 0", k, code[k]);
	assert_int_not_equal(bg.status, SC_STATUS_OK);
}

/* ------------------------------------------------------------ set-up */

static int registered(int k, void *arg)
{
	fake_worker f;
	return fake_coord_get(k, &f) > 0;
}

static int setup(void **st)
{
	reference_run();
	/* Learn a free port, then start the workers before the coordinator
	 * listens there: they must keep trying until it does. */
	SC_ASSERT_OK(fake_coord_open("tcp://127.0.0.1:0"));
	fake_coord_close();
	for (int k = 0; k < NW; k++)
		assert_true((pids[k] = fake_spawn_worker(worker_bin, k)) > 0);
	usleep(1500000);
	SC_ASSERT_OK(fake_coord_open(fake_coord_url()));
	if (fake_wait_all(registered, NULL, 30))
		fail_msg("the workers did not register within 30 s");
	for (int k = 0; k < NW; k++) {
		fake_worker f;
		fake_coord_get(k, &f);
		assert_null(strstr(f.data, ":0"));
		SC_ASSERT_OK(sc_rpc_client_open(&cl[k], f.control));
		/* The coordinator's secret, as the worker registered it: the
		 * worker refuses calls without it (worker/auth.h). */
		assert_true(strlen(f.secret) >= 16);
		SC_ASSERT_OK(sc_rpc_client_set_auth(cl[k], f.secret, strlen(f.secret)));
	}
	return 0;
}

static int teardown(void **st)
{
	for (int k = 0; k < NW; k++)
		if (pids[k] > 0)
			kill(pids[k], SIGKILL); /* ends a background step at once */
	bg_join();
	for (int k = 0; k < NW; k++) {
		if (pids[k] > 0) {
			kill(pids[k], SIGKILL);
			waitpid(pids[k], NULL, 0);
		}
		sc_rpc_client_close(cl[k]);
		if (checkpoint[k])
			protobuf_c_message_free_unpacked(MSG(checkpoint[k]), NULL);
	}
	fake_coord_close();
	for (int s = 0; s < STEPS; s++)
		state_free(&ref.after[s]);
	sc_loader_free(ref.ld);
	sc_tokens_free(ref.tk);
	return 0;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(methods_before_assign),
		cmocka_unit_test(train_1f1b_matches_trainer),
		cmocka_unit_test(train_gpipe_matches_trainer),
		cmocka_unit_test(restore_resumes_bit_identically),
		cmocka_unit_test(bad_requests_refused),
		cmocka_unit_test(calls_without_the_coordinators_secret_refused),
		cmocka_unit_test(heartbeat_not_found_registers_again),
		cmocka_unit_test(assign_cancels_a_blocked_step),
		cmocka_unit_test(heartbeats_report_holdings_and_fences_drop_them),
		cmocka_unit_test(lease_runs_out_without_the_coordinator),
		cmocka_unit_test(stale_peer_refused_and_reported),
		cmocka_unit_test(sigterm_exits_cleanly),
	};
	if (argc != 2) {
		fprintf(stderr, "usage: worker_test PATH-TO-splitchain-worker\n");
		return 2;
	}
	worker_bin = argv[1];
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, teardown);
}
