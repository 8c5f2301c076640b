"""`darm train` as a procedure: a new, resumed (--resume) or fine-tuned (--init) run,
planned to a --budget when asked, in its locked run folder."""

from __future__ import annotations

import math
import os
import shlex
import signal
import sys
from dataclasses import fields
from pathlib import Path

import torch

from darm import distributed
from darm.budget import plan_run
from darm.checkpoint import (
    FREE_FIELDS,
    load_checkpoint,
    network_change,
    read_record,
    saved_config,
)
from darm.config import MAX_SIZE, build_config, changed_fields, parse_assignments
from darm.data import (
    BUILTIN,
    FIXED_LEVELS,
    FORMATS,
    SPLITS,
    bundled_name,
    load_from_source,
    same_data,
)
from darm.data.dataset import untrained_classes
from darm.errors import DarmError
from darm.files import check_writable
from darm.interrupt import Stopped
from darm.lock import folder_lock
from darm.memory import check_memory, check_sample_memory
from darm.models import create_model, get_entry
from darm.models.registry import fixed_changes
from darm.options import (
    SOURCE_OPTIONS,
    batch_note,
    check_counts,
    check_data_options,
    check_threads,
    data_options,
    data_stem,
    load_training_data,
    model_overrides,
)
from darm.outputs import AUDIO_CLIPS, count, finish_run, finished
from darm.plots import read_log
from darm.prompts import default_length
from darm.reread import check_fits, own_data, read_like
from darm.runs import in_folder
from darm.train import check_new_run_dir, has_run_log, train
from darm.train_config import TrainConfig, bf16_warning, check_config, learning_rate

DEFAULT_SAMPLES = 64  # drawn at the end of a run unless --samples says otherwise


def train_run(args, device, ctx) -> None:
    """`darm train`: the options checked, then the run in its folder (train_in)."""
    if args.init and args.conditional:
        raise DarmError("--init takes conditioning from the checkpoint; drop --conditional")
    check_counts(args, samples=0)
    check_threads(args)
    if args.model is not None:  # a mistyped (or not imported) family before a taken folder
        get_entry(args.model)
    # without --data: digits, or the data of the checkpoint --init or --resume reads; a file
    # given with either is read in the checkpoint's format (read_like), not by its suffix
    from_checkpoint = args.init or args.resume
    spec = args.data or (None if from_checkpoint else "digits")
    check_data_options(None if from_checkpoint and spec not in BUILTIN else spec, args)
    run_dir = Path(args.out or default_run_dir(args))
    check_writable(run_dir)  # before any data is read or model built
    with folder_lock(run_dir, ctx.is_main):  # one process at a time: a second stops at once
        train_in(run_dir, args, device, ctx)


def training_config(settings: dict, world_size: int, planned: bool = False) -> TrainConfig:
    """TrainConfig from the command line's settings, checked; a setting refused is named by
    its flag (--batch-size, not the field batch_size that Python callers see)."""
    try:
        cfg = build_config(TrainConfig, settings, "training option")
        check_config(cfg, world_size, planned)
    except DarmError as e:
        field, _, rest = str(e).partition(" ")
        if field not in {f.name for f in fields(TrainConfig)}:
            raise
        raise DarmError(f"--{field.replace('_', '-')} {rest}") from None
    return cfg


