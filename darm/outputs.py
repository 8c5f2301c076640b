"""What a run writes for people to read, look at or listen to: the NLL line, samples as a
PNG grid (images), a WAV (audio) or text lines, and a finished training run's results."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import torch

from darm.checkpoint import load_checkpoint, read_record
from darm.data.audio import write_levels_wav
from darm.data.vocab import saved_vocab
from darm.errors import DarmError
from darm.files import atomic_write_text
from darm.memory import check_sample_memory
from darm.metrics import evaluate, units
from darm.paths import sample_suffix, with_ext
from darm.plots import plot_loss_curves, save_image_grid
from darm.prompts import check_prompt_fits, default_length, label_tensor, read_prefix
from darm.sampling import sample


def finish_run(
    run_dir: Path, data, device, n_samples: int, seed: int, progress: bool = True
) -> None:
    """Test NLL of the best checkpoint, samples, and the loss curve, all into run_dir."""
    model, record, _ = load_checkpoint(run_dir, device)
    nll = evaluate(model, data["test"], progress=progress)
    print_nll(nll, "test", data.kind)
    plot_loss_curves({record["model"]: run_dir / "log.csv"}, run_dir / "loss.png")
    written = [run_dir / "loss.png", run_dir / "results.json"]
    if data.kind == "audio":  # second-long clips (see write_samples): a few are enough
        n_samples = min(n_samples, AUDIO_CLIPS)
    if n_samples:
        stem = run_dir / "samples"
        written.insert(0, write_samples(model, record, n_samples, stem, seed, progress=progress))
    write_results(run_dir, record["step"], nll)  # last: it says the run was finished
    print(f"wrote {', '.join(map(str, written))}")


def write_results(run_dir: Path, step: int, nll) -> None:
    """run_dir/results.json: the test NLL of the checkpoint of `step`, which `finished` and
    `darm runs` read as the run's result (train and compare write it alike)."""
    results = {"split": "test", "checkpoint_step": step, **nll.as_dict()}
    atomic_write_text(run_dir / "results.json", json.dumps(results, indent=1))


def finished(run_dir: Path) -> bool:
    """Whether finish_run has run to its end for the checkpoint the run would now test: its
    results.json exists and scores that checkpoint (best, else last)."""
    results = run_dir / "results.json"
    if not results.exists():
        return False
    tested = run_dir / ("best.json" if (run_dir / "best.json").exists() else "last.json")
    try:
        step = json.loads(results.read_text())["checkpoint_step"]
    except (ValueError, KeyError, TypeError, OSError):  # (TypeError: not a JSON object)
        return False
    return step == read_record(tested)[1]["step"]


def count(n: int, thing: str) -> str:
    """'1 image', '447 images'."""
    return f"{n} {thing}{'s' * (n != 1)}"


def print_nll(nll, split: str, kind: str, file=None) -> None:
    """The NLL line: nats per example, nats and bits per dimension, and how many of each."""
    unit, per_dim = units(kind)
    print(
        f"{split}: {nll.nats_per_example:.4f} nats/{unit}  {nll.nats_per_dim:.4f} nats/{per_dim}  "
        f"{nll.bits_per_dim:.4f} bits/{per_dim}  "
        f"({count(nll.examples, unit)}, {count(nll.dims, per_dim)})",
        file=file,
    )


def write_per_example(
    path: Path, data, nats: dict[str, torch.Tensor], names: dict[str, str] | None = None
) -> None:
    """One CSV row per example scored: its split (as `names` renames it) and index there,
    its line (a lines file's), file (an image folder's) or offset (a block's first symbol in
    a corpus or clip, and its time in seconds for audio), its label (by the data's class
    names, where it has them), -log p in nats, its dimensions and bits per dimension, and
    its text (text data)."""
    labelled = any(data[s].y is not None for s in nats)
    text = io.StringIO()
    out = csv.writer(text, lineterminator="\n")
    files = data.info.get("files")  # an image folder's: which picture each example is
    lines = data.info.get("lines")  # a lines file's: which line each example is
    starts = data.info.get("starts")  # a stream's: where each split begins in it
    rate = data.info.get("sample_rate")
    header = ["split", "index", *(["line"] * bool(lines)), *(["file"] * bool(files))]
    header += ["offset"] * bool(starts) + ["seconds"] * bool(starts and rate)
    header += ["label"] * labelled
    header += ["nats", "dims", "bits_per_dim"]
    out.writerow(header + ["text"] * (data.vocab is not None))
    for s, per_example in nats.items():
        split = data[s]
        full = [split.x[0].numel()] * len(split)
        dims = full if split.mask is None else split.mask.sum(1).tolist()  # padding not scored
        labels = class_marks(split.y, data.class_names) if labelled else None
        for i, (n, d) in enumerate(zip(per_example.tolist(), dims)):
            row = [(names or {}).get(s, s), i, *([lines[s][i]] if lines else [])]
            row += [files[s][i]] if files else []
            if starts:  # blocks of D follow each other from the split's start
                offset = starts[s] + i * split.x.shape[1]
                row += [offset] + ([f"{offset / rate:.4f}"] if rate else [])
            row += [labels[i]] if labelled else []
            row += [f"{n:.6f}", d, f"{n / d / math.log(2):.6f}"]
            if data.vocab is not None:  # the symbols scored (a corpus's last block is short)
                row.append(data.vocab.decode(split.x[i, :d].tolist(), stop=data.eos))
            out.writerow(row)
    atomic_write_text(path, text.getvalue())


