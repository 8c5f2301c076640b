"""The `darm` console script. Importing the command pulls in torch, which takes a second or
two; a Ctrl-C meanwhile ends the command quietly, as one during the command itself does."""

from __future__ import annotations

import os
import signal
import sys

from darm.heap import retain_freed_memory


def leaving() -> None:
    """Ignore further Ctrl-C and SIGTERM: the command has stopped and is on its way out, and a
    second signal (a double Ctrl-C, `timeout` signalling the whole process group) would only
    interrupt the interpreter's exit with a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def interrupt_once(signum, frame):
    """Ctrl-C raises KeyboardInterrupt, as Python's own handler does, once: the command then
    stops (training saves first: darm.interrupt) and later ones are ignored."""
    leaving()
    raise KeyboardInterrupt


def speakable(name: str) -> None:
    """sys.stdout or sys.stderr made safe to print to: a closed one (`darm train >&-`) goes to
    /dev/null, and a console that cannot encode a symbol of the data (an ASCII or cp1252 one)
    shows it escaped, \\xe9, rather than failing the command."""
    stream = getattr(sys, name)
    if stream is None:
        setattr(sys, name, open(os.devnull, "w"))  # open for the life of the process
    elif hasattr(stream, "reconfigure"):
        stream.reconfigure(errors="backslashreplace")


def main() -> None:
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # (`darm ... &`: ignored)
        signal.signal(signal.SIGINT, interrupt_once)
    speakable("stdout")
    speakable("stderr")
    retain_freed_memory()  # the whole process's allocator: the command's to choose, not darm's
    try:
        from darm.cli import main as command
    except KeyboardInterrupt:
        leaving()
        if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
            print("darm: interrupted", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    code = command()
    if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):  # stopped: on its way out
        leaving()
    sys.exit(code)