def train_in(run_dir: Path, args, device, ctx) -> None:
    """train_run in its folder, with the folder's lock held: start the run (or resume it),
    train it, test it, sample it."""
    say = print if ctx.is_main else lambda *a, **k: None  # rank 0 speaks for all ranks
    train_overrides = {
        f.name: getattr(args, f.name)
        for f in fields(TrainConfig)
        if getattr(args, f.name, None) is not None
    }
    init = None  # a new run's record of where its weights came from (--init)
    samples = DEFAULT_SAMPLES if args.samples is None else args.samples
    if args.resume:
        source = run_dir / "last.json"
        if not source.exists() and (step := stands_at_best(run_dir)) is not None:
            source = run_dir / "best.json"
            say(f"note: {run_dir} has no last.json; resuming from best.json (step {step})",
                file=sys.stderr)  # fmt: skip
        if not source.exists():  # nothing to resume: say which way on
            if has_run_log(run_dir):
                raise DarmError(
                    f"{run_dir} has no last checkpoint to resume: the run stopped before one "
                    f"was saved whole (stopped early, or a full disk); the same command without "
                    f"--resume trains it again there"
                )
            if args.init:
                raise DarmError(
                    f"nothing to resume in {run_dir} (no last.json); without --resume, --init "
                    f"{args.init} starts a new run there from its weights"
                )
        path, record = read_record(source)
        if args.samples is None:  # as the run was started (or last resumed) with
            samples = recorded_samples(record)
        check_resume_matches(args, record, path.parent)
        meta = record["data"]
        conditional = bool(record["config"].get("num_classes"))
        data = load_from_source(
            meta, record["config"]["seq_len"], path.parent, "refuse", conditional
        )

        model, record, path = load_checkpoint(path, device)
        if source.name != "best.json" and (run_dir / "best.json").exists():
            # the run ends on it: find out now, not then
            try:
                load_checkpoint(run_dir / "best.json")
            except DarmError as e:
                raise DarmError(f"{e}; move best.* aside to resume without it") from None
        model_name = record["model"]
        old = record["train"]
        if "lr" in train_overrides and "min_lr" not in train_overrides:
            if math.isclose(old["min_lr"], old["lr"] / 10):  # the run's floor was the default
                train_overrides["min_lr"] = train_overrides["lr"] / 10
        if {"steps", "cycles"} & set(train_overrides) and "warmup" not in train_overrides:
            # a default warmup follows a new run length, as in a fresh run of that length
            if old["warmup"] == TrainConfig(steps=old["steps"], cycles=old.get("cycles", 1)).warmup:
                train_overrides["warmup"] = None
        cfg = training_config({**old, **train_overrides}, ctx.world_size)
        if cfg.steps < record["step"]:
            raise DarmError(
                f"{run_dir} is at step {record['step']}, past --steps {cfg.steps}; "
                f"resume with --steps above {record['step']}"
            )
        if cfg.steps == record["step"] and finished(run_dir):
            say(  # its test NLL and samples stay as they are
                f"{run_dir} has trained all {cfg.steps} steps and been tested (results.json): "
                f"nothing to do; --resume --steps N trains on"
            )
            return
        if cfg.steps == record["step"]:  # stopped in its test pass
            say(f"{run_dir} has trained all {cfg.steps} steps: testing it")
        else:
            say(f"resuming {model_name} from step {record['step']} of {cfg.steps} in {run_dir}")
        if note := resume_changes(old, cfg, record["step"]):
            say(note)
        resume = (path, record)
    else:
        check_new_run_dir(run_dir)  # before any data is read or model built
        planned = bool(args.budget) and "steps" not in train_overrides  # checked once planned
        cfg = training_config(train_overrides, ctx.world_size, planned)  # before the data
        torch.manual_seed(cfg.seed)  # the initial weights are a function of --seed
        if args.init:
            model, model_name, data, path, step = init_from(args, device)
            say(f"starting from the weights of {path} ({model_name}, step {step})")
            init = model.loaded_from  # its path, step and weights' hash (load_checkpoint)
        else:
            data = load_training_data(args, args.data or "digits")
            model_name = args.model or "gpt"
            overrides = model_overrides(parse_assignments(args.set or []), "--set ")
            if args.conditional:
                if not data.num_classes:
                    npz = str(data.source.get("path", "")).lower().endswith(".npz")
                    where = " (an .npz holds them under the key y, or y_train/y_valid/y_test)"
                    raise DarmError(
                        f"--conditional needs labels, and {data.name} has none{where * npz}"
                    )
                overrides["num_classes"] = data.num_classes
                if data.num_classes == 1:  # trains, but as the unconditional model would
                    folder = Path(data.source.get("path", "")).is_dir()
                    hint = " (a sub-folder per class makes classes)" if folder else ""
                    say(
                        f"warning: --conditional: {data.name} has 1 class, so the label tells "
                        f"the model nothing{hint}",
                        file=sys.stderr,
                    )
                # numbered labels (an array's; a folder's classes are its sub-folders) that
                # leave most numbers unused: labels 0 and 1000 make 1001 classes
                seen = int(torch.unique(torch.cat([data[s].y for s in SPLITS])).numel())
                numbered = data.source.get("format") in ("array", "images", "memory")
                if numbered and not data.class_names and seen * 2 <= data.num_classes:
                    say(
                        f"warning: --conditional: {data.name} has {data.num_classes} classes "
                        f"(its largest label + 1), of which only {seen} occur: number its "
                        f"labels 0..{seen - 1} (np.unique(y, return_inverse=True))",
                        file=sys.stderr,
                    )
            rows = math.ceil(cfg.batch_size / (ctx.world_size * cfg.grad_accum))  # a micro-batch
            try:
                check_memory(model_name, data, overrides, device, rows, cfg.dtype)
            except DarmError as e:  # L from one huge value among a few small ones: the
                if not data.info.get("sparse_levels"):  # summary, not yet shown, says so
                    raise
                raise DarmError(f"{e} ({data.name}: {data.info['sparse_levels']})") from None
            model = create_model(model_name, data, **overrides).to(device)
            if hasattr(model, "short_sight") and (note := model.short_sight()):
                say(f"note: {model_name} {note}", file=sys.stderr)
        resume = None
    if samples:  # drawn at the end: a number that cannot be is refused before the training
        n = min(samples, AUDIO_CLIPS) if data.kind == "audio" else samples
        D = default_length(model, {"kind": data.kind, "source": data.source}, 0)
        check_sample_memory(model, n, D, f"--samples {samples:,}")
    check_out_of_data(run_dir, data.source.get("path"))  # before anything is written
    torch.set_num_threads(args.threads) if args.threads else None
    say(data.summary())
    if note := batch_note(args.batch_size, data):
        say(note, file=sys.stderr)
    if model.num_classes and (note := untrained_classes(data)):  # (an unconditional one reads none)
        say(note, file=sys.stderr)
    plan = None  # a --budget run's plan of its length, planned again as it trains
    if args.budget and not resume and "steps" not in train_overrides:
        cfg, plan = budget_config(model, data, cfg, train_overrides, args.budget, ctx.world_size)
        fits = plan.fits(args.budget)
        ends = "; the schedule ends in time" if fits else ""
        say(f"--budget {args.budget:g}s: planned {cfg.steps} steps{ends}")
        if not fits:  # the plan's floor of steps does not fit: the budget will cut it
            took = f"{plan.seconds:.0f}" if plan.seconds >= 1 else f"{plan.seconds:.1g}"
            say(
                f"warning: even {cfg.steps} steps take ~{took}s here, so the run "
                f"stops at the budget before its schedule ends (give more time, or --steps)",
                file=sys.stderr,
            )
        if note := plan.note(args.budget, cfg.valid_examples):
            say(note)
    ranks = f" on {ctx.world_size} ranks" if ctx.world_size > 1 else ""
    to_train = resume is None or cfg.steps > resume[1]["step"]  # else stopped in its test pass
    if to_train:
        params = f"{model.num_params():,} parameters{set_apart(model, cfg)}"
        say(f"{model_name}: {params}; training {count(cfg.steps, 'step')}{ranks}")
    if warning := bf16_warning(cfg, device):
        say(warning, file=sys.stderr)
    state = train(
        model,
        model_name,
        data,
        cfg,
        run_dir,
        resume,
        not args.quiet,
        max_seconds=args.budget,
        plan=plan,
        init=init,  # (a resumed run keeps its record's)
        command=invocation(args, ctx),
        finish={"samples": samples},
    )
    if to_train:
        say(f"trained in {state['elapsed_s']:.0f}s ({state['tokens_per_s']:,.0f} tokens/s)")
    step, steps = state["step"], state["steps"]
    if step < steps:  # --budget ran out first
        say(f"--budget stopped the run at step {step} of {steps}; --resume continues")
        if cfg.compile and state["first_step_s"] > 0.25 * args.budget:
            say(
                f"(its first step, torch.compile's, took {state['first_step_s']:.0f}s of the "
                f"{args.budget:g}s: give more time, or train without --compile)"
            )
    distributed.cleanup()  # the other ranks are done; rank 0 alone tests, samples and plots
    if ctx.is_main:
        try:
            finish_run(run_dir, data, device, samples, cfg.seed, not args.quiet)
        except KeyboardInterrupt as e:  # the weights are saved: only the test pass is lost
            signum = getattr(e, "signum", signal.SIGINT)
            then = "tests it" if step == steps else "trains the rest and tests it"
            raise Stopped(
                f"stopped while testing and sampling; the trained run in {run_dir} is saved, and "
                f"--resume {then}",
                signum,
            ) from None


