"""20 steps of `splitchain finetune` against torch's own training loop
(torch.optim.AdamW, clip_grad_norm_, the warm-up + cosine schedule) on the
same batches (`sc_reftool batches`) from the same initial adapter
(`splitchain finetune --steps 0`). Warm-up, cosine decay, weight decay and
clipping are all active. Per-step losses must agree to 1e-4 relative.

Environment (set by ctest): SC_SPLITCHAIN, SC_REFTOOL, SC_REF_TMP.
"""

import os

import torch
from safetensors.torch import load_file

import gpt2_ref as R

LOSS_TOL = 1e-4
LR_TOL = 1e-6
L, NH, C, V, P = 4, 4, 64, 512, 64
B, T, M = 2, 32, 2
STEPS, SEED = 20, 5
RANK, ALPHA, TARGETS = 4, 8.0, "all"
LR, MIN_LR, WARMUP, WD, CLIP = 3e-3, 3e-4, 5, 0.1, 0.05

splitchain = R.tool("SC_SPLITCHAIN")
reftool = R.tool("SC_REFTOOL")
tmp = R.tmp_dir("train_parity")
model_dir = R.make_model(splitchain, os.path.join(tmp, "model"), L, NH, C, V, P, seed=21)
data = R.write_text(os.path.join(tmp, "data.txt"), seed=2)
common = ["--model", model_dir, "--data", data, "--batch", B, "--seq", T, "--micro", M,
          "--rank", RANK, "--alpha", ALPHA, "--targets", TARGETS, "--lr", LR,
          "--min-lr", MIN_LR, "--warmup", WARMUP, "--weight-decay", WD, "--clip", CLIP,
          "--seed", SEED]


def finetune(stages, tag):
    out = os.path.join(tmp, "trained-" + tag)
    metrics = os.path.join(tmp, "metrics-%s.jsonl" % tag)
    if os.path.exists(metrics):
        os.remove(metrics)
    R.run([splitchain, "finetune"] + common + ["--steps", STEPS, "--stages", stages,
                                              "--init-adapter", init_dir, "--out", out,
                                              "--metrics", metrics])
    return out, R.read_metrics(metrics)


init_dir = os.path.join(tmp, "init")
R.run([splitchain, "finetune"] + common + ["--steps", 0, "--out", init_dir])

batches = os.path.join(tmp, "batches.safetensors")
R.run([reftool, "batches", "--data", data, "--vocab", V, "--batch", B, "--seq", T,
       "--micro", M, "--steps", STEPS, "--seed", SEED, "--out", batches])
bt = load_file(batches)
inputs, targets = bt["inputs"].long(), bt["targets"].long()
sc_out, sc_metrics = finetune(1, "k1")


def case_batches():
    assert tuple(inputs.shape) == (STEPS, M, B, T), tuple(inputs.shape)
    assert torch.equal(inputs[..., 1:], targets[..., :-1]), "targets are not shifted inputs"


def case_token_file():
    """A token file (llm.c header, uint16 ids, some >= 256): one epoch of samples
    visits each window stream[w*T : w*T + T + 1] exactly once."""
    n_win = 40
    g = torch.Generator().manual_seed(4)
    stream = torch.randint(0, V, (n_win * T + 1,), generator=g)
    path = os.path.join(tmp, "tokens.bin")
    header = torch.zeros(256, dtype=torch.int32)
    header[0], header[1], header[2] = 20240520, 1, stream.numel()
    with open(path, "wb") as f:
        f.write(header.numpy().tobytes())
        f.write(stream.to(torch.int32).numpy().astype("<u2").tobytes())
    steps = n_win // (M * B)
    out = os.path.join(tmp, "token-batches.safetensors")
    R.run([reftool, "batches", "--data", path, "--vocab", V, "--batch", B, "--seq", T,
           "--micro", M, "--steps", steps, "--seed", SEED, "--out", out])
    ts = load_file(out)
    x = ts["inputs"].long().reshape(-1, T)
    y = ts["targets"].long().reshape(-1, T)
    windows = {tuple(stream[w * T:w * T + T + 1].tolist()): w for w in range(n_win)}
    seen = []
    for i in range(x.shape[0]):
        row = tuple(x[i].tolist()) + (int(y[i, -1]),)
        assert row in windows, "sample %d is not a window of the stream" % i
        assert torch.equal(x[i, 1:], y[i, :-1]), "sample %d: targets not shifted" % i
        seen.append(windows[row])
    assert sorted(seen) == list(range(n_win)), "one epoch does not visit every window once"
    assert seen != list(range(n_win)), "the epoch is not shuffled"
    print("%d samples: a permutation of the %d windows" % (len(seen), n_win))


