"""The quantized formats' dequantization, written from the published
algorithms for the reference tests (test_quant_parity, test_bf16_parity):
reads the parts `splitchain quantize` writes (whose every byte ref_quant
checks against NumPy quantizers) and dequantizes them with NumPy, in float32
as the format states (int8: q * s_o; NF4: codebook[idx] * absmax, with
double quantization absmax' = q_b * g_j + offset)."""

import os
import re

import numpy as np
import torch
from safetensors.torch import load_file

F32 = np.float32
# The NormalFloat4 codebook (QLoRA appendix E, as bitsandbytes stores it).
NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
                0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                0.7229568362236023, 1.0], dtype=F32)
BLOCK, DQ_BLOCK = 64, 256
PROJ = re.compile(r"(h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)"
                  r"|layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj))\.weight$")


def dequantize(parts, module, shape, fmt, dq, out_rows):
    """The weight `module` of shape (rows, cols), from its quantized parts
    (safetensors tensors), in float32 as sc_quant.h states it."""
    def part(name):
        return parts["%s.%s" % (module, name)].numpy()
    rows, cols = shape
    if fmt == "int8":
        q = part("qweight").view(np.int8).reshape(rows, cols).astype(F32)
        s = part("scales").astype(F32)
        return q * (s[:, None] if out_rows else s[None, :])
    n = rows * cols
    assert tuple(part("shape")) == (rows, cols), part("shape")
    packed = part("qweight")
    idx = np.empty(2 * packed.size, np.uint8)
    idx[0::2], idx[1::2] = packed >> 4, packed & 15  # first element in the high nibble
    idx = idx[:n]
    nb = -(-n // BLOCK)
    if dq:
        g = np.repeat(part("scales_scale").astype(F32), DQ_BLOCK)[:nb]
        a = (part("scales_q").view(np.int8).astype(F32) * g).astype(F32) + \
            part("scales_offset").astype(F32)[0]
    else:
        a = part("scales").astype(F32)
    assert a.size == nb, (a.size, nb)
    return (NF4[idx] * np.repeat(a.astype(F32), BLOCK)[:n]).astype(F32).reshape(rows, cols)


def dequantized_weights(model_dir, qdir, fmt, dq, out_rows, strip):
    """The float model's tensors (float64), its projections replaced by the
    dequantized parts of qdir; names without the prefix `strip`."""
    parts = load_file(os.path.join(qdir, "model.safetensors"))
    fl = load_file(os.path.join(model_dir, "model.safetensors"))
    out, worst, n = {}, 0.0, 0
    for name, t in fl.items():
        key = name[len(strip):] if name.startswith(strip) else name
        if PROJ.search(name):
            d = dequantize(parts, name[:-len(".weight")], tuple(t.shape), fmt, dq, out_rows)
            w = t.numpy()
            worst = max(worst, float(np.linalg.norm(d - w) / np.linalg.norm(w)))
            out[key] = torch.from_numpy(d).to(torch.float64)
            n += 1
        else:
            out[key] = t.to(torch.float64)
    print("  %d projections dequantized; worst ||W - W'|| / ||W|| = %.4f" % (n, worst))
    assert n > 0 and worst > 1e-3, "nothing was quantized"
    return out
