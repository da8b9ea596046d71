#!/usr/bin/python3
"""Side-by-side speed of moe's MoE Transformer layer and PyTorch's, in one run.

    /usr/bin/python3 tools/compare_transformer_pytorch.py [path/to/bench_transformer] [--coretype NAME]

--coretype sets OPENBLAS_CORETYPE for moe's rows (a bench-blas build; e.g. SkylakeX, whose products
bench_common.hpp checks against Eigen before any row runs); PyTorch runs with it unset.

Needs Debian's python3-torch on libopenblas0-openmp (scripts/test installs libopenblas-openmp-dev,
which brings it; with a serial BLAS PyTorch's 2-thread rows do not scale) and a bench build of moe (scripts/bench, or cmake --preset bench &&
cmake --build --preset bench). PyTorch is put at its best as in compare_pytorch.py (OPENBLAS_CORETYPE
unset, malloc keeping freed memory, torch.set_num_threads per row, AdamW foreach, set_to_none).

Rows (float32, medians of 5):
  moe_transformer_train: one pre-norm layer, d 256, 4 heads, causal, 8 GELU experts of 512 top-2
      renormalised, Switch balance loss 0.01; batch 16 x 128 tokens; forward, backward, AdamW step.
      PyTorch runs moe_transformer_torch.Layer's modules with the experts dispatched sparsely (each
      expert on its routed tokens: index, run, index_add_, as Hugging Face's Mixtral block does).
  attention_train: MultiheadAttention alone, 1 sequence of 1024 tokens, causal, forward + backward;
      time, and the peak resident memory of forward + backward above what the process held before
      (bench_transformer's peak_MiB counter; the same measure for PyTorch), each in a fresh process
      that runs only the attention, with glibc's malloc as it comes. Debian's PyTorch 1.13 has no public scaled_dot_product_attention (2.0
      added it): nn.MultiheadAttention, which materialises the S x S weights, is what it offers.
Prints markdown tables.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from torch_at_best import bench_and_env, median_seconds, reexec_at_best  # noqa: E402

reexec_at_best()

import torch  # noqa: E402
from torch import nn  # noqa: E402

import moe_transformer_torch  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
BENCH, MOE_ENV = bench_and_env(os.path.join(ROOT, "build", "bench", "benchmarks", "bench_transformer"))
CFG = dict(dim=256, heads=4, ffn=512, experts=8, k=2, causal=True, renormalize=True, router_bias=False)
BATCH, SEQ, ATT_SEQ = 16, 128, 1024
REPS = 5


class SparseDispatchMoE(nn.Module):
    """moe_torch.SparseMoE's parameters and function, each expert run on its routed tokens only."""

    def __init__(self, reference):
        super().__init__()
        self.router, self.experts, self.k = reference.router, reference.experts, reference.cfg["k"]
        self.aux = None

    def forward(self, x):
        probs = torch.softmax(self.router(x), dim=1)
        w, idx = torch.topk(probs, self.k, dim=1)
        w = w / w.sum(dim=1, keepdim=True)
        y = torch.zeros_like(x)
        counts = torch.zeros(len(self.experts))
        for e, expert in enumerate(self.experts):
            tok, rank = (idx == e).nonzero(as_tuple=True)
            counts[e] = tok.numel()
            if tok.numel():
                y.index_add_(0, tok, w[tok, rank].unsqueeze(1) * expert(x[tok]))
        # Switch balance loss as moe's: E * sum_e (share of assignments) * (mean probability).
        self.aux = len(self.experts) * (counts / counts.sum() * probs.mean(dim=0)).sum()
        return y


