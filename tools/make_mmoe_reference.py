#!/usr/bin/python3
"""Makes PyTorch reference cases of the multi-task models, in the format of ../shared/reference/.

Writes tests/fixtures/mt_<case>_{f64,f32}.safetensors. Run with Debian's python3-torch:
    /usr/bin/python3 tools/make_mmoe_reference.py
The C++ suite reads the committed files and does not need torch.

Each file holds the parameters (state_dict names, see tools/moe_torch.py), input.x (B, in),
label.{t} (B, 1), mask.{t} (B, 1) for masked tasks, output.{t}.logit (B, C) (what the loss sees),
output.{t}.pred (after the head), loss.{t} and loss.total (sum of the per-task means over counted
samples), act.* for MMoE, grad.<param> of loss.total, and adam1.<param> after one Adam step
(lr 1e-3). __metadata__ "config" is the JSON config below, in the shared format extended with
lists for the hidden widths, "model", "gate_hidden", "batchnorm", "surfaces" (tower trees: input.surface
holds each sample's surface, as a float), and per task "classes",
"relu_output" and "masked". BatchNorm runs in training mode (batch statistics); no dropout.
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import moe_torch  # noqa: E402
import safetensors_io  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")

CASES = {
    # MMoE with two hidden expert layers, a hidden gate layer, batchnorm, and every task kind.
    "mmoe_deep": dict(model="mmoe", input_dim=7, experts=4, expert_hidden=[9, 6], expert_dim=5, gate_hidden=[4],
                      tower_hidden=[4, 3], batchnorm=True, batch=9,
                      tasks=[dict(kind="bin"), dict(kind="bin", masked=True), dict(kind="mse", relu_output=True),
                             dict(kind="huber", delta=0.3), dict(kind="ce", classes=3, masked=True)]),
    # The benchmark's shape in small: 8 experts, two binary tasks and a regression.
    "mmoe_wide": dict(model="mmoe", input_dim=16, experts=8, expert_hidden=[24], expert_dim=12, gate_hidden=[],
                      tower_hidden=[6], batchnorm=False, batch=13,
                      tasks=[dict(kind="bin"), dict(kind="bin"), dict(kind="mse")]),
    "omoe": dict(model="omoe", input_dim=6, experts=3, expert_hidden=[8], expert_dim=5, gate_hidden=[],
                 tower_hidden=[4], batchnorm=True, batch=8,
                 tasks=[dict(kind="bin"), dict(kind="mse", masked=True), dict(kind="ce", classes=4)]),
    "shared_bottom": dict(model="shared_bottom", input_dim=6, bottom_hidden=[10], bottom_dim=7, tower_hidden=[5],
                          batchnorm=True, batch=8,
                          tasks=[dict(kind="bin", masked=True), dict(kind="huber", delta=1.0), dict(kind="ce", classes=3)]),
    # PLE of two levels with different expert counts, batchnorm, every task kind and a mask.
    "ple": dict(model="ple", input_dim=6, tower_hidden=[4], batchnorm=True, batch=9,
                levels=[dict(shared_experts=2, task_experts=1, expert_hidden=[7], expert_dim=5),
                        dict(shared_experts=1, task_experts=2, expert_hidden=[], expert_dim=4)],
                tasks=[dict(kind="bin"), dict(kind="mse", masked=True), dict(kind="ce", classes=3)]),
    "cgc": dict(model="cgc", input_dim=5, tower_hidden=[3], batchnorm=False, batch=8,
                levels=[dict(shared_experts=3, task_experts=2, expert_hidden=[6], expert_dim=4)],
                tasks=[dict(kind="bin", masked=True), dict(kind="huber", delta=0.5)]),
    # DSelect-k gates (2 of 5 experts: not a power of two, so the reachability term is on), with the
    # entropy regulariser; loss.total includes the gates' regulariser (loss.aux).
    "mmoe_dselect": dict(model="mmoe", input_dim=7, experts=5, expert_hidden=[8], expert_dim=4, gate_hidden=[],
                         tower_hidden=[3], batchnorm=True, batch=9, gate="dselect_k", dselect_k=2, dselect_gamma=4.0,
                         dselect_entropy=0.05,
                         tasks=[dict(kind="bin"), dict(kind="mse", masked=True), dict(kind="ce", classes=3)]),
    # Tower trees: one tower per task and surface, each sample through its surface's towers
    # (input.surface); BatchNorm in the towers sees one surface's samples.
    "mmoe_surfaces": dict(model="mmoe", input_dim=6, experts=3, expert_hidden=[7], expert_dim=5, gate_hidden=[],
                          tower_hidden=[4], batchnorm=True, batch=13, surfaces=3,
                          tasks=[dict(kind="bin"), dict(kind="bin", masked=True), dict(kind="mse")]),
    "cgc_surfaces": dict(model="cgc", input_dim=5, tower_hidden=[3], batchnorm=False, batch=9, surfaces=4,
                         levels=[dict(shared_experts=2, task_experts=1, expert_hidden=[6], expert_dim=4)],
                         tasks=[dict(kind="bin"), dict(kind="huber", delta=0.5, masked=True)]),
}


def make(name, cfg, dtype, seed):
    torch.manual_seed(seed)
    cfg = dict(cfg)
    cfg["dtype"] = "float64" if dtype == torch.float64 else "float32"
    cfg["seed"] = seed
    if cfg["model"] == "shared_bottom":
        model = moe_torch.SharedBottom(cfg)
    elif cfg["model"] in ("ple", "cgc"):
        model = moe_torch.PLE(cfg)
    else:
        model = moe_torch.MMoE(dict(cfg, shared_gate=cfg["model"] == "omoe"))
    model = model.to(dtype).train()
    B = cfg["batch"]
    x = torch.randn(B, cfg["input_dim"], dtype=dtype)
    surfaces = None
    if cfg.get("surfaces", 1) > 1:
        # Every surface but the last gets at least 2 samples (BatchNorm); the last gets none: a
        # surface absent from a batch must leave its towers' gradients at zero.
        S = cfg["surfaces"]
        surfaces = torch.cat([torch.arange(S - 1).repeat(2), torch.randint(0, S - 1, (B - 2 * (S - 1),))])
        surfaces = surfaces[torch.randperm(B)]
    t = {n: v.detach().clone() for n, v in model.state_dict().items() if "running" not in n and "num_batches" not in n}
    t["input.x"] = x
    if surfaces is not None:
        t["input.surface"] = surfaces.to(dtype).unsqueeze(1)
    labels, masks = [], []
    for k, task in enumerate(cfg["tasks"]):
        if task["kind"] == "bin":
            y = torch.randint(0, 2, (B, 1)).to(dtype)
        elif task["kind"] == "ce":
            y = torch.randint(0, task["classes"], (B, 1)).to(dtype)
        else:
            y = torch.rand(B, 1, dtype=dtype) * 2
        m = (torch.rand(B, 1) < 0.6).to(dtype) if task.get("masked") else None
        if m is not None:
            m[0] = 1  # at least one counted sample
            t[f"mask.{k}"] = m
        t[f"label.{k}"] = y
        labels.append(y)
        masks.append(m)
    acts = {}
    outs = model(x, acts, surfaces)
    total = 0
    for k, (task, out) in enumerate(zip(cfg["tasks"], outs)):
        loss = moe_torch.task_loss(task, out, labels[k], masks[k])
        total = total + loss
        t[f"output.{k}.logit"] = out.detach()
        if task["kind"] == "bin":
            pred = torch.sigmoid(out)
        elif task["kind"] == "ce":
            pred = torch.softmax(out, dim=1)
        else:
            pred = out
        t[f"output.{k}.pred"] = pred.detach()
        t[f"loss.{k}"] = loss.detach()
    if hasattr(model, "aux_loss") and model.dselect:
        aux = model.aux_loss()
        t["loss.aux"] = aux.detach()
        total = total + aux
    t["loss.total"] = total.detach()
    for n, v in acts.items():
        t[f"act.{n}"] = v.detach()
    model.zero_grad()
    total.backward()
    named = dict(model.named_parameters())
    for n, p in named.items():
        t[f"grad.{n}"] = p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    opt.step()
    for n, p in named.items():
        t[f"adam1.{n}"] = p.detach().clone()
    meta = {"format": "mmoe-case-v1", "config": json.dumps(cfg), "torch": torch.__version__}
    suffix = "f64" if dtype == torch.float64 else "f32"
    safetensors_io.save(os.path.join(OUT, f"mt_{name}_{suffix}.safetensors"), t, meta)


def main():
    """Writes every case, or only those named on the command line."""
    os.makedirs(OUT, exist_ok=True)
    only = set(sys.argv[1:])
    unknown = only - set(CASES)
    if unknown:
        sys.exit(f"unknown case(s) {sorted(unknown)}; the cases are {list(CASES)}")
    written = 0
    for i, (name, cfg) in enumerate(CASES.items()):
        if only and name not in only:
            continue
        for dtype in (torch.float64, torch.float32):
            make(name, cfg, dtype, seed=100 + i)
            written += 1
    print("wrote", written, "cases to", os.path.normpath(OUT))


if __name__ == "__main__":
    main()
