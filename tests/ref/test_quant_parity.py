"""A training step on a quantized frozen base against float64 PyTorch.

`sc_reftool grad --base-quant int8|nf4 [--double-quant]` quantizes the float
model's projections as the segments load them (what a job's --base-quant
does) and computes one step's loss and LoRA gradients. The reference is the
float64 autograd of gpt2_ref / llama_ref on the DEQUANTIZED weights, which
this test makes itself: it reads the parts `splitchain quantize` writes
(whose every byte ref_quant checks against NumPy quantizers written from the
published algorithms) and dequantizes them here with NumPy, in float32 as
the format states (int8: q * s_o; NF4: codebook[idx] * absmax, with double
quantization absmax' = q_b * g_j + offset). Loss and every gradient agree to
1e-5 relative (fp32 compute, as ref_grad_parity). Also: the model quantized
on disk gives the very bits of the model quantized at load, 2 stages the
bits of 1, and the quantized base moves the gradients far beyond the
tolerance (so the check sees the quantization).

GPT-2 (Conv1D (in, out): int8 scales per column) and Llama (nn.Linear
(out, in): per row, GQA, untied head), each with int8, nf4 and nf4 + double
quantization.

Environment (set by ctest): SC_SPLITCHAIN, SC_REFTOOL, SC_REF_TMP.
"""

import os

import torch
from safetensors import safe_open
from safetensors.torch import load_file

import gpt2_ref as R
import llama_ref as LR
from quant_ref import dequantized_weights

TOL = 1e-5
B, T, M = 2, 32, 2
STEP, SEED = 3, 7

splitchain = R.tool("SC_SPLITCHAIN")
reftool = R.tool("SC_REFTOOL")
tmp = R.tmp_dir("quant_parity")
data = R.write_text(os.path.join(tmp, "data.txt"), seed=3)


def sc_grad(model_dir, adapter_dir, tag, stages=1, quant=()):
    out = os.path.join(tmp, "grad-%s-k%d.safetensors" % (tag, stages))
    R.run([reftool, "grad", "--model", model_dir, "--data", data, "--batch", B, "--seq", T,
           "--micro", M, "--step", STEP, "--seed", SEED, "--stages", stages,
           "--adapter", adapter_dir, "--out", out] + list(quant))
    with safe_open(out, framework="pt") as f:
        loss = (f.metadata() or {})["loss"]
    return load_file(out), loss


def compare(tag, ts, loss_s, ref, lora):
    x, y = ts["inputs"].long(), ts["targets"].long()
    want = ref.step_loss(x, y, lora)
    want.backward()
    got = float(loss_s)
    loss_err = abs(got - want.item()) / abs(want.item())
    print("  loss: splitchain %.9f  torch f64 %.9f  rel err %.2e" % (got, want.item(),
                                                                     loss_err))
    assert loss_err <= TOL, "%s: loss differs by %.3e relative" % (tag, loss_err)
    grads = lora.tensors("grad")
    names = sorted(k for k in ts if k not in ("inputs", "targets"))
    assert names == sorted(grads), "gradient tensors differ: %s" % (
        sorted(set(names) ^ set(grads))[:4],)
    worst, worst_name = 0.0, None
    for name in names:
        assert grads[name].abs().max() > 0, "reference gradient of %s is zero" % name
        err = R.max_rel_err(ts[name], grads[name])
        if err > worst:
            worst, worst_name = err, name
    print("  gradients: %d tensors, worst rel err %.2e (%s)" % (len(names), worst, worst_name))
    assert worst <= TOL, "%s: gradient %s differs by %.3e relative" % (tag, worst_name, worst)


def case(family, fmt, dq):
    def run():
        tag = "%s-%s%s" % (family, fmt, "-dq" * dq)
        if family == "gpt2":
            model_dir = R.make_model(splitchain, os.path.join(tmp, "gpt2"), 4, 4, 64, 320, 64,
                                     seed=11)
            cfg = R.load_config(model_dir)
            lora = R.random_lora(cfg, 4, 8.0, list(R.TARGETS), 1, 0.2, 0.2)
            make = lambda w: R.GPT2.from_tensors(cfg, w)  # noqa: E731
            load, strip, out_rows = R.load_adapter, "transformer.", False
        else:
            tm = LR.test_models()[0]  # llama, GQA, untied head
            model_dir = tm.write(tmp)
            cfg = LR.load_config(model_dir)
            lora = LR.random_lora(cfg, 4, 8.0, list(LR.TARGETS), 2, 0.1, 0.1)
            make = lambda w: LR.Llama.from_tensors(cfg, w)  # noqa: E731
            load, strip, out_rows = LR.load_adapter, "model.", True
        adapter_dir = os.path.join(tmp, "adapter-" + family)
        lora.save(adapter_dir)
        opt = ["--base-quant", fmt] + ["--double-quant"] * dq

        # the engine: quantized at load (1 and 2 stages), and quantized on disk
        ts, loss_s = sc_grad(model_dir, adapter_dir, tag, 1, opt)
        ts2, loss2 = sc_grad(model_dir, adapter_dir, tag, 2, opt)
        qdir = os.path.join(tmp, "q-" + tag)
        R.run([splitchain, "quantize", "--model", model_dir, "--to", fmt, "--out", qdir]
              + ["--double-quant"] * dq)
        tsd, lossd = sc_grad(qdir, adapter_dir, tag + "-disk", 1)
        for other, lo, what in ((ts2, loss2, "2 stages"), (tsd, lossd, "quantized on disk")):
            assert lo == loss_s, "%s: loss %s != %s" % (what, lo, loss_s)
            assert sorted(other) == sorted(ts)
            for name in ts:
                assert torch.equal(other[name], ts[name]), "%s: %s differs" % (what, name)
        print("  2 stages and the model quantized on disk: bit-identical")

        # the reference: float64 on the weights dequantized here
        ref = make(dequantized_weights(model_dir, qdir, fmt, dq, out_rows, strip))
        lora64 = load(adapter_dir, torch.float64).to(torch.float64, True)
        compare(tag, ts, loss_s, ref, lora64)
        # the same step on the float weights: how far the quantization
        # moves the gradients, against which the tolerance is small
        weights = (R if family == "gpt2" else LR).load_weights(model_dir, torch.float64)
        lora_f = load(adapter_dir, torch.float64).to(torch.float64, True)
        x, y = ts["inputs"].long(), ts["targets"].long()
        make(weights).step_loss(x, y, lora_f).backward()
        got_f, got_q = lora_f.tensors("grad"), lora64.tensors("grad")
        moved = max(R.max_rel_err(got_f[n], got_q[n]) for n in got_q)
        print("  the quantized base moves the gradients by %.2e relative (the tolerance: %g)"
              % (moved, TOL))
        assert moved > 30 * TOL, "the quantization barely shows: a weak check"
    return run


R.run_cases([("%s %s%s" % (fam, fmt, " + double quant" * dq), case(fam, fmt, dq))
             for fam in ("gpt2", "llama") for fmt, dq in (("int8", 0), ("nf4", 0), ("nf4", 1))])
