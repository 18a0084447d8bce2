#!/usr/bin/env bash
# run.sh — CPU benchmark of one LoRA training step (forward + backward +
# AdamW, r=8 on every projection): splitchain next to OpenBLAS's sgemm rate on
# the model's MLP product (B*T, C) @ (C, F) and PyTorch (Hugging Face +
# PEFT: GPT2LMHeadModel, or LlamaForCausalLM for the Llama presets) on the
# same shapes and thread counts, in one run, with ratios.
#   bash bench/run.sh [--shapes "small gpt2 smollm2-135m tinyllama-1.1b"]
#                     [--threads "1 2"] [--steps K] [--min-time S] [--tries N]
#                     [--max-load X] [--wait S]
# A shape is "small" (4-layer GPT-2) or a make-model preset; B x T per shape:
#   small 4x128, gpt2 4x256, smollm2-135m 4x128, tinyllama-1.1b 1x128, others 4x128.
# Each side times K steps (default 2), and more while under S seconds
# (default 5), after one untimed warm-up step.
# Each measurement first waits (up to --wait seconds, default 300) for other
# processes to keep no more than --max-load CPUs (default 0.2) busy, and is
# rerun (up to --tries times, default 3) while they kept more than that busy
# during it; the least disturbed try is kept and its load shown. Needs the reference venv
# (tests/ref/setup-venv.sh build/pyenv) for PyTorch, and about 2 x 4.4 GB of
# memory and 4.4 GB of temporary disk for tinyllama-1.1b.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHAPES="small gpt2 smollm2-135m tinyllama-1.1b"
THREADS="1 2"
STEPS=2
MINTIME=5
TRIES=3
usage() { sed -n '2,19p' "$0" >&2; exit 2; }
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || usage
  case "$1" in
    --shapes) SHAPES=$2 ;; --threads) THREADS=$2 ;; --steps) STEPS=$2 ;; --min-time) MINTIME=$2 ;;
    --tries) TRIES=$2 ;; --max-load) MAXLOAD=$2 ;; --wait) WAIT=$2 ;;
    *) usage ;;
  esac
  shift 2
done
BUILD=${SC_BENCH_BUILD:-$ROOT/build-bench}
VENV=${SC_TEST_VENV:-$ROOT/build/pyenv}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
. "$ROOT/bench/load.sh"

cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DSC_CUDA=OFF >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target sc_bench_step >/dev/null
[ -x "$VENV/bin/python" ] || bash "$ROOT/tests/ref/setup-venv.sh" "$VENV"

# The JSON line of the least disturbed of up to $TRIES runs of "$@" (a run
# stops the retries once other processes kept <= $MAXLOAD CPUs busy).
least_disturbed() {
  local best="" line load i
  for ((i = 1; i <= TRIES; i++)); do
    wait_quiet
    line=$("$@" | grep '^{')
    load=$(sed -n 's/.*"foreign_load":\([-0-9.]*\).*/\1/p' <<<"$line")
    if [ -z "$best" ] || awk -v a="$load" -v b="$(sed -n 's/.*"foreign_load":\([-0-9.]*\).*/\1/p' <<<"$best")" 'BEGIN {exit !(a < b)}'; then
      best=$line
    fi
    quiet "$load" && break
    echo "  other processes kept $load CPUs busy: again" >&2
  done
  echo "$best"
}

results=$WORK/results.jsonl
for shape in $SHAPES; do
  case $shape in
    gpt2) B=4 T=256 ;;
    tinyllama-1.1b) B=1 T=128 ;;
    *) B=4 T=128 ;;
  esac
  model=$WORK/model-$shape
  for t in $THREADS; do
    echo "running $shape (B=$B T=$T) at $t thread(s) ..." >&2
    least_disturbed env OMP_NUM_THREADS="$t" "$BUILD/bench/sc_bench_step" --shape "$shape" \
      --threads "$t" --batch "$B" --seq "$T" --steps "$STEPS" --min-time "$MINTIME" \
      --dir "$model" >> "$results"
    least_disturbed env OMP_NUM_THREADS="$t" HF_HUB_OFFLINE=1 "$VENV/bin/python" \
      "$ROOT/bench/torch_lora_step.py" --config "$model/config.json" --batch "$B" --seq "$T" \
      --rank 8 --threads "$t" --steps "$STEPS" --min-time "$MINTIME" --warmup-steps 1 \
      | sed "s/^{/{\"shape\":\"$shape\",/" >> "$results"
  done
  rm -rf "$model"
done

"$VENV/bin/python" - "$results" "$SHAPES" <<'PY'
import json, os, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{')]
order = sys.argv[2].split()
sc = {(r['shape'], r['threads']): r for r in rows if r['impl'] == 'splitchain'}
pt = {(r['shape'], r['threads']): r for r in rows if r['impl'] == 'pytorch'}
blas = next(iter(sc.values()))['blas'] if sc else '?'
blas = blas.rsplit(', ', 1)[0] if blas.endswith(' threads') else blas
cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo')
            if l.startswith('model name')), '?')
print("\nCPU LoRA training step (forward + backward + AdamW), r=8 on every projection "
      "(GPT-2: 4, Llama: 7), float32")
print(f"CPU: {cpu}, {os.cpu_count()} cores\nBLAS: {blas}\n")
hdr = ("shape", "B x T", "thr", "splitchain tok/s", "GFLOP/s", "sgemm (n,C)x(C,F)",
       "sgemm GFLOP/s", "% of sgemm", "pytorch tok/s", "pytorch GFLOP/s",
       "splitchain / pytorch", "other load sc / pt")
print("| " + " | ".join(hdr) + " |")
print("|" + "---|" * len(hdr))
for key in sorted(sc, key=lambda k: (order.index(k[0]) if k[0] in order else 99, k[1])):
    s, p = sc[key], pt.get(key)
    ptok = p['tokens_per_s'] if p else float('nan')
    pgf = s['gflop_per_step'] * ptok / (s['B'] * s['T'])
    pload = p['foreign_load'] if p else float('nan')
    print(f"| {key[0]} | {s['B']} x {s['T']} | {key[1]} | {s['tokens_per_s']:.0f} | "
          f"{s['gflops']:.1f} | {s['sgemm']} | {s['sgemm_gflops']:.1f} | "
          f"{100 * s['gflops'] / s['sgemm_gflops']:.0f}% | {ptok:.0f} | {pgf:.1f} | "
          f"{s['tokens_per_s'] / ptok:.2f}x | {s['foreign_load']:.2f} / {pload:.2f} |")
PY
