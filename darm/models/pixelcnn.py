"""2-D causal convolution (PixelCNN, van den Oord et al. 2016).

The flat sequence is an image in raster order, channels innermost: x_d is channel c of
pixel (i, j) with d = (i * W + j) * C + c. A first k x k convolution with mask A (the
current pixel's own channel is hidden), then residual blocks (1x1, k x k with mask B,
1x1), then a 1x1 head to L logits per channel. Stacked masked k x k kernels leave a
blind spot above and to the right of each pixel; `gated_pixelcnn` removes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from darm.config import require_at_least
from darm.models.base import ARModel, check_step, condition_embedding, condition_vector, embed
from darm.models.registry import register_model
from darm.nn.dropout import Dropout
from darm.nn.masked_conv import MaskedConv2d, pointwise, raster_conv


@dataclass
class PixelCNNConfig:
    vocab_size: int = 256
    seq_len: int = 784
    image_shape: tuple[int, ...] = ()  # (H, W) or (H, W, C); () reads x as one row
    n_embd: int = 16  # embedding width of one channel's value
    n_hidden: int = 64  # feature maps
    n_layer: int = 6  # residual blocks (pixelcnn) or gated layers (gated_pixelcnn)
    first_kernel: int = 7  # the mask-A layer
    kernel_size: int = 3  # every later layer
    dropout: float = 0.0  # on each layer's hidden units, during training
    num_classes: int = 0

    def __post_init__(self):
        require_at_least(self, 1, "seq_len", "n_embd", "n_hidden", "n_layer")
        shape = self.image_shape or (1, self.seq_len)
        if len(shape) not in (2, 3) or min(shape) < 1:
            raise ValueError(f"image_shape must be (H, W) or (H, W, C), got {self.image_shape}")
        if math.prod(shape) != self.seq_len:
            raise ValueError(
                f"image_shape {tuple(shape)} holds {math.prod(shape)} values, "
                f"not seq_len={self.seq_len}"
            )
        for k in (self.first_kernel, self.kernel_size):
            if k < 1 or k % 2 == 0:
                raise ValueError(f"kernel sizes must be odd and >= 1, got {k}")
        if self.n_hidden < 2 * self.hwc[2]:
            raise ValueError(f"n_hidden must be >= 2 * channels = {2 * self.hwc[2]}")

    def check_new(self) -> None:
        """A new model's kernels no wider than its pictures can use: a k x k kernel reaches
        k // 2 pixels a side, so past 2 * max(H, W) - 1 taps the rest fall on padding alone
        (of 99x99 on 8x8 digits, 15x15 ever see a pixel). A field's default passes on any
        picture (7x7 on the smallest), and a run saved before this check still loads
        (checked on new models only)."""
        H, W, _ = self.hwc
        reach = 2 * max(H, W) - 1
        for name in ("first_kernel", "kernel_size"):
            k, default = getattr(self, name), getattr(type(self), name)
            if k > max(reach, default):
                raise ValueError(
                    f"{name}={k} is wider than {H}x{W} pictures can use: at most "
                    f"{reach} (2 * max(H, W) - 1) reaches every pixel (the default {default} "
                    f"always passes)"
                )

    @property
    def hwc(self) -> tuple[int, int, int]:
        shape = tuple(self.image_shape or (1, self.seq_len))
        return shape if len(shape) == 3 else (*shape, 1)


class RasterModel(ARModel):
    """What both PixelCNNs share: the image behind the flat sequence, the input embedding
    of each channel's value, and the 1x1 head to L logits per channel."""

    family = "pixelcnn"

    def __init__(self, config: PixelCNNConfig):
        super().__init__(config)
        H, W, C = config.hwc
        L, n = config.vocab_size, config.n_hidden
        self.wte = nn.Embedding(L, config.n_embd)
        self.channel = nn.Parameter(0.02 * torch.randn(C, config.n_embd))  # which channel
        self.head = nn.Sequential(nn.ReLU(), pointwise(n, n, C), nn.ReLU(), pointwise(n, C * L, C))

    @property
    def event_shape(self) -> tuple[int, ...]:
        return self.config.hwc

    @property
    def rows_above(self) -> int | None:
        """How many rows above a pixel its conditional reaches: each layer's kernel adds
        its half-height. Below H - 1, the last rows never see the image's top. None: not
        known (a family of one's own that does not say)."""
        return None

    def short_sight(self) -> str | None:
        """What the model misses when its last row cannot see the top of the image (a
        sentence with no subject, for the model's name), else None. Two rows short of the
        top edge, or a tenth of a tall image, often a blank margin, is not worth a note."""
        H, above = self.config.hwc[0], self.rows_above
        if above is None or H - 1 - above <= max(2, (H - 1) // 10):
            return None
        return (
            f"sees {above} rows above a pixel: the last rows of the {H}-row images never see "
            f"the first {H - 1 - above} (each layer reaches kernel_size//2 rows further: "
            f"raise kernel_size or n_layer)"
        )

    def embed_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """(B, ..., C) symbols or (B, ..., C, L) one-hot -> (B, ..., C * E), channel-major."""
        e = embed(self.wte, x) + self.channel  # (B, ..., C, E)
        return e.flatten(-2)  # (B, ..., C, E) -> (B, ..., C * E)

    def embed_image(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) or (B, H, W, C) symbols, or either with a one-hot axis L
        -> (B, C * E, H, W)."""
        H, W, C = self.config.hwc
        B = x.shape[0]
        soft = x.shape[-1:] if x.is_floating_point() else ()
        pixels = x.reshape(B, H, W, C, *soft)  # (B, H, W, C[, L])
        return self.embed_pixels(pixels).permute(0, 3, 1, 2)  # (B, C*E, H, W)

    def image_logits(self, features: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B, n, H, W) -> logits shaped like the input x with an axis L: output feature
        c * L + l is logit l of channel c."""
        H, W, C = self.config.hwc
        B, L = features.shape[0], self.vocab_size
        out = self.head(features).view(B, C, L, H, W)  # (B, C, L, H, W)
        symbols = x.shape[:-1] if x.is_floating_point() else x.shape
        return out.permute(0, 3, 4, 1, 2).reshape(*symbols, L)  # (B, H, W, C, L) in x's shape

    def pixel_logits(self, feature: torch.Tensor, channel: int, cache) -> torch.Tensor:
        """The head at one pixel: (B, n) -> logits (B, L) of `channel`."""
        _, hidden, _, out = self.head
        out = cache.conv_at(out, F.relu(cache.conv_at(hidden, F.relu(feature))))  # (B, C*L)
        return out.view(out.shape[0], -1, self.vocab_size)[:, channel]  # (B, C, L) -> (B, L)

    def label_per_layer(self, cond, batch_size: int) -> torch.Tensor | None:
        """The label's vector cut into one slice per layer: (B, layers, width) or None."""
        c = condition_vector(self.label, cond, batch_size)
        # (B, layers * width) -> (B, layers, width)
        return None if c is None else c.view(batch_size, self.label_layers, -1)

    def advance(self, x_prev, cache: RasterCache) -> tuple[int, int, int]:
        """The start of every cached step: write the previous value into its pixel (and
        that pixel's embedding into map 0); return the (row, column, channel) to predict."""
        check_step(x_prev, cache)
        if cache.t >= self.num_dims:
            raise ValueError(f"step past the last of {self.num_dims} dimensions")
        if x_prev is not None:  # the previous value completes (part of) its pixel
            i, j, ch = self.position(cache.t - 1)
            cache.image[:, i, j, ch] = x_prev
            cache.put(0, i, j, self.embed_pixels(cache.image[:, i, j]))
        return self.position(cache.t)

    def position(self, t: int) -> tuple[int, int, int]:
        """Dimension t -> (row, column, channel)."""
        _, W, C = self.config.hwc
        pixel, c = divmod(t, C)
        return (*divmod(pixel, W), c)


class RasterCache:
    """Per-layer feature maps of the positions computed so far, zero-padded by `pad` on
    every side (the zeros are the full pass's padding), plus the image drawn so far.
    Every position of every layer is computed once, when its pixel comes up.

    image: (B, H, W, C) symbols; maps[l]: (B, widths[l], H + 2 pad, W + 2 pad)."""

    def __init__(self, model: RasterModel, batch_size: int, widths: list[int], pad: int):
        H, W, C = model.config.hwc
        p = model.wte.weight
        # every conv as a matrix (masked once, not at every pixel): conv_at is one matmul
        with torch.no_grad():
            self.matrices = {
                conv: (conv.masked_weight() if isinstance(conv, MaskedConv2d) else conv.weight)
                .flatten(1)  # (out, in, kh, kw) -> (out, in * kh * kw)
                .clone()
                for conv in model.modules()
                if isinstance(conv, nn.Conv2d)
            }
        self.batch_size, self.pad = batch_size, pad
        self.image = torch.zeros(batch_size, H, W, C, dtype=torch.long, device=p.device)
        self.maps = [
            torch.zeros(batch_size, n, H + 2 * pad, W + 2 * pad, device=p.device, dtype=p.dtype)
            for n in widths
        ]
        self.t = 0

    def window(self, layer: int, i: int, j: int, k: int) -> torch.Tensor:
        """The k x k input window centred on pixel (i, j) of a layer: (B, n, k, k)."""
        r, c = i + self.pad - k // 2, j + self.pad - k // 2
        return self.maps[layer][:, :, r : r + k, c : c + k]

    def conv_at(self, conv: nn.Conv2d, patch: torch.Tensor) -> torch.Tensor:
        """A conv's output at one position from its input window (B, in[, kh, kw]) -> (B, out).
        (A copy of the weights taken at init_cache: the cache is for generation.)"""
        patch = patch.reshape(patch.shape[0], -1)  # (B, in, kh, kw) -> (B, in * kh * kw)
        return F.linear(patch, self.matrices[conv], conv.bias)

    def put(self, layer: int, i: int, j: int, value: torch.Tensor) -> None:
        self.maps[layer][:, :, i + self.pad, j + self.pad] = value

    def reset(self) -> None:
        self.image.zero_()
        for m in self.maps:
            m.zero_()
        self.t = 0


class ResidualBlock(nn.Module):
    """h + 1x1(relu(k x k mask B(relu(1x1(relu(h)))))), with a bottleneck of n/2 maps."""

    def __init__(self, n: int, k: int, channels: int, dropout: float):
        super().__init__()
        self.reduce = pointwise(n, n // 2, channels)
        self.conv = raster_conv(n // 2, n // 2, k, channels, "B")
        self.drop = Dropout(dropout)
        self.expand = pointwise(n // 2, n, channels)

    def inner(self, h: torch.Tensor) -> torch.Tensor:  # the k x k conv's input, (B, n/2, ...)
        return F.relu(self.reduce(F.relu(h)))

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, n, H, W) -> (B, n, H, W)
        return h + self.expand(self.drop(F.relu(self.conv(self.inner(h)))))


class PixelCNN(RasterModel):
    def __init__(self, config: PixelCNNConfig):
        super().__init__(config)
        C = config.hwc[2]
        # mask B layers only widen what the first one sees: a grey 1x1 mask A sees nothing
        # (with channels, it passes a pixel's earlier channels on, which later layers spread)
        if config.first_kernel < 3 and C == 1:
            raise ValueError("first_kernel must be >= 3: a 1x1 mask-A layer sees no earlier pixel")
        n, k = config.n_hidden, config.kernel_size
        self.first = raster_conv(C * config.n_embd, n, config.first_kernel, C, "A")
        self.blocks = nn.ModuleList(
            ResidualBlock(n, k, C, config.dropout) for _ in range(config.n_layer)
        )
        # the label shifts the first layer's maps and the input of every block
        self.label_layers = config.n_layer + 1
        self.label = condition_embedding(config.num_classes, (config.n_layer + 1) * n)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        c = self.label_per_layer(cond, x.shape[0])  # (B, n_layer + 1, n)
        h = self.first(self.embed_image(x))  # (B, n, H, W)
        for layer, block in enumerate(self.blocks):
            if c is not None:
                h = h + c[:, layer, :, None, None]
            h = block(h)
        if c is not None:
            h = h + c[:, -1, :, None, None]
        return self.image_logits(h, x)

    @property
    def rows_above(self) -> int:
        convs = [self.first, *(block.conv for block in self.blocks)]  # mask A, then B
        return sum(conv.kernel_size[0] // 2 for conv in convs)

    def init_cache(self, batch_size: int) -> RasterCache:
        cfg = self.config
        widths = [cfg.hwc[2] * cfg.n_embd] + [cfg.n_hidden // 2] * cfg.n_layer
        return RasterCache(self, batch_size, widths, max(cfg.first_kernel, cfg.kernel_size) // 2)

    def step(self, x_prev, cache: RasterCache, cond=None) -> torch.Tensor:
        """Logits of the next channel: the layers at the current pixel only, from the
        windows of the maps below, which hold every earlier position already."""
        i, j, ch = self.advance(x_prev, cache)
        cfg = self.config
        c = self.label_per_layer(cond, cache.batch_size)
        h = cache.conv_at(self.first, cache.window(0, i, j, cfg.first_kernel))  # (B, n)
        for layer, block in enumerate(self.blocks):
            if c is not None:
                h = h + c[:, layer]
            cache.put(layer + 1, i, j, F.relu(cache.conv_at(block.reduce, F.relu(h))))
            u = cache.conv_at(block.conv, cache.window(layer + 1, i, j, cfg.kernel_size))
            h = h + cache.conv_at(block.expand, block.drop(F.relu(u)))  # (B, n)
        if c is not None:
            h = h + c[:, -1]
        cache.t += 1
        return self.pixel_logits(h, ch, cache)


register_model(
    "pixelcnn",
    PixelCNN,
    PixelCNNConfig,
    "masked 2-D conv over a raster scan, mask A then B (has a blind spot)",
)
