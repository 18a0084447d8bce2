"""`splitchain quantize` against an independent NumPy implementation of the
published algorithms:

- int8 per output channel: s_o = absmax_o / 127, q = rint(w / s_o) clamped to
  [-127, 127] (GPT-2's Conv1D (in, out): channels are columns; Llama's
  nn.Linear (out, in): rows);
- NF4 (Dettmers et al., "QLoRA", 2023): blocks of 64 in storage order, the
  16-value NormalFloat codebook, x = w * (1 / absmax) and bitsandbytes'
  dQuantizeNF4 thresholds (copied here from its kernel, not derived from the
  codebook), two indices per byte with the first in the high nibble;
- double quantization of the block absmax (the format sc_quant.h states:
  offset = mean in float64, int8 blocks of 256 with a float32 scale).

Each case makes a random model with `splitchain make-model` (GPT-2 and Llama,
the presets and shapes with short last blocks and odd element counts, f32,
bf16 and f16 files), quantizes it with `splitchain quantize` to int8, nf4
and nf4 + double quant, and checks, reading the safetensors file with its
own parser: every packed byte and every scale bit for bit, the tensors that
stay unchanged byte for byte, config.json and the copied tokenizer; then
`splitchain quantize --to f32` must give the reference's dequantized weights
bit for bit, and transformers loads that model with no weight missing.

Environment (set by ctest): SC_SPLITCHAIN, SC_REFTOOL, SC_REF_TMP.
"""

import json
import os
import re
import shutil

import numpy as np

import gpt2_ref as R

R.offline()

F32 = np.float32
# The NormalFloat4 codebook, QLoRA appendix E / bitsandbytes (float32).
NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
                0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                0.7229568362236023, 1.0], dtype=F32)
# bitsandbytes' dQuantizeNF4 decision tree thresholds, ascending: x > t goes up.
NF4_T = np.array([-0.8480964004993439, -0.6106329262256622, -0.4599952697753906,
                  -0.33967943489551544, -0.23460740596055984, -0.13791173323988914,
                  -0.045525018125772476, 0.03979014977812767, 0.1202552504837513,
                  0.2035212516784668, 0.2920137718319893, 0.3893125355243683,
                  0.5016634166240692, 0.6427869200706482, 0.8614784181118011], dtype=F32)
BLOCK, DQ_BLOCK = 64, 256
PROJ = {"gpt2": re.compile(r"h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)"
                           r"\.weight$"),
        "llama": re.compile(r"layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)"
                            r"\.weight$")}
MODULES = {"gpt2": ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"],
           "llama": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                     "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]}

splitchain = R.tool("SC_SPLITCHAIN")
tmp = R.tmp_dir("quant")
TOKENIZER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "deploy",
                         "demo-tokenizer.json")


# ---- safetensors, read by hand ----

def read_st(path):
    """{name: (dtype, shape, raw bytes)}, metadata."""
    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    out = {}
    for name, v in header.items():
        b, e = v["data_offsets"]
        out[name] = (v["dtype"], tuple(v["shape"]), data[8 + n + b:8 + n + e])
    return out, meta


def as_f32(t):
    dtype, shape, raw = t
    if dtype == "F32":
        return np.frombuffer(raw, "<f4").reshape(shape)
    if dtype == "F16":
        return np.frombuffer(raw, "<f2").astype(F32).reshape(shape)
    assert dtype == "BF16", dtype
    return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(F32).reshape(shape)


def bits(a):
    return np.ascontiguousarray(a, dtype=F32).view(np.uint32)


# ---- the reference quantizers ----

def q127(v, s):
    """s > 0 ? clip(rint(v / s), -127, 127) : 0, as int8; v, s float32."""
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.rint(v / s)
    return np.where(s > 0, np.clip(y, -127, 127), 0).astype(np.int8)


def ref_int8(w, out_rows):
    axis = 1 if out_rows else 0
    s = (np.abs(w).max(axis=axis) / F32(127)).astype(F32)
    assert np.all(np.isfinite(s * F32(127)))
    sb = s[:, None] if out_rows else s[None, :]
    q = q127(w, sb)
    return {"qweight": q.view(np.uint8).tobytes(), "scales": s}, q.astype(F32) * sb


