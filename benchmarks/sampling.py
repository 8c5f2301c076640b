"""Sampling speed: cached generation against naive recomputation, per family, and darm's gpt
against Hugging Face transformers' GPT-2 `generate` of the same shape.

    .venv/bin/python benchmarks/sampling.py --threads 1   # both tables, ~3 minutes on 2 cores

Table 1: samples per second of `sample(model, B, ...)` with the family's cache and with
`use_cache=False` (each step recomputes the prefix so far: O(t) per step for sequences,
the whole image for pixelcnn), same model, batch and length, whole samples of the full
length both ways; the ratio is cached / naive from the same run. Models are untrained:
speed does not depend on the weights.

Table 2: tokens per second generating N new tokens after one start token, darm gpt
(`sample`) against `GPT2LMHeadModel.generate(do_sample=True, use_cache=True)` with the same
width, depth, heads, vocabulary and context, both with biases (as GPT-2). transformers is an
optional extra (`pip install -e .[bench]`); without it the table is skipped.

Each timing is the best of --repeats runs after a warm-up, the two sides alternated, so a
burst of load from another process hits both alike; on a shared machine compare ratios, and
use --threads 1: with more threads than free cores, multi-threaded kernels stall waiting for
a core held by another job, which swamps what is measured.
"""

from __future__ import annotations

import argparse
import platform
import time
from functools import partial

import torch

from darm.models import create_model, list_models
from darm.sampling import sample

VOCAB = 256  # bytes / mu-law levels
GPT = dict(n_layer=4, n_head=4, n_embd=128, seq_len=1024)  # context 1024


def dilations(rf: int) -> tuple[int, ...]:
    """kernel 2, dilations 1, 2, ..., rf/2: receptive field 1 + sum = rf (a power of two)."""
    return tuple(2**i for i in range(rf.bit_length() - 1))


def settings(batch: int) -> list[dict]:
    """(family, setting, model name, config, length, target ratio) of every row."""
    rows = [
        ("gpt", "256 tokens, context 1024", "gpt", GPT, 256, None),
        ("gpt", "1024 tokens, context 1024", "gpt", GPT, 1024, 10.0),
        ("wavenet", "receptive field 256", "wavenet", dict(seq_len=256), 256, None),
        ("wavenet", "receptive field 1024", "wavenet", dict(seq_len=1024), 1024, 20.0),
        ("rnn", "gru, 256 tokens", "gru", dict(seq_len=256), 256, None),
        ("markov", "k=3 MLP, 256 tokens", "markov", dict(seq_len=256), 256, None),
    ]
    out = []
    for family, setting, name, config, D, target in rows:
        config = dict(config)
        if family == "wavenet":
            config.update(kernel_size=2, dilation_cycle=dilations(D), n_cycles=1)
        out.append(dict(family=family, setting=setting, name=name, vocab=VOCAB, config=config))
        out[-1].update(D=D, target=target, batch=batch)
    for name in ("pixelcnn", "gated_pixelcnn"):  # the 2-D family, where registered
        if name in list_models():
            config = dict(image_shape=(28, 28, 1), seq_len=784)
            out.append(dict(family=name, setting="28x28 binary image", name=name, vocab=2))
            out[-1].update(config=config, D=784, target=5.0, batch=batch)
    return out


def seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def timed_pair(a, b, repeats: int) -> tuple[float, float]:
    """Best-of-repeats seconds of two callables, alternated run by run."""
    runs = [(seconds(a), seconds(b)) for _ in range(repeats)]
    return min(r[0] for r in runs), min(r[1] for r in runs)


def cached_vs_naive(row: dict, repeats: int) -> dict:
    torch.manual_seed(0)
    model = create_model(row["name"], vocab_size=row["vocab"], **row["config"]).eval()
    B, D = row["batch"], row["D"]

    def run(use_cache, length=D):
        g = torch.Generator().manual_seed(0)
        return sample(model, B, num_dims=length, generator=g, use_cache=use_cache)

    run(True, 16), run(False, 16)  # warm-up: first-call allocations, kernels
    cached_s, naive_s = timed_pair(lambda: run(True), lambda: run(False), repeats)
    return {**row, "cached": B / cached_s, "naive": B / naive_s, "ratio": naive_s / cached_s}


