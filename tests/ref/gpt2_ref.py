"""gpt2_ref.py — an independent GPT-2 + LoRA reference in plain PyTorch.

Written from the model's math, not from transformers: the tests compare
splitchain against it (and against transformers + PEFT separately), so a
mistake shared by both sides is unlikely.

    h = wte[tokens] + wpe[positions]
    per layer:  h = h + attn(ln_1(h));  h = h + mlp(ln_2(h))
    logits = ln_f(h) @ wte^T                      (LM head tied to wte)

Every projection is a Conv1D, y = x @ W + b with W stored (in, out). A LoRA
adapter on it adds (alpha / r) * (x @ A^T) @ B^T with A (r, in), B (out, r).
GELU is the tanh approximation; attention is causal with scale 1/sqrt(hs).

Also here: adapters in PEFT's file layout, the learning-rate schedule, the
AdamW training step of the trainer, and small helpers shared by the tests
(running the command-line tools, making models and text).
"""

import json
import math
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file, save_file

TARGETS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
PREFIX = "base_model.model.transformer.h."


# --------------------------------------------------------------------------
# model


class Config:
    def __init__(self, d):
        self.n_layer = int(d["n_layer"])
        self.n_head = int(d["n_head"])
        self.n_embd = int(d["n_embd"])
        self.vocab_size = int(d["vocab_size"])
        self.n_positions = int(d["n_positions"])
        self.eps = float(d.get("layer_norm_epsilon", 1e-5))


