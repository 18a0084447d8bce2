#!/usr/bin/env bash
# install-deps.sh — installs every Debian package splitchain's build, tests
# and demo need. Idempotent: packages already present are left alone, and
# nothing is fetched when all are. Run as root (or with sudo) on Debian 12.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config git
  libnng-dev libprotobuf-c-dev protobuf-c-compiler zlib1g-dev
  libsqlite3-dev sqlite3
  libopenblas-openmp-dev libcjson-dev libcmocka-dev libpcre2-dev libutf8proc-dev
  libmbedtls-dev
  libdnnl-dev  # oneDNN, for bench/onednn_bench.c (issue 18: bf16 GEMMs on the CPU)
  clang-format
  clang libclang-rt-14-dev  # tests/fuzz: libFuzzer harnesses (clang 14, Debian 12)
  util-linux  # prlimit: tests/integration/dbfull_test.sh where no tmpfs can be mounted
  tcpdump  # owner_test: a capture of loopback proves private data stays home
  # test side: the PyTorch reference and the venv for transformers + peft
  python3 python3-venv python3-pip python3-torch python3-numpy python3-yaml python3-requests
  python3-psutil python3-typing-extensions
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
