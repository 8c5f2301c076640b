"""Integer arrays (.npy / .npz) and images as raster-order sequences."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from darm.data.dataset import SPLITS, Dataset, seeded_split, split_note, whole_split
from darm.data.splits import TensorSplit
from darm.errors import DarmError, first_line

NPZ_SPLIT_KEYS = {"train": "x_train", "valid": "x_valid", "test": "x_test"}
# one softmax over L symbols: far beyond any real alphabet, and values above 2^63 would
# wrap around when cast to int64
MAX_LEVELS = 2**24


# uint8 pictures read as symbols: quantising them to the levels is what the images format does
PICTURES_HINT = {
    "file": "--format images bins 0..255 into the levels",
    "memory": "darm.data.images.quantise(x, levels) bins 0..255 into the levels",
}


def _check_array(a: np.ndarray, what: str, levels: int | None, read: str = "file") -> int:
    """Validate an (N, D...) integer array; return the number of levels L. read: "file" or
    "memory" (from_arrays), for a hint in the reader's own terms."""
    if a.dtype.kind not in "iub":  # signed, unsigned, bool; not float, timedelta, object
        raise DarmError(f"{what} must hold integers, got dtype {a.dtype}")
    if not 2 <= a.ndim <= 4:
        raise DarmError(
            f"{what}: each example must be (D,), (H, W) or (H, W, C), got {a.shape[1:]}"
        )
    if a.shape[0] == 0 or a[0].size == 0:
        raise DarmError(f"{what} is empty (shape {a.shape})")
    if levels is not None and not 2 <= levels <= MAX_LEVELS:  # one symbol says nothing
        raise DarmError(f"levels must be in 2..{MAX_LEVELS}, got {levels}")
    lo, hi = int(a.min()), int(a.max())
    if lo < 0:
        raise DarmError(f"{what} has negative values (min {lo}); symbols must be 0..L-1")
    if levels is not None and hi >= levels:
        pictures = f" (uint8 pictures? {PICTURES_HINT[read]})"
        hint = pictures if a.dtype == np.uint8 and 2 < a.ndim and levels < 256 else ""
        raise DarmError(f"{what} has value {hi}, outside the {levels} levels 0..{levels - 1}{hint}")
    if hi >= MAX_LEVELS:
        raise DarmError(f"{what} has value {hi}; at most {MAX_LEVELS} levels are supported")
    if a.dtype == bool:
        return levels or 2  # binary even when every value is False
    return levels or hi + 1


