"""names.txt: test nats per character of each family (deduplicated, seeded 80/10/10 split).

Targets (issue 2): bigram about 2.45 (sanity), markov k=3 <= 2.15, rnn / gru <= 2.10,
gpt <= 2.00, each within 5 minutes of training on 2 CPU cores.

    python benchmarks/names.py [--only gpt,gru] [--budget 300]
"""

from __future__ import annotations

from common import run_benchmark

from darm.data import load_data

CONFIGS = {
    # label: (model, model overrides, training overrides)
    "bigram": ("bigram", {}, dict(steps=1500, batch_size=256, lr=0.1, min_lr=0.01, warmup=10)),
    "markov k=3": (
        "markov",
        dict(k=3, n_embd=24, n_hidden=256),
        dict(steps=6000, batch_size=128, lr=3e-3, min_lr=1e-4, weight_decay=0.1),
    ),
    "rnn": (
        "rnn",
        dict(n_embd=64, n_hidden=256),
        dict(steps=6000, batch_size=128, lr=3e-3, min_lr=1e-4),
    ),
    "gru": (
        "gru",
        dict(n_embd=64, n_hidden=256, dropout=0.0),
        dict(steps=5000, batch_size=128, lr=3e-3, min_lr=1e-4),
    ),
    "gpt": (
        "gpt",
        dict(n_layer=4, n_head=4, n_embd=96, dropout=0.1),
        dict(steps=3600, batch_size=128, lr=2e-3, min_lr=1e-4, weight_decay=0.1),
    ),
}
TARGETS = {"bigram": "~2.45", "markov k=3": "<= 2.15", "rnn": "<= 2.10", "gru": "<= 2.10",
           "gpt": "<= 2.00"}  # fmt: skip


def main():
    def annotate(row):
        return {**row, "target": TARGETS[row["model"]]}

    run_benchmark(__doc__.splitlines()[0], load_data("names"), CONFIGS, 500, annotate, [
        ("model", "model", "{}"), ("params", "params", "{:,}"), ("steps", "steps", "{}"),
        ("train s", "train_s", "{:.0f}"), ("test nats/char", "test_nats_per_dim", "{:.4f}"),
        ("target", "target", "{}"), ("test nats/name", "test_nats_per_example", "{:.3f}"),
    ])  # fmt: skip


if __name__ == "__main__":
    main()
