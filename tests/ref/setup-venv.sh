#!/bin/sh
# setup-venv.sh VENV_DIR — creates (or checks) the Python environment of the
# reference tests: the system interpreter's torch and numpy (Debian's
# python3-torch), plus the pinned packages of requirements.txt from PyPI.
#
# Idempotent: a venv whose stamp matches requirements.txt and whose imports
# work is left as it is. Every package is installed with --no-deps: pip reads
# Debian's torch version "1.13.0a0" as older than 1.13.0, and resolving peft's
# or accelerate's "torch>=1.13" would download a torch 2.x over it.
set -eu

if [ $# -ne 1 ]; then
	echo "usage: $0 VENV_DIR" >&2
	exit 2
fi
venv=$1
here=$(cd "$(dirname "$0")" && pwd)
req=$here/requirements.txt
py=/usr/bin/python3

check() {
	"$venv/bin/python" - <<'PYEOF'
import torch, numpy, yaml, requests, psutil
import safetensors.torch, transformers, peft, accelerate, huggingface_hub, tokenizers, jinja2
if not torch.__version__.startswith("1.13"):
    raise SystemExit("venv sees torch %s, expected the system's 1.13" % torch.__version__)
# a transformers too new for this torch disables torch with only a warning
if not transformers.utils.is_torch_available():
    raise SystemExit("transformers %s does not accept torch %s" % (
        transformers.__version__, torch.__version__))
from transformers import GPT2Config, GPT2LMHeadModel
from transformers import LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM
from peft import LoraConfig, PeftModel, get_peft_model
print("torch %s, numpy %s, transformers %s, peft %s, safetensors %s" % (
    torch.__version__, numpy.__version__, transformers.__version__, peft.__version__,
    safetensors.__version__))
PYEOF
}

if ! "$py" -c "import torch, numpy" 2>/dev/null; then
	echo "$0: $py cannot import torch and numpy;" \
		"install Debian's python3-torch, python3-numpy and python3-venv" >&2
	exit 1
fi

stamp=$venv/.sc-requirements
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && cmp -s "$stamp" "$req" && check 2>/dev/null
then
	echo "$venv is up to date"
	exit 0
fi

# A venv that cannot see the system's torch (another interpreter, or made
# without --system-site-packages) is made anew.
if [ -x "$venv/bin/python" ] && ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
	echo "$venv does not see the system's torch: recreating it"
	"$py" -m venv --clear --system-site-packages "$venv"
elif [ ! -x "$venv/bin/python" ]; then
	"$py" -m venv --system-site-packages "$venv"
fi
rm -f "$stamp"
# Names and versions only, comments stripped.
pkgs=$(sed -e 's/#.*//' "$req" | tr -s ' \t' '\n' | grep -v '^$')
# shellcheck disable=SC2086
PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip install --no-deps \
	--only-binary=:all: $pkgs
check
cp "$req" "$stamp"
echo "$venv is ready"
