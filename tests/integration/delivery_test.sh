#!/usr/bin/env bash
# delivery_test.sh — models as content-addressed artefacts: a model is
# registered with the coordinator (`models add`), and workers started with
# empty caches and never given a model path fetch exactly their segment's
# tensors from it. The job trains adapters bit-identical to the
# single-process engine on the model directory; each cache holds only its
# segment's tensors, byte for byte as the manifest says; a second job
# fetches nothing; a restarted worker reports its cache and a corrupted
# cache file is detected and fetched again; bad input (an unknown model, a
# directory without weights, a tensor whose bytes no longer match its
# sha256) gives clear errors.
#   delivery_test.sh BUILD_DIR WORK_DIR
source "$(dirname "$0")/lib.sh" "$1" "$2"
make_fixture
DB=cluster/splitchain.db
q() { sqlite3 "$DB" "$1"; }

# The coordinator's copy: workers are told only the model's name.
cp -r model served
mkdir -p notamodel && cp model/config.json notamodel/
"$SC" make-model --out other --layers 4 --heads 4 --embd 64 --vocab 300 --positions 64 \
  --random-norms --seed 8 >/dev/null

start_coordinator 3000
# start_worker I: worker-I with an empty cache of its own, in cluster/.
start_worker() {
  (cd cluster || exit 1
   OMP_NUM_THREADS=1 "$BUILD/worker/splitchain-worker" \
     --coordinator "$SPLITCHAIN_COORDINATOR" --name "worker-$1" --threads 1 \
     --cache "cache-$1" --cache-limit 64M "${WORKER_TLS[@]}" >>"worker-$1.log" 2>&1 &
   echo $! > "worker-$1.pid")
}
# idle_workers N: waits until N workers are registered and idle.
idle_workers() {
  for _ in $(seq 1 150); do
    [ "$("$SC" workers --json 2>/dev/null | grep -o '"state":"idle"' | wc -l)" -ge "$1" ] && return 0
    sleep 0.2
  done
  return 1
}
start_worker 1
start_worker 2
idle_workers 2 || { bad "2 workers did not register"; finish; exit 1; }

# ---- registration and its errors
"$SC" models add tiny served > add.txt 2>&1 && grep -q "52" add.txt \
  && ok "models add: 52 tensors registered" || bad "models add: $(cat add.txt)"
"$SC" models add tiny served > dup.txt 2>&1
grep -q "ALREADY_EXISTS" dup.txt && ok "models add of a name in use: refused" \
  || bad "duplicate add: $(cat dup.txt)"
"$SC" models add empty notamodel > nw.txt 2>&1
[ $? -ne 0 ] && grep -q "model.safetensors" nw.txt \
  && ok "models add of a directory without weights: $(cut -c1-90 nw.txt | head -1)" \
  || bad "add without weights: $(cat nw.txt)"
"$SC" models add 'bad/name' served > bn.txt 2>&1
[ $? -ne 0 ] && grep -q "model name" bn.txt && ok "models add: a bad name is refused" \
  || bad "bad name: $(cat bn.txt)"
"$SC" models show nosuch > ns.txt 2>&1
[ $? -ne 0 ] && grep -q "no model called 'nosuch'" ns.txt \
  && ok "models show of an unknown model: NOT_FOUND" || bad "show unknown: $(cat ns.txt)"
"$SC" submit --model nosuch --data data.txt "${JOB_OPTS[@]}" --stages 2 > sn.txt 2>&1
[ $? -ne 0 ] && grep -q "no model called 'nosuch'" sn.txt \
  && ok "submit of an unknown model: $(head -1 sn.txt | cut -c1-90)" || bad "submit unknown: $(cat sn.txt)"
"$SC" models list --json > list.json
[ "$(sqlite3 :memory: "select count(*) from json_each(readfile('list.json')) where
     json_extract(value, '\$.name') = 'tiny' and json_extract(value, '\$.tensors') = 52")" = 1 ] \
  && ok "models list --json" || bad "models list: $(cat list.json)"
