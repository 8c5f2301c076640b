"""GPT training speed on Tiny Shakespeare (characters): darm's GPT against a textbook baseline.

    .venv/bin/python benchmarks/gpt_speed.py                 # 2000 steps, both models
    .venv/bin/python benchmarks/gpt_speed.py --steps 200 --skip-baseline --threads 1

Configuration (both models): 4 layers, 4 heads, width 128, context 64, batch 12, dropout 0,
no biases, AdamW (betas 0.9 / 0.99, weight decay 0.01 on matrices only), lr 1e-3 with 100 warmup
steps then cosine decay to 1e-4 at the last step, global gradient-norm clip 1.0, seed 1337.

darm: `darm.create_model("gpt", ...)` trained by `darm.train.train` itself (the real loop:
`make_optimizer`, `learning_rate`, `nll_per_dim`, batches from the train split's
`.batch(step, batch_size, seed)`), writing its run folder to a temporary directory. It is told
to evaluate only once, after the last step, so its own log row for that step records the time
of the training steps alone: tokens/s and wall time come from that row (`tokens_per_s`,
`elapsed_s`), measured from just before step 0 to just after the last step's backward pass
(train() reads its clock there; that step's clip and optimizer update, under 1 ms, are left
out), with no evaluation or checkpoint inside.

baseline: written here, in the style of the well-known minimal single-file GPT: eager PyTorch,
token + learned position embeddings, pre-LayerNorm blocks without biases, attention through
F.scaled_dot_product_attention(is_causal=True), GELU MLP of 4x width, lm head tied to the token
embedding, loss F.cross_entropy over (B*T, V), torch.optim.AdamW with PyTorch's default choice of
implementation (no foreach / fused argument), random crops of 65 characters of the training
text giving 64 inputs and the 64 next characters as targets, `loss.item()` every step. Its
wall time runs from just before the first step to just after the last; tokens/s is
steps * 12 * 64 / that time.

Held-out nats/char: the held-out text is darm's valid + test splits of "shakespeare" (the last
10% of the file; valid its first half, test its second half). darm's number is
`darm.metrics.evaluate` on each split, combined weighted by dims:
(valid.nats + test.nats) / (valid.dims + test.dims). Each split is cut into consecutive
64-character blocks (the last one padded and masked) and every character is scored once, the
character at offset j of a block conditioned on the j characters before it in the block (the
first from darm's start symbol alone). The baseline scores exactly the same characters in
exactly the same blocks; having no start symbol, its input for a block is the block shifted
right by one with the character preceding the block in the file (for the first block of a
split, the last character before that split). Its number is the mean, over every held-out
character, of -log p(char | the chars before it in its block, plus that one preceding
character). So at offset j the baseline sees j + 1 characters of context where darm sees j:
the baseline gets one more character of context everywhere, which helps it most at offset 0
(the table's footnote gives both models' numbers with offset 0 left out, where the extra
character matters much less).

Timings are only meaningful on an otherwise idle machine: the table's "other processes' CPU"
column gives the CPU seconds the rest of the machine used during each training loop (from
/proc/stat), and a warning is printed when that exceeds 5% of a core.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import darm  # noqa: E402
from darm.data import load_data  # noqa: E402
from darm.metrics import evaluate, nll_per_dim  # noqa: E402
from darm.train import TrainConfig, train  # noqa: E402

N_LAYER, N_HEAD, N_EMBD, BLOCK, BATCH = 4, 4, 128, 64, 12
LR, MIN_LR, WARMUP, BETA1, BETA2, WEIGHT_DECAY, CLIP, SEED = (
    1e-3,
    1e-4,
    100,
    0.9,
    0.99,
    0.01,
    1.0,
    1337,
)


def cpu_seconds():
    """(CPU seconds used by the whole machine, by this process), or None off Linux.

    Their difference over a timed loop is the CPU time other processes took meanwhile: on a
    2-core machine another busy process slows multi-threaded PyTorch far more than 2x."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # - idle, iowait
        own = os.times()
        return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system
    except (OSError, ValueError, AttributeError):
        return None


def others_cpu(before, after):
    """CPU seconds other processes used between two cpu_seconds() readings (None if unknown)."""
    if before is None or after is None:
        return None
    return max((after[0] - before[0]) - (after[1] - before[1]), 0.0)


# ---------------------------------------------------------------------------------------------
# baseline: a minimal GPT and its training loop
# ---------------------------------------------------------------------------------------------


