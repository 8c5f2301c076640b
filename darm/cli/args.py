"""Argument types and argument groups shared by the commands."""

from __future__ import annotations

import argparse
import math
import re

import torch

from darm.config import MAX_SIZE, parse_assignments
from darm.data import BUILTIN, FORMATS
from darm.errors import DarmError, ranked
from darm.models import get_entry
from darm.options import check_threads, model_overrides


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad option on one line (no usage dump) and exits 2."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # argparse takes only -5 and -.5 for negative numbers: `--budget -5s` or `--lr -1e-3`
        # would be refused as "expected one argument" instead of by the value's own check. No
        # option of darm's starts with a dash and a digit, so such a word is always a value.
        self._negative_number_matcher = re.compile(r"^-\.?\d")

    def error(self, message: str):
        if self.prog.endswith("complete") and message.endswith("required: checkpoint"):
            # `complete --input a.png RUN`: --input took RUN as one more input
            message += " (after --input, name the run first: --input takes every word after it)"
        self.exit(2, ranked(f"{self.prog}: error: {message} (see {self.prog} --help)") + "\n")


def integer(text: str) -> int:
    """An integer option (a count, a size, a length): beyond +-MAX_SIZE it is refused here,
    by name, where torch would overflow deep inside with a C++ traceback."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if abs(value) > MAX_SIZE:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_SIZE:,} in size, got {text}")
    return value


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


def device_named(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:  # torch's dozen device types: darm takes the ones it can run on
        device = None
    cpu_index = device is not None and device.type == "cpu" and device.index  # cpu:1: no such
    if device is None or device.type not in ("cpu", "cuda", "mps") or cpu_index:
        raise DarmError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {name!r}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DarmError("--device mps asked for, but this machine has no Apple GPU (MPS)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DarmError(f"--device {name} asked for, but no CUDA device is available")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise DarmError(f"--device {name}: there are {torch.cuda.device_count()} CUDA devices")
    return device


def check_sampling_args(args) -> None:
    """The options `sample` and `complete` share: one line for a bad value."""
    if args.n < 1:
        raise DarmError(f"-n must be >= 1, got {args.n}")
    if not 0 < args.temperature < math.inf:  # nan too
        raise DarmError(
            f"--temperature must be finite and > 0, got {args.temperature} (--top-k 1 draws "
            f"the most likely symbol every time)"
        )
    if args.top_k is not None and args.top_k < 1:
        raise DarmError(f"--top-k must be >= 1, got {args.top_k}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise DarmError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.length is not None and args.length < 1:
        raise DarmError(f"--length must be >= 1, got {args.length}")


def add_sampling_args(p: argparse.ArgumentParser, out_stem: str) -> None:
    p.add_argument(
        "--temperature", type=float, default=1.0, help="> 0; below 1 sharpens (default 1)"
    )
    p.add_argument("--top-k", type=integer, help="keep the k most likely symbols (default: all)")
    p.add_argument(
        "--top-p", type=float, help="keep the smallest set of mass >= p (default: all, p = 1)"
    )
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
    p.add_argument("--data", default="digits", help="as for train (default: digits)")
    p.add_argument("--format", choices=FORMATS, help="as for train")
    p.add_argument("--block", type=integer, help="corpus / audio block length D (default 64)")
    p.add_argument(
        "--levels", type=integer, help="symbols L of an array file, or image grey levels"
    )
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


def add_reread_format_arg(p: argparse.ArgumentParser) -> None:
    """--format of eval and deps: how to read another file given as --data."""
    p.add_argument(
        "--format",
        choices=FORMATS,
        help="how to read --data's file where not as the run's data was read: images for a "
        ".npy/.npz of uint8 pictures (0..255, binned into the model's levels), say",
    )


def check_reread_format(args, other: bool, picture: bool) -> None:
    """--format only for a file of the user's own as --data (the run's own data, or a
    built-in, is read as it is; a picture file for an image model, as a picture)."""
    if args.format is None:
        return
    if not args.data or args.data in BUILTIN:
        raise DarmError("--format says how to read a file given as --data")
    if not other:
        raise DarmError(f"--format: {args.data} is the run's own data, read as it was")
    if picture:
        raise DarmError(f"--format: {args.data} is a picture file, read as pictures")


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device", default="auto", help="cpu | cuda | cuda:N | mps | auto (default: cuda if any)"
    )
    p.add_argument("--threads", type=integer, help="torch CPU threads (default: torch's choice)")


def device_of(args) -> torch.device:
    """--device as a torch device, with --threads applied first."""
    check_threads(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    return device_named(args.device)


def family_overrides(assignments: list[str] | None) -> dict[str, dict]:
    """--set MODEL.KEY=VALUE, repeated -> {model: {key: value}}."""
    overrides: dict[str, dict] = {}
    for key, value in parse_assignments(assignments or []).items():
        model, dot, field = key.partition(".")
        if not dot or not field:
            raise DarmError(f"--set takes MODEL.KEY=VALUE (e.g. gpt.n_layer=2), got {key!r}")
        try:  # a typo costs no loading: refused before the data
            get_entry(model)
        except DarmError as e:
            raise DarmError(f"--set {key}: {e}") from None
        model_overrides({field: value}, f"--set {model}.")
        overrides.setdefault(model, {})[field] = value
    return overrides


def model_names(text: str) -> list[str]:
    """--models as a list of registered families, each named once (checked before the data
    is read: a typo costs no loading)."""
    names = [m.strip() for m in text.split(",")]
    if not any(names):
        raise DarmError(f"--models names no model: {text!r}")
    if "" in names:  # 'markov,' or 'markov,,gru': a name lost, not one fewer family asked for
        raise DarmError(f"--models has an empty name in {text!r}; separate names by one comma")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DarmError(f"--models names {', '.join(twice)} more than once")
    for name in names:
        get_entry(name)  # an unknown name: the list of known ones
    return names
