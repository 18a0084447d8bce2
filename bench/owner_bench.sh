#!/usr/bin/env bash
# owner_bench.sh — what private data costs: the same LoRA job, on this
# machine, as a plain 3-stage chain (the coordinator feeds the data) and
# U-shaped with a data owner holding both ends and 2 middle workers (the
# data stays with the owner); prints, per stage, the data-plane bytes it
# sends per step, and each job's tokens/s (median of the measured steps),
# with the ratio owner / plain.
#   bash bench/owner_bench.sh [--steps N] [--warmup N] [--shape "OPTS"] [--job "OPTS"]
# --steps: measured steps (default 20) after --warmup (default 3); --shape:
# `splitchain make-model` options (default GPT-2 width 256, 6 layers);
# --job: batch, sequence, micro-batches (default --batch 4 --seq 64 --micro 4
# --rank 8). Every process runs one thread: on a 2-core machine the three
# workers share the cores, so tokens/s compares the two layouts, it does not
# measure a cluster. Environment: SC_BUILD (default build), SC_BENCH_PORT
# (default 7797).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${SC_BUILD:-$ROOT/build}
STEPS=20
WARMUP=3
SHAPE="--layers 6 --heads 4 --embd 256 --vocab 512 --positions 128 --seed 3"
JOB="--batch 4 --seq 64 --micro 4 --rank 8"
while [ $# -gt 0 ]; do
  case $1 in
  --steps) STEPS=$2; shift 2 ;;
  --warmup) WARMUP=$2; shift 2 ;;
  --shape) SHAPE=$2; shift 2 ;;
  --job) JOB=$2; shift 2 ;;
  *) sed -n '2,15p' "$0" >&2; exit 2 ;;
  esac
done
SC=$BUILD/cli/splitchain
WORK=$(mktemp -d)
export SPLITCHAIN_COORDINATOR=tcp://127.0.0.1:${SC_BENCH_PORT:-7797}
pids=()
trap 'kill ${pids[@]+"${pids[@]}"} 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
cd "$WORK"
mkdir home
# shellcheck disable=SC2086
"$SC" make-model --out model $SHAPE >/dev/null
find "$ROOT/docs" "$ROOT/common" -type f -name '*.[ch]*' | sort | xargs cat | head -c 2000000 \
  > home/data.txt
cp home/data.txt plain.txt
"$BUILD/coordinator/splitchain-coordinator" --listen "$SPLITCHAIN_COORDINATOR" --db db.sqlite \
  >coordinator.log 2>&1 &
pids+=($!)
for w in w1 w2 w3 owner; do
  extra=()
  [ "$w" = owner ] && extra=(--owner-data "$WORK/home")
  OMP_NUM_THREADS=1 "$BUILD/worker/splitchain-worker" --coordinator "$SPLITCHAIN_COORDINATOR" \
    --name "$w" --threads 1 --listen tcp://127.0.0.1:0 --data tcp://127.0.0.1:0 \
    "${extra[@]}" >"$w.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 1 150); do
  [ "$("$SC" workers --json 2>/dev/null | grep -o '"state":"idle"' | wc -l)" -ge 4 ] && break
  sleep 0.2
done
STEPS_ALL=$((STEPS + WARMUP))
run() { # NAME ARGS...: job id
  local job
  # shellcheck disable=SC2086
  job=$("$SC" submit --model model --steps "$STEPS_ALL" $JOB --targets all --lr 1e-3 \
        --checkpoint-every 1000 --name "$@")
  "$SC" watch "$job" >/dev/null
  echo "$job"
}
# The plain chain on w1..w3 (the owner is busy with nothing: it waits aside).
plain=$(run plain --data "$WORK/plain.txt" --workers w1,w2,w3)
owned=$(run owned --owner owner --data data.txt --stages 2)
q() { sqlite3 db.sqlite "$1"; }
median() { # JOB
  q "select tokens_per_s from metrics where job_id = $1 and step > $WARMUP order by tokens_per_s
     limit 1 offset (select count(*) / 2 from metrics where job_id = $1 and step > $WARMUP)"
}
echo "owner_bench: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "model: $SHAPE; job: $JOB; $STEPS steps measured after $WARMUP"
printf '%-8s %-7s %-22s %14s\n' job stage layers "bytes sent/step"
for job in "$plain" "$owned"; do
  name=$(q "select name from jobs where id = $job")
  v=$(q "select max(version) from placements where job_id = $job")
  bytes=$(q "select bytes_per_hop from metrics where job_id = $job and step = $STEPS_ALL" |
          tr -d '[]' | tr ',' ' ')
  i=0
  for b in $bytes; do
    layers=$(q "select '[' || first_layer || ', ' || last_layer || ')' ||
                coalesce(' + [' || tail_first_layer || ', ' || tail_last_layer || ')', '')
                from placements where job_id = $job and version = $v and stage = $i")
    printf '%-8s %-7s %-22s %14s\n' "$name" "$i" "$layers" "$b"
    i=$((i + 1))
  done
done
tp=$(median "$plain")
to=$(median "$owned")
printf 'tokens/s: plain %.0f, owner %.0f: owner / plain = %.2f\n' "$tp" "$to" \
  "$(echo "$to / $tp" | bc -l)"
