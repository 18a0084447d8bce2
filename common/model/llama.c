/* llama.c — the Llama family (model_type llama, mistral, qwen2): RMSNorm,
 * rotary positions (Hugging Face's half-split convention, linear or llama3
 * frequency scaling), grouped-query attention, optional q/k/v/o and MLP
 * biases (Qwen2: q, k, v), a sliding window (Mistral), SwiGLU, nn.Linear
 * weights stored (out, in), a tied or untied LM head. Every Llama name lives
 * in this file. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "config_impl.h"
#include "layer.h"
#include "sc_family.h"

enum { T_Q, T_K, T_V, T_O, T_GATE, T_UP, T_DOWN, N_TARGETS };
static const char *const targets[N_TARGETS + 1] = { "self_attn.q_proj", "self_attn.k_proj",
						    "self_attn.v_proj", "self_attn.o_proj",
						    "mlp.gate_proj",    "mlp.up_proj",
						    "mlp.down_proj",    NULL };

/* Frozen tensors of a layer: the two norms, then each projection's weight
 * and (optional) bias in target order. */
enum { P_LN1, P_LN2, P_PROJ, N_PARAMS = P_PROJ + 2 * N_TARGETS };
#define P_W(t) (P_PROJ + 2 * (t))
#define P_B(t) (P_PROJ + 2 * (t) + 1)

enum {
	A_LN1,   /* (N,C) */
	A_RSTD1, /* (N) */
	A_QKV,   /* (N,QKV) q and k rotated */
	A_ATTY,  /* (N,NH*hs) */
	A_ATT,   /* attention state */
	A_RES2,  /* (N,C) */
	A_LN2,   /* (N,C) */
	A_RSTD2, /* (N) */
	A_GU,    /* (N,2F) gate | up */
	A_ACT,   /* (N,F) silu(gate) * up */
	A_RES3,  /* (N,C) the layer's output */
	N_ACTS
};
enum {
	S_DLN,  /* (N, max(C, NH*hs)) */
	S_DMID, /* (N,F) */
	S_DBIG, /* (N, max(QKV, 2F)): dqkv, dgu */
	S_DATT,
	N_SCRATCH
};

static int qkv_width(const sc_model_config *c)
{
	return (c->n_head + 2 * c->n_kv_head) * c->head_dim;
}

static size_t max_sz(size_t a, size_t b)
{
	return a > b ? a : b;
}

static void target_dims(const sc_model_config *c, int t, int *in, int *out)
{
	int C = c->n_embd, q = c->n_head * c->head_dim, kv = c->n_kv_head * c->head_dim;
	const int ins[N_TARGETS] = { C, C, C, q, C, C, c->n_inner };
	const int outs[N_TARGETS] = { q, kv, kv, C, c->n_inner, c->n_inner, C };
	*in = ins[t];
	*out = outs[t];
}

static int has_bias(const sc_model_config *c, int t)
{
	if (t <= T_V)
		return c->qkv_bias;
	return t == T_O ? c->o_bias : c->mlp_bias;
}

static void layer_params(const sc_model_config *c, int l, sc_param_desc *out)
{
	char name[96];
	memset(out, 0, N_PARAMS * sizeof(*out));
	snprintf(name, sizeof(name), "model.layers.%d.input_layernorm.weight", l);
	sc_param_set(&out[P_LN1], name, 1, c->n_embd, 0, SC_INIT_ONE);
	snprintf(name, sizeof(name), "model.layers.%d.post_attention_layernorm.weight", l);
	sc_param_set(&out[P_LN2], name, 1, c->n_embd, 0, SC_INIT_ONE);
	for (int t = 0; t < N_TARGETS; t++) {
		int in, o;
		target_dims(c, t, &in, &o);
		snprintf(name, sizeof(name), "model.layers.%d.%s.weight", l, targets[t]);
		sc_param_set(&out[P_W(t)], name, 2, o, in, SC_INIT_NORMAL);
		if (has_bias(c, t)) {
			snprintf(name, sizeof(name), "model.layers.%d.%s.bias", l, targets[t]);
			sc_param_set(&out[P_B(t)], name, 1, o, 0, SC_INIT_ZERO);
		}
	}
}

