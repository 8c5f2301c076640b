"""`darm train` (the procedure itself is darm.run.train_run)."""

from __future__ import annotations

from darm import distributed
from darm.cli.args import device_named
from darm.run import train_run


def cmd_train(args) -> None:
    """One process, or one rank of `torchrun --nproc_per_node=N -m darm train ...`."""
    device = distributed.rank_device(device_named(args.device), distributed.env_context())
    ctx = distributed.init(device)
    try:
        train_run(args, device, ctx)
    finally:
        distributed.cleanup()
