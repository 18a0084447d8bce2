#!/usr/bin/env bash
# run.sh [PACK_DIR] — the GPU checks, in one go, on a machine with an NVIDIA
# GPU and the CUDA 13 toolkit. PACK_DIR (default: this script's directory) is
# what tests/gpu/pack.sh made from a build on another machine: bin/ holds the
# programs, lib/ the shared libraries they need beyond the system and CUDA,
# py/ the Python scripts (run with python3, the one that has PyTorch), src/
# and build/ the integration test scripts and the cluster programs they run
# (a CPU worker and a worker on cuda:0 in one chain).
# Runs every program in gpu_tests.txt (absent ones are reported and skipped)
# and prints a summary table last: result, seconds, tokens/s (from a
# program's JSON line) and splitchain's tokens/s over PyTorch's. Exits 1 if
# any program failed, or skipped (exit 77) although nvidia-smi lists a GPU.
#   SC_GPU_TIMEOUT  seconds allowed per program (default 300)
#   SC_GPU_LOGS     a directory to keep each program's output in (optional)
#   SC_GPU_PYTHON   the Python to run scripts with (default python3)
set -uo pipefail
pack=$(cd "${1:-$(dirname "$0")}" && pwd)
list="$pack/gpu_tests.txt"
[ -f "$list" ] || list="$(cd "$(dirname "$0")" && pwd)/gpu_tests.txt"
limit=${SC_GPU_TIMEOUT:-300}
python=${SC_GPU_PYTHON:-python3}
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
wheel_dirs=$("$python" -c 'import glob, sys; print(" ".join(d for p in sys.path for d in
	glob.glob(p + "/nvidia/*/lib")))' 2>/dev/null || true)
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib $wheel_dirs; do
	if [ -e "$d/libcublas.so.13" ]; then
		cublas_dir=$d
		break
	fi
done
[ -n "$cublas_dir" ] || echo "run: libcublas.so.13 not found in the usual places; relying on ld.so"
# Python (PyTorch brings its own CUDA libraries) keeps the caller's path.
py_env=(env -u LD_LIBRARY_PATH)
[ -n "${LD_LIBRARY_PATH:-}" ] && py_env=(env "LD_LIBRARY_PATH=$LD_LIBRARY_PATH")
export LD_LIBRARY_PATH="$pack/lib${cublas_dir:+:$cublas_dir}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
tmp=$(mktemp -d)
export SC_TEST_TMP="$tmp"
[ -n "${SC_GPU_LOGS:-}" ] && mkdir -p "$SC_GPU_LOGS"

# The value of "key" in the last JSON line of file that has it, else "-".
json_field() {
	local v
	v=$(sed -n "s/.*\"$2\":\"\{0,1\}\([^,\"}]*\).*/\1/p" "$1" | tail -n 1)
	echo "${v:--}"
}

names=()
results=()
times=()
tokens=()
impls=()
failed=0
while read -r name bin args; do
	case "$name" in '' | '#'*) continue ;; esac
	names+=("$name")
	tokens+=("-")
	impls+=("-")
	if [[ $bin == *.py ]]; then
		prog="$pack/py/$bin"
		cmd=("${py_env[@]}" "$python" "$prog")
	elif [[ $bin == *.sh ]]; then
		# an integration test, as ctest runs it, with the CUDA worker on cuda:0
		prog="$pack/src/$bin"
		cmd=(env "PATH=$pack/bin:$PATH" "SC_CUDA_WORKER=$pack/build/worker/splitchain-worker"
			bash "$prog" "$pack/build" "$tmp/work-$name")
	else
		prog="$pack/bin/$bin"
		cmd=("$prog")
	fi
	if [ ! -f "$prog" ]; then
		echo "== $name: absent (no ${prog#"$pack"/}), skipped"
		results+=("absent")
		times+=("-")
		continue
	fi
	echo "== $name: ${prog#"$pack"/} $args"
	if [[ $bin != *.py && $bin != *.sh ]]; then
		missing=$(ldd "$prog" 2>&1 | grep 'not found' || true)
		[ -n "$missing" ] && echo "run: $bin has unresolved libraries:" && echo "$missing"
	fi
	log="$tmp/$name.log"
	start=$EPOCHREALTIME
	# shellcheck disable=SC2086 # args are split on purpose
	timeout "$limit" "${cmd[@]}" $args </dev/null 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}
	secs=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
	[ -n "${SC_GPU_LOGS:-}" ] && cp "$log" "$SC_GPU_LOGS/$name.log"
	tokens[${#tokens[@]} - 1]=$(json_field "$log" tokens_per_s |
		awk '{ if ($1 + 0 > 0) printf "%.0f\n", $1; else print "-" }')
	impls[${#impls[@]} - 1]=$(json_field "$log" impl)
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

# sc_bench_X over torch_X
ratio() {
	local want j
	case "$1" in sc_bench_*) want="torch_${1#sc_bench_}" ;; *) echo "-"; return ;; esac
	for j in "${!names[@]}"; do
		if [ "${names[$j]}" = "$want" ]; then
			awk -v a="${tokens[$2]}" -v b="${tokens[$j]}" \
				'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2fx", a / b; else print "-" }'
			return
		fi
	done
	echo "-"
}

echo
echo "== summary"
printf '%-20s %-20s %8s %12s %-16s %s\n' "test/bench" "result" "seconds" "tokens/s" "impl" \
	"splitchain/pytorch"
for i in "${!names[@]}"; do
	printf '%-20s %-20s %8s %12s %-16s %s\n' "${names[$i]}" "${results[$i]}" "${times[$i]}" \
		"${tokens[$i]}" "${impls[$i]}" "$(ratio "${names[$i]}" "$i")"
done
exit $failed
