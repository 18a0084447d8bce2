#!/usr/bin/env bash
# pipeline.sh — tokens/s of a 2-stage chain (two worker processes, one BLAS
# thread each) against the single-process engine on one thread, at M
# micro-batches per step, next to the ideal speed-up 2M / (M + 1); and the
# bytes each step sent per hop against the ideal (activations down +
# gradients up: 2 * M * B * T * C * 4 bytes).
#   bash bench/pipeline.sh [--preset NAME] [--micro "1 2 4 8 16"] [--layers N]
#        [--embd N] [--heads N] [--vocab N] [--seq T] [--batch B]
#        [--extra "PRESET:M ..."] [--tries N] [--max-load X] [--wait S]
# Default: GPT-2 124M (the gpt2 preset) at M = 1, 2, 4, 8, 16, then the
# extra rows, by default one Llama row: smollm2-135m at M = 8. --preset
# (make-model's presets: gpt2, smollm2-135m, llama-tiny, ...) and the shape
# flags (make-model's overrides of the preset) choose the model of the main
# rows; either of them drops the default extra row. T = 256, B = 1 unless
# given. Each measurement first waits (up to --wait seconds, default 300)
# for the other processes to keep no more than --max-load CPUs (default 0.2)
# busy, and is rerun (up to --tries times, default 3) while they kept more
# than that busy during it; the load of the kept one is shown.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PRESET=gpt2; MICRO="1 2 4 8 16"; T=256; B=1; EXTRA="smollm2-135m:8"; TRIES=3
SHAPE=()
usage() { sed -n '2,19p' "$0" >&2; exit 2; }
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || usage
  case "$1" in
    --preset) PRESET=$2; EXTRA="" ;;
    --micro) MICRO=$2 ;;
    --layers|--embd|--heads|--vocab) SHAPE+=("$1" "$2"); EXTRA="" ;;
    --seq) T=$2 ;; --batch) B=$2 ;;
    --extra) EXTRA=$2 ;; --tries) TRIES=$2 ;; --max-load) MAXLOAD=$2 ;; --wait) WAIT=$2 ;;
    *) usage ;;
  esac
  shift 2
done
BUILD=${SC_BENCH_BUILD:-$ROOT/build-bench}
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DSC_CUDA=OFF >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target splitchain splitchain-coordinator splitchain-worker >/dev/null
SC=$BUILD/cli/splitchain
WORK=$(mktemp -d)
# shellcheck source=tests/integration/port.sh
. "$ROOT/tests/integration/port.sh"
SC_PORT=$(sc_pick_port)
export SC_BIN=$BUILD SC_THREADS=1 SC_PORT
export SPLITCHAIN_COORDINATOR=tcp://127.0.0.1:$SC_PORT
export SC_INSECURE=1 # plaintext, as the earlier figures were measured
trap '"$ROOT/deploy/launch.sh" stop "$WORK/cluster" >/dev/null 2>&1; rm -rf "$WORK"' EXIT
cd "$WORK"
. "$ROOT/bench/load.sh"

# CPU-seconds the cluster's processes spent.
cluster_s() {
  local f
  for f in cluster/*.pid; do cat "/proc/$(cat "$f")/stat" 2>/dev/null || true; done |
    awk -v hz="$HZ" '{s += $14 + $15} END {printf "%.2f\n", s / hz}'
}
# foreign LOAD: CPUs other processes kept busy, from busy and own deltas over wall seconds.
lower() { awk -v a="$1" -v b="$2" 'BEGIN {exit !(a < b)}'; }
foreign() { awk -v b="$1" -v o="$2" -v w="$3" 'BEGIN {f = (b - o) / w; printf("%.2f", (f > 0 ? f : 0))}'; }

head -c 300000 /dev/urandom | base64 > data.txt   # byte-level tokens
SC_MODEL_ROOT=$WORK SC_DATA_ROOT=$WORK "$ROOT/deploy/launch.sh" start cluster 2 >/dev/null
export SPLITCHAIN_TOKEN
SPLITCHAIN_TOKEN=$(cat cluster/admin.token)

# single M: sets ONE (tokens/s over steps 2-4) and ONE_LOAD, of the least
# disturbed try.
single() {
  local m=$1 b0 b1 tm try one load
  ONE_LOAD=""
  for ((try = 1; try <= TRIES; try++)); do
    wait_quiet
    rm -f single.jsonl
    b0=$(busy_s)
    tm=$( { TIMEFORMAT='%U %S %R'; time OMP_NUM_THREADS=1 "$SC" finetune --model "$MODEL" \
      --data data.txt "${OPTS[@]}" --micro "$m" --threads 1 --quiet --metrics single.jsonl \
      >/dev/null; } 2>&1 | tail -1)
    b1=$(busy_s)
    load=$(echo "$tm" | awk -v d="$(awk -v a="$b0" -v b="$b1" 'BEGIN {print b - a}')" \
      '{f = (d - $1 - $2) / $3; printf("%.2f", (f > 0 ? f : 0))}')
    # steps 2..4 (the first warms up), as total tokens over total time
    one=$(sed -n '2,4p' single.jsonl | sed -n 's/.*"tokens":\([0-9]*\).*"seconds":\([0-9.]*\).*/\1 \2/p' |
          awk '{t += $1; s += $2} END {print t / s}')
    if [ -z "$ONE_LOAD" ] || lower "$load" "$ONE_LOAD"; then ONE=$one ONE_LOAD=$load; fi
    quiet "$load" && return
    echo "  (1 process, M=$m: other processes kept $load CPUs busy: again)" >&2
  done
}

