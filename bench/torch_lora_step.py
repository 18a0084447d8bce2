"""torch_lora_step.py — PyTorch's own LoRA training step, for comparison with
splitchain's: a randomly initialised GPT-2 (Hugging Face GPT2LMHeadModel)
with PEFT LoRA adapters on all four projections, or (--family llama) a
Llama (LlamaForCausalLM) with adapters on all seven (q, k, v, o, gate, up,
down); frozen base weights, AdamW on the LoRA parameters, float32 on the
CPU. Times --steps optimizer steps after --warmup-steps untimed ones and
prints one line of JSON:

  {"impl":"pytorch","family":..,"threads":N,"tokens_per_s":..,"step_s":..,
   "foreign_load":..}

foreign_load: the CPUs other processes kept busy during the timed steps (from
/proc/stat; -1 where unreadable), so that a disturbed run can be spotted.

--config DIR/config.json takes the shape from a model's config.json (what
`splitchain make-model` and sc_bench_step write: model_type gpt2, llama or
mistral), so both sides run the same shape; the shape flags say it otherwise.
The Llama model runs in eval mode (it has no dropout to turn off; the
gradients are the same).

Runs with the reference tests' venv (tests/ref/setup-venv.sh). --impl ref
uses the independent module of tests/ref/gpt2_ref.py instead of HF + PEFT;
--impl auto uses HF + PEFT where both import, else ref.

--device cuda[:N] runs the same step on a GPU (the model is built on the
CPU, then moved), float32 with TF32 matrix products off unless --tf32, and
synchronizes before reading the clock; the JSON line then also carries
"device", "tf32", "B" and "T". Exits 77 when no CUDA device is usable.

--autocast bf16 runs the forward and the loss under torch.autocast(device,
dtype=torch.bfloat16) — PyTorch's mixed precision: the weights, the LoRA
parameters, their gradients and AdamW stay float32; autocast casts the
inputs of matmul-like ops (linear, matmul, bmm, baddbmm) to bfloat16 and
keeps softmax, norms and the cross-entropy in float32 (its CPU op lists);
backward runs in the precision each op's forward ran in. The JSON line then
carries "autocast":"bf16" ("none" otherwise).
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

TARGETS = ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]
LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="a config.json to take the family and shape from "
                   "(overrides the shape flags)")
    p.add_argument("--family", choices=["gpt2", "llama"], default="gpt2")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--embd", type=int, default=768)
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--positions", type=int, default=1024)
    p.add_argument("--kv-heads", type=int, help="llama: key/value heads (default --heads)")
    p.add_argument("--inner", type=int, help="llama: the MLP's width (default 4 * --embd)")
    p.add_argument("--head-dim", type=int, help="llama: must be --embd / --heads "
                   "(transformers 4.36 has no separate head_dim)")
    p.add_argument("--rope-theta", type=float, default=10000.0)
    p.add_argument("--eps", type=float, default=1e-5, help="llama: rms_norm_eps")
    p.add_argument("--tie", type=int, choices=[0, 1], default=0,
                   help="llama: LM head tied to the embedding")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup-steps", type=int, default=1)
    p.add_argument("--min-time", type=float, default=0.0,
                   help="time more than --steps steps while under this many seconds "
                   "(up to 1000)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--impl", choices=["hf", "ref", "auto"], default="hf",
                   help="hf: transformers + PEFT (default); ref: tests/ref/gpt2_ref.py; "
                   "auto: hf where transformers and peft import, else ref")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument("--autocast", choices=["none", "bf16"], default="none",
                   help="bf16: forward and loss under torch.autocast (bfloat16); "
                   "weights and optimizer stay float32")
    p.add_argument("--tf32", action="store_true",
                   help="on a GPU, let float32 matrix products use TF32 tensor cores")
    a = p.parse_args()
    if a.config:
        from_config(a)
    if a.family == "llama":
        a.kv_heads = a.kv_heads or a.heads
        a.inner = a.inner or 4 * a.embd
        if a.head_dim and a.head_dim * a.heads != a.embd:
            p.error("--head-dim %d != --embd / --heads: not expressible in this "
                    "transformers' LlamaConfig" % a.head_dim)
        if a.impl == "ref":
            p.error("--impl ref is GPT-2 only")
        a.impl = "hf"
    return a


def from_config(a):
    """Fills a's family and shape from the config.json at a.config."""
    with open(a.config) as f:
        c = json.load(f)
    mt = c.get("model_type")
    if mt == "gpt2":
        a.family = "gpt2"
        a.layers, a.heads, a.embd = c["n_layer"], c["n_head"], c["n_embd"]
        a.vocab, a.positions = c["vocab_size"], c["n_positions"]
        if c.get("n_inner") not in (None, 4 * a.embd):
            sys.exit("torch_lora_step: %s: n_inner %s is not 4 * n_embd" % (a.config,
                                                                           c["n_inner"]))
    elif mt in ("llama", "mistral"):
        if c.get("rope_scaling") or c.get("sliding_window") or c.get("attention_bias") or \
                c.get("mlp_bias"):
            sys.exit("torch_lora_step: %s: rope_scaling, sliding_window and biases are "
                     "not supported here" % a.config)
        a.family = "llama"
        a.layers, a.heads = c["num_hidden_layers"], c["num_attention_heads"]
        a.kv_heads = c.get("num_key_value_heads", a.heads)
        a.embd, a.inner = c["hidden_size"], c["intermediate_size"]
        a.head_dim = c.get("head_dim")
        a.vocab, a.positions = c["vocab_size"], c["max_position_embeddings"]
        a.rope_theta = c.get("rope_theta", 10000.0)
        a.eps = c.get("rms_norm_eps", 1e-5)
        a.tie = int(bool(c.get("tie_word_embeddings", False)))
    else:
        sys.exit("torch_lora_step: %s: model_type %r: expected gpt2, llama or mistral"
                 % (a.config, mt))