static void global_params(const sc_model_config *c, sc_param_desc *out)
{
	memset(out, 0, SC_GP_COUNT * sizeof(*out));
	sc_param_set(&out[SC_GP_EMBED], "model.embed_tokens.weight", 2, c->vocab_size, c->n_embd,
		     SC_INIT_NORMAL);
	sc_param_set(&out[SC_GP_NORM_W], "model.norm.weight", 1, c->n_embd, 0, SC_INIT_ONE);
	if (!c->tie_embeddings)
		sc_param_set(&out[SC_GP_HEAD], "lm_head.weight", 2, c->vocab_size, c->n_embd,
			     SC_INIT_NORMAL);
}

static void act_sizes(const sc_model_config *c, size_t N, size_t attn_state, size_t *a)
{
	size_t C = (size_t)c->n_embd, F = (size_t)c->n_inner;
	size_t sizes[N_ACTS] = {
		[A_LN1] = N * C,
		[A_RSTD1] = N,
		[A_QKV] = N * (size_t)qkv_width(c),
		[A_ATTY] = N * (size_t)c->n_head * (size_t)c->head_dim,
		[A_ATT] = attn_state,
		[A_RES2] = N * C,
		[A_LN2] = N * C,
		[A_RSTD2] = N,
		[A_GU] = 2 * N * F,
		[A_ACT] = N * F,
		[A_RES3] = N * C,
	};
	memcpy(a, sizes, sizeof(sizes));
}

static void scratch_sizes(const sc_model_config *c, size_t N, size_t attn_scratch, size_t *s)
{
	size_t q = (size_t)c->n_head * (size_t)c->head_dim, F = (size_t)c->n_inner;
	s[S_DLN] = N * max_sz((size_t)c->n_embd, q);
	s[S_DMID] = N * F;
	s[S_DBIG] = N * max_sz((size_t)qkv_width(c), 2 * F);
	s[S_DATT] = attn_scratch;
}

static sc_err layer_forward(const sc_layer *L, const float *x)
{
	const sc_model_config *c = L->mc;
	float *const *w = L->w, *const *a = L->a;
	int N = L->N, C = c->n_embd, F = c->n_inner, QKV = qkv_width(c);
	int qw = c->n_head * c->head_dim, kvw = c->n_kv_head * c->head_dim;
	size_t NC = (size_t)N * C;

	LAYER_OP(L, rmsnorm_forward, a[A_LN1], a[A_RSTD1], x, w[P_LN1], N, C, c->ln_eps);
	SC_TRY(sc_layer_linear_forward(L, T_Q, w[P_W(T_Q)], w[P_B(T_Q)], a[A_QKV], QKV, a[A_LN1]));
	SC_TRY(sc_layer_linear_forward(L, T_K, w[P_W(T_K)], w[P_B(T_K)], a[A_QKV] + qw, QKV,
				       a[A_LN1]));
	SC_TRY(sc_layer_linear_forward(L, T_V, w[P_W(T_V)], w[P_B(T_V)], a[A_QKV] + qw + kvw, QKV,
				       a[A_LN1]));
	LAYER_OP(L, rope, a[A_QKV], L->rope_cos, L->rope_sin, L->attn.B, L->attn.T, c->n_head,
		 c->n_kv_head, c->head_dim, 0);
	SC_TRY(sc_layer_attention(L, a[A_ATTY], a[A_ATT], a[A_QKV]));
	SC_TRY(sc_layer_linear_forward(L, T_O, w[P_W(T_O)], w[P_B(T_O)], a[A_RES2], C, a[A_ATTY]));
	LAYER_OP(L, add, a[A_RES2], a[A_RES2], x, NC);
	LAYER_OP(L, rmsnorm_forward, a[A_LN2], a[A_RSTD2], a[A_RES2], w[P_LN2], N, C, c->ln_eps);
	SC_TRY(sc_layer_linear_forward(L, T_GATE, w[P_W(T_GATE)], w[P_B(T_GATE)], a[A_GU], 2 * F,
				       a[A_LN2]));
	SC_TRY(sc_layer_linear_forward(L, T_UP, w[P_W(T_UP)], w[P_B(T_UP)], a[A_GU] + F, 2 * F,
				       a[A_LN2]));
	LAYER_OP(L, swiglu_forward, a[A_ACT], a[A_GU], N, F);
	SC_TRY(sc_layer_linear_forward(L, T_DOWN, w[P_W(T_DOWN)], w[P_B(T_DOWN)], a[A_RES3], C,
				       a[A_ACT]));
	LAYER_OP(L, add, a[A_RES3], a[A_RES3], a[A_RES2], NC);
	return SC_OK;
}

