#!/usr/bin/python3
"""Model files shared between PyTorch and moe (docs/model_files.md), with Debian's python3-torch.

    /usr/bin/python3 tools/export_pytorch.py fixtures
        trains a few steps of each model kind in PyTorch (tools/moe_torch.py), exports it with
        export(), and writes tests/fixtures/torch_<kind>_<f32|f64>.safetensors (the model file) and
        ..._io.safetensors (an input batch "x" and the eval-mode predictions "pred.<t>").
    /usr/bin/python3 tools/export_pytorch.py check MODEL_FILE IO_FILE
        loads a model file written by moe::save into the PyTorch module (import_()) and checks its
        predictions on IO_FILE's "x" against IO_FILE's "pred.<t>" (float64 1e-9, float32 2e-4).
        Exit status 0 when they match.
    /usr/bin/python3 tools/export_pytorch.py convert STATE_DICT KIND CONFIG_JSON OUT [--rename P=R ...]
        turns the state_dict of one's own PyTorch module (a safetensors file, or a dict saved with
        torch.save) into a moe model file: names rewritten by the rename rules in order (regex P,
        replacement R with $1 for a group: the syntax of moe::LoadOptions::renames), CONFIG_JSON the
        moe spec (a file or inline JSON; absent fields take the C++ spec's defaults) in the metadata.

export(model, kind, cfg, path, renames=()) and import_(path, renames=()) are the API: the file is a
safetensors file of the module's state_dict (BatchNorm buffers included) with the moe config as
JSON in __metadata__; renames are (pattern, replacement) pairs applied to the state_dict names on
the way out (export) or in (import_).
"""
import json
import os
import re
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import moe_torch  # noqa: E402
import safetensors_io  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")

# moe_torch's task kinds <-> moe's TaskSpec.
_TO_MOE = {"bin": "binary", "mse": "regression", "ce": "multiclass"}
_FROM_MOE = {v: k for k, v in _TO_MOE.items()}


def moe_config(kind, cfg):
    """The moe spec JSON (include/moe/io/model_file.hpp) of a moe_torch cfg."""
    if kind == "sparse_moe":
        return dict(cfg, capacity_factor=0.0, dropped="zero", balance_coef=0.0, importance_coef=0.0, load_coef=0.0,
                    z_coef=0.0, noise_seed=0)
    tasks = [dict(name=t.get("name", f"task{i}"), kind=_TO_MOE[t["kind"]], classes=t.get("classes", 0),
                  relu_output=t.get("relu_output", False)) for i, t in enumerate(cfg["tasks"])]
    common = dict(input=cfg["input_dim"], tower_hidden=list(cfg["tower_hidden"]), tasks=tasks, activation="relu",
                  batchnorm=cfg.get("batchnorm", False), tower_dropout=cfg.get("tower_dropout", 0.0),
                  surfaces=cfg.get("surfaces", 1))
    if kind in ("mmoe", "omoe"):
        return dict(common, experts=cfg["experts"], expert_hidden=list(cfg["expert_hidden"]), expert_dim=cfg["expert_dim"],
                    gate_hidden=list(cfg.get("gate_hidden", [])), expert_dropout=cfg.get("expert_dropout", 0.0),
                    expert_output_activation=True, shared_gate=kind == "omoe", gate=cfg.get("gate", "softmax"),
                    dselect_k=cfg.get("dselect_k", 2), dselect_gamma=cfg.get("dselect_gamma", 1.0),
                    dselect_entropy=cfg.get("dselect_entropy", 0.0))
    if kind == "shared_bottom":
        return dict(common, bottom_hidden=list(cfg["bottom_hidden"]), bottom_dim=cfg["bottom_dim"],
                    bottom_dropout=cfg.get("bottom_dropout", 0.0), bottom_output_activation=True)
    if kind in ("ple", "cgc"):
        return dict(common, levels=[dict(l) for l in cfg["levels"]], expert_dropout=cfg.get("expert_dropout", 0.0),
                    expert_output_activation=True)
    if kind == "sparse_mmoe":
        return dict(moe_config("mmoe", cfg), k=cfg["k"], renormalize=cfg["renormalize"])
    raise ValueError(f"no PyTorch module for kind '{kind}'")