def set_apart(model, cfg: TrainConfig) -> str:
    """What sets a run apart from a plain one, for its first line: ' (p(x | label) of 10
    classes, bf16 autocast, ...)', or '' (a conditional or bf16 run looks like any other)."""
    n = model.num_classes
    parts = [f"p(x | label) of {n} class{'es' * (n != 1)}"] if n else []
    parts += ["bf16 autocast"] * (cfg.dtype == "bf16") + ["torch.compile"] * cfg.compile
    parts += [f"{cfg.grad_accum} micro-batches a step"] * (cfg.grad_accum > 1)
    return f" ({', '.join(parts)})" if parts else ""


def recorded_samples(record: dict) -> int:
    """The samples a run draws at its end, as its checkpoint records them (an older darm's
    records none: the default)."""
    finish = record.get("finish")
    samples = finish.get("samples") if isinstance(finish, dict) else None
    return samples if isinstance(samples, int) and samples >= 0 else DEFAULT_SAMPLES


def check_out_of_data(run_dir: Path, data: str | Path | None) -> None:
    """A run folder inside its own image folder would turn its pictures into data."""
    if not data or not Path(data).is_dir():
        return
    if run_dir.resolve().is_relative_to(Path(data).resolve()):
        raise DarmError(
            f"--out {run_dir} is inside the data folder {data}: the run's pictures would be "
            f"read as data next time; choose --out outside it"
        )


