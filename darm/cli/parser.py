"""The argument parser of every command, with its help."""

from __future__ import annotations

import argparse
from dataclasses import fields

import torch

from darm import __version__
from darm.cli.args import (
    Parser,
    add_device_arg,
    add_family_data_args,
    add_force_arg,
    add_reread_format_arg,
    add_sampling_args,
    integer,
    parse_data_seed,
    parse_duration,
    parse_seed,
)
from darm.cli.bench import cmd_bench
from darm.cli.compare import cmd_compare
from darm.cli.complete import cmd_complete
from darm.cli.evaluate import cmd_eval
from darm.cli.figures import cmd_deps, cmd_plot, parse_pixel
from darm.cli.listings import cmd_data, cmd_models, cmd_runs
from darm.cli.sample import cmd_sample
from darm.cli.train import cmd_train
from darm.data import FORMATS, SPLITS
from darm.train_config import DTYPES, TrainConfig

EPILOG = """examples:
  darm train                                  # gpt on the bundled 8x8 digits, 2000 steps
  darm train --budget 3m                      # the same, its schedule planned to fit 3 minutes
  darm train --data names --model gru --steps 3000
  darm train --data shakespeare --model gpt --set n_layer=4 --set n_embd=128
  darm train --data digits --model wavenet --steps 400 --set dropout=0.3
  darm eval runs/digits-wavenet --split test
  darm sample runs/names-gru -n 20 --temperature 0.8
  darm bench --naive                          # how fast each family trains and samples here
  darm models -v                              # families and their config fields
  darm runs                                   # every run in runs/: its NLL, the commands
"""


