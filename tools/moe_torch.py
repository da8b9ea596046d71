"""PyTorch modules with the structure and state_dict names of moe's C++ models.

    MMoE / OMoE:   experts.{e}.{i}.*   gates.{t}.* (gate.* for OMoE; gates.{t}.{i}.* with hidden layers;
                   gates.{t}.z.*, gates.{t}.w.* with DSelect-k gates)   towers.{t}.{i}.*
    SharedBottom:  bottom.{i}.*        towers.{t}.{i}.*
    SparseMMoE:    as MMoE (each task gate keeps its top k experts)
    SparseMoE:     router.weight, router.bias, noise.weight, experts.{e}.0.*, experts.{e}.2.*
    PLE / CGC:     levels.{l}.experts.{e}.{i}.*   levels.{l}.task_gates.{t}.*   levels.{l}.shared_gate.*
                   (all levels but the last)      towers.{t}.{i}.*
    Tower trees (cfg "surfaces" = S > 1, any model above): towers.{t}.{s}.{i}.*, forward(x, surfaces=ids)
                   Experts of a level: task 0's P, task 1's P, ..., then the S shared ones.
    FeatureModel:  any of the above with an input block: its names, and tables.<table>.weight
                   (rows x dim) for the embedding tables of the features (moe::FeatureModel).

Every MLP is an nn.Sequential: per hidden layer Linear, activation, [BatchNorm1d], [Dropout]; then the
last Linear and, for experts and the bottom, the activation again (expert_output_activation).
A regression task with relu_output applies ReLU to its tower's output; the loss sees that value.
"""
import math

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
    """One tower per task; with cfg["surfaces"] = S > 1 a tower tree: towers.{t}.{s} per task and surface."""
    def tower(t):
        return mlp([in_dim] + list(cfg["tower_hidden"]) + [task_outputs(t)], cfg.get("batchnorm", False),
                   cfg.get("tower_dropout", 0.0))
    surfaces = cfg.get("surfaces", 1)
    if surfaces > 1:
        return nn.ModuleList(nn.ModuleList(tower(t) for _ in range(surfaces)) for t in cfg["tasks"])
    return nn.ModuleList(tower(t) for t in cfg["tasks"])


def run_towers(towers, tasks, inputs, surfaces=None):
    """surfaces: (B,) long surface ids of a tower tree; each sample goes through its surface's towers
    only (BatchNorm in a tower sees the samples of its surface)."""
    outs = []
    for task, tower, x in zip(tasks, towers, inputs):
        if isinstance(tower, nn.ModuleList):
            y = x.new_zeros(x.shape[0], task_outputs(task))
            for s, t in enumerate(tower):
                idx = (surfaces == s).nonzero().squeeze(1)
                if len(idx):
                    y = y.index_copy(0, idx, t(x[idx]))
        else:
            y = tower(x)
        outs.append(torch.relu(y) if task.get("relu_output", False) else y)
    return outs


class DSelectKGate(nn.Module):
    """A DSelect-k gate (Hazimeh et al. 2021), per example: k single-expert selectors, each a product of
    smooth steps over the m = ceil(log2 E) bits of an expert's index (bit 0 the most significant),
    mixed by a softmax over the k selectors. Names: z.weight (k m x in), z.bias, w.weight (k x in),
    w.bias. regulariser(): entropy_coef * sum of the selectors' entropies (+ sum of 1 / sum r when E is
    not a power of two), averaged over the batch, as include/moe/models/dselect_k_gate.hpp."""

    def __init__(self, in_dim, experts, k, gamma=1.0, entropy_coef=0.0):
        super().__init__()
        self.e, self.k, self.gamma, self.entropy_coef = experts, k, gamma, entropy_coef
        self.m = max(1, (experts - 1).bit_length())
        self.z = nn.Linear(in_dim, k * self.m)
        self.w = nn.Linear(in_dim, k)
        codes = [[(e >> (self.m - 1 - j)) & 1 for j in range(self.m)] for e in range(experts)]
        self.register_buffer("codes", torch.tensor(codes, dtype=torch.bool), persistent=False)  # (E, m)
        self.last_r = None

    def smooth_step(self, t):
        g = self.gamma
        mid = -2 / g ** 3 * t ** 3 + 3 / (2 * g) * t + 0.5
        return torch.where(t <= -g / 2, torch.zeros_like(t), torch.where(t >= g / 2, torch.ones_like(t), mid))

    def forward(self, x):
        b = x.shape[0]
        s = self.smooth_step(self.z(x).view(b, self.k, 1, self.m))  # (B, k, 1, m)
        r = torch.where(self.codes.view(1, 1, self.e, self.m), s, 1 - s).prod(dim=3)  # (B, k, E)
        a = torch.softmax(self.w(x), dim=1).unsqueeze(2)  # (B, k, 1)
        self.last_r = r
        return (a * r).sum(dim=1)  # (B, E)

    def regulariser(self):
        r = self.last_r
        value = -self.entropy_coef * (r * torch.log(r + 1e-6)).sum()
        if 2 ** self.m != self.e:
            value = value + (1.0 / r.sum(dim=2)).sum()
        return value / r.shape[0]


