"""Data read again for a trained model: a checkpoint's own data, or another file read as
the checkpoint's was (its vocabulary, levels, blocks and labels), checked against the model."""

from __future__ import annotations

from pathlib import Path

from darm.complete import read_images
from darm.data import (
    BUILTIN,
    FIXED_LEVELS,
    SPLITS,
    bundled_name,
    check_rereadable,
    image_channels,
    load_data,
    located,
)
from darm.data.arrays import make_dataset
from darm.data.dataset import relabel_by_name
from darm.data.images import IMAGE_SUFFIXES, reads_upright
from darm.data.vocab import saved_vocab
from darm.errors import DarmError
from darm.prompts import label_tensor


def own_data(meta: dict, path: Path) -> str:
    """The name or path of the data a checkpoint was trained on, to read it again with other
    data options (--init --block 1024), checked as --data would be."""
    source = located(meta["source"], path.parent)
    check_rereadable(source)
    spec = source.get("name") if source.get("format") == "builtin" else source.get("path")
    spec = bundled_name(source) or spec  # `speech`, as it was named, not its file
    if spec is None:
        raise DarmError(
            f"{path} was trained on arrays in memory: name them (saved with np.save) with "
            f"--data to read them with other options"
        )
    return spec


def read_like(
    spec,
    model,
    meta,
    fmt=None,
    block=None,
    levels=None,
    seed=None,
    whole=False,
    labels=True,
    any_length=False,
):
    """Other data read the way a checkpoint's was: in its format unless `fmt` says otherwise
    (a corpus model reads a .txt as a corpus, not as lines), in blocks of its D, with its
    vocabulary, its L levels (a file whose largest value is below L is still L levels) and
    its image channels, split with its seed unless `seed` says otherwise (so eval and deps
    of a copy of the run's data under another name split it as the run did). whole: to be
    scored whole (see load_data). labels: the data's labels are put in the model's
    numbering (refused if they name classes it lacks); False when they go unused (eval
    --label gives every example one). any_length: lines as long as the file's longest,
    where the model scores any length (`max_dims` None: to be scored, not trained on)."""
    if fmt is None:
        fmt = meta["source"].get("format")
        # a built-in's, or arrays in memory: the file is read by what it is
        fmt = None if fmt in ("builtin", "memory") or spec in BUILTIN else fmt
    vocab = saved_vocab(meta)
    seed = meta["source"].get("seed", 42) if seed is None else seed
    D, L = model.num_dims, model.vocab_size
    if levels is None and spec not in FIXED_LEVELS:  # a built-in with its own L keeps it, and
        levels = L  # check_fits then names the mismatch (not a --levels nobody passed)
    max_len = None if any_length and model.max_dims is None else D
    data = load_data(
        spec, fmt, D if block is None else block, levels, seed, vocab, max_len=max_len,
        whole=whole,
        channels=image_channels(meta), upright=reads_upright(meta["source"]),
    )  # fmt: skip
    intensities = fmt == "images" and Path(spec).suffix.lower() in (".npy", ".npz")
    if intensities and not any(data[s].x.any() for s in SPLITS):  # values < 256 / L bin to 0
        blank = (
            f"every value read as 0: as intensities 0..255 binned into {L} levels; if they "
            f"are the model's symbols already, --format array reads them as they are"
        )
        data.caveat = "; ".join(filter(None, [data.caveat, blank]))
    if not labels or not model.num_classes:  # an unconditional model reads no labels: a
        return data  # folder's sub-folders may be named anything
    return relabel_by_name(data, meta.get("class_names"), model.num_classes)


TEXT = ("lines", "corpus")
KINDS = {"lines": "text, one item a line", "corpus": "continuous text", "array": "integer arrays",
         "image": "images", "audio": "audio"}  # fmt: skip