"$SC" models show tiny --json > tiny.json
# Every manifest entry: its byte range of the file hashes to its sha256.
python3 - served tiny.json > manifest.txt <<'PY' && ok "manifest: every byte range hashes to its sha256" || bad "manifest: $(cat manifest.txt)"
import hashlib, json, sys
d, m = sys.argv[1], json.load(open(sys.argv[2]))
assert len(m["manifest"]) == 52 and "tokenizer.json" not in m.get("files", [])
blob = open(f"{d}/model.safetensors", "rb").read()
for t in m["manifest"]:
    assert t["file"] == "model.safetensors"
    b = blob[t["offset"]:t["offset"] + t["nbytes"]]
    assert hashlib.sha256(b).hexdigest() == t["sha256"], t["name"]
    n = 4
    for s in t["shape"]: n *= s
    assert n == t["nbytes"], t["name"]
PY
n=$(q "select count(*) from models m join model_tensors t on t.model_id = m.id where m.name = 'tiny'")
[ "$n" = 52 ] && ok "models and model_tensors tables: 52 rows" || bad "model_tensors rows: $n"

# ---- a job of the registered model: fetched, trained, bit-identical
reference ref
job_of() {
  local job
  job=$("$SC" submit --model "$1" --data data.txt "${JOB_OPTS[@]}" --stages 2 --name "$2") || return 1
  "$SC" watch "$job" >/dev/null 2>&1
  echo "$job"
}
j1=$(job_of tiny first)
[ "$(state "$j1")" = done ] && ok "job $j1 of the registered model: done" \
  || bad "job $j1 ended $(state "$j1"): $("$SC" status "$j1" | grep -i error)"
# Tensors come over the coordinator's listener of their own (its port + 1
# by default), never over the connection that carries heartbeats.
bulk="${SPLITCHAIN_COORDINATOR%%://*}://127.0.0.1:$((SC_PORT + 1))"
grep -q "job $j1 model tiny: .* fetched .* over $bulk)" cluster/worker-*.log \
  && [ "$(q "select count(*) from events where kind = 'coordinator_started' and
            message like '%tensors on $bulk%'")" -ge 1 ] \
  && ok "tensors fetched from the coordinator's own listener for them ($bulk)" \
  || bad "tensor listener: $(grep -h "job $j1 model tiny" cluster/worker-*.log | head -2)"
"$SC" export "$j1" --out out1 >/dev/null
same_adapter ref out1 && ok "job $j1: adapters bit-identical to one process on the directory" \
  || bad "job $j1: adapters differ"
# Generation on the job's workers takes the registered model from their
# caches: with the registered directory out of reach, `generate --job`
# gives one process's ids.
ids() { sed -n 's/.*"ids":\[\([0-9,]*\)\].*/\1/p'; }
GQ=(--prompt-ids 7,99,31,4,250,18 --max-new-tokens 10 --json)
one=$("$SC" generate --model served --adapter out1 "${GQ[@]}" | ids)
mv served served.away
chain=$("$SC" generate --job "$j1" "${GQ[@]}" 2>gen.err | ids)
mv served.away served
[ -n "$one" ] && [ "$one" = "$chain" ] \
  && ok "generate --job on the registered model (its directory out of reach): one process's ids" \
  || bad "generate --job: '$chain' vs '$one' ($(head -c 300 gen.err))"
"$SC" status "$j1" --json > st1.json

