#!/usr/bin/env bash
# precision_bench.sh — issue 18's precision benchmark: one LoRA training step
# (r=8 on every projection, AdamW) with the frozen base in fp32, bf16, int8
# and nf4, and int8 and nf4 under --precision bf16 (rows "int8 (bf16
# compute)", "nf4 (bf16 compute)": the weights dequantized to bf16 for bf16
# products where the CPU has them) (sc_bench_base, one process per shape and thread count, each
# format the median of --steps steps after one untimed) beside PyTorch's
# step in float32 and under CPU autocast-bf16 (bench/torch_lora_step.py
# --autocast bf16, HF + PEFT) on the same shape, B x T and thread count, in
# one run. Prints the CPU model and its bf16 flags (avx512_bf16, amx_*),
# OpenBLAS's core and our bf16 path, then one markdown table per shape and
# thread count and the ratios against the issue's targets:
#   on a CPU with bf16 instructions: our bf16 >= 1.7x our fp32 and >= 1.5x
#   torch autocast-bf16 (speed); on one without: our bf16 >= 0.9x our fp32
#   (judged so too where the CPU's bf16 instructions are no faster than its
#   fp32 ones, and our bf16 path is therefore the fp32 tiles: an Intel core
#   with AVX512-BF16 and no AMX);
#   everywhere: nf4 base memory <= 0.3x bf16's and nf4 speed >= 0.7x bf16's
#   (judged on the "nf4 (bf16 compute)" row: a job that wants bf16 speed
#   asks for --precision bf16 with its nf4 base; the fp32-compute nf4 row's
#   ratio is shown beside it, without a target).
# "base memory" is the frozen projections' bytes (weights + scales) in that
# format (sc_bench_base's "projections MB"); the stage's whole memory (with
# embeddings, head, LoRA, AdamW, activations) is shown beside it.
#   bash bench/precision_bench.sh [--shapes "gpt2 tinyllama-1.1b"] [--threads "1 2"]
#                                 [--steps K] [--tries N] [--max-load X] [--wait S]
# B x T per shape: gpt2 4x256, tinyllama-1.1b 1x128 (as bench/run.sh), others
# 4x128; SC_PRECISION_BT="shape:BxT ..." overrides. Each measurement waits
# (up to --wait s, default 300) for other processes to keep no more than
# --max-load CPUs busy (default 0.2; bench/load.sh) and is rerun (up to
# --tries times, default 2) while they kept more busy during it: for our
# side only the disturbed formats run again; the least disturbed try is
# kept and its load shown (the "load" column). Needs the reference venv
# (tests/ref/setup-venv.sh; used read-only) and, for tinyllama-1.1b, about
# 4.4 GB of disk for the fp32 model and ~10 GB of memory.
# Environment: SC_PRECISION_BUILD (a build folder with bench/sc_bench_base;
# default build-bench, built here when it lacks it), SC_TEST_VENV (default
# build/pyenv), SC_PRECISION_KEEP=1 keeps the work folder (models, logs).
# shellcheck disable=SC2034 # MAXLOAD and WAIT are bench/load.sh's
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHAPES="gpt2 tinyllama-1.1b"
THREADS="1 2"
STEPS=3
TRIES=2
MAXLOAD=0.2
WAIT=300
usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 && !/shellcheck/ {print}' "$0" >&2; exit 2; }
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || usage
  case "$1" in
    --shapes) SHAPES=$2 ;; --threads) THREADS=$2 ;; --steps) STEPS=$2 ;; --tries) TRIES=$2 ;;
    --max-load) MAXLOAD=$2 ;; --wait) WAIT=$2 ;;
    *) usage ;;
  esac
  shift 2
