#!/usr/bin/python3
"""One epoch of MMoE training on the encoded Census-income data, moe next to PyTorch, in one run.

    cmake --preset bench && cmake --build --preset bench --target census_income
    /usr/bin/python3 tools/compare_census_pytorch.py [path/to/census_income] [data dir]

Use the bench build (-march=native): the ci build's SSE2-only kernels are 3x slower.

The C++ example (census_income --speed --export DIR) times an epoch (batch 1024, 2 threads, median
of three after a warm-up) and writes the encoded training data it used; PyTorch then trains the
same model on the same matrix (8 experts of one ReLU layer of 16, linear softmax gates, towers
16 -> 8 -> 1, two BCE tasks, Adam lr 1e-3, shuffled batches of 1024 gathered from the matrix as moe
does), at its best (see torch_at_best.py), in the faster of two forms: a ModuleList of experts and
the experts stacked as one Linear. Both sides run twice, alternating; prints seconds and the ratio.
"""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from torch_at_best import median_seconds, reexec_at_best  # noqa: E402

reexec_at_best()

import numpy as np  # noqa: E402
import torch  # noqa: E402

import moe_torch  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
EXE = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "bench", "examples", "census_income")
DATA = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "..", "shared", "data", "census-income")
BATCH, THREADS = 1024, 2


def run_cpp(export):
    args = [EXE, DATA, "--speed"] + (["--export", export] if export else [])
    out = subprocess.run(args, check=True, capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS=str(THREADS))).stdout
    line = next(l for l in out.splitlines() if l.startswith("mmoe_census_epoch_seconds"))
    return float(line.split()[1])


class StackedMMoE(torch.nn.Module):
    """All experts' (single) layers as one Linear; gates as one Linear; towers per task."""

    def __init__(self, n_in, experts=8, dim=16, tasks=2, tower=8):
        super().__init__()
        self.e, self.d, self.t = experts, dim, tasks
        self.experts = torch.nn.Linear(n_in, experts * dim)
        self.gates = torch.nn.Linear(n_in, tasks * experts)
        self.towers = torch.nn.ModuleList(moe_torch.mlp([dim, tower, 1]) for _ in range(tasks))

    def forward(self, x):
        o = torch.relu(self.experts(x)).view(-1, self.e, self.d)
        p = torch.softmax(self.gates(x).view(-1, self.t, self.e), dim=2)
        mixed = torch.bmm(p, o)  # (B, T, D)
        return [tw(mixed[:, t]) for t, tw in enumerate(self.towers)]


def torch_epoch_seconds(x, y):
    torch.set_num_threads(THREADS)
    cfg = dict(input_dim=x.shape[1], experts=8, expert_hidden=[], expert_dim=16, gate_hidden=[], tower_hidden=[8],
               batchnorm=False, tasks=[dict(kind="bin"), dict(kind="bin")])
    best = None
    for name, model in (("ModuleList", moe_torch.MMoE(cfg)), ("stacked", StackedMMoE(x.shape[1]))):
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)
        bce = torch.nn.BCEWithLogitsLoss()
        gen = torch.Generator().manual_seed(0)

        def epoch():
            order = torch.randperm(x.shape[0], generator=gen)
            for start in range(0, x.shape[0] - 1, BATCH):
                idx = order[start:start + BATCH]
                xb, yb = x[idx], y[idx]
                opt.zero_grad(set_to_none=True)
                out = model(xb)
                loss = bce(out[0][:, 0], yb[:, 0]) + bce(out[1][:, 0], yb[:, 1])
                loss.backward()
                opt.step()
        s = median_seconds(epoch, reps=3, min_seconds=0.0, warmup=1)
        print(f"  pytorch {name}: {s:.3f} s/epoch", flush=True)
        best = s if best is None else min(best, s)
    return best


def main():
    with tempfile.TemporaryDirectory() as tmp:
        cpp = [run_cpp(tmp)]
        n, f = (int(v) for v in open(os.path.join(tmp, "shape.txt")).read().split())
        x = torch.from_numpy(np.fromfile(os.path.join(tmp, "x.f32"), dtype=np.float32).reshape(n, f))
        y = torch.from_numpy(np.fromfile(os.path.join(tmp, "y.f32"), dtype=np.float32).reshape(n, 2))
    print(f"data: {n} samples x {f} features; torch {torch.__version__}, {THREADS} threads, batch {BATCH}")
    print(f"  moe: {cpp[0]:.3f} s/epoch", flush=True)
    py = [torch_epoch_seconds(x, y)]
    cpp.append(run_cpp(None))
    print(f"  moe: {cpp[1]:.3f} s/epoch", flush=True)
    py.append(torch_epoch_seconds(x, y))
    print("\n| run | moe s/epoch | PyTorch s/epoch (faster form) | PyTorch / moe |\n|---|---|---|---|")
    for i in range(2):
        print(f"| {i + 1} | {cpp[i]:.3f} | {py[i]:.3f} | {py[i] / cpp[i]:.2f}x |")


if __name__ == "__main__":
    main()
