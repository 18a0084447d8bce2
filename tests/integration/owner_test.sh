#!/usr/bin/env bash
# owner_test.sh — private data (docs/privacy.md): a data owner's U-shaped
# job over 2 middle workers, real processes on tcp loopback.
#   - equivalence: the owner's job trains adapters bit-identical to
#     `splitchain finetune` on the owner's file, 1F1B and GPipe, K = 1 and 2,
#     GPT-2 and a Llama-family model; its held-out losses are the ones
#     finetune prints, bit for bit; the placement shows the owner's two ends;
#   - privacy: a capture of all loopback traffic during the owner's job holds
#     neither the data's text nor its token ids (int32, int16; byte tokens
#     are their own varint), and neither do the coordinator's database and
#     the logs of the coordinator and the middle workers, which run from a
#     directory without the data; the same capture of the same job without an
#     owner does find the ids — so the check can fail;
#   - bad input: an unknown owner, a worker that is no owner, a path out of
#     the owner's directory (.., absolute, a symbolic link out), a missing
#     file, data shorter than one micro-batch, too few layers for the middle:
#     a clear error naming the owner, nothing queued.
# The capture needs root and tcpdump; without them that part is skipped with
# a 'skip:' line and the rest still runs.
# Plaintext (--insecure): the capture must be able to read what crosses the
# sockets, which TLS would hide (owner_fault_test.sh runs data owners' jobs
# over TLS).
#   owner_test.sh BUILD_DIR WORK_DIR
source "$(dirname "$0")/lib.sh" "$1" "$2"
use_insecure
make_fixture
WORKER=$BUILD/worker/splitchain-worker

mkdir -p home
mv data.txt home/data.txt
# The reference reads the owner's file in place; nothing else does.
"$SC" finetune --model model --data home/data.txt "${JOB_OPTS[@]}" --threads 1 --quiet \
  --out ref || bad "single-process reference"

# The coordinator and 2 middle workers run in cluster/, the owner apart.
(cd / && "$ROOT/deploy/launch.sh" start "$WORK/cluster" 2 >/dev/null) ||
  { bad "cluster start"; finish; exit 1; }
start_owner() { # NAME DIR
  OMP_NUM_THREADS=1 "$WORKER" --coordinator "$SPLITCHAIN_COORDINATOR" --name "$1" \
    "${WORKER_NET[@]}" --threads 1 --owner-data "$2" \
    >>"$WORK/$1.log" 2>&1 &
  echo $! > "$WORK/cluster/worker-$1.pid" # stopped with the cluster
}
start_owner alice "$WORK/home"
for _ in $(seq 1 100); do
  "$SC" workers --json | grep -q '"name":"alice".*"data_owner":true' && break
  sleep 0.2
done
"$SC" workers | grep -q "alice.*(data owner)" && ok "the owner registers as a data owner" ||
  bad "workers: $("$SC" workers)"

run_owner_job() { # NAME EXTRA... : submits, waits, exports to out-NAME
  local name=$1 job
  shift
  job=$("$SC" submit --model model --owner alice --data data.txt --stages 2 --name "$name" \
        "$@") || { bad "$name: submit refused"; return 1; }
  if ! "$SC" watch "$job" >/dev/null; then bad "$name: job $job ended $(state "$job")"; return 1; fi
  "$SC" export "$job" --out "out-$name" >/dev/null
  echo "$job"
}

