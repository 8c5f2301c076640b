"""Completion: the known part is kept, the rest sampled; images, text and bad input."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from darm.cli import main
from darm.complete import complete
from tests.conftest import TINY_MARKOV, one_line_error, tiny_model


@pytest.mark.parametrize("name", ["gated_pixelcnn@2x3x1", "gpt", "lstm"])
def test_complete_keeps_the_known_part(name):
    model = tiny_model(name)
    D = model.num_dims
    known = torch.randint(0, 5, (3, D // 2))
    x = complete(model, known, 4, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 4, *model.event_shape)  # as `sample` shapes them: images as images
    x = x.reshape(3, 4, D)  # (3, 4, *event_shape) -> (3, 4, D)
    assert torch.equal(x[:, :, : D // 2], known[:, None].expand(3, 4, D // 2))
    assert len({tuple(r) for r in x[:, :, D // 2 :].reshape(12, -1).tolist()}) > 1


def test_complete_takes_an_images_top_rows_as_rows():
    model = tiny_model("gated_pixelcnn@3x2x1")  # H=3, W=2, C=1
    top = torch.randint(0, 5, (2, 1, 2, 1))  # (N, rows, W, C): the top row of 2 images
    x = complete(model, top, 3, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 3, 3, 2, 1) and torch.equal(
        x[:, :, :1], top[:, None].expand_as(x[:, :, :1])
    )
    flat = complete(model, top.reshape(2, 2), 3, num_dims=6)  # a length given: flat rows
    assert flat.shape == (2, 3, 6)


def test_complete_takes_a_grey_images_rows_without_their_channel_and_one_label():
    model = tiny_model("gated_pixelcnn@3x2x1", num_classes=4)
    top = torch.randint(0, 5, (2, 1, 2))  # (N, rows, W): a grey image's top row, no C
    x = complete(model, top, 3, cond=2, generator=torch.Generator().manual_seed(0))
    want = complete(model, top[..., None], 3, cond=torch.tensor([2, 2]),
                    generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert x.shape == (2, 3, 3, 2, 1) and torch.equal(x, want)  # one label: every example's


@pytest.mark.parametrize(
    "known, k, cond, needle",
    [
        (torch.zeros(4, dtype=torch.long), 2, None, "known must be \\(N, P\\) .* shape \\(4,\\)"),
        (torch.zeros(2, 3, dtype=torch.long), 0, None, "k must be >= 1, got 0"),
        (torch.zeros(2, 3, dtype=torch.long), 2, torch.zeros(3, dtype=torch.long),
         "cond must be \\(2,\\) labels, one an example of known, got \\(3,\\)"),
    ],
)  # fmt: skip
def test_complete_names_its_own_arguments(known, k, cond, needle):
    with pytest.raises(ValueError, match=needle):
        complete(tiny_model("gpt", num_classes=4), known, k, cond=cond)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits"
    args = ["train", "--model", "gated_pixelcnn", "--set", "n_hidden=8", "--set", "n_layer=2"]
    args += ["--steps", "2", "--conditional", "--out", str(out), "--samples", "2", "--quiet"]
    assert main(args) == 0
    return out


def test_cli_completes_test_images(digits_run, capsys):
    assert main(["complete", str(digits_run), "--rows", "4", "--count", "3", "-n", "2"]) == 0
    img = Image.open(digits_run / "completions.png")
    assert img.size == ((3 * 9 + 1) * 4, (3 * 9 + 1) * 4)  # 3 columns (original + 2) x 3 rows
    assert "top 4 of 8 rows" in capsys.readouterr().out


def test_cli_completes_a_png(digits_run, tmp_path):
    Image.fromarray(np.full((8, 8), 200, dtype=np.uint8)).save(tmp_path / "in.png")
    args = ["complete", str(digits_run), "--input", str(tmp_path / "in.png"), "--label", "3"]
    assert main([*args, "--out", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c.png").exists()


def test_cli_completes_pictures_of_symbols_from_an_npy(digits_run, tmp_path, capsys):
    """An image model's --input may be an .npy of its symbols (what a picture file cannot hold
    past 256 levels): pictures (N, H, W), one (H, W), or raster rows (N, D), read alike;
    values outside its levels, or pictures of another size, refused in a line."""
    x = np.random.default_rng(0).integers(0, 17, (2, 8, 8))
    np.save(tmp_path / "two.npy", x)
    np.save(tmp_path / "rows.npy", x.reshape(2, 64))
    for name in ("two.npy", "rows.npy"):
        argv = ["complete", str(digits_run), "--input", str(tmp_path / name), "--rows", "3",
                "--label", "1", "--out", str(tmp_path / name)]  # fmt: skip
        assert main(argv) == 0
    kept = np.asarray(Image.open(tmp_path / "two.npy.png"))
    assert np.array_equal(kept, np.asarray(Image.open(tmp_path / "rows.npy.png")))
    capsys.readouterr()
    for bad, needle in [(x + 17, "has value 33, outside the model's 17 levels 0..16"),
                        (x[:, :4], "is (2, 4, 8); the model completes 8x8 pictures"),
                        (np.full((8, 8), 2**64 - 1, dtype=np.uint64),
                         "has value 18446744073709551615, outside")]:  # fmt: skip
        np.save(tmp_path / "bad.npy", bad)
        code = main(["complete", str(digits_run), "--input", str(tmp_path / "bad.npy")])
        one_line_error(capsys, code, 1, needle)


def test_cli_complete_bad_input(digits_run, tmp_path, capsys):
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(tmp_path / "small.png")
    assert main(["complete", str(digits_run), "--input", str(tmp_path / "small.png")]) == 1
    assert "5x5 (rows x columns); the model reads 8x8" in capsys.readouterr().err
    assert main(["complete", str(digits_run), "--rows", "8"]) == 1  # every row: none drawn
    assert main(["complete", str(digits_run), "--label", "12"]) == 1
    assert main(["complete", str(digits_run), "--top-p", "0"]) == 1
    err = capsys.readouterr().err
    assert "--rows must be in 0..7, got 8" in err and "--label must be in 0..9" in err
    assert "--top-p must be in (0, 1]" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("C", [2, 4])
def test_read_image_reads_alpha_channels(tmp_path, C):
    from darm.complete import read_images

    pixels = np.arange(2 * 3 * C, dtype=np.uint8).reshape(2, 3, C) * 10  # (H, W, C)
    Image.fromarray(pixels, mode={2: "LA", 4: "RGBA"}[C]).save(tmp_path / "a.png")
    x = read_images(tmp_path / "a.png", (2, 3, C), 256)
    assert x.tolist() == [pixels.reshape(-1).tolist()]  # raster order, channels inside a pixel


@pytest.mark.parametrize(
    ("shape", "levels", "n", "cols"),
    [((8, 8), 17, 5, None), ((3, 4), 2, 6, 3), ((4, 3, 3), 256, 7, None), ((2, 2), 3, 1, None)],
)
def test_a_sample_grid_reads_back_as_its_pictures(tmp_path, shape, levels, n, cols):
    from darm.complete import read_images
    from darm.plots import save_image_grid

    x = torch.randint(0, levels, (n, *shape), generator=torch.Generator().manual_seed(n))
    x[:, 0, 0] = 0  # no picture all mid-grey, which would read as an empty place
    save_image_grid(x, levels, tmp_path / "g.png", cols=cols)
    got = read_images(tmp_path / "g.png", shape, levels)
    assert torch.equal(got, x.reshape(n, -1))  # every level survives the PNG's 0..255


def test_every_level_count_reads_back_exactly_from_a_grid(tmp_path):
    from darm.complete import read_images
    from darm.plots import save_image_grid

    for L in range(2, 257):  # each level once, in a 1 x L picture
        save_image_grid(torch.arange(L).view(1, 1, L), L, tmp_path / "g.png", scale=1)
        assert read_images(tmp_path / "g.png", (1, L), L).tolist() == [list(range(L))], L


def test_a_picture_of_another_size_is_refused_in_one_line(tmp_path):
    from darm.complete import read_images
    from darm.errors import DarmError
    from darm.plots import save_image_grid

    save_image_grid(torch.zeros(4, 8, 8, dtype=torch.long), 2, tmp_path / "g.png")
    with pytest.raises(DarmError, match="the model reads 7x7 images"):
        read_images(tmp_path / "g.png", (7, 7), 2)  # a grid, but of other pictures
    # a grid shows grey + alpha as grey: it cannot be read back, and the message says so
    save_image_grid(torch.zeros(2, 3, 3, 2, dtype=torch.long), 4, tmp_path / "la.png")
    with pytest.raises(DarmError, match="a sample grid of a 2-channel model cannot be read"):
        read_images(tmp_path / "la.png", (3, 3, 2), 4)
    Image.fromarray(np.zeros((37, 37), dtype=np.uint8)).save(tmp_path / "black.png")
    with pytest.raises(DarmError, match=r"37x37 \(rows x columns\); the model reads 8x8"):
        read_images(tmp_path / "black.png", (8, 8), 2)  # a grid's size, but no grey lines


def test_cli_completes_the_pictures_of_a_sample_grid(digits_run, tmp_path, monkeypatch, capsys):
    from darm.plots import save_image_grid

    x = torch.randint(0, 17, (3, 8, 8), generator=torch.Generator().manual_seed(0))
    x[:, 0, 0] = 0  # none all mid-grey
    save_image_grid(x, 17, tmp_path / "s.png")  # as darm sample draws a digits model's
    seen = {}

    def spy(model, known, *a, **kw):
        seen["known"] = known
        return complete(model, known, *a, **kw)

    monkeypatch.setattr("darm.cli.complete.complete", spy)
    argv = ["complete", str(digits_run), "--input", str(tmp_path / "s.png"), "--label", "2"]
    assert main([*argv, "-n", "2", "--rows", "4", "--out", str(tmp_path / "c")]) == 0
    assert "top 4 of 8 rows of 3 images" in capsys.readouterr().out
    assert torch.equal(seen["known"], x.reshape(3, 64)[:, :32])  # the top 4 rows of each


def test_cli_complete_text_stops_at_the_end_symbol(tmp_path, monkeypatch, capsys):
    out = tmp_path / "names"
    args = ["train", "--data", "names", "--model", "gru", "--set", "n_hidden=16", "--steps", "2"]
    assert main([*args, "--out", str(out), "--samples", "0", "--quiet"]) == 0
    seen = {}

    def spy(*a, **kw):
        seen.update(kw)
        return complete(*a, **kw)

    monkeypatch.setattr("darm.cli.complete.complete", spy)
    assert main(["complete", str(out), "--input", "ma"]) == 0
    assert seen["stop_token"] == 0  # the names vocabulary's end symbol "\n"


def test_a_partial_last_block_is_continued_from_its_text_not_its_padding(tmp_path, monkeypatch):
    """A corpus's test split ends in a block padded past the file's end: complete keeps at
    most its real symbols (the padding, symbol 0, is no part of the text)."""
    text = "".join(chr(97 + (i * 7) % 26) for i in range(260))  # test: its last 13 symbols
    (tmp_path / "c.txt").write_text(text)
    out = tmp_path / "c"
    args = ["train", "--data", str(tmp_path / "c.txt"), "--format", "corpus", "--block", "8",
            *TINY_MARKOV, "--steps", "2", "--samples", "0", "--quiet",
            "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    prefixes = []

    def spy(model, known, *a, **kw):
        prefixes.extend(known.tolist())  # (B, P) of one length
        return complete(model, known, *a, **kw)

    monkeypatch.setattr("darm.cli.complete.complete", spy)
    assert main(["complete", str(out), "--count", "2", "--dims", "7", "-n", "1"]) == 0
    vocab = sorted(set(text))
    kept = ["".join(vocab[i] for i in row) for row in prefixes]
    assert kept == [text[-13:-6], text[-5:]]  # 7 of the full block; the partial one's 5


def test_cli_completes_text(tmp_path, capsys):
    out = tmp_path / "names"
    args = ["train", "--data", "names", "--model", "gru", "--set", "n_hidden=16", "--steps", "2"]
    assert main([*args, "--out", str(out), "--samples", "2", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["complete", str(out), "--input", "ma", "jo", "-n", "3"]) == 0
    # printed: each input, then its completions with a | where the model took over
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 8 and lines[0] == "'ma':" and lines[4] == "'jo':"
    assert all(line.startswith("  ma|") for line in lines[1:4])
    assert all(line.startswith("  jo|") for line in lines[5:8])
    # the file: plain items, each input's completions in a group (a blank line between,
    # which reading it as data skips)
    written = (out / "completions.txt").read_text().splitlines()
    assert [w[:2] for w in written] == ["ma"] * 3 + [""] + ["jo"] * 3
    from darm.data import load_data

    again = load_data(str(out / "completions.txt"), whole=True)
    assert len(again["test"]) == 6
    code = main(["complete", str(out), "--input", "M!"])
    one_line_error(capsys, code, 1, "not in the vocabulary")
    one_line_error(capsys, main(["complete", str(out), "--rows", "3"]), 1, "use --dims")
    argv = ["complete", str(out), "--input", "ma", "--dims", "1"]
    one_line_error(capsys, main(argv), 1, "with --input the whole input is kept")


def test_cli_completes_test_items_from_the_first_half_of_each(tmp_path, capsys):
    """Names are padded to D = 16: keeping D // 2 would keep whole names; half of each is kept."""
    from darm.data import load_data

    out = tmp_path / "names"
    args = ["train", "--data", "names", "--model", "gru", "--set", "n_hidden=16", "--steps", "2"]
    assert main([*args, "--out", str(out), "--samples", "0", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["complete", str(out), "--count", "3", "-n", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    data = load_data("names")
    names = [data.vocab.decode(r[: r.index(data.eos)]) for r in data["test"].x[:3].tolist()]
    assert len(lines) == 9  # per name: the kept half, then 2 completions
    for i, name in enumerate(names):
        half = name[: len(name) // 2]
        assert lines[3 * i] == repr(half) + ":"
        assert all(line.startswith(f"  {half}|") for line in lines[3 * i + 1 : 3 * i + 3])


@pytest.mark.parametrize(
    "data, written",
    [("shakespeare", "completions.txt"), ("speech", "completions.wav")],
)
def test_cli_completions_are_written_as_samples_are(data, written, tmp_path, capsys):
    """A corpus's blocks hold newlines, so completions are set apart by rules, as samples
    are; audio completions are a WAV, as audio samples are."""
    out = tmp_path / data
    args = ["train", "--data", data, "--block", "32", "--model", "markov", "--steps", "2"]
    assert main([*args, "--out", str(out), "--samples", "0", "--quiet"]) == 0
    assert main(["complete", str(out), "--count", "2", "-n", "2"]) == 0
    assert sorted(p.name for p in out.glob("completions.*")) == [written]
    if data == "shakespeare":
        assert (out / written).read_text().count("-" * 40) == 3  # between 4 completions
        shown = capsys.readouterr().out
        assert shown.count("-" * 40) == 3 and shown.count("|") >= 4  # where each took over


def test_conditional_array_samples_and_completions_name_their_class(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = np.arange(30) % 3
    x = (rng.integers(0, 2, size=(30, 5)) + y[:, None]).astype(np.int64)  # class shifts values
    np.savez(tmp_path / "a.npz", x=x, y=y)
    out = tmp_path / "r"
    argv = ["train", "--data", str(tmp_path / "a.npz"), *TINY_MARKOV, "--conditional",
            "--steps", "2", "--out", str(out), "--quiet", "--samples", "0"]  # fmt: skip
    assert main(argv) == 0
    # every class in turn, each row led by its class, then a given label on every row
    assert main(["sample", str(out), "-n", "5", "--out", str(tmp_path / "s"), "--quiet"]) == 0
    rows = (tmp_path / "s.txt").read_text().splitlines()
    assert [r.split(": ")[0] for r in rows] == ["0", "1", "2", "0", "1"]
    assert all(len(r.split(": ")[1].split()) == 5 for r in rows)
    assert main(["sample", str(out), "-n", "2", "--label", "2", "--out", str(tmp_path / "t")]) == 0
    assert [r.split(": ")[0] for r in (tmp_path / "t.txt").read_text().splitlines()] == ["2", "2"]
    # completions of test rows carry those rows' labels, each repeated for its -n draws
    capsys.readouterr()  # (the training's lines: "p(x | label)" has a | too)
    assert (
        main(["complete", str(out), "--count", "2", "-n", "2", "--out", str(tmp_path / "c")]) == 0
    )
    from darm.data import load_data

    test = load_data(str(tmp_path / "a.npz"))["test"]
    marks = [r.split(": ")[0] for r in (tmp_path / "c.txt").read_text().splitlines()]
    assert marks == [str(c) for c in test.y[:2].tolist() for _ in range(2)]
    # on the screen, a | where the model took over after the kept half (2 of 5 values)
    shown = [r for r in capsys.readouterr().out.splitlines() if " | " in r]
    assert len(shown) == 4
    for i, line in enumerate(shown):
        kept = " ".join(map(str, test.x[i // 2, :2].tolist()))
        assert line.startswith(f"{test.y[i // 2].item()}: {kept} | ")
        assert len(line.split(" | ")[1].split()) == 3


@pytest.mark.parametrize("suffix", [".png", ".tif"])  # any picture complete --input reads
def test_eval_scores_each_picture_of_a_sample_grid(suffix, digits_run, tmp_path, capsys):
    from PIL import Image

    from darm import load_checkpoint, log_prob
    from darm.plots import save_image_grid

    x = torch.randint(0, 17, (3, 8, 8), generator=torch.Generator().manual_seed(1))
    x[:, 0, 0] = 0  # none all mid-grey
    save_image_grid(x, 17, tmp_path / "s.png")
    picture = tmp_path / f"s{suffix}"
    Image.open(tmp_path / "s.png").save(picture)
    capsys.readouterr()
    argv = ["eval", str(digits_run), "--data", str(picture), "--label", "2", "--json"]
    assert main(argv) == 0
    got = json.loads(capsys.readouterr().out)
    model, _, _ = load_checkpoint(digits_run)
    want = -log_prob(model, x.reshape(3, 64), torch.full((3,), 2)).mean().item()
    assert got["examples"] == 3 and got["nats_per_example"] == pytest.approx(want, rel=1e-5)


def test_a_grid_is_scored_whole_and_an_empty_prefix_completes_from_scratch(
    digits_run, tmp_path, capsys
):
    from darm.plots import save_image_grid

    save_image_grid(torch.ones(2, 8, 8, dtype=torch.long), 17, tmp_path / "s.png")
    argv = ["eval", str(digits_run), "--data", str(tmp_path / "s.png"), "--split", "test"]
    one_line_error(capsys, main(argv), 1, "is scored whole (a picture, or a grid of them)")
    np.save(tmp_path / "a.npy", np.random.default_rng(0).integers(0, 4, size=(30, 6)))
    out = tmp_path / "r"
    argv = ["train", "--data", str(tmp_path / "a.npy"), *TINY_MARKOV, "--steps", "2",
            "--out", str(out), "--quiet", "--samples", "0"]  # fmt: skip
    assert main(argv) == 0
    assert main(["complete", str(out), "--input", "", "-n", "2", "--out", str(tmp_path / "c")]) == 0
    rows = (tmp_path / "c.txt").read_text().splitlines()
    assert len(rows) == 2 and all(len(r.split()) == 6 for r in rows)
    # asking for more test rows than there are (3 of 30) completes those, and says so
    argv = ["complete", str(out), "--count", "10", "-n", "1", "--out", str(tmp_path / "d")]
    assert main(argv) == 0
    assert "note: --count 10: the test split holds 3; completing those" in capsys.readouterr().err
    assert len((tmp_path / "d.txt").read_text().splitlines()) == 3


def test_out_with_another_kind_of_file_is_refused(digits_run, tmp_path, capsys):
    """--out of ours but not what this run writes (a .wav for pictures) is refused, not
    swapped for .png unseen; a suffix not of ours stays part of the name."""
    code = main(["sample", str(digits_run), "-n", "2", "--out", str(tmp_path / "s.wav")])
    one_line_error(capsys, code, 1, "s.wav: this writes pictures, as PNG; name it s.png")
    code = main(["complete", str(digits_run), "--out", str(tmp_path / "c.txt"), "--count", "1"])
    one_line_error(capsys, code, 1, "c.txt: this writes pictures, as PNG; name it c.png")
    code = main(["plot", str(digits_run), "--out", str(tmp_path / "l.txt")])
    one_line_error(capsys, code, 1, "l.txt: this writes pictures, as PNG; name it l.png")
    assert main(["sample", str(digits_run), "-n", "2", "--out", str(tmp_path / "s.v2")]) == 0
    assert main(["sample", str(digits_run), "-n", "2", "--out", str(tmp_path / "t.PNG")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.v2.png", "t.png"]


def test_complete_names_a_folder_given_for_a_picture_and_count_with_input(
    digits_run, tmp_path, capsys
):
    code = main(["complete", str(digits_run), "--input", str(tmp_path), "--label", "1"])
    one_line_error(capsys, code, 1, f"{tmp_path} is a folder: give its picture files")
    (tmp_path / "one.png").write_bytes((digits_run / "samples.png").read_bytes())
    code = main(["complete", str(digits_run), "--input", str(tmp_path / "one.png"), "--count", "3"])
    one_line_error(capsys, code, 1, "--count picks test examples; with --input, the inputs are")


def test_a_prompt_for_an_image_model_points_at_complete(digits_run, capsys):
    code = main(["sample", str(digits_run), "--prompt", "3", "-n", "1", "--label", "1"])
    one_line_error(capsys, code, needle="completed by darm complete RUN --input PICTURE --rows N")


@pytest.mark.parametrize("n, cols, rows", [(30, 10, 3), (144, 10, 15), (4, 2, 2)])
def test_a_conditional_sample_grid_is_near_square_in_whole_rounds_of_classes(
    n, cols, rows, digits_run, tmp_path
):
    from darm.plots import GRID_PAD

    out = tmp_path / "s"  # 10 classes: each column one class while a round fits in n
    assert main(["sample", str(digits_run), "-n", str(n), "--out", str(out)]) == 0
    side = 8 + GRID_PAD
    with Image.open(tmp_path / "s.png") as grid:
        assert grid.size == ((cols * side + GRID_PAD) * 4, (rows * side + GRID_PAD) * 4)


def test_class_columns_are_whole_rounds_nearest_square():
    from darm.outputs import class_columns

    cases = {(64, 2): 8, (50, 7): 7, (10, 3): 3, (20, 4): 4, (300, 10): 20, (16, 1): 4}
    assert {k: class_columns(*k) for k in cases} == cases


def test_a_prompt_that_leaves_nothing_to_draw_is_refused(tmp_path, capsys):
    (tmp_path / "names.txt").write_text("anna\nbob\ncarla\ndan\nemma\nfinn\ngus\nhal\n")
    out = tmp_path / "r"
    argv = ["train", "--data", str(tmp_path / "names.txt"), *TINY_MARKOV, "--steps", "1",
            "--out", str(out), "--quiet", "--samples", "0"]  # fmt: skip
    assert main(argv) == 0
    code = main(["complete", str(out), "--input", "anna", "--length", "4"])
    one_line_error(capsys, code, 1, "--length 4 leaves nothing to draw after the 4 characters kept")
    code = main(["sample", str(out), "--prompt", "anna", "--length", "4"])
    one_line_error(capsys, code, 1, "--length 4 leaves nothing to draw after the 4 characters of")
    # names of up to 5 letters: D = 6; a 6-letter prompt was echoed as if it were a sample
    code = main(["sample", str(out), "--prompt", "annaaa"])
    one_line_error(capsys, code, 1, "--prompt has 6 characters, all a sample has (D=6)")
    code = main(["complete", str(out), "--input", "an", "annaaa"])  # which of them
    one_line_error(capsys, code, 1, "--input (prompt 2 of 2) has 6 characters, all a sample has")
    # a newline ends an item: what followed it was drawn after, then cut off unseen
    for cmd, flag in (("sample", "--prompt"), ("complete", "--input")):
        code = main([cmd, str(out), flag, "an\nna"])
        one_line_error(capsys, code, 1, f"{flag} holds a newline, which ends an item")
    # --dims D of the test items keeps them whole; an item shorter than --dims is kept up to
    # its end, not with its end symbol (whose completions would all be empty)
    code = main(["complete", str(out), "--dims", "6"])  # names of up to 5 letters: D = 6
    one_line_error(capsys, code, 1, "--dims 6 keeps every dimension of D = 6: nothing is left")
    code = main(["complete", str(out), "--dims", "9"])  # the range it names holds no D
    one_line_error(capsys, code, 1, "--dims must be in 0..5, got 9")
    # a file of prompts is not read: a text model's prompt is the text itself
    (tmp_path / "prompts.txt").write_text("an\nbo\n")
    code = main(["complete", str(out), "--input", str(tmp_path / "prompts.txt")])
    one_line_error(capsys, code, 1, "prompts.txt is a file: --input of a text model is the text")
    from darm import load_checkpoint
    from darm.cli import build_parser
    from darm.cli.complete import known_part

    model, record, _ = load_checkpoint(out)
    args = build_parser().parse_args(["complete", str(out), "--dims", "5"])
    known = known_part(args, model, record["data"], out)
    eos, names = record["data"]["eos"], known.originals.tolist()
    assert known.prefixes == [x[: x.index(eos)] for x in names]  # whole names, no end symbol


def test_pictures_cannot_hold_more_than_256_levels(tmp_path):
    from darm.complete import read_images
    from darm.errors import DarmError

    Image.new("L", (4, 4)).save(tmp_path / "one.png")
    # 8-bit pixels would read back as other symbols than were drawn, without a word
    with pytest.raises(DarmError, match="have 1000 levels and a picture file's 256 at most"):
        read_images(tmp_path / "one.png", (4, 4), 1000)
    assert read_images(tmp_path / "one.png", (4, 4), 256).shape == (1, 16)
