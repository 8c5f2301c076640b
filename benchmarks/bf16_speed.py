"""bf16 autocast against float32 on this CPU: one training step (forward, backward, fused
AdamW) of two benchmark models, and attention alone, timed in interleaved rounds in one
process so both precisions see the same machine.

    .venv/bin/python benchmarks/bf16_speed.py [--threads 2] [--rounds 5] [--reps N]

Cases: darm's gpt in the gpt_speed.py shape (4 layers x 4 heads x 128, batch 12 x 64, 65
symbols); the gated PixelCNN of binarized_mnist.py (48 maps x 12 layers, batch 32 of 28x28
binary images); and causal attention alone (forward + backward, the gpt's (12, 4, 64, 32)
heads), once through scaled_dot_product_attention in each dtype and once through darm's
`attend`: SDPA without autocast, written out in bf16 under it (see darm/nn/attention.py).
These two rows are why darm writes it out.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from darm.metrics import nll_per_dim
from darm.models import create_model
from darm.nn.attention import attend


def model_step(name: str, x: torch.Tensor, **config):
    """A closure: one training step of `name` on the batch x under the given dtype."""
    torch.manual_seed(0)
    model = create_model(name, **config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step(bf16: bool) -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            logits = model(x)
        nll_per_dim(logits, x, None).mean().backward()
        opt.step()

    return step


def attention_step(darm: bool):
    """SDPA in each dtype, or darm's `attend`: SDPA in float32, written out under autocast."""
    q, k, v = (torch.randn(12, 4, 64, 32, requires_grad=True) for _ in range(3))

    def step(bf16: bool) -> None:
        if darm:
            with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                y = attend(*(t.bfloat16() if bf16 else t for t in (q, k, v)), is_causal=True)
        else:
            dtype = torch.bfloat16 if bf16 else torch.float32
            y = F.scaled_dot_product_attention(*(t.to(dtype) for t in (q, k, v)), is_causal=True)
        y.float().sum().backward()

    return step


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per case")
    p.add_argument(
        "--reps", type=int, help="steps per round of every case (default: the case's own)"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cases = {
        "gpt step (gpt_speed.py shape)": (
            model_step("gpt", torch.randint(0, 65, (12, 64)), vocab_size=65, seq_len=64),
            20,
        ),
        "gated_pixelcnn step (binarized_mnist.py)": (
            model_step(
                "gated_pixelcnn",
                torch.randint(0, 2, (32, 784)),
                vocab_size=2,
                seq_len=784,
                image_shape=(28, 28),
                n_embd=8,
                n_hidden=48,
                n_layer=12,
            ),
            2,
        ),  # fmt: skip
        "attention alone (SDPA), forward + backward": (attention_step(darm=False), 50),
        "attention alone (darm's attend), forward + backward": (attention_step(darm=True), 50),
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds")
    print("\n| case | fp32 ms | bf16 ms | bf16 speed-up |\n|---|---:|---:|---:|")
    for label, (step, reps) in cases.items():
        reps = args.reps or reps
        seconds = {False: 0.0, True: 0.0}
        for bf16 in seconds:  # warm-up: oneDNN builds its kernels on first use
            step(bf16)
        for _ in range(args.rounds):
            for bf16 in seconds:
                t = time.perf_counter()
                for _ in range(reps):
                    step(bf16)
                seconds[bf16] += time.perf_counter() - t
        fp32, bf16 = (1000 * seconds[b] / (args.rounds * reps) for b in (False, True))
        print(f"| {label} | {fp32:.1f} | {bf16:.1f} | {fp32 / bf16:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
