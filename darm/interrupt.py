"""Ctrl-C during training: finish the step, save, then stop.

A KeyboardInterrupt raised in the middle of `optimizer.step()` would leave half-updated
weights and lose every step since the last checkpoint. Instead the first SIGINT only sets a
flag that the loop reads once per step (and all-reduces, so every rank stops at the same
step); the loop then saves `last` and raises KeyboardInterrupt itself. A second Ctrl-C finds
the previous handler back in place and interrupts at once, as usual.
"""

from __future__ import annotations

import contextlib
import signal
import threading


class StopRequest:
    """Truthy once SIGINT has arrived inside `stop_on_sigint()`."""

    def __init__(self):
        self.requested = False

    def __bool__(self) -> bool:
        return self.requested


@contextlib.contextmanager
def stop_on_sigint():
    """Yields a StopRequest; outside the main thread (where signals cannot be handled), or
    where SIGINT is ignored or handled outside Python, it never becomes true and Ctrl-C
    behaves as it did."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous in (signal.SIG_IGN, None):  # ignored (`darm train ... &`), or set outside
        yield stop  # Python: leave it as it is
        return

    def handler(signum, frame):
        stop.requested = True
        signal.signal(signal.SIGINT, previous)  # a second Ctrl-C interrupts at once

    signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
