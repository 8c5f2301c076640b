"""The one protocol every family obeys.

    logits = model(x, cond=None)      x: (B, *event_shape) long -> (B, *event_shape, L)

logits[..., d, :] is the distribution of x_d given x_<d only: the shift to the past happens
inside the model (a start symbol for sequences), so every family trains with the same
cross-entropy. Incremental generation goes through

    cache = model.init_cache(batch_size)
    logits_d = model.step(x_prev, cache, cond)      # x_prev: (B,) long, or None at d = 0

x may also be a float tensor (B, *event_shape, L) of one-hot (or soft) symbols: the input
embeddings then mix their rows with those weights, the logits are the same for one-hot x,
and they are differentiable in x (how `darm.deps` measures what each conditional uses).

A family with a real cache overrides both; the default here recomputes the prefix so far,
which is exact but O(t) per step (O(D) for images, recomputed whole), and is what
`sample(..., use_cache=False)` uses.

A known prefix (a prompt) enters the cache through

    logits_P = model.prefill(prefix, cache, cond)   # prefix: (B, P) long, cache fresh

which equals `step(None)` then `step(prefix[:, p])` for p < P, returns the logits of
position P and leaves the cache at t = P + 1. A family overrides it with one parallel pass.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class PrefixCache:
    """Fallback cache: the tokens seen so far. x: (B, D) long, t: how many are filled."""

    def __init__(self, batch_size: int, num_dims: int, device: torch.device):
        self.batch_size = batch_size
        self.x = torch.zeros(batch_size, num_dims, dtype=torch.long, device=device)
        self.t = 0

    def reset(self) -> None:
        self.x.zero_()
        self.t = 0


class ARModel(nn.Module):
    """Base class: holds the config and gives the recompute-the-prefix step."""

    family: str = ""
    # True: forward takes exactly D positions (a MADE-style masked MLP), so the fallback
    # step feeds it the prefix padded with zeros; False: a 1-D forward also takes a shorter
    # prefix (B, t), and the fallback step is O(t)
    fixed_length: bool = False

    def __init__(self, config: Any):
        super().__init__()
        self.config = config

    # -- shape of one example -------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (self.config.seq_len,)

    @property
    def num_dims(self) -> int:
        return math.prod(self.event_shape)

    @property
    def max_dims(self) -> int | None:
        """The longest sequence `sample` can draw: None where the cache carries on past D (a
        window, a recurrent state, conv queues); D by default (a gpt's learned positions, an
        image's raster)."""
        return self.num_dims

    @property
    def takes_prefixes(self) -> bool:
        """A 1-D model whose forward also takes a shorter prefix (B, t): the fallback step
        recomputes just the prefix so far, and the naive sampler may run past D."""
        return len(self.event_shape) == 1 and not self.fixed_length

    @property
    def num_classes(self) -> int:
        return getattr(self.config, "num_classes", 0)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    def start_symbols(self, batch_size: int) -> torch.Tensor:
        """(B,) the start symbol (index vocab_size): the input of the first position."""
        return torch.full((batch_size,), self.config.vocab_size, device=self.device)

    # -- incremental generation: exact fallback by recomputation ---------------------------

    def init_cache(self, batch_size: int) -> Any:
        """A fresh cache for `step` and `prefill` of batch_size sequences (here: the prefix
        so far, recomputed each step; a family overrides it with its own state). A cache
        serves the weights it was made with: some families copy (masked) weights into it,
        so after an optimiser step or a load, make a new one."""
        return PrefixCache(batch_size, self.num_dims, self.device)

    def step(self, x_prev: torch.Tensor | None, cache: Any, cond: torch.Tensor | None = None):
        """Logits (B, L) of the next dimension given everything fed so far."""
        check_step(x_prev, cache)
        if x_prev is not None:
            cache.x[:, cache.t - 1] = x_prev
        if cache.t >= cache.x.shape[1]:
            raise ValueError(f"step past the last of {cache.x.shape[1]} dimensions")
        if self.takes_prefixes:
            # causality: position t needs only x_<t, so recompute the prefix so far (O(t))
            logits = self(cache.x[:, : cache.t + 1], cond)  # (B, t+1, L)
        else:
            # Later entries are zeros, which causality makes irrelevant to position t.
            x = cache.x.view(-1, *self.event_shape)  # (B, *event_shape)
            logits = self(x, cond).reshape(x.shape[0], self.num_dims, -1)  # (B, D, L)
        cache.t += 1
        return logits[:, cache.t - 1]

    def prefill(self, prefix: torch.Tensor, cache: Any, cond: torch.Tensor | None = None):
        """Feed a known prefix (B, P) long, P >= 0, into a fresh cache; -> logits (B, L) of
        position P, cache at t = P + 1. Default: one step per symbol."""
        check_fresh(cache, prefix)
        return prefill_by_steps(self.step, prefix, cache, cond)


def check_inputs(model: ARModel, x: torch.Tensor | None, cond: torch.Tensor | None, what="x"):
    """Symbols in 0..L-1 and labels in 0..num_classes-1, refused with a ValueError that names
    the value, where an embedding lookup would raise an IndexError that names nothing.
    (For the public entry points, and evaluation on the host before a batch moves to the
    device; the training loop reads data checked once as it was loaded.)"""
    for t, name, size in ((x, what, model.vocab_size), (cond, "label", model.num_classes)):
        if t is None or not t.numel() or t.is_floating_point() or not size:
            continue  # (a label for an unconditional model: condition_vector says so)
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= size:
            raise ValueError(f"{name} {lo if lo < 0 else hi} is outside 0..{size - 1}")


def check_shape(model: ARModel, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
    """x a batch of examples the model reads: (B, D), or (B, *event_shape) (a grey image also
    (B, H, W)); a 1-D model that goes on past D (max_dims None) takes any length, and one whose
    forward takes prefixes any length up to D. mask, if given, shaped as x."""
    if x.dim() < 2:
        raise ValueError(f"x must be a batch of examples, (B, D), got shape {tuple(x.shape)}")
    if 0 in x.shape[1:]:
        raise ValueError(f"x holds no symbols to score, shape {tuple(x.shape)}")
    event, D = tuple(model.event_shape), model.num_dims
    if x.dim() == 2 and (model.max_dims is None or (model.takes_prefixes and x.shape[1] < D)):
        pass  # a sequence of any length, or a gpt's prefix
    elif tuple(x.shape[1:]) not in {(D,), event, event[:2] if event[2:] == (1,) else event}:
        if model.max_dims is None:
            forms = "(B, T)"  # any length T
        elif len(event) == 1:
            forms = f"(B, {D})" + (", or shorter," if model.takes_prefixes else "")
        else:
            grey = f", (B, {event[0]}, {event[1]})" if event[2:] == (1,) else ""
            forms = f"(B, {D}){grey} or (B, {', '.join(map(str, event))})"
        raise ValueError(f"x must be {forms} symbols, got shape {tuple(x.shape)}")
    if mask is not None:
        try:
            fits = torch.broadcast_shapes(mask.shape, x.shape) == x.shape
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(f"mask must be shaped as x, {tuple(x.shape)}, got {tuple(mask.shape)}")
        # it multiplies each position's nats: a 2 would count one twice, a -1 subtract it
        if mask.dtype != torch.bool and ((mask != 0) & (mask != 1)).any():
            raise ValueError("mask must be bool, or 0 (padding) and 1 (scored)")


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Inside: every module in eval mode (dropout off). After: each module's own mode back,
    so a block the caller froze in eval mode stays so (`model.train(was)` would reset it)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def as_symbols(t: torch.Tensor | None, what: str) -> torch.Tensor | None:
    """Integer symbols as int64, the dtype embeddings and cross-entropy take (numpy's int32,
    uint8 pictures and bool masks come in as they are; Python ints and lists too); floating
    point is refused by name."""
    if isinstance(t, str):  # a prompt as text, a label by name: the model reads numbers
        if what in ("cond", "label"):
            raise TypeError(f"{what} must be class numbers, not text (data.class_names: names)")
        raise TypeError(f"{what} must be integer symbols, not text: data.vocab.encode(text)")
    if t is not None and not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t)
    if t is None or t.dtype == torch.long:
        return t
    if t.is_floating_point() or t.is_complex():
        raise ValueError(f"{what} must hold integer symbols, got {t.dtype}")
    return t.long()


def labels_for(cond: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """cond as (n,) labels: one label (a 0-d tensor, an int) stands for every example."""
    return cond.expand(n) if cond is not None and cond.dim() == 0 else cond


def check_step(x_prev: torch.Tensor | None, cache: Any) -> None:
    """The protocol's order of calls: step(None) on a fresh cache, then step(x_{t-1}) at every
    later t. A symbol fed at t = 0 would be written before the first position, silently."""
    if (x_prev is None) != (cache.t == 0):
        given = "None" if x_prev is None else "a symbol"
        raise ValueError(f"step got {given} at t = {cache.t}: None first, then the previous symbol")
    # shapes only (no look at the values: that would wait for the device at every step)
    B = getattr(cache, "batch_size", None)  # (a cache of one's own may not say)
    if x_prev is not None and B is not None and x_prev.shape != (B,):
        raise ValueError(
            f"step takes the previous symbol of each of the cache's {B} sequences, shape "
            f"({B},), got {tuple(x_prev.shape)}"
        )


def check_fresh(cache: Any, prefix: torch.Tensor | None = None) -> None:
    """A prefill starts from the first position: it fills the whole cache from the prefix,
    (B, P) symbols for the cache's B sequences. (prefix None: a family of one's own written
    before darm looked at it.)"""
    if cache.t:
        raise ValueError(f"prefill needs a fresh cache (t = 0), got t = {cache.t}")
    if prefix is None:
        return
    B = getattr(cache, "batch_size", None)  # (a cache of one's own may not say)
    if prefix.dim() != 2 or (B is not None and prefix.shape[0] != B):
        raise ValueError(
            f"prefill takes a prefix for each of the cache's sequences, (B, P)"
            f"{'' if B is None else f' with B = {B}'}, got shape {tuple(prefix.shape)}"
        )


def prefill_by_steps(step, prefix: torch.Tensor, cache: Any, cond: torch.Tensor | None = None):
    """The reference prefill: `step(None)`, then `step(prefix[:, p])` for each p."""
    logits = step(None, cache, cond)
    for p in range(prefix.shape[1]):
        logits = step(prefix[:, p], cache, cond)
    return logits


class LabelEmbedding(nn.Module):
    """Maps a condition (today a class label (B,)) to a vector (B, n_embd) added to inputs.

    Kept as one module so a family never assumes what `cond` is: a sequence encoder can
    replace it later without touching the families.
    """

    def __init__(self, num_classes: int, n_embd: int):
        super().__init__()
        self.num_classes = num_classes
        self.embedding = nn.Embedding(num_classes, n_embd)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return self.embedding(cond)


def condition_embedding(num_classes: int, width: int) -> LabelEmbedding | None:
    """The module every family maps its condition with: (B,) labels -> (B, width) where
    num_classes > 0, None for an unconditional model (the one place a richer condition,
    a sequence encoder say, would come in)."""
    return LabelEmbedding(num_classes, width) if num_classes else None


def condition_vector(
    label: LabelEmbedding | None, cond: torch.Tensor | None, batch_size: int
) -> torch.Tensor | None:
    """The (B, n_embd) conditioning vector, or None for an unconditional model."""
    if label is None:
        if cond is not None:
            raise ValueError("this model is unconditional (num_classes=0) but got cond")
        return None
    if cond is None:
        raise ValueError(f"this model is conditional on {label.num_classes} classes: pass cond")
    if cond.shape != (batch_size,):
        raise ValueError(f"cond must have shape ({batch_size},), got {tuple(cond.shape)}")
    return label(cond)


def pad_start(x: torch.Tensor, n: int, start: int) -> torch.Tensor:
    """Prepend n start symbols along dim 1.

    x: (B, T) long -> (B, n+T), or (B, T, L) one-hot/soft -> (B, n+T, L+1) with the start
    symbol as the extra last index (start must be L).
    """
    if not x.is_floating_point():
        s = torch.full((x.shape[0], n), start, dtype=x.dtype, device=x.device)  # T may be 0
        return torch.cat([s, x], dim=1)
    B, _, L = x.shape
    if start != L:
        raise ValueError(f"soft inputs need the start symbol at index L={L}, got {start}")
    s = x.new_zeros(B, n, L + 1)
    s[..., start] = 1.0
    return torch.cat([s, F.pad(x, (0, 1))], dim=1)


def shift_right(x: torch.Tensor, start: int) -> torch.Tensor:
    """(B, D) -> (B, D): position d holds x_{d-1}, position 0 the start symbol.
    One-hot/soft x (B, D, L) -> (B, D, L+1) likewise."""
    return pad_start(x[:, :-1], 1, start)


def embed(table: nn.Embedding, symbols: torch.Tensor) -> torch.Tensor:
    """Embedding lookup of (..., ) long symbols, or for one-hot/soft (..., K) float symbols
    the same rows mixed by those weights (K <= rows of the table)."""
    if symbols.is_floating_point():
        return symbols @ table.weight[: symbols.shape[-1]]
    return table(symbols)
