"""The reference interpreter of moe's YAML model graphs (include/moe/graph/): builds the same graph
as a torch.nn.Module, so that PyTorch and moe can be compared on any graph, and a model trained by
one can be served by the other.

    import graph_torch
    model = graph_torch.GraphModule(yaml_text)       # nodes with parameters are submodules
    outputs = model(x)                               # x: (B, in_features), the inputs' columns in order
    model.load_state_dict(...)                       # "<node>.weight", as moe names them

    model = graph_torch.load_moe_file("model.safetensors")   # a file of moe::save (the YAML is in it)
    graph_torch.save_moe_file(model, "model.safetensors")    # a file moe::load reads

Command line: `python3 tools/graph_torch.py model.safetensors data.csv` prints the predictions of
the first rows of a CSV whose header names the graph's input columns.

Needs Debian's python3-torch and python3-yaml; tools/safetensors_io.py reads and writes the files.
"""
import json
import math
import os
import sys

import torch
import yaml

sys.path.insert(0, os.path.dirname(__file__))
import moe_torch  # noqa: E402
import safetensors_io  # noqa: E402

ACTIVATIONS = {"relu": torch.nn.ReLU, "gelu": torch.nn.GELU, "sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh,
               "identity": torch.nn.Identity}


def block_mlp(sizes, activation="relu", batchnorm=False, dropout=0.0, output_activation=False):
    """moe's MLP as nn.Sequential: Linear, activation (after the last Linear too with
    output_activation), BatchNorm1d and Dropout after each hidden layer; moe's module indices."""
    layers = []
    for i in range(len(sizes) - 1):
        last = i + 2 == len(sizes)
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if not last or output_activation:
            layers.append(ACTIVATIONS[activation]())
        if not last and batchnorm:
            layers.append(torch.nn.BatchNorm1d(sizes[i + 1]))
        if not last and dropout > 0:
            layers.append(torch.nn.Dropout(dropout))
    return torch.nn.Sequential(*layers)


class MMoEMixture(torch.nn.Module):
    """moe.MMoE: experts and softmax gates, output (B, gates, expert_dim) of gated sums."""

    def __init__(self, in_features, p):
        super().__init__()
        act = p.get("activation", "relu")
        sizes = [in_features] + list(p.get("expert_hidden", [])) + [p["expert_dim"]]
        self.experts = torch.nn.ModuleList(
            block_mlp(sizes, act, p.get("batchnorm", False), p.get("expert_dropout", 0.0), p.get("expert_output_activation", True))
            for _ in range(p["experts"]))
        gh = list(p.get("gate_hidden", []))
        self.gates = torch.nn.ModuleList(
            torch.nn.Linear(in_features, p["experts"]) if not gh else block_mlp([in_features] + gh + [p["experts"]], act)
            for _ in range(p["gates"]))

    def forward(self, x):
        o = torch.stack([e(x) for e in self.experts], dim=1)  # (B, E, D)
        return torch.stack([torch.einsum("be,bed->bd", torch.softmax(g(x), dim=1), o) for g in self.gates], dim=1)


class PLEStack(torch.nn.Module):
    """moe.PLE: `levels` extraction levels (moe_torch.PLELevel, ReLU experts), output (B, tasks, expert_dim)."""

    def __init__(self, in_features, p):
        super().__init__()
        if p.get("activation", "relu") != "relu" or not p.get("expert_output_activation", True):
            raise ValueError("graph_torch: moe.PLE supports ReLU experts with their output activation only")
        self.tasks = p["tasks"]
        level = {"task_experts": p.get("task_experts", 1), "shared_experts": p.get("shared_experts", 1),
                 "expert_hidden": list(p.get("expert_hidden", [])), "expert_dim": p["expert_dim"]}
        levels, in_dim, n = [], in_features, p.get("levels", 1)
        for i in range(n):
            levels.append(moe_torch.PLELevel(self.tasks, in_dim, level, i + 1 == n, p.get("batchnorm", False),
                                             p.get("expert_dropout", 0.0)))
            in_dim = p["expert_dim"]
        self.levels = torch.nn.ModuleList(levels)

    def forward(self, x):
        reps = [x] * (self.tasks + 1)
        for level in self.levels:
            reps = level(reps)
        return torch.stack(reps[:self.tasks], dim=1)


