"""--budget planning: a validation pass is timed like a training step and fitted in the plan."""

import darm
import darm.budget as budget
from darm.data import load_data
from darm.train import TrainConfig


def fake_scoring(monkeypatch, first: float, rest: float) -> list[int]:
    """evaluate() costs `first` seconds on a fake clock for its first batch, `rest` after;
    returns the sizes of the batches it was given."""
    clock, scored = [0.0], []

    def evaluate(model, split, batch_size):
        clock[0] += first if not scored else rest
        scored.append(len(split))

    monkeypatch.setattr("darm.metrics.evaluate", evaluate)
    monkeypatch.setattr(budget.time, "perf_counter", lambda: clock[0])
    return scored


def test_a_validation_pass_is_extrapolated_from_its_first_batches(monkeypatch):
    scored = fake_scoring(monkeypatch, first=0.5, rest=0.1)
    data = load_data("digits")  # 350 validation images
    model, cfg = (
        darm.create_model("bigram", vocab_size=data.vocab_size),
        TrainConfig(eval_batch_size=32),
    )
    # the warm-up batch is left out; 0.1 s a batch x ceil(350 / 32) = 11 batches
    assert abs(budget.seconds_per_validation(model, data, cfg, window=0.25) - 1.1) < 1e-9
    assert scored == [32, 32]  # two batches were enough for the window
    scored.clear()
    cfg = TrainConfig(eval_batch_size=32, valid_examples=100)  # ceil(100 / 32) = 4 batches
    assert abs(budget.seconds_per_validation(model, data, cfg, window=0.25) - 0.4) < 1e-9


def test_a_long_validation_pass_takes_points_off_the_curve_not_steps_past_the_budget(
    monkeypatch,
):
    monkeypatch.setattr(budget, "seconds_per_step", lambda *a: 1.0)
    data = load_data("digits")
    model, cfg = darm.create_model("bigram", vocab_size=data.vocab_size), TrainConfig()
    monkeypatch.setattr(budget, "seconds_per_validation", lambda *a: 0.5)
    quick = budget.plan_run(model, data, cfg, budget=60)
    assert (quick.passes, quick.steps) == (10, 52)  # 57 s less 10 x 0.5 s of validation
    assert quick.note(60) is None
    monkeypatch.setattr(budget, "seconds_per_validation", lambda *a: 20.0)
    slow = budget.plan_run(model, data, cfg, budget=60)
    assert (slow.passes, slow.steps) == (1, 37)  # the pass after the last step: 57 - 20 s
    assert "--valid-examples" in slow.note(60)
