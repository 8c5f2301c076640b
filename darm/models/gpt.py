"""GPT: a Transformer decoder with masked multi-head self-attention.

Pre-norm blocks (x + attn(ln(x)), x + mlp(ln(x))), learned positions, and the output head
tied to the token embedding. The input at position d is x_{d-1} (a start token at d = 0),
so the causal mask alone keeps logits[d] blind to x_>=d.

Generation: each block keeps a KVCache of its keys and values, so a step attends one new
query over the cache, and `prefill` runs a whole prompt in one parallel pass that fills it.
Positions are learned for 0..seq_len-1 only, so a model generates at most seq_len symbols
(prompt included): a longer request raises an error; the window is not slid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from darm.config import require_at_least
from darm.models.base import (
    ARModel,
    check_fresh,
    check_step,
    condition_embedding,
    condition_vector,
    embed,
    pad_start,
    shift_right,
)
from darm.models.registry import register_model
from darm.nn.attention import CausalSelfAttention, KVCache
from darm.nn.dropout import Dropout


@dataclass
class GPTConfig:
    vocab_size: int = 65
    seq_len: int = 64  # context length: the largest D the model can score
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False
    num_classes: int = 0

    def __post_init__(self):
        require_at_least(self, 1, "n_layer", "n_head", "n_embd")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")


class MLP(nn.Module):
    def __init__(self, n_embd: int, dropout: float, bias: bool):
        super().__init__()
        self.fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config.n_embd, config.n_head, config.dropout, config.bias)
        self.ln2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config.n_embd, config.dropout, config.bias)

    def forward(self, x, cache: KVCache | None = None):
        x = x + self.attn(self.ln1(x), cache)
        return x + self.mlp(self.ln2(x))


class GPTCache:
    """One KVCache per block, all at position t."""

    def __init__(self, batch_size: int, layers: list[KVCache]):
        self.batch_size = batch_size
        self.layers = layers
        self.t = 0

    def reset(self) -> None:
        for layer in self.layers:
            layer.reset()
        self.t = 0


class GPT(ARModel):
    family = "gpt"

    def __init__(self, config: GPTConfig):
        super().__init__(config)
        E = config.n_embd
        self.start = config.vocab_size
        self.wte = nn.Embedding(config.vocab_size + 1, E)  # + the start token
        self.wpe = nn.Embedding(config.seq_len, E)
        self.label = condition_embedding(config.num_classes, E)
        self.drop = Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(E, bias=config.bias)
        self.apply(self._init_weights)
        # GPT-2's scaled init of the projections into the residual stream
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def _run(self, inputs, t0, cond, caches, last_only=False):
        """inputs: (B, T) tokens (or (B, T, L+1) one-hot) at positions t0..t0+T-1 -> (B, T, L),
        or (B, 1, L) for the last position only (a prompt needs no other logits)."""
        # rows of the position table by slicing: no index tensor to build on every step
        h = embed(self.wte, inputs) + self.wpe.weight[t0 : t0 + inputs.shape[1]]  # (B, T, E)
        c = condition_vector(self.label, cond, inputs.shape[0])
        if c is not None:
            h = h + c[:, None, :]
        h = self.drop(h)
        for i, block in enumerate(self.blocks):
            h = block(h, None if caches is None else caches[i])
        if last_only:
            h = h[:, -1:]  # (B, 1, E)
        # tied head: the embedding rows of the L real symbols (not the start token)
        return F.linear(self.ln_f(h), self.wte.weight[: self.vocab_size])

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        T = x.shape[1]
        if T > self.config.seq_len:
            raise ValueError(f"sequence of length {T} exceeds the context {self.config.seq_len}")
        return self._run(shift_right(x, self.start), 0, cond, None)

    def init_cache(self, batch_size: int) -> GPTCache:
        cfg, p = self.config, self.wte.weight
        hs = cfg.n_embd // cfg.n_head
        layers = [
            KVCache(batch_size, cfg.n_head, cfg.seq_len, hs, p.device, p.dtype)
            for _ in range(cfg.n_layer)
        ]
        return GPTCache(batch_size, layers)

    def _check_context(self, t: int) -> None:
        if t > self.config.seq_len:
            raise ValueError(
                f"gpt generates at most seq_len={self.config.seq_len} symbols (its context, "
                f"prompt included); position {t - 1} is past it and the window is not slid"
            )

    def prefill(self, prefix, cache: GPTCache, cond=None) -> torch.Tensor:
        """One parallel pass over [start, prefix] at positions 0..P fills every KVCache."""
        check_fresh(cache, prefix)
        P = prefix.shape[1]
        self._check_context(P + 1)
        inputs = pad_start(prefix, 1, self.start)  # (B, P+1): x_{d-1} at position d
        logits = self._run(inputs, 0, cond, cache.layers, last_only=True)  # (B, 1, L)
        cache.t = P + 1
        return logits[:, 0]

    def step(self, x_prev, cache: GPTCache, cond=None) -> torch.Tensor:
        self._check_context(cache.t + 1)
        check_step(x_prev, cache)
        if x_prev is None:
            x_prev = self.start_symbols(cache.batch_size)
        logits = self._run(x_prev[:, None], cache.t, cond, cache.layers)  # (B, 1, L)
        cache.t += 1
        return logits[:, 0]


register_model("gpt", GPT, GPTConfig, "Transformer decoder, masked multi-head self-attention")
