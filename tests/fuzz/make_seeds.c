/* make_seeds.c — writes the seed corpora of tests/fuzz/corpus/ with the
 * project's own writers (config, safetensors, PEFT adapter, token file,
 * data-plane frame and hello, wire codecs, RPC messages), so that every seed
 * is an input the daemons really exchange or read. Tokenizer and text data
 * seeds come from make_seeds.py (Hugging Face tokenizers).
 *   fuzz_make_seeds CORPUS_DIR */
#include <errno.h>
#include <sys/stat.h>

#include "dp_frame.h"
#include "sc_adapter.h"
#include "sc_codec.h"
#include "sc_data.h"
#include "sc_dataplane.h"
#include "sc_rpc.h"
#include "sc_safetensors.h"
#include "sc_train.h"
#include "sc_wire.h"
#include "splitchain.pb-c.h"

#include "fuzz_requests.h"

static const char *root;

__attribute__((noreturn)) static void die(const char *what)
{
	fprintf(stderr, "make_seeds: %s: %s\n", what, sc_err_detail());
	exit(1);
}

/* corpus/<harness>/<name> = data, after head bytes (may be 0). */
static void seed(const char *harness, const char *name, const void *head, size_t hlen,
		 const void *data, size_t len)
{
	char p[1024];
	FILE *f;
	snprintf(p, sizeof(p), "%s/%s", root, harness);
	if (mkdir(p, 0755) && errno != EEXIST)
		die(p);
	snprintf(p, sizeof(p), "%s/%s/%s", root, harness, name);
	if (!(f = fopen(p, "wb")) || fwrite(head, 1, hlen, f) != hlen ||
	    fwrite(data, 1, len, f) != len || fclose(f))
		die(p);
}

/* The bytes of fuzz_dir()/name; *len its size. New; free(). */
static uint8_t *slurp(const char *name, size_t *len)
{
	char p[512];
	FILE *f = fopen(fuzz_path(p, sizeof(p), name), "rb");
	uint8_t *b = NULL;
	long n = 0;
	if (!f || fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) ||
	    !(b = malloc((size_t)n + 1)) || fread(b, 1, (size_t)n, f) != (size_t)n)
		die(name);
	fclose(f);
	*len = (size_t)n;
	return b;
}

/* Parts joined with FUZZ_SEP. New; free(). */
static uint8_t *join(size_t *len, int n, const uint8_t **part, const size_t *plen)
{
	size_t total = 0, o = 0;
	uint8_t *b = NULL;
	for (int i = 0; i < n; i++)
		total += plen[i] + (i ? FUZZ_SEP_LEN : 0);
	if (!(b = malloc(total + 1)))
		die("out of memory");
	for (int i = 0; i < n; i++) {
		if (i)
			memcpy(b + o, FUZZ_SEP, FUZZ_SEP_LEN), o += FUZZ_SEP_LEN;
		memcpy(b + o, part[i], plen[i]), o += plen[i];
	}
	*len = total;
	return b;
}

static void configs(void)
{
	for (int k = 0; k < 2; k++) {
		sc_model_config mc;
		uint8_t *b;
		size_t n;
		char path[512];
		fuzz_small_model(&mc, k);
		if (sc_config_save(&mc, fuzz_path(path, sizeof(path), "config.json")))
			die("config");
		b = slurp("config.json", &n);
		seed("fuzz_config", k ? "llama.json" : "gpt2.json", "", 0, b, n);
		free(b);
	}
}