def torch_config(kind, c):
    """The moe_torch cfg of a moe spec JSON."""
    if kind == "sparse_moe":
        if c["capacity_factor"] != 0:
            raise ValueError("tools/moe_torch.py's SparseMoE has no capacity")
        return {k: c[k] for k in ("dim", "ffn", "experts", "k", "activation", "renormalize", "noisy", "router_bias")}
    if c["activation"] != "relu":
        raise ValueError("tools/moe_torch.py builds ReLU models only")
    tasks = [dict(name=t["name"], kind=_FROM_MOE[t["kind"]], classes=t["classes"], relu_output=t["relu_output"])
             for t in c["tasks"]]
    cfg = dict(input_dim=c["input"], tower_hidden=c["tower_hidden"], tasks=tasks, batchnorm=c["batchnorm"],
               tower_dropout=c["tower_dropout"], surfaces=c.get("surfaces", 1))
    if kind in ("mmoe", "omoe", "sparse_mmoe"):
        cfg.update(experts=c["experts"], expert_hidden=c["expert_hidden"], expert_dim=c["expert_dim"],
                   gate_hidden=c["gate_hidden"], expert_dropout=c["expert_dropout"], shared_gate=c["shared_gate"],
                   gate=c.get("gate", "softmax"), dselect_k=c.get("dselect_k", 2),
                   dselect_gamma=c.get("dselect_gamma", 1.0), dselect_entropy=c.get("dselect_entropy", 0.0))
        if kind == "sparse_mmoe":
            cfg.update(k=c["k"], renormalize=c["renormalize"])
    elif kind == "shared_bottom":
        cfg.update(bottom_hidden=c["bottom_hidden"], bottom_dim=c["bottom_dim"], bottom_dropout=c["bottom_dropout"])
    else:
        cfg.update(levels=c["levels"], expert_dropout=c["expert_dropout"])
    return cfg


def build(kind, cfg):
    if kind == "sparse_moe":
        return moe_torch.SparseMoE(cfg)
    if kind == "sparse_mmoe":
        return moe_torch.SparseMMoE(dict(cfg, shared_gate=False))
    if kind in ("mmoe", "omoe"):
        return moe_torch.MMoE(dict(cfg, shared_gate=kind == "omoe"))
    if kind == "shared_bottom":
        return moe_torch.SharedBottom(cfg)
    return moe_torch.PLE(cfg)


def rename(names_to_tensors, renames):
    """Applies ordered (pattern, replacement) rules to every name, as moe::LoadOptions::renames does
    ($1 in a replacement is group 1). Two names that become one are an error."""
    rules = [(re.compile(p), re.sub(r"\$(\d+)", r"\\g<\1>", r)) for p, r in renames]
    out, origin = {}, {}
    for name, t in names_to_tensors.items():
        new = name
        for pattern, repl in rules:
            new = pattern.sub(repl, new)
        if new in out:
            raise ValueError(f"the rename rules turn both '{origin[new]}' and '{name}' into '{new}'")
        out[new], origin[new] = t, name
    return out


def write_model_file(path, state, kind, config, dtype):
    meta = {"format": "moe-model", "version": "1", "kind": kind,
            "dtype": "float64" if dtype == torch.float64 else "float32", "config": json.dumps(config)}
    safetensors_io.save(path, state, meta)


def export(model, kind, cfg, path, renames=()):
    """Writes model (a tools/moe_torch.py module) as a moe model file."""
    state = rename({n: t.detach().clone() for n, t in model.state_dict().items()}, renames)
    write_model_file(path, state, kind, moe_config(kind, cfg), next(iter(model.parameters())).dtype)


def convert(state_path, kind, config, out_path, renames=()):
    """One's own module's state_dict (safetensors or torch.save) -> a moe model file."""
    if state_path.endswith(".safetensors"):
        state, _ = safetensors_io.load(state_path)
    else:
        state = torch.load(state_path, map_location="cpu")
    state = rename(state, renames)
    floats = [t for t in state.values() if t.is_floating_point()]
    if not floats:
        raise ValueError(f"{state_path}: no floating-point tensors")
    write_model_file(out_path, state, kind, config, floats[0].dtype)


def import_(path, renames=()):
    """The PyTorch module of a moe model file, in eval mode."""
    tensors, meta = safetensors_io.load(path)
    tensors = rename(tensors, renames)
    if meta.get("format") != "moe-model" or meta.get("version") != "1":
        raise ValueError(f"{path}: not a version 1 moe model file")
    kind = meta["kind"]
    model = build(kind, torch_config(kind, json.loads(meta["config"])))
    dtype = torch.float64 if meta["dtype"] == "float64" else torch.float32
    model = model.to(dtype)
    state = {n: t for n, t in tensors.items() if not n.startswith("optimizer.")}
    model.load_state_dict(state, strict=True)
    return model.eval(), kind


def predictions(model, x, surfaces=None):
    """Predictions after the heads; a tower-tree model (cfg "surfaces" > 1) needs each sample's surface."""
    with torch.no_grad():
        outs = model(x) if isinstance(model, moe_torch.SparseMoE) else model(x, surfaces=surfaces)
    if isinstance(model, moe_torch.SparseMoE):
        return [outs]
    preds = []
    for task, out in zip(model.cfg["tasks"], outs):
        if task["kind"] == "bin":
            preds.append(torch.sigmoid(out))
        elif task["kind"] == "ce":
            preds.append(torch.softmax(out, dim=1))
        else:
            preds.append(out)
    return preds


