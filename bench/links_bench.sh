#!/usr/bin/env bash
# links_bench.sh — training over slow links: a coordinator in the root network
# namespace and 3 workers, one per namespace (bench/netns.sh: every link
# shaped with tc tbf, so each hop between workers crosses two shaped links),
# for each link rate and each wire encoding a LoRA training job; prints a
# table of tokens/s, step time, bytes per hop and the ratio to fp32 at the
# same rate, and the planner's predicted step time (the largest
# placements.predicted_step_s of the job's latest placement) against the
# measured one.
#   bash bench/links_bench.sh [--rates "1000 100 20"] [--wires "fp32 bf16 int8 int4"]
#                             [--steps N] [--warmup N] [--delay-ms D] [--shape "OPTS"]
#                             [--job "OPTS"] [--max-load X] [--wait S]
# --steps: measured steps per job (default 6), after --warmup steps (default 2)
# that are excluded (the first steps pay for connections, buffers and page
# faults). --delay-ms D: every tensor arrives D ms after it was sent
# (SPLITCHAIN_TEST_LINK_DELAY_MS in the workers' environment; the kernel here
# has no netem; default 0). --shape: `splitchain make-model` options of the
# model (random weights); default a Llama with 3 layers (one per worker) of
# embd 256, 8 heads of which 2 key/value, MLP width 128, vocabulary 300:
# little compute per activation byte (the 3 stages of a step need ~0.25 s of
# one core here), so that fp32 is link-bound at 100 Mbit/s as a real model on
# GPUs would be; a wider model (embd 512+) is compute-bound on 2 CPU cores
# even at 100 Mbit/s. --job: the schedule, default --batch 8 --seq 64
# --micro 8 --rank 8 (LoRA on all projections): 4096 tokens a step in 8
# micro-batches of 512 KiB of fp32 activations, so 4 MiB forward and 4 MiB of
# gradients back per hop per step (the middle worker's uplink carries 8 MiB).
# Each job waits (up to --wait s, default 60) for other processes to keep no
# more than --max-load CPUs busy (default 0.3; bench/load.sh) and reports the
# CPUs they kept busy while it ran (the "other load" column: user, system
# and steal time less the cluster's processes; interrupts, i.e. the kernel
# forwarding our packets, not counted): this machine's cores are shared by
# the three workers.
# Targets: int8 >= 3x fp32's tokens/s at 100 Mbit/s; the predicted step time
# within 20% of the measured one. Needs root and ip/tc (exits 77 otherwise).
# Environment: SC_LINKS_BUILD (build folder, default build-netbench: built
# here), SC_LINKS_PORT (coordinator port, default 7795), SC_LINKS_KEEP=1
# keeps the work folder (logs, databases).
# shellcheck disable=SC2034 # MAXLOAD and WAIT are bench/load.sh's
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RATES="1000 100 20"
WIRES="fp32 bf16 int8 int4"
STEPS=6
WARMUP=2
DELAY=0
SHAPE="--preset llama-tiny --layers 3 --embd 256 --heads 8 --kv-heads 2 --inner 128
       --vocab 300 --positions 128 --seed 3"
JOB="--batch 8 --seq 64 --micro 8 --rank 8 --alpha 16 --lr 1e-3 --min-lr 1e-4 --seed 5"
MAXLOAD=0.3 # read by bench/load.sh, as WAIT is
WAIT=60
usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 && !/shellcheck/ {print}' "$0" >&2; exit 2; }
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || usage
  case "$1" in
    --rates) RATES=$2 ;; --wires) WIRES=$2 ;; --steps) STEPS=$2 ;; --warmup) WARMUP=$2 ;;
    --delay-ms) DELAY=$2 ;; --shape) SHAPE=$2 ;; --job) JOB=$2 ;;
    --max-load) MAXLOAD=$2 ;; --wait) WAIT=$2 ;;
    *) usage ;;
  esac
  shift 2
