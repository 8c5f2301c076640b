"""`darm eval`: exact NLL of a checkpoint over a split or a file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from darm.checkpoint import load_checkpoint
from darm.cli.args import check_reread_format, device_of
from darm.data import SPLITS, load_from_source, same_data
from darm.errors import DarmError
from darm.metrics import NLL, example_nats, units
from darm.options import check_counts
from darm.outputs import print_nll, write_per_example
from darm.paths import check_file_target
from darm.reread import check_fits, is_picture_file, label_all, read_like, read_pictures


def cmd_eval(args) -> None:
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
    picture = other and meta.get("image_shape") and is_picture_file(args.data)
    check_reread_format(args, other, picture)
    split = args.split or ("all" if other else "test")
    if picture:
        if split != "all":
            raise DarmError(
                f"{args.data} is scored whole (a picture, or a grid of them): drop --split"
            )
        data = read_pictures(Path(args.data), model, meta)  # one picture, or a sample grid's
    elif other:  # scored whole: a line alone is data enough
        data = read_like(args.data, model, meta, args.format, whole=split == "all",
                         labels=args.label is None, any_length=True)  # fmt: skip
    else:
        data = load_from_source(
            meta, model.num_dims, path.parent, conditional=model.num_classes > 0
        )
    as_class = ""
    if args.label is not None:  # every example scored as this class: log p(x | y = label)
        label = label_all(data, model, args.label, meta)
        as_class = f", every example as class {args.label}"
    elif model.num_classes:  # a conditional model scores each example under its own label
        as_class = ", each example as its own class: log p(x | y)"
    check_fits(data, model, path, meta, any_length=True)
    scored = [s for s in SPLITS if len(data[s])] if split == "all" else [split]
    nats = {s: example_nats(model, data[s], args.batch_size, progress=True) for s in scored}
    nll = NLL(
        sum(n.sum().item() for n in nats.values()),
        sum(len(n) for n in nats.values()),
        sum(data[s].num_dims() for s in scored),
    )
    human = sys.stderr if args.json else sys.stdout  # with --json, stdout is the JSON alone
    # what reading it did: colour made grey, repeated lines dropped (the run's own text is
    # its deduplicated splits, where another file is scored line for line)
    notes = [data.caveat] if data.caveat else []
    if args.data and not other and args.split is None:  # not scored whole, as another file is
        notes.append(
            "--data names the run's own data: its test split; --split all scores it whole, "
            "training examples too"
        )
    read = f" ({'; '.join(notes)})" if notes else ""
    print(f"{path} ({record['model']}, step {record['step']}) on {data.name}{as_class}{read}",
          file=human)  # fmt: skip
    print_nll(nll, split, data.kind, file=human)
    if args.per_example:
        # another file read whole sits in one split: its rows are the file's, not a test split
        whole = {"test": "all"} if other and scored == ["test"] and split == "all" else {}
        write_per_example(Path(args.per_example), data, nats, whole)
        print(f"wrote {args.per_example} (one row per {units(data.kind)[0]})", file=human)
    if args.json:
        given = {}
        if args.label is not None:  # the class's number in the model, and its name if it has one
            names = meta.get("class_names") or []
            given = {"label": int(label[0]), **({"class": names[int(label[0])]} if names else {})}
        print(json.dumps({"split": split, **given, **nll.as_dict()}))