/* A safetensors file of every dtype, with metadata, as fuzz_dir()/name. */
static void st_file(const char *name, int variant)
{
	static const float f[6] = { 1, -2, 0.5f, 3, 0, -0.25f };
	static const uint16_t h[6] = { 0x3c00, 0xc000, 0x3800, 0x4200, 0, 0xb400 };
	static const int32_t i32[3] = { 1, 2, 3 };
	static const int64_t i64[2] = { -1, 7 };
	static const uint8_t u8[4] = { 1, 2, 3, 4 };
	const int64_t s23[2] = { 2, 3 }, s3[1] = { 3 }, s2[1] = { 2 }, s4[1] = { 4 };
	char p[512];
	sc_st_writer *w = NULL;
	if (sc_st_writer_new(&w))
		die("writer");
	if (variant == 0) {
		sc_st_writer_add(w, "wte.weight", SC_F32, 2, s23, f);
		sc_st_writer_add(w, "h.0.ln_1.weight", SC_F16, 1, s3, h);
		sc_st_writer_add(w, "h.0.ln_1.bias", SC_BF16, 1, s3, h + 3);
		sc_st_writer_add(w, "ids", SC_I32, 1, s3, i32);
		sc_st_writer_add(w, "pos", SC_I64, 1, s2, i64);
		sc_st_writer_add(w, "bytes", SC_U8, 1, s4, u8);
		sc_st_writer_meta(w, "format", "pt");
	} else {
		sc_st_writer_add(w, variant == 1 ? "model.embed_tokens.weight" : "lm_head.weight",
				 SC_BF16, 2, s23, h);
	}
	if (sc_st_writer_save(w, fuzz_path(p, sizeof(p), name)))
		die("safetensors");
	sc_st_writer_free(w);
}

static void safetensors_and_manifests(void)
{
	static const char index[] = "{\"metadata\":{\"total_size\":24},\"weight_map\":{"
				    "\"model.embed_tokens.weight\":\"a.safetensors\","
				    "\"lm_head.weight\":\"b.safetensors\"}}";
	const uint8_t *part[3];
	size_t plen[3], n;
	uint8_t *a, *b, *j;

	st_file("x.safetensors", 0);
	a = slurp("x.safetensors", &n);
	seed("fuzz_safetensors", "dtypes.safetensors", "", 0, a, n);
	part[0] = (const uint8_t *)"", plen[0] = 0, part[1] = a, plen[1] = n;
	j = join(&n, 2, part, plen);
	seed("fuzz_manifest", "single", "", 0, j, n);
	free(j);
	free(a);
	st_file("a.safetensors", 1);
	st_file("b.safetensors", 2);
	a = slurp("a.safetensors", &plen[1]);
	b = slurp("b.safetensors", &plen[2]);
	part[0] = (const uint8_t *)index, plen[0] = strlen(index), part[1] = a, part[2] = b;
	seed("fuzz_safetensors", "bf16.safetensors", "", 0, a, plen[1]);
	j = join(&n, 3, part, plen);
	seed("fuzz_manifest", "sharded", "", 0, j, n);
	free(j);
	free(a);
	free(b);
}

/* PEFT directories of both families as sc_adapter_save writes them. */
static void peft(void)
{
	static const unsigned targets[2] = { 0x3, 0x5 };
	for (int k = 0; k < 2; k++) {
		sc_lora_config lc = { .rank = 2, .alpha = 4, .targets = targets[k], .seed = 1 };
		sc_model_config mc;
		sc_adapter *ad = NULL;
		const uint8_t *part[2];
		size_t plen[2], n;
		uint8_t *c, *s, *j;
		fuzz_small_model(&mc, k);
		if (sc_adapter_new(&ad, &lc, &mc))
			die("adapter");
		sc_adapter_init(ad);
		if (sc_adapter_save(ad, fuzz_dir(), "fuzz/base"))
			die("adapter save");
		c = slurp("adapter_config.json", &plen[0]);
		s = slurp("adapter_model.safetensors", &plen[1]);
		part[0] = c, part[1] = s;
		j = join(&n, 2, part, plen);
		seed("fuzz_peft", k ? "llama" : "gpt2", "", 0, j, n);
		free(j), free(c), free(s);
		sc_adapter_free(ad);
	}
}

