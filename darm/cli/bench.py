"""`darm bench`: how fast each family trains and samples here."""

from __future__ import annotations

import json
import sys

from darm.bench import bench, setting, speed_table
from darm.cli.args import device_of, family_overrides, model_names
from darm.compare import default_models
from darm.data.splits import examples_per_step
from darm.errors import DarmError
from darm.options import check_counts, check_data_options, load_training_data
from darm.train_config import TrainConfig, bf16_warning

MAX_SECONDS = 24 * 3600  # a timing window, per family: past a day it is a slip, not a benchmark


def cmd_bench(args) -> None:
    check_counts(args, batch_size=1, n=1)
    if not 0 < args.seconds <= MAX_SECONDS:  # nan and inf too; 1e20 would never end
        raise DarmError(
            f"--seconds must be a positive number, at most {MAX_SECONDS:,} (a day), "
            f"got {args.seconds:g}"
        )
    device = device_of(args)
    check_data_options(args.data, args)  # refused rather than silently ignored, as in train
    listed = None if args.models is None else model_names(args.models)  # before the data
    overrides = family_overrides(args.set)
    data = load_training_data(args, args.data)
    names = listed or default_models(data)
    for name in overrides:
        if name not in names:
            raise DarmError(
                f"--set for {name!r}, which is not among the models run: {', '.join(names)}"
            )
    cfg = TrainConfig(batch_size=batch_size(args.batch_size, data), dtype=args.dtype)
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


def batch_size(asked: int | None, data) -> int:
    """--batch-size, or 32 where the training split holds that many: a batch of examples not
    there would count tokens no step trains on."""
    fits = examples_per_step(data["train"], asked or 32)
    if asked is not None and asked > fits:
        raise DarmError(
            f"--batch-size {asked} is more than the {fits} training examples of {data.name}"
        )
    return fits
