"""Pictures: sample grids (Pillow) and loss curves (matplotlib)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from darm.files import atomic_write

GRID_PAD = 1  # pixels of background between pictures and around the grid
GRID_GREY = 128  # the background: mid-grey, 0..255


def pixel_levels(pixels: np.ndarray, levels: int) -> np.ndarray:
    """The inverse of image_grid's shading (level k -> round(255 k / (L - 1))): exact for
    every L up to 256, where equal-width binning (`quantise`) is not for most L above 27."""
    return np.rint(pixels.astype(np.float64) * max(levels - 1, 1) / 255).astype(np.int64)


def image_grid(
    images: torch.Tensor,
    levels: int,
    scale: int = 4,
    pad: int = GRID_PAD,
    cols: int | None = None,
) -> Image.Image:
    """(N, H, W) or (N, H, W, C) symbols 0..levels-1 -> one PNG-ready grid, near-square
    unless `cols` is given.
    C = 3 is shown as RGB (C = 4: RGB of RGBA); any other C as the channels' mean."""
    images = images.detach().cpu().numpy().astype(np.float64) / max(levels - 1, 1)
    if images.ndim == 4:
        C = images.shape[-1]
        images = images[..., :3] if C in (3, 4) else images.mean(axis=-1)
    N, H, W = images.shape[:3]
    colour = images.shape[3:]  # () grey or (3,) RGB
    cols = cols or math.ceil(math.sqrt(N))
    rows = math.ceil(N / cols)
    grid = np.full((rows * (H + pad) + pad, cols * (W + pad) + pad, *colour), GRID_GREY / 255)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        top, left = pad + r * (H + pad), pad + c * (W + pad)
        grid[top : top + H, left : left + W] = img
    pixels = (grid * 255).round().astype(np.uint8)
    return Image.fromarray(pixels, mode="RGB" if colour else "L").resize(
        (pixels.shape[1] * scale, pixels.shape[0] * scale), Image.NEAREST
    )


def save_image_grid(
    images: torch.Tensor, levels: int, path: Path, scale: int = 4, cols: int | None = None
) -> None:
    grid = image_grid(images, levels, scale, cols=cols)
    atomic_write(Path(path), lambda tmp: grid.save(tmp, format="PNG"))


def read_log(path: Path) -> dict[str, np.ndarray]:
    """log.csv's columns as float arrays; an empty cell (no validation at that step) is NaN."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if any(None in r for r in rows):  # DictReader files a row's extra cells under None
        raise ValueError(f"{path} has a row with more cells than its header")
    return {k: np.array([float(r[k] or "nan") for r in rows]) for k in (rows[0] if rows else {})}


def plot_loss_curves(
    curves: dict[str, Path], path: Path, ylabel: str = "nats per dimension", x: str = "step"
):
    """One plot of train (dashed) and validation (solid) NLL for each labelled log.csv,
    against x: "step", or "elapsed_s" to compare runs of equal wall-clock time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    logs = {label: read_log(log) for label, log in curves.items()}
    for i, (label, data) in enumerate(logs.items()):
        if not data:
            continue
        color = f"C{i}"
        lone = len(data[x]) == 1  # one row logged so far: a point, where a line shows nothing
        ax.plot(data[x], data["train_nats_per_dim"], "--", marker="x" if lone else None,
                color=color, alpha=0.6)  # fmt: skip
        scored = ~np.isnan(data["valid_nats_per_dim"])  # the rows of an evaluation
        valid_x, valid_y = data[x][scored], data["valid_nats_per_dim"][scored]
        ax.plot(valid_x, valid_y, "o-" if len(valid_y) < 30 else "-", color=color, label=label)
    if limits := focus_ylim([data for data in logs.values() if data]):
        ax.set_ylim(*limits)
    ax.set_xlabel({"step": "step", "elapsed_s": "training time (s)"}.get(x, x))
    ax.set_ylabel(ylabel)
    ax.set_title("validation (solid) and training (dashed) NLL")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def focus_ylim(
    logs: list[dict[str, np.ndarray]], margin: float = 0.05
) -> tuple[float, float] | None:
    """(bottom, top) of the loss axis, or None to leave matplotlib's. The first steps fall
    from log L nats (a random init) to a fraction of it; on an axis that holds them, the
    curves of a long run, and the gaps between runs, are flat lines at the bottom. So the
    top is the highest NLL from the first evaluation on (it comes after some training), or
    from the end of the log's first tenth if that is sooner (a run scored only at its end);
    the early steps run off the top."""
    later, every = [], []
    for data in logs:
        train, valid = data["train_nats_per_dim"], data["valid_nats_per_dim"]
        scored = np.flatnonzero(np.isfinite(valid))  # the rows of an evaluation
        first = min(scored[0], len(train) // 10) if len(scored) else len(train) // 10
        later += [train[first:], valid[first:]]
        every += [train, valid]
    later, every = (np.concatenate(a) if a else np.array([]) for a in (later, every))
    later, every = later[np.isfinite(later)], every[np.isfinite(every)]
    if not len(later):
        return None
    top, bottom = float(later.max()), float(every.min())
    if top <= bottom:
        return None
    pad = margin * (top - bottom)
    return bottom - pad, top + pad
