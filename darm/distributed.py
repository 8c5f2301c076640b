"""Data parallelism through torch.distributed, set up from torchrun's environment.

`torchrun --nproc_per_node=N -m darm train ...` starts N processes with RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT set; `init(device)` joins them into one process
group (gloo on CPU, nccl on CUDA). Without those variables everything here is a no-op for a
single process, so the training loop has one code path for 1 and N ranks.

Every rank builds the same global batch (a pure function of (seed, step)) and keeps its own
slice of it, so N ranks see exactly the batches of one process (dropout masks are drawn
per rank, so with dropout the runs agree in distribution, not bit for bit).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from darm.errors import DarmError


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise DarmError(f"environment variable {name}={value!r} is not an integer") from None


def env_context() -> Context:
    """Rank and world size from torchrun's variables (one process when they are absent)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise DarmError(f"RANK={rank} is not in 0..WORLD_SIZE-1 (WORLD_SIZE={world})")
    return Context(rank, world, _env_int("LOCAL_RANK", rank))


def init(device: torch.device) -> Context:
    """Join the process group torchrun set up; backend nccl for CUDA, gloo for CPU."""
    ctx = env_context()
    if ctx.world_size == 1 or dist.is_initialized():
        return current()
    if not dist.is_available():
        raise DarmError("this PyTorch build has no torch.distributed; run one process")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, rank=ctx.rank, world_size=ctx.world_size)
    return ctx


def current() -> Context:
    """The context of the process group in use (one process when there is none)."""
    if dist.is_available() and dist.is_initialized():
        return Context(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    return Context()


def is_main() -> bool:
    return current().is_main


def rank_device(device: torch.device, ctx: Context) -> torch.device:
    """Plain `cuda` under torchrun means this rank's own GPU, cuda:LOCAL_RANK."""
    if device.type == "cuda" and ctx.world_size > 1:
        if device.index is not None:  # every rank on the one GPU: NCCL would refuse
            raise DarmError(
                f"under torchrun each rank takes its own GPU: pass --device cuda, not {device}"
            )
        return torch.device("cuda", ctx.local_rank)
    return device


def _all_reduce(values: list[float], device: torch.device, op) -> list[float]:
    if current().world_size == 1:
        return list(values)
    # nccl reduces CUDA tensors only; gloo reduces CPU tensors
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=op)
    return t.tolist()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few numbers over all ranks (float64, so sums of nats lose nothing)."""
    return _all_reduce(values, device, dist.ReduceOp.SUM)


def all_reduce_max(values: list[float], device: torch.device) -> list[float]:
    """The largest of a few numbers over all ranks (the slowest rank's time, say)."""
    return _all_reduce(values, device, dist.ReduceOp.MAX)


def barrier() -> None:
    if current().world_size > 1:
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (safe to call when there is none)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """[lo, hi) of rank's contiguous share of n items; shares differ in size by at most 1."""
    lo = n * rank // world_size
    hi = n * (rank + 1) // world_size
    return lo, hi
