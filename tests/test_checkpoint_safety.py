"""Checkpoints that are truncated, bit-flipped, of another architecture or pickles are
refused with one line on stderr, never a traceback, and nothing is ever unpickled."""

import hashlib
import json
import os
import pickle
import random
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load, save_file

from darm.checkpoint import record_sha256
from darm.cli import main
from tests.conftest import TINY_MARKOV, one_line_error, write_names

FILES = ("best.json", "best.safetensors", "best.optim.safetensors")


def load_file(path):
    """Tensors in memory: safetensors' own load_file maps the file, and rewriting a mapped
    file in place kills the process with SIGBUS."""
    return load(path.read_bytes())


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    out = root / "run"
    args = ["train", "--data", str(write_names(root)), *TINY_MARKOV, "--steps", "4",
            "--eval-every", "2", "--batch-size", "4", "--out", str(out), "--quiet",
            "--samples", "1"]  # fmt: skip
    assert main(args) == 0
    return out


@pytest.fixture
def bad(good, tmp_path):
    """A copy of the good run's `best` checkpoint, to spoil."""
    for name in FILES:
        shutil.copy(good / name, tmp_path / name)
    return tmp_path


def rehash(folder, role="weights", tag="best"):
    """Record the current hash of a tensor file, as someone tampering on purpose would."""
    name = f"{tag}.safetensors" if role == "weights" else f"{tag}.optim.safetensors"
    record = json.loads((folder / f"{tag}.json").read_text())
    record["sha256"][role] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    reseal(folder, record, tag)


def reseal(folder, record, tag="best"):
    record["sha256"]["record"] = record_sha256(record)
    (folder / f"{tag}.json").write_text(json.dumps(record))


@pytest.mark.parametrize("keep", [0, 8, 0.5, -1])
def test_truncated_weights(bad, capsys, keep):
    data = (bad / "best.safetensors").read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    (bad / "best.safetensors").write_bytes(data[:n])
    one_line_error(capsys, main(["eval", str(bad)]), needle="truncated or altered")


def test_truncated_json(bad, capsys):
    text = (bad / "best.json").read_text()
    (bad / "best.json").write_text(text[: len(text) // 2])
    one_line_error(capsys, main(["eval", str(bad)]), needle="not a darm checkpoint")


@pytest.mark.parametrize("seed", range(5))
def test_bit_flip_in_weights(bad, capsys, seed):
    data = bytearray((bad / "best.safetensors").read_bytes())
    rng = random.Random(seed)
    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    (bad / "best.safetensors").write_bytes(bytes(data))
    one_line_error(capsys, main(["eval", str(bad)]), needle="truncated or altered")


@pytest.mark.parametrize(
    "damaged, needle",
    [
        ("last.optim.safetensors", "truncated or altered"),
        # the run would end on its best checkpoint: named before it trains, not after
        ("best.safetensors", "(truncated or altered); move best.* aside to resume"),
    ],
)
def test_a_bit_flip_refuses_resume_before_any_step(good, tmp_path, capsys, damaged, needle):
    run = tmp_path / "run"
    shutil.copytree(good, run)
    data = bytearray((run / damaged).read_bytes())
    data[len(data) // 2] ^= 0x10
    (run / damaged).write_bytes(bytes(data))
    code = main(["train", "--out", str(run), "--resume", "--steps", "6", "--quiet"])
    one_line_error(capsys, code, needle=needle)
    assert json.loads((run / "last.json").read_text())["step"] < 6  # nothing trained


@pytest.mark.parametrize("seed", range(40))
def test_bit_flip_in_json(bad, capsys, seed):
    """Any single flipped bit of the JSON breaks its syntax, its format number or its
    sha256.record, so it is always refused."""
    data = bytearray((bad / "best.json").read_bytes())
    rng = random.Random(seed)
    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    (bad / "best.json").write_bytes(bytes(data))
    one_line_error(capsys, main(["eval", str(bad)]))


def test_edited_json(bad, capsys):
    record = json.loads((bad / "best.json").read_text())
    record["step"] += 1
    (bad / "best.json").write_text(json.dumps(record))
    one_line_error(capsys, main(["eval", str(bad)]), needle="altered after it was written")


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda r: r.pop("data"), "is not a darm checkpoint (missing data)"),
        (lambda r: r.update(step=-5), "step must be >= 0, got -5"),
        (lambda r: r["data"].update(vocab=r["data"]["vocab"][:3]), "does not have the model's"),
        (lambda r: r["data"].update(eos="x"), "its end symbol 'x' is not one of the model's"),
    ],
)
@pytest.mark.parametrize("format", [1, 2])
def test_an_edited_record_is_refused_in_one_line(bad, capsys, edit, needle, format):
    """Resealed on purpose, or an older format without the record's hash: either way the
    fields that later commands trust are checked as it is read."""
    record = json.loads((bad / "best.json").read_text())
    edit(record)
    record["format"] = format
    if format == 1:
        record["sha256"].pop("record")
        (bad / "best.json").write_text(json.dumps(record))
    else:
        reseal(bad, record)
    for command in (["eval", str(bad)], ["sample", str(bad), "-n", "2", "--out", str(bad / "s")]):
        one_line_error(capsys, main(command), needle=needle)


