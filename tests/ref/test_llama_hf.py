"""Llama-family models against Hugging Face transformers + PEFT:

1. each tiny model of llama_ref.test_models() (Llama, Mistral, Qwen2; GQA,
   MQA, tied head, biases, sliding window, rope_scaling llama3 and linear,
   head_dim != hidden/heads, bf16 / f16 shards) loads in transformers'
   LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM with no weight
   missing or left over, and gives llama_ref's logits; each case's ablations
   (the feature switched off) move llama_ref's logits far beyond that
   tolerance, so transformers computes the feature as llama_ref does;
2. an adapter written by llama_ref (nonzero A and B) loads with
   PeftModel.from_pretrained and gives llama_ref's logits: the PEFT layout
   and the LoRA math mean the same on both sides;
3. adapters trained by `splitchain finetune --targets all-linear` load, as
   written, with PeftModel.from_pretrained and give the loss `sc_reftool grad`
   reports; adapters created and saved by PEFT (B randomised; several
   target_modules spellings, all-linear among them) load in
   `sc_reftool grad --adapter` and give the PEFT model's loss.

Tolerances: logits of transformers in float64 1e-5 relative (it computes
RMSNorm and the rotary angles in float32 whatever the dtype), in float32
1e-4; losses of splitchain against PEFT 1e-4 relative (float32, eval mode).

Environment (set by ctest): SC_SPLITCHAIN, SC_REFTOOL, SC_REF_TMP.
"""

import dataclasses
import json
import os

import gpt2_ref as R
import llama_ref as LR

R.offline()

import torch  # noqa: E402
from peft import LoraConfig, PeftConfig, PeftModel, get_peft_model  # noqa: E402
from peft import __version__ as peft_version  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import (LlamaForCausalLM, MistralForCausalLM,  # noqa: E402
                          Qwen2ForCausalLM)
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

TOL64, TOL32, LOSS_TOL = 1e-5, 1e-4, 1e-4
B, T, M = 2, 32, 2
SEED = 5
HF_CLASS = {"llama": LlamaForCausalLM, "mistral": MistralForCausalLM,
            "qwen2": Qwen2ForCausalLM}

splitchain = R.tool("SC_SPLITCHAIN")
reftool = R.tool("SC_REFTOOL")
tmp = R.tmp_dir("llama_hf")
data = R.write_text(os.path.join(tmp, "data.txt"), seed=6)
models = {m.tag: m for m in LR.test_models(window=8)}
assert T > models["mistral"].config["sliding_window"], "the window must be shorter than T"
model_dirs = {}


def model_dir(tag):
    if tag not in model_dirs:
        model_dirs[tag] = models[tag].write(tmp)
    return model_dirs[tag]


def hf_model(tag, dtype=torch.float32):
    d = model_dir(tag)
    cls = HF_CLASS[models[tag].config["model_type"]]
    m, info = cls.from_pretrained(d, torch_dtype=dtype, attn_implementation="eager",
                                  output_loading_info=True)
    bad = {k: v for k, v in info.items() if v}
    assert not bad, "transformers loaded %s with %s" % (d, bad)
    m.eval()
    return m


def tokens(vocab, seed):
    """(B, T) ids over the whole vocabulary (not only bytes)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (B, T), generator=g)


@torch.no_grad()
def hf_logits(model, x):
    return model(input_ids=x).logits


def logits_case(tag):
    tm = models[tag]

    def case():
        ref = LR.Llama(model_dir(tag), torch.float64)
        x = tokens(ref.cfg.vocab_size, 1)
        with torch.no_grad():
            want = ref.logits(x)
        for dtype, tol in ((torch.float64, TOL64), (torch.float32, TOL32)):
            m = hf_model(tag, dtype)
            assert type(m) is HF_CLASS[ref.cfg.model_type], type(m)
            err = R.max_rel_err(hf_logits(m, x), want)
            print("%s %s: logits rel err %.2e" % (type(m).__name__, dtype, err))
            assert err <= tol, "transformers' %s logits differ by %.3e relative" % (dtype,
                                                                                 err)
        for what, over in tm.ablations.items():
            other = LR.Llama.from_tensors(LR.Config(dict(tm.config, **over)), ref.w)
            with torch.no_grad():
                moved = R.max_rel_err(other.logits(x), want)
            print("ablation '%s' moves llama_ref's logits by %.2e" % (what, moved))
            assert moved > 100 * TOL32, "ablation '%s' is too weak to test" % what
    return "transformers logits: " + tm.title, case


def lora_logits_case(tag, targets, rank, alpha):
    def case():
        ref = LR.Llama(model_dir(tag), torch.float64)
        adapter_dir = os.path.join(tmp, "ref-adapter-" + tag)
        LR.random_lora(ref.cfg, rank, alpha, targets, 3).save(adapter_dir)
        lora = LR.load_adapter(adapter_dir)
        pc = PeftConfig.from_pretrained(adapter_dir)
        assert pc.peft_type == "LORA" and not pc.fan_in_fan_out, pc
        model = PeftModel.from_pretrained(hf_model(tag, torch.float64), adapter_dir)
        model.eval()
        assert_loaded_as_saved(model, adapter_dir)
        x = tokens(ref.cfg.vocab_size, 2)
        with torch.no_grad():
            want = ref.logits(x, lora)
            moved = R.max_rel_err(want, ref.logits(x))
        err = R.max_rel_err(hf_logits(model, x), want)
        print("adapter on %s moves the logits by %.2e; PEFT vs llama_ref rel err %.2e"
              % (",".join(pc.target_modules), moved, err))
        assert moved > 100 * TOL64, "the adapter barely changes the logits"
        assert err <= TOL64, "PEFT's logits differ by %.3e relative" % err
    return "llama_ref adapter in PEFT: " + models[tag].title, case


def lora_state(peft_model):
    """PEFT's LoRA weights under the names of the saved file."""
    out = {}
    for name, p in peft_model.named_parameters():
        if "lora_" in name:
            out[name.replace(".default", "")] = p.detach()
    return out