TRAIN_HELP = {
    "steps": "optimiser steps",
    "batch_size": "examples per step",
    "lr": "peak learning rate of AdamW (0 trains nothing: the run only evaluates)",
    "min_lr": "learning rate at the end of the cosine decay (default --lr / 10)",
    "warmup": "steps of linear warmup (default: 100, or half of each cycle if that is less; "
    "given, shorter than a cycle)",
    "cycles": "cosine cycles over --steps, each restarting warm (SGDR); --resume --steps 2N "
    "--cycles 2 extends a finished N-step run by a second cycle",
    "cycle_decay": "peak learning rate of each later cycle, as a fraction of the one before",
    "weight_decay": "AdamW weight decay (matrices only)",
    "beta1": "AdamW beta1",
    "beta2": "AdamW beta2",
    "grad_clip": "max global gradient norm (0: off)",
    "eval_every": "steps between validation NLL + checkpoints",
    "log_every": "steps between log.csv rows of the (smoothed) training loss",
    "eval_batch_size": "batch size of evaluation",
    "valid_examples": "score only the first N validation examples at each evaluation, for "
    "long splits (MNIST: 10,000 images); 0: all. The final test pass scores the whole split",
    "seed": "seed of initialisation, batch order and dropout",
    "grad_accum": "micro-batches per step (same effective batch, less memory)",
    "dtype": "fp32 | bf16 (bf16 autocast of the forward; weights and loss stay fp32; on an "
    "AVX-512 BF16 CPU a training step of gpt ran 1.37x, gated_pixelcnn 1.88x faster, on an "
    "AVX2-only CPU 7x slower)",
    "compile": "torch.compile the model for training",
    "ema": "Polyak averaging: decay of an exponential moving average of the weights, which "
    "validation and the checkpoints use (e.g. 0.999; 0: off)",
}


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="darm",
        description="Deep autoregressive models: p(x) = prod_d p(x_d | x_<d), one shared "
        "network for every conditional. Train, evaluate and sample them on discrete data.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="a module or .py file to import first, for a family of your own it registers "
        "(darm --import my_family.py train --model trigram); repeatable",
    )
    p.add_argument(
        "--version",
        action="version",
        version=f"darm {__version__} (torch {torch.__version__})",
        help="print darm's and torch's versions and exit",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    p.commands = sub.choices  # name -> sub-parser, so main can send a typo to its --help

    t = sub.add_parser(
        "train",
        help="train a model, then report test NLL and write samples",
        description="Train by maximum likelihood; checkpoints, log.csv, loss.png, "
        "results.json and samples go to --out.",
    )
    t.add_argument(
        "--data",
        help="a built-in dataset (see `darm data`: digits, names, shakespeare, speech, "
        "binarized_mnist, mnist) or a PATH: .txt, .npy/.npz, a folder of images, .wav "
        "(default: digits; with --init the checkpoint's data)",
    )
    t.add_argument(
        "--format",
        choices=FORMATS,
        help="how to read a PATH: lines (one item per line), corpus (one text cut in "
        "blocks), array (integers), images (uint8 pictures), audio (a WAV); default by the "
        "PATH: a folder is images, .npy/.npz array, .wav audio, anything else lines",
    )
    t.add_argument("--block", type=integer, help="corpus / audio block length D (default 64)")
    t.add_argument(
        "--levels",
        type=integer,
        help="symbols L: of an array file, or grey levels images are quantised to "
        "(mnist, --format images; default 256)",
    )
    t.add_argument("--data-seed", type=parse_data_seed, help="seed of the data split (default 42)")
    t.add_argument("--model", help="registered model (see `darm models`; default: gpt)")
    t.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="model config field, repeatable (e.g. --set n_layer=2)",
    )
    t.add_argument("--conditional", action="store_true", help="model p(x | label)")
    t.add_argument("--out", help="run folder (default runs/DATA-MODEL; with --init, -init added)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument(
        "--init",
        metavar="CHECKPOINT",
        help="start a new run from this checkpoint's weights (fine-tuning): fresh optimiser "
        "and schedule; --set may change dropout",
    )
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        default = getattr(defaults, f.name)
        help = TRAIN_HELP.get(f.name, f.name)
        help += "" if "(default" in help else f" (default {default})"
        flag = f"--{f.name.replace('_', '-')}"
        if isinstance(default, bool):  # type=bool would read "--compile False" as True
            t.add_argument(flag, action=argparse.BooleanOptionalAction, help=help)
        elif f.name == "dtype":
            t.add_argument(flag, choices=DTYPES, help=help)
        elif f.name == "seed":
            t.add_argument(flag, type=parse_seed, help=help)
        else:
            t.add_argument(flag, type=integer if type(default) is int else type(default), help=help)
    t.add_argument(
        "--budget",
        type=parse_duration,
        metavar="TIME",
        help="train for this long (90s, 5m, 1h): without --steps, a few timed steps plan the "
        "step count so the schedule ends in time, planned again from the real speed as it "
        "trains; training stops at the budget in any case, and --resume continues",
    )
    t.add_argument(
        "--samples",
        type=integer,
        help="samples to write at the end (default 64, or on --resume the run's own; 0: none; "
        "audio: at most 8 clips of a second, each a long draw)",
    )
    add_device_arg(t)
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="exact NLL of a checkpoint over a whole split")
    e.add_argument("checkpoint", help="run folder or checkpoint .json")
    e.add_argument(
        "--split",
        choices=(*SPLITS, "all"),
        help="the split scored (default: test; all, the whole file, with --data)",
    )
    e.add_argument(
        "--data",
        help="score another file, read as the model's data was (its format, vocabulary and "
        "levels): whole by default; a picture, or each picture of a grid darm sample wrote, "
        "for an image model",
    )
    e.add_argument(
        "--label",
        help="score every example as this class (a conditional model): log p(x | label); "
        "data without labels needs it",
    )
    e.add_argument(
        "--per-example",
        metavar="FILE",
        help="also write a CSV of every example scored: split, index, its line (a text "
        "file's), file (an image folder's) or offset (a block's place in a corpus or clip), "
        "label, nats, dims, bits/dim, and the text of text data",
    )
    add_reread_format_arg(e)
    add_force_arg(e, "--per-example")
    e.add_argument("--batch-size", type=integer, default=512, help="examples a pass (default 512)")
    add_device_arg(e)
    e.add_argument(
        "--json",
        action="store_true",
        help="print the numbers as one line of JSON on stdout (the rest goes to stderr)",
    )
    e.set_defaults(func=cmd_eval)

    s = sub.add_parser("sample", help="draw samples: a PNG grid for images, lines for text")
    s.add_argument("checkpoint", help="run folder or checkpoint .json")
    s.add_argument("-n", type=integer, default=16, help="number of samples (default 16)")
    add_sampling_args(s, "samples")
    s.add_argument(
        "--prompt",
        help="what the samples start with: text, integers for an array model, a WAV for audio",
    )
    s.add_argument(
        "--length",
        type=integer,
        help="length of each sample, --prompt included (default: the model's D; for audio, "
        "one second past the prompt where the model goes on past D: markov, rnn, wavenet)",
    )
    s.add_argument(
        "--quiet",
        action="store_true",
        help="print nothing but warnings and errors: no text samples, no progress bar, no "
        "'wrote' line (the file is written all the same)",
    )
    s.set_defaults(func=cmd_sample)

    k = sub.add_parser(
        "complete",
        help="keep the top rows of images (or a prefix) and sample the rest",
        description="Completion from p(x_rest | x_known). Images: the first --count test "
        "images (or --input PNG files), the top --rows rows kept, a PNG grid with the "
        "original first in each row. Sequences: --input prefixes (text, integers for "
        "arrays, WAV clips for audio), or the first --dims of test examples.",
    )
    k.add_argument("checkpoint", help="run folder or checkpoint .json")
    k.add_argument(
        "--input",
        nargs="+",
        help="pictures (image models; a grid written by darm sample gives each of its "
        "pictures), WAV clips (audio) or prefixes (arrays: an .npy gives each of its rows)",
    )
    k.add_argument("--rows", type=integer, help="image rows kept (default: half)")
    k.add_argument(
        "--dims",
        type=integer,
        help="sequence dimensions kept (default: half of D; of each item for one-per-line text)",
    )
    k.add_argument("--count", type=integer, help="test examples without --input (default 8)")
    k.add_argument("-n", type=integer, default=4, help="completions of each input (default 4)")
    k.add_argument(
        "--length",
        type=integer,
        help="length of each completion, the kept part included (default: the model's D; "
        "for audio, one second past the kept part where the model goes on past D)",
    )
    add_sampling_args(k, "completions")
    k.set_defaults(func=cmd_complete)

    m = sub.add_parser("models", help="list the registered models")
    m.add_argument("-v", "--verbose", action="store_true", help="show config fields")
    m.set_defaults(func=cmd_models)

    d = sub.add_parser("data", help="list the built-in datasets")
    d.set_defaults(func=cmd_data)

    r = sub.add_parser(
        "runs",
        help="table of the runs in a folder: model, size, data, steps, NLL, the commands",
        description="Every run under the folders (a folder holding a last.json; compare's "
        "families too): its model, parameters, data, steps trained, best validation nats/dim, "
        "test NLL (when results.json scores its current checkpoint), training time, and the "
        "darm commands that made it (the start, then each --resume).",
    )
    r.add_argument("folders", nargs="*", metavar="FOLDER", help="where to look (default runs)")
    style = r.add_mutually_exclusive_group()
    style.add_argument("--markdown", action="store_true", help="a Markdown table, commands in it")
    style.add_argument("--json", action="store_true", help="a JSON array, one object a run")
    r.add_argument(
        "--sort",
        choices=("run", "test"),
        default="run",
        help="by run folder (default), or by test NLL, lowest first, within each dataset",
    )
    r.set_defaults(func=cmd_runs)

    g = sub.add_parser(
        "deps",
        help="draw a checkpoint's dependency map |d log p(x_d | x_<d) / d x_j|",
        description="The D x D map of how strongly each conditional depends on each earlier "
        "position (gradients through the input embeddings, averaged over -n examples of a "
        "split); for images also the map of one pixel's influences.",
    )
    g.add_argument("checkpoint", help="run folder or checkpoint .json")
    g.add_argument("--pixel", type=parse_pixel, metavar="ROW,COL", help="images: the pixel")
    g.add_argument("-n", type=integer, help="examples to average over (default 16 to 1024, by D)")
    g.add_argument(
        "--split",
        choices=SPLITS,
        help="the split of the examples (default: test; with --data, the whole file)",
    )
    g.add_argument(
        "--data",
        help="examples from another file or folder instead, read as the run's data was (a run "
        "trained on arrays in memory needs a saved copy here)",
    )
    g.add_argument(
        "--label",
        help="a conditional model: map every example as this class (a name or a number), for "
        "data without labels of the model's classes",
    )
    add_reread_format_arg(g)
    g.add_argument("--out", help="output PNG (default RUN/deps.png)")
    add_force_arg(g, "--out")
    add_device_arg(g)
    g.set_defaults(func=cmd_deps)

    pl = sub.add_parser(
        "plot",
        help="loss curves of one or more runs in one picture",
        description="Validation (solid) and smoothed training (dashed) NLL of each run's "
        "log.csv, against steps or training time; e.g. `darm plot runs/a runs/b --x time`.",
    )
    pl.add_argument("runs", nargs="+", metavar="RUN", help="run folders (or their log.csv)")
    pl.add_argument(
        "--x", choices=("step", "time"), default="step", help="horizontal axis (default step)"
    )
    pl.add_argument(
        "--out",
        help="output PNG or folder (default RUN/loss.png for one run; for several, loss.png in "
        "the folder that holds them, or here when they share none)",
    )
    add_force_arg(pl, "--out")
    pl.set_defaults(func=cmd_plot)

    c = sub.add_parser(
        "compare",
        help="train every family on the same data and budget; one report",
        description="Train each family (default markov, rnn, wavenet, gpt, and pixelcnn on "
        "images) with a default configuration of similar size under the same budget, "
        "evaluate each exactly on the test split, sample, draw dependency maps, and write "
        "OUT/report.md, report.html and results.json (rewritten after every family, so "
        "Ctrl-C keeps the finished ones; --resume continues).",
    )
    add_family_data_args(c)
    c.add_argument(
        "--budget",
        type=parse_duration,
        metavar="TIME",
        help="training time per family (90s, 5m; default 5m unless --steps)",
    )
    c.add_argument("--steps", type=integer, help="optimiser steps per family instead of a time")
    c.add_argument("--batch-size", type=integer, help="examples per step (default 64)")
    c.add_argument(
        "--valid-examples",
        type=integer,
        metavar="N",
        help="validation passes during training score the first N examples (default: all; "
        "the test NLL is always over the whole split)",
    )
    c.add_argument(
        "--samples",
        type=integer,
        default=64,
        help="samples per family, timed (default 64; 0: none, as for train)",
    )
    c.add_argument(
        "--deps-examples",
        type=integer,
        help="examples per dependency map (default 16 to 1024, by D)",
    )
    c.add_argument(
        "--seed",
        type=parse_seed,
        default=1337,
        help="seed of weights, batches, samples (default 1337)",
    )
    c.add_argument("--out", help="report folder (default runs/compare-DATA)")
    c.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted comparison in --out: finished families are kept, the "
        "interrupted one trains on from its last checkpoint, the rest run; its options are "
        "read from its report (repeat them or leave them out)",
    )
    c.add_argument(
        "--retry-failed",
        action="store_true",
        help="with --resume: run the failed families again too (from their last checkpoint "
        "where they kept one), as after running out of memory or disk",
    )
    add_device_arg(c)
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    c.set_defaults(func=cmd_compare)

    b = sub.add_parser(
        "bench",
        help="how fast each family trains and samples on this machine",
        description="Time each family (compare's configurations for the data, untrained) for "
        "a few seconds: training steps on real batches, then whole samples through its cache "
        "(and, with --naive, without it). Speed only: `darm compare` trains each family and "
        "scores it.",
    )
    add_family_data_args(b)
    b.add_argument(
        "--batch-size",
        type=integer,
        help="examples per step (default 32, or every training example where fewer)",
    )
    b.add_argument("--dtype", choices=DTYPES, default="fp32", help="as for train (default fp32)")
    b.add_argument(
        "--seconds", type=float, default=2.0, help="training timed per family (default 2)"
    )
    b.add_argument("-n", type=integer, default=16, help="samples drawn, timed (default 16)")
    b.add_argument(
        "--naive",
        action="store_true",
        help="also sample without the cache, for its speed-up (O(D^2) a sample: lower -n "
        "for long sequences or big images)",
    )
    b.add_argument("--json", action="store_true", help="the numbers as JSON on stdout")
    add_device_arg(b)
    b.set_defaults(func=cmd_bench)
    for command in sub.choices.values():  # `darm train --import f.py` as well as `darm --import`
        command.add_argument(
            "--import",
            dest="imports_here",
            action="append",
            default=[],
            metavar="MODULE",
            help="a module or .py file to import first, for a family of your own; repeatable",
        )
    return p
