"""Maximum-likelihood training: AdamW, warmup + cosine decay, clipping, eval, checkpoints.

The loss is the summed cross-entropy of the batch divided by the number of scored
dimensions (nats per dimension), so the learning rate does not depend on D.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from darm.checkpoint import load_training_state, save_checkpoint
from darm.data import Dataset
from darm.errors import DarmError
from darm.metrics import evaluate, nll_per_dim
from darm.models import ARModel

LOG_FIELDS = ["step", "lr", "train_nats_per_dim", "valid_nats_per_dim", "tokens_per_s", "elapsed_s"]


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 64
    lr: float = 3e-3
    min_lr: float = 3e-4  # the cosine decays to this
    warmup: int = 100
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    eval_every: int = 250
    eval_batch_size: int = 512
    seed: int = 1337


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to lr, then cosine decay to min_lr at the last step."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))


def make_optimizer(model: ARModel, cfg: TrainConfig) -> torch.optim.AdamW:
    """Weight decay on matrices only; biases, norms and 1-D parameters are not decayed."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), foreach=True)


def data_meta(data: Dataset) -> dict[str, Any]:
    """What a checkpoint needs to read and write this data again."""
    return {
        "name": data.name,
        "kind": data.kind,
        "source": data.source,
        "vocab": None if data.vocab is None else data.vocab.symbols,
        "eos": data.eos,
        "image_shape": data.image_shape,
        "num_classes": data.num_classes,
        "notes": data.notes,
    }


def train(
    model: ARModel,
    model_name: str,
    data: Dataset,
    cfg: TrainConfig,
    run_dir: Path,
    resume_from: tuple[Path, dict] | None = None,
    progress: bool = True,
    stop_at: int | None = None,
    max_seconds: float | None = None,
) -> dict[str, Any]:
    """Train, evaluating on the validation split and checkpointing every eval_every steps.

    Writes run_dir/{last,best}.{json,safetensors,optim.safetensors} and run_dir/log.csv.
    stop_at: end early after this step (saving `last`); the schedule still spans cfg.steps,
    so `--resume` later continues exactly as if never stopped. max_seconds: likewise, once
    this much training time has passed.
    Returns the final training state (step, best validation NLL, wall time).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = model.device
    conditional = model.num_classes > 0
    if conditional and data.num_classes == 0:
        raise DarmError(f"a conditional model needs labels, and {data.name} has none")
    optimizer = make_optimizer(model, cfg)
    start, best = 0, math.inf
    torch.manual_seed(cfg.seed)
    if resume_from is not None:
        path, record = resume_from
        load_training_state(path, record, optimizer)
        start, best = record["step"], record.get("best_valid_nats_per_dim", math.inf)
    train_split, valid_split = data["train"], data["valid"]
    log_path = run_dir / "log.csv"
    if start == 0 or not log_path.exists():
        with open(log_path, "w", newline="") as f:
            csv.writer(f).writerow(LOG_FIELDS)

    def checkpoint(tag: str, step: int, best: float) -> None:
        meta = {
            "step": step,
            "best_valid_nats_per_dim": best,
            "train": asdict(cfg),
            "data": data_meta(data),
        }
        save_checkpoint(run_dir, tag, model, model_name, meta, optimizer)

    def evaluate_and_save(step, lr, train_nll, tokens_per_s, elapsed, best) -> float:
        """Score the validation split, log it, save last (and best); return the best."""
        val = evaluate(model, valid_split, cfg.eval_batch_size).nats_per_dim
        model.train()
        with open(log_path, "a", newline="") as f:
            row = [step, lr, train_nll, val, tokens_per_s, elapsed]
            csv.writer(f).writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])
        bar.write(f"step {step}: train {train_nll:.4f}  valid {val:.4f} nats/dim")
        if val < best:
            best = val
            checkpoint("best", step, best)
        checkpoint("last", step, best)
        return best

    model.train()
    bar = tqdm(
        total=cfg.steps, initial=start, disable=not progress, dynamic_ncols=True, mininterval=0.5
    )
    t0, tokens, running = time.perf_counter(), 0, None
    end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
    for step in range(start, end):
        lr = learning_rate(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y, mask = train_split.batch(step, cfg.batch_size, cfg.seed)
        x = x.to(device)
        y = y.to(device) if conditional else None
        mask = None if mask is None else mask.to(device)
        n_dims = x.numel() if mask is None else int(mask.sum())
        loss = nll_per_dim(model(x, y), x, mask).sum() / n_dims
        if not torch.isfinite(loss):
            raise DarmError(
                f"loss is {loss.item()} at step {step}; stopped, the last good checkpoint "
                f"in {run_dir} is kept (try a lower --lr)"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        tokens += n_dims
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        elapsed = time.perf_counter() - t0
        bar.update(1)
        bar.set_postfix(loss=f"{running:.4f}", tok_s=f"{tokens / elapsed:,.0f}", refresh=False)
        out_of_time = max_seconds is not None and elapsed >= max_seconds
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps or out_of_time:
            best = evaluate_and_save(step + 1, lr, running, tokens / elapsed, elapsed, best)
        elif step + 1 == end:
            checkpoint("last", step + 1, best)
        if out_of_time:
            end = step + 1
            break
    bar.close()
    return {
        "step": end,
        "best_valid_nats_per_dim": best,
        "elapsed_s": time.perf_counter() - t0,
        "tokens_per_s": tokens / max(time.perf_counter() - t0, 1e-9),
    }
