"""The gated PixelCNN's training step as it is, against the same step with each of its CPU
speed-ups undone in turn, and with all undone: interleaved rounds in one process.

    .venv/bin/python benchmarks/gated_step_speed.py [--threads 2] [--rounds 5]

The model and batch are binarized_mnist.py's (48 maps x 12 layers, dropout 0.2, batch 32 of
28x28 binary images; bf16 autocast, forward, backward, fused AdamW). Its maps are
channels-last (the pixel embedding is permuted, and oneDNN's convolutions keep that layout).
Each is undone here by swapping one function back to what it was:
- dropout: darm's mask from random bits (darm/nn/dropout.py), undone: torch's nn.Dropout;
- float32 tanh: the gate's tanh of bf16 maps taken in float32 (darm/nn/gate.py: BF16Gate),
  undone: bf16 tanh and sigmoid of dense copies of the two halves;
- gate: both the float32 tanh and the dense copies undone: bf16 tanh and sigmoid of the
  strided halves themselves;
- shift_down: an autograd Function that keeps the layout both ways
  (darm/models/gated_pixelcnn.py), undone: F.pad then a slice, whose backward is plain NCHW.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import statistics
import sys
from contextlib import ExitStack
from unittest import mock

import torch
import torch.nn.functional as F
from common import bf16_training_step, interleaved_ms
from torch import nn

from darm.models import create_model, gated_pixelcnn
from darm.nn.dropout import Dropout
from darm.nn.gate import dense
from darm.report import markdown_table

GATED = dict(vocab_size=2, image_shape=(28, 28), n_embd=8, n_hidden=48, n_layer=12,
             first_kernel=7, kernel_size=3, dropout=0.2)  # fmt: skip


def strided_gate(h: torch.Tensor) -> torch.Tensor:
    a, b = h.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


def dense_gate(h: torch.Tensor) -> torch.Tensor:
    a, b = (dense(t) for t in h.chunk(2, dim=1))
    return torch.tanh(a) * torch.sigmoid(b)


def pad_and_slice(v: torch.Tensor) -> torch.Tensor:
    return F.pad(v, (0, 0, 1, 0))[:, :, :-1]


UNDO = {  # what each speed-up replaced: (module attribute to swap, the old function)
    "float32 tanh": (gated_pixelcnn, "gate", dense_gate),
    "gate": (gated_pixelcnn, "gate", strided_gate),
    "shift_down": (gated_pixelcnn, "shift_down", pad_and_slice),
}


def training_step(undone: tuple[str, ...], x: torch.Tensor):
    torch.manual_seed(0)
    model = create_model("gated_pixelcnn", **GATED).train()
    if "dropout" in undone:
        for layer in model.layers:
            assert isinstance(layer.drop, Dropout)
            layer.drop = nn.Dropout(layer.drop.p)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step() -> None:
        with ExitStack() as swaps:
            for name in undone:
                if name in UNDO:
                    module, attr, old = UNDO[name]
                    swaps.enter_context(mock.patch.object(module, attr, old))
            bf16_training_step(model, opt, x)

    return step


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (5)")
    p.add_argument("--reps", type=int, default=3, help="steps of each per round (3)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x = (torch.rand(32, 784, generator=torch.Generator().manual_seed(0)) < 0.2).long()
    speedups = ("dropout", "float32 tanh", "gate", "shift_down")
    cases = {"as it is": (), **{f"{n} undone": (n,) for n in speedups}}
    cases["all undone"] = ("dropout", "gate", "shift_down")  # "gate" undoes the tanh too
    steps = {case: training_step(undone, x) for case, undone in cases.items()}
    ms = interleaved_ms(steps, args.rounds, args.reps)
    rows = []
    for case, times in ms.items():
        ratio = statistics.median(a / b for a, b in zip(times, ms["as it is"]))
        rows.append([case, f"{statistics.median(times):.0f}", f"{ratio:.2f}x"])
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.machine()}, "
          f"median of {args.rounds} interleaved rounds of {args.reps} steps\n")  # fmt: skip
    header = ["gated_pixelcnn training step", "ms/step", "time / as it is (median of rounds)"]
    print("\n".join(markdown_table(header, rows, "lrr")))
    command = ["python", "benchmarks/gated_step_speed.py", *map(shlex.quote, sys.argv[1:])]
    print("\n`" + " ".join(command) + "`")


if __name__ == "__main__":
    main()
