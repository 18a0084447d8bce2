"""A training step on a bf16 frozen base against PyTorch.

A bf16 base (`splitchain quantize --to bf16`, or a job's --precision bf16)
runs the frozen projections' GEMMs and the LM head's in bf16: their weights
(and the token embedding, which GPT-2's head is) are stored bf16, rounded
as they load when the file holds them wider, and, on the oneDNN path (a CPU
with AMX, or AMD's AVX512-BF16, and a build with oneDNN; SC_CPU_BF16=matmul
on any with AVX512-BF16), their inputs are rounded to
bf16 too (the activation going forward, the output gradient going back),
the products summed in fp32 and kept fp32 (the logits too). The fp32 tiles
path (any other CPU, or SC_CPU_BF16=tiles) widens the bf16 weights exactly
and keeps the inputs fp32. The embedding lookup widens its bf16 rows.
Everything else stays fp32: the LoRA products and their gradients, learned
positions, norms, attention (its two batched products and softmax), GELU /
SwiGLU, the loss and the optimizer.

`sc_reftool grad` gives one step's loss and LoRA gradients on the bf16
model; this test runs it on both paths and compares each with:

1. float64 autograd of gpt2_ref / llama_ref emulating the path's rounding
   points exactly: the bf16 weights as stored (read from the file), and on
   the oneDNN path x -> bf16(x) before every frozen product and
   dy -> bf16(dy) before its backward product. The tiles path has no
   rounding beyond the weights: TOL_TILES = 1e-5, as ref_quant_parity.
   The oneDNN path's input rounding is discontinuous: an input the engine
   computes in fp32 a few ulps from where float64 has it lands, now and
   then, on the other side of a bf16 rounding boundary, moving that one
   element by a bf16 ulp (2^-8 relative); TOL_ONEDNN = 2e-4 bounds those
   flips (GPT-2: 9e-5), still 10x below the distance between rounding the
   inputs and not (a few 1e-3, checked below). How far flips can move a
   step depends on the model: measured here by rerunning the emulation
   with every rounded input first jittered by up to DITHER (an fp32
   rounding, relative) in DITHER_RUNS seeded runs; the engine may be
   FLIP_MARGIN times the farthest of those from the exact emulation.
   Llama's test model is far more sensitive than GPT-2's: one flipped
   element moves some gradient by ~2e-3 of its largest (GPT-2 ~1e-5), so
   the jittered runs land 2e-3..4e-3 away, as far as PyTorch's own float32
   with the same rounding points does, and as the engine does (issue 18:
   each of its gemm_q calls is within fp32 accumulation of the double
   product of its bf16 inputs; bf16_test checks every layout). The same is
   checked over all gradients at once (relative L2, bounded by FLIP_MARGIN
   times the jittered runs'), where a flip is one element among thousands:
   that measure (not the element-wise one, since the LM head's rounded
   output gradient adds flips) is what must tell rounding the inputs from
   not.
2. PyTorch's CPU autocast, torch.autocast("cpu", dtype=torch.bfloat16),
   around the same frozen products (the LM head's included) of an fp32
   model whose token embedding is stored bf16, as the engine stores it
   (autocast leaves a lookup alone; everything else fp32, as above).
   Autocast also rounds each product's OUTPUT (and in backward
   the input gradient) to bf16, which the engine keeps fp32: a relative
   error of up to u = 2^-9 per element per product that the layers carry
   forward and back. TOL_AUTOCAST = 16u = 3.1e-2 (measured 1e-3..1.6e-2,
   up to 8u, on these models): a bound on the disagreement of two correct bf16
   implementations. It is of the size of bf16's whole effect (bf16 against
   fp32 moves the gradients by about as much), so it cannot tell bf16 from
   fp32 compute: check 1 does that.

An int8 / NF4 base under --precision bf16 (`sc_reftool grad --base-quant
FMT --precision bf16`, a job's options) takes the same path with its
weights dequantized to fp32 as the format states and rounded to bf16
(dequantization written here from the published algorithms, quant_ref.py;
qbf16_test checks the rounding bit for bit), and the token embedding and
head held bf16 as a bf16 base holds them: checks 1 and 2 above on the model
of those weights, with the same tolerances. On the tiles path its
projections are the fp32 dequantization (check 1 on those, TOL_TILES);
2 stages give the bits of 1.

Also: the model quantized to bf16 gives 2 stages the bits of 1; where
oneDNN can run (avx512_bf16 or amx_bf16 in /proc/cpuinfo, not held back by
ONEDNN_MAX_CPU_ISA, and SC_ONEDNN=1 from CMake) SC_CPU_BF16=matmul must
differ from the tiles path, elsewhere be bit-identical to it; the
automatic path must be oneDNN's with AMX or on an AMD CPU
(sc_backend_cpu_bf16_matmul_pays), the tiles' bits elsewhere.

GPT-2 (Conv1D (in, out)) and Llama (nn.Linear (out, in), GQA, untied head).

Environment (set by ctest): SC_SPLITCHAIN, SC_REFTOOL, SC_REF_TMP, SC_ONEDNN.
"""

