#!/usr/bin/env bash
# chaos_test.sh — a seeded chaos driver against one running job: proves that
# recovery from crashes and stalls of workers and of the coordinator never
# hangs, never loses a committed checkpoint, and never changes the result.
#
# A coordinator (200 ms heartbeats, workers lost after 1.5 s) and four
# workers w1..w4 run one job of 2 stages, checkpointed every 7 steps, of
# STEPS_PER_FAULT × (N + 1) steps (enough for the steps each fault's window
# lets run on the other workers). N faults, in an order shuffled from the
# seed, hit it one by one; fault i is sent once the job has gone 15–30 steps
# (random) past where it stood when fault i-1 had recovered (the highest
# step in `metrics`, which never goes down when a restore redoes steps),
# after a further random delay of 0–300 ms (at most half those steps), so
# that faults land mid-step, mid-checkpoint, mid-restore. The four kinds,
# equally often:
#   worker_kill  SIGKILL a worker of the job's placement; restarted ~1 s later
#                with the same name, as a supervisor would
#   worker_stop  SIGSTOP a worker of the placement for 2.2 s (lost-after
#                + 700 ms), then SIGCONT
#   coord_kill   SIGKILL the coordinator; restarted after 0.3–1.0 s
#   coord_stop   SIGSTOP the coordinator for 2.2 s, then SIGCONT
# Each fault's recovery time runs from the signal to the first step recorded
# after it (metrics.recorded_ms); for the stop/restart kinds the time from
# SIGCONT or the restart to that step is printed too (negative: the job
# stepped again before it, on the other workers). A fault after which no
# step comes within 60 s is STUCK: a failure; the logs' tails (and, where
# gdb exists, the coordinator's thread stacks) are printed and the driver
# stops. Checks: no fault is stuck; every 'restored' event after a fault
# restores a checkpoint at least as new as the newest one before it; each
# kind was delivered as often as planned; the job finishes and its adapter
# is bit-identical to a single-process `splitchain finetune` run of the
# same options; no process of this run's cluster outlives it.
#
#   chaos_test.sh BUILD_DIR WORK_DIR [--faults N] [--seed S]
# Defaults: 24 faults (6 of each kind), seed 1, 400 steps per fault: about
# two minutes on 2 cores when nothing hangs (the faults' own waits and
# recoveries, then the rest of the job; a step takes ~6 ms). The longer
# mode, every kind equally often (about 20 minutes):
#   chaos_test.sh BUILD_DIR WORK_DIR --faults 300 --seed 7
# Environment: STEPS_PER_FAULT (400), STUCK_S (60).
source "$(dirname "$0")/lib.sh" "$1" "$2"
shift 2
FAULTS=24
SEED=1
while [ $# -gt 0 ]; do
  case $1 in
  --faults) FAULTS=${2:-}; shift $(($# > 1 ? 2 : 1)) ;;
  --seed) SEED=${2:-}; shift $(($# > 1 ? 2 : 1)) ;;
  *) FAULTS=x; shift ;;
  esac
done
[[ $FAULTS =~ ^[0-9]+$ && $SEED =~ ^[0-9]+$ ]] ||
  { echo "usage: chaos_test.sh BUILD_DIR WORK_DIR [--faults N] [--seed S]" >&2; exit 2; }
SPF=${STEPS_PER_FAULT:-400}
STUCK_S=${STUCK_S:-60}
LOST_AFTER_MS=1500
STOP_S=2.2                     # lost-after + 700 ms
STEPS=$((SPF * (FAULTS + 1)))
URL=$SPLITCHAIN_COORDINATOR
DB=cluster/splitchain.db
KINDS=(worker_kill worker_stop coord_kill coord_stop)
T_START=$SECONDS
echo "chaos: seed $SEED, $FAULTS faults, $STEPS steps, coordinator $URL"

# --- processes: the trap wakes whatever the driver stopped before stopping all
STOPPED=""
cont_all() {
  local f
  [ -n "$STOPPED" ] && kill -CONT "$STOPPED" 2>/dev/null
  for f in "$WORK"/cluster/*.pid; do [ -f "$f" ] && kill -CONT "$(cat "$f")" 2>/dev/null; done
  return 0
}
cleanup() {
  cont_all
  "$ROOT/deploy/launch.sh" stop "$WORK/cluster" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# start_worker I: worker wI, its pid in cluster/worker-I.pid (rewritten at each start).
start_worker() {
  "$BUILD/worker/splitchain-worker" --coordinator "$URL" --name "w$1" --threads 1 \
    "${WORKER_NET[@]}" --data-timeout 60 \
    >>"cluster/worker-$1.log" 2>&1 &
  echo $! > "cluster/worker-$1.pid"
}
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
now_ms() { NOW=${EPOCHREALTIME//[^0-9]/}; NOW=$((NOW / 1000)); }
q() { sqlite3 -cmd '.timeout 2000' "$DB" "$1" 2>/dev/null; }
secs() { awk -v ms="$1" 'BEGIN { printf "%.3f", ms / 1000 }'; }

# --- the job's options: small steps, so that many run between faults
JOB_OPTS=(--steps "$STEPS" --batch 2 --seq 16 --micro 2 --rank 4 --alpha 8 --targets all
          --lr 3e-3 --min-lr 3e-4 --warmup 2 --weight-decay 0.01 --clip 0.5 --seed 11)
make_fixture
reference ref || bad "single-process reference run"

start_coordinator "$LOST_AFTER_MS"
for i in 1 2 3 4; do start_worker "$i"; done
for _ in $(seq 1 100); do
  [ "$("$SC" workers --json 2>/dev/null | grep -o '"state":"idle"' | wc -l)" -ge 4 ] && break
  sleep 0.1
done
job=$("$SC" submit --model model --data data.txt "${JOB_OPTS[@]}" --stages 2 --checkpoint-every 7)
[ -n "$job" ] || { bad "submit"; finish; exit; }

# probe T: one read of the database: MAXSTEP (highest step recorded),
# JSTATE (job state) and AFTER (recorded_ms of the first step recorded after
# T ms, empty if none yet).
probe() {
  IFS='|' read -r MAXSTEP JSTATE AFTER < <(q "select
    (select coalesce(max(step), 0) from metrics where job_id = $job),
    (select state from jobs where id = $job),
    (select min(recorded_ms) from metrics where job_id = $job and recorded_ms > $1)")
  MAXSTEP=${MAXSTEP:-0}
}

# --- the plan: N faults, each kind equally often (±1), shuffled from the seed
RANDOM=$SEED
PLAN=()
declare -A PLANNED=() DELIVERED=() NSTUCK=()
for k in "${KINDS[@]}"; do PLANNED[$k]=0 DELIVERED[$k]=0 NSTUCK[$k]=0; done
for ((i = 0; i < FAULTS; i++)); do
  PLAN+=("${KINDS[$((i % 4))]}")
  PLANNED[${KINDS[$((i % 4))]}]=$((PLANNED[${KINDS[$((i % 4))]}] + 1))
done
for ((i = FAULTS - 1; i > 0; i--)); do
  j=$(((RANDOM * 32768 + RANDOM) % (i + 1)))
  t=${PLAN[i]} PLAN[i]=${PLAN[j]} PLAN[j]=$t
done
echo "chaos: order ${PLAN[*]}"

# dump_stuck WHY: evidence for a hang: the job's last events, the logs'
# tails and the coordinator's threads.
dump_stuck() {
  local f pid
  echo "--- $1"
  echo "--- status: $("$SC" status "$job" --json --timeout-ms 2000 2>&1 | head -c 600)"
  echo "--- last events:"
  q "select id, time_ms, level, kind, message from events where job_id = $job or job_id is null
     order by id desc limit 15" | tac
  for f in cluster/*.log; do echo "--- $f"; tail -15 "$f"; done
  pid=$(cat cluster/coordinator.pid 2>/dev/null)
  if command -v gdb >/dev/null && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    echo "--- coordinator (pid $pid) threads:"
    timeout 30 gdb -p "$pid" -batch -ex 'thread apply all bt' 2>/dev/null |
      grep -E '^(Thread|#)' | grep -vE 'nptl/|sysdeps/' |
      sed -E 's/^(Thread [0-9]+) .*/\1:/; s/ \(.*\) at / at /; s/ \(.*\) from / from /' |
      cut -c1-160 | head -100
  fi
}

# pick_worker: VICTIM (a worker number), a live worker of the job's current
# placement when there is one, else any live worker.
pick_worker() {
  local names n cands=() all=()
  names=$("$SC" status "$job" --json --timeout-ms 2000 2>/dev/null |
          grep -o '"worker_name":"w[0-9]*"' | grep -o '[0-9]*')
  for n in 1 2 3 4; do
    alive "cluster/worker-$n.pid" || continue
    all+=("$n")
    grep -qx "$n" <<<"$names" && cands+=("$n")
  done
  [ ${#cands[@]} -gt 0 ] || cands=("${all[@]}")
  VICTIM=${cands[$((RANDOM % ${#cands[@]}))]}
}

# --- the driver
REC=() KIND=() CKPT=() EVID=()
STEP_MS=""
stopped=0
last_step=-1
base=0 # the highest step when the previous fault had recovered
for ((i = 0; i < FAULTS; i++)); do
  kind=${PLAN[$i]}
  gap=$((15 + RANDOM % 16))
  want=$((base + gap))
  # wait for the job to reach the fault's step (a stall is stuck too)
  now_ms; t_last=$NOW
  while :; do
    probe 0
    now_ms
    [ "$MAXSTEP" -ge "$want" ] && break
    if [ "$MAXSTEP" -ne "$last_step" ]; then last_step=$MAXSTEP; t_last=$NOW; fi
    case $JSTATE in failed | cancelled | done)
      bad "job $JSTATE at step $MAXSTEP before fault $i could be sent"; stopped=1; break ;;
    esac
    if [ $((NOW - t_last)) -ge $((STUCK_S * 1000)) ]; then
      prev=${KIND[$((i - 1))]:-none}
      [ "$i" -gt 0 ] && NSTUCK[$prev]=$((NSTUCK[$prev] + 1))
      bad "STUCK: no step for ${STUCK_S} s at step $MAXSTEP, after fault $((i - 1)) ($prev) had recovered"
      dump_stuck "stalled at step $MAXSTEP"
      stopped=1; break
    fi
    sleep 0.05
  done
  [ $stopped -eq 1 ] && break
  # a random moment: 0–300 ms, at most half a fault's worth of steps
  if [ -z "$STEP_MS" ]; then
    STEP_MS=$(q "select cast(1000 * avg(step_s) as integer) from (select step_s from metrics
                 where job_id = $job order by step desc limit 20)")
    STEP_MS=${STEP_MS:-5}; [ "$STEP_MS" -ge 1 ] || STEP_MS=1
  fi
  delay=$((RANDOM % 301))
  [ $delay -le $((gap * STEP_MS / 2)) ] || delay=$((gap * STEP_MS / 2))
  sleep "$(secs "$delay")"
  # the newest checkpoint and event before the fault
  IFS='|' read -r ck evid at < <(q "select
    (select coalesce(max(step), 0) from checkpoints where job_id = $job),
    (select coalesce(max(id), 0) from events),
    (select coalesce(max(step), 0) from metrics where job_id = $job)")
  KIND[i]=$kind CKPT[i]=${ck:-0} EVID[i]=${evid:-0}
  case $kind in
  worker_kill)
    pick_worker; victim=w$VICTIM
    pid=$(cat "cluster/worker-$VICTIM.pid")
    kill -KILL "$pid"; now_ms; t0=$NOW
    wait "$pid" 2>/dev/null
    sleep 1
    start_worker "$VICTIM"; now_ms; t1=$NOW ;;
  worker_stop)
    pick_worker; victim=w$VICTIM
    pid=$(cat "cluster/worker-$VICTIM.pid")
    STOPPED=$pid; kill -STOP "$pid"; now_ms; t0=$NOW
    sleep "$STOP_S"
    kill -CONT "$pid"; STOPPED=""; now_ms; t1=$NOW ;;
  coord_kill)
    victim=coordinator
    pid=$(cat cluster/coordinator.pid)
    kill -KILL "$pid"; now_ms; t0=$NOW
    wait "$pid" 2>/dev/null
    sleep "$(secs $((300 + RANDOM % 701)))"
    start_coordinator "$LOST_AFTER_MS"; now_ms; t1=$NOW ;;
  coord_stop)
    victim=coordinator
    pid=$(cat cluster/coordinator.pid)
    STOPPED=$pid; kill -STOP "$pid"; now_ms; t0=$NOW
    sleep "$STOP_S"
    kill -CONT "$pid"; STOPPED=""; now_ms; t1=$NOW ;;
  esac
  DELIVERED[$kind]=$((DELIVERED[$kind] + 1))
  # recovery: the first step recorded after the signal
  while :; do
    probe "$t0"
    [ -n "$AFTER" ] && break
    now_ms
    case $JSTATE in failed | cancelled | done) break ;; esac
    [ $((NOW - t0)) -ge $((STUCK_S * 1000)) ] && break
    sleep 0.05
  done
  line=$(printf "fault %3d/%d %-11s %-11s step %5d ckpt %5d" "$((i + 1))" "$FAULTS" "$kind" \
         "$victim" "${at:-0}" "${CKPT[$i]}")
  if [ -n "$AFTER" ]; then
    base=$MAXSTEP
    REC[i]=$((AFTER - t0))
    echo "$line  recovery $(secs $((AFTER - t0))) s (after $([ "${kind#*_}" = kill ] &&
         echo restart || echo SIGCONT) $(secs $((AFTER - t1))) s)"
  else
    NSTUCK[$kind]=$((NSTUCK[$kind] + 1))
    echo "$line  STUCK (job $JSTATE at step $MAXSTEP)"
    bad "STUCK: fault $((i + 1)) ($kind of $victim at step $at): no step within ${STUCK_S} s (job $JSTATE)"
    dump_stuck "fault $((i + 1)) $kind $victim"
    stopped=1
    break
  fi
done

# --- no checkpoint lost: each restore after a fault is from a checkpoint at
# least as new as the newest one before the fault
lost=0
for i in "${!KIND[@]}"; do
  x=$(q "select min(cast(replace(message, 'from the checkpoint of step ', '') as integer))
         from events where job_id = $job and kind = 'restored' and id > ${EVID[$i]}")
  if [ -n "$x" ] && [ "$x" -lt "${CKPT[$i]}" ]; then
    bad "fault $((i + 1)) (${KIND[$i]}): restored from step $x, older than the checkpoint of step ${CKPT[$i]}"
    lost=1
  fi
done
restores=$(q "select count(*) from events where job_id = $job and kind = 'restored'")
[ $lost -eq 0 ] && ok "no checkpoint lost ($restores restores, each from the newest checkpoint before its fault)"

# --- the result
if [ $stopped -eq 0 ]; then
  if timeout 300 "$SC" watch "$job" >/dev/null 2>&1; then ok "job finished after $FAULTS faults"
  else bad "job after the faults: $(state "$job")"; fi
  if "$SC" export "$job" --out chaos >/dev/null && same_adapter ref chaos; then
    ok "adapter bit-identical to the single-process run's"
  else bad "adapter differs from the single-process run's"; fi
else
  bad "driver stopped after fault ${#KIND[@]}: job not checked"
fi

# --- summary per kind
echo "kind         planned  sent  p50 s   p95 s   max s   stuck"
for k in "${KINDS[@]}"; do
  vals=$(for i in "${!KIND[@]}"; do [ "${KIND[$i]}" = "$k" ] && [ -n "${REC[$i]:-}" ] && echo "${REC[$i]}"; done |
         sort -n | awk '{ v[NR] = $1 } END {
           if (NR == 0) { printf "%7s %7s %7s", "-", "-", "-"; exit }
           p50 = int(0.50 * NR + 0.999999); p95 = int(0.95 * NR + 0.999999)
           printf "%7.3f %7.3f %7.3f", v[p50] / 1000, v[p95] / 1000, v[NR] / 1000 }')
  printf "%-12s %7d %5d %s %7d\n" "$k" "${PLANNED[$k]}" "${DELIVERED[$k]}" "$vals" "${NSTUCK[$k]}"
done
nstuck=0 short=""
for k in "${KINDS[@]}"; do
  nstuck=$((nstuck + NSTUCK[$k]))
  [ "${DELIVERED[$k]}" -ge "${PLANNED[$k]}" ] || short="$short $k:${DELIVERED[$k]}/${PLANNED[$k]}"
done
[ $nstuck -eq 0 ] && ok "no fault left the job stuck" || bad "$nstuck fault(s) left the job stuck"
[ -z "$short" ] && ok "every kind delivered as planned" || bad "kinds short of the plan:$short"

# --- no process left behind
cont_all
"$ROOT/deploy/launch.sh" stop "$WORK/cluster" >/dev/null 2>&1 || true
left=$(pgrep -f "splitchain.*${URL//./\\.}( |\$)")
if [ -z "$left" ]; then ok "no process of this run left behind"
else
  bad "processes left behind: $(ps -o pid=,stat=,args= -p "${left//$'\n'/,}")"
  for p in $left; do kill -KILL "$p" 2>/dev/null; done
fi
echo "chaos: seed $SEED, $FAULTS faults, $((SECONDS - T_START)) s"
finish
