#!/usr/bin/env bash
# generate_bench.sh — CPU single-stream greedy decode: `splitchain generate`
# in one process and over a 2-hop chain of local worker processes, next to
# PyTorch's eager generate() with its key/value cache on the same model files
# and thread counts, and against the memory roofline, in one run.
#   bash bench/generate_bench.sh [--shapes "smollm2-135m gpt2"] [--threads "1 2"]
#                                [--prompt N] [--new N] [--tries N] [--max-load X] [--wait S]
# A shape is a `splitchain make-model` preset (random weights, real shapes).
# The prompt: N (default 64) ids drawn with a fixed seed; N new ids (default
# 128), greedy. decode tokens/s = one-token forward steps per second on both
# sides (splitchain's tokens_per_s x (new - 1) / new: its clock also covers the
# pick after the prefill). Roofline: STREAM triad GB/s at the same thread
# count (bench/triad.c, sc_bench_triad) / the bytes of every fp32 weight in
# model.safetensors (a tied LM head counted once, with the embedding).
# Each measurement waits (up to --wait s, default 300) for other processes
# to keep no more than --max-load CPUs (default 0.2) busy, and is rerun (up to
# --tries, default 3) while they kept more busy during it; the least
# disturbed try is kept and its load shown. Needs the reference venv
# (build/pyenv, tests/ref/setup-venv.sh) and ~1.1 GB of temporary disk.
# Environment: SC_GENBENCH_BUILD (build folder, default build-genbench),
# SC_TEST_VENV, SC_GENBENCH_PORT (the chain's coordinator port, default 7791).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHAPES="smollm2-135m gpt2"
THREADS="1 2"
PROMPT=64
NEW=128
TRIES=3
usage() { sed -n '2,21p' "$0" >&2; exit 2; }
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || usage
  case "$1" in
    --shapes) SHAPES=$2 ;; --threads) THREADS=$2 ;; --prompt) PROMPT=$2 ;; --new) NEW=$2 ;;
    --tries) TRIES=$2 ;; --max-load) MAXLOAD=$2 ;; --wait) WAIT=$2 ;;
    *) usage ;;
  esac
  shift 2
done
BUILD=${SC_GENBENCH_BUILD:-$ROOT/build-genbench}
VENV=${SC_TEST_VENV:-$ROOT/build/pyenv}
PORT=${SC_GENBENCH_PORT:-7791}
PY=$VENV/bin/python
SC=$BUILD/cli/splitchain
WORK=$(mktemp -d)
CLUSTER=$WORK/cluster
stop_cluster() {
  [ -d "$CLUSTER" ] && SC_BIN=$BUILD "$ROOT/deploy/launch.sh" stop "$CLUSTER" >/dev/null || true
}
trap 'stop_cluster; rm -rf "$WORK"' EXIT
. "$ROOT/bench/load.sh"

{ cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DSC_CUDA=OFF &&
  cmake --build "$BUILD" -j"$(nproc)" --target splitchain splitchain-worker \
    splitchain-coordinator sc_bench_triad; } >"$WORK/build.log" 2>&1 ||
  { cat "$WORK/build.log" >&2; exit 1; }
[ -x "$PY" ] || bash "$ROOT/tests/ref/setup-venv.sh" "$VENV"

# The JSON line of the least disturbed of up to $TRIES runs of "$@", each
# printing one JSON line with "foreign_load"; TAG is added to it.
least_disturbed() {
  local tag=$1 best="" bload="" line load i
  shift
  for ((i = 1; i <= TRIES; i++)); do
    wait_quiet
    line=$("$@" | grep '^{' | tail -1)
    load=$(sed -n 's/.*"foreign_load": *\([-0-9.]*\).*/\1/p' <<<"$line")
    if [ -z "$best" ] || awk -v a="$load" -v b="$bload" 'BEGIN {exit !(a < b)}'; then
      best=$line bload=$load
    fi
    quiet "$load" && break
    echo "  other processes kept $load CPUs busy: again" >&2
  done
  echo "{\"tag\":\"$tag\",${best#\{}"
}

results=$WORK/results.jsonl
for t in $THREADS; do
  echo "memory bandwidth at $t thread(s) ..." >&2
  wait_quiet
  "$PY" "$ROOT/bench/gen_measure.py" -- env OMP_NUM_THREADS="$t" "$BUILD/bench/sc_bench_triad" \
    --threads "$t" | sed 's/^{/{"tag":"triad",/' >> "$results"
done