def hf_importable():
    try:
        import peft  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        print("torch_lora_step: transformers/peft not importable (%s): using --impl ref" % e,
              file=sys.stderr)
        return False
    return True


def build_hf(a):
    """-> (loss_fn(inputs, targets), trainable params)."""
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    cfg = GPT2Config(n_layer=a.layers, n_head=a.heads, n_embd=a.embd, vocab_size=a.vocab,
                     n_positions=max(a.positions, a.seq), resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0, activation_function="gelu_new")
    model = GPT2LMHeadModel(cfg)
    lcfg = LoraConfig(r=a.rank, lora_alpha=a.alpha, target_modules=TARGETS,
                      fan_in_fan_out=True, lora_dropout=0.0, bias="none",
                      task_type="CAUSAL_LM")
    model = get_peft_model(model, lcfg)
    model.to(a.device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    ce = torch.nn.CrossEntropyLoss()

    def loss_fn(x, y):
        logits = model(input_ids=x).logits
        return ce(logits.view(-1, logits.shape[-1]), y.view(-1))

    return loss_fn, params


def build_hf_llama(a):
    """-> (loss_fn(inputs, targets), trainable params) for a Llama shape."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    cfg = LlamaConfig(num_hidden_layers=a.layers, num_attention_heads=a.heads,
                      num_key_value_heads=a.kv_heads, hidden_size=a.embd,
                      intermediate_size=a.inner, vocab_size=a.vocab,
                      max_position_embeddings=max(a.positions, a.seq),
                      rope_theta=a.rope_theta, rms_norm_eps=a.eps,
                      tie_word_embeddings=bool(a.tie), hidden_act="silu",
                      attention_bias=False, attention_dropout=0.0, use_cache=False,
                      torch_dtype="float32")
    model = LlamaForCausalLM(cfg).to(torch.float32)
    lcfg = LoraConfig(r=a.rank, lora_alpha=a.alpha, target_modules=LLAMA_TARGETS,
                      lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, lcfg)
    model.to(a.device)
    model.eval()  # no dropout anywhere; autograd is unaffected
    params = [p for p in model.parameters() if p.requires_grad]
    ce = torch.nn.CrossEntropyLoss()

    def loss_fn(x, y):
        logits = model(input_ids=x, use_cache=False).logits
        return ce(logits.view(-1, logits.shape[-1]), y.view(-1))

    return loss_fn, params


def build_ref(a):
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(here, "..", "tests", "ref"))
    try:
        import safetensors.torch  # noqa: F401
    except ImportError:
        # gpt2_ref reads and writes files with safetensors; this step does
        # neither, so a machine without the package can still run it.
        import types

        def absent(*_args, **_kw):
            raise RuntimeError("safetensors is not installed")

        st = types.ModuleType("safetensors.torch")
        st.load_file = st.save_file = absent
        sys.modules.setdefault("safetensors", types.ModuleType("safetensors"))
        sys.modules["safetensors.torch"] = st
    import gpt2_ref as R

    cfg = R.Config({"n_layer": a.layers, "n_head": a.heads, "n_embd": a.embd,
                    "vocab_size": a.vocab, "n_positions": max(a.positions, a.seq)})
    g = torch.Generator().manual_seed(a.seed)
    C = a.embd

    def rnd(*shape):
        return torch.randn(*shape, generator=g) * 0.02

    w = {"wte.weight": rnd(a.vocab, C), "wpe.weight": rnd(cfg.n_positions, C),
         "ln_f.weight": torch.ones(C), "ln_f.bias": torch.zeros(C)}
    for i in range(a.layers):
        for ln in ("ln_1", "ln_2"):
            w["h.%d.%s.weight" % (i, ln)] = torch.ones(C)
            w["h.%d.%s.bias" % (i, ln)] = torch.zeros(C)
        for t in TARGETS:
            n_in, n_out = R.target_dims(t, C)
            w["h.%d.%s.weight" % (i, t)] = rnd(n_in, n_out)
            w["h.%d.%s.bias" % (i, t)] = torch.zeros(n_out)
    w = {k: v.to(a.device) for k, v in w.items()}
    model = R.GPT2.from_tensors(cfg, w)
    lora = R.Lora(a.rank, a.alpha, TARGETS)
    for i in range(a.layers):
        for t in TARGETS:
            n_in, n_out = R.target_dims(t, C)
            bound = 1.0 / n_in ** 0.5
            lora.A[(i, t)] = ((torch.rand(a.rank, n_in, generator=g) * 2 - 1) * bound).to(
                a.device)
            lora.B[(i, t)] = torch.zeros(n_out, a.rank).to(a.device)
    lora = lora.to(torch.float32, requires_grad=True)

    def loss_fn(x, y):
        if a.device == "cpu":
            return model.loss(x, y, lora)
        # the module makes its causal mask and row indices without naming a
        # device: make them on the GPU
        with torch.device(a.device):
            return model.loss(x, y, lora)

    return loss_fn, lora.params()


def setup_device(a):
    """Checks --device; sets the TF32 switches on a GPU. Exits 77 without one."""
    if a.device == "cpu":
        return lambda: None
    if not a.device.startswith("cuda"):
        sys.exit("torch_lora_step: unknown device %r: expected cpu or cuda[:N]" % a.device)
    if not torch.cuda.is_available():
        print("torch_lora_step: no CUDA device: skipping", file=sys.stderr)
        sys.exit(77)
    if ":" in a.device:
        torch.cuda.set_device(torch.device(a.device))
    try:  # PyTorch >= 2.9; older ones raise AssertionError on unknown names
        torch.backends.cuda.matmul.fp32_precision = "tf32" if a.tf32 else "ieee"
    except (AttributeError, AssertionError):
        torch.backends.cuda.matmul.allow_tf32 = a.tf32
    return torch.cuda.synchronize


def cpu_sample():
    """(wall s, CPU-seconds all processes spent busy or -1, CPU-seconds of this process)."""
    import resource
    busy = -1.0
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        busy = (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), busy, ru.ru_utime + ru.ru_stime


def foreign_load(s0, s1):
    """The CPUs other processes kept busy between two cpu_sample()s; -1 unknown."""
    if s0[1] < 0 or s1[1] < 0 or s1[0] <= s0[0]:
        return -1.0
    return max(0.0, (s1[1] - s0[1]) - (s1[2] - s0[2])) / (s1[0] - s0[0])


def main():
    a = parse_args()
    torch.set_num_threads(a.threads)
    sync = setup_device(a)
    torch.manual_seed(a.seed)
    if a.impl == "auto":
        a.impl = "hf" if hf_importable() else "ref"
    if a.family == "llama":
        loss_fn, params = build_hf_llama(a)
    else:
        loss_fn, params = (build_hf if a.impl == "hf" else build_ref)(a)
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    g = torch.Generator().manual_seed(a.seed + 1)
    tokens = torch.randint(0, a.vocab, (a.batch, a.seq + 1), generator=g)
    x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    x, y = x.to(a.device), y.to(a.device)

    dev_type = "cuda" if a.device.startswith("cuda") else "cpu"

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev_type, dtype=torch.bfloat16, enabled=a.autocast == "bf16"):
            loss = loss_fn(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item()

    for _ in range(a.warmup_steps):
        step()
    sync()
    s0 = cpu_sample()
    timed = 0
    while timed < a.steps or (time.perf_counter() - s0[0] < a.min_time and timed < 1000):
        step()
        timed += 1
    sync()
    s1 = cpu_sample()
    elapsed = s1[0] - s0[0]
    step_s = elapsed / max(1, timed)
    impl = "pytorch" if a.impl == "hf" else "pytorch-ref"
    out = {"impl": impl, "family": a.family, "threads": a.threads, "B": a.batch, "T": a.seq,
           "steps": timed, "autocast": a.autocast,
           "tokens_per_s": a.batch * a.seq / step_s, "step_s": step_s,
           "foreign_load": round(foreign_load(s0, s1), 2)}
    if a.device != "cpu":
        out.update({"device": a.device, "tf32": int(a.tf32)})
    print(json.dumps(out, separators=(",", ":")))


if __name__ == "__main__":
    main()
