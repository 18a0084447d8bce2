#!/usr/bin/env bash
# run.sh — CPU benchmark of one LoRA training step (forward + backward +
# AdamW): splitchain next to OpenBLAS's sgemm rate and PyTorch (HF GPT-2 +
# PEFT) on the same shapes and thread counts, in one run, with ratios.
#   bash bench/run.sh [--shapes "small gpt2"] [--threads "1 2"] [--steps K]
# Needs the reference venv (tests/ref/setup-venv.sh build/pyenv) for PyTorch.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHAPES="small gpt2"
THREADS="1 2"
STEPS=2
while [ $# -gt 0 ]; do
  case "$1" in
    --shapes) SHAPES=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    *) echo "usage: bench/run.sh [--shapes \"small gpt2\"] [--threads \"1 2\"] [--steps K]" >&2; exit 2 ;;
  esac
done
BUILD=${SC_BENCH_BUILD:-$ROOT/build-bench}
VENV=${SC_TEST_VENV:-$ROOT/build/pyenv}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DSC_CUDA=OFF >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target sc_bench_step >/dev/null
[ -x "$VENV/bin/python" ] || bash "$ROOT/tests/ref/setup-venv.sh" "$VENV"

results=$WORK/results.jsonl
for shape in $SHAPES; do
  case $shape in
    gpt2) targs="--layers 12 --heads 12 --embd 768 --vocab 50257 --positions 1024 --batch 4 --seq 256" ;;
    small) targs="--layers 4 --heads 4 --embd 256 --vocab 8192 --positions 256 --batch 4 --seq 128" ;;
    *) echo "unknown shape $shape" >&2; exit 2 ;;
  esac
  for t in $THREADS; do
    echo "running $shape at $t thread(s) ..." >&2
    OMP_NUM_THREADS=$t "$BUILD/bench/sc_bench_step" --shape "$shape" --threads "$t" \
      --steps "$STEPS" --dir "$WORK/model-$shape" >> "$results"
    OMP_NUM_THREADS=$t HF_HUB_OFFLINE=1 "$VENV/bin/python" "$ROOT/bench/torch_lora_step.py" $targs \
      --rank 8 --threads "$t" --steps "$STEPS" --warmup-steps 1 \
      | sed "s/^{/{\"shape\":\"$shape\",/" >> "$results"
  done
done

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{')]
sc = {(r['shape'], r['threads']): r for r in rows if r['impl'] == 'splitchain'}
pt = {(r['shape'], r['threads']): r for r in rows if r['impl'] == 'pytorch'}
blas = next(iter(sc.values()))['blas'] if sc else '?'
print(f"\nCPU LoRA training step (forward + backward + AdamW), r=8 on all four targets")
print(f"BLAS: {blas}\n")
hdr = ("shape", "thr", "splitchain tok/s", "GFLOP/s", "sgemm GFLOP/s", "% of sgemm",
       "pytorch tok/s", "splitchain / pytorch")
print("| " + " | ".join(hdr) + " |")
print("|" + "---|" * len(hdr))
for key in sorted(sc, key=lambda k: (k[0] != 'small', k[1])):
    s, p = sc[key], pt.get(key)
    ptok = p['tokens_per_s'] if p else float('nan')
    print(f"| {key[0]} | {key[1]} | {s['tokens_per_s']:.0f} | {s['gflops']:.1f} | "
          f"{s['sgemm_gflops']:.1f} | {100 * s['gflops'] / s['sgemm_gflops']:.0f}% | "
          f"{ptok:.0f} | {s['tokens_per_s'] / ptok:.2f}x |")
PY