def torch_train_step_seconds(threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    layer = moe_transformer_torch.Layer(CFG)
    layer.ffn = SparseDispatchMoE(layer.ffn)
    opt = torch.optim.AdamW(layer.parameters(), lr=1e-3, weight_decay=0.01, foreach=True)
    x = torch.randn(BATCH, SEQ, CFG["dim"])
    dy = torch.randn(BATCH, SEQ, CFG["dim"])

    def step():
        opt.zero_grad(set_to_none=True)
        y = layer(x)
        ((y * dy).sum() + 0.01 * layer.ffn.aux).backward()
        opt.step()
    return median_seconds(step, reps=REPS)


def torch_attention(threads, iterations=None):
    torch.set_num_threads(threads)
    attn = nn.MultiheadAttention(CFG["dim"], CFG["heads"], batch_first=True)
    x = torch.randn(1, ATT_SEQ, CFG["dim"], requires_grad=True)
    dy = torch.randn(1, ATT_SEQ, CFG["dim"])
    mask = torch.triu(torch.ones(ATT_SEQ, ATT_SEQ, dtype=torch.bool), diagonal=1)

    def step():
        attn.zero_grad(set_to_none=True)
        y, _ = attn(x, x, x, attn_mask=mask, need_weights=False)
        y.backward(dy)
    if iterations:
        for _ in range(iterations):
            step()
        return None
    return median_seconds(step, reps=REPS)


def peak_mib(fn):
    """The peak resident memory (MiB) of fn() above the resident size before it (Linux: the
    high-water mark reset through /proc/self/clear_refs, as bench_common.hpp's PeakMemory)."""
    def status(key):
        with open("/proc/self/status") as f:
            return next(float(line.split()[1]) for line in f if line.startswith(key))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    start = status("VmRSS:")
    fn()
    return (status("VmHWM:") - start) / 1024.0


def moe_rows():
    out = subprocess.run([BENCH, f"--benchmark_repetitions={REPS}", "--benchmark_report_aggregates_only=true",
                          "--benchmark_format=json"], check=True, capture_output=True, text=True,
                         env=dict(MOE_ENV, MOE_BENCH_THREADS="1,2")).stdout
    data = json.loads(out[out.index("{"):])
    return {b["run_name"]: b["real_time"] / 1e3 for b in data["benchmarks"] if b.get("aggregate_name") == "median"}


def main():
    if "--attention-memory" in sys.argv:  # a fresh process: the peak of PyTorch's attention steps
        print(peak_mib(lambda: torch_attention(1, iterations=3)))
        return
    ours = moe_rows()
    print("| row | threads | moe ms | PyTorch ms | moe / PyTorch speed |\n|---|---:|---:|---:|---:|")
    for threads in (1, 2):
        name = f"moe_transformer_train/batch:{BATCH}/seq:{SEQ}/threads:{threads}/real_time"
        t = torch_train_step_seconds(threads)
        print(f"| layer train step (16 x 128 tokens) | {threads} | {ours[name] * 1e3:.1f} | {t * 1e3:.1f} | {t / ours[name]:.2f}x |")
    for threads in (1, 2):
        name = f"attention_train/batch:1/seq:{ATT_SEQ}/threads:{threads}/real_time"
        t = torch_attention(threads)
        print(f"| attention fwd+bwd, 1 x {ATT_SEQ} | {threads} | {ours[name] * 1e3:.1f} | {t * 1e3:.1f} | {t / ours[name]:.2f}x |")
    # Peak memory in fresh processes that run only the attention, glibc's malloc as it comes.
    def plain_malloc(environment):
        return {k: v for k, v in environment.items() if not k.startswith("MALLOC_")}
    row = f"attention_train/batch:1/seq:{ATT_SEQ}/threads:1"
    out = subprocess.run([BENCH, f"--benchmark_filter=^{row}/", "--benchmark_format=json"], check=True, capture_output=True,
                         text=True, env=dict(plain_malloc(MOE_ENV), MOE_BENCH_THREADS="1")).stdout
    moe_peak = json.loads(out[out.index("{"):])["benchmarks"][0]["peak_MiB"]
    torch_peak = float(subprocess.run([sys.executable, __file__, "--attention-memory"], check=True, capture_output=True, text=True,
                                      env=dict(plain_malloc(os.environ), MOE_COMPARE_CHILD="1")).stdout)
    print(f"\nattention at sequence {ATT_SEQ} (1 thread), peak resident memory of forward + backward above the inputs: "
          f"moe {moe_peak:.1f} MiB, PyTorch (nn.MultiheadAttention) {torch_peak:.1f} MiB")


if __name__ == "__main__":
    main()
