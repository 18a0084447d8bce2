"""JSONL training data through a Hugging Face tokenizer: `sc_reftool batches`
(the loader every job uses) on a prompt/completion file and a text file,
tokenized with a byte-level BPE tokenizer trained here, gives exactly the
windows of the stream Hugging Face `tokenizers` makes — each prompt encoded
with the post-processor (BOS), each completion without, EOS (the model's, as
the post-processor adds none) after each example — with every target that is
a prompt token ignored (-1) and every other one kept.

Environment (set by ctest): SC_SPLITCHAIN, SC_REFTOOL, SC_REF_TMP.
"""

import json
import os
import subprocess

import gpt2_ref as R

R.offline()

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from tokenizers import (AddedToken, Tokenizer, decoders, models,  # noqa: E402
                        pre_tokenizers, processors, trainers)

reftool = R.tool("SC_REFTOOL")
tmp = R.tmp_dir("dataset_hf")
T, B, M, STEPS, SEED = 16, 2, 2, 4, 3

WORDS = ["the chain", "of edge", "servers trains", "LoRA adapters", "fine", "tuning",
         "héllo wörld", "数据", "🙂 ok", "  spaced   out ", "12345", "tab\tsep"]


def tokenizer(path):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|eos|>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                             show_progress=False)
    tok.train_from_iterator(WORDS * 20, tr)
    tok.add_special_tokens([AddedToken("<|bos|>", special=True, normalized=False)])
    bos = tok.token_to_id("<|bos|>")
    tok.post_processor = processors.TemplateProcessing(single="<|bos|> $A",
                                                       special_tokens=[("<|bos|>", bos)])
    tok.save(path)
    return tok


def batches(data, tok_path, eos, vocab):
    out = os.path.join(tmp, os.path.basename(data) + ".batches.safetensors")
    R.run([reftool, "batches", "--data", data, "--tokenizer", tok_path, "--vocab", vocab,
           "--eos", eos, "--batch", B, "--seq", T, "--micro", M, "--steps", STEPS,
           "--seed", SEED, "--out", out])
    ts = load_file(out)
    return ts["inputs"].reshape(-1, T).tolist(), ts["targets"].reshape(-1, T).tolist()


def check(name, ids, mask, rows_in, rows_tg):
    windows = {}
    for w in range((len(ids) - 1) // T):
        windows[tuple(ids[w * T:w * T + T])] = w
    assert len(rows_in) == STEPS * M * B
    for x, y in zip(rows_in, rows_tg):
        w = windows.get(tuple(x))
        assert w is not None, "%s: a sample is no window of the HF stream: %s" % (name, x)
        want = [ids[w * T + t + 1] if mask[w * T + t + 1] else -1 for t in range(T)]
        assert y == want, "%s: window %d targets %s, want %s" % (name, w, y, want)
    print("ok   %s: %d samples are windows of the HF token stream, targets masked as "
          "expected" % (name, len(rows_in)))


def main():
    tok_path = os.path.join(tmp, "tokenizer.json")
    tok = tokenizer(tok_path)
    eos = tok.token_to_id("<|eos|>")
    vocab = tok.get_vocab_size()
    examples = [(WORDS[i % len(WORDS)] + " ?", " " + WORDS[(3 * i + 1) % len(WORDS)] + ".")
                for i in range(40)]
    pc = os.path.join(tmp, "pc.jsonl")
    with open(pc, "w") as f:
        for p, c in examples:
            f.write(json.dumps({"prompt": p, "completion": c}) + "\n")
    ids, mask = [], []
    for p, c in examples:
        a = tok.encode(p).ids
        b = tok.encode(c, add_special_tokens=False).ids + [eos]
        ids += a + b
        mask += [0] * len(a) + [1] * len(b)
    assert 0 < sum(mask) < len(mask)
    check("prompt/completion", ids, mask, *batches(pc, tok_path, eos, vocab))

    text = os.path.join(tmp, "text.jsonl")
    docs = [" ".join(WORDS[i:i + 4]) for i in range(30)]
    with open(text, "w") as f:
        for d in docs:
            f.write(json.dumps({"text": d}) + "\n")
    ids = []
    for d in docs:
        ids += tok.encode(d).ids + [eos]
    check("text", ids, [1] * len(ids), *batches(text, tok_path, eos, vocab))


main()