done
[[ "$STEPS" =~ ^[1-9][0-9]*$ ]] && [[ "$WARMUP" =~ ^[0-9]+$ ]] && [[ "$DELAY" =~ ^[0-9]+$ ]] ||
  usage
BUILD=${SC_LINKS_BUILD:-$ROOT/build-netbench}
PORT=${SC_LINKS_PORT:-7795}
NETNS=$ROOT/bench/netns.sh
SC=$BUILD/cli/splitchain
COORD=tcp://10.77.1.1:$PORT
export SPLITCHAIN_COORDINATOR=$COORD
NW=3

# Namespaces first: no point building where they cannot be made.
rc=0
bash "$NETNS" check >/dev/null || rc=$?
if [ $rc -ne 0 ]; then
  echo "links_bench: skip: network namespaces cannot be made here (see above)" >&2
  exit "$rc"
fi

WORK=$(mktemp -d /tmp/links-bench.XXXXXX)
CLUSTER=$WORK/cluster
source "$ROOT/bench/auth.sh"
stop_cluster() {
  [ -d "$CLUSTER" ] && SC_BIN=$BUILD "$ROOT/deploy/launch.sh" stop "$CLUSTER" >/dev/null 2>&1
  return 0
}
cleanup() {
  stop_cluster
  bash "$NETNS" down || true
  if [ "${SC_LINKS_KEEP:-0}" = 1 ]; then echo "links_bench: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
. "$ROOT/bench/load.sh"

{ cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DSC_CUDA=OFF &&
  cmake --build "$BUILD" -j"$(nproc)" --target splitchain splitchain-worker \
    splitchain-coordinator; } >"$WORK/build.log" 2>&1 ||
  { cat "$WORK/build.log" >&2; exit 1; }

# The model and the data every job shares.
# shellcheck disable=SC2086
"$SC" make-model --out "$WORK/model" $SHAPE >/dev/null
find "$ROOT/docs" "$ROOT/common" "$ROOT/coordinator" -name '*.[chm]*' -type f | sort |
  xargs cat > "$WORK/all.txt"
head -c 400000 "$WORK/all.txt" > "$WORK/data.txt"

HZ=$(getconf CLK_TCK)
# CPU seconds all processes spent so far, less interrupts: the kernel's
# forwarding of our own packets between the namespaces runs as softirq and
# is charged to no process (bench/load.sh's busy_s counts it).
busy_proc_s() { awk -v hz="$HZ" '/^cpu /{printf "%.2f\n", ($2 + $3 + $4 + $9) / hz}' /proc/stat; }
# CPU seconds (user + system) the given processes spent so far.
pids_cpu_s() {
  local p t=0 v
  for p in "$@"; do
    v=$(awk -v hz="$HZ" '{sub(/.*\) /, ""); printf "%.2f", ($12 + $13) / hz}' "/proc/$p/stat" \
        2>/dev/null) || v=0
    t=$(awk -v a="$t" -v b="${v:-0}" 'BEGIN {printf "%.2f", a + b}')
  done
  echo "$t"
}

# start_cluster RATE: namespaces at RATE Mbit/s, the coordinator, 3 workers;
# returns when all 3 registered and measured their links to each other.
start_cluster() {
  SC_NETNS_OWNER=$$ bash "$NETNS" up "$NW" "$1"
  rm -rf "$CLUSTER" && mkdir -p "$CLUSTER"
  bench_auth "$BUILD" "$CLUSTER/splitchain.db" "$WORK" || exit 1
  "$BUILD/coordinator/splitchain-coordinator" --listen "$COORD" --insecure --db "$CLUSTER/splitchain.db" \
    --model-root "$WORK" --data-root "$WORK" >>"$CLUSTER/coordinator.log" 2>&1 &
  echo $! > "$CLUSTER/coordinator.pid"
  local i n
  for i in $(seq 1 "$NW"); do
    bash "$NETNS" exec "$i" env OMP_NUM_THREADS=1 SPLITCHAIN_TEST_LINK_DELAY_MS="$DELAY" \
      "$BUILD/worker/splitchain-worker" --coordinator "$COORD" --insecure --name "ns-$i" \
      --listen "tcp://10.77.$i.2:0" --data "tcp://10.77.$i.2:0" --threads 1 \
      --probe-every-s 0 >>"$CLUSTER/worker-$i.log" 2>&1 &
    echo $! > "$CLUSTER/worker-$i.pid"
  done
  # Registered, and every worker-to-worker link measured (the planner uses them).
  for _ in $(seq 1 300); do
    n=$(sqlite3 "$CLUSTER/splitchain.db" "select count(*) from v_links where
          from_name like 'ns-%' and to_name like 'ns-%'" 2>/dev/null || echo 0)
    [ "${n:-0}" -ge $((NW * (NW - 1))) ] && return 0
    sleep 0.2
  done
  echo "links_bench: the workers did not register and measure their links in 60 s" >&2
  tail -n 5 "$CLUSTER"/*.log >&2
  return 1
}

results=$WORK/results.jsonl
: > "$results"
total=$((WARMUP + STEPS))
for rate in $RATES; do
  echo "link rate $rate Mbit/s: starting the cluster ..." >&2
  start_cluster "$rate"
  links=$(sqlite3 "$CLUSTER/splitchain.db" "select printf('%.0f', avg(mbit_s)) || ' Mbit/s, rtt ' ||
            printf('%.2f', avg(rtt_ms)) || ' ms' from v_links where from_name like 'ns-%'
            and to_name like 'ns-%'")
  echo "  probes measured worker-to-worker links at $links" >&2
  read -ra pids <<<"$(cat "$CLUSTER"/*.pid | paste -sd' ')"
  for w in $WIRES; do
    wait_quiet
    b0=$(busy_proc_s) c0=$(pids_cpu_s "${pids[@]}") t0=$(date +%s.%N)
    # shellcheck disable=SC2086
    job=$("$SC" submit --model "$WORK/model" --data "$WORK/data.txt" --stages "$NW" $JOB \
          --steps "$total" --warmup 1 --wire "$w" --checkpoint-every "$total" \
          --name "links-$rate-$w")
    if ! timeout 900 "$SC" watch "$job" >/dev/null; then
      echo "  $w: job $job did not finish: $("$SC" status "$job" 2>&1 | head -3)" >&2
      continue
    fi
    b1=$(busy_proc_s) c1=$(pids_cpu_s "${pids[@]}") t1=$(date +%s.%N)
    load=$(awk -v b="$b1" -v a="$b0" -v c="$c1" -v d="$c0" -v t="$t1" -v s="$t0" \
           'BEGIN {l = ((b - a) - (c - d)) / (t - s); if (l < 0) l = 0; printf "%.2f", l}')
    sqlite3 -json "$CLUSTER/splitchain.db" "
      with m as (select * from metrics where job_id = $job and step > $WARMUP),
           pv as (select max(version) v from placements where job_id = $job)
      select $rate as rate, '$w' as wire, $job as job, $load as load,
        (select count(*) from m) as steps,
        (select avg(step_s) from m) as step_s,
        (select sum(step_s) from m) as sum_s,
        (select sum(tokens_per_s * step_s) from m) as tokens,
        (select avg(b) from (select sum(j.value) b from m, json_each(m.bytes_per_hop) j
                             group by m.step)) as bytes_step,
        (select json_array_length(bytes_per_hop) from m limit 1) as stages,
        (select max(predicted_step_s) from placements, pv where job_id = $job
                                                              and version = pv.v) as predicted_s,
        (select group_concat(w.name || ':' || p.first_layer || '-' || p.last_layer, ' ')
           from placements p join workers w on w.id = p.worker_id, pv
          where p.job_id = $job and p.version = pv.v) as chain,
        '$links' as links" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)[0]))' \
      >> "$results"
    echo "  $w: job $job done ($(tail -1 "$results" | python3 -c 'import json,sys
r = json.loads(sys.stdin.read()); print("%.2f s/step" % r["step_s"])'))" >&2
  done
  stop_cluster
  bash "$NETNS" down
done

python3 - "$results" "$RATES" "$WIRES" "$WARMUP" "$STEPS" "$DELAY" "$SHAPE" "$JOB" <<'PY'
import json, os, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
rates, wires = sys.argv[2].split(), sys.argv[3].split()
warmup, steps, delay = sys.argv[4:7]
shape, job = " ".join(sys.argv[7].split()), " ".join(sys.argv[8].split())
by = {(str(r["rate"]), r["wire"]): r for r in rows}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
            if l.startswith("model name")), "?")
print(f"\nLoRA training over shaped links: coordinator + 3 workers in network namespaces")
print(f"CPU: {cpu}, {os.cpu_count()} cores; 1 thread per worker")
print(f"model: make-model {shape}\njob: {job}; {warmup} warm-up + {steps} measured steps")
print(f"one-way data-plane delay: {delay} ms (SPLITCHAIN_TEST_LINK_DELAY_MS)")
print("tokens/s = tokens of the measured steps / their summed step time; MB/step/hop = bytes")
print("all stages sent per step (activations forward + gradients back) / hops;")
print("predicted = the largest placements.predicted_step_s of the job's latest placement\n")
hdr = ("rate Mbit/s", "probed Mbit/s", "wire", "tokens/s", "step s", "MB/step/hop",
       "tokens/s vs fp32", "predicted s", "(predicted - step) / step", "other load")
print("| " + " | ".join(hdr) + " |")
print("|" + "---|" * len(hdr))
nan = float("nan")
def tps(r): return r["tokens"] / r["sum_s"] if r and r.get("sum_s") else nan
checks = []
for rate in rates:
    f = by.get((rate, "fp32"))
    for w in wires:
        r = by.get((rate, w))
        if not r:
            print(f"| {rate} | | {w} | failed | | | | | | |")
            continue
        hops = max((r["stages"] or 1) - 1, 1)
        pred = r["predicted_s"] or nan
        # the prediction's error relative to the measured step
        err = (pred - r["step_s"]) / r["step_s"] if pred == pred and pred > 0 else nan
        rel = tps(r) / tps(f) if f else nan
        probed = r["links"].split(" Mbit/s")[0]
        print(f"| {rate} | {probed} | {w} | {tps(r):.0f} | {r['step_s']:.3f} | "
              f"{r['bytes_step'] / hops / 1e6:.2f} | {rel:.2f}x | {pred:.3f} | {100 * err:+.0f}% | "
              f"{r['load']:.2f} |")
        if err == err:
            checks.append(abs(err) <= 0.2)
print()
i8, f32 = by.get(("100", "int8")), by.get(("100", "fp32"))
if i8 and f32:
    x = tps(i8) / tps(f32)
    print(f"target int8 >= 3x fp32 tokens/s at 100 Mbit/s: {x:.2f}x -> "
          f"{'met' if x >= 3 else 'NOT met'}")
else:
    print("target int8 >= 3x fp32 at 100 Mbit/s: not measured (needs --rates with 100 and "
          "--wires with fp32 and int8)")
print(f"target predicted step time within 20% of measured: {sum(checks)} of {len(checks)} "
      f"jobs -> {'met' if checks and all(checks) else 'NOT met'}")
for rate in rates:
    r = next((r for r in rows if str(r["rate"]) == rate), None)
    if r:
        print(f"at {rate} Mbit/s: probes measured {r['links']} between workers; "
              f"chain (worker:layers) {r['chain']}")
PY
