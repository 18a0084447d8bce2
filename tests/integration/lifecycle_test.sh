#!/usr/bin/env bash
# lifecycle_test.sh — a job waits for workers and runs when they join; a job
# can be cancelled; a coordinator killed with SIGKILL mid-job and restarted
# resumes from the last checkpoint and finishes with the adapters of an
# uninterrupted run; the database reads with sqlite3 while a job runs.
#   lifecycle_test.sh BUILD_DIR WORK_DIR
source "$(dirname "$0")/lib.sh" "$1" "$2"
make_fixture
JOB_OPTS=("${LONG_JOB_OPTS[@]}")
reference ref
URL=$SPLITCHAIN_COORDINATOR
mkdir -p cluster

# --- a job submitted before any worker waits, then runs when they join
start_coordinator 3000
sleep 0.3
job=$("$SC" submit --model model --data data.txt "${JOB_OPTS[@]}" --stages 2 --checkpoint-every 3)
sleep 1.5
[ "$(state "$job")" = queued ] && ok "job waits for workers" || bad "job state $(state "$job") without workers"
for i in 1 2; do
  "$BUILD/worker/splitchain-worker" --coordinator "$URL" --name "w$i" --threads 1 \
    "${WORKER_NET[@]}" >>"cluster/worker-$i.log" 2>&1 &
  echo $! > "cluster/worker-$i.pid"
done

# --- killed mid-job with SIGKILL, restarted: resumes and finishes the same
for _ in $(seq 1 600); do s=$(step_of "$job"); [ "${s:-0}" -ge 10 ] && break; sleep 0.05; done
rows=$(sqlite3 cluster/splitchain.db "select count(*) from metrics where job_id = $job")
[ "${rows:-0}" -ge 1 ] && ok "sqlite3 reads the database while the job runs ($rows metric rows)" \
  || bad "sqlite3 read during the job: '$rows'"
kill -KILL "$(cat cluster/coordinator.pid)"
wait "$(cat cluster/coordinator.pid)" 2>/dev/null
ck=$(sqlite3 cluster/splitchain.db "select max(step) from checkpoints where job_id = $job")
start_coordinator 3000
[ "${ck:-0}" -ge 3 ] && [ "${ck:-0}" -lt 150 ] && ok "killed mid-job after the checkpoint of step $ck" \
  || bad "kill came at checkpoint '$ck', not mid-job"
if "$SC" watch "$job" >/dev/null 2>&1; then ok "resumed after SIGKILL and finished"
else bad "job after restart: $(state "$job")"; fi
resumed=$(sqlite3 cluster/splitchain.db "select count(*) from events where job_id = $job and kind = 'restored'")
[ "${resumed:-0}" -ge 1 ] && ok "restore recorded in events" || bad "no 'restored' event"
"$SC" export "$job" --out resumed >/dev/null
same_adapter ref resumed && ok "resumed job's adapters equal an uninterrupted run's" \
  || bad "resumed job's adapters differ from an uninterrupted run's"

# --- cancel a running job; its workers are free for the next job
long=$("$SC" submit --model model --data data.txt "${JOB_OPTS[@]}" --steps 100000 --stages 2)
wait_state "$long" running 30 || bad "long job never ran"
"$SC" cancel "$long" >/dev/null
wait_state "$long" cancelled 30 && ok "running job cancelled" || bad "cancel: state $(state "$long")"
next=$("$SC" submit --model model --data data.txt "${JOB_OPTS[@]}" --steps 2 --stages 2 --checkpoint-every 1)
"$SC" watch "$next" >/dev/null 2>&1 && ok "workers freed by the cancel run the next job" \
  || bad "next job: $(state "$next")"
"$SC" cancel "$next" >/dev/null 2>&1 && bad "cancelling a finished job succeeded" \
  || ok "cancelling a finished job is refused"

# --- the CLI: missing model, more stages than layers, unknown flag
"$SC" submit --model nowhere --data data.txt >/dev/null 2>err.txt; rc=$?
[ $rc -eq 1 ] && grep -q "nowhere" err.txt && ok "submit with a missing model: exit 1, named" \
  || bad "missing model: exit $rc: $(cat err.txt)"
"$SC" submit --model model --data data.txt --stages 5 >/dev/null 2>err.txt; rc=$?
[ $rc -eq 1 ] && grep -q "5 stages for a model of 4 layers" err.txt && ok "more stages than layers refused" \
  || bad "too many stages: exit $rc: $(cat err.txt)"
"$SC" submit --model model --data data.txt --frobnicate >/dev/null 2>err.txt; rc=$?
[ $rc -eq 2 ] && ok "unknown flag: exit 2" || bad "unknown flag: exit $rc"
"$SC" status 1 --coordinator tcp://127.0.0.1:1 --timeout-ms 500 >/dev/null 2>err.txt; rc=$?
[ $rc -eq 1 ] && grep -qi "coordinator" err.txt && ok "no coordinator: exit 1 with a hint" \
  || bad "no coordinator: exit $rc: $(cat err.txt)"
finish
