"""The protocol as checks anyone can run on a model, a family of their own included.

    from darm.check import check_model
    check_model(model)        # ProtocolError names the first rule the model breaks

A model's likelihoods mean something only if it keeps three rules:
- causality: the logits at position d do not move when any x_j, j >= d, changes;
- normalisation: exp(log_prob) summed over all L^D sequences is 1 (for every label);
- the cache: `step` from `init_cache`, and `prefill`, give the full forward pass's logits.
darm's own tests run these checks on every registered model.
"""

from __future__ import annotations

import contextlib
import itertools

import torch

from darm.metrics import log_prob
from darm.models.base import ARModel, eval_mode

MAX_SEQUENCES = 100_000  # normalisation enumerates L^D sequences: tiny models only


class ProtocolError(AssertionError):
    """A model breaks a rule of the protocol; the message says which and where."""


def example_inputs(model: ARModel, batch: int = 3, seed: int = 0):
    """Random symbols (B, D) and, for a conditional model, random labels (B,)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, model.vocab_size, (batch, model.num_dims), generator=g)
    cond = torch.randint(0, model.num_classes, (batch,), generator=g) if model.num_classes else None
    device = model.device
    return x.to(device), None if cond is None else cond.to(device)


def _inputs(model: ARModel, x, cond):
    """x as (B, D) in raster order (given flat or as (B, *event_shape); random if None), and
    its labels (random ones for random x, unless given)."""
    if x is None:
        x, drawn = example_inputs(model, batch=3 if cond is None else len(cond))
        cond = drawn if cond is None else cond
    return x.reshape(len(x), -1), cond  # (B, *event_shape) -> (B, D)


@contextlib.contextmanager
def exact_float32():
    """No TF32 inside (a GPU's default for convolutions): it rounds products to 10 bits,
    and a step and the full pass summing differently would differ by far more than atol."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def _logits(model: ARModel, x: torch.Tensor, cond) -> torch.Tensor:
    """model(x) as (B, D, L) in raster order, its shape checked."""
    B, D, L = x.shape[0], model.num_dims, model.vocab_size
    logits = model(x.view(B, *model.event_shape), cond)  # (B, D) -> (B, *event_shape)
    want = (B, *model.event_shape, L)
    if tuple(logits.shape) != want:
        raise ProtocolError(f"logits have shape {tuple(logits.shape)}, expected {want}")
    return logits.reshape(B, D, L).float()  # (B, *event_shape, L) -> (B, D, L)


def check_causal(model: ARModel, x=None, cond=None, atol: float = 1e-5) -> None:
    """Change every x_j, j >= d, for each d in turn: the logits at positions <= d must not
    move. x: (B, D) or (B, *event_shape) symbols, random by default."""
    x, cond = _inputs(model, x, cond)
    L, D = model.vocab_size, model.num_dims
    g = torch.Generator().manual_seed(1)
    with eval_mode(model), torch.no_grad(), exact_float32():
        base = _logits(model, x, cond)
        for d in range(D):
            shift = torch.randint(1, max(L, 2), x[:, d:].shape, generator=g).to(x.device)
            changed = x.clone()
            changed[:, d:] = (x[:, d:] + shift) % L  # every later symbol differs (L > 1)
            moved = (_logits(model, changed, cond)[:, : d + 1] - base[:, : d + 1]).abs()
            by_position = moved.amax(dim=(0, 2))  # (d+1,)
            if (by_position > atol).any():
                k = int((by_position > atol).nonzero()[0])
                raise ProtocolError(
                    f"the logits at position {k} moved by {float(by_position[k]):.3g} when x_{d}.. "
                    f"changed: the conditional of x_{k} sees x_j for some j >= {d}"
                )


def check_normalised(model: ARModel, atol: float = 1e-5, chunk: int = 4096) -> None:
    """exp(log_prob) over all L^D sequences sums to 1, for every label of a conditional
    model. Enumerates them, so only for tiny models (L^D <= 100,000)."""
    L, D = model.vocab_size, model.num_dims
    if L**D > MAX_SEQUENCES:
        raise ValueError(
            f"normalisation enumerates L^D = {L}^{D} sequences; build a tiny model "
            f"(L^D <= {MAX_SEQUENCES:,}, e.g. vocab_size=3, seq_len=3) to check it"
        )
    every = torch.tensor(list(itertools.product(range(L), repeat=D)), device=model.device)
    for label in range(model.num_classes) if model.num_classes else [None]:
        total = torch.zeros((), dtype=torch.float64)
        with torch.no_grad(), exact_float32():
            for x in every.split(chunk):  # (chunk, D)
                cond = None if label is None else torch.full((len(x),), label, device=x.device)
                x = x.view(len(x), *model.event_shape)  # (chunk, D) -> (chunk, *event_shape)
                total += log_prob(model, x, cond).cpu().double().exp().sum()
        if abs(float(total) - 1) > atol:
            given = "" if label is None else f" given label {label}"
            raise ProtocolError(
                f"the probabilities of all {L}^{D} sequences{given} sum to {float(total):.6f}, "
                f"not 1"
            )


def check_cache(model: ARModel, x=None, cond=None, atol: float = 1e-5) -> None:
    """`step` from a fresh cache, fed x_0, x_1, ..., gives the forward pass's logits at every
    position, and `prefill` of the first half gives those of the position after it.
    x: (B, D) or (B, *event_shape) symbols, random by default."""
    x, cond = _inputs(model, x, cond)
    B, D = x.shape
    with eval_mode(model), torch.no_grad(), exact_float32():
        full = _logits(model, x, cond)
        cache, prev = model.init_cache(B), None
        for d in range(D):
            off = float((model.step(prev, cache, cond).float() - full[:, d]).abs().max())
            if off > atol:
                raise ProtocolError(
                    f"step {d} through the cache is {off:.3g} away from the full forward pass's "
                    f"logits at position {d}"
                )
            prev = x[:, d]
        P = D // 2
        off = float(
            (model.prefill(x[:, :P], model.init_cache(B), cond).float() - full[:, P]).abs().max()
        )
        if off > atol:
            raise ProtocolError(
                f"prefill of {P} symbols is {off:.3g} away from the forward pass's logits at "
                f"position {P}"
            )


def check_model(model: ARModel, atol: float = 1e-5, seed: int = 0) -> list[str]:
    """Every check that fits the model: causality and the cache on random inputs, and
    normalisation where L^D <= 100,000. Returns the names of the checks run."""
    x, cond = example_inputs(model, seed=seed)
    check_causal(model, x, cond, atol)
    check_cache(model, x, cond, atol)
    done = ["causal", "cache"]
    if model.vocab_size**model.num_dims <= MAX_SEQUENCES:
        check_normalised(model, atol)
        done.append("normalised")
    return done