import os
import re

import torch
from safetensors import safe_open
from safetensors.torch import load_file

import gpt2_ref as R
import llama_ref as LR
from quant_ref import dequantized_weights

U = 2.0 ** -9  # bf16's unit roundoff (8 significant bits)
TOL_TILES = 1e-5
TOL_ONEDNN = 2e-4
TOL_AUTOCAST = 16 * U
B, T, M = 2, 32, 2
DITHER = 2.0 ** -23  # relative jitter of a rounded input: about one fp32 rounding
DITHER_RUNS = 4
FLIP_MARGIN = 2
STEP, SEED = 3, 7

splitchain = R.tool("SC_SPLITCHAIN")
reftool = R.tool("SC_REFTOOL")
tmp = R.tmp_dir("bf16_parity")
data = R.write_text(os.path.join(tmp, "data.txt"), seed=5)


def cpu_bf16():
    """(has bf16 instructions, has AMX-BF16, is AMD's) as oneDNN will see
    the CPU: /proc/cpuinfo, less what ONEDNN_MAX_CPU_ISA (or DNNL_MAX_CPU_ISA)
    holds oneDNN back from."""
    flags, amd = set(), False
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags |= set(line.split(":", 1)[1].split())
            elif line.startswith("vendor_id"):
                amd = amd or "AuthenticAMD" in line
    amx = "amx_bf16" in flags
    bf16 = amx or "avx512_bf16" in flags
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
           or "ALL").upper()
    if cap != "ALL":
        amx = amx and "AMX" in cap
        bf16 = bf16 and (amx or cap == "AVX512_CORE_BF16" or "FP16" in cap)
    return bf16, amx, amd


HAS_BF16, HAS_AMX, IS_AMD = cpu_bf16()
# oneDNN's bf16 matmul can run here (SC_CPU_BF16=matmul takes it) ...
CAN_ONEDNN = HAS_BF16 and os.environ.get("SC_ONEDNN") == "1"
# ... and is the automatic path (sc_backend_cpu_bf16_matmul_pays: AMX, or
# AVX512-BF16 on AMD; elsewhere the fp32 tiles are faster)
EXPECT_ONEDNN = CAN_ONEDNN and (HAS_AMX or IS_AMD)


def sc_grad(model_dir, adapter_dir, tag, stages=1, path="auto", opts=()):
    out = os.path.join(tmp, "grad-%s-k%d-%s.safetensors" % (tag, stages, path))
    env = dict(os.environ)
    env["SC_CPU_BF16"] = path
    R.run([reftool, "grad", "--model", model_dir, "--data", data, "--batch", B, "--seq", T,
           "--micro", M, "--step", STEP, "--seed", SEED, "--stages", stages,
           "--adapter", adapter_dir, "--out", out] + list(opts), env=env)
    with safe_open(out, framework="pt") as f:
        loss = float((f.metadata() or {})["loss"])
    return load_file(out), loss


def three_paths(model_dir, adapter_dir, tag, what, opts=()):
    """The engine's step on the automatic path (1 and 2 stages: the same
    bits), the fp32 tiles and oneDNN's matmul (where it can run): checks
    the automatic path is the one sc_backend_cpu_bf16_matmul_pays picks
    and that oneDNN's differs from the tiles. Returns (tiles, loss),
    (oneDNN's or None, loss) and (automatic, loss)."""
    auto, loss_a = sc_grad(model_dir, adapter_dir, tag, opts=opts)
    auto2, loss_a2 = sc_grad(model_dir, adapter_dir, tag, stages=2, opts=opts)
    tiles, loss_t = sc_grad(model_dir, adapter_dir, tag, path="tiles", opts=opts)
    mm, loss_m = sc_grad(model_dir, adapter_dir, tag, path="matmul", opts=opts)
    assert loss_a2 == loss_a and identical(auto2, auto), "2 stages differ from 1"
    mm_is_tiles = loss_m == loss_t and identical(mm, tiles)
    if CAN_ONEDNN:
        assert not mm_is_tiles, "the CPU has bf16 instructions but oneDNN's path was not taken"
    else:
        assert mm_is_tiles, "no oneDNN expected, yet SC_CPU_BF16=matmul differs from the tiles"
    want, loss_w = (mm, loss_m) if EXPECT_ONEDNN else (tiles, loss_t)
    assert loss_a == loss_w and identical(auto, want), \
        "the automatic path is not %s" % ("oneDNN's" if EXPECT_ONEDNN else "the tiles")
    print("  %s, the automatic path: %s (2 stages: the same bits); oneDNN %s"
          % (what, "oneDNN, bf16 inputs" if EXPECT_ONEDNN else "the fp32 tiles",
             "tested (SC_CPU_BF16=matmul)" if CAN_ONEDNN else "cannot run here"))
    return (tiles, loss_t), (mm if CAN_ONEDNN else None, loss_m), (auto, loss_a)


