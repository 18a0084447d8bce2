#!/usr/bin/env bash
# memplan_test.sh — memory-aware placement with real workers: every stage of
# a placement records the planner's predicted memory and the peak its
# worker measured (resident memory the stage added), within 15% of each
# other on a model of the gpt2 preset's width (3 of its 12 layers); workers
# report what they keep back (--memory-reserve); a job that cannot fit
# their memory is refused at submit with what each stage needs, and no job
# is created.
#   memplan_test.sh BUILD_DIR WORK_DIR
source "$(dirname "$0")/lib.sh" "$1" "$2"
q() { sqlite3 cluster/splitchain.db "$1"; }
"$SC" make-model --out wide --preset gpt2 --layers 3 --positions 128 --seed 3 >/dev/null \
  || { bad "make-model"; finish; exit 1; }
make_fixture
OPTS=(--steps 4 --batch 4 --seq 128 --micro 2 --rank 8 --alpha 16 --targets all --seed 5)

"$ROOT/deploy/launch.sh" start cluster 3 >/dev/null || { bad "cluster start"; finish; exit 1; }
job=$("$SC" submit --model wide --data data.txt "${OPTS[@]}" --stages 3 --name mem)
if "$SC" watch "$job" >/dev/null; then
  n=$(q "select count(*) from placements where job_id = $job and predicted_mem_bytes > 0
         and peak_mem_bytes > 0")
  [ "$n" = 3 ] && ok "every stage recorded its predicted and measured peak memory" \
    || bad "stages with both figures: $n"
  while IFS='|' read -r s pred peak; do
    r=$(awk -v a="$peak" -v b="$pred" 'BEGIN { printf "%.3f", a / b }')
    echo "stage $s: predicted $pred bytes, peak $peak bytes, peak / predicted $r"
    awk -v r="$r" 'BEGIN { exit !(r >= 0.85 && r <= 1.15) }' \
      && ok "stage $s: peak within 15% of the prediction ($r)" \
      || bad "stage $s: peak / predicted $r (predicted $pred, peak $peak)"
  done < <(q "select stage, predicted_mem_bytes, peak_mem_bytes from placements
              where job_id = $job order by stage")
  q "select reason from placements where job_id = $job and stage = 0" | grep -q "; memory stage 0" \
    && ok "the placement's reason gives each stage's memory" || bad "reason: no memory"
else
  bad "job $job ended $(state "$job")"
fi
"$SC" workers --json | grep -q '"memory_reserve_bytes":' && ok "workers --json: memory_reserve_bytes" \
  || bad "workers --json: $("$SC" workers --json)"

# The planner overridden: the cuts and the workers, in chain order.
job=$("$SC" submit --model wide --data data.txt "${OPTS[@]}" --split 0-0,1-2 \
      --workers worker-3,worker-1 --name pinned)
if "$SC" watch "$job" >/dev/null; then
  got=$(q "select group_concat(w.name || ':' || p.first_layer || '-' || p.last_layer, ' ')
           from placements p join workers w on w.id = p.worker_id
           where p.job_id = $job order by p.stage")
  [ "$got" = "worker-3:0-1 worker-1:1-3" ] && ok "--split 0-0,1-2 --workers worker-3,worker-1: $got" \
    || bad "pinned placement: $got"
  q "select reason from placements where job_id = $job and stage = 0" |
    grep -q "the given split (--split).*the order given (--workers)" \
    && ok "the reason says the split and the order were given" \
    || bad "pinned reason: $(q "select reason from placements where job_id = $job and stage = 0")"
else
  bad "pinned job $job ended $(state "$job")"
fi
expect_refused() { # NAME WANT_TEXT ARGS...: submit fails, saying WANT_TEXT
  local name=$1 want=$2
  shift 2
  if "$SC" submit --model wide --data data.txt "${OPTS[@]}" "$@" > out.txt 2> err.txt; then
    bad "$name: accepted"
  else
    grep -q -- "$want" err.txt && ok "$name: refused ($(head -c 160 err.txt))" \
      || bad "$name: $(cat err.txt)"
  fi
}
expect_refused "--split with a gap" "must follow each other" --split 0-0,2-2
expect_refused "--split short of the model" "gives 2 stages over layers 0-1" --split 0-0,1-1
expect_refused "--split and --stages disagree" "but --split gives 2" --stages 3 --split 0-0,1-2
expect_refused "--workers unknown" "no worker named 'nobody'" --workers nobody,worker-1
expect_refused "--workers twice" "names 'worker-1' twice" --workers worker-1,worker-1
"$ROOT/deploy/launch.sh" stop cluster >/dev/null

# Workers that keep all but a sliver back: refused at submit, nothing queued.
SC_WORKER_ARGS="--memory-reserve 99.9%" "$ROOT/deploy/launch.sh" start cluster 3 >/dev/null \
  || { bad "cluster start"; finish; exit 1; }
before=$(q "select count(*) from jobs")
if "$SC" submit --model wide --data data.txt "${OPTS[@]}" --stages 3 --name nofit > out.txt 2> err.txt; then
  bad "a job that cannot fit was accepted: $(cat out.txt)"
else
  grep -q "does not fit the memory of its 3 workers" err.txt &&
    grep -q "stage 0 (layers 0-0) needs [0-9.]* GiB, worker [0-9]* has [0-9.]* GiB" err.txt \
    && ok "refused at submit with each stage's need: $(head -c 300 err.txt)" \
    || bad "refusal message: $(cat err.txt)"
fi
[ "$(q "select count(*) from jobs")" = "$before" ] && ok "no job created" || bad "a job was created"
n=$(q "select count(*) from workers where memory_reserve_bytes > 0.99 * memory_bytes")
[ "$n" -ge 3 ] && ok "workers table: memory_reserve_bytes" || bad "workers with the reserve: $n"
# A bad reserve is a usage error.
"$BUILD/worker/splitchain-worker" --coordinator "$SPLITCHAIN_COORDINATOR" --memory-reserve 12X \
  > /dev/null 2> bad.txt; rc=$?
[ "$rc" = 2 ] && grep -q "is not a size" bad.txt && ok "--memory-reserve 12X: usage error" \
  || bad "--memory-reserve 12X: rc $rc, $(cat bad.txt)"
"$BUILD/worker/splitchain-worker" --coordinator "$SPLITCHAIN_COORDINATOR" --memory-reserve 150% \
  > /dev/null 2> bad.txt; rc=$?
[ "$rc" = 2 ] && grep -q "not a share" bad.txt && ok "--memory-reserve 150%: usage error" \
  || bad "--memory-reserve 150%: rc $rc, $(cat bad.txt)"
finish
