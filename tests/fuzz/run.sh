#!/usr/bin/env bash
# run.sh — builds the libFuzzer harnesses (clang, SC_FUZZ=ON, in BUILD_DIR)
# and runs each from its committed corpus for SECONDS (default 20). Any
# crash, leak, timeout or UBSan report fails the run; what a harness found
# is left in BUILD_DIR/fuzz-out/NAME/ (crash-*, leak-*, timeout-*) with its log.
#   bash tests/fuzz/run.sh BUILD_DIR [SECONDS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$1
SECS=${2:-20}
CC=clang cmake -S "$ROOT" -B "$BUILD" -DSC_FUZZ=ON -DSC_CUDA=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target fuzzers
names=$(sed -n '/^set(SC_FUZZERS/,/^)/p' "$ROOT/tests/fuzz/CMakeLists.txt" | grep -o 'fuzz_[a-z_]*')
failed=""
for n in $names; do
  out=$BUILD/fuzz-out/$n
  rm -rf "$out" && mkdir -p "$out/corpus"
  # New inputs go to a scratch corpus: the committed one stays as it is.
  if UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
     "$BUILD/tests/fuzz/$n" -max_total_time="$SECS" -timeout=10 -print_final_stats=1 \
       -artifact_prefix="$out/" "$out/corpus" "$ROOT/tests/fuzz/corpus/$n" >"$out/log" 2>&1; then
    echo "ok   $n: $(sed -n 's/stat::number_of_executed_units: *//p' "$out/log") executions"
  else
    echo "FAIL $n"
    grep -E -A30 "ERROR|runtime error" "$out/log" | head -60 || tail -40 "$out/log"
    failed="$failed $n"
  fi
done
[ -z "$failed" ] || { echo "fuzzers that failed:$failed"; exit 1; }
