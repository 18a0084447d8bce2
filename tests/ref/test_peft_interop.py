"""Interoperability with Hugging Face transformers + PEFT, both ways:

1. a model made by `splitchain make-model` loads in GPT2LMHeadModel, and an
   adapter trained by `splitchain finetune` loads, as written, with
   PeftModel.from_pretrained and gives the loss `sc_reftool grad` reports;
2. an adapter created and saved by PEFT (LoraConfig with fan_in_fan_out=True
   on GPT2LMHeadModel, B randomised) loads in `sc_reftool grad --adapter` and
   gives the PEFT model's loss.

Losses must agree to 1e-4 relative (float32 on both sides, eval mode).

Environment (set by ctest): SC_SPLITCHAIN, SC_REFTOOL, SC_REF_TMP.
"""

import dataclasses
import json
import os

import gpt2_ref as R

R.offline()

import torch  # noqa: E402
from peft import LoraConfig, PeftConfig, PeftModel, get_peft_model  # noqa: E402
from peft import __version__ as peft_version  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import GPT2LMHeadModel  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.set_verbosity_error()

TOL = 1e-4
L, NH, C, V, P = 3, 4, 64, 512, 64
B, T, M = 2, 32, 2
SEED = 9

splitchain = R.tool("SC_SPLITCHAIN")
reftool = R.tool("SC_REFTOOL")
tmp = R.tmp_dir("peft_interop")
model_dir = R.make_model(splitchain, os.path.join(tmp, "model"), L, NH, C, V, P, seed=31)
data = R.write_text(os.path.join(tmp, "data.txt"), seed=3)


def hf_model():
    m = GPT2LMHeadModel.from_pretrained(model_dir, torch_dtype=torch.float32)
    m.eval()
    return m


def sc_loss(adapter_dir, tag, step=0):
    out = os.path.join(tmp, "grad-%s.safetensors" % tag)
    R.run([reftool, "grad", "--model", model_dir, "--data", data, "--batch", B, "--seq", T,
           "--micro", M, "--step", step, "--seed", SEED, "--stages", 1,
           "--adapter", adapter_dir, "--out", out])
    with safe_open(out, framework="pt") as f:
        loss = float(f.metadata()["loss"])
    ts = load_file(out)
    return loss, ts["inputs"].long(), ts["targets"].long()


@torch.no_grad()
def model_loss(model, inputs, targets):
    total = 0.0
    for m in range(inputs.shape[0]):
        logits = model(input_ids=inputs[m]).logits
        total += R.cross_entropy(logits.double(), targets[m]).item()
    return total / inputs.shape[0]


def lora_state(peft_model):
    """PEFT's LoRA weights under the names of the saved file."""
    out = {}
    for name, p in peft_model.named_parameters():
        if "lora_" in name:
            out[name.replace(".default", "")] = p.detach()
    return out


def compare(what, got, want):
    err = abs(got - want) / abs(want)
    print("%s: splitchain %.9f  reference %.9f  rel err %.2e" % (what, got, want, err))
    assert err <= TOL, "%s: loss differs by %.3e relative" % (what, err)


def case_base_model():
    """No adapter touches the loss: a zero-B adapter must give the HF loss."""
    init_dir = os.path.join(tmp, "zero")
    R.run([splitchain, "finetune", "--model", model_dir, "--data", data, "--steps", 0,
           "--batch", B, "--seq", T, "--micro", M, "--rank", 2, "--alpha", 4,
           "--targets", "all", "--seed", SEED, "--out", init_dir])
    loss, x, y = sc_loss(init_dir, "zero")
    compare("base model, HF GPT2LMHeadModel", loss, model_loss(hf_model(), x, y))


def case_half_models():
    """f16 and bf16 checkpoints: splitchain and HF both widen them to float32."""
    for dt in ("f16", "bf16"):
        d = R.make_model(splitchain, os.path.join(tmp, "model-" + dt), 2, NH, C, V, P,
                         seed=32, dtype=dt)
        st = load_file(os.path.join(d, "model.safetensors"))
        want_dt = torch.float16 if dt == "f16" else torch.bfloat16
        assert st["transformer.wte.weight"].dtype == want_dt, st["transformer.wte.weight"].dtype
        zero = os.path.join(tmp, "zero-" + dt)
        R.run([splitchain, "finetune", "--model", d, "--data", data, "--steps", 0,
               "--batch", B, "--seq", T, "--micro", M, "--rank", 2, "--alpha", 4,
               "--targets", "all", "--seed", SEED, "--out", zero])
        out = os.path.join(tmp, "grad-%s.safetensors" % dt)
        R.run([reftool, "grad", "--model", d, "--data", data, "--batch", B, "--seq", T,
               "--micro", M, "--step", 0, "--seed", SEED, "--adapter", zero, "--out", out])
        with safe_open(out, framework="pt") as f:
            loss = float(f.metadata()["loss"])
        ts = load_file(out)
        m = GPT2LMHeadModel.from_pretrained(d, torch_dtype=torch.float32)
        m.eval()
        compare("%s model in HF" % dt, loss,
                model_loss(m, ts["inputs"].long(), ts["targets"].long()))


