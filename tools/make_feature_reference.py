#!/usr/bin/python3
"""Makes the PyTorch reference cases of an MMoE behind an input block of ID features.

Writes tests/fixtures/features_mmoe_{f64,f32}.safetensors (a moe model file: the net's tensors and
tables.<table>.weight, with the features and the config in the metadata) and
..._io.safetensors (a batch, and what PyTorch computes on it). Run with Debian's python3-torch:
    /usr/bin/python3 tools/make_feature_reference.py
The C++ suite reads the committed files and does not need torch.

Features: 2 dense (normalised), an item table (9 x 3, padding row 0) read by item_id (sum) and
recent_items (mean, up to 4 ids), a user table (5 x 2) read by user_id (max), a category table
(4 x 2) read by category (sum with per-id weights). Net: MMoE of 3 experts 12 -> 6 -> 4 with
BatchNorm, towers 4 -> 3 -> 1, tasks click (binary) and watch (regression). Batch of 6.
Names in the io file:
  dense (6, 2); <feature>.ids, <feature>.offsets (7,) int64; category.weights; labels (6, 2)
  out.<t> (6, 1)       the tower outputs in training mode;  loss   the sum of the task losses
  grad.<param>         the net's gradients;  grad.tables.<table>.weight  the tables' (dense form)
  adam.<param>, adam.tables.<table>.weight   after one Adam step of the net (lr 0.01) and one
                       SparseAdam step of the tables (lr 0.01)
  adagrad.tables.<table>.weight              the tables after one Adagrad step (lr 0.1) instead
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import export_pytorch  # noqa: E402
import moe_torch  # noqa: E402
import safetensors_io  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")

FEATURES = {
    "dense": 2, "dense_mean": [0.5, -1.0], "dense_std": [2.0, 0.5],
    "tables": [{"name": "items", "rows": 9, "dim": 3, "padding_idx": 0, "vocabulary": []},
               {"name": "users", "rows": 5, "dim": 2, "padding_idx": None, "vocabulary": []},
               {"name": "categories", "rows": 4, "dim": 2, "padding_idx": None, "vocabulary": []}],
    "sparse": [{"name": "item_id", "table": "items", "pooling": "sum", "max_length": 0},
               {"name": "recent_items", "table": "items", "pooling": "mean", "max_length": 4},
               {"name": "user_id", "table": "users", "pooling": "max", "max_length": 0},
               {"name": "category", "table": "categories", "pooling": "sum", "max_length": 0}],
}
CFG = {"input_dim": 12, "experts": 3, "expert_hidden": [6], "expert_dim": 4, "tower_hidden": [3],
       "batchnorm": True, "tasks": [{"name": "click", "kind": "bin"}, {"name": "watch", "kind": "mse"}]}
BAGS = {  # (ids, lengths) per feature, 6 samples
    "item_id": ([3, 5, 5, 8, 1, 2], [1, 1, 1, 1, 1, 1]),
    "recent_items": ([5, 2, 2, 0, 0, 7, 3, 8, 1, 6, 4], [3, 0, 2, 4, 1, 1]),
    "user_id": ([1, 4, 0, 2, 2, 3, 4], [2, 1, 1, 0, 2, 1]),
    "category": ([1, 3, 2, 0, 1, 2, 3], [2, 1, 1, 1, 1, 1]),
}


def offsets(lengths):
    out = [0]
    for n in lengths:
        out.append(out[-1] + n)
    return torch.tensor(out, dtype=torch.int64)


# The attention case: the same features plus a history of items pooled by target attention against
# item_id (DIN; an MLP 12 -> 5 -> 1, unnormalised weights), with padding ids, an empty history and
# one of padding only. Written as features_attention_{f64,f32}[_io].safetensors; its io file holds
# the forward and the gradients (grad.attention.history.mlp.* too), no optimizer steps.
ATTENTION_FEATURES = dict(FEATURES, sparse=FEATURES["sparse"] + [
    {"name": "history", "table": "items", "pooling": "sum", "max_length": 5, "attention_target": "item_id",
     "attention_hidden": [5], "attention_softmax": False}])
ATTENTION_CFG = dict(CFG, input_dim=15)
ATTENTION_BAGS = dict(BAGS, history=([4, 0, 6, 6, 2, 0, 0, 7, 1, 3], [2, 3, 0, 2, 1, 2]))


def make(dtype, name="features_mmoe", features=FEATURES, cfg=CFG, bags=BAGS, steps=True):
    torch.manual_seed(3)
    net = moe_torch.MMoE(cfg).to(dtype)
    model = moe_torch.FeatureModel(net, features).to(dtype)
    with torch.no_grad():  # non-zero padding rows would hide nothing: PyTorch keeps them at zero too
        for t in model.tables.children():
            t.weight.normal_()
            if t.padding_idx is not None:
                t.weight[t.padding_idx].zero_()
    dense = torch.randn(6, 2, dtype=dtype)
    sparse, io = {}, {"dense": dense}
    for feature, (ids, lengths) in bags.items():
        ids_t = torch.tensor(ids, dtype=torch.int64)
        w = torch.randn(len(ids), dtype=dtype) if feature == "category" else None
        sparse[feature] = (ids_t, offsets(lengths), w)
        io[feature + ".ids"], io[feature + ".offsets"] = ids_t, offsets(lengths)
        if w is not None:
            io[feature + ".weights"] = w
    labels = torch.stack([(torch.rand(6) < 0.5).to(dtype), torch.randn(6, dtype=dtype)], dim=1)
    io["labels"] = labels

    state = {n: t.detach().clone() for n, t in model.state_dict().items()}
    model.train()
    outs = model(dense, sparse)
    loss = sum(moe_torch.task_loss(task, out, labels[:, t:t + 1]) for t, (task, out) in enumerate(zip(cfg["tasks"], outs)))
    loss.backward()
    for t, o in enumerate(outs):
        io[f"out.{t}"] = o.detach()
    io["loss"] = loss.detach().reshape(())
    tables = {f"tables.{n}.weight": m.weight for n, m in model.tables.named_children()}
    net_params = [(n, p) for n, p in model.named_parameters() if not n.startswith("tables.")]
    for n, p in net_params:
        io["grad." + n] = p.grad.detach().clone()
    for n, p in tables.items():
        g = p.grad.coalesce().to_dense() if p.grad.is_sparse else p.grad
        io["grad." + n] = g.detach().clone()
        if not p.grad.is_sparse:  # the max-pooled table: as rows for the sparse optimizers
            p.grad = p.grad.to_sparse(1)
    grads = {n: p.grad.clone() for n, p in tables.items()}
    before = {n: p.detach().clone() for n, p in tables.items()}
    if not steps:
        save(dtype, name, cfg, features, state, io)
        return

    torch.optim.Adam([p for _, p in net_params], lr=0.01).step()
    torch.optim.SparseAdam(list(tables.values()), lr=0.01).step()
    for n, p in net_params:
        io["adam." + n] = p.detach().clone()
    for n, p in tables.items():
        io["adam." + n] = p.detach().clone()
    with torch.no_grad():
        for n, p in tables.items():
            p.copy_(before[n])
            p.grad = grads[n]
    torch.optim.Adagrad(list(tables.values()), lr=0.1).step()
    for n, p in tables.items():
        io["adagrad." + n] = p.detach().clone()

    save(dtype, name, cfg, features, state, io)


def save(dtype, name, cfg, features, state, io):
    tag = "f64" if dtype == torch.float64 else "f32"
    path = os.path.join(OUT, f"{name}_{tag}.safetensors")
    meta = {"format": "moe-model", "version": "1", "kind": "mmoe",
            "dtype": "float64" if dtype == torch.float64 else "float32",
            "config": json.dumps(export_pytorch.moe_config("mmoe", cfg)), "features": json.dumps(features)}
    safetensors_io.save(path, state, meta)
    safetensors_io.save(os.path.join(OUT, f"{name}_{tag}_io.safetensors"), io)
    print("wrote", path)


if __name__ == "__main__":
    for dtype in (torch.float64, torch.float32):
        make(dtype)
        make(dtype, "features_attention", ATTENTION_FEATURES, ATTENTION_CFG, ATTENTION_BAGS, steps=False)
