"""GPT training tokens/s, repeated in fresh processes: the median of darm / baseline.

    .venv/bin/python benchmarks/gpt_speed_repeat.py --rounds 7 --steps 500

The same models, hyper-parameters and training loops as benchmarks/gpt_speed.py (which also
scores held-out loss); this script measures speed only. On a small shared VM the same
training runs at a speed that differs from process to process by up to 30% (this script's
per-round numbers show it), so one process per implementation is a coin toss. Here every
round starts one fresh process per implementation, alternating which goes first, and the
table gives each round's tokens/s, the median tokens/s, the ratio of the medians and the
median of the per-round ratios. tokens/s counts the training steps only (batches, forward,
backward, optimizer), not start-up, data loading or evaluation.

darm's processes keep freed memory for reuse, as the `darm` command does (darm/heap.py);
the baseline's use glibc's default, as the minimal GPT's own script does. `baseline-kept`
(in --impls) is the baseline given darm's setting and `bf16-glibc` darm without it: what the
setting alone is worth.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpt_speed  # noqa: E402

from darm.data import load_data  # noqa: E402
from darm.heap import retain_freed_memory  # noqa: E402

IMPLEMENTATIONS = ("baseline", "baseline-kept", "fp32", "bf16", "bf16-glibc")
LABELS = {
    "baseline": "baseline (minimal GPT, eager, fp32)",
    "baseline-kept": "baseline, freed memory kept (darm's setting)",
    "bf16-glibc": "darm gpt, bf16, glibc's default (not the darm command's setting)",
}


def worker(impl: str, steps: int) -> float:
    """Train one implementation for `steps` steps in this process; its training tokens/s.
    Freed memory kept or not as the module's docstring says."""
    if impl not in ("baseline", "bf16-glibc"):
        retain_freed_memory()
    data = load_data("shakespeare", block=gpt_speed.BLOCK)
    if impl.startswith("baseline"):
        _, seconds, _ = gpt_speed.train_baseline(data["train"].stream, data.vocab_size, steps)
        return steps * gpt_speed.BATCH * gpt_speed.BLOCK / seconds
    model = gpt_speed.darm_gpt(data.vocab_size)
    dtype = impl.removesuffix("-glibc")
    _, last = gpt_speed.train_logged(model, data, gpt_speed.darm_config(dtype, steps))
    return float(last["tokens_per_s"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7, help="fresh processes per implementation")
    ap.add_argument("--steps", type=int, default=500, help="training steps per process")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of each process")
    ap.add_argument(
        "--impls", default="baseline,bf16", help=f"comma-separated, of {', '.join(IMPLEMENTATIONS)}"
    )
    ap.add_argument("--worker", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.steps <= gpt_speed.WARMUP:  # both schedules warm up first
        ap.error(f"--steps must be above the {gpt_speed.WARMUP}-step warmup, got {args.steps}")
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps({"tokens_per_s": worker(args.worker, args.steps)}))
        return
    impls = args.impls.split(",")
    if (
        "baseline" not in impls
        or not set(impls) <= set(IMPLEMENTATIONS)
        or len(set(impls)) < len(impls)
    ):
        ap.error(
            f"--impls must name baseline and others of {', '.join(IMPLEMENTATIONS)}, once each"
        )
    command = "python benchmarks/gpt_speed_repeat.py " + " ".join(map(shlex.quote, sys.argv[1:]))
    print(f"load average before: {os.getloadavg()[0]:.2f}; torch {torch.__version__}", flush=True)
    speeds = {impl: [] for impl in impls}
    for r in range(args.rounds):
        order = impls if r % 2 == 0 else impls[::-1]  # alternate who runs first
        for impl in order:
            t0 = time.perf_counter()
            done = subprocess.run(
                [sys.executable, __file__, "--worker", impl, "--steps", str(args.steps),
                 "--threads", str(args.threads)],
                capture_output=True, text=True,
            )  # fmt: skip
            if done.returncode:
                sys.exit(f"the {impl} worker failed:\n{done.stderr}")
            speeds[impl].append(json.loads(done.stdout.splitlines()[-1])["tokens_per_s"])
            print(f"round {r + 1}: {impl} {speeds[impl][-1]:,.0f} tokens/s "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip

    base = speeds["baseline"]
    print(f"\nGPT 4x4x128, context {gpt_speed.BLOCK}, batch {gpt_speed.BATCH}, {args.steps} steps "
          f"per process, {args.threads} threads, {args.rounds} rounds; "
          f"load average after: {os.getloadavg()[0]:.2f}\n")  # fmt: skip
    print("| implementation | tokens/s per round | median tokens/s | ratio of medians "
          "| median of round ratios |")  # fmt: skip
    print("|---|---|---:|---:|---:|")
    for impl in impls:
        label = LABELS.get(impl, f"darm gpt, {impl}")
        median = statistics.median(speeds[impl])
        ratios = [s / b for s, b in zip(speeds[impl], base)]
        per_round = ", ".join(f"{s:,.0f}" for s in speeds[impl])
        print(f"| {label} | {per_round} | {median:,.0f} | {median / statistics.median(base):.2f} "
              f"| {statistics.median(ratios):.2f} |")  # fmt: skip
    print(f"\n`{command}`")


if __name__ == "__main__":
    main()