static void tokens(void)
{
	static const int32_t small[12] = { 1, 2, 3, 255, 0, 17, 299, 5, 6, 7, 8, 9 };
	static const int32_t big[6] = { 1, 70000, 3, 4, 5, 6 };
	char p[512];
	uint8_t *b = NULL;
	size_t n;
	sc_tokens_save(fuzz_path(p, sizeof(p), "t16.bin"), small, 12);
	sc_tokens_save(fuzz_path(p, sizeof(p), "t32.bin"), big, 6);
	b = slurp("t16.bin", &n);
	seed("fuzz_tokens", "v1.bin", "", 0, b, n);
	seed("fuzz_dataset", "v1.bin", "", 0, b, n);
	free(b);
	b = slurp("t32.bin", &n);
	seed("fuzz_tokens", "v2.bin", "", 0, b, n);
	free(b);
	seed("fuzz_tokens", "text", "", 0, "plain text\n", 11);
}

/* Frames of every wire encoding, as a stage sends them to fuzz_dp_frame's
 * receiver; hellos; bare codec payloads. */
static void dataplane(void)
{
	const sc_dp_tag tag = FUZZ_DP_TAG_INIT;
	const sc_dp_peer from = FUZZ_DP_PEER_INIT;
	const int64_t shape[3] = { 2, 4, 8 };
	float x[64];
	uint8_t buf[4 + SC_DP_MAX_HEADER + 512], *h;
	size_t n, hl;
	for (int i = 0; i < 64; i++)
		x[i] = (float)(i % 9) * 0.37f - 1.2f;
	for (int w = 0; w < SC_WIRE_COUNT; w++) {
		size_t pay = sc_wire_bytes((enum sc_wire)w, 8, 8);
		uint8_t sel = (uint8_t)w, *payload = malloc(pay);
		uint8_t head[3] = { (uint8_t)w, 8, 8 };
		char name[32];
		sc_wire_encode((enum sc_wire)w, x, 8, 8, NULL, NULL, payload);
		if (dp_pack_prefix(buf, &n, &tag, &from, 3, shape, w, payload, pay, 0))
			die("dp_pack_prefix");
		if (n + pay > sizeof(buf))
			die("frame too big");
		memcpy(buf + n, payload, pay);
		snprintf(name, sizeof(name), "%s", sc_wire_name((enum sc_wire)w));
		seed("fuzz_dp_frame", name, &sel, 1, buf, n + pay);
		seed("fuzz_codec", name, head, 3, payload, pay);
		free(payload);
	}
	if (sc_dp_encode_hello(&h, &hl, &from, NULL))
		die("hello");
	seed("fuzz_dp_hello", "hello", "", 0, h, hl);
	free(h);
	uint8_t secret[SC_DP_SECRET_LEN];
	for (size_t i = 0; i < sizeof(secret); i++)
		secret[i] = (uint8_t)(0xa5 ^ i); /* fuzz_dp_hello.c's */
	if (sc_dp_encode_hello(&h, &hl, &from, secret))
		die("hello");
	seed("fuzz_dp_hello", "hello-secret", "", 0, h, hl);
	free(h);
}

/* Each method's request, packed, for fuzz_rpc_request (method byte first)
 * and wrapped in an envelope for fuzz_rpc_envelope. */
static void rpc_one(int i, const ProtobufCMessage *m, uint64_t id)
{
	Splitchain__Envelope e = SPLITCHAIN__ENVELOPE__INIT;
	size_t n = protobuf_c_message_get_packed_size(m), en;
	uint8_t *b = malloc(n + 1), *eb, sel = (uint8_t)i;
	char name[64];
	protobuf_c_message_pack(m, b);
	snprintf(name, sizeof(name), "%s", fuzz_methods[i].name);
	for (char *c = name; *c; c++)
		if (*c == ' ')
			*c = '_';
	seed("fuzz_rpc_request", name, &sel, 1, b, n);
	if (i < FUZZ_N_SERVED) {
		e.magic = SC_RPC_MAGIC;
		e.version = SC_RPC_VERSION;
		e.method = (char *)fuzz_methods[i].name;
		e.request_id = id;
		e.body.data = b;
		e.body.len = n;
		en = splitchain__envelope__get_packed_size(&e);
		eb = malloc(en + 1);
		splitchain__envelope__pack(&e, eb);
		seed("fuzz_rpc_envelope", name, "", 0, eb, en);
		free(eb);
	}
	free(b);
}

