"""Completion: keep the first P dimensions of real examples (the top rows of an image, the
start of a text) and sample the rest from p(x_>P | x_<=P), several times each."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch

from darm.data.arrays import npy_symbols
from darm.data.images import PIL_MODES, conversion_note, quantise, read_pixels
from darm.errors import DarmError
from darm.files import atomic_write
from darm.models.base import ARModel, as_symbols, labels_for
from darm.plots import GRID_GREY, GRID_PAD, image_grid, pixel_levels
from darm.sampling import check_count, sample


def complete(
    model: ARModel,
    known: torch.Tensor,
    k: int,
    cond: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    num_dims: int | None = None,
    **sampling,
) -> torch.Tensor:
    """known: (N, P) first dimensions of N examples (an image model's top rows may also come
    as (N, rows, W, C)) -> k completions of each, shaped as `sample` shapes them: (N, k,
    *event_shape), or (N, k, num_dims) when a length is given (past the model's D for a
    model that has no limit)."""
    check_count(k, "k")
    known, cond = as_symbols(known, "known"), as_symbols(cond, "cond")
    if known.dim() < 2:  # named here: after the repeat the shapes would be k times theirs
        raise ValueError(f"known must be (N, P) symbols, got shape {tuple(known.shape)}")
    N = known.shape[0]
    cond = labels_for(cond, N)
    if cond is not None and cond.shape != (N,):
        raise ValueError(
            f"cond must be ({N},) labels, one an example of known, got {tuple(cond.shape)}"
        )
    prefix = known.repeat_interleave(k, dim=0)  # (N*k, P...): example n's copies together
    cond = None if cond is None else cond.repeat_interleave(k, dim=0)  # (N*k,)
    x = sample(model, N * k, cond=cond, prefix=prefix, num_dims=num_dims, generator=generator,
               **sampling)  # fmt: skip
    return x.view(N, k, *x.shape[1:])  # (N*k, ...) -> (N, k, ...)


def completion_view(known: list, completions: list, vocab, eos: int) -> str:
    """Items completed, for reading: each input's kept prefix, then its completions with a |
    where the model took over. known: N prefixes; completions: N lists of k rows of ids."""
    blocks = []
    for prefix, rows in zip(known, completions, strict=True):
        kept = vocab.decode(prefix, stop=eos)
        drawn = [vocab.decode(row[len(prefix) :], stop=eos) for row in rows]
        blocks.append(f"{kept!r}:\n" + "\n".join(f"  {kept}|{d}" for d in drawn))
    return "\n".join(blocks)


def marked_view(x: torch.Tensor, kept: list[int], k: int, vocab=None, classes=None) -> str:
    """Completed sequences for reading, a | where the model took over: corpus text decoded
    (blocks between rules), integer rows as numbers led by their class where there is one.
    x: (N*k, D), input by input; kept: N prefix lengths."""
    out = []
    for i, row in enumerate(x.tolist()):
        P = kept[i // k]
        if vocab is not None:
            out.append(f"{vocab.decode(row[:P])}|{vocab.decode(row[P:])}")
        else:
            lead = "" if classes is None else f"{classes[i]}: "
            out.append(f"{lead}{' '.join(map(str, row[:P]))} | {' '.join(map(str, row[P:]))}")
    return ("\n" + "-" * 40 + "\n" if vocab is not None else "\n").join(out)


def read_symbol_pictures(path: Path, shape: tuple[int, ...], levels: int) -> torch.Tensor:
    """Pictures as the model's symbols from an .npy, (N, D): pictures (N, *shape) or one of
    `shape`, or raster rows (N, D) or one (D,). Symbols, not intensities: they must be 0..L-1
    (a picture file is what bins intensities into the levels)."""
    D = math.prod(shape)
    a = npy_symbols(path, "--input")
    if a.shape[-len(shape) :] == tuple(shape) and a.ndim <= len(shape) + 1:
        a = a.reshape(-1, D)  # (N, *shape) or shape -> (N, D)
    elif a.shape[-1] == D and a.ndim <= 2:
        a = a.reshape(-1, D)  # (D,) -> (1, D)
    else:
        size = "x".join(map(str, shape))
        raise DarmError(
            f"--input {path} is {a.shape}; the model completes {size} pictures: (N, "
            f"{', '.join(map(str, shape))}) or (N, {D}) of its symbols"
        )
    if a.min() < 0 or a.max() >= levels:  # (compared as stored: a uint64 does not wrap)
        raise DarmError(
            f"--input {path} has value {a.max() if a.max() >= levels else a.min()}, outside "
            f"the model's {levels} levels 0..{levels - 1} (intensities 0..255 go in a picture "
            f"file, which bins them)"
        )
    return torch.from_numpy(a.astype(np.int64))


def read_images(
    path: Path, shape: tuple[int, ...], levels: int, upright: bool = True
) -> torch.Tensor:
    """A picture file as the model's symbols (N, D): one picture of the model's size, or a
    grid of them as `darm sample` writes it (tiles in reading order). Grey, grey + alpha,
    RGB or RGBA by the model's 1, 2, 3 or 4 channels; upright as read_pixels."""
    H, W = shape[:2]
    C = shape[2] if len(shape) == 3 else 1
    if C not in PIL_MODES:
        raise DarmError(f"the model reads {C}-channel images; picture files hold 1 to 4")
    if levels > 256:  # 8-bit pixels cannot tell its levels apart, in a grid or not
        raise DarmError(
            f"the model's pixels have {levels} levels and a picture file's 256 at most: "
            f"give {path.name}'s symbols as an .npy array"
        )
    pixels = read_pixels(path, PIL_MODES[C], upright)
    note = conversion_note([path], PIL_MODES[C])  # a colour picture for a grey model, say
    if note:
        print(f"note: {path}: {note}, as the model reads", file=sys.stderr)
    if pixels.shape[:2] == (H, W):  # a picture of one's own: binned as training images were
        return torch.from_numpy(quantise(pixels, levels).reshape(1, -1))  # (H, W, C) -> (1, D)
    # a grid shows 2 and 4 channels as grey and RGB, which cannot be read back
    tiles = grid_tiles(pixels, H, W) if C in (1, 3) else None
    if tiles is None:
        grids = (
            "or a grid of them written by darm sample"
            if C in (1, 3)
            else f"a sample grid of a {C}-channel model cannot be read back"
        )
        raise DarmError(
            f"{path} is {pixels.shape[0]}x{pixels.shape[1]} (rows x columns); the model reads "
            f"{H}x{W} images ({grids})"
        )
    # darm's own shading of each level, undone exactly
    return torch.from_numpy(pixel_levels(tiles, levels).reshape(len(tiles), -1))  # (N, H*W*C)


