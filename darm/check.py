"""The protocol as checks anyone can run on a model, a family of their own included.

    from darm.check import check_model
    check_model(model)        # ProtocolError names the first rule the model breaks

A model's likelihoods mean something only if it keeps these rules:
- causality: the logits at position d do not move when any x_j, j >= d, changes;
- normalisation: exp(log_prob) summed over all L^D sequences is 1 (for every label);
- the cache: `step` from `init_cache`, and `prefill`, give the full forward pass's logits;
- in eval mode the same input gives the same logits, and a row's logits depend on that row
  (its symbols and its label) alone, never on the rest of the batch.
And for the tools built on them: a conditional model's logits depend on its label, and
one-hot float input gives the logits of the symbols (`darm deps` differentiates through it).
darm's own tests run these checks on every registered model.
"""

from __future__ import annotations

import contextlib
import itertools

import torch
import torch.nn.functional as F

from darm.errors import first_line
from darm.metrics import log_prob
from darm.models.base import ARModel, eval_mode

MAX_SEQUENCES = 100_000  # normalisation enumerates L^D sequences: tiny models only

STEP_HINT = (
    "the default step feeds forward the prefix so far, (B, t+1): a model that needs all D "
    "positions sets fixed_length = True; a cache of one's own needs `t`, the positions fed"
)


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
    elif cond is None and model.num_classes:  # the caller's x, random labels for it
        g = torch.Generator().manual_seed(0)
        cond = torch.randint(0, model.num_classes, (len(x),), generator=g).to(x.device)
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


@contextlib.contextmanager
def _failing_as(what: str, hint: str = ""):
    """An exception inside (the model's own code failing) as a ProtocolError naming the call."""
    try:
        yield
    except ProtocolError:
        raise
    except Exception as e:
        if "index out of range in self" in str(e) and not hint:  # an embedding lookup: the
            # classic one, no row for the start symbol
            hint = "an input embedding needs vocab_size + 1 rows: the start symbol is index L"
        more = f" ({hint})" if hint else ""
        raise ProtocolError(f"{what} failed: {type(e).__name__}: {first_line(e)}{more}") from e


def _logits(model: ARModel, x: torch.Tensor, cond, what="model(x)", hint="") -> torch.Tensor:
    """model(x) as (B, D, L) in raster order, its shape checked. x: (B, D) symbols, or
    (B, D, L) one-hot floats."""
    B, D, L = x.shape[0], model.num_dims, model.vocab_size
    x = x.view(B, *model.event_shape, *x.shape[2:])  # (B, D, ...) -> (B, *event_shape, ...)
    with _failing_as(what, hint):
        logits = model(x, cond)
    want = (B, *model.event_shape, L)
    if tuple(logits.shape) != want:
        raise ProtocolError(f"logits have shape {tuple(logits.shape)}, expected {want}")
    return logits.reshape(B, D, L).float()  # (B, *event_shape, L) -> (B, D, L)


def _perturbed(x: torch.Tensor, positions: slice, L: int, g: torch.Generator) -> torch.Tensor:
    """x with every symbol at `positions` changed to another one (L > 1)."""
    shift = torch.randint(1, max(L, 2), x[:, positions].shape, generator=g).to(x.device)
    changed = x.clone()
    changed[:, positions] = (x[:, positions] + shift) % L
    return changed


def check_deterministic(model: ARModel, x=None, cond=None, atol: float = 1e-6) -> None:
    """In eval mode, the same input twice gives the same logits (no dropout or noise left
    on: a module that ignores self.training would make every other check fail at random)."""
    x, cond = _inputs(model, x, cond)
    with eval_mode(model), torch.no_grad(), exact_float32():
        off = float((_logits(model, x, cond) - _logits(model, x, cond)).abs().max())
    if off > atol:
        raise ProtocolError(
            f"two forward passes of the same input in eval mode differ by {off:.3g}: dropout "
            f"or noise is on outside training (pass training=self.training)"
        )


