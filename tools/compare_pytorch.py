#!/usr/bin/python3
"""Side-by-side speed of moe and PyTorch on the MMoE benchmark config, in one run.

    /usr/bin/python3 tools/compare_pytorch.py [path/to/bench_mmoe] [--coretype NAME]

Needs Debian's python3-torch and libopenblas0-openmp (PyTorch's BLAS), and a bench build of moe
(scripts/bench, or cmake --preset bench && cmake --build --preset bench). PyTorch is put at its
best: OPENBLAS_CORETYPE unset (the environment's Haswell setting halves OpenBLAS), glibc's malloc
told to keep freed memory (no page faults per step), torch.set_num_threads per row, eager mode
with the faster per row of two forms: a ModuleList of nn.Sequential experts, and the experts'
weights stacked for one matmul / bmm per layer (StackedMMoE); Adam foreach, set_to_none.
Config: input 64, 8 experts 64 -> 256 -> 128, towers 128 -> 64 -> 1, tasks binary, binary, regression;
and the BatchNorm model of bench_mmoe's mmoe_bn_* rows (CFG_BN), PyTorch as a ModuleList.
Prints a markdown table of samples/s (training) and milliseconds (predict), medians of 5.
"""
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from torch_at_best import bench_and_env, median_seconds, reexec_at_best  # noqa: E402

reexec_at_best()

import torch  # noqa: E402

import moe_torch  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
BENCH, MOE_ENV = bench_and_env(os.path.join(ROOT, "build", "bench", "benchmarks", "bench_mmoe"))
CFG = dict(input_dim=64, experts=8, expert_hidden=[256], expert_dim=128, gate_hidden=[], tower_hidden=[64],
           batchnorm=False, tasks=[dict(kind="bin"), dict(kind="bin"), dict(kind="mse")])
REPS = 5
# The model users write (bench_mmoe's mmoe_bn_*): 6 experts with BatchNorm, towers with BatchNorm and
# dropout 0.1, five tasks, the last a regression with a ReLU head. PyTorch runs it as a ModuleList.
CFG_BN = dict(input_dim=64, experts=6, expert_hidden=[256], expert_dim=128, gate_hidden=[], tower_hidden=[64],
              batchnorm=True, tower_dropout=0.1,
              tasks=[dict(kind="bin")] * 4 + [dict(kind="mse", relu_output=True)])


def timed(fn):
    return median_seconds(fn, reps=REPS)


class StackedMMoE(torch.nn.Module):
    """The same model with the experts' weights stacked: the first layers of all experts as one
    matmul, the second as one bmm, all gates as one matmul, the towers as bmm: the fastest eager
    form we found (it beats a ModuleList of nn.Sequential at every batch size here)."""

    def __init__(self, cfg):
        super().__init__()
        e, i, h, d, th, t = cfg["experts"], cfg["input_dim"], cfg["expert_hidden"][0], cfg["expert_dim"], \
            cfg["tower_hidden"][0], len(cfg["tasks"])
        self.e, self.h, self.d, self.t = e, h, d, t

        def p(*shape, fan_in):
            return torch.nn.Parameter(torch.empty(*shape).uniform_(-fan_in ** -0.5, fan_in ** -0.5))
        self.w1, self.b1 = p(i, e * h, fan_in=i), p(e * h, fan_in=i)
        self.w2, self.b2 = p(e, h, d, fan_in=h), p(e, 1, d, fan_in=h)
        self.wg, self.bg = p(i, t * e, fan_in=i), p(t * e, fan_in=i)
        self.wt1, self.bt1 = p(t, d, th, fan_in=d), p(t, 1, th, fan_in=d)
        self.wt2, self.bt2 = p(t, th, 1, fan_in=th), p(t, 1, 1, fan_in=th)

    def forward(self, x):
        b = x.shape[0]
        h1 = torch.relu(torch.addmm(self.b1, x, self.w1)).view(b, self.e, self.h).transpose(0, 1)  # (E, B, h)
        o = torch.relu(torch.baddbmm(self.b2, h1, self.w2))  # (E, B, D)
        g = torch.softmax(torch.addmm(self.bg, x, self.wg).view(b, self.t, self.e), dim=2)  # (B, T, E)
        m = torch.einsum("bte,ebd->tbd", g, o)  # (T, B, D)
        z = torch.relu(torch.baddbmm(self.bt1, m, self.wt1))
        out = torch.baddbmm(self.bt2, z, self.wt2)  # (T, B, 1)
        return [out[k] for k in range(self.t)]


