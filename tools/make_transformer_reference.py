#!/usr/bin/python3
"""Makes the PyTorch reference cases of MoETransformerLayer (include/moe/models/moe_transformer_layer.hpp).

Writes tests/fixtures/transformer_{f64,f32}.safetensors. Run with Debian's python3-torch:
    /usr/bin/python3 tools/make_transformer_reference.py
The C++ suite reads the committed files and does not need torch.

A pre-norm layer, d 8, 2 heads, causal, on 2 sequences of 6 tokens (the last 2 tokens of sequence 1
are key padding): h = x + attn(norm1(x)), y = h + ffn(norm2(h)).
  dense: LayerNorm, ffn nn.Sequential(Linear(8, 12), GELU, Linear(12, 8))
  moe:   RMSNorm (eps 1e-6), ffn moe_torch.SparseMoE: 4 GELU experts of 12, top-2 renormalised, no
         bias, no noise, no aux losses (moe_torch's has none)
  moe_shared: as moe, plus 2 shared experts as one MLP "shared" (Linear(8, 24), GELU, Linear(24, 8))
Names: param.<case>.<name> (the module's state_dict), <case>.x, <case>.dy (12, 8), <case>.y, <case>.dx,
<case>.grad.<name>, padding (12,) int64.
"""
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
import moe_torch  # noqa: E402
import safetensors_io  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight


class Layer(nn.Module):
    def __init__(self, moe, shared=0):
        super().__init__()
        self.shared = nn.Sequential(nn.Linear(8, 12 * shared), nn.GELU(), nn.Linear(12 * shared, 8)) if shared else None
        self.norm1 = RMSNorm(8) if moe else nn.LayerNorm(8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.norm2 = RMSNorm(8) if moe else nn.LayerNorm(8)
        if moe:
            self.ffn = moe_torch.SparseMoE(dict(dim=8, ffn=12, experts=4, k=2, activation="gelu", renormalize=True, noisy=False,
                                                router_bias=False))
        else:
            self.ffn = nn.Sequential(nn.Linear(8, 12), nn.GELU(), nn.Linear(12, 8))

    def forward(self, x, mask, pad):
        b, s, d = x.shape
        a, _ = self.attn(self.norm1(x), self.norm1(x), self.norm1(x), attn_mask=mask, key_padding_mask=pad, need_weights=False)
        h = x + a
        n = self.norm2(h).reshape(b * s, d)
        f = self.ffn(n) + (self.shared(n) if self.shared is not None else 0)
        return h + f.reshape(b, s, d)


def case(dtype):
    torch.manual_seed(17)
    t = {}
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[1, -2:] = True
    t["padding"] = pad.reshape(12).to(torch.int64)
    mask = torch.triu(torch.ones(6, 6, dtype=torch.bool), diagonal=1)
    for name, moe, shared in (("dense", False, 0), ("moe", True, 0), ("moe_shared", True, 2)):
        layer = Layer(moe, shared).to(dtype)
        with torch.no_grad():
            for n, p in layer.named_parameters():
                if "norm" in n or n.endswith("bias"):
                    p.add_(0.3 * torch.randn_like(p))  # not the identity: their gradients reach the output
        for n, p in layer.state_dict().items():
            t[f"param.{name}.{n}"] = p.detach().clone()
        x = torch.randn(2, 6, 8, dtype=dtype, requires_grad=True)
        dy = torch.randn(2, 6, 8, dtype=dtype)
        y = layer(x, mask, pad)
        y.backward(dy)
        t[f"{name}.x"] = x.detach().reshape(12, 8)
        t[f"{name}.dy"] = dy.reshape(12, 8)
        t[f"{name}.y"] = y.detach().reshape(12, 8)
        t[f"{name}.dx"] = x.grad.detach().reshape(12, 8)
        for n, p in layer.named_parameters():
            t[f"{name}.grad.{n}"] = p.grad.detach().clone()
    suffix = "f64" if dtype == torch.float64 else "f32"
    path = os.path.join(OUT, f"transformer_{suffix}.safetensors")
    safetensors_io.save(path, t, {"format": "transformer-case-v1", "torch": torch.__version__})
    print("wrote", os.path.normpath(path))


if __name__ == "__main__":
    case(torch.float64)
    case(torch.float32)