def budget_config(model, data, cfg, overrides: dict, budget: float, world_size: int):
    """A new run given --budget but no --steps: time a few steps and a validation pass and plan
    the run's length, its default warmup and its validation passes so the cosine schedule
    ends within the budget rather than being cut off halfway -> (config, plan)."""
    plan = plan_run(model, data, cfg, budget, overrides.get("eval_every"))  # same on all ranks
    steps = max(cfg.cycles, plan.steps - plan.steps % cfg.cycles)  # whole cosine cycles
    if steps > MAX_SIZE:
        raise DarmError(
            f"--budget {budget:g}s affords {steps:,} steps here, more than a run's "
            f"{MAX_SIZE:,}: give less time, or --steps"
        )
    planned = {"steps": steps}
    if "eval_every" not in overrides:  # points on the curve, as many as the budget affords
        # rounded up, so the last of them falls on the last step, not a few steps before it
        planned["eval_every"] = math.ceil(steps / plan.passes)
    cfg = build_config(TrainConfig, {**overrides, **planned}, "training option")
    try:
        check_config(cfg, world_size)
    except DarmError as e:  # a --warmup longer than the run the budget affords
        raise DarmError(f"{e}, all that --budget {budget:g}s affords here") from None
    return cfg, plan


def resume_changes(old: dict, cfg, step: int) -> str | None:
    """'with lr 0.01 (was 0.003), ...': the training options a resume changes, and the jump
    in the learning rate where a new schedule no longer meets the old one at `step`."""

    def show(v) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    before = build_config(TrainConfig, old, "training option")
    changed = [
        f"{f.name} {show(getattr(cfg, f.name))} (was {show(getattr(before, f.name))})"
        for f in fields(TrainConfig)
        if getattr(cfg, f.name) != getattr(before, f.name)
    ]
    if not changed:
        return None
    lr_then, lr_now = learning_rate(step, before), learning_rate(step, cfg)
    jump = (
        f"; the learning rate at step {step} moves from {lr_then:.3g} to {lr_now:.3g}"
        if not math.isclose(lr_then, lr_now, rel_tol=0.01)
        else ""
    )
    return f"with {', '.join(changed)}{jump}"


