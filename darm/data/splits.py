"""Splits: the examples of train / valid / test, with deterministic batching.

A training batch is a pure function of (seed, step), so a resumed run sees exactly the
batches an uninterrupted one would, with no loader state to save.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

Batch = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]  # x, y, mask


def _generator(seed: int, counter: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + counter) % 2**63)
    return g


class TensorSplit:
    """Fixed-length examples. x: (N, D) long; y: (N,) long labels or None;
    mask: (N, D) bool, False on padding after an item's end, or None when all count."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor | None = None, mask=None):
        self.x, self.y, self.mask = x, y, mask
        self._perm_key, self._perm = None, None  # (seed, epoch) of the cached permutation

    def __len__(self) -> int:
        return self.x.shape[0]

    def __repr__(self) -> str:
        parts = [f"x {tuple(self.x.shape)}"]
        parts += [] if self.y is None else [f"labels {tuple(self.y.shape)}"]
        parts += [] if self.mask is None else [f"{self.num_dims()} of {self.x.numel()} dims scored"]
        return f"<{type(self).__name__} of {len(self)} examples: {', '.join(parts)}>"

    def num_dims(self) -> int:
        return self.x[0].numel() * len(self) if self.mask is None else int(self.mask.sum())

    def _take(self, idx) -> Batch:
        y = None if self.y is None else self.y[idx]
        mask = None if self.mask is None else self.mask[idx]
        return self.x[idx], y, mask

    def subset(self, lo: int, hi: int) -> TensorSplit:
        """Examples lo..hi-1 as a split of their own (views, no copy)."""
        return TensorSplit(*self._take(slice(lo, hi)))

    def batch(self, step: int, batch_size: int, seed: int) -> Batch:
        """The training batch of `step`: epochs of seeded permutations, last partial dropped."""
        N = len(self)
        per_epoch = max(N // batch_size, 1)
        epoch, i = divmod(step, per_epoch)
        if self._perm_key != (seed, epoch):
            self._perm = torch.randperm(N, generator=_generator(seed, epoch))
            self._perm_key = (seed, epoch)
        return self._take(self._perm[i * batch_size : (i + 1) * batch_size])

    def iter_batches(self, batch_size: int) -> Iterator[Batch]:
        """Every example once, in order."""
        for i in range(0, len(self), batch_size):
            yield self._take(slice(i, i + batch_size))


class CorpusSplit(TensorSplit):
    """One long stream cut in blocks: training batches are random crops of length D;
    evaluation covers the stream exactly once in consecutive blocks (the last one padded
    and masked), each block scored from its own start."""

    def __init__(self, stream: torch.Tensor, block: int):
        self.stream = stream
        self.block = block
        n_full, rest = divmod(len(stream), block)
        blocks = stream[: n_full * block].view(n_full, block)  # (n_blocks, D)
        mask = None
        if rest:
            tail = torch.zeros(1, block, dtype=stream.dtype)
            tail[0, :rest] = stream[n_full * block :]
            blocks = torch.cat([blocks, tail])
            mask = torch.ones_like(blocks, dtype=torch.bool)
            mask[-1, rest:] = False
        super().__init__(blocks, None, mask)

    def batch(self, step: int, batch_size: int, seed: int) -> Batch:
        g = _generator(seed, step)
        starts = torch.randint(len(self.stream) - self.block + 1, (batch_size,), generator=g)
        offsets = starts[:, None] + torch.arange(self.block)  # (B, D)
        return self.stream[offsets], None, None


def examples_per_step(split: TensorSplit, batch_size: int) -> int:
    """The examples a training step of `batch_size` takes: every one of a split of fewer
    (a corpus's or a clip's batches are crops of one stream, so any number)."""
    return batch_size if isinstance(split, CorpusSplit) else min(batch_size, len(split))


def split_starts(parts: dict[str, torch.Tensor]) -> dict[str, int]:
    """Where each split of one stream cut by position begins in it (train, valid, test in
    that order): a block's place in the file, for people reading per-example results."""
    starts, at = {}, 0
    for name, part in parts.items():
        starts[name] = at
        at += len(part)
    return starts