MODULES = {
    "torch.nn.Linear": lambda p: torch.nn.Linear(p["in_features"], p["out_features"], bias=p.get("bias", True)),
    "torch.nn.ReLU": lambda p: torch.nn.ReLU(),
    "torch.nn.GELU": lambda p: torch.nn.GELU(),
    "torch.nn.Sigmoid": lambda p: torch.nn.Sigmoid(),
    "torch.nn.Tanh": lambda p: torch.nn.Tanh(),
    "torch.nn.Dropout": lambda p: torch.nn.Dropout(p.get("p", 0.5)),
    "torch.nn.BatchNorm1d": lambda p: torch.nn.BatchNorm1d(p["num_features"], eps=p.get("eps", 1e-5),
                                                           momentum=p.get("momentum", 0.1)),
    "torch.nn.LayerNorm": lambda p: torch.nn.LayerNorm(p["normalized_shape"], eps=p.get("eps", 1e-5),
                                                       elementwise_affine=p.get("elementwise_affine", True)),
    "moe.MLP": lambda p: block_mlp(p["sizes"], p.get("activation", "relu"), p.get("batchnorm", False), p.get("dropout", 0.0),
                                   p.get("output_activation", False)),
}


def _dims(d):
    return tuple(d) if isinstance(d, list) else d


def _function(node_type, p):
    """The callable of a functional node type, taking the input tensors."""
    if node_type == "torch.nn.functional.softmax":
        return lambda x: torch.nn.functional.softmax(x, dim=p["dim"])
    if node_type == "torch.nn.functional.relu":
        return torch.nn.functional.relu
    if node_type == "torch.nn.functional.sigmoid":
        return torch.sigmoid
    if node_type == "torch.stack":
        return lambda *xs: torch.stack(xs, dim=p.get("dim", 0))
    if node_type == "torch.cat":
        return lambda *xs: torch.cat(xs, dim=p.get("dim", 0))
    if node_type == "torch.matmul":
        return torch.matmul
    if node_type == "torch.bmm":
        return torch.bmm
    if node_type == "torch.einsum":
        return lambda a, b: torch.einsum(p["equation"], a, b)
    if node_type == "torch.select":
        return lambda x: torch.select(x, p["dim"], p["index"])
    if node_type == "torch.unsqueeze":
        return lambda x: torch.unsqueeze(x, p["dim"])
    if node_type == "torch.squeeze":
        return (lambda x: torch.squeeze(x, p["dim"])) if "dim" in p else torch.squeeze
    if node_type == "torch.reshape":
        return lambda x: torch.reshape(x, tuple(p["shape"]))
    if node_type == "torch.transpose":
        return lambda x: torch.transpose(x, p["dim0"], p["dim1"])
    if node_type == "torch.sum":
        return lambda x: torch.sum(x, dim=_dims(p["dim"]), keepdim=p.get("keepdim", False))
    if node_type == "torch.mean":
        return lambda x: torch.mean(x, dim=_dims(p["dim"]), keepdim=p.get("keepdim", False))
    if node_type == "torch.add":
        if "other" in p:
            return lambda x: torch.add(x, p["other"], alpha=p.get("alpha", 1))
        return lambda a, b: torch.add(a, b, alpha=p.get("alpha", 1))
    if node_type == "torch.mul":
        if "other" in p:
            return lambda x: torch.mul(x, p["other"])
        return torch.mul
    raise ValueError(f"unknown node type {node_type}")


