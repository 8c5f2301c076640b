"""What a user gives a trained model to go on from, as its symbols: a prompt or a prefix
(text, integers, an .npy, a WAV clip) and a --label, checked against the model."""

from __future__ import annotations

from pathlib import Path

import torch

from darm.data.arrays import npy_row, npy_rows
from darm.data.audio import wav_levels
from darm.data.vocab import EOS, saved_vocab
from darm.errors import DarmError
from darm.metrics import symbols_word


def read_prefix(text: str, model, meta: dict, flag: str) -> list[int]:
    """A prompt of a sequence model (`sample --prompt`, `complete --input`) as its known
    first symbols: text through the run's vocabulary, a WAV file's levels for audio, or
    integers separated by spaces (or an .npy of one row of them) for arrays."""
    vocab = saved_vocab(meta)
    if vocab is not None:
        if meta.get("eos") is not None and EOS in text:  # the rest would be cut off unseen
            raise DarmError(
                f"{flag} holds a newline, which ends an item of this model's data (one item "
                f"a line): give the start of one item"
            )
        try:
            return vocab.encode(text, flag)
        except DarmError as e:  # a file of prompts, say: a text model's prompt is the text
            if not is_file(text):
                raise
            raise DarmError(f"{e} ({text} is a file: {flag} of a text model is the text "
                            f"itself, e.g. {flag} 'ma')") from None  # fmt: skip
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


def is_file(text: str) -> bool:
    """Whether a prompt names a file (which, for a text model, it is not read as)."""
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # a name too long, a NUL in it: no file of that name
        return False


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


def check_length_fits(model, meta: dict, length: int | None) -> None:
    """--length within a model's context (a gpt's), refused in the data's own units: samples
    and seconds of a clip, characters of a text."""
    if length is None or model.max_dims is None or length <= model.max_dims:
        return
    limit, rate = model.max_dims, meta.get("source", {}).get("sample_rate")
    secs = f" ({limit / rate:.3f} s)" if meta.get("kind") == "audio" and rate else ""
    raise DarmError(
        f"--length {length}: this {model.family} generates at most {limit} "
        f"{symbols_word(meta.get('kind', ''))}{secs}, its context, prompt included"
    )


def check_prompt_fits(
    model, meta: dict, kept: int, length: int | None, flag: str, which: str = ""
) -> None:
    """A prompt longer than the samples would be: refused naming the way on (--length) where
    the model has one, else the model's limit. which: the prompt among several, as
    " (prompt 3 of 5)"."""
    D = length or default_length(model, meta, kept)
    symbols = symbols_word(meta.get("kind", ""))  # samples of a clip, characters of a text
    check_length_fits(model, meta, length)
    if length is not None and length == kept:
        raise DarmError(
            f"--length {length} leaves nothing to draw after the {kept} {symbols} of {flag}"
        )
    if length is None and kept == D:  # the prompt alone, echoed, would pass for a sample
        longer = f" or --length over {kept}" if model.max_dims is None else ""
        raise DarmError(
            f"{flag}{which} has {kept} {symbols}, all a sample has (D={D}): nothing is left to "
            f"draw; give a shorter {flag}{longer}"
        )
    if kept <= D:
        return
    if length is not None:
        raise DarmError(f"--length {length} is shorter than the {kept} {symbols} of {flag}")
    if model.max_dims is None:  # a window, a recurrent state, conv queues: it goes on
        raise DarmError(
            f"{flag}{which} has {kept} {symbols}, more than the {D} a sample has by default: give "
            f"--length (over {kept}; this {model.family} goes on past D={D})"
        )
    raise DarmError(f"{flag}{which} has {kept} {symbols}; this {model.family} sees at most {D}")


def default_length(model, meta: dict, kept: int) -> int:
    """Length of a drawn sequence when --length is not given: the model's D, but audio from a
    model that goes on past D runs one second past what is kept (a second to listen to, not
    a D-sample click)."""
    if meta.get("kind") == "audio" and model.max_dims is None:
        return kept + meta["source"]["sample_rate"]
    return model.num_dims


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
