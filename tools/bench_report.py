#!/usr/bin/env python3
"""The report of scripts/bench: for every backend's results (build/bench/results/<backend>/*.json),

  1. each row's GFLOP/s next to the GEMM rate measured in the same run (gemm_rate/batch:2048 at the
     same thread count): the fraction of the limit the row reaches;
  2. the scaling over the thread counts: speed at N threads over speed at 1, and that over N
     (the scaling efficiency).

    python3 tools/bench_report.py build/bench/results
Medians of the repetitions (Google Benchmark's "median" aggregates).
"""
import json
import os
import re
import sys


def medians(path):
    """The median rows of one suite's JSON; none when the suite wrote nothing (a filter that
    matched none of its rows leaves an empty file)."""
    if os.path.getsize(path) == 0:
        return {}, {}
    with open(path) as f:
        data = json.load(f)
    rows = {}
    for b in data["benchmarks"]:
        if b.get("aggregate_name", "median") != "median":
            continue
        rows[b["run_name"].replace("/real_time", "")] = b
    return rows, data.get("context", {})


def threads_of(name):
    m = re.search(r"threads:(\d+)", name)
    return int(m.group(1)) if m else None


def main(root):
    for backend in sorted(os.listdir(root)):
        folder = os.path.join(root, backend)
        if not os.path.isdir(folder):
            continue
        rows = {}
        for name in sorted(os.listdir(folder)):
            if name.endswith(".json"):
                rows.update(medians(os.path.join(folder, name))[0])
        if not rows:
            continue
        print(f"\n### backend: {backend}\n")
        rate = {threads_of(n): r.get("GFLOP/s") for n, r in rows.items() if n.startswith("gemm_rate/batch:2048")}
        print("| row | samples or tokens/s | GFLOP/s | GEMM rate (same threads) | fraction |")
        print("|---|---:|---:|---:|---:|")
        for n, r in rows.items():
            if "GFLOP/s" not in r or n.startswith(("gemm_rate", "eigen_gemm")):
                continue
            limit = rate.get(threads_of(n))
            frac = f"{r['GFLOP/s'] / limit:.0%}" if limit else "-"
            items = r.get("items_per_second")
            print(f"| {n} | {items:,.0f} | {r['GFLOP/s'] / 1e0:.1f} | {limit or 0:.1f} | {frac} |" if items else
                  f"| {n} | - | {r['GFLOP/s']:.1f} | {limit or 0:.1f} | {frac} |")
        # Scaling: rows that differ only in their thread count.
        groups = {}
        for n, r in rows.items():
            t = threads_of(n)
            if t is None or "items_per_second" not in r:
                continue
            groups.setdefault(re.sub(r"/threads:\d+", "", n), {})[t] = r["items_per_second"]
        scaled = {k: v for k, v in groups.items() if len(v) > 1 and 1 in v}
        if scaled:
            counts = sorted({t for v in scaled.values() for t in v})
            print("\n| row | " + " | ".join(f"{t} thr" for t in counts) + " |")
            print("|---|" + "---:|" * len(counts))
            for k, v in scaled.items():
                cells = []
                for t in counts:
                    if t not in v:
                        cells.append("-")
                    else:
                        s = v[t] / v[1]
                        cells.append(f"{s:.2f}x ({s / t:.0%})")
                print(f"| {k} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "build/bench/results")
