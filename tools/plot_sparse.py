#!/usr/bin/python3
"""Plot tokens/s against the number of experts for dense, top-1 and top-2 from bench_sparse's JSON.

    /usr/bin/python3 tools/plot_sparse.py [build/bench/results/bench_sparse.json] [benchmarks/sparse_moe_speed.png]

Needs gnuplot (Debian's gnuplot-nox). One panel per width d (128, 512), training rows on 2 threads,
log scales; medians when the JSON has aggregates.
"""
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
SRC = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "bench", "results", "bench_sparse.json")
OUT = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "benchmarks", "sparse_moe_speed.png")
THREADS = 2


def parse(name):
    kind, *parts = name.split("/")
    return kind, dict(p.split(":") for p in parts if ":" in p)


def main():
    with open(SRC) as f:
        runs = json.load(f)["benchmarks"]
    rate = {}
    for b in runs:
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        kind, a = parse(b["run_name"].replace("/real_time", ""))
        if kind not in ("sparse_moe_train", "dense_moe_train") or int(a["threads"]) != THREADS:
            continue
        series = "dense" if kind == "dense_moe_train" else f"top-{a['k']}"
        rate[(int(a["d"]), series, int(a["experts"]))] = b["items_per_second"]
    if not rate:
        sys.exit(f"{SRC}: no sparse_moe_train/dense_moe_train rows with threads:{THREADS}")
    tmp = tempfile.mkdtemp()
    plots = []
    for d in (128, 512):
        cmds = []
        for series in ("dense", "top-1", "top-2"):
            pts = sorted((e, r) for (dd, s, e), r in rate.items() if dd == d and s == series)
            if not pts:
                continue
            path = os.path.join(tmp, f"{d}_{series}.dat")
            with open(path, "w") as f:
                f.writelines(f"{e} {r}\n" for e, r in pts)
            cmds.append(f"'{path}' using 1:2 with linespoints lw 2 pt 7 title '{series}'")
        plots.append((d, ", ".join(cmds)))
    script = [
        "set terminal pngcairo size 1100,450 font 'sans,11'" if have_cairo() else "set terminal png size 1100,450",
        f"set output '{OUT}'",
        "set multiplot layout 1,2 title 'SparseMoE training (forward + backward), N = 4096 tokens, ffn = 2d, float32, 2 threads'",
        "set logscale xy", "set xrange [6:85]", "set xtics (8, 16, 64)", "set grid", "set key bottom left",
        "set xlabel 'experts'", "set ylabel 'tokens/s'",
    ]
    for d, cmd in plots:
        script += [f"set title 'd = {d}'", f"plot {cmd}"]
    script.append("unset multiplot")
    subprocess.run(["gnuplot"], input="\n".join(script), text=True, check=True)
    print(f"wrote {OUT}")


def have_cairo():
    out = subprocess.run(["gnuplot", "-e", "set terminal"], capture_output=True, text=True)
    return "pngcairo" in (out.stdout + out.stderr)


if __name__ == "__main__":
    main()
