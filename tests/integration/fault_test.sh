#!/usr/bin/env bash
# fault_test.sh — a worker killed with SIGKILL mid-job is marked lost, the
# job's calls in flight are failed at once, and the job is placed again on
# the workers that remain, resumes from its last checkpoint and finishes
# with the adapters of an uninterrupted run.
#   fault_test.sh BUILD_DIR WORK_DIR
source "$(dirname "$0")/lib.sh" "$1" "$2"
make_fixture
JOB_OPTS=("${LONG_JOB_OPTS[@]}")
reference ref
URL=$SPLITCHAIN_COORDINATOR
start_coordinator 1500
for i in 1 2 3; do
  "$BUILD/worker/splitchain-worker" --coordinator "$URL" --name "w$i" --threads 1 \
    "${WORKER_NET[@]}" --data-timeout 60 \
    >>"cluster/worker-$i.log" 2>&1 &
  echo $! > "cluster/worker-$i.pid"
done
for _ in $(seq 1 100); do
  [ "$("$SC" workers --json 2>/dev/null | grep -o '"state":"idle"' | wc -l)" -ge 3 ] && break
  sleep 0.1
done
job=$("$SC" submit --model model --data data.txt "${JOB_OPTS[@]}" --stages 2 --checkpoint-every 3)
for _ in $(seq 1 600); do s=$(step_of "$job"); [ "${s:-0}" -ge 10 ] && break; sleep 0.05; done
victim=$("$SC" status "$job" --json | sed -n 's/.*"worker_name":"\(w[0-9]\)".*/\1/p' | tail -1)
[ -n "$victim" ] || bad "no worker in the placement"
kill -KILL "$(cat "cluster/worker-${victim#w}.pid")"
t0=$(date +%s)
if "$SC" watch "$job" >/dev/null 2>&1; then ok "job finished after worker $victim was killed mid-job"
else bad "job after losing $victim: $(state "$job")"; fi
[ $(( $(date +%s) - t0 )) -lt 60 ] && ok "recovered without waiting out a timeout" \
  || bad "recovery took $(( $(date +%s) - t0 )) s"
lost=$(sqlite3 cluster/splitchain.db "select count(*) from events where kind = 'worker_lost'")
[ "${lost:-0}" -ge 1 ] && ok "worker_lost recorded" || bad "no worker_lost event"
v=$(sqlite3 cluster/splitchain.db "select max(version) from placements where job_id = $job")
[ "${v:-0}" -ge 2 ] && ok "placed again (placement version $v)" || bad "placement version '$v'"
used=$(sqlite3 cluster/splitchain.db "select count(*) from placements p join workers w on w.id = p.worker_id
  where p.job_id = $job and p.version = $v and w.name = '$victim'")
[ "$used" = 0 ] && ok "the new placement avoids $victim" || bad "the new placement still uses $victim"
st=$(sqlite3 cluster/splitchain.db "select state from workers where name = '$victim'")
[ "$st" = lost ] && ok "$victim is recorded as lost" || bad "$victim state '$st'"
"$SC" export "$job" --out resumed >/dev/null
same_adapter ref resumed && ok "adapters equal an uninterrupted run's" \
  || bad "adapters differ from an uninterrupted run's"
finish
