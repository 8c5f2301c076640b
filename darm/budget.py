"""Turning a wall-clock budget into a step count, so a run's learning-rate schedule ends
within the time it is given instead of being cut off halfway down the cosine."""

from __future__ import annotations

import copy
import time

import torch

from darm.data import Dataset


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work before reading a clock (nothing to wait for on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_step(model, data: Dataset, cfg, window: float) -> float:
    """Time optimiser steps on a throwaway copy for about `window` seconds.
    A window rather than a few steps: on a shared machine single steps vary several-fold."""
    from darm.metrics import nll_per_dim
    from darm.train import make_optimizer

    probe = copy.deepcopy(model).train()
    optimizer = make_optimizer(probe, cfg)
    split, device = data["train"], model.device
    step, t0 = 0, None
    while True:
        x, _, mask = split.batch(step, cfg.batch_size, cfg.seed)
        x, mask = x.to(device), None if mask is None else mask.to(device)
        n = x.numel() if mask is None else int(mask.sum())
        loss = nll_per_dim(probe(x), x, mask).sum() / n
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        synchronize(device)  # a GPU runs ahead of the clock otherwise
        step += 1
        if t0 is None:  # the first step warms up (allocations, kernels): not timed
            t0 = time.perf_counter()
        elif step >= 4 and time.perf_counter() - t0 >= window:
            return (time.perf_counter() - t0) / (step - 1)


def plan_steps(model, data: Dataset, cfg, budget: float) -> int:
    """Steps that fit the budget, keeping about 10% of it for the validation passes."""
    window = min(max(0.03 * budget, 1.0), 10.0)
    return max(20, int(0.9 * budget / seconds_per_step(model, data, cfg, window)))
