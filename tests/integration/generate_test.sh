#!/usr/bin/env bash
# generate_test.sh — generation through workers: a Llama-family job trained
# across 3 workers, then `splitchain generate --job` runs the prompt through
# those workers (each keeping a key/value cache for its layers) and gives the
# same greedy ids as one process with the exported adapter; so does
# `--workers` with the adapter given by hand. Bad requests fail clearly.
#   generate_test.sh BUILD_DIR WORK_DIR
source "$(dirname "$0")/lib.sh" "$1" "$2"
make_fixture
"$SC" make-model --out llama --type mistral --layers 4 --heads 4 --kv-heads 2 --embd 64 \
  --inner 96 --vocab 300 --positions 64 --sliding-window 8 --random-norms --seed 9 \
  >/dev/null || bad "make-model"
"$ROOT/deploy/launch.sh" start cluster 3 >/dev/null || { bad "cluster start"; finish; exit 1; }

job=$("$SC" submit --model llama --data data.txt "${JOB_OPTS[@]}" --stages 3 \
      --checkpoint-every 3 --name gen)
"$SC" watch "$job" >/dev/null || bad "job $job ended $(state "$job")"
"$SC" export "$job" --out adapter >/dev/null || bad "export"

ids() { sed -n 's/.*"ids":\[\([0-9,]*\)\].*/\1/p'; }
Q=(--prompt-ids 7,99,31,4,250,18,77,3,140,62,11 --max-new-tokens 20)
P=("${Q[@]}" --json)
one=$("$SC" generate --model llama --adapter adapter "${P[@]}" | ids)
chain=$("$SC" generate --job "$job" "${P[@]}" | ids)
[ -n "$one" ] && [ "$one" = "$chain" ] && ok "--job: the 3-worker chain gives one process's ids ($one)" ||
  bad "--job: chain '$chain' vs one process '$one'"

urls=$("$SC" workers --json | python3 -c 'import json,sys; print(",".join(w["address"] for w in json.load(sys.stdin)))')
byhand=$("$SC" generate --model llama --adapter adapter --workers "$urls" "${P[@]}" | ids)
[ "$one" = "$byhand" ] && ok "--workers: same ids" || bad "--workers: '$byhand' vs '$one'"
base=$("$SC" generate --model llama --workers "$urls" "${P[@]}" | ids)
base1=$("$SC" generate --model llama "${P[@]}" | ids)
[ -n "$base" ] && [ "$base" = "$base1" ] && ok "--workers without an adapter: the base model's ids" ||
  bad "base model: chain '$base' vs one process '$base1'"

# --stop: two bytes of the greedy text itself; the ids end with the one that
# completes their first occurrence, through the job's workers as in one
# process, and streaming prints the text up to it, nothing after.
read -r stophex want wanthex < <(python3 - "$one" <<'EOF'
import sys
ids = [int(i) for i in sys.argv[1].split(",")]
piece = lambda i: bytes([i]) if i < 256 else b"<%d>" % i
text = b"".join(map(piece, ids))
k = next(k for k in range(2, len(text) - 1) if 0 not in text[k:k + 2] and 10 not in text[k:k + 2])
stop = text[k:k + 2]
end = text.find(stop) + 2
m = next(m for m in range(1, len(ids) + 1) if len(b"".join(map(piece, ids[:m]))) >= end)
print(stop.hex(), ",".join(map(str, ids[:m])), text[:end].hex())
EOF
)
stop=$(printf "$(sed 's/../\\x&/g' <<<"$stophex")")
got1=$("$SC" generate --model llama --adapter adapter "${P[@]}" --stop "$stop" | ids)
gotj=$("$SC" generate --job "$job" "${P[@]}" --stop "$stop" | ids)
[ -n "$want" ] && [ "$got1" = "$want" ] && [ "$gotj" = "$want" ] &&
  ok "--stop: ids end at the first occurrence ($want)" || bad "--stop: '$got1' / '$gotj' vs '$want'"
hex=$("$SC" generate --job "$job" "${Q[@]}" --stop "$stop" 2>/dev/null | od -An -tx1 | tr -d ' \n')
[ "$hex" = "$wanthex" ] && ok "--stop: the stream ends right after the stop string" ||
  bad "--stop: streamed $hex, want $wanthex"

out=$("$SC" generate --job 999 --prompt hi 2>&1); rc=$?
[ $rc -eq 1 ] && grep -q "999" <<<"$out" && ok "an unknown job is refused" || bad "job 999: exit $rc: $out"
out=$("$SC" generate --model llama --workers tcp://127.0.0.1:1 --prompt hi --timeout-ms 2000 2>&1); rc=$?
[ $rc -eq 1 ] && ok "an unreachable worker is an error" || bad "unreachable worker: exit $rc: $out"
out=$("$SC" generate --model llama --workers "$urls" --prompt-ids 1,2 --max-new-tokens 80 2>&1); rc=$?
[ $rc -eq 1 ] && grep -q "positions" <<<"$out" && ok "a prompt too long for the model is refused" ||
  bad "too long: exit $rc: $out"
finish
