/* gpt2.c — the GPT-2 family: LayerNorm, learned positions, GELU (tanh), one
 * fused q|k|v projection, Conv1D weights stored (in, out), the LM head tied
 * to the token embedding. Every GPT-2 name lives in this file. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "config_impl.h"
#include "layer.h"
#include "sc_family.h"

/* LoRA targets, in bit order. */
enum { T_QKV, T_ATTN_PROJ, T_FC, T_MLP_PROJ, N_TARGETS };
static const char *const targets[N_TARGETS + 1] = { "attn.c_attn", "attn.c_proj", "mlp.c_fc",
						    "mlp.c_proj", NULL };

/* Frozen tensors of a layer: the norms, then each projection's weight and
 * bias in target order (make-model draws them in this order). */
enum { P_LN1_W, P_LN1_B, P_LN2_W, P_LN2_B, P_PROJ, N_PARAMS = P_PROJ + 2 * N_TARGETS };
#define P_W(t) (P_PROJ + 2 * (t))
#define P_B(t) (P_PROJ + 2 * (t) + 1)

/* Activations of a layer. */
enum {
	A_LN1,      /* (N,C) */
	A_LN1_MEAN, /* (N) */
	A_LN1_RSTD, /* (N) */
	A_QKV,      /* (N,3C) */
	A_ATTY,     /* (N,C) */
	A_ATT,      /* attention state */
	A_RES2,     /* (N,C) */
	A_LN2,      /* (N,C) */
	A_LN2_MEAN, /* (N) */
	A_LN2_RSTD, /* (N) */
	A_FCH,      /* (N,4C) */
	A_FCH_GELU, /* (N,4C) */
	A_RES3,     /* (N,C) the layer's output */
	N_ACTS
};
enum { S_DLN /* (N,C) */, S_DBIG /* (N,4C), also dqkv (N,3C) */, S_DATT, N_SCRATCH };

static void target_dims(const sc_model_config *c, int t, int *in, int *out)
{
	static const int mul_in[N_TARGETS] = { 1, 1, 1, 4 };
	static const int mul_out[N_TARGETS] = { 3, 1, 4, 1 };
	*in = mul_in[t] * c->n_embd;
	*out = mul_out[t] * c->n_embd;
}

static void layer_params(const sc_model_config *c, int l, sc_param_desc *out)
{
	char name[96];
	int64_t C = c->n_embd;
	static const char *const ln[2] = { "ln_1", "ln_2" };
	for (int k = 0; k < 2; k++) {
		snprintf(name, sizeof(name), "h.%d.%s.weight", l, ln[k]);
		sc_param_set(&out[P_LN1_W + 2 * k], name, 1, C, 0, SC_INIT_ONE);
		snprintf(name, sizeof(name), "h.%d.%s.bias", l, ln[k]);
		sc_param_set(&out[P_LN1_B + 2 * k], name, 1, C, 0, SC_INIT_ZERO);
	}
	for (int t = 0; t < N_TARGETS; t++) {
		int in, o, resid = t == T_ATTN_PROJ || t == T_MLP_PROJ;
		target_dims(c, t, &in, &o);
		snprintf(name, sizeof(name), "h.%d.%s.weight", l, targets[t]);
		sc_param_set(&out[P_W(t)], name, 2, in, o, resid ? SC_INIT_RESID : SC_INIT_NORMAL);
		snprintf(name, sizeof(name), "h.%d.%s.bias", l, targets[t]);
		sc_param_set(&out[P_B(t)], name, 1, o, 0, SC_INIT_ZERO);
	}
}

static void global_params(const sc_model_config *c, sc_param_desc *out)
{
	memset(out, 0, SC_GP_COUNT * sizeof(*out));
	sc_param_set(&out[SC_GP_EMBED], "wte.weight", 2, c->vocab_size, c->n_embd, SC_INIT_NORMAL);
	sc_param_set(&out[SC_GP_POS], "wpe.weight", 2, c->n_positions, c->n_embd, SC_INIT_POS);
	sc_param_set(&out[SC_GP_NORM_W], "ln_f.weight", 1, c->n_embd, 0, SC_INIT_ONE);
	sc_param_set(&out[SC_GP_NORM_B], "ln_f.bias", 1, c->n_embd, 0, SC_INIT_ZERO);
}

