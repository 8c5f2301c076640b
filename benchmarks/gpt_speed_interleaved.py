"""GPT training speed, darm against the baseline, in one process with their steps interleaved.

    .venv/bin/python benchmarks/gpt_speed_interleaved.py [--steps 2000] [--block 50]

The same models, data and hyper-parameters as benchmarks/gpt_speed.py. On a shared host the
speed of the same training drifts by 30% and more within a minute (gpt_speed_repeat.py's
per-round numbers show it), so timing one implementation after the other measures the host
as much as the code. Here both train side by side in one process: `--block` steps of the
baseline, then `--block` steps of darm, and so on until each has taken `--steps` steps, so a
slow spell of the host falls on both. Each block is timed; the table gives each one's median
ms/step and tokens/s, the ratio of the total times and the median of the per-block-pair
ratios. `--compile` adds a third, darm's model through torch.compile (as `darm train --compile`
does), in turn with the other two; its first block holds the compilation, which the ratio of
totals counts and the median of block ratios does not. `TORCHINDUCTOR_CACHE_DIR` set to a new folder
compiles from cold; by default Inductor reuses what an earlier run compiled.

darm's step is darm.train.train's inner loop, from the same functions (learning_rate, the
train split's seeded .batch, micro_batches, accumulate_gradients, the gradient norm read back
with the loss in one host sync, clip_grads_with_norm_, the fused AdamW of make_optimizer),
without what train() does between steps (the progress bar, the log and checkpoints, an
all-reduce that is a no-op in one process). The baseline's is gpt_speed.py's own loop body.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpt_speed  # noqa: E402

from darm.data import load_data  # noqa: E402
from darm.step import accumulate_gradients, make_optimizer, micro_batches  # noqa: E402
from darm.train_config import learning_rate  # noqa: E402


def darm_trainer(data, cfg):
    """(model, step): step(i) runs darm.train.train's training step i under TrainConfig
    cfg, and returns its loss."""
    model = gpt_speed.darm_gpt(data.vocab_size)
    net = torch.compile(model) if cfg.compile else model  # train()'s `net`
    optimizer = make_optimizer(model, cfg)
    split = data["train"]

    def step(i):
        lr = learning_rate(i, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = split.batch(i, cfg.batch_size, cfg.seed)
        n_dims = batch[0].numel()  # no mask: corpus blocks are whole
        optimizer.zero_grad(set_to_none=True)
        nats = accumulate_gradients(net, micro_batches(batch, 0, 1, 1), cfg, n_dims)
        trained = [p for p in model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm([p.grad for p in trained])
        loss, _ = torch.stack([nats, norm.float()]).tolist()  # one host sync, as in train()
        torch.nn.utils.clip_grads_with_norm_(trained, cfg.grad_clip, norm)
        optimizer.step()
        return loss / n_dims

    model.train()
    return model, step


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=2000, help="training steps of each (2000)")
    ap.add_argument("--block", type=int, default=50, help="steps of one before the other (50)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--dtype", default="bf16", choices=("fp32", "bf16"), help="darm's (bf16)")
    ap.add_argument("--compile", action="store_true", help="a third: darm's model torch.compiled")
    args = ap.parse_args(argv)
    if args.steps <= gpt_speed.WARMUP or not 0 < args.block <= args.steps:
        ap.error(f"--steps must be above {gpt_speed.WARMUP} and --block in 1..--steps")
    torch.set_num_threads(args.threads)
    data = load_data("shakespeare", block=gpt_speed.BLOCK)
    cfg = gpt_speed.darm_config(args.dtype, args.steps)
    trainers = {
        "baseline (minimal GPT, eager, fp32)": gpt_speed.baseline_trainer(
            data["train"].stream, data.vocab_size, args.steps
        )[1],
        f"darm gpt, {args.dtype}": darm_trainer(data, cfg)[1],
    }
    if args.compile:
        compiled = darm_trainer(data, replace(cfg, compile=True))[1]
        trainers[f"darm gpt, {args.dtype}, compiled"] = compiled
    ms = {name: [] for name in trainers}  # ms/step of each block
    seconds = dict.fromkeys(trainers, 0.0)
    losses = {}
    for start in range(0, args.steps, args.block):
        block = range(start, min(start + args.block, args.steps))
        for name, step in trainers.items():
            t0 = time.perf_counter()
            for i in block:
                losses[name] = step(i)
            took = time.perf_counter() - t0
            seconds[name] += took
            ms[name].append(took * 1e3 / len(block))
    base, b_ms = next(iter(ms.items()))
    tokens = gpt_speed.BATCH * gpt_speed.BLOCK
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.machine()}, "
          f"{args.steps} steps each in blocks of {args.block}\n")  # fmt: skip
    print("| implementation | first block (s) | median ms/step | median tokens/s "
          "| ratio of totals | median of block ratios | last train loss |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    ratios = {name: [b / d for b, d in zip(b_ms, v)] for name, v in ms.items()}
    for name, v in ms.items():
        total = seconds[base] / seconds[name]
        median_ratio = statistics.median(ratios[name])
        print(f"| {name} | {v[0] * args.block / 1e3:.1f}"
              f" | {statistics.median(v):.1f} | {tokens * 1e3 / statistics.median(v):,.0f}"
              f" | {total:.2f} | {median_ratio:.2f} | {losses[name]:.4f} |")  # fmt: skip
    print()
    for name, r in list(ratios.items())[1:]:
        print(f"{name}: block ratios from {min(r):.2f} to {max(r):.2f}")
    print(f"ms/step of the baseline from {min(b_ms):.1f} to {max(b_ms):.1f} (the host's drift)")
    command = ["python", "benchmarks/gpt_speed_interleaved.py", *map(shlex.quote, sys.argv[1:])]
    print("\n`" + " ".join(command) + "`")


if __name__ == "__main__":
    main()