class MMoE(nn.Module):
    """cfg: input_dim, experts, expert_hidden (list), expert_dim, gate_hidden (list), tower_hidden (list),
    tasks, batchnorm, shared_gate (OMoE), gate ("softmax" or "dselect_k", with dselect_k, dselect_gamma,
    dselect_entropy)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        sizes = [cfg["input_dim"]] + list(cfg["expert_hidden"]) + [cfg["expert_dim"]]
        self.experts = nn.ModuleList(
            mlp(sizes, cfg.get("batchnorm", False), cfg.get("expert_dropout", 0.0), True) for _ in range(cfg["experts"]))
        n_gates = 1 if cfg.get("shared_gate", False) else len(cfg["tasks"])
        gh = list(cfg.get("gate_hidden", []))

        self.dselect = cfg.get("gate", "softmax") == "dselect_k"

        def gate():
            if self.dselect:
                return DSelectKGate(cfg["input_dim"], cfg["experts"], cfg.get("dselect_k", 2), cfg.get("dselect_gamma", 1.0),
                                    cfg.get("dselect_entropy", 0.0))
            return nn.Linear(cfg["input_dim"], cfg["experts"]) if not gh else mlp([cfg["input_dim"]] + gh + [cfg["experts"]])
        if cfg.get("shared_gate", False):
            self.gate = gate()
        else:
            self.gates = nn.ModuleList(gate() for _ in range(n_gates))
        self.towers = make_towers(cfg, cfg["expert_dim"])

    def forward(self, x, acts=None, surfaces=None):
        o = torch.stack([e(x) for e in self.experts], dim=1)  # (B, E, D)
        gates = [self.gate] if self.cfg.get("shared_gate", False) else list(self.gates)
        probs = [g(x) if self.dselect else torch.softmax(g(x), dim=1) for g in gates]
        mixed = [torch.einsum("be,bed->bd", p, o) for p in probs]
        if acts is not None:
            acts["expert_out"] = o
            for t, p in enumerate(probs):
                acts[f"gate.{t}"] = p
            for t, m in enumerate(mixed):
                acts[f"mixed.{t}"] = m
        inputs = [mixed[0]] * len(self.cfg["tasks"]) if len(mixed) == 1 else mixed
        return run_towers(self.towers, self.cfg["tasks"], inputs, surfaces)

    def aux_loss(self):
        """The gates' regularisers of the last forward (DSelect-k; 0 for softmax gates)."""
        if not self.dselect:
            return 0.0
        gates = [self.gate] if self.cfg.get("shared_gate", False) else list(self.gates)
        return sum(g.regulariser() for g in gates)


class SharedBottom(nn.Module):
    """cfg: input_dim, bottom_hidden (list), bottom_dim, tower_hidden (list), tasks, batchnorm."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        sizes = [cfg["input_dim"]] + list(cfg["bottom_hidden"]) + [cfg["bottom_dim"]]
        self.bottom = mlp(sizes, cfg.get("batchnorm", False), cfg.get("bottom_dropout", 0.0), True)
        self.towers = make_towers(cfg, cfg["bottom_dim"])

    def forward(self, x, acts=None, surfaces=None):
        h = self.bottom(x)
        return run_towers(self.towers, self.cfg["tasks"], [h] * len(self.cfg["tasks"]), surfaces)


class PLELevel(nn.Module):
    """One extraction level: inputs are T task representations and a shared one (all x at level 0)."""

    def __init__(self, n_tasks, in_dim, level, last, batchnorm=False, dropout=0.0):
        super().__init__()
        self.t, self.p, self.s, self.last = n_tasks, level["task_experts"], level["shared_experts"], last
        sizes = [in_dim] + list(level["expert_hidden"]) + [level["expert_dim"]]
        self.experts = nn.ModuleList(mlp(sizes, batchnorm, dropout, True) for _ in range(n_tasks * self.p + self.s))
        self.task_gates = nn.ModuleList(nn.Linear(in_dim, self.p + self.s) for _ in range(n_tasks))
        if not last:
            self.shared_gate = nn.Linear(in_dim, n_tasks * self.p + self.s)

    def forward(self, inputs):
        T, P = self.t, self.p
        o = [e(inputs[i // P if i < T * P else T]) for i, e in enumerate(self.experts)]
        outs = []
        for t in range(T):
            sel = torch.stack(o[t * P:(t + 1) * P] + o[T * P:], dim=1)  # (B, P + S, D)
            outs.append(torch.einsum("be,bed->bd", torch.softmax(self.task_gates[t](inputs[t]), dim=1), sel))
        if not self.last:
            p = torch.softmax(self.shared_gate(inputs[T]), dim=1)
            outs.append(torch.einsum("be,bed->bd", p, torch.stack(o, dim=1)))
        return outs


class PLE(nn.Module):
    """cfg: input_dim, levels (list of dict shared_experts, task_experts, expert_hidden, expert_dim),
    tower_hidden (list), tasks, batchnorm. CGC is a PLE of one level."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        n, levels, in_dim = len(cfg["tasks"]), [], cfg["input_dim"]
        for i, level in enumerate(cfg["levels"]):
            levels.append(PLELevel(n, in_dim, level, i + 1 == len(cfg["levels"]), cfg.get("batchnorm", False),
                                   cfg.get("expert_dropout", 0.0)))
            in_dim = level["expert_dim"]
        self.levels = nn.ModuleList(levels)
        self.towers = make_towers(cfg, in_dim)

    def forward(self, x, acts=None, surfaces=None):
        reps = [x] * (len(self.cfg["tasks"]) + 1)
        for level in self.levels:
            reps = level(reps)
        return run_towers(self.towers, self.cfg["tasks"], reps, surfaces)