def load_config(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        return Config(json.load(f))


def load_weights(model_dir, dtype):
    """Tensors of model.safetensors without the "transformer." prefix, as dtype."""
    raw = load_file(os.path.join(model_dir, "model.safetensors"))
    out = {}
    for name, t in raw.items():
        if name.startswith("transformer."):
            name = name[len("transformer."):]
        out[name] = t.to(dtype)
    return out


def target_dims(target, C):
    """(in, out) features of a target projection."""
    return {
        "attn.c_attn": (C, 3 * C),
        "attn.c_proj": (C, C),
        "mlp.c_fc": (C, 4 * C),
        "mlp.c_proj": (4 * C, C),
    }[target]


def layer_norm(x, w, b, eps):
    mu = x.mean(dim=-1, keepdim=True)
    var = ((x - mu) ** 2).mean(dim=-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


class GPT2:
    """Frozen base weights; forward takes a Lora (or None)."""

    def __init__(self, model_dir, dtype=torch.float64):
        self.cfg = load_config(model_dir)
        self.w = load_weights(model_dir, dtype)

    @classmethod
    def from_tensors(cls, cfg, weights):
        """cfg: a Config; weights: names without the "transformer." prefix."""
        self = cls.__new__(cls)
        self.cfg, self.w = cfg, weights
        return self

    def frozen_mm(self, x, w):
        """x @ w for a frozen projection's weight w (in, out): a subclass
        may run it in another precision (test_bf16_parity)."""
        return x @ w

    def head_mm(self, x, w):
        """x @ w for the LM head, w = wte^T (C, V): a subclass may run it in
        another precision (test_bf16_parity)."""
        return x @ w

    def proj(self, x, layer, target, lora):
        w = self.w["h.%d.%s.weight" % (layer, target)]
        b = self.w["h.%d.%s.bias" % (layer, target)]
        y = self.frozen_mm(x, w) + b
        if lora is not None and (layer, target) in lora.A:
            A, B = lora.A[(layer, target)], lora.B[(layer, target)]
            y = y + lora.scale * ((x @ A.t()) @ B.t())
        return y

    def attention(self, x, layer, lora):
        Bn, T, C = x.shape
        nh = self.cfg.n_head
        hs = C // nh
        qkv = self.proj(x, layer, "attn.c_attn", lora)
        q, k, v = qkv.split(C, dim=2)
        # (B, nh, T, hs): head h owns channels [h*hs, (h+1)*hs) of q, k and v
        q = q.view(Bn, T, nh, hs).transpose(1, 2)
        k = k.view(Bn, T, nh, hs).transpose(1, 2)
        v = v.view(Bn, T, nh, hs).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
        future = torch.ones(T, T, dtype=torch.bool).triu(1)
        att = att.masked_fill(future, float("-inf"))
        att = torch.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(Bn, T, C)
        return self.proj(y, layer, "attn.c_proj", lora)

    def mlp(self, x, layer, lora):
        hid = gelu_tanh(self.proj(x, layer, "mlp.c_fc", lora))
        return self.proj(hid, layer, "mlp.c_proj", lora)

    def logits(self, tokens, lora=None):
        """tokens: (B, T) integer tensor -> (B, T, V) logits."""
        w, eps = self.w, self.cfg.eps
        T = tokens.shape[1]
        h = w["wte.weight"][tokens.long()] + w["wpe.weight"][:T]
        for i in range(self.cfg.n_layer):
            a = layer_norm(h, w["h.%d.ln_1.weight" % i], w["h.%d.ln_1.bias" % i], eps)
            h = h + self.attention(a, i, lora)
            m = layer_norm(h, w["h.%d.ln_2.weight" % i], w["h.%d.ln_2.bias" % i], eps)
            h = h + self.mlp(m, i, lora)
        h = layer_norm(h, w["ln_f.weight"], w["ln_f.bias"], eps)
        return self.head_mm(h, w["wte.weight"].t())

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


def cross_entropy(logits, targets):
    """Mean over positions with target >= 0 of -log softmax(logits)[target]."""
    V = logits.shape[-1]
    logits = logits.reshape(-1, V)
    targets = targets.reshape(-1).long()
    keep = targets >= 0
    logp = torch.log_softmax(logits, dim=-1)
    picked = logp[torch.arange(logits.shape[0]), targets.clamp(min=0)]
    return -(picked * keep).sum() / keep.sum()


# --------------------------------------------------------------------------
# LoRA adapters in PEFT's layout


class Lora:
    """A[(layer, target)] (r, in), B[(layer, target)] (out, r)."""

    def __init__(self, rank, alpha, targets):
        self.rank = int(rank)
        self.alpha = float(alpha)
        self.targets = list(targets)
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
        save_file(ts, os.path.join(adapter_dir, "adapter_model.safetensors"))
        cfg = {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "r": self.rank,
            "lora_alpha": self.alpha,
            "lora_dropout": 0.0,
            "target_modules": self.targets,
            "fan_in_fan_out": True,
            "bias": "none",
            "inference_mode": True,
            "base_model_name_or_path": base_model,
        }
        with open(os.path.join(adapter_dir, "adapter_config.json"), "w") as f:
            json.dump(cfg, f, indent=2)


def expand_targets(modules):
    """PEFT target_modules (suffix match on module names) -> our target names."""
    if isinstance(modules, str):
        modules = [modules]
    out = []
    for t in TARGETS:
        if any(t == m or t.endswith("." + m) for m in modules):
            out.append(t)
    return out


def load_adapter(adapter_dir, dtype=torch.float64):
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        cfg = json.load(f)
    assert cfg["peft_type"] == "LORA", cfg["peft_type"]
    ts = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    lora = Lora(cfg["r"], cfg["lora_alpha"], expand_targets(cfg["target_modules"]))
    for name, t in ts.items():
        assert name.startswith(PREFIX), name
        rest = name[len(PREFIX):]  # "<i>.<target>.lora_A.weight"
        i, rest = rest.split(".", 1)
        target, kind, _ = rest.rsplit(".", 2)
        d = lora.A if kind == "lora_A" else lora.B
        d[(int(i), target)] = t.to(dtype)
    return lora


def random_lora(cfg, rank, alpha, targets, seed, a_scale=0.2, b_scale=0.2):
    """An adapter with random nonzero A and B (float64)."""
    g = torch.Generator().manual_seed(seed)
    lora = Lora(rank, alpha, targets)
    for i in range(cfg.n_layer):
        for t in targets:
            n_in, n_out = target_dims(t, cfg.n_embd)
            lora.A[(i, t)] = torch.randn(rank, n_in, generator=g, dtype=torch.float64) * a_scale
            lora.B[(i, t)] = torch.randn(n_out, rank, generator=g, dtype=torch.float64) * b_scale
    return lora


# --------------------------------------------------------------------------
# training


def lr_at(step, lr, min_lr, warmup, steps):
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - 1 - warmup)
    progress = min(1.0, max(0.0, progress))
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def train(model, lora, inputs, targets, lr, min_lr, warmup, weight_decay, clip):
    """torch's own loop: inputs, targets (N, M, B, T). lora is trained in
    place (its tensors must require grad). Returns per-step dicts."""
    steps = inputs.shape[0]
    params = lora.params()
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=weight_decay)
    out = []
    for s in range(steps):
        lr_s = lr_at(s, lr, min_lr, warmup, steps)
        for group in opt.param_groups:
            group["lr"] = lr_s
        opt.zero_grad()
        loss = model.step_loss(inputs[s], targets[s], lora)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
        opt.step()
        out.append({"step": s, "loss": loss.item(), "lr": lr_s, "grad_norm": float(norm)})
    return out


