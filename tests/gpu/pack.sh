#!/usr/bin/env bash
# pack.sh BUILD_DIR OUT_DIR — gathers, from a build made on a Debian machine,
# what tests/gpu/run.sh needs on a GPU machine that has the CUDA toolkit but
# none of our Debian packages:
#   OUT_DIR/bin/  the programs listed in gpu_tests.txt that BUILD_DIR holds
#   OUT_DIR/lib/  every shared library they load (as ldd resolves it here)
#                 except the C runtime's and CUDA's own: libcjson, libcmocka,
#                 OpenBLAS (the OpenMP build), libgomp, libgfortran, ...
#   OUT_DIR/run.sh, OUT_DIR/gpu_tests.txt
# cuBLAS is not copied (its libraries weigh ~600 MB); the GPU machine's CUDA
# 13 provides it, and run.sh finds it there.
set -euo pipefail
if [ $# -ne 2 ]; then
	echo "usage: $0 BUILD_DIR OUT_DIR" >&2
	exit 2
fi
build=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)
[ -d "$build" ] || { echo "pack: no build directory $build" >&2; exit 1; }

# Loaded from the GPU machine's own system or CUDA install.
system_lib() {
	case "$1" in
	linux-vdso.so* | ld-linux*.so* | libc.so* | libm.so* | libpthread.so* | libdl.so* | \
		librt.so* | libresolv.so* | libstdc++.so* | libgcc_s.so* | \
		libcuda.so* | libcudart.so* | libcublas.so* | libcublasLt.so* | libnvidia-*) return 0 ;;
	esac
	return 1
}

rm -rf "${out:?}/bin" "${out:?}/lib"
mkdir -p "$out/bin" "$out/lib"
packed=0
while read -r name bin _args; do
	case "$name" in '' | '#'*) continue ;; esac
	path=$(find "$build" -type f -name "$bin" -perm -u+x -not -path '*/CMakeFiles/*' | head -n 1)
	if [ -z "$path" ]; then
		echo "pack: $name: no $bin in $build (absent, skipped)"
		continue
	fi
	cp "$path" "$out/bin/$bin"
	packed=$((packed + 1))
	echo "pack: $name: $path"
	# "soname => path (addr)", or "soname => not found"
	while read -r soname _arrow file _rest; do
		system_lib "$soname" && continue
		if [ "$file" = "not" ]; then
			echo "pack: $bin needs $soname, which is not found here" >&2
			exit 1
		fi
		[ -e "$out/lib/$soname" ] || cp -L "$file" "$out/lib/$soname"
	done < <(ldd "$path" | grep '=>')
done <"$here/gpu_tests.txt"
cp "$here/run.sh" "$here/gpu_tests.txt" "$out/"
if [ "$packed" -eq 0 ]; then
	echo "pack: none of the programs in gpu_tests.txt is built in $build" >&2
	exit 1
fi
echo "pack: $packed program(s); libraries: $(find "$out/lib" -type f -printf "%f ")"
echo "pack: $(du -sh "$out" | cut -f1) in $out"
