#!/usr/bin/python3
"""A tutorial-style PyTorch MMoE, as users write it in their own classes, and the fixtures of the
test that moe loads its state_dict (docs/model_files.md, "Your own PyTorch model").

    /usr/bin/python3 tools/make_tutorial_mmoe.py

writes tests/fixtures/tutorial_mmoe_<f32|f64>.safetensors (the module's plain state_dict, no moe
metadata, names such as experts.0.net.0.weight) and ..._io.safetensors (an input batch "x" and the
eval-mode predictions "pred.0" (click, sigmoid) and "pred.1" (watch time, ReLU)).
"""
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
import safetensors_io  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


class Expert(nn.Module):
    def __init__(self, input_dim, hidden_dim, output_dim):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.ReLU(), nn.BatchNorm1d(hidden_dim),
                                 nn.Linear(hidden_dim, output_dim), nn.ReLU())

    def forward(self, x):
        return self.net(x)


class Gate(nn.Module):
    def __init__(self, input_dim, num_experts):
        super().__init__()
        self.gate = nn.Sequential(nn.Linear(input_dim, num_experts), nn.Softmax(dim=1))

    def forward(self, x):
        return self.gate(x)


class TaskTower(nn.Module):
    def __init__(self, input_dim, hidden_dim, dropout=0.1):
        super().__init__()
        self.tower = nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.ReLU(), nn.BatchNorm1d(hidden_dim),
                                   nn.Dropout(dropout), nn.Linear(hidden_dim, 1))

    def forward(self, x):
        return self.tower(x)


class MMoE(nn.Module):
    """Experts Linear-ReLU-BatchNorm1d-Linear-ReLU, gates Linear+Softmax, towers
    Linear-ReLU-BatchNorm1d-Dropout-Linear; heads: sigmoid (click) and ReLU (watch time)."""

    def __init__(self, input_dim=12, num_experts=4, expert_hidden=16, expert_dim=8, tower_hidden=6):
        super().__init__()
        self.experts = nn.ModuleList([Expert(input_dim, expert_hidden, expert_dim) for _ in range(num_experts)])
        self.gates = nn.ModuleList([Gate(input_dim, num_experts) for _ in range(2)])
        self.towers = nn.ModuleList([TaskTower(expert_dim, tower_hidden) for _ in range(2)])

    def forward(self, x):
        expert_out = torch.stack([e(x) for e in self.experts], dim=1)  # (B, E, D)
        outs = []
        for gate, tower in zip(self.gates, self.towers):
            mixed = torch.bmm(gate(x).unsqueeze(1), expert_out).squeeze(1)  # (B, D)
            outs.append(tower(mixed))
        return outs  # logits of click, raw watch time

    @staticmethod
    def heads(outs):
        return [torch.sigmoid(outs[0]), torch.relu(outs[1])]


def main():
    for dtype, suffix in ((torch.float32, "f32"), (torch.float64, "f64")):
        torch.manual_seed(7)
        model = MMoE().to(dtype).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        x = torch.randn(64, 12, dtype=dtype)
        click = (x[:, :1] + x[:, 1:2] > 0).to(dtype)
        watch = torch.relu(x[:, 2:3]) * 3
        for _ in range(20):  # train a little: BatchNorm statistics and every weight move
            opt.zero_grad()
            out = model(x)
            loss = nn.functional.binary_cross_entropy_with_logits(out[0], click) + \
                nn.functional.mse_loss(torch.relu(out[1]), watch)
            loss.backward()
            opt.step()
        model.eval()
        base = os.path.join(FIXTURES, f"tutorial_mmoe_{suffix}")
        safetensors_io.save(base + ".safetensors", model.state_dict())
        xt = torch.randn(9, 12, dtype=dtype)
        with torch.no_grad():
            preds = MMoE.heads(model(xt))
        safetensors_io.save(base + "_io.safetensors", {"x": xt, "pred.0": preds[0], "pred.1": preds[1]})
    print("wrote the tutorial MMoE fixtures to", FIXTURES)


if __name__ == "__main__":
    main()
