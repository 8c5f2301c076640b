"""Exact likelihood: log p(x) per example, and NLL over a whole split."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from darm.errors import is_int
from darm.models.base import (
    ARModel,
    as_symbols,
    check_inputs,
    check_shape,
    eval_mode,
    labels_for,
)

# what one example and one dimension are called, per kind of data
EXAMPLE_UNIT = {"lines": "item", "corpus": "block", "image": "image", "audio": "window"}
DIM_UNIT = {"lines": "char", "corpus": "char", "audio": "sample"}


def symbols_word(kind: str) -> str:
    """What a sequence of this kind is made of, in a message: samples, characters, symbols."""
    return {"char": "characters", "sample": "samples"}.get(units(kind)[1], "symbols")


def units(kind: str) -> tuple[str, str]:
    """(example, dimension) names for data of this kind: ('image', 'dim'), ('item', 'char')."""
    return EXAMPLE_UNIT.get(kind, "example"), DIM_UNIT.get(kind, "dim")


def nll_per_dim(
    logits: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """-log p(x_d | x_<d) for every dimension: (B, *event) with 0 where mask is False."""
    nll = F.cross_entropy(logits.movedim(-1, 1).float(), x, reduction="none")  # (B, *event)
    return nll if mask is None else nll * mask


def log_prob(
    model: ARModel,
    x: torch.Tensor,
    cond: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Exact log p(x | cond) in nats, (B,): x (B, *event) integer symbols, cond (B,) labels
    of a class-conditional model (or one label for all); `mask` drops
    padding positions. Computed in eval mode (dropout off, as `evaluate` scores), then the
    model's mode is restored; gradients flow. (A training loss with dropout: model(x) and
    nll_per_dim.)"""
    x = as_symbols(x, "x (one-hot inputs go to model(x))")
    cond = as_symbols(cond, "label")
    if mask is not None:  # numpy, lists, a tensor on another device: beside x, as x is read
        mask = torch.as_tensor(mask, device=x.device)
    check_shape(model, x, mask)
    cond = labels_for(cond, x.shape[0])
    check_inputs(model, x, cond)
    with eval_mode(model):
        return _log_prob(model, x, cond, mask)


def _log_prob(model, x, cond=None, mask=None) -> torch.Tensor:
    """log_prob without the checks: example_nats checks each batch on the host before it
    moves, where a check of the device's copy would cost a host sync per batch on a GPU."""
    nll = nll_per_dim(model(x, cond), x, mask)
    return -nll.flatten(1).sum(dim=1)  # (B, *event) -> (B, D) -> (B,)


@dataclass
class NLL:
    """Negative log-likelihood of a whole split."""

    nats: float  # total over the split
    examples: int
    dims: int  # dimensions scored (padding excluded)

    @property
    def nats_per_example(self) -> float:
        return self.nats / self.examples

    @property
    def nats_per_dim(self) -> float:
        return self.nats / self.dims

    @property
    def bits_per_dim(self) -> float:
        return self.nats_per_dim / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(self.nats_per_dim)

    def as_dict(self) -> dict:
        return {
            "nats_per_example": self.nats_per_example,
            "nats_per_dim": self.nats_per_dim,
            "bits_per_dim": self.bits_per_dim,
            "examples": self.examples,
            "dims": self.dims,
        }


@torch.no_grad()
def example_nats(model: ARModel, split, batch_size: int = 256, progress: bool = False):
    """-log p(x | y) in nats of every example of `split` (a darm.data Split), in its order:
    (N,) float64 on the CPU. progress: a bar of examples scored, on a terminal only (10,000
    MNIST images take minutes on a CPU), cleared when done."""
    if not is_int(batch_size):
        raise TypeError(f"batch_size must be an int, got {type(batch_size).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    if not hasattr(split, "iter_batches"):
        hint = "one of its splits" if hasattr(split, "splits") else "a tensor of examples: log_prob"
        raise TypeError(f"split must be a darm.data split, e.g. data['test'], got "
                        f"{type(split).__name__} ({hint})")  # fmt: skip
    if len(split) == 0:
        raise ValueError("the split is empty: there is nothing to score")
    # the shape first: data of another model's size is named as such, not by a label it
    # happens to have; the split's whole shape where it has one (not a batch's)
    whole = isinstance(getattr(split, "x", None), torch.Tensor)
    if whole:
        check_shape(model, split.x, split.mask)
    if model.num_classes and getattr(split, "y", 0) is None:
        raise ValueError(
            f"this model is conditional on {model.num_classes} classes and the split has no "
            f"labels: score labelled data, or log_prob(model, x, cond=labels)"
        )
    nats = []  # per batch, on the device: read once at the end
    device = model.device
    bar = tqdm(total=len(split), desc="scoring", unit="ex", leave=False, dynamic_ncols=True,
               disable=None if progress else True)  # fmt: skip
    # the caller's modes come back even if scoring fails
    with eval_mode(model), contextlib.closing(bar):
        for x, y, mask in split.iter_batches(batch_size):
            if not whole:  # on the host, as the data comes (no device sync)
                check_shape(model, x, mask)
            check_inputs(model, x, None)
            if y is not None and model.num_classes:
                check_inputs(model, None, y)  # an embedding would name no value
                y = y.to(device)
            else:
                y = None
            x = x.to(device)
            mask = None if mask is None else mask.to(device)
            nats.append(-_log_prob(model, x, y, mask).double())
            bar.update(x.shape[0])
    return torch.cat(nats).cpu()


def evaluate(model: ARModel, split, batch_size: int = 256, progress: bool = False) -> NLL:
    """Exact NLL of `model` over every example of `split` (a darm.data Split)."""
    nats = example_nats(model, split, batch_size, progress)
    return NLL(nats.sum().item(), len(nats), split.num_dims())
