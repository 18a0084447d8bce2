#!/usr/bin/env bash
# slowdisk_test.sh — the coordinator's database on a disk that stalls: every
# fsync of the coordinator's process sleeps (tests/slow_fsync.c, preloaded),
# as a loaded or failing disk does. Its workers must not be found lost, nor
# drop their placements, for want of heartbeat replies while a commit waits
# on the disk:
#  1  in a steady job, 2.5 s per fsync for 8 s: no worker lost, no placement
#     dropped, no stall;
#  2  the coordinator killed and restarted on that disk, so that placing the
#     job again, its checkpoints and the workers' new memory figures all wait
#     on fsyncs: the job is placed once and steps within seconds;
# and the adapter equals an undisturbed run's.
#   slowdisk_test.sh BUILD_DIR WORK_DIR
source "$(dirname "$0")/lib.sh" "$1" "$2"
make_fixture
JOB_OPTS=(--steps "${SLOWDISK_STEPS:-600}" --batch 2 --seq 16 --micro 2 --rank 4 --alpha 8
          --targets all --lr 3e-3 --min-lr 3e-4 --warmup 2 --seed 11)
reference ref
LOST=1500
DB=cluster/splitchain.db
SLOW=$WORK/cluster/slow-fsync-ms
echo 0 > "$SLOW"
# The stall limit is generous: a job on this disk steps at the disk's pace
# (each checkpoint waits on an fsync); what is checked is that nobody is
# found lost.
coordinator() {
  LD_PRELOAD=$BUILD/tests/libslow_fsync.so SC_SLOW_FSYNC=$SLOW start_coordinator $LOST \
    --stall-after-ms 30000
}
coordinator
for i in 1 2; do
  "$BUILD/worker/splitchain-worker" --coordinator "$SPLITCHAIN_COORDINATOR" --name "w$i" \
    --threads 1 "${WORKER_NET[@]}" --data-timeout 60 >>"cluster/worker-$i.log" 2>&1 &
  echo $! > "cluster/worker-$i.pid"
done
trap '"$ROOT/deploy/launch.sh" stop "$WORK/cluster" >/dev/null 2>&1 || true' EXIT
for _ in $(seq 1 100); do
  [ "$("$SC" workers --json 2>/dev/null | grep -o '"state":"idle"' | wc -l)" -ge 2 ] && break
  sleep 0.1
done
job=$("$SC" submit --model model --data data.txt "${JOB_OPTS[@]}" --stages 2 --checkpoint-every 3)
sql() { sqlite3 -cmd '.timeout 20000' "$DB" "$1"; }
now_ms() { date +%s%3N; }
dropped() { cat cluster/worker-*.log | grep -c "no answer from the coordinator"; }
steps_since() { sql "select count(*) from metrics where job_id = $job and recorded_ms > $1"; }
for _ in $(seq 1 600); do s=$(step_of "$job"); [ "${s:-0}" -ge 10 ] && break; sleep 0.05; done

# --- 1: a steady job on a stalling disk
d0=$(dropped)
t=$(now_ms)
echo 2500 > "$SLOW"
sleep 8
echo 0 > "$SLOW"
n=$(steps_since "$t")
[ "${n:-0}" -ge 3 ] && ok "1: $n steps in 8 s of 2.5 s fsyncs" || bad "1: $n steps in 8 s of 2.5 s fsyncs"
[ "$(dropped)" = "$d0" ] && ok "1: no worker dropped its placement" \
  || bad "1: $(( $(dropped) - d0 )) placement(s) dropped for want of heartbeat replies"
n=$(sql "select count(*) from events where kind = 'worker_lost'")
[ "$n" = 0 ] && ok "1: no worker found lost" || bad "1: $n worker(s) found lost"

# --- 2: restarted on the stalling disk
v=$(sql "select max(version) from placements where job_id = $job")
kill -KILL "$(cat cluster/coordinator.pid)"
wait "$(cat cluster/coordinator.pid)" 2>/dev/null
echo 2500 > "$SLOW"
coordinator
t=$(now_ms)
for _ in $(seq 1 300); do
  [ "$(sql "select count(*) from metrics where job_id = $job and recorded_ms > $t")" -ge 1 ] && break
  sleep 0.1
done
d=$(( $(now_ms) - t ))
sleep 8
echo 0 > "$SLOW"
[ "$(steps_since "$t")" -ge 3 ] && ok "2: steps $((d / 1000)).$(( d % 1000 / 100 )) s after the restart" \
  || bad "2: no steps after the restart"
n=$(sql "select count(*) from placements where job_id = $job and stage = 0 and version > $v")
[ "$n" = 1 ] && ok "2: placed once after the restart" || bad "2: placed $n times after the restart"
n=$(sql "select count(*) from events where kind in ('worker_lost', 'job_stalled')")
[ "$n" = 0 ] && ok "2: no worker lost, no stall" \
  || bad "2: $(sql "select group_concat(kind || ': ' || message, '; ') from events where kind in ('worker_lost', 'job_stalled')")"

if "$SC" watch "$job" >/dev/null 2>&1; then ok "job finished"; else bad "job ended $(state "$job")"; fi
"$SC" export "$job" --out out >/dev/null
same_adapter ref out && ok "adapters equal an undisturbed run's" || bad "adapters differ from an undisturbed run's"
finish
