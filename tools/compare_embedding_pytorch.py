#!/usr/bin/python3
"""Side-by-side speed of moe's EmbeddingBag + SparseAdam step and PyTorch's, in one run.

    /usr/bin/python3 tools/compare_embedding_pytorch.py [path/to/bench_embedding] [--quick]

The shapes of benchmarks/bench_embedding.cpp: 26 features of dim 16 (a table each), bags of 1 or 20
ids, batch 2048, sum pooling; a step is, per feature, forward, backward of sum(y * dy) and a
SparseAdam step (torch.nn.EmbeddingBag(sparse=True) + torch.optim.SparseAdam); the scaling rows
are one 20-hot feature at 1e4, 1e6 and 1e7 rows, with ids uniform over the table (scaling) or drawn
per batch from 4096 random rows of it (scaling_same_rows). PyTorch at its best as in
compare_pytorch.py (OPENBLAS_CORETYPE unset, malloc keeps freed memory) on --threads N threads
(default 2); moe's layer runs on one thread whatever N. --quick runs only the rows of 1e4 and 1e5
rows (little memory). Prints samples/s of both and the ratio moe / PyTorch, medians of 5.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from torch_at_best import median_seconds, reexec_at_best  # noqa: E402

reexec_at_best()

import torch  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
QUICK = "--quick" in sys.argv
THREADS = int(next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--threads=")), "2"))
BENCH = ARGS[0] if ARGS else os.path.join(ROOT, "build", "bench", "benchmarks", "bench_embedding")
DIM, BATCH, CYCLED, POOL = 16, 2048, 4, 4096


def batch_ids(rows, hot, pool):
    if pool == 0:
        return torch.randint(0, rows, (BATCH * hot,))
    pool_rows = torch.randint(0, rows, (pool,))
    return pool_rows[torch.randint(0, pool, (BATCH * hot,))]


def torch_step_seconds(features, rows, hot, pool=0):
    torch.manual_seed(7)
    tables = [torch.nn.EmbeddingBag(rows, DIM, mode="sum", sparse=True, include_last_offset=True) for _ in range(features)]
    opts = [torch.optim.SparseAdam(t.parameters(), lr=1e-3) for t in tables]
    offsets = torch.arange(0, BATCH * hot + 1, hot, dtype=torch.int64)
    batches = [[batch_ids(rows, hot, pool) for _ in range(CYCLED)] for _ in range(features)]
    dy = torch.full((BATCH, DIM), 1e-3)
    state = {"batch": 0}

    def step():
        b = state["batch"]
        for t, opt, ids in zip(tables, opts, batches):
            opt.zero_grad(set_to_none=True)
            t(ids[b], offsets).backward(dy)
            opt.step()
        state["batch"] = (b + 1) % CYCLED

    return median_seconds(step)


def moe_rows(filter_regex):
    out_file = os.path.join(ROOT, "build", "bench", "embedding_compare.json")
    subprocess.run([BENCH, "--benchmark_filter=" + filter_regex, "--benchmark_out=" + out_file,
                    "--benchmark_out_format=json", "--benchmark_repetitions=5", "--benchmark_report_aggregates_only=true"],
                   check=True, capture_output=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    rows = {}
    with open(out_file) as f:
        for b in json.load(f)["benchmarks"]:
            if b.get("aggregate_name") == "median":
                rows[b["run_name"]] = b["real_time"] * {"ms": 1e-3, "us": 1e-6, "ns": 1e-9, "s": 1.0}[b["time_unit"]]
    return rows


def main():
    torch.set_num_threads(THREADS)
    cases = [("embedding_bag_step/rows:%d/hot:%d/real_time" % (r, h), 26, r, h, 0)
             for r in ((100000,) if QUICK else (100000, 1000000)) for h in (1, 20)]
    scaling_rows = (10000,) if QUICK else (10000, 1000000, 10000000)
    cases += [("embedding_bag_scaling/rows:%d/real_time" % r, 1, r, 20, 0) for r in scaling_rows]
    cases += [("embedding_bag_scaling_same_rows/rows:%d/real_time" % r, 1, r, 20, POOL) for r in scaling_rows]
    regex = "|".join("^" + name.replace("/real_time", "/") for name, _, _, _, _ in cases)
    ours = moe_rows(regex)
    print("PyTorch on %d threads, moe on one" % THREADS)
    print("| row | moe samples/s | PyTorch samples/s | moe / PyTorch |\n|---|---:|---:|---:|")
    for name, features, rows, hot, pool in cases:
        theirs = torch_step_seconds(features, rows, hot, pool)
        mine = ours.get(name)
        if mine is None:
            print("| %s | (not run) | %.0f | - |" % (name, BATCH / theirs))
            continue
        print("| %s | %.0f | %.0f | %.2fx |" % (name, BATCH / mine, BATCH / theirs, theirs / mine))


if __name__ == "__main__":
    main()