def grid_tiles(pixels: np.ndarray, H: int, W: int) -> np.ndarray | None:
    """The (N, H, W, ...) pictures of a grid drawn by `darm.plots.image_grid` (tiles of H x W
    between grey lines, every pixel then scaled up), or None if `pixels` is not one.
    Trailing all-grey tiles of the last row are taken for the grid's empty places and
    dropped (a picture all of the level drawn mid-grey, there, would go with them)."""
    height, width = pixels.shape[:2]
    for scale in range(1, min(height, width) + 1):
        if height % scale or width % scale:
            continue
        small = pixels[::scale, ::scale]  # one pixel per scale x scale block
        rows, rem_r = divmod(small.shape[0] - GRID_PAD, H + GRID_PAD)
        cols, rem_c = divmod(small.shape[1] - GRID_PAD, W + GRID_PAD)
        if rows < 1 or cols < 1 or rem_r or rem_c:
            continue
        if not np.array_equal(small.repeat(scale, 0).repeat(scale, 1), pixels):
            continue  # blocks are not constant: not this scale (or not a grid)
        inside = np.zeros(small.shape[:2], dtype=bool)
        tiles = []
        for r in range(rows):
            for c in range(cols):
                top, left = GRID_PAD + r * (H + GRID_PAD), GRID_PAD + c * (W + GRID_PAD)
                inside[top : top + H, left : left + W] = True
                tiles.append(small[top : top + H, left : left + W])
        if not (small[~inside] == GRID_GREY).all():
            continue
        while len(tiles) > 1 + (rows - 1) * cols and (tiles[-1] == GRID_GREY).all():
            tiles.pop()  # an empty place after the last picture
        return np.stack(tiles)
    return None


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

    N, k, D = completions.shape
    tiles = torch.cat([originals[:, None], completions], dim=1)  # (N, k+1, D)
    tiles = tiles.reshape(N * (k + 1), *image_shape)  # (N*(k+1), H, W, C): a row per example
    grid = image_grid(tiles, levels, scale, cols=k + 1)
    grid = grid.convert("RGB")
    draw = ImageDraw.Draw(grid)
    H = image_shape[0]
    for n in range(N):
        y = (GRID_PAD + n * (H + GRID_PAD) + known_rows) * scale
        draw.line([(0, y), (grid.width, y)], fill=(255, 0, 0), width=1)
    atomic_write(Path(path), lambda tmp: grid.save(tmp, format="PNG"))
