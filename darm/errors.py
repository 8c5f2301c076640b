"""The one exception type users see: the CLI prints its message on one line and exits non-zero."""


class DarmError(ValueError):
    """A problem with the user's input (data, options, checkpoint), not a bug in darm. A
    ValueError, so Python code catches it with the API's other bad-argument errors."""


def first_line(e: BaseException) -> str:
    """An exception as one line, even when its message is empty."""
    return (str(e).splitlines() or [type(e).__name__])[0]
