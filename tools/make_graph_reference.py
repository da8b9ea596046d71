"""Makes the PyTorch reference cases of moe's YAML model graphs (include/moe/graph/).

Writes tests/fixtures/graph/reference_{f64,f32}.safetensors. Run with Debian's python3-torch and
python3-yaml:
    /usr/bin/python3 tools/make_graph_reference.py
The C++ suite reads the committed files and does not need torch.

Each case is a graph of tests/fixtures/graph/ built by tools/graph_torch.py (the reference
interpreter) with seeded random parameters (BatchNorm's running statistics too), run on a batch of
16 with random labels:
  mmoe:   mmoe_corrected.yaml, training mode
  matmul: ops_matmul.yaml, training mode
  einsum: ops_einsum.yaml, training mode (BatchNorm on [B, C, L] with batch statistics)
  norms:  ops_norms.yaml, evaluation mode (BatchNorm's running statistics; its dropout needs masks
          PyTorch cannot share)
  blocks: blocks_mmoe.yaml (moe.MMoE, torch.select, moe.MLP), evaluation mode for the same reason
  blocks_ple: blocks_ple.yaml (moe.PLE of two levels with BatchNorm, towers), training mode
The loss is moe's MultiTaskLoss with default weights (graph_torch.GraphModule.loss); after its
backward, one torch.optim.Adam step (lr 0.01).
Names: param.<case>.<name> (the state_dict, buffers included), <case>.x (16, in), <case>.labels
(16, tasks), <case>.out.<k> (output k), <case>.loss (1,), <case>.dx, <case>.grad.<name>,
<case>.after.<name>; the metadata holds each case's file and mode. The mmoe case after its step,
in evaluation mode, is also saved by graph_torch.save_moe_file as mmoe_torch_{f64,f32}.safetensors
(a model file PyTorch wrote), with its predictions of the case's x as mmoe.predict.<k>.
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import graph_torch  # noqa: E402
import safetensors_io  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "graph")
CASES = (("mmoe", "mmoe_corrected.yaml", "train"), ("matmul", "ops_matmul.yaml", "train"),
         ("einsum", "ops_einsum.yaml", "train"), ("norms", "ops_norms.yaml", "eval"),
         ("blocks", "blocks_mmoe.yaml", "eval"), ("blocks_ple", "blocks_ple.yaml", "train"))
BATCH = 16


def labels_for(model, generator, dtype):
    cols = []
    for _, _, kind, _ in model.outputs:
        if kind == "binary":
            cols.append(torch.randint(0, 2, (BATCH,), generator=generator).to(dtype))
        elif kind == "multiclass":
            cols.append(torch.randint(0, 3, (BATCH,), generator=generator).to(dtype))
        else:
            cols.append(torch.randn(BATCH, generator=generator, dtype=dtype))
    return torch.stack(cols, dim=1)


def case(dtype):
    t = {}
    meta = {"format": "graph-case-v1", "torch": torch.__version__}
    for name, file, mode in CASES:
        g = torch.Generator().manual_seed(23)
        with open(os.path.join(FIXTURES, file)) as f:
            model = graph_torch.GraphModule(f.read()).to(dtype)
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=dtype))
            for n, b in model.named_buffers():
                if n.endswith("running_mean"):
                    b.copy_(0.3 * torch.randn(b.shape, generator=g, dtype=dtype))
                elif n.endswith("running_var"):
                    b.copy_(0.5 + torch.rand(b.shape, generator=g, dtype=dtype))
        for n, v in model.state_dict().items():
            t[f"param.{name}.{n}"] = v.detach().clone()
        model.train(mode == "train")
        x = torch.randn(BATCH, model.in_features(), generator=g, dtype=dtype, requires_grad=True)
        labels = labels_for(model, g, dtype)
        outputs = model(x)
        loss, _ = model.loss(outputs, labels)
        loss.backward()
        t[f"{name}.x"] = x.detach().clone()
        t[f"{name}.labels"] = labels
        for k, z in enumerate(outputs):
            t[f"{name}.out.{k}"] = z.detach().reshape(BATCH, -1).clone()
        t[f"{name}.loss"] = loss.detach().reshape(1)
        t[f"{name}.dx"] = x.grad.detach().clone()
        for n, p in model.named_parameters():
            t[f"{name}.grad.{n}"] = p.grad.detach().clone()
        torch.optim.Adam(model.parameters(), lr=0.01).step()
        for n, p in model.named_parameters():
            t[f"{name}.after.{n}"] = p.detach().clone()
        meta[f"case.{name}"] = json.dumps({"file": file, "mode": mode})
        if name == "mmoe":
            # A model file written by PyTorch (graph_torch.save_moe_file) and its predictions.
            model.eval()
            with torch.no_grad():
                for k, p in enumerate(model.predict(x.detach())):
                    t[f"mmoe.predict.{k}"] = p.reshape(BATCH, -1).clone()
            suffix = "f64" if dtype == torch.float64 else "f32"
            graph_torch.save_moe_file(model, os.path.join(FIXTURES, f"mmoe_torch_{suffix}.safetensors"), "mmoe_corrected.yaml")
    suffix = "f64" if dtype == torch.float64 else "f32"
    path = os.path.join(FIXTURES, f"reference_{suffix}.safetensors")
    safetensors_io.save(path, t, meta)
    print("wrote", os.path.normpath(path))


if __name__ == "__main__":
    case(torch.float64)
    case(torch.float32)
