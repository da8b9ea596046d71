#!/usr/bin/python3
"""Makes the PyTorch reference cases of LayerNorm and RMSNorm (include/moe/layers/layer_norm.hpp).

Writes tests/fixtures/norm_{f64,f32}.safetensors. Run with Debian's python3-torch:
    /usr/bin/python3 tools/make_norm_reference.py
The C++ suite reads the committed files and does not need torch.

7 tokens of 5 features (one token constant, so that its variance is 0 and eps decides), a random
output gradient dy, random affine parameters. Names in the file:
  x (7, 5), dy (7, 5)
  ln.weight, ln.bias (5,), ln.y, ln.dx (7, 5), ln.dweight, ln.dbias (5,)     torch.nn.LayerNorm(5), eps 1e-5
  rms.weight (5,), rms.y, rms.dx (7, 5), rms.dweight (5,)                    RMSNorm, eps 1e-6: x / sqrt(mean(x^2) + eps) * weight
(torch 1.13 has no nn.RMSNorm; the formula above is torch.nn.RMSNorm's and LLaMA's.)
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import safetensors_io  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")


def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * weight


def case(dtype):
    torch.manual_seed(5)
    x = torch.randn(7, 5, dtype=dtype) * 2 + 0.5
    x[3] = 1.25  # a constant token
    dy = torch.randn(7, 5, dtype=dtype)
    t = {"x": x.clone(), "dy": dy.clone()}

    ln = torch.nn.LayerNorm(5, eps=1e-5).to(dtype)
    with torch.no_grad():
        ln.weight.copy_(torch.randn(5, dtype=dtype))
        ln.bias.copy_(torch.randn(5, dtype=dtype))
    xi = x.clone().requires_grad_(True)
    y = ln(xi)
    y.backward(dy)
    t.update({"ln.weight": ln.weight.detach(), "ln.bias": ln.bias.detach(), "ln.y": y.detach(), "ln.dx": xi.grad.detach(),
              "ln.dweight": ln.weight.grad.detach(), "ln.dbias": ln.bias.grad.detach()})

    w = torch.randn(5, dtype=dtype).requires_grad_(True)
    xi = x.clone().requires_grad_(True)
    y = rms_norm(xi, w, 1e-6)
    y.backward(dy)
    t.update({"rms.weight": w.detach(), "rms.y": y.detach(), "rms.dx": xi.grad.detach(), "rms.dweight": w.grad.detach()})
    suffix = "f64" if dtype == torch.float64 else "f32"
    path = os.path.join(OUT, f"norm_{suffix}.safetensors")
    safetensors_io.save(path, t, {"format": "norm-case-v1", "torch": torch.__version__})
    print("wrote", os.path.normpath(path))


if __name__ == "__main__":
    case(torch.float64)
    case(torch.float32)
