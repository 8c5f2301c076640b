"""`darm bench`: how fast each family trains and samples on this machine, in seconds.

No training to convergence (that is `darm compare`): each family, built as compare builds
it for the data, trains on real batches for a short timing window (the first step, which
allocates and warms kernels, untimed), then draws whole samples through its cache, and
optionally without it (`naive`: every step recomputes the prefix), for the speed-up the
cache buys. Untrained weights: speed does not depend on them.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from darm.budget import seconds_per_step, synchronize
from darm.compare import build_family, check_models
from darm.data import Dataset
from darm.errors import DarmError
from darm.models import ARModel, config_fields
from darm.models.registry import family_source
from darm.report import markdown_table
from darm.sampling import sample
from darm.step import scored_dims
from darm.train import check_own_family
from darm.train_config import TrainConfig


@dataclass
class Speed:
    model: str
    params: int
    ms_per_step: float
    tokens_per_s: float  # scored dimensions trained on per second
    samples_per_s: float  # whole samples of D, through the cache
    naive_samples_per_s: float | None = None  # the same without it
    has_cache: bool = True  # False: the family steps by recomputing the prefix (ARModel's)

    @property
    def cache_speedup(self) -> float | None:
        """Cached / naive samples per second; None unmeasured or with no cache to speak of."""
        if self.naive_samples_per_s is None or not self.has_cache:
            return None
        return self.samples_per_s / self.naive_samples_per_s

    def as_dict(self) -> dict:
        return {**asdict(self), "cache_speedup": self.cache_speedup}


def seconds_to_sample(model, n: int, use_cache: bool, seed: int) -> float:
    """Seconds to draw n whole samples, after a short untimed draw that warms up."""
    sample(model, n, num_dims=min(model.num_dims, 4), use_cache=use_cache)
    gen = torch.Generator(device=model.device).manual_seed(seed)
    synchronize(model.device)
    t0 = time.perf_counter()
    sample(model, n, generator=gen, use_cache=use_cache)
    synchronize(model.device)
    return time.perf_counter() - t0


def build(name: str, data: Dataset, overrides: dict):
    """The family as compare builds it for `data`, unconditional, with `overrides`."""
    if "num_classes" in config_fields(name):  # bench times unconditional models
        overrides = {**overrides, "num_classes": 0}
    model = build_family(name, data, overrides)
    if family_source(type(model)) is not None:  # a family of one's own: a quick look first
        check_own_family(model, name, data)
    return model


def has_own_cache(model) -> bool:
    """Whether the family steps through a cache of its own (not ARModel's recomputation)."""
    return type(model).step is not ARModel.step


def bench_family(
    name: str, model, data: Dataset, cfg: TrainConfig, n: int, window: float, naive: bool,
    device: torch.device,
) -> Speed:  # fmt: skip
    """One family's training and sampling speed on `data`."""
    model = model.to(device)
    step_s = seconds_per_step(model, data, cfg, window)
    split = data["train"]  # scored dimensions of a batch: the mean over a few (padding varies)
    tokens = sum(scored_dims(split.batch(i, cfg.batch_size, cfg.seed)) for i in range(8)) / 8
    cached = seconds_to_sample(model, n, True, cfg.seed)
    slow = seconds_to_sample(model, n, False, cfg.seed) if naive else None
    return Speed(
        model=name,
        params=model.num_params(),
        ms_per_step=1000 * step_s,
        tokens_per_s=tokens / step_s,
        samples_per_s=n / cached,
        naive_samples_per_s=None if slow is None else n / slow,
        has_cache=has_own_cache(model),
    )


def bench(
    data: Dataset, names: list[str], overrides: dict[str, dict], cfg: TrainConfig, n: int,
    window: float, naive: bool, device: torch.device, report=print,
) -> list[Speed]:  # fmt: skip
    """Every family in `names` that runs on `data`; `report` gets a line as each finishes."""
    run, skipped = check_models(names, data)
    for r in skipped:
        report(f"skipping {r.model}: {r.note}")
    if not run:
        raise DarmError(f"no model in --models can run on {data.name}")
    # all built first: a bad --set fails now, not after the families before it were timed
    models = {name: build(name, data, overrides.get(name, {})) for name in run}
    speeds = []
    for name, model in models.items():
        speed = bench_family(name, model, data, cfg, n, window, naive, device)
        report(
            f"{name}: {speed.ms_per_step:.1f} ms/step, {speed.tokens_per_s:,.0f} tokens/s, "
            f"{speed.samples_per_s:,.2f} samples/s"
        )
        speeds.append(speed)
    return speeds


def setting(data: Dataset, cfg: TrainConfig, n: int, device: torch.device) -> dict:
    """What the speeds were measured on, for the table's header and the JSON."""
    return {
        "data": data.name,
        "D": data.seq_len,
        "L": data.vocab_size,
        "batch_size": cfg.batch_size,
        "training_dtype": cfg.dtype,  # sampling runs in float32 either way
        "samples": n,
        "device": str(device),
        "threads": torch.get_num_threads(),
    }


def speed_table(speeds: list[Speed], where: dict) -> str:
    """A markdown table of the speeds, under what they were measured on."""
    naive = any(s.naive_samples_per_s is not None for s in speeds)
    head = ["model", "params", "ms / training step", "training tokens/s", "samples/s (cached)"]
    head += ["samples/s (naive)", "cache speed-up"] if naive else []
    rows = []
    for s in speeds:
        row = [s.model, f"{s.params:,}", f"{s.ms_per_step:.1f}", f"{s.tokens_per_s:,.0f}"]
        row += [f"{s.samples_per_s:,.2f}"]
        if naive:
            speedup = f"{s.cache_speedup:.1f}x" if s.has_cache else "- (no cache of its own)"
            row += [f"{s.naive_samples_per_s:,.2f}", speedup]
        rows.append(row)
    table = "\n".join(markdown_table(head, rows, "l" * len(head)))
    n = where["threads"]
    threads = f", {n} thread{'s' * (n != 1)}" if where["device"] == "cpu" else ""
    return (
        f"{where['data']} (D = {where['D']}, L = {where['L']}) on {where['device']}{threads}: "
        f"training batch {where['batch_size']} in {where['training_dtype']}, "
        f"{where['samples']} samples of D each in float32:\n\n{table}"
    )
