"""The PyTorch reference of moe's MoETransformerLayer and MoETransformer (models/moe_transformer*.hpp),
with the same state_dict names, so that each side loads the other's files.

    Layer:        norm1.*, attn.* (nn.MultiheadAttention), norm2.*, ffn.* (nn.Sequential(Linear, act,
                  Linear) as ffn.0/ffn.2, a SwiGLU as ffn.w1/w2/w3, or moe_torch.SparseMoE as
                  ffn.router.*, ffn.experts.{e}.*), shared.* (shared experts as one feed-forward)
    Transformer:  tok_emb.weight, pos_emb.weight, layers.{l}.*, norm.*, head.weight (unless tied)

cfg of a layer (the C++ MoETransformerLayerSpec's fields): dim, heads, causal, norm ("layer_norm" or
"rms_norm"), norm_eps, ffn, activation ("gelu" or "relu"), expert ("mlp" or "swiglu"), experts (0:
dense), k, routing ("top_k" or "expert_choice"), capacity_factor, renormalize, router_bias,
shared_experts. A Transformer's cfg adds vocab, max_positions, layers, tied_head. Evaluation
semantics of the MoE (moe_torch.SparseMoE: no noise, no top-k capacity); no attention dropout.
"""
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
import moe_torch  # noqa: E402


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight


def norm(cfg):
    if cfg.get("norm", "layer_norm") == "rms_norm":
        return RMSNorm(cfg["dim"], cfg.get("norm_eps", 1e-5))
    return nn.LayerNorm(cfg["dim"], eps=cfg.get("norm_eps", 1e-5))


def feed_forward(cfg, width):
    if cfg.get("expert", "mlp") == "swiglu":
        return moe_torch.SwiGLU(cfg["dim"], width)
    act = nn.GELU if cfg.get("activation", "gelu") == "gelu" else nn.ReLU
    return nn.Sequential(nn.Linear(cfg["dim"], width), act(), nn.Linear(width, cfg["dim"]))


class Layer(nn.Module):
    """h = x + attn(norm1(x)), y = h + ffn(norm2(h)) [+ shared(norm2(h))]; x: (B, S, d)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        shared = cfg.get("shared_experts", 0)
        # Registered first so that the state_dict lists it where the reference cases always had it.
        self.shared = feed_forward(cfg, cfg["ffn"] * shared) if shared else None
        self.norm1 = norm(cfg)
        self.attn = nn.MultiheadAttention(cfg["dim"], cfg["heads"], batch_first=True)
        self.norm2 = norm(cfg)
        if cfg.get("experts", 0):
            self.ffn = moe_torch.SparseMoE(dict(dim=cfg["dim"], ffn=cfg["ffn"], experts=cfg["experts"], k=cfg.get("k", 2),
                                                activation=cfg.get("activation", "gelu"), expert=cfg.get("expert", "mlp"),
                                                routing=cfg.get("routing", "top_k"),
                                                capacity_factor=cfg.get("capacity_factor", 0.0),
                                                renormalize=cfg.get("renormalize", True), noisy=False,
                                                router_bias=cfg.get("router_bias", False)))
        else:
            self.ffn = feed_forward(cfg, cfg["ffn"])

    def forward(self, x, pad=None):
        b, s, d = x.shape
        mask = torch.triu(torch.ones(s, s, dtype=torch.bool), diagonal=1) if self.cfg.get("causal", True) else None
        n1 = self.norm1(x)
        a, _ = self.attn(n1, n1, n1, attn_mask=mask, key_padding_mask=pad, need_weights=False)
        h = x + a
        n = self.norm2(h).reshape(b * s, d)
        f = self.ffn(n) + (self.shared(n) if self.shared is not None else 0)
        return h + f.reshape(b, s, d)


class Transformer(nn.Module):
    """tokens (B, S) int64 -> logits (B, S, vocab)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        lc = cfg["layer"]
        self.tok_emb = nn.Embedding(cfg["vocab"], lc["dim"])
        self.pos_emb = nn.Embedding(cfg["max_positions"], lc["dim"])
        self.layers = nn.ModuleList(Layer(lc) for _ in range(cfg["layers"]))
        self.norm = norm(lc)
        self.head = None if cfg.get("tied_head", False) else nn.Linear(lc["dim"], cfg["vocab"], bias=False)

    def forward(self, tokens):
        s = tokens.shape[1]
        h = self.tok_emb(tokens) + self.pos_emb(torch.arange(s))
        for layer in self.layers:
            h = layer(h)
        z = self.norm(h)
        return z @ self.tok_emb.weight.T if self.head is None else self.head(z)


def config_from_moe(config):
    """A Transformer cfg from a moe model file's config (the C++ MoETransformerSpec as JSON)."""
    layer = dict(config["layer"])
    moe = layer.pop("moe")
    layer.update(k=moe["k"], routing=moe["routing"], capacity_factor=moe["capacity_factor"],
                 renormalize=moe["renormalize"], router_bias=moe["router_bias"])
    if moe["noisy"]:
        raise ValueError("a noisy router's noise.weight has no place in this evaluation-only reference")
    return dict(vocab=config["vocab"], max_positions=config["max_positions"], layers=config["layers"],
                tied_head=config["tied_head"], layer=layer)


def load_moe_file(path):
    """The Transformer of a moe model file (moe::save of a Model<MoETransformer<T>>), in eval mode."""
    import json
    import safetensors_io
    tensors, metadata = safetensors_io.load(path)
    if metadata.get("kind") != "moe_transformer":
        raise ValueError(f"{path}: holds a '{metadata.get('kind')}' model, not a moe_transformer")
    lm = Transformer(config_from_moe(json.loads(metadata["config"])))
    lm = lm.to(torch.float32 if metadata["dtype"] == "float32" else torch.float64)
    lm.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("optimizer.")})
    return lm.eval()


if __name__ == "__main__":
    # python3 tools/moe_transformer_torch.py MODEL.safetensors TOKEN... : the next-token logits of the
    # sequence, one line per position (compare with the C++ model's forward).
    model = load_moe_file(sys.argv[1])
    ids = torch.tensor([[int(t) for t in sys.argv[2:]]])
    with torch.no_grad():
        for row in model(ids)[0]:
            print(" ".join(f"{v:.6f}" for v in row.tolist()))
