import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from darm.data import from_arrays, load_data
from darm.data.arrays import npy_rows
from darm.data.vocab import EOS, Vocabulary
from darm.errors import DarmError

NAMES_TXT = Path(__file__).resolve().parent.parent / "darm" / "datasets" / "names.txt"


def test_names_deduplicated_disjoint_split():
    ds = load_data("names")
    rows = {s: {tuple(r) for r in ds[s].x.tolist()} for s in ("train", "valid", "test")}
    assert not rows["train"] & rows["test"] and not rows["train"] & rows["valid"]
    lines = [line for line in NAMES_TXT.read_text().splitlines() if line]
    distinct = len(set(lines))  # 29494 of 32033
    assert sum(len(ds[s]) for s in rows) == distinct
    assert ds.summary().endswith(f"; {len(lines) - distinct} repeated lines dropped")  # told
    batch = ds["test"].x[:3]  # a batch decodes to one string per row, cut at the end symbol
    assert ds.decode(batch) == [ds.decode(row) for row in batch]
    assert all(s and EOS not in s for s in ds.decode(batch))
    assert ds.vocab.symbols[0] == EOS and len(ds.vocab) == 27
    # the mask scores each name's letters and its end symbol, nothing after
    x, mask = ds["test"].x[0], ds["test"].mask[0]
    n = int(mask.sum())
    assert x[n - 1] == ds.eos and (x[: n - 1] != ds.eos).all()


def test_lines_are_trimmed_and_the_summary_says_so(tmp_path):
    """Spaces around a line are not part of its item, blank lines are none, and the user is
    told how many lines lost spaces (a file of code would rather be read as a corpus)."""
    (tmp_path / "code.txt").write_text("def f(x):\n    return x\n\n\tpass\nabc\nabc \n \n")
    ds = load_data(str(tmp_path / "code.txt"))
    items = sorted(
        ds.decode(ds[s].x)[i] for s in ("train", "valid", "test") for i in range(len(ds[s]))
    )
    assert items == ["abc", "def f(x):", "pass", "return x"]
    assert (
        "(train 2, valid 1, test 1); 1 repeated line dropped; 3 lines trimmed of the spaces "
        "around them, which --format corpus keeps; " in ds.summary()  # then the unseen symbols
    )
    where = {  # each item's line in the file: the first of a repeated one
        ds.decode(ds[s].x[i : i + 1])[0]: ds.info["lines"][s][i]
        for s in ("train", "valid", "test")
        for i in range(len(ds[s]))
    }
    assert where == {"def f(x):": 1, "return x": 2, "pass": 4, "abc": 5}


def test_symbols_training_never_sees_are_pointed_out(tmp_path):
    """A symbol of held-out items alone: the summary names it (lines and corpus)."""
    names = [f"{a}{b}a" for a in "bcdfg" for b in "aeiou"] + ["zoë"]
    (tmp_path / "n.txt").write_text("\n".join(names))
    seen = set()
    for seed in range(20):  # seeds that put zoë outside train, and seeds that keep it in
        ds = load_data(str(tmp_path / "n.txt"), seed=seed)
        trained = "zoë" in ds.decode(ds["train"].x)
        held = "; 2 symbols only in valid / test ('z', 'ë'), never trained on"  # o is in bo
        assert ds.summary().endswith(held) != trained
        seen.add(trained)
    assert seen == {True, False}
    (tmp_path / "c.txt").write_text("abab" * 50 + "xyz")  # x, y, z in the last 10%: test
    ds = load_data(str(tmp_path / "c.txt"), format="corpus", block=4)
    assert ds.caveat == "3 symbols only in valid / test ('x', 'y', 'z'), never trained on"
    assert load_data(str(tmp_path / "c.txt"), format="corpus", block=4, whole=True).caveat == ""
    # read for a trained model (its vocabulary), the file's own training split is not the
    # model's: eval --data OTHER --split test once named symbols the model had trained on
    vocab = ds.vocab
    assert load_data(str(tmp_path / "c.txt"), format="corpus", block=4, vocab=vocab).caveat == ""
    seed = next(s for s in range(20) if load_data(str(tmp_path / "n.txt"), seed=s).caveat)
    lines = load_data(str(tmp_path / "n.txt"), seed=seed)
    assert load_data(str(tmp_path / "n.txt"), seed=seed, vocab=lines.vocab).caveat == ""


