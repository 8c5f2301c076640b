"""Dependency maps: the textbook pictures of finite memory, receptive fields and causality."""

import pytest
import torch
import torch.nn.functional as F

from darm.cli import main
from darm.deps import dependency_map, max_lag, pixel_map, plot_dependency_maps
from darm.models import create_model
from tests.conftest import one_line_error, tiny_model, write_pngs


def random_x(B, D, L, seed=0):
    return torch.randint(0, L, (B, D), generator=torch.Generator().manual_seed(seed))


def lags(D):
    d, j = torch.meshgrid(torch.arange(D), torch.arange(D), indexing="ij")
    return d - j  # (D, D): how far back j is from d


def test_strictly_lower_triangular(model_name):
    """Every registered model: exactly zero for j >= d, non-zero on the previous position."""
    L = 5
    model = tiny_model(model_name, L, 12)  # image cases ("name@HxWxC") bring their own D
    D = model.num_dims
    J = dependency_map(model, random_x(6, D, L))
    assert J.shape == (D, D)
    assert torch.equal(J.triu(), torch.zeros(D, D))
    assert (J.diagonal(-1) > 0).all()


@pytest.mark.parametrize("name, k", [("markov", 3), ("markov/n_hidden=0", 3), ("bigram", 1)])
def test_markov_band(name, k):
    """markov k=3 (MLP or log-linear table) and the bigram as registered (k=1): non-zero
    exactly on the k previous positions."""
    L, D = 5, 12
    model = tiny_model(name, L, D, **({} if name == "bigram" else {"k": k}))
    assert model.config.k == k
    J = dependency_map(model, random_x(6, D, L))
    band = (lags(D) >= 1) & (lags(D) <= k)
    assert torch.equal(J != 0, band)
    assert max_lag(J) == k


@pytest.mark.parametrize("kernel_size, dilations", [(2, (1, 2)), (3, (1, 2)), (2, (1, 2, 4))])
def test_wavenet_receptive_field(kernel_size, dilations):
    """zero beyond 1 + (kernel-1) * sum(dilations) previous positions, non-zero adjacent."""
    L, D = 5, 20
    model = tiny_model("wavenet", L, D, kernel_size=kernel_size, dilation_cycle=dilations)
    rf = model.config.receptive_field
    J = dependency_map(model, random_x(6, D, L))
    assert torch.equal(J[lags(D) > rf], torch.zeros(int((lags(D) > rf).sum())))
    assert torch.equal(J[lags(D) < 1], torch.zeros(int((lags(D) < 1).sum())))
    assert (J.diagonal(-1) > 0).all()
    assert max_lag(J) == rf  # the oldest input of the field is used too


def test_matches_one_backward_pass_per_example():
    """The batched trick equals the plain definition: per example, per d, a gradient."""
    L, D, B = 5, 8, 3
    model = tiny_model("gpt", L, D, num_classes=2)
    x, y = random_x(B, D, L, seed=3), torch.tensor([0, 1, 1])
    mask = torch.ones(B, D, dtype=torch.bool)
    mask[0, 5:] = False  # example 0 ends at 5: rows 5..7 average over examples 1 and 2 only
    expected = torch.zeros(D, D)
    for d in range(D):
        rows = []
        for b in range(B):
            soft = F.one_hot(x[b : b + 1], L).float().requires_grad_()
            logp = model(soft, y[b : b + 1]).log_softmax(-1)[0, d, x[b, d]]
            (g,) = torch.autograd.grad(logp, soft)
            if mask[b, d]:
                rows.append(g[0].norm(dim=-1))
        expected[d] = torch.stack(rows).mean(0)
    for tokens in (1 << 16, 20):  # one pass for all rows, and one row per pass
        J = dependency_map(model, x, y, mask, tokens_per_pass=tokens)
        torch.testing.assert_close(J, expected, atol=1e-6, rtol=1e-5)


