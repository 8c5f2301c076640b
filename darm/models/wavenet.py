"""Causal convolution (WaveNet): stacked dilated causal 1-D convolutions.

Each residual layer: a dilated causal conv to 2C channels, a gated unit tanh(a) * sigmoid(b),
then a 1x1 conv back into the residual stream (but in the last layer, whose stream nothing
reads) and a 1x1 conv into the skip sum. The input at position d is the embedding of
x_{d-1}, so the receptive field is 1 + (kernel_size - 1) * sum(dilations) previous symbols.

Generation (fast WaveNet): each layer's causal conv keeps a queue of the last
(kernel-1)*dilation+1 inputs it reads, so a step costs O(layers), whatever the receptive
field; `prefill` fills every queue from one full causal pass over the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
from darm.nn.causal_conv import CausalConv1d
from darm.nn.dropout import Dropout
from darm.nn.gate import gate


@dataclass
class WaveNetConfig:
    vocab_size: int = 256
    seq_len: int = 64
    n_embd: int = 64  # residual channels
    n_skip: int = 128  # skip channels
    kernel_size: int = 2
    dilation_cycle: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    n_cycles: int = 1  # the dilation cycle is repeated this many times
    dropout: float = 0.0  # on each layer's gated units, during training
    num_classes: int = 0
    # the last layer's residual 1x1 conv, whose output nothing reads: only runs saved before
    # it was dropped have it, so that they load and resume as they were saved
    last_res: bool = field(default=False, metadata={"saved_only": True})

    def __post_init__(self):
        require_at_least(self, 1, "n_embd", "n_skip", "kernel_size", "n_cycles")
        if not self.dilation_cycle or min(self.dilation_cycle) < 1:
            raise ValueError(f"dilation_cycle must be dilations >= 1, got {self.dilation_cycle}")

    @staticmethod
    def from_saved(config: dict) -> dict:
        """A checkpoint's config: one saved before `last_res` has that conv's weights."""
        return {"last_res": True, **config}

    @property
    def dilations(self) -> tuple[int, ...]:
        return self.dilation_cycle * self.n_cycles

    @property
    def receptive_field(self) -> int:
        return 1 + (self.kernel_size - 1) * sum(self.dilations)


class ResidualLayer(nn.Module):
    def __init__(
        self, channels: int, skip: int, kernel_size: int, dilation: int, dropout: float,
        residual: bool = True,
    ):  # fmt: skip
        super().__init__()
        self.conv = CausalConv1d(channels, 2 * channels, kernel_size, dilation)
        self.dropout = Dropout(dropout)
        # made even where dropped (the last layer's residual is read by no later layer), so
        # the seeded weights after it come out as they did when every layer kept one
        res = nn.Conv1d(channels, channels, 1)
        self.res = res if residual else None
        self.skip = nn.Conv1d(channels, skip, 1)

    def gated_unit(self, h: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        z = gate(h if c is None else h + c)  # the label's vector biases both halves
        # no module call at all when sampling: per-call overhead is most of a cached step
        return self.dropout(z) if self.training else z

    def forward(self, x, c):  # x: (B, C, T) -> (B, C, T), (B, S, T)
        z = self.gated_unit(self.conv(x), c)
        return (x if self.res is None else x + self.res(z)), self.skip(z)


class WaveNetCache:
    """One ConvQueue per residual layer; each keeps the last (kernel-1)*dilation+1 inputs.

    matrices: per layer, (conv, out, out_bias): its dilated conv as one (kernel*C, 2C)
    matrix (CausalConv1d.step_matrix), and its 1x1 residual and skip convs stacked into one
    (C, C+S) matrix and (C+S,) bias, so a step makes two products where the layer makes
    three convs. They are copied from the weights when the cache is made: a cache is for
    generating with fixed weights.
    """

    def __init__(self, batch_size: int, queues: list, matrices: list):
        self.batch_size = batch_size
        self.queues = queues
        self.matrices = matrices
        self.t = 0

    def reset(self) -> None:
        for q in self.queues:
            q.reset()
        self.t = 0


class WaveNet(ARModel):
    family = "wavenet"

    def __init__(self, config: WaveNetConfig):
        super().__init__(config)
        C, S = config.n_embd, config.n_skip
        self.start = config.vocab_size
        self.wte = nn.Embedding(config.vocab_size + 1, C)
        n = len(config.dilations)
        self.layers = nn.ModuleList(
            ResidualLayer(C, S, config.kernel_size, d, config.dropout, i < n - 1 or config.last_res)
            for i, d in enumerate(config.dilations)
        )
        # global conditioning: one projection of the label into every layer's gate
        self.label = condition_embedding(config.num_classes, 2 * C)
        self.out1 = nn.Conv1d(S, S, 1)
        self.out2 = nn.Conv1d(S, config.vocab_size, 1)

    def _head(self, skip: torch.Tensor) -> torch.Tensor:  # (B, S, T) -> (B, L, T)
        return self.out2(F.relu(self.out1(F.relu(skip))))

    def _stack(self, inputs, cond, queues=None) -> torch.Tensor:
        """inputs: (B, T) symbols (or (B, T, L+1) one-hot), already shifted -> skip sum
        (B, S, T). With queues, each layer's queue is filled from its input."""
        c = condition_vector(self.label, cond, inputs.shape[0])
        c = None if c is None else c[:, :, None]  # (B, 2C, 1), broadcast over time
        h = embed(self.wte, inputs).transpose(1, 2)  # (B, C, T)
        skip = 0
        for i, layer in enumerate(self.layers):
            if queues is not None:
                queues[i].fill(h)
            h, s = layer(h, c)
            skip = skip + s
        return skip

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        skip = self._stack(shift_right(x, self.start), cond)  # (B, S, D)
        return self._head(skip).transpose(1, 2)  # (B, D, L)

    def prefill(self, prefix, cache: WaveNetCache, cond=None) -> torch.Tensor:
        """One causal pass over [start, prefix] fills every layer's queue."""
        check_fresh(cache, prefix)
        inputs = pad_start(prefix, 1, self.start)  # (B, P+1): x_{d-1} at position d
        skip = self._stack(inputs, cond, cache.queues)  # (B, S, P+1)
        cache.t = inputs.shape[1]
        return self._head(skip[:, :, -1:])[:, :, 0]  # (B, L)

    @property
    def max_dims(self) -> None:
        return None  # the queues of the dilated convs roll on: no limit past D

    def init_cache(self, batch_size: int) -> WaveNetCache:
        p = self.wte.weight
        queues = [layer.conv.init_queue(batch_size, p.device, p.dtype) for layer in self.layers]
        with torch.no_grad():
            matrices = [(layer.conv.step_matrix(), *_out_matrix(layer)) for layer in self.layers]
        return WaveNetCache(batch_size, queues, matrices)

    def step(self, x_prev, cache: WaveNetCache, cond=None) -> torch.Tensor:
        check_step(x_prev, cache)
        if x_prev is None:
            x_prev = self.start_symbols(cache.batch_size)
        c = condition_vector(self.label, cond, x_prev.shape[0])
        h = self.wte(x_prev)  # (B, C)
        C, S = h.shape[1], self.config.n_skip
        # state = [residual stream | skip sum], (B, C+S): one add per layer updates both
        state = F.pad(h, (0, S))
        for layer, queue, (conv, out, out_bias) in zip(
            self.layers, cache.queues, cache.matrices, strict=True
        ):
            z = layer.gated_unit(layer.conv.step(h, queue, conv), c)  # (B, C)
            state = state + torch.addmm(out_bias, z, out)  # (B, C+S)
            h = state[:, :C]
        cache.t += 1
        # the 1x1 convs of the head as matrix products on (B, S): no conv call per step
        skip = state[:, C:]  # (B, S)
        s = F.linear(F.relu(skip), self.out1.weight[:, :, 0], self.out1.bias)  # (B, S)
        return F.linear(F.relu(s), self.out2.weight[:, :, 0], self.out2.bias)  # (B, L)


def _out_matrix(layer: ResidualLayer) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer's residual and skip 1x1 convs as one (C, C+S) matrix and (C+S,) bias (zeros in
    the residual's place where the layer has none: the stream goes on unchanged). The last
    layer's zero block keeps its update one product and one add, as every layer's: a (C, S)
    product alone would need a pad or a cat more, and op calls are most of a cached step."""
    res, skip = layer.res, layer.skip
    C = skip.weight.shape[1]
    w_res = skip.weight.new_zeros(C, C, 1) if res is None else res.weight  # (C, C, 1)
    b_res = skip.bias.new_zeros(C) if res is None else res.bias  # (C,)
    weight = torch.cat([w_res, skip.weight])[:, :, 0].t()  # (C+S, C, 1) -> (C, C+S)
    return weight, torch.cat([b_res, skip.bias])  # (C+S,)


register_model("wavenet", WaveNet, WaveNetConfig, "dilated causal 1-D conv stack (WaveNet)")
