"""Image data: built-in MNIST sets, a user's folder of PNGs (grey or RGB, classes from
sub-folders), uint8 arrays quantised to L levels, and the PNG grid of channels."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from darm.cli import main
from darm.data import load_data
from darm.data.images import quantise
from darm.errors import DarmError
from darm.plots import image_grid
from tests.conftest import one_line_error, write_pngs


def eval_json(capsys, *argv) -> dict:
    """What `darm eval ARGV --json` reports (its last line)."""
    capsys.readouterr()
    assert main(["eval", *map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out.splitlines()[-1])


def mean_nats(run, x, labels=None) -> float:
    """-log p(x | labels) of the run's best checkpoint, averaged over the examples of x."""
    from darm import load_checkpoint, log_prob

    model, _, _ = load_checkpoint(run)
    return -log_prob(model, x, labels).sum().item() / len(x)


def every_split(data) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x, y) of a folder read whole: its train, valid and test examples in that order."""
    splits = [data[s] for s in ("train", "valid", "test")]
    y = None if splits[0].y is None else torch.cat([s.y for s in splits])
    return torch.cat([s.x for s in splits]), y


def test_quantise_bins_are_equal_width():
    pixels = np.arange(256, dtype=np.uint8)
    q = quantise(pixels, 4)
    assert q.min() == 0 and q.max() == 3
    assert [int((q == v).sum()) for v in range(4)] == [64] * 4
    assert np.array_equal(quantise(pixels, 256), pixels)
    with pytest.raises(DarmError, match="levels"):
        quantise(pixels, 1)


def test_binarized_mnist_official_split():
    data = load_data("binarized_mnist")
    assert [len(data[s]) for s in ("train", "valid", "test")] == [50000, 10000, 10000]
    assert data.vocab_size == 2 and data.seq_len == 784 and data.image_shape == (28, 28)
    assert data.num_classes == 0 and int(data["test"].x.max()) == 1


def test_mnist_levels_and_labels():
    data = load_data("mnist", levels=8)
    assert data.vocab_size == 8 and data.num_classes == 10
    assert [len(data[s]) for s in ("train", "valid", "test")] == [50000, 10000, 10000]
    assert int(data["train"].x.max()) == 7


def _train_markov(data, out, *extra):
    """A tiny markov, two steps on `data` into `out`: a checkpoint for the reading tests."""
    argv = ["train", "--data", str(data), "--model", "markov", "--set", "n_hidden=8",
            "--steps", "2", "--out", str(out), "--quiet", "--samples", "0", *extra]  # fmt: skip
    assert main(argv) == 0


def test_folder_of_grey_pngs(tmp_path):
    write_pngs(tmp_path / "imgs", 20)
    data = load_data(str(tmp_path / "imgs"), levels=4)
    assert data.kind == "image" and data.image_shape == (4, 5) and data.vocab_size == 4
    assert sum(len(data[s]) for s in ("train", "valid", "test")) == 20
    assert data.num_classes == 0


def test_the_summary_says_what_reading_the_pictures_changed(tmp_path):
    """Transparency dropped and grey pictures read as RGB are said; a grey folder, or an RGB
    one, read as it is says nothing."""
    write_pngs(tmp_path / "grey", 3)
    assert "read as" not in load_data(str(tmp_path / "grey")).summary()
    write_pngs(tmp_path / "rgb", 3, mode="RGB")
    assert load_data(str(tmp_path / "rgb")).caveat == ""
    write_pngs(tmp_path / "mixed", 3)  # grey, then a colour and a transparent picture
    rgba = np.random.default_rng(1).integers(0, 256, (4, 5, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "mixed" / "t.png")
    Image.fromarray(rgba[..., :3], "RGB").save(tmp_path / "mixed" / "c.png")
    data = load_data(str(tmp_path / "mixed"))
    assert data.image_shape == (4, 5, 3)
    assert data.summary().endswith(
        "; the transparency of 1 image dropped; 3 grey images read as RGB (equal channels)"
    )


def test_channels_first_arrays_are_refused_for_a_new_model(tmp_path, capsys):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (30, 3, 12, 6), dtype=np.uint8)  # PyTorch's (N, C, H, W)
    np.save(tmp_path / "chw.npy", x)
    np.save(tmp_path / "ints.npy", x.astype(np.int64) // 64)  # integer arrays, the same
    for argv in (["--format", "images"], []):
        for command in ("train", "compare", "bench"):
            data = str(tmp_path / ("chw.npy" if argv else "ints.npy"))
            out = [] if command == "bench" else ["--out", str(tmp_path / "r")]
            code = main([command, "--data", data, *argv, *out])
            err = one_line_error(
                capsys, code, 1, "examples of shape (3, 12, 6) look like (C, H, W)"
            )
            assert "save np.moveaxis(x, 1, -1)" in err
    np.save(tmp_path / "hwc.npy", x.transpose(0, 2, 3, 1))  # channels last: 12x6 RGB
    assert main(["train", "--data", str(tmp_path / "hwc.npy"), "--format", "images", "--model",
                 "markov", "--steps", "1", "--out", str(tmp_path / "ok"), "--quiet",
                 "--samples", "0"]) == 0  # fmt: skip


def test_a_trained_model_reads_other_pictures_in_its_own_channels(tmp_path, capsys):
    write_pngs(tmp_path / "rgb", 6, size=(5, 4), mode="RGB")
    write_pngs(tmp_path / "grey", 2, size=(5, 4))
    out = tmp_path / "r"
    _train_markov(tmp_path / "rgb", out, "--levels", "4")
    assert eval_json(capsys, out, "--data", tmp_path / "grey")["dims"] == 2 * 4 * 5 * 3


def test_symbols_read_as_intensities_all_zero_are_said_to_be(tmp_path, capsys):
    """A model of pictures reads a uint8 .npy as intensities: its own symbols (0..3 of 4
    levels) would bin to 0 everywhere, and eval says so, naming --format array, which reads
    them as symbols."""
    write_pngs(tmp_path / "grey", 6, size=(5, 4))
    out = tmp_path / "r"
    _train_markov(tmp_path / "grey", out, "--levels", "4")
    symbols = np.random.default_rng(0).integers(0, 4, (3, 4, 5)).astype(np.uint8)
    np.save(tmp_path / "sym.npy", symbols)
    capsys.readouterr()
    assert main(["eval", str(out), "--data", str(tmp_path / "sym.npy")]) == 0
    said = capsys.readouterr().out
    assert "every value read as 0: as intensities 0..255 binned into 4 levels; if they" in said
    assert "are the model's symbols already, --format array reads them as they are" in said
    argv = ["eval", str(out), "--data", str(tmp_path / "sym.npy"), "--format", "array"]
    assert main(argv) == 0
    assert "read as 0" not in capsys.readouterr().out


def test_colour_pictures_read_by_a_grey_model_are_said_to_be_made_grey(tmp_path, capsys):
    """eval and complete read another picture in the model's channels, and say so."""
    write_pngs(tmp_path / "grey", 6, size=(5, 4))
    write_pngs(tmp_path / "rgb", 2, size=(5, 4), mode="RGB")
    out = tmp_path / "r"
    _train_markov(tmp_path / "grey", out, "--levels", "4")
    capsys.readouterr()
    assert main(["eval", str(out), "--data", str(tmp_path / "rgb")]) == 0
    assert "on rgb (2 colour images read as grey)" in capsys.readouterr().out
    assert main(["eval", str(out), "--data", str(tmp_path / "grey")]) == 0
    assert "read as" not in capsys.readouterr().out  # grey read as grey: nothing to say
    picture = tmp_path / "rgb" / "0.png"
    argv = ["complete", str(out), "--input", str(picture), "--rows", "2", "--out",
            str(tmp_path / "c")]  # fmt: skip
    assert main(argv) == 0
    assert f"note: {picture}: 1 colour image read as grey, as the model reads" in (
        capsys.readouterr().err
    )


