"""Keep freed memory in the process, so a CPU training step does not fault its pages in anew.

glibc's malloc serves every block above its mmap threshold (128 KiB to start) with a fresh
mmap and gives it back to the kernel on free; it also trims the top of the heap whenever
128 KiB lie free there. A training step allocates and frees the same large activations and
gradients every step, so each step faults all of them in again: 3,400 page faults a step
for the small GPT of benchmarks/gpt_speed.py, ~35% of its bf16 step time, and 20,000 for the
binarized MNIST gated PixelCNN (~12%). Raising both thresholds keeps those pages in the heap
for reuse (the usual advice for PyTorch on CPUs is jemalloc or tcmalloc preloaded, which
does the same); the cost is that the process keeps its peak heap until it exits.

Set DARM_KEEP_MEMORY=0 to leave malloc as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap
MMAP_THRESHOLD_CAP = 32 << 20  # what older glibc accepts at most on 64-bit systems
TRIM_THRESHOLD = 1 << 30  # free heap kept before any is trimmed

_done = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; True if they are now raised.
    A no-op (False) off glibc (macOS, Windows, musl) or with DARM_KEEP_MEMORY=0."""
    global _done
    if _done:
        return True
    if os.environ.get("DARM_KEEP_MEMORY", "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # mallopt returns 1 on success; an older glibc refuses thresholds above 32 MiB
    mapped = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) or mallopt(
        M_MMAP_THRESHOLD, MMAP_THRESHOLD_CAP
    )
    _done = bool(mapped and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
