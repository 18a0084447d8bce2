"""llama_ref.py — an independent Llama-family + LoRA reference in plain PyTorch.

Covers Llama 2/3 (and TinyLlama, SmolLM: same layout), Mistral and Qwen2,
written from the models' math, not from transformers: the tests compare
splitchain against it, and it against transformers separately.

    h = embed_tokens[tokens]
    per layer:  h = h + attn(rms(h) * input_layernorm)
                h = h + mlp(rms(h) * post_attention_layernorm)
    logits = (rms(h) * norm) @ lm_head^T          (lm_head = embed_tokens when tied)

    rms(x)   = x / sqrt(mean(x^2) + rms_norm_eps)
    mlp(x)   = down_proj(silu(gate_proj(x)) * up_proj(x))
    attn(x)  = o_proj(concat over heads h of softmax(q_h k_g^T / sqrt(hd) + mask) v_g)
               with g = h // (NH / NKV)  (grouped-query attention; NKV = 1 is MQA)

Every projection is an nn.Linear, y = x @ W^T (+ b) with W stored (out, in);
a LoRA adapter on it adds (alpha / r) * (x @ A^T) @ B^T, A (r, in), B (out, r).
Biases: llama's attention_bias puts one on q, k, v and o, its mlp_bias on
gate, up and down; Qwen2 always has q, k and v biases and none on o;
Mistral has none.

Rotary embeddings rotate q and k (after their bias) in the half-split
convention: for channel i < hd/2 of a head, the pair (x_i, x_{i+hd/2}) turns
by the angle pos * inv_freq_i, inv_freq_i = rope_theta^(-2i/hd).
rope_scaling "linear" divides positions by factor; "llama3" divides the
low-frequency part of inv_freq by factor, keeps the high-frequency part and
blends the band between (Meta's apply_scaling).

Attention is causal; Mistral's sliding_window w lets query t see keys
t-w+1 .. t only.

Also here: writing random checkpoints in the Hugging Face layout (config.json
+ model.safetensors, optionally sharded with an index, optionally f16 or
bf16) and adapters in PEFT's layout (fan_in_fan_out false).
"""

import json
import math
import os

import torch
from safetensors.torch import load_file, save_file

from gpt2_ref import cross_entropy

# the LoRA targets of one layer, under their module names inside the layer
TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
SHORT = {t: t.split(".")[1] for t in TARGETS}  # "self_attn.q_proj" -> "q_proj"
PREFIX = "base_model.model.model.layers."
FAMILIES = ("llama", "mistral", "qwen2")


# --------------------------------------------------------------------------
# configuration


