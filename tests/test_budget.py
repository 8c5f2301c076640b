"""--budget planning: a validation pass is timed like a training step and fitted in the plan."""

import csv
import json

import pytest
import torch

import darm
import darm.budget as budget
from darm.data import load_data
from darm.train_config import TrainConfig


def fake_scoring(monkeypatch, warm_up: float, per_example: float) -> list[int]:
    """evaluate() costs per_example seconds an example on a fake clock, plus warm_up for the
    first batch; returns the sizes of the batches it was given."""
    clock, scored = [0.0], []

    def evaluate(model, split, batch_size):
        clock[0] += (0 if scored else warm_up) + per_example * len(split)
        scored.append(len(split))

    monkeypatch.setattr(budget, "evaluate", evaluate)
    monkeypatch.setattr(budget.time, "perf_counter", lambda: clock[0])
    return scored


def test_a_validation_pass_is_extrapolated_from_its_first_batches(monkeypatch):
    scored = fake_scoring(monkeypatch, warm_up=0.5, per_example=0.01)
    data = load_data("digits")  # 350 validation images
    model = darm.create_model("bigram", vocab_size=data.vocab_size)
    seconds = budget.seconds_per_validation(model, data, TrainConfig(eval_batch_size=32), 0.5)
    assert seconds == pytest.approx(3.5)  # 0.01 s x 350 images, the warm-up left out
    assert scored == [32, 32]  # two batches were enough for the window
    scored.clear()
    # the first 100 images only, in one batch of 100 (not of 512): that batch is the pass
    cfg = TrainConfig(eval_batch_size=512, valid_examples=100)
    assert budget.seconds_per_validation(model, data, cfg, 0.5) == pytest.approx(1.5)
    assert scored == [100]


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
    assert "--valid-examples N scores fewer" in slow.note(60)
    assert quick.fits(60) and slow.fits(60)
    tiny = budget.plan_run(model, data, cfg, budget=5)  # 20 steps, the floor: 20 s and more
    assert tiny.steps == budget.MIN_STEPS and not tiny.fits(5)
    assert "a smaller --valid-examples" in slow.note(60, valid_examples=100)


def test_a_budget_with_eval_every_reserves_its_passes(monkeypatch):
    monkeypatch.setattr(budget, "seconds_per_step", lambda *a: 1.0)
    monkeypatch.setattr(budget, "seconds_per_validation", lambda *a: 2.0)
    data = load_data("digits")
    model = darm.create_model("bigram", vocab_size=data.vocab_size)
    plan = budget.plan_run(model, data, TrainConfig(), budget=120, eval_every=5)
    # s steps and s / 5 + 1 passes of 2 s in 0.95 x 120 s: s = (114 - 2) / 1.4 = 80
    assert (plan.steps, plan.passes) == (80, 16)
    assert plan.steps + plan.passes * 2.0 <= 114


def test_a_new_plan_fits_what_is_left_and_not_for_a_small_change():
    def steps(cfg, *measured):
        new = budget.replanned(cfg, *measured)
        return new.steps, new.warmup

    cfg = TrainConfig(steps=100, eval_every=10, warmup=10)
    # 1 s a step, 2 s a pass, 41 s left: k + (k / 10 + 1) x 2 = 0.95 x 41 -> k = 30
    assert steps(cfg, 20, 1.0, 2.0, 41.0) == (50, 10)
    assert steps(cfg, 20, 0.01, 0.0, 1.0) == (115, 10)  # faster: longer
    assert budget.replanned(cfg, 20, 0.0117, 0.0, 1.0) is cfg  # 101 steps: within 2%
    assert steps(cfg, 60, 1.0, 2.0, 1.0) == (60, 10)  # out of time: ends now
    assert steps(cfg, 5, 1.0, 0.0, 10.0) == (budget.MIN_STEPS, 10)  # the floor
    long = TrainConfig(steps=200, eval_every=10, warmup=10)  # 102 steps: end on the pass at 100
    assert steps(long, 20, 0.01, 0.0, 0.865) == (100, 10)
    # no pass to come near the estimate: kept (a pass every 500 of 118 steps, or at 450 <= done)
    assert steps(TrainConfig(steps=100, eval_every=500, warmup=10), 20, 0.1, 0.5, 11.0)[0] == 118
    assert steps(TrainConfig(steps=900, eval_every=100, warmup=10), 450, 1.0, 0.0, 10.9)[0] == 460
    # a default warmup follows the length down, never up; one given only when it no longer fits
    assert steps(TrainConfig(steps=100), 20, 1.0, 0.0, 42.0) == (59, 29)
    assert steps(TrainConfig(steps=60), 20, 0.01, 0.0, 1.0) == (115, 30)
    assert steps(TrainConfig(steps=300, warmup=100), 20, 1.0, 0.0, 190.0) == (200, 100)
    assert steps(TrainConfig(steps=300, warmup=100), 20, 1.0, 0.0, 84.0) == (99, 49)
    with pytest.raises(ValueError, match="several cycles keeps its first plan"):
        budget.replanned(TrainConfig(steps=100, cycles=2), 20, 1.0, 0.0, 10.0)


