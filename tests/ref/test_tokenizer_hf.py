"""`splitchain tokenize` / `detokenize` against Hugging Face tokenizers 0.21.

Trains small tokenizers offline with tokenizers' own BpeTrainer over a corpus
of English, CJK, Arabic, emoji, combining marks, whitespace runs, digits and
control characters, each with added special tokens (lstrip / rstrip /
single_word / normalized flags) and a TemplateProcessing post-processor:

  gpt2     byte-level BPE, ByteLevel pre-tokenizer (GPT-2 regex) and decoder
  llama3   Split(Llama 3 regex) + ByteLevel(use_regex=false), ignore_merges
  sp       SentencePiece-style BPE (Llama 2): Prepend + Replace normalizers,
           byte_fallback with <0xNN> tokens, unk + fuse_unk, decoder
           Replace / ByteFallback / Fuse / Strip
  meta     the same model with a Metaspace(prepend_scheme="first") pre-tokenizer
           and decoder
  nfkc     byte-level BPE behind an NFKC normalizer
  legacy   the gpt2 model saved as vocab.json + merges.txt

For each: `tokenize --text LINE --json` == encode(LINE).ids for many lines,
and for a file of (nearly) every code point of planes 0-2 in several contexts,
with and without --no-special; `tokenize --in FILE --json` == encode(whole
file) (the file holds invalid UTF-8 too: splitchain replaces it with U+FFFD,
so the reference is encode(bytes.decode("utf-8", "replace"))); the token
file written by --out holds the same ids; and `detokenize` == decode(ids).

Environment (set by ctest): SC_SPLITCHAIN, SC_REF_TMP.
"""

import json
import os
import random
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                        pre_tokenizers, processors, trainers)

SC = os.environ.get("SC_SPLITCHAIN", "splitchain")
TMP = os.environ.get("SC_REF_TMP", "/tmp/sc_tok_ref")
os.makedirs(TMP, exist_ok=True)

LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
             r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

FRAGMENTS = [
    "The quick brown fox jumps over the lazy dog.", "It's a test; we'll see what's done!",
    "I'M SHOUTING, you're not", "numbers 1234567 and 3.14159, 2024-05-20", "  leading spaces",
    "trailing spaces   ", "tabs\tand\nnewlines\n\n", "multiple     spaces    here",
    "日本語のテキストです。", "中文字符和标点，还有数字123", "한국어 문장입니다",
    "مرحبا بالعالم، هذا نص عربي", "emoji 😀🎉👍🏽 and 👨‍👩‍👧 family", "café naïve résumé",
    "e\u0301 combining a\u0308 o\u0303\u0323", "ﬁ ligature Ⅻ roman ① circled ＡＢＣ fullwidth",
    "control \x01\x02\x7f chars\x0b\x0c", "\u00a0nbsp\u2003em space\u3000ideographic",
    "<|user|> hello <|end|>", "xyzzy is a word but xyzzyx is not", "<s> and </s> inside",
    "mixed日本English混合", "    ", "a", "", "\r\n\r\n", "don't  stop   'til", "ǅ ǈ ſ Kelvin K",
    "code: def f(x):\n    return x**2  # square", "URL https://example.com/a?b=c&d=e",
    "İstanbul ΣΑΣ σας", "\u200b\u200dzero width", "ﷺ ﷽", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛",
]


def corpus_lines(n, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randint(1, 4)
        parts = [rng.choice(FRAGMENTS) for _ in range(k)]
        sep = rng.choice([" ", "", "\n", "  ", "\t"])
        out.append(sep.join(parts))
    return out


TRAIN = corpus_lines(3000, 1) + FRAGMENTS * 5
TEST_LINES = FRAGMENTS + corpus_lines(25, 2)


def add_tokens(tok, bos):
    tok.add_special_tokens([
        AddedToken(bos, special=True, normalized=False),
        AddedToken("<|user|>", special=True, lstrip=True, rstrip=True, normalized=False),
        AddedToken("<|end|>", special=True, normalized=False),
    ])
    tok.add_tokens([
        AddedToken("xyzzy", single_word=True, normalized=False),
        AddedToken("fox jumps", normalized=True),
    ])
    bid = tok.token_to_id(bos)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bid)])


