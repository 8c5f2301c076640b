import copy
import csv
import dataclasses
import io
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

import darm.step
import darm.train
from darm.checkpoint import load_checkpoint, read_record, record_sha256, save_checkpoint
from darm.cli import main
from darm.data import digest, load_data
from darm.errors import DarmError
from darm.metrics import evaluate, nll_per_dim
from darm.models import config_fields, create_model
from darm.train import data_meta, resume_point, same_examples, train
from darm.train_config import TrainConfig, check_config, learning_rate
from tests.conftest import TINY, Terminal, tiny_model


def _digits_model(seed=0):
    torch.manual_seed(seed)
    return tiny_model("gpt", vocab_size=17, seq_len=64)


def test_schedule_warms_up_then_decays():
    cfg = TrainConfig(steps=100, warmup=10, lr=1.0, min_lr=0.1)
    lrs = [learning_rate(s, cfg) for s in range(100)]
    assert lrs[0] == 0.1 and abs(lrs[9] - 1.0) < 1e-9
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert abs(lrs[-1] - 0.1) < 1e-3


def test_min_lr_defaults_to_a_tenth_of_lr():
    # a lower lr alone is a valid schedule (min_lr once stayed 3e-4 and refused lr=1e-4)
    assert TrainConfig(lr=1e-4).min_lr == pytest.approx(1e-5)
    assert TrainConfig().min_lr == pytest.approx(3e-4)
    assert TrainConfig(lr=1e-4, min_lr=0.0).min_lr == 0.0


def test_default_warmup_fits_a_short_run():
    short = TrainConfig(steps=50, lr=1.0, min_lr=0.1)
    assert short.warmup == 25 and TrainConfig().warmup == 100
    assert learning_rate(49, short) < 0.11  # it decays to the end (warmup 100: still at 0.5)
    with pytest.raises(DarmError, match=r"warmup \(60\) must be shorter than the run"):
        check_config(TrainConfig(steps=50, warmup=60))


def test_a_config_built_from_python_holds_its_fields_types():
    assert TrainConfig(steps="100", lr=1).steps == 100  # as from the command line
    assert isinstance(TrainConfig(lr=1).lr, float)
    for kw, needle in [(dict(steps=2.5), "steps must be an integer, got 2.5"),
                       (dict(compile="maybe"), "compile must be true or false")]:  # fmt: skip
        with pytest.raises(DarmError, match=needle):
            TrainConfig(**kw)


def test_a_non_finite_gradient_stops_before_the_update(tmp_path):
    """A finite loss whose backward overflows: stopped before the weights turn NaN, and the
    last checkpoint keeps finite weights."""
    data = load_data("digits")
    model = _digits_model()
    calls = []

    def overflow_once(grad):
        calls.append(1)
        return grad * float("inf") if len(calls) == 3 else grad

    model.wte.weight.register_hook(overflow_once)
    cfg = TrainConfig(steps=6, batch_size=8, eval_every=1)
    kept = r"last checkpoint in .* \(step 2, validation \d.* nats/dim\) is kept"
    with pytest.raises(DarmError, match=rf"gradient norm is (inf|nan) at step 3; .*{kept}"):
        train(model, "gpt", data, cfg, tmp_path, progress=False)
    saved, record, _ = load_checkpoint(tmp_path / "last.json")
    assert record["step"] == 2
    assert all(p.isfinite().all() for p in saved.parameters())
    calls.clear()  # the same overflow before the first checkpoint: none to point to
    cfg = TrainConfig(steps=6, batch_size=8, eval_every=5)
    with pytest.raises(DarmError, match="at step 3; .*before any checkpoint was saved"):
        train(model, "gpt", data, cfg, tmp_path / "early", progress=False)


def test_warm_restart_cycles_extend_the_one_cycle_schedule():
    one = TrainConfig(steps=50, warmup=5, lr=1.0, min_lr=0.1)
    two = TrainConfig(steps=100, warmup=5, lr=1.0, min_lr=0.1, cycles=2, cycle_decay=0.5)
    assert [learning_rate(s, two) for s in range(50)] == [learning_rate(s, one) for s in range(50)]
    second = [learning_rate(s, two) for s in range(50, 100)]
    assert second[0] == 0.5  # a restart at the decayed peak, no warmup
    assert all(a > b for a, b in zip(second, second[1:]))
    assert abs(second[-1] - 0.1) < 1e-3
    three = TrainConfig(steps=150, warmup=5, lr=1.0, min_lr=0.1, cycles=3, cycle_decay=0.5)
    assert [learning_rate(s, three) for s in range(100)] == [
        learning_rate(s, two) for s in range(100)
    ]
    assert learning_rate(100, three) == 0.25 and abs(learning_rate(149, three) - 0.1) < 1e-3


