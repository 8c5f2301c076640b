"""Turning a wall-clock budget into a step count, so a run's learning-rate schedule ends
within the time it is given instead of being cut off halfway down the cosine."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, replace

import torch

from darm import distributed
from darm.data import Dataset
from darm.metrics import evaluate
from darm.step import (
    accumulate_gradients,
    data_parallel,
    make_optimizer,
    micro_batches,
    scored_dims,
)
from darm.train_config import TrainConfig


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


def seconds_per_validation(model, data: Dataset, cfg, window: float) -> float:
    """Seconds one validation pass takes on this rank (its shard of the first
    cfg.valid_examples, or of all): scored batch by batch for about `window` seconds, then
    extrapolated to the whole pass. binarized MNIST's 10,000 x 784 dimensions take minutes on
    a CPU, so a plan that ignored them would be cut short by its own budget."""
    ctx = distributed.current()
    valid = data["valid"]
    examples = min(cfg.valid_examples, len(valid)) if cfg.valid_examples else len(valid)
    shard = math.ceil(examples / ctx.world_size)  # the largest rank's share
    size = min(cfg.eval_batch_size, shard)
    timed, start = [], time.perf_counter()  # (seconds, examples) of each batch scored
    for lo in range(0, shard, size):
        hi = min(lo + size, shard)
        t = time.perf_counter()
        evaluate(model, valid.subset(lo, hi), size)
        synchronize(model.device)
        timed.append((time.perf_counter() - t, hi - lo))
        if len(timed) >= 2 and time.perf_counter() - start >= window:
            break
    # the first batch warms up (allocations, kernels): left out when there are others
    rest = timed[1:] or timed
    return sum(t for t, _ in rest) / sum(n for _, n in rest) * shard


MIN_STEPS = 20  # a plan's floor: fewer steps are no training run


@dataclass(frozen=True)
class Plan:
    """A run's length under a budget: `steps` training steps and `passes` validation passes
    (the last after the last step), from the measured seconds of each."""

    steps: int
    passes: int
    step_s: float
    pass_s: float

    @property
    def seconds(self) -> float:
        """What the planned steps and passes take, by the timings."""
        return self.steps * self.step_s + self.passes * self.pass_s

    def fits(self, budget: float) -> bool:
        """Whether the plan takes no more than the budget (it never goes below MIN_STEPS
        steps, which a tiny budget may not hold)."""
        return self.seconds <= budget

    def note(self, budget: float, valid_examples: int = 0) -> str | None:
        """A hint when validation takes a large share of the budget."""
        if self.passes * self.pass_s < 0.25 * budget:
            return None
        fewer = "a smaller --valid-examples" if valid_examples else "--valid-examples N"
        return (
            f"{self.passes} validation pass(es) of ~{self.pass_s:.0f}s take a large share of "
            f"the {budget:g}s budget; {fewer} scores fewer examples, leaving more to train"
        )


def plan_run(model, data: Dataset, cfg, budget: float, eval_every: int | None = None) -> Plan:
    """Time training steps and a validation pass, then fit both in the budget: up to 10
    points on the curves in about a tenth of it (at least the one after the last step),
    the rest, less 5% for checkpoints and the log, for training. eval_every: the user's
    spacing of the passes instead, as many as the steps then make. Every rank gets the same
    plan (from the slowest rank's timings): they must agree on the step count."""
    window = min(max(0.03 * budget, 1.0), 10.0)
    step_s = seconds_per_step(model, data, cfg, window)
    pass_s = seconds_per_validation(model, data, cfg, window / 2)
    step_s, pass_s = distributed.all_reduce_max([step_s, pass_s], model.device)
    if eval_every:  # a pass every eval_every steps and one after the last
        steps = max(MIN_STEPS, steps_in(0.95 * budget, step_s, pass_s, eval_every))
        return Plan(steps, math.ceil(steps / eval_every), step_s, pass_s)
    passes = int(min(10, max(1, 0.1 * budget // pass_s if pass_s > 0 else 10)))
    steps = max(MIN_STEPS, int((0.95 * budget - passes * pass_s) / step_s))
    return Plan(steps, passes, step_s, pass_s)


REPLAN_AT = (0.2, 0.45, 0.7)  # fractions of the planned steps after which the plan is redone
REPLAN_TOLERANCE = 0.02  # a new step count within 2% of the current one is not worth the jump


def steps_in(seconds: float, step_s: float, pass_s: float, eval_every: float) -> int:
    """How many steps fit in `seconds` with a validation pass every eval_every of them and
    one after the last: s * step_s + (s / eval_every + 1) * pass_s = seconds."""
    return int((seconds - pass_s) / (step_s + pass_s / eval_every))


def replanned(cfg, done: int, step_s: float, pass_s: float, left: float):
    """cfg with the step count that ends a planned run in the `left` seconds of its budget,
    by the speed measured so far: `step_s` a training step, `pass_s` a validation pass with
    its checkpoints, `done` steps taken. A plan is timed over a few seconds before training,
    and on a shared machine the run then goes 20% faster or slower; planned again from
    minutes of training it ends on time instead of being cut before the cosine reaches its
    floor. No fewer than MIN_STEPS or `done` steps; ending on a validation pass still to
    come when within a quarter of its spacing (one just after it would be wasted); a
    default warmup follows the length down (never up: the lr would drop), a given one only
    when it no longer fits; cfg itself when the count would change by under
    REPLAN_TOLERANCE (not worth a jump in the learning rate). One cycle only: moving the
    boundaries of several would restart one twice."""
    if cfg.cycles != 1:
        raise ValueError("a run of several cycles keeps its first plan")
    steps = max(done + steps_in(0.95 * left, step_s, pass_s, cfg.eval_every), MIN_STEPS)
    on_pass = steps - steps % cfg.eval_every
    if steps - on_pass <= cfg.eval_every // 4 and on_pass > done:
        steps = on_pass
    if abs(steps - cfg.steps) <= REPLAN_TOLERANCE * cfg.steps:
        return cfg
    warmup = cfg.warmup
    if warmup == TrainConfig(steps=cfg.steps).warmup:  # the default: follows the length
        warmup = min(warmup, TrainConfig(steps=steps).warmup)
    elif warmup >= steps:
        warmup = steps // 2
    return replace(cfg, steps=steps, warmup=warmup)


class Replanner:
    """Plans a run planned for `budget` seconds again, from the speed measured since `start`
    (the step it starts at): first after REPLAN_AT[0] of its steps (of those left, when
    resumed), then at the later fractions of the schedule, each counted on what is left
    after the last planning (so a shortened run still gets them, spread over its rest). The
    training loop reports each validation pass (`evaluated`) and each step (`stepped`) and
    asks for the config after each step (`__call__`). The first step is left out of the
    speed (allocations, torch.compile) though its time counts against the budget. A run of
    several cycles is not planned again."""

    def __init__(self, plan: Plan, budget: float, start: int, cfg):
        self.plan, self.budget, self.start = plan, budget, start
        self.eval_s, self.passes, self.first_s = 0.0, 0, None
        self.step_s = plan.step_s  # the speed the last planning went by
        self._fractions = list(REPLAN_AT) if cfg.cycles == 1 else []
        # the points as fractions of the steps still to take (a resumed run: from `start`)
        left = cfg.steps - start
        self._at = start + math.ceil(self._fractions[0] * left) if self._fractions else None

    def evaluated(self, seconds: float) -> None:
        self.eval_s, self.passes = self.eval_s + seconds, self.passes + 1

    def stepped(self, done: int, elapsed: float) -> None:
        """After `done` steps, `elapsed` seconds since the clock started."""
        if done == self.start + 1:
            self.first_s = elapsed - self.eval_s

    def __call__(self, cfg, done: int, elapsed: float, device: torch.device):
        """cfg, or a new one (darm.budget.replanned) when `done` steps reach the next point
        and at least two steps after the first were timed."""
        if self._at is None or done < self._at or done < self.start + 3:
            return cfg
        now = self._fractions.pop(0)
        pass_s = self.eval_s / self.passes if self.passes else self.plan.pass_s
        step_s = (elapsed - self.eval_s - self.first_s) / (done - self.start - 1)
        # the slowest rank's speed and clock (each rank's clock starts a few ms apart):
        # every rank must compute the same new count from the same numbers
        step_s, pass_s, elapsed = distributed.all_reduce_max([step_s, pass_s, elapsed], device)
        pending = pass_s if done % cfg.eval_every == 0 else 0.0  # this step's pass, to come
        new = replanned(cfg, done, step_s, pass_s, self.budget - elapsed - pending)
        self.step_s = step_s  # for the caller's message
        if self._fractions:  # the next point, as far into what is left as it was planned
            later = (self._fractions[0] - now) / (1 - now)
            self._at = done + max(1, math.ceil(later * (new.steps - done)))
        else:
            self._at = None
        return new


def validation_passes(data: Dataset, examples: int = 0) -> int:
    """Without a budget to time against: 10 points on the loss curves, fewer (down to 2)
    when one pass over the validation split is long (binarized MNIST: 10,000 x 784
    dimensions). examples: the first this many are scored (train's valid_examples; 0: all)."""
    valid = data["valid"]
    dims = valid.num_dims() * (min(examples, len(valid)) / len(valid) if examples else 1)
    return int(min(10, max(2, 10 * 1e6 / dims)))