done
if ! [[ "$STEPS" =~ ^[1-9][0-9]*$ && "$TRIES" =~ ^[1-9][0-9]*$ ]]; then usage; fi
BUILD=${SC_PRECISION_BUILD:-$ROOT/build-bench}
VENV=${SC_TEST_VENV:-$ROOT/build/pyenv}
BENCH=$BUILD/bench/sc_bench_base
WORK=$(mktemp -d /tmp/precision-bench.XXXXXX)
cleanup() {
  if [ "${SC_PRECISION_KEEP:-0}" = 1 ]; then echo "precision_bench: kept $WORK" >&2
  else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
. "$ROOT/bench/load.sh"

if [ ! -x "$BENCH" ]; then
  { cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DSC_CUDA=OFF &&
    cmake --build "$BUILD" -j"$(nproc)" --target sc_bench_base; } >"$WORK/build.log" 2>&1 ||
    { cat "$WORK/build.log" >&2; exit 1; }
fi
[ -x "$VENV/bin/python" ] ||
  { echo "precision_bench: no venv at $VENV (tests/ref/setup-venv.sh $VENV)" >&2; exit 1; }

bt_of() { # SHAPE -> "B T"
  local s
  for s in ${SC_PRECISION_BT:-}; do
    if [ "${s%%:*}" = "$1" ]; then s=${s#*:}; echo "${s%x*} ${s#*x}"; return; fi
  done
  case $1 in gpt2) echo "4 256" ;; tinyllama-1.1b) echo "1 128" ;; *) echo "4 128" ;; esac
}

# Our rows: "| fmt | step s | tokens/s | ... | load |" of sc_bench_base,
# one file per shape and thread count; formats whose load was over MAXLOAD
# run again (up to TRIES in all), the least disturbed row kept.
ours() { # SHAPE THREADS B T OUT
  local shape=$1 t=$2 B=$3 T=$4 out=$5 try fmts="fp32,bf16,int8,nf4,int8-bf16,nf4-bf16" redo f row
  : > "$out"
  for ((try = 1; try <= TRIES; try++)); do
    wait_quiet
    echo "  splitchain $shape, $t thread(s), B=$B T=$T: $fmts (try $try) ..." >&2
    OMP_NUM_THREADS=$t OPENBLAS_NUM_THREADS=$t "$BENCH" --shape "$shape" --threads "$t" \
      --batch "$B" --seq "$T" --steps "$STEPS" --formats "$fmts" --dir "$WORK/model-$shape" \
      > "$WORK/ours.out" 2> "$WORK/ours.err" || { cat "$WORK/ours.err" >&2; return 1; }
    grep -E '^(CPU|OpenBLAS):' "$WORK/ours.out" > "$WORK/header.txt"
    redo=""
    for f in ${fmts//,/ }; do
      row=$(grep -E "^\| $f \|" "$WORK/ours.out" || true)
      [ -n "$row" ] || continue
      load=$(awk -F'|' '{gsub(/ /, "", $(NF-1)); print $(NF-1)}' <<<"$row")
      old=$(grep -E "^\| $f \|" "$out" || true)
      if [ -z "$old" ] || awk -v a="$load" -v b="$(awk -F'|' '{gsub(/ /, "", $(NF-1));
           print $(NF-1)}' <<<"$old")" 'BEGIN {exit !(a < b)}'; then
        grep -vE "^\| $f \|" "$out" > "$out.tmp" || true
        echo "$row" >> "$out.tmp" && mv "$out.tmp" "$out"
      fi
      quiet "$load" || redo="$redo,$f"
    done
    [ -n "$redo" ] || break
    fmts=${redo#,}
    echo "  other processes kept CPUs busy during $fmts: again" >&2
  done
}

# PyTorch's JSON line, least disturbed of up to TRIES runs.
torch_step() { # SHAPE THREADS B T AUTOCAST
  local best="" line load bl i
  for ((i = 1; i <= TRIES; i++)); do
    wait_quiet
    echo "  pytorch $1, $2 thread(s), autocast $5 (try $i) ..." >&2
    line=$(OMP_NUM_THREADS=$2 "$VENV/bin/python" "$ROOT/bench/torch_lora_step.py" \
      --config "$WORK/model-$1/config.json" --batch "$3" --seq "$4" --rank 8 --threads "$2" \
      --steps "$STEPS" --warmup-steps 1 --autocast "$5" 2>>"$WORK/torch.err" | grep '^{') ||
      { tail -5 "$WORK/torch.err" >&2; return 1; }
    load=$(sed -n 's/.*"foreign_load":\([-0-9.]*\).*/\1/p' <<<"$line")
    bl=$(sed -n 's/.*"foreign_load":\([-0-9.]*\).*/\1/p' <<<"$best")
    if [ -z "$best" ] || awk -v a="$load" -v b="$bl" 'BEGIN {exit !(a < b)}'; then best=$line; fi
    quiet "$load" && break
    echo "  other processes kept $load CPUs busy: again" >&2
  done
  echo "$best"
}

for shape in $SHAPES; do
  read -r B T <<<"$(bt_of "$shape")"
  for t in $THREADS; do
    ours "$shape" "$t" "$B" "$T" "$WORK/ours-$shape-$t.md"
    torch_step "$shape" "$t" "$B" "$T" none > "$WORK/torch-$shape-$t-none.json"
    torch_step "$shape" "$t" "$B" "$T" bf16 > "$WORK/torch-$shape-$t-bf16.json"
  done
  # The model of the next shape replaces this one (tinyllama-1.1b: 4.4 GB).
  rm -rf "$WORK/model-$shape"
done

"$VENV/bin/python" - "$WORK" "$SHAPES" "$THREADS" "$STEPS" "$MAXLOAD" <<'PY'
import json, os, sys
work, shapes, threads, steps, maxload = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), \
    sys.argv[4], float(sys.argv[5])
