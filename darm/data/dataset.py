"""A dataset: three splits of discrete sequences plus what is needed to read them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch

from darm.data.splits import TensorSplit
from darm.data.vocab import Vocabulary
from darm.errors import DarmError

SPLITS = ("train", "valid", "test")


@dataclass
class Dataset:
    name: str
    kind: str  # lines | corpus | array | image | audio
    vocab_size: int  # L: symbols per dimension
    seq_len: int  # D: dimensions per example (the longest item for lines)
    splits: dict[str, TensorSplit]
    source: dict[str, Any]  # how to load it again (saved in checkpoints)
    vocab: Vocabulary | None = None  # text: the symbols
    eos: int | None = None  # lines: index of the end symbol
    image_shape: tuple[int, ...] | None = None  # images: (H, W) of the raster order
    num_classes: int = 0  # labels y in [0, num_classes), 0 if unlabelled
    class_names: list[str] | None = None  # the name of each label, where the data has them
    notes: str = ""  # provenance and split, for humans
    caveat: str = ""  # what the reader did that the user may not expect, shown in the summary
    info: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, split: str) -> TensorSplit:
        return self.splits[split]

    def __repr__(self) -> str:
        # the summary, not every field: a lines file's `info` holds a number per item
        return f"<Dataset {self.summary()}>"

    def summary(self) -> str:
        sizes = ", ".join(f"{k} {len(v)}" for k, v in self.splits.items())
        n = self.num_classes
        labels = f", {n} class{'es' * (n != 1)}" if n else ""
        if self.class_names and len(self.class_names) <= 12:
            labels += f" ({', '.join(f'{i}={c}' for i, c in enumerate(self.class_names))})"
        caveat = f"; {self.caveat}" if self.caveat else ""
        return (
            f"{self.name}: {self.kind}, L={self.vocab_size}, D={self.seq_len}{labels} "
            f"({sizes}){caveat}"
        )

    def decode(self, x: torch.Tensor) -> str | list[str]:
        """Text of one example (D,), or of each row of a batch (B, D) as a list; cut at the
        end symbol for line datasets. Text data only: other data's rows are their symbols."""
        if self.vocab is None:
            raise DarmError(
                f"{self.name} is {self.kind} data, not text: there is nothing to decode "
                f"(x.tolist() gives its symbols)"
            )
        x = torch.as_tensor(x)  # a list, a numpy array: as a tensor
        if x.dim() > 2 or x.is_floating_point():
            raise ValueError(
                f"decode takes symbols of one example (D,) or a batch (B, D), got "
                f"{x.dtype} of shape {tuple(x.shape)}"
            )
        if x.dim() == 2:
            return [self.vocab.decode(row, stop=self.eos) for row in x.tolist()]
        return self.vocab.decode(x.tolist(), stop=self.eos)


def check_dataset(data: Any, what: str = "data") -> None:
    """A TypeError that names the mix-up where a Dataset is wanted (a split, a tensor)."""
    if not isinstance(data, Dataset):
        hint = " (data['train'] is one of its splits)" if hasattr(data, "iter_batches") else ""
        raise TypeError(
            f"{what} must be a darm.data Dataset, e.g. load_data('digits'), got "
            f"{type(data).__name__}{hint}"
        )


def digest(data: Dataset) -> str:
    """A fingerprint of the examples as read, split by split (symbols, labels, masks): a
    file edited after training reads into other splits, and a checkpoint can tell."""
    h = hashlib.blake2b(digest_size=16)
    for name in SPLITS:
        split = data.splits[name]
        for t in (split.x, split.y, split.mask):
            h.update(b"-" if t is None else f"{tuple(t.shape)}".encode())
            if t is not None:
                h.update(t.contiguous().numpy())  # its buffer, not a copy
    return h.hexdigest()


def relabel_by_name(data, names: list[str] | None, num_classes: int = 0):
    """Labels of other data in the checkpoint's numbering: a folder holding only some of the
    classes numbers them 0, 1, ... among themselves, so `10/` and `2/` are matched by name.
    A model whose classes have no names (digits, MNIST, an array's labels) knows them by
    number: its sub-folders are named 0, 1, ... num_classes - 1."""
    if not data.class_names:
        return data
    names = names or [str(i) for i in range(num_classes)]
    if not names:  # an unconditional model: the labels are not used
        return data
    unknown = [c for c in data.class_names if c not in names]
    if unknown:
        raise DarmError(
            f"{data.name} has classes the model was not trained on: {', '.join(unknown)} "
            f"(its classes: {', '.join(names)})"
        )
    index = torch.tensor([names.index(c) for c in data.class_names])  # data's -> model's
    for split in data.splits.values():
        split.y = index[split.y]
    data.class_names, data.num_classes = list(names), len(names)
    return data


def untrained_classes(data: Dataset) -> str:
    """A note naming the classes that occur in valid or test but never in train: a
    conditional model learns p(x | y) of none of them, so their examples are scored under a
    label it never trained with. "" when train holds every class (or there are no labels,
    or no training split: data scored whole)."""
    if not data.num_classes or not len(data["train"]):
        return ""
    trained = set(data["train"].y.unique().tolist())
    held_out = {s: set(data[s].y.unique().tolist()) - trained for s in ("valid", "test")}
    unseen = sorted(held_out["valid"] | held_out["test"])
    if not unseen:
        return ""

    def named(c: int) -> str:  # as the summary names classes: 3=cat, or 3
        label = f"{c}={data.class_names[c]}" if data.class_names else str(c)
        return f"{label} ({' and '.join(s for s in held_out if c in held_out[s])})"

    n = len(unseen)
    shown = ", ".join(named(c) for c in unseen[:5]) + ", ..." * (n > 5)
    return f"note: {n} class{'es' * (n != 1)} only in valid / test, never trained on: {shown}"


def split_note(fractions: tuple[float, float], seed: int) -> str:
    """'seeded (42) split 80%/10%/10%'."""
    train = 1 - sum(fractions)
    return f"seeded ({seed}) split {train:.0%}/{fractions[0]:.0%}/{fractions[1]:.0%}"


def whole_split(n: int) -> dict[str, torch.Tensor]:
    """Indices of other data scored whole: every item in test, train and valid empty."""
    empty = torch.zeros(0, dtype=torch.long)
    return {"train": empty, "valid": empty, "test": torch.arange(n)}


def seeded_split(n: int, fractions: tuple[float, float], seed: int) -> dict[str, torch.Tensor]:
    """Indices of a seeded shuffle cut into train / valid / test by (valid, test) fractions.
    Every split gets at least one item (n >= 3): an empty one could not be scored."""
    if n < 3:
        raise ValueError(f"cannot split {n} items into train, valid and test")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_valid, n_test = (max(1, int(round(n * f))) for f in fractions)
    n_train = n - n_valid - n_test
    return {
        "train": perm[:n_train],
        "valid": perm[n_train : n_train + n_valid],
        "test": perm[n_train + n_valid :],
    }