def test_bad_cycles_are_refused(tmp_path):
    data = load_data("digits")
    for kw, msg in [
        (dict(steps=10, cycles=3), "multiple of cycles"),
        (dict(steps=10, cycles=2, warmup=5), "shorter than a cycle"),
        (dict(steps=10, cycle_decay=0.0), "cycle_decay"),
        (dict(steps=30, cycles=3, warmup=2, cycle_decay=0.1), "below min_lr"),
    ]:
        with pytest.raises(DarmError, match=msg):
            train(_digits_model(), "gpt", data, TrainConfig(**kw), tmp_path, progress=False)


@pytest.mark.parametrize("grad_clip", [0.05, 0.0])
def test_the_gradient_reaching_the_optimizer_is_clipped(grad_clip, tmp_path, monkeypatch):
    norms = []  # the global gradient norm at each optimizer step
    step = torch.optim.AdamW.step

    def recorded(self, *args, **kwargs):
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        norms.append(torch.nn.utils.get_total_norm(grads).item())
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recorded)
    cfg = TrainConfig(steps=4, batch_size=8, grad_clip=grad_clip, eval_every=4)
    model, data = _digits_model(), load_data("digits")
    start = copy.deepcopy(model)
    train(model, "gpt", data, cfg, tmp_path, progress=False)
    assert len(norms) == 4
    if grad_clip:  # every step's gradient is well above 0.05 before clipping
        assert max(norms) == pytest.approx(grad_clip, rel=1e-4)
    else:  # unclipped: the gradient of the mean nats per dimension of the first batch
        x, _, _ = data["train"].batch(0, 8, cfg.seed)
        loss = nll_per_dim(start(x), x).sum() / x.numel()
        want = torch.nn.utils.get_total_norm(torch.autograd.grad(loss, list(start.parameters())))
        assert norms[0] == pytest.approx(want.item(), rel=1e-5)


def test_weight_decay_falls_on_matrices_only():
    from darm.step import make_optimizer

    model = _digits_model()
    opt = make_optimizer(model, TrainConfig(weight_decay=0.5))
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.5 and plain["weight_decay"] == 0.0
    # embeddings and weight matrices decay; LayerNorm scales (and any biases) do not
    assert {id(p) for p in decayed["params"]} == {id(p) for p in model.parameters() if p.dim() >= 2}
    assert {id(p) for p in plain["params"]} == {id(p) for p in model.parameters() if p.dim() < 2}
    assert plain["params"] and decayed["params"]


def test_short_training_lowers_validation_nll(tmp_path):
    data = load_data("digits")
    model = _digits_model()
    before = evaluate(model, data["valid"]).nats_per_dim
    cfg = TrainConfig(steps=40, batch_size=32, lr=3e-3, warmup=5, eval_every=40)
    train(model, "gpt", data, cfg, tmp_path, progress=False)
    after = evaluate(model, data["valid"]).nats_per_dim
    assert after < before - 0.3
    # a row of the training loss every log_every (10) steps, validation only at step 40
    log = list(csv.DictReader((tmp_path / "log.csv").read_text().splitlines()))
    assert [int(r["step"]) for r in log] == [10, 20, 30, 40]
    assert [r["valid_nats_per_dim"] == "" for r in log] == [True, True, True, False]
    assert float(log[-1]["train_nats_per_dim"]) < float(log[0]["train_nats_per_dim"])


