"""make_seeds.py — the tokenizer and text-data seeds of tests/fuzz/corpus/:
small tokenizer.json files of the pipelines splitchain loads (GPT-2's
byte-level BPE, a Llama-2 style sentencepiece BPE with byte fallback, a
Llama-3 style split-regex byte-level BPE with a template post-processor),
trained with Hugging Face tokenizers on a few sentences, and JSONL / text
data with and without a tokenizer (fuzz_util.h's FUZZ_SEP between parts).
    python3 make_seeds.py CORPUS_DIR   (the reference venv has tokenizers)"""
import json
import os
import sys

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

SEP = b"\n--8<--\n"
TEXT = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "Split learning sends activations, not data: 12345 caf\u00e9 na\u00efve \u65e5\u672c\u8a9e.",
    "  spaces\tand\ttabs\nnew lines  ",
]


def gpt2():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tr = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXT, tr)
    return tok


def llama2():
    tok = Tokenizer(models.BPE(byte_fallback=True, fuse_unk=True, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"),
                                           normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    alphabet = ["<0x%02X>" % b for b in range(256)]
    tr = trainers.BpeTrainer(vocab_size=330, special_tokens=["<unk>", "<s>", "</s>"] + alphabet)
    tok.train_from_iterator(TEXT, tr)
    # The byte tokens are vocabulary, not added tokens (as in Llama 2's file).
    j = json.loads(tok.to_str())
    j["added_tokens"] = [a for a in j["added_tokens"] if not a["content"].startswith("<0x")]
    return Tokenizer.from_str(json.dumps(j))


def llama3():
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
                             behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 0)])
    tr = trainers.BpeTrainer(vocab_size=290, special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXT, tr)
    return tok


def write(root, harness, name, data):
    os.makedirs(os.path.join(root, harness), exist_ok=True)
    with open(os.path.join(root, harness, name), "wb") as f:
        f.write(data)


def main():
    root = sys.argv[1]
    jsonl = "".join(json.dumps({"text": t}) + "\n" for t in TEXT).encode()
    pc = "".join(json.dumps({"prompt": t[:10], "completion": t[10:]}) + "\n" for t in TEXT).encode()
    plain = "\n".join(TEXT).encode()
    for name, make in (("gpt2", gpt2), ("llama2", llama2), ("llama3", llama3)):
        tj = make().to_str().encode()
        write(root, "fuzz_tokenizer", name, tj + SEP + TEXT[1].encode())
        write(root, "fuzz_dataset", name + "-jsonl", jsonl + SEP + tj)
    write(root, "fuzz_dataset", "jsonl", jsonl)
    write(root, "fuzz_dataset", "prompt-completion", pc)
    write(root, "fuzz_dataset", "text", plain)
    write(root, "fuzz_dataset", "bad-line", jsonl + b"{\"text\": 3}\n{\"messages\": []}\nnot json\n")


main()