def write_samples(
    model,
    record,
    n,
    stem: Path,
    seed=0,
    temperature=1.0,
    top_k=None,
    top_p=None,
    prompt=None,
    label=None,
    length=None,
    progress=True,
) -> Path:
    """Sample and write stem.png (images), stem.wav (audio) or stem.txt (text, arrays)."""
    meta = record["data"]
    device = model.device
    cond = label_tensor(model, label, n, meta.get("class_names"))
    cols = None
    if cond is None and model.num_classes:  # every class in turn: each grid column one class
        K = model.num_classes
        cond = torch.arange(n) % K
        cols = class_columns(n, K) if K <= n else None
    names = class_marks(cond, meta.get("class_names"))
    cond = None if cond is None else cond.to(device)
    prefix = None
    if prompt:
        if meta.get("image_shape"):
            raise DarmError(
                "--prompt is for text, integer arrays and audio; an image's top rows are "
                "completed by darm complete RUN --input PICTURE --rows N"
            )
        symbols = read_prefix(prompt, model, meta, "--prompt")
        prefix = torch.tensor([symbols] * n, dtype=torch.long)  # (n, P), P = 0 for " "
    if length is not None and meta.get("image_shape") and length != model.num_dims:
        raise DarmError(f"--length: an image model draws whole images of {model.num_dims} values")
    kept = 0 if prefix is None else prefix.shape[1]
    check_prompt_fits(model, meta, kept, length, "--prompt")
    D = length or default_length(model, meta, kept)
    check_sample_memory(model, n, D)
    gen = torch.Generator(device=device).manual_seed(seed)
    try:
        x = sample(
            model,
            n,
            cond=cond,
            prefix=prefix,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            generator=gen,
            num_dims=D,
            stop_token=meta.get("eos"),
            progress=progress,
        )
    except ValueError as e:
        raise DarmError(str(e)) from None
    return save_samples(x, meta, model.vocab_size, stem, cols, names)


AUDIO_CLIPS = 8  # clips written at the end of training an audio model


def class_columns(n: int, K: int) -> int:
    """Columns of a grid of n samples whose classes cycle through K: a whole number of rounds
    of the classes (each column one class), the grid nearest square (2 classes of 64
    samples: 8 x 8, not a 2 x 32 strip)."""
    rounds = range(1, math.ceil(n / K) + 1)
    return K * min(rounds, key=lambda m: abs(math.log(m * K / math.ceil(n / (m * K)))))


def class_marks(cond: torch.Tensor | None, class_names: list[str] | None) -> list[str] | None:
    """Each sample's class as written beside it: its name where the data named its classes,
    else its number; None for an unconditional model."""
    if cond is None:
        return None
    return [class_names[c] if class_names else str(c) for c in cond.tolist()]


def save_samples(
    x: torch.Tensor,
    meta: dict,
    levels: int,
    stem: Path,
    cols: int | None = None,
    classes: list[str] | None = None,
    group: int | None = None,
) -> Path:
    """Write samples x (n, D) as stem.png (images), stem.wav (audio, the clips in a row
    with short silences) or stem.txt (text, integer arrays); returns the path. classes: each
    row's class, written before an integer row as `3: 0 1 2` (a grid shows it by column).
    group: items (lines) in groups of this many with a blank line between (the completions
    of one input; reading the file as data skips blank lines)."""
    n = x.shape[0]
    vocab = saved_vocab(meta)
    path = with_ext(stem, sample_suffix(meta))
    if meta.get("image_shape"):
        images = x.view(n, *meta["image_shape"])  # (n, D) -> (n, H, W, C)
        save_image_grid(images, levels, path, cols=cols)
    elif meta.get("kind") == "audio":
        write_levels_wav(path, x, meta["source"]["sample_rate"])
    else:
        if vocab is not None:
            eos = meta.get("eos")
            lines = [vocab.decode(row, stop=eos) for row in x.tolist()]
            if (group or 0) > 1 and eos is not None:  # a blank line after each group but the last
                lines = [f"{s}\n" if (i + 1) % group == 0 and i + 1 < n else s
                         for i, s in enumerate(lines)]  # fmt: skip
            sep = "\n" if eos is not None else "\n" + "-" * 40 + "\n"
            text = sep.join(lines) + "\n"
        else:
            rows = [" ".join(map(str, row)) for row in x.tolist()]
            if classes is not None:
                rows = [f"{c}: {row}" for c, row in zip(classes, rows)]
            text = "\n".join(rows) + "\n"
        atomic_write_text(path, text)
    return path
