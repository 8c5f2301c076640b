"""One sampling loop over `model.step`, shared by every family."""

from __future__ import annotations

import math
import operator

import torch
import torch.nn.functional as F
from tqdm import tqdm

from darm.errors import is_int
from darm.models.base import (
    ARModel,
    PrefixCache,
    as_symbols,
    check_inputs,
    eval_mode,
    labels_for,
    prefill_by_steps,
)


def filter_logits(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """Temperature, then keep the top-k and/or the smallest nucleus of mass >= top_p (to within
    rounding: short of top_p by 4 eps of the sum's dtype, 5e-7 in float32, has reached it).
    Symbols tied with the k-th, or with the nucleus's least likely symbol, all stay (which of
    them to drop would be arbitrary); so do a row's most likely symbols as T -> 0, where logits
    / T overflows."""
    for name, value in (("temperature", temperature), ("top_p", top_p)):
        if isinstance(value, (str, bytes, bool)):  # "0.5" from a config file, say
            raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not 0 < temperature < math.inf:  # nan too; at inf, logits / T is nan at -inf logits
        raise ValueError(f"temperature must be finite and > 0, got {temperature}")
    if top_k is not None:
        if not is_int(top_k) or top_k < 1:
            raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
        top_k = operator.index(top_k)
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    scaled = logits if temperature == 1 else logits / temperature  # one op less a step
    # only T < 1 can overflow, so the usual T = 1 pays nothing for this on every step
    if temperature < 1:
        # a row whose logits / T overflow takes the limit of T -> 0: uniform over its most
        # likely symbols (ties all stay); the other rows keep their distributions
        # (branch-free: no host sync on a GPU)
        overflow = (~scaled.isfinite() & (logits > float("-inf"))).any(dim=-1, keepdim=True)
        best = logits == logits.amax(dim=-1, keepdim=True)
        limit = torch.zeros_like(logits).masked_fill(~best, float("-inf"))
        scaled = torch.where(overflow, limit, scaled)
    logits = scaled
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        # summed in float32 at least: bf16's rounding (0.4%) would move the nucleus's edge
        dtype = torch.promote_types(logits.dtype, torch.float32)
        probs = sorted_logits.softmax(dim=-1, dtype=dtype)
        before = F.pad(probs.cumsum(dim=-1)[..., :-1], (1, 0))  # mass of the symbols before
        # drop a symbol when the mass before it already reaches top_p, to within rounding
        # (0.6 + 0.3 is 0.8999999999999999 in float64, and a nucleus of p = 0.9 holds those
        # two); the first always stays, and so does every symbol as likely as the least
        # likely one kept
        drop_sorted = before >= top_p - 4 * torch.finfo(dtype).eps
        drop_sorted[..., 0] = False  # even for a top_p within rounding of 0
        least = sorted_logits.masked_fill(drop_sorted, float("inf")).amin(dim=-1, keepdim=True)
        logits = logits.masked_fill(logits < least, float("-inf"))
    return logits


def check_count(value, name: str) -> None:
    """A count (samples, dimensions): a positive integer (numpy's too), not 2.0 or True."""
    if not is_int(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def sample(
    model: ARModel,
    n: int,
    cond: torch.Tensor | None = None,
    prefix: torch.Tensor | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    num_dims: int | None = None,
    stop_token: int | None = None,
    use_cache: bool = True,
    progress: bool = False,
) -> torch.Tensor:
    """Draw n samples, (n, *event_shape), or (n, num_dims) when a length is given.

    Each symbol is drawn from softmax(logits / temperature) (below 1: surer, above: more
    varied), restricted to the top_k most likely symbols and/or the smallest set whose
    probability reaches top_p (see filter_logits). cond: (n,) labels of a class-conditional
    model (or one label for all). prefix: (n, P) known first dimensions in generation order
    (a prompt, the top rows of an image; an image model also takes (n, rows, W, C)); they are
    fed in one `model.prefill`, not sampled. stop_token: a row stops at its first stop
    token, in the prefix too (every later position, prompt included, becomes the stop
    token); the loop ends once every row has. generator: a torch.Generator for reproducible
    draws, on any device (a CPU one drives a GPU model's draws too). use_cache=False feeds
    the prefix and every sample one step at a time, recomputing the prefix so far each step
    (the exact but slow reference); the results are the same for the same generator.
    progress: a bar of the positions drawn, on a terminal only, cleared when done.
    """

    def pick(logits: torch.Tensor) -> torch.Tensor:  # (n, L) -> (n,) drawn symbols
        probs = filter_logits(logits.float(), temperature, top_k, top_p).softmax(dim=-1)
        if generator is not None and generator.device != probs.device:
            # torch draws with a generator of the probabilities' device only
            drawn = torch.multinomial(probs.to(generator.device), 1, generator=generator)
            return drawn[:, 0].to(probs.device)
        return torch.multinomial(probs, 1, generator=generator)[:, 0]

    check_count(n, "n")
    if num_dims is not None:
        check_count(num_dims, "num_dims")
    if stop_token is not None and not is_int(stop_token):  # 1.5 would never match
        raise TypeError(f"stop_token must be a symbol (an int), got {stop_token!r}")
    if stop_token is not None and not 0 <= stop_token < model.vocab_size:
        raise ValueError(f"stop_token {stop_token} is outside 0..{model.vocab_size - 1}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    prefix, cond = as_symbols(prefix, "prefix"), as_symbols(cond, "cond")
    cond = labels_for(cond, n)
    rows = tuple(model.event_shape[1:])  # (W, C) of an image model; () for a sequence
    grey = rows[:1] if rows[1:] == (1,) else None  # (W,): a grey image's rows may omit C
    if prefix is not None and rows and tuple(prefix.shape[2:]) in (rows, grey):
        prefix = prefix.reshape(prefix.shape[0], -1)  # (n, rows, W[, C]) -> (n, rows * W * C)
    if prefix is not None and prefix.dim() != 2:
        forms = f"(n, P) or (n, rows, {', '.join(map(str, rows))})" if rows else "(n, P)"
        raise ValueError(f"prefix must be {forms} symbols, got shape {tuple(prefix.shape)}")
    check_inputs(model, prefix, cond, "prefix symbol")
    D = num_dims or model.num_dims
    if model.max_dims is not None and D > model.max_dims:  # the same, cached or not
        what = (
            "its context, prompt included; the window is not slid"
            if len(model.event_shape) == 1
            else "one image, top rows included"
        )
        raise ValueError(
            f"this {type(model).__name__} generates at most {model.max_dims} symbols "
            f"({what}), asked for {D}"
        )
    # inference_mode rather than no_grad: less bookkeeping per op, which is most of the cost
    # of a cached step on a small model
    with eval_mode(model), torch.inference_mode():
        x = _generate(model, n, D, cond, prefix, pick, stop_token, use_cache, progress)
    x = x.clone()  # a normal tensor again (an inference tensor cannot enter autograd later)
    return x if num_dims else x.view(n, *model.event_shape)  # (n, D) -> (n, *event_shape)


def _generate(model, n, D, cond, prefix, pick, stop_token, use_cache, progress) -> torch.Tensor:
    """The loop of `sample`: (n, D) long."""
    device = model.device
    if cond is not None:
        cond = cond.to(device)
    if use_cache:
        cache, step, prefill = model.init_cache(n), model.step, model.prefill
    else:
        # a 1-D model may generate past its training length D, as its cache can
        cache = PrefixCache(n, D if model.takes_prefixes else model.num_dims, device)

        def step(x_prev, c, y):
            return ARModel.step(model, x_prev, c, y)

        def prefill(p, c, y):
            return prefill_by_steps(step, p, c, y)

    P = 0 if prefix is None else prefix.shape[1]
    x = torch.empty(n, D, dtype=torch.long, device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    if prefix is not None:
        if prefix.shape[0] != n:
            raise ValueError(f"prefix has {prefix.shape[0]} rows, expected {n}")
        if P > D:
            raise ValueError(f"prefix of length {P} is longer than the {D} dimensions")
        prefix = prefix.to(device=device, dtype=torch.long)
        if stop_token is not None:
            # a row stops at its first stop token, even inside the prompt
            stopped = (prefix == stop_token).long().cummax(dim=1).values.bool()  # (n, P)
            prefix = prefix.masked_fill(stopped, stop_token)
            done = stopped[:, -1] if P else done
        x[:, :P] = prefix
    if P < D:
        logits = prefill(x[:, :P], cache, cond)  # (n, L): the distribution of x_P
    bar = tqdm(total=D - P, desc="sampling", unit="pos", leave=False, dynamic_ncols=True,
               disable=None if progress else True)  # fmt: skip
    # whether every row has stopped is read on the host: on a GPU that waits for the queued
    # steps, so look every 16 positions there (rows already stopped only add stop tokens)
    look_every = 1 if device.type == "cpu" else 16
    with bar:
        for d in range(P, D):
            if d > P:
                logits = step(x[:, d - 1], cache, cond)  # (n, L)
            x_d = pick(logits)
            if stop_token is not None:
                x_d = torch.where(done, stop_token, x_d)
                done |= x_d == stop_token
            x[:, d] = x_d
            bar.update(1)
            if stop_token is not None and (d - P) % look_every == 0 and bool(done.all()):
                x[:, d + 1 :] = stop_token
                break
    return x
