"""Maximum-likelihood training: AdamW, warmup + cosine decay, clipping, eval, checkpoints.

The loss is the summed cross-entropy of the batch divided by the number of scored
dimensions (nats per dimension), so the learning rate does not depend on D.

One code path for 1 or N data-parallel ranks (torchrun) and any number of micro-batches:
the global batch of a step is a pure function of (seed, step); rank r keeps its share and
cuts it in `grad_accum` micro-batches, and each micro-batch contributes
sum(nats) / (scored dims of the GLOBAL batch) to the gradient, so the summed gradient is the
one-process gradient of the whole batch. Dropout masks are a function of (seed, step, rank)
too, so a resumed run replays an uninterrupted one exactly.

With `ema` > 0 an average of the weights (darm.ema) is what validation scores and what the
checkpoints' weight files hold; the training weights go into the optimiser file.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from darm import distributed
from darm.budget import Plan, Replanner
from darm.checkpoint import (
    atomic_write_text,
    load_training_state,
    load_weights,
    save_checkpoint,
)
from darm.data import Dataset
from darm.data.dataset import digest
from darm.ema import WeightAverage
from darm.errors import DarmError
from darm.interrupt import Stopped, stop_on_signals
from darm.metrics import NLL, evaluate, nll_per_dim
from darm.models import ARModel, get_entry
from darm.models.registry import family_source

SMOOTH = 0.95  # the training curve's decay a step: about the last 20 batches
UNRECORDED = object()  # a resumed record without a field an older darm did not write
LOG_FIELDS = ["step", "lr", "train_nats_per_dim", "valid_nats_per_dim", "tokens_per_s", "elapsed_s"]


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


def dropout_seed(seed: int, step: int, rank: int) -> int:
    """Seed of the global RNG (dropout) for one step of one rank: no RNG state to carry."""
    return ((seed * 1_000_003 + step) * 7919 + 104_729 * (rank + 1)) % 2**63


def seed_dropout(seed: int, device: torch.device) -> None:
    """Seed the generator dropout draws from: the CPU one, and the GPU's own on CUDA.
    (torch.manual_seed would do it too, but it visits every backend: 100x slower a step.)"""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):  # cuda:1 in a single process is not the current one
            torch.cuda.manual_seed(seed)


def micro_batches(batch, rank: int, world_size: int, grad_accum: int):
    """This rank's share of the global batch, cut into grad_accum micro-batches."""
    x, y, mask = batch
    lo, hi = distributed.shard_bounds(x.shape[0], rank, world_size)
    out = []
    for i in range(grad_accum):
        a, b = distributed.shard_bounds(hi - lo, i, grad_accum)
        rows = slice(lo + a, lo + b)
        out.append((x[rows], None if y is None else y[rows], None if mask is None else mask[rows]))
    return out


def accumulate_gradients(net, micro, cfg: TrainConfig, n_dims: int, ddp=None, conditional=False):
    """Forward and backward over this rank's micro-batches: the parameters' .grad becomes the
    gradient of sum(nats) / n_dims over the global batch of n_dims scored dimensions.
    Returns this rank's summed nats (a 0-d float32 tensor on the model's device)."""
    device = next(net.parameters()).device
    world_size = distributed.current().world_size
    nats = torch.zeros((), device=device)
    for i, (x, y, mask) in enumerate(micro):
        x = x.to(device)
        y = y.to(device) if conditional else None
        mask = None if mask is None else mask.to(device)
        # gradients are all-reduced once, after the last micro-batch
        last = i == len(micro) - 1
        sync = contextlib.nullcontext() if ddp is None or last else ddp.no_sync()
        with sync:
            with torch.autocast(device.type, torch.bfloat16, enabled=cfg.dtype == "bf16"):
                logits = net(x, y)
            micro_nats = nll_per_dim(logits, x, mask).sum()  # float32 whatever the dtype
            # DDP averages gradients over ranks; the factor world_size turns the average
            # into the gradient of sum(nats) / n_dims over the global batch
            (micro_nats * (world_size / n_dims)).backward()
        nats += micro_nats.detach()
    return nats


def scored_dims(batch) -> int:
    """Dimensions a batch (x, y, mask) scores: all of x, or those its mask keeps."""
    x, _, mask = batch
    return x.numel() if mask is None else int(mask.sum())


