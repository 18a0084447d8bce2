"""Loss and LoRA gradients of `sc_reftool grad` against the float64 autograd
of gpt2_ref, on a tiny random model whose norms and biases are random too,
with adapters whose A and B are both nonzero. Also: a chain of 1, 2 or 4
in-process stages gives bit-identical results.

Environment (set by ctest): SC_SPLITCHAIN, SC_REFTOOL, SC_REF_TMP.
"""

import os

import torch
from safetensors import safe_open
from safetensors.torch import load_file

import gpt2_ref as R

TOL = 1e-5
L, NH, C, V, P = 4, 4, 64, 512, 64
B, T, M = 2, 32, 2
STEP, SEED = 3, 7

splitchain = R.tool("SC_SPLITCHAIN")
reftool = R.tool("SC_REFTOOL")
tmp = R.tmp_dir("grad_parity")
model_dir = R.make_model(splitchain, os.path.join(tmp, "model"), L, NH, C, V, P, seed=11)
data = R.write_text(os.path.join(tmp, "data.txt"), seed=1)
ref = R.GPT2(model_dir, torch.float64)


def sc_grad(adapter_dir, stages, tag):
    out = os.path.join(tmp, "grad-%s-k%d.safetensors" % (tag, stages))
    R.run([reftool, "grad", "--model", model_dir, "--data", data, "--batch", B, "--seq", T,
           "--micro", M, "--step", STEP, "--seed", SEED, "--stages", stages,
           "--adapter", adapter_dir, "--out", out])
    with safe_open(out, framework="pt") as f:
        meta = f.metadata() or {}
    assert "loss" in meta, "no loss in the metadata of %s" % out
    return load_file(out), meta["loss"]


def check_batch(ts):
    x, y = ts["inputs"], ts["targets"]
    assert x.dtype == torch.int32 and y.dtype == torch.int32, (x.dtype, y.dtype)
    assert tuple(x.shape) == (M, B, T) and tuple(y.shape) == (M, B, T), tuple(x.shape)
    # windows of T + 1 tokens: targets are the inputs shifted by one
    assert torch.equal(x[..., 1:], y[..., :-1]), "targets are not the shifted inputs"
    assert int(x.min()) >= 0 and int(x.max()) < 256, "byte-level text gives ids < 256"


def torch_f32_err(adapter_dir, x, y, want):
    """Worst error of torch's own float32 gradients: the scale of float32 noise."""
    ref32 = R.GPT2(model_dir, torch.float32)
    lora = R.load_adapter(adapter_dir, torch.float32).to(torch.float32, True)
    ref32.step_loss(x, y, lora).backward()
    got = lora.tensors("grad")
    return max(R.max_rel_err(got[n], want[n]) for n in want)


def parity_case(tag, targets, rank, alpha, seed, scale=0.2):
    def case():
        adapter_dir = os.path.join(tmp, "adapter-" + tag)
        # A and B of a size where the adapters change the model as much as the
        # base weights do (much larger makes attention peaky and float32 noisy)
        lora = R.random_lora(ref.cfg, rank, alpha, targets, seed, scale, scale)
        lora.save(adapter_dir)
        # the reference starts from the float32 values the file holds
        lora = R.load_adapter(adapter_dir, torch.float64).to(torch.float64, True)

        runs = {k: sc_grad(adapter_dir, k, tag) for k in (1, 2, 4)}
        ts, loss_s = runs[1]
        check_batch(ts)

        x, y = ts["inputs"].long(), ts["targets"].long()
        want = ref.step_loss(x, y, lora)
        want.backward()
        got = float(loss_s)
        loss_err = abs(got - want.item()) / abs(want.item())
        print("loss: splitchain %.9f  torch f64 %.9f  rel err %.2e" % (got, want.item(),
                                                                       loss_err))
        assert loss_err <= TOL, "loss differs by %.3e relative" % loss_err

        grads = lora.tensors("grad")
        names = sorted(k for k in ts if k.startswith(R.PREFIX))
        assert names == sorted(grads), "gradient tensors differ: %s vs %s" % (
            sorted(set(names) ^ set(grads))[:4], len(grads))
        worst, worst_name = 0.0, None
        for name in names:
            err = R.max_rel_err(ts[name], grads[name])
            assert grads[name].abs().max() > 0, "reference gradient of %s is zero" % name
            if err > worst:
                worst, worst_name = err, name
        print("gradients: %d tensors, worst rel err %.2e (%s)" % (len(names), worst,
                                                                   worst_name))
        print("(torch's own float32 gradients: worst rel err %.2e)" % torch_f32_err(
            adapter_dir, x, y, grads))
        assert worst <= TOL, "gradient %s differs by %.3e relative" % (worst_name, worst)

        for k in (2, 4):
            ts_k, loss_k = runs[k]
            assert loss_k == loss_s, "loss of %d stages %s != 1 stage %s" % (k, loss_k, loss_s)
            assert sorted(ts_k) == sorted(ts), "%d stages wrote other tensors" % k
            for name in ts:
                assert torch.equal(ts_k[name], ts[name]), \
                    "%s of %d stages is not bit-identical to 1 stage" % (name, k)
        print("1, 2 and 4 stages: bit-identical")
    return case


R.run_cases([
    ("subset of targets (attn.c_attn, mlp.c_proj), r=4", parity_case(
        "subset", ["attn.c_attn", "mlp.c_proj"], 4, 8.0, 1)),
    ("all targets, r=2, alpha=3", parity_case("all", list(R.TARGETS), 2, 3.0, 2)),
    ("all targets, r=8, alpha=16", parity_case("all8", list(R.TARGETS), 8, 16.0, 3, 0.1)),
])
