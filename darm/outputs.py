"""What a run writes for people to read, look at or listen to: the NLL line, samples as a
PNG grid (images), a WAV (audio) or text lines, and a finished training run's results."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

import torch

from darm.checkpoint import load_checkpoint, read_record
from darm.data.arrays import npy_row, npy_rows
from darm.data.audio import wav_levels, write_levels_wav
from darm.data.vocab import saved_vocab
from darm.errors import DarmError
from darm.files import atomic_write_text, check_writable
from darm.metrics import evaluate, symbols_word, units
from darm.plots import plot_loss_curves, save_image_grid
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
    # last: a results.json says this checkpoint's run was finished (see `finished`)
    results = {"split": "test", "checkpoint_step": record["step"], **nll.as_dict()}
    atomic_write_text(run_dir / "results.json", json.dumps(results, indent=1))
    print(f"wrote {', '.join(map(str, written))}")


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

    unit, per_dim = units(kind)
    print(
        f"{split}: {nll.nats_per_example:.4f} nats/{unit}  {nll.nats_per_dim:.4f} nats/{per_dim}  "
        f"{nll.bits_per_dim:.4f} bits/{per_dim}  "
        f"({count(nll.examples, unit)}, {count(nll.dims, per_dim)})",
        file=file,
    )


def check_file_target(path: Path, flag: str, force: bool = False) -> None:
    """A file to be written later: refused now, before the work, if it cannot be."""
    if path.is_dir():
        raise DarmError(f"{flag} {path} is a folder; give a file name")
    check_new(path, flag, force)
    check_writable(path.parent)


def check_new(path: Path, flag: str, force: bool) -> None:
    """A file an option names is never replaced by accident (a picture of one's own, the
    run's data): refused if it exists, unless --force."""
    if path.exists() and not force:
        lead = f"{flag}: " if flag else ""
        raise DarmError(f"{lead}{path} already exists; pass --force to replace it")


def check_output(path: Path, run_default: Path | None, given: bool, force: bool) -> None:
    """A file a command is about to write: an existing one is replaced only where it is the
    run's own output written again (`run_default`, e.g. RUN/samples.png, however it was
    named) or with --force. given: named by --out (said in the refusal)."""
    if run_default is not None and path.resolve() == run_default.resolve():
        return
    check_new(path, "--out" if given else "", force)


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


def read_prefix(text: str, model, meta: dict, flag: str) -> list[int]:
    """A prompt of a sequence model (`sample --prompt`, `complete --input`) as its known
    first symbols: text through the run's vocabulary, a WAV file's levels for audio, or
    integers separated by spaces (or an .npy of one row of them) for arrays."""
    vocab = saved_vocab(meta)
    if vocab is not None:
        return vocab.encode(text, flag)
    if meta.get("kind") == "audio":  # a clip to go on from
        levels = wav_levels(Path(text), meta["source"]["sample_rate"])
        check_clip_fits(model, len(levels), meta, text)
        return levels.tolist()
    if text.lower().endswith(".npy"):
        symbols = npy_row(Path(text), flag)
    else:
        try:
            symbols = [int(v) for v in text.split()]
        except ValueError:
            raise DarmError(
                f"{flag} of an array model is integers separated by spaces, e.g. '2 0 1', or "
                f"an .npy of one row of them; got {text!r}"
            ) from None
    return check_symbols(symbols, model, flag)


def read_prefixes(text: str, model, meta: dict, flag: str) -> list[list[int]]:
    """The known starts one `complete --input` gives: one per row of an array model's .npy
    (N, P), else the one `read_prefix` reads."""
    if saved_vocab(meta) is None and meta.get("kind") != "audio" and text.lower().endswith(".npy"):
        return [check_symbols(row, model, flag) for row in npy_rows(Path(text), flag)]
    return [read_prefix(text, model, meta, flag)]


def check_symbols(symbols: list[int], model, flag: str) -> list[int]:
    """symbols, refused before any tensor is made where one is outside the vocabulary."""
    outside = [v for v in symbols if not 0 <= v < model.vocab_size]
    if outside:
        raise DarmError(f"{flag}: symbol {outside[0]} is outside 0..{model.vocab_size - 1}")
    return symbols


def check_clip_fits(model, samples: int, meta: dict, name: str) -> None:
    """An audio prompt must fit the context of a model that has a limit (gpt)."""
    limit = model.max_dims
    if limit is not None and samples > limit:
        rate = meta["source"]["sample_rate"]
        raise DarmError(
            f"{name} is {samples} samples ({samples / rate:.3f} s); this {model.family} sees at "
            f"most {limit} ({limit / rate:.3f} s): give a shorter clip, or use a model without "
            f"a context limit (wavenet, rnn, markov)"
        )


def check_prompt_fits(model, meta: dict, kept: int, length: int | None, flag: str) -> None:
    """A prompt longer than the samples would be: refused naming the way on (--length) where
    the model has one, else the model's limit."""
    D = length or default_length(model, meta, kept)
    symbols = symbols_word(meta.get("kind", ""))  # samples of a clip, characters of a text
    if length is not None and length == kept:
        raise DarmError(
            f"--length {length} leaves nothing to draw after the {kept} {symbols} of {flag}"
        )
    if kept <= D:
        return
    if length is not None:
        raise DarmError(f"--length {length} is shorter than the {kept} {symbols} of {flag}")
    if model.max_dims is None:  # a window, a recurrent state, conv queues: it goes on
        raise DarmError(
            f"{flag} has {kept} {symbols}, more than the {D} a sample has by default: give "
            f"--length (over {kept}; this {model.family} goes on past D={D})"
        )
    raise DarmError(f"{flag} has {kept} {symbols}; this {model.family} sees at most {D}")


def default_length(model, meta: dict, kept: int) -> int:
    """Length of a drawn sequence when --length is not given: the model's D, but audio from a
    model that goes on past D runs one second past what is kept (a second to listen to, not
    a D-sample click)."""
    if meta.get("kind") == "audio" and model.max_dims is None:
        return kept + meta["source"]["sample_rate"]
    return model.num_dims


SAMPLE_SUFFIXES = (".png", ".wav", ".txt")
OTHER_PICTURES = (".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".svg", ".pdf")
AUDIO_CLIPS = 8  # clips written at the end of training an audio model


def output_stem(out: str | None, default: Path) -> Path:
    """The stem an output's suffix is added to: --out as given (a suffix of ours dropped, so
    `--out s.png` still writes s.png; `--out names.v2` writes names.v2.txt, it does not replace
    names.txt), a folder's `default.name` inside it, or `default`. Checked writable first."""
    if out is None:
        stem = default
    elif out.endswith(("/", os.sep)) or Path(out).is_dir():
        stem = Path(out) / default.name
    else:
        stem = Path(out)
        if stem.suffix.lower() in OTHER_PICTURES:  # the file would hold PNG bytes
            raise DarmError(f"--out {out}: pictures are written as PNG; name it {stem.stem}.png")
        stem = stem.with_suffix("") if stem.suffix.lower() in SAMPLE_SUFFIXES else stem
    check_writable(stem.parent)
    return stem


def checked_stem(out: str | None, default: Path, meta: dict, force: bool) -> Path:
    """`output_stem` for samples of this data, refused now (before any drawing) where the
    file it names exists and is not the run's own `default` (see check_output)."""
    stem, ext = output_stem(out, default), sample_suffix(meta)
    check_output(with_ext(stem, ext), with_ext(default, ext), out is not None, force)
    return stem


def checked_png(out: str | None, default: Path, force: bool, own: bool = True) -> Path:
    """`png_path`, refused now where the picture exists and is not the run's own `default`
    (own=False: a default that belongs to no one run, the loss.png of several)."""
    path = png_path(out, default)
    check_output(path, default if own else None, out is not None, force)
    return path


def png_path(out: str | None, default: Path) -> Path:
    """A picture's path (`default` ends in .png): --out as `output_stem` reads it, then .png."""
    return with_ext(output_stem(out, default.with_suffix("")), ".png")


def with_ext(stem: Path, ext: str) -> Path:
    """stem + ext, keeping any dots already in the stem's name."""
    return stem.with_name(stem.name + ext)


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


def sample_suffix(meta: dict) -> str:
    """How samples of this data are written: pictures, a WAV, or lines of text."""
    return ".png" if meta.get("image_shape") else ".wav" if meta.get("kind") == "audio" else ".txt"


def label_tensor(
    model, label: int | str | None, n: int, class_names: list[str] | None = None
) -> torch.Tensor | None:
    """--label as n labels (None when not given): a class number, or a class name where the
    data had names (an image folder's sub-folders); checked against the model."""
    if label is None:
        return None
    if not model.num_classes:
        raise DarmError("--label given, but this model is unconditional (train with --conditional)")
    if isinstance(label, str):  # a class's name first: folders may be named "1", "10", "2"
        # where every class is named by a number, a number is a name (never a class's index:
        # --label 0 would be the folder 1)
        numbered = bool(class_names) and all(c.lstrip("-").isdigit() for c in class_names)
        if label in (class_names or []):
            label = class_names.index(label)
        elif label.lstrip("-").isdigit() and not numbered:
            label = int(label)
        else:
            known = f"its classes: {', '.join(class_names)}" if class_names else "numbers only"
            raise DarmError(f"--label {label!r} is not a class of this model ({known})")
    if not 0 <= label < model.num_classes:
        raise DarmError(f"--label must be in 0..{model.num_classes - 1}, got {label}")
    return torch.full((n,), label)