static void act_sizes(const sc_model_config *c, size_t N, size_t attn_state, size_t *a)
{
	size_t NC = N * (size_t)c->n_embd;
	size_t sizes[N_ACTS] = {
		[A_LN1] = NC,     [A_LN1_MEAN] = N,     [A_LN1_RSTD] = N, [A_QKV] = 3 * NC,
		[A_ATTY] = NC,    [A_ATT] = attn_state, [A_RES2] = NC,    [A_LN2] = NC,
		[A_LN2_MEAN] = N, [A_LN2_RSTD] = N,     [A_FCH] = 4 * NC, [A_FCH_GELU] = 4 * NC,
		[A_RES3] = NC,
	};
	memcpy(a, sizes, sizeof(sizes));
}

static void scratch_sizes(const sc_model_config *c, size_t N, size_t attn_scratch, size_t *s)
{
	size_t NC = N * (size_t)c->n_embd;
	s[S_DLN] = NC;
	s[S_DBIG] = 4 * NC;
	s[S_DATT] = attn_scratch;
}

static sc_err layer_forward(const sc_layer *L, const float *x)
{
	float *const *w = L->w, *const *a = L->a;
	int N = L->N, C = L->mc->n_embd;
	size_t NC = (size_t)N * C;
	float eps = L->mc->ln_eps;

	LAYER_OP(L, layernorm_forward, a[A_LN1], a[A_LN1_MEAN], a[A_LN1_RSTD], x, w[P_LN1_W],
		 w[P_LN1_B], N, C, eps);
	SC_TRY(sc_layer_linear_forward(L, T_QKV, w[P_W(T_QKV)], w[P_B(T_QKV)], a[A_QKV], 3 * C,
				       a[A_LN1]));
	SC_TRY(sc_layer_attention(L, a[A_ATTY], a[A_ATT], a[A_QKV]));
	SC_TRY(sc_layer_linear_forward(L, T_ATTN_PROJ, w[P_W(T_ATTN_PROJ)], w[P_B(T_ATTN_PROJ)],
				       a[A_RES2], C, a[A_ATTY]));
	LAYER_OP(L, add, a[A_RES2], a[A_RES2], x, NC);
	LAYER_OP(L, layernorm_forward, a[A_LN2], a[A_LN2_MEAN], a[A_LN2_RSTD], a[A_RES2],
		 w[P_LN2_W], w[P_LN2_B], N, C, eps);
	SC_TRY(sc_layer_linear_forward(L, T_FC, w[P_W(T_FC)], w[P_B(T_FC)], a[A_FCH], 4 * C,
				       a[A_LN2]));
	LAYER_OP(L, gelu_forward, a[A_FCH_GELU], a[A_FCH], 4 * NC);
	SC_TRY(sc_layer_linear_forward(L, T_MLP_PROJ, w[P_W(T_MLP_PROJ)], w[P_B(T_MLP_PROJ)],
				       a[A_RES3], C, a[A_FCH_GELU]));
	LAYER_OP(L, add, a[A_RES3], a[A_RES3], a[A_RES2], NC);
	return SC_OK;
}

static sc_err layer_backward(const sc_layer *L, const float *x, float *dcur)
{
	float *const *w = L->w, *const *a = L->a;
	int N = L->N, C = L->mc->n_embd;
	float *dln = L->s[S_DLN], *dbig = L->s[S_DBIG];

	/* MLP: res3 = res2 + c_proj(gelu(c_fc(ln2(res2)))) */
	SC_TRY(sc_layer_linear_backward(L, T_MLP_PROJ, w[P_W(T_MLP_PROJ)], dbig, 0, dcur, C,
					a[A_FCH_GELU]));
	LAYER_OP(L, gelu_backward, dbig, a[A_FCH], dbig, (size_t)4 * N * C);
	SC_TRY(sc_layer_linear_backward(L, T_FC, w[P_W(T_FC)], dln, 0, dbig, 4 * C, a[A_LN2]));
	LAYER_OP(L, layernorm_backward, dcur, dln, a[A_RES2], w[P_LN2_W], a[A_LN2_MEAN],
		 a[A_LN2_RSTD], N, C);
	/* Attention: res2 = x + c_proj(attn(c_attn(ln1(x)))) */
	SC_TRY(sc_layer_linear_backward(L, T_ATTN_PROJ, w[P_W(T_ATTN_PROJ)], dln, 0, dcur, C,
					a[A_ATTY]));
	LAYER_OP(L, attention_backward, dbig, L->s[S_DATT], dln, a[A_QKV], a[A_ATTY], a[A_ATT],
		 &L->attn);
	SC_TRY(sc_layer_linear_backward(L, T_QKV, w[P_W(T_QKV)], dln, 0, dbig, 3 * C, a[A_LN1]));
	LAYER_OP(L, layernorm_backward, dcur, dln, x, w[P_LN1_W], a[A_LN1_MEAN], a[A_LN1_RSTD], N,
		 C);
	return SC_OK;
}

