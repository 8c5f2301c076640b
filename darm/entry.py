"""The `darm` console script. Importing the command pulls in torch, which takes a second or
two; a Ctrl-C or SIGTERM meanwhile ends the command in one line, as one during the command
itself does."""

from __future__ import annotations

import os
import signal
import sys

from darm.heap import retain_freed_memory
from darm.interrupt import Stopped, StopRequest  # (no torch)


def leaving() -> None:
    """Ignore further Ctrl-C and SIGTERM: the command has stopped and is on its way out, and a
    second signal (a double Ctrl-C, `timeout` signalling the whole process group) would only
    interrupt the interpreter's exit with a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


# the first Ctrl-C or SIGTERM to arrive: one that cuts an import short may surface as that
# import's own failure (numpy's RecursionError), which is then reported as the stop it was
ARRIVED = StopRequest()


def interrupt_once(signum, frame):
    """Ctrl-C raises KeyboardInterrupt, as Python's own handler does, once: the command then
    stops (training saves first: darm.interrupt) and later ones are ignored."""
    ARRIVED.signum = ARRIVED.signum or signum
    leaving()
    raise KeyboardInterrupt


def terminate_once(signum, frame):
    """SIGTERM (kill, timeout, a scheduler) while the command loads stops it as Ctrl-C does, in
    one line and status 143, rather than killing it without a word; the command puts its own
    handler in its place while it runs (darm.interrupt)."""
    ARRIVED.signum = ARRIVED.signum or signum
    leaving()
    raise Stopped("", signal.SIGTERM)


def stopped(signum: int) -> None:
    """The command stopped by a signal before it could say so itself: one line, and the
    status of a process that signal had killed."""
    leaving()
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
        what = "terminated" if signum == signal.SIGTERM else "interrupted"
        print(f"darm: {what}", file=sys.stderr)
    sys.exit(128 + signum)


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
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # (one ignored stays so)
        signal.signal(signal.SIGTERM, terminate_once)
    speakable("stdout")
    speakable("stderr")
    retain_freed_memory()  # the whole process's allocator: the command's to choose, not darm's
    try:
        from darm.cli import main as command

        code = command()  # (which says how a signal inside the command stopped it)
    except KeyboardInterrupt as e:  # while torch loads, or the command's options are read
        stopped(getattr(e, "signum", signal.SIGINT))
    except Exception:
        if not ARRIVED:
            raise
        stopped(ARRIVED.signum)
    if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):  # stopped: on its way out
        leaving()
    elif signal.getsignal(signal.SIGTERM) is terminate_once:  # the exit, as before: a SIGTERM
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # there ends it at once
    sys.exit(code)