# Each worker's cache holds exactly its segment's tensors, as the manifest says.
python3 - tiny.json st1.json cluster > caches.txt <<'PY' && ok "caches: each holds only its segment's tensors ($(cat caches.txt))" || bad "caches: $(cat caches.txt)"
import hashlib, json, os, re, sys
m, st, root = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3]
by_name = {t["name"]: t for t in m["manifest"]}
L = m["n_layer"]
out = []
for s in st["placement"]:
    f, l = s["first_layer"], s["last_layer"]
    want = set()
    for name, t in by_name.items():
        h = re.match(r"(transformer\.)?h\.(\d+)\.", name)
        if h and f <= int(h.group(2)) < l: want.add(t["sha256"])
        if f == 0 and re.search(r"(^|\.)(wte|wpe)\.", name): want.add(t["sha256"])
        if l == L and re.search(r"(^|\.)(ln_f|wte|lm_head)\.", name): want.add(t["sha256"])
    d = os.path.join(root, "cache-" + s["worker_name"].split("-")[1])
    have = {x for x in os.listdir(d) if re.fullmatch(r"[0-9a-f]{64}", x)}
    assert have == want, (s["worker_name"], len(have), len(want))
    sizes = {t["sha256"]: t["nbytes"] for t in m["manifest"]}
    for x in have:
        b = open(os.path.join(d, x), "rb").read()
        assert len(b) == sizes[x] and hashlib.sha256(b).hexdigest() == x, x
    out.append(f"{s['worker_name']} [{f},{l}): {len(have)}")
print(", ".join(out))
PY
grep -h "job $j1 model tiny" cluster/worker-*.log | grep -q " 0 fetched" \
  && bad "job $j1: a worker fetched nothing" || ok "job $j1: both workers fetched their tensors"

# ---- a second job fetches nothing
j2=$(job_of tiny second)
[ "$(state "$j2")" = done ] && ok "job $j2: done" || bad "job $j2 ended $(state "$j2")"
n=$(grep -h "job $j2 model tiny: .* 0 fetched (0 bytes fetched;" cluster/worker-*.log | wc -l)
[ "$n" = 2 ] && ok "job $j2: zero bytes fetched on both workers" \
  || bad "job $j2 fetched: $(grep -h "job $j2 model" cluster/worker-*.log)"
"$SC" export "$j2" --out out2 >/dev/null
same_adapter ref out2 && ok "job $j2: bit-identical" || bad "job $j2: adapters differ"
# The planner counted what each stage would fetch: the first job all of its
# segment, the second nothing (it chose the order whose caches hold it).
r1=$(q "select reason from placements where job_id = $j1 and stage = 0")
r2=$(q "select reason from placements where job_id = $j2 and stage = 0")
echo "$r1" | grep -Eq "to fetch first \(6 steps to run\) stage 0 (0\.[1-9]|[1-9])" &&
  echo "$r2" | grep -q "to fetch first (6 steps to run) stage 0 0.0 MB 0.00 s, stage 1 0.0 MB" &&
  ok "placements record what each stage fetches (job $j1 its segments, job $j2 nothing)" ||
  bad "placement reasons: '$r1' / '$r2'"

# ---- a restarted worker reports its cache; a corrupted file is fetched again
kill -TERM "$(cat cluster/worker-1.pid)"
for _ in $(seq 1 50); do kill -0 "$(cat cluster/worker-1.pid)" 2>/dev/null || break; sleep 0.2; done
victim=$(ls -S cluster/cache-1 | grep -E '^[0-9a-f]{64}$' | head -1)
cached1=$(ls cluster/cache-1 | grep -cE '^[0-9a-f]{64}$')
printf '\x01\x02\x03\x04' | dd of="cluster/cache-1/$victim" bs=1 seek=100 conv=notrunc 2>/dev/null
start_worker 1
idle_workers 2 || bad "worker-1 did not come back"
w1=$(q "select id from workers where name = 'worker-1'")
for _ in $(seq 1 50); do  # the new process's register (the old one may still count as idle)
  n=$(q "select count(*) from worker_tensors where worker_id = $w1")
  [ "$n" = "$cached1" ] && break
  sleep 0.2