def test_palette_images_are_grey_when_their_colours_are(tmp_path):
    # GIFs (and P-mode PNGs) hold a palette: grey ones are one channel, coloured ones three
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (6, 8, 1), dtype=np.uint8).repeat(3, axis=2)  # R = G = B
    for i in range(3):
        Image.fromarray(np.roll(grey, i, axis=1)).quantize().save(tmp_path / f"g{i}.gif")
    data = load_data(str(tmp_path), levels=4)
    assert data.image_shape == (6, 8) and data.seq_len == 48
    images = torch.cat([data[s].x for s in ("train", "valid", "test")])
    assert any(torch.equal(row, torch.from_numpy(quantise(grey[..., 0], 4)).flatten().long())
               for row in images)  # fmt: skip
    colour = grey.copy()
    colour[0, 0] = (255, 0, 0)
    Image.fromarray(colour).quantize().save(tmp_path / "c.gif")
    data = load_data(str(tmp_path), levels=4)
    assert data.image_shape == (6, 8, 3)
    assert data.caveat == "3 grey images read as RGB (equal channels)"  # the grey palettes


def test_folder_of_rgb_pngs_with_classes(tmp_path):
    write_pngs(tmp_path / "imgs", 12, mode="RGB", classes=["cat", "dog", "eel"])
    data = load_data(str(tmp_path / "imgs"), levels=16)
    assert data.image_shape == (4, 5, 3) and data.seq_len == 60
    assert data.class_names == ["cat", "dog", "eel"] and "(0=cat, 1=dog, 2=eel)" in data.summary()
    assert data.num_classes == 3
    write_pngs(tmp_path / "imgs" / ".ipynb_checkpoints", 3, mode="RGB")  # hidden: no class
    (tmp_path / "imgs" / "dog" / ".0.png").write_bytes(b"not a png")  # a hidden file: unread
    again = load_data(str(tmp_path / "imgs"), levels=16)
    assert again.class_names == data.class_names and torch.equal(again["test"].x, data["test"].x)
    # raster order, channels innermost: pixel (0, 1)'s green is x[:, (0 * 5 + 1) * 3 + 1]
    first = sorted((tmp_path / "imgs").rglob("*.png"))[0]
    rgb = quantise(np.asarray(Image.open(first)), 16)
    assert any(
        np.array_equal(row.numpy(), rgb.reshape(-1))
        for s in ("train", "valid", "test")
        for row in data[s].x
    )