def test_a_few_values_under_a_large_maximum_are_pointed_out(tmp_path):
    """L comes from the largest value; when few of the L values occur, the summary says so."""
    a = np.random.default_rng(0).integers(0, 6, (30, 3))
    a[0, 0] = 100_000  # an ID, say
    np.save(tmp_path / "ids.npy", a)
    summary = load_data(str(tmp_path / "ids.npy")).summary()
    assert "L=100001" in summary and "only 7 distinct values occur: map them to 0..6" in summary
    np.save(tmp_path / "dense.npy", np.arange(3000).reshape(300, 10) % 1000)  # all 1000 occur
    assert "distinct" not in load_data(str(tmp_path / "dense.npy")).summary()


def test_only_text_decodes():
    with pytest.raises(DarmError, match=r"digits is image data, not text.*x.tolist\(\)"):
        load_data("digits").decode(torch.zeros(2, 64, dtype=torch.long))


def test_names_split_is_fixed():
    a, b = load_data("names"), load_data("names")
    assert torch.equal(a["test"].x, b["test"].x)


def test_digits_split_and_levels():
    ds = load_data("digits")
    assert [len(ds[s]) for s in ("train", "valid", "test")] == [1000, 350, 447]
    assert ds.vocab_size == 17 and ds.seq_len == 64 and ds.image_shape == (8, 8)
    assert int(ds["train"].x.max()) == 16 and ds.num_classes == 10


def test_lines_end_at_newlines_only(tmp_path):
    # a line separator, a next-line and a form feed inside an item do not cut it in two
    path = tmp_path / "items.txt"
    path.write_bytes("alpha\u2028beta\r\ngamma\x0cdelta\nepsilon\u0085x\rzeta\n".encode())
    data = load_data(str(path))
    items = sorted(s for split in ("train", "valid", "test") for s in data.decode(data[split].x))
    assert items == ["alpha\u2028beta", "epsilon\u0085x", "gamma\x0cdelta", "zeta"]


def test_lines_scored_whole_keep_repeats(tmp_path):
    # deduplication keeps a repeat out of train and test both; a file scored whole by a
    # trained model has no train split, and each line counts as often as the file holds it
    path = tmp_path / "dup.txt"
    path.write_text("anna\nanna\nanna\nbob\n")
    data = load_data(str(path), whole=True)
    assert data.decode(data["test"].x) == ["anna", "anna", "anna", "bob"]
    assert not data.caveat