def check_causal(model: ARModel, x=None, cond=None, atol: float = 1e-5, at=None) -> None:
    """Change every x_j, j >= d, for each d in turn: the logits at positions <= d must not
    move. x: (B, D) or (B, *event_shape) symbols, random by default. at: the positions d to
    try (default all D, a forward pass each)."""
    x, cond = _inputs(model, x, cond)
    L, D = model.vocab_size, model.num_dims
    g = torch.Generator().manual_seed(1)
    with eval_mode(model), torch.no_grad(), exact_float32():
        base = _logits(model, x, cond)

        def moved(changed: torch.Tensor, upto: int) -> torch.Tensor:
            """(upto,) how far each position's logits moved."""
            return (_logits(model, changed, cond)[:, :upto] - base[:, :upto]).abs().amax((0, 2))

        for d in range(D) if at is None else at:
            by_position = moved(_perturbed(x, slice(d, None), L, g), d + 1)
            if (by_position > atol).any():
                k = int((by_position > atol).nonzero()[0])
                # which later symbol, changed alone, moves position k (none alone: several)
                alone = (moved(_perturbed(x, slice(j, j + 1), L, g), k + 1)[k] for j in range(d, D))
                j = next((d + i for i, m in enumerate(alone) if m > atol), None)
                which = f"some x_j, j >= {d}" if j is None else f"x_{j}"
                raise ProtocolError(
                    f"the logits at position {k} moved by {float(by_position[k]):.3g} when "
                    f"x_{d}.. changed: the conditional of x_{k} sees {which}"
                )


def check_rows_independent(model: ARModel, x=None, cond=None, atol: float = 1e-5) -> None:
    """Each row's logits, computed alone, are those it gets inside the batch: log_prob of
    one example must not depend on which others share its batch."""
    x, cond = _inputs(model, x, cond)
    with eval_mode(model), torch.no_grad(), exact_float32():
        full = _logits(model, x, cond)
        for i in range(len(x)):
            alone = _logits(model, x[i : i + 1], None if cond is None else cond[i : i + 1])
            off = float((alone[0] - full[i]).abs().max())
            if off > atol:
                raise ProtocolError(
                    f"row {i}'s logits alone differ by {off:.3g} from its logits in a batch of "
                    f"{len(x)}: rows depend on each other (a mean or norm over the batch?)"
                )


def check_label(model: ARModel, x=None, cond=None, atol: float = 1e-6) -> None:
    """A conditional model's logits change with the label (one that ignores it trains, and
    samples every class alike, without a word)."""
    if model.num_classes < 2:
        return
    x, cond = _inputs(model, x, cond)
    with eval_mode(model), torch.no_grad(), exact_float32():
        other = (cond + 1) % model.num_classes
        off = float((_logits(model, x, cond) - _logits(model, x, other)).abs().max())
    if off <= atol:
        raise ProtocolError(
            f"the logits do not depend on the label: this model is built with num_classes="
            f"{model.num_classes} but ignores cond (or its label weights start at zero: check "
            f"it again after some training)"
        )


