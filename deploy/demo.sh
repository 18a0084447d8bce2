#!/usr/bin/env bash
# demo.sh — splitchain end to end on one machine, with embedded defaults:
# installs the Debian packages, builds, writes a small random Llama-family
# model (grouped-query attention, RMSNorm, rotary positions, SwiGLU) in the
# Hugging Face layout, starts a coordinator and 3 workers (separate
# processes), fine-tunes LoRA adapters across the 3-stage chain on this
# repository's own text while showing progress, exports the adapter in the
# PEFT format, and stops the processes. The state stays in
# OUT_DIR/cluster/splitchain.db.
#   bash deploy/demo.sh [OUT_DIR]        (default: demo-run)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/demo-run}
BUILD=${SC_BUILD_DIR:-$ROOT/build-demo}
STEPS=${SC_DEMO_STEPS:-60}

bash "$ROOT/deploy/install-deps.sh"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target splitchain splitchain-coordinator splitchain-worker >/dev/null
SC="$BUILD/cli/splitchain"
export SC_BIN=$BUILD SC_THREADS=1 SC_PORT=${SC_PORT:-7700}
export SPLITCHAIN_COORDINATOR=tcp://127.0.0.1:$SC_PORT

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# Training text: the project's own documentation and sources, read as bytes.
find "$ROOT" -path "$ROOT/build*" -prune -o -path "$OUT" -prune -o \
  \( -name '*.md' -o -name '*.c' -o -name '*.h' \) -type f -print | sort | xargs cat > "$OUT/corpus.txt"
[ -f "$OUT/llama/model.safetensors" ] ||
  "$SC" make-model --out "$OUT/llama" --preset llama-tiny --layers 6 --heads 6 --kv-heads 2 \
    --embd 192 --inner 512 --vocab 512 --positions 256

"$ROOT/deploy/launch.sh" stop "$OUT/cluster" >/dev/null 2>&1 || true
"$ROOT/deploy/launch.sh" start "$OUT/cluster" 3
trap '"$ROOT/deploy/launch.sh" stop "$OUT/cluster" >/dev/null' EXIT
"$SC" workers
job=$("$SC" submit --model "$OUT/llama" --data "$OUT/corpus.txt" --name demo --stages 3 \
  --steps "$STEPS" --batch 8 --seq 128 --micro 4 --rank 8 --alpha 16 --targets all \
  --lr 3e-3 --min-lr 3e-4 --warmup 5 --checkpoint-every 10)
echo "submitted job $job"
"$SC" watch "$job"
"$SC" status "$job"
"$SC" export "$job" --out "$OUT/adapter"
cat <<MSG

model:     $OUT/llama (config.json + model.safetensors)
adapter:   $OUT/adapter (adapter_config.json + adapter_model.safetensors, PEFT format)
state:     $OUT/cluster/splitchain.db, e.g.
  sqlite3 -header -column $OUT/cluster/splitchain.db 'select * from v_job_progress'
  sqlite3 -header -column $OUT/cluster/splitchain.db 'select step, loss, tokens_per_s from v_loss_curve where job_id = $job'
MSG
