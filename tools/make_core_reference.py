#!/usr/bin/python3
"""Makes the PyTorch reference cases of the core layers, losses and optimizers.

Writes tests/fixtures/core_{f64,f32}.safetensors. Run with Debian's python3-torch:
    /usr/bin/python3 tools/make_core_reference.py
The C++ suite reads the committed files and does not need torch.

Names in the file:
  linear.*      W, b, x (B, in), dy (B, out) -> y, grad.weight, grad.bias, dx
  mlp.*         a Linear-ReLU-BatchNorm-Linear-GELU-BatchNorm-Linear MLP (our MLPSpec sizes {6, 8, 5, 3},
                batchnorm, activation per case) in training mode: param.<name>, x, dy -> y, grad.<name>, dx,
                running.<bn>.running_mean/var after the step
  loss.<kind>.* logits, target, weight -> value, grad (d value / d logits)
  adam.*, adamw.*, sgd.*   p0, grads g1 g2 g3 -> p after each of three steps
"""
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import safetensors_io  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")


def case(dtype, seed=0):
    torch.manual_seed(seed)
    t = {}

    # Linear
    lin = torch.nn.Linear(5, 3).to(dtype)
    x = torch.randn(4, 5, dtype=dtype, requires_grad=True)
    dy = torch.randn(4, 3, dtype=dtype)
    y = lin(x)
    y.backward(dy)
    t.update({"linear.weight": lin.weight, "linear.bias": lin.bias, "linear.x": x, "linear.dy": dy, "linear.y": y,
              "linear.grad.weight": lin.weight.grad, "linear.grad.bias": lin.bias.grad, "linear.dx": x.grad})

    # MLP in training mode: the same Sequential numbering as moe::MLP.
    for act_name, act in (("relu", torch.nn.ReLU), ("gelu", torch.nn.GELU), ("tanh", torch.nn.Tanh)):
        mlp = torch.nn.Sequential(
            torch.nn.Linear(6, 8), act(), torch.nn.BatchNorm1d(8),
            torch.nn.Linear(8, 5), act(), torch.nn.BatchNorm1d(5),
            torch.nn.Linear(5, 3)).to(dtype)
        with torch.no_grad():  # non-trivial batchnorm affine parameters
            for m in mlp:
                if isinstance(m, torch.nn.BatchNorm1d):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.5, 0.5)
        p = f"mlp_{act_name}"
        for name, v in mlp.state_dict().items():
            if "running" in name or "num_batches" in name:
                continue
            t[f"{p}.param.{name}"] = v.clone()
        x = torch.randn(7, 6, dtype=dtype, requires_grad=True)
        dy = torch.randn(7, 3, dtype=dtype)
        y = mlp(x)
        y.backward(dy)
        t[f"{p}.x"] = x
        t[f"{p}.dy"] = dy
        t[f"{p}.y"] = y
        t[f"{p}.dx"] = x.grad
        for name, prm in mlp.named_parameters():
            t[f"{p}.grad.{name}"] = prm.grad
        for name, buf in mlp.named_buffers():
            if "running" in name:
                t[f"{p}.running.{name}"] = buf
        mlp.eval()
        t[f"{p}.y_eval"] = mlp(x)

    # Losses, with per-sample weights (one of them zero: a mask).
    z = 3 * torch.randn(2, 6, dtype=dtype)
    w = torch.rand(6, dtype=dtype) + 0.5
    w[1] = 0
    counted = int((w != 0).sum())
    yb = torch.rand(2, 6, dtype=dtype)
    yr = 2 * torch.randn(2, 6, dtype=dtype)

    def elementwise(name, target, fn):
        zz = z.clone().requires_grad_(True)
        per = fn(zz, target)  # (2, 6) elementwise
        value = (per * w).sum() / (per.shape[0] * counted)
        value.backward()
        t[f"loss.{name}.logits"] = z
        t[f"loss.{name}.target"] = target
        t[f"loss.{name}.weight"] = w.reshape(1, 6)
        t[f"loss.{name}.value"] = value.detach()
        t[f"loss.{name}.grad"] = zz.grad
        # Unweighted: PyTorch's own reduction='mean' loss modules.
        zz2 = z.clone().requires_grad_(True)
        module = {"bce": torch.nn.BCEWithLogitsLoss(), "mse": torch.nn.MSELoss(), "huber": torch.nn.HuberLoss(delta=0.7)}[name]
        v2 = module(zz2, target)
        v2.backward()
        t[f"loss.{name}.value_mean"] = v2.detach()
        t[f"loss.{name}.grad_mean"] = zz2.grad

    F = torch.nn.functional
    elementwise("bce", yb, lambda a, b: F.binary_cross_entropy_with_logits(a, b, reduction="none"))
    elementwise("mse", yr, lambda a, b: F.mse_loss(a, b, reduction="none"))
    elementwise("huber", yr, lambda a, b: F.huber_loss(a, b, reduction="none", delta=0.7))
    # Cross-entropy: logits (B, C) in PyTorch, C x B here.
    zc = (2 * torch.randn(6, 4, dtype=dtype)).requires_grad_(True)
    cls = torch.tensor([0, 3, 1, 2, 2, 0])
    v = F.cross_entropy(zc, cls)
    v.backward()
    t["loss.ce.logits"] = zc
    t["loss.ce.target"] = cls.to(dtype).reshape(1, 6)
    t["loss.ce.value_mean"] = v.detach()
    t["loss.ce.grad_mean"] = zc.grad

    # Optimizers: three steps with given gradients.
    p0 = torch.randn(10, dtype=dtype)
    grads = [torch.randn(10, dtype=dtype) for _ in range(3)]
    t["optim.p0"] = p0
    for i, g in enumerate(grads):
        t[f"optim.g{i + 1}"] = g
    setups = {
        "adam": lambda p: torch.optim.Adam([p], lr=1e-2, betas=(0.9, 0.999), eps=1e-8),
        "adam_wd": lambda p: torch.optim.Adam([p], lr=1e-2, weight_decay=0.1),
        "adamw": lambda p: torch.optim.AdamW([p], lr=1e-2, weight_decay=0.1),
        "sgd": lambda p: torch.optim.SGD([p], lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01),
        "sgd_nesterov": lambda p: torch.optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True),
    }
    for name, make in setups.items():
        p = p0.clone().requires_grad_(True)
        opt = make(p)
        for i, g in enumerate(grads):
            p.grad = g.clone()
            opt.step()
            t[f"{name}.p{i + 1}"] = p.detach().clone()

    # Schedules: CosineAnnealingLR (recursive form, as torch steps it) and StepLR.
    p = torch.zeros(1, requires_grad=True)
    for name, make in (("cosine", lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=1e-4)),
                       ("steplr", lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5))):
        opt = torch.optim.SGD([p], lr=0.1)
        sched = make(opt)
        lrs = []
        for _ in range(15):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        t[f"schedule.{name}"] = torch.tensor(lrs, dtype=torch.float64)

    # clip_grad_norm_
    g = torch.randn(10, dtype=dtype) * 3
    p = torch.zeros(10, dtype=dtype, requires_grad=True)
    p.grad = g.clone()
    norm = torch.nn.utils.clip_grad_norm_([p], max_norm=1.5)
    t["clip.g"] = g
    t["clip.norm"] = norm.detach().to(dtype)
    t["clip.g_clipped"] = p.grad

    return {k: v.detach() for k, v in t.items()}


def main():
    os.makedirs(OUT, exist_ok=True)
    for dtype, tag in ((torch.float64, "f64"), (torch.float32, "f32")):
        tensors = case(dtype)
        path = os.path.join(OUT, f"core_{tag}.safetensors")
        safetensors_io.save(path, tensors, {"generator": "tools/make_core_reference.py", "torch": torch.__version__})
        print(f"wrote {path}: {len(tensors)} tensors")


if __name__ == "__main__":
    main()
