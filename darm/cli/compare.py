"""`darm compare`, and `--resume` of an interrupted comparison."""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

from darm.cli.args import device_of
from darm.config import parse_assignments
from darm.errors import DarmError
from darm.run import check_counts, check_data_options, load_training_data, model_overrides


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
    from darm.cli.parser import build_parser  # (which imports this module)

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
    from darm.cli.parser import build_parser

    parser = build_parser()
    actions = parser.commands[command]._actions
    for action in actions:  # unset: absent from the namespace
        action.default = argparse.SUPPRESS
    given, _ = parser.parse_known_args(argv)
    return {a.dest for a in actions if a.dest in vars(given)} - {"help", "imports_here"}
