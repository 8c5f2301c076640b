"""`darm models`, `darm data` and `darm runs`: what is registered, bundled and trained."""

from __future__ import annotations

from pathlib import Path

from darm.data import BUILTIN
from darm.models import config_fields, get_entry, list_models
from darm.options import DATA_FIELDS
from darm.runs import show_runs


def cmd_models(args) -> None:
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
    width = max(map(len, BUILTIN))
    for name, doc in BUILTIN.items():
        print(f"{name:{width}s}  {doc}")
    print(
        "or a path: .txt (--format lines|corpus), .npy/.npz integer arrays or images, "
        "a folder of images, .wav"
    )


def cmd_runs(args) -> None:
    style = "json" if args.json else "markdown" if args.markdown else "plain"
    print(show_runs([Path(f) for f in args.folders or ["runs"]], style, args.sort))
