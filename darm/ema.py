"""Polyak averaging: an exponential moving average (EMA) of the weights during training.

The average of the last ~1/(1 - decay) steps' weights sits nearer the middle of the valley
the optimiser rattles around in than any single step's weights, so it usually scores a
lower held-out NLL (PixelCNN++ evaluates with decay 0.9995). The decay ramps up as
min(decay, (1 + t) / (10 + t)) so the first steps' weights, often random, fade fast.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class WeightAverage:
    """An EMA of a module's floating-point state (parameters and float buffers)."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        # state_dict tensors share storage with the live parameters: in-place updates by
        # the optimiser show through, so the list is built once. A tied weight (one tensor
        # under two names) is averaged, and swapped, once
        state = model.state_dict()
        self.names = [k for k, v in state.items() if v.is_floating_point()]
        self.live, self.slot, seen = [], [], {}  # slot: each name's tensor in live
        for k in self.names:
            v = state[k]
            same = (v.data_ptr(), v.shape, v.stride())
            if same not in seen:
                seen[same] = len(self.live)
                self.live.append(v)
            self.slot.append(seen[same])
        self.shadow = [v.detach().clone() for v in self.live]

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Fold in the weights after optimiser step `step` (0-based)."""
        decay = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.shadow, self.live, 1 - decay)

    @contextlib.contextmanager
    def swapped(self) -> Iterator[dict[str, torch.Tensor]]:
        """Inside: the module holds the averaged weights; yields the training (raw) weights
        by name, which come back into the module on exit."""
        self._swap()
        try:
            yield {k: self.shadow[i] for k, i in zip(self.names, self.slot)}
        finally:
            self._swap()

    @torch.no_grad()
    def _swap(self) -> None:
        for live, shadow in zip(self.live, self.shadow):
            held = live.clone()
            live.copy_(shadow)
            shadow.copy_(held)
