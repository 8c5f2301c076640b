"""The command line's data and model options that train, compare, bench and the rest
share, checked: refused with one line where they do not apply, never silently ignored."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from darm import distributed
from darm.data import (
    BLOCKED,
    BUILTIN,
    FIXED_LEVELS,
    data_format,
    load_data,
)
from darm.data.splits import examples_per_step
from darm.errors import DarmError

# data options of `train` and the data-source field each ends up in: (flag, attribute, key)
SOURCE_OPTIONS = [
    ("--format", "format", "format"),
    ("--block", "block", "block"),
    ("--levels", "levels", "levels"),
    ("--data-seed", "data_seed", "seed"),
]


def check_data_options(spec: str | None, args, read_as: str | None = None) -> None:
    """--format, --block, --levels and --data-seed where the data takes them; refused rather
    than silently ignored (a lines file has no blocks, audio no --levels, a corpus is split
    in order without a seed). read_as: the format a file is read in unless --format says
    otherwise (a checkpoint's: a corpus model reads a .txt as a corpus), else its suffix's."""
    if spec is None:  # the checkpoint's data (--init, --resume): read as it was
        return
    if spec in BUILTIN:
        if args.format is not None:
            raise DarmError(f"--format reads a PATH; the built-in {spec} has its own format")
        takes = {
            "--block": spec in BLOCKED,
            "--levels": spec == "mnist" or spec in FIXED_LEVELS,  # these name their own L
            "--data-seed": spec in ("digits", "names"),  # the others have fixed splits
        }
        what = f"the built-in {spec}"
    else:
        path = Path(spec)
        if not path.exists():
            return  # load_data names the missing file
        fmt = data_format(path, args.format or read_as)
        takes = {
            "--block": fmt in ("corpus", "audio"),
            "--levels": fmt in ("array", "images"),
            "--data-seed": fmt in ("lines", "array", "images"),
        }
        what = f"{path.name} (read as {fmt})"
    given = {flag: getattr(args, attr) for flag, attr, _ in SOURCE_OPTIONS if flag in takes}
    for flag, value in given.items():
        if value is not None and not takes[flag]:
            why = {
                "--block": "it has its own length; --block cuts a corpus or audio into blocks",
                "--levels": "its symbols are its own; --levels quantises images and arrays",
                "--data-seed": "it is split in order, not by a seeded shuffle",
            }[flag]
            raise DarmError(f"{flag} does not apply to {what}: {why}")


# config fields the data decides: L, D, the image shape, and (with --conditional) the classes
DATA_FIELDS = ("vocab_size", "seq_len", "image_shape", "num_classes")


def load_training_data(args, spec: str):
    """--data for new models (train, compare, bench), in a layout refused if it looks like
    PyTorch's (N, C, H, W): a few channels first, then a picture wider than any channel count.
    (Data read again for a trained model is read as it was.)"""
    words = getattr(args, "argv", [])  # --data given, not compare's default digits
    named = any(w == "--data" or w.startswith("--data=") for w in words)
    if named and spec in BUILTIN and Path(spec).exists() and distributed.env_context().is_main:
        print(f"warning: --data {spec} is the built-in {spec}; for the {spec} here, give "
              f"--data ./{spec}", file=sys.stderr)  # fmt: skip
    data = load_data(spec, args.format, *data_options(args))
    shape = tuple(data.image_shape or ())
    if len(shape) == 3 and shape[0] in (1, 3, 4) and min(shape[1:]) > 4:
        raise DarmError(
            f"{data.name}: examples of shape {shape} look like (C, H, W); darm reads channels "
            f"last, (H, W, C): save np.moveaxis(x, 1, -1)"
        )
    x = data["train"].x
    if x.numel() and x.min() == x.max() and distributed.env_context().is_main:  # rank 0 says it
        zeros = shape and int(x.min()) == 0  # what 16-bit pictures of small values read as
        why = " (16-bit pictures are scaled to 8 bits: values under 256 read as 0)" if zeros else ""
        print(
            f"warning: {data.name}: every symbol of the training split is {int(x.min())}, so "
            f"there is nothing to learn; check how the data was read{why}",
            file=sys.stderr,
        )
    return data


def data_options(args, block: int = 64) -> tuple:
    """(block, levels, seed) of `load_data` from --block, --levels, --data-seed."""
    block = block if args.block is None else args.block
    return block, args.levels, 42 if args.data_seed is None else args.data_seed


def model_overrides(overrides: dict, flag: str) -> dict:
    """--set fields, refusing those the data decides."""
    taken = [k for k in overrides if k in DATA_FIELDS]
    if taken:
        raise DarmError(
            f"{flag}{taken[0]} is not settable: vocab_size, seq_len and image_shape come from "
            f"the data (--block sets D of a corpus), num_classes from --conditional"
        )
    return overrides


def batch_note(batch_size: int | None, data) -> str | None:
    """The note for a --batch-size over the training examples (each step takes them all;
    a corpus's or a clip's batches are crops of one stream, so any number fits), or None."""
    if batch_size is None:
        return None
    fits = examples_per_step(data["train"], batch_size)
    if fits == batch_size:
        return None
    return (
        f"note: --batch-size {batch_size} is more than the {fits} training examples: each step "
        f"takes all {fits}"
    )


def check_counts(args, **minimum: int) -> None:
    """Integer options that have a floor, e.g. check_counts(args, steps=1): one line each."""
    for name, low in minimum.items():
        value = getattr(args, name, None)
        if value is not None and value < low:
            flag = "-n" if name == "n" else f"--{name.replace('_', '-')}"
            raise DarmError(f"{flag} must be >= {low}, got {value}")


def check_threads(args) -> None:
    """--threads at least 1 and at most 4 per CPU: PyTorch starts every thread it is given
    (100,000 hung a 2-core machine), and past the CPUs they only wait on each other."""
    check_counts(args, threads=1)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    most = 4 * (cpus or 1)
    if args.threads is not None and args.threads > most:
        raise DarmError(
            f"--threads {args.threads} is over 4 per CPU of this machine ({cpus}): at most {most}"
        )


def data_stem(spec: str) -> str:
    """A data option's name for a folder: a file's or folder's name without its suffix, the
    folder's own name for `.` or `..` (whose stems are '' and '..'), or a built-in's name."""
    return Path(os.path.abspath(spec)).stem or "data"  # abspath: '..' gone, links kept