def check_one_hot(model: ARModel, x=None, cond=None, atol: float = 1e-5) -> None:
    """model(one_hot(x)) gives model(x)'s logits: dependency maps (`darm deps`, compare)
    differentiate through float input. darm.models.base.embed and shift_right take both."""
    x, cond = _inputs(model, x, cond)
    soft = F.one_hot(x, model.vocab_size).float()  # (B, D) -> (B, D, L)
    with eval_mode(model), torch.no_grad(), exact_float32():
        want = _logits(model, x, cond)
        hint = "darm.models.base.embed and shift_right take both symbols and one-hot floats"
        got = _logits(model, soft, cond, "model(one-hot x)", hint)
    off = float((got - want).abs().max())
    if off > atol:
        raise ProtocolError(f"one-hot input gives logits {off:.3g} away from those of the symbols")
    if model.num_dims < 2:  # the first conditional reads no symbol: no gradient to ask for
        return
    soft.requires_grad_()
    with eval_mode(model), exact_float32():
        got = _logits(model, soft, cond, "model(one-hot x)", hint)
        # a random weighting: logits normalised to a constant sum would have no gradient
        weights = torch.randn(got.shape, generator=torch.Generator().manual_seed(0))
        grad = None
        if got.requires_grad:
            (grad,) = torch.autograd.grad((got * weights.to(got.device)).sum(), soft,
                                          allow_unused=True)  # fmt: skip
    if grad is None or not grad.any():
        raise ProtocolError(
            f"no gradient reaches the one-hot input from the logits (dependency maps "
            f"differentiate through it: a symbol read back from the floats, by argmax, say, "
            f"cuts it); {hint}"
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
                with _failing_as("log_prob(model, x)"):
                    total += log_prob(model, x, cond).cpu().double().exp().sum()
        if abs(float(total) - 1) > atol:
            given = "" if label is None else f" given label {label}"
            raise ProtocolError(
                f"the probabilities of all {L}^{D} sequences{given} sum to {float(total):.6f}, "
                f"not 1"
            )


def _stepped(model: ARModel, what: str, B: int, call, *args) -> torch.Tensor:
    """The (B, L) logits a step or prefill returns, as float32; its failures and its shape
    named (a step that forgot `return`, or returned (B, 1, L), would be misread later)."""
    with _failing_as(what, STEP_HINT):
        logits = call(*args)
    want = (B, model.vocab_size)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != want:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ProtocolError(f"{what} returned {got}, expected logits of shape {want}")
    return logits.float()


def check_cache(model: ARModel, x=None, cond=None, atol: float = 1e-5) -> None:
    """`step` from a fresh cache, fed x_0, x_1, ..., gives the forward pass's logits at every
    position; `prefill` of the first half gives those of the position after it, and the
    steps after a prefill go on giving the forward pass's (the cache it leaves is right).
    x: (B, D) or (B, *event_shape) symbols, random by default."""
    x, cond = _inputs(model, x, cond)
    B, D = x.shape

    def compare(got: torch.Tensor, d: int, how: str) -> None:
        off = float((got - full[:, d]).abs().max())
        if off > atol:
            raise ProtocolError(
                f"{how} is {off:.3g} away from the full forward pass's logits at position {d}"
            )

    with eval_mode(model), torch.no_grad(), exact_float32():
        full = _logits(model, x, cond)
        with _failing_as("init_cache"):
            cache = model.init_cache(B)
        prev = None
        for d in range(D):
            got = _stepped(model, f"step {d}", B, model.step, prev, cache, cond)
            compare(got, d, f"step {d} through the cache")
            prev = x[:, d]
        P = D // 2
        cache = model.init_cache(B)
        got = _stepped(model, f"prefill of {P}", B, model.prefill, x[:, :P], cache, cond)
        compare(got, P, f"prefill of {P} symbols")
        for d in range(P + 1, D):
            got = _stepped(model, f"step {d}", B, model.step, x[:, d - 1], cache, cond)
            compare(got, d, f"step {d} after a prefill of {P}")


def check_runs(model: ARModel, x=None, cond=None) -> None:
    """A quick look before a family of one's own trains: the forward pass's logits have the
    protocol's shape, the first steps through the cache run and have it too, eval mode is
    deterministic, and causality holds at the first, second, middle and last positions
    (eight forward passes and two steps in all), so a bug shows now, not as a traceback
    after training or as an NLL that means nothing (check_model runs every check, at every
    position)."""
    x, cond = _inputs(model, x, cond)
    with eval_mode(model), torch.no_grad():
        _logits(model, x, cond)
        with _failing_as("init_cache"):
            cache = model.init_cache(len(x))
        prev = None
        for d in range(min(2, x.shape[1])):
            _stepped(model, f"step {d}", len(x), model.step, prev, cache, cond)
            prev = x[:, d]
    D = x.shape[1]
    check_deterministic(model, x, cond)  # noise left on would read as a causality leak
    check_causal(model, x, cond, at=sorted({0, min(1, D - 1), D // 2, D - 1}))


def check_model(model: ARModel, atol: float = 1e-5, seed: int = 0) -> list[str]:
    """Every check that fits the model, on random inputs: determinism, causality, rows
    independent, the label (conditional models), the cache, one-hot input, and
    normalisation where L^D <= 100,000. Returns the names of the checks run."""
    x, cond = example_inputs(model, seed=seed)
    checks = {
        "deterministic": lambda: check_deterministic(model, x, cond, atol / 10),
        "causal": lambda: check_causal(model, x, cond, atol),
        "rows independent": lambda: check_rows_independent(model, x, cond, atol),
        "label": lambda: check_label(model, x, cond),
        "cache": lambda: check_cache(model, x, cond, atol),
        "one-hot": lambda: check_one_hot(model, x, cond, atol),
        "normalised": lambda: check_normalised(model, atol),
    }
    if model.num_classes < 2:
        del checks["label"]
    if model.vocab_size**model.num_dims > MAX_SEQUENCES:
        del checks["normalised"]
    for check in checks.values():
        check()
    return list(checks)
