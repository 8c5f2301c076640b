"""`darm complete`: sample the rest of an image or sequence given its start."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from darm.checkpoint import load_checkpoint
from darm.cli.args import check_sampling_args, device_of
from darm.complete import (
    complete,
    completion_view,
    marked_view,
    read_images,
    read_symbol_pictures,
    save_completion_grid,
)
from darm.data import load_from_source
from darm.data.images import reads_upright
from darm.data.vocab import saved_vocab
from darm.errors import DarmError
from darm.memory import check_sample_memory
from darm.metrics import symbols_word
from darm.options import check_counts
from darm.outputs import class_marks, count, save_samples
from darm.paths import checked_stem, with_ext
from darm.prompts import (
    check_length_fits,
    check_prompt_fits,
    default_length,
    label_tensor,
    read_prefixes,
)


@dataclass
class Known:
    """What `complete` keeps of each of N inputs: the prefixes to sample on from, with the
    originals (N, D) they were cut from where there are any (test examples, pictures)."""

    prefixes: list[list[int]]  # N kept prefixes, of one length or (items, --input) of several
    originals: torch.Tensor | None = None  # (N, D)
    labels: torch.Tensor | None = None  # (N,) for a conditional model
    rows: int | None = None  # images: the whole rows kept
    real: list[int] | None = None  # each original's length before padding (a partial block)


def complete_inputs(args, model, meta: dict, folder: Path) -> Known:
    """The inputs, their prefixes still to cut: pictures (N, D) for an image model (each
    file one picture, or a sample grid's; an .npy, its symbols), else one list of known
    symbols per --input (a WAV clip's levels, a text's symbols, an array's integers, each
    row of an .npy); without --input, the first --count examples of the test split and
    their labels."""
    shape = meta.get("image_shape")
    if args.input and shape:
        L = model.vocab_size
        read = [
            read_symbol_pictures(Path(p), shape, L) if p.lower().endswith(".npy")
            else read_images(Path(p), shape, L, reads_upright(meta["source"]))
            for p in args.input
        ]  # fmt: skip
        return Known([], torch.cat(read))
    if args.input:
        return Known([p for s in args.input for p in read_prefixes(s, model, meta, "--input")])
    test = load_from_source(meta, model.num_dims, folder, conditional=model.num_classes > 0)["test"]
    if args.count is not None and args.count > len(test):
        print(
            f"note: --count {args.count}: the test split holds {len(test)}; completing those",
            file=sys.stderr,  # stdout holds the completions alone
        )
    n = 8 if args.count is None else args.count
    known = Known([], test.x[:n], None if test.y is None else test.y[:n])
    if test.mask is not None and meta.get("eos") is None:  # a corpus's or clip's last block
        known.real = test.mask[:n].sum(1).tolist()  # its data, before the padding
    return known


def known_part(args, model, meta: dict, folder: Path) -> Known:
    """Read the inputs and cut each to the part kept: --rows of an image, --dims of a
    sequence (default half), the first half of an item before its end symbol, or all of an
    --input."""
    shape, D = meta.get("image_shape"), model.num_dims
    if args.rows is not None and not shape:
        raise DarmError("--rows keeps image rows; this model reads sequences: use --dims")
    if args.length is not None and shape:
        raise DarmError("--length is for sequences; an image model completes whole images")
    if args.count is not None and args.input:
        raise DarmError("--count picks test examples; with --input, the inputs are completed")
    if args.dims is not None and (shape or args.input):
        why = "an image model keeps --rows" if shape else "with --input the whole input is kept"
        raise DarmError(f"--dims keeps the first dimensions of test examples; {why}")
    known = complete_inputs(args, model, meta, folder)
    originals = known.originals
    if not len(known.prefixes if originals is None else originals):
        raise DarmError("nothing to complete: the test split is empty")
    if shape:
        H = shape[0]
        known.rows = H // 2 if args.rows is None else args.rows
        if not 0 <= known.rows < H:  # H rows kept would leave nothing to draw
            raise DarmError(f"--rows must be in 0..{H - 1}, got {known.rows}")
        known.prefixes = originals[:, : known.rows * D // H].tolist()  # whole rows, all channels
    elif originals is not None and args.dims is None and meta.get("eos") is not None:
        # items padded to D (names): keep the first half of each item, not of the padding
        eos = meta["eos"]
        known.prefixes = [x[: (x.index(eos) if eos in x else D) // 2] for x in originals.tolist()]
        known.originals = None  # the padded rows are not worth showing
    elif originals is not None:
        P = D // 2 if args.dims is None else args.dims
        whole = (args.length or D) > D  # all D kept, and more drawn after them
        if P == D and not whole:
            raise DarmError(f"--dims {D} keeps every dimension of D = {D}: nothing is left to draw")
        if not 0 <= P <= D:
            raise DarmError(f"--dims must be in 0..{D if whole else D - 1}, got {P}")
        real = known.real or [D] * len(originals)  # never the padding of a partial block
        known.prefixes = [x[: min(P, n)] for x, n in zip(originals.tolist(), real)]
        eos = meta.get("eos")
        if eos is not None:  # an item shorter than P: kept up to its end, which is drawn again
            known.prefixes = [x[: x.index(eos)] if eos in x else x for x in known.prefixes]
    if args.label is not None:
        known.labels = label_tensor(model, args.label, len(known.prefixes), meta.get("class_names"))
    elif not model.num_classes:
        known.labels = None  # the test split's labels mean nothing to an unconditional model
    if model.num_classes and known.labels is None:
        raise DarmError("this model is conditional: pass --label")
    return known


def draw_completions(args, model, meta: dict, known: Known) -> torch.Tensor:
    """-n completions of every prefix, (N, n, length): one batch when the prefixes share a
    length, else input by input."""
    kept = max(map(len, known.prefixes))
    symbols = symbols_word(meta.get("kind", ""))  # samples of a clip, characters of a text
    check_length_fits(model, meta, args.length)  # test windows too, not only --input
    if args.length is not None and args.length < kept:
        raise DarmError(f"--length {args.length} is shorter than the {kept} {symbols} kept")
    if args.length is not None and args.length <= min(map(len, known.prefixes)):
        raise DarmError(
            f"--length {args.length} leaves nothing to draw after the {kept} {symbols} kept"
        )
    if args.input and not meta.get("image_shape"):  # named by the longest of several inputs
        lengths = list(map(len, known.prefixes))
        which = f" (prompt {lengths.index(kept) + 1} of {len(lengths)})" if len(lengths) > 1 else ""
        check_prompt_fits(model, meta, kept, args.length, "--input", which)
    gen = torch.Generator(device=model.device).manual_seed(args.seed)
    kw = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, generator=gen,
              num_dims=args.length or default_length(model, meta, kept), progress=True)  # fmt: skip
    if not meta.get("image_shape"):  # an item ends at its end symbol: nothing after it is drawn
        kw["stop_token"] = meta.get("eos")
    N = len(known.prefixes)
    check_sample_memory(model, N * args.n, kw["num_dims"], f"-n {args.n:,} for {count(N, 'input')}")
    labels = None if known.labels is None else known.labels.to(model.device)
    batches = (  # (prefixes (B, P), labels (B,)) of one length each; [] too: from scratch
        [(known.prefixes, labels)]
        if len(set(map(len, known.prefixes))) == 1
        else [([p], None if labels is None else labels[i : i + 1])
              for i, p in enumerate(known.prefixes)]
    )  # fmt: skip
    try:
        return torch.cat(
            [
                complete(
                    model, torch.tensor(p, dtype=torch.long, device=model.device), args.n, y, **kw
                )
                for p, y in batches
            ]
        )  # (N, n, length)
    except ValueError as e:
        raise DarmError(str(e)) from None


def cmd_complete(args) -> None:
    """Keep the first rows (or dimensions) of each input and sample the rest, -n times."""
    check_sampling_args(args)
    check_counts(args, count=1)
    model, record, path = load_checkpoint(args.checkpoint, device_of(args))
    stem = checked_stem(args.out, path.parent / "completions", record["data"], args.force)
    meta = record["data"]
    shape = meta.get("image_shape")
    known = known_part(args, model, meta, path.parent)
    completions = draw_completions(args, model, meta, known).cpu()  # (N, n, length)
    N = len(known.prefixes)
    if shape:
        out = with_ext(stem, ".png")
        save_completion_grid(
            known.originals, completions, tuple(shape), model.vocab_size, known.rows, out
        )
        print(
            f"kept the top {known.rows} of {shape[0]} rows of {count(N, 'image')}; "
            f"{args.n} completion{'s' * (args.n != 1)} each (original first in each row)"
        )
    else:  # written as samples are: lines, corpus blocks between rules, or a WAV
        x = completions.flatten(0, 1)  # (N, n, length) -> (N*n, length), input by input
        marks = None if known.labels is None else known.labels.repeat_interleave(args.n)
        classes = class_marks(marks, meta.get("class_names"))
        out = save_samples(x, meta, model.vocab_size, stem, classes=classes, group=args.n)
        if meta.get("eos") is not None:  # items: each input, then its completions
            print(
                completion_view(
                    known.prefixes, completions.tolist(), saved_vocab(meta), meta["eos"]
                )
            )
        elif out.suffix == ".txt":  # the file holds the rows; the screen marks the kept part
            kept = list(map(len, known.prefixes))
            print(marked_view(x, kept, args.n, saved_vocab(meta), classes))
        else:  # a WAV: nothing to show, so what it holds, as for images
            rate = meta["source"]["sample_rate"]
            lo, hi = min(map(len, known.prefixes)), max(map(len, known.prefixes))
            kept = f"{lo} samples ({lo / rate:.3f} s)"
            if lo != hi:
                kept = f"{lo} to {hi} samples (up to {hi / rate:.3f} s)"
            print(
                f"kept the first {kept} of "
                f"{count(N, 'clip')}; {args.n} completion{'s' * (args.n != 1)} each, "
                f"{x.shape[1] / rate:.3f} s long with what was kept, clip by clip"
            )
    print(f"wrote {out}", file=sys.stderr)
