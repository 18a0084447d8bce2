#!/usr/bin/env bash
# demo.sh — splitchain end to end on one machine, with embedded defaults:
# installs the Debian packages, builds, writes a small random GPT-2 in the
# Hugging Face layout, fine-tunes LoRA adapters on this repository's own
# text, and exports the adapter in the PEFT format.
#   bash deploy/demo.sh [OUT_DIR]        (default: demo-run)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/demo-run}
BUILD=${SC_BUILD_DIR:-$ROOT/build}

bash "$ROOT/deploy/install-deps.sh"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target splitchain >/dev/null
SC="$BUILD/coordinator/splitchain"

mkdir -p "$OUT"
# Training text: the project's own documentation and sources, read as bytes.
find "$ROOT" -path "$ROOT/build*" -prune -o -path "$OUT" -prune -o \
  \( -name '*.md' -o -name '*.c' -o -name '*.h' \) -type f -print | sort | xargs cat > "$OUT/corpus.txt"
"$SC" make-model --out "$OUT/model" --layers 6 --heads 6 --embd 192 --vocab 512 --positions 256
"$SC" finetune --model "$OUT/model" --data "$OUT/corpus.txt" \
  --steps "${SC_DEMO_STEPS:-60}" --batch 8 --seq 128 --micro 2 --stages 3 \
  --rank 8 --alpha 16 --targets all --lr 3e-3 --min-lr 3e-4 --warmup 5 \
  --out "$OUT/adapter" --metrics "$OUT/metrics.jsonl"
echo
echo "model:    $OUT/model (config.json + model.safetensors)"
echo "adapter:  $OUT/adapter (adapter_config.json + adapter_model.safetensors, PEFT format)"
echo "metrics:  $OUT/metrics.jsonl (one JSON line per step)"