def check_fits(
    data, model, path, meta: dict | None = None, scoring: bool = True, any_length: bool = False
) -> None:
    """The data must have the checkpoint's L symbols and D dimensions (and its sample rate,
    for audio), and labels of its classes if the model is conditional. scoring: the data is
    to be scored (eval, complete), where --label stands in for missing labels. any_length:
    any D will do for a model that scores any length (`max_dims` None), on data of the kind
    it was trained on (lines, say: not pictures for a model of text)."""
    theirs = tuple((meta or {}).get("image_shape") or ())  # the images it was trained on
    if data.image_shape and theirs and tuple(data.image_shape)[:2] != theirs[:2]:
        size, trained = ("x".join(map(str, s[:2])) for s in (data.image_shape, theirs))
        raise DarmError(f"{data.name} holds {size} images; {path} was trained on {trained}")
    rate = data.info.get("sample_rate")
    trained_rate = (meta or {}).get("source", {}).get("sample_rate")
    if rate and trained_rate and rate != trained_rate:  # the same samples, another sound
        raise DarmError(
            f"{data.name} is {rate} Hz audio; {path} was trained on {trained_rate} Hz audio"
        )
    # only what differs: data read for a checkpoint is padded to its D where it can be
    ours = {"L": (data.vocab_size, model.vocab_size), "D": (data.seq_len, model.num_dims)}
    if any_length and model.max_dims is None and data.kind == (meta or {}).get("kind"):
        del ours["D"]
    differ = {k: v for k, v in ours.items() if v[0] != v[1]}
    trained_kind = (meta or {}).get("kind")
    if differ and trained_kind in KINDS and (data.kind in TEXT) != (trained_kind in TEXT):
        # text for a model of pictures, say: the kinds say more than the sizes
        raise DarmError(f"{data.name} is {KINDS[data.kind]}; {path} was trained on "
                        f"{KINDS[trained_kind]}")  # fmt: skip
    if differ:
        kinds = ""  # lines for a model of a corpus, say: the sizes differ by the reading
        if trained_kind in KINDS and data.kind != trained_kind:
            kinds = f" (read as {KINDS[data.kind]}; it was trained on {KINDS[trained_kind]})"
        elif "D" in differ and model.max_dims is not None:
            kinds = fixed_length_note(model, meta or {})
        raise DarmError(
            f"{data.name} has {', '.join(f'{k}={v[0]}' for k, v in differ.items())}; {path} was "
            f"trained with {', '.join(f'{k}={v[1]}' for k, v in differ.items())}{kinds}"
        )
    # a file's class count is its largest label + 1: fewer classes than the model's is fine
    if model.num_classes and not 1 <= data.num_classes <= model.num_classes:
        raise DarmError(
            f"{path} is conditional on {model.num_classes} classes; the data has "
            f"{data.num_classes or 'no labels'}"
            + (
                " (eval, complete and deps take --label for all of it)"
                if scoring and not data.num_classes
                else ""
            )
        )


def fixed_length_note(model, meta: dict) -> str:
    """Why a model with a context limit takes no other D, and how its run met its own: a
    gpt's learned positions exist for 0..seq_len-1 only; corpus and audio were cut to D by
    --block, which names it where a user would change it."""
    if len(model.event_shape) != 1:  # an image's raster
        return f" (a {model.family} reads exactly its D, unlike markov, rnn and wavenet)"
    block = meta.get("source", {}).get("block")
    used = f"; the run used --block {block}" if block else ""
    fixed = "'s learned positions fix its D" if model.family == "gpt" else " reads exactly its D"
    return (
        f" (a {model.family}{fixed} at seq_len={model.num_dims}, unlike markov, rnn and "
        f"wavenet{used})"
    )


def is_picture_file(spec: str) -> bool:
    """Whether --data names one picture file (a picture, or a grid `darm sample` wrote)."""
    return Path(spec).is_file() and Path(spec).suffix.lower() in IMAGE_SUFFIXES


def read_pictures(path: Path, model, meta: dict):
    """A picture file as test data for an image model: the picture, or each picture of a
    grid `darm sample` wrote (as `complete --input` reads them)."""
    shape = tuple(meta["image_shape"])
    x = read_images(path, shape, model.vocab_size, reads_upright(meta["source"])).numpy()  # (N, D)
    empty = x[:0]
    return make_dataset(
        path.name,
        {"train": empty, "valid": empty, "test": x},
        dict.fromkeys(("train", "valid", "test")),
        model.vocab_size,
        shape,
        {"format": "images", "path": str(path.resolve())},
        f"{len(x)} picture{'s' * (len(x) != 1)} from {path.name}, scored whole",
    )


def label_all(data, model, label: str, meta: dict):
    """Give every example of every split the one class `label` (a name or a number, as
    --label takes it), to be scored or mapped as p(x | y = label); returns it as (1,)."""
    y = label_tensor(model, label, 1, meta.get("class_names"))
    for s in SPLITS:
        data[s].y = y.expand(len(data[s]))  # (N,) the one label
    data.num_classes, data.class_names = model.num_classes, meta.get("class_names")
    return y
