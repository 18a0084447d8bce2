#!/usr/bin/env bash
# share_test.sh — parameter sharing (splitchain-worker --jobs N): two jobs
# of one model on the same three workers run at once, interleaving their
# steps; each worker holds one copy of each segment's frozen weights for
# both (its base memory does not grow when the second job arrives), each
# job has its own adapters, optimizer state and activations, and each
# ends with the adapters it gets alone (one process) bit for bit. A
# generation session on those workers shares the weights too and gives one
# process's ids. Bad --jobs values are refused.
#   bash share_test.sh BUILD_DIR WORK_DIR
source "$(dirname "$0")/lib.sh" "$1" "$2"
make_fixture

# Two different jobs: another rank, targets, seed, learning rate and
# sequence length (the second's rotary-free GPT-2 model still shares).
# Long enough (a few seconds each) to be seen running side by side.
STEPS=300
A_OPTS=(--steps $STEPS --batch 4 --seq 32 --micro 4 --rank 4 --alpha 8 --targets all
        --lr 3e-3 --warmup 2 --clip 0.5 --seed 11)
B_OPTS=(--steps $STEPS --batch 4 --seq 16 --micro 2 --rank 2 --alpha 4
        --targets attn.c_attn,attn.c_proj --lr 2e-3 --warmup 1 --seed 12)
"$SC" finetune --model model --data data.txt "${A_OPTS[@]}" --threads 1 --quiet --out refA
"$SC" finetune --model model --data data.txt "${B_OPTS[@]}" --threads 1 --quiet --out refB

