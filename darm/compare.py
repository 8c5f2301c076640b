"""`darm compare`: every family on the same data under the same budget, one report.

For each family: build it with a default configuration sized for the data (75k-200k
parameters on the bundled datasets), train it under the same wall-clock budget (or step
count) into OUT/<model>/, evaluate its best-validation checkpoint exactly on the whole test
split, time cached sampling, write samples and its dependency map. The report (report.md,
report.html, results.json) is rewritten after every family, so an interrupted run keeps
the families already finished, and `--resume` continues it: the finished families are
kept, the interrupted one trains on from its last checkpoint, the others run.
"""

from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from darm.budget import Plan, plan_run, synchronize, validation_passes
from darm.checkpoint import load_checkpoint, read_record
from darm.compare_report import write_report
from darm.config import build_config
from darm.data import Dataset
from darm.data.audio import mu_law_decode
from darm.data.dataset import digest
from darm.data.splits import examples_per_step
from darm.deps import checkpoint_maps, image_shape_of, plot_dependency_maps
from darm.errors import DarmError, first_line
from darm.files import atomic_write
from darm.interrupt import Stopped, sigterm_interrupts
from darm.lock import folder_lock
from darm.metrics import evaluate, units
from darm.models import config_fields, create_model, get_entry, list_models, reads_images
from darm.outputs import AUDIO_CLIPS, count, save_samples, write_results
from darm.plots import read_log
from darm.prompts import default_length
from darm.runs import in_folder
from darm.sampling import sample
from darm.train import train
from darm.train_config import TrainConfig

DEFAULT_MODELS = ("markov", "rnn", "wavenet", "gpt")
IMAGE_MODELS = ("pixelcnn",)  # added to the default list on image data, when registered


# -- per-family defaults ----------------------------------------------------------------------


def default_models(data: Dataset) -> list[str]:
    extra = [m for m in IMAGE_MODELS if data.image_shape and m in list_models()]
    return [*DEFAULT_MODELS, *extra]


def markov_memory(data: Dataset) -> int:
    """k: one image row back (the pixel above is the best single predictor), three
    characters of a name (the classic MLP language model), a little more for a corpus or
    audio; never more than D."""
    if data.image_shape:
        return math.prod(data.image_shape[1:])  # W pixels of C channels each
    k = {"lines": 3, "corpus": 8, "audio": 16}.get(data.kind, 8)
    return min(k, data.seq_len)  # a lag past D would see only the start symbol


def wavenet_dilations(D: int) -> tuple[int, ...]:
    """1, 2, 4, ... so that the receptive field 2^n covers all D - 1 earlier positions."""
    n = max(1, math.ceil(math.log2(max(D, 2))))
    return tuple(2**i for i in range(n))


def default_config(name: str, data: Dataset) -> dict[str, Any]:
    """Model config overrides for `name` on `data` (seq_len and vocab_size are added): its
    family's configuration for the data, less the fields the name was registered with, which
    create_model then sets as it does for train (a `register_model("tiny", GPT, GPTConfig,
    n_layer=2)` keeps its 2 layers; one registered with a seq_len still takes the data's)."""
    entry = get_entry(name)
    own = entry.defaults
    return {k: v for k, v in family_config(name, entry.family, data).items() if k not in own}


def family_config(name: str, family: str, data: Dataset) -> dict[str, Any]:
    """A built-in family's configuration for the data, of similar size to the others.
    Dropout 0.1 everywhere: digits has only 1000 training images."""
    dropout = 0.1
    if family == "markov":
        if name == "bigram":
            return {}
        k = markov_memory(data)
        return dict(k=k, n_embd=16, n_hidden=512 if k <= 8 else 256, dropout=dropout)
    if family == "rnn":
        hidden = {"rnn": 256, "gru": 160, "lstm": 144}.get(name, 160)
        return dict(n_embd=64, n_hidden=hidden, dropout=dropout)
    if family == "wavenet":
        return dict(
            n_embd=48,
            n_skip=96,
            kernel_size=2,
            dilation_cycle=wavenet_dilations(data.seq_len),
            dropout=dropout,
        )
    if family == "gpt":
        return dict(n_layer=4, n_head=4, n_embd=64, dropout=dropout)
    if reads_images(name):
        extra = {"dropout": dropout} if "dropout" in config_fields(name) else {}
        base = dict(image_shape=tuple(data.image_shape), **extra)
        return {**base, **whole_image_reach(name, data, base)}
    return {}


