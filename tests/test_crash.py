"""Crash safety: a kill at any instant leaves a readable checkpoint, `--resume` after
SIGKILL ends at the weights of an uninterrupted run, and a non-finite loss stops training
with the last good checkpoint in place."""

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import darm.checkpoint
import darm.step
import darm.train
from darm.checkpoint import load_checkpoint, load_training_state, read_record, save_checkpoint
from darm.cli import main
from darm.data import load_data
from darm.errors import DarmError
from darm.run import stands_at_best
from darm.step import make_optimizer
from darm.train import train
from darm.train_config import TrainConfig
from tests.conftest import tiny_model, write_names

ROOT = Path(__file__).resolve().parent.parent


class Killed(BaseException):
    """Stands for SIGKILL inside one process: nothing after it runs."""


def save_cut_short(monkeypatch, renames: int, *save_args) -> None:
    """save_checkpoint(*save_args), killed just after its first `renames` renames."""
    calls, real_replace = [], os.replace

    def replace(src, dst):
        if len(calls) == renames:
            raise Killed
        calls.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(darm.checkpoint.os, "replace", replace)
    with pytest.raises(Killed):
        save_checkpoint(*save_args)
    monkeypatch.undo()


def test_a_save_that_commits_while_a_reader_loads_is_not_called_corruption(tmp_path, monkeypatch):
    """`darm sample RUN` beside a run that is training: the reader took the JSON of step 1,
    then a save of step 2 committed before it read the weights. It loads step 2, where it
    once said the weights were "truncated or altered"."""
    old, new = tiny_model("markov"), tiny_model("markov")
    with torch.no_grad():
        for p in new.parameters():
            p.add_(1.0)
    save_checkpoint(tmp_path, "last", old, "markov", {"step": 1, "data": {}})
    real_read, saved = darm.checkpoint.read_record, []

    def read_then_save(path):  # the reader's first look, then the trainer's next save
        result = real_read(path)
        if not saved:
            saved.append(save_checkpoint(tmp_path, "last", new, "markov", {"step": 2, "data": {}}))
        return result

    monkeypatch.setattr(darm.checkpoint, "read_record", read_then_save)
    loaded, record, _ = load_checkpoint(tmp_path / "last.json")
    assert saved and record["step"] == 2
    for k, v in new.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


@pytest.mark.parametrize("survive", range(5))
def test_save_cut_short_at_any_rename_leaves_old_or_new(tmp_path, monkeypatch, survive):
    """A save does five renames (staged weights, staged optimiser, JSON, two final
    names); cut it after any number of them and `last` still loads, whole."""
    old = tiny_model("markov")
    optimizer = make_optimizer(old, TrainConfig())
    save_checkpoint(tmp_path, "last", old, "markov", {"step": 1, "data": {}}, optimizer)
    new = tiny_model("markov")
    with torch.no_grad():
        for p in new.parameters():
            p.add_(1.0)
    save_cut_short(
        monkeypatch, survive, tmp_path, "last", new, "markov", {"step": 2, "data": {}}, optimizer
    )
    loaded, record, path = load_checkpoint(tmp_path / "last.json")
    expected = old if record["step"] == 1 else new
    assert record["step"] == (1 if survive < 3 else 2)  # the JSON rename is the commit
    for k, v in expected.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    load_training_state(path, record, make_optimizer(loaded, TrainConfig()))
    # the next save goes through and clears what the cut one left behind
    save_checkpoint(tmp_path, "last", new, "markov", {"step": 3, "data": {}}, optimizer)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "last.json",
        "last.optim.safetensors",
        "last.safetensors",
    ]


