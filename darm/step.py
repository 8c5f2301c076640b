"""One step of maximum-likelihood training, and one validation pass, on 1 or N ranks.

The loss is the summed cross-entropy of the batch divided by the number of scored
dimensions (nats per dimension), so the learning rate does not depend on D.

One code path for 1 or N data-parallel ranks (torchrun) and any number of micro-batches:
the global batch of a step is a pure function of (seed, step); rank r keeps its share and
cuts it in `grad_accum` micro-batches, and each micro-batch contributes
sum(nats) / (scored dims of the GLOBAL batch) to the gradient, so the summed gradient is the
one-process gradient of the whole batch. Dropout masks are a function of (seed, step, rank)
too, so a resumed run replays an uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import warnings

import torch

from darm import distributed
from darm.metrics import NLL, evaluate, nll_per_dim
from darm.models import ARModel
from darm.train_config import TrainConfig


def dropout_seed(seed: int, step: int, rank: int) -> int:
    """Seed of the global RNG (dropout) for one step of one rank: no RNG state to carry."""
    return ((seed * 1_000_003 + step) * 7919 + 104_729 * (rank + 1)) % 2**63


def seed_dropout(seed: int, device: torch.device) -> None:
    """Seed the generator dropout draws from: the CPU one, and the GPU's own on CUDA.
    (torch.manual_seed would do it too, but it visits every backend: 100x slower a step.)"""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):  # cuda:1 in a single process is not the current one
            torch.cuda.manual_seed(seed)


def micro_batches(batch, rank: int, world_size: int, grad_accum: int):
    """This rank's share of the global batch, cut into grad_accum micro-batches."""
    x, y, mask = batch
    lo, hi = distributed.shard_bounds(x.shape[0], rank, world_size)
    out = []
    for i in range(grad_accum):
        a, b = distributed.shard_bounds(hi - lo, i, grad_accum)
        rows = slice(lo + a, lo + b)
        out.append((x[rows], None if y is None else y[rows], None if mask is None else mask[rows]))
    return out


def accumulate_gradients(net, micro, cfg: TrainConfig, n_dims: int, ddp=None, conditional=False):
    """Forward and backward over this rank's micro-batches: the parameters' .grad becomes the
    gradient of sum(nats) / n_dims over the global batch of n_dims scored dimensions.
    Returns this rank's summed nats (a 0-d float32 tensor on the model's device)."""
    device = next(net.parameters()).device
    world_size = distributed.current().world_size
    nats = torch.zeros((), device=device)
    for i, (x, y, mask) in enumerate(micro):
        x = x.to(device)
        y = y.to(device) if conditional else None
        mask = None if mask is None else mask.to(device)
        # gradients are all-reduced once, after the last micro-batch
        last = i == len(micro) - 1
        sync = contextlib.nullcontext() if ddp is None or last else ddp.no_sync()
        with sync:
            with torch.autocast(device.type, torch.bfloat16, enabled=cfg.dtype == "bf16"):
                logits = net(x, y)
            micro_nats = nll_per_dim(logits, x, mask).sum()  # float32 whatever the dtype
            # DDP averages gradients over ranks; the factor world_size turns the average
            # into the gradient of sum(nats) / n_dims over the global batch
            (micro_nats * (world_size / n_dims)).backward()
        nats += micro_nats.detach()
    return nats


def scored_dims(batch) -> int:
    """Dimensions a batch (x, y, mask) scores: all of x, or those its mask keeps."""
    x, _, mask = batch
    return x.numel() if mask is None else int(mask.sum())


def data_parallel(model: ARModel, split, seed: int):
    """Under torchrun, `model` wrapped in DDP (told whether some parameter gets no gradient);
    None in one process."""
    if distributed.current().world_size == 1:
        return None
    device = model.device
    ids = [device.index] if device.type == "cuda" else None
    unused = has_unused_parameters(model, split.batch(0, 1, seed), model.num_classes > 0)
    # a 1x1 conv's weight gradient (gated_pixelcnn's link) comes back with other strides in
    # its size-1 dimensions: the same memory layout, copied into DDP's bucket as fast, but
    # its literal stride check warned of it on every rank (only that case is silenced)
    warnings.filterwarnings(
        "ignore",
        message=r"(?s)Grad strides do not match bucket view strides.*"
        r"grad\.sizes\(\) = \[\d+, \d+, 1, 1\]",
    )
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=ids, find_unused_parameters=unused
    )


def has_unused_parameters(model: ARModel, batch, conditional: bool) -> bool:
    """Whether some parameter gets no gradient at all (DDP must then be told, or it waits
    for that gradient forever); one backward pass on one example, gradients then cleared."""
    x, y, _ = batch
    device = model.device
    model(x[:1].to(device), y[:1].to(device) if conditional else None).float().sum().backward()
    unused = any(p.grad is None for p in model.parameters() if p.requires_grad)
    model.zero_grad(set_to_none=True)
    return unused


def evaluate_split(model: ARModel, split, batch_size: int, progress: bool = False) -> NLL:
    """Exact NLL of the whole split; under torchrun each rank scores a contiguous shard
    and the totals (nats, examples, dims) are summed over ranks."""
    ctx = distributed.current()
    if ctx.world_size == 1:
        return evaluate(model, split, batch_size, progress)
    lo, hi = distributed.shard_bounds(len(split), ctx.rank, ctx.world_size)
    shard = split.subset(lo, hi)
    part = evaluate(model, shard, batch_size, progress) if hi > lo else NLL(0.0, 0, 0)
    nats, examples, dims = distributed.all_reduce_sum(
        [part.nats, part.examples, part.dims], model.device
    )
    return NLL(nats, round(examples), round(dims))


def make_optimizer(model: ARModel, cfg: TrainConfig) -> torch.optim.AdamW:
    """Weight decay on matrices only; biases, norms and 1-D parameters are not decayed."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # the fused kernel (one pass over all parameters) is 5-8% faster per step on the CPU
    # for a small GPT than the foreach one; other devices keep foreach
    fused = model.device.type in ("cpu", "cuda")
    return torch.optim.AdamW(
        groups,
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        fused=fused,
        foreach=None if fused else True,
    )