def test_the_training_curve_is_an_unbiased_average_of_batch_losses(tmp_path):
    # lr 0: the weights stay put, so each step's loss is the initial model's on its batch;
    # the logged curve averages them with weights 0.95^(t-1-s), normalised (not the first
    # batch's loss decaying slowly, which once kept it 0.3 nats above validation)
    from darm.metrics import nll_per_dim

    data = load_data("digits")
    model = _digits_model()
    cfg = TrainConfig(steps=6, batch_size=8, lr=0.0, min_lr=0.0, log_every=1, eval_every=6)
    losses = []
    with torch.no_grad():
        for step in range(6):
            x, _, _ = data["train"].batch(step, 8, cfg.seed)
            losses.append(nll_per_dim(model(x), x).mean().item())
    train(model, "gpt", data, cfg, tmp_path, progress=False)
    log = list(csv.DictReader((tmp_path / "log.csv").read_text().splitlines()))
    for t, row in enumerate(log, start=1):
        w = [0.95 ** (t - 1 - s) for s in range(t)]
        want = sum(wi * li for wi, li in zip(w, losses)) / sum(w)
        assert float(row["train_nats_per_dim"]) == pytest.approx(want, rel=1e-4)
    assert float(log[0]["train_nats_per_dim"]) == pytest.approx(losses[0], rel=1e-4)


def test_checkpoint_round_trip_is_exact(tmp_path):
    model = tiny_model("wavenet", num_classes=3)
    path = save_checkpoint(tmp_path, "best", model, "wavenet", {"step": 7, "data": {}})
    loaded, record, _ = load_checkpoint(path)
    assert record["step"] == 7 and record["config"]["dilation_cycle"] == [1, 2]
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    x = torch.randint(0, 5, (2, 7))
    y = torch.tensor([0, 2])
    assert torch.equal(model(x, y), loaded.eval()(x, y))


def test_resume_continues_to_the_same_weights(tmp_path):
    data = load_data("digits")
    cfg = TrainConfig(steps=16, batch_size=16, warmup=4, eval_every=8, seed=5)
    full = tiny_model("gpt", vocab_size=17, seq_len=64, dropout=0.1)
    train(full, "gpt", data, cfg, tmp_path / "full", progress=False)

    part = tiny_model("gpt", vocab_size=17, seq_len=64, dropout=0.1)
    state = train(part, "gpt", data, cfg, tmp_path / "part", progress=False, stop_at=11)
    assert state["step"] == 11
    path, record = read_record(tmp_path / "part" / "last.json")
    assert record["step"] == 11
    torch.manual_seed(999)  # the checkpoint's RNG state must win over whatever is current
    resumed, record, path = load_checkpoint(path)
    train(resumed, "gpt", data, cfg, tmp_path / "part", (path, record), progress=False)
    for k, v in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=1e-6)
    final = json.loads((tmp_path / "part" / "last.json").read_text())
    assert final["step"] == 16
    # the time column goes on from the first invocation's time, not from zero
    rows = [r.split(",") for r in (tmp_path / "part" / "log.csv").read_text().split()[1:]]
    steps, times = [int(r[0]) for r in rows], [float(r[5]) for r in rows]
    # evaluations at 8 and 16, a training row at 10; stop_at=11 saved last without a row;
    # 16's time includes the first invocation's 11 steps
    assert steps == [8, 10, 16] and 0 < times[0] < times[1] < record["elapsed_s"] < times[2]
    assert final["elapsed_s"] >= times[1]

    # and the smoothed training loss goes on from the checkpoint's, as if never stopped
    def train_column(run):
        return [float(r.split(",")[2]) for r in (run / "log.csv").read_text().split()[1:]]

    assert train_column(tmp_path / "part") == pytest.approx(train_column(tmp_path / "full"))


def test_a_wavenet_saved_with_its_unused_last_residual_loads_and_resumes(tmp_path):
    """Runs saved before WaveNet dropped the last layer's residual conv (nothing reads its
    output) hold its weights and its place in the optimiser: they load in that layout, and
    resume to the weights of a run never stopped. A new WaveNet has the same seeded weights
    less that conv."""
    data = load_data("digits")
    cfg = TrainConfig(steps=6, batch_size=8, warmup=2, eval_every=3, seed=5)
    from darm.models.registry import build_model

    def wavenet(**config):  # as a checkpoint's config builds it: last_res may be set
        torch.manual_seed(0)
        return build_model("wavenet", None, {**TINY["wavenet"], **config}, saved=True)

    old = dict(vocab_size=17, seq_len=64, dilation_cycle=(1, 2), last_res=True)
    full = wavenet(**old)
    new = wavenet(**{**old, "last_res": False})
    assert full.num_params() - new.num_params() == sum(
        p.numel() for p in full.layers[-1].res.parameters()
    )
    for k, v in new.state_dict().items():
        assert torch.equal(v, full.state_dict()[k])
    train(full, "wavenet", data, cfg, tmp_path / "full", progress=False)

    part = wavenet(**old)
    train(part, "wavenet", data, cfg, tmp_path / "part", progress=False, stop_at=4)
    for tag in ("best", "last"):  # as an older darm saved them: no such field
        path = tmp_path / "part" / f"{tag}.json"
        record = json.loads(path.read_text())
        del record["config"]["last_res"]
        record["sha256"]["record"] = record_sha256(record)
        path.write_text(json.dumps(record))
    resumed, record, path = load_checkpoint(tmp_path / "part" / "last.json")
    assert resumed.config.last_res and resumed.num_params() == record["params"]
    train(resumed, "wavenet", data, cfg, tmp_path / "part", (path, record), progress=False)
    for k, v in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=1e-6)
    # a new model cannot ask for that conv: it is no setting, only what old runs hold
    with pytest.raises(DarmError, match="last_res is not settable: it describes runs saved by"):
        create_model("wavenet", vocab_size=17, seq_len=64, last_res=True)
    assert "last_res" not in config_fields("wavenet")  # nor listed by `darm models -v`