def init_from(args, device):
    """Fine-tuning: a new run from a checkpoint's weights -> (model, name, data, path, step). The
    data is the checkpoint's own unless --data names other data, which is then read as the
    checkpoint's was (`read_like`); --set may change dropout (other fields only repeat theirs)."""
    overrides = parse_assignments(args.set or [])
    kept = {k: v for k, v in overrides.items() if k in FREE_FIELDS}
    model, record, path = load_checkpoint(args.init, device, kept)
    model_name = record["model"]
    check_init_keeps(model, overrides)
    if args.model and args.model != model_name:
        raise DarmError(f"--init {path} holds a {model_name}, not a {args.model}")
    entry = get_entry(model_name)
    if fixed_changes(entry, model.config):  # a "gru" holding an LSTM, saved before names
        model_name = entry.family  # fixed their fields: the new run is named for what it is
    meta = record["data"]
    spec = args.data
    if not spec and any(getattr(args, attr) is not None for _, attr, _ in SOURCE_OPTIONS):
        spec = own_data(meta, path)  # its own data, read with --block (say) this time
        if args.format == meta["source"].get("format"):  # repeating the run's own command
            args.format = None  # (a built-in's, named by its name, takes no --format)
    if spec:
        read_as = meta["source"].get("format")  # as read_like reads it
        check_data_options(spec, args, read_as if read_as in FORMATS else None)
        theirs = meta["source"].get("seed")
        if theirs is not None and same_data(spec, meta["source"], path.parent):
            # its own data again: split as it was, so that test holds no example it trained on
            if args.data_seed is None:
                args.data_seed = theirs
            elif args.data_seed != theirs and distributed.current().is_main:
                print(f"warning: --data-seed {args.data_seed} splits {spec} otherwise than "
                      f"--init's run did (--data-seed {theirs}): its test split may hold "
                      f"examples that run trained on", file=sys.stderr)  # fmt: skip
        block, levels, seed = data_options(args, block=model.num_dims)
        data = read_like(spec, model, meta, args.format, block, levels, seed)
        if data.seq_len != model.num_dims and model.max_dims is None and data.kind == meta["kind"]:
            # longer (or shorter) windows of audio or text: the same weights, another D
            kept["seq_len"] = data.seq_len
            model, record, path = load_checkpoint(args.init, device, kept)
    else:
        data = load_from_source(
            meta, model.num_dims, path.parent, conditional=model.num_classes > 0
        )
    check_fits(data, model, path, meta, scoring=False)  # fine-tuning needs the labels
    return model.to(device), model_name, data, path, record["step"]


def check_init_keeps(model, settings: dict) -> None:
    """--init --set may repeat a field's saved value, not change it: n_head, a dilation cycle
    or k would load the same weights into another network (or fail to fit them)."""
    config = model.config
    if k := network_change(config, settings, "--set"):
        raise DarmError(
            f"--init keeps the network it loads: --set {k}={settings[k]} would change it "
            f"(it has {k}={getattr(config, k)}); only {', '.join(FREE_FIELDS)} may change"
        )


def stands_at_best(run_dir: Path) -> int | None:
    """The step of a run's best.json where, without a last.json, that is where the run
    stands: killed between its first best and last saves (they hold the same step), so
    best loads whole and is of the last step logged. Else None (a save cut short left a
    record without weights; last.* moved aside, and best is of an earlier step)."""
    try:
        _, record, _ = load_checkpoint(run_dir / "best.json")
        logged = read_log(run_dir / "log.csv").get("step", ())
    except (OSError, ValueError):  # (a DarmError is a ValueError)
        return None
    return record["step"] if len(logged) and record["step"] == max(logged) else None


