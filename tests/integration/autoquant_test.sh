#!/usr/bin/env bash
# autoquant_test.sh — per-layer bit-width chosen by the memory planner
# (issue 18): workers whose memory (--memory-reserve) cannot hold the
# chain at fp32 get a placement with some layers' frozen base lowered —
# every layer to int8 before any to nf4, the smallest measured error
# first — recorded with why in placements and shown by status (text and
# --json); the job trains an adapter bit-identical to `finetune
# --layer-quant <the chosen SPEC>` at the same cuts; the layers' errors are
# measured once per model (layer_errors) and again for a changed model;
# --no-auto-quant refuses as before, and so does a chain too small even at
# nf4, with the numbers. Bad --layer-quant input is a usage error.
#   autoquant_test.sh BUILD_DIR WORK_DIR
source "$(dirname "$0")/lib.sh" "$1" "$2"
q() { sqlite3 cluster/splitchain.db "$1"; }
# gpt2's width (projections 28 MB a layer at fp32), a small vocabulary:
# the layers are most of a stage.
"$SC" make-model --out wide --preset gpt2 --layers 6 --vocab 512 --positions 64 --seed 3 \
  >/dev/null || { bad "make-model"; finish; exit 1; }
make_fixture
OPTS=(--steps 3 --batch 2 --seq 32 --micro 2 --rank 4 --alpha 8 --targets all --lr 3e-3
      --seed 5)
SPLIT=(--split 0-1,2-3,4-5)

# What each stage needs at fp32 (no limit), and the machine's memory.
"$ROOT/deploy/launch.sh" start cluster 3 >/dev/null || { bad "cluster start"; finish; exit 1; }
job=$("$SC" submit --model wide --data data.txt "${OPTS[@]}" "${SPLIT[@]}" --name fp32)
"$SC" watch "$job" >/dev/null || bad "fp32 job $job ended $(state "$job")"
"$SC" export "$job" --out chain-fp32 >/dev/null || bad "export fp32"
need=$(q "select max(predicted_mem_bytes) from placements where job_id = $job")
total=$(q "select min(memory_bytes) from workers")
[ "$(q "select count(*) from placements where job_id = $job and layer_quant = ''")" = 3 ] &&
  ok "with room, nothing is lowered (largest stage $need bytes)" || bad "fp32 job lowered layers"
[ "$(q "select count(*) from layer_errors")" = 0 ] && ok "nothing measured while the job fits" ||
  bad "layer errors measured for a job that fits"
"$ROOT/deploy/launch.sh" stop cluster >/dev/null

# start_short MB: a cluster whose workers may each use MB less than the
# largest fp32 stage needs (the three CPU workers share this machine's
# memory: all but 3 x that kept back).
start_short() {
  "$ROOT/deploy/launch.sh" stop cluster >/dev/null 2>&1
  SC_WORKER_ARGS="--memory-reserve $((total - 3 * (need - $1 * 1000000)))" \
    "$ROOT/deploy/launch.sh" start cluster 3 >/dev/null
}

