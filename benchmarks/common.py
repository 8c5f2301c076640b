"""Shared by the quality benchmarks: train one configuration, score it exactly, tabulate."""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

from darm.checkpoint import load_checkpoint
from darm.errors import DarmError
from darm.heap import retain_freed_memory
from darm.interrupt import Stopped
from darm.metrics import evaluate, nll_per_dim
from darm.models import create_model, reads_images
from darm.train import train
from darm.train_config import TrainConfig, bf16_warning


def run_one(
    label,
    model_name,
    data,
    model_kw,
    train_kw,
    budget_s,
    out_root=None,
    progress=True,
    resume=False,
    init=None,
):
    """Train under a wall-clock budget, then evaluate the best checkpoint on the test split.
    resume: continue the run folder's last checkpoint under this config (e.g. more steps).
    init: a checkpoint whose weights a new run starts from (fine-tuning); model_kw may
    change only what leaves the weights' shapes alone, such as dropout."""
    cfg = TrainConfig(**train_kw)
    if warning := bf16_warning(cfg, torch.device("cpu")):
        print(f"{label}: {warning}", file=sys.stderr)
    out = Path(out_root or tempfile.mkdtemp(prefix="darm-bench-")) / label
    if data.image_shape and reads_images(model_name):
        model_kw = {"image_shape": data.image_shape, **model_kw}  # the 2-D view of images
    if resume and (out / "last.json").exists():
        model, record, path = load_checkpoint(out / "last.json")
        saved = {k: record["config"].get(k) for k in model_kw}
        if record["model"] != model_name or saved != {k: _json(v) for k, v in model_kw.items()}:
            raise SystemExit(
                f"{out} holds {record['model']} {saved}, not the config's {model_name} "
                f"{model_kw}; resume it with the config it was trained with"
            )
        resume_from = (path, record)
        print(f"{label}: resuming from step {record['step']} in {out}")
    else:
        if resume:
            print(f"{label}: nothing to resume in {out}; starting afresh")
        torch.manual_seed(train_kw.get("seed", 1337))
        if init:
            model, record, path = load_checkpoint(init, overrides=model_kw)
            if record["model"] != model_name:
                raise SystemExit(f"{path} holds {record['model']}, not the config's {model_name}")
            print(f"{label}: starting from the weights of {path} (step {record['step']})")
        else:
            model = create_model(
                model_name, vocab_size=data.vocab_size, seq_len=data.seq_len, **model_kw
            )
        resume_from = None
    t0 = time.perf_counter()
    try:
        state = train(
            model, model_name, data, cfg, out, resume_from, progress, max_seconds=budget_s
        )
    except DarmError as e:  # a folder holding an earlier run, say: one line, not a traceback
        raise SystemExit(f"{label}: {e}") from None
    except Stopped as e:  # Ctrl-C or SIGTERM: `last` is saved, the test pass is skipped
        raise SystemExit(f"{label}: {e}") from None
    wall = time.perf_counter() - t0
    best, record, _ = load_checkpoint(out)
    nll = evaluate(best, data["test"])
    return {
        "model": label,
        "params": best.num_params(),
        "steps": state["step"],
        "train_s": wall,
        "best_step": record["step"],
        "test_nats_per_example": nll.nats_per_example,
        "test_nats_per_dim": nll.nats_per_dim,
        "test_bits_per_dim": nll.bits_per_dim,
    }


def _json(value):
    """A config value as its JSON record holds it (tuples become lists)."""
    return [_json(v) for v in value] if isinstance(value, (tuple, list)) else value


def markdown_table(rows, columns):
    """columns: [(header, key, format)]"""
    lines = ["| " + " | ".join(h for h, _, _ in columns) + " |"]
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for r in rows:
        lines.append("| " + " | ".join(fmt.format(r[k]) for _, k, fmt in columns) + " |")
    return "\n".join(lines)


def command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def run_benchmark(description, data, configs, eval_every, annotate, columns):
    """The shared command line of the quality benchmarks: --only, --budget, --out; one
    `run_one` per config, then a Markdown table and the command that reproduced it."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--only", help="comma-separated labels of the configs")
    p.add_argument("--budget", type=float, default=300.0, help="seconds of training per model")
    p.add_argument("--out", help="keep run folders here")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue runs already in --out (their train s then counts this invocation only)",
    )
    p.add_argument(
        "--init",
        metavar="CHECKPOINT",
        help="start new runs from this checkpoint's weights (fine-tuning; with one --only)",
    )
    args = p.parse_args()
    if args.resume and not args.out:
        p.error("--resume needs --out, the folder of the runs to continue")
    if args.init and (not args.only or "," in args.only):
        p.error("--init needs one config in --only")
    if args.init and args.resume:
        p.error("--init starts new runs, --resume continues them: pass one of them")
    labels = args.only.split(",") if args.only else list(configs)
    unknown = [label for label in labels if label not in configs]
    if unknown:
        p.error(f"unknown config {unknown[0]!r}; valid: {', '.join(configs)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    retain_freed_memory()  # as the `darm` command does
    print(data.summary(), "-", data.notes)
    rows = []
    for label in labels:
        model, model_kw, train_kw = configs[label]
        train_kw = {"eval_every": eval_every, **train_kw}  # a config may set its own
        result = run_one(
            label, model, data, model_kw, train_kw, args.budget, args.out,
            resume=args.resume, init=args.init,
        )  # fmt: skip
        row = annotate(result)
        rows.append(row)
        print(f"{label}: {row['test_nats_per_example']:.3f} nats/example, "
              f"{row['test_nats_per_dim']:.4f} nats/dim in {row['train_s']:.0f}s")  # fmt: skip
    print()
    print(markdown_table(rows, columns))
    print(f"\n`{command_line()}`")


def interleaved_ms(steps: dict, rounds: int, reps: int) -> dict[str, list[float]]:
    """ms per call of each of `steps` (name -> a no-argument callable) in every round: one
    warm-up call each, then `rounds` rounds of `reps` calls of each in turn, so a slow spell
    of the host falls on all of them alike."""
    for step in steps.values():
        step()
    ms = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(reps):
                step()
            ms[name].append((time.perf_counter() - t0) * 1e3 / reps)
    return ms


def bf16_training_step(model, opt, x) -> None:
    """One maximum-likelihood step on the batch x under CPU bf16 autocast, fused AdamW's."""
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", torch.bfloat16):
        logits = model(x)
    nll_per_dim(logits, x, None).mean().backward()
    opt.step()