def r16(t):
    """t rounded to bf16 as the engine rounds its fp32 values, in t's dtype."""
    return t.to(torch.float32).to(torch.bfloat16).to(t.dtype)


class RoundedMM(torch.autograd.Function):
    """bf16(x) @ w forward, bf16(dy) @ w^T back (w frozen): the oneDNN path."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(w)
        return r16(x) @ w

    @staticmethod
    def backward(ctx, dy):
        (w,) = ctx.saved_tensors
        return r16(dy) @ w.t(), None


def dithered_mm(seed):
    """RoundedMM with each input jittered by up to DITHER (relative) before
    it is rounded: the emulation as an fp32 engine with other rounding
    errors might round, to measure how far bf16 flips alone move a step."""
    g = torch.Generator().manual_seed(seed)

    def jitter(t):
        return t * (1 + DITHER * (2 * torch.rand(t.shape, generator=g, dtype=t.dtype) - 1))

    class DitheredMM(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w):
            ctx.save_for_backward(w)
            return r16(jitter(x)) @ w

        @staticmethod
        def backward(ctx, dy):
            (w,) = ctx.saved_tensors
            return r16(jitter(dy)) @ w.t(), None

    return DitheredMM.apply


def autocast_mm(x, w):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = x @ w
    assert y.dtype == torch.bfloat16, y.dtype
    return y.float()


def variant(cls, mm, head=True):
    """cls with its frozen products, the LM head's included (unless not
    head: an int8 / nf4 base's head stays fp32), computed by mm(x, w)."""
    ops = {"frozen_mm": lambda self, x, w: mm(x, w)}
    if head:
        ops["head_mm"] = lambda self, x, w: mm(x, w)
    return type(cls.__name__ + "_" + mm.__name__, (cls,), ops)


# The tensors a bf16 base holds bf16 besides the projections (names as
# gpt2_ref / llama_ref load them): the token embedding and an untied head.
HELD_BF16 = ("wte.weight", "embed_tokens.weight", "lm_head.weight")
# The projections' names as gpt2_ref / llama_ref load them (no prefix).
PROJ_KEY = re.compile(r"(h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)"
                      r"|layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj))"
                      r"\.weight$")


def bf16_held(weights):
    """weights with the embedding and head rounded to bf16 as the engine
    rounds them at load (the projections are bf16 in the file already)."""
    return {n: r16(t) if n in HELD_BF16 else t for n, t in weights.items()}


def step(ts, model, lora):
    """(loss, gradients) of model's step on the engine's batch ts, with lora
    (trained in place)."""
    want = model.step_loss(ts["inputs"].long(), ts["targets"].long(), lora)
    want.backward()
    return want.item(), lora.tensors("grad")


def distance(got, loss, want):
    """(loss rel err, worst gradient rel err, its name) of got / loss against
    the (loss, gradients) want."""
    names = sorted(k for k in got if k not in ("inputs", "targets"))
    assert names == sorted(want[1]), "gradient tensors differ: %s" % (
        sorted(set(names) ^ set(want[1]))[:4],)
    worst, worst_name = 0.0, None
    for name in names:
        assert want[1][name].abs().max() > 0, "reference gradient of %s is zero" % name
        err = R.max_rel_err(got[name], want[1][name])
        if err > worst:
            worst, worst_name = err, name
    return abs(loss - want[0]) / abs(want[0]), worst, worst_name


def rel_l2(got, want):
    """||got - want|| / ||want|| over all the gradients of want (a step's
    (loss, gradients)) at once: a flipped bf16 rounding moves one element,
    barely this; a rounding point missing or added moves every element."""
    num = sum(float(((got[n].double() - w.double()) ** 2).sum()) for n, w in want[1].items())
    den = sum(float((w.double() ** 2).sum()) for w in want[1].values())
    return (num / den) ** 0.5