static sc_err layer_backward(const sc_layer *L, const float *x, float *dcur)
{
	const sc_model_config *c = L->mc;
	float *const *w = L->w, *const *a = L->a;
	int N = L->N, C = c->n_embd, F = c->n_inner, QKV = qkv_width(c);
	int qw = c->n_head * c->head_dim, kvw = c->n_kv_head * c->head_dim;
	float *dln = L->s[S_DLN], *dmid = L->s[S_DMID], *dbig = L->s[S_DBIG];

	/* MLP: res3 = res2 + down(silu(gate(ln2)) * up(ln2)), ln2 = norm(res2) */
	SC_TRY(sc_layer_linear_backward(L, T_DOWN, w[P_W(T_DOWN)], dmid, 0, dcur, C, a[A_ACT]));
	LAYER_OP(L, swiglu_backward, dbig, dmid, a[A_GU], N, F);
	SC_TRY(sc_layer_linear_backward(L, T_GATE, w[P_W(T_GATE)], dln, 0, dbig, 2 * F, a[A_LN2]));
	SC_TRY(sc_layer_linear_backward(L, T_UP, w[P_W(T_UP)], dln, 1, dbig + F, 2 * F, a[A_LN2]));
	LAYER_OP(L, rmsnorm_backward, dcur, dln, a[A_RES2], w[P_LN2], a[A_RSTD2], N, C);
	/* Attention: res2 = x + o(attn(rope(q, k), v)), q, k, v of ln1 = norm(x) */
	SC_TRY(sc_layer_linear_backward(L, T_O, w[P_W(T_O)], dln, 0, dcur, C, a[A_ATTY]));
	LAYER_OP(L, attention_backward, dbig, L->s[S_DATT], dln, a[A_QKV], a[A_ATTY], a[A_ATT],
		 &L->attn);
	LAYER_OP(L, rope, dbig, L->rope_cos, L->rope_sin, L->attn.B, L->attn.T, c->n_head,
		 c->n_kv_head, c->head_dim, 1);
	SC_TRY(sc_layer_linear_backward(L, T_Q, w[P_W(T_Q)], dln, 0, dbig, QKV, a[A_LN1]));
	SC_TRY(sc_layer_linear_backward(L, T_K, w[P_W(T_K)], dln, 1, dbig + qw, QKV, a[A_LN1]));
	SC_TRY(
	    sc_layer_linear_backward(L, T_V, w[P_W(T_V)], dln, 1, dbig + qw + kvw, QKV, a[A_LN1]));
	LAYER_OP(L, rmsnorm_backward, dcur, dln, x, w[P_LN1], a[A_RSTD1], N, C);
	return SC_OK;
}

/* ---- config.json ---- */

/* rope_scaling: null, or {"rope_type" (or "type"): "default" | "linear" |
 * "llama3", "factor": ..., llama3's frequency factors}. */