# --------------------------------------------------------------------------
# helpers for the tests


def max_rel_err(got, want):
    """max |got - want| / max |want| (want all zero: max |got|)."""
    got = got.detach().to(torch.float64)
    want = want.detach().to(torch.float64)
    assert got.shape == want.shape, (tuple(got.shape), tuple(want.shape))
    diff = (got - want).abs().max().item()
    scale = want.abs().max().item()
    return diff / scale if scale > 0 else diff


def tool(env_name):
    path = os.environ.get(env_name)
    if not path or not os.path.exists(path):
        sys.exit("FAIL: %s is not set to an existing binary (run the tests with ctest)"
                 % env_name)
    return path


def run(cmd, **kw):
    """Runs a command; on failure prints its output and raises."""
    cmd = [str(c) for c in cmd]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError("command failed (%d): %s\n%s" % (r.returncode, " ".join(cmd),
                                                               r.stdout))
    return r.stdout


def tmp_dir(name):
    """The test's own temporary directory (SC_REF_TMP, set by ctest)."""
    base = os.environ.get("SC_REF_TMP")
    if not base:
        sys.exit("FAIL: SC_REF_TMP is not set (run the tests with ctest)")
    d = os.path.join(base, name)
    os.makedirs(d, exist_ok=True)
    return d


def write_text(path, n_bytes=20000, seed=0):
    """Plain ASCII text with some structure (byte-level tokens)."""
    g = torch.Generator().manual_seed(seed)
    words = ["split", "chain", "edge", "worker", "layer", "adapter", "gradient", "the",
             "of", "a", "model", "token", "step", "loss", "rank", "alpha", "learns",
             "flows", "forward", "back", "and", "to", "in", "stage"]
    parts, size = [], 0
    while size < n_bytes:
        k = int(torch.randint(0, len(words), (1,), generator=g))
        w = words[k] + (".\n" if k % 7 == 0 else " ")
        parts.append(w)
        size += len(w)
    with open(path, "w") as f:
        f.write("".join(parts)[:n_bytes])
    return path


def make_model(splitchain, out, layers, heads, embd, vocab, positions, seed=1,
               random_norms=True, dtype="f32"):
    cmd = [splitchain, "make-model", "--out", out, "--layers", layers, "--heads", heads,
           "--embd", embd, "--vocab", vocab, "--positions", positions, "--seed", seed,
           "--dtype", dtype]
    if random_norms:
        cmd.append("--random-norms")
    run(cmd)
    return out


def read_metrics(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def offline():
    """No hub: transformers and PEFT must only read local files."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"


def run_cases(cases):
    """Runs named cases [(name, fn)], each printing its figures; ends with the
    line 'N passed, N failed' and exits nonzero when any failed."""
    import traceback
    passed = failed = 0
    for name, fn in cases:
        print("--- %s" % name, flush=True)
        try:
            fn()
        except Exception:  # noqa: BLE001 — every failure is reported, then counted
            traceback.print_exc()
            print("FAIL %s" % name, flush=True)
            failed += 1
        else:
            print("ok   %s" % name, flush=True)
            passed += 1
    print("%d passed, %d failed" % (passed, failed), flush=True)
    sys.exit(1 if failed else 0)
