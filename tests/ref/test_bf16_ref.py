"""`splitchain quantize --to bf16` against torch's own rounding.

The bf16 format (sc_quant.h) rounds every projection weight of the float
model to bfloat16, round to nearest, ties to even, on the 16 bits dropped,
subnormals kept: what `t.to(torch.bfloat16)` gives. Each case writes a model
whose projections hold crafted float32 values (random normals over twelve
orders of magnitude; exact ties on both sides of an even and an odd last
bit; the neighbours of ties; subnormals, among them ties, the smallest ones
and the largest, which rounds up to the smallest normal; values that are
bf16 already; +-0; huge values up to 0x7f7f7fff, the largest float32 that
stays finite), quantizes it, reads the safetensors file and requires every
bf16 to be torch's, bit for bit, and the crafted set to have met every kind
of rounding. Also: the other tensors byte for byte, config.json's
quantization_config, `--to f32` widening exactly, a bf16 checkpoint kept
as it is, an f16 one through float32, and a weight that rounds to infinity
(or is infinite) refused with an error that names it.

Environment (set by ctest): SC_SPLITCHAIN, SC_REFTOOL, SC_REF_TMP.
"""

import json
import os
import re
import shutil
import subprocess

import numpy as np
import torch
from safetensors.torch import load_file, save_file

import gpt2_ref as R

R.offline()

PROJ = {"gpt2": re.compile(r"h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)"
                           r"\.weight$"),
        "llama": re.compile(r"layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)"
                            r"\.weight$")}
