"""The one exception type users see: the CLI prints its message on one line and exits non-zero."""

import os


class DarmError(ValueError):
    """A problem with the user's input (data, options, checkpoint), not a bug in darm. A
    ValueError, so Python code catches it with the API's other bad-argument errors."""


def first_line(e: BaseException) -> str:
    """An exception as one line, even when its message is empty."""
    return (str(e).splitlines() or [type(e).__name__])[0]


def ranked(line: str) -> str:
    """A line as a rank other than 0 of torchrun says it, headed `[rank N]` (rank 0, and a
    process of its own, as it is)."""
    rank = os.environ.get("RANK", "0")
    if rank != "0" and os.environ.get("WORLD_SIZE", "1") not in ("", "0", "1"):
        return f"[rank {rank}] {line}"
    return line
