#!/usr/bin/env bash
# tokenize_bench.sh [SPLITCHAIN] [PYTHON] [THREADS] — encode a ~100 MB text
# with `splitchain tokenize` and with Hugging Face tokenizers; prints MB/s.
#
# The corpus: tests/ref/test_tokenizer_hf.py's mixed lines (English, CJK,
# Arabic, emoji, combining marks, digits, whitespace runs) repeated to
# ~100 MB; the tokenizer: a 1200-token Llama-3-style byte-level BPE (Split
# regex + ByteLevel, ignore_merges) trained by that test's code.
# Compared: splitchain encodes the whole file as one text (tokenize --in,
# timed end to end: load, read, encode, write the token file) against HF
# Tokenizer.encode_batch over the file's lines (keepends, so the same bytes;
# read and tokenizer load not timed) with RAYON_NUM_THREADS=THREADS; splitchain
# encodes on one thread (it has no parallel encoder: at one thread it is well
# ahead of HF at two, docs/benchmarks.md).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
SC=${1:-$here/build-tok/cli/splitchain}
PY=${2:-$here/build/pyenv/bin/python}
THREADS=${3:-2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
SC_REF_TMP=$work PYTHONPATH=$here/tests/ref "$PY" - "$work" <<'PYEOF'
import sys, test_tokenizer_hf as T
w = sys.argv[1]
T.byte_level(f"{w}/tok.json", 1200, split_re=T.LLAMA3_RE)
data = ("\n".join(T.corpus_lines(20000, 7)) + "\n").encode()
with open(f"{w}/corpus.txt", "wb") as f:
    n = 0
    while n < 100_000_000:
        f.write(data)
        n += len(data)
PYEOF
bytes=$(stat -c %s "$work/corpus.txt")
t0=$(date +%s.%N)
"$SC" tokenize --tokenizer "$work/tok.json" --in "$work/corpus.txt" --out "$work/c.bin" >/dev/null
t1=$(date +%s.%N)
sc=$(echo "$bytes / ($t1 - $t0) / 1000000" | bc -l)
hf=$(RAYON_NUM_THREADS=$THREADS TOKENIZERS_PARALLELISM=true "$PY" - "$work" <<'PYEOF'
import sys, time
from tokenizers import Tokenizer
w = sys.argv[1]
tok = Tokenizer.from_file(f"{w}/tok.json")
text = open(f"{w}/corpus.txt", encoding="utf-8").read()
lines = text.splitlines(keepends=True)
t = time.time()
tok.encode_batch(lines, add_special_tokens=False)
print(len(text.encode()) / (time.time() - t) / 1e6)
PYEOF
)
printf 'corpus %d bytes, %s threads\n' "$bytes" "$THREADS"
printf 'splitchain tokenize (whole file): %.1f MB/s\n' "$sc"
printf 'HF encode_batch (lines):         %.1f MB/s\n' "$hf"
printf 'ratio splitchain / HF:            %.2f\n' "$(echo "$sc / $hf" | bc -l)"
