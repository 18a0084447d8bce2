#!/usr/bin/env bash
# pack.sh BUILD_DIR OUT_DIR — gathers, from a build made on a Debian machine,
# what tests/gpu/run.sh needs on a GPU machine that has the CUDA toolkit but
# none of our Debian packages:
#   OUT_DIR/bin/  the programs listed in gpu_tests.txt that BUILD_DIR holds
#   OUT_DIR/lib/  every shared library they load (as ldd resolves it here)
#                 except the C runtime's and CUDA's own: libcjson, libcmocka,
#                 OpenBLAS (the OpenMP build), libgomp, libgfortran, ...
#   OUT_DIR/py/   the Python scripts gpu_tests.txt names, at their paths in
#                 the source tree, with tests/ref/gpt2_ref.py (the independent
#                 PyTorch model that bench/torch_lora_step.py can fall back to)
#   OUT_DIR/src/  the integration test scripts gpu_tests.txt names, with
#                 their helpers (lib.sh, deploy/launch.sh) and the text their
#                 fixture reads (docs/, common/util/, common/backend/, common/model/)
#   OUT_DIR/build/ the cluster's programs those scripts run, at their paths
#                 in the build tree; OUT_DIR/bin/sqlite3, which they query
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
src=$(cd "$here/../.." && pwd)
# Python modules the scripts import from the source tree.
py_support="tests/ref/gpt2_ref.py"
# What an integration test script needs besides itself.
sh_support="tests/integration/lib.sh deploy/launch.sh deploy/certs.sh"
sh_trees="docs common/util common/backend common/model"
sh_programs="cli/splitchain coordinator/splitchain-coordinator worker/splitchain-worker
	tests/sc_reftool"
[ -d "$build" ] || { echo "pack: no build directory $build" >&2; exit 1; }
mkdir -p "$out"
case "$src/" in
"$(cd "$out" && pwd)"/*)
	echo "pack: OUT_DIR must not hold the source tree; use a fresh directory" >&2
	exit 1
	;;
esac

# Loaded from the GPU machine's own system or CUDA install.
system_lib() {
	case "$1" in
	linux-vdso.so* | ld-linux*.so* | libc.so* | libm.so* | libpthread.so* | libdl.so* | \
		librt.so* | libresolv.so* | libstdc++.so* | libgcc_s.so* | \
		libcuda.so* | libcudart.so* | libcublas.so* | libcublasLt.so* | libnvidia-*) return 0 ;;
	esac
	return 1
}

rm -rf "${out:?}/bin" "${out:?}/lib" "${out:?}/py" "${out:?}/src" "${out:?}/build"
mkdir -p "$out/bin" "$out/lib" "$out/py"
packed=0
copy_source() { # path relative to the source tree [folder of the pack]
	mkdir -p "$out/${2:-py}/$(dirname "$1")"
	cp -r "$src/$1" "$out/${2:-py}/$1"
}
copy_libs() { # program: the shared libraries it loads, into lib/
	# "soname => path (addr)", or "soname => not found"
	while read -r soname _arrow file _rest; do
		system_lib "$soname" && continue
		if [ "$file" = "not" ]; then
			echo "pack: $1 needs $soname, which is not found here" >&2
			exit 1
		fi
		[ -e "$out/lib/$soname" ] || cp -L "$file" "$out/lib/$soname"
	done < <(ldd "$1" | grep '=>')
}
while read -r name bin _args; do
	case "$name" in '' | '#'*) continue ;; esac
	if [ -e "$out/bin/$bin" ] || [ -e "$out/py/$bin" ] || [ -e "$out/src/$bin" ]; then
		echo "pack: $name: $bin (packed already)"
		continue
	fi
	if [[ $bin == *.py ]]; then
		if [ ! -f "$src/$bin" ]; then
			echo "pack: $name: no $bin in the source tree (absent, skipped)"
			continue
		fi
		copy_source "$bin"
		for f in $py_support; do
			[ -e "$out/py/$f" ] || copy_source "$f"
		done
		echo "pack: $name: py/$bin"
		continue
	fi
	if [[ $bin == *.sh ]]; then
		if [ ! -f "$src/$bin" ]; then
			echo "pack: $name: no $bin in the source tree (absent, skipped)"
			continue
		fi
		for f in "$bin" $sh_support $sh_trees; do
			copy_source "$f" src
		done
		for p in $sh_programs; do
			if [ ! -x "$build/$p" ]; then
				echo "pack: $name needs $p, which $build does not hold" >&2
				exit 1
			fi
			mkdir -p "$out/build/$(dirname "$p")"
			cp "$build/$p" "$out/build/$p"
			strip --strip-debug "$out/build/$p"
			copy_libs "$build/$p"
		done
		sq=$(command -v sqlite3) || { echo "pack: $name needs sqlite3 here" >&2; exit 1; }
		cp "$sq" "$out/bin/sqlite3"
		copy_libs "$sq"
		packed=$((packed + 1))
		echo "pack: $name: src/$bin, build/: $(echo $sh_programs), bin/sqlite3"
		continue
	fi
	path=$(find "$build" -type f -name "$bin" -perm -u+x -not -path '*/CMakeFiles/*' | head -n 1)
	if [ -z "$path" ]; then
		echo "pack: $name: no $bin in $build (absent, skipped)"
		continue
	fi
	cp "$path" "$out/bin/$bin"
	strip --strip-debug "$out/bin/$bin" # host debug info only: kernels keep -lineinfo
	packed=$((packed + 1))
	echo "pack: $name: $path"
	copy_libs "$path"
done <"$here/gpu_tests.txt"
cp "$here/run.sh" "$here/gpu_tests.txt" "$out/"
if [ "$packed" -eq 0 ]; then
	echo "pack: none of the programs in gpu_tests.txt is built in $build" >&2
	exit 1
fi
echo "pack: $packed program(s), scripts: $(cd "$out/py" && find . -name '*.py' -printf "%P ")"
echo "pack: libraries: $(find "$out/lib" -type f -printf "%f ")"
echo "pack: $(du -sh "$out" | cut -f1) in $out"
echo "pack: to carry it compressed: tar -cJf PACK.tar.xz -C $(dirname "$out") $(basename "$out")"