CASES = {
    "mmoe": dict(input_dim=6, experts=3, expert_hidden=[8], expert_dim=5, gate_hidden=[], tower_hidden=[4],
                 batchnorm=True, tasks=[dict(kind="bin", name="click"), dict(kind="mse", name="watch", relu_output=True),
                                        dict(kind="ce", name="rating", classes=3)]),
    "omoe": dict(input_dim=5, experts=2, expert_hidden=[6], expert_dim=4, gate_hidden=[], tower_hidden=[3],
                 batchnorm=False, tasks=[dict(kind="bin", name="a"), dict(kind="bin", name="b")]),
    "shared_bottom": dict(input_dim=5, bottom_hidden=[7], bottom_dim=6, tower_hidden=[3], batchnorm=True,
                          tasks=[dict(kind="bin", name="a"), dict(kind="mse", name="b")]),
    "ple": dict(input_dim=6, tower_hidden=[4], batchnorm=True,
                levels=[dict(shared_experts=2, task_experts=1, expert_hidden=[7], expert_dim=5),
                        dict(shared_experts=1, task_experts=2, expert_hidden=[], expert_dim=4)],
                tasks=[dict(kind="bin", name="income"), dict(kind="bin", name="marital")]),
    "sparse_mmoe": dict(input_dim=6, experts=4, expert_hidden=[7], expert_dim=5, gate_hidden=[], tower_hidden=[3],
                        batchnorm=False, k=2, renormalize=True,
                        tasks=[dict(kind="bin", name="click"), dict(kind="mse", name="watch")]),
    "sparse_moe": dict(dim=6, ffn=10, experts=4, k=2, activation="gelu", renormalize=False, noisy=True, router_bias=True),
    "cgc": dict(input_dim=5, tower_hidden=[3], batchnorm=False,
                levels=[dict(shared_experts=2, task_experts=1, expert_hidden=[6], expert_dim=4)],
                tasks=[dict(kind="bin", name="a"), dict(kind="ce", name="b", classes=3)]),
}


def make_fixtures():
    for i, (kind, cfg) in enumerate(CASES.items()):
        for dtype in (torch.float64, torch.float32):
            torch.manual_seed(200 + i)
            model = build(kind, cfg).to(dtype).train()
            opt = torch.optim.Adam(model.parameters(), lr=1e-2)
            n_in = cfg["dim"] if kind == "sparse_moe" else cfg["input_dim"]
            x = torch.randn(32, n_in, dtype=dtype)
            labels = []
            for t in cfg.get("tasks", [dict(kind="layer")]):
                if t["kind"] == "layer":
                    labels.append(torch.randn(32, n_in, dtype=dtype))
                    continue
                if t["kind"] == "ce":
                    labels.append(torch.randint(0, t["classes"], (32, 1)).to(dtype))
                elif t["kind"] == "bin":
                    labels.append(torch.randint(0, 2, (32, 1)).to(dtype))
                else:
                    labels.append(torch.rand(32, 1, dtype=dtype))
            for _ in range(5):  # a few steps: every parameter and BatchNorm statistic moves
                opt.zero_grad()
                if kind == "sparse_moe":
                    loss = ((model(x) - labels[0]) ** 2).mean()
                else:
                    loss = sum(moe_torch.task_loss(t, o, y) for t, o, y in zip(cfg["tasks"], model(x), labels))
                loss.backward()
                opt.step()
            model.eval()
            suffix = "f64" if dtype == torch.float64 else "f32"
            base = os.path.join(FIXTURES, f"torch_{kind}_{suffix}")
            export(model, kind, cfg, base + ".safetensors")
            xt = torch.randn(7, n_in, dtype=dtype)
            io = {"x": xt}
            for k, p in enumerate(predictions(model, xt)):
                io[f"pred.{k}"] = p
            safetensors_io.save(base + "_io.safetensors", io)
            # And the file reads back into PyTorch with the same predictions.
            back, _ = import_(base + ".safetensors")
            for a, b in zip(predictions(back, xt), predictions(model, xt)):
                assert torch.equal(a, b)
    print("wrote", 2 * len(CASES), "PyTorch-exported model files to", FIXTURES)


def check(model_path, io_path):
    model, kind = import_(model_path)
    io, _ = safetensors_io.load(io_path)
    x = io["x"]
    tol = 1e-9 if x.dtype == torch.float64 else 2e-4
    worst = 0.0
    for k, p in enumerate(predictions(model, x)):
        ref = io[f"pred.{k}"]
        worst = max(worst, ((p - ref).abs() / ref.abs().clamp(min=1)).max().item())
    ok = worst <= tol
    print(f"{model_path}: {kind} in PyTorch, largest relative difference {worst:.3g} (tolerance {tol:g}): "
          f"{'ok' if ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "fixtures":
        make_fixtures()
    elif len(sys.argv) == 4 and sys.argv[1] == "check":
        sys.exit(check(sys.argv[2], sys.argv[3]))
    elif len(sys.argv) >= 6 and sys.argv[1] == "convert":
        rules, rest = [], sys.argv[6:]
        while rest:
            if rest[0] != "--rename" or len(rest) < 2 or "=" not in rest[1]:
                print(__doc__)
                sys.exit(2)
            rules.append(tuple(rest[1].split("=", 1)))
            rest = rest[2:]
        cfg_arg = sys.argv[4]
        cfg = json.load(open(cfg_arg)) if os.path.exists(cfg_arg) else json.loads(cfg_arg)
        convert(sys.argv[2], sys.argv[3], cfg, sys.argv[5], rules)
        print(f"wrote {sys.argv[5]}")
    else:
        print(__doc__)
        sys.exit(2)
