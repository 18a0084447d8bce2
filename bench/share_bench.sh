#!/usr/bin/env bash
# share_bench.sh — what parameter sharing saves: two LoRA jobs of one model
# on one worker started with --jobs 2 (one copy of the frozen weights) beside
# the same two jobs on two workers of their own (a copy each). Prints the
# workers' resident memory added by the jobs (VmRSS after the job is loaded
# and stepping, less the process's before any job), what the workers report
# (frozen weights, each job's own bytes), and the ratios:
#   shared / (one job + the second job's own state)   target <= 1.1
#   shared / alone (two copies)
#   bash bench/share_bench.sh [--preset NAME] [--job "OPTS"] [--wait S]
# --preset: a `splitchain make-model` preset (default gpt2: 124M parameters,
# 0.5 GB of fp32 weights; tinyllama-1.1b needs ~9 GB for the alone run);
# --job: the two jobs' shapes, default "--batch 2 --seq 64 --micro 2 --rank 8"
# (the second job runs rank 4 on the attention projections only). Each job
# runs one stage, the whole model on one worker, one thread. Environment:
# SC_BUILD (default build), SC_BENCH_PORT (default 7798).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${SC_BUILD:-$ROOT/build}
PRESET=gpt2
JOB="--batch 2 --seq 64 --micro 2 --rank 8"
WAIT=120
while [ $# -gt 0 ]; do
  case $1 in
  --preset) PRESET=$2; shift 2 ;;
  --job) JOB=$2; shift 2 ;;
  --wait) WAIT=$2; shift 2 ;;
  *) sed -n '2,17p' "$0" >&2; exit 2 ;;
  esac
done
SC=$BUILD/cli/splitchain
WORK=$(mktemp -d)
export SPLITCHAIN_COORDINATOR=tcp://127.0.0.1:${SC_BENCH_PORT:-7798}
pids=()
trap 'rc=$?; [ ${#pids[@]} -eq 0 ] || kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null
      rm -rf "$WORK"; exit $rc' EXIT
cd "$WORK"
"$SC" make-model --preset "$PRESET" --out model --seed 1 >/dev/null
head -c 2000000 /dev/urandom | base64 > data.txt
read -r -a J <<< "$JOB"
A=(--steps 100000 "${J[@]}" --targets all --seed 1)
B=(--steps 100000 "${J[@]}" --rank 4 --targets "$(
  case $PRESET in gpt2*) echo attn.c_attn,attn.c_proj ;; *) echo q_proj,k_proj,v_proj,o_proj ;; esac)" --seed 2)

rss() { awk '/^VmRSS:/ {print $2 * 1024}' "/proc/$1/status"; }
source "$ROOT/bench/auth.sh"
coordinator() {
  bench_auth "$BUILD" "$1/db" "$WORK" || exit 1
  "$BUILD/coordinator/splitchain-coordinator" --listen "$SPLITCHAIN_COORDINATOR" --insecure \
    --db "$1/db" --heartbeat-ms 200 >"$1/coordinator.log" 2>&1 &
  pids+=($!)
}
worker() { # DIR NAME JOBS
  OMP_NUM_THREADS=1 "$BUILD/worker/splitchain-worker" --coordinator "$SPLITCHAIN_COORDINATOR" --insecure \
    --name "$2" --threads 1 --jobs "$3" >"$1/$2.log" 2>&1 &
  pids+=($!)
  echo $!
}
# until_json EXPR: waits (--wait s) until `workers --json` makes EXPR true.
until_json() {
  local i
  for i in $(seq 1 $((WAIT * 5))); do
    "$SC" workers --json | python3 -c "import json, sys
ws = {w['name']: w for w in json.load(sys.stdin)}
sys.exit(0 if ($1) else 1)" 2>/dev/null && return 0
    sleep 0.2
  done
  echo "share_bench: timed out waiting for: $1" >&2
  exit 1
}
field() {
  "$SC" workers --json | python3 -c "import json, sys
ws = {w['name']: w for w in json.load(sys.stdin)}
print($1)"
}
stop_all() {
  [ ${#pids[@]} -eq 0 ] || kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  pids=()
}

# Shared: one worker, two job slots.
mkdir shared
coordinator shared
sleep 0.5
w=$(worker shared w 2)
until_json "'w' in ws"
rss0=$(rss "$w")
"$SC" submit --model model --data data.txt "${A[@]}" --stages 1 --workers w --name a >/dev/null
until_json "len(ws['w']['jobs_memory']) == 1"
sleep 2 # a few steps: activations and buffers touched
rss1=$(rss "$w")
"$SC" submit --model model --data data.txt "${B[@]}" --stages 1 --workers w --name b >/dev/null
until_json "len(ws['w']['jobs_memory']) == 2"
sleep 3
rss2=$(rss "$w")
base=$(field "ws['w']['base_bytes']")
own=$(field "' '.join(str(m['bytes']) for m in ws['w']['jobs_memory'])")
read -r ownA ownB <<< "$own"
grep -q "shared with another job" shared/w.log || { echo "share_bench: no sharing seen" >&2; exit 1; }
stop_all

# Alone: each job on a worker of its own.
mkdir alone
export SPLITCHAIN_COORDINATOR=tcp://127.0.0.1:$(( ${SC_BENCH_PORT:-7798} + 1 ))
coordinator alone
sleep 0.5
wa=$(worker alone wa 1)
wb=$(worker alone wb 1)
until_json "'wa' in ws and 'wb' in ws"
ra0=$(rss "$wa")
rb0=$(rss "$wb")
"$SC" submit --model model --data data.txt "${A[@]}" --stages 1 --workers wa --name a >/dev/null
"$SC" submit --model model --data data.txt "${B[@]}" --stages 1 --workers wb --name b >/dev/null
until_json "len(ws['wa']['jobs_memory']) == 1 and len(ws['wb']['jobs_memory']) == 1"
sleep 3
ra=$(rss "$wa")
rb=$(rss "$wb")
stop_all

python3 - "$PRESET" "$rss0" "$rss1" "$rss2" "$base" "$ownA" "$ownB" "$ra0" "$ra" "$rb0" "$rb" <<'PY'
import sys
preset = sys.argv[1]
r0, r1, r2, base, own_a, own_b, ra0, ra, rb0, rb = map(int, sys.argv[2:])
mib = lambda b: b / 2**20
one = r1 - r0
shared = r2 - r0
alone = (ra - ra0) + (rb - rb0)
print(f"# parameter sharing, {preset}: two jobs on one worker (--jobs 2) vs a worker each\n")
print("| | MiB |")
print("|---|---|")
print(f"| frozen weights, reported (one copy) | {mib(base):.1f} |")
print(f"| job A's own, reported | {mib(own_a):.1f} |")
print(f"| job B's own, reported | {mib(own_b):.1f} |")
print(f"| worker RSS added, job A alone on it | {mib(one):.1f} |")
print(f"| worker RSS added, A and B sharing | {mib(shared):.1f} |")
print(f"| two workers' RSS added, A and B alone | {mib(alone):.1f} |")
ratio = shared / (one + own_b)
print(f"\nshared / (one job + B's own state): {ratio:.3f} (target <= 1.1: "
      f"{'met' if ratio <= 1.1 else 'NOT met'})")
print(f"shared / alone: {shared / alone:.3f}")
PY
