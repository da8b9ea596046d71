#!/usr/bin/python3
"""Side-by-side speed of moe's SparseMoE and PyTorch's best eager top-k MoE, in one run.

    /usr/bin/python3 tools/compare_sparse_pytorch.py [path/to/bench_sparse] [--coretype NAME]

--coretype sets OPENBLAS_CORETYPE for moe's rows of a bench-blas build; PyTorch runs with it unset.

Needs Debian's python3-torch with libopenblas0-openmp and a bench build of moe (scripts/bench, or
cmake --preset bench && cmake --build --preset bench). PyTorch is put at its best as in
compare_pytorch.py (OPENBLAS_CORETYPE unset, malloc keeps freed memory, set_num_threads per row).
Its sparse layer is the usual sort-based dispatch: router matmul, softmax, topk (renormalised),
argsort of the expert ids, index_select of the tokens, one Linear-GELU-Linear per expert on its
contiguous block, index_add_ of the weighted outputs; the dense layer runs every expert on every
token and sums them weighted by the softmax. Forward + backward of sum(y * dy), N = 4096 tokens,
ffn = 2d, float32, tokens/s, medians of 5.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from torch_at_best import bench_and_env, median_seconds, reexec_at_best  # noqa: E402

reexec_at_best()

import torch  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
BENCH, MOE_ENV = bench_and_env(os.path.join(ROOT, "build", "bench", "benchmarks", "bench_sparse"))
TOKENS = 4096
REPS = 5
# (d, experts, k or None for dense, threads): the rows the issue quotes PyTorch for, and their dense rows.
ROWS = [(512, 16, 1, 2), (512, 16, 2, 2), (512, 16, None, 2), (128, 64, 2, 2), (128, 64, 1, 2), (128, 16, 2, 2),
        (128, 16, None, 2)]


class TorchMoE(torch.nn.Module):
    def __init__(self, d, experts, k):
        super().__init__()
        self.k = k
        self.router = torch.nn.Linear(d, experts, bias=False)
        self.experts = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Linear(d, 2 * d), torch.nn.GELU(), torch.nn.Linear(2 * d, d))
            for _ in range(experts))

    def forward(self, x):  # x: (N, d)
        probs = torch.softmax(self.router(x), dim=-1)
        if self.k is None:  # dense: every expert, softmax-weighted
            y = torch.zeros_like(x)
            for e, expert in enumerate(self.experts):
                y = y + probs[:, e:e + 1] * expert(x)
            return y
        w, idx = torch.topk(probs, self.k, dim=-1)
        w = w / w.sum(dim=-1, keepdim=True)
        flat = idx.reshape(-1)
        order = torch.argsort(flat)
        counts = torch.bincount(flat, minlength=len(self.experts)).tolist()
        token = torch.div(order, self.k, rounding_mode="floor")
        xs = x.index_select(0, token)
        ws = w.reshape(-1).index_select(0, order).unsqueeze(1)
        outs, start = [], 0
        for e, c in enumerate(counts):
            if c:
                outs.append(self.experts[e](xs[start:start + c]))
            start += c
        out = torch.cat(outs) * ws
        return torch.zeros_like(x).index_add_(0, token, out)


def torch_rate(d, experts, k, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = TorchMoE(d, experts, k)
    x = torch.randn(TOKENS, d, requires_grad=True)
    dy = torch.randn(TOKENS, d)

    def step():
        model.zero_grad(set_to_none=True)
        x.grad = None
        (model(x) * dy).sum().backward()

    return TOKENS / median_seconds(step, reps=REPS, warmup=2)


def bench_name(d, experts, k, threads):
    if k is None:
        return f"dense_moe_train/d:{d}/experts:{experts}/threads:{threads}"
    return f"sparse_moe_train/d:{d}/experts:{experts}/k:{k}/threads:{threads}"


BACKENDS_SEEN = set()


def moe_rates():
    names = [bench_name(*r) for r in ROWS]
    pattern = "^(" + "|".join(names) + ")/"
    out = subprocess.run([BENCH, f"--benchmark_filter={pattern}", f"--benchmark_repetitions={REPS}",
                          "--benchmark_report_aggregates_only=true", "--benchmark_format=json"],
                         check=True, capture_output=True, text=True, env=MOE_ENV).stdout
    res = {}
    # The benchmark prints its backend (GEMM kernel, BLAS, threads) on a line before the JSON.
    backend, out = out[:out.index("{")].strip(), out[out.index("{"):]
    if backend and backend not in BACKENDS_SEEN:
        BACKENDS_SEEN.add(backend)
        print("moe:", backend)
    for b in json.loads(out)["benchmarks"]:
        if b.get("aggregate_name") == "median":
            res[b["run_name"].replace("/real_time", "")] = b["items_per_second"]
    return res


def main():
    if not os.path.exists(BENCH):
        sys.exit(f"{BENCH} not found: build it with scripts/bench (or cmake --preset bench && cmake --build --preset bench)")
    print(f"torch {torch.__version__}; moe: {BENCH}; N = {TOKENS} tokens, ffn = 2d, forward + backward")
    ours = moe_rates()
    print("\n| row | PyTorch tokens/s | moe tokens/s | moe / PyTorch |")
    print("|---|---:|---:|---:|")
    for row in ROWS:
        name = bench_name(*row)
        theirs = torch_rate(*row)
        mine = ours[name]
        print(f"| {name} | {theirs:,.0f} | {mine:,.0f} | {mine / theirs:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
