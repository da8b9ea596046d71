#!/usr/bin/python3
"""Makes the PyTorch reference cases of MultiheadAttention (include/moe/layers/multihead_attention.hpp).

Writes tests/fixtures/mha_{f64,f32}.safetensors. Run with Debian's python3-torch:
    /usr/bin/python3 tools/make_mha_reference.py
The C++ suite reads the committed files and does not need torch.

torch.nn.MultiheadAttention(8, 2, batch_first=True), self-attention of 3 sequences of 5 tokens;
70 keys per sequence would cross moe's key block of 64, so a second case has 2 sequences of 70.
Names (tokens flattened batch-first: (B S, 8)):
  <case>.x, <case>.dy, <case>.y, <case>.dx, <case>.grad.<param>, param.<param> (the module's state_dict)
  <case>.padding (B S,) int64 (1: padding) where a case has a key padding mask
  cases: plain; causal; padded (the last 2 tokens of sequence 1 are padding); causal_padded; long (S = 70, causal)
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import safetensors_io  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")


def run(mha, b, s, causal, padded, dtype, t, name):
    x = torch.randn(b, s, 8, dtype=dtype, requires_grad=True)
    dy = torch.randn(b, s, 8, dtype=dtype)
    mask = torch.triu(torch.ones(s, s, dtype=torch.bool), diagonal=1) if causal else None
    pad = None
    if padded:
        pad = torch.zeros(b, s, dtype=torch.bool)
        pad[1, -2:] = True
    mha.zero_grad()
    y, _ = mha(x, x, x, attn_mask=mask, key_padding_mask=pad, need_weights=False)
    y.backward(dy)
    t[f"{name}.x"] = x.detach().reshape(b * s, 8)
    t[f"{name}.dy"] = dy.reshape(b * s, 8)
    t[f"{name}.y"] = y.detach().reshape(b * s, 8)
    t[f"{name}.dx"] = x.grad.detach().reshape(b * s, 8)
    if pad is not None:
        t[f"{name}.padding"] = pad.reshape(b * s).to(torch.int64)
    for n, p in mha.named_parameters():
        t[f"{name}.grad.{n}"] = p.grad.detach().clone()


def case(dtype):
    torch.manual_seed(11)
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=True).to(dtype)
    with torch.no_grad():  # non-zero biases, so that their gradients are checked through the products
        mha.in_proj_bias.normal_()
        mha.out_proj.bias.normal_()
    t = {f"param.{n}": p.detach().clone() for n, p in mha.state_dict().items()}
    run(mha, 3, 5, False, False, dtype, t, "plain")
    run(mha, 3, 5, True, False, dtype, t, "causal")
    run(mha, 3, 5, False, True, dtype, t, "padded")
    run(mha, 3, 5, True, True, dtype, t, "causal_padded")
    run(mha, 2, 70, True, False, dtype, t, "long")
    suffix = "f64" if dtype == torch.float64 else "f32"
    path = os.path.join(OUT, f"mha_{suffix}.safetensors")
    safetensors_io.save(path, t, {"format": "mha-case-v1", "torch": torch.__version__})
    print("wrote", os.path.normpath(path))


if __name__ == "__main__":
    case(torch.float64)
    case(torch.float32)