def whole_image_reach(name: str, data: Dataset, base: dict) -> dict[str, Any]:
    """Kernel, depth and width for a PixelCNN on `data`'s images. The other families see
    every earlier symbol (wavenet_dilations), but the default 6 layers of 3x3 see 9 rows up:
    on 28x28 digits the last rows never see the top, a handicap worth 3 nats an image
    (README: binarized MNIST). Where the defaults fall short (not on 8x8 digits): 5x5
    kernels, the fewest layers that reach the top, and the most maps (in 8s) that keep the
    defaults' parameter count."""
    model = create_model(name, data, **base)
    if getattr(model, "short_sight", lambda: None)() is None:
        return {}
    budget, cfg = model.num_params(), model.config

    def build(**fields):
        return create_model(name, data, **base, kernel_size=5, **fields)

    layers = range(cfg.n_layer, 4 * cfg.n_layer + 1)
    n_layer = next((n for n in layers if build(n_layer=n, n_hidden=8).short_sight() is None), None)
    if n_layer is None:  # taller than 4x the layers reach: leave it to --set
        return {}
    widths = range(cfg.n_hidden, 7, -8)
    fits = (n for n in widths if build(n_layer=n_layer, n_hidden=n).num_params() <= budget)
    return dict(kernel_size=5, n_layer=n_layer, n_hidden=next(fits, 8))


def build_family(name: str, data: Dataset, overrides: dict | None = None):
    """The family as compare trains it on `data`: its default configuration for the data
    (default_config), then `overrides` (the user's --set)."""
    return create_model(name, data, **{**default_config(name, data), **(overrides or {})})


def default_train(name: str) -> dict[str, Any]:
    """Training overrides shared by all families, with the usual lower peak rate for the
    Transformer."""
    lr = 2e-3 if get_entry(name).family == "gpt" else 3e-3
    return dict(batch_size=64, lr=lr, min_lr=1e-4, weight_decay=0.1)


# -- one family -------------------------------------------------------------------------------


@dataclass
class FamilyResult:
    model: str
    status: str  # done | interrupted | skipped | failed | not run
    note: str = ""
    params: int | None = None
    steps: int | None = None
    checkpoint_step: int | None = None
    nats_per_example: float | None = None
    nats_per_dim: float | None = None
    bits_per_dim: float | None = None
    train_tokens_per_s: float | None = None
    samples_per_s: float | None = None
    train_s: float | None = None
    wall_s: float | None = None
    config: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # relative to the report folder
    texts: list[str] = field(default_factory=list)  # text samples, for the report
    threads: list[int] = field(default_factory=list)  # CPU threads of each turn (--resume)


class FamilyInterrupted(Stopped):
    """Ctrl-C (or SIGTERM) inside one family: carries its row with what it had got (steps,
    test NLL)."""

    def __init__(self, result: FamilyResult, signum: int):
        super().__init__(result.model, signum)
        self.result = result


def stopped_note(signum: int) -> str:
    what = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
    return f"{what} before it finished; its checkpoints so far are kept"