def test_a_format_of_true_is_not_format_1(bad, capsys):
    record = json.loads((bad / "best.json").read_text())
    record["format"] = True  # == 1 in Python: it would skip the record's hash
    record["sha256"].pop("record")
    (bad / "best.json").write_text(json.dumps(record))
    one_line_error(capsys, main(["eval", str(bad)]), needle="has checkpoint format True")


def test_wrong_architecture(bad, capsys):
    record = json.loads((bad / "best.json").read_text())
    record["model"] = "gru"
    record["config"] = {"vocab_size": record["config"]["vocab_size"], "seq_len": 5}
    reseal(bad, record)
    one_line_error(capsys, main(["eval", str(bad)]), needle="weights do not match the model")


def test_wrong_dtype(bad, capsys):
    tensors = load_file(bad / "best.safetensors")
    save_file({k: v.double() for k, v in tensors.items()}, bad / "best.safetensors")
    rehash(bad)
    one_line_error(capsys, main(["eval", str(bad)]), needle="model wants torch.float32")


def test_torch_save_file_is_refused(good, tmp_path, capsys):
    path = tmp_path / "model.pt"
    torch.save(load_file(good / "best.safetensors"), path)
    one_line_error(capsys, main(["eval", str(path)]), needle="never unpickles")


def test_pickle_as_json_is_refused(bad, capsys):
    (bad / "best.json").write_bytes(pickle.dumps({"model": "markov"}))
    one_line_error(capsys, main(["eval", str(bad)]), needle="never unpickles")


def test_pickle_as_weights_is_refused(bad, capsys):
    torch.save(load_file(bad / "best.safetensors"), bad / "best.safetensors")
    rehash(bad)
    one_line_error(capsys, main(["eval", str(bad)]), needle="cannot read")


def test_a_full_disk_under_safetensors_is_the_systems_error(tmp_path):
    """safetensors wraps a failed write in its own exception: it comes out as the OSError,
    which the command line says in one line, and no temporary file is left behind."""
    from safetensors import SafetensorError

    from darm.files import atomic_write

    def full(tmp):
        raise SafetensorError("Error while serializing: I/O error: No space left on device "
                              "(os error 28)")  # fmt: skip

    path = tmp_path / "last.safetensors"
    with pytest.raises(OSError) as e:
        atomic_write(path, full)
    assert e.value.errno == 28 and e.value.filename == str(path)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_fsync_names_the_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    """An I/O error when the data reaches the disk (fsync) names the file being written, so
    the command's one line says which; the old file stays and the temporary goes."""
    import errno

    import darm.files
    from darm.files import atomic_write_text

    path = tmp_path / "log.csv"
    path.write_text("old")

    def failing_fsync(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(darm.files.os, "fsync", failing_fsync)
    with pytest.raises(OSError) as e:
        atomic_write_text(path, "new")
    assert e.value.errno == errno.EIO and e.value.filename == str(path)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["log.csv"]


@pytest.mark.skipif(os.name != "posix", reason="a process is told alive by POSIX signal 0")
def test_a_write_removes_the_temporaries_of_writers_killed_before(tmp_path):
    """A process killed mid-write leaves its temporary (.NAME.PID.XXXX.tmp); a later write of
    NAME removes it once a minute old, and keeps those of a writer still alive, of a minute
    ago (perhaps on another machine), and of other files (NAME.2024's too)."""
    import subprocess
    import sys
    import time

    from darm.files import atomic_write_text

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead, live = int(gone.stdout), os.getpid()
    stale = tmp_path / f".samples.png.{dead}.a1b2c3d4.tmp"
    kept = [
        tmp_path / f".samples.png.{live}.e5f6g7h8.tmp",  # alive
        tmp_path / f".log.csv.{dead}.x.tmp",  # another file
        tmp_path / f".samples.png.2024.{dead}.k3j2h1g0.tmp",  # samples.png.2024's
    ]
    for p in (stale, *kept):
        p.write_bytes(b"half a file")
        os.utime(p, (time.time() - 120, time.time() - 120))
    recent = tmp_path / f".samples.png.{dead}.m4n5p6q7.tmp"  # written a moment ago
    recent.write_bytes(b"half a file")
    kept.append(recent)
    atomic_write_text(tmp_path / "samples.png", "new")
    assert not stale.exists() and all(p.exists() for p in kept)
    assert (tmp_path / "samples.png").read_text() == "new"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with CUDA loads it there")
def test_loading_onto_a_missing_gpu_is_named(good):
    from darm import DarmError, load_checkpoint

    with pytest.raises(DarmError, match="device cuda asked for, but no CUDA device"):
        load_checkpoint(good, device="cuda")


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux's /proc")
def test_a_file_that_cannot_be_made_is_named_not_its_temporary():
    from darm.files import atomic_write_text

    with pytest.raises(OSError) as e:
        atomic_write_text(Path("/proc/darm-test.txt"), "x")
    assert e.value.filename == "/proc/darm-test.txt"
