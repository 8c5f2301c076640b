"""1-D causal convolution: output t sees inputs t, t-dilation, ..., t-(kernel-1)*dilation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvQueue:
    """Per-layer cache for stepping a causal conv: the last (kernel-1)*dilation+1 inputs.

    buffer: (B, C_in, (kernel-1)*dilation + 1), oldest first; starts at zeros, which is
    exactly the left padding of the full forward pass.
    """

    def __init__(self, batch_size: int, channels: int, span: int, device, dtype):
        self.buffer = torch.zeros(batch_size, channels, span, device=device, dtype=dtype)

    def reset(self) -> None:
        self.buffer.zero_()

    def fill(self, x: torch.Tensor) -> None:
        """Set from the layer's whole input so far, x: (B, C_in, T): keep its last `span`
        columns, zeros before the start (as stepping through x one column at a time would)."""
        span = self.buffer.shape[2]
        self.buffer = F.pad(x, (span, 0))[:, :, -span:].contiguous()  # (B, C_in, span)


class CausalConv1d(nn.Conv1d):
    """Conv1d padded on the left only, so no output sees a later input."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation)
        self.left_pad = (kernel_size - 1) * dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, T) -> (B, C_out, T)
        return super().forward(F.pad(x, (self.left_pad, 0)))

    def init_queue(self, batch_size: int, device, dtype) -> ConvQueue:
        return ConvQueue(batch_size, self.in_channels, self.left_pad + 1, device, dtype)

    def step(self, x_t: torch.Tensor, queue: ConvQueue) -> torch.Tensor:
        """One time step: x_t (B, C_in) -> (B, C_out), O(kernel) work instead of O(T)."""
        queue.buffer = torch.cat([queue.buffer[:, :, 1:], x_t[:, :, None]], dim=2)
        taps = queue.buffer[:, :, :: self.dilation[0]]  # (B, C_in, kernel): the inputs it reads
        return F.conv1d(taps, self.weight, self.bias)[:, :, 0]