static sc_err parse_rope_scaling(sc_model_config *c, const cJSON *root)
{
	static const char *const kinds[] = { "default", "linear", "llama3", NULL };
	const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
	const char *kind = NULL;
	c->rope_scaling = SC_ROPE_NONE;
	if (!rs || cJSON_IsNull(rs))
		return SC_OK;
	if (!cJSON_IsObject(rs))
		return sc_errf(SC_EFORMAT, "field rope_scaling must be an object or null");
	SC_TRY(sc_cfg_str_one_of(rs, "rope_type", kinds, &kind));
	if (!kind)
		SC_TRY(sc_cfg_str_one_of(rs, "type", kinds, &kind));
	if (!kind)
		return sc_errf(SC_EFORMAT, "rope_scaling has no rope_type");
	if (!strcmp(kind, "default"))
		return SC_OK;
	SC_TRY(sc_cfg_num_opt(rs, "factor", 0, 0, 1e6, &c->rope_factor));
	if (!(c->rope_factor > 0))
		return sc_errf(SC_EFORMAT, "rope_scaling.factor is missing");
	if (!strcmp(kind, "linear")) {
		c->rope_scaling = SC_ROPE_LINEAR;
		return SC_OK;
	}
	c->rope_scaling = SC_ROPE_LLAMA3;
	SC_TRY(sc_cfg_num_opt(rs, "low_freq_factor", 0, 0, 1e6, &c->rope_low_freq_factor));
	SC_TRY(sc_cfg_num_opt(rs, "high_freq_factor", 0, 0, 1e6, &c->rope_high_freq_factor));
	static const char *const k_orig[] = { "original_max_position_embeddings", NULL };
	SC_TRY(sc_cfg_int(rs, k_orig, &c->rope_original_max_positions));
	if (!(c->rope_low_freq_factor > 0) ||
	    !(c->rope_high_freq_factor > c->rope_low_freq_factor) ||
	    c->rope_original_max_positions < 1)
		return sc_errf(SC_EFORMAT,
			       "rope_scaling llama3 needs low_freq_factor > 0, high_freq_factor > "
			       "low_freq_factor and original_max_position_embeddings >= 1");
	return SC_OK;
}

/* A token id field that may be a number, a list (the first is kept) or null. */
static sc_err parse_token_id(const cJSON *root, const char *key, int *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
	*out = -1;
	if (cJSON_IsArray(v))
		v = v->child;
	if (!v || cJSON_IsNull(v))
		return SC_OK;
	if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 2147483647.0)
		return sc_errf(SC_EFORMAT, "field %s must be a token id", key);
	*out = (int)v->valuedouble;
	return SC_OK;
}

