"""Datasets: built-in names or a user's file, all turned into discrete sequences."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch

from darm.data.arrays import array_dataset, from_arrays
from darm.data.audio import audio_dataset
from darm.data.dataset import SPLITS, Dataset, digest, relabel_by_name
from darm.data.digits import digits_dataset
from darm.data.images import (
    IMAGE_SUFFIXES,
    binarized_mnist_dataset,
    image_array_dataset,
    image_folder_dataset,
    mnist_dataset,
    reads_upright,
)
from darm.data.text import corpus_dataset, lines_dataset
from darm.data.vocab import Vocabulary, saved_vocab
from darm.errors import DarmError

BUNDLED = Path(__file__).resolve().parent.parent / "datasets"

BUILTIN = {
    "digits": "scikit-learn 8x8 digits, 17 grey levels, D=64, labels 0-9 (the default)",
    "names": "32k US first names, one per line (makemore's names.txt), deduplicated",
    "shakespeare": "Tiny Shakespeare, 1.1M characters as one corpus cut in blocks",
    "speech": "7.8 s of synthetic speech, 16 kHz, mu-law 256 levels, windows of --block",
    "binarized_mnist": "binarized MNIST 28x28, L=2, official split 50000/10000/10000",
    "mnist": "MNIST 28x28, 256 grey levels (or --levels), labels 0-9",
}

FORMATS = ("lines", "corpus", "array", "images", "audio")
FIXED_LEVELS = {"digits": 17, "binarized_mnist": 2, "speech": 256}  # L is the data's own
BLOCKED = ("shakespeare", "speech")  # the built-ins cut in blocks of `block` symbols
# built-ins whose checkpoints record the bundled file's path
BUNDLED_FILES = {
    "names": "names.txt",
    "shakespeare": "tinyshakespeare.txt",
    "speech": "speech_16k.wav",
}


def load_data(
    spec: str,
    format: str | None = None,
    block: int = 64,
    levels: int | None = None,
    seed: int = 42,
    vocab: Vocabulary | None = None,
    max_len: int | None = None,
    whole: bool = False,
    channels: int | None = None,
    upright: bool = True,
) -> Dataset:
    """A built-in name (digits, names, shakespeare, speech, binarized_mnist, mnist) or a
    path: .txt (format lines or corpus), .npy / .npz (integer arrays, or with format images
    uint8 pictures quantised to `levels`), a folder of images, .wav (audio, mu-law).
    whole: other data for a trained model, scored whole: lines, image folders, single arrays,
    corpora and audio all in test (so one item, one row or a short passage is enough); an
    .npz's own split is kept. (`darm eval` reads a single picture file itself.)
    channels: a folder's images read with this many (a trained model's), else grey or RGB
    as they are. upright: a folder's pictures turned as their EXIF tags say (reads_upright)."""
    fixed = FIXED_LEVELS.get(spec)
    if fixed is not None and levels not in (None, fixed):
        raise DarmError(f"{spec} has its own {fixed} levels; it cannot be read in {levels} levels")
    if spec == "digits":
        return digits_dataset(seed)
    if spec == "names":
        path = BUNDLED / BUNDLED_FILES[spec]
        return lines_dataset(path, "names", seed, vocab=vocab, max_len=max_len)
    if spec == "shakespeare":
        return corpus_dataset(BUNDLED / BUNDLED_FILES[spec], block, "shakespeare", vocab=vocab)
    if spec == "speech":
        return audio_dataset(BUNDLED / BUNDLED_FILES[spec], block, "speech")
    if spec == "binarized_mnist":
        return binarized_mnist_dataset(BUNDLED / "binarized_mnist.npz")
    if spec == "mnist":
        return mnist_dataset(BUNDLED / "mnist_uint8.npz", 256 if levels is None else levels)
    path = Path(spec)
    if not path.exists():
        raise DarmError(
            f"no data file {spec!r} and no built-in dataset of that name; "
            f"built-in: {', '.join(BUILTIN)}"
        )
    if path.is_char_device() or path.is_block_device():  # /dev/zero would be read forever
        raise DarmError(f"{spec} is a device, not a data file (a file, a folder, or a pipe)")
    # absolute, so a run records where its data is, whichever folder it is used from later
    # (abspath, not resolve: a symlink the user named stays the name recorded)
    path = Path(os.path.abspath(path))
    format = data_format(path, format)
    if format not in FORMATS:
        raise DarmError(f"unknown data format {format!r}; valid: {', '.join(FORMATS)}")
    if format == "lines":
        return lines_dataset(path, seed=seed, vocab=vocab, max_len=max_len, whole=whole)
    if format == "corpus":
        return corpus_dataset(path, block, vocab=vocab, whole=whole)
    if format == "audio":
        return audio_dataset(path, block, whole=whole)
    if format == "images":
        if path.is_dir():
            levels = 256 if levels is None else levels
            return image_folder_dataset(
                path, levels, seed, whole=whole, channels=channels, upright=upright
            )
        if path.suffix.lower() in IMAGE_SUFFIXES:
            raise DarmError(f"{path} is one image; give the folder that holds the images")
        if path.suffix.lower() not in (".npy", ".npz"):
            raise DarmError(
                f"--format images reads a folder of images or an .npy/.npz of uint8 pictures, "
                f"not {path.name}"
            )
        return image_array_dataset(path, 256 if levels is None else levels, seed, whole=whole)
    if path.is_dir():
        raise DarmError(f"{path} is a folder, not an .npy/.npz of integer arrays")
    return array_dataset(path, levels=levels, seed=seed, whole=whole)


