"""Masked 2-D convolutions over a raster scan (PixelCNN).

Pixels are read top to bottom, left to right, and inside a pixel the C channels in order
(R -> G -> B). Every feature map is split into C channel groups (feature i belongs to
group i * C // n), so group c may see the current pixel's channels < c (mask A, first
layer) or <= c (mask B, later layers) and never a later one. Masks multiply the weight
at every call (`weight * mask`), so the optimiser and the checkpoint only ever see
ordinary parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def channel_groups(n: int, channels: int) -> torch.Tensor:
    """(n,) group of each of n features: contiguous blocks over the C channels."""
    return torch.arange(n) * channels // n


def centre_mask(in_groups: torch.Tensor, out_groups: torch.Tensor, mask_type: str) -> torch.Tensor:
    """(out, in) bool: which input features an output may see at the current pixel."""
    if mask_type == "A":
        return in_groups[None, :] < out_groups[:, None]
    if mask_type == "B":
        return in_groups[None, :] <= out_groups[:, None]
    raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")


def raster_mask(
    kernel: tuple[int, int], in_groups: torch.Tensor, out_groups: torch.Tensor, mask_type: str
) -> torch.Tensor:
    """(out, in, kh, kw) float mask of a kernel centred on the current pixel: rows above the
    centre, the centre row left of the centre, and the centre itself by channel group."""
    kh, kw = kernel
    ch, cw = kh // 2, kw // 2
    mask = torch.zeros(len(out_groups), len(in_groups), kh, kw)
    mask[:, :, :ch, :] = 1  # rows above
    mask[:, :, ch, :cw] = 1  # left, same row
    mask[:, :, ch, cw] = centre_mask(in_groups, out_groups, mask_type).float()
    return mask


class MaskedConv2d(nn.Conv2d):
    """Conv2d with 'same' padding whose weight is multiplied by a fixed mask.

    `padding` places the current pixel in the kernel: centred for raster_conv, last for
    the (1, width) row_conv of the horizontal stack.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int],
        mask: torch.Tensor,
        padding: tuple[int, int, int, int],
    ):
        super().__init__(in_channels, out_channels, kernel, padding=0)
        self.pad = padding  # (left, right, top, bottom) as F.pad takes it
        self.register_buffer("mask", mask, persistent=False)

    def masked_weight(self) -> torch.Tensor:
        return self.weight * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in, H, W) -> (B, out, H, W)
        return F.conv2d(F.pad(x, self.pad), self.masked_weight(), self.bias)


def raster_conv(
    in_channels: int, out_channels: int, k: int, channels: int, mask_type: str, out_groups=None
) -> MaskedConv2d:
    """A k x k raster-masked conv (PixelCNN), padded to keep H x W."""
    in_groups = channel_groups(in_channels, channels)
    if out_groups is None:
        out_groups = channel_groups(out_channels, channels)
    mask = raster_mask((k, k), in_groups, out_groups, mask_type)
    return MaskedConv2d(in_channels, out_channels, (k, k), mask, (k // 2, k // 2, k // 2, k // 2))


def row_conv(
    in_channels: int, out_channels: int, width: int, channels: int, mask_type: str, out_groups=None
) -> MaskedConv2d:
    """A (1, width) conv over the current pixel and the width-1 pixels to its left
    (the horizontal stack of the gated PixelCNN); only the current pixel is masked."""
    in_groups = channel_groups(in_channels, channels)
    if out_groups is None:
        out_groups = channel_groups(out_channels, channels)
    mask = torch.ones(out_channels, in_channels, 1, width)
    mask[:, :, 0, -1] = centre_mask(in_groups, out_groups, mask_type).float()
    return MaskedConv2d(in_channels, out_channels, (1, width), mask, (width - 1, 0, 0, 0))


def pointwise(in_channels: int, out_channels: int, channels: int, out_groups=None) -> MaskedConv2d:
    """A 1x1 conv that keeps the channel order (mask B at the only position)."""
    return raster_conv(in_channels, out_channels, 1, channels, "B", out_groups)