def test_resume_from_needs_the_checkpoints_weights_and_data(tmp_path):
    """train(resume_from=...) goes on from the optimiser state of a checkpoint: a model that
    does not hold its weights (a new one, or one trained since) or other data is refused;
    the checkpoint's path alone will do."""
    data = load_data("digits")
    cfg = TrainConfig(steps=4, batch_size=8, eval_every=2)
    run = tmp_path / "run"
    new = tiny_model("markov", vocab_size=17, seq_len=64)
    train(new, "markov", data, cfg, run, progress=False, stop_at=2)
    last = run / "last.json"
    fresh = tiny_model("markov", vocab_size=17, seq_len=64)
    with pytest.raises(DarmError, match="the model does not hold its weights"):
        train(fresh, "markov", data, cfg, run, read_record(last), progress=False)
    other = dataclasses.replace(data, splits={**data.splits, "train": data["train"].subset(0, 500)})
    model, record, path = load_checkpoint(last)
    with pytest.raises(DarmError, match="the run trained on other examples or splits"):
        train(model, "markov", other, cfg, run, (path, record), progress=False)
    with pytest.raises(TypeError, match="resume_from must be a checkpoint's"):
        train(model, "markov", data, cfg, run, record, progress=False)
    # refused, the model still holds the checkpoint's weights; a run folder means its last
    # (as --resume), not the best.json load_checkpoint(folder) would read
    assert resume_point(run, model.loaded_from)[0].name == "last.json"
    assert train(model, "markov", data, cfg, run, str(run), progress=False)["step"] == 4
    # a built-in as load_data gives it (no digest) is known by its name and seed; a record
    # of one with a digest (as a darm of a while wrote them) by the digest
    meta = data_meta(data)
    assert meta["digest"] is None
    assert same_examples(data, meta, data_meta(load_data("digits")))
    assert not same_examples(data, meta, data_meta(load_data("digits", seed=1)))
    assert same_examples(data, meta, {**meta, "digest": digest(data)})
    assert not same_examples(data, meta, {**meta, "digest": "0" * 32})


def test_a_conditional_model_on_unlabelled_data_makes_no_run_folder(tmp_path):
    model = tiny_model("gru", vocab_size=27, seq_len=16, num_classes=3)
    with pytest.raises(DarmError, match="a conditional model needs labels, and names has none"):
        train(model, "gru", load_data("names"), TrainConfig(steps=2), tmp_path / "r")
    assert not (tmp_path / "r").exists()


