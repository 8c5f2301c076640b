"""Dropout whose mask on the CPU is cut from random bits rather than drawn by bernoulli_.

torch's CPU dropout draws one Bernoulli variable per element (`bernoulli_`, one call of the
generator each): on a 2-core Xeon it takes ~15 ms for the (32, 48, 28, 28) maps of a gated
PixelCNN layer, about a fifth of its training step. One 64-bit draw holds four 15-bit
uniform integers, so the same mask costs a quarter of the draws and two cheap integer ops:
the layer runs 2.4-3x and the step 1.2x as fast (benchmarks/dropout_speed.py). Elsewhere
(CUDA's fused kernel is already fast) it is F.dropout.

The drop probability is k / 2^15 with k = round(p * 2^15), within 1e-3 of p relative
(p = 0.2: 0.20001), and kept values are scaled by 2^15 / (2^15 - k), so the layer's mean is
preserved (exactly in float32; bf16 rounds the scale, as it does torch's). A p that 15 bits
cannot hold that closely (some p below 0.016) goes to F.dropout, and so does a model being
compiled: torch.compile cannot trace random_(), and Inductor makes its own fast masks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BITS = 15
LEVELS = 1 << BITS  # a mask element is uniform on 0 .. LEVELS - 1


def levels_dropped(p: float) -> int | None:
    """k: the mask drops values below k of LEVELS; None where k / LEVELS is not close to p."""
    k = round(p * LEVELS)
    return k if 0 < k < LEVELS and abs(k / LEVELS - p) <= 1e-3 * p else None


def uniform_levels(like: torch.Tensor) -> torch.Tensor:
    """Uniform integers on 0 .. LEVELS - 1 shaped like `like` and laid out in memory as it is
    (so the product with it runs over both in order, channels-last included)."""
    n = like.numel()
    # random_() fills an int64 with 63 uniform bits (the sign bit is 0): each of its four
    # 16-bit lanes, sign bit dropped by the AND, is a uniform 15-bit integer
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=like.device).random_()
    u = bits.view(torch.int16)[:n].bitwise_and_(LEVELS - 1)  # (n,)
    # i.i.d. bits may fill memory in any order: in like's own where it is dense (channels-
    # last, transposed, ...), else a plain one; empty_like on "meta" says which, for free
    strides = torch.empty_like(like, dtype=torch.int16, device="meta").stride()
    return u.as_strided(like.shape, strides)


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """F.dropout(x, p, training), with the mask cut from random bits on the CPU."""
    if not training or p == 0.0:
        return x
    ours = x.device.type == "cpu" and not torch.compiler.is_compiling()
    k = levels_dropped(p) if ours else None
    if k is None:
        return F.dropout(x, p, training=True)
    keep = uniform_levels(x) >= k
    mask = keep.to(x.dtype).mul_(LEVELS / (LEVELS - k))  # unbiased: E[mask] = 1
    return x * mask


class Dropout(nn.Dropout):
    """nn.Dropout through `dropout` (the same p, the same state dict: none)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return F.dropout(x, self.p, self.training, inplace=True)
        return dropout(x, self.p, self.training)
