#!/usr/bin/env bash
# owner_fault_test.sh — a data owner's job survives what a chain survives:
#   - a middle worker killed mid-job: the job is placed again on the
#     workers that remain (the owner kept), resumes from its checkpoint and
#     ends with the adapters of an uninterrupted run;
#   - the owner killed mid-job: its data lives nowhere else, so the job
#     waits (queued, never placed without it) until the owner is back, then
#     resumes from the checkpoint — the owner's LoRA and optimizer state
#     included — and ends with the same adapters;
#   - a registered model (every worker with a cache): the owner fetches its
#     segments and takes the configuration from the registry;
#   - one of two owners killed mid-job: the same, and the job still equals
#     `finetune` with both owners' files.
#   owner_fault_test.sh BUILD_DIR WORK_DIR
source "$(dirname "$0")/lib.sh" "$1" "$2"
make_fixture
JOB_OPTS=("${LONG_JOB_OPTS[@]}")
mkdir -p home
mv data.txt home/data.txt
"$SC" finetune --model model --data home/data.txt "${JOB_OPTS[@]}" --threads 1 --quiet \
  --out ref || bad "single-process reference"
URL=$SPLITCHAIN_COORDINATOR
start_coordinator 1500
start_worker() { # NAME [FLAGS...]
  local n=$1
  shift
  OMP_NUM_THREADS=1 "$BUILD/worker/splitchain-worker" --coordinator "$URL" --name "$n" \
    --threads 1 "${WORKER_NET[@]}" --data-timeout 60 \
    --cache "cluster/cache-$n" "$@" \
    >>"cluster/$n.log" 2>&1 &
  echo $! > "cluster/worker-$n.pid"
}
start_worker w1
start_worker w2
start_worker alice --owner-data "$WORK/home"
for _ in $(seq 1 100); do
  [ "$("$SC" workers --json 2>/dev/null | grep -o '"state":"idle"' | wc -l)" -ge 3 ] && break
  sleep 0.1
done
wait_step() { # JOB N
  for _ in $(seq 1 1200); do s=$(step_of "$1"); [ "${s:-0}" -ge "$2" ] && return 0; sleep 0.05; done
  return 1
}

# A middle worker lost.
job=$("$SC" submit --model model --owner alice --data data.txt "${JOB_OPTS[@]}" --stages 1 \
      --checkpoint-every 3 --name middle-lost)
wait_step "$job" 10 || bad "job $job never reached step 10"
victim=$(sqlite3 cluster/splitchain.db "select w.name from placements p join workers w on
         w.id = p.worker_id where p.job_id = $job and p.stage = 1 order by p.version desc limit 1")
[ "$victim" = w1 ] || [ "$victim" = w2 ] || bad "middle stage on '$victim'"
kill -KILL "$(cat "cluster/worker-$victim.pid")"
if "$SC" watch "$job" >/dev/null 2>&1; then ok "the job finished after its middle worker $victim was killed"
else bad "job after losing $victim: $(state "$job")"; fi
v=$(sqlite3 cluster/splitchain.db "select max(version) from placements where job_id = $job")
owner=$(sqlite3 cluster/splitchain.db "select w.name from placements p join workers w on
        w.id = p.worker_id where p.job_id = $job and p.version = $v and p.stage = 0")
[ "${v:-0}" -ge 2 ] && [ "$owner" = alice ] && ok "placed again (version $v), the owner kept" ||
  bad "placement version '$v', stage 0 on '$owner'"
"$SC" export "$job" --out after-middle >/dev/null
same_adapter ref after-middle && ok "adapters equal an uninterrupted run's" ||
  bad "adapters differ after the middle worker was lost"
start_worker "$victim"

# The owner lost: the job waits for it, then resumes.
job=$("$SC" submit --model model --owner alice --data data.txt "${JOB_OPTS[@]}" --stages 1 \
      --checkpoint-every 3 --name owner-lost)
wait_step "$job" 10 || bad "job $job never reached step 10"
kill -KILL "$(cat cluster/worker-alice.pid)"
wait_state "$job" queued 30 && ok "the owner lost: the job is queued" ||
  bad "after the owner was lost the job is $(state "$job")"
sleep 3 # the scheduler runs many times: the job must not start without its owner
[ "$(state "$job")" = queued ] && ok "no placement without the owner" ||
  bad "the job is $(state "$job") without its owner"
start_worker alice --owner-data "$WORK/home"
if "$SC" watch "$job" >/dev/null 2>&1; then ok "the job finished once the owner came back"
else bad "job after the owner came back: $(state "$job")"; fi
"$SC" export "$job" --out after-owner >/dev/null
same_adapter ref after-owner && ok "adapters equal an uninterrupted run's (the owner's state restored)" ||
  bad "adapters differ after the owner was lost"

# A registered model: the owner fetches its segments like any worker and
# takes the tokenizer and configuration from the registry.
"$SC" models add reg model >/dev/null || bad "models add"
job=$("$SC" submit --model reg --owner alice --data data.txt "${JOB_OPTS[@]}" --stages 1 \
      --checkpoint-every 50 --name registered)
if "$SC" watch "$job" >/dev/null 2>&1; then
  "$SC" export "$job" --out registered >/dev/null
  same_adapter ref registered && ok "a registered model's owner job equals one process" ||
    bad "registered model's owner job: adapters differ"
else
  bad "registered model's owner job ended $(state "$job")"
fi

# One of two owners lost.
mkdir -p home-bob
head -c 40000 "$ROOT/README.md" > home-bob/data.txt
"$SC" finetune --model model --data home/data.txt --data home-bob/data.txt "${JOB_OPTS[@]}" \
  --threads 1 --quiet --out ref-two || bad "finetune with both owners' files"
start_worker bob --owner-data "$WORK/home-bob"
for _ in $(seq 1 100); do
  [ "$("$SC" workers --json 2>/dev/null | grep -o '"state":"idle"' | wc -l)" -ge 4 ] && break
  sleep 0.1
done
job=$("$SC" submit --model model --owner alice --owner bob --data data.txt "${JOB_OPTS[@]}" \
      --stages 1 --checkpoint-every 3 --name bob-lost)
wait_step "$job" 10 || bad "job $job never reached step 10"
kill -KILL "$(cat cluster/worker-bob.pid)"
wait_state "$job" queued 30 && ok "one of two owners lost: the job is queued" ||
  bad "after bob was lost the job is $(state "$job")"
start_worker bob --owner-data "$WORK/home-bob"
if "$SC" watch "$job" >/dev/null 2>&1; then ok "the two owners' job finished once bob came back"
else bad "two owners' job after bob came back: $(state "$job")"; fi
"$SC" export "$job" --out after-bob >/dev/null
same_adapter ref-two after-bob && ok "adapters equal finetune with both owners' files" ||
  bad "adapters differ after one of two owners was lost"
finish