def sigint_during_step(monkeypatch, step: int, signum: int = signal.SIGINT) -> None:
    """Send this process a SIGINT (Ctrl-C), or `signum`, in the middle of training step
    `step` (its loss)."""
    real, calls = darm.step.nll_per_dim, []

    def loss_then_ctrl_c(logits, x, mask=None):
        calls.append(1)
        if len(calls) == step + 1:
            os.kill(os.getpid(), signum)
        return real(logits, x, mask)

    monkeypatch.setattr(darm.step, "nll_per_dim", loss_then_ctrl_c)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_finishes_the_step_saves_and_resumes_exactly(tmp_path, monkeypatch, signum):
    """Ctrl-C, or a SIGTERM (kill, timeout, a scheduler), during step 5: the step finishes,
    is saved, and the run resumes to the weights of an uninterrupted one."""
    data = load_data("digits")
    cfg = TrainConfig(steps=16, batch_size=16, warmup=4, eval_every=8, seed=5)
    full = tiny_model("gpt", vocab_size=17, seq_len=64, dropout=0.1)
    train(full, "gpt", data, cfg, tmp_path / "full", progress=False)

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    sigint_during_step(monkeypatch, 5, signum)
    part = tiny_model("gpt", vocab_size=17, seq_len=64, dropout=0.1)
    with pytest.raises(KeyboardInterrupt, match="stopped after step 6.*--resume continues") as e:
        train(part, "gpt", data, cfg, tmp_path / "part", progress=False)
    assert e.value.signum == signum
    monkeypatch.undo()
    for s, handler in handlers.items():  # Ctrl-C and SIGTERM are themselves again
        assert signal.getsignal(s) is handler
    path, record = read_record(tmp_path / "part" / "last.json")
    assert record["step"] == 6  # step 5 finished and was saved, not lost nor half-applied
    resumed, record, path = load_checkpoint(path)
    train(resumed, "gpt", data, cfg, tmp_path / "part", (path, record), progress=False)
    for k, v in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=1e-6)
    assert log_steps(tmp_path / "part") == log_steps(tmp_path / "full") == [8, 10, 16]
    # resuming a finished run trains nothing, and leaves Ctrl-C as it found it
    resumed, record, path = load_checkpoint(tmp_path / "part" / "last.json")
    assert train(resumed, "gpt", data, cfg, tmp_path / "part", (path, record), False)["step"] == 16
    assert all(signal.getsignal(s) is handler for s, handler in handlers.items())


def log_steps(run) -> list[int]:
    return [int(r.split(",")[0]) for r in (run / "log.csv").read_text().split()[1:]]


def test_ctrl_c_during_the_last_evaluation_still_stops(tmp_path, monkeypatch):
    """A Ctrl-C after the last step's check (in its validation pass) must not let the caller
    go on to the test pass and samples: train() raises once that step is saved."""
    data = load_data("digits")
    real = darm.train.evaluate_split

    def evaluate_then_ctrl_c(*args, **kw):
        os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kw)

    monkeypatch.setattr(darm.train, "evaluate_split", evaluate_then_ctrl_c)
    cfg = TrainConfig(steps=4, batch_size=8, warmup=1, eval_every=4)
    with pytest.raises(KeyboardInterrupt, match="stopped after step 4"):
        train(_digits_model(), "gpt", data, cfg, tmp_path, progress=False)
    assert read_record(tmp_path / "last.json")[1]["step"] == 4


def test_ctrl_c_is_left_alone_where_it_is_ignored(tmp_path, monkeypatch):
    """`darm train ... &` from a script starts with SIGINT ignored: it must stay ignored."""
    monkeypatch.setattr(signal, "getsignal", lambda signum: signal.SIG_IGN)
    installed = []
    monkeypatch.setattr(signal, "signal", lambda *a: installed.append(a))
    cfg = TrainConfig(steps=2, batch_size=8, warmup=1, eval_every=2)
    train(_digits_model(), "gpt", load_data("digits"), cfg, tmp_path, progress=False)
    assert installed == []


@pytest.mark.parametrize(
    "signum, code, what", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_ctrl_c_on_the_command_line_says_where_the_run_is(
    tmp_path, monkeypatch, capsys, signum, code, what
):
    """One line and the status of a process the signal killed (128 + its number)."""
    sigint_during_step(monkeypatch, 2, signum)
    out = tmp_path / "run"
    args = ["train", "--model", "markov", "--steps", "50", "--batch-size", "8", "--quiet",
            "--out", str(out)]  # fmt: skip
    assert main(args) == code
    err = capsys.readouterr().err.strip()
    assert err == (
        f"darm train: {what}: stopped after step 3, saved in {out / 'last.json'}; "
        "--resume continues"
    )
    assert json.loads((out / "last.json").read_text())["step"] == 3


def test_sigterm_after_training_stops_the_command_as_ctrl_c_does(tmp_path, monkeypatch, capsys):
    """A SIGTERM in the test pass (outside training's loop): one line, status 143, SIGTERM's
    handler as it was; --resume then tests the run without training it again."""
    import darm.run

    real = darm.run.finish_run

    def terminated(*args, **kw):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kw)

    monkeypatch.setattr(darm.run, "finish_run", terminated)
    out = tmp_path / "run"
    args = ["train", "--model", "markov", "--steps", "4", "--batch-size", "8", "--quiet",
            "--samples", "0", "--out", str(out)]  # fmt: skip
    before = signal.getsignal(signal.SIGTERM)
    assert main(args) == 143
    assert capsys.readouterr().err.strip() == (
        f"darm train: terminated: stopped while testing and sampling; the trained run in {out} is "
        "saved, and --resume tests it"
    )
    assert signal.getsignal(signal.SIGTERM) == before and not (out / "results.json").exists()
    monkeypatch.undo()
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 0
    said = capsys.readouterr().out
    assert f"{out} has trained all 4 steps: testing it" in said
    assert "training 4 steps" not in said and "trained in" not in said  # none trained
    assert json.loads((out / "results.json").read_text())["checkpoint_step"] == 4
    assert not list(out.glob("samples*"))  # the run's own --samples 0, not the default 64


