"""Maximum-likelihood training: the loop around darm.step's steps, with the schedule of
darm.train_config, validation, checkpoints, a log, resumption and a time budget.

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
    read_record,
    save_checkpoint,
)
from darm.data import Dataset, as_built_in
from darm.data.dataset import check_dataset, digest
from darm.ema import WeightAverage
from darm.errors import DarmError
from darm.interrupt import Stopped, stop_on_signals
from darm.models import ARModel, get_entry
from darm.models.registry import family_source, fixed_changes, fixed_text
from darm.step import (
    accumulate_gradients,
    data_parallel,
    dropout_seed,
    evaluate_split,
    make_optimizer,
    micro_batches,
    scored_dims,
    seed_dropout,
)
from darm.train_config import TrainConfig, check_config, learning_rate

__all__ = ["TrainConfig", "train"]  # TrainConfig lives in darm.train_config; here for train's users

SMOOTH = 0.95  # the training curve's decay a step: about the last 20 batches
UNRECORDED = object()  # a resumed record without a field an older darm did not write
LOG_FIELDS = ["step", "lr", "train_nats_per_dim", "valid_nats_per_dim", "tokens_per_s", "elapsed_s"]


# what a run writes in its folder besides checkpoints (last.json is checked on its own)
FINISH_FILES = ("loss.png", "results.json", "samples.png", "samples.txt", "samples.wav")
CHECKPOINT_FILES = ("best.json", "best.safetensors", "last.safetensors",
                    "best.optim.safetensors", "last.optim.safetensors")  # fmt: skip
RUN_FILES = ("log.csv", *FINISH_FILES, *CHECKPOINT_FILES)


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


def check_model_fits(model: ARModel, model_name: str, data: Dataset, resumed: bool = False) -> None:
    """The name a checkpoint records must rebuild this model, and the data must have the
    model's D symbols of at most L values (and its picture size, for a 2-D model). resumed:
    the run goes on under the name it has (one saved before names fixed their fields, a
    "gru" holding an LSTM, keeps it)."""
    entry = get_entry(model_name)
    # by module and name, not class object: a notebook cell run again defines a new class
    # object of the same name, whose checkpoints load as well
    ours = [(c.__module__, c.__qualname__) for c in type(model).__mro__]
    if (entry.model_cls.__module__, entry.model_cls.__qualname__) not in ours:
        raise DarmError(
            f"model_name {model_name!r} is a {entry.model_cls.__qualname__}, but the model is "
            f"a {type(model).__qualname__}: its checkpoint could not be loaded"
        )
    config = getattr(model, "config", None)
    changed = [] if resumed else fixed_changes(entry, config)
    if changed:  # a "bigram" with k=3 would be listed and reloaded as a bigram
        has = ", ".join(f"{k}={getattr(config, k)!r}" for k in changed)
        raise DarmError(
            f"model_name {model_name!r} is {entry.family} with {fixed_text(entry)}, but the "
            f"model has {has}: name it {entry.family!r}"
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
        # a file may change, and a built-in's splits may be cut down in Python before train()
        "digest": None if as_built_in(data) else digest(data),
    }


def same_examples(data: Dataset, mine: dict[str, Any], theirs: dict[str, Any]) -> bool:
    """Whether `data` (its record `mine`, data_meta's) holds the examples, in the same splits,
    of the data record `theirs`: by the digests, or, for a built-in as load_data gives it (no
    digest), by its name, seed and levels. A record from before darm kept digests is taken as
    the same; one of a built-in with a digest (as a darm of a while recorded them) is
    compared with the built-in's digest."""
    if "digest" not in theirs:
        return True
    if theirs["digest"]:
        return (mine["digest"] or digest(data)) == theirs["digest"]
    return mine["digest"] is None and mine["source"] == theirs["source"]


def start_log(log_path: Path, start: int) -> None:
    """A new log.csv, or on resume the old one without rows past `start` (a run killed
    after logging a step but before checkpointing it will log that step again)."""
    rows = []
    if start > 0 and log_path.exists():
        if not has_run_log(log_path.parent):  # edited by hand, say: kept, not written over
            old = log_path.with_name("log.csv.old")
            os.replace(log_path, old)
            print(f"warning: {log_path} is not a darm log (its header); moved to {old.name}, "
                  f"and the log starts again at step {start}", file=sys.stderr)  # fmt: skip
        else:
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
    earlier_s: float = 0.0
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


def resume_point(resume_from, loaded: dict | None) -> tuple[Path, dict]:
    """train's resume_from as (path, record). The model must hold that checkpoint's weights
    (`loaded`: its loaded_from), or its optimiser state would go on from other weights."""
    if isinstance(resume_from, (str, os.PathLike)):  # a run folder: its last, as --resume
        last = Path(resume_from) / "last.json"
        resume_from = read_record(last if last.exists() else resume_from)
    if not (isinstance(resume_from, tuple) and len(resume_from) == 2):
        raise TypeError(
            f"resume_from must be a checkpoint's (path, record), as load_checkpoint returns "
            f"them, or its path; got {type(resume_from).__name__}"
        )
    path, record = Path(resume_from[0]), resume_from[1]
    if not loaded or loaded.get("weights") != record["sha256"].get("weights"):
        raise DarmError(
            f"resume_from {path}: the model does not hold its weights; resume the model "
            f"load_checkpoint({str(path)!r}) returns"
        )
    return path, record


def train(
    model: ARModel,
    model_name: str,
    data: Dataset,
    cfg: TrainConfig,
    run_dir: Path,
    resume_from: tuple[Path, dict] | str | Path | None = None,
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
    progress: the bar, on a terminal; a line at each evaluation is printed either way
    (`contextlib.redirect_stdout` silences it in a sweep).
    stop_at: end early after this step (saving `last`); the schedule still spans cfg.steps,
    so `--resume` later continues exactly as if never stopped. resume_from: the checkpoint
    (path, record), or its path (a run folder: its last.json), that `model` was loaded from
    (load_checkpoint), whose optimiser state and step the run goes on from, on the same
    data. max_seconds: likewise, once
    this much training time has passed. plan: cfg.steps was planned (darm.budget.plan_run)
    to fit max_seconds; the count is planned again as the run trains (darm.budget.Replanner),
    so the schedule still ends in time when the first timing was off. init: where a
    fine-tuning run's weights came from (that checkpoint's path, step, weights' hash), in
    every checkpoint (a resumed run keeps its own record's); by default, for a model that
    load_checkpoint returned, that checkpoint. command: the command line
    that runs this (`darm runs` shows them: the start, then each resume; None, from Python).
    finish: what the command does once training ends (`darm train`: the samples it draws),
    kept in every checkpoint so that a resumed run ends the same way (a resume's own replaces
    it). Returns the final training state (step, the steps and training config as last planned,
    best validation NLL, wall time, tokens/s, the first step's seconds). The model is left
    in training mode with its training weights: with cfg.ema, the average that validation
    scored is in the checkpoints (`load_checkpoint(run_dir)`).
    """
    ctx = distributed.current()
    loaded = getattr(model, "loaded_from", None)
    if plan is not None and max_seconds is None:
        raise ValueError("a plan needs max_seconds, the budget it was planned for")
    check_config(cfg, ctx.world_size)
    check_dataset(data)
    check_model_fits(model, model_name, data, resumed=resume_from is not None)
    conditional = model.num_classes > 0
    if conditional and data.num_classes == 0:
        raise DarmError(f"a conditional model needs labels, and {data.name} has none")
    run_dir = Path(run_dir)
    if resume_from is None:
        check_new_run_dir(run_dir)
    # once, where checkpoints are written: its digest reads every example
    data_record = data_meta(data, run_dir) if ctx.is_main else None
    if resume_from is not None:  # refused before anything changes (the model stays loaded)
        resume_from = resume_point(resume_from, loaded)
        if ctx.is_main and not same_examples(data, data_record, resume_from[1]["data"]):
            raise DarmError(  # (the command line refused it already, when reading the data)
                f"resume_from {resume_from[0]}: the run trained on other examples or splits "
                f"than {data.name}'s; resume it on the same data (a new run may start from "
                f"its weights)"
            )
    if init is None:  # a checkpoint loaded in Python and fine-tuned: it says where from;
        init = UNRECORDED if loaded is False else loaded  # trained since: unknown
    model.loaded_from = False  # from here its weights are no longer the checkpoint's
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    device = model.device
    optimizer = make_optimizer(model, cfg)
    torch.manual_seed(cfg.seed)
    state, saved_raw = RunState(), {}
    commands = [command]  # None: started from Python (or, resumed, by an older darm)
    if resume_from is not None:
        commands = [*resume_from[1].get("commands", [None]), *([command] if command else [])]
        state, saved_raw = resumed_state(*resume_from, optimizer, model, cfg)
        init = resume_from[1].get("init", UNRECORDED)  # (an older darm's: unknown, and stays so)
        finish = resume_from[1].get("finish") if finish is None else finish
    start, best, earlier_s = state.step, state.best, state.earlier_s
    average, running = state.average, state.running
    # the model holds a checkpoint's weights, which are the average when it kept one; the
    # training weights saved beside them come back into the model
    ema = WeightAverage(model, cfg.ema) if cfg.ema > 0 else None
    if saved_raw:
        restore_weights(model, saved_raw, resume_from[0])
    train_split, valid_split = data["train"], data["valid"]
    part = ""  # the validation scored, where it is not the whole split
    if 0 < cfg.valid_examples < len(valid_split):  # a fixed subset: the curve stays comparable
        part = f" (first {cfg.valid_examples} of {len(valid_split)})"
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

    def checkpoint(tag: str, step: int, best: float, raw: dict | None) -> None:
        if not ctx.is_main:
            return
        meta = {
            "step": step,
            "best_valid_nats_per_dim": best,
            "elapsed_s": earlier_s + time.perf_counter() - t0,  # so a resumed log goes on
            "train_nats_per_dim": running,
            "train_loss_average": average,  # uncorrected: a resume goes on from it exactly
            "train": asdict(cfg),
            "valid_part": bool(part),  # --valid-examples under the split's size: a part scored
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
            return f"before any checkpoint was saved in {run_dir} (try a lower learning rate)"
        scored = f", validation {last_saved['val']:.4g} nats/dim" if "val" in last_saved else ""
        return (
            f"the last checkpoint in {run_dir} (step {last_saved['step']}{scored}) is kept "
            f"(try a lower learning rate)"
        )

    def log_row(step, lr, train_nll, val, tokens_per_s, elapsed) -> None:
        """One row of log.csv; val None (a step between evaluations) leaves its cell empty."""
        if ctx.is_main:
            row = [
                step,
                lr,
                train_nll,
                "" if val is None else val,
                tokens_per_s,
                earlier_s + elapsed,
            ]
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
                bar.write(f"step {step}: train {train_nll:.4f}  valid {val:.4f} nats/dim{part}")
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
            trained = [p for p in model.parameters() if p.grad is not None]
            norm = torch.nn.utils.get_total_norm([p.grad for p in trained])
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
                # (counted as the log counts: the update this batch was for is step + 1)
                raise DarmError(f"loss is {loss} at step {step + 1}; stopped, {kept()}")
            if not math.isfinite(norm_value):
                raise DarmError(
                    f"gradient norm is {norm_value} at step {step + 1}; stopped before the "
                    f"update, {kept()}"
                )
            if cfg.grad_clip > 0:
                # (it takes the parameters and scales their .grad: given the gradients
                # themselves, it finds no .grad on them and silently clips nothing)
                torch.nn.utils.clip_grads_with_norm_(trained, cfg.grad_clip, norm)
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
