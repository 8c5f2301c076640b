"""The `darm` command: train, eval, sample, complete, deps, plot, compare, bench, models,
data, runs. One module per command; the parser and its help in parser.py."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys

import torch
import torch.distributed as dist

from darm.cli.parser import build_parser
from darm.errors import DarmError, first_line, ranked, several_ranks
from darm.interrupt import Stopped, sigterm_interrupts
from darm.models.registry import import_families

__all__ = ["build_parser", "main"]


# options naming a file or folder: an empty one (an unset variable) is an error, not a default
PATH_OPTIONS = ("data", "out", "init", "per_example")

# what may run as one of torchrun's ranks: training, and the listings that write nothing
ANY_RANK = ("train", "models", "data", "runs")

# what to make smaller when a command runs out of memory
SMALLER = {"sample": "a smaller -n", "complete": "a smaller -n or --count", "deps": "a smaller -n"}


def say_error(line: str) -> None:
    """An error line on stderr in one write, so torchrun's ranks, each saying theirs, do not
    splice each other's lines; a rank other than 0 names itself."""
    sys.stderr.write(ranked(line) + "\n")
    sys.stderr.flush()


class OutlivesReader:
    """stdout for a long command (train, compare): when its reader leaves (`| head`) or it
    cannot be written (`> /dev/full`, a full disk), the rest of the output goes to /dev/null
    and the work goes on, to its checkpoints and results, instead of dying at the next line
    it prints. A reader leaving is no failure; a stdout that fails is said once on stderr."""

    def __init__(self, stream, command: str):
        self.stream = stream
        self.command = command

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except OSError as e:
            self.lost(e)
            return len(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError as e:
            self.lost(e)

    def lost(self, e: OSError) -> None:
        to_null(self.stream)
        if not isinstance(e, BrokenPipeError):
            with contextlib.suppress(OSError):  # (stderr may be as full: then nothing is said)
                say_error(
                    f"darm {self.command}: warning: cannot write to stdout "
                    f"({e.strerror or first_line(e)}); the run goes on, its lines dropped"
                )

    def __getattr__(self, name):  # isatty, fileno, encoding ... as the stream's
        return getattr(self.stream, name)


def to_null(stream) -> None:
    """Point a stream's file at /dev/null: what it still buffers, and all after, goes there."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, stream.fileno())
    os.close(null)


LONG = ("train", "compare")  # work worth finishing when the reader of its lines is gone


def out_of_memory(command: str, e: BaseException) -> int:
    smaller = SMALLER.get(command, "a smaller model or --batch-size")
    say_error(f"darm {command}: error: out of memory (try {smaller}): {first_line(e)}")
    return 1


def rank_lost(e: RuntimeError) -> str | None:
    """What stopped a rank's partner, where the failure is the process group's (a rank
    killed for memory, a node lost: the others' next collective breaks, in gloo's words, a
    plain RuntimeError, or as a DistBackendError); None for any other failure, those of
    joining the group (a port in use, a rendezvous timeout) included."""
    if not several_ranks():  # (the group itself is left by now)
        return None
    text = first_line(e)
    if not (isinstance(e, dist.DistBackendError) or "gloo" in text or "Connection reset" in text):
        return None
    # "[.../gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:28554: Connection reset
    # by peer. This is typically caused by ...": the failure, not where or the advice
    return re.sub(r"^\[[^\]]*\]\s*", "", text).split(". ")[0]


def is_blank(value) -> bool:
    """An option's text that names nothing: '' (an unset variable) or only spaces."""
    return isinstance(value, str) and not value.strip()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        args.argv = sys.argv[1:] if argv is None else list(argv)  # what was given, as given
        if unknown:  # `darm train --stpes 20`: point at `darm train --help`, not `darm --help`
            parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
        here = parser.commands[args.command]
        # `--data "$UNSET"` would quietly mean the default, and ' ' read as a file's name
        # says only "  does not exist"
        for dest, name in (("folders", "FOLDER"), ("runs", "RUN"), ("checkpoint", "checkpoint")):
            given = getattr(args, dest, None)  # `darm runs "$UNSET"`: not .
            blanks = [
                f for f in ([given] if isinstance(given, str) else given or []) if is_blank(f)
            ]
            if blanks:
                here.error(f"argument {name}: expected a path, got {blanks[0]!r}")
        for dest in PATH_OPTIONS:
            if is_blank(value := getattr(args, dest, None)):
                flag = f"--{dest.replace('_', '-')}"
                here.error(f"argument {flag}: expected a path, got {value!r}")
        for spec in args.imports + args.imports_here:  # importlib: "Empty module name"
            if is_blank(spec):
                here.error(f"argument --import: expected a module or a .py file, got {spec!r}")
    except SystemExit as e:  # --help, or a bad option already reported on one line
        return int(e.code or 0)
    world = several_ranks()
    if args.command not in ANY_RANK and world:  # its ranks would write
        if os.environ.get("RANK", "0") == "0":  # one file at once (the others say it again)
            say_error(f"darm {args.command}: error: runs in one process (WORLD_SIZE={world} "
                      f"says this is one of torchrun's); torchrun is for `darm train`")  # fmt: skip
        return 1
    stdout = sys.stdout
    try:
        # a SIGTERM (kill, timeout) stops a command as Ctrl-C does, from its first import on
        with sigterm_interrupts() as stop:
            try:
                args.imports += args.imports_here  # before the command or after it
                for spec in args.imports:  # (a module of one's own may take its time)
                    import_families(spec)
                if args.command in LONG:
                    sys.stdout = OutlivesReader(stdout, args.command)
                args.func(args)
                sys.stdout.flush()  # its last lines, buffered, fail here, not at the exit
            except Exception:
                if stop:  # an import the signal cut short fails in its own way (RecursionError)
                    raise Stopped("", stop.signum) from None
                raise
    except DarmError as e:
        say_error(f"darm {args.command}: error: {e}")
        return 1
    except KeyboardInterrupt as e:  # training says where it saved the run
        signum = getattr(e, "signum", signal.SIGINT)  # a SIGTERM that training caught
        what = "terminated" if signum == signal.SIGTERM else "interrupted"
        if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
            print(f"darm {args.command}: {what}" + (f": {e}" if str(e) else ""), file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:  # `darm models -v | head`: the reader left; no traceback
        to_null(sys.stdout)
        return 141
    except OSError as e:  # a disk full, a folder made read-only mid-run: the system's words
        where = f": {e.filename}" if e.filename else ""
        say_error(f"darm {args.command}: error: {e.strerror or first_line(e)}{where}")
        try:  # stdout's own failure (`darm models > /dev/full`) said once, not again at the exit
            sys.stdout.flush()
        except OSError:
            to_null(sys.stdout)
        return 1
    except (MemoryError, torch.OutOfMemoryError) as e:
        return out_of_memory(args.command, e)
    except RuntimeError as e:  # the CPU allocator's failure is a plain RuntimeError
        if cause := rank_lost(e):
            say_error(
                f"darm {args.command}: error: another rank stopped ({cause}); --resume "
                f"continues from the last checkpoint, if one was saved"
            )
            return 1
        if "DefaultCPUAllocator" not in str(e):
            raise
        return out_of_memory(args.command, e)
    finally:
        sys.stdout = stdout
    return 0
