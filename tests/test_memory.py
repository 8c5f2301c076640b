"""darm.memory: freed activations stay in the heap instead of being faulted in every step."""

import os
import platform
import subprocess
import sys

import pytest

from darm.memory import keep_freed_memory

# Allocate, touch and free a 64 MiB tensor 20 times: above glibc's largest dynamic mmap
# threshold (32 MiB), so by default every round is a fresh mmap whose 16,384 pages fault in.
PROBE = """
import resource, sys, torch
from darm.memory import keep_freed_memory
kept = keep_freed_memory()
for _ in range(2):  # the heap grows to hold the block: its first rounds fault either way
    torch.empty(16 << 20).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.empty(16 << 20).fill_(1.0)  # 16 Mi floats = 64 MiB
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(keep: str) -> tuple[str, int]:
    env = {**os.environ, "DARM_KEEP_MEMORY": keep}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_kept_memory_is_reused_without_page_faults():
    kept, faults = _faults("1")
    default, default_faults = _faults("0")
    assert (kept, default) == ("True", "False")
    pages = (64 << 20) // 4096  # of one round
    assert default_faults > 15 * pages  # every round maps its pages anew
    assert faults < 3 * pages  # the heap may still grow once or twice, then it is reused


def test_is_idempotent():
    assert keep_freed_memory() == keep_freed_memory()