def test_a_class_folder_linked_in_is_a_class(tmp_path):
    """A class sub-folder that is a link to a folder elsewhere is read as the others are (a
    link back up the tree is not walked; a class linked in under a second name is refused)."""
    write_pngs(tmp_path / "imgs", 8, mode="RGB", classes=["cat", "dog"])
    write_pngs(tmp_path / "elsewhere" / "eel", 4, mode="RGB")
    (tmp_path / "imgs" / "eel").symlink_to(tmp_path / "elsewhere" / "eel")
    (tmp_path / "imgs" / "cat" / "up").symlink_to(tmp_path / "imgs")  # a cycle
    data = load_data(str(tmp_path / "imgs"), levels=16)
    assert data.class_names == ["cat", "dog", "eel"]
    assert sum(len(data[s]) for s in ("train", "valid", "test")) == 12
    (tmp_path / "imgs" / "kitty").symlink_to(tmp_path / "imgs" / "cat")  # one class, two names
    with pytest.raises(DarmError, match=r"imgs/(kitty|cat) and .*imgs/(cat|kitty) are one folder"):
        load_data(str(tmp_path / "imgs"), levels=16)


def test_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DarmError, match="holds 0 images"):
        load_data(str(tmp_path / "empty"))
    write_pngs(tmp_path / "mixed", 4)
    Image.new("L", (7, 9)).save(tmp_path / "mixed" / "z.png")  # 9 rows of 7 among 4 of 5
    with pytest.raises(DarmError, match=r"z.png is 9x7 \(rows x columns\), but 0.png is 4x5;"):
        load_data(str(tmp_path / "mixed"))
    (tmp_path / "mixed" / "z.png").write_bytes(b"not a png")
    with pytest.raises(DarmError, match="cannot read image"):
        load_data(str(tmp_path / "mixed"))
    frames = [Image.new("L", (5, 4), v) for v in (0, 80, 160)]
    frames[0].save(tmp_path / "mixed" / "z.gif", save_all=True, append_images=frames[1:])
    (tmp_path / "mixed" / "z.png").unlink()
    with pytest.raises(DarmError, match="z.gif holds 3 pictures .*save each frame as its own"):
        load_data(str(tmp_path / "mixed"))  # not the first frame alone, two dropped unseen
    write_pngs(tmp_path / "both", 4, classes=["a"])
    write_pngs(tmp_path / "both", 3)  # and some at the top
    with pytest.raises(DarmError, match="images at its top and in sub-folders"):
        load_data(str(tmp_path / "both"))
    (tmp_path / "my.txt").write_text("hello\n")
    with pytest.raises(DarmError, match="reads a folder of images or an .npy/.npz"):
        load_data(str(tmp_path / "my.txt"), format="images")


def test_pictures_too_large_for_pillow_are_refused_in_a_line(tmp_path, capsys, monkeypatch):
    write_pngs(tmp_path / "big", 4)  # 4x5: "large" once Pillow's limit is 5 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5)  # refused above twice the limit
    with pytest.raises(DarmError, match="cannot read image .*0.png: Image size"):
        load_data(str(tmp_path / "big"))
    code = main(["train", "--data", str(tmp_path / "big"), "--out", str(tmp_path / "r")])
    one_line_error(capsys, code, needle="could be decompression bomb")


