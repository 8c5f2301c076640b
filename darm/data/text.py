"""Text as sequences of characters: one item per line, or one corpus cut in blocks."""

from __future__ import annotations

from pathlib import Path

import torch

from darm.data.dataset import Dataset, seeded_split, split_note, whole_split
from darm.data.splits import CorpusSplit, TensorSplit, split_starts
from darm.data.vocab import EOS, Vocabulary, unseen_in_training
from darm.errors import DarmError

# items are padded to the longest one: refuse a padded (N, D) table above this many symbols
# (9 bytes each with the mask) instead of running out of memory
MAX_PADDED = 2**28


def read_text(path: Path) -> str:
    if not path.exists():
        raise DarmError(f"data file {path} does not exist")
    if path.is_dir():
        raise DarmError(f"data path {path} is a folder, expected a text file")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM marks the encoding, not a symbol
    except UnicodeDecodeError as e:
        raise DarmError(
            f"{path} is not UTF-8 text (byte {e.start}){what_it_is(e.object)}"
        ) from None
    if not text.strip():
        raise DarmError(
            f"data file {path} is empty" if not text else f"data file {path} holds only blank lines"
        )
    return text


# the first bytes of files often mistaken for text, and what to do with each
MAGIC = {b"\xff\xfe": "UTF-16 text: save it as UTF-8", b"\xfe\xff": "UTF-16 text: save it as UTF-8",
         b"\x1f\x8b": "gzip-compressed data: decompress it first",
         b"PK\x03\x04": "a zip archive (an .npz?), not text",
         b"RIFF": "a WAV file, not text", b"\x89PNG": "a PNG picture, not text",
         b"\x93NUMPY": "an .npy array, not text"}  # fmt: skip


def what_it_is(head: bytes) -> str:
    """A hint from the first bytes of a file that is not UTF-8: ': it looks ...', or ''."""
    kind = next((v for k, v in MAGIC.items() if head.startswith(k)), None)
    return f": it looks like {kind}" if kind else ""