# Bad --jobs values: refused at once, naming the flag.
for v in 0 9 x; do
  out=$("$BUILD/worker/splitchain-worker" --coordinator tcp://127.0.0.1:1 --jobs $v 2>&1)
  rc=$?
  [ $rc -eq 2 ] && grep -q -- "--jobs expects a whole number in \[1, 8\]" <<< "$out" \
    && ok "--jobs $v refused" || bad "--jobs $v: rc $rc: $out"
done

SC_WORKER_ARGS="--jobs 2" "$ROOT/deploy/launch.sh" start cluster 3 >/dev/null
W=(--workers worker-1,worker-2,worker-3 --split 0-1,2-2,3-3)

# workers_json FIELD: per worker name, a python expression's value.
winfo() {
  "$SC" workers --json | python3 -c 'import json, sys
ws = {w["name"]: w for w in json.load(sys.stdin)}
print(" ".join(str('"$1"') for w in (ws["worker-%d" % i] for i in (1, 2, 3))))'
}
# wait_jobs N SECONDS: every worker reports memory of N jobs.
wait_jobs() {
  local i
  for i in $(seq 1 $(($2 * 5))); do
    [ "$(winfo 'len(w["jobs_memory"])')" = "$N_WANT" ] && return 0
    sleep 0.2
  done
  return 1
}

[ "$(winfo 'w["job_slots"]')" = "2 2 2" ] && ok "workers report 2 job slots" \
  || bad "job slots: $(winfo 'w["job_slots"]')"

ja=$("$SC" submit --model model --data data.txt "${A_OPTS[@]}" "${W[@]}" --checkpoint-every 50 \
     --name share-a)
N_WANT="1 1 1"
wait_jobs 1 60 && ok "job $ja: every worker reports its memory" || bad "job $ja: no memory report"
base1=$(winfo 'w["base_bytes"]')
jb=$("$SC" submit --model model --data data.txt "${B_OPTS[@]}" "${W[@]}" --checkpoint-every 50 \
     --name share-b)
N_WANT="2 2 2"
if wait_jobs 2 60; then
  ok "jobs $ja and $jb run on the same three workers at once"
  base2=$(winfo 'w["base_bytes"]')
  own=$(winfo 'min(m["bytes"] for m in w["jobs_memory"])')
  [ "$base1" = "$base2" ] && ! grep -qw 0 <<< "$base1" \
    && ok "one copy of the frozen weights per worker for both jobs (bytes $base2)" \
    || bad "base bytes with one job '$base1', with two '$base2'"
  ! grep -qw 0 <<< "$own" && ok "each job's own memory is reported (least bytes $own)" \
    || bad "job memory: $own"
  "$SC" workers | grep -q "job $jb: .* MiB of its own" \
    && ok "splitchain workers lists each job's memory" || bad "workers text: $("$SC" workers)"
  [ "$(sqlite3 cluster/splitchain.db "select count(*) from worker_job_memory")" = 6 ] \
    && [ "$(sqlite3 cluster/splitchain.db "select count(*) from workers where base_bytes > 0")" = 3 ] \
    && ok "the database holds each worker's base and job memory" \
    || bad "worker_job_memory: $(sqlite3 cluster/splitchain.db "select * from worker_job_memory")"
  # A generation session beside them shares the weights as well.
  ids() { sed -n 's/.*"ids":\[\([0-9,]*\)\].*/\1/p'; }
  GQ=(--prompt-ids 7,99,31,4,250,18 --max-new-tokens 8 --json)
  for _ in $(seq 1 300); do
    [ "$(step_of "$ja")" -ge 50 ] && break
    sleep 0.2
  done
  # generate --job takes the job's latest checkpoint: the one exported
  # before and after it, when they are the same.
  for _ in 1 2 3 4 5; do
    rm -rf mid mid2
    "$SC" export "$ja" --out mid >/dev/null
    chain=$("$SC" generate --job "$ja" "${GQ[@]}" 2>gen.err | ids)
    "$SC" export "$ja" --out mid2 >/dev/null
    same_adapter mid mid2 && break
  done
  one=$("$SC" generate --model model --adapter mid "${GQ[@]}" | ids)
  [ -n "$one" ] && [ "$one" = "$chain" ] \
    && ok "generate --job beside two training jobs: one process's ids" \
    || bad "generate --job: '$chain' vs '$one' ($(head -c 300 gen.err))"
  grep -q "weights shared" cluster/worker-*.log \
    && ok "the generation session shares the jobs' weights" \
    || bad "no generation session shared weights"
else
  bad "the second job never ran beside the first ($("$SC" status "$jb" 2>&1 | head -5))"
fi
grep -q "shared with another job" cluster/worker-1.log \
  && ok "the second job's segments share the first's weights (worker log)" \
  || bad "no shared segment in worker-1.log"

wait_state "$ja" done 300 && ok "job $ja done" || bad "job $ja: $(state "$ja")"
wait_state "$jb" done 300 && ok "job $jb done" || bad "job $jb: $(state "$jb")"
# Interleaved: each job completed steps while the other was running.
overlap=$(sqlite3 cluster/splitchain.db "select count(*) from metrics a where a.job_id = $ja and
  a.recorded_ms > (select min(recorded_ms) from metrics where job_id = $jb) and
  a.recorded_ms < (select max(recorded_ms) from metrics where job_id = $jb)")
[ "${overlap:-0}" -ge 5 ] && ok "steps interleaved: $overlap of job $ja's steps during job $jb's" \
  || bad "steps did not interleave ($overlap)"
"$SC" export "$ja" --out outA >/dev/null && "$SC" export "$jb" --out outB >/dev/null
same_adapter refA outA && ok "job $ja: adapters bit-identical to it alone (one process)" \
  || bad "job $ja: adapters differ from one process"
same_adapter refB outB && ok "job $jb: adapters bit-identical to it alone (one process)" \
  || bad "job $jb: adapters differ from one process"
# Both jobs gone: the weights are freed with the last user.
N_WANT="0 0 0"
for _ in $(seq 1 50); do
  [ "$(winfo 'w["base_bytes"]')" = "0 0 0" ] && break
  sleep 0.2
done
[ "$(winfo 'w["base_bytes"]')" = "0 0 0" ] && ok "the weights are freed when the last job leaves" \
  || bad "base bytes after both jobs: $(winfo 'w["base_bytes"]')"
finish