def check_resume_matches(args, record: dict, run_dir: Path) -> None:
    """A resumed run keeps its model and data. The command that started it may be repeated
    with --resume, but an option that would change them is refused, not silently ignored."""

    def refuse(option: str, value, theirs) -> None:
        raise DarmError(
            f"--resume continues the run as it was: {option}{'' if value == '' else f' {value}'} "
            f"differs from its {theirs} (--init starts a new run from its weights)"
        )

    name, config = record["model"], record["config"]
    if args.model and args.model != name:
        refuse("--model", args.model, f"model {name}")
    if args.conditional and not config.get("num_classes"):
        refuse("--conditional", "", "unconditional model")
    what = f"{name} config"
    settings = parse_assignments(args.set or [])
    if settings:  # (an old run's config is built only when asked: it may need upgrading)
        theirs = build_config(get_entry(name).config_cls, saved_config(name, config), what)
        for key in changed_fields(theirs, settings, what):
            refuse("--set", f"{key}={settings[key]}", f"{key}={getattr(theirs, key)}")
    if args.init and "init" in record:  # (a run saved before darm recorded it: unknown)
        check_same_start(args.init, record["init"])
    source = record["data"]["source"]
    if args.data is not None and not same_data(args.data, source, run_dir):
        theirs = (
            bundled_name(source) or source.get("name") or source.get("path") or "(arrays in memory)"
        )
        refuse("--data", args.data, f"data {theirs}")
    # the best checkpoint is the lowest validation NLL so far: on other examples, the
    # NLLs of before and after would not compare
    given, theirs = getattr(args, "valid_examples", None), record.get("train", {})
    if given is not None and given != theirs.get("valid_examples", 0):
        refuse("--valid-examples", given, f"{theirs.get('valid_examples', 0)}, which chose best.*")
    for flag, attr, key in SOURCE_OPTIONS:
        value = getattr(args, attr)
        if value is not None and key == "levels" and "levels" not in source:
            if value == FIXED_LEVELS.get(source.get("name")):  # digits' own 17, as at the start
                continue
        if value is not None and key not in source:  # `--levels` on a text run, say
            refuse(flag, value, f"data, which takes no {flag}")
        if value is not None and value != source[key]:
            refuse(flag, value, f"data's {key} {source[key]}")


def invocation(args, ctx) -> str:
    """This command line as a shell would take it again, from the folder it ran in (its
    relative paths start there); under torchrun, how it was launched: on several nodes, a
    static-rendezvous command for this rank's node at the address and port torchrun gave
    its ranks (the other nodes' differ only in --node-rank)."""
    words = ["darm", *getattr(args, "argv", sys.argv[1:])]
    if ctx.world_size > 1:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world_size))
        nodes = []
        if local < ctx.world_size:
            nodes = [
                f"--nnodes={ctx.world_size // local}",
                f"--node-rank={os.environ.get('GROUP_RANK', ctx.rank // local)}",
                f"--master-addr={os.environ.get('MASTER_ADDR', 'localhost')}",
                f"--master-port={os.environ.get('MASTER_PORT', 29500)}",
            ]
        words = ["torchrun", *nodes, f"--nproc-per-node={local}", "-m", *words]
    return in_folder(os.getcwd(), shlex.join(words))


def check_same_start(init: str, start: dict | None) -> None:
    """--resume repeated with --init: the checkpoint must be the one the run started from,
    by its weights (or its path, when it is gone since)."""
    if start is None:
        raise DarmError(
            f"--resume continues the run as it was: it started from new weights, not from "
            f"--init {init} (--init starts a new run from its weights)"
        )
    given = Path(init)
    if not given.exists():  # gone since; a resumed run no longer needs it
        if os.path.realpath(given) in (start["path"], os.path.dirname(start["path"])):
            return
        raise DarmError(f"--init {init}: no such checkpoint (the run started from {start['path']})")
    tags = ("best", "last")  # a folder: either, as it held then
    candidates = [given / f"{t}.json" for t in tags] if given.is_dir() else [given]
    for path in [c for c in candidates if c.exists()]:
        path, record = read_record(path)  # (a .safetensors named: its .json)
        if os.path.realpath(path) == start["path"]:
            return
        if start.get("weights") and record["sha256"].get("weights") == start["weights"]:
            return
    raise DarmError(
        f"--resume continues the run as it was: --init {init} is not the checkpoint it "
        f"started from, {start['path']} (step {start['step']})"
    )


def default_run_dir(args) -> str:
    """runs/DATA-MODEL; with --init, runs/DATA-MODEL-init named after the checkpoint."""
    if not args.init:
        return f"runs/{data_stem(args.data or 'digits')}-{args.model or 'gpt'}"
    _, record = read_record(args.init)
    source = record["data"].get("source", {})
    data = args.data or source.get("path") or source.get("name") or "data"
    return f"runs/{data_stem(data)}-{record['model']}-init"
