#!/usr/bin/env bash
# delivery_bench.sh — issue 11's model-delivery benchmark: how long a job
# waits for its model when the workers start with no model on their disks.
# The coordinator runs in the root network namespace and 3 workers each in
# a namespace of its own (bench/netns.sh up 3, as links_bench.sh uses it),
# joined to the root namespace by a veth pair; netns.sh's tbf on each veth
# end is then replaced with an HTB of two classes: traffic between the
# worker and the coordinator at --rate, all other (worker to worker,
# forwarded by the root namespace) at --peer-rate. So each worker has its
# own --rate link to the coordinator, and a worker to worker path crosses
# two --peer-rate links: with --peer-rate above --rate a tensor a peer
# caches comes faster from that peer (the coordinator answers
# Coordinator.TensorSources with the peers that cache a tensor over a link
# measured faster than the asker's link to the coordinator:
# coordinator/coord_models.c). Not measured here: one coordinator link
# shared by all 3 workers (a coordinator in a 4th namespace at 100 Mbit/s):
# there the fetches (3 workers x DELIVER_WINDOW x 4 MiB in flight) starved
# the heartbeats, all 3 workers were declared lost and the job was
# interrupted (docs/benchmarks.md).
# The model: `splitchain make-model --preset tinyllama-1.1b --dtype bf16`
# (random weights; 2.2 GB of bf16 tensors), registered with `splitchain
# models add`; jobs run with --precision bf16 (the base stays bf16 on the
# workers), --split at fixed cuts and --workers in a fixed order, one step of
# B x T = 1 x 64 (--job). Workers start with empty --cache folders. Phases:
#   cold    job A on ns-1,ns-2,ns-3: every tensor from the coordinator
#   warm    job A again: every tensor from the caches (0 bytes fetched)
#   (ns-1 and ns-3 restart with empty caches; ns-2 keeps its segment)
#   coord   job B on ns-3,ns-2,ns-1: the two ends fetch the other end's
#           tensors from the coordinator (no peer caches them)
#   peer    job A on ns-1,ns-2,ns-3: the two ends fetch the same bytes again,
#           now from each other's cache (peer-first)
# Time to first step = the first step's metrics.recorded_ms - the job's
# jobs.created_ms (submit to the first completed step, in the coordinator's
# database); bytes per worker from the worker logs ("N tensors from the
# cache, N fetched (N bytes fetched; N tensors, N bytes from peers)").
# Prints one markdown table (seconds, bytes per worker, ratios cold/warm and
# coord/peer).
#   bash bench/delivery_bench.sh [--rate MBIT] [--peer-rate MBIT] [--job "OPTS"]
#                                [--shape "OPTS"] [--split R] [--max-load X] [--wait S]
# --rate: each worker's link to the coordinator (default 100); --peer-rate:
# worker to worker links (default 200; equal to --rate, no peer is faster and the peer phase
# fetches from the coordinator too). --shape: make-model options (default
# --preset tinyllama-1.1b --dtype bf16); --split: the 3 stages' layers
# (default 0-7,8-14,15-21). Each job waits (up to --wait s, default 60) for
# other processes to keep no more than --max-load CPUs busy (default 0.5;
# bench/load.sh); the "other load" column is what they kept busy meanwhile.
# Needs root and ip/tc (exits 77 otherwise), ~2.2 GB of memory per copy of
# the model and ~7 GB of disk in /tmp (the model, the workers' caches).
# One run took 11 minutes here (docs/benchmarks.md).
# Environment: SC_DELIVERY_BUILD (build folder, default build-netbench:
# built here), SC_DELIVERY_PORT (coordinator port, default 7796),
# SC_DELIVERY_KEEP=1 keeps the work folder (logs, database).
# shellcheck disable=SC2034 # MAXLOAD and WAIT are bench/load.sh's
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RATE=100
PEER_RATE=200
SHAPE="--preset tinyllama-1.1b --dtype bf16 --seed 3"
SPLIT=0-7,8-14,15-21
JOB="--batch 1 --seq 64 --micro 1 --rank 8 --alpha 16 --lr 1e-3 --seed 5 --precision bf16"
MAXLOAD=0.5 # read by bench/load.sh, as WAIT is
WAIT=60
usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 && !/shellcheck/ {print}' "$0" >&2; exit 2; }
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || usage
  case "$1" in
    --rate) RATE=$2 ;; --peer-rate) PEER_RATE=$2 ;; --job) JOB=$2 ;; --shape) SHAPE=$2 ;;
    --split) SPLIT=$2 ;; --max-load) MAXLOAD=$2 ;; --wait) WAIT=$2 ;;
    *) usage ;;
  esac
  shift 2
