"""Polyak averaging (EMA of the weights): the recurrence, the swap, checkpoints, resume."""

import json

import pytest
import torch
from torch import nn

from darm.checkpoint import load_checkpoint, read_record
from darm.data import load_data
from darm.ema import WeightAverage
from darm.errors import DarmError
from darm.metrics import evaluate
from darm.train import TrainConfig, train
from tests.conftest import tiny_model


def test_average_follows_the_ramped_recurrence():
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    ema = WeightAverage(net, 0.9)
    expected = net.weight.detach().clone()
    for t in range(30):
        with torch.no_grad():
            net.weight.add_(torch.randn_like(net.weight))
        ema.update(t)
        decay = min(0.9, (1 + t) / (10 + t))
        expected = decay * expected + (1 - decay) * net.weight.detach()
    live = net.weight.detach().clone()
    with ema.swapped() as raw:
        torch.testing.assert_close(net.weight.detach(), expected)
        assert torch.equal(raw["weight"], live)
    assert torch.equal(net.weight.detach(), live)  # the training weights are back


def test_a_tied_weight_is_averaged_and_swapped_once():
    # one tensor under two names (a GPT's embedding and output layer): swapping it twice
    # would leave the average in the model and hand back the average as training weights
    torch.manual_seed(0)
    net = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 5, bias=False))
    net[1].weight = net[0].weight
    ema = WeightAverage(net, 0.9)
    for t in range(5):
        with torch.no_grad():
            net[0].weight.add_(1.0)
        ema.update(t)
    live = net[0].weight.detach().clone()
    with ema.swapped() as raw:
        assert not torch.equal(net[0].weight, live)  # the average is in
        assert torch.equal(raw["0.weight"], live) and torch.equal(raw["1.weight"], live)
    assert torch.equal(net[0].weight.detach(), live)


def test_decay_outside_the_unit_interval_is_refused(tmp_path):
    with pytest.raises(ValueError, match="EMA decay"):
        WeightAverage(nn.Linear(2, 2), 1.0)
    data = load_data("digits")
    model = tiny_model("gpt", vocab_size=17, seq_len=64)
    with pytest.raises(DarmError, match="ema must be in"):
        train(model, "gpt", data, TrainConfig(steps=2, ema=1.5), tmp_path, progress=False)


def test_checkpoints_hold_the_average_and_validation_scores_it(tmp_path):
    data = load_data("digits")
    torch.manual_seed(0)
    model = tiny_model("gpt", vocab_size=17, seq_len=64)
    cfg = TrainConfig(steps=12, batch_size=16, warmup=2, eval_every=12, ema=0.8)
    train(model, "gpt", data, cfg, tmp_path, progress=False)
    saved, record, _ = load_checkpoint(tmp_path / "last.json")
    # the model leaves training with its training weights; the checkpoint holds others
    assert any(not torch.equal(v, saved.state_dict()[k]) for k, v in model.state_dict().items())
    logged = float((tmp_path / "log.csv").read_text().splitlines()[-1].split(",")[3])
    assert evaluate(saved, data["valid"]).nats_per_dim == pytest.approx(logged, rel=1e-5)
    assert record["best_valid_nats_per_dim"] == pytest.approx(logged, rel=1e-5)


def test_resume_with_ema_matches_an_uninterrupted_run(tmp_path):
    data = load_data("digits")
    cfg = TrainConfig(steps=16, batch_size=16, warmup=4, eval_every=8, seed=5, ema=0.9)
    full = tiny_model("gpt", vocab_size=17, seq_len=64, dropout=0.1)
    train(full, "gpt", data, cfg, tmp_path / "full", progress=False)

    part = tiny_model("gpt", vocab_size=17, seq_len=64, dropout=0.1)
    train(part, "gpt", data, cfg, tmp_path / "part", progress=False, stop_at=11)
    path, record = read_record(tmp_path / "part" / "last.json")
    resumed, record, path = load_checkpoint(path)  # holds the average of steps 0..10
    train(resumed, "gpt", data, cfg, tmp_path / "part", (path, record), progress=False)
    for k, v in full.state_dict().items():  # training weights
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=1e-6)
    averaged = [load_checkpoint(tmp_path / run / "last.json")[0] for run in ("full", "part")]
    for k, v in averaged[0].state_dict().items():
        torch.testing.assert_close(averaged[1].state_dict()[k], v, rtol=0, atol=1e-6)
    assert json.loads((tmp_path / "part" / "last.json").read_text())["step"] == 16