def ref_nf4(w, dq):
    flat = w.reshape(-1)
    n = flat.size
    nb = -(-n // BLOCK)
    blocks = np.zeros(nb * BLOCK, F32)
    blocks[:n] = flat
    blocks = blocks.reshape(nb, BLOCK)
    absmax = np.abs(blocks).max(axis=1)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        inv = (F32(1) / absmax).astype(F32)
        x = blocks * inv[:, None]
    idx = (x[:, :, None] > NF4_T).sum(axis=2)
    idx[(absmax == 0) | ~np.isfinite(inv)] = 7
    # the rule picks a nearest codebook value
    dist = np.abs(x.astype(np.float64)[:, :, None] - NF4.astype(np.float64))
    ok = (absmax == 0) | ~np.isfinite(inv)
    got = np.take_along_axis(dist, idx[:, :, None], axis=2)[:, :, 0]
    assert np.all(ok[:, None] | (got <= dist.min(axis=2) + 1e-7)), "not the nearest value"
    idx = idx.reshape(-1)[:n].astype(np.uint8)
    if n % 2:
        idx = np.append(idx, np.uint8(0))
    parts = {"qweight": ((idx[0::2] << 4) | idx[1::2]).astype(np.uint8).tobytes(),
             "shape": np.array(w.shape, "<i8")}
    a = absmax
    if not dq:
        parts["scales"] = absmax
    else:
        offset = F32(np.cumsum(absmax.astype(np.float64))[-1] / nb)  # in block order
        r = (absmax - offset).astype(F32)
        ng = -(-nb // DQ_BLOCK)
        rp = np.zeros(ng * DQ_BLOCK, F32)
        rp[:nb] = r
        g = (np.abs(rp).reshape(ng, DQ_BLOCK).max(axis=1) / F32(127)).astype(F32)
        gb = np.repeat(g, DQ_BLOCK)[:nb]
        sq = q127(r, gb)
        a = (sq.astype(F32) * gb).astype(F32) + offset
        parts.update(scales_q=sq.view(np.uint8).tobytes(), scales_scale=g,
                     scales_offset=np.array([offset], F32))
    deq = NF4[idx[:n]] * np.repeat(a, BLOCK)[:n]
    return parts, deq.astype(F32).reshape(w.shape)


# ---- the checks ----

def quantize(model, fmt, dq, out):
    cmd = [splitchain, "quantize", "--model", model, "--to", fmt, "--out", out]
    print(R.run(cmd + (["--double-quant"] if dq else [])).strip())
    return out


def check_model(tag, family, make_args, with_tokenizer=False, hf=False):
    src = os.path.join(tmp, tag)
    shutil.rmtree(src, ignore_errors=True)
    R.run([splitchain, "make-model", "--out", src, "--seed", "7"] + make_args)
    if with_tokenizer:
        shutil.copy(TOKENIZER, os.path.join(src, "tokenizer.json"))
    inp, _ = read_st(os.path.join(src, "model.safetensors"))
    with open(os.path.join(src, "config.json")) as f:
        config = json.load(f)
    projs = [k for k in inp if PROJ[family].search(k)]
    assert projs, "no projections found in %s" % sorted(inp)
    for fmt, dq in (("int8", False), ("nf4", False), ("nf4", True)):
        dst = quantize(src, fmt, dq, os.path.join(tmp, "%s-%s%s" % (tag, fmt, "-dq" * dq)))
        got, meta = read_st(os.path.join(dst, "model.safetensors"))
        assert meta.get("format") == "pt", meta
        seen, deqs = set(), {}
        for name in projs:
            module = name[:-len(".weight")]
            w = as_f32(inp[name])
            parts, deq = ref_int8(w, family == "llama") if fmt == "int8" else ref_nf4(w, dq)
            deqs[name] = deq
            for part, want in parts.items():
                dtype, shape, raw = got["%s.%s" % (module, part)]
                seen.add("%s.%s" % (module, part))
                if isinstance(want, bytes):
                    assert dtype == "U8" and raw == want, "%s.%s differs" % (module, part)
                    assert shape == (w.shape if fmt == "int8" else (len(want),)), shape
                else:
                    assert dtype == ("I64" if part == "shape" else "F32"), (part, dtype)
                    assert raw == want.tobytes(), "%s.%s differs (%s)" % (module, part, dtype)
            assert "%s.weight" % module not in got
        for name, t in inp.items():
            if name not in projs:
                assert got[name] == t, "%s changed" % name
                seen.add(name)
        assert seen == set(got), "unexpected tensors %s" % sorted(set(got) - seen)
        with open(os.path.join(dst, "config.json")) as f:
            qconf = json.load(f)
        want_q = {"quant_method": "splitchain", "bits": 8 if fmt == "int8" else 4,
                  "format": "int8_channel" if fmt == "int8" else "nf4", "double_quant": dq,
                  "weight_layout": "out_in" if family == "llama" else "in_out",
                  "modules": MODULES[family]}
        if fmt == "nf4":
            want_q["block_size"] = BLOCK
        if dq:
            want_q["double_quant_block_size"] = DQ_BLOCK
        assert qconf.pop("quantization_config") == want_q
        assert qconf == config, "config.json changed beyond quantization_config"
        if with_tokenizer:
            with open(TOKENIZER, "rb") as a, open(os.path.join(dst, "tokenizer.json"), "rb") as b:
                assert a.read() == b.read(), "tokenizer.json not copied"
        # back to float32: the reference's dequantized weights, bit for bit
        back = dst + "-f32"
        print(R.run([splitchain, "quantize", "--model", dst, "--to", "f32", "--out",
                     back]).strip())
        fl, _ = read_st(os.path.join(back, "model.safetensors"))
        assert set(fl) == set(inp), "dequantized tensors %s" % sorted(set(fl) ^ set(inp))
        worst = 0.0
        for name, t in inp.items():
            if name in projs:
                assert fl[name][0] == "F32" and fl[name][1] == t[1], fl[name][:2]
                d = as_f32(fl[name])
                assert np.array_equal(bits(d), bits(deqs[name])), "%s dequantized differs" % name
                w = as_f32(t)
                worst = max(worst, float(np.linalg.norm(d - w) / np.linalg.norm(w)))
            else:
                assert fl[name] == t, "%s changed" % name
        with open(os.path.join(back, "config.json")) as f:
            assert json.load(f) == config
        print("  %s %s%s: all bytes and scales equal; max ||W - W'|| / ||W|| = %.4f"
              % (tag, fmt, " + double quant" if dq else "", worst))
        if hf:
            check_transformers(family, back, deqs)


def check_transformers(family, path, deqs):
    """transformers loads the dequantized model, no weight missing or left over."""
    import torch
    from transformers import GPT2LMHeadModel, LlamaForCausalLM
    cls = GPT2LMHeadModel if family == "gpt2" else LlamaForCausalLM
    m, info = cls.from_pretrained(path, torch_dtype=torch.float32, output_loading_info=True)
    bad = {k: v for k, v in info.items() if v}
    assert not bad, "transformers loaded %s with %s" % (path, bad)
    sd = m.state_dict()
    for name, d in deqs.items():
        key = name if name in sd else "transformer." + name
        assert np.array_equal(bits(sd[key].numpy()), bits(d)), key
    print("  transformers' %s loads %s: the dequantized weights as they are"
          % (cls.__name__, os.path.basename(path)))


def write_st(path, tensors):
    """A safetensors file of {name: (dtype, shape, raw bytes)}, in that order."""
    header, blobs, off = {}, [], 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h + b"".join(blobs))


def check_sharded():
    """A sharded llama-tiny (two shards and an index) quantizes to the very
    tensors of the single file (written by llama_tiny)."""
    src, dst = os.path.join(tmp, "llama-tiny"), os.path.join(tmp, "llama-sharded")
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(dst)
    shutil.copy(os.path.join(src, "config.json"), dst)
    inp, _ = read_st(os.path.join(src, "model.safetensors"))
    names = sorted(inp)
    shards = {"model-%05d-of-00002.safetensors" % (k + 1): names[k::2] for k in range(2)}
    for shard, part in shards.items():
        write_st(os.path.join(dst, shard), {n: inp[n] for n in part})
    with open(os.path.join(dst, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": {n: sh for sh, part in shards.items()
                                                  for n in part}}, f)
    out = quantize(dst, "nf4", True, dst + "-nf4-dq")
    got, _ = read_st(os.path.join(out, "model.safetensors"))
    want, _ = read_st(os.path.join(tmp, "llama-tiny-nf4-dq", "model.safetensors"))
    assert got == want, "the sharded model quantized differently"


