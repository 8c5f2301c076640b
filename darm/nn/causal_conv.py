"""1-D causal convolution: output t sees inputs t, t-dilation, ..., t-(kernel-1)*dilation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvQueue:
    """Per-layer cache for stepping a causal conv: the last span = (kernel-1)*dilation+1 inputs.

    A ring buffer written twice, at w and w + span, so the last `span` inputs are always the
    contiguous window buffer[w+1 : w+1+span], oldest first: a step writes one row instead of
    shifting (or reallocating) the whole queue, whatever the dilation.
    buffer: (2*span, B, C_in), time first, so a step's write and read are each one slice;
    starts at zeros, exactly the left padding of the forward pass.
    """

    def __init__(self, batch_size: int, channels: int, span: int, device, dtype):
        self.span = span
        self.buffer = torch.zeros(2 * span, batch_size, channels, device=device, dtype=dtype)
        self.w = span - 1  # where the newest input was written

    def reset(self) -> None:
        self.buffer.zero_()
        self.w = self.span - 1

    def push(self, x_t: torch.Tensor) -> None:
        """x_t: (B, C_in), the newest input; the oldest one leaves the window."""
        self.w = (self.w + 1) % self.span
        self.buffer[self.w :: self.span] = x_t  # rows w and w + span

    def taps(self, dilation: int) -> torch.Tensor:
        """Every `dilation`-th of the last `span` inputs, oldest first, as one row per
        example: (B, kernel * C_in), tap-major (the order of CausalConv1d.step_matrix)."""
        taps = self.buffer[self.w + 1 : self.w + 1 + self.span : dilation]  # (kernel, B, C_in)
        return taps.transpose(0, 1).reshape(taps.shape[1], -1)  # -> (B, kernel * C_in)

    def fill(self, x: torch.Tensor) -> None:
        """Set from the layer's whole input so far, x: (B, C_in, T): keep its last `span`
        columns, zeros before the start (as pushing x one column at a time would)."""
        last = F.pad(x, (self.span, 0))[:, :, -self.span :]  # (B, C_in, span)
        last = last.permute(2, 0, 1)  # -> (span, B, C_in)
        self.buffer = torch.cat([last, last])  # (2*span, B, C_in)
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

    def step_matrix(self) -> torch.Tensor:
        """The weight as one (kernel * C_in, C_out) matrix, rows in the order of
        ConvQueue.taps, so that a step is one product: taps @ matrix + bias."""
        # (C_out, C_in, kernel) -> (kernel, C_in, C_out) -> (kernel * C_in, C_out)
        return self.weight.permute(2, 1, 0).reshape(-1, self.out_channels)

    def step(
        self, x_t: torch.Tensor, queue: ConvQueue, matrix: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One time step: x_t (B, C_in) -> (B, C_out), O(kernel) work instead of O(T).
        `matrix`: step_matrix() made once for many steps (it copies the weight)."""
        queue.push(x_t)
        taps = queue.taps(self.dilation[0])  # (B, kernel * C_in): the inputs it reads
        # a conv over exactly `kernel` inputs is one matrix product
        return torch.addmm(self.bias, taps, self.step_matrix() if matrix is None else matrix)
