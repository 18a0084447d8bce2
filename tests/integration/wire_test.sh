#!/usr/bin/env bash
# wire_test.sh — compressed activations and gradients between stages:
#   - a 3-worker chain with --wire bf16 / int8 / int4 (stochastic rounding,
#     error feedback on the gradients) trains adapters bit-identical to
#     `finetune` with the same encoding at the same cuts, and its data plane
#     sent about 1/2, 1/4, 1/8 of the fp32 chain's bytes;
#   - quality: 200 steps on a small Llama-family model, final eval loss
#     within 1% of fp32 for bf16 and int8, within 3% for int4.
#   wire_test.sh BUILD_DIR WORK_DIR
source "$(dirname "$0")/lib.sh" "$1" "$2"
make_fixture
"$ROOT/deploy/launch.sh" start cluster 3 >/dev/null || { bad "cluster start"; finish; exit 1; }

# bytes JOB: data-plane bytes all stages sent over the job.
bytes() {
  sqlite3 cluster/splitchain.db "select sum(value) from metrics m, json_each(m.bytes_per_hop)
    where m.job_id = $1"
}

declare -A sent
for w in fp32 bf16 int8 int4; do
  job=$("$SC" submit --model model --data data.txt "${JOB_OPTS[@]}" --stages 3 --wire "$w" \
        --checkpoint-every 6 --name "wire-$w")
  if ! "$SC" watch "$job" >/dev/null; then bad "$w: job $job ended $(state "$job")"; continue; fi
  sent[$w]=$(bytes "$job")
  c=$(cuts "$job")
  "$SC" export "$job" --out "chain-$w" >/dev/null
  "$SC" finetune --model model --data data.txt "${JOB_OPTS[@]}" --wire "$w" --cuts "$c" \
    --threads 1 --quiet --out "one-$w" || bad "$w: finetune --cuts $c"
  if same_adapter "one-$w" "chain-$w"; then
    ok "$w: a 3-worker chain (cuts $c) = one process with the same cuts, bit for bit"
  else bad "$w: chain and one process differ (cuts $c)"; fi
done
# The payload shrinks with the encoding (headers and scales aside).
python3 - "${sent[fp32]}" "${sent[bf16]}" "${sent[int8]}" "${sent[int4]}" <<'PY' && ok "bytes sent: $(echo ${sent[fp32]} ${sent[bf16]} ${sent[int8]} ${sent[int4]}) (fp32 bf16 int8 int4)" || bad "bytes sent: ${sent[*]}"
import sys
f, b, i8, i4 = map(float, sys.argv[1:])
assert 0.45 < b / f < 0.55 and 0.2 < i8 / f < 0.3 and 0.1 < i4 / f < 0.18, (b / f, i8 / f, i4 / f)
PY
if same_adapter one-fp32 one-int8; then bad "int8 trained the very same adapter as fp32"; fi

# Quality: 200 steps, eval loss against fp32's.
"$SC" make-model --out lq --preset llama-tiny --layers 4 --heads 4 --kv-heads 2 --embd 64 \
  --inner 128 --vocab 300 --positions 64 --seed 3 >/dev/null || bad "make-model"
Q=(--steps 200 --batch 4 --seq 32 --micro 2 --rank 8 --alpha 16 --lr 3e-3 --min-lr 3e-4
   --warmup 10 --seed 2 --eval-split 0.05 --stages 3 --threads 1 --quiet)
declare -A ev
for w in fp32 bf16 int8 int4; do
  "$SC" finetune --model lq --data data.txt "${Q[@]}" --wire "$w" --metrics "q-$w.jsonl" ||
    bad "quality run $w"
  ev[$w]=$(sed -n 's/.*"eval_loss":\([^,]*\),.*/\1/p' "q-$w.jsonl" | tail -1)
done
python3 - "${ev[fp32]}" "${ev[bf16]}" "${ev[int8]}" "${ev[int4]}" <<'PY' &&
import sys
f, b, i8, i4 = map(float, sys.argv[1:])
print("eval loss after 200 steps: fp32 %.4f, bf16 %.4f (%+.2f%%), int8 %.4f (%+.2f%%), int4 %.4f (%+.2f%%)"
      % (f, b, 100 * (b / f - 1), i8, 100 * (i8 / f - 1), i4, 100 * (i4 / f - 1)))
assert abs(b / f - 1) <= 0.01 and abs(i8 / f - 1) <= 0.01 and abs(i4 / f - 1) <= 0.03
PY
  ok "eval loss within 1% (bf16, int8) and 3% (int4) of fp32" || bad "eval loss: ${ev[*]}"
finish
