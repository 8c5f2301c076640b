"""darm.heap: freed memory kept for reuse, so repeated training steps stop page-faulting."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from darm.heap import glibc

# a few training steps of a small gated PixelCNN, whose maps (16 x 32 x 28 x 28 floats) are
# freed and allocated again every step; prints the minor page faults of the last three
STEPS = """
import resource, sys, torch
from darm.heap import retain_freed_memory
from darm.metrics import nll_per_dim
from darm.models import create_model
if sys.argv[1] == "kept":
    assert retain_freed_memory()
torch.set_num_threads(1)
torch.manual_seed(0)
model = create_model("gated_pixelcnn", vocab_size=2, image_shape=(28, 28), n_hidden=32, n_layer=3)
x = torch.randint(0, 2, (16, 784))
def step():
    model.zero_grad(set_to_none=True)
    nll_per_dim(model(x), x, None).mean().backward()
step(); step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    """python -c code with glibc's defaults, whatever this shell's allocator settings are."""
    preloads = ("GLIBC_TUNABLES", "LD_PRELOAD")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in preloads}
    cmd = [sys.executable, "-c", code, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


def page_faults(setting: str) -> int:
    done = run_python(STEPS, setting)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


def test_kept_freed_memory_stops_the_page_faults_of_repeated_steps():
    if glibc() is None:
        pytest.skip("the C library is not glibc")
    default, kept = page_faults("default"), page_faults("kept")
    # glibc's own thresholds move with what was freed, so its count varies from run to run
    # (6,000-12,000 here); kept, it stays near 0 (0-400)
    assert default > 1000, default
    assert kept < default / 4, (kept, default)


# the console script with its call to retain_freed_memory watched
COMMAND = """
import sys
import darm.entry
calls = []
keep = darm.entry.retain_freed_memory
darm.entry.retain_freed_memory = lambda: calls.append(keep())
sys.argv = ["darm", "models"]
try:
    darm.entry.main()
except SystemExit as e:
    print("calls", calls, "exit", e.code)
"""


def test_the_darm_command_keeps_freed_memory():
    done = run_python(COMMAND)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == f"calls [{glibc() is not None}] exit 0"
