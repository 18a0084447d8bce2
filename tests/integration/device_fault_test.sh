#!/usr/bin/env bash
# device_fault_test.sh — a CUDA worker's device fails mid-job (a launch
# failure injected into the emulated device of tests/cuda_emu, which then
# sticks as it does on a GPU): the Step reports it to the coordinator by
# name, the worker stops with exit status 3 instead of taking more work, and
# the job resumes from its last checkpoint on a replacement worker and
# trains to the loss of an uninterrupted run.
#   device_fault_test.sh BUILD_DIR WORK_DIR
source "$(dirname "$0")/lib.sh" "$1" "$2"
EMU_WORKER=$BUILD/tests/cuda_emu/splitchain-worker-emu
make_fixture
reference ref
URL=$SPLITCHAIN_COORDINATOR
start_coordinator 1500
"$BUILD/worker/splitchain-worker" --coordinator "$URL" --name cpu --threads 1 \
  "${WORKER_NET[@]}" >>cluster/worker-cpu.log 2>&1 &
echo $! > cluster/worker-cpu.pid
# start_cuda NAME [VAR=VALUE...]: a worker on the emulated cuda:0
start_cuda() {
  local name=$1
  shift
  env "$@" OMP_NUM_THREADS=1 "$EMU_WORKER" --coordinator "$URL" --name "$name" \
    --device cuda:0 --threads 1 "${WORKER_NET[@]}" \
    >>"cluster/worker-$name.log" 2>&1 &
  CUDA_PID=$!
  echo $CUDA_PID > "cluster/worker-$name.pid"
}
idle_workers() { "$SC" workers --json 2>/dev/null | grep -o '"state":"idle"' | wc -l; }

# The 20th launch of the attention backward's dq kernel fails: mid-job.
start_cuda gpu-bad SC_EMU_FAIL=flash_dq:20
bad_pid=$CUDA_PID
for _ in $(seq 1 100); do [ "$(idle_workers)" -ge 2 ] && break; sleep 0.1; done
job=$("$SC" submit --model model --data data.txt "${JOB_OPTS[@]}" --stages 2 \
      --checkpoint-every 2 --name device-fault)

for _ in $(seq 1 600); do kill -0 "$bad_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$bad_pid" 2>/dev/null; then
  bad "the failing CUDA worker is still running after 60 s"
  finish
  exit 1
fi
wait "$bad_pid"
rc=$?
[ "$rc" = 3 ] && ok "the failed worker stopped with exit status 3" || bad "exit status $rc, want 3"
grep -q "device cuda:0 failed and cannot recover" cluster/worker-gpu-bad.log &&
  ok "the worker logged why it stopped" || bad "no device-failure line in worker-gpu-bad.log"
for _ in $(seq 1 50); do
  why=$(sqlite3 cluster/splitchain.db "select message from events where job_id = $job and
    kind = 'job_interrupted' and message like '%unspecified launch failure%' limit 1")
  [ -n "$why" ] && break
  sleep 0.1
done
[ -n "$why" ] && ok "the coordinator recorded the GPU error: ${why:0:160}" ||
  bad "no job_interrupted event with the launch failure: $(sqlite3 cluster/splitchain.db \
  "select kind || ': ' || message from events order by id")"

early=$(sqlite3 cluster/splitchain.db "select count(*) from events where kind = 'worker_lost'
  and id < (select min(id) from events where kind = 'job_interrupted')")
[ "$early" = 0 ] && ok "the run ended on the error itself, not on missed heartbeats" ||
  bad "the job was interrupted only after a worker was declared lost"

start_cuda gpu-good
if "$SC" watch "$job" >/dev/null 2>&1; then ok "job finished on the replacement worker"
else bad "job $job ended $(state "$job")"; fi
v=$(sqlite3 cluster/splitchain.db "select max(version) from placements where job_id = $job")
[ "${v:-0}" -ge 2 ] && ok "placed again (placement version $v)" || bad "placement version '$v'"
"$SC" export "$job" --out recovered >/dev/null || bad "export"
close_loss "as an uninterrupted run" "$(loss_of ref)" "$(loss_of recovered)"
finish
