#!/usr/bin/python3
"""Makes the PyTorch reference cases of TargetAttention (DIN's attention over a user's history).

Writes tests/fixtures/attention_{f64,f32}.safetensors. Run with Debian's python3-torch:
    /usr/bin/python3 tools/make_attention_reference.py
The C++ suite reads the committed files and does not need torch.

4 targets of dim 3 over a history of 7 items given flat with offsets [0, 2, 2, 6, 7] (sample 1's
history is empty); the scoring MLP is 12 -> 5 -> ReLU -> 1 (nn.Sequential: mlp.0.*, mlp.2.*).
Names in the file:
  history (7, 3), offsets (5,) int64, target (4, 3), dy (4, 3), param.<name> the MLP's parameters
  <case>.y (4, 3), <case>.dhistory (7, 3), <case>.dtarget (4, 3), <case>.grad.<name>
  cases: plain (the scores as weights, as DIN), softmax (the scores normalised per sample)
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import moe_torch  # noqa: E402
import safetensors_io  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")


TargetAttention = moe_torch.TargetAttention


def case(dtype):
    torch.manual_seed(11)
    history = torch.randn(7, 3, dtype=dtype)
    offsets = torch.tensor([0, 2, 2, 6, 7], dtype=torch.int64)
    target = torch.randn(4, 3, dtype=dtype)
    dy = torch.randn(4, 3, dtype=dtype)
    base = TargetAttention(3, [5], False).to(dtype)
    t = {"history": history, "offsets": offsets, "target": target, "dy": dy}
    for name, p in base.named_parameters():
        t["param." + name] = p.detach().clone()
    for case_name, softmax in (("plain", False), ("softmax", True)):
        m = TargetAttention(3, [5], softmax).to(dtype)
        m.load_state_dict(base.state_dict())
        h = history.clone().requires_grad_(True)
        tg = target.clone().requires_grad_(True)
        y = m(h, offsets, tg)
        y.backward(dy)
        t[case_name + ".y"] = y.detach()
        t[case_name + ".dhistory"] = h.grad
        t[case_name + ".dtarget"] = tg.grad
        for name, p in m.named_parameters():
            t[case_name + ".grad." + name] = p.grad
    return t


def main():
    for dtype, suffix in ((torch.float64, "f64"), (torch.float32, "f32")):
        path = os.path.join(OUT, "attention_%s.safetensors" % suffix)
        safetensors_io.save(path, case(dtype), {"torch": torch.__version__})
        print("wrote", path)


if __name__ == "__main__":
    main()
