#!/bin/sh
# run-test.sh VENV SPLITCHAIN REFTOOL TMPDIR SCRIPT — runs one reference test
# with the venv's Python (ctest calls this; see CMakeLists.txt). A missing
# venv is a failure, never a skip: the checks it guards are the contract.
set -eu
if [ $# -ne 5 ]; then
	echo "usage: $0 VENV SPLITCHAIN REFTOOL TMPDIR SCRIPT" >&2
	exit 2
fi
venv=$1
here=$(cd "$(dirname "$0")" && pwd)
if [ ! -x "$venv/bin/python" ]; then
	echo "FAIL: no Python environment at $venv for the PyTorch / PEFT reference tests." >&2
	echo "Create it with:  $here/setup-venv.sh $venv" >&2
	echo "(or point the CMake cache variable SC_TEST_VENV at an existing one)" >&2
	exit 1
fi
export SC_SPLITCHAIN="$2" SC_REFTOOL="$3" SC_REF_TMP="$4"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" PYTHONDONTWRITEBYTECODE=1
mkdir -p "$4"
exec "$venv/bin/python" "$here/$5"
