"""Whether a new run can fit in memory, worked out before it starts: its size on PyTorch's meta
device (shapes, no storage) against what the device has."""

from __future__ import annotations

import os

import torch

from darm.errors import DarmError
from darm.models import create_model


def memory_bytes(device: torch.device) -> int | None:
    """Memory the device has: the GPU's, or the machine's RAM (None where it cannot be read)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        return None


def check_memory(
    name: str, data, config: dict, device: torch.device, rows: int, dtype: str = "fp32"
) -> None:
    """Refuse, in one line, a model whose training needs more than the device's memory, rather
    than being killed by the system with no word. The model is built and run once on the meta
    device (shapes, no storage): training holds float32 weights, gradients and AdamW's two
    moments, 16 bytes a parameter, and the backward keeps much of what the forward of a
    micro-batch of `rows` examples made. That part is counted as half the outputs of the
    innermost modules, at 2 bytes a number under bf16 autocast, else 4 (some outputs are
    freed, e.g. a conv's that only feeds a tanh; measured on digits at batch 2048, wavenet
    kept 1167 MiB in fp32 and 603 MiB in bf16 against 1064 MiB of outputs at 4 bytes): a
    lower bound, so a run refused surely does not fit; one let through may still not.
    A deep stack (n_layer over DEEP) is sized from 2 and 3 of its layers first, since
    building 10^5 blocks even on the meta device takes minutes."""
    have = memory_bytes(device)
    if have is None:
        return
    n, per_example = deep_size(name, data, config) or (0, 0)
    if 16 * n + held(per_example, rows, dtype) <= have:  # shallow, or deep and fits: exactly
        n, per_example = meta_size(name, data, config)
    weights, activations = 16 * n, held(per_example, rows, dtype)
    if weights + activations <= have:
        return
    gib = 2**30
    if weights > have:
        raise DarmError(
            f"{name} with these settings has {n:,} parameters: training needs over "
            f"{weights / gib:.1f} GiB for weights, gradients and optimiser state, and this "
            f"{device.type.upper()} has {have / gib:.1f} GiB"
        )
    raise DarmError(
        f"{name} with these settings needs over {(weights + activations) / gib:.1f} GiB to "
        f"train ({activations / gib:.1f} GiB of activations for {rows} examples of "
        f"D={data.seq_len} at a time), and this {device.type.upper()} has {have / gib:.1f} "
        f"GiB: try a smaller --batch-size, --grad-accum, or a smaller model"
    )


def held(per_example: int, rows: int, dtype: str) -> int:
    """Bytes of activations the backward keeps: half of what `rows` examples' forward makes."""
    width = 2 if dtype == "bf16" else 4  # bytes a number
    return width * per_example * rows // 2


DEEP = 64  # layers past which a stack is first sized by extrapolation


def deep_size(name: str, data, config: dict) -> tuple[int, int] | None:
    """meta_size of a stack of over DEEP layers, extrapolated from 2 and 3 (each block adds
    the same parameters and numbers); None for a shallower one, or one not built so."""
    layers = str(config.get("n_layer", ""))
    if not layers.isdigit() or int(layers) <= DEEP:
        return None
    try:
        (n2, f2), (n3, f3) = (meta_size(name, data, {**config, "n_layer": k}) for k in (2, 3))
    except (DarmError, ValueError):  # a family that wants more layers: sized as asked
        return None
    extra = int(layers) - 2
    return n2 + extra * (n3 - n2), f2 + extra * (f3 - f2)


def meta_size(name: str, data, config: dict) -> tuple[int, int]:
    """(parameters, numbers one example's forward makes) of the model, built on meta."""
    with torch.device("meta"):
        model = create_model(name, data, **config)
        return model.num_params(), forward_numbers(model)


def forward_numbers(model) -> int:
    """Numbers a meta-device model's forward of one example makes in its innermost modules
    (each layer's output, most of which its backward keeps); outputs that are their input
    (an Identity) or views of it are not new memory and are not counted."""
    total = 0

    def storage(t: torch.Tensor) -> torch.Tensor:  # a view's base (meta tensors have no pointers)
        return t if t._base is None else t._base

    def count(module, inputs, output) -> None:
        nonlocal total
        held = [storage(i) for i in inputs if isinstance(i, torch.Tensor)]
        for out in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(out, torch.Tensor) and not any(storage(out) is h for h in held):
                total += out.numel()

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        x = torch.zeros((1, *model.event_shape), dtype=torch.long, device="meta")
        y = torch.zeros(1, dtype=torch.long, device="meta") if model.num_classes else None
        model(x, y)
    except Exception:  # a family of one's own whose forward needs real data (.item(), say)
        return 0  # nothing counted: the check falls back on the parameters alone
    finally:
        for hook in hooks:
            hook.remove()
    return total


def cache_bytes(cache, depth: int = 3) -> int:
    """Bytes of the tensors a generation cache holds (in its attributes, lists of them, and
    objects in them: a GPTCache's KVCaches)."""
    if isinstance(cache, torch.Tensor):
        return cache.numel() * cache.element_size()
    if depth == 0:
        return 0
    if isinstance(cache, (list, tuple)):
        return sum(cache_bytes(c, depth - 1) for c in cache)
    if isinstance(cache, dict):
        return sum(cache_bytes(c, depth - 1) for c in cache.values())
    if hasattr(cache, "__dict__"):
        return sum(cache_bytes(c, depth - 1) for c in vars(cache).values())
    return 0


def check_sample_memory(model, n: int, D: int, asked: str | None = None) -> None:
    """Refuse, in one line, drawing n samples of D symbols at once where that alone outgrows
    the machine (the system would kill the process with no word, after a whole training run
    when it is train's --samples): the samples (int64), a few float32 copies of each step's
    logits, and the model's cache, sized from one row's (init_cache(1)). A lower bound.
    asked: the option that asked for them, as the message names it (default `-n N`)."""
    have = memory_bytes(model.device)
    if have is None:
        return
    per_row = 8 * D + 3 * 4 * model.vocab_size + cache_bytes(model.init_cache(1))
    need = n * per_row
    if need > have:
        gib = 2**30
        raise DarmError(
            f"{asked or f'-n {n:,}'}: drawing {n:,} samples of {D} at once needs over "
            f"{need / gib:.1f} GiB, "
            f"and this {model.device.type.upper()} has {have / gib:.1f} GiB: draw fewer at a "
            f"time (the same command again with other --seed values)"
        )
