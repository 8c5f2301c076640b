"""`darm sample`: draw from a checkpoint."""

from __future__ import annotations

import sys

from darm.checkpoint import load_checkpoint
from darm.cli.args import check_sampling_args, device_of
from darm.outputs import write_samples
from darm.paths import checked_stem


def cmd_sample(args) -> None:
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
        progress=not args.quiet,
    )
    if args.quiet:  # the file is the output: a script names it with --out
        return
    if out.suffix == ".txt":
        print(out.read_text(encoding="utf-8"), end="")
    print(f"wrote {out}", file=sys.stderr)
