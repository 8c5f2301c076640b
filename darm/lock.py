"""One darm process at a time in a run (or report) folder: two commands writing the same
checkpoints and log would interleave them and lose one run's results without a word."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from darm.errors import DarmError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; folders go unguarded there
    fcntl = None

LOCK_NAME = ".darm.lock"  # hidden: `darm runs` and image folders pass over it


@contextlib.contextmanager
def folder_lock(folder: Path, held: bool = True, what: str = "run folder") -> Iterator[None]:
    """Hold an exclusive lock on `folder` (made if need be) while inside, or refuse at once
    if another process holds it. The lock goes with the process, however it ends; the lock
    file goes on release, and folders this made and left empty go with it, so a command
    refused later leaves nothing behind. held=False: nothing (torchrun's ranks other than
    0, which write nothing)."""
    if not held or fcntl is None:
        yield
        return
    folder = Path(folder)
    # the folders this makes, deepest first: runs/ as well as runs/names-gru
    made = [f for f in (folder, *folder.parents) if not f.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file in the way, a read-only parent
        raise DarmError(f"cannot create the {what} {folder}: {e.strerror}") from None
    path = folder / LOCK_NAME
    fd = take(path, folder)
    if fd is None:  # a file system without locks: unguarded, as before there were any
        yield
        return
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # while still held: a waiting opener fails, a new one
        os.close(fd)  # makes a new file (and releases the lock)
        with contextlib.suppress(OSError):  # (the first one not empty is kept, and above it)
            for made_folder in made:
                made_folder.rmdir()


def take(path: Path, folder: Path) -> int | None:
    """The locked descriptor of the lock file at `path` (None where the file system has no
    locks: Lustre without flock, some NFS and FUSE mounts). A file the holder unlinked after
    this opened it is locked in vain: then again, with the file now there."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # (less the umask, as all files)
        except FileNotFoundError:  # the holder removed the folder it had made: make it again
            folder.mkdir(parents=True, exist_ok=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if not isinstance(e, BlockingIOError):
                os.close(fd)
                path.unlink(missing_ok=True)
                print(f"warning: cannot lock {folder} ({e.strerror}): nothing stops a second "
                      f"darm process from writing there too", file=sys.stderr)  # fmt: skip
                return None
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DarmError(
                f"{folder} is in use by another darm process (pid {holder}); wait for it, "
                f"or choose another --out"
            ) from None
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # who holds it, for the message
            return fd
        os.close(fd)
