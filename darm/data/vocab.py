"""Character vocabularies: symbol <-> index, saved with the model as a JSON list."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from darm.errors import DarmError, is_int

EOS = "\n"  # the end-of-item symbol of line datasets: every item ends with one


class Vocabulary:
    def __init__(self, symbols: list[str]):
        if not isinstance(symbols, list) or not symbols:
            raise DarmError("vocabulary must be a non-empty list of characters")
        if not all(isinstance(s, str) and len(s) == 1 for s in symbols):
            raise DarmError("vocabulary symbols must be single characters")
        if len(set(symbols)) != len(symbols):
            raise DarmError("vocabulary has repeated symbols")
        self.symbols = list(symbols)
        self.index = {s: i for i, s in enumerate(self.symbols)}

    @classmethod
    def from_text(cls, texts: Iterable[str], eos: bool = False) -> Vocabulary:
        chars = set()
        for t in texts:
            chars.update(t)
        if eos:  # the end symbol gets index 0 and never appears inside an item
            chars.discard(EOS)
        return cls(([EOS] if eos else []) + sorted(chars))

    def __len__(self) -> int:
        return len(self.symbols)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocabulary) and self.symbols == other.symbols

    def encode(self, text: str, where: str = "") -> list[int]:
        """The symbols' indices; a symbol outside the vocabulary is refused, its place
        named (where: the file, line or option the text came from)."""
        try:
            return [self.index[c] for c in text]
        except KeyError as e:
            c = e.args[0]
            shown = f"'{c}'" if c.isprintable() and c != "'" else repr(c)  # '\', not '\\'
            # "\n" typed in a shell arrives as a backslash and an n
            escaped = c == "\\" and any(f"\\{k}" in text for k in "nt")
            hint = " (a shell passes \\n as two characters: $'...' makes it one)" * escaped
            raise DarmError(
                f"{where}{': ' if where else ''}symbol {shown} {place(text, text.index(c))}is "
                f"not in the vocabulary of {len(self)} symbols{self.listed()}{hint}"
            ) from None

    def listed(self, most: int = 100) -> str:
        """The vocabulary for an error message, if short enough to read."""
        if len(self) > most:
            return ""
        return f": {''.join(s for s in self.symbols if s != EOS)!r}" + (
            " and newline" if EOS in self.index else ""
        )

    def decode(self, ids: Iterable[int], stop: int | None = None) -> str:
        """The text of symbol ids, cut before the first `stop` (an end symbol) if given."""
        ids = list(ids)
        if stop is not None and stop in ids:
            ids = ids[: ids.index(stop)]
        L = len(self.symbols)
        bad = next((i for i in ids if not is_int(i) or not 0 <= i < L), None)
        if bad is not None:  # a float, a nested row, a symbol of another vocabulary
            raise ValueError(f"cannot decode {bad!r}: symbols are ints in 0..{L - 1}")
        return "".join(self.symbols[i] for i in ids)


def saved_vocab(meta: dict):
    """The character vocabulary a checkpoint's data record holds, or None (arrays, images)."""
    return Vocabulary(meta["vocab"]) if meta.get("vocab") else None


def place(text: str, i: int) -> str:
    """Where index i of a text is, for a message: its line and column in a text of several
    lines, else its position; nothing for a one-symbol text."""
    if "\n" in text:
        line_start = text.rfind("\n", 0, i) + 1
        return f"(line {text.count(chr(10), 0, i) + 1}, column {i - line_start + 1}) "
    return f"(position {i + 1}) " if len(text) > 1 else ""


def unseen_in_training(vocab: Vocabulary, train: torch.Tensor, every: torch.Tensor) -> str:
    """A caveat naming the symbols of the data (`every`, indices) that the training split
    (`train`) never holds: the model learns nothing of them but that they are rare, so the
    held-out items that hold one score badly. "" when training sees them all."""
    unseen = sorted(set(every.unique().tolist()) - set(train.unique().tolist()))
    if not unseen:
        return ""
    shown = ", ".join(repr(vocab.symbols[i]) for i in unseen[:5]) + ", ..." * (len(unseen) > 5)
    return (
        f"{len(unseen)} symbol{'s' * (len(unseen) != 1)} only in valid / test ({shown}), "
        "never trained on"
    )
