"""Ctrl-C or SIGTERM during training: finish the step, save, then stop.

A KeyboardInterrupt raised in the middle of `optimizer.step()` would leave half-updated
weights and lose every step since the last checkpoint. Instead the first SIGINT (Ctrl-C) or
SIGTERM (`kill`, `timeout`, a cluster scheduler ending a job) only sets a flag that the loop
reads once per step (and all-reduces, so every rank stops at the same step); the loop then
saves `last` and raises `Stopped` itself. A second Ctrl-C finds the previous handler back
in place and acts at once, as usual; a second SIGTERM ends the process on the spot.
"""

from __future__ import annotations

import contextlib
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """Training stopped by a signal after saving; `signum` says which (the exit status is
    128 + signum, as for a process the signal had killed)."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = signum


class StopRequest:
    """Truthy once SIGINT or SIGTERM has arrived inside `stop_on_signals()`; `signum` is the
    first that did."""

    def __init__(self):
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def stop_on_signals():
    """Yields a StopRequest; outside the main thread (where signals cannot be handled) it
    never becomes true. A signal that is ignored or handled outside Python
    (`darm train ... &` ignores SIGINT) is left as it is."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    caught = [s for s in SIGNALS if previous[s] not in (signal.SIG_IGN, None)]

    def handler(signum, frame):
        stop.signum = stop.signum or signum
        # a second one acts at once: Ctrl-C as it did before; a second SIGTERM ends the
        # process on the spot, even inside a long native op that a Python handler would
        # wait for (the checkpoint before is whole: every save is atomic)
        signal.signal(signum, signal.SIG_DFL if signum == signal.SIGTERM else previous[signum])

    for s in caught:
        signal.signal(s, handler)
    try:
        yield stop
    finally:
        for s in caught:
            signal.signal(s, previous[s])


@contextlib.contextmanager
def sigterm_interrupts():
    """SIGTERM raises Stopped (signum SIGTERM) wherever it lands, as Ctrl-C raises
    KeyboardInterrupt: a long command (compare's test passes, sampling, maps) then stops the
    way Ctrl-C stops it, keeping what it has written, instead of dying on the spot. Inside
    training `stop_on_signals` takes over, and puts this back after. Yields a StopRequest
    that notes either signal: one that cuts an import short may surface as that import's
    own failure (numpy's RecursionError), which the caller then takes for the stop it was.
    Left as it is outside the main thread, or for a signal that is ignored or handled
    outside Python; inside another (nested), the outer one's notes."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    outer = [h.darm_stop for h in previous.values() if hasattr(h, "darm_stop")]
    if outer:
        yield outer[0]
        return

    def on_sigterm(signum, frame):
        stop.signum = stop.signum or signum
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM acts at once
        raise Stopped("", signal.SIGTERM)

    def on_sigint(signum, frame):  # Ctrl-C as before (a KeyboardInterrupt), noted
        stop.signum = stop.signum or signum
        previous[signal.SIGINT](signum, frame)

    on_sigterm.darm_stop = on_sigint.darm_stop = stop
    ours = {}
    if previous[signal.SIGTERM] not in (signal.SIG_IGN, None):
        ours[signal.SIGTERM] = on_sigterm
    if callable(previous[signal.SIGINT]):  # Python's handler, or the console script's
        ours[signal.SIGINT] = on_sigint
    for s, handler in ours.items():
        signal.signal(s, handler)
    try:
        yield stop
    finally:
        for s in ours:
            signal.signal(s, previous[s])
