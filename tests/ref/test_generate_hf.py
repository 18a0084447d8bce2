"""Generation against Hugging Face transformers + PEFT: `splitchain generate`
with a random nonzero LoRA adapter gives, greedily, the same new ids as
PeftModel.generate(do_sample=False) on the same files — for a random GPT-2
and for Llama-family models (GQA, biases, Qwen2, a Mistral window shorter
than prompt + generation, llama3 rope scaling, untied and tied heads) — in
one stage and split into three in-process stages. Sampling with a seed is
reproducible, and another seed gives another text.

Environment (set by ctest): SC_SPLITCHAIN, SC_REFTOOL, SC_REF_TMP.
"""

import json
import os
import subprocess

import gpt2_ref as R
import llama_ref as LR

R.offline()

import torch  # noqa: E402
from peft import PeftModel  # noqa: E402
from transformers import (GPT2LMHeadModel, LlamaForCausalLM,  # noqa: E402
                          MistralForCausalLM, Qwen2ForCausalLM)
import transformers.generation.utils as hf_gen  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

# generate() asks whether the model is FSDP-managed by importing
# torch.distributed.fsdp, which fails on Debian's torch 1.13 under Python
# 3.11 (a dataclass with a mutable default); nothing here is FSDP-managed.
hf_gen.is_fsdp_managed_module = lambda module: False

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

NEW = 24
HF_CLASS = {"gpt2": GPT2LMHeadModel, "llama": LlamaForCausalLM,
            "mistral": MistralForCausalLM, "qwen2": Qwen2ForCausalLM}

splitchain = R.tool("SC_SPLITCHAIN")
tmp = R.tmp_dir("generate_hf")


def sc_generate(model_dir, adapter_dir, prompt, *extra):
    out = subprocess.run([splitchain, "generate", "--model", model_dir, "--adapter", adapter_dir,
                          "--prompt-ids", ",".join(str(i) for i in prompt),
                          "--max-new-tokens", str(NEW), "--json", "--threads", "1"]
                         + [str(e) for e in extra],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["ids"]


@torch.no_grad()
def hf_generate(model_type, model_dir, adapter_dir, prompt):
    model = HF_CLASS[model_type].from_pretrained(model_dir, torch_dtype=torch.float32)
    model = PeftModel.from_pretrained(model, adapter_dir)
    model.eval()
    ids = torch.tensor([prompt], dtype=torch.long)
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                         max_new_tokens=NEW, min_new_tokens=NEW, pad_token_id=0,
                         eos_token_id=None)
    return out[0, len(prompt):].tolist()


def gpt2_case():
    model_dir = R.make_model(splitchain, os.path.join(tmp, "gpt2"), 3, 4, 64, 300, 128, seed=21)
    cfg = R.load_config(model_dir)
    lora = R.random_lora(cfg, 4, 8.0, R.TARGETS, seed=22, a_scale=0.3, b_scale=0.3)
    adapter = os.path.join(tmp, "gpt2-adapter")
    lora.save(adapter)
    return "gpt2", model_dir, adapter


def llama_case(m):
    model_dir = m.write(tmp)
    lora = LR.random_lora(LR.Config(m.config), 4, 8.0, LR.TARGETS, seed=m.seed + 100,
                          a_scale=0.3, b_scale=0.3)
    adapter = os.path.join(tmp, "adapter-" + m.tag)
    lora.save(adapter)
    return m.config["model_type"], model_dir, adapter


def check(name, model_type, model_dir, adapter, prompt):
    want = hf_generate(model_type, model_dir, adapter, prompt)
    got = sc_generate(model_dir, adapter, prompt)
    assert got == want, "%s: splitchain %s != transformers %s" % (name, got, want)
    chain = sc_generate(model_dir, adapter, prompt, "--stages", 3)
    assert chain == got, "%s: 3 stages %s != 1 stage %s" % (name, chain, got)
    assert len(set(got)) > 2, "%s: degenerate output %s" % (name, got)
    print("ok   %s: %d greedy ids equal transformers + PEFT, 1 and 3 stages" % (name, len(got)))


def main():
    prompt = [5, 17, 99, 42, 7, 230, 11, 64, 3, 150]
    cases = [("gpt2",) + gpt2_case()]
    models = {m.tag: m for m in LR.test_models(window=8)}
    for tag in ("gqa", "mqa", "bias", "qwen2", "mistral", "llama3"):
        if tag in models:
            cases.append((tag,) + llama_case(models[tag]))
    assert len(cases) >= 6, [c[0] for c in cases]
    for name, model_type, model_dir, adapter in cases:
        check(name, model_type, model_dir, adapter, prompt)
    # Sampling: same seed, same ids; another seed, other ids.
    name, model_type, model_dir, adapter = cases[1]
    a = sc_generate(model_dir, adapter, prompt, "--temperature", 1.5, "--top-k", 50, "--seed", 7)
    b = sc_generate(model_dir, adapter, prompt, "--temperature", 1.5, "--top-k", 50, "--seed", 7)
    c = sc_generate(model_dir, adapter, prompt, "--temperature", 1.5, "--top-k", 50, "--seed", 8)
    assert a == b, "sampling with one seed differs: %s %s" % (a, b)
    assert a != c, "two seeds gave the same %d sampled ids" % len(a)
    print("ok   sampling is reproducible by seed")


main()
