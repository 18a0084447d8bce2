"""Loss and LoRA gradients of `sc_reftool grad` on Llama-family models (Llama,
Mistral, Qwen2) against the float64 autograd of llama_ref, one named case per
feature: grouped-query and multi-query attention, tied and untied heads,
attention and MLP biases, Qwen2's q/k/v bias, Mistral's sliding window,
rope_scaling llama3 and linear, a head_dim other than hidden/heads, and
bf16 / f16 checkpoints sharded with an index. The models are written here
(random norms and biases); the adapters have nonzero A and B on varying
subsets of q, k, v, o, gate, up and down. Also: a chain of 1, 2 or 4
in-process stages gives bit-identical results.

Environment (set by ctest): SC_SPLITCHAIN, SC_REFTOOL, SC_REF_TMP.
"""

import os

import torch
from safetensors import safe_open
from safetensors.torch import load_file

import gpt2_ref as R
import llama_ref as LR

TOL = 1e-5
B, T, M = 2, 32, 2
STEP, SEED = 3, 7
ATTN = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"]
MLP = ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]

reftool = R.tool("SC_REFTOOL")
tmp = R.tmp_dir("llama_parity")
data = R.write_text(os.path.join(tmp, "data.txt"), seed=4)
models = {m.tag: m for m in LR.test_models(window=8)}
assert T > models["mistral"].config["sliding_window"], "the window must be shorter than T"


def sc_grad(model_dir, adapter_dir, stages, tag):
    out = os.path.join(tmp, "grad-%s-k%d.safetensors" % (tag, stages))
    R.run([reftool, "grad", "--model", model_dir, "--data", data, "--batch", B, "--seq", T,
           "--micro", M, "--step", STEP, "--seed", SEED, "--stages", stages,
           "--adapter", adapter_dir, "--out", out])
    with safe_open(out, framework="pt") as f:
        meta = f.metadata() or {}
    assert "loss" in meta, "no loss in the metadata of %s" % out
    return load_file(out), meta["loss"]


def check_batch(ts, vocab):
    x, y = ts["inputs"], ts["targets"]
    assert x.dtype == torch.int32 and y.dtype == torch.int32, (x.dtype, y.dtype)
    assert tuple(x.shape) == (M, B, T) and tuple(y.shape) == (M, B, T), tuple(x.shape)
    # windows of T + 1 tokens: targets are the inputs shifted by one
    assert torch.equal(x[..., 1:], y[..., :-1]), "targets are not the shifted inputs"
    assert int(x.min()) >= 0 and int(x.max()) < 256 <= vocab, "byte-level text gives ids < 256"


def torch_f32_err(model_dir, adapter_dir, x, y, want):
    """Worst error of torch's own float32 gradients: the scale of float32 noise."""
    ref32 = LR.Llama(model_dir, torch.float32)
    lora = LR.load_adapter(adapter_dir, torch.float32).to(torch.float32, True)
    ref32.step_loss(x, y, lora).backward()
    got = lora.tensors("grad")
    return max(R.max_rel_err(got[n], want[n]) for n in want)