MODULES = {"gpt2": ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"],
           "llama": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                     "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]}
MAKE = {"gpt2": ["--layers", "2", "--heads", "5", "--embd", "45", "--vocab", "300",
                 "--positions", "32", "--random-norms"],
        "llama": ["--preset", "llama-tiny", "--layers", "2", "--heads", "3", "--head-dim", "10",
                  "--kv-heads", "1", "--embd", "45", "--inner", "97", "--random-norms"]}

splitchain = R.tool("SC_SPLITCHAIN")
tmp = R.tmp_dir("bf16")


def u32(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def bf16_bits(t):
    """A bfloat16 tensor's 16 bits, as uint16."""
    return t.contiguous().view(torch.int16).numpy().view(np.uint16)


def crafted(n, rng):
    """n float32 values, every kind of rounding to bf16 among them."""
    sign = rng.integers(0, 2, n, dtype=np.uint32) << 31
    hi = rng.integers(0x0080, 0x7f7f, n, dtype=np.uint32)  # finite normal bf16, below max
    kinds = [
        # random normals over 1e-6 .. 1e6
        (rng.standard_normal(n) * 10.0 ** rng.uniform(-6, 6, n)).astype(np.float32).view(
            np.uint32),
        sign | hi << 16 | 0x8000,              # exact ties (either parity of hi)
        sign | hi << 16 | 0x7fff,              # just below a tie: down
        sign | hi << 16 | 0x8001,              # just above: up
        sign | hi << 16,                       # bf16 already
        sign | rng.integers(1, 0x00800000, n, dtype=np.uint32),  # subnormals
        sign | rng.integers(0, 0x80, n, dtype=np.uint32) << 16 | 0x8000,  # subnormal ties
        sign | rng.integers(0x7f000000, 0x7f7f8000, n, dtype=np.uint32),  # huge, finite
    ]
    fixed = np.array([0x00000000, 0x80000000, 0x00000001, 0x80000001, 0x00008000,
                      0x00018000, 0x00007fff, 0x00008001, 0x007fffff, 0x807fffff,
                      0x007f8000, 0x00800000, 0x7f7f7fff, 0xff7f7fff, 0x7f7e8000,
                      0x7f7d8000, 0x3f808000, 0x3f818000, 0x3f7fffff], dtype=np.uint32)
    pick = rng.integers(0, len(kinds), n)
    out = np.choose(pick, kinds).astype(np.uint32)
    m = min(n, len(fixed))
    out[rng.permutation(n)[:m]] = fixed[:m]
    return out.view(np.float32)


def quantize(src, to, out, ok=True):
    shutil.rmtree(out, ignore_errors=True)
    cmd = [splitchain, "quantize", "--model", src, "--to", to, "--out", out]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if ok and r.returncode != 0:
        raise RuntimeError("%s failed (%d):\n%s" % (" ".join(cmd), r.returncode, r.stdout))
    if not ok:
        assert r.returncode != 0, "%s succeeded; it should have refused" % " ".join(cmd)
    return r.stdout


def make(tag, family, dtype="f32"):
    src = os.path.join(tmp, tag)
    shutil.rmtree(src, ignore_errors=True)
    R.run([splitchain, "make-model", "--out", src, "--seed", "5", "--dtype", dtype]
          + MAKE[family])
    return src


def check_rounding(family):
    src = make(family, family)
    path = os.path.join(src, "model.safetensors")
    ts = {k: v.clone() for k, v in load_file(path).items()}  # no view of the file
    rng = np.random.default_rng(17)
    projs = sorted(k for k in ts if PROJ[family].search(k))
    assert projs, "no projections in %s" % sorted(ts)
    for name in projs:
        ts[name] = torch.from_numpy(crafted(ts[name].numel(), rng).reshape(ts[name].shape))
    save_file(ts, path, metadata={"format": "pt"})
    with open(os.path.join(src, "config.json")) as f:
        config = json.load(f)

    dst = os.path.join(tmp, family + "-bf16")
    print("  " + quantize(src, "bf16", dst).strip())
    got = load_file(os.path.join(dst, "model.safetensors"))
    assert set(got) == set(ts), "tensors %s" % sorted(set(got) ^ set(ts))
    seen = {"ties up": 0, "ties down": 0, "subnormal": 0, "to normal": 0, "huge": 0}
    for name in projs:
        w = ts[name]
        assert got[name].dtype == torch.bfloat16 and got[name].shape == w.shape, (
            name, got[name].dtype, tuple(got[name].shape))
        want = bf16_bits(w.to(torch.bfloat16))
        have = bf16_bits(got[name])
        bad = np.flatnonzero(want.ravel() != have.ravel())
        if bad.size:
            i = bad[0]
            raise AssertionError("%s: %d of %d differ; first: f32 0x%08x -> 0x%04x, torch 0x%04x"
                                 % (name, bad.size, want.size, u32(w.numpy()).ravel()[i],
                                    have.ravel()[i], want.ravel()[i]))
        u = u32(w.numpy()).ravel()
        wb = want.ravel().astype(np.uint32)
        tie = (u & 0xffff) == 0x8000
        seen["ties up"] += int(np.sum(tie & (wb << 16 > (u & 0xffff0000))))
        seen["ties down"] += int(np.sum(tie & (wb << 16 == (u & 0xffff0000))))
        seen["subnormal"] += int(np.sum(((u & 0x7f800000) == 0) & ((u & 0x7fffffff) != 0)))
        seen["to normal"] += int(np.sum(((u & 0x7f800000) == 0) & ((wb & 0x7f80) != 0)))
        seen["huge"] += int(np.sum((u & 0x7f800000) >= 0x7f000000))
    for kind, k in seen.items():
        assert k > 0, "the crafted weights met no %s" % kind
    print("  %d projections, %d weights: every bf16 torch's (%s)"
          % (len(projs), sum(ts[n].numel() for n in projs),
             ", ".join("%s %d" % kv for kv in seen.items())))
    for name, t in ts.items():
        if name not in projs:
            assert got[name].dtype == t.dtype and torch.equal(got[name], t), "%s changed" % name
    with open(os.path.join(dst, "config.json")) as f:
        qconf = json.load(f)
    q = qconf.pop("quantization_config")
    assert qconf == config, "config.json changed beyond quantization_config"
    assert (q["quant_method"], q["bits"], q["format"]) == ("splitchain", 16, "bf16"), q
    assert q["modules"] == MODULES[family], q["modules"]
    assert q["weight_layout"] == ("out_in" if family == "llama" else "in_out"), q

    # back to float32: the bf16 widened, exactly
    back = dst + "-f32"
    quantize(dst, "f32", back)
    fl = load_file(os.path.join(back, "model.safetensors"))
    for name in projs:
        assert fl[name].dtype == torch.float32
        assert np.array_equal(u32(fl[name].numpy()), u32(ts[name].to(torch.bfloat16).float()
                                                        .numpy())), name
    print("  --to f32 widens every bf16 exactly")


def check_inputs():
    """A bf16 checkpoint quantizes to its own bytes; an f16 one is rounded
    from its float32 values (exact widening, then torch's rounding)."""
    for dtype, family in (("bf16", "gpt2"), ("f16", "llama")):
        src = make("%s-%s" % (family, dtype), family, dtype)
        dst = src + "-bf16"
        quantize(src, "bf16", dst)
        inp = load_file(os.path.join(src, "model.safetensors"))
        got = load_file(os.path.join(dst, "model.safetensors"))
        n = 0
        for name, t in inp.items():
            if PROJ[family].search(name):
                want = bf16_bits(t.float().to(torch.bfloat16))
                assert got[name].dtype == torch.bfloat16
                assert np.array_equal(bf16_bits(got[name]), want), name
                if dtype == "bf16":
                    assert np.array_equal(want, bf16_bits(t)), name
                n += 1
            else:
                assert torch.equal(got[name], t), "%s changed" % name
        print("  %s %s: %d projections as torch rounds them" % (family, dtype, n))


def check_refusals():
    """A weight that rounds to infinity, or is infinite, is refused."""
    src = make("refuse", "gpt2")
    path = os.path.join(src, "model.safetensors")
    orig = {k: v.clone() for k, v in load_file(path).items()}
    name = "transformer.h.1.mlp.c_fc.weight"
    assert name in orig, sorted(orig)
    for bits, what in ((0x7f7f8000, "a tie that rounds to infinity"),
                       (0xff7fffff, "-FLT_MAX"), (0x7f800000, "infinity")):
        ts = dict(orig)
        w = ts[name].clone().numpy()
        w.view(np.uint32)[3, 7] = bits
        ts[name] = torch.from_numpy(w)
        save_file(ts, path, metadata={"format": "pt"})
        out = quantize(src, "bf16", src + "-bf16", ok=False)
        assert "(3, 7)" in out and name.rsplit(".", 1)[0] in out, (what, out)
        print("  %s (0x%08x) refused: %s" % (what, bits, out.strip().splitlines()[-1]))


R.run_cases([
    ("gpt2_rounding", lambda: check_rounding("gpt2")),
    ("llama_rounding", lambda: check_rounding("llama")),
    ("bf16_and_f16_inputs", check_inputs),
    ("refusals", check_refusals),
])