/* ---- config.json ---- */

static sc_err parse_config(sc_model_config *c, const cJSON *root)
{
	static const char *const k_layer[] = { "n_layer", "num_hidden_layers", NULL };
	static const char *const k_head[] = { "n_head", "num_attention_heads", NULL };
	static const char *const k_embd[] = { "n_embd", "hidden_size", NULL };
	static const char *const k_vocab[] = { "vocab_size", NULL };
	static const char *const k_pos[] = { "n_positions", "n_ctx", "max_position_embeddings",
					     NULL };
	static const char *const gelu[] = { "gelu_new", NULL };
	const char *act;
	double eps;
	SC_TRY(sc_cfg_int(root, k_layer, &c->n_layer));
	SC_TRY(sc_cfg_int(root, k_head, &c->n_head));
	SC_TRY(sc_cfg_int(root, k_embd, &c->n_embd));
	SC_TRY(sc_cfg_int(root, k_vocab, &c->vocab_size));
	SC_TRY(sc_cfg_int(root, k_pos, &c->n_positions));
	SC_TRY(sc_cfg_num_opt(root, "layer_norm_epsilon", 1e-5, 0, 1, &eps));
	c->ln_eps = (float)eps;
	SC_TRY(sc_cfg_str_one_of(root, "activation_function", gelu, &act));
	SC_TRY(sc_cfg_bool_must(root, "tie_word_embeddings", 1,
				"the output projection must be the token embedding"));
	SC_TRY(
	    sc_cfg_bool_must(root, "scale_attn_weights", 1, "attention is scaled by 1/sqrt(head)"));
	SC_TRY(sc_cfg_bool_must(root, "scale_attn_by_inverse_layer_idx", 0,
				"attention is scaled by 1/sqrt(head) only"));
	SC_TRY(sc_cfg_bool_must(root, "add_cross_attention", 0, "decoder-only model"));
	c->n_kv_head = c->n_head;
	c->head_dim = c->n_head > 0 ? c->n_embd / c->n_head : 0;
	c->n_inner = 4 * c->n_embd;
	SC_TRY(sc_cfg_int_opt(root, "n_inner", c->n_inner, &c->n_inner));
	c->tie_embeddings = c->qkv_bias = c->o_bias = c->mlp_bias = 1;
	SC_TRY(sc_cfg_int_opt(root, "bos_token_id", -1, &c->bos_token_id));
	SC_TRY(sc_cfg_int_opt(root, "eos_token_id", -1, &c->eos_token_id));
	return SC_OK;
}

static sc_err validate(const sc_model_config *c)
{
	if (c->n_embd % c->n_head != 0 || c->head_dim * c->n_head != c->n_embd)
		return sc_errf(SC_EFORMAT, "n_embd %d is not divisible by n_head %d", c->n_embd,
			       c->n_head);
	if (c->n_inner != 4 * c->n_embd)
		return sc_errf(
		    SC_ENOTSUP,
		    "n_inner %d is not supported (the MLP width must be 4 * n_embd = %d)",
		    c->n_inner, 4 * c->n_embd);
	if (c->n_kv_head != c->n_head || !c->tie_embeddings || c->rope_theta != 0 ||
	    c->sliding_window)
		return sc_errf(SC_EINVAL, "gpt2: key/value heads, untied head, rotary positions "
					  "or a sliding window are not GPT-2");
	return SC_OK;
}