done
[ "$n" = "$cached1" ] && ok "restarted worker-1 reported its $n cached tensors" \
  || bad "worker_tensors of worker-1: $n, its cache holds $cached1"
j3=$(job_of tiny third)
[ "$(state "$j3")" = done ] && ok "job $j3: done" || bad "job $j3 ended $(state "$j3")"
grep -q "cached tensor $victim is corrupted" cluster/worker-1.log \
  && ok "the corrupted cache file was detected" || bad "corruption not detected"
# (The restarted worker may have been measured faster: its segment, and so
# what else it fetches, can change.)
grep "job $j3 model tiny" cluster/worker-1.log | grep -qv " 0 fetched" \
  && ok "job $j3: worker-1 fetched the corrupted tensor again" \
  || bad "job $j3: $(grep -h "job $j3 model" cluster/worker-*.log)"
"$SC" export "$j3" --out out3 >/dev/null
same_adapter ref out3 && ok "job $j3: bit-identical" || bad "job $j3: adapters differ"
[ "$(sha256sum "cluster/cache-1/$victim" | cut -c1-64)" = "$victim" ] \
  && ok "the cache file is whole again" || bad "cache file $victim still corrupt"

# ---- a broken transfer: the coordinator's file is cut short mid-model; the
# assignment fails UNAVAILABLE (not the job), the tensors that came stay
# cached, and once the file is whole again the job finishes with the
# adapters of the single-process engine
"$SC" make-model --out flaky --layers 4 --heads 4 --embd 64 --vocab 300 --positions 64 \
  --random-norms --seed 9 >/dev/null
"$SC" finetune --model flaky --data data.txt "${JOB_OPTS[@]}" --threads 1 --quiet --out ref-flaky
"$SC" models add flaky-m flaky >/dev/null || bad "models add flaky-m"
cp flaky/model.safetensors flaky.whole
truncate -s $(($(stat -c %s flaky.whole) / 2)) flaky/model.safetensors
j5=$("$SC" submit --model flaky-m --data data.txt "${JOB_OPTS[@]}" --stages 2)
for _ in $(seq 1 100); do
  grep -q "job $j5 .*UNAVAILABLE\|UNAVAILABLE.*job $j5" cluster/coordinator.log && break
  q "select message from events where job_id = $j5" | grep -q UNAVAILABLE && break
  sleep 0.2
done
q "select message from events where job_id = $j5" | grep -q "chunk" \
  && ok "job $j5: a broken transfer makes the assignment fail, not the job" \
  || bad "job $j5 events: $(q "select message from events where job_id = $j5")"
[ "$(state "$j5")" != failed ] || bad "job $j5 failed on a broken transfer"
cp flaky.whole flaky/model.safetensors
"$SC" watch "$j5" >/dev/null 2>&1
[ "$(state "$j5")" = done ] && ok "job $j5: done once the transfer could finish" \
  || bad "job $j5 ended $(state "$j5")"
"$SC" export "$j5" --out out5 >/dev/null
same_adapter ref-flaky out5 && ok "job $j5: bit-identical" || bad "job $j5: adapters differ"

