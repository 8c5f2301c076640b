"""Turning a wall-clock budget into a step count, so a run's learning-rate schedule ends
within the time it is given instead of being cut off halfway down the cosine."""

from __future__ import annotations

import copy
import math
import time

import torch

from darm.data import Dataset


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work before reading a clock (nothing to wait for on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_step(model, data: Dataset, cfg, window: float) -> float:
    """Time training steps (this rank's share of the batch, cfg's micro-batches and dtype) on
    a throwaway copy of the model for about `window` seconds. A window rather than a few
    steps: on a shared machine single steps vary several-fold. Under torchrun the copy trains
    through DDP, so the gradient all-reduce and the slowest rank are in the time. Eager even
    when cfg.compile is set (compiling the copy would cost as much again)."""
    from darm import distributed
    from darm.train import (
        accumulate_gradients,
        data_parallel,
        make_optimizer,
        micro_batches,
        scored_dims,
    )

    ctx = distributed.current()
    probe = copy.deepcopy(model).train()
    optimizer = make_optimizer(probe, cfg)
    split, device = data["train"], model.device
    ddp = data_parallel(probe, split, cfg.seed)
    step, t0 = 0, None
    while True:
        batch = split.batch(step, cfg.batch_size, cfg.seed)
        micro = micro_batches(batch, ctx.rank, ctx.world_size, cfg.grad_accum)
        optimizer.zero_grad(set_to_none=True)
        conditional = probe.num_classes > 0
        accumulate_gradients(ddp or probe, micro, cfg, scored_dims(batch), ddp, conditional)
        torch.nn.utils.clip_grad_norm_(probe.parameters(), cfg.grad_clip or math.inf)
        optimizer.step()
        synchronize(device)  # a GPU runs ahead of the clock otherwise
        step += 1
        if t0 is None:  # the first step warms up (allocations, kernels): not timed
            t0 = time.perf_counter()
            continue
        done = step >= 4 and time.perf_counter() - t0 >= window
        # every rank must stop after the same step, or DDP's next all-reduce waits forever
        if distributed.all_reduce_max([float(done)], device)[0] > 0:
            return (time.perf_counter() - t0) / (step - 1)


def plan_steps(model, data: Dataset, cfg, budget: float) -> int:
    """Steps that fit the budget, keeping about 10% of it for the validation passes."""
    window = min(max(0.03 * budget, 1.0), 10.0)
    return max(20, int(0.9 * budget / seconds_per_step(model, data, cfg, window)))


def validation_passes(data: Dataset, examples: int = 0) -> int:
    """10 points on the loss curves, fewer (down to 2) when one pass over the validation
    split is long (binarized MNIST: 10,000 x 784 dimensions) and would eat the budget.
    examples: the first this many are scored (train's valid_examples; 0: all)."""
    valid = data["valid"]
    dims = valid.num_dims() * (min(examples, len(valid)) / len(valid) if examples else 1)
    return int(min(10, max(2, 10 * 1e6 / dims)))