def test_corpus_eval_covers_every_symbol_once(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("abcdefghij" * 100)
    ds = load_data(str(path), format="corpus", block=16)
    for split in ("valid", "test"):
        s = ds[split]
        assert s.num_dims() == len(s.stream)
        flat = s.x[s.mask].tolist() if s.mask is not None else s.x.flatten().tolist()
        assert flat == s.stream.tolist()
    x, _, _ = ds["train"].batch(0, 5, seed=1)
    assert x.shape == (5, 16)


def test_training_batches_are_a_function_of_step():
    ds = load_data("digits")
    a = ds["train"].batch(17, 32, seed=3)[0]
    ds2 = load_data("digits")
    ds2["train"].batch(3, 32, seed=3)  # different history, same answer
    assert torch.equal(ds2["train"].batch(17, 32, seed=3)[0], a)
    # ... and of the seed, even when the split already served another seed's epoch
    b = load_data("digits")["train"].batch(17, 32, seed=4)[0]
    assert torch.equal(ds["train"].batch(17, 32, seed=4)[0], b) and not torch.equal(a, b)


def test_an_epoch_of_training_batches_shows_every_example_once():
    from darm.data.splits import TensorSplit

    N, B = 103, 10  # 10 batches an epoch, the last 3 examples of each epoch's order dropped
    split = TensorSplit(torch.arange(N)[:, None])  # each row its own index
    epochs = [torch.cat([split.batch(s, B, 0)[0][:, 0] for s in range(e * 10, e * 10 + 10)])
              for e in range(2)]  # fmt: skip
    for seen in epochs:
        assert len(seen) == 100 and len(set(seen.tolist())) == 100  # no example twice
    assert not torch.equal(epochs[0], epochs[1])  # each epoch shuffled anew


def test_corpus_training_crops_are_windows_of_the_stream(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "c.txt").write_text("".join(rng.choice(list("abcdefgh \n"), size=3000)))
    split = load_data(str(tmp_path / "c.txt"), format="corpus", block=32)["train"]
    windows = {tuple(w) for w in split.stream.unfold(0, 32, 1).tolist()}  # (n - 31, 32)
    starts = set()
    for step in range(3):
        x, _, _ = split.batch(step, 16, seed=0)
        assert all(tuple(row) in windows for row in x.tolist())  # the text as it reads
        starts |= {tuple(row) for row in x.tolist()}
    assert len(starts) == 48  # 48 different crops, not one repeated


def test_arrays_npz_own_split_and_labels(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        f"x_{s}": rng.integers(0, 4, (n, 3, 5))
        for s, n in [("train", 9), ("valid", 4), ("test", 5)]
    }
    arrays.update(
        {f"y_{s}": rng.integers(0, 2, len(arrays[f"x_{s}"])) for s in ("train", "valid", "test")}
    )
    np.savez(tmp_path / "a.npz", **arrays)
    ds = load_data(str(tmp_path / "a.npz"))
    assert ds.kind == "image" and ds.seq_len == 15 and ds.vocab_size == 4
    assert torch.equal(ds["test"].x, torch.from_numpy(arrays["x_test"].reshape(5, 15)))
    assert ds.num_classes == 2
    arrays["y_test"][2] = -3  # a class is an index: named with the value that is not
    np.savez(tmp_path / "a.npz", **arrays)
    with pytest.raises(DarmError, match="^a.npz: test labels must be >= 0, got -3"):
        load_data(str(tmp_path / "a.npz"))


def test_arrays_in_memory_read_as_their_file_would(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 6, (40, 3, 4)), rng.integers(0, 3, 40)
    np.savez(tmp_path / "a.npz", x=x, y=y)
    saved = load_data(str(tmp_path / "a.npz"))
    for data in (from_arrays(x, y), from_arrays(torch.from_numpy(x), torch.from_numpy(y))):
        assert (data.kind, data.vocab_size, data.seq_len, data.image_shape) == (
            "image",
            6,
            12,
            (3, 4),
        )
        assert data.num_classes == 3 and data.source["format"] == "memory"
        for s in ("train", "valid", "test"):  # the same seeded split as the file's
            assert torch.equal(data[s].x, saved[s].x) and torch.equal(data[s].y, saved[s].y)
    own = from_arrays({"train": x[:30], "valid": x[30:35], "test": x[35:]}, levels=8)
    assert torch.equal(own["test"].x, torch.from_numpy(x[35:].reshape(5, 12)))
    assert own.vocab_size == 8 and own.num_classes == 0
    with pytest.raises(DarmError, match="needs exactly the keys train, valid, test"):
        from_arrays({"train": x, "test": x})
    with pytest.raises(DarmError, match="arrays: y must have shape \\(40,\\)"):
        from_arrays(x, y[:5])
    for kw, needle in [
        (dict(levels=4.5), "levels must be an integer, got 4.5"),
        (dict(levels=1), "levels must be in 2..16777216, got 1"),
        (dict(levels=True), "levels must be an integer, got True"),
        (dict(seed=1.5), "seed must be an integer in 0..2\\*\\*63-1"),
        (dict(fractions=(float("nan"), 0.1)), "fractions must be"),
        (dict(fractions=(-0.1, 0.1)), "fractions must be"),
        (dict(y={"train": y}), "x and y must both be arrays, or both dicts"),
    ]:
        with pytest.raises(DarmError, match=needle):
            from_arrays(x, **kw)
    with pytest.raises(DarmError, match="x must hold integers, got torch.bfloat16"):
        from_arrays(torch.from_numpy(x).bfloat16())


def test_a_run_on_arrays_in_memory_asks_for_its_data_by_name(tmp_path, capsys):
    from darm.cli import main
    from darm.models import create_model
    from darm.train import train
    from darm.train_config import TrainConfig

    data = from_arrays(np.random.default_rng(0).integers(0, 4, (30, 6)))
    out = tmp_path / "run"
    train(create_model("markov", data), "markov", data, TrainConfig(steps=2, batch_size=4), out,
          progress=False)  # fmt: skip
    assert main(["eval", str(out)]) == 1
    assert "trained on arrays in memory (darm.data.from_arrays)" in capsys.readouterr().err
    np.save(tmp_path / "x.npy", data["test"].x.numpy())
    assert main(["eval", str(out), "--data", str(tmp_path / "x.npy")]) == 0


@pytest.mark.parametrize(
    "array, message",
    [
        (np.array([[0.5, 1.0]] * 4), "integers"),
        (np.array([[-1, 2]] * 4), "negative"),
        (np.arange(4), "shape"),
    ],
)
def test_arrays_bad_input(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(DarmError, match=message):
        load_data(str(tmp_path / "bad.npy"))


def test_archives_that_hold_more_than_arrays_are_refused_in_a_line(tmp_path):
    with zipfile.ZipFile(tmp_path / "notes.npz", "w") as z:  # np.load reads x.txt as bytes
        z.writestr("x.txt", "hello")
    with pytest.raises(DarmError, match=r"notes.npz: the archive's member 'x.txt' is not an"):
        load_data(str(tmp_path / "notes.npz"))
    np.savez(tmp_path / "a.npz", x=np.zeros((5, 3), int))
    (tmp_path / "a.npy").write_bytes((tmp_path / "a.npz").read_bytes())
    with pytest.raises(DarmError, match="a.npy is an .npz archive under an .npy name"):
        load_data(str(tmp_path / "a.npy"))
    np.save(tmp_path / "b.npy", np.zeros((5, 3), int))
    (tmp_path / "b.npz").write_bytes((tmp_path / "b.npy").read_bytes())
    with pytest.raises(DarmError, match="b.npz is an .npy array under an .npz name"):
        load_data(str(tmp_path / "b.npz"))
    # labels under y beside the data's own split: which split each belongs to is unknown
    rows = {f"x_{s}": np.zeros((3, 2), int) for s in ("train", "valid", "test")}
    np.savez(tmp_path / "own.npz", **rows, y=np.zeros(9, int))
    with pytest.raises(DarmError, match="labels under y: give them as y_train/y_valid/y_test"):
        load_data(str(tmp_path / "own.npz"))
    np.savez(tmp_path / "labels.npz", y=np.zeros(9, int))
    with pytest.raises(DarmError, match="labels.npz holds only y, the labels: the examples go"):
        load_data(str(tmp_path / "labels.npz"))
    np.savez(tmp_path / "objects.npz", x=np.array([[1, "a"]], dtype=object))
    with pytest.raises(DarmError, match="objects.npz holds an object array .*: save integers"):
        load_data(str(tmp_path / "objects.npz"))
    (tmp_path / "t.npy").write_text("hello\n")
    with pytest.raises(DarmError, match="not a NumPy array file .* darm never unpickles"):
        load_data(str(tmp_path / "t.npy"))
    with pytest.raises(DarmError, match="--prompt: .*t.npy is not a NumPy array file"):
        npy_rows(tmp_path / "t.npy", "--prompt")  # not numpy's advice to allow pickles


def test_array_levels_too_small(tmp_path):
    np.save(tmp_path / "a.npy", np.full((5, 3), 7))
    with pytest.raises(DarmError, match="outside the 4 levels"):
        load_data(str(tmp_path / "a.npy"), levels=4)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DarmError, match="no data file"):
        load_data(str(tmp_path / "nope.txt"))
    (tmp_path / "empty.txt").write_text("  \n\n")
    with pytest.raises(DarmError, match="empty"):
        load_data(str(tmp_path / "empty.txt"))
    for device in ("/dev/zero", "/dev/null"):  # /dev/zero once filled the memory, endlessly
        if Path(device).exists():
            for format in (None, "corpus", "images"):
                with pytest.raises(DarmError, match=f"{device} is a device, not a data file"):
                    load_data(device, format=format)


def test_text_that_is_not_utf8_or_too_short_says_what_would_do(tmp_path):
    import gzip

    path = tmp_path / "t.txt"
    path.write_text("anna\nbob\ncarla\n", encoding="utf-16")
    with pytest.raises(DarmError, match=r"not UTF-8 text \(byte 0\): it looks like UTF-16 text"):
        load_data(str(path))
    path.write_bytes(gzip.compress(b"anna\nbob\ncarla\n"))
    with pytest.raises(DarmError, match="it looks like gzip-compressed data: decompress it"):
        load_data(str(path))
    path.write_bytes(
        b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x40\x1f\x00\x00\x80\x3e"
    )  # a .wav's start
    with pytest.raises(DarmError, match="it looks like a WAV file, not text"):
        load_data(str(path))
    path.write_bytes(b"caf\xe9\n")  # latin-1: no guess
    with pytest.raises(DarmError, match=r"t.txt is not UTF-8 text \(byte 3\)$"):
        load_data(str(path))
    path.write_text("abcdefghij" * 10)  # 100 symbols: 5 each for valid and test
    with pytest.raises(DarmError, match="its 100 symbols leave 5 to the smallest split; --block 4"):
        load_data(str(path), "corpus", block=8)
    assert load_data(str(path), "corpus", block=4).seq_len == 4  # and so it is


def test_a_bom_is_not_a_symbol_and_text_is_not_an_array(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfanna\nbob\ncarla\n")  # as some editors save UTF-8
    data = load_data(str(path))
    assert "\ufeff" not in data.vocab.symbols
    # two such files joined by cat: the second's BOM starts a line, and is no symbol either
    path.write_bytes(b"\xef\xbb\xbfanna\nbob\n\xef\xbb\xbfanna\ncarla\ndan\n")
    joined = load_data(str(path))
    assert "\ufeff" not in joined.vocab.symbols and "1 repeated line dropped" in joined.summary()
    assert "trimmed" not in joined.summary()  # no spaces were: a BOM is no part of a line
    with pytest.raises(DarmError, match="integer arrays come in .npy or .npz files, not bom.txt"):
        load_data(str(path), "array")
    with pytest.raises(DarmError, match="is a folder, not an .npy/.npz"):
        load_data(str(tmp_path), "array")


def test_vocabulary_rejects_unknown_symbols():
    v = Vocabulary.from_text(["abc"], eos=True)
    assert v.decode(v.encode("cab")) == "cab"
    with pytest.raises(DarmError, match="'z' \\(position 2\\) is not in the vocabulary"):
        v.encode("az")
    with pytest.raises(DarmError, match=r"^f.txt: symbol 'z' \(line 2, column 3\) is not in the "
                       r"vocabulary of 4 symbols: 'abc' and newline$"):  # fmt: skip
        v.encode("ab\nabz", "f.txt")


def test_a_file_with_an_unknown_symbol_is_refused_at_its_line(tmp_path):
    vocab = Vocabulary.from_text(["abc"], eos=True)
    path = tmp_path / "names.txt"
    path.write_text("abc\n\nbca\nAbc\n")  # line 4, after a blank one
    with pytest.raises(DarmError, match="names.txt line 4: symbol 'A' \\(position 1\\)"):
        load_data(str(path), vocab=vocab, whole=True)


def test_fixed_level_datasets_refuse_other_levels():
    with pytest.raises(DarmError, match="digits has its own 17 levels"):
        load_data("digits", levels=8)
    assert load_data("digits", levels=17).vocab_size == 17


def test_array_errors_name_the_file_or_its_own_splits_key(tmp_path):
    np.save(tmp_path / "a.npy", np.array([[0, 1, 3]] * 5))
    with pytest.raises(DarmError, match=r"^a.npy has value 3, outside the 2 levels 0..1$"):
        load_data(str(tmp_path / "a.npy"), levels=2)  # no "train": the file was one array
    np.save(tmp_path / "f.npy", np.zeros((5, 3)))
    with pytest.raises(DarmError, match=r"^f.npy must hold integers, got dtype float64$"):
        load_data(str(tmp_path / "f.npy"))
    np.savez(tmp_path / "s.npz", x_train=np.zeros((3, 2), int), x_valid=np.zeros((3, 2)),
             x_test=np.zeros((3, 2), int))  # fmt: skip
    with pytest.raises(DarmError, match=r"^s.npz x_valid must hold integers"):
        load_data(str(tmp_path / "s.npz"))


def test_evaluate_names_the_shape_before_a_label(tmp_path):
    """Another model's data with labels the model lacks: the shape is the mismatch named."""
    from darm.metrics import evaluate
    from darm.models import create_model

    rng = np.random.default_rng(0)
    data = from_arrays(rng.integers(0, 7, (50, 20)), rng.integers(0, 3, 50))
    model = create_model("pixelcnn", num_classes=2, vocab_size=2, image_shape=(8, 8), seq_len=64)
    with pytest.raises(ValueError, match=r"x must be \(B, 64\), .* got shape \(5, 20\)"):
        evaluate(model, data["test"])


def test_uint8_pictures_and_labels_under_another_key_get_a_hint(tmp_path, capsys, monkeypatch):
    from darm.cli import main

    monkeypatch.chdir(tmp_path)  # the refused runs' default folders: not in the repository

    np.save(tmp_path / "u8.npy", np.full((20, 4, 4), 200, dtype=np.uint8))
    assert main(["train", "--data", str(tmp_path / "u8.npy"), "--levels", "4"]) == 1
    assert "(uint8 pictures? --format images bins 0..255 into the levels)" in (
        capsys.readouterr().err
    )
    with pytest.raises(DarmError, match=r"pictures\? darm.data.images.quantise\(x, levels\)"):
        from_arrays(np.full((20, 4, 4), 200, dtype=np.uint8), levels=4)  # in Python's terms
    np.savez(tmp_path / "xl.npz", x=np.zeros((20, 5), int), labels=np.zeros(20, int))
    assert main(["train", "--data", str(tmp_path / "xl.npz"), "--conditional"]) == 1
    assert "has none (an .npz holds them under the key y, or y_train" in capsys.readouterr().err


def test_a_backslash_n_typed_in_a_shell_is_explained():
    from darm.data.vocab import Vocabulary

    v = Vocabulary(["\n", "a", "b"])
    with pytest.raises(DarmError, match=r"symbol '\\' \(position 2\) is not in the vocabulary "
                       r"of 3 symbols: 'ab' and newline \(a shell passes \\n as two"):  # fmt: skip
        v.encode("a\\nb", "--prompt")


def test_a_dataset_prints_as_its_summary_and_a_split_as_its_shapes():
    """print(data) in a notebook: one line (a lines file's info holds a number per item)."""
    data = load_data("names")
    assert repr(data) == f"<Dataset {data.summary()}>"
    test = data["test"]
    n, D = test.x.shape
    scored = int(test.mask.sum())
    assert (
        repr(test)
        == f"<TensorSplit of {n} examples: x ({n}, {D}), {scored} of {n * D} dims scored>"
    )
    assert repr(load_data("digits")["test"]) == (
        "<TensorSplit of 447 examples: x (447, 64), labels (447,)>"
    )
