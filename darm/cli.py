"""The `darm` command: train, eval, sample, complete, deps, plot, compare, models, data."""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shlex
import signal
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from darm.config import parse_assignments
from darm.data.vocab import saved_vocab
from darm.errors import DarmError, first_line
from darm.outputs import (
    check_file_target,
    checked_png,
    checked_stem,
    class_marks,
    count,
    default_length,
    label_tensor,
    print_nll,
    read_prefix,
    save_samples,
    with_ext,
    write_per_example,
    write_samples,
)
from darm.run import (
    DATA_FIELDS,
    check_counts,
    check_data_options,
    check_fits,
    load_training_data,
    model_overrides,
    read_like,
    train_run,
)

EPILOG = """examples:
  darm train                                  # gpt on the bundled 8x8 digits, 2000 steps
  darm train --budget 3m                      # the same, its schedule planned to fit 3 minutes
  darm train --data names --model gru --steps 3000
  darm train --data shakespeare --model gpt --set n_layer=4 --set n_embd=128
  darm train --data digits --model wavenet --steps 400 --set dropout=0.3
  darm eval runs/digits-wavenet --split test
  darm sample runs/names-gru -n 20 --temperature 0.8
  darm bench --naive                          # how fast each family trains and samples here
  darm models -v                              # families and their config fields
"""


TRAIN_HELP = {
    "steps": "optimiser steps",
    "batch_size": "examples per step",
    "lr": "peak learning rate of AdamW",
    "min_lr": "learning rate at the end of the cosine decay (default --lr / 10)",
    "warmup": "steps of linear warmup (default 100, at most half of each cycle)",
    "cycles": "cosine cycles over --steps, each restarting warm (SGDR); --resume --steps 2N "
    "--cycles 2 extends a finished N-step run by a second cycle",
    "cycle_decay": "peak learning rate of each later cycle, as a fraction of the one before",
    "weight_decay": "AdamW weight decay (matrices only)",
    "beta1": "AdamW beta1",
    "beta2": "AdamW beta2",
    "grad_clip": "max global gradient norm (0: off)",
    "eval_every": "steps between validation NLL + checkpoints",
    "log_every": "steps between log.csv rows of the (smoothed) training loss",
    "eval_batch_size": "batch size of evaluation",
    "valid_examples": "score only the first N validation examples at each evaluation, for "
    "long splits (MNIST: 10,000 images); 0: all. The final test pass scores the whole split",
    "seed": "seed of initialisation, batch order and dropout",
    "grad_accum": "micro-batches per step (same effective batch, less memory)",
    "dtype": "fp32 | bf16 (bf16 autocast of the forward; weights and loss stay fp32; on an "
    "AVX-512 BF16 CPU a training step of gpt ran 1.37x, gated_pixelcnn 1.88x faster, on an "
    "AVX2-only CPU 7x slower)",
    "compile": "torch.compile the model for training",
    "ema": "Polyak averaging: decay of an exponential moving average of the weights, which "
    "validation and the checkpoints use (e.g. 0.999; 0: off)",
}


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad option on one line (no usage dump) and exits 2."""

    def error(self, message: str):
        if self.prog.endswith("complete") and message.endswith("required: checkpoint"):
            # `complete --input a.png RUN`: --input took RUN as one more input
            message += " (after --input, name the run first: --input takes every word after it)"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parse_duration(text: str) -> float:
    """'90' or '90s' -> 90.0, '5m' -> 300.0, '1.5h' -> 5400.0 seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    scale = units.get(text[-1:].lower(), None)
    number = text[:-1] if scale else text
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        msg = f"expected a duration like 90s, 5m or 1h, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not seconds > 0:  # nan and inf too: a budget is a finite time
        raise argparse.ArgumentTypeError(f"duration must be > 0, got {text!r}")
    if seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"duration must be finite, got {text!r}")
    return seconds