def assert_loaded_as_saved(model, adapter_dir):
    """Every tensor of the file is in the model, as saved (PEFT loads
    non-strictly), and the model has no LoRA weight the file lacks."""
    want = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    have = lora_state(model)
    assert sorted(have) == sorted(want), "PEFT made %s, the file holds %s" % (
        sorted(set(have) - set(want))[:3], sorted(set(want) - set(have))[:3])
    for n in want:
        assert torch.equal(have[n].to(want[n].dtype), want[n]), "%s not loaded as saved" % n


# --------------------------------------------------------------------------
# with splitchain


def sc_loss(tag, adapter_dir, name, step=0):
    out = os.path.join(tmp, "grad-%s.safetensors" % name)
    R.run([reftool, "grad", "--model", model_dir(tag), "--data", data, "--batch", B,
           "--seq", T, "--micro", M, "--step", step, "--seed", SEED, "--stages", 1,
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


def compare(what, got, want):
    err = abs(got - want) / abs(want)
    print("%s: splitchain %.9f  reference %.9f  rel err %.2e" % (what, got, want, err))
    assert err <= LOSS_TOL, "%s: loss differs by %.3e relative" % (what, err)


def trained_case(tag):
    def case():
        adapter_dir = os.path.join(tmp, "trained-" + tag)
        R.run([splitchain, "finetune", "--model", model_dir(tag), "--data", data,
               "--steps", 3, "--batch", B, "--seq", T, "--micro", M, "--rank", 4,
               "--alpha", 8, "--targets", "all-linear", "--seed", SEED, "--out", adapter_dir])
        # splitchain's adapter_config.json as PEFT reads it: PEFT passes every
        # field to LoraConfig(), so a field it does not know is an error
        with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
            fields = set(json.load(f))
        unknown = fields - {fl.name for fl in dataclasses.fields(LoraConfig)}
        assert not unknown, "adapter_config.json has fields PEFT %s rejects: %s" % (
            peft_version, sorted(unknown))
        pc = PeftConfig.from_pretrained(adapter_dir)
        assert pc.peft_type == "LORA" and pc.r == 4 and pc.lora_alpha == 8, pc
        assert not pc.fan_in_fan_out, "fan_in_fan_out must be false for nn.Linear"
        lora = LR.load_adapter(adapter_dir)
        assert lora.targets == list(LR.TARGETS), "all-linear adapted only %s" % lora.targets
        assert len(lora.A) == len(LR.TARGETS) * models[tag].config["num_hidden_layers"]
        model = PeftModel.from_pretrained(hf_model(tag), adapter_dir)
        model.eval()
        assert_loaded_as_saved(model, adapter_dir)
        assert all(b.abs().max() > 0 for b in lora.B.values()), "a B is still zero"

        loss, x, y = sc_loss(tag, adapter_dir, "trained-" + tag, step=3)
        compare("splitchain adapter in PEFT", loss, model_loss(model, x, y))
        ref = LR.Llama(model_dir(tag), torch.float64)
        compare("splitchain adapter in llama_ref (f64)", loss, ref.step_loss(x, y, lora).item())
    return "splitchain adapter (all-linear) in PEFT: " + models[tag].title, case


def peft_case(tag, target_modules, rank, alpha):
    def case():
        adapter_dir = os.path.join(tmp, "peft-%s-%d" % (tag, rank))
        cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=target_modules,
                         lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
        torch.manual_seed(rank)  # PEFT draws A from torch's global stream
        model = get_peft_model(hf_model(tag), cfg)
        g = torch.Generator().manual_seed(rank * 100 + alpha)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        model.save_pretrained(adapter_dir)
        model.eval()
        saved = PeftConfig.from_pretrained(adapter_dir).target_modules
        print("PEFT saved target_modules %s" % sorted(saved))
        loss, x, y = sc_loss(tag, adapter_dir, "peft-%s-%d" % (tag, rank))
        compare("PEFT adapter %s in splitchain" % (target_modules,), loss,
                model_loss(model, x, y))
    return "PEFT adapter %s in splitchain: %s" % (target_modules, models[tag].title), case


R.run_cases(
    [logits_case(tag) for tag in models]
    + [lora_logits_case("gqa", list(LR.TARGETS), 4, 8.0),
       lora_logits_case("qwen2", ["self_attn.q_proj", "self_attn.v_proj", "mlp.up_proj"],
                        2, 5.0),
       lora_logits_case("linear", ["self_attn.k_proj", "self_attn.o_proj",
                                   "mlp.down_proj"], 8, 16.0),
       lora_logits_case("mistral", ["self_attn.q_proj", "self_attn.k_proj",
                                    "mlp.gate_proj"], 4, 4.0)]
    + [trained_case(tag) for tag in ("gqa", "qwen2", "mistral", "bf16")]
    + [peft_case("gqa", ["q_proj", "v_proj"], 4, 8),
       peft_case("qwen2", "all-linear", 2, 5),
       peft_case("mistral", ["self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj"], 8, 16),
       peft_case("mqa", ["k_proj", "up_proj"], 4, 16)]
)