def top_k_weights(probs, k, renormalize):
    """probs (B, E) -> (B, E) with all but each row's k largest set to 0, renormalised or raw."""
    w, idx = torch.topk(probs, k, dim=1)
    if renormalize:
        w = w / w.sum(dim=1, keepdim=True)
    return torch.zeros_like(probs).scatter(1, idx, w)


class SparseMMoE(MMoE):
    """An MMoE whose task gates keep their top k experts. cfg: as MMoE plus k, renormalize."""

    def forward(self, x, acts=None, surfaces=None):
        o = torch.stack([e(x) for e in self.experts], dim=1)
        mixed = [torch.einsum("be,bed->bd", top_k_weights(torch.softmax(g(x), dim=1), self.cfg["k"],
                                                          self.cfg["renormalize"]), o) for g in self.gates]
        return run_towers(self.towers, self.cfg["tasks"], mixed, surfaces)


class SwiGLU(nn.Module):
    """Mixtral's expert: w2(silu(w1 x) * w3 x), no biases."""

    def __init__(self, dim, ffn):
        super().__init__()
        self.w1 = nn.Linear(dim, ffn, bias=False)
        self.w2 = nn.Linear(ffn, dim, bias=False)
        self.w3 = nn.Linear(dim, ffn, bias=False)

    def forward(self, x):
        return self.w2(nn.functional.silu(self.w1(x)) * self.w3(x))


