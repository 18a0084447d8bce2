#!/usr/bin/env bash
# pipeline.sh — tokens/s of a 2-stage chain (two worker processes, one BLAS
# thread each) against the single-process engine on one thread, at M = 1, 2,
# 4, 8, 16 micro-batches per step, next to the ideal speed-up 2M / (M + 1);
# and the bytes each step sent per hop against the ideal (activations down +
# gradients up: 2 * M * B * T * C * 4 bytes).
#   bash bench/pipeline.sh [--micro "1 2 4 8 16"] [--layers 12] [--embd 768]
#                          [--heads 12] [--vocab 50257] [--seq 256] [--batch 1]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MICRO="1 2 4 8 16"; L=12; C=768; NH=12; V=50257; T=256; B=1
while [ $# -gt 0 ]; do
  case "$1" in
    --micro) MICRO=$2 ;; --layers) L=$2 ;; --embd) C=$2 ;; --heads) NH=$2 ;;
    --vocab) V=$2 ;; --seq) T=$2 ;; --batch) B=$2 ;;
    *) sed -n '2,9p' "$0" >&2; exit 2 ;;
  esac
  shift 2
done
BUILD=${SC_BENCH_BUILD:-$ROOT/build-bench}
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DSC_CUDA=OFF >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target splitchain splitchain-coordinator splitchain-worker >/dev/null
SC=$BUILD/coordinator/splitchain
WORK=$(mktemp -d)
export SC_BIN=$BUILD SC_THREADS=1 SC_PORT=$((20000 + RANDOM % 20000))
export SPLITCHAIN_COORDINATOR=tcp://127.0.0.1:$SC_PORT
trap '"$ROOT/deploy/launch.sh" stop "$WORK/cluster" >/dev/null 2>&1; rm -rf "$WORK"' EXIT
cd "$WORK"

"$SC" make-model --out model --layers "$L" --heads "$NH" --embd "$C" --vocab "$V" \
  --positions "$T" >/dev/null
head -c 300000 /dev/urandom | base64 > data.txt   # byte-level tokens
OPTS=(--steps 4 --batch "$B" --seq "$T" --rank 8 --alpha 16 --targets all --warmup 0 --seed 3)
"$ROOT/deploy/launch.sh" start cluster 2 >/dev/null

printf "\n2-stage pipeline vs one process, steps 2-4 of 4 (L=%s C=%s V=%s T=%s B=%s, r=8, 1 BLAS thread per process)\n" \
  "$L" "$C" "$V" "$T" "$B"
printf "BLAS: %s\n\n" "$(OMP_NUM_THREADS=1 "$SC" finetune --model model --data data.txt --steps 0 --threads 1 --seq "$T" --batch "$B" | sed -n 's/.*(\(OpenBLAS.*\)).*/\1/p')"
echo "| M | 1 process tok/s | 2-stage tok/s | speed-up | ideal 2M/(M+1) | % of ideal | bytes/hop/step | ideal bytes | ratio |"
echo "|---|---|---|---|---|---|---|---|---|"
for M in $MICRO; do
  rm -f single.jsonl
  OMP_NUM_THREADS=1 "$SC" finetune --model model --data data.txt "${OPTS[@]}" --micro "$M" \
    --threads 1 --quiet --metrics single.jsonl
  # steps 2..4 (the first warms up), as total tokens over total time
  one=$(sed -n '2,4p' single.jsonl | sed -n 's/.*"tokens":\([0-9]*\).*"seconds":\([0-9.]*\).*/\1 \2/p' |
        awk '{t += $1; s += $2} END {print t / s}')
  job=$("$SC" submit --model model --data data.txt "${OPTS[@]}" --micro "$M" --stages 2 \
        --checkpoint-every 100)
  "$SC" watch "$job" >/dev/null
  row=$(sqlite3 cluster/splitchain.db "select 3 * $B * $T * $M / sum(step_s),
    (select bytes_per_hop from metrics where job_id = $job and step = 4)
    from metrics where job_id = $job and step >= 2")
  two=${row%%|*}
  hops=${row#*|}
  sent=$(echo "$hops" | tr -d '[] ' | awk -F, '{print $1 + $2}')
  ideal_bytes=$((2 * M * B * T * C * 4))
  awk -v m="$M" -v one="$one" -v two="$two" -v sent="$sent" -v ib="$ideal_bytes" 'BEGIN {
    s = two / one; ideal = 2 * m / (m + 1);
    printf "| %d | %.0f | %.0f | %.2fx | %.2fx | %.0f%% | %d | %d | %.4f |\n",
      m, one, two, s, ideal, 100 * s / ideal, sent, ib, sent / ib }'
done
echo
echo "placement of the last job (stage: layers, the worker's measured GFLOP/s, predicted s/step):"
sqlite3 cluster/splitchain.db "select '  ' || stage || ': [' || first_layer || ', ' || last_layer || ')  ' ||
  printf('%.1f', worker_gflops) || '  ' || printf('%.3f', predicted_step_s) from placements
  where job_id = (select max(job_id) from placements) order by stage"