class GraphModule(torch.nn.Module):
    """The graph of a YAML text. Nodes run in file order; nodes of torch.nn types are submodules
    named as the nodes, so the state_dict has moe's names. forward(x) returns the outputs in the
    order of the outputs block (the logits or values the losses see)."""

    def __init__(self, text):
        super().__init__()
        self.text = text
        spec = yaml.safe_load(text)
        self.inputs = [(name, body["shape"][1:]) for name, body in spec["inputs"].items()]
        self.nodes = []
        widths = {name: body["shape"][1:] for name, body in spec["inputs"].items()}  # for moe.MMoE's input size
        for n in spec["graph"]:
            params = n.get("params") or {}
            ins = n["inputs"]
            if isinstance(ins, dict):
                refs = []
                for v in ins.values():
                    refs.extend(v if isinstance(v, list) else [v])
            elif isinstance(ins, list):
                refs = ins
            else:
                refs = [ins]
            if n["type"] in ("moe.MMoE", "moe.PLE"):
                source = refs[0][:-len(".output")] if refs[0].endswith(".output") else refs[0]
                block = MMoEMixture if n["type"] == "moe.MMoE" else PLEStack
                self.add_module(n["name"], block(widths[source][-1], params))
                fn = None
            elif n["type"] in MODULES:
                self.add_module(n["name"], MODULES[n["type"]](params))
                fn = None
            else:
                fn = _function(n["type"], params)
            self.nodes.append((n["name"], fn, [r[:-len(".output")] if r.endswith(".output") else r for r in refs]))
            widths[n["name"]] = self._width(n, params, widths, refs)
        self.outputs = []
        for name, value in spec["outputs"].items():
            if isinstance(value, dict):
                self.outputs.append((name, value["output"][:-len(".output")], value.get("task", "binary"),
                                     value.get("relu", False)))
            else:
                self.outputs.append((name, value[:-len(".output")], "binary", False))

    @staticmethod
    def _width(n, params, widths, refs):
        """The trailing dimensions of a node's output, as far as moe.MMoE's input needs them."""
        if n["type"] == "torch.nn.Linear":
            return [params["out_features"]]
        if n["type"] == "moe.MLP":
            return [params["sizes"][-1]]
        if n["type"] == "moe.MMoE":
            return [params["gates"], params["expert_dim"]]
        if n["type"] == "moe.PLE":
            return [params["tasks"], params["expert_dim"]]
        first = refs[0][:-len(".output")] if refs and refs[0].endswith(".output") else (refs[0] if refs else None)
        return widths.get(first, [None])

    def in_features(self):
        return sum(math.prod(s) for _, s in self.inputs)

    def forward(self, x):
        values = {}
        at = 0
        for name, shape in self.inputs:
            n = math.prod(shape)
            values[name] = x[:, at:at + n].reshape(x.shape[0], *shape)
            at += n
        for name, fn, refs in self.nodes:
            args = [values[r] for r in refs]
            values[name] = getattr(self, name)(*args) if fn is None else fn(*args)
        return [values[ref] for _, ref, _, _ in self.outputs]

    def predict(self, x):
        """The predictions after the task heads (sigmoid, softmax, ReLU'd regression), as moe's predict."""
        heads = []
        for z, (_, _, kind, relu) in zip(self(x), self.outputs):
            if kind == "binary":
                heads.append(torch.sigmoid(z))
            elif kind == "multiclass":
                heads.append(torch.softmax(z, dim=1))
            else:
                heads.append(torch.relu(z) if relu else z)
        return heads

    def loss(self, outputs, labels):
        """moe's MultiTaskLoss with default weights: the sum over tasks of BCE with logits (binary),
        MSE (regression) or cross-entropy (multiclass), each a mean over the batch. labels: (B, tasks)."""
        total = 0
        parts = []
        for t, (z, (_, _, kind, _)) in enumerate(zip(outputs, self.outputs)):
            y = labels[:, t]
            if kind == "binary":
                part = torch.nn.functional.binary_cross_entropy_with_logits(z.reshape(-1), y)
            elif kind == "multiclass":
                part = torch.nn.functional.cross_entropy(z, y.long())
            else:
                part = torch.mean((z.reshape(-1) - y) ** 2)
            parts.append(part)
            total = total + part
        return total, parts


def load_moe_file(path):
    """A GraphModule with the parameters and BatchNorm buffers of a file saved by moe::save."""
    tensors, meta = safetensors_io.load(path)
    if meta.get("kind") != "graph":
        raise ValueError(f"{path}: holds a '{meta.get('kind')}' model, not a graph")
    model = GraphModule(json.loads(meta["config"])["yaml"]).to(
        torch.float64 if meta.get("dtype") == "float64" else torch.float32)
    state = {k: v for k, v in tensors.items() if not k.startswith("optimizer.")}
    model.load_state_dict(state)
    return model.eval()


def save_moe_file(model, path, name="model.yaml"):
    """Writes model as a moe model file (moe::load<moe::graph::GraphModel<T>> reads it)."""
    dtype = next(model.parameters()).dtype
    meta = {"format": "moe-model", "version": "1", "kind": "graph",
            "dtype": "float64" if dtype == torch.float64 else "float32",
            "config": json.dumps({"yaml": model.text, "file": name})}
    safetensors_io.save(path, {k: v.detach().clone() for k, v in model.state_dict().items()}, meta)


def _main(argv):
    if len(argv) != 3:
        print(__doc__)
        return 2
    import csv
    model = load_moe_file(argv[1])
    with open(argv[2], newline="") as f:
        rows = list(csv.DictReader(f))[:5]
    spec = yaml.safe_load(model.text)
    columns = [c for body in spec["inputs"].values() for c in body.get("columns", [])]
    dtype = next(model.parameters()).dtype
    x = torch.tensor([[float(r[c]) for c in columns] for r in rows], dtype=dtype)
    with torch.no_grad():
        for (name, _, _, _), p in zip(model.outputs, model.predict(x)):
            print(name, " ".join(f"{v:.6f}" for v in p.reshape(len(rows), -1)[:, 0].tolist()))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
