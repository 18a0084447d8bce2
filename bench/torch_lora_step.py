"""torch_lora_step.py — PyTorch's own LoRA training step, for comparison with
splitchain's: a randomly initialised GPT-2 (Hugging Face GPT2LMHeadModel)
with PEFT LoRA adapters on all four projections, frozen base weights, AdamW
on the LoRA parameters, float32 on the CPU. Times --steps optimizer steps
after --warmup-steps untimed ones and prints one line of JSON:

  {"impl":"pytorch","threads":N,"tokens_per_s":..,"step_s":..}

Runs with the reference tests' venv (tests/ref/setup-venv.sh). --impl ref
uses the independent module of tests/ref/gpt2_ref.py instead of HF + PEFT;
--impl auto uses HF + PEFT where both import, else ref.

--device cuda[:N] runs the same step on a GPU (the model is built on the
CPU, then moved), float32 with TF32 matrix products off unless --tf32, and
synchronizes before reading the clock; the JSON line then also carries
"device", "tf32", "B" and "T". Exits 77 when no CUDA device is usable.
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


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--embd", type=int, default=768)
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--positions", type=int, default=1024)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup-steps", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--impl", choices=["hf", "ref", "auto"], default="hf",
                   help="hf: transformers + PEFT (default); ref: tests/ref/gpt2_ref.py; "
                   "auto: hf where transformers and peft import, else ref")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument("--tf32", action="store_true",
                   help="on a GPU, let float32 matrix products use TF32 tensor cores")
    return p.parse_args()


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


def main():
    a = parse_args()
    torch.set_num_threads(a.threads)
    sync = setup_device(a)
    torch.manual_seed(a.seed)
    if a.impl == "auto":
        a.impl = "hf" if hf_importable() else "ref"
    loss_fn, params = (build_hf if a.impl == "hf" else build_ref)(a)
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    g = torch.Generator().manual_seed(a.seed + 1)
    tokens = torch.randint(0, a.vocab, (a.batch, a.seq + 1), generator=g)
    x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    x, y = x.to(a.device), y.to(a.device)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item()

    for _ in range(a.warmup_steps):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    sync()
    elapsed = time.perf_counter() - t0
    step_s = elapsed / max(1, a.steps)
    impl = "pytorch" if a.impl == "hf" else "pytorch-ref"
    out = {"impl": impl, "threads": a.threads,
           "tokens_per_s": a.batch * a.seq / step_s, "step_s": step_s}
    if a.device != "cpu":
        out.update({"device": a.device, "tf32": int(a.tf32), "B": a.batch, "T": a.seq})
    print(json.dumps(out, separators=(",", ":")))


if __name__ == "__main__":
    main()