def check_model_files(tm, model_dir):
    """The checkpoint is stored as the case says (so the engine reads what we mean)."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    files = [f for f in os.listdir(model_dir) if f.endswith(".safetensors")]
    if tm.shards > 1:
        assert os.path.exists(index), "no index for a sharded model"
        assert len(files) == tm.shards and "model.safetensors" not in files, files
    else:
        assert files == ["model.safetensors"] and not os.path.exists(index), files
    want = LR.DTYPES[tm.dtype][0]
    for fn in files:
        for name, t in load_file(os.path.join(model_dir, fn)).items():
            assert t.dtype == want, "%s is %s, expected %s" % (name, t.dtype, want)


def parity_case(tag, targets, rank, alpha, seed, scale=0.1):
    tm = models[tag]

    def case():
        model_dir = tm.write(tmp)
        check_model_files(tm, model_dir)
        ref = LR.Llama(model_dir, torch.float64)
        cfg = ref.cfg
        print("%s: L=%d C=%d NH=%d NKV=%d hd=%d I=%d V=%d, %s%s; adapter r=%d alpha=%g on %s"
              % (cfg.model_type, cfg.n_layer, cfg.hidden, cfg.n_head, cfg.n_kv_head,
                 cfg.head_dim, cfg.inter, cfg.vocab_size, tm.dtype,
                 " in %d shards" % tm.shards if tm.shards > 1 else "", rank, alpha,
                 ",".join(LR.SHORT[t] for t in targets)))
        if cfg.rope_scaling and cfg.rope_scaling.get("rope_type") == "llama3":
            kept, blended, slowed = LR.llama3_bands(cfg)
            print("llama3 frequencies: %d kept, %d blended, %d slowed" % (kept, blended,
                                                                         slowed))
            assert kept and blended and slowed, "the case misses a band of llama3 scaling"

        adapter_dir = os.path.join(tmp, "adapter-" + tag)
        # A and B of a size where the adapters change the model as much as the
        # base weights do (much larger makes attention peaky and float32 noisy)
        lora = LR.random_lora(cfg, rank, alpha, targets, seed, scale, scale)
        lora.save(adapter_dir)
        # the reference starts from the float32 values the file holds
        lora = LR.load_adapter(adapter_dir, torch.float64).to(torch.float64, True)

        runs = {k: sc_grad(model_dir, adapter_dir, k, tag) for k in (1, 2, 4)}
        ts, loss_s = runs[1]
        check_batch(ts, cfg.vocab_size)

        x, y = ts["inputs"].long(), ts["targets"].long()
        with torch.no_grad():
            moved = R.max_rel_err(ref.logits(x[0], lora), ref.logits(x[0]))
        print("the adapter moves the logits by %.2e relative" % moved)
        assert moved > 1000 * TOL, "the adapter barely changes the logits: a weak check"
        want = ref.step_loss(x, y, lora)
        want.backward()
        got = float(loss_s)
        loss_err = abs(got - want.item()) / abs(want.item())
        print("loss: splitchain %.9f  torch f64 %.9f  rel err %.2e" % (got, want.item(),
                                                                       loss_err))
        assert loss_err <= TOL, "loss differs by %.3e relative" % loss_err

        grads = lora.tensors("grad")
        names = sorted(k for k in ts if k.startswith(LR.PREFIX))
        assert names == sorted(grads), "gradient tensors differ: %s vs %s" % (
            sorted(set(names) ^ set(grads))[:4], len(grads))
        worst, worst_name = 0.0, None
        for name in names:
            assert ts[name].dtype == torch.float32, "%s is %s" % (name, ts[name].dtype)
            err = R.max_rel_err(ts[name], grads[name])
            assert grads[name].abs().max() > 0, "reference gradient of %s is zero" % name
            if err > worst:
                worst, worst_name = err, name
        print("gradients: %d tensors, worst rel err %.2e (%s)" % (len(names), worst,
                                                                   worst_name))
        print("(torch's own float32 gradients: worst rel err %.2e)" % torch_f32_err(
            model_dir, adapter_dir, x, y, grads))
        assert worst <= TOL, "gradient %s differs by %.3e relative" % (worst_name, worst)

        for k in (2, 4):
            ts_k, loss_k = runs[k]
            assert loss_k == loss_s, "loss of %d stages %s != 1 stage %s" % (k, loss_k, loss_s)
            assert sorted(ts_k) == sorted(ts), "%d stages wrote other tensors" % k
            for name in ts:
                assert torch.equal(ts_k[name], ts[name]), \
                    "%s of %d stages is not bit-identical to 1 stage" % (name, k)
        print("1, 2 and 4 stages: bit-identical")
    return models[tag].title, case


R.run_cases([
    parity_case("gqa", ["self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"], 4, 8.0, 1),
    parity_case("mqa", ATTN + MLP, 2, 3.0, 2),
    parity_case("bias", ATTN + MLP, 4, 8.0, 3),
    parity_case("qwen2", ATTN + MLP, 8, 16.0, 4, 0.07),
    parity_case("mistral", ATTN, 4, 8.0, 5),
    parity_case("llama3", ["self_attn.q_proj", "self_attn.k_proj", "mlp.up_proj"], 4, 8.0, 6),
    parity_case("linear", ATTN + ["mlp.gate_proj"], 4, 4.0, 7),
    parity_case("bf16", ["self_attn.k_proj", "self_attn.o_proj"] + MLP, 4, 8.0, 8),
    parity_case("f16", ATTN + MLP, 2, 4.0, 9),
])
