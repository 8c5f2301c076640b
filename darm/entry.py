"""The `darm` console script. Importing the command pulls in torch, which takes a second or
two; a Ctrl-C meanwhile ends the command quietly, as one during the command itself does."""

from __future__ import annotations

import os
import signal
import sys


def main() -> None:
    try:
        from darm.cli import main as command
    except KeyboardInterrupt:
        if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
            print("darm: interrupted", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    sys.exit(command())