class SelfAttention(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=False)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=False)

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        hs = C // self.n_head
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class FeedForward(nn.Module):
    def __init__(self, n_embd):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=False)
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=False)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class TransformerBlock(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=False)
        self.attn = SelfAttention(n_embd, n_head)
        self.ln_2 = nn.LayerNorm(n_embd, bias=False)
        self.mlp = FeedForward(n_embd)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class MiniGPT(nn.Module):
    def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd):
        super().__init__()
        self.block_size = block_size
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        self.pos_emb = nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList([TransformerBlock(n_embd, n_head) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd, bias=False)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # weight tying
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    def forward(self, idx, targets=None):
        B, T = idx.shape
        pos = torch.arange(T, device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(pos)
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss


def baseline_lr(it, steps):
    if it < WARMUP:
        return LR * (it + 1) / WARMUP
    ratio = min((it - WARMUP) / max(steps - WARMUP, 1), 1.0)
    return MIN_LR + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (LR - MIN_LR)


def baseline_trainer(train_data, vocab_size, steps):
    """(model, step): step(it) runs training step `it` of `steps` and returns its loss."""
    torch.manual_seed(SEED)
    model = MiniGPT(vocab_size, BLOCK, N_LAYER, N_HEAD, N_EMBD)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": WEIGHT_DECAY},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=LR, betas=(BETA1, BETA2))
    gen = torch.Generator().manual_seed(SEED)

    def get_batch():
        ix = torch.randint(len(train_data) - BLOCK, (BATCH,), generator=gen)
        x = torch.stack([train_data[i : i + BLOCK] for i in ix])
        y = torch.stack([train_data[i + 1 : i + 1 + BLOCK] for i in ix])
        return x, y

    def step(it):
        lr = baseline_lr(it, steps)
        for g in optimizer.param_groups:
            g["lr"] = lr
        x, y = get_batch()
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        return loss.item()

    model.train()
    return model, step


def train_baseline(train_data, vocab_size, steps, log_every=0):
    """Returns (model, training seconds, last loss)."""
    model, step = baseline_trainer(train_data, vocab_size, steps)
    t0 = time.perf_counter()
    for it in range(steps):
        lossf = step(it)
        if log_every and (it % log_every == 0 or it == steps - 1):
            print(f"  baseline step {it}: loss {lossf:.4f}", flush=True)
    return model, time.perf_counter() - t0, lossf


@torch.no_grad()
def baseline_heldout(model, full_stream, split_start, split_len, batch_size=512):
    """Summed nats, number of chars, and the sum over chars at block offsets >= 1, their count.

    Targets: the split cut into consecutive BLOCK-char blocks (last one padded and masked), as
    darm's CorpusSplit does; inputs: the same blocks shifted right by one, the first input being
    the character just before the block in the file."""
    targets = full_stream[split_start : split_start + split_len]
    inputs = full_stream[split_start - 1 : split_start + split_len - 1]
    n_blocks = math.ceil(split_len / BLOCK)
    pad = n_blocks * BLOCK - split_len
    mask = torch.ones(n_blocks * BLOCK, dtype=torch.bool)
    if pad:
        mask[split_len:] = False
        targets = torch.cat([targets, targets.new_zeros(pad)])
        inputs = torch.cat([inputs, inputs.new_zeros(pad)])
    targets, inputs, mask = (t.view(n_blocks, BLOCK) for t in (targets, inputs, mask))
    model.eval()
    total, total_rest, n_rest = 0.0, 0.0, 0
    for i in range(0, n_blocks, batch_size):
        logits, _ = model(inputs[i : i + batch_size])
        nll = (
            F.cross_entropy(
                logits.reshape(-1, logits.size(-1)),
                targets[i : i + batch_size].reshape(-1),
                reduction="none",
            ).view(-1, BLOCK)
            * mask[i : i + batch_size]
        )
        total += nll.double().sum().item()
        total_rest += nll[:, 1:].double().sum().item()
        n_rest += int(mask[i : i + batch_size, 1:].sum())
    model.train()
    return total, int(mask.sum()), total_rest, n_rest


@torch.no_grad()
def darm_offsets_ge1(model, split, batch_size=512):
    """darm's summed nats over chars at block offsets >= 1 and their count (footnote only)."""
    model.eval()
    total, n = 0.0, 0
    for x, _, mask in split.iter_batches(batch_size):
        nll = nll_per_dim(model(x), x, mask)
        total += nll[:, 1:].double().sum().item()
        n = n + (x[:, 1:].numel() if mask is None else int(mask[:, 1:].sum()))
    model.train()
    return total, n


# ---------------------------------------------------------------------------------------------


def darm_gpt(vocab_size):
    torch.manual_seed(SEED)
    return darm.create_model(
        "gpt", vocab_size=vocab_size, seq_len=BLOCK, n_layer=N_LAYER, n_head=N_HEAD, n_embd=N_EMBD
    )


def darm_config(dtype, steps):
    """The baseline's hyper-parameters as darm's TrainConfig, evaluating once at the end."""
    return TrainConfig(
        steps=steps,
        batch_size=BATCH,
        lr=LR,
        min_lr=MIN_LR,
        warmup=WARMUP,
        weight_decay=WEIGHT_DECAY,
        beta1=BETA1,
        beta2=BETA2,
        grad_clip=CLIP,
        eval_every=steps + 1,  # evaluate once, after the last step
        eval_batch_size=512,
        seed=SEED,
        dtype=dtype,
    )


def train_logged(model, data, cfg, max_seconds=None):
    """darm.train.train into a temporary run folder; (its final state, its last log.csv row:
    that row's tokens_per_s and elapsed_s time the training steps alone)."""
    with tempfile.TemporaryDirectory(prefix="darm-gpt-speed-") as run_dir:
        state = train(model, "gpt", data, cfg, Path(run_dir), progress=False,
                      max_seconds=max_seconds)  # fmt: skip
        with open(Path(run_dir) / "log.csv") as f:
            return state, list(csv.DictReader(f))[-1]


def train_darm(data, dtype, steps, max_seconds=None, label=None):
    """darm's gpt through darm.train.train; returns its table row."""
    va, te = data["valid"], data["test"]
    model = darm_gpt(data.vocab_size)
    cfg = darm_config(dtype, steps)
    label = label or f"darm gpt, {dtype} (darm.train.train)"
    print(f"training {label} ...", flush=True)
    t_all, c0 = time.perf_counter(), cpu_seconds()
    state, last = train_logged(model, data, cfg, max_seconds)
    t_all, others = time.perf_counter() - t_all, others_cpu(c0, cpu_seconds())
    done = int(last["step"])
    assert max_seconds or done == steps, last
    secs, tps = float(last["elapsed_s"]), float(last["tokens_per_s"])
    # the held-out score in float32 whatever the training dtype
    ev_va, ev_te = evaluate(model, va, 512), evaluate(model, te, 512)
    nll = (ev_va.nats + ev_te.nats) / (ev_va.dims + ev_te.dims)
    r_va, r_te = darm_offsets_ge1(model, va), darm_offsets_ge1(model, te)
    rest = (r_va[0] + r_te[0]) / (r_va[1] + r_te[1])
    print(
        f"  {done} steps: {tps:,.0f} tokens/s, training {secs:.1f} s (train() returned after "
        f"{t_all:.1f} s incl. its final eval + checkpoints; its tokens_per_s with those: "
        f"{state['tokens_per_s']:,.0f}); last running train loss "
        f"{float(last['train_nats_per_dim']):.4f}; "
        f"held-out {nll:.4f} nats/char over {ev_va.dims + ev_te.dims} chars",
        flush=True,
    )
    return (f"{label}, {done} steps", model.num_params(), tps, secs, nll,
            ev_va.dims + ev_te.dims, rest, others)  # fmt: skip


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=2000, help="training steps (default 2000)")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads before training (default: PyTorch's default)",
    )
    ap.add_argument("--skip-baseline", action="store_true", help="train darm's GPT only")
    ap.add_argument(
        "--dtypes",
        default="fp32,bf16",
        help="darm runs, one per training dtype (default fp32,bf16: bf16 autocast of the "
        "forward, weights, optimizer and loss in float32)",
    )
    ap.add_argument(
        "--equal-time",
        default="bf16",
        help="after the baseline, train darm in this dtype for the baseline's wall time, "
        "its schedule planned for the steps its measured tokens/s fits in it ('' to skip)",
    )
    args = ap.parse_args(argv)
    if args.steps <= WARMUP:  # both schedules warm up for WARMUP steps first
        ap.error(f"--steps must be above the {WARMUP}-step warmup, got {args.steps}")
    if args.equal_time and args.equal_time not in args.dtypes.split(","):
        ap.error(f"--equal-time {args.equal_time} needs that dtype in --dtypes ({args.dtypes})")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    command = " ".join(
        [".venv/bin/python", "benchmarks/gpt_speed.py"] + [shlex.quote(a) for a in sys.argv[1:]]
    )

    data = load_data("shakespeare", block=BLOCK)
    V = data.vocab_size
    tr, va, te = data["train"], data["valid"], data["test"]
    full = torch.cat([tr.stream, va.stream, te.stream])
    print(f"load average before: {os.getloadavg()[0]:.2f} (other busy processes skew timings)")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, python {platform.python_version()}"
    )
    print(f"{data.summary()}; held-out chars: valid {len(va.stream)}, test {len(te.stream)}")
    print(
        f"{args.steps} steps x {BATCH} x {BLOCK} = {args.steps * BATCH * BLOCK:,} tokens each",
        flush=True,
    )

    rows = []

    # -- darm -----------------------------------------------------------------------------
    darm_rows = {dtype: train_darm(data, dtype, args.steps) for dtype in args.dtypes.split(",")}
    rows.extend(darm_rows.values())
    # -- baseline -------------------------------------------------------------------------
    if not args.skip_baseline:
        print("training baseline ...", flush=True)
        c0 = cpu_seconds()
        base, base_s, base_loss = train_baseline(tr.stream, V, args.steps)
        base_others = others_cpu(c0, cpu_seconds())
        base_tps = args.steps * BATCH * BLOCK / base_s
        n_train = len(tr.stream)
        s_va = baseline_heldout(base, full, n_train, len(va.stream))
        s_te = baseline_heldout(base, full, n_train + len(va.stream), len(te.stream))
        base_nll = (s_va[0] + s_te[0]) / (s_va[1] + s_te[1])
        base_rest = (s_va[2] + s_te[2]) / (s_va[3] + s_te[3])
        n_params = sum(p.numel() for p in base.parameters())  # tied weight counted once
        print(
            f"  baseline: {base_tps:,.0f} tokens/s, training {base_s:.1f} s; last train loss "
            f"{base_loss:.4f}; held-out {base_nll:.4f} nats/char over {s_va[1] + s_te[1]} chars",
            flush=True,
        )
        rows.append(
            (
                "baseline (minimal GPT, eager)",
                n_params,
                base_tps,
                base_s,
                base_nll,
                s_va[1] + s_te[1],
                base_rest,
                base_others,
            )
        )

        # -- darm at the baseline's wall time -------------------------------------------------
        if args.equal_time:
            # as many steps as darm's measured speed in this dtype fits in the baseline's
            # time (the schedule must end inside it), and stopped at that time regardless
            tps = darm_rows[args.equal_time][2]
            steps = int(base_s * tps / (BATCH * BLOCK) * 0.97)
            label = f"darm gpt, {args.equal_time}, baseline's wall time"
            rows.append(train_darm(data, args.equal_time, steps, base_s, label))

    # -- table ----------------------------------------------------------------------------
    base = [r for r in rows if r[0].startswith("baseline")]
    ref = base[0][2] if base else None
    print()
    print(
        f"Tiny Shakespeare (chars), GPT 4 layers x 4 heads x 128, context {BLOCK}, "
        f"batch {BATCH}, {args.steps} steps, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print()
    print(
        "| implementation | params | tokens/s | ratio vs baseline | training wall time (s) "
        "| held-out nats/char | other processes' CPU (s) | command |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name, n, tps, secs, nll, _, _, others in rows:
        ratio = f"{tps / ref:.2f}" if ref else "n/a"
        other = "n/a" if others is None else f"{others:.1f}"
        print(
            f"| {name} | {n:,} | {tps:,.0f} | {ratio} | {secs:.1f} | {nll:.4f} | {other} "
            f"| `{command}` |"
        )
    print()
    busy = [r for r in rows if r[7] is not None and r[7] > 0.05 * r[3]]
    if busy:
        print(
            "WARNING: other processes used more than 5% of a core while "
            + ", ".join(r[0] for r in busy)
            + " trained; its tokens/s is not a clean measurement."
        )
    print(
        "other processes' CPU: CPU seconds the rest of the machine used during each training "
        "loop (darm's includes its final evaluation), from /proc/stat."
    )
    print(
        "Held-out = darm's valid + test splits (last 10% of the text), every character scored "
        "once in consecutive 64-char blocks; see the docstring for the exact definition."
    )
    print(
        "Without the first character of each block (where the baseline has 1 character of "
        "context and darm 0): " + "; ".join(f"{r[0]} {r[6]:.4f}" for r in rows) + " nats/char."
    )
    return rows


if __name__ == "__main__":
    main()