# ---- a tensor whose bytes no longer match the manifest: refused by name, never used
"$SC" models add other-m other >/dev/null || bad "models add other-m"
"$SC" models show other-m --json > other.json
read -r tname toff tsha < <(python3 -c 'import json,sys
t = [t for t in json.load(open("other.json"))["manifest"] if t["name"].endswith("h.3.mlp.c_fc.weight")][0]
print(t["name"], t["offset"], t["sha256"])')
printf '\x55\x55\x55\x55' | dd of=other/model.safetensors bs=1 seek=$((toff + 8)) conv=notrunc 2>/dev/null
j4=$("$SC" submit --model other-m --data data.txt "${JOB_OPTS[@]}" --stages 2)
"$SC" watch "$j4" >/dev/null 2>&1
"$SC" status "$j4" > st4.txt
[ "$(state "$j4")" = failed ] && grep -q "$tname" st4.txt && grep -q "sha256 mismatch" st4.txt \
  && ok "a tensor whose sha256 mismatches: the job fails naming it" \
  || bad "mismatch: job $j4 $(state "$j4"): $(cat st4.txt)"
n=$(grep -c "tensor '$tname'.*fetching it again" cluster/worker-*.log | awk -F: '{s += $2} END {print s}')
[ "$n" -ge 1 ] && ok "the mismatched tensor was fetched a second time" || bad "no second fetch"
ls cluster/cache-*/ | grep -q "$tsha" && bad "the mismatched tensor is in a cache" \
  || ok "the mismatched tensor is in no cache"

# ---- peer fetch: a third worker with an empty cache, whose link to the
# coordinator is (said to be) slower than to the others, fetches what they
# cache from them, each tensor checked as ever
start_worker 3
idle_workers 3 || bad "worker-3 did not register"
w3=$(q "select id from workers where name = 'worker-3'")
for _ in $(seq 1 100); do  # its links, measured at register
  [ "$(q "select count(*) from links where from_worker = $w3")" -ge 3 ] && break
  sleep 0.2
done
q "update links set mbit_s = 1 where from_worker = $w3 and to_worker = 0"
# The scheduler weighs fetching: a short job of two stages takes the two
# workers that cache the model over worker-3, which would fetch it over 1
# Mbit/s, however fast worker-3 computes.
j5b=$("$SC" submit --model tiny --data data.txt "${JOB_OPTS[@]}" --stages 2)
"$SC" watch "$j5b" >/dev/null 2>&1
on=$(q "select group_concat(w.name) from placements p join workers w on w.id = p.worker_id
        where p.job_id = $j5b and p.version = (select max(version) from placements
        where job_id = $j5b) order by p.stage")
[ "$(state "$j5b")" = done ] && ! grep -q worker-3 <<< "$on" \
  && ok "job $j5b (short) placed on the workers that cache the model: $on" \
  || bad "job $j5b: on '$on', $(state "$j5b")"
j6=$("$SC" submit --model tiny --data data.txt "${JOB_OPTS[@]}" --stages 3)
"$SC" watch "$j6" >/dev/null 2>&1
[ "$(state "$j6")" = done ] && ok "job $j6 on 3 workers: done" || bad "job $j6 ended $(state "$j6")"
# The planner priced worker-3's fetch over its peers' links, as it fetches,
# not over its 1 Mbit/s link to the coordinator.
s3=$(q "select p.stage from placements p where p.job_id = $j6 and p.worker_id = $w3
        order by p.version desc limit 1")
reason=$(q "select reason from placements where job_id = $j6 order by version desc limit 1")
read -r mb secs < <(sed -n "s/.* stage $s3 \([0-9.]*\) MB \([0-9.]*\) s.*/\1 \2/p" <<< "$reason")
awk -v mb="${mb:-0}" -v s="${secs:-1e9}" 'BEGIN { exit !(mb > 0 && s < mb * 8 / 100) }' \
  && ok "worker-3's fetch priced over its peers' links: $mb MB in $secs s" \
  || bad "worker-3's fetch (stage $s3): '$mb' MB in '$secs' s ($reason)"
line=$(grep "job $j6 model tiny" cluster/worker-3.log)
fetched=$(sed -n 's/.* \([0-9]*\) fetched .*/\1/p' <<<"$line")
peers=$(sed -n 's/.*; \([0-9]*\) tensors, .* from peers.*/\1/p' <<<"$line")
[ -n "$fetched" ] && [ "$fetched" -gt 0 ] && [ "$peers" = "$fetched" ] \
  && ok "worker-3 fetched its $fetched tensors from its peers" || bad "peer fetch: $line"
"$SC" export "$j6" --out out6 >/dev/null
same_adapter ref out6 && ok "job $j6: bit-identical" || bad "job $j6: adapters differ"
n=$(q "select count(*) from worker_tensors where worker_id = $w3")
[ "$n" = "$fetched" ] && ok "worker-3 reported its cache after fetching ($n tensors)" \
  || bad "worker_tensors of worker-3: $n, fetched $fetched"

# ---- models rm
j7=$("$SC" submit --model tiny --data data.txt "${LONG_JOB_OPTS[@]}" --stages 2)
"$SC" models rm tiny > rm.txt 2>&1
[ $? -ne 0 ] && grep -q "in use by job $j7" rm.txt && ok "models rm of a model a job uses: refused" \
  || bad "models rm under job $j7: $(cat rm.txt)"
"$SC" cancel "$j7" >/dev/null
"$SC" models rm other-m >/dev/null && ! "$SC" models show other-m >/dev/null 2>&1 \
  && [ "$(q "select count(*) from model_tensors t left join models m on m.id = t.model_id where m.id is null")" = 0 ] \
  && ok "models rm: the model and its tensors are gone" || bad "models rm"

# ---- a worker killed in the middle of a download finishes after its restart
# A model whose embedding is 8 chunks of 4 MiB; every chunk asked for 1 s
# late (a test-only delay), 4 at a time: the worker is killed once the
# first chunks are in its cache's partial file.
"$SC" make-model --out big --layers 2 --heads 4 --embd 512 --vocab 16384 --positions 64 \
  --seed 4 >/dev/null || bad "make-model big"
"$SC" models add bigm big >/dev/null || bad "models add bigm"
"$SC" finetune --model big --data data.txt "${JOB_OPTS[@]}" --threads 1 --quiet --out ref-big ||
  bad "finetune big"
(cd cluster || exit 1
 SPLITCHAIN_TEST_FETCH_DELAY_MS=1000 OMP_NUM_THREADS=1 \
   "$BUILD/worker/splitchain-worker" --coordinator "$SPLITCHAIN_COORDINATOR" --name worker-4 \
   --threads 1 --cache cache-4 --cache-limit 256M "${WORKER_TLS[@]}" >>worker-4.log 2>&1 &
 echo $! > worker-4.pid)
idle_workers 4 || bad "worker-4 did not register"
j8=$("$SC" submit --model bigm --data data.txt "${JOB_OPTS[@]}" --stages 1 --workers worker-4 \
     --name big)
got=0
# A partial file of the 8-chunk tensor (wte, 32 MiB; the 4 MiB tensors are
# one chunk each, done as soon as they are written) whose map records at
# least one chunk done: the data, then its mark, are what a restart resumes.
for _ in $(seq 1 300); do # 30 s
  for f in cluster/cache-4/*.part; do
    [ -f "$f" ] && [ "$(stat -c %s "$f")" -gt $((16 << 20)) ] &&
      od -An -tu1 -v "${f%.part}.map" 2>/dev/null | grep -qw 1 && got=1
  done
  [ "$got" = 1 ] && break
  sleep 0.1
done
kill -KILL "$(cat cluster/worker-4.pid)" && sleep 0.5
[ "$got" = 1 ] && ok "worker-4 killed with part of a tensor in its cache" ||
  bad "no partial transfer seen in cache-4"
start_worker 4
if "$SC" watch "$j8" >/dev/null 2>&1; then ok "job $j8 finished after worker-4 restarted"
else bad "job $j8 after worker-4 restarted: $(state "$j8")"; fi
grep -Eq "resuming at [1-7] of 8 chunks" cluster/worker-4.log &&
  ok "the transfer resumed where it stopped ($(grep -Eo "resuming at [0-9]+ of 8 chunks" \
       cluster/worker-4.log | head -1))" || bad "no resumed transfer in worker-4.log"
"$SC" export "$j8" --out out-big >/dev/null
same_adapter ref-big out-big && ok "job $j8: bit-identical to one process" ||
  bad "job $j8: adapters differ"
finish