def data_parallel(model: ARModel, split, seed: int):
    """Under torchrun, `model` wrapped in DDP (told whether some parameter gets no gradient);
    None in one process."""
    if distributed.current().world_size == 1:
        return None
    device = model.device
    ids = [device.index] if device.type == "cuda" else None
    unused = has_unused_parameters(model, split.batch(0, 1, seed), model.num_classes > 0)
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=ids, find_unused_parameters=unused
    )


def has_unused_parameters(model: ARModel, batch, conditional: bool) -> bool:
    """Whether some parameter gets no gradient at all (DDP must then be told, or it waits
    for that gradient forever); one backward pass on one example, gradients then cleared."""
    x, y, _ = batch
    device = model.device
    model(x[:1].to(device), y[:1].to(device) if conditional else None).float().sum().backward()
    unused = any(p.grad is None for p in model.parameters() if p.requires_grad)
    model.zero_grad(set_to_none=True)
    return unused


def evaluate_split(model: ARModel, split, batch_size: int, progress: bool = False) -> NLL:
    """Exact NLL of the whole split; under torchrun each rank scores a contiguous shard
    and the totals (nats, examples, dims) are summed over ranks."""
    ctx = distributed.current()
    if ctx.world_size == 1:
        return evaluate(model, split, batch_size, progress)
    lo, hi = distributed.shard_bounds(len(split), ctx.rank, ctx.world_size)
    shard = split.subset(lo, hi)
    part = evaluate(model, shard, batch_size, progress) if hi > lo else NLL(0.0, 0, 0)
    nats, examples, dims = distributed.all_reduce_sum(
        [part.nats, part.examples, part.dims], model.device
    )
    return NLL(nats, round(examples), round(dims))


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


def make_optimizer(model: ARModel, cfg: TrainConfig) -> torch.optim.AdamW:
    """Weight decay on matrices only; biases, norms and 1-D parameters are not decayed."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # the fused kernel (one pass over all parameters) is 5-8% faster per step on the CPU
    # for a small GPT than the foreach one; other devices keep foreach
    fused = model.device.type in ("cpu", "cuda")
    return torch.optim.AdamW(
        groups,
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        fused=fused,
        foreach=None if fused else True,
    )


# what a run writes in its folder besides checkpoints (last.json is checked on its own)
FINISH_FILES = ("loss.png", "results.json", "samples.png", "samples.txt", "samples.wav")
RUN_FILES = (
    "log.csv", *FINISH_FILES, "best.json", "best.safetensors", "last.safetensors",
    "best.optim.safetensors", "last.optim.safetensors",
)  # fmt: skip


def check_new_run_dir(run_dir: Path) -> None:
    """A new run may not overwrite another run's checkpoint, nor files it did not write. A
    run that stopped before its first checkpoint was whole (NaN loss, out of memory, a full
    disk) left its own log.csv, and perhaps part of a checkpoint but no results: that
    folder is its retry's."""
    run_dir = Path(run_dir)
    if (run_dir / "last.json").exists():
        raise DarmError(
            f"{run_dir} already holds a checkpoint; resume it (--resume; in Python train's "
            f"resume_from) or train into another folder"
        )
    taken = [name for name in RUN_FILES if (run_dir / name).exists()]
    # its own log, and at most the checkpoint files of a save cut short (a full disk), but no
    # results: a run that stopped before it had a last checkpoint, retried in place
    retry = has_run_log(run_dir) and not set(taken) & set(FINISH_FILES)
    if taken and not retry:
        raise DarmError(
            f"{run_dir} already holds {', '.join(taken)}, which a new run would overwrite; "
            f"choose another --out (or delete them)"
        )


def has_run_log(run_dir: Path) -> bool:
    """Whether run_dir holds a log.csv that darm's training wrote (its header row)."""
    try:
        with open(run_dir / "log.csv", newline="") as f:
            return f.readline().strip() == ",".join(LOG_FIELDS)
    except (OSError, UnicodeDecodeError):
        return False