def _seed(text: str, low: int, high: int, span: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a seed is an integer, got {text!r}") from None
    if not low <= value < high:
        raise argparse.ArgumentTypeError(f"a seed is in {span}, got {text}")
    return value


def parse_seed(text: str) -> int:
    """A seed of torch's generators: an integer in -2**63 .. 2**64 - 1."""
    return _seed(text, -(2**63), 2**64, "-2**63..2**64-1")


def parse_data_seed(text: str) -> int:
    """A data split's seed, which numpy's generator takes too: 0 .. 2**63 - 1."""
    return _seed(text, 0, 2**63, "0..2**63-1")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:  # torch lists its dozen device types; say what darm takes
        raise DarmError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DarmError("--device cuda asked for, but no CUDA device is available")
    return device


# -- train ------------------------------------------------------------------------------------


def cmd_train(args) -> None:
    """One process, or one rank of `torchrun --nproc_per_node=N -m darm train ...`."""
    from darm import distributed

    device = distributed.rank_device(_device(args.device), distributed.env_context())
    ctx = distributed.init(device)
    try:
        train_run(args, device, ctx)
    finally:
        distributed.cleanup()


# -- sampling ---------------------------------------------------------------------------------


def check_sampling_args(args) -> None:
    """The options `sample` and `complete` share: one line for a bad value."""
    if args.n < 1:
        raise DarmError(f"-n must be >= 1, got {args.n}")
    if not args.temperature > 0:  # nan too
        raise DarmError(f"--temperature must be > 0, got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise DarmError(f"--top-k must be >= 1, got {args.top_k}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise DarmError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.length is not None and args.length < 1:
        raise DarmError(f"--length must be >= 1, got {args.length}")


def add_sampling_args(p: argparse.ArgumentParser, out_stem: str) -> None:
    p.add_argument("--temperature", type=float, default=1.0, help="> 0; below 1 sharpens")
    p.add_argument("--top-k", type=int, help="keep the k most likely symbols")
    p.add_argument("--top-p", type=float, help="keep the smallest set of mass >= p")
    p.add_argument("--seed", type=parse_seed, default=0, help="seed of the draws (default 0)")
    p.add_argument(
        "--label",
        help="class of a conditional model: its name where the data named its classes (an "
        "image folder's sub-folders), else its number; without it, "
        + (
            "samples cycle through the classes"
            if out_stem == "samples"
            else "test examples keep their own labels (--input needs it)"
        ),
    )
    p.add_argument("--out", help=f"output file stem (default: RUN/{out_stem})")
    add_force_arg(p, "--out")
    add_device_arg(p)


def add_force_arg(p: argparse.ArgumentParser, flag: str) -> None:
    p.add_argument(
        "--force", action="store_true", help=f"replace the file {flag} names if it exists"
    )


def add_family_data_args(p: argparse.ArgumentParser) -> None:
    """The data and the families of the commands that run every family: compare, bench."""
    from darm.data import FORMATS

    p.add_argument("--data", default="digits", help="as for train (default: digits)")
    p.add_argument("--format", choices=FORMATS, help="as for train")
    p.add_argument("--block", type=int, help="corpus / audio block length D (default 64)")
    p.add_argument("--levels", type=int, help="symbols L of an array file, or image grey levels")
    p.add_argument("--data-seed", type=parse_data_seed, help="seed of the data split (default 42)")
    p.add_argument(
        "--models",
        help="comma-separated registered models (default markov, rnn, wavenet, gpt, and "
        "pixelcnn on images)",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="MODEL.KEY=VALUE",
        help="config field of one family, repeatable (e.g. --set gpt.n_layer=2)",
    )


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu | cuda | auto (default: cuda if any)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")


def device_of(args) -> torch.device:
    """--device as a torch device, with --threads applied first."""
    check_counts(args, threads=1)
    if args.threads:
        torch.set_num_threads(args.threads)
    return _device(args.device)


def cmd_sample(args) -> None:
    from darm.checkpoint import load_checkpoint

    check_sampling_args(args)
    model, record, path = load_checkpoint(args.checkpoint, device_of(args))
    stem = checked_stem(args.out, path.parent / "samples", record["data"], args.force)
    out = write_samples(
        model,
        record,
        args.n,
        stem,
        args.seed,
        args.temperature,
        args.top_k,
        args.top_p,
        args.prompt,
        args.label,
        args.length,
    )
    if out.suffix == ".txt" and not args.quiet:
        print(out.read_text(encoding="utf-8"), end="")
    print(f"wrote {out}", file=sys.stderr)


# -- complete ---------------------------------------------------------------------------------


@dataclass
class Known:
    """What `complete` keeps of each of N inputs: the prefixes to sample on from, with the
    originals (N, D) they were cut from where there are any (test examples, pictures)."""

    prefixes: list[list[int]]  # N kept prefixes, of one length or (items, --input) of several
    originals: torch.Tensor | None = None  # (N, D)
    labels: torch.Tensor | None = None  # (N,) for a conditional model
    rows: int | None = None  # images: the whole rows kept


def complete_inputs(args, model, meta: dict, folder: Path) -> tuple:
    """The inputs as (originals, labels, prefixes): pictures (N, D) for an image model (each
    file one picture, or a sample grid's), else one list of known symbols per --input (a WAV
    clip's levels, a text's symbols, an array's integers); without --input, the first --count
    examples of the test split and their labels."""
    from darm.complete import read_images
    from darm.data import load_from_source

    shape = meta.get("image_shape")
    if args.input and shape:
        L = model.vocab_size
        return torch.cat([read_images(Path(p), shape, L) for p in args.input]), None, None
    if args.input:
        return None, None, [read_prefix(s, model, meta, "--input") for s in args.input]
    test = load_from_source(meta, model.num_dims, folder)["test"]
    if args.count is not None and args.count > len(test):
        print(f"--count {args.count}: the test split holds {len(test)}; completing those")
    n = 8 if args.count is None else args.count
    return test.x[:n], None if test.y is None else test.y[:n], None


def known_part(args, model, meta: dict, folder: Path) -> Known:
    """Read the inputs and cut each to the part kept: --rows of an image, --dims of a
    sequence (default half), the first half of an item before its end symbol, or all of an
    --input."""
    shape, D = meta.get("image_shape"), model.num_dims
    if args.rows is not None and not shape:
        raise DarmError("--rows keeps image rows; this model reads sequences: use --dims")
    if args.length is not None and shape:
        raise DarmError("--length is for sequences; an image model completes whole images")
    if args.dims is not None and (shape or args.input):
        why = "an image model keeps --rows" if shape else "with --input the whole input is kept"
        raise DarmError(f"--dims keeps the first dimensions of test examples; {why}")
    originals, labels, prefixes = complete_inputs(args, model, meta, folder)
    if not len(prefixes if originals is None else originals):
        raise DarmError("nothing to complete: the test split is empty")
    known = Known(prefixes, originals, labels)
    if shape:
        H = shape[0]
        known.rows = H // 2 if args.rows is None else args.rows
        if not 0 <= known.rows <= H:
            raise DarmError(f"--rows must be in 0..{H}, got {known.rows}")
        known.prefixes = originals[:, : known.rows * D // H].tolist()  # whole rows, all channels
    elif originals is not None and args.dims is None and meta.get("eos") is not None:
        # items padded to D (names): keep the first half of each item, not of the padding
        eos = meta["eos"]
        known.prefixes = [x[: (x.index(eos) if eos in x else D) // 2] for x in originals.tolist()]
        known.originals = None  # the padded rows are not worth showing
    elif originals is not None:
        P = D // 2 if args.dims is None else args.dims
        if not 0 <= P <= D:
            raise DarmError(f"--dims must be in 0..{D}, got {P}")
        known.prefixes = originals[:, :P].tolist()
    if args.label is not None:
        known.labels = label_tensor(model, args.label, len(known.prefixes), meta.get("class_names"))
    elif not model.num_classes:
        known.labels = None  # the test split's labels mean nothing to an unconditional model
    if model.num_classes and known.labels is None:
        raise DarmError("this model is conditional: pass --label")
    return known


def draw_completions(args, model, meta: dict, known: Known) -> torch.Tensor:
    """-n completions of every prefix, (N, n, length): one batch when the prefixes share a
    length, else input by input."""
    from darm.complete import complete

    kept = max(map(len, known.prefixes))
    if args.length is not None and args.length < kept:
        raise DarmError(f"--length {args.length} is shorter than the {kept} dimensions kept")
    gen = torch.Generator(device=model.device).manual_seed(args.seed)
    kw = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, generator=gen,
              num_dims=args.length or default_length(model, meta, kept), progress=True)  # fmt: skip
    if not meta.get("image_shape"):  # an item ends at its end symbol: nothing after it is drawn
        kw["stop_token"] = meta.get("eos")
    labels = None if known.labels is None else known.labels.to(model.device)
    batches = (  # (prefixes (B, P), labels (B,)) of one length each; [] too: from scratch
        [(known.prefixes, labels)]
        if len(set(map(len, known.prefixes))) == 1
        else [([p], None if labels is None else labels[i : i + 1])
              for i, p in enumerate(known.prefixes)]
    )  # fmt: skip
    try:
        return torch.cat(
            [
                complete(
                    model, torch.tensor(p, dtype=torch.long, device=model.device), args.n, y, **kw
                )
                for p, y in batches
            ]
        )  # (N, n, length)
    except ValueError as e:
        raise DarmError(str(e)) from None


def cmd_complete(args) -> None:
    """Keep the first rows (or dimensions) of each input and sample the rest, -n times."""
    from darm.checkpoint import load_checkpoint
    from darm.complete import completion_view, marked_view, save_completion_grid

    check_sampling_args(args)
    check_counts(args, count=1)
    model, record, path = load_checkpoint(args.checkpoint, device_of(args))
    stem = checked_stem(args.out, path.parent / "completions", record["data"], args.force)
    meta = record["data"]
    shape = meta.get("image_shape")
    known = known_part(args, model, meta, path.parent)
    completions = draw_completions(args, model, meta, known).cpu()  # (N, n, length)
    N = len(known.prefixes)
    if shape:
        out = with_ext(stem, ".png")
        save_completion_grid(
            known.originals, completions, tuple(shape), model.vocab_size, known.rows, out
        )
        print(
            f"kept the top {known.rows} of {shape[0]} rows of {count(N, 'image')}; "
            f"{args.n} completion{'s' * (args.n != 1)} each (original first in each row)"
        )
    else:  # written as samples are: lines, corpus blocks between rules, or a WAV
        x = completions.flatten(0, 1)  # (N, n, length) -> (N*n, length), input by input
        marks = None if known.labels is None else known.labels.repeat_interleave(args.n)
        classes = class_marks(marks, meta.get("class_names"))
        out = save_samples(x, meta, model.vocab_size, stem, classes=classes)
        if meta.get("eos") is not None:  # items: each input, then its completions
            print(
                completion_view(
                    known.prefixes, completions.tolist(), saved_vocab(meta), meta["eos"]
                )
            )
        elif out.suffix == ".txt":  # the file holds the rows; the screen marks the kept part
            kept = list(map(len, known.prefixes))
            print(marked_view(x, kept, args.n, saved_vocab(meta), classes))
    print(f"wrote {out}", file=sys.stderr)


# -- eval -------------------------------------------------------------------------------------


def is_picture_file(spec: str) -> bool:
    from darm.data.images import IMAGE_SUFFIXES

    return Path(spec).is_file() and Path(spec).suffix.lower() in IMAGE_SUFFIXES


def pictures(path: Path, model, meta: dict):
    """A picture file as test data for an image model: the picture, or each picture of a
    grid `darm sample` wrote (as `complete --input` reads them)."""
    from darm.complete import read_images
    from darm.data.arrays import make_dataset

    shape = tuple(meta["image_shape"])
    x = read_images(path, shape, model.vocab_size).numpy()  # (N, D)
    empty = x[:0]
    return make_dataset(
        path.name,
        {"train": empty, "valid": empty, "test": x},
        dict.fromkeys(("train", "valid", "test")),
        model.vocab_size,
        shape,
        {"format": "images", "path": str(path.resolve())},
        f"{len(x)} picture{'s' * (len(x) != 1)} from {path.name}, scored whole",
    )


def cmd_eval(args) -> None:
    from darm.checkpoint import load_checkpoint
    from darm.data import SPLITS, load_from_source, same_data
    from darm.metrics import NLL, example_nats, units

    check_counts(args, batch_size=1)
    if args.per_example:
        if Path(args.per_example).suffix.lower() != ".csv":  # never over a checkpoint or data
            raise DarmError(f"--per-example writes a CSV: give a .csv name, not {args.per_example}")
        check_file_target(Path(args.per_example), "--per-example", args.force)
    model, record, path = load_checkpoint(args.checkpoint, device_of(args))
    meta = record["data"]
    # another file is scored whole by default (its own split would leave 90% of it out); the
    # run's own data, named again, keeps its test split
    other = args.data and not same_data(args.data, meta["source"], path.parent)
    split = args.split or ("all" if other else "test")
    if other and meta.get("image_shape") and is_picture_file(args.data):
        if split != "all":
            raise DarmError(
                f"{args.data} is scored whole (a picture, or a grid of them): drop --split"
            )
        data = pictures(Path(args.data), model, meta)  # one picture, or a sample grid's
    elif other:  # scored whole: a line alone is data enough
        data = read_like(args.data, model, meta, whole=split == "all", labels=args.label is None)
    else:
        data = load_from_source(meta, model.num_dims, path.parent)
    as_class = ""
    if args.label is not None:  # every example scored as this class: log p(x | y = label)
        label = label_tensor(model, args.label, 1, meta.get("class_names"))
        for s in SPLITS:
            data[s].y = label.expand(len(data[s]))  # (N,) the one label
        data.num_classes, data.class_names = model.num_classes, meta.get("class_names")
        as_class = f", every example as class {args.label}"
    check_fits(data, model, path, meta)
    scored = [s for s in SPLITS if len(data[s])] if split == "all" else [split]
    nats = {s: example_nats(model, data[s], args.batch_size, progress=True) for s in scored}
    nll = NLL(
        sum(n.sum().item() for n in nats.values()),
        sum(len(n) for n in nats.values()),
        sum(data[s].num_dims() for s in scored),
    )
    human = sys.stderr if args.json else sys.stdout  # with --json, stdout is the JSON alone
    print(f"{path} ({record['model']}, step {record['step']}) on {data.name}{as_class}", file=human)
    print_nll(nll, split, data.kind, file=human)
    if args.per_example:
        # another file read whole sits in one split: its rows are the file's, not a test split
        whole = {"test": "all"} if other and scored == ["test"] and split == "all" else {}
        write_per_example(Path(args.per_example), data, nats, whole)
        print(f"wrote {args.per_example} (one row per {units(data.kind)[0]})", file=human)
    if args.json:
        given = {} if args.label is None else {"label": int(label[0])}
        print(json.dumps({"split": split, **given, **nll.as_dict()}))


# -- dependency maps --------------------------------------------------------------------------


def parse_pixel(text: str) -> tuple[int, int]:
    """'3,4' -> (3, 4): row and column of an image pixel."""
    try:
        r, c = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ROW,COL like 4,4, got {text!r}") from None
    return r, c


def cmd_plot(args) -> None:
    """Loss curves of one or more runs in one picture (each run's own loss.png has one)."""
    from darm.plots import plot_loss_curves, read_log

    curves = {}
    for run in map(Path, args.runs):
        log = run / "log.csv" if run.is_dir() else run
        if not run.exists():
            raise DarmError(f"{run} does not exist")
        if not log.is_file():
            raise DarmError(f"{run} has no log.csv: give run folders of `darm train`")
        try:
            columns = read_log(log)
        except (OSError, ValueError, csv.Error) as e:
            raise DarmError(f"{log} is not a darm log.csv: {first_line(e)}") from None
        missing = {"step", "elapsed_s", "train_nats_per_dim", "valid_nats_per_dim"} - set(columns)
        if missing:
            raise DarmError(f"{log} is not a darm log.csv: no rows, or no {', '.join(missing)}")
        label = log.parent.name
        curves[str(log.parent) if label in curves else label] = log  # two folders named alike
    # one run: its own loss.png, whether its folder or its log.csv was named; several: one
    # picture in the folder that holds them all
    folders = [Path(p).parent for p in curves.values()]
    if len(folders) > 1:
        common = Path(os.path.commonpath([f.resolve() for f in folders]))
        folders = [Path(".") if common == Path(common.anchor) else common]
    # several runs' picture is no one run's own: an existing one is refused without --force
    out = checked_png(args.out, folders[0] / "loss.png", args.force, own=len(curves) == 1)
    plot_loss_curves(curves, out, x={"step": "step", "time": "elapsed_s"}[args.x])
    print(f"wrote {out}")


def cmd_deps(args) -> None:
    from darm.checkpoint import load_checkpoint
    from darm.data import load_from_source
    from darm.deps import checkpoint_maps, image_shape_of, max_lag, plot_dependency_maps

    model, record, path = load_checkpoint(args.checkpoint, device_of(args))
    out = checked_png(args.out, path.parent / "deps.png", args.force)  # before the work
    meta = record["data"]
    data = load_from_source(meta, model.num_dims, path.parent)
    J = checkpoint_maps(model, record, data[args.split], args.n)
    shape = image_shape_of(record)
    if args.pixel and not shape:
        raise DarmError("--pixel is for image models; this checkpoint's data is not images")
    plot_dependency_maps({record["model"]: J}, out, shape, args.pixel)
    lower = bool((J.triu() == 0).all())
    padded = " (padding after an item's end not scored)" if meta.get("eos") is not None else ""
    print(
        f"{record['model']}: D={J.shape[0]}; on these {args.split} examples the conditionals "
        f"reach back at most {max_lag(J)} positions{padded}; strictly lower triangular: "
        f"{'yes' if lower else 'NO'}"
    )
    print(f"wrote {out}")


# -- compare ----------------------------------------------------------------------------------


def family_overrides(assignments: list[str] | None) -> dict[str, dict]:
    """--set MODEL.KEY=VALUE, repeated -> {model: {key: value}}."""
    overrides: dict[str, dict] = {}
    for key, value in parse_assignments(assignments or []).items():
        model, dot, field = key.partition(".")
        if not dot or not field:
            raise DarmError(f"--set takes MODEL.KEY=VALUE (e.g. gpt.n_layer=2), got {key!r}")
        model_overrides({field: value}, f"--set {model}.")
        overrides.setdefault(model, {})[field] = value
    return overrides


def model_names(text: str | None, data) -> list[str]:
    """--models as a list (default: compare's families for this data), each named once."""
    from darm.compare import default_models

    if text is None:
        return default_models(data)
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise DarmError(f"--models names no model: {text!r}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DarmError(f"--models names {', '.join(twice)} more than once")
    return names


def cmd_compare(args) -> None:
    from darm.compare import CompareOptions, compare, unfinished

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise DarmError("compare runs in one process; use torchrun with `darm train`")
    before = None  # the report of the comparison --resume continues
    if args.resume:
        args, before = resumed_args(args)
        if not unfinished(before):
            print(f"every family of the comparison in {args.out} has finished: nothing to do")
            return
    if args.budget is None and args.steps is None:
        args.budget = 300.0
    check_counts(
        args, steps=1, samples=1, threads=1, batch_size=1, deps_examples=1, valid_examples=1
    )
    device = device_of(args)
    check_data_options(args.data, args)  # refused rather than silently ignored, as in train
    data = load_training_data(args, args.data)
    names = model_names(args.models, data)
    overrides = family_overrides(args.set)
    out = Path(args.out or f"runs/compare-{Path(args.data).stem}")
    # every option that changes a number in the report, quoted for the shell
    imports = [a for spec in args.imports for a in ("--import", spec)]  # families of one's own
    command = ["darm", *imports, "compare", "--data", args.data, "--models", ",".join(names)]
    if args.budget is not None:  # 300s, not 300.0s; every digit where :g would round
        short = f"{args.budget:g}"
        command += ["--budget", (short if float(short) == args.budget else repr(args.budget)) + "s"]
    command += ["--steps", str(args.steps)] if args.steps is not None else []
    for k, fv in overrides.items():
        command += [a for f, v in fv.items() for a in ("--set", f"{k}.{f}={v}")]
    optional = [("--format", args.format, None), ("--block", args.block, None),
                ("--levels", args.levels, None), ("--data-seed", args.data_seed, None),
                ("--batch-size", args.batch_size, None), ("--samples", args.samples, 64),
                ("--valid-examples", args.valid_examples, None),
                ("--deps-examples", args.deps_examples, None), ("--seed", args.seed, 1337),
                ("--threads", args.threads, None), ("--device", args.device, "auto"),
                ("--out", args.out, None)]  # fmt: skip
    for flag, value, default in optional:
        command += [flag, str(value)] if value != default else []
    opts = CompareOptions(
        models=names,
        out=out,
        budget=args.budget,
        steps=args.steps,
        samples=args.samples,
        seed=args.seed,
        deps_examples=args.deps_examples,
        overrides=overrides,
        batch_size=args.batch_size,
        valid_examples=args.valid_examples or 0,
        progress=not args.quiet,
        command=before["command"] if before else shlex.join(command),  # the first run's
    )
    print(data.summary())
    results = compare(data, opts, device, before)
    print(f"wrote {out / 'report.md'}, {out / 'report.html'}, {out / 'results.json'}")
    failed = [f"{r.model} ({r.note})" for r in results if r.status == "failed"]
    if failed:
        raise DarmError(f"failed: {'; '.join(failed)}; see {out / 'report.md'}")


# options of this invocation rather than of the comparison: --resume takes them as given
RESUME_OWN = ("out", "quiet", "resume", "threads", "device")


def resumed_args(args) -> tuple[argparse.Namespace, dict]:
    """compare --resume: the options of the comparison in --out, read back from the command
    its report records, and its report (read_comparison). An option given again must repeat
    the comparison's; one that would change it is refused, not ignored."""
    from darm.compare import read_comparison

    out = Path(args.out or f"runs/compare-{Path(args.data).stem}")
    before = read_comparison(out)
    try:
        recorded, _ = build_parser().parse_known_args(shlex.split(before["command"])[1:])
    except (ValueError, KeyError, SystemExit):  # (argparse has printed what it could not read)
        raise DarmError(f"{out / 'results.json'} records no command darm can read") from None
    given = given_options(args.argv, "compare")
    for dest in sorted(given - set(RESUME_OWN)):
        mine, theirs = getattr(args, dest), getattr(recorded, dest)
        if not same_option(dest, mine, theirs):
            flag = "--" + dest.replace("_", "-")
            show = " ".join(theirs) if dest == "set" and theirs else theirs
            raise DarmError(
                f"--resume continues the comparison in {out} as it was: {flag} "
                f"{' '.join(mine) if dest == 'set' else mine} differs from its {show}"
            )
    for dest in RESUME_OWN:
        if dest in given or dest in ("quiet", "resume"):
            setattr(recorded, dest, getattr(args, dest))
    recorded.out, recorded.argv = str(out), args.argv
    return recorded, before


def same_option(dest: str, mine, theirs) -> bool:
    """An option given to compare --resume against the comparison's own value."""
    if dest == "models":
        return [m.strip() for m in mine.split(",") if m.strip()] == theirs.split(",")
    if dest == "set":
        return family_overrides(mine) == family_overrides(theirs)
    if dest == "data" and mine != theirs:  # one file, named two ways
        return Path(mine).exists() and Path(mine).resolve() == Path(theirs).resolve()
    return mine == theirs


def given_options(argv: list[str], command: str) -> set[str]:
    """The options of `command` given on the command line argv, told apart from defaults."""
    parser = build_parser()
    actions = parser.commands[command]._actions
    for action in actions:  # unset: absent from the namespace
        action.default = argparse.SUPPRESS
    given, _ = parser.parse_known_args(argv)
    return {a.dest for a in actions if a.dest in vars(given)} - {"help", "imports_here"}


# -- bench ------------------------------------------------------------------------------------


def cmd_bench(args) -> None:
    from darm.bench import bench, setting, speed_table
    from darm.train import TrainConfig, bf16_warning

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise DarmError("bench runs in one process")
    check_counts(args, batch_size=1, n=1, threads=1)
    if not 0 < args.seconds < math.inf:
        raise DarmError(f"--seconds must be a positive number, got {args.seconds}")
    device = device_of(args)
    check_data_options(args.data, args)  # refused rather than silently ignored, as in train
    data = load_training_data(args, args.data)
    names = model_names(args.models, data)
    overrides = family_overrides(args.set)
    for name in overrides:
        if name not in names:
            raise DarmError(f"--set for {name!r}, which is not in --models")
    if args.batch_size > len(data["train"]):
        raise DarmError(
            f"--batch-size {args.batch_size} is more than the {len(data['train'])} training "
            f"examples of {data.name}"
        )
    cfg = TrainConfig(batch_size=args.batch_size, dtype=args.dtype)
    human = sys.stderr if args.json else sys.stdout  # with --json, stdout is the JSON alone
    print(data.summary(), file=human)
    if warning := bf16_warning(cfg, device):
        print(warning, file=sys.stderr)
    speeds = bench(
        data, names, overrides, cfg, args.n, args.seconds, args.naive, device,
        report=lambda line: print(line, file=sys.stderr),
    )  # fmt: skip
    where = setting(data, cfg, args.n, device)
    print(speed_table(speeds, where), file=human)
    if args.json:
        print(json.dumps({**where, "speeds": [s.as_dict() for s in speeds]}))


# -- listings ---------------------------------------------------------------------------------


def cmd_models(args) -> None:
    from darm.models import config_fields, get_entry, list_models

    names = list_models()
    width = max(map(len, names))
    family_width = max(len(get_entry(n).family) for n in names) + 2
    for name in names:
        entry = get_entry(name)
        print(f"{name:{width}s}  {'[' + entry.family + ']':{family_width}s}  {entry.doc}")
        if args.verbose:
            for key, value in config_fields(name).items():
                note = "  (set by the data, not by --set)" if key in DATA_FIELDS else ""
                print(f"{'':{width + 2}s}{key} = {value}{note}")


def cmd_data(args) -> None:
    from darm.data import BUILTIN

    width = max(map(len, BUILTIN))
    for name, doc in BUILTIN.items():
        print(f"{name:{width}s}  {doc}")
    print(
        "or a path: .txt (--format lines|corpus), .npy/.npz integer arrays or images, "
        "a folder of images, .wav"
    )


# -- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from darm.data import FORMATS, SPLITS
    from darm.train import DTYPES, TrainConfig

    p = Parser(
        prog="darm",
        description="Deep autoregressive models: p(x) = prod_d p(x_d | x_<d), one shared "
        "network for every conditional. Train, evaluate and sample them on discrete data.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="a module or .py file to import first, for a family of your own it registers "
        "(darm --import my_family.py train --model trigram); repeatable",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    p.commands = sub.choices  # name -> sub-parser, so main can send a typo to its --help

    t = sub.add_parser(
        "train",
        help="train a model, then report test NLL and write samples",
        description="Train by maximum likelihood; checkpoints, log.csv, loss.png, "
        "results.json and samples go to --out.",
    )
    t.add_argument(
        "--data",
        help="a built-in dataset (see `darm data`: digits, names, shakespeare, speech, "
        "binarized_mnist, mnist) or a PATH: .txt, .npy/.npz, a folder of images, .wav "
        "(default: digits; with --init the checkpoint's data)",
    )
    t.add_argument(
        "--format",
        choices=FORMATS,
        help="how to read a PATH: lines (one item per line), corpus (one text cut in "
        "blocks), array (integers), images (uint8 pictures), audio (a WAV); default by the "
        "PATH: a folder is images, .npy/.npz array, .wav audio, anything else lines",
    )
    t.add_argument("--block", type=int, help="corpus / audio block length D (default 64)")
    t.add_argument(
        "--levels",
        type=int,
        help="symbols L: of an array file, or grey levels images are quantised to "
        "(mnist, --format images; default 256)",
    )
    t.add_argument("--data-seed", type=parse_data_seed, help="seed of the data split (default 42)")
    t.add_argument("--model", help="registered model (see `darm models`; default: gpt)")
    t.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="model config field, repeatable (e.g. --set n_layer=2)",
    )
    t.add_argument("--conditional", action="store_true", help="model p(x | label)")
    t.add_argument("--out", help="run folder (default runs/DATA-MODEL; with --init, -init added)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument(
        "--init",
        metavar="CHECKPOINT",
        help="start a new run from this checkpoint's weights (fine-tuning): fresh optimiser "
        "and schedule; --set may change dropout",
    )
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        default = getattr(defaults, f.name)
        help = TRAIN_HELP.get(f.name, f.name)
        help += "" if "(default" in help else f" (default {default})"
        flag = f"--{f.name.replace('_', '-')}"
        if isinstance(default, bool):  # type=bool would read "--compile False" as True
            t.add_argument(flag, action=argparse.BooleanOptionalAction, help=help)
        elif f.name == "dtype":
            t.add_argument(flag, choices=DTYPES, help=help)
        elif f.name == "seed":
            t.add_argument(flag, type=parse_seed, help=help)
        else:
            t.add_argument(flag, type=type(default), help=help)
    t.add_argument(
        "--budget",
        type=parse_duration,
        metavar="TIME",
        help="train for this long (90s, 5m, 1h): without --steps, a few timed steps plan the "
        "step count so the schedule ends in time, planned again from the real speed as it "
        "trains; training stops at the budget in any case, and --resume continues",
    )
    t.add_argument(
        "--samples",
        type=int,
        default=64,
        help="samples to write at the end (default 64; 0: none; audio: at most 8 clips of a "
        "second, each a long draw)",
    )
    add_device_arg(t)
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="exact NLL of a checkpoint over a whole split")
    e.add_argument("checkpoint", help="run folder or checkpoint .json")
    e.add_argument(
        "--split",
        choices=(*SPLITS, "all"),
        help="the split scored (default: test; all, the whole file, with --data)",
    )
    e.add_argument(
        "--data",
        help="score another file, read as the model's data was (its format, vocabulary and "
        "levels): whole by default; a picture, or each picture of a grid darm sample wrote, "
        "for an image model",
    )
    e.add_argument(
        "--label",
        help="score every example as this class (a conditional model): log p(x | label); "
        "data without labels needs it",
    )
    e.add_argument(
        "--per-example",
        metavar="FILE",
        help="also write a CSV of every example scored: split, index, its line (a text "
        "file's) or file (an image folder's), label, nats, dims, bits/dim, and the text of "
        "text data",
    )
    add_force_arg(e, "--per-example")
    e.add_argument("--batch-size", type=int, default=512, help="examples a pass (default 512)")
    add_device_arg(e)
    e.add_argument(
        "--json",
        action="store_true",
        help="print the numbers as one line of JSON on stdout (the rest goes to stderr)",
    )
    e.set_defaults(func=cmd_eval)

    s = sub.add_parser("sample", help="draw samples: a PNG grid for images, lines for text")
    s.add_argument("checkpoint", help="run folder or checkpoint .json")
    s.add_argument("-n", type=int, default=16, help="number of samples (default 16)")
    add_sampling_args(s, "samples")
    s.add_argument(
        "--prompt",
        help="what the samples start with: text, integers for an array model, a WAV for audio",
    )
    s.add_argument(
        "--length",
        type=int,
        help="length of each sample, --prompt included (default: the model's D; for audio, "
        "one second past the prompt where the model goes on past D: markov, rnn, wavenet)",
    )
    s.add_argument("--quiet", action="store_true", help="do not print text samples")
    s.set_defaults(func=cmd_sample)

    k = sub.add_parser(
        "complete",
        help="keep the top rows of images (or a prefix) and sample the rest",
        description="Completion from p(x_rest | x_known). Images: the first --count test "
        "images (or --input PNG files), the top --rows rows kept, a PNG grid with the "
        "original first in each row. Sequences: --input prefixes (text, or integers for "
        "arrays), or the first --dims of test examples.",
    )
    k.add_argument("checkpoint", help="run folder or checkpoint .json")
    k.add_argument(
        "--input",
        nargs="+",
        help="pictures (image models; a grid written by darm sample gives each of its "
        "pictures), WAV clips (audio) or prefixes",
    )
    k.add_argument("--rows", type=int, help="image rows kept (default: half)")
    k.add_argument(
        "--dims",
        type=int,
        help="sequence dimensions kept (default: half of D; of each item for one-per-line text)",
    )
    k.add_argument("--count", type=int, help="test examples without --input (default 8)")
    k.add_argument("-n", type=int, default=4, help="completions of each input (default 4)")
    k.add_argument(
        "--length",
        type=int,
        help="length of each completion, the kept part included (default: the model's D; "
        "for audio, one second past the kept part where the model goes on past D)",
    )
    add_sampling_args(k, "completions")
    k.set_defaults(func=cmd_complete)

    m = sub.add_parser("models", help="list the registered models")
    m.add_argument("-v", "--verbose", action="store_true", help="show config fields")
    m.set_defaults(func=cmd_models)

    d = sub.add_parser("data", help="list the built-in datasets")
    d.set_defaults(func=cmd_data)

    g = sub.add_parser(
        "deps",
        help="draw a checkpoint's dependency map |d log p(x_d | x_<d) / d x_j|",
        description="The D x D map of how strongly each conditional depends on each earlier "
        "position (gradients through the input embeddings, averaged over -n examples of a "
        "split); for images also the map of one pixel's influences.",
    )
    g.add_argument("checkpoint", help="run folder or checkpoint .json")
    g.add_argument("--pixel", type=parse_pixel, metavar="ROW,COL", help="images: the pixel")
    g.add_argument(
        "-n", "--n", type=int, help="examples to average over (default 16 to 1024, by D)"
    )
    g.add_argument("--split", choices=SPLITS, default="test", help="(default test)")
    g.add_argument("--out", help="output PNG (default RUN/deps.png)")
    add_force_arg(g, "--out")
    add_device_arg(g)
    g.set_defaults(func=cmd_deps)

    pl = sub.add_parser(
        "plot",
        help="loss curves of one or more runs in one picture",
        description="Validation (solid) and smoothed training (dashed) NLL of each run's "
        "log.csv, against steps or training time; e.g. `darm plot runs/a runs/b --x time`.",
    )
    pl.add_argument("runs", nargs="+", metavar="RUN", help="run folders (or their log.csv)")
    pl.add_argument(
        "--x", choices=("step", "time"), default="step", help="horizontal axis (default step)"
    )
    pl.add_argument(
        "--out",
        help="output PNG or folder (default RUN/loss.png for one run; for several, loss.png in "
        "the folder that holds them, or here when they share none)",
    )
    add_force_arg(pl, "--out")
    pl.set_defaults(func=cmd_plot)

    c = sub.add_parser(
        "compare",
        help="train every family on the same data and budget; one report",
        description="Train each family (default markov, rnn, wavenet, gpt, and pixelcnn on "
        "images) with a default configuration of similar size under the same budget, "
        "evaluate each exactly on the test split, sample, draw dependency maps, and write "
        "OUT/report.md, report.html and results.json (rewritten after every family, so "
        "Ctrl-C keeps the finished ones; --resume continues).",
    )
    add_family_data_args(c)
    c.add_argument(
        "--budget",
        type=parse_duration,
        metavar="TIME",
        help="training time per family (90s, 5m; default 5m unless --steps)",
    )
    c.add_argument("--steps", type=int, help="optimiser steps per family instead of a time")
    c.add_argument("--batch-size", type=int, help="examples per step (default 64)")
    c.add_argument(
        "--valid-examples",
        type=int,
        metavar="N",
        help="validation passes during training score the first N examples (default: all; "
        "the test NLL is always over the whole split)",
    )
    c.add_argument("--samples", type=int, default=64, help="samples per family, timed (default 64)")
    c.add_argument(
        "--deps-examples", type=int, help="examples per dependency map (default 16 to 1024, by D)"
    )
    c.add_argument(
        "--seed",
        type=parse_seed,
        default=1337,
        help="seed of weights, batches, samples (default 1337)",
    )
    c.add_argument("--out", help="report folder (default runs/compare-DATA)")
    c.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted comparison in --out: finished families are kept, the "
        "interrupted one trains on from its last checkpoint, the rest run; its options are "
        "read from its report (repeat them or leave them out)",
    )
    add_device_arg(c)
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    c.set_defaults(func=cmd_compare)

    b = sub.add_parser(
        "bench",
        help="how fast each family trains and samples on this machine",
        description="Time each family (compare's configurations for the data, untrained) for "
        "a few seconds: training steps on real batches, then whole samples through its cache "
        "(and, with --naive, without it). Speed only: `darm compare` trains each family and "
        "scores it.",
    )
    add_family_data_args(b)
    b.add_argument("--batch-size", type=int, default=32, help="examples per step (default 32)")
    b.add_argument("--dtype", choices=DTYPES, default="fp32", help="as for train (default fp32)")
    b.add_argument(
        "--seconds", type=float, default=2.0, help="training timed per family (default 2)"
    )
    b.add_argument("-n", type=int, default=16, help="samples drawn, timed (default 16)")
    b.add_argument(
        "--naive",
        action="store_true",
        help="also sample without the cache, for its speed-up (O(D^2) a sample: lower -n "
        "for long sequences or big images)",
    )
    b.add_argument("--json", action="store_true", help="the numbers as JSON on stdout")
    add_device_arg(b)
    b.set_defaults(func=cmd_bench)
    for command in sub.choices.values():  # `darm train --import f.py` as well as `darm --import`
        command.add_argument(
            "--import",
            dest="imports_here",
            action="append",
            default=[],
            metavar="MODULE",
            help="a module or .py file to import first, for a family of your own; repeatable",
        )
    return p


def out_of_memory(command: str, e: BaseException) -> int:
    print(f"darm {command}: error: out of memory (try a smaller model or --batch-size): "
          f"{first_line(e)}", file=sys.stderr)  # fmt: skip
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        args.argv = sys.argv[1:] if argv is None else list(argv)  # what was given, as given
        if unknown:  # `darm train --stpes 20`: point at `darm train --help`, not `darm --help`
            parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
        if getattr(args, "data", None) == "":  # `--data "$UNSET"` would quietly mean the default
            parser.commands[args.command].error("argument --data: expected a dataset or a path")
    except SystemExit as e:  # --help, or a bad option already reported on one line
        return int(e.code or 0)
    try:
        args.imports += args.imports_here  # before the command or after it
        if args.imports:
            from darm.models.registry import import_families

            for spec in args.imports:
                import_families(spec)
        args.func(args)
    except DarmError as e:
        print(f"darm {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # training says where it saved the run
        signum = getattr(e, "signum", signal.SIGINT)  # a SIGTERM that training caught
        what = "terminated" if signum == signal.SIGTERM else "interrupted"
        if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
            print(f"darm {args.command}: {what}" + (f": {e}" if str(e) else ""), file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:  # `darm models -v | head`: the reader left; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:  # a disk full, a folder made read-only mid-run: the system's words
        where = f": {e.filename}" if e.filename else ""
        print(f"darm {args.command}: error: {e.strerror or first_line(e)}{where}", file=sys.stderr)
        return 1
    except (MemoryError, torch.OutOfMemoryError) as e:
        return out_of_memory(args.command, e)
    except RuntimeError as e:  # the CPU allocator's failure is a plain RuntimeError
        if "DefaultCPUAllocator" not in str(e):
            raise
        return out_of_memory(args.command, e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
