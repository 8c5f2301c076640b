"""`darm plot` (loss curves) and `darm deps` (dependency maps)."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

from darm.checkpoint import load_checkpoint
from darm.cli.args import check_reread_format, device_of
from darm.data import load_from_source, same_data
from darm.deps import checkpoint_maps, image_shape_of, max_lag, plot_dependency_maps
from darm.errors import DarmError, first_line
from darm.paths import checked_png
from darm.plots import plot_loss_curves, read_log
from darm.reread import check_fits, is_picture_file, label_all, read_like, read_pictures


def parse_pixel(text: str) -> tuple[int, int]:
    """'3,4' -> (3, 4): row and column of an image pixel."""
    try:
        r, c = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ROW,COL like 4,4, got {text!r}") from None
    return r, c


def runs_named(paths) -> list[Path]:
    """The runs a list of paths names: a folder without a log.csv of its own stands for the
    runs in its sub-folders (a comparison's families, in its order, so each family keeps the
    colour of the comparison's own loss.png; a folder of runs, in name order)."""
    runs = []
    for path in paths:
        inner = [] if (path / "log.csv").exists() else sorted(path.glob("*/log.csv"))
        order = comparison_order(path)
        inner.sort(key=lambda log: order.get(log.parent.name, len(order)))  # (stable: by name)
        runs += [log.parent for log in inner] if path.is_dir() and inner else [path]
    return runs


def comparison_order(folder: Path) -> dict[str, int]:
    """Family name -> its place in the comparison whose report is in `folder` ({} if none)."""
    try:
        families = json.loads((folder / "results.json").read_text(encoding="utf-8"))["families"]
        return {row["model"]: i for i, row in enumerate(families)}
    except (OSError, ValueError, KeyError, TypeError):  # no comparison's report there
        return {}


def curve_labels(folders: list[Path]) -> list[str]:
    """Each run's name in the legend: its folder's name, with as many folders above it as
    tell it from the others (two comparisons' markov: cmp-a/markov, cmp-b/markov)."""
    folders = [Path(os.path.abspath(f)) for f in folders]  # `.` and `..` named
    for depth in range(1, max(len(f.parts) for f in folders) + 1):
        labels = ["/".join(f.parts[-depth:]).removeprefix("//") for f in folders]
        if len(set(labels)) == len(labels):
            return labels
    return [str(f) for f in folders]


def data_name(run: Path) -> str | None:
    """The name of the data a run folder's checkpoint was trained on, or None (no readable
    checkpoint: a log alone says nothing of its data)."""
    for tag in ("last", "best"):
        try:
            record = json.loads((run / f"{tag}.json").read_text(encoding="utf-8"))
            return str(record["data"]["name"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def cmd_plot(args) -> None:
    """Loss curves of one or more runs in one picture (each run's own loss.png has one)."""
    curves = {}
    for run in runs_named(map(Path, args.runs)):
        log = run / "log.csv" if run.is_dir() else run
        if not run.exists():
            raise DarmError(f"{run} does not exist")
        if not log.is_file():
            raise DarmError(
                f"{run} has no log.csv, nor runs in its sub-folders: give run folders of "
                f"`darm train`, or a folder of them such as darm compare's"
            )
        try:
            columns = read_log(log)
        except (OSError, ValueError, csv.Error) as e:
            raise DarmError(f"{log} is not a darm log.csv: {first_line(e)}") from None
        needed = {"step", "elapsed_s", "train_nats_per_dim", "valid_nats_per_dim"}
        if missing := needed - set(columns):
            header = log.read_text(encoding="utf-8", errors="replace").partition("\n")[0]
            if needed <= set(header.strip().split(",")):  # the header alone
                raise DarmError(f"{log} has no rows yet: its run stopped before its first")
            missing = ", ".join(sorted(missing))
            raise DarmError(f"{log} is not a darm log.csv: no rows, or no {missing}")
        if any(log.resolve() == seen.resolve() for seen in curves.values()):
            raise DarmError(f"{run} is named twice: each run is drawn once")
        curves[str(log)] = log
    # a run by its folder; another log file beside its log.csv by its own name too
    runs = [
        log.parent if log.name == "log.csv" else log.parent / log.stem for log in curves.values()
    ]
    curves = dict(zip(curve_labels(runs), curves.values()))
    # one run: its own loss.png, whether its folder or its log.csv was named; several: one
    # picture in the folder that holds them all
    folders = [Path(p).parent for p in curves.values()]
    if len(folders) > 1:
        common = Path(os.path.commonpath([f.resolve() for f in folders]))
        here = Path.cwd().resolve()
        if common.is_relative_to(here):  # said as the runs were named: runs/loss.png
            common = common.relative_to(here)
        folders = [Path(".") if common == Path(common.anchor) else common]
    # several runs' picture is no one run's own: an existing one is refused without --force
    out = checked_png(args.out, folders[0] / "loss.png", args.force, own=len(curves) == 1)
    data = {name for log in curves.values() if (name := data_name(log.parent))}
    if len(data) > 1:  # nats per character against nats per pixel, say
        print(f"warning: these runs trained on different data ({', '.join(sorted(data))}): "
              f"their nats per dimension are not of the same thing", file=sys.stderr)  # fmt: skip
    plot_loss_curves(curves, out, x={"step": "step", "time": "elapsed_s"}[args.x])
    print(f"wrote {out}")


def no_pixel_map(image_shape) -> str:
    """Why --pixel draws nothing: the data is not pictures, or pictures of one grey pixel
    (image_shape_of draws no map of them: that pixel has no earlier pixels to depend on)."""
    if not image_shape:
        return "--pixel is for image models; this checkpoint's data is not images"
    size = "x".join(map(str, image_shape[:2]))
    return (
        f"--pixel: this checkpoint's pictures are {size}, one grey pixel, which has no earlier "
        f"pixels to depend on: there is no map of influences to draw"
    )


def cmd_deps(args) -> None:
    model, record, path = load_checkpoint(args.checkpoint, device_of(args))
    out = checked_png(args.out, path.parent / "deps.png", args.force)  # before the work
    meta = record["data"]
    shape = image_shape_of(record)
    if args.pixel and not shape:  # before the data is read and the map made
        raise DarmError(no_pixel_map(meta.get("image_shape")))
    other = args.data and not same_data(args.data, meta["source"], path.parent)
    picture = other and meta.get("image_shape") and is_picture_file(args.data)
    check_reread_format(args, other, picture)
    if picture:
        if args.split is not None:
            raise DarmError(
                f"{args.data} is read whole (a picture, or a grid of them): drop --split"
            )
        data = read_pictures(Path(args.data), model, meta)  # one picture, or a sample grid's
        split, these = data["test"], f"pictures of {Path(args.data).name}"
        where = f"the file {Path(args.data).name}"
    elif other:
        # another file: read whole, as eval reads it, or split (seeded) when --split asks;
        # lines as long as its longest where the model takes any length
        data = read_like(args.data, model, meta, args.format, whole=args.split is None,
                         labels=args.label is None, any_length=True)  # fmt: skip
        if args.split is None:
            split, where, these = data["test"], data.name, f"examples of {data.name}"
        else:
            name = f"{data.name}'s {args.split} split"
            split, where, these = data[args.split], name, f"examples of {name}"
    else:  # the run's own data, found from the checkpoint (or named again)
        data = load_from_source(
            meta, model.num_dims, path.parent, conditional=model.num_classes > 0
        )
        name = args.split or "test"
        split, where, these = data[name], f"the {name} split", f"{name} examples"
    if args.label is not None:  # every example mapped as this class: p(x | y = label)
        label_all(data, model, args.label, meta)
        these += f" (as class {args.label})"
    check_fits(data, model, path, meta, any_length=True)
    if args.n is not None and args.n > len(split):  # as complete --count says it
        print(f"-n {args.n}: {where} holds {len(split)}; averaging over those")
    J = checkpoint_maps(model, record, split, args.n)
    plot_dependency_maps({record["model"]: J}, out, shape, args.pixel)
    lower, lag = bool((J.triu() == 0).all()), max_lag(J)
    padded = " (padding after an item's end not scored)" if meta.get("eos") is not None else ""
    print(
        f"{record['model']}: D={J.shape[0]}; on these {these} the conditionals "
        f"reach back at most {lag} position{'s' * (lag != 1)}{padded}; strictly lower triangular: "
        f"{'yes' if lower else 'NO'}"
    )
    print(f"wrote {out}")