def make_model(kind):
    return moe_torch.MMoE(CFG) if kind == "modulelist" else StackedMMoE(CFG)


def torch_train(batch, threads, kind):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = make_model(kind).float().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)
    x = torch.randn(batch, 64)
    y = [torch.randint(0, 2, (batch, 1)).float(), torch.randint(0, 2, (batch, 1)).float(), torch.rand(batch, 1)]
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(x)
        loss = bce(out[0], y[0]) + bce(out[1], y[1]) + torch.nn.functional.mse_loss(out[2], y[2])
        loss.backward()
        opt.step()
    return batch / timed(step)


def torch_predict(batch, threads, kind):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = make_model(kind).float().eval()
    x = torch.randn(batch, 64)

    def run():
        with torch.inference_mode():
            out = model(x)
            return [torch.sigmoid(out[0]), torch.sigmoid(out[1]), out[2]]
    return timed(run)


def torch_bn_train(batch, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = moe_torch.MMoE(CFG_BN).float().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)
    x = torch.randn(batch, 64)
    y = [torch.randint(0, 2, (batch, 1)).float() for _ in range(4)] + [torch.rand(batch, 1)]
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(x)
        loss = sum(bce(out[t], y[t]) for t in range(4)) + torch.nn.functional.mse_loss(out[4], y[4])
        loss.backward()
        opt.step()
    return batch / timed(step)


def torch_bn_predict(batch, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = moe_torch.MMoE(CFG_BN).float().eval()
    x = torch.randn(batch, 64)

    def run():
        with torch.inference_mode():
            out = model(x)
            return [torch.sigmoid(o) for o in out[:4]] + [out[4]]
    return timed(run)


BACKENDS_SEEN = set()


def moe_results():
    out = subprocess.run([BENCH, "--benchmark_filter=mmoe", f"--benchmark_repetitions={REPS}",
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
            name = b["run_name"].replace("/real_time", "")
            res[name] = b
    return res


def main():
    if not os.path.exists(BENCH):
        sys.exit(f"{BENCH} not found: build it with scripts/bench (or cmake --preset bench && cmake --build --preset bench)")
    print(f"torch {torch.__version__}, BLAS threads follow torch.set_num_threads; moe: {BENCH}")
    rows = []
    ours = moe_results()  # moe first, then PyTorch, then moe again: both see the same machine state
    for batch in (32, 256, 2048):
        for threads in (1, 2):
            v = {k: torch_train(batch, threads, k) for k in ("modulelist", "stacked")}
            best = max(v, key=v.get)
            rows.append(("train", batch, threads, v[best], best))
    for batch in (32, 300, 2048):
        for threads in (1, 2):
            v = {k: torch_predict(batch, threads, k) for k in ("modulelist", "stacked")}
            best = min(v, key=v.get)
            rows.append(("infer", batch, threads, v[best], best))
    for batch in (32, 256, 2048):
        for threads in (1, 2):
            rows.append(("bn_train", batch, threads, torch_bn_train(batch, threads), "modulelist"))
    for threads in (1, 2):
        rows.append(("bn_infer", 300, threads, torch_bn_predict(300, threads), "modulelist"))
    again = moe_results()
    print("\n| benchmark | PyTorch (its best form) | moe | moe / PyTorch |")
    print("|---|---:|---:|---:|")
    for kind, batch, threads, value, form in rows:
        name = f"mmoe_{kind}/batch:{batch}/threads:{threads}"
        runs = [r[name] for r in (ours, again)]
        if kind.endswith("train"):
            mine = statistics.median([r["items_per_second"] for r in runs])
            print(f"| {name} | {value:,.0f} samples/s ({form}) | {mine:,.0f} samples/s | {mine / value:.2f}x |")
        else:
            mine = statistics.median([r["real_time"] * 1e-9 if r["time_unit"] == "ns" else r["real_time"] * 1e-6
                                      for r in runs])
            print(f"| {name} | {value * 1e3:.3f} ms ({form}) | {mine * 1e3:.3f} ms | {value / mine:.2f}x |")


if __name__ == "__main__":
    main()
