"""Shared by the compare_*.py scripts: run PyTorch at its best on this machine, and time it.

reexec_at_best() re-executes the script once with OPENBLAS_CORETYPE unset (the environment's
Haswell setting halves OpenBLAS) and glibc's malloc told to keep freed memory (no page faults per
step); call it before importing torch. median_seconds(fn) is the median over repetitions of the
seconds per call, each repetition running at least min_seconds after a warm-up.
"""
import os
import statistics
import sys
import time


def reexec_at_best():
    if os.environ.get("MOE_COMPARE_CHILD") == "1":
        return
    env = dict(os.environ, MOE_COMPARE_CHILD="1", MALLOC_MMAP_THRESHOLD_="4294967296",
               MALLOC_TRIM_THRESHOLD_="4294967296", MALLOC_TOP_PAD_="268435456")
    env.pop("OPENBLAS_CORETYPE", None)
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


def bench_and_env(default_bench):
    """The compare scripts' arguments, [path/to/bench] [--coretype NAME]: the benchmark binary
    (default_bench when none is given) and the environment for moe's rows, with OPENBLAS_CORETYPE
    set when --coretype names a kernel (a bench-blas build; PyTorch runs with it unset)."""
    args = sys.argv[1:]
    coretype = args[args.index("--coretype") + 1] if "--coretype" in args else None
    bench = next((a for i, a in enumerate(args) if not a.startswith("--") and (i == 0 or args[i - 1] != "--coretype")),
                 default_bench)
    return bench, dict(os.environ, **({"OPENBLAS_CORETYPE": coretype} if coretype else {}))


def median_seconds(fn, reps=5, min_seconds=0.3, warmup=3):
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        n, start = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        out.append(elapsed / n)
    return statistics.median(out)