def check_model_fits(model: ARModel, model_name: str, data: Dataset) -> None:
    """The name a checkpoint records must rebuild this model, and the data must have the
    model's D symbols of at most L values (and its picture size, for a 2-D model)."""
    entry = get_entry(model_name)
    # by module and name, not class object: a notebook cell run again defines a new class
    # object of the same name, whose checkpoints load as well
    ours = [(c.__module__, c.__qualname__) for c in type(model).__mro__]
    if (entry.model_cls.__module__, entry.model_cls.__qualname__) not in ours:
        raise DarmError(
            f"model_name {model_name!r} is a {entry.model_cls.__qualname__}, but the model is "
            f"a {type(model).__qualname__}: its checkpoint could not be loaded"
        )
    if data.vocab_size > model.vocab_size or data.seq_len != model.num_dims:
        raise DarmError(
            f"{data.name} has L={data.vocab_size}, D={data.seq_len}; the model takes "
            f"L={model.vocab_size}, D={model.num_dims}"
        )
    if data.num_classes > model.num_classes > 0:
        raise DarmError(
            f"{data.name} has {data.num_classes} classes; the model takes {model.num_classes}"
        )
    shape = tuple(data.image_shape or ())[:2]
    if shape and len(model.event_shape) == 3 and tuple(model.event_shape[:2]) != shape:
        raise DarmError(
            f"{data.name} holds {shape[0]}x{shape[1]} images; the model reads "
            f"{model.event_shape[0]}x{model.event_shape[1]} (set its image_shape)"
        )
    if family_source(type(model)) is not None:  # a family of one's own: a quick look first
        check_own_family(model, model_name, data)


def check_own_family(model: ARModel, model_name: str, data: Dataset) -> None:
    """darm.check.check_runs on two training examples, its finding as one line; and, for a
    conditional model, a warning if the label changes nothing (it may start at zero)."""
    from darm.check import ProtocolError, check_label, check_runs

    x, y, _ = data["train"].batch(0, 2, 0)
    device = model.device
    cond = y.to(device) if model.num_classes and y is not None else None
    try:
        check_runs(model, x.to(device), cond)
    except ProtocolError as e:
        raise DarmError(f"{model_name}: {e} (darm.check.check_model runs every check)") from None
    if cond is not None and distributed.current().is_main:  # one warning, not one a rank
        try:
            check_label(model, x.to(device), cond)
        except ProtocolError as e:
            print(f"warning: {model_name}: {e}", file=sys.stderr)


def data_meta(data: Dataset, run_dir: Path | None = None) -> dict[str, Any]:
    """What a checkpoint needs to read and write this data again. A file's path is kept
    both absolute and relative to run_dir: a project moved with its runs still finds it."""
    source = dict(data.source)
    if "path" in source and run_dir is not None:
        source["from_run"] = os.path.relpath(source["path"], Path(run_dir).absolute())
    return {
        "name": data.name,
        "kind": data.kind,
        "source": source,
        "vocab": None if data.vocab is None else data.vocab.symbols,
        "eos": data.eos,
        "image_shape": data.image_shape,
        "num_classes": data.num_classes,
        "class_names": data.class_names,
        "notes": data.notes,
        "digest": digest(data) if "path" in source else None,  # a file may change; built-ins not
    }


def start_log(log_path: Path, start: int) -> None:
    """A new log.csv, or on resume the old one without rows past `start` (a run killed
    after logging a step but before checkpointing it will log that step again)."""
    rows = []
    if start > 0 and log_path.exists():
        with open(log_path, newline="") as f:
            rows = list(csv.reader(f))[1:]
        rows = [r for r in rows if r and r[0].isdigit() and int(r[0]) <= start]
    text = io.StringIO()
    csv.writer(text).writerows([LOG_FIELDS, *rows])
    atomic_write_text(log_path, text.getvalue())


def restore_weights(model: ARModel, raw: dict[str, torch.Tensor], where: Path) -> None:
    """Copy a checkpoint's training weights (saved beside an average) into the model, through
    the checkpoint's strict load (raw holds the floating-point tensors only)."""
    load_weights(model, {**model.state_dict(), **raw}, where)