for case in "1f1b 1" "gpipe 1" "1f1b 2"; do
  set -- $case
  [ "$2" = 2 ] && {
    "$SC" make-model --out model6 --layers 6 --heads 4 --embd 64 --vocab 300 --positions 64 \
      --random-norms --seed 7 >/dev/null
    "$SC" finetune --model model6 --data home/data.txt "${JOB_OPTS[@]}" --threads 1 --quiet \
      --out ref6 >/dev/null
  }
  m=model; r=ref; [ "$2" = 2 ] && { m=model6; r=ref6; }
  job=$("$SC" submit --model $m --owner alice --owner-layers "$2" --data data.txt --stages 2 \
        "${JOB_OPTS[@]}" --schedule "$1" --checkpoint-every 4 --name "own-$1-$2") ||
    { bad "$1 K=$2: submit refused"; continue; }
  if ! "$SC" watch "$job" >/dev/null; then bad "$1 K=$2: job $job ended $(state "$job")"; continue; fi
  "$SC" export "$job" --out "out-$1-$2" >/dev/null
  if same_adapter "$r" "out-$1-$2"; then ok "owner, K=$2, 2 middle stages, $1: bit-identical to one process"
  else bad "owner, K=$2, $1: adapters differ from the single-process run"; fi
done

# A lossy wire (int8, stochastic rounding, error feedback on the gradients):
# the owner's head and tail are a chain's first and last stages, their
# streams too — the job equals finetune with the same cuts and encoding.
"$SC" finetune --model model --data home/data.txt "${JOB_OPTS[@]}" --cuts 1,2,3 --wire int8 \
  --threads 1 --quiet --out ref-int8 || bad "finetune --wire int8"
job8=$("$SC" submit --model model --owner alice --data data.txt --stages 2 "${JOB_OPTS[@]}" \
       --wire int8 --name own-int8)
if "$SC" watch "$job8" >/dev/null; then
  "$SC" export "$job8" --out out-int8 >/dev/null
  same_adapter ref-int8 out-int8 && ok "owner + 2 middle over int8: bit-identical to finetune --cuts 1,2,3" ||
    bad "owner over int8: adapters differ from finetune --cuts 1,2,3 --wire int8"
else
  bad "owner int8 job $job8 ended $(state "$job8")"
fi

# The placement: the owner's two ends, the middle between them.
pl=$("$SC" status "$job" --json)
if echo "$pl" | grep -q '"worker_name":"alice","first_layer":0,"last_layer":2,"role":"owner","tail_first_layer":4,"tail_last_layer":6'; then
  ok "status shows the owner holding [0, 2) and [4, 6)"
else bad "placement: $pl"; fi
"$SC" status "$job" | grep -q "the data owner" && ok "status names the data owner" ||
  bad "status text: $("$SC" status "$job")"
