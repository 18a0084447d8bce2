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
trap 'kill ${pids[@]+"${pids[@]}"} 2>/dev/null; wait 2>/dev/null
      [ -n "${SC_BENCH_KEEP:-}" ] && echo "kept $WORK" >&2 || rm -rf "$WORK"' EXIT
cd "$WORK"
mkdir home
# shellcheck disable=SC2086
"$SC" make-model --out model $SHAPE >/dev/null
find "$ROOT/docs" "$ROOT/common" -type f -name '*.[ch]*' | sort | xargs cat | head -c 2000000 \
  > home/data.txt
cp home/data.txt plain.txt
source "$ROOT/bench/auth.sh"
bench_auth "$BUILD" "$WORK/db.sqlite" "$WORK" || exit 1
"$BUILD/coordinator/splitchain-coordinator" --listen "$SPLITCHAIN_COORDINATOR" --insecure --db db.sqlite \
  >coordinator.log 2>&1 &
pids+=($!)
for w in w1 w2 o1 o2 o3; do
  extra=()
  # Each owner its own third of the corpus.
  case $w in o*) mkdir -p "home-$w"
                 k=${w#o}
                 third=$(($(stat -c %s home/data.txt) / 3))
                 dd if=home/data.txt of="home-$w/data.txt" bs="$third" skip=$((k - 1)) count=1 \
                   status=none
                 extra=(--owner-data "$WORK/home-$w") ;; esac
  OMP_NUM_THREADS=1 "$BUILD/worker/splitchain-worker" --coordinator "$SPLITCHAIN_COORDINATOR" --insecure \
    --name "$w" --threads 1 --listen tcp://127.0.0.1:0 --data tcp://127.0.0.1:0 \
    "${extra[@]}" >"$w.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 1 150); do
  [ "$("$SC" workers --json 2>/dev/null | grep -o '"state":"idle"' | wc -l)" -ge 5 ] && break
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
# The plain chain on w1, w2 and o1 (as an ordinary stage); the owners' jobs
# over the middle w1, w2 (the only free workers that are not their owners).
plain=$(run plain --data "$WORK/plain.txt" --workers w1,w2,o1)
own1=$(run owners-1 --owner o1 --data data.txt --stages 2)
own2=$(run owners-2 --owner o1 --owner o2 --data data.txt --stages 2)
own3=$(run owners-3 --owner o1 --owner o2 --owner o3 --data data.txt --stages 2)
fed=$(run fedavg-4 --owner o1 --owner o2 --data data.txt --stages 2 --fedavg-every 4)
q() { sqlite3 db.sqlite "$1"; }
median() { # JOB
  q "select tokens_per_s from metrics where job_id = $1 and step > $WARMUP order by tokens_per_s
     limit 1 offset (select count(*) / 2 from metrics where job_id = $1 and step > $WARMUP)"
}
echo "owner_bench: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "model: $SHAPE; job: $JOB; $STEPS steps measured after $WARMUP"
printf '%-10s %-7s %-26s %14s\n' job stage "worker layers" "bytes sent/step"
for job in "$plain" "$own1" "$own2" "$own3"; do
  name=$(q "select name from jobs where id = $job")
  v=$(q "select max(version) from placements where job_id = $job")
  bytes=$(q "select bytes_per_hop from metrics where job_id = $job and step = $STEPS_ALL" |
          tr -d '[]' | tr ',' ' ')
  i=0
  for b in $bytes; do
    layers=$(q "select w.name || ' [' || p.first_layer || ', ' || p.last_layer || ')' ||
                coalesce(' + [' || p.tail_first_layer || ', ' || p.tail_last_layer || ')', '')
                from placements p join workers w on w.id = p.worker_id
                where p.job_id = $job and p.version = $v and p.stage = $i")
    printf '%-10s %-7s %-26s %14s\n' "$name" "$i" "$layers" "$b"
    i=$((i + 1))
  done
done
tp=$(median "$plain")
for job in "$own1" "$own2" "$own3"; do
  t=$(median "$job")
  printf 'tokens/s %-10s %6.0f (plain %6.0f): %.2fx\n' "$(q "select name from jobs where id = $job")" \
    "$t" "$tp" "$(echo "$t / $tp" | bc -l)"
done
le=$(q "select loss from metrics where job_id = $own2 and step = $STEPS_ALL")
lf=$(q "select loss from metrics where job_id = $fed and step = $STEPS_ALL")
printf 'loss after %d steps, 2 owners: exact %.5f, --fedavg-every 4 %.5f (%+.2f%%)\n' \
  "$STEPS_ALL" "$le" "$lf" "$(echo "100 * ($lf - $le) / $le" | bc -l)"