import torch
flags = ""
for l in open("/proc/cpuinfo"):
    if l.startswith("flags"):
        flags = l.split(":", 1)[1].split()
        break
has_bf16 = "avx512_bf16" in flags or "amx_bf16" in flags
# the targets "with bf16 instructions" are judged where our automatic bf16
# path is oneDNN's matmul, i.e. where those instructions beat fp32 ones
# (sc_backend_cpu_bf16_matmul_pays); an Intel core with AVX512-BF16 and no
# AMX takes the fp32 tiles and is judged as a CPU without bf16 speed
fast_bf16 = any("bf16 path: bf16 matmul" in l for l in open(os.path.join(work, "header.txt")))
print("\n## LoRA training step by frozen-base precision: splitchain vs PyTorch (CPU)\n")
# sc_bench_base's header, less what differs per run (threads, shape, steps)
print("\n".join(l.rstrip().split("; %s threads" % l.split(" threads;")[0].split("; ")[-1])[0]
                if l.startswith("OpenBLAS") and " threads;" in l else l.rstrip()
                for l in open(os.path.join(work, "header.txt"))))
print("PyTorch %s (oneDNN %s), HF + PEFT; %d cores; median of %s timed steps (ours), mean of "
      "%s (PyTorch), after 1 untimed" % (torch.__version__,
      "yes" if torch.backends.mkldnn.is_available() else "no", os.cpu_count(), steps, steps))
print("speed vs = that row's step time / this row's (> 1: this one is faster); base MB = the "
      "frozen projections' bytes (weights + scales); load = CPUs other processes kept busy\n")