def byte_level(path, vocab, split_re=None, nfkc=False):
    tok = Tokenizer(models.BPE(ignore_merges=split_re is not None))
    if split_re:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split_re), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if nfkc:
        tok.normalizer = normalizers.NFKC()
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                             show_progress=False)
    tok.train_from_iterator(TRAIN, tr)
    add_tokens(tok, "<|begin_of_text|>")
    tok.save(path)
    return tok


def sentencepiece(path, meta_path):
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                           normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never",
                                                 split=False)
    tr = trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"],
                             limit_alphabet=120, show_progress=False)
    tok.train_from_iterator(TRAIN, tr)
    j = json.loads(tok.to_str())
    vocab = j["model"]["vocab"]
    nxt = max(vocab.values()) + 1
    for b in range(256):  # Llama 2's byte tokens: plain vocabulary entries
        vocab[f"<0x{b:02X}>"] = nxt + b
    j["pre_tokenizer"] = None
    j["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    tok = Tokenizer.from_str(json.dumps(j))
    add_tokens(tok, "<s>")
    tok.save(path)
    # the same model as Llama 2 converted with legacy=False: Metaspace
    j = json.loads(tok.to_str())
    j["normalizer"] = None
    j["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁",
                          "prepend_scheme": "first", "split": False}
    j["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False},
        {"type": "ByteFallback"}, {"type": "Fuse"}]}
    meta = Tokenizer.from_str(json.dumps(j))
    meta.save(meta_path)
    return tok, meta


