#!/usr/bin/python3
"""Makes the PyTorch reference cases of EmbeddingBag and SparseAdam.

Writes tests/fixtures/embedding_{f64,f32}.safetensors. Run with Debian's python3-torch:
    /usr/bin/python3 tools/make_embedding_reference.py
The C++ suite reads the committed files and does not need torch.

One table (9 rows of dim 5; the padding row, when a case has one, is NOT zero, so that leaving it
out of the pooling is what is tested) and one batch of 6 bags (include_last_offset form: offsets has
7 entries; a repeated id, an empty bag, the padding id alone in a bag and next to others).
Names in the file:
  table (9, 5), ids (n,) int64, offsets (7,) int64, weights (n,), dy1, dy2 (6, 5)
  <case>.y        the pooled bags (6, 5) on the table
  <case>.grad     the sparse gradient of the table for dy1, coalesced, as a dense (9, 5)
  <case>.adam2    the table after two SparseAdam steps (lr 0.01): backward dy1, step, forward,
                  backward dy2, step (not for max: PyTorch has no sparse gradient in max mode)
  cases: sum, sum_weighted, sum_pad, mean, mean_pad, max, max_pad (padding_idx 2)
  embedding.dy (n, 5), embedding.y, embedding.grad   torch.nn.Embedding (padding_idx 2) on the ids
                  as one sequence: the looked-up rows and the dense form of the sparse gradient
  adagrad.table2  the table after two torch.optim.Adagrad steps (lr 0.1, lr_decay 0.01, sparse
                  gradients) of the sum_weighted case (dy1, then dy2)
  rowwise_adagrad.table2   the same two steps with row-wise Adagrad (one accumulator per row, +=
                  the mean of the row's squared gradient), written out here: PyTorch has none
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import safetensors_io  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
CASES = [("sum", False, None), ("sum_weighted", True, None), ("sum_pad", False, 2), ("mean", False, None),
         ("mean_pad", False, 2), ("max", False, None), ("max_pad", False, 2)]


def case(dtype):
    torch.manual_seed(5)
    table = torch.randn(9, 5, dtype=dtype)
    ids = torch.tensor([4, 1, 4, 2, 7, 0, 2, 8, 3, 5, 5, 6], dtype=torch.int64)
    offsets = torch.tensor([0, 3, 3, 4, 7, 9, 12], dtype=torch.int64)  # bag 1 empty, bag 2 = {2} only
    weights = torch.randn(len(ids), dtype=dtype)
    dy1 = torch.randn(6, 5, dtype=dtype)
    dy2 = torch.randn(6, 5, dtype=dtype)
    t = {"table": table, "ids": ids, "offsets": offsets, "weights": weights, "dy1": dy1, "dy2": dy2}
    for name, weighted, padding in CASES:
        mode = name.split("_")[0]
        sparse = mode != "max"
        emb = torch.nn.EmbeddingBag(9, 5, mode=mode, padding_idx=padding, sparse=sparse,
                                    include_last_offset=True).to(dtype)
        with torch.no_grad():
            emb.weight.copy_(table)
        w = weights if weighted else None
        y = emb(ids, offsets, per_sample_weights=w)
        y.backward(dy1)
        t[name + ".y"] = y
        t[name + ".grad"] = emb.weight.grad.coalesce().to_dense() if sparse else emb.weight.grad
        if not sparse:
            continue
        opt = torch.optim.SparseAdam(emb.parameters(), lr=0.01)
        opt.step()
        opt.zero_grad()
        emb(ids, offsets, per_sample_weights=w).backward(dy2)
        opt.step()
        t[name + ".adam2"] = emb.weight.detach().clone()

    # Embedding: the ids as one sequence.
    emb = torch.nn.Embedding(9, 5, padding_idx=2, sparse=True).to(dtype)
    with torch.no_grad():
        emb.weight.copy_(table)
    dys = torch.randn(len(ids), 5, dtype=dtype)
    y = emb(ids)
    y.backward(dys)
    t.update({"embedding.dy": dys, "embedding.y": y, "embedding.grad": emb.weight.grad.coalesce().to_dense()})

    # Adagrad, element-wise (PyTorch's) and row-wise (written out), on the sum_weighted case.
    def bag_with(w):
        bag = torch.nn.EmbeddingBag(9, 5, mode="sum", sparse=True, include_last_offset=True).to(dtype)
        with torch.no_grad():
            bag.weight.copy_(w)
        return bag

    bag = bag_with(table)
    opt = torch.optim.Adagrad(bag.parameters(), lr=0.1, lr_decay=0.01)
    for dy in (dy1, dy2):
        opt.zero_grad()
        bag(ids, offsets, per_sample_weights=weights).backward(dy)
        opt.step()
    t["adagrad.table2"] = bag.weight.detach().clone()
    w = table.clone()
    acc = torch.zeros(9, dtype=dtype)
    for step, dy in enumerate((dy1, dy2), start=1):
        bag = bag_with(w)
        bag(ids, offsets, per_sample_weights=weights).backward(dy)
        g = bag.weight.grad.coalesce()
        rows, values = g._indices()[0], g._values()
        acc[rows] += (values * values).mean(dim=1)
        clr = 0.1 / (1 + (step - 1) * 0.01)
        w[rows] -= clr * values / (acc[rows].sqrt() + 1e-10)[:, None]
    t["rowwise_adagrad.table2"] = w
    return t


def main():
    for dtype, suffix in ((torch.float64, "f64"), (torch.float32, "f32")):
        path = os.path.join(OUT, "embedding_%s.safetensors" % suffix)
        safetensors_io.save(path, case(dtype), {"torch": torch.__version__})
        print("wrote", path)


if __name__ == "__main__":
    main()