static cJSON *config_json(const sc_model_config *c)
{
	cJSON *o = cJSON_CreateObject(), *arch = cJSON_CreateArray();
	int ok = o && arch && cJSON_AddItemToArray(arch, cJSON_CreateString("GPT2LMHeadModel"));
	int bos = c->bos_token_id >= 0 ? c->bos_token_id : c->vocab_size - 1;
	int eos = c->eos_token_id >= 0 ? c->eos_token_id : c->vocab_size - 1;
	ok = ok && cJSON_AddStringToObject(o, "activation_function", "gelu_new");
	ok = ok && cJSON_AddItemToObject(o, "architectures", arch);
	if (!ok)
		cJSON_Delete(arch);
	ok = ok && cJSON_AddNumberToObject(o, "attn_pdrop", 0.0);
	ok = ok && cJSON_AddNumberToObject(o, "bos_token_id", bos);
	ok = ok && cJSON_AddNumberToObject(o, "embd_pdrop", 0.0);
	ok = ok && cJSON_AddNumberToObject(o, "eos_token_id", eos);
	ok = ok && cJSON_AddNumberToObject(o, "initializer_range", 0.02);
	ok = ok && cJSON_AddNumberToObject(o, "layer_norm_epsilon", sc_cfg_short_float(c->ln_eps));
	ok = ok && cJSON_AddStringToObject(o, "model_type", "gpt2");
	ok = ok && cJSON_AddNumberToObject(o, "n_ctx", c->n_positions);
	ok = ok && cJSON_AddNumberToObject(o, "n_embd", c->n_embd);
	ok = ok && cJSON_AddNumberToObject(o, "n_head", c->n_head);
	ok = ok && cJSON_AddNullToObject(o, "n_inner");
	ok = ok && cJSON_AddNumberToObject(o, "n_layer", c->n_layer);
	ok = ok && cJSON_AddNumberToObject(o, "n_positions", c->n_positions);
	ok = ok && cJSON_AddFalseToObject(o, "reorder_and_upcast_attn");
	ok = ok && cJSON_AddNumberToObject(o, "resid_pdrop", 0.0);
	ok = ok && cJSON_AddFalseToObject(o, "scale_attn_by_inverse_layer_idx");
	ok = ok && cJSON_AddTrueToObject(o, "scale_attn_weights");
	ok = ok && cJSON_AddNullToObject(o, "summary_activation");
	ok = ok && cJSON_AddNumberToObject(o, "summary_first_dropout", 0.1);
	ok = ok && cJSON_AddTrueToObject(o, "summary_proj_to_labels");
	ok = ok && cJSON_AddStringToObject(o, "summary_type", "cls_index");
	ok = ok && cJSON_AddTrueToObject(o, "summary_use_proj");
	ok = ok && cJSON_AddTrueToObject(o, "tie_word_embeddings");
	ok = ok && cJSON_AddStringToObject(o, "torch_dtype", "float32");
	ok = ok && cJSON_AddTrueToObject(o, "use_cache");
	ok = ok && cJSON_AddNumberToObject(o, "vocab_size", c->vocab_size);
	if (!ok) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

void sc_gpt2_config(sc_model_config *c, int L, int NH, int C, int V, int P)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->model_type, sizeof(c->model_type), "gpt2");
	c->n_layer = L;
	c->n_head = c->n_kv_head = NH;
	c->n_embd = C;
	c->head_dim = NH > 0 ? C / NH : 0;
	c->n_inner = 4 * C;
	c->vocab_size = V;
	c->n_positions = P;
	c->ln_eps = 1e-5f;
	c->tie_embeddings = c->qkv_bias = c->o_bias = c->mlp_bias = 1;
	c->bos_token_id = c->eos_token_id = V - 1; /* GPT-2's <|endoftext|> is the last id */
}

static const char *const model_types[] = { "gpt2", NULL };
static const char *const file_prefixes[] = { "transformer.", "", NULL };

const sc_family sc_family_gpt2 = {
	.name = "gpt2",
	.model_types = model_types,
	.parse_config = parse_config,
	.validate = validate,
	.config_json = config_json,
	.n_targets = N_TARGETS,
	.targets = targets,
	.target_dims = target_dims,
	.peft_prefix = "base_model.model.transformer.h.",
	.fan_in_fan_out = 1,
	.file_prefixes = file_prefixes,
	.n_layer_params = N_PARAMS,
	.layer_params = layer_params,
	.global_params = global_params,
	.rms_norm = 0,
	.n_layer_acts = N_ACTS,
	.n_scratch = N_SCRATCH,
	.out_act = A_RES3,
	.act_sizes = act_sizes,
	.scratch_sizes = scratch_sizes,
	.layer_forward = layer_forward,
	.layer_backward = layer_backward,
};