checks = []
nan = float("nan")
def ok(x, target): return "met" if x >= target else "NOT met"
for shape in shapes:
    for t in threads:
        ours = {}
        p = os.path.join(work, "ours-%s-%s.md" % (shape, t))
        if os.path.exists(p):
            for l in open(p):
                c = [x.strip() for x in l.strip().strip("|").split("|")]
                ours[c[0]] = {"step_s": float(c[1]), "tps": float(c[2]), "stage_mb": float(c[4]),
                              "base_mb": float(c[5]), "load": float(c[8])}
        torch_r = {}
        for ac in ("none", "bf16"):
            try:
                torch_r[ac] = json.loads(open(os.path.join(work, "torch-%s-%s-%s.json" %
                                                           (shape, t, ac))).read())
            except (OSError, ValueError):
                pass
        B = T = "?"
        if torch_r:
            r = next(iter(torch_r.values()))
            B, T = r["B"], r["T"]
        print("### %s, %s thread(s), B=%s T=%s\n" % (shape, t, B, T))
        print("| step | step s | tokens/s | speed vs our fp32 | speed vs our bf16 | base MB | "
              "stage MB | load |")
        print("|---|---|---|---|---|---|---|---|")
        f32 = ours.get("fp32", {}).get("step_s", nan)
        b16 = ours.get("bf16", {}).get("step_s", nan)
        label = {"int8-bf16": "int8 (bf16 compute)", "nf4-bf16": "nf4 (bf16 compute)"}
        for f in ("fp32", "bf16", "int8", "nf4", "int8-bf16", "nf4-bf16"):
            r = ours.get(f)
            if not r:
                print("| splitchain %s | not run | | | | | | |" % label.get(f, f))
                continue
            print("| splitchain %s | %.3f | %.0f | %.2fx | %.2fx | %.1f | %.1f | %.2f |" % (
                label.get(f, f), r["step_s"], r["tps"], f32 / r["step_s"], b16 / r["step_s"],
                r["base_mb"], r["stage_mb"], r["load"]))
        for ac, name in (("none", "PyTorch fp32"), ("bf16", "PyTorch autocast-bf16")):
            r = torch_r.get(ac)
            if not r:
                print("| %s | failed | | | | | | |" % name)
                continue
            print("| %s | %.3f | %.0f | %.2fx | %.2fx | | | %.2f |" % (
                name, r["step_s"], r["tokens_per_s"], f32 / r["step_s"], b16 / r["step_s"],
                r["foreign_load"]))
        tb = torch_r.get("bf16", {}).get("step_s", nan)
        n4 = ours.get("nf4-bf16", {})
        bfm = ours.get("bf16", {}).get("base_mb", nan)
        rows = []
        x = f32 / b16
        if fast_bf16:
            rows.append(("our bf16 vs our fp32 (speed)", x, ">= 1.7x", ok(x, 1.7)))
            y = tb / b16
            rows.append(("our bf16 vs PyTorch autocast-bf16 (speed)", y, ">= 1.5x", ok(y, 1.5)))
        else:
            rows.append(("our bf16 vs our fp32 (speed)", x, ">= 0.9x", ok(x, 0.9)))
            y = tb / b16
            rows.append(("our bf16 vs PyTorch autocast-bf16 (speed)", y, "(no target)", ""))
        m = n4.get("base_mb", nan) / bfm
        rows.append(("nf4 base memory vs bf16's", m, "<= 0.3x", "met" if m <= 0.3 else "NOT met"))
        s = b16 / n4.get("step_s", nan)
        rows.append(("nf4 (bf16 compute) speed vs bf16's", s, ">= 0.7x", ok(s, 0.7)))
        s32 = b16 / ours.get("nf4", {}).get("step_s", nan)
        rows.append(("nf4 (fp32 compute) speed vs bf16's", s32, "(no target)", ""))
        i8 = b16 / ours.get("int8-bf16", {}).get("step_s", nan)
        rows.append(("int8 (bf16 compute) speed vs bf16's", i8, "(no target)", ""))
        tf = torch_r.get("none", {}).get("step_s", nan)
        rows.append(("PyTorch autocast-bf16 vs PyTorch fp32 (speed)", tf / tb, "(no target)", ""))
        print("\n| ratio | value | target | |\n|---|---|---|---|")
        for n, v, tg, res in rows:
            print("| %s | %.2fx | %s | %s |" % (n, v, tg, res))
            if res:
                checks.append((shape, t, n, res))
        print()
met = sum(1 for c in checks if c[3] == "met")
if has_bf16 and not fast_bf16:
    print("This CPU has bf16 instructions, but they multiply no faster than its fp32 ones, so "
          "our bf16 path is the fp32 tiles: judged against the targets for a CPU without "
          "bf16 speed.\n")
print("targets met: %d of %d\n" % (met, len(checks)))
for c in checks:
    if c[3] != "met":
        print("- NOT met: %s, %s thread(s): %s" % c[:3])
PY
