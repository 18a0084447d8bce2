#!/usr/bin/env bash
# cli_test.sh — the splitchain CLI as a user meets it: help, exit codes, and
# a clear message (never a crash) for every kind of bad input.
#   cli_test.sh SPLITCHAIN_BINARY WORK_DIR
set -u
BIN=$1
W=$2
rm -rf "$W" && mkdir -p "$W" && cd "$W" || exit 1
pass=0
fail=0

# expect NAME WANT_EXIT WANT_SUBSTRING -- command...
expect() {
  local name=$1 want=$2 sub=$3
  shift 4
  local out rc
  out=$("$@" 2>&1)
  rc=$?
  if [ "$rc" -ne "$want" ]; then
    echo "FAIL $name: exit $rc, want $want"; echo "$out" | sed 's/^/    /'; fail=$((fail + 1)); return
  fi
  if [ -n "$sub" ] && ! grep -qF -- "$sub" <<<"$out"; then
    echo "FAIL $name: output lacks '$sub'"; echo "$out" | sed 's/^/    /'; fail=$((fail + 1)); return
  fi
  if grep -qE "AddressSanitizer|runtime error|Segmentation|core dumped" <<<"$out"; then
    echo "FAIL $name: crashed"; echo "$out" | sed 's/^/    /'; fail=$((fail + 1)); return
  fi
  echo "ok   $name"
  pass=$((pass + 1))
}

"$BIN" make-model --out m --layers 2 --heads 2 --embd 32 --vocab 300 --positions 32 >/dev/null || exit 1
head -c 4000 /dev/urandom | base64 > text.txt
ft=("$BIN" finetune --model m --data text.txt --steps 1 --batch 2 --seq 16 --rank 2 --quiet)

expect help 0 "usage: splitchain" -- "$BIN" --help
expect finetune_help 0 "--init-adapter" -- "$BIN" finetune --help
expect no_command 2 "usage" -- "$BIN"
expect unknown_command 2 "unknown command 'fly'" -- "$BIN" fly
expect unknown_flag 2 "unknown or incomplete option '--frobnicate'" -- "${ft[@]}" --frobnicate
expect missing_value 2 "unknown or incomplete option" -- "$BIN" finetune --model
expect bad_number 2 "--steps expects a whole number" -- "${ft[@]}" --steps ten
expect rank_zero 2 "--rank expects a whole number in [1," -- "${ft[@]}" --rank 0
expect unknown_target 2 "unknown LoRA target 'lm_head'" -- "${ft[@]}" --targets lm_head
expect missing_model 1 "nope/config.json" -- "$BIN" finetune --model nope --data text.txt
expect missing_data 1 "missing.txt" -- "$BIN" finetune --model m --data missing.txt
expect too_many_stages 2 "--stages 3 exceeds the model's 2 layers" -- "${ft[@]}" --stages 3
expect seq_too_long 1 "exceeds the model's 32 positions" -- "${ft[@]}" --seq 64
expect good_run 0 "" -- "${ft[@]}" --out adapter

# config.json naming another architecture
mkdir -p llama && cp m/model.safetensors llama/ &&
  sed 's/"gpt2"/"llama"/' m/config.json > llama/config.json
expect unknown_arch 1 "llama" -- "$BIN" finetune --model llama --data text.txt --quiet

# a truncated weights file
mkdir -p trunc && cp m/config.json trunc/ &&
  head -c $(( $(stat -c %s m/model.safetensors) / 2 )) m/model.safetensors > trunc/model.safetensors
expect truncated_weights 1 "model.safetensors" -- "$BIN" finetune --model trunc --data text.txt --quiet

# a header whose offsets point past the end of the file
mkdir -p past && cp m/config.json past/ && python3 - m/model.safetensors past/model.safetensors <<'PY'
import json, struct, sys
raw = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', raw[:8])[0]
hdr = json.loads(raw[8:8 + n])
name = next(k for k in hdr if k != '__metadata__')
b, e = hdr[name]['data_offsets']
hdr[name]['data_offsets'] = [b + 10**9, e + 10**9]
h = json.dumps(hdr).encode()
h += b' ' * (-len(h) % 8)
open(sys.argv[2], 'wb').write(struct.pack('<Q', len(h)) + h + raw[8 + n:])
PY
expect offsets_past_end 1 "model.safetensors" -- "$BIN" finetune --model past --data text.txt --quiet

# random bytes in place of the weights
mkdir -p garbage && cp m/config.json garbage/ && head -c 5000 /dev/urandom > garbage/model.safetensors
expect garbage_weights 1 "model.safetensors" -- "$BIN" finetune --model garbage --data text.txt --quiet

# token ids beyond the vocabulary (a token file with id 299 >= 200)
"$BIN" make-model --out small --layers 1 --heads 2 --embd 32 --vocab 200 --positions 32 >/dev/null
python3 - tokens.bin <<'PY'
import struct, sys
ids = [5] * 100 + [299] + [6] * 100
open(sys.argv[1], 'wb').write(struct.pack('<256i', 20240520, 1, len(ids), *([0] * 253)) + struct.pack('<%dH' % len(ids), *ids))
PY
expect token_beyond_vocab 1 "token id 299 at position 100" -- "$BIN" finetune --model small --data tokens.bin --seq 16 --batch 2 --quiet

# an adapter of another rank given to resume from is read as it is; one whose
# tensors are damaged is refused
mkdir -p badadapter && cp adapter/adapter_config.json badadapter/ && head -c 100 adapter/adapter_model.safetensors > badadapter/adapter_model.safetensors
expect damaged_adapter 1 "adapter_model.safetensors" -- "${ft[@]}" --init-adapter badadapter

expect tokenize_missing 2 "--in TEXT and --out FILE are required" -- "$BIN" tokenize --in text.txt
expect tokenize 0 "tokens" -- "$BIN" tokenize --in text.txt --out text.bin
expect make_model_bad_heads 1 "n_head" -- "$BIN" make-model --out bad --embd 30 --heads 4

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
