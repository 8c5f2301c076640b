"""Finite memory: p(x_d | x_<d) = p(x_d | x_{d-k}, ..., x_{d-1}).

Two forms of the conditional:
- n_hidden = 0: a log-linear table, logits = sum_i W_i[x_{d-i}]. With k = 1 this is exactly
  the bigram table.
- n_hidden > 0: Bengio et al.'s neural probabilistic language model, an MLP over the
  concatenated embeddings of the last k symbols.
Positions before the start see a start symbol (index vocab_size).
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
)
from darm.models.registry import register_model
from darm.nn.dropout import Dropout


@dataclass
class MarkovConfig:
    vocab_size: int = 27
    seq_len: int = 16
    k: int = 3  # memory: how many previous symbols the conditional sees
    n_embd: int = 16  # embedding width per symbol (MLP form)
    n_hidden: int = 256  # 0: log-linear table (k=1: bigram)
    dropout: float = 0.0  # on the hidden units (MLP form), during training
    num_classes: int = 0  # > 0: class-conditional p(x | y)

    def __post_init__(self):
        require_at_least(self, 1, "k", "n_embd")
        require_at_least(self, 0, "n_hidden")
        if self.n_hidden == 0 and self.dropout > 0:  # a table has no hidden units to drop
            raise ValueError(
                "dropout needs the MLP form (n_hidden > 0); the log-linear table has none"
            )

    def check_new(self) -> None:
        """A new model's memory fits its examples: lag i of x_d is a start symbol wherever
        d <= i, so a lag past D never sees a symbol in training, only costs time and memory,
        and feeds its untrained weights into a sample longer than D. (Checked on new models
        only: a run saved with k > D still loads, and may go on in shorter blocks. The
        default k passes on any data, as pixelcnn's default kernels do on tiny pictures.)"""
        if self.k > max(self.seq_len, type(self).k):
            raise ValueError(
                f"k={self.k} is more than D={self.seq_len}, the symbols of an example: a "
                f"lag past D sees only the start symbol (set k to at most "
                f"{max(self.seq_len, type(self).k)}; the default {type(self).k} always passes)"
            )

    @staticmethod
    def from_saved(config: dict) -> dict:
        """A checkpoint's config: runs from before dropout was refused on the table saved it,
        though it never acted there; read as 0 so they still load."""
        if config.get("n_hidden", 256) == 0 and config.get("dropout", 0) > 0:
            return {**config, "dropout": 0.0}
        return config


class MarkovWindow:
    """Cache: the last k inputs. window: (B, k) long, oldest first."""

    def __init__(self, batch_size: int, k: int, start: int, device: torch.device):
        self.batch_size = batch_size
        self.start = start
        self.window = torch.full((batch_size, k), start, dtype=torch.long, device=device)
        self.t = 0

    def reset(self) -> None:
        self.window.fill_(self.start)
        self.t = 0


class Markov(ARModel):
    family = "markov"

    def __init__(self, config: MarkovConfig):
        super().__init__(config)
        L, k = config.vocab_size, config.k
        self.start = L  # the start symbol's index
        if config.n_hidden == 0:
            # one (L+1, L) table per lag, summed: a log-linear k-gram
            self.tables = nn.Embedding(k * (L + 1), L)
            self.label = condition_embedding(config.num_classes, L)
            # the entries are logits: start near uniform (Embedding's N(0, 1) starts a
            # 27-symbol bigram at 3.8 nats, above uniform's ln 27 = 3.30, and small learning
            # rates take thousands of steps to come back)
            nn.init.normal_(self.tables.weight, std=0.02)
            if self.label is not None:
                nn.init.normal_(self.label.embedding.weight, std=0.02)
        else:
            self.wte = nn.Embedding(L + 1, config.n_embd)
            self.hidden = nn.Linear(k * config.n_embd, config.n_hidden)
            self.head = nn.Linear(config.n_hidden, L)
            self.drop = Dropout(config.dropout)
            self.label = condition_embedding(config.num_classes, config.n_hidden)

    def _logits(self, context: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """context: (B, T, k) symbols, oldest first (or (B, T, k, L+1) one-hot/soft)
        -> logits (B, T, L)."""
        B, T, k = context.shape[:3]
        c = condition_vector(self.label, cond, B)
        if self.config.n_hidden == 0:
            if context.is_floating_point():  # lag i owns rows i*(L+1) .. i*(L+1)+L
                logits = context.reshape(B, T, -1) @ self.tables.weight  # (B, T, L)
            else:
                lag_offset = torch.arange(k, device=context.device) * (self.vocab_size + 1)
                logits = self.tables(context + lag_offset).sum(dim=2)  # (B, T, L)
            return logits if c is None else logits + c[:, None, :]
        emb = embed(self.wte, context).view(B, T, k * self.config.n_embd)  # (B, T, k*e)
        h = self.hidden(emb)
        if c is not None:
            h = h + c[:, None, :]
        return self.head(self.drop(torch.tanh(h)))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        k = self.config.k
        # pad with k start symbols; window d holds x_{d-k}..x_{d-1}
        padded = pad_start(x, k, self.start)  # (B, D+k) or (B, D+k, L+1)
        context = padded.unfold(1, k, 1)[:, :-1]  # (B, D, k) or (B, D, L+1, k)
        if context.is_floating_point():
            context = context.transpose(2, 3)  # (B, D, k, L+1)
        return self._logits(context, cond)

    @property
    def max_dims(self) -> None:
        return None  # the window of k symbols slides on: no limit past D

    def init_cache(self, batch_size: int) -> MarkovWindow:
        return MarkovWindow(batch_size, self.config.k, self.start, self.device)

    def step(self, x_prev, cache: MarkovWindow, cond=None) -> torch.Tensor:
        check_step(x_prev, cache)
        if x_prev is not None:
            cache.window = torch.cat([cache.window[:, 1:], x_prev[:, None]], dim=1)
        cache.t += 1
        return self._logits(cache.window[:, None, :], cond)[:, 0]  # (B, L)

    def prefill(self, prefix, cache: MarkovWindow, cond=None) -> torch.Tensor:
        """The window after a prefix is just its last k symbols (start symbols before it)."""
        check_fresh(cache, prefix)
        k = self.config.k
        cache.window = pad_start(prefix, k, self.start)[:, -k:]  # (B, k), oldest first
        cache.t = prefix.shape[1] + 1
        return self._logits(cache.window[:, None, :], cond)[:, 0]  # (B, L)


register_model(
    "markov", Markov, MarkovConfig, "MLP over the embeddings of the last k symbols (Bengio 2003)"
)
register_model(
    "bigram",
    Markov,
    MarkovConfig,
    "bigram table: markov with k=1, n_hidden=0",
    fixed=("k", "n_hidden"),
    k=1,
    n_hidden=0,
)
