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
# ... with the data left to the case (--data given twice trains on both files)
ftd=("$BIN" finetune --model m --steps 1 --batch 2 --seq 16 --rank 2 --quiet)

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
mkdir -p gptj && cp m/model.safetensors gptj/ &&
  sed 's/"gpt2"/"gptj"/' m/config.json > gptj/config.json
expect unknown_arch 1 "model_type 'gptj' is not supported (supported: gpt2, llama, mistral, qwen2)" -- "$BIN" finetune --model gptj --data text.txt --quiet

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

# ---- the Llama family ----
"$BIN" make-model --out lm --preset llama-tiny --layers 2 --heads 4 --kv-heads 2 --embd 32 \
  --inner 48 --vocab 300 --positions 32 --untied --random-norms >/dev/null || exit 1
lft=("$BIN" finetune --data text.txt --steps 2 --batch 2 --seq 16 --rank 2 --quiet)
expect llama_run 0 "" -- "${lft[@]}" --model lm --targets q_proj,v_proj,down_proj --out lm-adapter
expect llama_peft_config 0 '"fan_in_fan_out":	false' -- cat lm-adapter/adapter_config.json
expect llama_peft_names 0 "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight" -- \
  grep -aoF "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight" lm-adapter/adapter_model.safetensors
expect llama_gpt2_target 2 "unknown LoRA target 'c_attn' for llama" -- "${lft[@]}" --model lm --targets c_attn
expect make_model_bad_type 1 "--type 'gptj' is not supported" -- "$BIN" make-model --out never --type gptj
expect make_model_gpt2_kv 1 "Llama-family options" -- "$BIN" make-model --out never --kv-heads 2

# Each bad model: exit 1, one clear message, and no adapter written.
# bad_model NAME WANT_SUBSTRING DIR
bad_model() {
  expect "$1" 1 "$2" -- "${lft[@]}" --model "$3" --out "never-$1"
  if [ -e "never-$1" ]; then
    echo "FAIL $1: wrote never-$1"; fail=$((fail + 1))
  fi
}
# edit_header SRC DST PY-EXPR: rewrites the safetensors header dict `h` of SRC into DST
edit_header() {
  mkdir -p "$(dirname "$2")"
  python3 - "$1" "$2" "$3" <<'PY'
import json, struct, sys
raw = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', raw[:8])[0]
h = json.loads(raw[8:8 + n])
exec(sys.argv[3])
b = json.dumps(h).encode()
b += b' ' * (-len(b) % 8)
open(sys.argv[2], 'wb').write(struct.pack('<Q', len(b)) + b + raw[8 + n:])
PY
}
mkdir -p kvbad && cp lm/model.safetensors kvbad/ &&
  sed 's/"num_key_value_heads":\t2/"num_key_value_heads":\t3/' lm/config.json > kvbad/config.json
bad_model llama_heads_not_divisible "num_key_value_heads" kvbad
mkdir -p missing && cp lm/config.json missing/
edit_header lm/model.safetensors missing/model.safetensors \
  "h['model.layers.1.mlp.up_proX.weight'] = h.pop('model.layers.1.mlp.up_proj.weight')"
bad_model llama_missing_tensor "lack tensor 'model.layers.1.mlp.up_proj.weight'" missing
mkdir -p shape && cp lm/config.json shape/
edit_header lm/model.safetensors shape/model.safetensors \
  "h['model.layers.0.mlp.gate_proj.weight']['shape'] = [32, 48]"
bad_model llama_misshaped_tensor "model.layers.0.mlp.gate_proj.weight" shape
mkdir -p ltrunc && cp lm/config.json ltrunc/ &&
  head -c $(( $(stat -c %s lm/model.safetensors) * 2 / 3 )) lm/model.safetensors > ltrunc/model.safetensors
bad_model llama_truncated "model.safetensors" ltrunc

# The same model in two shards with an index trains to the same bytes; an
# index naming a shard that is not there is refused, naming it.
mkdir -p sharded && cp lm/config.json sharded/ && python3 - lm/model.safetensors sharded <<'PY'
import json, struct, sys
raw = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', raw[:8])[0]
h = json.loads(raw[8:8 + n]); data = raw[8 + n:]
names = sorted(k for k in h if k != '__metadata__')
shards = {}
for i, k in enumerate(names):
    shards.setdefault('model-%05d-of-00002.safetensors' % (1 + (i % 2)), []).append(k)
