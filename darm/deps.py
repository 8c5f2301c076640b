"""Dependency maps: which earlier positions each conditional actually uses.

For a trained model and real examples x, the map is the (D, D) matrix

    J[d, j] = mean over examples of || d log p(x_d | x_<d) / d onehot(x_j) ||_2,

the gradient taken through the input embeddings (the protocol lets x be a float one-hot
tensor, so the logits are differentiable in it). Row d shows what conditional d looks at:
a band of width k for finite memory, the receptive field for a causal convolution, the
whole past for an RNN or attention, and for a plain PixelCNN a blind spot. Causality
makes J strictly lower triangular: entries with j >= d are exactly zero, not just small.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from darm.errors import DarmError, first_line
from darm.files import atomic_write
from darm.models.base import ARModel, eval_mode

# positions (examples x dimensions) per backward pass: bounds memory for long sequences
TOKENS_PER_PASS = 1 << 16


def dependency_map(
    model: ARModel,
    x: torch.Tensor,
    cond: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    tokens_per_pass: int = TOKENS_PER_PASS,
) -> torch.Tensor:
    """(D, D) float map J[d, j] (zero for j >= d), averaged over the B examples of x.

    x: (B, D) or (B, *event_shape) long, or (B, D') sequences of another length for a model
    that takes any (`max_dims` None: the map is then D' x D'); cond: (B,) labels of a
    conditional model; mask: (B, D) bool, rows d averaged only over examples where d is
    scored (padding after an item's end says nothing about the model).

    One backward pass serves K rows at once: the batch is repeated K times and copy k
    asks only for the gradient of log p(x_{d_k} | ...), so the copies cannot mix.
    """
    device = model.device
    B, D = x.shape[0], x[0].numel()
    event = model.event_shape if D == model.num_dims else (D,)  # another length: a sequence
    x = x.reshape(B, D)  # (B, D): raster order for images
    weight = torch.ones(B, D) if mask is None else mask.reshape(B, D).float()  # (B, D)
    sums, counts = torch.zeros(D, D), torch.zeros(D)
    chunk = max(1, tokens_per_pass // D)  # examples per pass when one row is asked for
    with eval_mode(model):  # dropout off; each module's own mode back afterwards
        for i in range(0, B, chunk):
            part = slice(i, i + chunk)
            y = None if cond is None else cond[part].to(device)
            w = weight[part].to(device)
            s, c = _map_sums(model, x[part].to(device), y, w, event, tokens_per_pass)
            sums, counts = sums + s, counts + c
    return sums / counts.clamp(min=1)[:, None]


def _map_sums(model, x, cond, weight, event, tokens_per_pass) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over the examples of x (B, D) of the weighted gradient norms (D, D), and the
    weights per row (D,): is row d scored in example b. event: the shape x's rows are read in
    (the model's event_shape, or (D,))."""
    device = x.device
    (B, D), L = x.shape, model.vocab_size
    sums = torch.zeros(D, D)
    K_max = max(1, min(D, tokens_per_pass // (B * D)))
    for start in range(0, D, K_max):
        ds = torch.arange(start, min(start + K_max, D), device=device)  # rows of this pass
        K = len(ds)
        xk = x.repeat(K, 1)  # (K*B, D): copy k is the batch again, for row ds[k]
        soft = F.one_hot(xk, L).float().requires_grad_()  # (K*B, D, L)
        yk = None if cond is None else cond.repeat(K)  # (B,) -> (K*B,), like xk
        try:  # a family of one's own may not take one-hot floats, or cut their gradient
            logits = model(soft.view(K * B, *event, L), yk)  # soft as (K*B, *event, L)
            logits = logits.reshape(K * B, D, L).float()  # (K*B, D, L)
            logp = logits.log_softmax(-1).gather(-1, xk[..., None])[..., 0]  # (K*B, D)
            picked = logp.view(K, B, D)[torch.arange(K, device=device), :, ds]  # (K, B)
            (grad,) = torch.autograd.grad(picked.sum(), soft)  # (K*B, D, L)
        except RuntimeError as e:
            if "memory" in str(e).lower():  # (said as such by the command)
                raise
            raise DarmError(
                f"{type(model).__name__}: a dependency map differentiates the logits through "
                f"one-hot input, which failed ({first_line(e)}); darm.check.check_model says "
                f"what the family lacks"
            ) from None
        norms = grad.view(K, B, D, L).norm(dim=-1)  # (K, B, D): one value per x_j
        w = weight[:, ds].T  # (K, B): is row ds[k] scored in example b
        sums[ds.cpu()] = (norms * w[..., None]).sum(1).cpu()
    return sums, weight.sum(0).cpu()


def max_lag(J: torch.Tensor) -> int:
    """The largest d - j with J[d, j] != 0: how far back any conditional reaches."""
    d, j = torch.nonzero(J, as_tuple=True)
    return int((d - j).max()) if len(d) else 0


def pixel_map(J: torch.Tensor, image_shape: tuple[int, ...], pixel: tuple[int, int]):
    """Influence of every position on pixel (r, c) as an (H, W) array (channels: the
    first channel's row, the L2 norm over the influencing channels)."""
    H, W = image_shape[:2]
    C = image_shape[2] if len(image_shape) > 2 else 1
    r, c = pixel
    if not (0 <= r < H and 0 <= c < W):
        raise DarmError(f"--pixel {r},{c} is outside the {H}x{W} image")
    row = J[(r * W + c) * C]  # (D,)
    return row.view(H, W, C).norm(dim=-1)  # (H, W)


def default_pixel(image_shape: tuple[int, ...]) -> tuple[int, int]:
    """The centre pixel: its blind spot and receptive field are both in view."""
    return image_shape[0] // 2, image_shape[1] // 2


def _relative(a: torch.Tensor):
    """a / max(a) with exact zeros masked out (drawn blank: exactly no dependence)."""
    import numpy as np

    a = a.detach().cpu().double().numpy()
    peak = a.max() if a.size and a.max() > 0 else 1.0
    return np.ma.masked_equal(a / peak, 0.0)


def plot_dependency_maps(
    maps: dict[str, torch.Tensor],
    path: Path,
    image_shape: tuple[int, ...] | None = None,
    pixel: tuple[int, int] | None = None,
    floor: float = 1e-4,
) -> Path:
    """One column per model: the D x D map (log colour scale, relative to its largest
    entry, blank where exactly zero), and for images under it the H x W influence map of
    one pixel (outlined in red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    if not maps:
        raise DarmError("no dependency maps to draw")
    n = len(maps)
    rows = 2 if image_shape else 1
    fig, axes = plt.subplots(
        rows, n, figsize=(2.9 * n + 1.0, 3.0 * rows), dpi=100, squeeze=False, layout="constrained"
    )
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")
    norm = LogNorm(vmin=floor, vmax=1.0)
    image = None
    for col, (name, J) in enumerate(maps.items()):
        D = J.shape[0]
        ax = axes[0, col]
        image = ax.imshow(_relative(J).clip(floor, 1), cmap=cmap, norm=norm, interpolation="none")
        ax.set_title(f"{name} (max lag {max_lag(J)})", fontsize=9)
        ax.set_xlabel("j (input position)", fontsize=8)
        ax.set_ylabel("d (predicted position)", fontsize=8)
        ax.plot([-0.5, D - 0.5], [-0.5, D - 0.5], color="0.6", lw=0.5)  # the diagonal
        ax.tick_params(labelsize=7)
        if image_shape:
            pix = pixel or default_pixel(image_shape)
            ax = axes[1, col]
            ax.imshow(
                _relative(pixel_map(J, image_shape, pix)).clip(floor, 1),
                cmap=cmap,
                norm=norm,
                interpolation="none",
            )
            ax.add_patch(
                plt.Rectangle((pix[1] - 0.5, pix[0] - 0.5), 1, 1, fill=False, ec="red", lw=1.5)
            )
            ax.set_title(f"influences on pixel {pix[0]},{pix[1]}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="|d log p(x_d)/d x_j| / max")
    # a one-column figure clipped its y-label: the saved box follows what was drawn
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight"))
    plt.close(fig)
    return Path(path)


def default_examples(D: int) -> int:
    """16 examples for long sequences, up to 1024 for short ones, where it costs little
    and rows d beyond the typical item length (long names are rare) need many."""
    return max(16, min(1024, 4 * TOKENS_PER_PASS // (D * D)))


def checkpoint_maps(model: ARModel, record: dict, split, n: int | None = None) -> torch.Tensor:
    """The dependency map of a loaded checkpoint on the first n examples of a split
    (default: `default_examples`)."""
    n = default_examples(math.prod(split.x.shape[1:])) if n is None else n  # lines may outrun D
    if n < 1:
        raise DarmError(f"-n must be >= 1, got {n}")
    x, y, mask = next(split.iter_batches(n))  # the first n (all, if the split is smaller)
    y = y if model.num_classes else None
    return dependency_map(model, x, y, mask)


def image_shape_of(record: dict) -> tuple[int, ...] | None:
    shape = record.get("data", {}).get("image_shape")
    return tuple(shape) if shape and math.prod(shape) > 1 else None