static int method_index(const char *name)
{
	for (int i = 0; i < FUZZ_N_METHODS; i++)
		if (!strcmp(fuzz_methods[i].name, name))
			return i;
	die(name);
	return -1;
}

static void rpc(void)
{
	Splitchain__LoraConfig lora = SPLITCHAIN__LORA_CONFIG__INIT;
	Splitchain__TrainConfig train = SPLITCHAIN__TRAIN_CONFIG__INIT;
	Splitchain__SubmitRequest sub = SPLITCHAIN__SUBMIT_REQUEST__INIT;
	Splitchain__AssignRequest as = SPLITCHAIN__ASSIGN_REQUEST__INIT;
	Splitchain__RestoreRequest rs = SPLITCHAIN__RESTORE_REQUEST__INIT;
	Splitchain__StateReply st = SPLITCHAIN__STATE_REPLY__INIT;
	Splitchain__RegisterRequest reg = SPLITCHAIN__REGISTER_REQUEST__INIT;
	Splitchain__JobRef ref = SPLITCHAIN__JOB_REF__INIT;
	Splitchain__Empty empty = SPLITCHAIN__EMPTY__INIT;
	Splitchain__NamedTensor *nt[16], nts[16];
	sc_adapter_tensor *at = NULL;
	sc_train_config tc;
	int n = 0;

	fuzz_requests_init();
	sc_train_config_defaults(&tc);
	sc_wire_train_message(&train, &tc);
	lora.rank = 2, lora.alpha = 4, lora.targets = 3, lora.seed = 1;
	lora.target_names = "c_attn,c_proj";
	sub.name = "seed", sub.model_path = "models/tiny", sub.data_path = "data.jsonl";
	sub.lora = &lora, sub.train = &train, sub.stages = 2;
	rpc_one(method_index("Coordinator.Submit"), &sub.base, 1);
	as.job_id = 7, as.placement_version = 2, as.stage = 1, as.n_stages = 2;
	as.first_layer = 1, as.last_layer = 2, as.model_path = "models/tiny";
	as.lora = &lora, as.train = &train, as.layer_quant = "1:nf4";
	rpc_one(method_index("Worker.Assign"), &as.base, 2);
	if (sc_adapter_tensors(fuzz_adapters[0], 0, 2, &at, &n) || n > 16)
		die("adapter tensors");
	for (int i = 0; i < n; i++) {
		nts[i] = (Splitchain__NamedTensor)SPLITCHAIN__NAMED_TENSOR__INIT;
		nts[i].name = at[i].name;
		nts[i].n_shape = 2;
		nts[i].shape = at[i].shape;
		nts[i].data.data = (uint8_t *)at[i].data;
		nts[i].data.len = at[i].numel * sizeof(float);
		nt[i] = &nts[i];
	}
	rs.job_id = 7, rs.n_lora = (size_t)n, rs.lora = nt;
	rpc_one(method_index("Worker.Restore"), &rs.base, 3);
	st.n_lora = (size_t)n, st.lora = nt, st.n_adam_v = (size_t)n, st.adam_v = nt;
	rpc_one(method_index("reply StateReply"), &st.base, 4);
	reg.name = "w0", reg.device = "cpu", reg.memory_bytes = 1 << 30, reg.gflops = 10;
	reg.control_addr = "tcp://127.0.0.1:5555", reg.data_addr = "tcp://127.0.0.1:5556";
	rpc_one(method_index("Coordinator.Register"), &reg.base, 5);
	ref.job_id = 7;
	rpc_one(method_index("Coordinator.Status"), &ref.base, 6);
	rpc_one(method_index("Coordinator.Export"), &ref.base, 7);
	rpc_one(method_index("Worker.GetState"), &ref.base, 0);
	rpc_one(method_index("Coordinator.Jobs"), &empty.base, 8);
	free(at);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
		return 2;
	}
	root = argv[1];
	if (mkdir(root, 0755) && errno != EEXIST)
		die(root);
	configs();
	safetensors_and_manifests();
	peft();
	tokens();
	dataplane();
	rpc();
	return 0;
}