def replan_on_a_clock(monkeypatch, plan, budget_s: float, start: int, cfg):
    """Run a Replanner from step `start` on a clock where every step takes 1 s -> (the steps
    it planned again at, the config it ended with)."""
    planned_at, real = [], budget.replanned

    def recorded(cfg, done, *measured):
        planned_at.append(done)
        return real(cfg, done, *measured)

    monkeypatch.setattr(budget, "replanned", recorded)
    replan = budget.Replanner(plan, budget_s, start, cfg)
    done = start
    while done < cfg.steps:
        done += 1
        cfg = replan(cfg, done, (done - start) * 1.0, torch.device("cpu"))
        replan.stepped(done, (done - start) * 1.0)
    return planned_at, cfg


def test_the_later_points_spread_over_what_is_left_after_a_shorter_plan(monkeypatch):
    """200 steps planned at 0.3 s, taking 1 s: shortened at step 40; the next points fall
    later in the rest of the run, not on the next two steps."""
    cfg = TrainConfig(steps=200, eval_every=10, warmup=10)
    planned_at, _ = replan_on_a_clock(monkeypatch, budget.Plan(200, 20, 0.3, 0.0), 63.0, 0, cfg)
    assert planned_at[0] == 40 and len(planned_at) == 3, planned_at
    assert planned_at[1] - planned_at[0] > 5 and planned_at[2] - planned_at[1] > 5, planned_at


def test_a_resumed_run_is_planned_again_over_the_steps_it_has_left(monkeypatch):
    """Resumed at step 100 of 200 (compare --resume under a budget): the first point is a
    fifth of the 100 steps left, and the count is fitted to the budget left from there."""
    cfg = TrainConfig(steps=200, eval_every=10, warmup=10)
    plan = budget.Plan(200, 10, 0.3, 0.0)
    planned_at, cfg = replan_on_a_clock(monkeypatch, plan, 63.0, 100, cfg)
    assert planned_at[0] == 120, planned_at
    assert 150 < cfg.steps < 170  # 1 s a step: about 60 of the 63 s left, not the 100 planned


@pytest.mark.parametrize("first", [0.0, 10.0])
def test_a_run_slower_than_its_plan_is_planned_again_and_ends_its_schedule_in_time(
    first, tmp_path, monkeypatch, capsys
):
    """On a fake clock a step takes 1 s and a validation pass 2 s, twice what the plan
    measured: planned again, the run ends its cosine within the budget, and the checkpoint
    holds the new length for --resume. A first step `first` s longer (torch.compile) uses
    up budget but does not count as the speed of the others."""
    import darm.train as train_module

    clock = [0.0]
    step, score = train_module.accumulate_gradients, train_module.evaluate_split

    def slow_step(*args):
        clock[0] += 1.0 + (first if clock[0] == 0 else 0)
        return step(*args)

    def slow_pass(*args):
        clock[0] += 2.0
        return score(*args)

    monkeypatch.setattr(train_module, "accumulate_gradients", slow_step)
    monkeypatch.setattr(train_module, "evaluate_split", slow_pass)
    monkeypatch.setattr(budget.time, "perf_counter", lambda: clock[0])
    data = load_data("digits")
    model = darm.create_model("bigram", vocab_size=data.vocab_size, seq_len=data.seq_len)
    cfg = TrainConfig(steps=100, batch_size=8, eval_every=10, warmup=10)
    plan = budget.Plan(steps=100, passes=10, step_s=0.5, pass_s=1.0)
    seconds = plan.seconds / 0.95 + first
    state = train_module.train(model, "bigram", data, cfg, tmp_path, progress=False,
                               max_seconds=seconds, plan=plan)  # fmt: skip
    assert state["step"] == state["steps"] < 100  # the schedule ran to its end...
    assert clock[0] <= seconds  # ...within the budget
    said = capsys.readouterr().out
    assert said.count("planned again") == said.count("by the 1s a step measured") > 0
    record = json.loads((tmp_path / "last.json").read_text())
    assert record["step"] == record["train"]["steps"] == state["steps"]
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert float(rows[-1]["lr"]) == pytest.approx(cfg.min_lr, rel=0.05)  # at the floor
    with pytest.raises(ValueError, match="a plan needs max_seconds"):
        train_module.train(model, "bigram", data, cfg, tmp_path / "no", plan=plan)