# lowered TAG: a job on the short cluster, placed with layers lowered;
# checks the order, the reasons, status, and the bits against finetune
# --layer-quant with the chosen SPEC. Sets $job and $spec.
lowered() {
  local tag=$1 reason
  job=$("$SC" submit --model wide --data data.txt "${OPTS[@]}" "${SPLIT[@]}" --name "$tag" \
        2> err.txt)
  if [ -z "$job" ]; then bad "$tag: refused though lowering fits: $(cat err.txt)"; return 1; fi
  "$SC" watch "$job" >/dev/null || bad "$tag: job $job ended $(state "$job")"
  spec=$("$SC" status "$job" --json | python3 -c 'import json,sys
p = sorted(json.load(sys.stdin)["placement"], key=lambda s: s["stage"])
print(",".join(s["layer_quant"] for s in p if s["layer_quant"]))')
  [ -n "$spec" ] && ok "$tag: placed with layers lowered: $spec" || bad "$tag: no layer lowered"
  # All layers reach int8 before any reaches nf4, the smallest errors
  # first: each lowered set is a prefix of the order by its error.
  python3 - "$spec" "$(q "select layer || ':' || int8_error || ':' || nf4_error
                       from layer_errors where model_key = (select model_key from
                       layer_errors order by measured_ms desc limit 1) order by layer")" <<'PY' &&
import sys
fmt = {}
for item in sys.argv[1].split(","):
    rng, f = item.split(":")
    a, _, b = rng.partition("-")
    for l in range(int(a), int(b or a) + 1):
        fmt[l] = f
e = {int(l): (float(i8), float(n4)) for l, i8, n4 in
     (x.split(":") for x in sys.argv[2].split())}
i8 = sorted(e, key=lambda l: (e[l][0], l))
n4 = sorted(e, key=lambda l: (e[l][1], l))
low = [l for l in i8 if l in fmt]
assert low == i8[:len(low)], ("int8 set not a prefix", low, i8)
nf = [l for l in n4 if fmt.get(l) == "nf4"]
assert nf == n4[:len(nf)], ("nf4 set not a prefix", nf, n4)
assert not nf or len(fmt) == len(e), "a layer went to nf4 while another was still fp32"
PY
    ok "$tag: lowered in the order of the measured errors" || bad "$tag: lowering order ($spec)"
  reason=$(q "select quant_reason from placements where job_id = $job and quant_reason <> ''
             order by stage limit 1")
  grep -q "(error [0-9.e-]*)" <<< "$reason" && grep -q "MB saved" <<< "$reason" &&
    ok "$tag: placements say why: $reason" || bad "$tag: quant_reason '$reason'"
  q "select reason from placements where job_id = $job and stage = 0" |
    grep -q "nothing fit at the job's base (fp32): [0-9]* of 6 layers lowered" &&
    ok "$tag: the placement's reason says the base was lowered" ||
    bad "$tag: reason $(q "select reason from placements where job_id = $job and stage = 0")"
  "$SC" status "$job" | grep -q "base lowered: " && ok "$tag: status shows the lowered layers" ||
    bad "$tag: status $("$SC" status "$job")"
  "$SC" export "$job" --out "chain-$tag" >/dev/null || bad "$tag: export"
  "$SC" finetune --model wide --data data.txt "${OPTS[@]}" --cuts 2,4 --layer-quant "$spec" \
    --threads 1 --quiet --out "one-$tag" || bad "$tag: finetune --layer-quant $spec"
  same_adapter "one-$tag" "chain-$tag" &&
    ok "$tag: the chain = finetune --layer-quant $spec --cuts 2,4, bit for bit" ||
    bad "$tag: the chain and finetune --layer-quant $spec differ"
  ! same_adapter chain-fp32 "chain-$tag" || bad "$tag: trained the fp32 chain's bits"
}

# 12 MB short: one layer of each stage to int8 is enough (about 20 MB
# each), so only some layers are lowered.
start_short 12 || { bad "cluster start"; finish; exit 1; }
before=$(q "select count(*) from jobs")
if "$SC" submit --model wide --data data.txt "${OPTS[@]}" "${SPLIT[@]}" --no-auto-quant \
     > out.txt 2> err.txt; then
  bad "--no-auto-quant: a job that does not fit was accepted"
else
  grep -q "does not fit the memory of its 3 workers" err.txt && ! grep -q "nf4" err.txt &&
    ok "--no-auto-quant: refused as before ($(head -c 200 err.txt))" ||
    bad "--no-auto-quant: $(cat err.txt)"
fi
[ "$(q "select count(*) from jobs")" = "$before" ] && ok "no job created" || bad "a job was created"
lowered int8
[ "$(q "select count(*) from layer_errors")" = 6 ] && ok "six layers' errors measured" ||
  bad "layer_errors rows: $(q "select count(*) from layer_errors")"
q "select 'layer ' || layer || ': int8 ' || int8_error || ', nf4 ' || nf4_error
   from layer_errors order by layer"

# Measured once per model: a second job reads them back; a changed model
# is measured again.
at=$(q "select max(measured_ms) from layer_errors")
job2=$("$SC" submit --model wide --data data.txt "${OPTS[@]}" "${SPLIT[@]}" --steps 1 --name again)
"$SC" watch "$job2" >/dev/null || bad "second job $job2 ended $(state "$job2")"
[ "$(q "select count(*) from layer_errors")" = 6 ] && [ "$(q "select max(measured_ms) from layer_errors")" = "$at" ] &&
  q "select reason from placements where job_id = $job2 and stage = 0" | grep -q "measured before" &&
  ok "the second job on the model used the recorded errors" || bad "errors measured again"
"$SC" make-model --out wide --preset gpt2 --layers 6 --vocab 512 --positions 64 --seed 4 \
  >/dev/null || bad "make-model again"
job3=$("$SC" submit --model wide --data data.txt "${OPTS[@]}" "${SPLIT[@]}" --steps 1 --name changed)
"$SC" watch "$job3" >/dev/null || bad "job on the changed model $job3 ended $(state "$job3")"
[ "$(q "select count(distinct model_key) from layer_errors")" = 2 ] &&
  ok "a changed model is measured again" || bad "model keys: $(q "select count(distinct model_key) from layer_errors")"

# 41 MB short: both layers of a stage to int8 (about 39 MB) are not
# enough, one more to nf4 (3.3 MB) is: every layer goes to int8, then the
# least sensitive to nf4 until each stage has one. (The model changed
# above: its errors were measured again.)
start_short 41 || { bad "cluster start"; finish; exit 1; }
lowered nf4
grep -q "nf4" <<< "$spec" || bad "nf4: no layer went to nf4 ($spec)"
"$ROOT/deploy/launch.sh" stop cluster >/dev/null

# Too little even with every layer at nf4: refused with the numbers.
SC_WORKER_ARGS="--memory-reserve 99.9%" "$ROOT/deploy/launch.sh" start cluster 3 >/dev/null ||
  { bad "cluster start"; finish; exit 1; }
if "$SC" submit --model wide --data data.txt "${OPTS[@]}" --stages 3 > out.txt 2> err.txt; then
  bad "a job that cannot fit even at nf4 was accepted"
else
  grep -q "nor with every layer's base lowered to nf4" err.txt &&
    grep -q "stage 0 (layers [0-9-]*) needs [0-9.]* GiB" err.txt &&
    ok "refused even at nf4: $(head -c 400 err.txt)" || bad "nf4 refusal: $(cat err.txt)"
fi

# Bad --layer-quant: a usage error naming the problem.
for bad_spec in "0-6:int8" "2:int4" "1:int8,1:nf4" "3-1:nf4" "x" ""; do
  "$SC" finetune --model wide --data data.txt "${OPTS[@]}" --layer-quant "$bad_spec" --quiet \
    > out.txt 2> err.txt; rc=$?
  [ "$rc" = 2 ] && grep -q -- "--layer-quant" err.txt &&
    ok "--layer-quant '$bad_spec': usage error ($(head -1 err.txt | head -c 160))" ||
    bad "--layer-quant '$bad_spec': rc $rc, $(cat err.txt)"
done
finish