def errors(ts, loss, model, lora):
    """distance of the engine's results ts / loss from model's step on lora."""
    return distance(ts, loss, step(ts, model, lora))


def check(what, errs, tol):
    loss_err, worst, name = errs
    print("  %-34s loss %.2e, gradients %.2e (%s) [tolerance %.1e]"
          % (what, loss_err, worst, name.split("model.")[-1], tol))
    assert loss_err <= tol and worst <= tol, "%s: beyond %.1e" % (what, tol)


def identical(a, b):
    return sorted(a) == sorted(b) and all(torch.equal(a[n], b[n]) for n in a)


def case(family):
    def run():
        model_dir, cfg, lora, fam, cls, load, _, _ = family_setup(family)
        adapter_dir = os.path.join(tmp, "adapter-" + family)
        lora.save(adapter_dir)
        qdir = os.path.join(tmp, family + "-bf16")
        R.run([splitchain, "quantize", "--model", model_dir, "--to", "bf16", "--out", qdir])

        # the engine: the automatic path (1 and 2 stages), the fp32 tiles, oneDNN
        (tiles, loss_t), (mm, loss_m), (auto, loss_a) = three_paths(
            qdir, adapter_dir, family, "bf16 base")

        def lora_as(dtype):
            return load(adapter_dir, dtype).to(dtype, True)

        # the stored bf16, widened
        w_bf16 = bf16_held(fam.load_weights(qdir, torch.float64))
        w_f64 = fam.load_weights(model_dir, torch.float64)
        w_f32 = fam.load_weights(model_dir, torch.float32)
        exact = cls.from_tensors(cfg, w_bf16)
        rounded = variant(cls, RoundedMM.apply).from_tensors(cfg, w_bf16)
        autocast = variant(cls, autocast_mm).from_tensors(cfg, bf16_held(w_f32))

        # 1. float64 emulating each path's rounding points
        check("tiles vs float64, bf16 weights", errors(tiles, loss_t, exact,
                                                       lora_as(torch.float64)), TOL_TILES)
        if mm is not None:
            rounding_checks(cfg, cls, mm, loss_m, rounded, w_bf16, exact,
                            lambda: lora_as(torch.float64))

        # 2. PyTorch's CPU autocast around the same frozen products
        for what, ts, loss in (("tiles", tiles, loss_t), ("oneDNN", mm, loss_m)):
            if ts is None:
                continue
            check("%s vs torch.autocast bf16" % what,
                  errors(ts, loss, autocast, lora_as(torch.float32)), TOL_AUTOCAST)
        # for scale: how far bf16 itself moves the step from fp32
        moved = errors(auto, loss_a, cls.from_tensors(cfg, w_f64), lora_as(torch.float64))
        print("  bf16 vs float64 on the fp32 weights: loss %.2e, gradients %.2e"
              % moved[:2])
        assert moved[1] > 30 * TOL_TILES, "the bf16 weights barely show: a weak check"
    return run


def rounding_checks(cfg, cls, auto, loss_a, rounded, w_bf16, exact, fresh, head=True):
    """Check 1 on the oneDNN path: the engine's step (auto, loss_a) against
    the float64 model `rounded` (bf16 inputs to every frozen product; the
    head's too unless not head), within what fp32-sized jitter of the
    rounded inputs moves the emulation (flips), and far from `exact` (the
    same bf16 weights, inputs not rounded). fresh() gives a new float64
    adapter for each model run."""
    want = step(auto, rounded, fresh())
    flips = flips_l2 = 0.0  # how far fp32-sized jitter of the rounded inputs moves it
    for seed in range(DITHER_RUNS):
        jittered = variant(cls, dithered_mm(seed), head).from_tensors(cfg, w_bf16)
        d = step(auto, jittered, fresh())
        flips = max(flips, *distance(d[1], d[0], want)[:2])
        flips_l2 = max(flips_l2, rel_l2(d[1], want))
    tol = max(TOL_ONEDNN, FLIP_MARGIN * flips)
    tol_l2 = max(TOL_ONEDNN, FLIP_MARGIN * flips_l2)
    print("  (the emulation jittered by %.1e before rounding: up to %.2e from it, "
          "%.2e over all gradients)" % (DITHER, flips, flips_l2))
    check("oneDNN vs float64, bf16 inputs", distance(auto, loss_a, want), tol)
    got_l2 = rel_l2(auto, want)
    print("  oneDNN vs float64, bf16 inputs, over all gradients: %.2e [tolerance %.1e]"
          % (got_l2, tol_l2))
    assert got_l2 <= tol_l2, "oneDNN vs float64 over all gradients: beyond %.1e" % tol_l2
    # rounding the inputs moves the results beyond those tolerances:
    # element-wise beyond 10 TOL_ONEDNN, over all gradients beyond the
    # flips' (element-wise, where a flip moves one gradient element
    # as far as a rounding point does, Llama's test model can't tell)
    base = step(auto, exact, fresh())
    apart = distance(auto, loss_a, base)
    apart_l2 = rel_l2(auto, base)
    print("  (oneDNN vs float64 without rounding the inputs: %.2e, %.2e over all "
          "gradients)" % (apart[1], apart_l2))
    assert apart[1] > 10 * TOL_ONEDNN and apart_l2 > tol_l2, \
        "the input rounding barely shows: weak check"


