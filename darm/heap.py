"""Freed memory kept for reuse, so a training step does not page-fault its tensors in anew.

glibc's malloc hands a large freed block back to the kernel (munmap, or a trim of the heap's
top), and the next step's tensor of the same size then faults in fresh zeroed pages: a
gated PixelCNN at batch 32 took 12,000-15,000 page faults a step (benchmarks/heap_speed.py),
each page zeroed by the kernel. PyTorch's CPU tuning guide suggests preloading jemalloc or
tcmalloc for this; glibc's own `mallopt` does it without a new dependency or a launcher.

This changes the whole process's allocator, so the `darm` command (and the benchmarks)
call it, not the library: a program that imports darm decides for itself.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # keep up to this much free memory at the heap's top
M_MMAP_THRESHOLD = -3  # blocks at least this large get their own mapping, unmapped on free
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest on 64-bit: bigger blocks (data) still unmap
TRIM_THRESHOLD = 2**30
OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")


def retain_freed_memory() -> bool:
    """Keep blocks under 32 MiB, and up to 1 GiB free at the heap's top, in the process for
    reuse. Memory then stays at its peak until exit, as a training run's does anyway.
    False, and nothing changed, where the C library is not glibc (macOS, musl, Windows) or
    another allocator is preloaded (jemalloc, tcmalloc, mimalloc: glibc's mallopt would
    return success and change nothing; they keep freed memory of their own accord)."""
    libc = glibc()
    preload = os.environ.get("LD_PRELOAD", "")
    if libc is None or any(name in preload for name in OTHER_ALLOCATORS):
        return False
    # setting either threshold turns off glibc's own adjustment of both, so set both
    mmap_set = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    trim_set = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return bool(mmap_set and trim_set)


def glibc() -> ctypes.CDLL | None:
    """The C library this process already runs on, where it is glibc; else None (musl and
    others lack mallopt or ignore it)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None