def data_format(path: Path, format: str | None = None) -> str:
    """How a path is read: `format` if given, else by what it is: a folder of images, .npy /
    .npz integer arrays, .wav audio, anything else one item per line."""
    if format is not None:
        return format
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        return "images"
    return {".npy": "array", ".npz": "array", ".wav": "audio"}.get(path.suffix.lower(), "lines")


def same_data(spec: str, source: dict[str, Any], run_dir: Path | None = None) -> bool:
    """Whether `spec` (a built-in name or a path) names the data `source` was read from
    (found as `located` finds it from run_dir)."""
    source = located(source, run_dir)
    if source.get("format") == "builtin":
        return spec == source.get("name")
    if spec in BUNDLED_FILES:
        spec = str(BUNDLED / BUNDLED_FILES[spec])
    return "path" in source and Path(spec).resolve() == Path(source["path"]).resolve()


def load_from_source(
    meta: dict[str, Any],
    seq_len: int,
    run_dir: Path | None = None,
    changed: str = "warn",
    conditional: bool = True,
) -> Dataset:
    """Reload the data a checkpoint was trained on from its data record `meta`: the same
    split, vocabulary and class numbering (a fine-tuned model's classes, numbered by name).
    run_dir: the checkpoint's folder, where a moved project's data is looked for.
    A file that no longer reads into the examples the run saw (edited since: its seeded
    split moved) is named on stderr, or with changed="refuse" refused (--resume).
    conditional: whether the model reads the labels, which are then numbered as it numbers them."""
    source = located(meta["source"], run_dir)
    check_rereadable(source)
    data = _reload(source, saved_vocab(meta), seq_len, image_channels(meta))
    if conditional:  # (an unconditional model reads no labels: a class added since is fine)
        data = relabel_by_name(data, meta.get("class_names"))
    if meta.get("digest") and digest(data) != meta["digest"]:
        if "path" in source:
            what = f"{source['path']} has changed since the run read it"
            way = "--init starts a new run on it from these weights"
        else:  # a built-in whose splits were cut down (or replaced) in Python before train()
            what = f"the run trained on other examples than the built-in {source['name']!r} holds"
            way = "resume it in Python with the same Dataset, or --init a new run from its weights"
        if changed == "refuse":  # the run would go on over other splits
            raise DarmError(f"{what}; {way}")
        if source.get("format") in ("corpus", "audio"):  # split by position, not shuffled
            effect = "it is split by position, so scores on it may differ from the run's own"
        else:
            effect = "its splits differ, so test may hold examples the model trained on"
        print(f"warning: {what}: {effect}", file=sys.stderr)
    return data


