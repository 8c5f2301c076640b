"""A training run's settings (TrainConfig), the checks they must pass before any work is done,
and the learning-rate schedule they define: linear warmup, then cosine decay, in one or more
cycles (SGDR warm restarts)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from darm.config import check_types
from darm.errors import DarmError


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 64
    lr: float = 3e-3
    min_lr: float | None = None  # the cosine decays to this; None: lr / 10
    warmup: int | None = None  # None: 100 steps, at most half a cycle
    cycles: int = 1  # cosine cycles over `steps`; > 1 restarts warm (SGDR)
    cycle_decay: float = 1.0  # a cycle's peak lr is this times the previous cycle's peak
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    eval_every: int = 250
    log_every: int = 10  # steps between log.csv rows of the training loss alone
    eval_batch_size: int = 512
    valid_examples: int = 0  # score the first N validation examples at each evaluation; 0: all
    seed: int = 1337
    grad_accum: int = 1  # micro-batches per step; gradients summed, same effective batch
    dtype: str = "fp32"  # fp32 | bf16: autocast of the forward; weights and loss stay fp32
    compile: bool = False  # torch.compile the model for training (eval stays eager)
    ema: float = 0.0  # decay of an average of the weights that eval and checkpoints use; 0: off

    def __post_init__(self):
        check_types(self)  # from Python too: steps=2.5 is an error here, not a crash later
        if self.min_lr is None:  # a lower --lr alone must not be refused for min_lr > lr
            self.min_lr = self.lr / 10
        if self.warmup is None:  # a short run still decays (warmup 100 of 50 steps never did)
            self.warmup = min(100, self.steps // (2 * max(self.cycles, 1)))


DTYPES = ("fp32", "bf16")


def slow_bf16(device: torch.device) -> bool:
    """True on a CPU without native bfloat16 matmuls (no AVX512-BF16 / AMX): there oneDNN
    emulates them, and bf16 autocast trains several times slower than float32 (measured on an
    AVX2-only EPYC: a 1024 x 1024 matmul at 0.6 GFLOP/s in bf16 against 50 in float32)."""
    if device.type != "cpu":
        return False
    try:
        return not torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):  # a build without oneDNN: nothing to say
        return False


def bf16_warning(cfg: TrainConfig, device: torch.device) -> str | None:
    """A one-line warning when --dtype bf16 would slow training down on this machine."""
    if cfg.dtype == "bf16" and slow_bf16(device):
        return (
            "warning: this CPU has no native bfloat16 (AVX512-BF16 or AMX), so --dtype bf16 "
            "trains several times slower than fp32 here"
        )
    return None


def check_config(cfg: TrainConfig, world_size: int = 1, planned: bool = False) -> None:
    """Refuse settings the loop cannot honour, before any work is done. `planned`: the run's
    length is still to be planned (--budget), so the checks against it wait for the plan."""
    if cfg.dtype not in DTYPES:
        raise DarmError(f"dtype must be one of {', '.join(DTYPES)}, got {cfg.dtype!r}")
    if cfg.valid_examples < 0:
        raise DarmError(f"valid_examples must be >= 0 (0: all), got {cfg.valid_examples}")
    counts = ("steps", "batch_size", "eval_every", "log_every", "eval_batch_size", "grad_accum")
    for name in (*counts, "cycles"):
        if getattr(cfg, name) < 1:
            raise DarmError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if not 0 <= cfg.lr < math.inf:  # 0 is allowed: a run that only evaluates
        raise DarmError(f"lr must be finite and >= 0, got {cfg.lr}")
    if not math.isfinite(cfg.weight_decay):  # inf would turn the weights into NaN
        raise DarmError(f"weight_decay must be finite, got {cfg.weight_decay}")
    if not -(2**63) <= cfg.seed < 2**64:  # what torch's generators take
        raise DarmError(f"seed must be in -2**63..2**64-1, got {cfg.seed}")
    if not 0 <= cfg.min_lr <= cfg.lr:
        raise DarmError(f"min_lr must be in [0, lr={cfg.lr:g}], got {cfg.min_lr:g}")
    for name in ("beta1", "beta2"):
        if not 0 <= getattr(cfg, name) < 1:
            raise DarmError(f"{name} must be in [0, 1), got {getattr(cfg, name)}")
    for name in ("warmup", "weight_decay", "grad_clip"):
        if not 0 <= getattr(cfg, name) < math.inf:  # nan too: `> 0` would switch clipping off
            raise DarmError(f"{name} must be >= 0 and finite, got {getattr(cfg, name)}")
    if cfg.lr * cfg.weight_decay >= 1:  # AdamW's step multiplies weights by 1 - lr * wd
        raise DarmError(
            f"weight_decay {cfg.weight_decay:g} times the lr {cfg.lr:g} is "
            f"{cfg.lr * cfg.weight_decay:g}: AdamW scales the weights by 1 - lr * weight_decay "
            f"each step, so the product must be below 1"
        )
    if cfg.steps % cfg.cycles and not planned:
        raise DarmError(f"steps ({cfg.steps}) must be a multiple of cycles ({cfg.cycles})")
    if cfg.warmup and cfg.warmup >= cfg.steps // cfg.cycles and not planned:
        span = "the run" if cfg.cycles == 1 else "a cycle"
        raise DarmError(
            f"warmup ({cfg.warmup}) must be shorter than {span} ({cfg.steps // cfg.cycles} steps)"
        )
    if not 0 <= cfg.ema < 1:
        raise DarmError(f"ema must be in [0, 1) (0 turns it off), got {cfg.ema}")
    if not 0 < cfg.cycle_decay <= 1:
        raise DarmError(f"cycle_decay must be in (0, 1], got {cfg.cycle_decay}")
    last_peak = cfg.lr * cfg.cycle_decay ** (cfg.cycles - 1)
    if last_peak < cfg.min_lr:  # that cycle would climb from its peak up to min_lr
        raise DarmError(
            f"the last cycle's peak lr {last_peak:.3g} (lr x cycle_decay^{cfg.cycles - 1}) is "
            f"below min_lr {cfg.min_lr:.3g}; use a larger cycle_decay or a smaller min_lr"
        )
    if cfg.batch_size < world_size * cfg.grad_accum:
        raise DarmError(
            f"batch size {cfg.batch_size} cannot be cut into {world_size} rank(s) x "
            f"{cfg.grad_accum} micro-batch(es); use --batch-size >= {world_size * cfg.grad_accum}"
        )


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to lr, then cosine decay to min_lr at the end of each of `cycles` equal
    cycles; a later cycle jumps back to a peak of lr * cycle_decay**c without warmup (SGDR:
    the Adam moments are warm). The first cycle of steps=2n, cycles=2 is exactly the whole
    schedule of steps=n, so `--resume --steps 2n --cycles 2` extends a finished run."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    length = cfg.steps // cfg.cycles
    c = min(step // length, cfg.cycles - 1)
    start = cfg.warmup if c == 0 else c * length
    peak = cfg.lr * cfg.cycle_decay**c
    progress = (step - start) / max((c + 1) * length - start, 1)
    return cfg.min_lr + 0.5 * (peak - cfg.min_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))