@dataclass
class CompareOptions:
    models: list[str]
    out: Path
    budget: float | None = None  # seconds of training per family
    steps: int | None = None
    samples: int = 64
    seed: int = 1337
    deps_examples: int | None = None  # None: deps.default_examples(D)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> config
    batch_size: int | None = None
    valid_examples: int = 0  # validation passes score the first N examples; 0: all
    progress: bool = True
    command: str = ""
    data_digest: str = ""  # of the examples read, so --resume can tell the data changed
    cwd: str = ""  # the folder `command` ran in (its relative paths start there)
    invocation: str = ""  # this process's command line (in_folder): what a resumed run records
    retry_failed: bool = False  # --resume runs failed families again (from a checkpoint kept)


def run_family(
    name: str, data: Dataset, opts: CompareOptions, device, before: FamilyResult | None = None
) -> FamilyResult:
    """Train, evaluate, sample and map one family into opts.out / name. before: the row of an
    interrupted comparison (--resume); training goes on from the family's last checkpoint."""
    t_start = time.perf_counter()
    run_dir = opts.out / name
    earlier = 0.0  # the wall time of the turns before this one
    if before is not None and (run_dir / "last.json").exists():
        try:
            result, trained = continued_family(before, data, opts, device)
        except Exception as e:  # its checkpoint unreadable, say: the row stays as it was, for
            # a later --resume once that is put right (or the folder moved away: from scratch)
            way = f"; move {run_dir} away to train it again from the start"
            unreadable = isinstance(e, UnreadableCheckpoint)
            return replace(before, note=f"not continued: {first_line(e)}{way * unreadable}")
        earlier = before.wall_s or 0.0
    else:
        result, trained = new_family(name, data, opts, device)
    if result.threads[-1:] != [torch.get_num_threads()]:  # its speed depends on them
        result.threads.append(torch.get_num_threads())
    state = None
    try:
        state = trained()
        if state is not None:
            took_s, took_rate = result.train_s or 0.0, result.train_tokens_per_s
            result.train = state["train"]  # the steps and warmup as planned again
            result.steps, result.train_s = state["step"], took_s + state["elapsed_s"]
            result.train_tokens_per_s = state["tokens_per_s"]
            if took_s and took_rate:  # the rate of both turns, weighted by their time
                both = took_rate * took_s + state["tokens_per_s"] * state["elapsed_s"]
                result.train_tokens_per_s = both / result.train_s
        finish_family(result, data, opts, device, run_dir)
    # the row keeps what the family got: its parameters, its steps, its test NLL
    except Exception as e:  # a NaN loss, say: a failed row, and on to the next family
        result.status, result.note = "failed", first_line(e)
        if state is None:
            saved_progress(result, run_dir)
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        if state is None:
            saved_progress(result, run_dir)
        result.note = stopped_note(signum)
        raise FamilyInterrupted(result, signum) from None
    finally:
        result.wall_s = earlier + time.perf_counter() - t_start
    return result