def lines_dataset(
    path: Path,
    name: str | None = None,
    seed: int = 42,
    fractions=(0.1, 0.1),
    vocab: Vocabulary | None = None,
    max_len: int | None = None,
    whole: bool = False,
) -> Dataset:
    """Items one per line, each ended by the end symbol; duplicates dropped before the
    seeded split (a repeated item in train and test would flatter test NLL). whole: every
    item in test (other data, scored whole by a trained model: one item is enough), repeats
    kept: each line is scored as often as the file holds it. With a `vocab` (a trained
    model's) the summary does not name symbols this file's training split lacks: the model
    was trained on other data, or on this split already (and was told so then)."""
    # "\n" alone ends an item (read_text turned \r\n and \r into it): splitlines() would
    # also cut at U+2028, U+0085, form feeds and the like inside a line
    raw = read_text(path).split("\n")
    # an item is its text: the spaces around it are not, nor a BOM at a line's start (files
    # joined by cat keep each one's BOM: 'ann' and '\ufeffann' would be two items)
    lines = [s.lstrip("\ufeff").strip() for s in raw]
    trimmed = sum(1 for s, r in zip(lines, raw) if s and s != r.lstrip("\ufeff"))
    numbers = [i + 1 for i, s in enumerate(lines) if s]  # each item's line in the file
    lines = [s for s in lines if s]  # blank lines separate nothing
    first = {}  # item -> the line it first appears on
    for s, n in zip(lines, numbers):
        first.setdefault(s, n)
    items = lines if whole else list(first)  # unique, first-seen order
    numbers = numbers if whole else list(first.values())
    if len(items) < 3 and not whole:
        found = "one distinct non-empty line" if len(items) == 1 else f"{len(items)} distinct lines"
        raise DarmError(f"{path} has {found}; need at least 3 (train, valid, test)")
    own_vocab = vocab is None
    vocab = vocab or Vocabulary.from_text(items, eos=True)
    D = max(len(s) for s in items) + 1
    if len(items) * D > MAX_PADDED:
        raise DarmError(
            f"{path}: padding {len(items)} lines to the longest ({D - 1} symbols) needs "
            f"{len(items) * D:,} entries; split the long lines, or read it with --format corpus"
        )
    if max_len is not None and D > max_len:
        raise DarmError(
            f"{path}: the longest line has {D - 1} symbols; at most {max_len - 1} fit (D = "
            f"{max_len} with the end symbol)"
        )
    D = max_len or D
    x = torch.full((len(items), D), vocab.index[EOS], dtype=torch.long)
    mask = torch.zeros(len(items), D, dtype=torch.bool)
    for i, s in enumerate(items):
        ids = vocab.encode(s, f"{path} line {numbers[i]}")
        x[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[i, : len(ids) + 1] = True  # the symbols and the end symbol are scored
    idx = whole_split(len(items)) if whole else seeded_split(len(items), fractions, seed)
    splits = {k: TensorSplit(x[v], None, mask[v]) for k, v in idx.items()}
    repeats = len(lines) - len(items)
    caveats = [f"{repeats} repeated line{'s' * (repeats != 1)} dropped"] if repeats else []
    if trimmed:
        caveats.append(f"{trimmed} line{'s' * (trimmed != 1)} trimmed of the spaces around "
                       "them, which --format corpus keeps")  # fmt: skip
    if not whole and own_vocab:
        train = idx["train"]
        caveats.append(unseen_in_training(vocab, x[train][mask[train]], x[mask]))
    data = Dataset(
        name=name or path.stem,
        kind="lines",
        vocab_size=len(vocab),
        seq_len=D,
        splits=splits,
        source={"format": "lines", "path": str(path), "seed": seed},
        vocab=vocab,
        eos=vocab.index[EOS],
        notes=f"{len(items)} lines, scored whole"
        if whole
        else f"{len(items)} distinct lines (deduplicated), {split_note(fractions, seed)}",
        caveat="; ".join(filter(None, caveats)),
    )
    # which line of the file each example is, for people reading per-example results
    data.info["lines"] = {k: [numbers[j] for j in v.tolist()] for k, v in idx.items()}
    return data


def corpus_dataset(
    path: Path,
    block: int,
    name: str | None = None,
    holdout: float = 0.1,
    vocab: Vocabulary | None = None,
    whole: bool = False,
) -> Dataset:
    """One continuous text: the first 90% trains, the last 10% is held out, its first half
    for validation and its second half for test. Models see blocks of `block` symbols.
    whole: all of it in test (a passage scored by a trained model: any length will do).
    With a `vocab`, no caveat of unseen symbols, as for lines_dataset."""
    if block < 1:
        raise DarmError(f"block length must be >= 1, got {block}")
    text = read_text(path)
    own_vocab = vocab is None
    vocab = vocab or Vocabulary.from_text([text])
    stream = torch.tensor(vocab.encode(text, str(path)), dtype=torch.long)
    n_train = 0 if whole else int(len(stream) * (1 - holdout))
    n_valid = 0 if whole else (len(stream) - n_train) // 2
    parts = {
        "train": stream[:n_train],
        "valid": stream[n_train : n_train + n_valid],
        "test": stream[n_train + n_valid :],
    }
    if whole and not len(stream):
        raise DarmError(f"{path} holds no text")
    if not whole and min(len(p) for p in parts.values()) < block + 1:
        fits = min(len(p) for p in parts.values()) - 1  # a block and the symbol after it
        most = f"; --block {fits} at most" if fits >= 1 else ""
        raise DarmError(
            f"{path} is too short for blocks of {block} symbols in every split (its "
            f"{len(stream):,} symbols leave {fits + 1:,} to the smallest split{most})"
        )
    return Dataset(
        name=name or path.stem,
        kind="corpus",
        vocab_size=len(vocab),
        seq_len=block,
        splits={k: CorpusSplit(v, block) for k, v in parts.items()},
        source={"format": "corpus", "path": str(path), "block": block},
        vocab=vocab,
        caveat=unseen_in_training(vocab, parts["train"], stream) if own_vocab and not whole else "",
        info={"starts": split_starts(parts)},
        notes=f"{len(stream)} characters, scored whole in blocks of {block}"
        if whole
        else f"{len(stream)} characters; first {1 - holdout:.0%} train, last {holdout:.0%} "
        f"held out (first half valid, second half test); blocks of {block}",
    )