wmap = {}
for fname, keys in shards.items():
    hdr, blob = {}, b''
    for k in keys:
        b, e = h[k]['data_offsets']
        hdr[k] = {'dtype': h[k]['dtype'], 'shape': h[k]['shape'],
                  'data_offsets': [len(blob), len(blob) + e - b]}
        blob += data[b:e]
        wmap[k] = fname
    j = json.dumps(hdr).encode(); j += b' ' * (-len(j) % 8)
    open(sys.argv[2] + '/' + fname, 'wb').write(struct.pack('<Q', len(j)) + j + blob)
json.dump({'metadata': {}, 'weight_map': wmap}, open(sys.argv[2] + '/model.safetensors.index.json', 'w'))
PY
expect llama_sharded 0 "" -- "${lft[@]}" --model sharded --targets q_proj,v_proj,down_proj --out sharded-adapter
expect llama_sharded_same 0 "" -- cmp lm-adapter/adapter_model.safetensors sharded-adapter/adapter_model.safetensors
mkdir -p noshard && cp sharded/config.json sharded/model.safetensors.index.json noshard/ &&
  cp sharded/model-00001-of-00002.safetensors noshard/
bad_model llama_missing_shard "model-00002-of-00002.safetensors" noshard

# ---- JSONL data ----
python3 - <<'PY'
import json
with open("pc.jsonl", "w") as f:
    for i in range(60):
        f.write(json.dumps({"prompt": "question %d?" % i, "completion": " answer %d." % (i * 7)}) + "\n")
with open("badline.jsonl", "w") as f:
    f.write(json.dumps({"text": "fine"}) + "\n" + "{not json\n" + json.dumps({"text": "more text " * 20}) + "\n")
