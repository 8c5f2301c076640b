"""`darm compare`, and `--resume` of an interrupted comparison."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shlex
import sys
from pathlib import Path

from darm.cli.args import device_of, family_overrides, model_names
from darm.compare import (
    CompareOptions,
    check_new_report,
    compare,
    default_models,
    read_comparison,
    unfinished,
)
from darm.config import typed_fields
from darm.data import BUILTIN
from darm.errors import DarmError
from darm.models import get_entry
from darm.models.registry import import_families
from darm.options import (
    SOURCE_OPTIONS,
    batch_note,
    check_counts,
    check_data_options,
    data_stem,
    load_training_data,
)
from darm.runs import in_folder


def cmd_compare(args) -> None:
    before = None  # the report of the comparison --resume continues
    if args.retry_failed and not args.resume:
        raise DarmError("--retry-failed goes with --resume (it retries a comparison's failures)")
    if args.resume:
        args, before = resumed_args(args)
        if not unfinished(before, args.retry_failed):
            failed = [n for n, r in before["families"].items() if r.status == "failed"]
            if failed:  # still failed: a script that checks the exit status is told
                raise DarmError(
                    f"every family of the comparison in {args.out} has finished, and "
                    f"{', '.join(failed)} failed: --retry-failed runs them again"
                )
            print(f"every family of the comparison in {args.out} has finished: nothing to do")
            return
    if args.budget is None and args.steps is None:
        args.budget = 300.0
    check_counts(args, steps=1, samples=0, batch_size=1, deps_examples=1, valid_examples=1)
    device = device_of(args)
    check_data_options(args.data, args)  # refused rather than silently ignored, as in train
    listed = None if args.models is None else model_names(args.models)  # before the data
    if before is None:  # (compare checks again; a taken folder is refused before the data)
        check_new_report(report_folder(args))
    overrides = family_overrides(args.set)
    data = load_training_data(args, args.data)
    if note := batch_note(args.batch_size, data):
        print(note, file=sys.stderr)
    names = listed or default_models(data)
    out = report_folder(args)
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
        command=before["command"] if before else compare_command(args, names, overrides),
        cwd=(before or {}).get("cwd") or os.getcwd(),  # where the command runs (ran)
        invocation=in_folder(os.getcwd(), shlex.join(["darm", *args.argv])),
        retry_failed=args.retry_failed,
    )
    print(data.summary())
    results = compare(data, opts, device, before)
    print(f"wrote {out / 'report.md'}, {out / 'report.html'}, {out / 'results.json'}")
    failed = [f"{r.model} ({r.note})" for r in results if r.status in ("failed", "interrupted")]
    if failed:
        raise DarmError(f"failed: {'; '.join(failed)}; see {out / 'report.md'}")


def report_folder(args) -> Path:
    return Path(args.out or f"runs/compare-{data_stem(args.data)}")


def compare_command(args, names: list[str], overrides: dict[str, dict]) -> str:
    """The command that reproduces the comparison, for its report: every option that changes
    a number in it, quoted for the shell (the first run's, for --resume to read back)."""
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
    return shlex.join(command)


# options of this command line rather than of the comparison: --resume takes them from it
# (their defaults where not given: a comparison begun on a GPU may go on on a CPU)
RESUME_OWN = ("out", "quiet", "resume", "retry_failed", "threads", "device")
# the data's options are checked by what they read (the examples' digest, in compare), not as
# typed: a default given explicitly (--data-seed 42), a file named from another folder
DATA_OPTIONS = ("data", *(attr for _, attr, _ in SOURCE_OPTIONS))


def resumed_args(args) -> tuple[argparse.Namespace, dict]:
    """compare --resume: the options of the comparison in --out, read back from the command
    its report records (its files named from the folder it ran in, its --import families
    imported), and its report (read_comparison). An option given again must repeat the
    comparison's; one that would change it is refused, not ignored."""
    from darm.cli.parser import build_parser  # (which imports this module)

    out = report_folder(args)
    before = read_comparison(out)
    report = out / "results.json"
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # argparse's own line: not the user's
            words = shlex.split(before["command"])[1:]
            recorded, unknown = build_parser().parse_known_args(words)
    except (ValueError, SystemExit):
        raise DarmError(f"{report} records no command darm can read") from None
    if unknown or recorded.command != "compare":
        raise DarmError(f"{report} records a command darm cannot read: {before['command']}")
    ran_in = Path(before.get("cwd") or ".")
    recorded.imports = [anchored(s, ran_in) for s in recorded.imports + recorded.imports_here]
    for spec in recorded.imports:  # (each file once, however often it is named)
        import_families(spec)
    if recorded.data not in BUILTIN:
        recorded.data = anchored(recorded.data, ran_in)
    given = given_options(args.argv, "compare")
    for dest in sorted(given - set(RESUME_OWN)):
        mine, theirs = getattr(args, dest), getattr(recorded, dest)
        if dest in DATA_OPTIONS and not (dest == "data" and BUILTIN.keys() & {mine, theirs}):
            continue  # a built-in dataset's name, though, is plainly another dataset
        if not same_option(dest, mine, theirs):
            raise DarmError(
                f"--resume continues the comparison in {out} as it was: "
                f"{differs(dest, mine, theirs)}"
            )
    for dest in RESUME_OWN:
        setattr(recorded, dest, getattr(args, dest))
    for dest in given & set(DATA_OPTIONS):
        setattr(recorded, dest, getattr(args, dest))
    recorded.out, recorded.argv = str(out), args.argv
    return recorded, before


def anchored(path: str, folder: Path) -> str:
    """A relative path of a command that ran in `folder`, as seen from here."""
    there = folder / path
    return str(there) if not Path(path).is_absolute() and there.exists() else path


def same_option(dest: str, mine, theirs) -> bool:
    """An option given to compare --resume against the comparison's own value."""
    if dest == "models":
        return [m.strip() for m in mine.split(",") if m.strip()] == theirs.split(",")
    if dest == "set":  # as typed values: dropout=0 is a recorded 0.0
        return typed_sets(mine) == typed_sets(theirs)
    return mine == theirs


def typed_sets(assignments: list[str] | None) -> dict[str, dict]:
    overrides = family_overrides(assignments)
    return {
        m: typed_fields(get_entry(m).config_cls, f, f"{m} config") for m, f in overrides.items()
    }


def differs(dest: str, mine, theirs) -> str:
    """'--steps 30 differs from its 3000', or 'it ran without --budget'."""
    flag = "--" + dest.replace("_", "-")

    def show(value) -> str:
        if dest == "set":
            return " ".join(f"--set {a}" for a in value)
        return f"{flag} {value:g}s" if dest == "budget" else f"{flag} {value}"

    if theirs is None:
        return f"{show(mine)}: it ran without {flag}"
    return f"{show(mine)} differs from its {show(theirs)}"


def given_options(argv: list[str], command: str) -> set[str]:
    """The options of `command` given on the command line argv, told apart from defaults."""
    from darm.cli.parser import build_parser

    parser = build_parser()
    actions = parser.commands[command]._actions
    for action in actions:  # unset: absent from the namespace
        action.default = argparse.SUPPRESS
    given, _ = parser.parse_known_args(argv)
    return {a.dest for a in actions if a.dest in vars(given)} - {"help", "imports_here"}
