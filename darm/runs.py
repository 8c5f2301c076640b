"""The runs under a folder at a glance (`darm runs`): every run (a folder holding a last.json)
with its model, size, data, progress, best validation and test NLL, and the commands that
made it, so each number in the table comes with the way to reproduce it."""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from darm.checkpoint import model_of_record, read_record, weights_cut_short
from darm.errors import DarmError, first_line
from darm.metrics import units
from darm.outputs import finished
from darm.report import fmt, markdown_table
from darm.train import CHECKPOINT_FILES, has_run_log


@dataclass
class RunSummary:
    run: str  # the folder, as found under the folder searched
    model: str
    params: int | None  # None: a family of one's own, not imported
    data: str
    kind: str
    step: int
    steps: int
    best_valid_nats_per_dim: float | None
    train_s: float
    test: dict[str, Any] | None = None  # results.json, when it scores the current checkpoint
    commands: list[str | None] = field(default_factory=list)  # the start, then each --resume
    init: dict[str, Any] | None = None  # the checkpoint a fine-tuning run started from
    levels: int | None = None  # L: scores of other L (or of p(x | y)) do not compare
    conditional: bool = False  # p(x | label)
    source: str = ""  # the data's file, or a built-in's name: a folder named like it differs
    valid_examples: int = 0  # > 0: its validation scored the first N examples, not the split


def data_identity(source) -> str:
    """Which examples a run's splits hold: its file (or built-in), and the options that cut
    them otherwise (a corpus's blocks, a split's seed); runs alike in it compare."""
    if not isinstance(source, dict):
        return ""
    where = str(source.get("path") or source.get("name") or "")
    return " ".join([where, *(f"{k}={source[k]}" for k in ("block", "seed") if k in source)])


def in_folder(folder: str, command: str) -> str:
    """A command as it is recorded: run from the folder its relative paths start in, so it
    can be pasted anywhere."""
    return f"cd {shlex.quote(folder)} && {command}"


def find_runs(roots: list[Path]) -> list[Path]:
    """Every folder under (or being) one of `roots` that holds a run's last.json, sorted;
    symbolic links to folders are followed (once: a link back up is not a loop forever),
    folders whose names start with a dot (.git) skipped. A folder with a run's other files
    but no last.json is named on stderr, not left out unseen."""
    found, seen, unlisted = set(), set(), {}
    for root in roots:
        if root.is_file():  # a checkpoint names its run
            if root.suffix != ".json":
                raise DarmError(f"{root} is a file; name a run folder or a folder of runs")
            root = root.parent
        if not root.exists():
            raise DarmError(f"{root} does not exist")
        for folder, subfolders, files in os.walk(root, followlinks=True):
            real = os.path.realpath(folder)
            if real in seen:  # reached again through a link
                subfolders.clear()
                continue
            seen.add(real)
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            if "last.json" in files:
                found.add(Path(folder))
            elif held := run_files(Path(folder), files):
                unlisted[Path(folder)] = held
    for folder, held in sorted(unlisted.items()):
        print(
            f"note: not listing {folder}: it holds {', '.join(held)} but no last.json (a run "
            f"before its first whole checkpoint, or last.json removed)",
            file=sys.stderr,
        )
    return sorted(found)


def run_files(folder: Path, files: list[str]) -> list[str]:
    """The files of a run in a folder without last.json: checkpoint files, and a log.csv of
    darm's training. A folder of one's own (or a comparison's, with its results.json and
    loss.png) holds none, and stays silent."""
    held = [name for name in CHECKPOINT_FILES if name in files]
    return held + ["log.csv"] * ("log.csv" in files and has_run_log(folder))


def summarise(run_dir: Path) -> RunSummary:
    """What the run's last checkpoint and results.json say about it."""
    path, record = read_record(run_dir / "last.json")
    data, config = record.get("data", {}), record.get("config")
    test = None
    if finished(run_dir):
        test = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
        if not isinstance(test, dict) or not all(
            isinstance(test.get(k), (int, float)) for k in ("nats_per_example", "bits_per_dim")
        ):
            test = None  # not darm's results: the run is listed without them
    best = record.get("best_valid_nats_per_dim")
    summary = RunSummary(
        run=str(run_dir),
        model=record["model"],
        params=record.get("params") or counted_params(record, path),
        data=data.get("name", "?"),
        kind=data.get("kind", ""),
        step=record["step"],
        steps=record.get("train", {}).get("steps", record["step"]),
        best_valid_nats_per_dim=best if best is not None and best < float("inf") else None,
        train_s=record.get("elapsed_s", 0.0),
        test=test,
        commands=record.get("commands", [None]),  # (an older darm's: not recorded)
        init=record.get("init"),
        levels=config.get("vocab_size") if isinstance(config, dict) else None,
        conditional=bool(config.get("num_classes")) if isinstance(config, dict) else False,
        source=data_identity(data.get("source")),
        valid_examples=scored_part(record),
    )
    check_types(summary)
    if damage := weights_cut_short(path):  # listed (its record is whole), but not loadable
        print(f"warning: {path}: {damage}: --resume refuses it", file=sys.stderr)
    best = run_dir / "best.json"
    if best.exists() and (damage := weights_cut_short(best)):  # what sample and eval load
        print(f"warning: {best}: {damage}: sample, eval and --resume of the run refuse it "
              f"(move best.* aside to use last.*)", file=sys.stderr)  # fmt: skip
    return summary