@dataclass
class RunState:
    """Where a run stands: its next step, its best validation NLL (nats/dim), the training
    seconds of earlier invocations, and the training curve: an average of the batch losses
    decaying by SMOOTH a step, started at 0 (`average`) and divided by 1 - SMOOTH^t as
    Adam's moments are (`running`, nats/dim), so the first batch's loss does not linger."""

    step: int = 0
    best: float = math.inf
    before: float = 0.0
    average: float = 0.0
    running: float | None = None


def resumed_state(path: Path, record: dict, optimizer, model: ARModel, cfg) -> tuple:
    """A checkpoint's optimiser state into `optimizer`, with cfg's hyperparameters ->
    (RunState, the training weights saved beside an average, or {})."""
    saved_raw = load_training_state(path, record, optimizer)
    # load_state_dict brings back the saved hyperparameters too; a resume that changes them
    # (--weight-decay, --beta1, --beta2) must train with the new ones it records
    for group, fresh in zip(optimizer.param_groups, make_optimizer(model, cfg).param_groups):
        group.update({k: fresh[k] for k in ("weight_decay", "betas", "fused", "foreach")})
    step, running = record["step"], record.get("train_nats_per_dim")
    average = record.get("train_loss_average")
    if average is None:  # a checkpoint from before the correction
        average = (running or 0.0) * (1 - SMOOTH**step)
    best = record.get("best_valid_nats_per_dim", math.inf)
    return RunState(step, best, record.get("elapsed_s", 0.0), average, running), saved_raw


