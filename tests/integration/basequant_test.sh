#!/usr/bin/env bash
# basequant_test.sh — the frozen base as a job option (--base-quant int8|nf4,
# --double-quant, --precision bf16), quantized as each stage loads its layers:
#   - a 3-worker chain trains adapters bit-identical to `finetune` with the
#     same option at the same cuts: int8, nf4, nf4 + double quantization,
#     nf4 with --precision bf16 (bf16 products of the dequantized weights
#     where the CPU has them) and bf16 on GPT-2, nf4 + double quantization
#     and int8 with --precision bf16 on a Llama-family model;
#     `status --json`, the jobs table and v_job_progress show the option;
#   - a model directory quantized on disk (`splitchain quantize`) runs as a
#     chain, is recorded with its own format and trains the bits the float
#     model quantized at load trains; a --base-quant that conflicts with it
#     is refused at submit, naming both;
#   - quality: 200 steps on a small Llama-family model, final eval loss
#     within 2% of fp32's for int8, 5% for nf4 (with and without double
#     quantization, and nf4 with --precision bf16), 1% for bf16.
#   basequant_test.sh BUILD_DIR WORK_DIR
source "$(dirname "$0")/lib.sh" "$1" "$2"
make_fixture
reference ref
"$ROOT/deploy/launch.sh" start cluster 3 >/dev/null || { bad "cluster start"; finish; exit 1; }

declare -A OPT=([int8]="--base-quant int8" [nf4]="--base-quant nf4"
                [nf4-dq]="--base-quant nf4 --double-quant" [bf16]="--precision bf16"
                [nf4-bf16]="--base-quant nf4 --precision bf16")
# what status --json's recipe says (base_quant double_quant precision base),
# and v_job_progress's one word
declare -A RECIPE=([int8]="int8 false fp32 int8" [nf4]="nf4 false fp32 nf4"
                   [nf4-dq]="nf4 true fp32 nf4+dq" [bf16]="none false bf16 bf16"
                   [nf4-bf16]="nf4 false bf16 nf4")
declare -A WORD=([int8]=int8 [nf4]=nf4 [nf4-dq]=nf4+dq [bf16]=bf16 [nf4-bf16]=nf4)

recipe() {
  "$SC" status "$1" --json | python3 -c 'import json,sys
r = json.load(sys.stdin)["recipe"]
print(r["base_quant"], str(r["double_quant"]).lower(), r["precision"], r["base"])'
}

# chain MODEL TAG OPTION...: a 3-stage job on MODEL, its adapter in chain-TAG
# and the single process's at the same cuts in one-TAG; sets $job.
chain() {
  local model=$1 tag=$2 c
  shift 2
  job=$("$SC" submit --model "$model" --data data.txt "${JOB_OPTS[@]}" --stages 3 "$@" \
        --checkpoint-every 6 --name "bq-$tag")
  if ! "$SC" watch "$job" >/dev/null; then bad "$tag: job $job ended $(state "$job")"; return 1; fi
  c=$(cuts "$job")
  "$SC" export "$job" --out "chain-$tag" >/dev/null
  "$SC" finetune --model "$model" --data data.txt "${JOB_OPTS[@]}" "$@" --cuts "$c" \
    --threads 1 --quiet --out "one-$tag" || bad "$tag: finetune --cuts $c"
  if same_adapter "one-$tag" "chain-$tag"; then
    ok "$tag: a 3-worker chain (cuts $c) = one process with the same option, bit for bit"
  else bad "$tag: chain and one process differ (cuts $c)"; fi
}

