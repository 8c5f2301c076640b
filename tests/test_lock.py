"""One darm process at a time in a run folder."""

import json
import subprocess
import sys

import pytest

from darm.cli import main
from darm.errors import DarmError
from darm.lock import LOCK_NAME, folder_lock
from tests.conftest import TINY_MARKOV

HOLD = """
import sys, time
from darm.lock import folder_lock
with folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def hold(folder):
    """Another process holding the lock on `folder` (kill it when done)."""
    other = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE,
                             text=True)  # fmt: skip
    assert other.stdout.readline().strip() == "held"
    return other


@pytest.fixture
def held(tmp_path):
    """tmp_path/run, locked by another process until the test ends."""
    folder = tmp_path / "run"
    other = hold(folder)
    yield folder, other.pid
    other.kill()
    other.wait()


def test_a_folder_in_use_is_refused_and_left_as_it_was(held, capsys):
    folder, pid = held
    with pytest.raises(DarmError, match=f"run is in use by another darm process \\(pid {pid}\\)"):
        with folder_lock(folder):
            pass
    argv = ["train", *TINY_MARKOV, "--steps", "2", "--out", str(folder), "--quiet"]
    assert main(argv) == 1
    assert "is in use by another darm process" in capsys.readouterr().err
    assert [p.name for p in folder.iterdir()] == [LOCK_NAME]  # the other's; nothing beside
    out = ["compare", "--models", "bigram", "--steps", "1", "--out", str(folder), "--quiet"]
    assert main(out) == 1
    assert "is in use by another darm process" in capsys.readouterr().err


def test_a_comparisons_family_folder_in_use_fails_that_family_alone(tmp_path, capsys):
    """A `darm train --out REPORT/bigram` holding the folder compare would train bigram in."""
    other = hold(tmp_path / "c" / "bigram")
    try:
        argv = ["compare", "--models", "bigram,markov", "--steps", "1", "--samples", "2",
                "--set", "markov.n_hidden=8", "--quiet", "--out", str(tmp_path / "c")]  # fmt: skip
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "failed: bigram (" in err and "is in use by another darm process" in err
        rows = {
            r["model"]: r
            for r in json.loads((tmp_path / "c" / "results.json").read_text())["families"]
        }
        assert rows["bigram"]["status"] == "failed" and rows["markov"]["status"] == "done"
        assert "in use by another darm process" in rows["bigram"]["note"]
    finally:
        other.kill()
        other.wait()


def test_a_lock_is_released_and_a_folder_it_made_for_nothing_removed(tmp_path):
    with folder_lock(tmp_path / "new"):
        assert (tmp_path / "new" / LOCK_NAME).exists()
    assert not (tmp_path / "new").exists()  # made, then nothing written: gone again
    with folder_lock(tmp_path / "kept"):
        (tmp_path / "kept" / "log.csv").write_text("step\n")
    with folder_lock(tmp_path / "kept"):  # released: taken again at once
        pass
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["log.csv"]  # the lock file gone
    with pytest.raises(KeyError), folder_lock(tmp_path / "failed"):
        raise KeyError  # a command that fails inside leaves no empty folder either
    assert not (tmp_path / "failed").exists()
    with pytest.raises(KeyError), folder_lock(tmp_path / "runs" / "names-gru"):
        raise KeyError  # nor the runs/ it made to hold the run
    assert not (tmp_path / "runs").exists()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "other").mkdir()
    with folder_lock(tmp_path / "runs" / "a" / "b"):
        pass
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["other"]  # runs/ kept: not empty


def test_a_file_system_without_locks_warns_and_goes_on(tmp_path, monkeypatch, capsys):
    import errno

    import darm.lock

    def no_locks(fd, how):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(darm.lock.fcntl, "flock", no_locks)
    with folder_lock(tmp_path / "run"):
        (tmp_path / "run" / "log.csv").write_text("step\n")
    assert "warning: cannot lock" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["log.csv"]