# chain M: sets TWO (tokens/s over steps 2-4), SENT (bytes per hop, step 4)
# and TWO_LOAD, of the least disturbed try.
chain() {
  local m=$1 b0 b1 c0 c1 w0 w1 job row try load
  TWO_LOAD=""
  for ((try = 1; try <= TRIES; try++)); do
    wait_quiet
    b0=$(busy_s); c0=$(cluster_s); w0=$(date +%s.%N)
    job=$("$SC" submit --model "$MODEL" --data data.txt "${OPTS[@]}" --micro "$m" --stages 2 \
          --checkpoint-every 100)
    "$SC" watch "$job" >/dev/null
    b1=$(busy_s); c1=$(cluster_s); w1=$(date +%s.%N)
    load=$(foreign "$(awk -v a="$b0" -v b="$b1" 'BEGIN {print b - a}')" \
      "$(awk -v a="$c0" -v b="$c1" 'BEGIN {print b - a}')" \
      "$(awk -v a="$w0" -v b="$w1" 'BEGIN {print b - a}')")
    if [ -z "$TWO_LOAD" ] || lower "$load" "$TWO_LOAD"; then
      row=$(sqlite3 cluster/splitchain.db "select 3 * $B * $T * $m / sum(step_s),
        (select bytes_per_hop from metrics where job_id = $job and step = 4)
        from metrics where job_id = $job and step >= 2")
      TWO=${row%%|*}
      SENT=$(echo "${row#*|}" | tr -d '[] ' | awk -F, '{print $1 + $2}')
      TWO_LOAD=$load LAST_JOB=$job
    fi
    quiet "$load" && return
    echo "  (2-stage, M=$m: other processes kept $load CPUs busy: again)" >&2
  done
}

# rows NAME "M ..." [make-model overrides...]: one table row per M.
rows() {
  local name=$1 micro=$2 C L V M
  shift 2
  MODEL=$WORK/model-$name
  [ -d "$MODEL" ] || "$SC" make-model --out "$MODEL" --preset "$name" --positions "$T" "$@" >/dev/null
  C=$(sed -n 's/.*"\(n_embd\|hidden_size\)":[[:space:]]*\([0-9]*\).*/\2/p' "$MODEL/config.json")
  L=$(sed -n 's/.*"\(n_layer\|num_hidden_layers\)":[[:space:]]*\([0-9]*\).*/\2/p' "$MODEL/config.json")
  V=$(sed -n 's/.*"vocab_size":[[:space:]]*\([0-9]*\).*/\1/p' "$MODEL/config.json")
  OPTS=(--steps 4 --batch "$B" --seq "$T" --rank 8 --alpha 16 --targets all --warmup 0 --seed 3)
  [ -n "$BLAS" ] || BLAS=$(OMP_NUM_THREADS=1 "$SC" finetune --model "$MODEL" --data data.txt \
    --steps 0 --threads 1 --seq "$T" --batch "$B" |
    sed -n 's/.*(\(OpenBLAS.*\), [0-9]* threads).*/\1/p')
  for M in $micro; do
    single "$M"
    chain "$M"
    awk -v n="$name L=$L C=$C V=$V" -v m="$M" -v one="$ONE" -v two="$TWO" -v sent="$SENT" \
      -v ib="$((2 * M * B * T * C * 4))" -v l1="$ONE_LOAD" -v l2="$TWO_LOAD" 'BEGIN {
      s = two / one; ideal = 2 * m / (m + 1);
      printf "| %s | %d | %.0f | %.0f | %.2fx | %.2fx | %.0f%% | %d | %d | %.4f | %s / %s |\n",
        n, m, one, two, s, ideal, 100 * s / ideal, sent, ib, sent / ib, l1, l2 }'
  done
  PLACEMENTS+="  $name (job $LAST_JOB): $(sqlite3 cluster/splitchain.db "select group_concat(
    stage || ': [' || first_layer || ', ' || last_layer || ') ' || printf('%.1f', worker_gflops) ||
    ' GFLOP/s, ' || printf('%.3f', predicted_step_s) || ' s', '; ') from (select * from placements
    where job_id = $LAST_JOB and version = (select max(version) from placements
    where job_id = $LAST_JOB) order by stage)")"$'\n'
}

PLACEMENTS=""
BLAS=""
printf "\n2-stage pipeline vs one process, steps 2-4 of 4 (T=%s B=%s, r=8 on every projection, 1 BLAS thread per process)\n" "$T" "$B"
printf "CPU: %s, %s cores\n\n" "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)" "$(nproc)"
echo "| model | M | 1 process tok/s | 2-stage tok/s | speed-up | ideal 2M/(M+1) | % of ideal | bytes/hop/step | ideal bytes | ratio | other load 1p / 2s |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
rows "$PRESET" "$MICRO" "${SHAPE[@]}"
for x in $EXTRA; do
  rows "${x%%:*}" "${x#*:}"
done
echo
echo "BLAS: $BLAS"
echo "placement of each model's last job (stage: [first, last) layers, the worker's measured GFLOP/s, predicted s/step):"
printf "%s" "$PLACEMENTS"