class Config:
    """The fields of config.json that the math depends on."""

    def __init__(self, d):
        self.model_type = d["model_type"]
        if self.model_type not in FAMILIES:
            raise ValueError("model_type %r is not one of %s" % (self.model_type, FAMILIES))
        self.n_layer = int(d["num_hidden_layers"])
        self.n_head = int(d["num_attention_heads"])
        # transformers' defaults where config.json lacks the field; null means NH
        kv_default = {"llama": self.n_head, "mistral": 8, "qwen2": 32}[self.model_type]
        self.n_kv_head = int(d.get("num_key_value_heads", kv_default) or self.n_head)
        self.hidden = int(d["hidden_size"])
        self.inter = int(d["intermediate_size"])
        self.vocab_size = int(d["vocab_size"])
        self.head_dim = int(d.get("head_dim") or self.hidden // self.n_head)
        self.eps = float(d.get("rms_norm_eps", 1e-6))
        self.rope_theta = float(d.get("rope_theta", 10000.0))
        self.rope_scaling = d.get("rope_scaling")
        self.tied = bool(d.get("tie_word_embeddings", False))
        act = d.get("hidden_act", "silu")
        if act != "silu":
            raise ValueError("hidden_act %r: only silu (SwiGLU) is modelled" % act)
        if self.n_head % self.n_kv_head:
            raise ValueError("%d heads do not split into %d key/value groups"
                             % (self.n_head, self.n_kv_head))
        if self.head_dim % 2:
            raise ValueError("rotary embeddings need an even head_dim, not %d" % self.head_dim)
        llama = self.model_type == "llama"
        qwen2 = self.model_type == "qwen2"
        self.qkv_bias = qwen2 or (llama and bool(d.get("attention_bias", False)))
        self.o_bias = llama and bool(d.get("attention_bias", False))
        self.mlp_bias = llama and bool(d.get("mlp_bias", False))
        self.window = None
        if self.model_type == "mistral" and d.get("sliding_window", 4096) is not None:
            self.window = int(d.get("sliding_window", 4096))
        if qwen2 and d.get("use_sliding_window"):
            raise ValueError("Qwen2's use_sliding_window (per-layer windows) is not modelled")

    def target_dims(self, target):
        """(in, out) features of a target projection."""
        C, I = self.hidden, self.inter
        q, kv = self.n_head * self.head_dim, self.n_kv_head * self.head_dim
        return {
            "self_attn.q_proj": (C, q),
            "self_attn.k_proj": (C, kv),
            "self_attn.v_proj": (C, kv),
            "self_attn.o_proj": (q, C),
            "mlp.gate_proj": (C, I),
            "mlp.up_proj": (C, I),
            "mlp.down_proj": (I, C),
        }[target]

    def has_bias(self, target):
        if target in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
            return self.qkv_bias
        if target == "self_attn.o_proj":
            return self.o_bias
        return self.mlp_bias


def load_config(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        return Config(json.load(f))


def load_weights(model_dir, dtype):
    """Tensors of model.safetensors (or of the shards its index names) without
    the "model." prefix, as dtype."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    out = {}
    for fn in files:
        for name, t in load_file(os.path.join(model_dir, fn)).items():
            if name.startswith("model."):
                name = name[len("model."):]
            assert name not in out, "%s is in two shards" % name
            out[name] = t.to(dtype)
    return out


# --------------------------------------------------------------------------
# model


def rms_norm(x, w, eps):
    return x * torch.rsqrt((x * x).mean(dim=-1, keepdim=True) + eps) * w


def silu(x):
    return x * torch.sigmoid(x)


def rope_inv_freq(cfg, dtype=torch.float64):
    """(hd/2,) angular frequencies after rope_scaling; positions are divided by
    the second value returned (linear scaling's factor, else 1)."""
    hd = cfg.head_dim
    i = torch.arange(hd // 2, dtype=torch.float64)
    inv = cfg.rope_theta ** (-2.0 * i / hd)
    rs = cfg.rope_scaling
    kind = None if rs is None else rs.get("rope_type", rs.get("type"))
    if kind in (None, "default"):
        return inv.to(dtype), 1.0
    if kind == "linear":
        return inv.to(dtype), float(rs["factor"])
    if kind == "llama3":
        factor = float(rs["factor"])
        low, high = float(rs["low_freq_factor"]), float(rs["high_freq_factor"])
        old_ctx = float(rs["original_max_position_embeddings"])
        out = inv.clone()
        for j in range(inv.numel()):
            wavelen = 2 * math.pi / inv[j].item()
            if wavelen < old_ctx / high:  # high frequency: kept
                continue
            if wavelen > old_ctx / low:  # low frequency: slowed down by factor
                out[j] = inv[j] / factor
            else:  # the band between: a blend of both
                smooth = (old_ctx / wavelen - low) / (high - low)
                out[j] = (1 - smooth) * inv[j] / factor + smooth * inv[j]
        return out.to(dtype), 1.0
    raise ValueError("rope_scaling type %r is not modelled" % kind)


def llama3_bands(cfg):
    """How many frequencies llama3 scaling keeps, blends and slows (for tests
    that mean to exercise all three)."""
    rs = cfg.rope_scaling
    old_ctx = float(rs["original_max_position_embeddings"])
    hd = cfg.head_dim
    kept = blended = slowed = 0
    for j in range(hd // 2):
        wavelen = 2 * math.pi * cfg.rope_theta ** (2.0 * j / hd)
        if wavelen < old_ctx / rs["high_freq_factor"]:
            kept += 1
        elif wavelen > old_ctx / rs["low_freq_factor"]:
            slowed += 1
        else:
            blended += 1
    return kept, blended, slowed


def rope(x, cos, sin):
    """x (B, nh, T, hd); cos, sin (T, hd/2): each pair (x_i, x_{i+hd/2}) rotated."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Llama:
    """Frozen base weights; forward takes a Lora (or None)."""

    def __init__(self, model_dir, dtype=torch.float64):
        self._set(load_config(model_dir), load_weights(model_dir, dtype), dtype)

    @classmethod
    def from_tensors(cls, cfg, weights):
        """cfg: a Config; weights: names without the "model." prefix."""
        self = cls.__new__(cls)
        self._set(cfg, weights, weights["embed_tokens.weight"].dtype)
        return self

    def _set(self, cfg, weights, dtype):
        self.cfg, self.w, self.dtype = cfg, weights, dtype
        if cfg.tied:
            self.lm_head = weights["embed_tokens.weight"]
        else:
            assert "lm_head.weight" in weights, "untied model without lm_head.weight"
            self.lm_head = weights["lm_head.weight"]

    def frozen_mm(self, x, w):
        """x @ w for a frozen projection's weight w, here w = W^T (in, out):
        a subclass may run it in another precision (test_bf16_parity)."""
        return x @ w

    def head_mm(self, x, w):
        """x @ w for the LM head, w = lm_head^T (C, V): a subclass may run it
        in another precision (test_bf16_parity)."""
        return x @ w

    def proj(self, x, layer, target, lora):
        w = self.w["layers.%d.%s.weight" % (layer, target)]
        y = self.frozen_mm(x, w.t())
        if self.cfg.has_bias(target):
            y = y + self.w["layers.%d.%s.bias" % (layer, target)]
        if lora is not None and (layer, target) in lora.A:
            A, B = lora.A[(layer, target)], lora.B[(layer, target)]
            y = y + lora.scale * ((x @ A.t()) @ B.t())
        return y

    def rotary(self, T):
        inv, pos_div = rope_inv_freq(self.cfg, self.dtype)
        pos = torch.arange(T, dtype=self.dtype) / pos_div
        ang = pos[:, None] * inv[None, :]  # (T, hd/2)
        return torch.cos(ang), torch.sin(ang)

    def mask(self, T):
        """(T, T) True where query t must not see key s."""
        t = torch.arange(T)[:, None]
        s = torch.arange(T)[None, :]
        hide = s > t
        if self.cfg.window is not None:
            hide = hide | (s <= t - self.cfg.window)
        return hide

    def attention(self, x, layer, lora, cos, sin):
        cfg = self.cfg
        Bn, T, _ = x.shape
        nh, nkv, hd = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        q = self.proj(x, layer, "self_attn.q_proj", lora).view(Bn, T, nh, hd).transpose(1, 2)
        k = self.proj(x, layer, "self_attn.k_proj", lora).view(Bn, T, nkv, hd).transpose(1, 2)
        v = self.proj(x, layer, "self_attn.v_proj", lora).view(Bn, T, nkv, hd).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        # query head h reads key/value head h // (nh / nkv)
        group = nh // nkv
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
        att = att.masked_fill(self.mask(T), float("-inf"))
        att = torch.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(Bn, T, nh * hd)
        return self.proj(y, layer, "self_attn.o_proj", lora)

    def mlp(self, x, layer, lora):
        g = self.proj(x, layer, "mlp.gate_proj", lora)
        u = self.proj(x, layer, "mlp.up_proj", lora)
        return self.proj(silu(g) * u, layer, "mlp.down_proj", lora)

    def logits(self, tokens, lora=None):
        """tokens: (B, T) integer tensor -> (B, T, V) logits."""
        w, eps = self.w, self.cfg.eps
        T = tokens.shape[1]
        cos, sin = self.rotary(T)
        h = w["embed_tokens.weight"][tokens.long()]
        for i in range(self.cfg.n_layer):
            a = rms_norm(h, w["layers.%d.input_layernorm.weight" % i], eps)
            h = h + self.attention(a, i, lora, cos, sin)
            m = rms_norm(h, w["layers.%d.post_attention_layernorm.weight" % i], eps)
            h = h + self.mlp(m, i, lora)
        h = rms_norm(h, w["norm.weight"], eps)
        return self.head_mm(h, self.lm_head.t())

    def loss(self, tokens, targets, lora=None):
        """Mean token cross-entropy over targets >= 0."""
        return cross_entropy(self.logits(tokens, lora), targets)

    def step_loss(self, inputs, targets, lora=None):
        """inputs, targets (M, B, T): mean over micro-batches of their losses."""
        M = inputs.shape[0]
        total = 0
        for m in range(M):
            total = total + self.loss(inputs[m], targets[m], lora)
        return total / M


# --------------------------------------------------------------------------
# LoRA adapters in PEFT's layout


class Lora:
    """A[(layer, target)] (r, in), B[(layer, target)] (out, r); target is a
    module name inside the layer ("self_attn.q_proj", "mlp.down_proj")."""

    def __init__(self, rank, alpha, targets):
        self.rank = int(rank)
        self.alpha = float(alpha)
        self.targets = [t for t in TARGETS if t in targets]
        self.A = {}
        self.B = {}

    @property
    def scale(self):
        return self.alpha / self.rank

    def keys(self):
        return sorted(self.A.keys(), key=lambda k: (k[0], TARGETS.index(k[1])))

    def params(self):
        out = []
        for k in self.keys():
            out += [self.A[k], self.B[k]]
        return out

    def to(self, dtype, requires_grad=False):
        o = Lora(self.rank, self.alpha, self.targets)
        for k in self.keys():
            o.A[k] = self.A[k].detach().to(dtype).clone().requires_grad_(requires_grad)
            o.B[k] = self.B[k].detach().to(dtype).clone().requires_grad_(requires_grad)
        return o

    def tensors(self, which="weight"):
        """PEFT tensor names -> tensors (of the values, or of their .grad)."""
        out = {}
        for (i, t) in self.keys():
            for kind, d in (("lora_A", self.A), ("lora_B", self.B)):
                v = d[(i, t)] if which == "weight" else d[(i, t)].grad
                out["%s%d.%s.%s.weight" % (PREFIX, i, t, kind)] = v
        return out

    def save(self, adapter_dir, base_model=None):
        """Writes adapter_model.safetensors (float32) + adapter_config.json."""
        os.makedirs(adapter_dir, exist_ok=True)
        ts = {k: v.detach().to(torch.float32).contiguous() for k, v in self.tensors().items()}
        save_file(ts, os.path.join(adapter_dir, "adapter_model.safetensors"),
                  metadata={"format": "pt"})
        cfg = {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "r": self.rank,
            "lora_alpha": self.alpha,
            "lora_dropout": 0.0,
            "target_modules": [SHORT[t] for t in self.targets],
            "fan_in_fan_out": False,
            "bias": "none",
            "inference_mode": True,
            "base_model_name_or_path": base_model,
        }
        with open(os.path.join(adapter_dir, "adapter_config.json"), "w") as f:
            json.dump(cfg, f, indent=2)


def expand_targets(modules):
    """PEFT target_modules (suffix match on module names, or "all-linear") ->
    our target names."""
    if modules == "all-linear":
        return list(TARGETS)
    if isinstance(modules, str):
        modules = [modules]
    return [t for t in TARGETS if any(t == m or t.endswith("." + m) for m in modules)]


def load_adapter(adapter_dir, dtype=torch.float64):
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        cfg = json.load(f)
    assert cfg["peft_type"] == "LORA", cfg["peft_type"]
    assert not cfg.get("fan_in_fan_out"), "nn.Linear adapters have fan_in_fan_out false"
    ts = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    lora = Lora(cfg["r"], cfg["lora_alpha"], expand_targets(cfg["target_modules"]))
    for name, t in ts.items():
        assert name.startswith(PREFIX), name
        rest = name[len(PREFIX):]  # "<i>.self_attn.q_proj.lora_A.weight"
        i, rest = rest.split(".", 1)
        target, kind, _ = rest.rsplit(".", 2)
        assert target in lora.targets, "%s: %s is not in target_modules" % (name, target)
        d = lora.A if kind == "lora_A" else lora.B
        d[(int(i), target)] = t.to(dtype)
    assert sorted(lora.A) == sorted(lora.B), "lora_A and lora_B name different modules"
    return lora


def random_lora(cfg, rank, alpha, targets, seed, a_scale=0.1, b_scale=0.1):
    """An adapter with random nonzero A and B (float64)."""
    g = torch.Generator().manual_seed(seed)
    lora = Lora(rank, alpha, targets)
    for i in range(cfg.n_layer):
        for t in lora.targets:
            n_in, n_out = cfg.target_dims(t)
            lora.A[(i, t)] = torch.randn(rank, n_in, generator=g, dtype=torch.float64) * a_scale
            lora.B[(i, t)] = torch.randn(n_out, rank, generator=g, dtype=torch.float64) * b_scale
    return lora


# --------------------------------------------------------------------------
# random checkpoints in the Hugging Face layout

ARCH = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
        "qwen2": "Qwen2ForCausalLM"}
DTYPES = {"f32": (torch.float32, "float32"), "f16": (torch.float16, "float16"),
          "bf16": (torch.bfloat16, "bfloat16")}


def make_config(model_type, layers, hidden, heads, kv_heads, inter, vocab, positions=128,
                **extra):
    """config.json as transformers writes it for the family; extra fields
    (head_dim, rope_scaling, attention_bias, mlp_bias, sliding_window,
    tie_word_embeddings, rope_theta, rms_norm_eps) override the defaults."""
    d = {
        "architectures": [ARCH[model_type]],
        "model_type": model_type,
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "hidden_act": "silu",
        "max_position_embeddings": positions,
        "initializer_range": 0.02,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "tie_word_embeddings": False,
        "attention_dropout": 0.0,
        "use_cache": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
    }
    if model_type == "llama":
        d.update({"attention_bias": False, "mlp_bias": False, "pretraining_tp": 1})
    elif model_type == "mistral":
        d.update({"sliding_window": None})
    elif model_type == "qwen2":
        # as Qwen2.5's configs: a window field that use_sliding_window turns off
        d.update({"use_sliding_window": False, "sliding_window": 4096,
                  "max_window_layers": layers})
    d.update(extra)
    Config(d)  # fails here on a config the reference cannot model
    return d


def random_weights(cfg, seed):
    """HF tensor names -> float32 tensors: random projections, embeddings,
    norms around 1 and biases around 0 (so that norms and biases matter)."""
    g = torch.Generator().manual_seed(seed)

    def normal(*shape, std):
        return torch.randn(*shape, generator=g) * std

    C = cfg.hidden
    # sizes where float32 gradients stay within about 2e-6 of float64 (larger
    # projections or logits make attention and softmax peaky and float32 noisy)
    w = {"model.embed_tokens.weight": normal(cfg.vocab_size, C, std=1.0 / math.sqrt(C))}
    for i in range(cfg.n_layer):
        p = "model.layers.%d." % i
        w[p + "input_layernorm.weight"] = 1.0 + normal(C, std=0.2)
        w[p + "post_attention_layernorm.weight"] = 1.0 + normal(C, std=0.2)
        for t in TARGETS:
            n_in, n_out = cfg.target_dims(t)
            w[p + t + ".weight"] = normal(n_out, n_in, std=0.5 / math.sqrt(n_in))
            if cfg.has_bias(t):
                w[p + t + ".bias"] = normal(n_out, std=0.1)
    w["model.norm.weight"] = 1.0 + normal(C, std=0.2)
    if not cfg.tied:
        w["lm_head.weight"] = normal(cfg.vocab_size, C, std=1.0 / math.sqrt(C))
    return w


def write_model(out_dir, config, seed=1, dtype="f32", shards=1):
    """Writes config.json and the weights of a random model: model.safetensors,
    or `shards` files model-0000k-of-0000n.safetensors with
    model.safetensors.index.json. dtype: f32, f16 or bf16. Returns out_dir."""
    os.makedirs(out_dir, exist_ok=True)
    cfg = Config(config)
    tdtype, tname = DTYPES[dtype]
    config = dict(config, torch_dtype=tname)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    w = {k: v.to(tdtype).contiguous() for k, v in random_weights(cfg, seed).items()}
    for fn in os.listdir(out_dir):  # a rewrite with other sharding leaves no stale files
        if fn.startswith("model") and fn.endswith((".safetensors", ".index.json")):
            os.remove(os.path.join(out_dir, fn))
    if shards <= 1:
        save_file(w, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
        return out_dir
    # whole tensors to shards in name order, about the same bytes each
    names = sorted(w)
    total = sum(w[n].numel() * w[n].element_size() for n in names)
    weight_map, parts, acc = {}, [[] for _ in range(shards)], 0
    for n in names:
        k = min(shards - 1, acc * shards // total)
        parts[k].append(n)
        acc += w[n].numel() * w[n].element_size()
    assert all(parts), "too few tensors for %d shards" % shards
    for k, part in enumerate(parts):
        fn = "model-%05d-of-%05d.safetensors" % (k + 1, shards)
        save_file({n: w[n] for n in part}, os.path.join(out_dir, fn), metadata={"format": "pt"})
        for n in part:
            weight_map[n] = fn
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return out_dir


# --------------------------------------------------------------------------
# the tiny models of the tests


class TestModel:
    """A named tiny checkpoint: config, storage, and the config changes
    (`ablations`, title -> overrides) that must each change its logits, so
    that a check passing on it shows the feature is computed, not ignored."""

    def __init__(self, tag, title, config, dtype="f32", shards=1, seed=1, ablations=None):
        self.tag, self.title, self.config = tag, title, config
        self.dtype, self.shards, self.seed = dtype, shards, seed
        self.ablations = ablations or {}

    def write(self, base_dir):
        return write_model(os.path.join(base_dir, "model-" + self.tag), self.config,
                           seed=self.seed, dtype=self.dtype, shards=self.shards)


def test_models(layers=4, hidden=64, heads=4, inter=160, vocab=320, window=8):
    """Every feature of the family in at least one model; T must exceed window."""
    L, C, NH, I, V = layers, hidden, heads, inter, vocab
    llama3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
              "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    return [
        TestModel("gqa", "llama, GQA (NKV=2), untied head",
                  make_config("llama", L, C, NH, 2, I, V), seed=11),
        TestModel("mqa", "llama, MQA (NKV=1), tied head",
                  make_config("llama", L, C, NH, 1, I, V, tie_word_embeddings=True),
                  seed=12),
        TestModel("bias", "llama, attention_bias and mlp_bias",
                  make_config("llama", L, C, NH, 2, I, V, attention_bias=True,
                              mlp_bias=True), seed=13,
                  ablations={"no attention bias": {"attention_bias": False},
                             "no mlp bias": {"mlp_bias": False}}),
        TestModel("qwen2", "qwen2, q/k/v bias, rope_theta 1e6",
                  make_config("qwen2", L, C, NH, 2, I, V, rope_theta=1000000.0,
                              rms_norm_eps=1e-6), seed=14,
                  ablations={"no q/k/v bias (as mistral)": {"model_type": "mistral",
                                                            "sliding_window": None}}),
        TestModel("mistral", "mistral, sliding_window %d < T" % window,
                  make_config("mistral", L, C, NH, 2, I, V, sliding_window=window),
                  seed=15, ablations={"no window": {"sliding_window": None}}),
        TestModel("llama3", "llama, rope_scaling llama3, rope_theta 5e5",
                  make_config("llama", L, C, NH, 2, I, V, rope_theta=500000.0,
                              rope_scaling=llama3, max_position_embeddings=512),
                  seed=16, ablations={"no rope_scaling": {"rope_scaling": None},
                                      "linear instead": {"rope_scaling": {
                                          "rope_type": "linear", "factor": 8.0}}}),
        TestModel("linear", "llama, rope_scaling linear, head_dim 24 != %d/%d" % (C, NH),
                  make_config("llama", L, C, NH, 2, I, V, head_dim=24,
                              rope_scaling={"type": "linear", "factor": 4.0}),
                  seed=17, ablations={"no rope_scaling": {"rope_scaling": None}}),
        TestModel("bf16", "llama, bf16 in 3 shards, tied, NKV=1",
                  make_config("llama", L, C, NH, 1, I, V, tie_word_embeddings=True,
                              attention_bias=True),
                  dtype="bf16", shards=3, seed=18),
        TestModel("f16", "mistral, f16 in 2 shards, no window",
                  make_config("mistral", L, C, NH, 4, I, V), dtype="f16", shards=2,
                  seed=19),
    ]
