"""Makes the PyTorch reference cases of MoETransformerLayer (include/moe/models/moe_transformer_layer.hpp).

Writes tests/fixtures/transformer_{f64,f32}.safetensors. Run with Debian's python3-torch:
    /usr/bin/python3 tools/make_transformer_reference.py
The C++ suite reads the committed files and does not need torch.

A pre-norm layer (tools/moe_transformer_torch.py's Layer), d 8, 2 heads, causal, on 2 sequences of 6
tokens (the last 2 tokens of sequence 1 are key padding): h = x + attn(norm1(x)), y = h + ffn(norm2(h)).
  dense:        LayerNorm, ffn nn.Sequential(Linear(8, 12), GELU, Linear(12, 8))
  moe:          RMSNorm (eps 1e-6), ffn moe_torch.SparseMoE: 4 GELU experts of 12, top-2 renormalised,
                no bias, no noise, no aux losses (moe_torch's has none)
  moe_shared:   as moe, plus 2 shared experts as one MLP "shared" (Linear(8, 24), GELU, Linear(24, 8))
  dense_swiglu: LayerNorm, a SwiGLU feed-forward of 12 (ffn.w1, w2, w3; no biases)
  moe_swiglu:   RMSNorm, 4 SwiGLU experts of 12, top-2, and 1 shared SwiGLU expert
  moe_ec:       RMSNorm, 4 GELU experts of 12, expert-choice routing with capacity factor 2: each
                expert takes ceil(2 * 12 / 4) = 6 of the 12 tokens
After the backward of sum(dy * y), one torch.optim.AdamW step (lr 0.01, weight decay 0.1).

Also writes the model files of two language models (moe_transformer_torch.Transformer, float64), as
PyTorch saves them: tests/fixtures/transformer_lm_{moe,dense}.safetensors (the state_dict only) and
transformer_lm_{moe,dense}_expected.safetensors (tokens (2, 7) int64 and their logits (2, 7, 11)):
  moe:   vocab 11, 8 positions, 2 layers, d 8, 2 heads, RMSNorm, 4 SwiGLU experts of 12 top-2 and one
         shared SwiGLU expert, untied head
  dense: the same sizes, LayerNorm, GELU MLP of 12, head tied to the token embedding
Names: param.<case>.<name> (the module's state_dict), <case>.x, <case>.dy (12, 8), <case>.y, <case>.dx,
<case>.grad.<name>, <case>.after.<name> (the parameter after the AdamW step), padding (12,) int64.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import moe_transformer_torch  # noqa: E402
import safetensors_io  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
BASE = dict(dim=8, heads=2, ffn=12, causal=True)
RMS = dict(norm="rms_norm", norm_eps=1e-6)
MOE = dict(experts=4, k=2, renormalize=True, router_bias=False)
CASES = (("dense", dict(BASE)),
         ("moe", dict(BASE, **RMS, **MOE)),
         ("moe_shared", dict(BASE, **RMS, **MOE, shared_experts=2)),
         ("dense_swiglu", dict(BASE, expert="swiglu")),
         ("moe_swiglu", dict(BASE, **RMS, **MOE, expert="swiglu", shared_experts=1)),
         ("moe_ec", dict(BASE, **RMS, **MOE, routing="expert_choice", capacity_factor=2.0)))


def case(dtype):
    torch.manual_seed(17)
    t = {}
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[1, -2:] = True
    t["padding"] = pad.reshape(12).to(torch.int64)
    for name, cfg in CASES:
        layer = moe_transformer_torch.Layer(cfg).to(dtype)
        with torch.no_grad():
            for n, p in layer.named_parameters():
                if "norm" in n or n.endswith("bias"):
                    p.add_(0.3 * torch.randn_like(p))  # not the identity: their gradients reach the output
        for n, p in layer.state_dict().items():
            t[f"param.{name}.{n}"] = p.detach().clone()
        x = torch.randn(2, 6, 8, dtype=dtype, requires_grad=True)
        dy = torch.randn(2, 6, 8, dtype=dtype)
        y = layer(x, pad)
        y.backward(dy)
        t[f"{name}.x"] = x.detach().reshape(12, 8)
        t[f"{name}.dy"] = dy.reshape(12, 8)
        t[f"{name}.y"] = y.detach().reshape(12, 8)
        t[f"{name}.dx"] = x.grad.detach().reshape(12, 8)
        for n, p in layer.named_parameters():
            t[f"{name}.grad.{n}"] = p.grad.detach().clone()
        torch.optim.AdamW(layer.parameters(), lr=0.01, weight_decay=0.1).step()
        for n, p in layer.named_parameters():
            t[f"{name}.after.{n}"] = p.detach().clone()
    suffix = "f64" if dtype == torch.float64 else "f32"
    path = os.path.join(OUT, f"transformer_{suffix}.safetensors")
    safetensors_io.save(path, t, {"format": "transformer-case-v1", "torch": torch.__version__})
    print("wrote", os.path.normpath(path))


LM_CASES = (("moe", dict(vocab=11, max_positions=8, layers=2, tied_head=False,
                        layer=dict(BASE, **RMS, **MOE, expert="swiglu", shared_experts=1))),
            ("dense", dict(vocab=11, max_positions=8, layers=2, tied_head=True, layer=dict(BASE))))


def lm_files():
    torch.manual_seed(23)
    for name, cfg in LM_CASES:
        lm = moe_transformer_torch.Transformer(cfg).double().eval()
        with torch.no_grad():
            for n, p in lm.named_parameters():
                if "norm" in n or n.endswith("bias"):
                    p.add_(0.3 * torch.randn_like(p))
        tokens = torch.randint(0, cfg["vocab"], (2, 7))
        with torch.no_grad():
            logits = lm(tokens)
        state = {n: p.detach().clone() for n, p in lm.state_dict().items()}
        safetensors_io.save(os.path.join(OUT, f"transformer_lm_{name}.safetensors"), state, {"torch": torch.__version__})
        safetensors_io.save(os.path.join(OUT, f"transformer_lm_{name}_expected.safetensors"),
                            {"tokens": tokens, "logits": logits}, {"torch": torch.__version__})
        print("wrote", os.path.normpath(os.path.join(OUT, f"transformer_lm_{name}.safetensors")))


if __name__ == "__main__":
    case(torch.float64)
    case(torch.float32)
    lm_files()