def new_family(name: str, data: Dataset, opts: CompareOptions, device):
    """A family's first turn: its model built and its run planned -> (row, train), where
    train() trains it and returns train's final state."""
    torch.manual_seed(opts.seed)  # the same initial weights for the same seed
    model = build_family(name, data, opts.overrides.get(name)).to(device)
    train_overrides = {**default_train(name), "seed": opts.seed}
    # on data of fewer examples, each step takes them all: the report says so
    batch_size = opts.batch_size or train_overrides["batch_size"]
    train_overrides["batch_size"] = examples_per_step(data["train"], batch_size)
    if opts.valid_examples:  # cheaper passes, so the plan fits more steps; test stays whole
        train_overrides["valid_examples"] = opts.valid_examples
    cfg = build_config(TrainConfig, train_overrides, "training option")
    plan = None  # under a budget: the run's length, planned again as it trains
    if opts.steps:
        steps, passes = opts.steps, validation_passes(data)
    else:
        plan = plan_run(model, data, cfg, opts.budget)
        steps, passes = plan.steps, plan.passes
    train_overrides.update(
        steps=steps,
        warmup=min(100, steps // 10),  # none for a run of under 10 steps (warmup < steps)
        eval_every=math.ceil(steps / passes),  # the last pass: the last step
    )
    cfg = build_config(TrainConfig, train_overrides, "training option")
    result = FamilyResult(
        name, "interrupted", params=model.num_params(), config=model.config_dict(),
        train=asdict(cfg),
    )  # fmt: skip
    run_dir = opts.out / name
    planned = f" (planned for {opts.budget:g} s)" if plan is not None else ""
    # which family the step lines below are of
    params = f"{model.num_params():,} parameters"
    tqdm.write(f"{name}: {params}; training {count(steps, 'step')}{planned}")

    def trained():
        return train(
            model, name, data, cfg, run_dir, progress=opts.progress, max_seconds=opts.budget,
            plan=plan, command=in_folder(opts.cwd, opts.command) if opts.command else None,
        )  # fmt: skip

    return result, trained


class UnreadableCheckpoint(DarmError):
    """A family's last checkpoint that cannot be loaded to go on from."""


def continued_family(before: FamilyResult, data: Dataset, opts: CompareOptions, device):
    """An interrupted family's turn again, from its last checkpoint: the rest of its steps in
    what is left of its budget, planned again from its speed here as an uninterrupted run
    is (none left, or all steps trained: straight to the test pass) -> (row, train), where
    train() returns train's state or None."""
    run_dir = opts.out / before.model
    try:
        model, record, path = load_checkpoint(run_dir / "last.json", device)
    except DarmError as e:  # damaged, edited, cut short: not a state to train on from
        raise UnreadableCheckpoint(str(e)) from None
    cfg = build_config(TrainConfig, record["train"], "training option")
    step, spent = record["step"], record.get("elapsed_s", 0.0)
    left = None if opts.budget is None else opts.budget - spent
    result = FamilyResult(
        before.model, "interrupted", params=model.num_params(), config=model.config_dict(),
        steps=step, train=record["train"], train_s=spent,
        train_tokens_per_s=before.train_tokens_per_s or logged_rate(run_dir),
        threads=list(before.threads),
    )  # fmt: skip
    tqdm.write(f"{before.model}: resuming from step {step} of {cfg.steps}")

    def trained():
        if step >= cfg.steps or (left is not None and left <= 0):
            return None
        plan = None
        if left is not None and cfg.cycles == 1:  # timed again: another process, maybe machine
            timing = plan_run(model, data, cfg, left)
            passes = math.ceil((cfg.steps - step) / cfg.eval_every)
            plan = Plan(cfg.steps, passes, timing.step_s, timing.pass_s)
        return train(
            model, before.model, data, cfg, run_dir, resume_from=(path, record),
            progress=opts.progress, max_seconds=left, plan=plan, command=opts.invocation or None,
        )  # fmt: skip

    return result, trained


def logged_rate(run_dir: Path) -> float | None:
    """The training tokens/s of a family's log.csv, as of its last row (None without one)."""
    log = run_dir / "log.csv"
    rates = read_log(log).get("tokens_per_s", []) if log.exists() else []
    return float(rates[-1]) if len(rates) else None


def saved_progress(result: FamilyResult, run_dir: Path) -> None:
    """Into the row of a family stopped while training: what its last checkpoint holds (its
    step, training time and plan as last planned), if it saved one."""
    last = run_dir / "last.json"
    if last.exists():
        record = read_record(last)[1]
        result.steps, result.train_s = record["step"], record.get("elapsed_s", result.train_s)
        result.train = record.get("train", result.train)


def finish_family(result, data, opts, device, run_dir) -> None:
    """After training: exact test NLL, timed samples (none for --samples 0), dependency
    map, into `result`."""
    name = result.model

    # exact test NLL of the best-validation checkpoint, as `darm eval` computes it
    best, record, _ = load_checkpoint(run_dir, device)
    nll = evaluate(best, data["test"])
    result.checkpoint_step = record["step"]
    result.nats_per_example, result.nats_per_dim = nll.nats_per_example, nll.nats_per_dim
    result.bits_per_dim = nll.bits_per_dim
    write_results(run_dir, record["step"], nll)
    if opts.samples:  # --samples 0: none drawn, none timed, as `darm train --samples 0`
        sample_family(result, best, record, data, opts, device, run_dir)

    J = checkpoint_maps(best, record, data["test"], opts.deps_examples)
    atomic_write(  # for the joint plot
        run_dir / "deps.safetensors", lambda tmp: save_file({"deps": J.contiguous()}, tmp)
    )
    deps = plot_dependency_maps({name: J}, run_dir / "deps.png", image_shape_of(record))
    result.files["deps"] = deps.relative_to(opts.out).as_posix()
    result.files["log"] = (run_dir / "log.csv").relative_to(opts.out).as_posix()
    result.status = "done"


def sample_family(result, best, record, data, opts, device, run_dir) -> None:
    """opts.samples drawn from the best checkpoint and written, their speed into `result`."""
    # cached sampling, timed alone (writing the files is not part of it), after a short
    # untimed draw that warms up allocations and kernels
    sample(best, opts.samples, num_dims=min(best.num_dims, 4), stop_token=data.eos)
    gen = torch.Generator(device=device).manual_seed(opts.seed)
    synchronize(device)
    t0 = time.perf_counter()
    x = sample(best, opts.samples, generator=gen, stop_token=data.eos)
    synchronize(device)
    result.samples_per_s = opts.samples / (time.perf_counter() - t0)
    if data.kind == "audio" and best.max_dims is None:  # clips of a second to listen to, as
        # `darm train` writes them, not windows of D samples (16 ms at 256): a few suffice
        length = default_length(best, record["data"], 0)
        x = sample(best, min(opts.samples, AUDIO_CLIPS), generator=gen, num_dims=length)
    samples = save_samples(x, record["data"], best.vocab_size, run_dir / "samples")
    result.files["samples"] = samples.relative_to(opts.out).as_posix()
    if data.kind == "audio":
        wave_png = plot_waveforms(x[:4], data.source["sample_rate"], run_dir / "waveforms.png")
        result.files["waveforms"] = wave_png.relative_to(opts.out).as_posix()
    elif data.vocab is not None:
        result.texts = sample_texts(x, data)


def sample_texts(x: torch.Tensor, data: Dataset) -> list[str]:
    """Text samples, each cut at the end symbol of a line dataset."""
    return [data.decode(row) for row in x]


def plot_waveforms(x: torch.Tensor, rate: int, path: Path) -> Path:
    """A few sampled clips (mu-law levels (N, T)) drawn as waveforms, one under another."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clips = mu_law_decode(x.cpu().numpy())  # (N, T) in [-1, 1]
    fig, axes = plt.subplots(len(clips), 1, figsize=(4, 0.8 * len(clips) + 0.4), sharex=True)
    axes = [axes] if len(clips) == 1 else axes
    t_ms = torch.arange(clips.shape[1]).numpy() / rate * 1000
    for ax, clip in zip(axes, clips):
        ax.plot(t_ms, clip, lw=0.6)
        ax.set_ylim(-1, 1)
        ax.set_yticks([])
    axes[-1].set_xlabel("ms")
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    plt.close(fig)
    return Path(path)


# -- the whole comparison ---------------------------------------------------------------------


def check_models(names: list[str], data: Dataset) -> tuple[list[str], list[FamilyResult]]:
    """Registered names to run, and skipped rows for image-only families on other data."""
    run, skipped = [], []
    for name in names:
        get_entry(name)  # an unknown name fails before anything trains
        if reads_images(name) and not data.image_shape:
            note = (
                f"{name} is an image model, compared on images only; {data.name} is "
                f"{data.kind} data (`darm train --model {name}` trains it as one row)"
            )
            skipped.append(FamilyResult(name, "skipped", note=note))
        else:
            run.append(name)
    return run, skipped


KEPT = ("done", "failed")  # rows --resume keeps; a failure would repeat with the same seed


def kept_rows(retry_failed: bool) -> tuple[str, ...]:
    """The rows --resume keeps as they are: failed ones too, unless they are to be retried
    (a failure of the machine's rather than the model's: out of memory, a full disk)."""
    return ("done",) if retry_failed else KEPT


def read_comparison(out: Path) -> dict[str, Any]:
    """The results.json of the comparison in `out`, for --resume."""
    path = out / "results.json"
    if not path.exists():
        raise DarmError(f"{out} holds no comparison to resume ({path.name} is missing)")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        rows = {row["model"]: FamilyResult(**row) for row in report["families"]}
        if not isinstance(report["command"], str) or not isinstance(report["data"], dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise DarmError(f"{path} is not a darm compare report") from None
    if not report["data"].get("digest"):
        raise DarmError(
            f"{path} was written by an older darm (it records no data digest), so it cannot "
            f"be continued; run the missing families with --models into another --out"
        )
    return {**report, "families": rows}


def unfinished(report: dict[str, Any], retry_failed: bool = False) -> list[str]:
    """The families of a report that --resume would run: interrupted, or not run (or failed,
    to retry them)."""
    keep = (*kept_rows(retry_failed), "skipped")
    return [n for n, r in report["families"].items() if r.status not in keep]


# what a comparison writes in its folder, beside one folder per family
REPORT_FILES = ("results.json", "report.md", "report.html", "loss.png", "deps.png")


def check_new_report(out: Path) -> None:
    """A new comparison does not write over another's report, nor over files of the same
    names that are not one (a report.md of the user's own in the folder named)."""
    if out.exists() and not out.is_dir():
        raise DarmError(f"{out} is a file; a comparison writes a folder: choose another --out")
    if (out / "last.json").exists():  # a run's results.json is not a comparison's
        raise DarmError(
            f"{out} is the folder of a training run (its last.json); a comparison writes a "
            f"folder of its own: choose another --out"
        )
    if (out / "results.json").exists():
        raise DarmError(
            f"{out} already holds a comparison (results.json); continue it (--resume), "
            f"or choose another --out, or remove the old one"
        )
    taken = [name for name in REPORT_FILES if (out / name).exists()]
    if taken:
        raise DarmError(
            f"{out} already holds {taken[0]}, which the comparison's report would overwrite; "
            f"choose another --out"
        )


def with_not_run(
    results: list[FamilyResult], names: list[str], order: list[str]
) -> list[FamilyResult]:
    """The report's rows, in --models order (`order`): the families so far, skipped ones
    included, and a "not run" row for each name left."""
    rows = list(results) + [FamilyResult(n, "not run") for n in names]
    return sorted(rows, key=lambda r: order.index(r.model) if r.model in order else len(order))


def compare(
    data: Dataset, opts: CompareOptions, device, before: dict[str, Any] | None = None
) -> list[FamilyResult]:
    """Run every family; rewrite the report after each. Ctrl-C (or SIGTERM) keeps what is
    finished. before: the report of the interrupted comparison in opts.out (read_comparison)
    to continue, with the same options: its finished rows are kept, the rest run."""
    # one comparison at a time in opts.out
    with sigterm_interrupts(), folder_lock(opts.out, what="report folder"):
        return compare_families(data, opts, device, before)


def compare_families(
    data: Dataset, opts: CompareOptions, device, before: dict[str, Any] | None = None
) -> list[FamilyResult]:
    if opts.budget is None and opts.steps is None:
        raise DarmError("give a --budget (time per family) or --steps")
    for name in opts.overrides:
        if name not in opts.models:
            raise DarmError(
                f"--set for {name!r}, which is not among the models run: {', '.join(opts.models)}"
            )
    names, skipped = check_models(opts.models, data)
    if not names:
        raise DarmError(f"no model in --models can run on {data.name}: {skipped[0].note}")
    for name in names:  # a bad --set fails now, not after the families before it trained
        with torch.device("meta"):  # shapes only: no memory for the weights
            build_family(name, data, opts.overrides.get(name))
    opts.data_digest = digest(data)
    previous = {} if before is None else before["families"]
    if before is not None:
        if before["data"].get("digest") != opts.data_digest:
            theirs = before["data"].get("summary") or before["data"].get("name")
            raise DarmError(
                f"{data.summary()} is not the data the comparison in {opts.out} ran on "
                f"({theirs}): a data option (--data, --format, --block, --levels, --data-seed) "
                f"differs, or the file has changed since"
            )
    else:
        check_new_report(opts.out)
    busy = [n for n in names if n not in previous and (opts.out / n / "last.json").exists()]
    if busy:
        raise DarmError(
            f"{opts.out / busy[0]} already holds a checkpoint; choose another --out "
            f"or remove the old comparison"
        )
    try:
        opts.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DarmError(f"cannot create the report folder {opts.out}: {e.strerror}") from None
    results: list[FamilyResult] = list(skipped)
    for r in skipped:
        tqdm.write(f"skipping {r.model}: {r.note}")
    overall = tqdm(
        total=len(names), desc="compare", disable=None if opts.progress else True, position=0
    )
    maps: dict[str, torch.Tensor] = {}
    current, (ex, dim) = None, units(data.kind)
    keep = kept_rows(opts.retry_failed)
    try:
        for i, name in enumerate(names):
            current = name
            overall.set_description(f"compare [{name} {i + 1}/{len(names)}]")
            kept = previous.get(name)
            if kept is not None and kept.status in keep:
                result = kept
                tqdm.write(f"{name}: {kept.status} in the comparison being continued; kept")
            else:
                try:  # (its folder locked too: a `darm train --out` there now must wait)
                    with folder_lock(opts.out / name):
                        result = run_family(name, data, opts, device, kept)
                except Exception as e:  # one family's failure is a row, not the end of the report
                    result = FamilyResult(name, "failed", note=first_line(e))
                if result.status == "failed":
                    tqdm.write(f"{name} failed: {result.note}")
                elif result.status == "interrupted":  # (not continued)
                    tqdm.write(f"{name}: {result.note}")
                elif result.status == "done":
                    speed = result.samples_per_s  # None: no samples drawn (--samples 0)
                    tqdm.write(
                        f"{name}: test {result.nats_per_example:.4f} nats/{ex}, "
                        f"{result.bits_per_dim:.4f} bits/{dim}"
                        + ("" if speed is None else f", {speed:,.1f} {ex}s/s")
                    )
            results.append(result)
            if result.status == "done":
                maps[name] = load_file(opts.out / name / "deps.safetensors")["deps"]
            current = None
            write_report(data, opts, with_not_run(results, names[i + 1 :], opts.models), maps)
            overall.update(1)
    except KeyboardInterrupt as stop:
        signum = getattr(stop, "signum", signal.SIGINT)
        done = {r.model for r in results}
        if current is not None and current not in done:
            note = stopped_note(signum)
            row = stop.result if isinstance(stop, FamilyInterrupted) else previous.get(current)
            if row is not None and row.status not in keep:  # an earlier turn's row goes on
                row = replace(row, status="interrupted", note=note)
            results.append(row or FamilyResult(current, "interrupted", note=note))
        rest = [n for n in names if n not in done and n != current]
        write_report(data, opts, with_not_run(results, rest, opts.models), maps)
        overall.close()
        raise Stopped(
            f"the report in {opts.out} keeps the finished families; --resume continues", signum
        ) from None
    overall.close()
    return results
