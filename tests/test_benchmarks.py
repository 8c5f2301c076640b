"""The benchmark scripts still run and print their tables (tiny settings; slow: a few
minutes in all, so out of the default run: `pytest -m slow tests/test_benchmarks.py`)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SMOKE = [
    ["names.py", "--only", "bigram", "--budget", "2"],
    ["digits.py", "--only", "markov k=8", "--budget", "2"],
    ["sampling.py", "--only", "markov", "--repeats", "1", "--skip-hf", "--batch", "4"],
    ["train_speed.py", "--steps", "3", "--warmup-steps", "1", "--only", "fp32"],
    ["gpt_speed.py", "--steps", "101", "--dtypes", "fp32", "--equal-time", ""],
    ["gpt_speed_repeat.py", "--rounds", "1", "--steps", "101", "--impls", "baseline,fp32"],
    ["binarized_mnist.py", "--only", "pixelcnn", "--budget", "2"],  # a minute: the test pass
    ["bf16_speed.py", "--rounds", "1", "--reps", "1"],  # a minute or more on a CPU without bf16
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
