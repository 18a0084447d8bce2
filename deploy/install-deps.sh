#!/usr/bin/env bash
# install-deps.sh — installs every Debian package splitchain's build, tests
# and demo need. Idempotent: packages already present are left alone, and
# nothing is fetched when all are. Run as root (or with sudo) on Debian 12.
#   deploy/install-deps.sh          everything: build, tests, demo
#   deploy/install-deps.sh build    only what building the daemons and the CLI
#                                   needs (deploy/docker/Dockerfile's build stage)
set -euo pipefail

BUILD_PKGS=(
  build-essential cmake pkg-config
  libnng-dev libprotobuf-c-dev protobuf-c-compiler zlib1g-dev libsqlite3-dev
  libopenblas-openmp-dev libcjson-dev libcmocka-dev libpcre2-dev libutf8proc-dev
  libmbedtls-dev libdnnl-dev
)

PKGS=(
  build-essential cmake pkg-config git
  libnng-dev libprotobuf-c-dev protobuf-c-compiler zlib1g-dev
  libsqlite3-dev sqlite3
  libopenblas-openmp-dev libcjson-dev libcmocka-dev libpcre2-dev libutf8proc-dev
  libmbedtls-dev  # nng's TLS engine; mbedx509 checks certificates and keys at start
  openssl  # deploy/certs.sh: the cluster CA and the parties' certificates
  libdnnl-dev  # oneDNN, for bench/onednn_bench.c (issue 18: bf16 GEMMs on the CPU)
  clang-format
  clang libclang-rt-14-dev  # tests/fuzz: libFuzzer harnesses (clang 14, Debian 12)
  util-linux  # prlimit: tests/integration/dbfull_test.sh where no tmpfs can be mounted
  tcpdump  # owner_test: a capture of loopback proves private data stays home
  # test side: the PyTorch reference and the venv for transformers + peft
  python3 python3-venv python3-pip python3-torch python3-numpy python3-yaml python3-requests
  python3-psutil python3-typing-extensions
  # the operator's kit (metrics_test, deploy_test): promtool, a scraper,
  # systemd-analyze for the units
  prometheus curl systemd
)
[ "${1:-}" = build ] && PKGS=("${BUILD_PKGS[@]}")

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# deploy_test checks the Dockerfiles' package names against the archive's
# lists: fetch them where an image left none.
if [ "${1:-}" != build ] && ! apt-cache policy build-essential 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  $SUDO apt-get update -qq
fi
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