def test_pixelcnn_blind_spot():
    """A plain PixelCNN ignores some pixels above and to the right of the one it predicts,
    pixels that the gated (two-stack) PixelCNN does see."""
    H = W = 8
    r, c = 5, 3
    maps = {}
    for name in ("pixelcnn", "gated_pixelcnn"):
        torch.manual_seed(0)
        model = create_model(name, vocab_size=4, seq_len=H * W, image_shape=(H, W), n_layer=3)
        maps[name] = pixel_map(dependency_map(model, random_x(4, H * W, 4)), (H, W), (r, c))
    above = torch.zeros(H, W, dtype=torch.bool)
    above[:r] = True
    blind = above & (maps["pixelcnn"] == 0) & (maps["gated_pixelcnn"] > 0)
    assert blind[:, c + 1 :].any() and not blind[:, :c].any()


def test_plot_and_cli(tmp_path, capsys):
    maps = {"markov": dependency_map(tiny_model("markov", 3, 16, k=2), random_x(4, 16, 3))}
    plot_dependency_maps(maps, tmp_path / "m.png", image_shape=(4, 4), pixel=(2, 1))
    assert (tmp_path / "m.png").stat().st_size > 1000
    out = tmp_path / "run"
    args = ["train", "--data", "digits", "--model", "markov", "--set", "k=3", "--set",
            "n_hidden=16", "--steps", "2", "--eval-every", "2", "--out", str(out),
            "--quiet", "--samples", "2"]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    assert main(["deps", str(out), "--pixel", "4,4", "-n", "4"]) == 0
    printed = capsys.readouterr().out
    assert "at most 3 positions" in printed and "lower triangular: yes" in printed
    assert (out / "deps.png").exists()
    assert main(["deps", str(out), "--pixel", "9,9"]) == 1
    assert "outside the 8x8 image" in capsys.readouterr().err
    assert main(["deps", str(out), "-n", "1000", "--force"]) == 0  # the test split holds 447
    assert "-n 1000: the test split holds 447; averaging over those" in capsys.readouterr().out


def test_deps_draws_a_map_from_another_file(tmp_path, capsys):
    """--data: examples from another file, read as the run's data was and whole; the way to
    draw a run trained on arrays in memory, which cannot read its data again."""
    import numpy as np

    from darm.data import from_arrays
    from darm.train import TrainConfig, train

    x = np.random.default_rng(0).integers(0, 4, (40, 6))
    data = from_arrays(x, levels=4)
    model = create_model("markov", data, k=2, n_hidden=8)
    out = tmp_path / "mem"
    train(model, "markov", data, TrainConfig(steps=2, eval_every=2), out, progress=False)
    capsys.readouterr()
    assert main(["deps", str(out)]) == 1
    assert "with --data (eval, deps, train --init)" in capsys.readouterr().err
    np.save(tmp_path / "copy.npy", x)
    assert main(["deps", str(out), "--data", str(tmp_path / "copy.npy"), "-n", "100"]) == 0
    printed = capsys.readouterr().out
    assert "-n 100: copy holds 40; averaging over those" in printed
    assert "on these examples of copy the conditionals reach back at most 2 positions" in printed
    code = main(["deps", str(out), "--data", str(tmp_path / "copy.npy"), "--split", "valid",
                 "-n", "100", "--force"])  # fmt: skip
    assert code == 0  # split as eval splits it: 40 rows, 4 of them valid
    assert "-n 100: copy's valid split holds 4; averaging over those" in capsys.readouterr().out


def test_a_map_of_longer_sequences_for_a_model_of_any_length():
    """A model that takes any length (max_dims None) maps sequences longer than its D whole."""
    model = create_model("gru", vocab_size=4, seq_len=5, n_hidden=8)
    J = dependency_map(model, random_x(3, 9, 4))
    assert J.shape == (9, 9)
    assert torch.equal(J.triu(), torch.zeros(9, 9))
    assert (J.diagonal(-1) > 0).all() and J[8, 0] > 0  # the state carries x_0 to the end