def legacy(tok, d):
    os.makedirs(d, exist_ok=True)
    j = json.loads(tok.to_str())
    vocab = dict(j["model"]["vocab"])
    for t in j["added_tokens"]:
        vocab[t["content"]] = t["id"]
    with open(os.path.join(d, "vocab.json"), "w") as f:
        json.dump(j["model"]["vocab"], f, ensure_ascii=False)
    with open(os.path.join(d, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n")
        for m in j["model"]["merges"]:
            f.write((m if isinstance(m, str) else " ".join(m)) + "\n")
    # what the C side builds from these two files
    ref = Tokenizer(models.BPE.from_file(os.path.join(d, "vocab.json"),
                                         os.path.join(d, "merges.txt")))
    ref.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    ref.decoder = decoders.ByteLevel()
    ref.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
    return ref


def run(args, data=None):
    p = subprocess.run([SC] + args, input=data, capture_output=True)
    if p.returncode != 0:
        sys.exit(f"FAIL: splitchain {' '.join(map(str, args))[:200]} -> {p.returncode}: "
                 f"{p.stderr.decode(errors='replace')}")
    return p.stdout


def sc_ids(tpath, args):
    return json.loads(run(["tokenize", "--tokenizer", tpath, "--json"] + args))["ids"]


def main():
    failures = []
    counts = {}
    toks = {}
    toks["gpt2"] = (byte_level(f"{TMP}/gpt2.json", 1200), f"{TMP}/gpt2.json")
    toks["llama3"] = (byte_level(f"{TMP}/llama3.json", 1200, split_re=LLAMA3_RE),
                      f"{TMP}/llama3.json")
    sp, meta = sentencepiece(f"{TMP}/sp.json", f"{TMP}/meta.json")
    toks["sp"] = (sp, f"{TMP}/sp.json")
    toks["meta"] = (meta, f"{TMP}/meta.json")
    toks["nfkc"] = (byte_level(f"{TMP}/nfkc.json", 1000, nfkc=True), f"{TMP}/nfkc.json")
    toks["legacy"] = (legacy(toks["gpt2"][0], f"{TMP}/legacy"), f"{TMP}/legacy")

    whole = "\n".join(corpus_lines(400, 3)).encode() + b"\n"
    bad = (b"bad utf8: \xff\xfe \xc3\x28 \xe2\x82 \xf0\x9f\x98 \xed\xa0\x80 \xc0\xaf end\n"
           b"\xf4\x90\x80\x80 \xe0\x80\x80 lone \x80\x80 cont")
    files = {"whole": whole + bad, "bad": bad}
    for name, data in files.items():
        with open(f"{TMP}/{name}.txt", "wb") as f:
            f.write(data)

    pool = ThreadPoolExecutor(max_workers=4)  # splitchain's start-up dominates
    for name, (tok, path) in toks.items():
        n = 0
        cases = [(line, special) for line in TEST_LINES for special in (True, False)
                 if special or len(line) % 2]
        gots = pool.map(lambda c, p=path: sc_ids(p, ["--text", c[0]] +
                                                 ([] if c[1] else ["--no-special"])), cases)
        for (line, special), got in zip(cases, gots):
            want = tok.encode(line, add_special_tokens=special).ids
            n += 1
            if got != want:
                failures.append(f"{name} {line!r} special={special}: {got} != {want}")
        for fname, data in files.items():
            text = data.decode("utf-8", "replace")
            for special in (True, False):
                want = tok.encode(text, add_special_tokens=special).ids
                got = sc_ids(path, ["--in", f"{TMP}/{fname}.txt"] +
                             ([] if special else ["--no-special"]))
                n += 1
                if got != want:
                    first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b),
                                 min(len(got), len(want)))
                    failures.append(f"{name} file {fname} special={special}: differ at "
                                    f"{first}: {got[first:first + 8]} != {want[first:first + 8]}")
        # every code point in a few contexts (regex classes, byte fallback,
        # normalization); NFKC only below U+3200: HF's tables predate Unicode
        # 12.1, utf8proc's do not (U+32FF, U+A7F2.. decompose differently)
        cps = [c for c in range(0x30000) if not 0xD800 <= c < 0xE000 and
               (name != "nfkc" or c < 0x3200) and (c < 0x3400 or c % 7 == 0)]
        sweep = "".join(f"a{chr(c)} {chr(c)}{chr(c)}b  {chr(c)}1'{chr(c)}s \n" for c in cps)
        with open(f"{TMP}/sweep.txt", "w") as f:
            f.write(sweep)
        got = sc_ids(path, ["--in", f"{TMP}/sweep.txt"])
        want = tok.encode(sweep).ids
        n += 1
        if got != want:
            first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b),
                         min(len(got), len(want)))
            failures.append(f"{name} code point sweep differs at {first}: "
                            f"{tok.decode(want[max(0, first - 4):first + 4])!r}")
        # token file, then detokenize
        out = f"{TMP}/{name}.bin"
        run(["tokenize", "--tokenizer", path, "--in", f"{TMP}/whole.txt", "--out", out])
        want_ids = tok.encode(files["whole"].decode("utf-8", "replace")).ids
        for skip in (False, True):
            want = tok.decode(want_ids, skip_special_tokens=skip)
            got = run(["detokenize", "--tokenizer", path, "--in", out] +
                      (["--no-special"] if skip else [])).decode()
            n += 1
            if got != want:
                failures.append(f"{name} detokenize file skip={skip}: {got[:80]!r} != "
                                f"{want[:80]!r}")
        dlines = [line for line in TEST_LINES[:36] if tok.encode(line).ids]
        gots = pool.map(lambda line, p=path: run(
            ["detokenize", "--tokenizer", p, "--ids",
             ",".join(map(str, tok.encode(line).ids))]).decode(), dlines)
        for line, got in zip(dlines, gots):
            want = tok.decode(tok.encode(line).ids, skip_special_tokens=False)
            n += 1
            if got != want:
                failures.append(f"{name} detokenize {line!r}: {got!r} != {want!r}")
            if name in ("gpt2", "llama3", "legacy") and "<|" not in line and "xyzzy" not in line:
                if tok.decode(tok.encode(line, add_special_tokens=False).ids) != line:
                    failures.append(f"{name}: HF itself does not round-trip {line!r}")
        counts[name] = n
    for f in failures[:30]:
        print("MISMATCH", f)
    print("comparisons:", counts, "mismatches:", len(failures))
    if failures:
        sys.exit(f"FAIL: {len(failures)} mismatches against tokenizers")
    print("PASS")


if __name__ == "__main__":
    main()
