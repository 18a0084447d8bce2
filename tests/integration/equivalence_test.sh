#!/usr/bin/env bash
# equivalence_test.sh — chains of 1, 2 and 4 worker processes over tcp
# loopback, under 1F1B and GPipe, train adapters bit-identical to the
# single-process engine; the exported adapter loads back with the same loss.
#   equivalence_test.sh BUILD_DIR WORK_DIR
source "$(dirname "$0")/lib.sh" "$1" "$2"
make_fixture
reference ref
"$ROOT/deploy/launch.sh" start cluster 4 >/dev/null || { bad "cluster start"; finish; exit 1; }

for case in "1 1f1b" "2 1f1b" "4 1f1b" "2 gpipe" "4 gpipe"; do
  set -- $case
  job=$("$SC" submit --model model --data data.txt "${JOB_OPTS[@]}" --stages "$1" \
        --schedule "$2" --checkpoint-every 4 --name "eq-$1-$2")
  if ! "$SC" watch "$job" >/dev/null; then
    bad "$1 stage(s) $2: job $job ended $(state "$job")"; continue
  fi
  "$SC" export "$job" --out "out-$1-$2" >/dev/null
  if same_adapter ref "out-$1-$2"; then ok "$1 stage(s) $2: bit-identical to one process"
  else bad "$1 stage(s) $2: adapters differ from the single-process run"; fi
done

# The exported adapter loads back and gives the same loss as the reference.
l1=$("$REFTOOL" grad --model model --data data.txt --batch 2 --seq 16 --micro 4 --step 6 \
      --seed 11 --adapter ref --out g1.safetensors)
l2=$("$REFTOOL" grad --model model --data data.txt --batch 2 --seq 16 --micro 4 --step 6 \
      --seed 11 --adapter out-4-1f1b --out g2.safetensors --stages 2)
if [ -n "$l1" ] && [ "$l1" = "$l2" ]; then ok "exported adapter reloads with the same $l1"
else bad "exported adapter loss '$l2' vs '$l1'"; fi

# The placement was recorded, with its reason, and the database reads with sqlite3.
n=$(sqlite3 cluster/splitchain.db "select count(*) from placements where job_id = 3")
[ "$n" = 4 ] && ok "placement of the 4-stage job recorded" || bad "placements rows: $n"

# Held-out evaluation through a 3-stage chain: prompt/completion JSONL (loss
# masked to the completions), unpacked, 10% of the examples held out, an
# eval every 2 steps and M = 3 (the last eval pass carries padding
# micro-batches): the eval losses in the metrics table are the ones
# `finetune` prints, bit for bit, and the adapters agree.
for i in $(seq 1 120); do
  printf '{"prompt":"Question %d: what follows %d?","completion":" %d, of course."}\n' \
    "$i" "$((i * 7))" "$((i * 7 + 1))"
done > qa.jsonl
EVAL_OPTS=(--steps 5 --batch 2 --seq 16 --micro 3 --rank 4 --alpha 8 --lr 3e-3 --warmup 1
           --seed 5 --eval-split 0.1 --eval-every 2 --no-pack)
"$SC" finetune --model model --data qa.jsonl "${EVAL_OPTS[@]}" --threads 1 --quiet \
  --metrics ref-eval.jsonl --out ref-eval || bad "single-process run with eval"
want=$(sed -n 's/.*"step":\([0-9]*\),"eval_loss":\([^,]*\),.*/\1 \2/p' ref-eval.jsonl |
       awk '{print $1 + 1, $2}')
job=$("$SC" submit --model model --data qa.jsonl "${EVAL_OPTS[@]}" --stages 3 --name eq-eval)
if "$SC" watch "$job" >/dev/null; then
  same=$(same_evals "$job" "$want")
  n=$(sqlite3 cluster/splitchain.db "select count(*) from metrics where job_id = $job
      and eval_loss is not null")
  if [ "$(echo "$want" | wc -l)" = 3 ] && [ "$same" = 3 ] && [ "$n" = 3 ]; then
    ok "eval losses of a 3-stage chain = one process, bit for bit (steps 2, 4, 5)"
  else bad "eval losses: $same of 3 equal, $n recorded; one process: $want"; fi
  "$SC" export "$job" --out out-eval >/dev/null
  same_adapter ref-eval out-eval && ok "eval job: adapters bit-identical" ||
    bad "eval job: adapters differ"
  ev=$("$SC" status "$job" --json | sed -n 's/.*"eval_step":\([0-9]*\).*/\1/p')
  [ "$ev" = 5 ] && ok "status reports the last evaluation (step $ev)" || bad "eval_step '$ev'"
  ppl=$(sqlite3 cluster/splitchain.db "select count(*) from v_loss_curve where job_id = $job
        and abs(eval_perplexity - exp(eval_loss)) < 1e-9 * eval_perplexity")
  [ "$ppl" = 3 ] && ok "v_loss_curve shows eval perplexity" || bad "v_loss_curve rows: $ppl"
else
  bad "eval job $job ended $(state "$job")"
fi

# A Llama-family model (Mistral: grouped-query attention, a sliding window
# shorter than the sequence, untied head) across 3 workers, by name-selected
# targets: bit-identical to one process.
"$SC" make-model --out mistral --type mistral --layers 4 --heads 4 --kv-heads 2 --embd 64 \
  --inner 96 --vocab 300 --positions 64 --sliding-window 8 --untied --random-norms --seed 5 \
  >/dev/null || bad "make-model mistral"
LLAMA_OPTS=("${JOB_OPTS[@]/all/q_proj,v_proj,o_proj,down_proj}")
"$SC" finetune --model mistral --data data.txt "${LLAMA_OPTS[@]}" --threads 1 --quiet \
  --out ref-mistral || bad "single-process mistral run"
job=$("$SC" submit --model mistral --data data.txt "${LLAMA_OPTS[@]}" --stages 3 \
      --checkpoint-every 4 --name eq-mistral)
if "$SC" watch "$job" >/dev/null; then
  "$SC" export "$job" --out out-mistral >/dev/null
  if same_adapter ref-mistral out-mistral; then ok "mistral, 3 stages: bit-identical to one process"
  else bad "mistral, 3 stages: adapters differ from the single-process run"; fi
else
  bad "mistral job $job ended $(state "$job")"
fi
finish
