"""The loss picture's axis: it shows the trained part of the curves, not the first steps."""

import math

import numpy as np
import pytest

from darm.plots import focus_ylim, plot_loss_curves

NAN = math.nan


def log(train, valid):
    return {"train_nats_per_dim": np.array(train), "valid_nats_per_dim": np.array(valid)}


def test_the_axis_tops_at_the_first_evaluation_not_the_random_init():
    run = log([0.69, 0.30, 0.13, 0.12, 0.115, 0.11], [NAN, NAN, 0.125, NAN, NAN, 0.108])
    bottom, top = focus_ylim([run])
    assert 0.13 < top < 0.14  # the training loss from the first evaluation's step on
    assert bottom < 0.108 < top
    assert top - bottom < 0.05  # so a gap of 0.01 between runs is a fifth of the picture


def test_every_run_and_every_score_after_the_first_evaluation_is_inside():
    a = log([0.7, 0.2, 0.10], [NAN, 0.15, 0.11])
    b = log([0.7, 0.3, 0.18, 0.09], [NAN, 0.20, NAN, 0.095])  # overfits: train < valid
    bottom, top = focus_ylim([a, b])
    assert bottom < 0.09 and 0.3 < top < 0.4


def test_without_validation_the_first_tenth_runs_off_the_top():
    train = [0.7] + [0.2 - 0.001 * i for i in range(19)]
    bottom, top = focus_ylim([log(train, [NAN] * 20)])
    assert 0.199 < top < 0.21 and bottom < 0.182


@pytest.mark.parametrize("logs", [[], [log([0.5], [NAN])], [log([NAN], [NAN])]])
def test_nothing_to_focus_on_leaves_the_axis_alone(logs):
    assert focus_ylim(logs) is None


def test_the_picture_uses_it(tmp_path, monkeypatch):
    path = tmp_path / "log.csv"
    path.write_text(
        "step,lr,train_nats_per_dim,valid_nats_per_dim,tokens_per_s,elapsed_s\n"
        "10,1e-3,0.69,,1,1\n20,1e-3,0.2,0.15,1,2\n30,1e-3,0.1,0.11,1,3\n"
    )
    import matplotlib.axes

    seen = []
    monkeypatch.setattr(matplotlib.axes.Axes, "set_ylim", lambda ax, *a: seen.append(a))
    plot_loss_curves({"run": path}, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").stat().st_size > 0
    ((bottom, top),) = seen
    assert top < 0.69 and bottom < 0.1