def as_built_in(data: Dataset) -> bool:
    """Whether the data is a built-in as load_data gives it, its splits not cut down or
    replaced in Python: then a checkpoint need not fingerprint it (hashing MNIST's splits
    takes a second, at every reload)."""
    source = data.source
    if source.get("format") != "builtin":
        return False
    fresh = load_data(source["name"], levels=source.get("levels"), seed=source.get("seed", 42))

    def same(a, b) -> bool:
        return a is b or (a is not None and b is not None and torch.equal(a, b))

    return all(
        same(getattr(data.splits[s], t), getattr(fresh.splits[s], t))
        for s in SPLITS
        for t in ("x", "y", "mask")
    )


def bundled_name(source: dict[str, Any]) -> str | None:
    """The built-in name of a bundled file a run read (`shakespeare`, not tinyshakespeare),
    so it is named alike on every command; None for a file of the user's."""
    return next((name for name in BUNDLED_FILES if same_data(name, source)), None)


def located(source: dict[str, Any], run_dir: Path | None) -> dict[str, Any]:
    """The source with the path that exists now: the recorded one, else the one relative to
    the run folder (the data moved together with the run), else the recorded one still, for
    the error message."""
    if "from_run" not in source or run_dir is None or Path(source["path"]).exists():
        return source
    moved = Path(os.path.normpath(Path(run_dir).absolute() / source["from_run"]))
    return {**source, "path": str(moved)} if moved.exists() else source


def check_rereadable(source: dict[str, Any]) -> None:
    """Refuse, before opening it, a run's data that came from a pipe: read once when the run
    trained, it would wait forever for a second writer (or, gone, be called missing)."""
    path = source.get("path")
    # a pipe, or one gone with the shell that made it (bash's <(...) is /dev/fd/N)
    gone = path is not None and path.startswith(("/dev/fd/", "/proc/")) and not Path(path).exists()
    if path is not None and (Path(path).is_fifo() or gone):
        raise DarmError(
            f"the run's data came from the pipe {source['path']}, which cannot be read twice: "
            f"copy the data to a file and train from that, or score a copy with eval --data"
        )


def image_channels(meta: dict[str, Any]) -> int | None:
    """Channels of the images a run's data record says it read, None if not images."""
    shape = meta.get("image_shape")
    return (shape[2] if len(shape) == 3 else 1) if shape else None


def _reload(
    source: dict[str, Any], vocab: Vocabulary | None, seq_len: int, channels: int | None
) -> Dataset:
    fmt = source.get("format")
    if fmt == "builtin":
        return load_data(source["name"], levels=source.get("levels"), seed=source.get("seed", 42))
    if fmt == "lines":
        return lines_dataset(
            Path(source["path"]), bundled_name(source), source["seed"], vocab=vocab,
            max_len=seq_len,
        )  # fmt: skip
    if fmt == "corpus":
        return corpus_dataset(
            Path(source["path"]), source["block"], bundled_name(source), vocab=vocab
        )
    if fmt == "array":
        return array_dataset(
            Path(source["path"]), levels=source.get("levels"), seed=source.get("seed", 42)
        )
    if fmt == "images":
        return load_data(
            source["path"], "images", levels=source["levels"], seed=source["seed"],
            channels=channels, upright=reads_upright(source),
        )  # fmt: skip
    if fmt == "audio":
        return audio_dataset(Path(source["path"]), source["block"], bundled_name(source))
    if fmt == "memory":
        raise DarmError(
            "the run was trained on arrays in memory (darm.data.from_arrays), which it cannot "
            "read again: name a saved copy (np.save / np.savez) with --data (eval, deps, "
            "train --init), give complete its own --input, or resume it from Python with the "
            "arrays (train(..., resume_from=...))"
        )
    raise DarmError(f"checkpoint names an unknown data source {source!r}")


__all__ = [
    "Dataset", "Vocabulary", "data_format", "from_arrays", "load_data", "load_from_source",
    "same_data",
    "BUILTIN", "SPLITS",
]  # fmt: skip