def test_uint8_npz_images_are_quantised(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (30, 6, 6, 3), dtype=np.uint8)
    np.savez(tmp_path / "rgb.npz", x=x)
    data = load_data(str(tmp_path / "rgb.npz"), format="images", levels=4)
    assert data.image_shape == (6, 6, 3) and data.vocab_size == 4
    np.save(tmp_path / "bad.npy", x.astype(np.float32))
    with pytest.raises(DarmError, match="uint8"):
        load_data(str(tmp_path / "bad.npy"), format="images")
    np.save(tmp_path / "five.npy", x[:, :4, :4, :2].reshape(30, 4, 4, 1, 2))  # 5-D
    with pytest.raises(DarmError, match=r"images must be \(N, H, W\) or \(N, H, W, C\)"):
        load_data(str(tmp_path / "five.npy"), format="images")
    with pytest.raises(DarmError, match=r"each example must be \(D,\), \(H, W\) or \(H, W, C\)"):
        load_data(str(tmp_path / "five.npy"))  # as integer arrays
    np.save(tmp_path / "hwc5.npy", x[:, :4, :4, :1].repeat(5, axis=3))  # 4x4, 5 channels
    assert load_data(str(tmp_path / "hwc5.npy"), format="images").image_shape == (4, 4, 5)
    # scored whole by a trained model, one picture is enough and lands in test, quantised
    np.save(tmp_path / "one.npy", x[:1])
    one = load_data(str(tmp_path / "one.npy"), format="images", levels=4, whole=True)
    assert (len(one["train"]), len(one["valid"]), len(one["test"])) == (0, 0, 1)
    assert torch.equal(one["test"].x[0], torch.from_numpy(x[0].reshape(-1) // 64))
    with pytest.raises(DarmError, match="N >= 3"):  # but a split needs three
        load_data(str(tmp_path / "one.npy"), format="images", levels=4)
    np.save(tmp_path / "hw.npy", x[0, ..., 0])  # one grey (H, W) picture: no split to name
    with pytest.raises(DarmError, match=r"^hw.npy: .* got rows of 6 values \(one picture is "):
        load_data(str(tmp_path / "hw.npy"), format="images", whole=True)


def test_rgb_grid_is_colour():
    x = torch.zeros(4, 3, 3, 3, dtype=torch.long)
    x[..., 0] = 3  # all red
    img = image_grid(x, 4, scale=1)
    assert img.mode == "RGB" and img.getpixel((1, 1)) == (255, 0, 0)


def test_cli_trains_pixelcnn_on_a_png_folder(tmp_path, capsys):
    write_pngs(tmp_path / "imgs", 24, size=(4, 4), mode="RGB", classes=["a", "b"])
    out = tmp_path / "run"
    args = ["train", "--data", str(tmp_path / "imgs"), "--levels", "4", "--model", "pixelcnn"]
    args += ["--set", "n_hidden=12", "--set", "n_layer=1", "--steps", "3", "--batch-size", "8"]
    args += ["--conditional", "--out", str(out), "--samples", "4", "--quiet"]
    assert main(args) == 0
    assert (out / "samples.png").exists()
    assert "nats/image" in capsys.readouterr().out
    assert main(["sample", str(out), "-n", "2", "--label", "1", "--out", str(tmp_path / "s")]) == 0
    assert Image.open(tmp_path / "s.png").mode == "RGB"
    # a class by its sub-folder's name draws what its number draws
    assert main(["sample", str(out), "-n", "2", "--label", "b", "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b.png").read_bytes() == (tmp_path / "s.png").read_bytes()
    capsys.readouterr()
    assert main(["sample", str(out), "--label", "c"]) == 1
    assert "--label 'c' is not a class of this model (its classes: a, b)" in capsys.readouterr().err


def test_eval_on_another_folder_matches_classes_by_name(tmp_path, capsys):
    import shutil

    write_pngs(tmp_path / "imgs", 24, size=(3, 3), classes=["1", "10", "2"])
    out = tmp_path / "run"
    _train_markov(tmp_path / "imgs", out, "--levels", "2", "--conditional")
    shutil.copytree(tmp_path / "imgs" / "2", tmp_path / "sub" / "2")  # one class of three
    got = eval_json(capsys, out, "--data", tmp_path / "sub")
    images, _ = every_split(load_data(str(tmp_path / "sub"), levels=2))
    label = torch.full((len(images),), 2)  # "2" is class 2 of ["1", "10", "2"], not class 0
    assert got["nats_per_example"] == pytest.approx(mean_nats(out, images, label), rel=1e-5)
    # classes all named by numbers: a number is a name, never an index (0 would be folder 1)
    got = eval_json(capsys, out, "--data", tmp_path / "sub", "--label", "2")
    assert (got["label"], got["class"]) == (2, "2")
    assert main(["eval", str(out), "--data", str(tmp_path / "sub"), "--label", "0"]) == 1
    assert "--label '0' is not a class of this model (its classes: 1, 10, 2)" in (
        capsys.readouterr().err
    )
    (tmp_path / "sub" / "2").rename(tmp_path / "sub" / "7")
    assert main(["eval", str(out), "--data", str(tmp_path / "sub")]) == 1
    assert "classes the model was not trained on: 7" in capsys.readouterr().err
    # a model without labels reads none: the folder's classes may be named anything
    _train_markov(tmp_path / "imgs", tmp_path / "plain", "--levels", "2")
    got = eval_json(capsys, tmp_path / "plain", "--data", tmp_path / "sub")
    assert got["nats_per_example"] == pytest.approx(mean_nats(tmp_path / "plain", images), rel=1e-5)
    shutil.copytree(tmp_path / "sub" / "7", tmp_path / "imgs" / "7")  # its own, with a class more
    assert main(["eval", str(tmp_path / "plain")]) == 0
    assert "has changed since the run read it" in capsys.readouterr().err  # (said, not refused)


def test_sub_folders_name_the_classes_of_a_model_that_numbers_them(tmp_path, capsys):
    out = tmp_path / "run"  # digits' classes are numbers, without names
    _train_markov("digits", out, "--conditional")
    write_pngs(tmp_path / "mine", 4, size=(8, 8), classes=["3", "7"])
    got = eval_json(capsys, out, "--data", tmp_path / "mine")
    images, y = every_split(load_data(str(tmp_path / "mine"), levels=17))
    want = mean_nats(out, images, torch.tensor([3, 7])[y])  # not classes 0 and 1
    assert got["nats_per_example"] == pytest.approx(want, rel=1e-5)
    # the per-example rows name each picture's class as its folder does
    assert main(["eval", str(out), "--data", str(tmp_path / "mine"), "--per-example",
                 str(tmp_path / "p.csv")]) == 0  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert [(r["file"], r["label"]) for r in rows] == [  # which picture, of which class
        ("3/0.png", "3"), ("3/2.png", "3"), ("7/1.png", "7"), ("7/3.png", "7")
    ]  # fmt: skip
    (tmp_path / "mine" / "7").rename(tmp_path / "mine" / "seven")
    assert main(["eval", str(out), "--data", str(tmp_path / "mine")]) == 1
    assert "classes the model was not trained on: seven" in capsys.readouterr().err
    # with --label the folders' names go unused: any layout is scored as that class
    got = eval_json(capsys, out, "--data", tmp_path / "mine", "--label", "3",
                    "--per-example", tmp_path / "q.csv")  # fmt: skip
    as_3 = mean_nats(out, images, torch.full((4,), 3))
    assert got["nats_per_example"] == pytest.approx(as_3, rel=1e-5)
    assert [r["label"] for r in csv.DictReader((tmp_path / "q.csv").open())] == ["3"] * 4


def test_a_run_fine_tuned_on_some_classes_reloads_them_by_name(tmp_path, capsys):
    import shutil

    write_pngs(tmp_path / "imgs", 24, size=(3, 3), classes=["1", "10", "2"])
    base = ["--levels", "2", "--quiet", "--samples", "0"]
    argv = ["train", "--data", str(tmp_path / "imgs"), "--model", "markov", "--set", "n_hidden=8",
            "--conditional", "--steps", "2", "--out", str(tmp_path / "a"), *base]  # fmt: skip
    assert main(argv) == 0
    for c in ("10", "2"):  # two classes of three: the folder alone numbers them 0, 1
        shutil.copytree(tmp_path / "imgs" / c, tmp_path / "sub" / c)
    argv = ["train", "--init", str(tmp_path / "a"), "--data", str(tmp_path / "sub"),
            "--steps", "1", "--out", str(tmp_path / "b"), *base]  # fmt: skip
    assert main(argv) == 0
    # eval re-reads the fine-tuning folder from the checkpoint's record: labels by name again
    got = eval_json(capsys, tmp_path / "b", "--split", "test")
    test = load_data(str(tmp_path / "sub"), levels=2)["test"]
    label = torch.tensor([1, 2])[test.y]  # "10" -> 1 and "2" -> 2 of ["1", "10", "2"]
    assert got["nats_per_example"] == pytest.approx(
        mean_nats(tmp_path / "b", test.x, label), rel=1e-5
    )


def test_16_bit_grey_is_scaled_to_8_bits(tmp_path):
    from darm.data.images import read_pixels

    wide = np.arange(0, 65536, 4369, dtype=np.uint16).reshape(4, 4)  # 0 .. 65535 in 16 steps
    Image.fromarray(wide).save(tmp_path / "g.png")
    assert Image.open(tmp_path / "g.png").mode == "I;16"  # Pillow clips this in convert("L")
    assert read_pixels(tmp_path / "g.png", "L").ravel().tolist() == list(range(0, 256, 17))
    assert read_pixels(tmp_path / "g.png", "RGB")[-1, -1].tolist() == [255, 255, 255]
    for i in range(3):
        Image.fromarray(wide).save(tmp_path / f"{i}.png")
    data = load_data(str(tmp_path), levels=16)
    assert int(data["train"].x.max()) == 15 and int(data["train"].x.min()) == 0


def test_pictures_are_turned_upright_as_their_exif_orientation_says(tmp_path):
    """A phone photo stored sideways with an Orientation tag (6: turn it 90 degrees clockwise
    to view) is read as it is viewed: in a folder of training data, and read again (complete
    --input, eval and deps of a picture file)."""
    from darm.complete import read_images

    stored = np.arange(6, dtype=np.uint8).reshape(2, 3) * 40  # 2 rows x 3 columns, as stored
    upright = np.rot90(stored, k=-1)  # (3, 2): turned clockwise, as the picture is viewed
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF tag 274: Orientation
    for suffix in ("png", "jpg"):  # (a JPEG's pixels are lossy: its shape is what is checked)
        Image.fromarray(stored).save(tmp_path / f"side.{suffix}", exif=exif)
    picture = tmp_path / "side.png"
    assert read_images(picture, (3, 2), 256).tolist() == [upright.ravel().tolist()]
    (tmp_path / "pics").mkdir()
    for i in range(3):
        Image.fromarray(stored).save(tmp_path / "pics" / f"{i}.png", exif=exif)
    (tmp_path / "pics" / "3.jpg").write_bytes((tmp_path / "side.jpg").read_bytes())
    data = load_data(str(tmp_path / "pics"))
    assert tuple(data.image_shape) == (3, 2)
    x, _ = every_split(data)
    files = [f for s in ("train", "valid", "test") for f in data.info["files"][s]]
    pngs = torch.tensor([f.endswith(".png") for f in files])
    assert (x[pngs] == torch.from_numpy(upright.ravel().astype(np.int64))).all()


def test_a_run_of_pictures_from_before_the_turning_reads_them_as_stored(tmp_path, capsys):
    """A run trained before darm turned pictures upright recorded no `upright`: its folder
    is read again as stored (same sizes, splits and digest: no "has changed" warning), and
    so are other pictures given to it. A new run reads them upright; a size mismatch
    that the turning makes says so."""
    from darm.checkpoint import record_sha256
    from darm.data.dataset import digest
    from darm.data.images import image_folder_dataset

    exif = Image.Exif()
    exif[0x0112] = 6  # turn 90 degrees clockwise to view
    stored = np.arange(24, dtype=np.uint8).reshape(4, 6) * 10  # 4 rows x 6 columns
    (tmp_path / "side").mkdir()
    for i in range(12):
        Image.fromarray(np.roll(stored, i)).save(tmp_path / "side" / f"{i}.png", exif=exif)
    out = tmp_path / "run"
    argv = ["train", "--data", str(tmp_path / "side"), "--model", "markov", "--levels", "4",
            "--steps", "2", "--samples", "0", "--quiet", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    as_stored = image_folder_dataset(tmp_path / "side", 4, upright=False)
    for name in ("best.json", "last.json"):  # as a run saved before the turning
        record = json.loads((out / name).read_text())
        assert record["data"]["source"].pop("upright") is True
        assert record["data"]["image_shape"][:2] == [6, 4]  # this run read them upright
        record["data"]["image_shape"][:2] = [4, 6]
        record["data"]["digest"] = digest(as_stored)
        record["sha256"]["record"] = record_sha256(record)
        (out / name).write_text(json.dumps(record))
    from darm.checkpoint import load_checkpoint
    from darm.data import load_from_source

    _, record, _ = load_checkpoint(out)
    data = load_from_source(record["data"], 24, out)
    assert tuple(data.image_shape[:2]) == (4, 6)  # as stored, as the old run read it
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0
    assert main(["train", "--resume", "--out", str(out), "--steps", "4", "--quiet"]) == 0
    assert "changed" not in capsys.readouterr().err
    from darm.reread import read_pictures

    Image.fromarray(stored).save(tmp_path / "one.png", exif=exif)
    model, record, _ = load_checkpoint(out)
    assert read_pictures(tmp_path / "one.png", model, record["data"]).image_shape[:2] == (4, 6)
    Image.fromarray(stored).save(tmp_path / "side" / "0.png")  # no tag: 4x6 upright
    with pytest.raises(DarmError, match=r"is 6x4 \(rows x columns\) \(turned upright by its EXIF"):
        load_data(str(tmp_path / "side"))


def test_float_and_32_bit_pictures_are_read_whole_or_refused(tmp_path):
    from darm.data.images import read_pixels

    levels = np.arange(0, 256, 17, dtype=np.float32).reshape(4, 4)
    Image.fromarray(levels).save(tmp_path / "f.tif")  # mode F, whole values: read as they are
    assert read_pixels(tmp_path / "f.tif", "L").ravel().tolist() == list(range(0, 256, 17))
    Image.fromarray(levels / 255).save(tmp_path / "unit.tif")  # 0..1: convert("L") clips to 0
    with pytest.raises(DarmError, match=r"floating-point pixels in 0\.\.1; darm reads whole"):
        read_pixels(tmp_path / "unit.tif", "L")
    Image.fromarray(levels * np.nan).save(tmp_path / "nan.tif")
    with pytest.raises(DarmError, match="NaN or infinite pixels"):
        read_pixels(tmp_path / "nan.tif", "L")
    for name, wide in [
        ("i.tif", levels.astype(np.int32) << 20),
        ("low.tif", levels.astype(np.int32)),
    ]:
        Image.fromarray(wide).save(tmp_path / name)  # mode I, 32 bits a pixel, whatever it holds
        with pytest.raises(DarmError, match="holds 32-bit integer pixels; darm reads 8- and 16"):
            read_pixels(tmp_path / name, "L")


def test_big_endian_16_bit_tiffs_are_grey(tmp_path):
    wide = np.arange(0, 65536, 4369, dtype=">u2").reshape(4, 4)  # 0 .. 65535 in 16 steps
    for i in range(4):
        Image.frombytes("I;16B", (4, 4), wide.tobytes()).save(tmp_path / f"{i}.tif")
    assert Image.open(tmp_path / "0.tif").mode == "I;16B"
    data = load_data(str(tmp_path), levels=16)
    assert tuple(data.image_shape) == (4, 4) and data.seq_len == 16  # not (4, 4, 3)
    assert data["train"].x[0].tolist() == list(range(16))


def test_a_training_split_of_one_symbol_is_warned_of(tmp_path, capsys):
    (tmp_path / "pics").mkdir()
    for i in range(4):  # 16-bit values under 256: all 0 once scaled to 8 bits
        picture = np.full((4, 4), 200 + i, dtype=np.uint16)
        Image.fromarray(picture).save(tmp_path / "pics" / f"{i}.png")
    argv = ["train", "--data", str(tmp_path / "pics"), "--model", "markov", "--steps", "1",
            "--out", str(tmp_path / "r"), "--quiet", "--samples", "0"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "every symbol of the training split is 0, so there is nothing to learn" in err
    assert "values under 256 read as 0" in err


def test_a_run_folder_inside_its_image_folder_is_refused(tmp_path, capsys):
    write_pngs(tmp_path / "imgs", 6, size=(3, 3))
    argv = ["train", "--data", str(tmp_path / "imgs"), "--model", "bigram", "--steps", "1",
            "--out", str(tmp_path / "imgs" / "run"), "--quiet", "--samples", "0"]  # fmt: skip
    assert main(argv) == 1
    assert "is inside the data folder" in capsys.readouterr().err
    assert not (tmp_path / "imgs" / "run").exists()  # refused before any work
    argv[argv.index("--out") + 1] = str(tmp_path / "run")
    assert main(argv) == 0
    # fine-tuning reads the checkpoint's folder: a run inside it is refused as well
    argv = ["train", "--init", str(tmp_path / "run"), "--steps", "1", "--quiet", "--samples", "0",
            "--out", str(tmp_path / "imgs" / "ft")]  # fmt: skip
    assert main(argv) == 1
    assert "is inside the data folder" in capsys.readouterr().err


def test_eval_scores_one_picture_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the refused train's default run folder: not in the repository
    from darm.complete import read_images

    write_pngs(tmp_path / "imgs", 6, size=(3, 3))
    out = tmp_path / "run"
    _train_markov(tmp_path / "imgs", out, "--levels", "4")
    picture = tmp_path / "imgs" / "0.png"
    got = eval_json(capsys, out, "--data", picture)
    x = read_images(picture, (3, 3, 1), 4)  # (1, D), quantised as the run's images were
    assert got["examples"] == 1 and got["dims"] == 9
    assert got["nats_per_example"] == pytest.approx(mean_nats(out, x))
    capsys.readouterr()
    assert main(["train", "--data", str(picture), "--quiet"]) == 1  # training needs a folder
    assert "is one image; give the folder" in capsys.readouterr().err


def test_conditional_on_one_class_is_warned_of(tmp_path, capsys):
    write_pngs(tmp_path / "one", 6, classes=["only"])
    argv = ["train", "--data", str(tmp_path / "one"), "--levels", "2", "--model", "markov",
            "--set", "n_hidden=8", "--conditional", "--steps", "1", "--out", str(tmp_path / "r"),
            "--quiet", "--samples", "0"]  # fmt: skip
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "1 class (0=only)" in out
    assert "warning: --conditional: one has 1 class, so the label tells the model nothing" in err


def test_conditional_on_labels_with_gaps_is_warned_of(tmp_path, capsys):
    import numpy as np

    y = np.where(np.arange(30) % 2, 1000, 0)  # two classes, numbered 0 and 1000
    np.savez(tmp_path / "gaps.npz", x=np.zeros((30, 4), int) + (y[:, None] > 0), y=y)
    argv = ["train", "--data", str(tmp_path / "gaps.npz"), "--model", "markov", "--set",
            "n_hidden=8", "--conditional", "--steps", "1", "--out", str(tmp_path / "r"),
            "--quiet", "--samples", "0"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert (
        "gaps has 1001 classes (its largest label + 1), of which only 2 occur: "
        "number its labels 0..1" in err
    ), err


def test_classes_only_held_out_are_noted(tmp_path, capsys):
    """A class no training example holds: a conditional model never learns p(x | y) of it,
    and training says which (named, as a folder's sub-folders name them); quiet otherwise."""
    write_pngs(tmp_path / "pics", 12, classes=["cat", "dog"])
    (tmp_path / "pics" / "cheetah").mkdir()
    (tmp_path / "pics" / "cat" / "8.png").rename(tmp_path / "pics" / "cheetah" / "8.png")
    cheetah = [s for s, files in load_data(str(tmp_path / "pics")).info["files"].items()
               if "cheetah/8.png" in files]  # fmt: skip
    assert cheetah == ["valid"]  # where the seeded split puts it
    argv = ["train", "--data", str(tmp_path / "pics"), "--levels", "2", "--model", "markov",
            "--set", "n_hidden=8", "--conditional", "--steps", "1", "--out", str(tmp_path / "r"),
            "--quiet", "--samples", "0"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "note: 1 class only in valid / test, never trained on: 1=cheetah (valid)" in err, err
    rng = np.random.default_rng(0)
    arrays = {
        f"x_{s}": rng.integers(0, 2, (n, 4)) for s, n in [("train", 8), ("valid", 4), ("test", 4)]
    }
    labels = {"y_train": [0, 1] * 4, "y_valid": [0, 1, 2, 2], "y_test": [0, 1, 3, 2]}
    np.savez(tmp_path / "y.npz", **arrays, **{k: np.array(v) for k, v in labels.items()})
    argv[2], argv[argv.index("--out") + 1] = str(tmp_path / "y.npz"), str(tmp_path / "y")
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert (
        "note: 2 classes only in valid / test, never trained on: 2 (valid and test), 3 (test)"
        in err
    ), err
    labels["y_train"] = [0, 1, 2, 3] * 2  # every class trained on: nothing to say
    np.savez(tmp_path / "y.npz", **arrays, **{k: np.array(v) for k, v in labels.items()})
    argv[argv.index("--out") + 1] = str(tmp_path / "y2")
    assert main(argv) == 0
    assert "only in valid / test" not in capsys.readouterr().err