def train(
    model: ARModel,
    model_name: str,
    data: Dataset,
    cfg: TrainConfig,
    run_dir: Path,
    resume_from: tuple[Path, dict] | None = None,
    progress: bool = True,
    stop_at: int | None = None,
    max_seconds: float | None = None,
    plan: Plan | None = None,
    init: dict[str, Any] | None = None,
    command: str | None = None,
    finish: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train, evaluating on the validation split and checkpointing every eval_every steps.

    Writes run_dir/{last,best}.{json,safetensors,optim.safetensors} and run_dir/log.csv
    (under torchrun, rank 0 alone writes and shows progress; the other ranks compute).
    stop_at: end early after this step (saving `last`); the schedule still spans cfg.steps,
    so `--resume` later continues exactly as if never stopped. max_seconds: likewise, once
    this much training time has passed. plan: cfg.steps was planned (darm.budget.plan_run)
    to fit max_seconds; the count is planned again as the run trains (darm.budget.Replanner),
    so the schedule still ends in time when the first timing was off. init: where a
    fine-tuning run's weights came from (that checkpoint's path, step, weights' hash), in
    every checkpoint (a resumed run keeps its own record's). command: the command line
    that runs this (`darm runs` shows them: the start, then each resume; None, from Python).
    finish: what the command does once training ends (`darm train`: the samples it draws),
    kept in every checkpoint so that a resumed run ends the same way (a resume's own replaces
    it). Returns the final training state (step, the steps and training config as last planned,
    best validation NLL, wall time, tokens/s, the first step's seconds). The model is left
    in training mode with its training weights: with cfg.ema, the average that validation
    scored is in the checkpoints (`load_checkpoint(run_dir)`).
    """
    ctx = distributed.current()
    if plan is not None and max_seconds is None:
        raise ValueError("a plan needs max_seconds, the budget it was planned for")
    check_config(cfg, ctx.world_size)
    check_model_fits(model, model_name, data)
    run_dir = Path(run_dir)
    if resume_from is None:
        check_new_run_dir(run_dir)
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    device = model.device
    conditional = model.num_classes > 0
    if conditional and data.num_classes == 0:
        raise DarmError(f"a conditional model needs labels, and {data.name} has none")
    optimizer = make_optimizer(model, cfg)
    torch.manual_seed(cfg.seed)
    stand, saved_raw = RunState(), {}
    commands = [command]  # None: started from Python (or, resumed, by an older darm)
    if resume_from is not None:
        commands = [*resume_from[1].get("commands", [None]), *([command] if command else [])]
        stand, saved_raw = resumed_state(*resume_from, optimizer, model, cfg)
        init = resume_from[1].get("init", UNRECORDED)  # (an older darm's: unknown, and stays so)
        finish = resume_from[1].get("finish") if finish is None else finish
    start, best, before = stand.step, stand.best, stand.before
    average, running = stand.average, stand.running
    # the model holds a checkpoint's weights, which are the average when it kept one; the
    # training weights saved beside them come back into the model
    ema = WeightAverage(model, cfg.ema) if cfg.ema > 0 else None
    if saved_raw:
        restore_weights(model, saved_raw, resume_from[0])
    train_split, valid_split = data["train"], data["valid"]
    if 0 < cfg.valid_examples < len(valid_split):  # a fixed subset: the curve stays comparable
        valid_split = valid_split.subset(0, cfg.valid_examples)
    log_path = run_dir / "log.csv"
    if ctx.is_main:
        start_log(log_path, start)

    # `model` stays the plain module: the optimiser, evaluation and checkpoints use it (no
    # `module.` or `_orig_mod.` prefixes); `net` is what the training forward goes through.
    ddp = data_parallel(model, train_split, cfg.seed)
    net = ddp or model
    if cfg.compile:
        net = torch.compile(net)

    def averaged():
        """Inside: the model holds the weights to score and save (the average, if kept);
        yields the training weights that must be saved beside them (None without EMA)."""
        return contextlib.nullcontext() if ema is None else ema.swapped()

    data_record = data_meta(data, run_dir)  # once: its digest reads every example

    def checkpoint(tag: str, step: int, best: float, raw: dict | None) -> None:
        if not ctx.is_main:
            return
        meta = {
            "step": step,
            "best_valid_nats_per_dim": best,
            "elapsed_s": before + time.perf_counter() - t0,  # so a resumed log goes on
            "train_nats_per_dim": running,
            "train_loss_average": average,  # uncorrected: a resume goes on from it exactly
            "train": asdict(cfg),
            "data": data_record,
            **({} if init is UNRECORDED else {"init": init}),  # None: from new weights
            "commands": commands,
            **({} if finish is None else {"finish": finish}),
        }
        save_checkpoint(run_dir, tag, model, model_name, meta, optimizer, raw)

    last_saved = {"step": start} if resume_from is not None else {}  # the `last` checkpoint's

    def kept() -> str:
        """What a run stopped by a non-finite number leaves to resume from: the last checkpoint,
        with its validation NLL, which may itself be far from good (a huge lr's first pass)."""
        if not last_saved:
            return f"before any checkpoint was saved in {run_dir} (try a lower --lr)"
        scored = f", validation {last_saved['val']:.4g} nats/dim" if "val" in last_saved else ""
        return (
            f"the last checkpoint in {run_dir} (step {last_saved['step']}{scored}) is kept "
            f"(try a lower --lr)"
        )

    def log_row(step, lr, train_nll, val, tokens_per_s, elapsed) -> None:
        """One row of log.csv; val None (a step between evaluations) leaves its cell empty."""
        if ctx.is_main:
            row = [step, lr, train_nll, "" if val is None else val, tokens_per_s, before + elapsed]
            with open(log_path, "a", newline="") as f:
                csv.writer(f).writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])

    def evaluate_and_save(step, lr, train_nll, tokens_per_s, elapsed, best) -> float:
        """Score the validation split, log it, save last (and best); return the best."""
        with averaged() as raw:
            show = progress and ctx.is_main
            val = evaluate_split(model, valid_split, cfg.eval_batch_size, show).nats_per_dim
            model.train()
            if not math.isfinite(val):  # never over-write the last good checkpoint with it
                raise DarmError(f"validation NLL is {val} at step {step}; stopped, {kept()}")
            log_row(step, lr, train_nll, val, tokens_per_s, elapsed)
            if ctx.is_main:  # tqdm.write prints even from a disabled bar
                bar.write(f"step {step}: train {train_nll:.4f}  valid {val:.4f} nats/dim")
            if val < best:
                best = val
                checkpoint("best", step, best, raw)
            checkpoint("last", step, best, raw)
            last_saved.update(step=step, val=val)
        return best

    model.train()
    bar = tqdm(
        total=cfg.steps,
        initial=start,
        disable=None if progress and ctx.is_main else True,  # None: on a terminal only
        dynamic_ncols=True,
        mininterval=0.5,
    )
    t0, tokens, first_s = time.perf_counter(), 0, 0.0

    def now() -> float:
        return time.perf_counter() - t0

    end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
    interrupted = False
    replanner = None if plan is None else Replanner(plan, max_seconds, start, cfg)
    with stop_on_signals() as stop:  # Ctrl-C, SIGTERM: finish the step, save `last`, stop
        step = start
        while step < end:  # `end` moves when a planned run is planned again
            lr = learning_rate(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = train_split.batch(step, cfg.batch_size, cfg.seed)  # the same on every rank
            n_dims = scored_dims(batch)  # of the global batch
            seed_dropout(dropout_seed(cfg.seed, step, ctx.rank), device)
            optimizer.zero_grad(set_to_none=True)
            micro = micro_batches(batch, ctx.rank, ctx.world_size, cfg.grad_accum)
            nats = accumulate_gradients(net, micro, cfg, n_dims, ddp, conditional)
            # a finite loss can still back-propagate an overflow: one inf gradient would turn the
            # weights into NaN, and the next checkpoint would save them, so the norm is checked
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(grads)
            rank_nats, norm_value = torch.stack([nats, norm.float()]).tolist()  # one host sync
            elapsed = time.perf_counter() - t0
            out_of_time = max_seconds is not None and elapsed >= max_seconds
            # one reduction per step: the global loss, and whether any rank ran out of time or
            # got a Ctrl-C (every rank must stop at the same step or the others would wait forever)
            total_nats, late, halted = distributed.all_reduce_sum(
                [rank_nats, float(out_of_time), float(bool(stop))], device
            )
            loss, out_of_time, interrupted = total_nats / n_dims, late > 0, halted > 0
            if not math.isfinite(loss):
                raise DarmError(f"loss is {loss} at step {step}; stopped, {kept()}")
            if not math.isfinite(norm_value):
                raise DarmError(
                    f"gradient norm is {norm_value} at step {step}; stopped before the "
                    f"update, {kept()}"
                )
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grads_with_norm_(grads, cfg.grad_clip, norm)
            optimizer.step()
            if ema is not None:
                ema.update(step)
            tokens += n_dims
            average = SMOOTH * average + (1 - SMOOTH) * loss
            running = average / (1 - SMOOTH ** (step + 1))
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}", tok_s=f"{tokens / elapsed:,.0f}", refresh=False)
            new = cfg if replanner is None else replanner(cfg, step + 1, now(), device)
            if new is not cfg:
                if ctx.is_main:
                    bar.write(
                        f"step {step + 1}: {cfg.steps} steps planned again as {new.steps}, "
                        f"by the {replanner.step_s:.3g}s a step measured so far (--budget)"
                    )
                cfg, bar.total = new, new.steps
                end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
            if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps or out_of_time:
                t_eval = time.perf_counter()
                best = evaluate_and_save(step + 1, lr, running, tokens / elapsed, elapsed, best)
                if replanner is not None:
                    replanner.evaluated(time.perf_counter() - t_eval)
            else:
                if (step + 1) % cfg.log_every == 0:  # the training curve between evaluations
                    log_row(step + 1, lr, running, None, tokens / elapsed, elapsed)
                if step + 1 == end or interrupted:
                    with averaged() as raw:
                        checkpoint("last", step + 1, best, raw)
            if replanner is not None:
                replanner.stepped(step + 1, now())
            if step == start:
                first_s = elapsed  # allocations, and the compilation under cfg.compile
            if out_of_time or interrupted:
                end = step + 1
                break
            step += 1
    bar.close()
    distributed.barrier()  # no rank leaves before rank 0 has written the last checkpoint
    # a Ctrl-C after the last step's reduction (in its evaluation, say) still stops here:
    # that step is saved, and the caller's test pass and samples are skipped
    interrupted = interrupted or bool(stop)
    if interrupted:  # another rank's signal, where this one had none: said as a Ctrl-C
        raise Stopped(
            f"stopped after step {end}, saved in {run_dir / 'last.json'}; --resume continues",
            stop.signum or signal.SIGINT,
        )
    return {
        "step": end,
        "steps": cfg.steps,
        "train": asdict(cfg),  # as planned again under a budget
        "best_valid_nats_per_dim": best,
        "elapsed_s": time.perf_counter() - t0,
        "tokens_per_s": tokens / max(time.perf_counter() - t0, 1e-9),
        "first_step_s": first_s,
    }
