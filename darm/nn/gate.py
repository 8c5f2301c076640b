"""The gated activation unit of WaveNet and the gated PixelCNN (van den Oord et al., 2016)."""

import torch


def gate(h: torch.Tensor) -> torch.Tensor:
    """(B, 2C, ...) -> (B, C, ...): tanh(a) * sigmoid(b), a and b the two halves of the
    channels: tanh carries the signal, the sigmoid decides how much of it passes."""
    a, b = h.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)
