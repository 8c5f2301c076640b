"""Crash-safe file writes: a file is written under a temporary name beside it, synced and
renamed into place, so a kill at any instant leaves the old file or the new one whole, never
a torn one; and a destination that cannot be written is refused before any work is done."""

from __future__ import annotations

import glob
import os
import re
import tempfile
import time
from pathlib import Path

from safetensors import SafetensorError

from darm.errors import DarmError


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), then rename tmp_path onto path (atomic on POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    try:
        # the writer's process id in the name tells a later write whether it is still alive
        prefix = f".{path.name}.{os.getpid()}."
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".tmp")
    except OSError as e:  # /proc, a read-only folder: the error names the file asked for
        raise OSError(e.errno, e.strerror, str(path)) from None
    os.close(fd)
    try:
        try:
            write(tmp)
        except SafetensorError as e:  # a full disk, say, in safetensors' words: the system's
            raise system_error(e, path) from None
        # mkstemp makes 0600, and a writer may make its own file anew (safetensors does):
        # the finished file gets the usual permissions
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb") as f:
            try:
                os.fsync(f.fileno())
            except OSError as e:  # EIO, a full disk on NFS: named by the file asked for
                raise OSError(e.errno, e.strerror, str(path)) from None
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def remove_stale_temporaries(path: Path) -> None:
    """Delete the temporaries that earlier writes of `path` left when their process was
    killed mid-write (kill -9, a power cut): this user's, of a process no longer running on
    this machine, untouched for a minute (a writer on another machine sharing the folder is
    still writing within that). Best effort: one that cannot be removed stays. On a system
    without POSIX signals none is removed."""
    if os.name != "posix":
        return
    own = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[^.]+\.tmp")  # .NAME.PID.XXXX.tmp
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        found = own.fullmatch(tmp.name)
        try:
            info = tmp.stat()
            if (
                found
                and info.st_uid == os.getuid()
                and time.time() - info.st_mtime > 60
                and not alive(int(found.group(1)))
            ):
                tmp.unlink()
        except OSError:
            pass


def alive(pid: int) -> bool:
    """Whether a process `pid` runs on this machine (signal 0 checks without sending)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's, or no such number: keep it
        return True
    return True


def system_error(e: SafetensorError, path: Path) -> Exception:
    """safetensors' failure to write as the OSError it wraps ("... (os error 28)"), so the
    command says "No space left on device: PATH" in one line as for any other file."""
    code = re.search(r"\(os error (\d+)\)", str(e))
    if code:
        errno = int(code.group(1))
        return OSError(errno, os.strerror(errno), str(path))
    return DarmError(f"cannot write {path}: {e}")


def check_writable(path: Path) -> None:
    """Refuse, before any work is done, a destination that cannot be written: a read-only
    folder, or a file standing where a folder must be. (An atomic write renames inside the
    folder, so the folder is what must be writable.)"""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:  # the nearest existing ancestor
        folder = folder.parent
    if not folder.is_dir():
        raise DarmError(f"cannot write {path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DarmError(f"cannot write {path}: {folder} is not writable")


def fsync_folder(folder: Path) -> None:
    """Make the renames in `folder` durable across a power cut, not only a killed process
    (POSIX; where a folder cannot be opened, e.g. on Windows, the rename stays as it is)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
