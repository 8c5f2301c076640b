"""darm's CPU dropout (darm/nn/dropout.py: the mask cut from random bits) against torch's
nn.Dropout (one bernoulli_ draw per element), timed in interleaved rounds in one process.

    .venv/bin/python benchmarks/dropout_speed.py [--threads 2] [--rounds 5]

Cases: the layer alone, forward + backward, on a gated PixelCNN layer's maps (32, 48, 28, 28)
in float32 and bf16 and on a gpt MLP's (12, 64, 512); causal attention with dropout 0.1 on
gpt_speed.py's heads (12, 4, 64, 32), float32, SDPA's dropout against darm's
attention_written_out; then one training step (bf16 autocast,
forward, backward, fused AdamW) of the gated PixelCNN of binarized_mnist.py (48 maps x 12
layers, dropout 0.2, batch 32 of 28x28 binary images) and of gpt_speed.py's gpt with
dropout 0.1, with every dropout layer of the model one kind or the other, and the gpt's
attention through SDPA's dropout (torch) or darm's attention_written_out (darm).
"""

from __future__ import annotations

import argparse
import platform
import shlex
import statistics
import sys
from unittest import mock

import torch
import torch.nn.functional as F
from common import bf16_training_step, interleaved_ms
from torch import nn

from darm.models import create_model
from darm.nn import attention
from darm.nn.dropout import Dropout
from darm.report import markdown_table


def layer_step(shape, dtype, layer: nn.Module):
    x = torch.randn(shape, dtype=dtype, requires_grad=True)

    def step() -> None:
        layer(x).sum().backward()

    return step


def attention_step(own: bool):
    q, k, v = (torch.randn(12, 4, 64, 32, requires_grad=True) for _ in range(3))
    attend = attention.attention_written_out if own else sdpa_with_dropout

    def step() -> None:
        attend(q, k, v, 0.1, is_causal=True).sum().backward()

    return step


def with_dropout(model: nn.Module, kind: type[nn.Dropout]) -> nn.Module:
    """Every dropout layer of the model made `kind`, with its p."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.Dropout):
                setattr(module, name, kind(child.p))
    return model


def sdpa_with_dropout(q, k, v, p, **mask):
    """What attend() ran before darm's attention_written_out: SDPA's own dropout."""
    return F.scaled_dot_product_attention(q, k, v, dropout_p=p, **mask)


def model_step(kind, x, name, **config):
    torch.manual_seed(0)
    model = with_dropout(create_model(name, **config), kind).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    own = attention.attention_written_out if kind is Dropout else sdpa_with_dropout

    def step() -> None:
        with mock.patch.object(attention, "attention_written_out", own):
            bf16_training_step(model, opt, x)

    return step


def cases():
    """(case, reps per round, {kind: step})."""
    pixel_maps, mlp = (32, 48, 28, 28), (12, 64, 512)
    images = (torch.rand(32, 784) < 0.2).long()
    text = torch.randint(0, 65, (12, 64))
    gated = dict(vocab_size=2, image_shape=(28, 28), n_embd=8, n_hidden=48, n_layer=12,
                 first_kernel=7, kernel_size=3, dropout=0.2)  # fmt: skip
    gpt = dict(vocab_size=65, seq_len=64, n_layer=4, n_head=4, n_embd=128, dropout=0.1)
    kinds = {"torch": nn.Dropout, "darm": Dropout}
    for shape, dtype, reps in [(pixel_maps, torch.float32, 10), (pixel_maps, torch.bfloat16, 10),
                               (mlp, torch.float32, 100)]:  # fmt: skip
        label = f"layer {tuple(shape)} {str(dtype).removeprefix('torch.')}, fwd+bwd"
        yield label, reps, {k: layer_step(shape, dtype, kind(0.2)) for k, kind in kinds.items()}
    yield (
        "attention (12, 4, 64, 32) float32, p=0.1, fwd+bwd",
        50,
        {k: attention_step(kind is Dropout) for k, kind in kinds.items()},
    )
    yield (
        "gated_pixelcnn training step, bf16",
        3,
        {k: model_step(kind, images, "gated_pixelcnn", **gated) for k, kind in kinds.items()},
    )
    yield (
        "gpt training step, bf16",
        20,
        {k: model_step(kind, text, "gpt", **gpt) for k, kind in kinds.items()},
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per case (5)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for case, reps, steps in cases():
        ms = interleaved_ms(steps, args.rounds, reps)
        ratio = statistics.median(a / b for a, b in zip(ms["torch"], ms["darm"]))
        rows.append([case, f"{statistics.median(ms['torch']):.2f}",
                     f"{statistics.median(ms['darm']):.2f}", f"{ratio:.2f}x"])  # fmt: skip
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.machine()}, "
          f"median of {args.rounds} interleaved rounds\n")  # fmt: skip
    header = ["case", "torch nn.Dropout ms", "darm Dropout ms", "speed-up (median of rounds)"]
    print("\n".join(markdown_table(header, rows, "lrrr")))
    command = ["python", "benchmarks/dropout_speed.py", *map(shlex.quote, sys.argv[1:])]
    print("\n`" + " ".join(command) + "`")


if __name__ == "__main__":
    main()