for q in int8 nf4 nf4-dq nf4-bf16 bf16; do
  read -ra o <<< "${OPT[$q]}"
  chain model "$q" "${o[@]}" || continue
  same_adapter ref "chain-$q" && bad "$q: trained the very adapter of the fp32 base"
  r=$(recipe "$job")
  w=$(sqlite3 cluster/splitchain.db "select base_quant || ' ' || double_quant || ' ' ||
      precision || ' ' || (select base from v_job_progress where job_id = $job)
      from jobs where id = $job")
  dq=0; [ "$q" = nf4-dq ] && dq=1
  want_w="$(cut -d' ' -f1 <<< "${RECIPE[$q]}") $dq $(cut -d' ' -f3 <<< "${RECIPE[$q]}") ${WORD[$q]}"
  if [ "$r" = "${RECIPE[$q]}" ] && [ "$w" = "$want_w" ]; then
    ok "$q: status says '$r', the jobs table '$w'"
  else bad "$q: status says '$r' (want '${RECIPE[$q]}'), the jobs table '$w' (want '$want_w')"; fi
done
# nf4 with --precision bf16 multiplies in bf16 where the CPU can (avx512_bf16
# or amx_bf16, and a build with oneDNN): other bits than nf4's; else nf4's.
if grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo &&
   grep -q '^DNNL_LIBRARY:FILEPATH=/' "$BUILD/CMakeCache.txt"; then
  same_adapter chain-nf4 chain-nf4-bf16 && bad "nf4-bf16: the bits of nf4 on a CPU with bf16 products" ||
    ok "nf4-bf16: bf16 products on this CPU (other bits than nf4's fp32 products)"
else
  same_adapter chain-nf4 chain-nf4-bf16 && ok "nf4-bf16: no bf16 products here, nf4's bits" ||
    bad "nf4-bf16: differs from nf4 on a CPU or build without bf16 products"
fi
"$SC" status "$job" | grep -qF "frozen base bf16 (--base-quant none --precision bf16)" &&
  ok "status prints the frozen base" || bad "status: $("$SC" status "$job" | grep frozen)"

# The Llama family's (out, in) projections, quantized per output row.
"$SC" make-model --out llama --preset llama-tiny --layers 4 --heads 4 --kv-heads 2 --embd 64 \
  --inner 96 --vocab 300 --positions 64 --random-norms --seed 5 >/dev/null || bad "make-model llama"
chain llama llama-nf4-dq --base-quant nf4 --double-quant
gjob=$job
chain llama llama-int8-bf16 --base-quant int8 --precision bf16

# Generation holds the base as the job trained on it: `generate --job` (the
# job's recipe, sent to the workers' sessions) and `--workers` with the
# exported adapter (which records its base) give the greedy ids of one
# process with that adapter; the fp32 base gives others for some prompt
# (not for every one: a tiny random model's greedy ids fall into the same
# loop under both bases for some prompts, and which ones changes with the
# training text, here the repository's own files).
ids() { sed -n 's/.*"ids":\[\([0-9,]*\)\].*/\1/p'; }
GP=(--prompt-ids 7,99,31,4,250,18,77,3,140,62,11 --max-new-tokens 16 --json)
one=$("$SC" generate --model llama --adapter chain-llama-nf4-dq "${GP[@]}" | ids)
viajob=$("$SC" generate --job "$gjob" "${GP[@]}" | ids)
urls=$("$SC" workers --json | python3 -c 'import json,sys; print(",".join(w["address"] for w in json.load(sys.stdin)))')
byhand=$("$SC" generate --model "$PWD/llama" --adapter chain-llama-nf4-dq --workers "$urls" "${GP[@]}" | ids)
differ=0
for p in 7,99,31,4,250,18,77,3,140,62,11 201,5,66,180,9 13,13,290,41,77,120 88,3,150,222,17,60,5,99; do
  a=$("$SC" generate --model llama --adapter chain-llama-nf4-dq --prompt-ids "$p" --max-new-tokens 16 --json | ids)
  b=$("$SC" generate --model llama --adapter chain-llama-nf4-dq --base-quant none --prompt-ids "$p" \
      --max-new-tokens 16 --json | ids)
  [ -n "$a" ] && [ -n "$b" ] || bad "generation: no ids for prompt $p ('$a', '$b')"
  [ "$a" != "$b" ] && differ=$((differ + 1))
done
[ -n "$one" ] && [ "$differ" -gt 0 ] && ok "generation: the nf4 base's ids differ from the fp32 base's for $differ of 4 prompts" \
  || bad "generation: the nf4 and fp32 bases gave the same ids for all 4 prompts ('$one')"
[ "$viajob" = "$one" ] && ok "generate --job on an nf4 + double-quant job: one process's ids" \
  || bad "generate --job: '$viajob' vs one process '$one'"
[ "$byhand" = "$one" ] && ok "generate --workers with the nf4 adapter: one process's ids" \
  || bad "generate --workers: '$byhand' vs one process '$one'"
out=$("$SC" generate --job "$gjob" --base-quant int8 "${GP[@]}" 2>&1) &&
  bad "generate --job --base-quant was accepted" ||
  { grep -qF "come from the job" <<< "$out" && ok "generate --job refuses --base-quant: ${out#*: }" ||
    bad "generate --job --base-quant: '$out'"; }

# A directory quantized on disk: the job records its format, trains the
# bits of the float model quantized at load; another format is refused.
"$SC" quantize --model model --to nf4 --out qmodel >/dev/null || bad "quantize"
out=$("$SC" submit --model qmodel --data data.txt "${JOB_OPTS[@]}" --stages 3 \
      --base-quant int8 2>&1)
if [ $? -ne 0 ] && grep -qF "already quantized to nf4" <<< "$out" &&
   grep -qF -- "--base-quant int8 asks for another format" <<< "$out"; then
  ok "a conflicting --base-quant is refused at submit: ${out#*: }"
else bad "conflicting --base-quant: '$out'"; fi
if chain qmodel disk; then
  [ "$(recipe "$job")" = "nf4 false fp32 nf4" ] && ok "the quantized directory's job records nf4" ||
    bad "quantized directory: recipe '$(recipe "$job")'"
  "$SC" finetune --model model --data data.txt "${JOB_OPTS[@]}" --base-quant nf4 \
    --cuts "$(cuts "$job")" --threads 1 --quiet --out load-nf4 || bad "finetune nf4 at load"
  same_adapter chain-disk load-nf4 && ok "quantized on disk = quantized at load, bit for bit" ||
    bad "the directory quantized on disk trains other bits than --base-quant nf4"
fi

# Quality: 200 steps, eval loss against fp32's. make-model's head (0.02
# init) keeps every logit within a few units, so that no adapter takes the
# loss far below ln V; ten times that, as a trained head is, the model
# learns (7.0 -> 3.8 in 200 steps).
"$SC" make-model --out lq --preset llama-tiny --layers 4 --heads 4 --kv-heads 2 --embd 64 \
  --inner 128 --vocab 300 --positions 64 --untied --seed 3 >/dev/null || bad "make-model"
python3 - lq/model.safetensors <<'PY' || bad "scaling the head"
import json, sys
from array import array
d = bytearray(open(sys.argv[1], "rb").read())
n = int.from_bytes(d[:8], "little")
for k, v in json.loads(d[8:8 + n]).items():
    if k.endswith("lm_head.weight"):
        b, e = (8 + n + o for o in v["data_offsets"])
        d[b:e] = array("f", (10 * x for x in array("f", bytes(d[b:e])))).tobytes()
open(sys.argv[1], "wb").write(bytes(d))
PY
Q=(--steps 200 --batch 4 --seq 32 --micro 2 --rank 8 --alpha 16 --lr 3e-3 --min-lr 3e-4
   --warmup 10 --seed 2 --eval-split 0.05 --stages 3 --threads 1 --quiet)
declare -A ev first
for q in fp32 int8 nf4 nf4-dq nf4-bf16 bf16; do
  o=()
  [ "$q" != fp32 ] && read -ra o <<< "${OPT[$q]}"
  "$SC" finetune --model lq --data data.txt "${Q[@]}" "${o[@]}" --metrics "q-$q.jsonl" ||
    bad "quality run $q"
  ev[$q]=$(sed -n 's/.*"eval_loss":\([^,]*\),.*/\1/p' "q-$q.jsonl" | tail -1)
  first[$q]=$(sed -n '1s/.*"loss":\([^,]*\),.*/\1/p' "q-$q.jsonl")
done
python3 - "${first[fp32]}" "${ev[fp32]}" "${ev[int8]}" "${ev[nf4]}" "${ev[nf4-dq]}" "${ev[bf16]}" \
  "${ev[nf4-bf16]}" <<'PY' &&
import sys
l0, f, i8, n4, dq, b, nb = map(float, sys.argv[1:])
r = lambda x: 100 * (x / f - 1)
print("eval loss after 200 steps (first step's loss %.4f): fp32 %.4f, int8 %.4f (%+.2f%%), "
      "nf4 %.4f (%+.2f%%), nf4+dq %.4f (%+.2f%%), bf16 %.4f (%+.2f%%), nf4 + bf16 %.4f (%+.2f%%)"
      % (l0, f, i8, r(i8), n4, r(n4), dq, r(dq), b, r(b), nb, r(nb)))
assert f < l0 - 2, "the fp32 run did not learn"
assert abs(r(i8)) <= 2 and abs(r(n4)) <= 5 and abs(r(dq)) <= 5 and abs(r(b)) <= 1
assert abs(r(nb)) <= 5
PY
  ok "eval loss within 2% (int8), 5% (nf4, nf4+dq, nf4 + bf16) and 1% (bf16) of fp32" ||
  bad "eval loss: ${ev[*]}"
finish