with open("chat.jsonl", "w") as f:
    f.write(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
PY
expect jsonl_prompt_completion 0 "" -- "${ftd[@]}" --data pc.jsonl --out pc-adapter
expect jsonl_bad_line 1 "badline.jsonl:2" -- "${ftd[@]}" --data badline.jsonl
expect jsonl_skip_bad_lines 0 "1 malformed JSONL line(s) skipped" -- "${ftd[@]}" --data badline.jsonl --skip-bad-lines
expect jsonl_chat_refused 1 "chat template" -- "${ftd[@]}" --data chat.jsonl
expect missing_tokenizer 1 "nope.json" -- "${ft[@]}" --tokenizer nope.json

# ---- held-out evaluation, unpacked data, the data cache ----
ftv=("$BIN" finetune --model m --data text.txt --steps 1 --batch 2 --seq 16 --rank 2)
expect eval_split_runs 0 "eval     1/1 | loss" -- "${ftv[@]}" --data pc.jsonl --eval-split 0.1
expect eval_split_range 2 "--eval-split" -- "${ftd[@]}" --data pc.jsonl --eval-split 0.7
expect eval_split_not_number 2 "--eval-split" -- "${ftd[@]}" --data pc.jsonl --eval-split lots
expect eval_both 2 "exclude each other" -- "${ftd[@]}" --data pc.jsonl --eval-split 0.1 --eval-data pc.jsonl
expect eval_every_alone 2 "need --eval-split or --eval-data" -- "${ftd[@]}" --data pc.jsonl --eval-every 5
expect eval_every_zero 2 "--eval-every" -- "${ftd[@]}" --data pc.jsonl --eval-split 0.1 --eval-every 0
expect eval_data_missing 1 "nothere.jsonl" -- "${ftd[@]}" --data pc.jsonl --eval-data nothere.jsonl
printf 'tiny' > tiny.txt
expect eval_data_too_short 1 "held-out data holds 4 tokens" -- "${ftd[@]}" --data pc.jsonl --eval-data tiny.txt
expect eval_data_bad_line 1 "badline.jsonl:2" -- "${ftd[@]}" --data pc.jsonl --eval-data badline.jsonl
expect no_pack_runs 0 "(unpacked), tokens from the cache" -- "${ftv[@]}" --data pc.jsonl --no-pack
expect no_data_cache 0 "" -- "${ftd[@]}" --data pc.jsonl --no-data-cache
expect cache_written 0 "" -- sh -c 'ls .splitchain-cache/pc.jsonl.*.safetensors'
expect wire_bad 2 "unknown wire encoding 'int9'" -- "${ft[@]}" --wire int9
expect wire_int8_runs 0 "crossing in int8" -- "${ftv[@]}" --stages 2 --wire int8
expect cuts_bad 2 "--cuts '1,1'" -- "${ft[@]}" --cuts 1,1
expect cuts_too_far 2 "--cuts '5'" -- "${ft[@]}" --cuts 5
expect cuts_runs 0 "" -- "${ft[@]}" --cuts 1 --wire int4
expect submit_eval_both 2 "exclude each other" -- "$BIN" submit --model m --data pc.jsonl --eval-split 0.1 --eval-data pc.jsonl
# Several data files (what several data owners train on): both read, or refused.
expect two_files 0 "" -- "${ftd[@]}" --data text.txt --data pc.jsonl --eval-split 0.1
expect two_files_eval_data 2 "--eval-data goes with one --data" -- "${ftd[@]}" --data text.txt --data pc.jsonl --eval-data pc.jsonl
expect two_files_missing 1 "nothere.txt" -- "${ftd[@]}" --data text.txt --data nothere.txt
expect two_files_lossy_wire 1 "fp32 only" -- "${ftd[@]}" --data text.txt --data pc.jsonl --stages 2 --wire int8
expect owner_twice 2 "--owner names 'a' twice" -- "$BIN" submit --model m --data d --owner a --owner a
expect owner_layers_zero 2 "--owner-layers expects a whole number" -- "$BIN" submit --model m --data d --owner a --owner-layers 0
expect owner_with_split 2 "not with --split or --workers" -- "$BIN" submit --model m --data d --owner a --split 0-0,1-1

# ---- generate ----
gen=("$BIN" generate --model lm --max-new-tokens 4)
expect generate_help 0 "--max-new-tokens" -- "$BIN" generate --help
expect generate_run 0 '"ids":[' -- "${gen[@]}" --adapter lm-adapter --prompt "hello" --json
expect generate_ids 0 '"prompt_ids":[1,2,3]' -- "${gen[@]}" --prompt-ids 1,2,3 --json
expect generate_stream 0 "new at" -- "${gen[@]}" --prompt "hello"
expect generate_no_prompt 2 "exactly one of --prompt" -- "${gen[@]}"
expect generate_two_prompts 2 "exactly one of --prompt" -- "${gen[@]}" --prompt a --prompt-ids 1
expect generate_bad_ids 1 "not a list of ids" -- "${gen[@]}" --prompt-ids 1,x
expect generate_id_beyond_vocab 1 "prompt id 300 at position 1" -- "${gen[@]}" --prompt-ids 1,300
expect generate_too_long 1 "exceed the model's 32 positions" -- "${gen[@]}" --prompt hello --max-new-tokens 40
expect generate_wrong_family 1 "adapter" -- "${gen[@]}" --prompt hi --adapter adapter
expect generate_bad_top_p 2 "--top-p expects a number" -- "${gen[@]}" --prompt hi --top-p 2
expect generate_missing_model 1 "nope/config.json" -- "$BIN" generate --model nope --prompt hi

# With a tokenizer (the demo's byte-level BPE): the prompt is encoded as
# `tokenize` encodes it, the text is what `detokenize` makes of the ids.
TOK="$(cd "$(dirname "$0")/../.." && pwd)/deploy/demo-tokenizer.json"
"$BIN" make-model --out tm --preset llama-tiny --layers 1 --heads 2 --kv-heads 1 --embd 16 \
  --inner 24 --vocab 1024 --positions 64 >/dev/null || exit 1
tgen=("$BIN" generate --model tm --tokenizer "$TOK" --max-new-tokens 6 --json --ignore-eos)
want_ids=$("$BIN" tokenize --tokenizer "$TOK" --text "Hello, wörld" --json | sed 's/.*\[\(.*\)\].*/\1/')
expect generate_tokenizer_prompt 0 "\"prompt_ids\":[$want_ids]" -- "${tgen[@]}" --prompt "Hello, wörld"
got=$("${tgen[@]}" --prompt "Hello, wörld")
gids=$(sed -n 's/.*"ids":\[\([0-9,]*\)\].*/\1/p' <<<"$got")
gtext=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["text"], end="")' "$got")
expect generate_tokenizer_text 0 "" -- test "$gtext" = "$("$BIN" detokenize --tokenizer "$TOK" --ids "$gids" --no-special)"
cp "$TOK" tm/tokenizer.json
expect generate_model_tokenizer 0 "\"prompt_ids\":[$want_ids]" -- "$BIN" generate --model tm --max-new-tokens 2 --json --prompt "Hello, wörld"
expect generate_missing_tokenizer 1 "nope.json" -- "${gen[@]}" --prompt hi --tokenizer nope.json