def hf_gpt2():
    """The same shape as GPT as a GPT2LMHeadModel, or None when transformers is missing."""
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        return None
    config = GPT2Config(
        vocab_size=VOCAB,
        n_positions=GPT["seq_len"],
        n_embd=GPT["n_embd"],
        n_layer=GPT["n_layer"],
        n_head=GPT["n_head"],
        bos_token_id=1,  # the prompt; not the padding symbol, so HF sees no padding
        eos_token_id=0,  # never ends early: min_new_tokens = max_new_tokens
        pad_token_id=0,
    )
    torch.manual_seed(0)
    return GPT2LMHeadModel(config).eval()


def darm_generate(model, B: int, n: int) -> torch.Tensor:
    return sample(model, B, num_dims=n, generator=torch.Generator().manual_seed(0))


def hf_generate(hf, B: int, n: int) -> torch.Tensor:
    """n new tokens after a one-token prompt: n forward calls of one token each, as darm."""
    start = torch.ones(B, 1, dtype=torch.long)  # (B, 1): the bos token
    out = hf.generate(
        start,
        attention_mask=torch.ones_like(start),
        do_sample=True,
        max_new_tokens=n,
        min_new_tokens=n,
        use_cache=True,
    )
    assert out.shape == (B, 1 + n), out.shape
    return out


def darm_vs_hf(hf, batches: list[int], n_new: int, repeats: int) -> list[dict]:
    torch.manual_seed(0)
    model = create_model("gpt", vocab_size=VOCAB, bias=True, **GPT).eval()
    rows = []
    for B in batches:
        darm_generate(model, B, 16), hf_generate(hf, B, 16)  # warm-up
        darm_s, hf_s = timed_pair(
            partial(darm_generate, model, B, n_new), partial(hf_generate, hf, B, n_new), repeats
        )
        rows.append(
            dict(
                batch=B,
                darm=B * n_new / darm_s,
                hf=B * n_new / hf_s,
                ratio=hf_s / darm_s,
                darm_params=model.num_params(),
                hf_params=hf.num_parameters(),
            )
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=1, help="samples per call in table 1")
    p.add_argument("--repeats", type=int, default=1, help="timed runs per side (best kept)")
    p.add_argument("--only", help="comma-separated families of table 1 (default: all)")
    p.add_argument("--hf-tokens", type=int, default=512, help="new tokens per sample, table 2")
    p.add_argument("--hf-batches", default="1,16", help="batch sizes of table 2")
    p.add_argument("--skip-hf", action="store_true", help="only table 1")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}\n"
    )

    only = set(args.only.split(",")) if args.only else None
    rows = [r for r in settings(args.batch) if only is None or r["family"] in only]
    print(
        "| family | setting | batch | cached samples/s | naive samples/s | ratio | target | met? |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for row in rows:
        r = cached_vs_naive(row, args.repeats)
        target = "-" if r["target"] is None else f">= {r['target']:g}x"
        met = "-" if r["target"] is None else ("yes" if r["ratio"] >= r["target"] else "no")
        print(
            f"| {r['family']} | {r['setting']} | {r['batch']} | {r['cached']:.3g} | "
            f"{r['naive']:.3g} | {r['ratio']:.1f}x | {target} | {met} |",
            flush=True,
        )

    if args.skip_hf:
        return
    hf = hf_gpt2()
    if hf is None:
        print("\ntransformers is not installed (pip install -e .[bench]): table 2 skipped")
        return
    import transformers

    print(
        f"\ndarm gpt vs transformers {transformers.__version__} GPT2LMHeadModel.generate: "
        f"{args.hf_tokens} new tokens per sample, width {GPT['n_embd']}, "
        f"{GPT['n_layer']} layers, {GPT['n_head']} heads, vocabulary {VOCAB}, "
        f"context {GPT['seq_len']}\n"
    )
    print("| batch | darm tokens/s | transformers tokens/s | darm / transformers | target | met? |")
    print("|---:|---:|---:|---:|---:|---|")
    batches = [int(b) for b in args.hf_batches.split(",")]
    for r in darm_vs_hf(hf, batches, args.hf_tokens, args.repeats):
        met = "yes" if r["ratio"] >= 1.0 else "no"
        print(
            f"| {r['batch']} | {r['darm']:,.0f} | {r['hf']:,.0f} | {r['ratio']:.2f}x | "
            f">= 1x | {met} |",
            flush=True,
        )
    print(f"\nparameters: darm {r['darm_params']:,}, transformers {r['hf_params']:,}")


if __name__ == "__main__":
    main()