@pytest.mark.parametrize("survive", range(7))
def test_two_saves_cut_short_in_a_row(tmp_path, monkeypatch, survive):
    """The first save is cut after its commit (JSON renamed, staged files not); the second
    is cut after `survive` renames. `last` loads whole: the first save's or the second's."""
    optimizer = make_optimizer(tiny_model("markov"), TrainConfig())
    models = [tiny_model("markov") for _ in range(3)]
    for i, m in enumerate(models):
        with torch.no_grad():
            for p in m.parameters():
                p.add_(float(i))
    save_checkpoint(tmp_path, "last", models[0], "markov", {"step": 1, "data": {}}, optimizer)
    for step, cut in ((2, 3), (3, survive)):
        save_cut_short(
            monkeypatch,
            cut,
            tmp_path,
            "last",
            models[step - 1],
            "markov",
            {"step": step, "data": {}},
            optimizer,
        )
    loaded, record, path = load_checkpoint(tmp_path / "last.json")
    # the first cut save committed (step 2); the second renames the first's two pending
    # files, stages its own two, and commits with its fifth rename, the JSON
    assert record["step"] == (2 if survive < 5 else 3)
    for k, v in models[record["step"] - 1].state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    load_training_state(path, record, make_optimizer(loaded, TrainConfig()))


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--model", "markov", "--set", "n_embd=8",
            "--set", "n_hidden=64", "--set", "dropout=0.2", "--steps", "200",
            "--eval-every", "2", "--batch-size", "16", "--quiet", "--samples", "2",
            "--threads", "1", "--out", str(out), *extra]  # fmt: skip


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    """A training subprocess is killed with SIGKILL at a random moment after its first
    checkpoint (often in the middle of a save), resumed, and compared bit for bit with an
    uninterrupted run (in this process, meanwhile, to save a Python start-up)."""
    data = write_names(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "darm", *_train_args(data, tmp_path / "cut")]
    victim = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    delay = random.uniform(0.0, 0.5)  # 200 steps take 0.7 s or more on 2 shared cores

    def kill_after_first_checkpoint():
        while not (tmp_path / "cut" / "last.json").exists() and victim.poll() is None:
            time.sleep(0.005)
        time.sleep(delay)
        victim.send_signal(signal.SIGKILL)

    killer = threading.Thread(target=kill_after_first_checkpoint)
    killer.start()
    threads = torch.get_num_threads()
    try:
        assert main(_train_args(data, tmp_path / "full")) == 0
        killer.join(timeout=60)
        assert victim.wait(timeout=60) == -signal.SIGKILL
        killed_at = read_record(tmp_path / "cut" / "last.json")[1]["step"]
        assert main(_train_args(data, tmp_path / "cut", "--resume")) == 0
    finally:
        torch.set_num_threads(threads)
        victim.kill()
    a = load_file(tmp_path / "full" / "last.safetensors")
    b = load_file(tmp_path / "cut" / "last.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after a kill at step {killed_at}"
    # rows logged after the last checkpoint of the killed run are not repeated
    steps = [int(r.split(",")[0]) for r in (tmp_path / "cut" / "log.csv").read_text().split()[1:]]
    assert steps == sorted(set(steps)) and steps[-1] == 200


def test_nonfinite_loss_names_the_step_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    data = load_data(str(write_names(tmp_path)))
    model = tiny_model("gru", vocab_size=data.vocab_size, seq_len=data.seq_len)
    calls = []
    real = darm.step.nll_per_dim

    def poisoned(logits, x, mask=None):
        calls.append(1)
        nll = real(logits, x, mask)
        return nll * float("nan") if len(calls) > 6 else nll  # from the 7th batch on

    monkeypatch.setattr(darm.step, "nll_per_dim", poisoned)
    cfg = TrainConfig(steps=20, batch_size=8, warmup=2, eval_every=4)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(
        DarmError,
        match=r"loss is nan at step 7; stopped, the last checkpoint in .* \(step 4, valid",
    ):
        train(model, "gru", data, cfg, tmp_path / "run", progress=False)
    assert signal.getsignal(signal.SIGINT) is handler  # Ctrl-C handling restored on errors
    _, record, _ = load_checkpoint(tmp_path / "run" / "last.json")
    assert record["step"] == 4


def test_a_kill_between_the_first_best_and_last_saves_resumes_from_best(tmp_path, monkeypatch):
    """Killed after its first best save, before its first last: --resume goes on from best
    (the same step) and ends at the weights of an uninterrupted run."""
    data = write_names(tmp_path)
    args = [*_train_args(data, tmp_path / "cut"), "--steps", "6", "--samples", "0"]
    real_save = darm.train.save_checkpoint

    def killed_at_first_last(run_dir, tag, *rest):
        if tag == "last":
            raise Killed
        real_save(run_dir, tag, *rest)

    monkeypatch.setattr(darm.train, "save_checkpoint", killed_at_first_last)
    with pytest.raises(Killed):
        main(args)
    monkeypatch.undo()
    cut = tmp_path / "cut"
    assert (cut / "best.json").exists() and not (cut / "last.json").exists()
    assert stands_at_best(cut) == 2  # the first evaluation's step, the last logged
    log = (cut / "log.csv").read_text()
    (cut / "log.csv").write_text(log + "4,0.001,1.0,,100,1.0\n")  # logged past best:
    assert stands_at_best(cut) is None  # last.* moved aside, not a kill between the saves
    (cut / "log.csv").write_text(log)
    assert main([*args, "--resume"]) == 0
    assert main([*_train_args(data, tmp_path / "full"), "--steps", "6", "--samples", "0"]) == 0
    a = load_file(tmp_path / "full" / "last.safetensors")
    b = load_file(cut / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