class SparseMoE(nn.Module):
    """Token-level MoE in evaluation (no noise, no capacity for top-k). cfg: dim, ffn, experts, k,
    activation ("gelu" or "relu"), renormalize, noisy, router_bias, and optionally expert ("mlp" or
    "swiglu"), routing ("top_k" or "expert_choice" with capacity_factor: each expert takes its
    ceil(capacity_factor N / E) tokens of highest probability). x: (N, dim) -> (N, dim)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.router = nn.Linear(cfg["dim"], cfg["experts"], bias=cfg["router_bias"])
        if cfg["noisy"]:
            self.noise = nn.Linear(cfg["dim"], cfg["experts"], bias=False)
        if cfg.get("expert", "mlp") == "swiglu":
            self.experts = nn.ModuleList(SwiGLU(cfg["dim"], cfg["ffn"]) for _ in range(cfg["experts"]))
        else:
            act = nn.GELU if cfg["activation"] == "gelu" else nn.ReLU
            self.experts = nn.ModuleList(nn.Sequential(nn.Linear(cfg["dim"], cfg["ffn"]), act(), nn.Linear(cfg["ffn"], cfg["dim"]))
                                         for _ in range(cfg["experts"]))

    def forward(self, x):
        probs = torch.softmax(self.router(x), dim=1)
        if self.cfg.get("routing", "top_k") == "expert_choice":
            n, e = probs.shape
            c = min(n, max(1, math.ceil(self.cfg["capacity_factor"] * n / e)))
            y = torch.zeros_like(x)
            for i, expert in enumerate(self.experts):
                w, idx = torch.topk(probs[:, i], c)
                y = y.index_add(0, idx, w.unsqueeze(1) * expert(x[idx]))
            return y
        w = top_k_weights(probs, self.cfg["k"], self.cfg["renormalize"])
        return sum(w[:, e:e + 1] * expert(x) for e, expert in enumerate(self.experts))


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


class TargetAttention(nn.Module):
    """include/moe/layers/target_attention.hpp: DIN's attention of each target over its history.
    history (N, dim) with offsets (B + 1), target (B, dim) -> (B, dim); scores from an MLP over
    [h, t, h - t, h * t], unnormalised or softmax per sample; an empty history gives zeros."""

    def __init__(self, dim, hidden, softmax):
        super().__init__()
        self.softmax = softmax
        self.mlp = mlp([4 * dim] + list(hidden) + [1])

    def forward(self, history, offsets, target):
        lengths = offsets[1:] - offsets[:-1]
        sample = torch.repeat_interleave(torch.arange(target.shape[0]), lengths)
        t = target[sample]
        s = self.mlp(torch.cat([history, t, history - t, history * t], dim=1)).squeeze(1)
        if self.softmax:
            parts = [torch.softmax(s[offsets[b]:offsets[b + 1]], dim=0) for b in range(target.shape[0])]
            s = torch.cat(parts)
        return torch.zeros_like(target).index_add(0, sample, s[:, None] * history)


class FeatureModel(nn.Module):
    """A net (any module above) behind the input block of moe::FeatureModel. features is moe's
    FeatureSpec as JSON: dense, dense_mean, dense_std, tables [{name, rows, dim, padding_idx}], sparse
    [{name, table, pooling, max_length}]. The state_dict is the net's names plus tables.<table>.weight.
    forward(dense, sparse): dense (B, dense), sparse {feature: (ids, offsets with B + 1 entries,
    per-id weights or None)}. A table read by a max-pooled feature gets a dense gradient (PyTorch has
    no sparse gradient in max mode), every other table a sparse one."""

    def __init__(self, net, features):
        super().__init__()
        # Features pooled by target attention ("attention_target": the feature whose pooled vector
        # is the target): attention.<feature>.mlp.<i>.*; their padding ids are left out of the bag.
        self.attention = nn.Module()
        for name, child in net.named_children():  # the net's modules at the top: the net's names
            self.add_module(name, child)
        self.net = [net]  # a list: not a submodule (its parameters are already registered above)
        self.features = features
        max_tables = {f["table"] for f in features["sparse"] if f.get("pooling", "sum") == "max"}
        # A plain Module, not a ModuleDict: a table may be called "items" or "values".
        self.tables = nn.Module()
        for t in features["tables"]:
            self.tables.add_module(t["name"], nn.EmbeddingBag(t["rows"], t["dim"], mode="sum", padding_idx=t.get("padding_idx"),
                                                              sparse=t["name"] not in max_tables))
        dims = {t["name"]: t["dim"] for t in features["tables"]}
        for f in features["sparse"]:
            if f.get("attention_target"):
                self.attention.add_module(f["name"], TargetAttention(dims[f["table"]], f.get("attention_hidden", []),
                                                                     f.get("attention_softmax", False)))

    def embed(self, dense, sparse):
        parts = []
        if self.features.get("dense", 0) > 0:
            d = dense
            if self.features.get("dense_mean"):
                mean = torch.tensor(self.features["dense_mean"], dtype=d.dtype)
                std = torch.tensor(self.features["dense_std"], dtype=d.dtype)
                d = (d - mean) / std
            parts.append(d)
        pooled = {}
        for f in self.features["sparse"]:
            if f.get("attention_target"):
                continue
            table = self.tables._modules[f["table"]]
            ids, offsets, weights = sparse[f["name"]]
            pooled[f["name"]] = torch.nn.functional.embedding_bag(
                ids, table.weight, offsets, mode=f.get("pooling", "sum"), per_sample_weights=weights,
                include_last_offset=True, padding_idx=table.padding_idx, sparse=table.sparse)
        for f in self.features["sparse"]:
            if not f.get("attention_target"):
                continue
            table = self.tables._modules[f["table"]]
            ids, offsets, _ = sparse[f["name"]]
            keep = ids != table.padding_idx if table.padding_idx is not None else torch.ones_like(ids, dtype=torch.bool)
            sample = torch.repeat_interleave(torch.arange(len(offsets) - 1), offsets[1:] - offsets[:-1])
            kept = torch.zeros(len(offsets) - 1, dtype=torch.int64).index_add(0, sample, keep.to(torch.int64))
            new_offsets = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(kept, 0)])
            history = torch.nn.functional.embedding(ids[keep], table.weight, sparse=table.sparse)
            pooled[f["name"]] = self.attention._modules[f["name"]](history, new_offsets, pooled[f["attention_target"]])
        return torch.cat(parts + [pooled[f["name"]] for f in self.features["sparse"]], dim=1)

    def forward(self, dense, sparse):
        return self.net[0](self.embed(dense, sparse))

    def aux_loss(self):
        return self.net[0].aux_loss() if hasattr(self.net[0], "aux_loss") else 0.0