roles=$(sqlite3 cluster/splitchain.db "select group_concat(role || ':' || first_layer, ',') from
        (select * from v_placement_roles where job_id = $job order by version desc, stage
         limit 3)")
[ "$roles" = "owner:0,middle:2,middle:3" ] && ok "v_placement_roles: $roles" ||
  bad "v_placement_roles: '$roles'"

# Held-out evaluation on the owner's side: its losses are finetune's, bit for bit.
for i in $(seq 1 120); do
  printf '{"prompt":"Question %d: what follows %d?","completion":" %d, of course."}\n' \
    "$i" "$((i * 7))" "$((i * 7 + 1))"
done > home/qa.jsonl
EVAL_OPTS=(--steps 5 --batch 2 --seq 16 --micro 3 --rank 4 --alpha 8 --lr 3e-3 --warmup 1
           --seed 5 --eval-split 0.1 --eval-every 2 --no-pack)
"$SC" finetune --model model --data home/qa.jsonl "${EVAL_OPTS[@]}" --threads 1 --quiet \
  --metrics ref-eval.jsonl --out ref-eval || bad "single-process run with eval"
want=$(sed -n 's/.*"step":\([0-9]*\),"eval_loss":\([^,]*\),.*/\1 \2/p' ref-eval.jsonl |
       awk '{print $1 + 1, $2}')
job=$("$SC" submit --model model --owner alice --data qa.jsonl "${EVAL_OPTS[@]}" --stages 2 \
      --name own-eval)
if "$SC" watch "$job" >/dev/null; then
  same=$(same_evals "$job" "$want")
  [ "$(echo "$want" | wc -l)" = 3 ] && [ "$same" = 3 ] &&
    ok "owner's eval losses = one process, bit for bit (steps 2, 4, 5)" ||
    bad "eval losses: $same of 3 equal; one process: $want"
  "$SC" export "$job" --out out-eval >/dev/null
  same_adapter ref-eval out-eval && ok "owner eval job: adapters bit-identical" ||
    bad "owner eval job: adapters differ"
else
  bad "owner eval job $job ended $(state "$job")"
fi

# A Llama-family model (Mistral: grouped-query attention, untied head).
"$SC" make-model --out mistral --type mistral --layers 4 --heads 4 --kv-heads 2 --embd 64 \
  --inner 96 --vocab 300 --positions 64 --sliding-window 8 --untied --random-norms --seed 5 \
  >/dev/null || bad "make-model mistral"
LLAMA_OPTS=("${JOB_OPTS[@]/all/q_proj,v_proj,o_proj,down_proj}")
"$SC" finetune --model mistral --data home/data.txt "${LLAMA_OPTS[@]}" --threads 1 --quiet \
  --out ref-mistral || bad "single-process mistral run"
job=$("$SC" submit --model mistral --owner alice --data data.txt "${LLAMA_OPTS[@]}" --stages 2 \
      --name own-mistral)
if "$SC" watch "$job" >/dev/null; then
  "$SC" export "$job" --out out-mistral >/dev/null
  same_adapter ref-mistral out-mistral && ok "mistral, owner + 2 middle: bit-identical" ||
    bad "mistral owner job: adapters differ"
  # Split inference on the same U: the owner's head, the middle, the owner's tail.
  Q=(--prompt-ids 7,99,31,4,250,18,77,3,140,62,11 --max-new-tokens 12 --json)
  ids() { sed -n 's/.*"ids":\[\([0-9,]*\)\].*/\1/p'; }
  one=$("$SC" generate --model mistral --adapter out-mistral "${Q[@]}" | ids)
  ring=$("$SC" generate --job "$job" "${Q[@]}" | ids)
  [ -n "$one" ] && [ "$one" = "$ring" ] &&
    ok "generate --job through the owner's ends and the middle gives one process's ids" ||
    bad "generate --job: '$ring' vs one process '$one'"
else
  bad "mistral owner job $job ended $(state "$job")"
fi

# ---- several owners (split-federated): each step runs every owner's
# micro-batches through the shared middle, owner by owner; the owners'
# gradients are added up and every owner applies the same update — the job
# equals `finetune --data A --data B [--data C]` bit for bit.
mkdir -p home-bob home-carol
head -c 30000 "$ROOT/README.md" > home-bob/data.txt
tail -c 30000 "$ROOT/docs/design.md" > home-carol/data.txt
start_owner bob "$WORK/home-bob"
start_owner carol "$WORK/home-carol"
for _ in $(seq 1 100); do
  [ "$("$SC" workers --json | grep -o '"data_owner":true' | wc -l)" -ge 3 ] && break
  sleep 0.2
done
"$SC" finetune --model model --data home/data.txt --data home-bob/data.txt "${JOB_OPTS[@]}" \
  --threads 1 --quiet --out ref-ab || bad "finetune with two files"
"$SC" finetune --model model --data home/data.txt --data home-bob/data.txt \
  --data home-carol/data.txt "${JOB_OPTS[@]}" --threads 1 --quiet --out ref-abc ||
  bad "finetune with three files"
cmp -s ref/adapter_model.safetensors ref-ab/adapter_model.safetensors &&
  bad "two files train what one does: the test could not tell them apart"
for case in "ab 1f1b alice,bob 2" "ab gpipe alice,bob 1" "abc 1f1b alice,bob,carol 2"; do
  set -- $case
  owners=()
  for o in ${3//,/ }; do owners+=(--owner "$o"); done
  job=$("$SC" submit --model model "${owners[@]}" --data data.txt --stages "$4" \
        "${JOB_OPTS[@]}" --schedule "$2" --checkpoint-every 4 --name "own-$1-$2") ||
    { bad "$1 $2: submit refused"; continue; }
  if ! "$SC" watch "$job" >/dev/null; then bad "$1 $2: job $job ended $(state "$job")"; continue; fi
  "$SC" export "$job" --out "out-$1-$2" >/dev/null
  if same_adapter "ref-$1" "out-$1-$2"; then
    ok "owners $3 over $4 middle stage(s), $2: bit-identical to finetune with their files"
  else bad "owners $3, $2: adapters differ from finetune --data ..."; fi
done
# --fedavg-every K: each owner updates from its own micro-batches and the
# owners meet every K steps and before each checkpoint — no longer exact,
# the loss close to the exact job's.
fa=$("$SC" submit --model model --owner alice --owner bob --data data.txt --stages 2 \
     "${JOB_OPTS[@]}" --fedavg-every 4 --checkpoint-every 4 --name own-fedavg) ||
  bad "fedavg: submit refused"
if "$SC" watch "$fa" >/dev/null; then
  n=$(sqlite3 cluster/splitchain.db "select count(*) from events where job_id = $fa
      and kind = 'owners_averaged'")
  [ "$n" = 2 ] && ok "--fedavg-every 4 over 6 steps: the owners met twice (steps 4 and 6)" ||
    bad "owners_averaged events: $n"
  "$SC" export "$fa" --out out-fedavg >/dev/null
  same_adapter ref-ab out-fedavg && bad "--fedavg-every 4 trained exactly what K = 1 does" ||
    ok "--fedavg-every 4 trains other adapters than the exact job"
  exact=$(sqlite3 cluster/splitchain.db "select loss from metrics m join jobs j on j.id = m.job_id
          where j.name = 'own-ab-1f1b' and m.step = 6")
  approx=$(sqlite3 cluster/splitchain.db "select loss from metrics where job_id = $fa and step = 6")
  awk -v a="$approx" -v e="$exact" 'BEGIN { d = (a - e) / e; exit !(d < 0.05 && d > -0.05) }' &&
    ok "--fedavg-every 4: loss $approx at step 6, exact $exact (within 5%)" ||
    bad "--fedavg-every 4: loss $approx vs exact $exact"
else
  bad "fedavg job $fa ended $(state "$fa")"
fi
# Two owners on a Llama-family model (Mistral: grouped-query attention,
# untied head): the same equality.
"$SC" finetune --model mistral --data home/data.txt --data home-bob/data.txt "${LLAMA_OPTS[@]}" \
  --threads 1 --quiet --out ref-mistral-ab || bad "finetune mistral with two files"
jm=$("$SC" submit --model mistral --owner alice --owner bob --data data.txt "${LLAMA_OPTS[@]}" \
     --stages 2 --name own-mistral-ab)
if "$SC" watch "$jm" >/dev/null; then
  "$SC" export "$jm" --out out-mistral-ab >/dev/null
  same_adapter ref-mistral-ab out-mistral-ab &&
    ok "mistral, owners alice,bob over 2 middle stages: bit-identical to finetune with their files" ||
    bad "mistral two owners: adapters differ"
else
  bad "mistral two owners' job $jm ended $(state "$jm")"
fi
"$SC" status "$fa" | grep -q "owners      alice, bob (data 'data.txt' under each owner's directory; 1 block(s) at each end; adapters averaged every 4 steps)" &&
  "$SC" status "$fa" --json | grep -q '"owners":\["alice","bob"\],"owner_layers":1,"fedavg_every":4' &&
  ok "status shows the owners and how they meet (text and --json)" ||
  bad "status of the fedavg job: $("$SC" status "$fa" | grep owners)"
n=$(sqlite3 cluster/splitchain.db "select count(*) from v_placement_roles where job_id = $job
    and role = 'owner'")
[ "$n" = 3 ] && ok "the 3-owner placement records 3 owners" || bad "owner rows: $n"
"$SC" status "$job" | grep -c "the data owner" | grep -q 3 && ok "status lists the 3 owners" ||
  bad "status: $("$SC" status "$job")"
# Held-out evaluation across two owners: each holds out a share of its own
# data; the losses are finetune's with both files, bit for bit.
for i in $(seq 1 90); do
  printf '{"prompt":"Bob asks %d: what is %d plus one?","completion":" %d."}\n' \
    "$i" "$((i * 3))" "$((i * 3 + 1))"
done > home-bob/qa.jsonl
"$SC" finetune --model model --data home/qa.jsonl --data home-bob/qa.jsonl "${EVAL_OPTS[@]}" \
  --threads 1 --quiet --metrics ref-eval2.jsonl --out ref-eval2 || bad "finetune, 2 files, eval"
want=$(sed -n 's/.*"step":\([0-9]*\),"eval_loss":\([^,]*\),.*/\1 \2/p' ref-eval2.jsonl |
       awk '{print $1 + 1, $2}')
job=$("$SC" submit --model model --owner alice --owner bob --data qa.jsonl "${EVAL_OPTS[@]}" \
      --stages 2 --name own-eval2)
if "$SC" watch "$job" >/dev/null; then
  same=$(same_evals "$job" "$want")
  [ "$(echo "$want" | wc -l)" = 3 ] && [ "$same" = 3 ] &&
    ok "two owners' eval losses = finetune with both files, bit for bit" ||
    bad "two owners' eval losses: $same of 3 equal; finetune: $want"
  "$SC" export "$job" --out out-eval2 >/dev/null
  same_adapter ref-eval2 out-eval2 && ok "two owners' eval job: adapters bit-identical" ||
    bad "two owners' eval job: adapters differ"
else
  bad "two owners' eval job $job ended $(state "$job")"
fi

# ---- bad input: a clear error naming the owner, nothing queued
n0=$(sqlite3 cluster/splitchain.db "select count(*) from jobs")
refused() { # WHAT PATTERN ARGS...: the submit fails, its error matches PATTERN
  local what=$1 pat=$2 out
  shift 2
  if out=$("$SC" submit --model model "${JOB_OPTS[@]}" --stages 2 "$@" 2>&1); then
    bad "$what: accepted ($out)"
  elif echo "$out" | grep -q -- "$pat"; then ok "$what: refused ($(echo "$out" | tail -1))"
  else bad "$what: '$out' does not say '$pat'"; fi
}
ln -s /etc/hostname home/escape.txt
head -c 20 home/data.txt > home/short.txt
refused "an unknown owner" "owner 'nobody'" --owner nobody --data data.txt
refused "a worker that is no owner" "owner 'worker-1' is not a data owner" --owner worker-1 \
  --data data.txt
refused "a path with .." "owner 'alice'.*leaves" --owner alice --data ../home/data.txt
refused "an absolute path" "owner 'alice'.*absolute" --owner alice --data /etc/hostname
refused "a symbolic link out" "owner 'alice'.*outside" --owner alice --data escape.txt
refused "a missing file" "owner 'alice'.*nothere.txt" --owner alice --data nothere.txt
refused "data shorter than a micro-batch" "owner 'alice'.*short.txt" --owner alice \
  --data short.txt
refused "no layers left for the middle" "owner holds 2 block" --owner alice --owner-layers 2 \
  --data data.txt
refused "a second owner that is no owner" "owner 'worker-2' is not a data owner" --owner alice \
  --owner worker-2 --data data.txt
refused "the same owner twice" "names 'alice' twice" --owner alice --owner alice --data data.txt
refused "several owners over a lossy wire" "fp32 wire only" --owner alice --owner bob \
  --wire int8 --data data.txt
out=$("$WORKER" --coordinator "$SPLITCHAIN_COORDINATOR" --owner-data "$WORK/nothere" 2>&1); rc=$?
[ "$rc" = 2 ] && echo "$out" | grep -q "owner-data expects a directory" &&
  ok "worker --owner-data without a directory: usage error" || bad "--owner-data nothere: rc $rc, $out"
n1=$(sqlite3 cluster/splitchain.db "select count(*) from jobs")
[ "$n0" = "$n1" ] && ok "no refused job was queued" || bad "jobs went from $n0 to $n1"

# ---- privacy: what crosses loopback, and what the others keep
if [ "$(id -u)" != 0 ] || ! command -v tcpdump >/dev/null; then
  echo "skip: the loopback capture needs root and tcpdump"
  finish
  exit
fi
# Data no protocol string can contain by chance: random lower-case words,
# one file for each of two owners.
secret() { # SEED
  python3 -c '
import random, sys
r = random.Random(int(sys.argv[1]))
print(" ".join("".join(r.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(r.randint(3, 9)))
               for _ in range(6000)))' "$1"
}
secret 17 > home/secret.txt
secret 29 > home-bob/secret.txt
cp home/secret.txt cluster-copy.txt # for the job without an owner (it must be readable there)
capture() { # FILE SUBMIT-ARGS...: the loopback traffic of one job
  local f=$1 pid job
  shift
  tcpdump -i lo -U -w "$f" -s 0 >/dev/null 2>&1 &
  pid=$!
  sleep 1
  job=$("$SC" submit --model model "${JOB_OPTS[@]}" --stages 2 "$@") &&
    "$SC" watch "$job" >/dev/null || bad "capture job ($*) ended $(state "$job")"
  sleep 0.5
  kill -INT $pid; wait $pid
}
capture owner.pcap --owner alice --owner bob --data secret.txt --name private
capture plain.pcap --data cluster-copy.txt --name plain
scan() { # FILE...: how many runs of the data's tokens each encoding shows
  # Every run of 12+ letters or spaces, as bytes (text, and the byte
  # tokens' own varint), int16 or int32, that a 12-token window of the data
  # matches: all of them, not a sample.
  python3 - "$WORK/home/secret.txt" "$WORK/home-bob/secret.txt" "$@" <<'EOF'
import re, sys
grams = set()
for d in sys.argv[1:3]:
    data = open(d, "rb").read()
    grams |= {data[i:i + 12] for i in range(len(data) - 11)}
pats = {"text": (rb"[a-z ]{12,}", 1), "int16": (rb"(?:[a-z ]\x00){12,}", 2),
        "int32": (rb"(?:[a-z ]\x00\x00\x00){12,}", 4)}
hits = dict.fromkeys(pats, 0)
for f in sys.argv[3:]:
    blob = open(f, "rb").read()
    for k, (rx, w) in pats.items():
        for m in re.finditer(rx, blob):
            run = m.group(0)[::w]
            hits[k] += any(run[i:i + 12] in grams for i in range(len(run) - 11))
print(hits["text"], hits["int32"], hits["int16"])
EOF
}
read -r t32 i32 i16 <<< "$(scan owner.pcap)"
if [ "$t32" = 0 ] && [ "$i32" = 0 ] && [ "$i16" = 0 ]; then
  ok "two owners' job: loopback carries neither their text nor its ids (int32, int16)"
else bad "two owners' job: the capture holds text $t32, int32 $i32, int16 $i16 windows"; fi
read -r t i j <<< "$(scan plain.pcap)"
[ "$i" -ge 6 ] && ok "the same job without an owner: the capture finds $i runs of its ids (int32)" ||
  bad "the check cannot fail: no ids in the plain job's capture ($t $i $j)"
"$ROOT/deploy/launch.sh" stop "$WORK/cluster" >/dev/null 2>&1
read -r t i j <<< "$(scan cluster/splitchain.db cluster/coordinator.log cluster/worker-1.log \
                    cluster/worker-2.log)"
# Neither job leaves data in these: the plain job's coordinator reads its
# data and sends ids, which no database row or log line keeps.
[ "$t" = 0 ] && [ "$i" = 0 ] && [ "$j" = 0 ] &&
  ok "the coordinator's database and the non-owners' logs hold none of the data" ||
  bad "database and logs hold text $t, int32 $i, int16 $j windows"
ls cluster | grep -q "secret" && bad "the data is in the cluster's directory" ||
  ok "the cluster's directory holds no copy of the owner's data"
finish