done
if ! [[ "$RATE" =~ ^[1-9][0-9]*$ && "$PEER_RATE" =~ ^[1-9][0-9]*$ ]]; then usage; fi
BUILD=${SC_DELIVERY_BUILD:-$ROOT/build-netbench}
PORT=${SC_DELIVERY_PORT:-7796}
NETNS=$ROOT/bench/netns.sh
SC=$BUILD/cli/splitchain
CADDR=10.77.1.1 # the coordinator's address (root namespace, sc-veth1)
COORD=tcp://$CADDR:$PORT
export SPLITCHAIN_COORDINATOR=$COORD
NW=3
MODEL=bench-tinyllama

# Namespaces first: no point building where they cannot be made.
rc=0
bash "$NETNS" check >/dev/null || rc=$?
if [ $rc -ne 0 ]; then
  echo "delivery_bench: skip: network namespaces cannot be made here (see above)" >&2
  exit "$rc"
fi

WORK=$(mktemp -d /tmp/delivery-bench.XXXXXX)
CLUSTER=$WORK/cluster
mkdir -p "$CLUSTER"
stop_pid() { # FILE: SIGTERM the process in FILE, SIGKILL after 10 s
  local f=$1 p
  [ -f "$f" ] || return 0
  p=$(cat "$f")
  kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$p" 2>/dev/null || true
  rm -f "$f"
}
cleanup() {
  local f
  for f in "$CLUSTER"/worker-*.pid "$CLUSTER"/coordinator.pid; do stop_pid "$f"; done
  bash "$NETNS" down || true
  if [ "${SC_DELIVERY_KEEP:-0}" = 1 ]; then echo "delivery_bench: kept $WORK" >&2
  else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
. "$ROOT/bench/load.sh"

# A build folder that exists keeps its configuration (SC_DELIVERY_BUILD=build).
{ { [ -f "$BUILD/CMakeCache.txt" ] ||
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DSC_CUDA=OFF; } &&
  cmake --build "$BUILD" -j"$(nproc)" --target splitchain splitchain-worker \
    splitchain-coordinator; } >"$WORK/build.log" 2>&1 ||
  { cat "$WORK/build.log" >&2; exit 1; }

echo "making the model (make-model $SHAPE) ..." >&2
# shellcheck disable=SC2086
"$SC" make-model --out "$WORK/model" $SHAPE >/dev/null
find "$ROOT/docs" "$ROOT/common" "$ROOT/coordinator" -name '*.[chm]*' -type f | sort |
  xargs cat > "$WORK/all.txt"
head -c 400000 "$WORK/all.txt" > "$WORK/data.txt"

# The namespaces, then per veth end an HTB: coordinator traffic at RATE,
# the rest at PEER_RATE (burst as netns.sh's: max(64 KiB, 2 ms at the rate)).
SC_NETNS_OWNER=$$ bash "$NETNS" up "$NW" "$PEER_RATE"
burst_for() { local b=$(($1 * 1000000 / 8 / 500)); [ "$b" -ge 65536 ] || b=65536; echo "${b}b"; }
htb() { # I DEV MATCH: on DEV (in sc-nsI, or the root namespace when I is 0)
  local i=$1 dev=$2 match=$3
  local -a in=()
  [ "$i" = 0 ] || in=(ip netns exec "sc-ns$i")
  "${in[@]}" tc qdisc replace dev "$dev" root handle 1: htb default 20 r2q 1000
  "${in[@]}" tc class add dev "$dev" parent 1: classid 1:10 htb rate "${RATE}mbit" \
    burst "$(burst_for "$RATE")" cburst "$(burst_for "$RATE")"
  "${in[@]}" tc class add dev "$dev" parent 1: classid 1:20 htb rate "${PEER_RATE}mbit" \
    burst "$(burst_for "$PEER_RATE")" cburst "$(burst_for "$PEER_RATE")"
  # shellcheck disable=SC2086 # match is two words: src|dst ADDR
  "${in[@]}" tc filter add dev "$dev" parent 1: protocol ip prio 1 u32 match ip $match \
    flowid 1:10
}
for i in $(seq 1 $NW); do
  htb 0 "sc-veth$i" "src $CADDR/32"
  htb "$i" "sc-veth${i}n" "dst $CADDR/32"
done

source "$ROOT/bench/auth.sh"
bench_auth "$BUILD" "$CLUSTER/splitchain.db" "$WORK" || exit 1
"$BUILD/coordinator/splitchain-coordinator" --listen "$COORD" --insecure --db "$CLUSTER/splitchain.db" \
  --model-root "$WORK" --data-root "$WORK" >>"$CLUSTER/coordinator.log" 2>&1 &
echo $! > "$CLUSTER/coordinator.pid"
DB=$CLUSTER/splitchain.db

start_worker() { # I: worker ns-I in sc-nsI with an empty cache
  local i=$1
  rm -rf "$WORK/cache-$i" && mkdir -p "$WORK/cache-$i"
  bash "$NETNS" exec "$i" env OMP_NUM_THREADS=1 \
    "$BUILD/worker/splitchain-worker" --coordinator "$COORD" --insecure --name "ns-$i" \
    --listen "tcp://10.77.$i.2:0" --data "tcp://10.77.$i.2:0" --threads 1 \
    --probe-every-s 0 --cache "$WORK/cache-$i" >>"$CLUSTER/worker-$i.log" 2>&1 &
  echo $! > "$CLUSTER/worker-$i.pid"
}

# Waits until the workers named by LIKE (an SQL pattern) measured their
# links to the coordinator and to every other worker after SINCE_MS (the
# planner and peer-first read them).
wait_links() { # SINCE_MS LIKE
  local n want
  want=$(sqlite3 "$DB" "select count(*) * $NW from workers where name like '$2'
           and name like 'ns-%'" 2>/dev/null || echo 0)
  for _ in $(seq 1 450); do
    n=$(sqlite3 "$DB" "select count(*) from v_links where from_name like '$2'
          and from_name like 'ns-%' and measured_ms >= $1" 2>/dev/null || echo 0)
    [ "${want:-0}" -gt 0 ] && [ "${n:-0}" -ge "$want" ] && return 0
    sleep 0.2
  done
  echo "delivery_bench: the workers did not register and measure their links in 90 s" >&2
  tail -n 5 "$CLUSTER"/*.log >&2
  return 1
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }

t0=$(now_ms)
for i in $(seq 1 $NW); do start_worker "$i"; done
for _ in $(seq 1 100); do "$SC" models list >/dev/null 2>&1 && break; sleep 0.2; done
echo "registering the model ..." >&2
"$SC" models add --timeout-ms 600000 "$MODEL" "$WORK/model" >/dev/null
wait_links "$t0" 'ns-%'
sqlite3 -separator ' ' "$DB" "select from_name, '->', to_name, printf('%.0f Mbit/s', mbit_s)
  from v_links where from_name like 'ns-%' order by 1, 3" > "$WORK/links.txt"
sed 's/^/  probed: /' "$WORK/links.txt" >&2

HZ=$(getconf CLK_TCK)
busy_proc_s() { awk -v hz="$HZ" '/^cpu /{printf "%.2f\n", ($2 + $3 + $4 + $9) / hz}' /proc/stat; }
pids_cpu_s() {
  local p t=0 v
  for p in "$@"; do
    v=$(awk -v hz="$HZ" '{sub(/.*\) /, ""); printf "%.2f", ($12 + $13) / hz}' "/proc/$p/stat" \
        2>/dev/null) || v=0
    t=$(awk -v a="$t" -v b="${v:-0}" 'BEGIN {printf "%.2f", a + b}')
  done
  echo "$t"
}

results=$WORK/results.jsonl
: > "$results"
# run_job PHASE WORKERS: one job of 1 step on WORKERS (chain order); appends
# its figures to results.
run_job() {
  local phase=$1 workers=$2 job b0 c0 t0 b1 c1 t1 load i line
  local -a pids
  read -ra pids <<<"$(cat "$CLUSTER"/*.pid | paste -sd' ')"
  wait_quiet
  echo "$phase: job on $workers ..." >&2
  b0=$(busy_proc_s) c0=$(pids_cpu_s "${pids[@]}") t0=$(date +%s.%N)
  # shellcheck disable=SC2086
  job=$("$SC" submit --model "$MODEL" --data "$WORK/data.txt" --stages "$NW" --split "$SPLIT" \
        --workers "$workers" $JOB --steps 1 --warmup 0 --checkpoint-every 1 \
        --name "delivery-$phase")
  if ! timeout 1200 "$SC" watch "$job" >/dev/null; then
    echo "  job $job did not finish: $("$SC" status "$job" 2>&1 | head -3)" >&2
    return 1
  fi
  b1=$(busy_proc_s) c1=$(pids_cpu_s "${pids[@]}") t1=$(date +%s.%N)
  load=$(awk -v b="$b1" -v a="$b0" -v c="$c1" -v d="$c0" -v t="$t1" -v s="$t0" \
         'BEGIN {l = ((b - a) - (c - d)) / (t - s); if (l < 0) l = 0; printf "%.2f", l}')
  # Each worker's last delivery line for this job (an assignment that broke
  # and was made again logs one per try: the bytes add up).
  local fetch="{"
  for i in $(seq 1 $NW); do
    line=$(grep -h "job $job model $MODEL:" "$CLUSTER/worker-$i.log" | awk '
      { for (k = 2; k < NF; k++) {
          if ($k == "fetched" && $(k+1) ~ /^\(/) { f += $(k-1) }
          if ($k == "bytes" && $(k+1) == "fetched;") { v = $(k-1); sub(/^\(/, "", v); b += v }
          if ($k == "tensors,") { pt += $(k-1) }
          if ($k == "bytes" && $(k+1) == "from") { pb += $(k-1) }
          if ($k == "tensors" && $(k+1) == "from") { c = $(k-1) } } }
      END { printf "{\"cached\":%d,\"fetched\":%d,\"bytes\":%.0f,\"peer_tensors\":%d,\"peer_bytes\":%.0f}",
            c, f, b, pt, pb }')
    fetch="$fetch\"ns-$i\":$line,"
  done
  fetch="${fetch%,}}"
  sqlite3 -json "$DB" "
    select '$phase' as phase, '$workers' as workers, $job as job, $load as load,
      (select state from jobs where id = $job) as state,
      (select m.recorded_ms - j.created_ms from metrics m, jobs j
        where m.job_id = $job and j.id = $job and m.step = 1) as ttfs_ms,
      (select step_s from metrics where job_id = $job and step = 1) as step_s" |
    python3 -c 'import json,sys; r = json.load(sys.stdin)[0]; r["fetch"] = json.loads(sys.argv[1])
print(json.dumps(r))' "$fetch" >> "$results"
  echo "  $(tail -1 "$results")" >&2
}

A=ns-1,ns-2,ns-3
B=ns-3,ns-2,ns-1
run_job cold "$A"
run_job warm "$A"
echo "restarting ns-1 and ns-3 with empty caches ..." >&2
t0=$(now_ms)
for i in 1 3; do stop_pid "$CLUSTER/worker-$i.pid"; start_worker "$i"; done
wait_links "$t0" 'ns-1'
wait_links "$t0" 'ns-3'
run_job coord "$B"
run_job peer "$A"

python3 - "$results" "$RATE" "$PEER_RATE" "$SHAPE" "$JOB" "$SPLIT" "$WORK/links.txt" \
  "$WORK/model" <<'PY'
import json, os, sys
rows = {r["phase"]: r for r in (json.loads(l) for l in open(sys.argv[1]) if l.startswith("{"))}
rate, peer_rate, shape, job, split = sys.argv[2:7]
links = [l.strip() for l in open(sys.argv[7])]
cfg = json.load(open(os.path.join(sys.argv[8], "config.json")))
size = sum(os.path.getsize(os.path.join(sys.argv[8], f)) for f in os.listdir(sys.argv[8]))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
            if l.startswith("model name")), "?")
print("\n## Model delivery: cold vs warm start, peer vs coordinator fetch\n")
print(f"CPU: {cpu}, {os.cpu_count()} cores; coordinator (root namespace) + 3 workers (1 thread "
      f"each, each in its own network namespace)")
print(f"links (tc htb): each worker to the coordinator {rate} Mbit/s, worker to worker "
      f"{peer_rate} Mbit/s; "
      f"probed: {'; '.join(links)}")
print(f"model: make-model {' '.join(shape.split())} ({cfg.get('num_hidden_layers')} layers, "
      f"{size / 1e9:.2f} GB on disk), registered with `splitchain models add`")
print(f"job: --split {split} {' '.join(job.split())} --steps 1")
print("time to first step = the first step's metrics.recorded_ms - jobs.created_ms; "
      "fetched = bytes each worker fetched (of them from peers)\n")
phases = [("cold", "cold: empty caches, from the coordinator"),
          ("warm", "warm: same job, caches full"),
          ("coord", "coordinator-only: ends swap segments, no peer caches them"),
          ("peer", "peer: ends swap segments again, each from the other's cache")]
print("| phase | chain | time to first step s | first step s | ns-1 fetched MB (peers) | "
      "ns-2 fetched MB (peers) | ns-3 fetched MB (peers) | total MB | other load |")
print("|---|---|---|---|---|---|---|---|---|")
nan = float("nan")
def ttfs(p): r = rows.get(p); return r["ttfs_ms"] / 1000 if r and r.get("ttfs_ms") else nan
def total(p): r = rows.get(p); return sum(f["bytes"] for f in r["fetch"].values()) if r else 0
for p, what in phases:
    r = rows.get(p)
    if not r or r.get("ttfs_ms") is None:
        print(f"| {what} | | failed | | | | | | |")
        continue
    cells = []
    for w in ("ns-1", "ns-2", "ns-3"):
        f = r["fetch"].get(w, {})
        cells.append(f"{f.get('bytes', 0) / 1e6:.1f} ({f.get('peer_bytes', 0) / 1e6:.1f})")
    print(f"| {what} | {r['workers']} | {ttfs(p):.1f} | {r['step_s']:.2f} | "
          f"{' | '.join(cells)} | {total(p) / 1e6:.1f} | {r['load']:.2f} |")
print()
print("| ratio | value |\n|---|---|")
print(f"| cold / warm time to first step | {ttfs('cold') / ttfs('warm'):.1f}x |")
print(f"| coordinator-only / peer time to first step | {ttfs('coord') / ttfs('peer'):.2f}x |")
c, w = total("cold"), total("warm")
print(f"| bytes fetched cold / warm | {c / 1e6:.0f} MB / {w / 1e6:.0f} MB |")
pr = rows.get("peer")
pb = sum(f["peer_bytes"] for f in pr["fetch"].values()) if pr else 0
print(f"| peer phase: bytes from peers / all fetched | {pb / 1e6:.0f} MB / "
      f"{total('peer') / 1e6:.0f} MB |")
PY