def test_codebook_thresholds():
    """bitsandbytes' thresholds are the float32 midpoints of the codebook."""
    mid = ((NF4[:-1] + NF4[1:]) * F32(0.5)).astype(F32)
    assert np.array_equal(bits(mid), bits(NF4_T))


R.run_cases([
    ("nf4_thresholds_are_midpoints", test_codebook_thresholds),
    ("gpt2_tiny", lambda: check_model("gpt2-tiny", "gpt2", ["--preset", "gpt2-tiny"],
                                      with_tokenizer=True, hf=True)),
    ("gpt2_odd_bf16", lambda: check_model(
        "gpt2-odd", "gpt2", ["--layers", "2", "--heads", "5", "--embd", "45", "--vocab", "300",
                             "--positions", "32", "--dtype", "bf16", "--random-norms"])),
    ("llama_tiny", lambda: check_model("llama-tiny", "llama", ["--preset", "llama-tiny"],
                                       hf=True)),
    ("llama_sharded", check_sharded),
    ("llama_odd_f16", lambda: check_model(
        "llama-odd", "llama", ["--preset", "llama-tiny", "--layers", "2", "--heads", "3",
                               "--head-dim", "10", "--kv-heads", "1", "--embd", "45",
                               "--inner", "97", "--dtype", "f16", "--random-norms"])),
])
