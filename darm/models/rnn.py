"""Recurrent: a hidden state carries the past, h_d = f(x_{d-1}, h_{d-1}).

The cell is PyTorch's own RNN / GRU / LSTM (fused kernels); the input at position d is the
embedding of x_{d-1} (a start symbol at d = 0), so the output at d depends on x_<d only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
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
from darm.nn.dropout import Dropout

CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


@dataclass
class RNNConfig:
    vocab_size: int = 27
    seq_len: int = 16
    cell: str = "gru"  # rnn | gru | lstm
    n_embd: int = 64
    n_hidden: int = 256
    n_layer: int = 1
    dropout: float = 0.0  # on the inputs, between layers and on the outputs
    num_classes: int = 0

    def __post_init__(self):
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        require_at_least(self, 1, "n_embd", "n_hidden", "n_layer")


class RNNState:
    """Cache: the hidden state, (n_layer, B, n_hidden) (a pair (h, c) for an LSTM)."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self.h = None  # None = zeros, as in the full forward pass
        self.t = 0

    def reset(self) -> None:
        self.h = None
        self.t = 0


class RNN(ARModel):
    family = "rnn"

    def __init__(self, config: RNNConfig):
        super().__init__(config)
        self.start = config.vocab_size
        self.wte = nn.Embedding(config.vocab_size + 1, config.n_embd)
        self.label = condition_embedding(config.num_classes, config.n_embd)
        self.rnn = CELLS[config.cell](
            config.n_embd,
            config.n_hidden,
            num_layers=config.n_layer,
            batch_first=True,
            dropout=config.dropout if config.n_layer > 1 else 0.0,
        )
        self.drop = Dropout(config.dropout)
        self.head = nn.Linear(config.n_hidden, config.vocab_size)

    def _embed(self, inputs: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        emb = embed(self.wte, inputs)  # (B, T, n_embd)
        c = condition_vector(self.label, cond, inputs.shape[0])
        return self.drop(emb if c is None else emb + c[:, None, :])

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        out, _ = self.rnn(self._embed(shift_right(x, self.start), cond))  # (B, D, n_hidden)
        return self.head(self.drop(out))

    @property
    def max_dims(self) -> None:
        return None  # the hidden state carries on: no limit past D

    def init_cache(self, batch_size: int) -> RNNState:
        return RNNState(batch_size)

    def step(self, x_prev, cache: RNNState, cond=None) -> torch.Tensor:
        check_step(x_prev, cache)
        if x_prev is None:
            x_prev = self.start_symbols(cache.batch_size)
        out, cache.h = self.rnn(self._embed(x_prev[:, None], cond), cache.h)  # (B, 1, H)
        cache.t += 1
        return self.head(self.drop(out[:, 0]))

    def prefill(self, prefix, cache: RNNState, cond=None) -> torch.Tensor:
        """One fused RNN pass over [start, prefix]; its final state is the cache."""
        check_fresh(cache, prefix)
        inputs = pad_start(prefix, 1, self.start)  # (B, P+1): x_{d-1} at position d
        out, cache.h = self.rnn(self._embed(inputs, cond))  # (B, P+1, H)
        cache.t = inputs.shape[1]
        return self.head(self.drop(out[:, -1]))


register_model("rnn", RNN, RNNConfig, "recurrent network; cell=rnn|gru|lstm", cell="rnn")
register_model(
    "gru", RNN, RNNConfig, "recurrent network with a GRU cell", fixed=("cell",), cell="gru"
)
register_model(
    "lstm", RNN, RNNConfig, "recurrent network with an LSTM cell", fixed=("cell",), cell="lstm"
)
