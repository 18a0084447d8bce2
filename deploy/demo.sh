#!/usr/bin/env bash
# demo.sh — splitchain end to end on one machine, with embedded defaults:
# installs the Debian packages, builds, writes a small random Llama-family
# model (grouped-query attention, RMSNorm, rotary positions, SwiGLU) in the
# Hugging Face layout with the tokenizer the demo ships
# (deploy/demo-tokenizer.json, a byte-level BPE), writes a JSONL file of
# prompt/completion examples (questions about capitals in several
# phrasings, the loss on the answers), starts a coordinator and 3 workers
# (separate processes), fine-tunes LoRA adapters across the 3-stage chain
# with 5% of the examples held out (eval loss and perplexity every 50
# steps) while showing progress and the loss curves, answers questions put
# in a way it never saw by generating with the trained adapter through the
# chain's workers, exports the adapter in the PEFT format, and stops the
# processes. Every connection is mutual TLS, with a CA and certificates the
# demo makes in OUT_DIR/certs (deploy/certs.sh). The state stays in
# OUT_DIR/cluster/splitchain.db.
#   bash deploy/demo.sh [OUT_DIR]        (default: demo-run)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/demo-run}
BUILD=${SC_BUILD_DIR:-$ROOT/build-demo}
STEPS=${SC_DEMO_STEPS:-300}

bash "$ROOT/deploy/install-deps.sh"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target splitchain splitchain-coordinator splitchain-worker >/dev/null
SC="$BUILD/cli/splitchain"
export SC_BIN=$BUILD SC_THREADS=1 SC_PORT=${SC_PORT:-7700}
export SPLITCHAIN_COORDINATOR=tls+tcp://127.0.0.1:$SC_PORT

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# The cluster's CA and a certificate for each party (the CA is kept across runs).
bash "$ROOT/deploy/certs.sh" "$OUT/certs" coordinator worker cli >/dev/null
export SC_TLS_DIR=$OUT/certs SPLITCHAIN_TLS_CERT=$OUT/certs/cli.pem \
  SPLITCHAIN_TLS_KEY=$OUT/certs/cli.key SPLITCHAIN_TLS_CA=$OUT/certs/ca.pem
# Examples: questions about capitals in 8 phrasings by 4 askers, the loss on
# the answer only; 5% of them held out.
awk 'BEGIN {
  nc = split("France:Paris Japan:Tokyo Italy:Rome Spain:Madrid Egypt:Cairo Peru:Lima Kenya:Nairobi Norway:Oslo Chile:Santiago Cuba:Havana Greece:Athens Poland:Warsaw Ghana:Accra Nepal:Kathmandu Ireland:Dublin Canada:Ottawa Austria:Vienna Hungary:Budapest Portugal:Lisbon Sweden:Stockholm Finland:Helsinki Turkey:Ankara Iran:Tehran India:Delhi", c, " ")
  nt = split("What is the capital of %s?|Name the capital of %s.|Which city is the capital of %s?|Tell me the capital of %s.|The capital of %s is which city?|Capital of %s?|I wonder what the capital of %s is.|Do you know the capital of %s?", t, "|")
  na = split("Ana Ben Chen Dara", a, " ")
  for (i = 1; i <= nc; i++) { split(c[i], kv, ":");
    for (j = 1; j <= nt; j++) for (k = 1; k <= na; k++)
      printf "{\"prompt\": \"%s asks: " t[j] "\", \"completion\": \" %s.\"}\n", a[k], kv[1], kv[2] }
}' > "$OUT/capitals.jsonl"
# (made afresh each run: a few MB of random weights, seeded)
"$SC" make-model --out "$OUT/llama" --preset llama-tiny --layers 6 --heads 6 --kv-heads 2 \
    --embd 192 --inner 512 --vocab 1024 --positions 256
cp "$ROOT/deploy/demo-tokenizer.json" "$OUT/llama/tokenizer.json"

"$ROOT/deploy/launch.sh" stop "$OUT/cluster" >/dev/null 2>&1 || true
# The coordinator opens models and data only under OUT_DIR; the CLI
# presents the admin's token that launch.sh made.
SC_MODEL_ROOT=$OUT SC_DATA_ROOT=$OUT "$ROOT/deploy/launch.sh" start "$OUT/cluster" 3
export SPLITCHAIN_TOKEN
SPLITCHAIN_TOKEN=$(cat "$OUT/cluster/admin.token")
trap '"$ROOT/deploy/launch.sh" stop "$OUT/cluster" >/dev/null' EXIT
"$SC" workers
job=$("$SC" submit --model "$OUT/llama" --data "$OUT/capitals.jsonl" --name demo --stages 3 \
  --eval-split 0.05 --eval-every 50 --no-pack --steps "$STEPS" --batch 8 --seq 32 --micro 2 \
  --rank 8 --alpha 16 --targets all --lr 3e-3 --min-lr 3e-4 --warmup 10 --checkpoint-every 100)
echo "submitted job $job"
"$SC" watch "$job"
"$SC" status "$job"
echo
echo "generating through the chain's workers with the trained adapter:"
for q in "Eve asks: What is the capital of Peru?" "Eve asks: Name the capital of Japan."; do
  printf '%s' "$q"
  "$SC" generate --job "$job" --prompt "$q" --max-new-tokens 12 --stop "." 2>/dev/null
  echo
done
echo
"$SC" export "$job" --out "$OUT/adapter"
cat <<MSG

model:     $OUT/llama (config.json, model.safetensors, tokenizer.json)
data:      $OUT/capitals.jsonl (5% held out)
adapter:   $OUT/adapter (adapter_config.json + adapter_model.safetensors, PEFT format)
certs:     $OUT/certs (CA, coordinator, worker, cli; the CLI's via SPLITCHAIN_TLS_CERT/KEY/CA)
state:     $OUT/cluster/splitchain.db, e.g.
  sqlite3 -header -column $OUT/cluster/splitchain.db 'select * from v_job_progress'
  sqlite3 -header -column $OUT/cluster/splitchain.db 'select step, loss, eval_loss, eval_perplexity from v_loss_curve where job_id = $job and eval_loss is not null'
generate:  $SC generate --model $OUT/llama --adapter $OUT/adapter --prompt "Eve asks: Capital of Kenya?" --max-new-tokens 8 --stop .
MSG
