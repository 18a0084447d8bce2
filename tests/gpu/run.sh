#!/usr/bin/env bash
# run.sh [PACK_DIR] — the GPU checks, in one go, on a machine with an NVIDIA
# GPU and the CUDA 13 toolkit. PACK_DIR (default: this script's directory) is
# what tests/gpu/pack.sh made from a build on another machine: bin/ holds the
# programs, lib/ the shared libraries they need beyond the system and CUDA.
# Runs every program in gpu_tests.txt (absent ones are reported and skipped)
# and prints a summary table last. Exits 1 if any program failed, or skipped
# (exit 77) although nvidia-smi lists a GPU.
#   SC_GPU_TIMEOUT  seconds allowed per program (default 300)
#   SC_GPU_LOGS     a directory to keep each program's output in (optional)
set -uo pipefail
pack=$(cd "${1:-$(dirname "$0")}" && pwd)
list="$pack/gpu_tests.txt"
[ -f "$list" ] || list="$(cd "$(dirname "$0")" && pwd)/gpu_tests.txt"
limit=${SC_GPU_TIMEOUT:-300}
if [ ! -d "$pack/bin" ]; then
	echo "run: no bin/ in $pack (make it with tests/gpu/pack.sh BUILD_DIR OUT_DIR)" >&2
	exit 2
fi

echo "== GPU"
gpu_seen=0
if nvidia-smi -L; then
	gpu_seen=1
else
	echo "run: nvidia-smi -L failed"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true

# cuBLAS: the CUDA toolkit's, else a pip-installed nvidia-cublas wheel's.
cublas_dir=
wheel_dirs=$(python3 -c 'import glob, sys; print(" ".join(d for p in sys.path for d in
	glob.glob(p + "/nvidia/*/lib")))' 2>/dev/null || true)
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib $wheel_dirs; do
	if [ -e "$d/libcublas.so.13" ]; then
		cublas_dir=$d
		break
	fi
done
[ -n "$cublas_dir" ] || echo "run: libcublas.so.13 not found in the usual places; relying on ld.so"
export LD_LIBRARY_PATH="$pack/lib${cublas_dir:+:$cublas_dir}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
tmp=$(mktemp -d)
export SC_TEST_TMP="$tmp"
[ -n "${SC_GPU_LOGS:-}" ] && mkdir -p "$SC_GPU_LOGS"

names=()
results=()
times=()
failed=0
while read -r name bin args; do
	case "$name" in '' | '#'*) continue ;; esac
	names+=("$name")
	if [ ! -x "$pack/bin/$bin" ]; then
		echo "== $name: absent (no bin/$bin), skipped"
		results+=("absent")
		times+=("-")
		continue
	fi
	echo "== $name: bin/$bin $args"
	missing=$(ldd "$pack/bin/$bin" 2>&1 | grep 'not found' || true)
	[ -n "$missing" ] && echo "run: $bin has unresolved libraries:" && echo "$missing"
	log=/dev/null
	[ -n "${SC_GPU_LOGS:-}" ] && log="$SC_GPU_LOGS/$name.log"
	start=$EPOCHREALTIME
	# shellcheck disable=SC2086 # args are split on purpose
	timeout "$limit" "$pack/bin/$bin" $args 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}
	secs=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
	case $rc in
	0) res="pass" ;;
	77)
		# a skip means the program saw no usable GPU: a failure here
		if [ $gpu_seen -eq 1 ]; then
			res="SKIP (GPU unusable)"
			failed=1
		else
			res="skip"
		fi
		;;
	124) res="TIMEOUT (${limit}s)"; failed=1 ;;
	*) res="FAIL (exit $rc)"; failed=1 ;;
	esac
	results+=("$res")
	times+=("$secs")
done <"$list"
rm -rf "$tmp"

echo
echo "== summary"
printf '%-22s %-20s %8s\n' "test" "result" "seconds"
for i in "${!names[@]}"; do
	printf '%-22s %-20s %8s\n' "${names[$i]}" "${results[$i]}" "${times[$i]}"
done
exit $failed
