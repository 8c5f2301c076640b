"""Property-based tests of the loaders and vocabularies: whatever the file holds (random
bytes, empty lines, any unicode, huge lines, wrong shapes, wrong dtypes), loading gives a
DarmError or a dataset that holds exactly the file's content, never a crash or a silent
change."""

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from darm.data import load_data
from darm.data.arrays import MAX_LEVELS
from darm.data.text import corpus_dataset, lines_dataset
from darm.data.vocab import EOS, Vocabulary
from darm.errors import DarmError

FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
# any code point that can be written as UTF-8 (lone surrogates cannot)
CHARS = st.characters(blacklist_categories=("Cs",))
SPLITS = ("train", "valid", "test")


def write(data: bytes | str, suffix: str = ".txt") -> Path:
    path = Path(tempfile.mkdtemp()) / f"data{suffix}"
    if isinstance(data, str):
        path.write_bytes(data.encode("utf-8"))
    else:
        path.write_bytes(data)
    return path


def universal_newlines(text: str) -> str:
    """Text as Python reads a text file: CR LF and CR become LF."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def text_lines(text: str) -> list[str]:
    """What a line dataset must hold: distinct stripped non-empty lines, as Python reads
    text files (universal newlines), cut at "\n" alone (as `wc -l` counts): U+2028, form
    feeds and the like stay inside an item."""
    text = universal_newlines(text)
    return list(dict.fromkeys(s.strip() for s in text.split("\n") if s.strip()))


def items_of(ds) -> list[str]:
    out = []
    for s in SPLITS:
        split = ds[s]
        for row, mask in zip(split.x, split.mask):
            n = int(mask.sum())
            assert mask[:n].all() and not mask[n:].any(), "mask is not a prefix"
            assert row[n - 1] == ds.eos and (row[: n - 1] != ds.eos).all()
            assert (row[n:] == ds.eos).all(), "padding is not the end symbol"
            out.append(ds.vocab.decode(row[: n - 1].tolist()))
    return out


# -- vocabularies --------------------------------------------------------------------------


@FUZZ
@given(st.lists(st.text(CHARS, max_size=30), max_size=5), st.booleans(), st.text(CHARS))
def test_vocabulary_round_trip(texts, eos, probe):
    chars = set("".join(texts)) - ({EOS} if eos else set())
    if not chars and not eos:
        with pytest.raises(DarmError):
            Vocabulary.from_text(texts, eos=eos)
        return
    vocab = Vocabulary.from_text(texts, eos=eos)
    assert len(vocab) == len(chars) + eos and (not eos or vocab.symbols[0] == EOS)
    for t in texts:
        t = t.replace(EOS, "") if eos else t
        ids = vocab.encode(t)
        assert all(0 <= i < len(vocab) for i in ids) and vocab.decode(ids) == t
    if set(probe) <= set(vocab.symbols):
        assert vocab.decode(vocab.encode(probe)) == probe
    else:
        with pytest.raises(DarmError, match="not in the vocabulary"):
            vocab.encode(probe)


@FUZZ
@given(st.lists(st.one_of(st.text(CHARS, max_size=3), st.integers(), st.none()), max_size=6))
def test_vocabulary_from_any_symbol_list(symbols):
    """A vocabulary read back from a checkpoint: single distinct characters, or an error."""
    ok = (
        symbols
        and all(isinstance(s, str) and len(s) == 1 for s in symbols)
        and len(set(symbols)) == len(symbols)
    )
    if not ok:
        with pytest.raises(DarmError):
            Vocabulary(symbols)
        return
    vocab = Vocabulary(symbols)
    assert vocab.decode(vocab.encode("".join(symbols))) == "".join(symbols)


# -- text files ----------------------------------------------------------------------------

LINE = st.text(CHARS, max_size=12)
HUGE = st.builds(lambda c, n: c * n, CHARS, st.integers(100, 3000))  # one symbol, repeated
SEPARATOR = st.sampled_from(["\n", "\r\n", "\r"])
LINES_TEXT = st.lists(st.one_of(LINE, st.just(""), st.just("  "), HUGE), max_size=12).flatmap(
    lambda lines: SEPARATOR.map(lambda sep: sep.join(lines))
)


@FUZZ
@given(LINES_TEXT)
def test_lines_dataset_holds_exactly_the_distinct_lines(text):
    path = write(text)
    expected = text_lines(text)
    try:
        ds = lines_dataset(path)
    except DarmError as e:
        assert len(expected) < 3 or "vocabulary" in str(e), e
        return
    assert len(expected) >= 3
    items = items_of(ds)
    assert sorted(items) == sorted(expected)
    assert ds.seq_len == max(len(s) for s in expected) + 1


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_as_lines_or_corpus(data):
    for load in (lambda p: lines_dataset(p), lambda p: corpus_dataset(p, block=4)):
        try:
            ds = load(write(data))
        except DarmError:
            continue
        text = data.decode("utf-8")  # only UTF-8 may load
        if ds.kind == "lines":
            assert sorted(items_of(ds)) == sorted(text_lines(text))
        else:
            stream = torch.cat([ds[s].stream for s in SPLITS])
            assert ds.vocab.decode(stream.tolist()) == universal_newlines(text)


@FUZZ
@given(st.one_of(st.text(CHARS, max_size=30), st.text(CHARS, min_size=300, max_size=800)),
       st.integers(-2, 25))  # fmt: skip
def test_corpus_dataset_covers_the_text_once(text, block):
    path = write(text)
    try:
        ds = corpus_dataset(path, block)
    except DarmError:
        event("refused")
        # a refusal must be warranted: with >= 20 (block + 1) symbols each split (90/5/5)
        # holds a whole block and its target
        n = len(universal_newlines(text))
        assert block < 1 or not text.strip() or n < 20 * (block + 1)
        return
    event("loaded")
    assert block >= 1
    stream = torch.cat([ds[s].stream for s in SPLITS])
    assert ds.vocab.decode(stream.tolist()) == universal_newlines(text)
    for s in SPLITS:
        split = ds[s]
        flat = split.x[split.mask] if split.mask is not None else split.x.flatten()
        assert torch.equal(flat, split.stream), "eval blocks must cover the split once"
    x, _, _ = ds["train"].batch(3, 5, seed=1)
    assert x.shape == (5, block) and int(x.max()) < ds.vocab_size


def test_huge_line_is_refused_before_padding_everything(tmp_path):
    """One huge line would pad every item to its length: refuse rather than allocate."""
    path = tmp_path / "lines.txt"
    path.write_text("\n".join(f"item{i}" for i in range(3000)) + "\n" + "x" * 200_000)
    with pytest.raises(DarmError, match="--format corpus"):
        lines_dataset(path)


# -- integer arrays ------------------------------------------------------------------------

DTYPES = st.sampled_from(
    [np.int8, np.uint8, np.int16, np.int32, np.int64, np.uint32, np.uint64, np.float32,
     np.float64, np.bool_, np.complex64, "<U2", "m8[s]", "M8[D]"]
)  # fmt: skip
# N up to 40 rows: a seeded 80/10/10 split needs N >= 6 for one valid and one test row
SHAPES = st.one_of(
    hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    st.builds(
        lambda n, rest: (n, *rest),
        st.integers(0, 40),
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
    ),
)
MOSTLY_VALID = hnp.arrays(
    st.sampled_from([np.uint8, np.int64, np.uint16]),
    hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=4).map(lambda s: (8, *s[1:])),
    elements=st.integers(0, 40),
)
ARRAYS = st.one_of(st.tuples(DTYPES, SHAPES).flatmap(lambda a: hnp.arrays(*a)), MOSTLY_VALID)


def valid_symbols(a: np.ndarray, levels: int | None = None) -> bool:
    """What an array of symbols must be, stated apart from the loader, so that a test can tell
    a warranted refusal from a loader that refuses good data."""
    if a.dtype.kind not in "iub" or a.ndim < 2 or len(a) == 0 or a[0].size == 0:
        return False
    if levels is not None and not 1 <= levels <= MAX_LEVELS:
        return False
    return int(a.min()) >= 0 and int(a.max()) < (levels or MAX_LEVELS)


def check_array_dataset(ds, xs: dict, levels=None):
    """Every split holds its rows in raster order as int64 symbols below L."""
    for s in SPLITS:
        split = ds[s]
        assert split.x.dtype == torch.long and split.x.shape[1] == ds.seq_len
        assert int(split.x.min()) >= 0 and int(split.x.max()) < ds.vocab_size
        if xs.get(s) is not None:
            want = torch.from_numpy(xs[s].reshape(len(xs[s]), -1).astype(np.int64))
            assert torch.equal(split.x, want)
    if levels is not None:
        assert ds.vocab_size == levels


@FUZZ
@given(ARRAYS, st.one_of(st.none(), st.integers(-1, 300)))
def test_npy_any_dtype_and_shape(x, levels):
    path = write(b"", ".npy")
    np.save(path, x)
    try:
        ds = load_data(str(path), levels=levels)
    except DarmError:
        event("refused")
        assert not (valid_symbols(x, levels) and len(x) >= 3)
        return
    event("loaded")
    assert np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_
    assert x.ndim >= 2 and len(x) >= 3 and x[0].size > 0
    all_rows = torch.cat([ds[s].x for s in SPLITS])
    want = torch.from_numpy(x.reshape(len(x), -1).astype(np.int64))
    assert sorted(map(tuple, all_rows.tolist())) == sorted(map(tuple, want.tolist()))
    assert int(want.max()) < ds.vocab_size and (levels is None or ds.vocab_size == levels)


SPLIT_ARRAY = hnp.arrays(
    st.sampled_from([np.uint8, np.int64, np.uint64, np.bool_, np.float32]),
    st.tuples(st.integers(0, 4), st.integers(1, 3)),
    elements=None,
)
LABEL_DTYPES = st.sampled_from([np.int64, np.uint8, np.float32, np.int8])


@st.composite
def npz_splits(draw):
    """x_train / x_valid / x_test, and labels that are mostly right: all or none, one per
    row; now and then a wrong length, shape, dtype or sign."""
    xs = {f"x_{s}": draw(SPLIT_ARRAY) for s in SPLITS}
    ys = {}
    if draw(st.booleans()):
        for s in SPLITS:
            n = len(xs[f"x_{s}"])
            shape = draw(st.one_of(st.just((n,)), hnp.array_shapes(max_dims=2, min_side=0)))
            dtype = draw(st.one_of(st.just(np.int64), LABEL_DTYPES))
            low = 0 if np.dtype(dtype).kind == "u" else -1
            ys[f"y_{s}"] = draw(hnp.arrays(dtype, shape, elements=st.integers(low, 9)))
        if draw(st.booleans()):
            ys.pop(draw(st.sampled_from(sorted(ys))))
    return xs, ys


@FUZZ
@given(npz_splits())
def test_npz_own_split_with_labels(arrays):
    xs, ys = arrays
    path = write(b"", ".npz")
    np.savez(path, **xs, **ys)
    try:
        ds = load_data(str(path))
    except DarmError:
        event("refused")
        x = {s: xs[f"x_{s}"] for s in SPLITS}
        labels_ok = not ys or (
            len(ys) == 3
            and all(
                y.ndim == 1 and y.dtype.kind in "iu" and len(y) == len(x[s]) and (y >= 0).all()
                for s, y in ((s, ys[f"y_{s}"]) for s in SPLITS)
            )
        )
        same_shape = len({a.shape[1:] for a in x.values()}) == 1
        assert not (all(valid_symbols(a) for a in x.values()) and same_shape and labels_ok)
        return
    event("loaded")
    xs = {s: xs[f"x_{s}"] for s in SPLITS}
    for s in SPLITS:
        assert np.issubdtype(xs[s].dtype, np.integer) or xs[s].dtype == np.bool_
        assert len(xs[s]) > 0
    check_array_dataset(ds, xs)
    if ds.num_classes:
        for s in SPLITS:
            y = ys[f"y_{s}"]
            assert y.ndim == 1 and np.issubdtype(y.dtype, np.integer)
            assert torch.equal(ds[s].y, torch.from_numpy(y.astype(np.int64)))
            assert int(ds[s].y.min()) >= 0 and int(ds[s].y.max()) < ds.num_classes
    else:
        assert not ys


ROWS = hnp.arrays(
    np.int64, st.tuples(st.integers(0, 12), st.integers(1, 3)), elements=st.integers(0, 5)
)
LABEL_VECTOR = hnp.arrays(np.int64, st.integers(0, 14), elements=st.integers(-1, 3))


@FUZZ
@given(ROWS, st.one_of(st.none(), LABEL_VECTOR))
def test_npz_single_array_with_labels(x, y):
    path = write(b"", ".npz")
    np.savez(path, x=x, **({} if y is None else {"y": y}))
    try:
        ds = load_data(str(path))
    except DarmError:
        event("refused")
        labels_ok = y is None or (len(y) == len(x) and (len(y) == 0 or y.min() >= 0))
        assert not (valid_symbols(x) and len(x) >= 3 and labels_ok)
        return
    event("loaded")
    assert len(x) >= 3 and (y is None or (len(y) == len(x) and y.min() >= 0))
    rows = sorted(map(tuple, torch.cat([ds[s].x for s in SPLITS]).tolist()))
    assert rows == sorted(map(tuple, x.tolist()))


def test_uint64_beyond_int64_is_refused(tmp_path):
    np.save(tmp_path / "big.npy", np.full((20, 2), 2**63 + 5, dtype=np.uint64))
    with pytest.raises(DarmError, match="levels"):
        load_data(str(tmp_path / "big.npy"))


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["lines", "corpus", "array"]), st.binary(max_size=200))
def test_load_data_any_file_any_format(fmt, data):
    """Whatever the bytes and whatever --format says: a DarmError or a dataset."""
    suffix = {"lines": ".txt", "corpus": ".txt", "array": ".npy"}[fmt]
    path = write(data, suffix)
    try:
        ds = load_data(str(path), format=fmt, block=4)
    except DarmError:
        event("refused")
        return
    event("loaded")
    assume(ds is not None)
    assert ds.vocab_size >= 1 and all(len(ds[s]) >= 1 for s in SPLITS)
