"""make-demo-tokenizer.py: how deploy/demo-tokenizer.json was made.

A byte-level BPE (the GPT-2 / Llama 3 kind: ByteLevel pre-tokenizer and
decoder, no unknown token) of 1024 ids, trained with Hugging Face
`tokenizers` on this repository's Markdown files, with <|endoftext|> (id 0)
as its special token. The demo ships the result so that it needs no
download and no Python; rerun this (tests/ref/setup-venv.sh gives a Python
with `tokenizers`) to remake it:

    build/pyenv/bin/python deploy/make-demo-tokenizer.py deploy/demo-tokenizer.json
"""
import pathlib
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

root = pathlib.Path(__file__).resolve().parent.parent
files = sorted(str(p) for p in root.glob("**/*.md")
               if not any(part.startswith(("build", "demo-run", ".")) for part in
                          p.relative_to(root).parts))
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(vocab_size=1024, min_frequency=2,
                              special_tokens=["<|endoftext|>"],
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                              show_progress=False)
tok.train(files, trainer)
tok.save(sys.argv[1] if len(sys.argv) > 1 else "demo-tokenizer.json")