def test_deps_maps_lines_longer_than_the_run_s_on_a_model_of_any_length(tmp_path, capsys):
    """As eval scores them: a gru's map of another file's longer lines is drawn whole."""
    names = tmp_path / "names.txt"
    names.write_text("ann\nbob\ncid\ndee\neve\nfay\ngus\nhal\nivy\njon\n")
    out = tmp_path / "run"
    args = ["train", "--data", str(names), "--model", "gru", "--set", "n_hidden=8", "--steps",
            "2", "--eval-every", "2", "--out", str(out), "--quiet", "--samples", "0"]  # fmt: skip
    assert main(args) == 0
    (tmp_path / "long.txt").write_text("abcabcabcabcab\nbob\n")
    capsys.readouterr()
    assert main(["deps", str(out), "--data", str(tmp_path / "long.txt")]) == 0
    assert "gru: D=15; on these examples of long" in capsys.readouterr().out


def test_deps_maps_a_sample_grid_and_takes_a_label(tmp_path, capsys):
    """Pictures as eval reads them (a picture, or a grid darm sample wrote), and --label for a
    conditional model on pictures without labels of its classes."""
    write_pngs(tmp_path / "pics", 20, size=(4, 4), classes=["cat", "dog"])
    out = tmp_path / "run"
    args = ["train", "--data", str(tmp_path / "pics"), "--model", "gated_pixelcnn",
            "--conditional", "--levels", "2", "--set", "n_layer=2", "--set", "n_hidden=4",
            "--steps", "2", "--eval-every", "2", "--out", str(out), "--quiet",
            "--samples", "0"]  # fmt: skip
    assert main(args) == 0
    assert (
        main(["sample", str(out), "-n", "3", "--label", "dog", "--out", str(tmp_path / "g")]) == 0
    )
    capsys.readouterr()
    grid = str(tmp_path / "g.png")
    assert main(["deps", str(out), "--data", grid]) == 1
    assert "no labels (eval, complete and deps take --label" in capsys.readouterr().err
    assert main(["deps", str(out), "--data", grid, "--label", "dog", "--pixel", "3,1"]) == 0
    printed = capsys.readouterr().out
    assert "on these pictures of g.png (as class dog) the conditionals" in printed
    assert "lower triangular: yes" in printed
    assert main(["deps", str(out), "--data", grid, "--label", "dog", "--split", "test"]) == 1
    assert "read whole (a picture, or a grid of them): drop --split" in capsys.readouterr().err
    assert main(["deps", str(out), "--data", str(tmp_path / "pics" / "cat"), "--label", "cow",
                 "--force"]) == 1  # fmt: skip
    assert "--label 'cow' is not a class of this model" in capsys.readouterr().err


def test_pixel_maps_of_one_pixel_pictures_say_why_there_is_none(tmp_path, capsys):
    """1x1 grey pictures are images, D = 1: --pixel has no earlier pixels to map, and says
    so (not "not images"); the D x D map is still drawn. Text data has no pixels at all."""
    write_pngs(tmp_path / "dots", 12, size=(1, 1))
    out = tmp_path / "run"
    args = ["train", "--data", str(tmp_path / "dots"), "--model", "markov", "--levels", "4",
            "--steps", "1", "--out", str(out), "--quiet", "--samples", "0"]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    err = one_line_error(capsys, main(["deps", str(out), "--pixel", "0,0"]))
    assert "pictures are 1x1, one grey pixel, which has no earlier pixels" in err
    assert "not images" not in err
    assert not (out / "deps.png").exists()  # refused before the work
    assert main(["deps", str(out)]) == 0 and (out / "deps.png").exists()
    (tmp_path / "t.txt").write_text("ab\nba\nabb\nbab\n")
    args = ["train", "--data", str(tmp_path / "t.txt"), "--model", "markov", "--steps", "1",
            "--out", str(tmp_path / "text"), "--quiet", "--samples", "0"]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    err = one_line_error(capsys, main(["deps", str(tmp_path / "text"), "--pixel", "0,0"]))
    assert "this checkpoint's data is not images" in err