for shape in $SHAPES; do
  model=$WORK/model-$shape
  "$SC" make-model --preset "$shape" --out "$model" >/dev/null
  V=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["vocab_size"])' \
      "$model/config.json")
  ids=$("$PY" -c 'import random,sys; r=random.Random(7); n,V=map(int,sys.argv[1:]);
print(",".join(str(r.randrange(256, V)) for _ in range(n)))' "$PROMPT" "$V")
  # Weight bytes read per token: every tensor in the file, a tied head once.
  "$PY" - "$model" "$shape" >> "$results" <<'PY'
import json, struct, sys
d, shape = sys.argv[1:]
with open(f"{d}/model.safetensors", "rb") as f:
    h = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
cfg = json.load(open(f"{d}/config.json"))
tied = cfg.get("tie_word_embeddings", True)
n = 0
for name, t in h.items():
    if name == "__metadata__" or (tied and name == "lm_head.weight"):
        continue
    assert t["dtype"] == "F32", (name, t["dtype"])
    n += t["data_offsets"][1] - t["data_offsets"][0]
print(json.dumps({"tag": "weights", "shape": shape, "bytes": n, "tied": tied}))
PY
  G=(generate --model "$model" --prompt-ids "$ids" --max-new-tokens "$NEW" --json)
  for t in $THREADS; do
    echo "running $shape at $t thread(s): one process ..." >&2
    least_disturbed "sc1/$shape/$t" "$PY" "$ROOT/bench/gen_measure.py" -- \
      env OMP_NUM_THREADS="$t" "$SC" "${G[@]}" --threads "$t" >> "$results"
    echo "running $shape at $t thread(s): PyTorch ..." >&2
    least_disturbed "pt/$shape/$t" env OMP_NUM_THREADS="$t" "$PY" \
      "$ROOT/bench/torch_generate.py" --model "$model" --prompt-ids "$ids" --new "$NEW" \
      --threads "$t" >> "$results"
    echo "running $shape at $t thread(s): 2-worker chain ..." >&2
    SC_INSECURE=1 SC_BIN=$BUILD SC_PORT=$PORT SC_THREADS=$t SC_MODEL_ROOT=$WORK SC_DATA_ROOT=$WORK \
      "$ROOT/deploy/launch.sh" start "$CLUSTER" 2 >/dev/null
    export SPLITCHAIN_TOKEN
    SPLITCHAIN_TOKEN=$(cat "$CLUSTER/admin.token")
    urls=$("$SC" workers --coordinator "tcp://127.0.0.1:$PORT" --json |
           "$PY" -c 'import json,sys; print(",".join(w["address"] for w in json.load(sys.stdin)))')
    pids=$(cat "$CLUSTER"/worker-*.pid | paste -sd,)
    least_disturbed "sc2/$shape/$t" "$PY" "$ROOT/bench/gen_measure.py" --pids "$pids" -- \
      env OMP_NUM_THREADS=1 "$SC" "${G[@]}" --threads 1 --workers "$urls" >> "$results"
    stop_cluster
    rm -rf "$CLUSTER"
  done
  rm -rf "$model"
done

"$PY" - "$results" "$SHAPES" "$THREADS" "$NEW" "$PROMPT" <<'PY'
import json, os, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
shapes, threads = sys.argv[2].split(), [int(t) for t in sys.argv[3].split()]
new, prompt = int(sys.argv[4]), int(sys.argv[5])
by = {r["tag"]: r for r in rows}
triad = {r["threads"]: r for r in rows if r["tag"] == "triad"}
wbytes = {r["shape"]: r["bytes"] for r in rows if r["tag"] == "weights"}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
            if l.startswith("model name")), "?")
blas = next(iter(triad.values()))["blas"] if triad else "?"
pt0 = next((r for r in rows if r["tag"].startswith("pt/")), {})
step = (new - 1) / new  # splitchain's tokens_per_s counts new ids; steps are one fewer
print(f"\nCPU single-stream greedy decode, float32, prompt {prompt} ids, {new} new ids")
print(f"CPU: {cpu}, {os.cpu_count()} cores\nBLAS: {blas}")
print(f"PyTorch {pt0.get('torch', '?')}, transformers {pt0.get('transformers', '?')} "
      f"(attention: {pt0.get('attn', '?')})")
for t in threads:
    if t in triad:
        print(f"memory bandwidth, {t} thread(s): triad {triad[t]['triad_gbs']:.1f} GB/s, "
              f"read-only sum {triad[t]['read_gbs']:.1f} GB/s")
print()
hdr = ("shape", "weights MB", "thr", "sc prefill tok/s", "pt prefill tok/s", "sc decode tok/s",
       "pt decode tok/s", "sc / pt", "roofline tok/s", "% of roofline", "2-hop chain tok/s",
       "chain / one process", "same ids as pt", "other load sc / pt / chain")
print("| " + " | ".join(hdr) + " |")
print("|" + "---|" * len(hdr))
nan = float("nan")
for shape in shapes:
    for t in threads:
        s1, pt, s2 = (by.get(f"{k}/{shape}/{t}", {}) for k in ("sc1", "pt", "sc2"))
        d1 = s1.get("tokens_per_s", nan) * step
        d2 = s2.get("tokens_per_s", nan) * step
        dp = pt.get("tokens_per_s", nan)
        roof = triad[t]["triad_gbs"] * 1e9 / wbytes[shape] if t in triad else nan
        same = "yes" if s1.get("ids") and s1.get("ids") == pt.get("ids") else "no"
        print(f"| {shape} | {wbytes[shape] / 1e6:.0f} | {t} | "
              f"{s1.get('prefill_tokens_per_s', nan):.0f} | "
              f"{pt.get('prefill_tokens_per_s', nan):.0f} | {d1:.2f} | {dp:.2f} | "
              f"{d1 / dp:.2f}x | {roof:.1f} | {100 * d1 / roof:.0f}% | {d2:.2f} | "
              f"{d2 / d1:.2f} | {same} | {s1.get('foreign_load', nan):.2f} / "
              f"{pt.get('foreign_load', nan):.2f} / {s2.get('foreign_load', nan):.2f} |")
PY