static sc_err parse_config(sc_model_config *c, const cJSON *root)
{
	static const char *const k_layer[] = { "num_hidden_layers", NULL };
	static const char *const k_head[] = { "num_attention_heads", NULL };
	static const char *const k_embd[] = { "hidden_size", NULL };
	static const char *const k_inner[] = { "intermediate_size", NULL };
	static const char *const k_vocab[] = { "vocab_size", NULL };
	static const char *const k_pos[] = { "max_position_embeddings", NULL };
	static const char *const silu[] = { "silu", NULL };
	const char *act;
	double eps;
	int is_qwen2 = !strcmp(c->model_type, "qwen2"),
	    is_mistral = !strcmp(c->model_type, "mistral");

	SC_TRY(sc_cfg_int(root, k_layer, &c->n_layer));
	SC_TRY(sc_cfg_int(root, k_head, &c->n_head));
	SC_TRY(sc_cfg_int(root, k_embd, &c->n_embd));
	SC_TRY(sc_cfg_int(root, k_inner, &c->n_inner));
	SC_TRY(sc_cfg_int(root, k_vocab, &c->vocab_size));
	SC_TRY(sc_cfg_int(root, k_pos, &c->n_positions));
	SC_TRY(sc_cfg_int_opt(root, "num_key_value_heads", c->n_head, &c->n_kv_head));
	SC_TRY(sc_cfg_int_opt(root, "head_dim", c->n_head > 0 ? c->n_embd / c->n_head : 0,
			      &c->head_dim));
	if (!cJSON_GetObjectItemCaseSensitive(root, "head_dim") && c->n_head > 0 &&
	    c->n_embd % c->n_head)
		return sc_errf(SC_EFORMAT,
			       "hidden_size %d is not divisible by num_attention_heads %d (and "
			       "no head_dim is given)",
			       c->n_embd, c->n_head);
	SC_TRY(sc_cfg_num_opt(root, "rms_norm_eps", 1e-6, 0, 1, &eps));
	c->ln_eps = (float)eps;
	SC_TRY(sc_cfg_num_opt(root, "rope_theta", 10000.0, 0, 1e12, &c->rope_theta));
	SC_TRY(parse_rope_scaling(c, root));
	SC_TRY(sc_cfg_str_one_of(root, "hidden_act", silu, &act));
	SC_TRY(sc_cfg_bool_opt(root, "tie_word_embeddings", 0, &c->tie_embeddings));
	if (is_qwen2) {
		int use_sw;
		c->qkv_bias = 1;
		SC_TRY(sc_cfg_bool_opt(root, "use_sliding_window", 0, &use_sw));
		if (use_sw)
			return sc_errf(SC_ENOTSUP, "use_sliding_window true is not supported for "
						   "qwen2 (per-layer windows)");
	} else {
		SC_TRY(sc_cfg_bool_opt(root, "attention_bias", 0, &c->qkv_bias));
		c->o_bias = c->qkv_bias;
		SC_TRY(sc_cfg_bool_opt(root, "mlp_bias", 0, &c->mlp_bias));
	}
	if (is_mistral)
		SC_TRY(sc_cfg_int_opt(root, "sliding_window", 0, &c->sliding_window));
	SC_TRY(sc_cfg_int_opt(root, "pretraining_tp", 1, &(int){ 0 }));
	SC_TRY(parse_token_id(root, "bos_token_id", &c->bos_token_id));
	SC_TRY(parse_token_id(root, "eos_token_id", &c->eos_token_id));
	return SC_OK;
}

static sc_err validate(const sc_model_config *c)
{
	if (c->head_dim % 2)
		return sc_errf(SC_EFORMAT, "head_dim %d must be even (rotary pairs)", c->head_dim);
	if (!(c->rope_theta > 0))
		return sc_errf(SC_EFORMAT, "rope_theta must be > 0");
	return SC_OK;
}

static const char *arch_name(const sc_model_config *c)
{
	if (!strcmp(c->model_type, "qwen2"))
		return "Qwen2ForCausalLM";
	if (!strcmp(c->model_type, "mistral"))
		return "MistralForCausalLM";
	return "LlamaForCausalLM";
}

static int add_rope_scaling(cJSON *o, const sc_model_config *c)
{
	if (c->rope_scaling == SC_ROPE_NONE)
		return cJSON_AddNullToObject(o, "rope_scaling") != NULL;
	cJSON *rs = cJSON_AddObjectToObject(o, "rope_scaling");
	int ok = rs && cJSON_AddNumberToObject(rs, "factor", c->rope_factor);
	if (c->rope_scaling == SC_ROPE_LINEAR)
		return ok && cJSON_AddStringToObject(rs, "rope_type", "linear");
	ok = ok && cJSON_AddNumberToObject(rs, "high_freq_factor", c->rope_high_freq_factor);
	ok = ok && cJSON_AddNumberToObject(rs, "low_freq_factor", c->rope_low_freq_factor);
	ok = ok && cJSON_AddNumberToObject(rs, "original_max_position_embeddings",
					   c->rope_original_max_positions);
	return ok && cJSON_AddStringToObject(rs, "rope_type", "llama3");
}

