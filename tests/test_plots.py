"""The loss picture's axis: it shows the trained part of the curves, not the first steps."""

import math

import numpy as np
import pytest

from darm.plots import focus_ylim, plot_loss_curves

NAN = math.nan


def log(train, valid):
    return {"train_nats_per_dim": np.array(train), "valid_nats_per_dim": np.array(valid)}


def run(rows=100, start=0.7, end=0.1, every=25, gap=0.0):
    """A log.csv's curves: training falling from `start` to near `end` (fast, then slowly, as
    from a random init), validated every `every` rows at `gap` above training."""
    train = end + (start - end) * np.exp(-np.arange(rows) / 3.0) + 0.02 * np.linspace(1, 0, rows)
    valid = np.full(rows, NAN)
    valid[every - 1 :: every] = train[every - 1 :: every] + gap
    return log(train, valid)


def test_the_axis_tops_at_the_first_evaluation_not_the_random_init():
    curves = run(every=25)
    bottom, top = focus_ylim([curves])
    trained = curves["train_nats_per_dim"][10:]  # from the first tenth (before row 24)
    assert trained.max() < top < trained.max() + 0.01 and top < 0.2  # the init's 0.7 is off
    assert bottom < curves["train_nats_per_dim"].min()


def test_every_run_from_the_first_tenth_on_is_inside():
    a, b = run(end=0.10), run(end=0.09, gap=0.05)  # b overfits: validation well above
    bottom, top = focus_ylim([a, b])
    for curves in (a, b):
        for key in curves:
            values = curves[key][10:]
            values = values[np.isfinite(values)]
            assert bottom < values.min() and values.max() < top


def test_without_validation_the_first_tenth_runs_off_the_top():
    curves = run(every=1000)  # no evaluation in 100 rows
    bottom, top = focus_ylim([curves])
    train = curves["train_nats_per_dim"]
    assert train[10] < top < train[9]  # row 10 in view, row 9 not


def test_a_run_scored_only_at_its_end_keeps_its_training_curve_in_view():
    curves = run(rows=20, every=20)  # one evaluation, on the last row
    bottom, top = focus_ylim([curves])
    assert top > curves["train_nats_per_dim"][2]  # from the first tenth, not the last row


def test_nan_and_inf_in_the_training_column_are_passed_over():
    curves = run()
    curves["train_nats_per_dim"][[40, 60]] = [math.inf, NAN]
    limits = focus_ylim([curves])
    assert limits is not None and all(map(math.isfinite, limits)) and limits[1] < 0.2


@pytest.mark.parametrize("logs", [[], [log([0.5], [NAN])], [log([NAN], [NAN])]])
def test_nothing_to_focus_on_leaves_the_axis_alone(logs):
    assert focus_ylim(logs) is None


def test_the_picture_uses_it(tmp_path, monkeypatch):
    path = tmp_path / "log.csv"
    curves = run(rows=30, every=10)
    rows = [f"{10 * (i + 1)},1e-3,{t},{'' if math.isnan(v) else v},1,{i}"
            for i, (t, v) in enumerate(zip(*curves.values()))]  # fmt: skip
    path.write_text("step,lr,train_nats_per_dim,valid_nats_per_dim,tokens_per_s,elapsed_s\n"
                    + "\n".join(rows) + "\n")  # fmt: skip
    import matplotlib.axes

    seen = []
    monkeypatch.setattr(matplotlib.axes.Axes, "set_ylim", lambda ax, *a: seen.append(a))
    plot_loss_curves({"run": path}, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").stat().st_size > 0
    assert seen == [focus_ylim([curves])]


def test_a_log_of_one_row_is_drawn_as_a_point(tmp_path, monkeypatch):
    """A run that has logged once: a dashed line through one point shows nothing, so the
    point gets a marker; longer curves stay plain lines."""
    import matplotlib.axes

    header = "step,lr,train_nats_per_dim,valid_nats_per_dim,tokens_per_s,elapsed_s\n"
    (tmp_path / "one.csv").write_text(header + "10,1e-3,2.5,,1000,1.0\n")
    (tmp_path / "two.csv").write_text(header + "10,1e-3,2.5,,1000,1.0\n20,1e-3,2.4,,1000,2.0\n")
    markers, real = [], matplotlib.axes.Axes.plot

    def plot(ax, *args, **kwargs):
        lines = real(ax, *args, **kwargs)
        markers.append(lines[0].get_marker())
        return lines

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", plot)
    plot_loss_curves({"one": tmp_path / "one.csv", "two": tmp_path / "two.csv"}, tmp_path / "l.png")
    # each run: its training curve, then its (here empty) validation curve
    assert markers[0] == "x" and markers[2] in ("None", "", None)
