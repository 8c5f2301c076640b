"""The benchmark scripts still run and print their tables (tiny settings; slow: a few
minutes in all, so out of the default run: `pytest -m slow tests/test_benchmarks.py`)."""

import subprocess
import sys
from pathlib import Path

import pytest

from darm.heap import glibc

ROOT = Path(__file__).resolve().parent.parent

SMOKE = [
    ["names.py", "--only", "bigram", "--budget", "2"],
    ["digits.py", "--only", "markov k=8", "--budget", "2"],
    ["sampling.py", "--only", "markov", "--repeats", "1", "--skip-hf", "--batch", "4"],
    ["train_speed.py", "--steps", "3", "--warmup-steps", "1", "--only", "fp32"],
    ["gpt_speed.py", "--steps", "101", "--dtypes", "fp32", "--equal-time", ""],
    ["gpt_speed_repeat.py", "--rounds", "1", "--steps", "101", "--impls", "baseline,fp32"],
    ["gpt_speed_interleaved.py", "--steps", "101", "--block", "50", "--dtype", "fp32", "--compile"],
    ["binarized_mnist.py", "--only", "pixelcnn", "--budget", "2"],  # a minute: the test pass
    ["bf16_speed.py", "--rounds", "1", "--reps", "1"],  # a minute or more on a CPU without bf16
    ["dropout_speed.py", "--rounds", "1"],
    ["gated_step_speed.py", "--rounds", "1", "--reps", "1"],
    pytest.param(
        ["heap_speed.py", "--rounds", "1", "--steps", "1"],
        marks=pytest.mark.skipif(glibc() is None, reason="glibc's allocator only"),
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("args", SMOKE, ids=lambda a: a[0])
def test_a_benchmark_prints_its_table(args, tmp_path):
    quality = ("names.py", "digits.py", "binarized_mnist.py")  # they keep their runs
    extra = ["--out", str(tmp_path / "runs")] if args[0] in quality else []
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / args[0]), *args[1:], *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "\n|---" in done.stdout or "| --- |" in done.stdout, done.stdout[-2000:]


def test_the_interleaved_darm_step_is_train_s_step(tmp_path):
    """gpt_speed_interleaved.py times darm.train.train's step rebuilt from its parts: the
    weights after 3 of its steps must be train()'s after 3, to the bit."""
    from dataclasses import replace

    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpt_speed
    import gpt_speed_interleaved

    from darm.data import load_data
    from darm.train import train

    data = load_data("shakespeare", block=gpt_speed.BLOCK)
    torch.set_num_threads(1)
    # the schedule of a run of WARMUP + 1 steps, 3 of them taken; a clip that acts at once
    cfg = replace(gpt_speed.darm_config("fp32", gpt_speed.WARMUP + 1), grad_clip=1e-3)
    mine, step = gpt_speed_interleaved.darm_trainer(data, cfg)
    for i in range(3):
        step(i)
    theirs = gpt_speed.darm_gpt(data.vocab_size)
    train(theirs, "gpt", data, cfg, tmp_path / "r", progress=False, stop_at=3)
    for (name, a), b in zip(mine.state_dict().items(), theirs.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_quality_benchmark_stopped_by_a_signal_says_so_in_one_line(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import common

    from darm.data import load_data
    from darm.interrupt import Stopped

    def stopped(*args, **kwargs):
        raise Stopped("stopped after step 3, saved in x/last.json; --resume continues")

    monkeypatch.setattr(common, "train", stopped)
    data = load_data("digits")
    with pytest.raises(SystemExit) as e:
        common.run_one("bigram", "markov", data, dict(k=1), dict(steps=5), 10, tmp_path)
    assert str(e.value.code) == (
        "bigram: stopped after step 3, saved in x/last.json; --resume continues"
    )