static cJSON *config_json(const sc_model_config *c)
{
	cJSON *o = cJSON_CreateObject(), *arch = cJSON_CreateArray();
	int ok = o && arch && cJSON_AddItemToArray(arch, cJSON_CreateString(arch_name(c)));
	int qwen2 = !strcmp(c->model_type, "qwen2"), llama = !strcmp(c->model_type, "llama");
	ok = ok && cJSON_AddItemToObject(o, "architectures", arch);
	if (!ok)
		cJSON_Delete(arch);
	if (llama) {
		ok = ok && (c->qkv_bias ? cJSON_AddTrueToObject(o, "attention_bias")
					: cJSON_AddFalseToObject(o, "attention_bias"));
		ok = ok && (c->mlp_bias ? cJSON_AddTrueToObject(o, "mlp_bias")
					: cJSON_AddFalseToObject(o, "mlp_bias"));
	}
	ok = ok && cJSON_AddNumberToObject(o, "attention_dropout", 0.0);
	if (c->bos_token_id >= 0)
		ok = ok && cJSON_AddNumberToObject(o, "bos_token_id", c->bos_token_id);
	if (c->eos_token_id >= 0)
		ok = ok && cJSON_AddNumberToObject(o, "eos_token_id", c->eos_token_id);
	ok = ok && cJSON_AddNumberToObject(o, "head_dim", c->head_dim);
	ok = ok && cJSON_AddStringToObject(o, "hidden_act", "silu");
	ok = ok && cJSON_AddNumberToObject(o, "hidden_size", c->n_embd);
	ok = ok && cJSON_AddNumberToObject(o, "initializer_range", 0.02);
	ok = ok && cJSON_AddNumberToObject(o, "intermediate_size", c->n_inner);
	ok = ok && cJSON_AddNumberToObject(o, "max_position_embeddings", c->n_positions);
	ok = ok && cJSON_AddStringToObject(o, "model_type", c->model_type);
	ok = ok && cJSON_AddNumberToObject(o, "num_attention_heads", c->n_head);
	ok = ok && cJSON_AddNumberToObject(o, "num_hidden_layers", c->n_layer);
	ok = ok && cJSON_AddNumberToObject(o, "num_key_value_heads", c->n_kv_head);
	ok = ok && cJSON_AddNumberToObject(o, "rms_norm_eps", sc_cfg_short_float(c->ln_eps));
	ok = ok && add_rope_scaling(o, c);
	ok = ok && cJSON_AddNumberToObject(o, "rope_theta", c->rope_theta);
	if (c->sliding_window)
		ok = ok && cJSON_AddNumberToObject(o, "sliding_window", c->sliding_window);
	else
		ok = ok && cJSON_AddNullToObject(o, "sliding_window");
	ok = ok && (c->tie_embeddings ? cJSON_AddTrueToObject(o, "tie_word_embeddings")
				      : cJSON_AddFalseToObject(o, "tie_word_embeddings"));
	ok = ok && cJSON_AddStringToObject(o, "torch_dtype", "float32");
	if (qwen2)
		ok = ok && cJSON_AddFalseToObject(o, "use_sliding_window");
	ok = ok && cJSON_AddTrueToObject(o, "use_cache");
	ok = ok && cJSON_AddNumberToObject(o, "vocab_size", c->vocab_size);
	if (!ok) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

static const char *const model_types[] = { "llama", "mistral", "qwen2", NULL };
static const char *const file_prefixes[] = { "", NULL };

const sc_family sc_family_llama = {
	.name = "llama",
	.model_types = model_types,
	.parse_config = parse_config,
	.validate = validate,
	.config_json = config_json,
	.n_targets = N_TARGETS,
	.targets = targets,
	.target_dims = target_dims,
	.peft_prefix = "base_model.model.model.layers.",
	.fan_in_fan_out = 0,
	.file_prefixes = file_prefixes,
	.n_layer_params = N_PARAMS,
	.layer_params = layer_params,
	.global_params = global_params,
	.rms_norm = 1,
	.n_layer_acts = N_ACTS,
	.n_scratch = N_SCRATCH,
	.out_act = A_RES3,
	.act_sizes = act_sizes,
	.scratch_sizes = scratch_sizes,
	.layer_forward = layer_forward,
	.layer_backward = layer_backward,
};