def family_setup(family):
    """(model_dir, cfg, lora, fam module, model class, adapter loader, the
    prefix its tensor names drop, whether nn.Linear (out, in))."""
    if family == "gpt2":
        model_dir = R.make_model(splitchain, os.path.join(tmp, "gpt2"), 4, 4, 64, 320, 64,
                                 seed=11)
        cfg = R.load_config(model_dir)
        lora = R.random_lora(cfg, 4, 8.0, list(R.TARGETS), 1, 0.2, 0.2)
        return model_dir, cfg, lora, R, R.GPT2, R.load_adapter, "transformer.", False
    model_dir = LR.test_models()[0].write(tmp)  # llama, GQA, untied head
    cfg = LR.load_config(model_dir)
    lora = LR.random_lora(cfg, 4, 8.0, list(LR.TARGETS), 2, 0.1, 0.1)
    return model_dir, cfg, lora, LR, LR.Llama, LR.load_adapter, "model.", True


def qcase(family, fmt, dq):
    """An int8 / nf4 base under --precision bf16 (the module comment)."""
    def run():
        model_dir, cfg, lora, fam, cls, load, strip, out_rows = family_setup(family)
        tag = "%s-%s%s" % (family, fmt, "-dq" * dq)
        adapter_dir = os.path.join(tmp, "adapter-" + tag)
        lora.save(adapter_dir)
        quant = ["--base-quant", fmt] + ["--double-quant"] * dq
        opts = quant + ["--precision", "bf16"]
        (tiles, loss_t), (mm, loss_m), _ = three_paths(
            model_dir, adapter_dir, tag, "%s + --precision bf16" % fmt, opts=opts)

        def lora_as(dtype):
            return load(adapter_dir, dtype).to(dtype, True)

        # the weights dequantized here in float32, then rounded to bf16
        qdir = os.path.join(tmp, "q-" + tag)
        R.run([splitchain, "quantize", "--model", model_dir, "--to", fmt, "--out", qdir]
              + ["--double-quant"] * dq)
        w_deq = dequantized_weights(model_dir, qdir, fmt, dq, out_rows, strip)
        proj = [n for n in w_deq if PROJ_KEY.search(n)]
        w_bf16 = bf16_held({n: r16(t) if n in proj else t for n, t in w_deq.items()})
        # 1. the tiles (the projections dequantized to fp32, not rounded;
        # embedding and head bf16): float64 on those weights; oneDNN: with
        # the rounding points on the bf16 weights
        check("tiles vs float64, bf16 embedding",
              errors(tiles, loss_t, cls.from_tensors(cfg, bf16_held(w_deq)),
                     lora_as(torch.float64)), TOL_TILES)
        if mm is not None:
            rounding_checks(cfg, cls, mm, loss_m,
                            variant(cls, RoundedMM.apply).from_tensors(cfg, w_bf16), w_bf16,
                            cls.from_tensors(cfg, w_bf16), lambda: lora_as(torch.float64))
        # 2. autocast around the frozen products of the fp32 model of the
        # dequantized weights (autocast rounds them to bf16 itself), its
        # embedding held bf16
        autocast = variant(cls, autocast_mm).from_tensors(
            cfg, bf16_held({n: t.to(torch.float32) for n, t in w_deq.items()}))
        for what, ts, loss in (("tiles", tiles, loss_t), ("oneDNN", mm, loss_m)):
            if ts is None:
                continue
            check("%s vs torch.autocast bf16" % what,
                  errors(ts, loss, autocast, lora_as(torch.float32)), TOL_AUTOCAST)
    return run


R.run_cases([(family, case(family)) for family in ("gpt2", "llama")] +
            [("%s %s%s + bf16" % (fam, fmt, " + double quant" * dq), qcase(fam, fmt, dq))
             for fam, fmt, dq in (("gpt2", "nf4", 0), ("llama", "nf4", 1), ("llama", "int8", 0))])
