"""torch_generate.py — PyTorch's eager single-stream greedy decode, for
comparison with `splitchain generate`: the Hugging Face model class named by
the model's config.json (GPT2LMHeadModel, LlamaForCausalLM, ...) loaded from
the same files, float32 on the CPU, generate(do_sample=False) with its key/
value cache, torch.set_num_threads(--threads). Prints one JSON line:

  {"impl":"pytorch","threads":N,"prefill_tokens_per_s":..,"tokens_per_s":..,
   "ids":[..],"foreign_load":..}

Timing: generate(max_new_tokens=1) is the prefill (the prompt's forward and
one greedy pick); generate(max_new_tokens=NEW) minus that is NEW - 1 one-token
steps, and tokens_per_s = (NEW - 1) / that time: one-token forward steps per
second, as generate_bench.sh counts splitchain's. Each is the best of --reps
runs after one untimed warm-up. foreign_load: CPUs other processes kept busy
during the timed runs (from /proc/stat, less this process's own CPU time).

    torch_generate.py --model DIR --prompt-ids 1,2,3 --new 128 --threads T [--reps K]
"""

import argparse
import json
import os
import resource
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
import transformers.generation.utils as hf_gen  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

# generate() asks whether the model is FSDP-managed by importing
# torch.distributed.fsdp, which fails on Debian's torch 1.13 under Python 3.11
# (see tests/ref/test_generate_hf.py); nothing here is FSDP-managed.
hf_gen.is_fsdp_managed_module = lambda module: False
hf_logging.set_verbosity_error()

HZ = os.sysconf("SC_CLK_TCK")


def busy_s():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / HZ


def own_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--prompt-ids", required=True)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=2)
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    with open(os.path.join(a.model, "config.json")) as f:
        cfg = json.load(f)
    cls = getattr(transformers, cfg["architectures"][0])
    model = cls.from_pretrained(a.model, torch_dtype=torch.float32)
    model.eval()
    ids = torch.tensor([[int(x) for x in a.prompt_ids.split(",")]], dtype=torch.long)

    def gen(n):
        t = time.perf_counter()
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                             do_sample=False, max_new_tokens=n, min_new_tokens=n,
                             pad_token_id=0, eos_token_id=None)
        return time.perf_counter() - t, out[0, ids.shape[1]:].tolist()

    with torch.no_grad():
        gen(4)  # warm-up
        b0, o0, w0 = busy_s(), own_s(), time.time()
        t1 = min(gen(1)[0] for _ in range(a.reps))
        runs = [gen(a.new) for _ in range(a.reps)]
        b1, o1, w1 = busy_s(), own_s(), time.time()
    tn = min(r[0] for r in runs)
    print(json.dumps({
        "impl": "pytorch", "threads": a.threads, "torch": torch.__version__,
        "transformers": transformers.__version__,
        "attn": getattr(model.config, "_attn_implementation", "?"),
        "prefill_tokens_per_s": ids.shape[1] / t1,
        "tokens_per_s": (a.new - 1) / (tn - t1),
        "ids": runs[0][1],
        "foreign_load": round(max(0.0, (b1 - b0 - (o1 - o0)) / (w1 - w0)), 2)}))


if __name__ == "__main__":
    main()