def test_resume_draws_the_samples_the_run_was_started_with(tmp_path):
    out = tmp_path / "names"
    args = ["train", "--data", "names", "--model", "bigram", "--batch-size", "8", "--quiet"]
    assert main([*args, "--steps", "2", "--samples", "3", "--out", str(out)]) == 0
    assert len((out / "samples.txt").read_text().splitlines()) == 3
    assert main(["train", "--out", str(out), "--resume", "--steps", "4", "--quiet"]) == 0
    assert len((out / "samples.txt").read_text().splitlines()) == 3  # not the default 64
    assert main(["train", "--out", str(out), "--resume", "--steps", "6", "--samples", "5"]) == 0
    assert len((out / "samples.txt").read_text().splitlines()) == 5  # a resume's own replaces it
    assert main(["train", "--out", str(out), "--resume", "--steps", "8", "--quiet"]) == 0
    assert len((out / "samples.txt").read_text().splitlines()) == 5


def test_resume_with_a_second_cycle_matches_a_two_cycle_run(tmp_path):
    """A finished N-step run, resumed with --steps 2N --cycles 2, ends at the weights of a
    2N-step two-cycle run trained in one go."""
    data = load_data("digits")
    kw = dict(batch_size=16, warmup=2, eval_every=8, seed=3, cycle_decay=0.5)
    whole = tiny_model("gpt", vocab_size=17, seq_len=64)
    train(
        whole,
        "gpt",
        data,
        TrainConfig(steps=16, cycles=2, **kw),
        tmp_path / "whole",
        progress=False,
    )
    first = tiny_model("gpt", vocab_size=17, seq_len=64)
    train(first, "gpt", data, TrainConfig(steps=8, **kw), tmp_path / "first", progress=False)
    path, record = read_record(tmp_path / "first" / "last.json")
    extended, record, path = load_checkpoint(path)
    cfg = TrainConfig(steps=16, cycles=2, **kw)
    train(extended, "gpt", data, cfg, tmp_path / "first", (path, record), progress=False)
    for k, v in whole.state_dict().items():
        torch.testing.assert_close(extended.state_dict()[k], v, rtol=0, atol=1e-6)


def test_time_budget_stops_and_saves(tmp_path):
    data = load_data("digits")
    cfg = TrainConfig(steps=1000, batch_size=8, eval_every=500)
    state = train(_digits_model(), "gpt", data, cfg, tmp_path, progress=False, max_seconds=0)
    assert state["step"] == 1
    assert json.loads((tmp_path / "last.json").read_text())["step"] == 1
    assert (tmp_path / "best.json").exists()


def test_evaluate_shows_progress_on_a_terminal_only(monkeypatch):
    split = load_data("digits")["valid"]
    model = _digits_model()
    shown = {}
    for progress in (False, True):
        monkeypatch.setattr(sys, "stderr", Terminal())
        nll = evaluate(model, split, 100, progress=progress)
        shown[progress] = (sys.stderr.getvalue(), nll.nats)
    assert shown[False][0] == "" and "scoring" in shown[True][0]
    assert f"/{len(split)} " in shown[True][0]  # counts examples of the whole split
    assert shown[True][1] == shown[False][1]
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal: no bar even if asked
    evaluate(model, split, 100, progress=True)
    assert sys.stderr.getvalue() == ""


