#!/usr/bin/env python3
"""The scaling model of data-parallel training on paper (docs/distributed.md).

Step time on N machines with a fixed global batch: the compute of the global batch split N ways,
plus a ring all-reduce of the gradient: 2 (N - 1) latency + 2 (N - 1) / N * bytes / bandwidth.
Inputs are measured by benchmarks/bench_allreduce.cpp (compute, gradient bytes) and the network's
line rate and latency (assumed, see the doc). Usage: tools/scaling_model.py [compute_ms] [gradient_mb]
"""
import sys

compute = float(sys.argv[1]) * 1e-3 if len(sys.argv) > 1 else 76.4e-3  # s, global batch 2048, one rank
grad = float(sys.argv[2]) * 1e6 if len(sys.argv) > 2 else 1.69e6       # bytes (float32 gradient)
networks = [("10 Gbit/s, 20 us", 1.25e9, 20e-6), ("100 Gbit/s, 5 us", 12.5e9, 5e-6)]


def ring(n, bw, lat, size):
    return 0.0 if n == 1 else 2 * (n - 1) * lat + 2 * (n - 1) / n * size / bw


print("| N | " + " | ".join(f"{name}: step ms (efficiency)" for name, _, _ in networks) + " |")
print("|---:|" + "---:|" * len(networks))
for n in [1, 2, 4, 8, 16, 32, 64]:
    cells = []
    for _, bw, lat in networks:
        t = compute / n + ring(n, bw, lat, grad)
        cells.append(f"{1e3 * t:.2f} ({compute / (n * t):.0%})")
    print(f"| {n} | " + " | ".join(cells) + " |")
for name, bw, lat in networks:
    # Half efficiency where the all-reduce equals the compute share: compute / N = ring(N).
    n = 1
    while compute / n > ring(n, bw, lat, grad) and n < 100000:
        n += 1
    print(f"{name}: the all-reduce overtakes the compute at N = {n}")
