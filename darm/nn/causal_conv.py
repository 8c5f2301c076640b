"""1-D causal convolution: output t sees inputs t, t-dilation, ..., t-(kernel-1)*dilation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvQueue:
    """Per-layer cache for stepping a causal conv: the last span = (kernel-1)*dilation+1 inputs.

    A ring buffer written twice, at w and w + span, so the last `span` inputs are always the
    contiguous window buffer[:, :, w+1 : w+1+span], oldest first: a step writes one column
    instead of shifting (or reallocating) the whole queue, whatever the dilation.
    buffer: (B, C_in, 2*span); starts at zeros, exactly the left padding of the forward pass.
    """

    def __init__(self, batch_size: int, channels: int, span: int, device, dtype):
        self.span = span
        self.buffer = torch.zeros(batch_size, channels, 2 * span, device=device, dtype=dtype)
        self.w = span - 1  # where the newest input was written

    def reset(self) -> None:
        self.buffer.zero_()
        self.w = self.span - 1

    def push(self, x_t: torch.Tensor) -> None:
        """x_t: (B, C_in), the newest input; the oldest one leaves the window."""
        self.w = (self.w + 1) % self.span
        self.buffer[:, :, self.w :: self.span] = x_t[:, :, None]  # columns w and w + span

    def taps(self, dilation: int) -> torch.Tensor:
        """Every `dilation`-th of the last `span` inputs, oldest first: (B, C_in, kernel)."""
        return self.buffer[:, :, self.w + 1 : self.w + 1 + self.span : dilation]

    def fill(self, x: torch.Tensor) -> None:
        """Set from the layer's whole input so far, x: (B, C_in, T): keep its last `span`
        columns, zeros before the start (as pushing x one column at a time would)."""
        last = F.pad(x, (self.span, 0))[:, :, -self.span :]  # (B, C_in, span)
        self.buffer = torch.cat([last, last], dim=2)  # (B, C_in, 2*span)
        self.w = self.span - 1


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
        queue.push(x_t)
        taps = queue.taps(self.dilation[0])  # (B, C_in, kernel): the inputs it reads
        # a conv over exactly `kernel` inputs is one matrix product: (B, C_in*kernel) @ W^T
        w = self.weight.view(self.out_channels, -1)  # (C_out, C_in*kernel)
        return F.linear(taps.reshape(x_t.shape[0], -1), w, self.bias)  # (B, C_out)
