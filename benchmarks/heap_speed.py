"""Training steps with freed memory kept for reuse (darm/heap.py, as the `darm` command runs
them) against glibc's default, which hands large freed blocks back to the kernel.

    .venv/bin/python benchmarks/heap_speed.py [--rounds 4] [--steps 8] [--threads 2]

The setting is per process, so each measurement is a fresh process: rounds alternate which
setting goes first, and each reports its median ms a step, its page faults a step (minor
faults, from getrusage) and the kernel's CPU time a step (where the faults are served, each
page zeroed) after two warm-up steps. Steps: binarized_mnist.py's gated PixelCNN
(48 maps x 12 layers, dropout 0.2, batch 32) and gpt_speed.py's gpt (4 layers, 4 heads, width
128, context 64, batch 12), both under bf16 autocast with fused AdamW.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch
from common import bf16_training_step
from gated_step_speed import GATED

from darm.heap import retain_freed_memory
from darm.models import create_model
from darm.report import markdown_table

MODELS = {  # name: (family, config, batch shape)
    "gated_pixelcnn": ("gated_pixelcnn", GATED, (32, 784)),
    "gpt": ("gpt", dict(vocab_size=65, seq_len=64, n_layer=4, n_head=4, n_embd=128), (12, 64)),
}  # fmt: skip
SETTINGS = ("glibc default", "freed memory kept")


def usage() -> tuple[int, float]:
    """Minor page faults so far, and seconds of kernel time (where faults are served)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_minflt, r.ru_stime


def child(model_name: str, setting: str, steps: int, threads: int) -> None:
    """One process: the setting, then warm-up and timed steps; one JSON line on stdout."""
    if setting == SETTINGS[1] and not retain_freed_memory():
        sys.exit("heap_speed: this C library is not glibc; nothing to compare")
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    family, config, shape = MODELS[model_name]
    model = create_model(family, **config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    x = torch.randint(0, config["vocab_size"], shape, generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        bf16_training_step(model, opt, x)
    ms, (faults, kernel_s) = [], usage()
    for _ in range(steps):
        t = time.perf_counter()
        bf16_training_step(model, opt, x)
        ms.append((time.perf_counter() - t) * 1e3)
    faults_after, kernel_s_after = usage()
    print(json.dumps({"ms": statistics.median(ms), "faults": (faults_after - faults) / steps,
                      "kernel_ms": (kernel_s_after - kernel_s) * 1e3 / steps}))  # fmt: skip


def measure(model_name: str, setting: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", model_name, setting,
           "--steps", str(args.steps), "--threads", str(args.threads)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        said = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        sys.exit(f"heap_speed: the {model_name} process ({setting}) failed: {said[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=4, help="rounds of one process each (4)")
    p.add_argument("--steps", type=int, default=8, help="timed steps a process (8)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (2)")
    p.add_argument("--child", nargs=2, metavar=("MODEL", "SETTING"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(*args.child, args.steps, args.threads)
    rows = []
    for name in MODELS:
        runs = {s: [] for s in SETTINGS}
        for r in range(args.rounds):
            for setting in SETTINGS if r % 2 == 0 else SETTINGS[::-1]:
                runs[setting].append(measure(name, setting, args))
        default = [run["ms"] for run in runs[SETTINGS[0]]]
        for setting, results in runs.items():
            ms = [run["ms"] for run in results]
            speedup = statistics.median(d / m for d, m in zip(default, ms))
            faults = statistics.median(run["faults"] for run in results)
            kernel_ms = statistics.median(run["kernel_ms"] for run in results)
            rows.append([name, setting, f"{faults:,.0f}", f"{kernel_ms:.1f}",
                         f"{statistics.median(ms):.1f}",
                         ", ".join(f"{m:.0f}" for m in ms), f"{speedup:.2f}x"])  # fmt: skip
    print(
        f"torch {torch.__version__}, {args.threads} threads, {platform.machine()}, "
        f"{args.rounds} rounds of a fresh process per setting, {args.steps} steps each\n"
    )
    header = ["training step", "allocator", "page faults / step", "kernel ms / step",
              "median ms/step", "ms/step per round", "speed-up (median of rounds)"]  # fmt: skip
    print("\n".join(markdown_table(header, rows, "llrrrlr")))
    command = ["python", "benchmarks/heap_speed.py", *sys.argv[1:]]
    print("\n`" + " ".join(command) + "`")


if __name__ == "__main__":
    main()