def test_training_shows_its_bar_on_a_terminal_only(tmp_path, monkeypatch):
    """`darm train ... 2> err.log` gets no bar frames; a terminal gets loss and tokens/s."""
    cfg = TrainConfig(steps=3, batch_size=8, warmup=1, eval_every=3)
    shown = {}
    for name, stream in (("log", io.StringIO()), ("terminal", Terminal())):
        monkeypatch.setattr(sys, "stderr", stream)
        train(_digits_model(), "gpt", load_data("digits"), cfg, tmp_path / name, progress=True)
        shown[name] = stream.getvalue()
    assert "tok_s" in shown["terminal"] and "loss" in shown["terminal"]
    assert "%|" not in shown["log"] and "tok_s" not in shown["log"]


def test_valid_examples_scores_a_fixed_subset(tmp_path, monkeypatch, capsys):
    data = load_data("digits")
    scored = []

    def spy(model, split, batch_size, progress=False):
        scored.append(split.x.clone())
        return evaluate(model, split, batch_size)

    monkeypatch.setattr(darm.train, "evaluate_split", spy)
    cfg = TrainConfig(steps=4, batch_size=8, eval_every=2, valid_examples=30)
    train(_digits_model(), "gpt", data, cfg, tmp_path, progress=False)
    assert len(scored) == 2 and all(torch.equal(x, data["valid"].x[:30]) for x in scored)
    assert "nats/dim (first 30 of 350)\n" in capsys.readouterr().out  # not the whole split's
    with pytest.raises(DarmError, match="valid_examples must be >= 0"):
        check_config(TrainConfig(valid_examples=-1))


def test_train_refuses_a_wrong_name_a_misfit_model_and_a_taken_folder(tmp_path):
    data = load_data("digits")  # L = 17, D = 64, 8x8 images
    cfg = TrainConfig(steps=1, batch_size=4)
    with pytest.raises(DarmError, match="'gru' is a RNN, but the model is a GPT"):
        train(_digits_model(), "gru", data, cfg, tmp_path / "a", progress=False)
    with pytest.raises(DarmError, match="digits has L=17, D=64; the model takes L=5, D=64"):
        train(tiny_model("gpt", seq_len=64), "gpt", data, cfg, tmp_path / "b", progress=False)
    one_row = tiny_model("pixelcnn", vocab_size=17, seq_len=64)  # no image_shape: 1 x 64
    with pytest.raises(DarmError, match="8x8 images; the model reads 1x64"):
        train(one_row, "pixelcnn", data, cfg, tmp_path / "c", progress=False)
    train(_digits_model(), "gpt", data, cfg, tmp_path / "d", progress=False)
    with pytest.raises(DarmError, match="already holds a checkpoint"):  # not overwritten
        train(_digits_model(), "gpt", data, cfg, tmp_path / "d", progress=False)
    assert not any((tmp_path / x).exists() for x in "abc")  # refused before any file


def test_a_model_built_from_the_data_takes_its_shape_and_classes_are_checked(tmp_path):
    import darm

    data = load_data("digits")  # 8x8 images, 17 levels, 10 classes
    model = darm.create_model("pixelcnn", data, n_hidden=8, n_layer=1)
    assert model.event_shape == (8, 8, 1) and model.vocab_size == 17
    assert darm.create_model("gru", data, n_hidden=8).num_dims == 64
    few = darm.create_model("markov", data, num_classes=5, k=2, n_hidden=8)
    with pytest.raises(ValueError, match="label 9 is outside 0..4"):
        evaluate(few, data["test"])
    with pytest.raises(DarmError, match="digits has 10 classes; the model takes 5"):
        train(few, "markov", data, TrainConfig(steps=1), tmp_path, progress=False)


def test_a_loaded_checkpoint_is_ready_to_score_and_train_switches_it_back(tmp_path):
    data = load_data("digits")
    model = tiny_model("gpt", vocab_size=17, seq_len=64, dropout=0.5)
    train(model, "gpt", data, TrainConfig(steps=2, batch_size=4), tmp_path, progress=False)
    loaded, record, _ = load_checkpoint(tmp_path)
    assert not loaded.training  # dropout off: the same logits twice
    x = data["test"].x[:2]
    assert torch.equal(loaded(x), loaded(x))
    cfg = TrainConfig(steps=3, batch_size=4)
    train(loaded, "gpt", data, cfg, tmp_path, (tmp_path / "last.json", record), progress=False)
    assert loaded.training