# ---- quantize ----
qz=("$BIN" quantize --model m)
expect quantize_help 0 "--double-quant" -- "$BIN" quantize --help
expect quantize_no_args 2 "--model DIR, --to int8|nf4|bf16 and --out DIR are required" -- "$BIN" quantize
expect quantize_bad_format 2 "--to must be int8, nf4, bf16 or f32, got 'int4'" -- "${qz[@]}" --to int4 --out q
expect quantize_dq_int8 2 "--double-quant is for --to nf4" -- "${qz[@]}" --to int8 --double-quant --out q
expect quantize_bad_error 2 "--error expects a whole number" -- "${qz[@]}" --to int8 --error 0 --out q
expect quantize_unknown_flag 2 "unknown or incomplete option '--bits'" -- "${qz[@]}" --to int8 --bits 4 --out q
expect quantize_stray_arg 2 "unexpected argument 'extra'" -- "${qz[@]}" --to int8 --out q extra
expect quantize_same_dir 2 "--out must be another directory than --model" -- "${qz[@]}" --to nf4 --out ./m/
expect quantize_missing_model 1 "nope/config.json" -- "$BIN" quantize --model nope --to int8 --out q
expect quantize_unknown_arch 1 "model_type 'gptj' is not supported" -- "$BIN" quantize --model gptj --to int8 --out q
expect quantize_truncated 1 "model.safetensors" -- "$BIN" quantize --model trunc --to nf4 --out q
expect quantize_unwritable_out 1 "cannot create the output directory: text.txt/q" -- "${qz[@]}" --to int8 --out text.txt/q
expect quantize_nf4 0 "8 projections to nf4 with double quant" -- "${qz[@]}" --to nf4 --double-quant --out m-nf4 --error 4
expect quantize_int8 0 "8 projections to int8" -- "${qz[@]}" --to int8 --out m-int8
expect quantize_again 1 "already quantized" -- "$BIN" quantize --model m-nf4 --to int8 --out q
expect quantize_config_says 0 '"quant_method":"splitchain"' -- sh -c "tr -d ' \t\n' < m-nf4/config.json"
expect quantize_dequantize 0 "8 projections dequantized from nf4" -- "$BIN" quantize --model m-nf4 --to f32 --out m-back
expect quantize_dequantize_plain 1 "not a model quantized by splitchain quantize" -- "$BIN" quantize --model m --to f32 --out q
expect quantize_dq_with_f32 2 "--double-quant is for --to nf4" -- "$BIN" quantize --model m-nf4 --to f32 --double-quant --out q
mkdir -p mq && cp m/model.safetensors mq/ && cp m-nf4/config.json mq/
expect quantize_dequantize_no_qweight 1 "holds no quantized weight" -- "$BIN" quantize --model mq --to f32 --out q
mkdir -p mhalf && cp m-nf4/config.json mhalf/ && cp m-int8/model.safetensors mhalf/
expect quantize_dequantize_wrong_format 1 "lack tensor 'transformer.h.0.attn.c_attn.shape'" -- "$BIN" quantize --model mhalf --to f32 --out q
expect quantize_nf4_trains 0 "" -- "$BIN" finetune --model m-nf4 --data text.txt --steps 1 --batch 2 --seq 16 --rank 2 --quiet
expect quantize_half_refused 1 "needs 1536 bytes of U8" -- "$BIN" finetune --model mhalf --data text.txt --steps 1 --batch 2 --seq 16 --rank 2 --quiet
expect quantize_dequantized_trains 0 "" -- "$BIN" finetune --model m-back --data text.txt --steps 1 --batch 2 --seq 16 --rank 2 --quiet

