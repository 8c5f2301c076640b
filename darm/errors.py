"""The one exception type users see: the CLI prints its message on one line and exits non-zero."""

import operator
import os


class DarmError(ValueError):
    """A problem with the user's input (data, options, checkpoint), not a bug in darm. A
    ValueError, so Python code catches it with the API's other bad-argument errors."""


def is_int(value) -> bool:
    """An integer argument: Python's, numpy's or a 0-d torch integer; not 2.0, not True."""
    if isinstance(value, bool):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def first_line(e: BaseException) -> str:
    """An exception as one line, even when its message is empty."""
    return (str(e).splitlines() or [type(e).__name__])[0]


def several_ranks() -> str | None:
    """WORLD_SIZE as torchrun set it for several ranks, else None (one process). Read from
    the environment alone: an error is said before any process group is joined."""
    world = os.environ.get("WORLD_SIZE", "1")
    return None if world in ("", "0", "1") else world


def ranked(line: str) -> str:
    """A line as a rank other than 0 of torchrun says it, headed `[rank N]` (rank 0, and a
    process of its own, as it is)."""
    rank = os.environ.get("RANK", "0")
    return f"[rank {rank}] {line}" if rank != "0" and several_ranks() else line