def case_init_adapter():
    init = R.load_adapter(init_dir)
    assert init.rank == RANK and init.alpha == ALPHA, (init.rank, init.alpha)
    assert len(init.A) == L * 4, "expected %d adapted projections, got %d" % (L * 4,
                                                                            len(init.A))
    for k in init.keys():
        assert init.A[k].abs().max() > 0, "A of %s is zero" % (k,)
        assert init.B[k].abs().max() == 0, "B of %s is not zero" % (k,)
        bound = 1.0 / (init.A[k].shape[1] ** 0.5)
        assert init.A[k].abs().max() <= bound, "A of %s beyond the Kaiming bound" % (k,)


def case_losses():
    ref = R.GPT2(model_dir, torch.float64)
    lora = R.load_adapter(init_dir, torch.float64).to(torch.float64, True)
    want = R.train(ref, lora, inputs, targets, LR, MIN_LR, WARMUP, WD, CLIP)
    assert len(sc_metrics) == STEPS, "%d metric lines, expected %d" % (len(sc_metrics),
                                                                       STEPS)
    worst_loss = worst_lr = worst_norm = 0.0
    clipped = 0
    print("step  loss splitchain   loss torch        rel err   grad_norm sc / torch")
    for s, (g, w) in enumerate(zip(sc_metrics, want)):
        assert g["step"] == s, "metrics line %d has step %s" % (s, g["step"])
        assert g["tokens"] == B * T * M, "tokens %s, expected %d" % (g["tokens"], B * T * M)
        le = abs(g["loss"] - w["loss"]) / abs(w["loss"])
        lre = abs(g["lr"] - w["lr"]) / w["lr"]
        ne = abs(g["grad_norm"] - w["grad_norm"]) / w["grad_norm"]
        worst_loss, worst_lr, worst_norm = max(worst_loss, le), max(worst_lr, lre), \
            max(worst_norm, ne)
        clipped += w["grad_norm"] > CLIP
        print("%4d  %.9f  %.9f  %.2e  %.6g / %.6g" % (s, g["loss"], w["loss"], le,
                                                       g["grad_norm"], w["grad_norm"]))
    print("worst rel err: loss %.2e, lr %.2e, grad_norm %.2e; clipped %d of %d steps"
          % (worst_loss, worst_lr, worst_norm, clipped, STEPS))
    assert clipped >= STEPS // 2, "clipping was active in only %d steps" % clipped
    assert worst_lr <= LR_TOL, "lr differs by %.3e relative" % worst_lr
    assert worst_loss <= LOSS_TOL, "loss differs by %.3e relative" % worst_loss
    # the final adapters, for the record (Adam amplifies the float32 noise
    # of near-zero gradient entries, so this is looser than the losses)
    got = R.load_adapter(sc_out)
    errs = [R.max_rel_err(got.tensors()[n], t) for n, t in lora.tensors().items()]
    print("final adapter: worst rel err %.2e over %d tensors" % (max(errs), len(errs)))
    assert max(errs) <= 1e-3, "final adapter differs by %.3e relative" % max(errs)


def case_stages():
    out2, metrics2 = finetune(2, "k2")
    for a, b in zip(sc_metrics, metrics2):
        assert a["loss"] == b["loss"] and a["grad_norm"] == b["grad_norm"], (a, b)
    t1 = load_file(os.path.join(sc_out, "adapter_model.safetensors"))
    t2 = load_file(os.path.join(out2, "adapter_model.safetensors"))
    assert sorted(t1) == sorted(t2)
    for n in t1:
        assert torch.equal(t1[n], t2[n]), "%s differs between 1 and 2 stages" % n
    print("1 and 2 stages: bit-identical metrics and adapters")


R.run_cases([
    ("batches are shifted windows", case_batches),
    ("token file: windows, one epoch a permutation", case_token_file),
    ("initial adapter: Kaiming-uniform A, zero B", case_init_adapter),
    ("per-step losses vs torch AdamW loop", case_losses),
    ("2 stages train bit-identically", case_stages),
])
