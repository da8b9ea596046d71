"""PyTorch modules with the structure and state_dict names of moe's C++ models.

    MMoE / OMoE:   experts.{e}.{i}.*   gates.{t}.* (gate.* for OMoE; gates.{t}.{i}.* with hidden layers)
                   towers.{t}.{i}.*
    SharedBottom:  bottom.{i}.*        towers.{t}.{i}.*

Every MLP is an nn.Sequential: per hidden layer Linear, activation, [BatchNorm1d], [Dropout]; then the
last Linear and, for experts and the bottom, the activation again (expert_output_activation).
A regression task with relu_output applies ReLU to its tower's output; the loss sees that value.
"""
import torch
from torch import nn


def mlp(sizes, batchnorm=False, dropout=0.0, output_activation=False):
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        last = i + 2 == len(sizes)
        if not last or output_activation:
            layers.append(nn.ReLU())
        if not last and batchnorm:
            layers.append(nn.BatchNorm1d(sizes[i + 1]))
        if not last and dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def task_outputs(task):
    return task.get("classes", 0) if task["kind"] == "ce" else 1


def make_towers(cfg, in_dim):
    return nn.ModuleList(
        mlp([in_dim] + list(cfg["tower_hidden"]) + [task_outputs(t)], cfg.get("batchnorm", False),
            cfg.get("tower_dropout", 0.0))
        for t in cfg["tasks"])


def run_towers(towers, tasks, inputs):
    outs = []
    for task, tower, x in zip(tasks, towers, inputs):
        y = tower(x)
        outs.append(torch.relu(y) if task.get("relu_output", False) else y)
    return outs


class MMoE(nn.Module):
    """cfg: input_dim, experts, expert_hidden (list), expert_dim, gate_hidden (list), tower_hidden (list),
    tasks, batchnorm, shared_gate (OMoE)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        sizes = [cfg["input_dim"]] + list(cfg["expert_hidden"]) + [cfg["expert_dim"]]
        self.experts = nn.ModuleList(
            mlp(sizes, cfg.get("batchnorm", False), cfg.get("expert_dropout", 0.0), True) for _ in range(cfg["experts"]))
        n_gates = 1 if cfg.get("shared_gate", False) else len(cfg["tasks"])
        gh = list(cfg.get("gate_hidden", []))

        def gate():
            return nn.Linear(cfg["input_dim"], cfg["experts"]) if not gh else mlp([cfg["input_dim"]] + gh + [cfg["experts"]])
        if cfg.get("shared_gate", False):
            self.gate = gate()
        else:
            self.gates = nn.ModuleList(gate() for _ in range(n_gates))
        self.towers = make_towers(cfg, cfg["expert_dim"])

    def forward(self, x, acts=None):
        o = torch.stack([e(x) for e in self.experts], dim=1)  # (B, E, D)
        gates = [self.gate] if self.cfg.get("shared_gate", False) else list(self.gates)
        probs = [torch.softmax(g(x), dim=1) for g in gates]
        mixed = [torch.einsum("be,bed->bd", p, o) for p in probs]
        if acts is not None:
            acts["expert_out"] = o
            for t, p in enumerate(probs):
                acts[f"gate.{t}"] = p
            for t, m in enumerate(mixed):
                acts[f"mixed.{t}"] = m
        inputs = [mixed[0]] * len(self.cfg["tasks"]) if len(mixed) == 1 else mixed
        return run_towers(self.towers, self.cfg["tasks"], inputs)


class SharedBottom(nn.Module):
    """cfg: input_dim, bottom_hidden (list), bottom_dim, tower_hidden (list), tasks, batchnorm."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        sizes = [cfg["input_dim"]] + list(cfg["bottom_hidden"]) + [cfg["bottom_dim"]]
        self.bottom = mlp(sizes, cfg.get("batchnorm", False), cfg.get("bottom_dropout", 0.0), True)
        self.towers = make_towers(cfg, cfg["bottom_dim"])

    def forward(self, x, acts=None):
        h = self.bottom(x)
        return run_towers(self.towers, self.cfg["tasks"], [h] * len(self.cfg["tasks"]))


def task_loss(task, out, label, mask=None):
    """Mean loss over the counted samples (mask != 0), as moe::MultiTaskLoss with weight 1."""
    kind = task["kind"]
    if kind == "bin":
        per = nn.functional.binary_cross_entropy_with_logits(out, label, reduction="none").squeeze(1)
    elif kind == "mse":
        per = ((out - label) ** 2).squeeze(1)
    elif kind == "huber":
        per = nn.functional.huber_loss(out, label, reduction="none", delta=task["delta"]).squeeze(1)
    elif kind == "ce":
        per = nn.functional.cross_entropy(out, label.squeeze(1).long(), reduction="none")
    else:
        raise ValueError(kind)
    if mask is None:
        return per.mean()
    m = mask.squeeze(1)
    return (per * m).sum() / (m != 0).sum().clamp(min=1)