def _load(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise DarmError(f"data file {path} does not exist")
    if path.is_fifo():  # text streams through a pipe; np.load seeks back in its file
        raise DarmError(f"{path} is a pipe: NumPy arrays are read from an .npy or .npz file")
    if path.suffix.lower() not in (".npy", ".npz"):  # numpy's own words would be about pickles
        raise DarmError(f"integer arrays come in .npy or .npz files, not {path.name}")
    npy = path.suffix.lower() == ".npy"
    try:
        loaded = np.load(path, allow_pickle=False)  # read by its content, whatever its name
        if isinstance(loaded, np.ndarray):
            if not npy:
                raise DarmError(f"{path} is an .npy array under an .npz name: rename it .npy")
            return {"x": loaded}
        with loaded as f:
            if npy:
                raise DarmError(f"{path} is an .npz archive under an .npy name: rename it .npz")
            arrays = {k: f[k] for k in f.files}
    except DarmError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise DarmError(not_an_array_file(path, e)) from None
    for key, a in arrays.items():
        if not isinstance(a, np.ndarray):  # a member that is not an .npy file: raw bytes
            raise DarmError(f"{path}: the archive's member {key!r} is not an .npy array")
    return arrays


def not_an_array_file(path: Path, e: Exception) -> str:
    """What np.load's error means, in a line (numpy's own words would advise unpickling)."""
    if "Object arrays" in str(e):  # a file of Python objects: only unpickling reads them
        return f"{path} holds an object array (darm never unpickles): save integers"
    if "pickle" in str(e):  # numpy's guess for any file without its header
        return f"{path} is not a NumPy array file (text or a pickle? darm never unpickles)"
    return f"cannot read {path} as a NumPy array file: {first_line(e)}"


def array_dataset(
    path: Path,
    levels: int | None = None,
    seed: int = 42,
    fractions=(0.1, 0.1),
    name: str | None = None,
    transform=None,
    whole: bool = False,
) -> Dataset:
    """Arrays (N, D) or images (N, H, W) / (N, H, W, C) of symbols 0..L-1.

    An .npz with x_train / x_valid / x_test (and optional y_*) keeps its own split; a single
    array (an .npy, or an .npz key `x` with optional `y`) is split with a fixed seed, or,
    with `whole` (other data scored by a trained model), all in test: one row is enough.
    transform(x, what) -> symbols maps each split's raw array first (image quantising).
    """
    source = {"format": "array", "path": str(path), "levels": levels, "seed": seed}
    return keyed_dataset(
        _load(path), path.name, source, levels, seed, fractions, name or path.stem, transform,
        whole,
    )  # fmt: skip


def from_arrays(
    x,
    y=None,
    levels: int | None = None,
    seed: int = 42,
    fractions=(0.1, 0.1),
    name: str = "arrays",
) -> Dataset:
    """Integer arrays in memory (NumPy or torch) as a Dataset, read as an .npy / .npz file of
    them is: x (N, D), (N, H, W) or (N, H, W, C) symbols, split into train / valid / test
    with a fixed seed (y: (N,) class labels); or x a dict {"train": ..., "valid": ...,
    "test": ...} of the data's own split (y a dict likewise). L is levels, or the largest
    value + 1. A run trained on it cannot reload it by itself (`darm eval` needs --data):
    np.save / np.savez it to keep the data beside the run."""

    def numpy(a, what: str) -> np.ndarray:
        if isinstance(a, torch.Tensor) and (a.is_floating_point() or a.is_complex()):
            raise DarmError(f"{what} must hold integers, got {a.dtype}")  # bfloat16 too
        if isinstance(a, torch.Tensor) and a.is_meta:
            raise DarmError(f"{what} is on the meta device: it holds no values")
        a = a.numpy(force=True) if isinstance(a, torch.Tensor) else np.asarray(a)
        if a.dtype == object:
            raise DarmError(f"{what} must be an array of integers, not of Python objects")
        return a

    if levels is not None and (isinstance(levels, bool) or not isinstance(levels, int)):
        raise DarmError(f"levels must be an integer, got {levels!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise DarmError(f"seed must be an integer in 0..2**63-1, got {seed!r}")
    if len(fractions) != 2 or not all(0 <= f < 1 for f in fractions) or sum(fractions) >= 1:
        raise DarmError(f"fractions must be (valid, test), each >= 0, summing below 1: {fractions}")
    if isinstance(x, dict) != isinstance(y, dict) and y is not None:
        raise DarmError("x and y must both be arrays, or both dicts of train, valid and test")
    if isinstance(x, dict):
        if set(x) != set(SPLITS) or (y is not None and set(y) != set(SPLITS)):
            raise DarmError(f"a dict of splits needs exactly the keys {', '.join(SPLITS)}")
        arrays = {NPZ_SPLIT_KEYS[s]: numpy(x[s], f"x[{s!r}]") for s in SPLITS}
        if y is not None:
            arrays.update({f"y_{s}": numpy(y[s], f"y[{s!r}]") for s in SPLITS})
    else:
        arrays = {"x": numpy(x, "x")} | ({} if y is None else {"y": numpy(y, "y")})
    source = {"format": "memory", "levels": levels, "seed": seed}
    return keyed_dataset(arrays, name, source, levels, seed, fractions, name)


def keyed_dataset(
    arrays: dict[str, np.ndarray],
    where: str,
    source: dict,
    levels: int | None = None,
    seed: int = 42,
    fractions=(0.1, 0.1),
    name: str = "arrays",
    transform=None,
    whole: bool = False,
) -> Dataset:
    """A Dataset from arrays under .npz keys (x and y, or x_train / y_train ...), as
    array_dataset describes; `where` names them in errors (a file name)."""
    own = all(k in arrays for k in NPZ_SPLIT_KEYS.values())  # the data's own split
    if own and "y" in arrays and not any(f"y_{s}" in arrays for s in SPLITS):
        raise DarmError(
            f"{where} has its own split (x_train/x_valid/x_test) and labels under y: give "
            f"them as y_train/y_valid/y_test, one per split"
        )
    if own:
        xs = {s: arrays[NPZ_SPLIT_KEYS[s]] for s in SPLITS}
        ys = {s: arrays.get(f"y_{s}") for s in SPLITS}
        notes = "its own train/valid/test split"
    else:
        key = "x" if "x" in arrays else (next(iter(arrays)) if len(arrays) == 1 else None)
        if key == "y":
            raise DarmError(f"{where} holds only y, the labels: the examples go under x")
        if key is None:
            raise DarmError(
                f"{where} has keys {sorted(arrays)}; expected x (and y), or x_train/x_valid/x_test"
            )
        x, y = arrays[key], arrays.get("y")
        if whole and x.ndim == 1:  # one row saved flat: scored whole, it is that one row
            x = x[None]  # (D,) -> (1, D)
        if y is not None and (y.ndim != 1 or len(y) != len(x)):
            raise DarmError(f"{where}: y must have shape ({len(x)},) like x's rows, got {y.shape}")
        if x.ndim < 2 or len(x) < (1 if whole else 3):
            need = "N >= 1" if whole else "N >= 3 to split it into train, valid and test"
            raise DarmError(f"{where}: need an (N, D) array with {need}, got shape {x.shape}")
        idx = whole_split(len(x)) if whole else seeded_split(len(x), fractions, seed)
        xs = {s: x[i.numpy()] for s, i in idx.items()}
        ys = {s: None if y is None else y[i.numpy()] for s, i in idx.items()}
        notes = "scored whole" if whole else split_note(fractions, seed)
    # a problem is named where it is: the data's own split's key, else the one array
    what = {s: f"{where} {NPZ_SPLIT_KEYS[s]}" if own else where for s in SPLITS}
    if transform is not None:
        xs = {s: transform(xs[s], what[s]) for s in SPLITS}
    # scored whole, train and valid are empty on purpose; otherwise every split must hold rows
    checked = [s for s in SPLITS if len(xs[s])] if whole else SPLITS
    read = "memory" if source.get("format") == "memory" else "file"
    L = max(_check_array(xs[s], what[s], levels, read) for s in checked)
    event = {xs[s].shape[1:] for s in SPLITS}
    if len(event) != 1:
        raise DarmError(f"{where}: splits have different example shapes {sorted(event)}")
    data = make_dataset(name, xs, ys, L, event.pop(), source, notes, where=where)
    if levels is None and L > 256:  # (a byte's levels are never worth the count)
        data.caveat = sparse_levels_note(L, [xs[s] for s in checked])
        data.info["sparse_levels"] = data.caveat  # the cause of a model too large, if one is
    return data


def sparse_levels_note(L: int, arrays: list[np.ndarray]) -> str:
    """A warning for L taken from a large largest value that few values share: IDs, say,
    where each example would get an L-way softmax mostly over values that never occur."""
    seen = np.zeros(L, dtype=bool)  # which of the L values occur: no sort, no copy of x
    for a in arrays:
        seen[a.ravel()] = True
    distinct = int(seen.sum())
    if distinct * 4 > L:
        return ""
    return (
        f"L = {L} from the largest value, but only {distinct} distinct values occur: map "
        f"them to 0..{distinct - 1} first (np.unique(x, return_inverse=True))"
    )


def make_dataset(name, xs, ys, L, shape, source, notes, class_names=None, where=None) -> Dataset:
    """Flatten (N, *shape) arrays into raster-order sequences (N, D); `where` names the labels
    in errors (a file name; the data's name by default)."""
    where = where or name
    labelled = [s for s in SPLITS if ys[s] is not None]
    if labelled and len(labelled) < len(SPLITS):
        raise DarmError(f"{where}: labels for {', '.join(labelled)} only; give all or none")
    has_labels = bool(labelled)
    num_classes = 0
    if has_labels:
        for s in SPLITS:
            y = ys[s]
            if y.ndim != 1 or y.dtype.kind not in "iu":
                got = f"{y.dtype} {y.shape}"
                raise DarmError(f"{where}: {s} labels must be 1-D integers, got {got}")
            if len(y) != len(xs[s]):
                raise DarmError(f"{where}: {len(y)} labels for {len(xs[s])} {s} examples")
            if len(y) and int(y.min()) < 0:  # a class is an index 0..num_classes-1
                raise DarmError(f"{where}: {s} labels must be >= 0, got {int(y.min())}")
            if len(y) and int(y.max()) >= MAX_LEVELS:  # one embedding row a class
                raise DarmError(f"{where}: {s} label {int(y.max())} is over {MAX_LEVELS - 1}")
        num_classes = int(max(int(ys[s].max()) for s in SPLITS if len(ys[s]))) + 1
    splits = {}
    for s in SPLITS:
        x = torch.from_numpy(np.ascontiguousarray(xs[s]).astype(np.int64))
        x = x.reshape(len(x), int(np.prod(shape)))  # (N, H, W) -> (N, H*W): raster order
        y = torch.from_numpy(ys[s].astype(np.int64)) if has_labels else None
        splits[s] = TensorSplit(x, y)
    return Dataset(
        name=name,
        kind="image" if len(shape) >= 2 else "array",
        vocab_size=L,
        seq_len=int(np.prod(shape)),
        splits=splits,
        source=source,
        image_shape=tuple(shape) if len(shape) >= 2 else None,
        num_classes=num_classes,
        class_names=class_names,
        notes=notes,
    )


def npy_row(path: Path, flag: str) -> list[int]:
    """One row of integer symbols saved by np.save, (P,) or (1, P): an array model's prompt."""
    rows = npy_rows(path, flag)
    if len(rows) != 1:
        raise DarmError(
            f"{flag}: {path} must hold one row of integer symbols, (P,) or (1, P); "
            f"got {len(rows)} rows"
        )
    return rows[0]


def npy_symbols(path: Path, flag: str) -> np.ndarray:
    """An integer array saved by np.save, as a user gives it to `flag`."""
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:  # EOFError: an empty file
        raise DarmError(f"{flag}: {not_an_array_file(path, e)}") from None
    if not isinstance(a, np.ndarray):  # an .npz under an .npy name loads as its archive
        raise DarmError(f"{flag}: {path} is an .npz archive; save the array with np.save")
    if a.dtype.kind not in "iub" or a.size == 0:
        raise DarmError(f"{flag}: {path} must hold integer symbols; got {a.dtype} {a.shape}")
    return a


def npy_rows(path: Path, flag: str) -> list[list[int]]:
    """Rows of integer symbols saved by np.save, (P,) or (N, P): array models' prompts."""
    a = npy_symbols(path, flag)
    if a.ndim not in (1, 2):
        raise DarmError(
            f"{flag}: {path} must hold rows of integer symbols, (P,) or (N, P); "
            f"got {a.dtype} {a.shape}"
        )
    rows = a.reshape(-1, a.shape[-1]).tolist()  # (P,) -> (1, P); (N, P) as it is
    return [[int(v) for v in row] for row in rows]  # Python ints (bools too): no uint64 wrap
