#!/usr/bin/env bash
# run.sh — the whole test suite, as CI runs it on a fresh Debian 12 machine:
# installs what it needs, checks formatting, builds with -Werror (with the
# CUDA backend whenever nvcc is present), runs every test, then rebuilds
# with AddressSanitizer + UBSan and runs the unit and CLI tests again, and
# builds the daemons with ThreadSanitizer and runs the fault, lifecycle,
# recovery and chaos tests on them (any report fails the run).
#   bash tests/run.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
JOBS=$(nproc)

bash deploy/install-deps.sh

echo "== clang-format"
files=$(git ls-files '*.c' '*.h' '*.cc' '*.cu' '*.cuh' 2>/dev/null || find . -name '*.[ch]' -not -path './build*')
clang-format --dry-run --Werror $files
echo "formatting ok"

echo "== venv for the PyTorch / PEFT reference tests"
bash tests/ref/setup-venv.sh "$ROOT/build/pyenv"

echo "== build"
cmake -S . -B build -DSC_WERROR=ON -DSC_TEST_VENV="$ROOT/build/pyenv" > build-configure.log ||
  { cat build-configure.log; exit 1; }
grep "splitchain:" build-configure.log
cmake --build build -j"$JOBS"

echo "== tests"
(cd build && ctest --output-on-failure -j1)

echo "== AddressSanitizer + UBSan: unit and CLI tests"
cmake -S . -B build-asan -DSC_WERROR=ON -DSC_SANITIZE=ON -DSC_CUDA=OFF \
  -DCMAKE_BUILD_TYPE=Debug -DSC_TEST_VENV="$ROOT/build/pyenv" >/dev/null
cmake --build build-asan -j"$JOBS"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
  LSAN_OPTIONS=suppressions="$ROOT/tests/lsan.supp" \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -L 'unit|cli')

echo "== ThreadSanitizer: the daemons under the fault, lifecycle, recovery, chaos and metrics tests"
cmake -S . -B build-tsan -DSC_WERROR=ON -DSC_TSAN=ON -DSC_CUDA=OFF >/dev/null
cmake --build build-tsan -j"$JOBS" --target splitchain splitchain-coordinator splitchain-worker \
  sc_reftool stale_dialer
rm -rf build-tsan/tsan && mkdir -p build-tsan/tsan
export TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1 log_path=$ROOT/build-tsan/tsan/report suppressions=$ROOT/tests/tsan.supp"
# Steps run ~10x slower here: shorter jobs still outlast the faults.
export RECOVERY_STEPS=2500 STEPS_PER_FAULT=100
tsan_failed=0
for t in fault lifecycle recovery chaos metrics; do
  echo "-- $t"
  bash "tests/integration/${t}_test.sh" "$ROOT/build-tsan" "$ROOT/build-tsan/work-$t" || tsan_failed=1
done
unset RECOVERY_STEPS STEPS_PER_FAULT
if compgen -G "build-tsan/tsan/report.*" >/dev/null; then
  cat build-tsan/tsan/report.*
  echo "ThreadSanitizer reported the races above"
  exit 1
fi
[ "$tsan_failed" -eq 0 ] || { echo "an integration test failed under ThreadSanitizer"; exit 1; }
echo "ThreadSanitizer: no reports"

echo "== libFuzzer: every decoder of outside bytes, 20 s each from its corpus"
bash tests/fuzz/run.sh build-fuzz 20