# ---- generate on the frozen base a job trained on (finetune's options) ----
gq=("$BIN" generate --max-new-tokens 4 --prompt-ids 1,2,3 --json)
ids_of() { sed 's/.*"ids":\[\([^]]*\)\].*/\1/'; }
expect generate_base_help 0 "--precision P" -- "$BIN" generate --help
expect generate_bf16 0 '"ids":[' -- "${gq[@]}" --model lm --precision bf16
expect generate_nf4 0 '"ids":[' -- "${gq[@]}" --model lm --base-quant nf4 --double-quant
expect generate_dq_alone 2 "--double-quant needs --base-quant nf4" -- "${gq[@]}" --model lm --double-quant
expect generate_bad_precision 2 "--precision 'fp16': choose fp32 or bf16" -- "${gq[@]}" --model lm --precision fp16
expect generate_base_applied 1 "already quantized to int8" -- "${gq[@]}" --model m-int8 --base-quant nf4
expect generate_base_job 2 "come from the job with --job" -- "${gq[@]}" --job 1 --precision bf16
"$BIN" quantize --model m --to bf16 --out m-bf16 >/dev/null || exit 1
gbf=$("${gq[@]}" --model m --precision bf16 | ids_of)
gbq=$("${gq[@]}" --model m-bf16 | ids_of)
expect generate_bf16_as_quantized 0 "" -- test -n "$gbf" -a "$gbf" = "$gbq"
# an adapter from a bf16 job records its base; generate then runs on it
expect generate_bf16_job 0 "" -- "${lft[@]}" --model lm --precision bf16 --out lm-bf16-adapter
expect generate_adapter_base 0 "frozen base bf16, as the adapter was trained" -- \
  "$BIN" generate --model lm --adapter lm-bf16-adapter --prompt-ids 1,2,3 --max-new-tokens 2
gab=$("${gq[@]}" --model lm --adapter lm-bf16-adapter | ids_of)
gae=$("${gq[@]}" --model lm --adapter lm-bf16-adapter --precision bf16 | ids_of)
expect generate_adapter_base_same 0 "" -- test -n "$gab" -a "$gab" = "$gae"

# ---- the frozen base as a job option: quantized as the stages load ----
expect base_quant_help 0 "--base-quant Q" -- "$BIN" submit --help
expect base_quant_bad 2 "--base-quant 'int4': choose none, int8 or nf4" -- "${ft[@]}" --base-quant int4
expect base_quant_bad_submit 2 "--base-quant 'q4': choose none, int8 or nf4" -- "$BIN" submit --model m --data text.txt --base-quant q4
expect precision_bad 2 "--precision 'fp16': choose fp32 or bf16" -- "${ft[@]}" --precision fp16
expect double_quant_alone 2 "--double-quant needs --base-quant nf4 (got --base-quant int8)" -- "${ft[@]}" --base-quant int8 --double-quant
expect base_quant_nf4_runs 0 "frozen base nf4+dq" -- "${ftv[@]}" --base-quant nf4 --double-quant
expect base_quant_int8_runs 0 "frozen base int8" -- "${ftv[@]}" --base-quant int8 --precision bf16
expect base_quant_conflict 1 "already quantized to nf4+dq (its config.json's quantization_config); --base-quant int8 asks for another format" -- "$BIN" finetune --model m-nf4 --data text.txt --steps 1 --batch 2 --seq 16 --rank 2 --quiet --base-quant int8
expect base_quant_same_as_dir 0 "frozen base nf4+dq" -- "$BIN" finetune --model m-nf4 --data text.txt --steps 1 --batch 2 --seq 16 --rank 2 --base-quant nf4 --double-quant

# `models` (registered models): usage errors before any connection.
expect models_help 0 "models add NAME DIR" -- "$BIN" models --help
expect models_no_sub 2 "add, list, show or rm is required" -- "$BIN" models
expect models_bad_sub 2 "unknown subcommand 'fly'" -- "$BIN" models fly
expect models_add_args 2 "models add NAME DIR" -- "$BIN" models add onlyname
expect models_add_nodir 1 "model directory 'nodir' not found" -- "$BIN" models add x nodir
expect models_show_args 2 "models show NAME" -- "$BIN" models show
expect models_rm_args 2 "models rm NAME" -- "$BIN" models rm a b
expect models_list_args 2 "unexpected argument 'x'" -- "$BIN" models list x

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
