"""Completion: keep the first P dimensions of real examples (the top rows of an image, the
start of a text) and sample the rest from p(x_>P | x_<=P), several times each."""

from __future__ import annotations

from pathlib import Path

import torch

from darm.errors import DarmError
from darm.models.base import ARModel
from darm.sampling import sample


def complete(
    model: ARModel,
    known: torch.Tensor,
    k: int,
    cond: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    num_dims: int | None = None,
    **sampling,
) -> torch.Tensor:
    """known: (N, P) first dimensions of N examples -> (N, k, D): k completions of each,
    D = num_dims (default: the model's D; past it for a model that has no limit)."""
    N, D = known.shape[0], num_dims or model.num_dims
    prefix = known.repeat_interleave(k, dim=0)  # (N*k, P): example n's copies together
    cond = None if cond is None else cond.repeat_interleave(k, dim=0)  # (N*k, ...)
    x = sample(model, N * k, cond=cond, prefix=prefix, num_dims=D, generator=generator, **sampling)
    return x.view(N, k, D)


PIL_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}  # channels -> Pillow mode


def completion_view(known: list, completions: list, vocab, eos: int) -> str:
    """Items completed, for reading: each input's kept prefix, then its completions with a |
    where the model took over. known: N prefixes; completions: N lists of k rows of ids."""
    blocks = []
    for prefix, rows in zip(known, completions, strict=True):
        kept = vocab.decode(prefix, stop=eos)
        drawn = [vocab.decode(row[len(prefix) :], stop=eos) for row in rows]
        blocks.append(f"{kept!r}:\n" + "\n".join(f"  {kept}|{d}" for d in drawn))
    return "\n".join(blocks)


def read_image(path: Path, shape: tuple[int, ...], levels: int) -> torch.Tensor:
    """A picture file as the model's symbols (D,): grey, grey + alpha, RGB or RGBA by the
    model's 1, 2, 3 or 4 channels, quantised to its levels; its size must be the model's."""
    from darm.data.images import quantise, read_pixels

    H, W = shape[:2]
    C = shape[2] if len(shape) == 3 else 1
    if C not in PIL_MODES:
        raise DarmError(f"the model reads {C}-channel images; picture files hold 1 to 4")
    pixels = read_pixels(path, PIL_MODES[C])
    if pixels.shape[:2] != (H, W):
        raise DarmError(
            f"{path} is {pixels.shape[1]}x{pixels.shape[0]}; the model reads {W}x{H} images"
        )
    return torch.from_numpy(quantise(pixels, levels).reshape(-1))  # (H, W, C) -> (D,), raster


def save_completion_grid(
    originals: torch.Tensor,
    completions: torch.Tensor,
    image_shape: tuple[int, ...],
    levels: int,
    known_rows: int,
    path: Path,
    scale: int = 4,
) -> None:
    """One row per example: the original, then its completions; a red line marks where
    the known rows end."""
    from PIL import ImageDraw

    from darm.checkpoint import atomic_write
    from darm.plots import image_grid

    N, k, D = completions.shape
    tiles = torch.cat([originals[:, None], completions], dim=1)  # (N, k+1, D)
    tiles = tiles.reshape(N * (k + 1), *image_shape)  # (N*(k+1), H, W, C): a row per example
    grid = image_grid(tiles, levels, scale, cols=k + 1)
    grid = grid.convert("RGB")
    draw = ImageDraw.Draw(grid)
    H, pad = image_shape[0], 1
    for n in range(N):
        y = (pad + n * (H + pad) + known_rows) * scale
        draw.line([(0, y), (grid.width, y)], fill=(255, 0, 0), width=1)
    atomic_write(Path(path), lambda tmp: grid.save(tmp, format="PNG"))
