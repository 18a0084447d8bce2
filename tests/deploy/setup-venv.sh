#!/bin/sh
# setup-venv.sh VENV_DIR — the venv of deploy_test.sh (requirements.txt):
# made once, kept while its stamp matches requirements.txt.
set -eu
[ $# -eq 1 ] || { echo "usage: $0 VENV_DIR" >&2; exit 2; }
venv=$1
req=$(cd "$(dirname "$0")" && pwd)/requirements.txt
stamp=$venv/.requirements
if [ -f "$stamp" ] && cmp -s "$stamp" "$req" && "$venv/bin/kubernetes-validate" --version >/dev/null 2>&1; then
  exit 0
fi
rm -rf "$venv"
/usr/bin/python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check --no-deps -r "$req"
"$venv/bin/kubernetes-validate" --version >/dev/null
cp "$req" "$stamp"