def trained_case(tag, targets):
    def case():
        adapter_dir = os.path.join(tmp, "trained-" + tag)
        R.run([splitchain, "finetune", "--model", model_dir, "--data", data, "--steps", 6,
               "--batch", B, "--seq", T, "--micro", M, "--rank", 4, "--alpha", 8,
               "--targets", targets, "--lr", 1e-2, "--min-lr", 1e-3, "--warmup", 2,
               "--weight-decay", 0.01, "--clip", 1.0, "--seed", SEED, "--out", adapter_dir])
        # splitchain's adapter_config.json as PEFT reads it: this PEFT passes
        # every field to LoraConfig(), so a field it does not know is an error
        with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
            fields = set(json.load(f))
        unknown = fields - {fl.name for fl in dataclasses.fields(LoraConfig)}
        assert not unknown, "adapter_config.json has fields PEFT %s rejects: %s" % (
            peft_version, sorted(unknown))
        pc = PeftConfig.from_pretrained(adapter_dir)
        assert pc.peft_type == "LORA" and pc.r == 4 and pc.lora_alpha == 8, pc
        assert pc.fan_in_fan_out, "fan_in_fan_out must be true for GPT-2's Conv1D"
        model = PeftModel.from_pretrained(hf_model(), adapter_dir)
        model.eval()
        # every tensor of the file is in the model (PEFT loads non-strictly)
        want = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
        have = lora_state(model)
        assert sorted(have) == sorted(want), "PEFT made %s, the file holds %s" % (
            sorted(set(have) - set(want))[:3], sorted(set(want) - set(have))[:3])
        for n in want:
            assert torch.equal(have[n], want[n]), "%s not loaded as saved" % n
        assert any(want[n].abs().max() > 0 for n in want if "lora_B" in n), "B still zero"

        loss, x, y = sc_loss(adapter_dir, "trained-" + tag, step=6)
        compare("splitchain adapter in PEFT", loss, model_loss(model, x, y))
        ref = R.GPT2(model_dir, torch.float64)
        compare("splitchain adapter in gpt2_ref (f64)", loss,
                ref.step_loss(x, y, R.load_adapter(adapter_dir)).item())
    return case


def peft_case(tag, target_modules, rank, alpha):
    def case():
        adapter_dir = os.path.join(tmp, "peft-" + tag)
        cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=target_modules,
                         fan_in_fan_out=True, lora_dropout=0.0, bias="none",
                         task_type="CAUSAL_LM")
        torch.manual_seed(rank)  # PEFT draws A from torch's global stream
        model = get_peft_model(hf_model(), cfg)
        g = torch.Generator().manual_seed(rank * 100 + alpha)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        model.save_pretrained(adapter_dir)
        model.eval()
        loss, x, y = sc_loss(adapter_dir, "peft-" + tag)
        compare("PEFT adapter %s in splitchain" % (target_modules,), loss,
                model_loss(model, x, y))
    return case


R.run_cases([
    ("splitchain model in HF GPT2LMHeadModel", case_base_model),
    ("f16 and bf16 checkpoints in HF", case_half_models),
    ("splitchain adapter (all targets) in PEFT", trained_case("all", "all")),
    ("splitchain adapter (attn.c_attn, mlp.c_fc) in PEFT",
     trained_case("subset", "attn.c_attn,mlp.c_fc")),
    ("PEFT adapter, target_modules c_attn", peft_case("c_attn", ["c_attn"], 4, 8)),
    ("PEFT adapter, target_modules c_attn c_proj c_fc",
     peft_case("common", ["c_attn", "c_proj", "c_fc"], 8, 16)),
    ("PEFT adapter, full module names", peft_case(
        "full", ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"], 2, 5)),
])
