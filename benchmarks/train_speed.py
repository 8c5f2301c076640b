"""Training tokens/s of darm's gpt: fp32 vs bf16 autocast vs torch.compile, 1 vs 2 ranks.

    .venv/bin/python benchmarks/train_speed.py                  # the measurement (minutes)
    .venv/bin/python benchmarks/train_speed.py --steps 5 --warmup-steps 2   # smoke test
    .venv/bin/python benchmarks/train_speed.py --only fp32,2-ranks

Configuration: `darm train --data shakespeare --model gpt --block 64 --batch-size 12
--set n_layer=4 --set n_head=4 --set n_embd=128` (4 layers, width 128, context 64, a global
batch of 12 blocks, so 768 tokens a step), seed 1337, through the real command line: one
process, or `torchrun --nproc_per_node=2` with gloo where each rank takes 6 of the 12 rows.

Every configuration trains once, in a fresh process, for W + N steps, evaluating only after
its last step, with a log row every gcd(W, N) steps; a row records the training time so far
(`elapsed_s`). Steady tokens/s = N * 768 / (elapsed(W + N) - elapsed(W)), both from the one
process: the start-up, the first steps and torch.compile's compilation are left out, and
"first W steps s" shows what they cost. (Timing two processes, of W and of W + N steps, let
the compilation's own spread of seconds from one process to the next into the N steps'
time.) Each process gets its own empty TorchInductor cache, so it compiles from cold.
"valid nats/char" is the validation NLL after W + N steps, to show that bf16 and compile
train the same model.

Threads: one process uses 2 threads (--threads 2); two ranks use 1 thread each, so both use
the 2 cores. Timings mean something only on an otherwise idle machine: the load average
before and after is printed with the table.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
TOKENS_PER_STEP = 12 * 64
MODEL = ["--data", "shakespeare", "--model", "gpt", "--block", "64", "--batch-size", "12",
         "--set", "n_layer=4", "--set", "n_head=4", "--set", "n_embd=128"]  # fmt: skip

# label -> (ranks, threads per rank, extra flags)
CONFIGS = {
    "fp32": (1, 2, []),
    "bf16": (1, 2, ["--dtype", "bf16"]),
    "compile": (1, 2, ["--compile"]),
    "bf16+compile": (1, 2, ["--dtype", "bf16", "--compile"]),
    "2-ranks": (2, 1, []),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_once(label: str, steps: int, log_every: int, root: Path) -> dict[int, dict]:
    """One fresh training run of `steps` steps; its log rows by step."""
    ranks, threads, extra = CONFIGS[label]
    out = root / label
    darm = ["-m", "darm", "train", *MODEL, *extra, "--steps", str(steps),
            "--eval-every", str(steps), "--log-every", str(log_every), "--quiet",
            "--samples", "1", "--threads", str(threads), "--out", str(out)]  # fmt: skip
    launcher = [sys.executable]
    if ranks > 1:
        launcher += ["-m", "torch.distributed.run", f"--nproc_per_node={ranks}",
                     "--master_addr=127.0.0.1", f"--master_port={free_port()}"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env["TORCHINDUCTOR_CACHE_DIR"] = str(out / "inductor-cache")  # compile from cold
    proc = subprocess.run([*launcher, *darm], cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"{label} ({steps} steps) failed:\n{tail}")
    with open(out / "log.csv") as f:
        return {int(row["step"]): row for row in csv.DictReader(f)}


def measure(label: str, warmup: int, steps: int, root: Path) -> dict:
    rows = train_once(label, warmup + steps, math.gcd(warmup, steps), root)
    short, long = rows[warmup], rows[warmup + steps]
    seconds = float(long["elapsed_s"]) - float(short["elapsed_s"])
    ranks, threads, _ = CONFIGS[label]
    return {
        "config": label,
        "ranks": f"{ranks} x {threads} thread{'s' if threads > 1 else ''}",
        "tokens_per_s": steps * TOKENS_PER_STEP / seconds if seconds > 0 else float("nan"),
        "first_s": float(short["elapsed_s"]),
        "valid": float(long["valid_nats_per_dim"]),
    }


def markdown(rows: list[dict]) -> str:
    base = next((r["tokens_per_s"] for r in rows if r["config"] == "fp32"), None)
    header = ["config", "ranks x threads", "steady tokens/s", "vs fp32", "first W steps s"]
    header.append("valid nats/char")
    lines = ["| " + " | ".join(header) + " |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        ratio = f"{r['tokens_per_s'] / base:.2f}" if base else "-"
        lines.append(
            f"| {r['config']} | {r['ranks']} | {r['tokens_per_s']:,.0f} | {ratio} | "
            f"{r['first_s']:.1f} | {r['valid']:.4f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=300, help="timed steps N (default 300)")
    p.add_argument("--warmup-steps", type=int, default=30, help="untimed first steps W")
    p.add_argument("--only", help=f"comma-separated configs of {', '.join(CONFIGS)}")
    p.add_argument("--out", help="keep the run folders here (default: a temporary folder)")
    args = p.parse_args()
    labels = list(dict.fromkeys(args.only.split(","))) if args.only else list(CONFIGS)
    unknown = sorted(set(labels) - set(CONFIGS))
    if unknown:
        p.error(f"unknown config(s) {', '.join(unknown)}; valid: {', '.join(CONFIGS)}")
    root = Path(args.out or tempfile.mkdtemp(prefix="darm-speed-"))
    load_before, t0 = os.getloadavg()[0], time.perf_counter()
    rows = []
    for label in labels:
        try:
            rows.append(measure(label, args.warmup_steps, args.steps, root))
        except RuntimeError as e:
            print(e, file=sys.stderr)
            continue
        r = rows[-1]
        print(f"{label}: {r['tokens_per_s']:,.0f} tokens/s, first steps {r['first_s']:.1f}s")
    print()
    print(markdown(rows))
    print(
        f"\nW = {args.warmup_steps}, N = {args.steps}; torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs; load average {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after; {time.perf_counter() - t0:.0f} s in all"
    )
    print(f"\n`python {' '.join(shlex.quote(a) for a in sys.argv)}`")


if __name__ == "__main__":
    main()