def scored_part(record: dict) -> int:
    """The validation examples a run scored where --valid-examples cut the split, else 0 (a
    record from before `valid_part`: as asked, though that may have been the whole split)."""
    asked = record.get("train", {}).get("valid_examples") or 0
    return asked if record.get("valid_part", True) else 0


FIELD_TYPES = {"model": str, "data": str, "kind": str, "step": int, "steps": int,
               "train_s": (int, float), "params": (int, type(None)),
               "best_valid_nats_per_dim": (int, float, type(None)), "commands": list,
               "levels": (int, type(None)), "valid_examples": int}  # fmt: skip


def check_types(s: RunSummary) -> None:
    """A record edited by hand (or by another program) is refused here, in one warning,
    rather than breaking the table or its sorting later."""
    for name, kind in FIELD_TYPES.items():
        value = getattr(s, name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise TypeError(f"its checkpoint's {name} is {value!r}, not what darm writes")
    if not all(c is None or isinstance(c, str) for c in s.commands):
        raise TypeError("its checkpoint's commands are not a list of command lines")


def counted_params(record: dict, path: Path) -> int | None:
    """The size of a network saved before darm recorded it, counted on the meta device (no
    memory, no weights read); None if its family cannot be built here (not imported)."""
    try:
        with torch.device("meta"):
            return model_of_record(record, path).num_params()
    except DarmError:
        return None


def summarise_all(roots: list[Path]) -> list[RunSummary]:
    """The summary of every run found; a run that cannot be read is named on stderr and
    left out, so one broken folder does not hide the others."""
    summaries = []
    for run_dir in find_runs(roots):
        try:
            summaries.append(summarise(run_dir))
        except (DarmError, OSError, ValueError, KeyError, TypeError) as e:
            print(f"warning: skipping {run_dir}: {first_line(e)}", file=sys.stderr)
    return summaries


ALIGN = "llrlrrrrrr"  # run, model, params, data, L, steps, valid, test, bits, train s


PART = "*"  # beside a validation NLL of part of the split (--valid-examples)


def part_note(summaries: list[RunSummary]) -> list[str]:
    """The footnote of PART, where a run has one."""
    if not any(s.valid_examples for s in summaries):
        return []
    return ["", f"{PART} validation over its first --valid-examples only: it does not compare "
                f"with a whole split's"]  # fmt: skip


def runs_table(summaries: list[RunSummary]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one run a row; test NLL per example in the data's own unit."""
    header = ["run", "model", "params", "data", "L", "steps", "valid nats/dim",
              "test nats/example", "test bits/dim", "train s"]  # fmt: skip
    rows = []
    for s in summaries:
        ex, dim = units(s.kind)
        test = s.test or {}
        per_example = test.get("nats_per_example")
        rows.append([
            s.run, s.model + " | label" * s.conditional, fmt(s.params, ","), s.data,
            fmt(s.levels, "d"),
            f"{s.step}" if s.step == s.steps else f"{s.step} of {s.steps}",
            fmt(s.best_valid_nats_per_dim, ".4f") + PART * (s.valid_examples > 0),
            "–" if per_example is None else f"{per_example:.4f} /{ex}",
            "–" if test.get("bits_per_dim") is None else f"{test['bits_per_dim']:.4f} /{dim}",
            f"{s.train_s:.0f}",
        ])  # fmt: skip
    return header, rows


def plain_table(header: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell: text left, numbers right (ALIGN)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "  ".join(
            c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, ALIGN)
        ).rstrip()

    return "\n".join([line(header), *map(line, rows)])


NOT_RECORDED = "(not recorded: started from Python, or by an older darm)"


def runs_markdown(header: list[str], rows: list[list[str]], summaries) -> str:
    """A Markdown table with each run's commands in a last column, for a README."""

    def code(command: str | None) -> str:
        if command is None:
            return NOT_RECORDED
        fence, pad = ("``", " ") if "`" in command else ("`", "")  # a ` inside: a longer fence
        return f"{fence}{pad}{command}{pad}{fence}"

    rows = [[*cells, " ; ".join(map(code, s.commands))] for cells, s in zip(rows, summaries)]
    return "\n".join(markdown_table([*header, "command"], rows, ALIGN + "l"))


def by_test(s: RunSummary) -> tuple:
    """Sort key: runs of one dataset together (the same file, levels, and labels or none: other
    scores do not compare), the lowest test NLL first, untested last."""
    nll = (s.test or {}).get("nats_per_example")
    return s.data, s.source, s.levels or 0, s.conditional, nll is None, nll or 0.0, s.run


def show_runs(roots: list[Path], style: str = "plain", sort: str = "run") -> str:
    """The text `darm runs` prints: a table (plain, markdown) or JSON; sort: by `run`
    folder, or by `test` NLL within each dataset."""
    summaries = summarise_all(roots)
    if sort == "test":
        summaries.sort(key=by_test)
    if style == "json":
        return json.dumps([asdict(s) for s in summaries], indent=1)
    if not summaries:
        return f"no runs (folders with a last.json) under {', '.join(map(str, roots))}"
    header, rows = runs_table(summaries)
    if style == "markdown":
        return "\n".join([runs_markdown(header, rows, summaries), *part_note(summaries)])
    width, commands = max(len(s.run) for s in summaries), []
    for s in summaries:
        for i, command in enumerate(s.commands):
            where = s.run if i == 0 else ""
            commands.append(f"{where:{width}s}  {NOT_RECORDED if command is None else command}")
    made = ["", "made by:", *commands] if commands else []
    return "\n".join([plain_table(header, rows), *part_note(summaries), *made])