def test_a_checkpoint_fine_tuned_from_python_records_where_it_began(tmp_path):
    """load_checkpoint(overrides=...) returns the record of the model it built, and train()
    on that model records the checkpoint as the run's start, as `darm train --init` does."""
    data = load_data("digits")
    model = tiny_model("gpt", vocab_size=17, seq_len=64)
    train(model, "gpt", data, TrainConfig(steps=2, batch_size=4), tmp_path / "a", progress=False)
    loaded, record, path = load_checkpoint(tmp_path / "a", overrides={"dropout": "0.25"})
    assert loaded.config.dropout == record["config"]["dropout"] == 0.25
    # a field of the network itself may only repeat its value, as --init --set allows
    with pytest.raises(
        DarmError,
        match=r"overrides n_head=1 would load its weights into "
        r"another network \(it has n_head=2\); only dropout may change",
    ):
        load_checkpoint(tmp_path / "a", overrides={"n_head": 1})
    assert load_checkpoint(tmp_path / "a", overrides={"n_head": "2"})[0].config.n_head == 2
    train(loaded, "gpt", data, TrainConfig(steps=1, batch_size=4), tmp_path / "b", progress=False)
    init = read_record(tmp_path / "b" / "last.json")[1]["init"]
    assert init == {"path": str(path.resolve()), "step": 2, "weights": record["sha256"]["weights"]}
    # trained on again, its weights are the checkpoint's no longer: where from is not said
    train(loaded, "gpt", data, TrainConfig(steps=1, batch_size=4), tmp_path / "d", progress=False)
    assert "init" not in read_record(tmp_path / "d" / "last.json")[1]
    fresh = tiny_model("gpt", vocab_size=17, seq_len=64)
    train(fresh, "gpt", data, TrainConfig(steps=1, batch_size=4), tmp_path / "c", progress=False)
    assert read_record(tmp_path / "c" / "last.json")[1]["init"] is None  # new weights


def test_a_run_saved_before_its_names_fields_were_fixed_still_loads(tmp_path):
    """`--model gru --set cell=lstm` was allowed once: such a checkpoint must still load (as
    the LSTM it holds), though create_model("gru", cell="lstm") is refused now."""
    data = load_data("digits")
    lstm = darm.create_model("rnn", data, cell="lstm", n_embd=4, n_hidden=8)
    with pytest.raises(DarmError, match="'gru' is rnn with cell='gru', but the model has "
                       "cell='lstm': name it 'rnn'"):  # fmt: skip
        train(lstm, "gru", data, TrainConfig(steps=1, batch_size=4), tmp_path, progress=False)
    # such a run, made as it was then: trained, and its records named gru
    old = tmp_path / "old"
    train(lstm, "rnn", data, TrainConfig(steps=1, batch_size=4), old, progress=False)
    for tag in ("best", "last"):
        record = json.loads((old / f"{tag}.json").read_text())
        record["model"] = "gru"
        record["sha256"]["record"] = record_sha256(record)
        (old / f"{tag}.json").write_text(json.dumps(record))
    loaded, record, _ = load_checkpoint(old)
    assert record["model"] == "gru" and loaded.config.cell == "lstm"
    x = data["test"].x[:2]
    torch.testing.assert_close(loaded(x), lstm.eval()(x))
    # it resumes under its name; a fine-tune (a new run) is named for what it holds
    tiny = ["--batch-size", "4", "--quiet", "--samples", "0"]
    assert main(["train", "--out", str(old), "--resume", "--steps", "2", *tiny]) == 0
    assert main(["train", "--init", str(old), "--steps", "1", "--out", str(tmp_path / "ft"),
                 *tiny]) == 0  # fmt: skip
    assert read_record(tmp_path / "ft" / "last.json")[1]["model"] == "rnn"


def test_a_second_sigterm_in_training_ends_the_process_on_the_spot():
    """The first SIGTERM asks the loop to stop after its step; a second one must not wait
    for a Python handler (which a long native op would hold off): the default action."""
    script = """
import os, signal, time
from darm.interrupt import sigterm_interrupts, stop_on_signals
with sigterm_interrupts(), stop_on_signals() as stop:  # as in the command line
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop, "the first only asks"
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
    print("survived")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == -signal.SIGTERM and "survived" not in done.stdout, done.stderr
