"""The command line end to end, and every kind of bad input: one line, non-zero exit."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from darm.checkpoint import record_sha256
from darm.cli import main
from darm.data import load_data
from darm.errors import DarmError
from darm.memory import forward_numbers
from darm.models import create_model
from tests.conftest import NAMES, TINY_MARKOV, one_line_error, tiny_model, write_names


@pytest.fixture(scope="module")
def names_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "names.txt"
    path.write_text("\n".join(["anna", "bob", "carla", "dan", "emma", "finn", "gus", "hal"] * 3))
    return path


@pytest.fixture(scope="module")
def run(names_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "r"
    args = ["train", "--data", str(names_file), *TINY_MARKOV, "--steps", "30",
            "--eval-every", "15", "--batch-size", "4", "--out", str(out), "--quiet",
            "--samples", "5"]  # fmt: skip
    assert main(args) == 0
    return out


def test_train_writes_everything(run):
    for name in ("best.json", "best.safetensors", "last.json", "last.optim.safetensors",
                 "log.csv", "loss.png", "results.json", "samples.txt"):  # fmt: skip
        assert (run / name).exists(), name
    results = json.loads((run / "results.json").read_text())
    assert results["split"] == "test" and results["nats_per_dim"] > 0
    assert len((run / "samples.txt").read_text().splitlines()) == 5
    # every file with the permissions of the umask, weights too (safetensors made them 0600)
    import os

    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in run.iterdir() if p.is_file()}
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_plot_draws_several_runs_in_one_picture(run, tmp_path, capsys, monkeypatch):
    from PIL import Image

    other = tmp_path / run.name  # a second folder of the same name: labelled by its path
    other.mkdir()
    (other / "log.csv").write_text((run / "log.csv").read_text())
    out = tmp_path / "both.png"
    assert main(["plot", str(run), str(other / "log.csv"), "--x", "time", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    assert Image.open(out).format == "PNG" and Image.open(out).size[0] > 300
    (other / "loss.png").unlink(missing_ok=True)
    assert main(["plot", str(other / "log.csv")]) == 0  # one run named by its log
    assert (other / "loss.png").exists()
    # a folder of runs (a comparison's families) stands for the runs in it
    for name in ("a", "b"):
        (tmp_path / "many" / name).mkdir(parents=True)
        (tmp_path / "many" / name / "log.csv").write_text((run / "log.csv").read_text())
    capsys.readouterr()
    assert main(["plot", str(tmp_path / "many")]) == 0
    said = capsys.readouterr()
    assert said.out.strip() == f"wrote {tmp_path / 'many' / 'loss.png'}"
    assert "warning" not in said.err  # logs alone: no data to tell apart
    for name, data in (("a", "names"), ("b", "digits")):  # runs of two datasets: said
        record = json.loads((run / "last.json").read_text())
        record["data"]["name"] = data
        (tmp_path / "many" / name / "last.json").write_text(json.dumps(record))
    monkeypatch.chdir(tmp_path)  # runs named from here: the picture said from here too
    assert main(["plot", "many/a", "many/b", "--force"]) == 0
    said = capsys.readouterr()
    assert said.out.strip() == f"wrote {Path('many') / 'loss.png'}"
    assert "warning: these runs trained on different data (digits, names): " in said.err
    # a comparison's families in its own order (their colours as in its loss.png)
    from darm.cli.figures import runs_named

    assert [r.name for r in runs_named([tmp_path / "many"])] == ["a", "b"]  # by name
    families = [{"model": "b"}, {"model": "a"}]
    (tmp_path / "many" / "results.json").write_text(json.dumps({"families": families}))
    assert [r.name for r in runs_named([tmp_path / "many"])] == ["b", "a"]


def test_plot_labels_runs_by_as_much_of_their_path_as_tells_them_apart():
    from darm.cli.figures import curve_labels

    folders = [Path("runs/cmp-a/markov"), Path("runs/cmp-a/gru"), Path("runs/cmp-b/markov")]
    assert curve_labels(folders) == ["cmp-a/markov", "cmp-a/gru", "cmp-b/markov"]
    assert curve_labels(folders[:2]) == ["markov", "gru"]
    here = Path.cwd().name  # relative paths are told apart as absolute ones
    assert curve_labels([Path("x/a"), Path("y/x/a")]) == [f"{here}/x/a", "y/x/a"]
    assert curve_labels([Path("."), Path("../gru")]) == [here, "gru"]


def test_plot_draws_two_logs_of_one_folder(run, monkeypatch, tmp_path):
    import darm.cli.figures

    drawn = {}
    monkeypatch.setattr(darm.cli.figures, "plot_loss_curves", lambda c, out, x: drawn.update(c))
    (run / "log-before.csv").write_text((run / "log.csv").read_text())
    argv = ["plot", str(run / "log.csv"), str(run / "log-before.csv"), "--out", str(tmp_path)]
    assert main(argv) == 0
    assert list(drawn) == [run.name, "log-before"]  # both, told apart


def test_plot_and_runs_refuse_a_run_named_twice_or_an_empty_folder(run, capsys):
    one_line_error(capsys, main(["plot", str(run), str(run / "log.csv")]), 1, "is named twice")
    one_line_error(capsys, main(["runs", ""]), 2, "argument FOLDER: expected a path, got ''")


@pytest.mark.parametrize(
    "log, needle",
    [
        (None, "has no log.csv, nor runs in its sub-folders: give run folders of `darm train`"),
        ("missing", "does not exist"),
        ("step,lr\n", "is not a darm log.csv: no rows"),
        ("step,lr,train_nats_per_dim,valid_nats_per_dim,tokens_per_s,elapsed_s\n",
         "has no rows yet: its run stopped before its first"),
        ("step,lr,train_nats_per_dim,valid_nats_per_dim,tokens_per_s,elapsed_s\n1,x,2,3,4,5\n",
         "is not a darm log.csv: could not convert"),
        ("step,elapsed_s,train_nats_per_dim,valid_nats_per_dim\n1,2,3,4,5,6\n",
         "has a row with more cells than its header"),
    ],
)  # fmt: skip
def test_plot_refuses_what_is_not_a_run(log, needle, tmp_path, capsys):
    if log is not None and log != "missing":
        (tmp_path / "log.csv").write_text(log)
    run = tmp_path / "nothere" if log == "missing" else tmp_path
    one_line_error(capsys, main(["plot", str(run)]), 1, needle)
    assert not (tmp_path / "loss.png").exists()


def test_outputs_refuse_unwritable_places_before_any_work(run, tmp_path, capsys):
    blocker = tmp_path / "file.txt"  # a file where a folder must be
    blocker.write_text("keep me")
    for argv in (["plot", str(run)], ["sample", str(run), "-n", "2"], ["deps", str(run)],
                 ["complete", str(run), "--input", "an"]):  # fmt: skip
        one_line_error(capsys, main([*argv, "--out", str(blocker / "x")]), 1, "is a file, not")
    argv = ["train", "--data", "digits", *TINY_MARKOV, "--steps", "2", "--out", str(blocker / "r")]
    one_line_error(capsys, main(argv), 1, "is a file, not a folder")
    assert capsys.readouterr().out == ""  # refused before the data was read
    for command, writes in (
        ("plot", "pictures, as PNG; name it a.png"),
        ("deps", "pictures, as PNG; name it a.png"),
        ("sample", "text; name it a.txt"),
    ):  # one rule for every output
        one_line_error(capsys, main([command, str(run), "--out", str(tmp_path / "a.jpg")]), 1,
                       f"a.jpg: this writes {writes}")  # fmt: skip
    assert blocker.read_text() == "keep me"
    # a missing folder is made; --out without a suffix gets .png, and so does another suffix
    assert main(["plot", str(run), "--out", str(tmp_path / "new" / "curves")]) == 0
    assert (tmp_path / "new" / "curves.png").is_file()
    assert main(["plot", str(run), "--out", str(tmp_path / "new" / "loss.v2")]) == 0
    assert (tmp_path / "new" / "loss.v2.png").is_file()
    assert main(["plot", str(run), "--out", str(tmp_path / "new")]) == 0  # a folder: inside it
    assert (tmp_path / "new" / "loss.png").is_file()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX's")
def test_an_out_that_is_neither_file_nor_folder_is_refused(run, tmp_path, capsys):
    """`--out /dev/null` (a device, a named pipe) was taken for a stem: sample wrote
    /dev/null.png beside it. It is refused, by its name, as train refuses it."""
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    for argv in (["plot", str(run)], ["sample", str(run), "-n", "2"], ["deps", str(run)],
                 ["complete", str(run), "--input", "an"]):  # fmt: skip
        code = main([*argv, "--out", str(pipe)])
        one_line_error(capsys, code, 1, f"--out {pipe} is not a file or a folder")
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]
    argv = ["train", "--data", "names", *TINY_MARKOV, "--steps", "1", "--out", os.devnull]
    one_line_error(capsys, main(argv), 1, f"cannot write {os.devnull}: {os.devnull} is")
    one_line_error(capsys, main([*argv[:-1], str(pipe)]), 1, f"cannot write {pipe}: {pipe} is")


def test_sample_out_adds_its_suffix_to_the_name_given(run, tmp_path, capsys):
    precious = tmp_path / "names.txt"
    precious.write_text("precious\n")
    assert main(["sample", str(run), "-n", "2", "--out", str(tmp_path / "names.v2")]) == 0
    assert (tmp_path / "names.v2.txt").is_file() and precious.read_text() == "precious\n"
    assert main(["sample", str(run), "-n", "2", "--out", str(tmp_path / "s.txt")]) == 0
    assert (tmp_path / "s.txt").is_file()
    assert main(["sample", str(run), "-n", "2", "--out", str(tmp_path) + "/"]) == 0
    assert (tmp_path / "samples.txt").is_file()  # a folder: the default name inside it


@pytest.mark.parametrize(
    "argv, name",
    [
        (["sample", "-n", "2"], "mine.txt"),
        (["complete", "--input", "an"], "mine.txt"),
        (["deps"], "mine.png"),
        (["plot"], "mine.png"),
        (["eval", "--per-example"], "mine.csv"),
    ],
)
def test_an_existing_file_is_replaced_only_with_force(run, tmp_path, capsys, argv, name):
    """A file an output option names (the run's data, a picture of one's own) is refused
    before any work and kept; --force replaces it."""
    mine = tmp_path / name
    mine.write_text("keep me")
    command, *rest = argv
    target = [str(mine)] if rest[-1:] == ["--per-example"] else ["--out", str(mine)]
    args = [command, str(run), *rest, *target]
    one_line_error(capsys, main(args), 1, f"{mine} already exists; pass --force")
    assert mine.read_text() == "keep me" and capsys.readouterr().out == ""
    assert main([*args, "--force"]) == 0
    assert mine.read_bytes() != b"keep me"


def test_force_cannot_put_a_file_where_a_folder_is(run, tmp_path, capsys):
    (tmp_path / "q.txt").mkdir()  # --out q writes q.txt: a folder, which --force cannot replace
    code = main(["sample", str(run), "-n", "2", "--out", str(tmp_path / "q"), "--force"])
    one_line_error(capsys, code, 1, f"--out: {tmp_path / 'q.txt'} is a folder; give a file name")


def test_per_example_rows_keep_the_splits_of_a_file_that_has_its_own(tmp_path, capsys):
    """Another .npz with x_train / x_valid / x_test is scored split by split, and its rows
    say which; a file without splits is one split, `all`."""
    import csv

    import numpy as np

    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.integers(0, 4, size=(30, 6)))
    out = tmp_path / "r"
    assert main(["train", "--data", str(tmp_path / "a.npy"), *TINY_MARKOV, "--steps", "2",
                 "--out", str(out), "--quiet", "--samples", "0"]) == 0  # fmt: skip
    np.save(tmp_path / "c.npy", rng.integers(0, 4, size=(7, 6)))  # no splits of its own
    sizes = {"train": 5, "valid": 3, "test": 4}
    np.savez(tmp_path / "b.npz", **{f"x_{s}": rng.integers(0, 4, (n, 6)) for s, n in sizes.items()})
    for data, want in (("b.npz", ["train"] * 5 + ["valid"] * 3 + ["test"] * 4),
                       ("c.npy", ["all"] * 7)):  # fmt: skip
        csv_path = tmp_path / f"{data}.csv"
        argv = ["eval", str(out), "--data", str(tmp_path / data), "--split", "all",
                "--per-example", str(csv_path)]  # fmt: skip
        assert main(argv) == 0
        assert [r["split"] for r in csv.DictReader(csv_path.open())] == want, data


def test_a_runs_own_outputs_are_written_again_other_files_are_not(run, tmp_path, capsys):
    """RUN/samples.txt, by default or named, is the run's own and rewritten; the loss.png
    of several runs goes beside them, where a file of the user's may be."""
    before = (run / "samples.txt").read_text()
    assert main(["sample", str(run), "-n", "2", "--out", str(run / "samples.txt")]) == 0
    assert (run / "samples.txt").read_text() != before
    capsys.readouterr()
    for name in ("a", "b"):
        shutil.copytree(run, tmp_path / name)
    (tmp_path / "loss.png").write_text("mine")
    one_line_error(capsys, main(["plot", str(tmp_path / "a"), str(tmp_path / "b")]), 1,
                   "loss.png already exists; pass --force")  # fmt: skip
    assert (tmp_path / "loss.png").read_text() == "mine"


def test_an_os_error_is_one_line(run, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device", "RUN/samples.txt")

    monkeypatch.setattr("darm.outputs.save_samples", full)
    err = one_line_error(capsys, main(["sample", str(run), "-n", "1"]), 1, "No space left")
    assert err == "darm sample: error: No space left on device: RUN/samples.txt"


def test_eval_prints_exact_nll(run, capsys):
    assert main(["eval", str(run), "--split", "test", "--json"]) == 0
    said = capsys.readouterr()
    numbers = json.loads(said.out)  # with --json, stdout is the JSON line alone
    results = json.loads((run / "results.json").read_text())
    assert numbers["nats_per_example"] == pytest.approx(results["nats_per_example"])
    assert "nats/item" in said.err and "bits/char" in said.err


def test_sample_with_prompt(run, capsys):
    code = main(["sample", str(run), "-n", "3", "--prompt", "an", "--top-k", "3",
                 "--temperature", "0.8", "--out", str(run / "s")])  # fmt: skip
    assert code == 0
    lines = (run / "s.txt").read_text().splitlines()
    assert len(lines) == 3 and all(line.startswith("an") for line in lines)


def test_sample_quiet_prints_nothing_for_any_kind_of_output(run, tmp_path, capsys, monkeypatch):
    """--quiet: the file alone, whether text or a picture grid; no bar, no 'wrote' line."""
    from tests.conftest import Terminal

    digits = tmp_path / "digits"
    assert main(["train", "--data", "digits", *TINY_MARKOV, "--steps", "1", "--out", str(digits),
                 "--quiet", "--samples", "0"]) == 0  # fmt: skip
    capsys.readouterr()
    for folder, name in ((run, "q.txt"), (digits, "q.png")):
        monkeypatch.setattr(sys, "stderr", Terminal())  # where the bar would draw
        out = tmp_path / name
        assert main(["sample", str(folder), "-n", "2", "--out", str(out), "--quiet"]) == 0
        assert out.is_file() and sys.stderr.getvalue() == "", name
        assert capsys.readouterr().out == "", name


def test_resume_extends_the_run(run, names_file, capsys):
    # the command that started the run may be repeated: the same model and data are accepted
    assert main(["train", "--data", str(names_file), *TINY_MARKOV, "--out", str(run),
                 "--resume", "--steps", "40", "--quiet", "--samples", "0"]) == 0  # fmt: skip
    assert "from step 30 of 40" in capsys.readouterr().out
    assert json.loads((run / "last.json").read_text())["step"] == 40


def test_resuming_a_finished_run_leaves_it_as_it_is(names_file, tmp_path, capsys):
    """Nothing to train and already tested: said, and its results and samples untouched;
    a run stopped after its last step but before its test pass gets that pass."""
    out = tmp_path / "done"
    start = ["train", "--data", str(names_file), *TINY_MARKOV, "--steps", "2", "--out", str(out),
             "--quiet", "--samples", "3"]  # fmt: skip
    assert main(start) == 0
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main([*start, "--resume"]) == 0
    assert "has trained all 2 steps and been tested (results.json): nothing to do" in (
        capsys.readouterr().out
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files
    (out / "results.json").unlink()  # as if stopped in the test pass or in sampling
    assert main([*start, "--resume"]) == 0
    assert "test: " in capsys.readouterr().out and (out / "results.json").exists()
    # results of an earlier checkpoint (a run extended, then stopped at its end): tested again
    results = json.loads((out / "results.json").read_text())
    (out / "results.json").write_text(json.dumps({**results, "checkpoint_step": 1}))
    assert main([*start, "--resume"]) == 0
    assert "test: " in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["checkpoint_step"] == 2


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--set", "n_hidden=8"], "--set n_hidden=8 differs from its n_hidden=16"),
        (["--model", "gru"], "--model gru differs from its model markov"),
        (["--conditional"], "--conditional differs from its unconditional model"),
        (["--format", "corpus"], "--format corpus differs from its data's format lines"),
        (["--data", "names"], "--data names differs from its data"),
        (["--levels", "5"], "--levels 5 differs from its data, which takes no --levels"),
        (["--block", "16"], "--block 16 differs from its data, which takes no --block"),
        (["--valid-examples", "3"], "--valid-examples 3 differs from its 0, which chose best.*"),
    ],
)
def test_resume_refuses_a_changed_model_or_data(run, extra, needle, capsys):
    code = main(["train", "--out", str(run), "--resume", "--steps", "45", *extra])
    one_line_error(capsys, code, needle=needle)


def test_resume_repeats_a_start_command_with_a_builtins_own_levels(tmp_path, capsys):
    """digits takes --levels 17 (its own L) at the start, so the same command resumes."""
    start = ["train", "--data", "digits", "--levels", "17", *TINY_MARKOV, "--steps", "2",
             "--out", str(tmp_path / "r"), "--quiet", "--samples", "0"]  # fmt: skip
    assert main(start) == 0
    assert main([*start, "--resume", "--steps", "3"]) == 0
    one_line_error(capsys, main([*start[:4], "4", *start[5:], "--resume", "--steps", "4"]),
                   needle="--levels 4 differs")  # fmt: skip


def test_a_data_file_edited_after_training_is_noticed(tmp_path, capsys):
    # the seeded split of an edited file moves: test may then hold examples trained on
    data = tmp_path / "items.txt"
    data.write_text("\n".join(NAMES) + "\n")
    out = tmp_path / "r"
    argv = ["train", "--data", str(data), *TINY_MARKOV, "--steps", "2", "--out", str(out),
            "--quiet", "--samples", "0"]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0
    assert "warning" not in capsys.readouterr().err
    data.write_text("\n".join(["nina", *NAMES]) + "\n")  # letters it knows
    assert main(["eval", str(out)]) == 0
    assert "items.txt has changed since the run read it" in capsys.readouterr().err
    code = main(["train", "--out", str(out), "--resume", "--steps", "4"])
    one_line_error(capsys, code, needle="has changed since the run read it; --init starts")
    # a corpus (as audio) is split by position: no example moves into test by shuffling
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("abcab" * 40)
    argv = ["train", "--data", str(corpus), "--format", "corpus", "--block", "8", *TINY_MARKOV,
            "--steps", "1", "--out", str(tmp_path / "c"), "--quiet", "--samples", "0"]  # fmt: skip
    assert main(argv) == 0
    corpus.write_text("abcab" * 39 + "abcba")
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "c")]) == 0
    assert "changed since the run read it: it is split by position" in capsys.readouterr().err


def test_a_builtin_cut_down_in_python_is_not_resumed_on_all_of_it(tmp_path, capsys):
    from darm import load_checkpoint
    from darm.train import data_meta, train
    from darm.train_config import TrainConfig

    data = load_data("digits")
    data.splits["train"] = data["train"].subset(0, 100)  # the user's own smaller run
    model = create_model("markov", data, k=1, n_hidden=0)
    out = tmp_path / "r"
    cfg = TrainConfig(steps=2, batch_size=8, eval_every=2)
    train(model, "markov", data, cfg, out, progress=False)
    assert data_meta(data)["digest"] is not None
    assert data_meta(load_data("digits"))["digest"] is None  # as loaded: nothing to check
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0
    assert "other examples than the built-in 'digits'" in capsys.readouterr().err
    code = main(["train", "--out", str(out), "--resume", "--steps", "4"])
    one_line_error(capsys, code, needle="resume it in Python with the same Dataset")
    # in Python, with the same Dataset, it resumes
    model, record, path = load_checkpoint(out / "last.json")
    cfg = TrainConfig(steps=4, batch_size=8, eval_every=2)
    assert train(model, "markov", data, cfg, out, (path, record), progress=False)["step"] == 4


def test_init_fine_tunes_from_the_weights(run, tmp_path, capsys):
    """A new run (step 0, fresh schedule) from the best weights, dropout changed; with the
    learning rate at zero the weights stay exactly the checkpoint's."""
    out = tmp_path / "ft"
    assert main(["train", "--init", str(run), "--set", "dropout=0.25", "--steps", "6",
                 "--eval-every", "3", "--lr", "0", "--min-lr", "0", "--out", str(out),
                 "--quiet", "--samples", "2"]) == 0  # fmt: skip
    assert "starting from the weights of" in capsys.readouterr().out
    record = json.loads((out / "last.json").read_text())
    assert record["step"] == 6 and record["config"]["dropout"] == 0.25
    assert (out / "last.safetensors").read_bytes() == (run / "best.safetensors").read_bytes()
    tuned = json.loads((out / "results.json").read_text())["nats_per_example"]
    assert main(["eval", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["nats_per_example"] == tuned


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--set", "n_hidden=8"], "--set n_hidden=8 would change it (it has n_hidden=16)"),
        (["--set", "k=3", "--set", "k=4"], "--set k=4 would change it (it has k=3)"),
        (["--set", "n_layers=2"], "unknown --set field(s) n_layers"),
        (["--model", "gpt"], "holds a markov, not a gpt"),
        (["--resume"], "last.json"),
        (["--data", "digits"], "digits is images; "),
    ],
)
def test_init_bad_input(run, extra, needle, tmp_path, capsys):
    code = main(["train", "--init", str(run), "--out", str(tmp_path / "x"), *extra])
    one_line_error(capsys, code, needle=needle)


def test_init_set_may_repeat_a_saved_value(run, tmp_path):
    argv = ["train", "--init", str(run), "--set", "n_hidden=16", "--set", "k=3", "--steps", "1",
            "--out", str(tmp_path / "same"), "--quiet", "--samples", "0"]  # fmt: skip
    assert main(argv) == 0


def test_init_run_resumes_by_repeating_its_command(run, names_file, tmp_path, capsys):
    start = ["train", "--init", str(run), "--steps", "4", "--eval-every", "2",
             "--out", str(tmp_path / "ft"), "--quiet", "--samples", "0"]  # fmt: skip
    assert main(start) == 0
    init = json.loads((tmp_path / "ft" / "last.json").read_text())["init"]
    best = json.loads((run / "best.json").read_text())
    weights = best["sha256"]["weights"]
    assert init == {"path": str((run / "best.json").resolve()), "step": best["step"],
                    "weights": weights}  # fmt: skip
    assert main([*start, "--resume", "--steps", "6"]) == 0
    assert "resuming markov from step 4 of 6" in capsys.readouterr().out
    last = json.loads((tmp_path / "ft" / "last.json").read_text())
    assert last["step"] == 6 and last["init"] == init  # a resumed run keeps where it began

    # --init naming another checkpoint, or a run that began from new weights, is refused
    new = ["train", "--data", str(names_file), *TINY_MARKOV, "--steps", "2", "--quiet",
           "--samples", "0", "--out", str(tmp_path / "new")]  # fmt: skip
    assert main(new) == 0
    code = main([*new, "--resume", "--steps", "4", "--init", str(run)])
    one_line_error(capsys, code, needle="it started from new weights, not from --init")
    assert json.loads((tmp_path / "new" / "last.json").read_text())["step"] == 2
    (tmp_path / "other.json").write_bytes((tmp_path / "new" / "last.json").read_bytes())
    code = main([*start, "--resume", "--steps", "8", "--init", str(tmp_path / "other.json")])
    one_line_error(capsys, code, needle="is not the checkpoint it started from")
    assert json.loads((tmp_path / "ft" / "last.json").read_text())["step"] == 6
    # the same checkpoint elsewhere (a project moved, copied): found by its weights
    shutil.copytree(run, tmp_path / "moved")
    assert main([*start, "--resume", "--steps", "7", "--init", str(tmp_path / "moved")]) == 0
    code = main([*start, "--resume", "--steps", "8", "--init", str(tmp_path / "gone")])
    one_line_error(capsys, code, needle="no such checkpoint (the run started from")


def test_init_reads_other_data_as_the_checkpoint_did(tmp_path, capsys):
    """A corpus model fine-tuned on another .txt reads it as a corpus in its own blocks, not as
    one item per line (the suffix's default)."""
    text = "to be or not to be that is the question\n" * 20
    (tmp_path / "a.txt").write_text(text)
    (tmp_path / "b.txt").write_text("not to be is the question\n" * 30)
    base = ["--steps", "2", "--eval-every", "2", "--quiet", "--samples", "0"]
    assert main(["train", "--data", str(tmp_path / "a.txt"), "--format", "corpus", "--block",
                 "16", *TINY_MARKOV, "--out", str(tmp_path / "a"), *base]) == 0  # fmt: skip
    assert main(["train", "--init", str(tmp_path / "a"), "--data", str(tmp_path / "b.txt"),
                 "--out", str(tmp_path / "b"), *base]) == 0  # fmt: skip
    source = json.loads((tmp_path / "b" / "last.json").read_text())["data"]["source"]
    assert source["format"] == "corpus" and source["block"] == 16
    capsys.readouterr()  # its own data, unchanged: no warning that it changed
    assert main(["eval", str(tmp_path / "b")]) == 0
    assert "warning" not in capsys.readouterr().err


def test_init_on_its_own_data_keeps_its_split(names_file, tmp_path, capsys):
    """--init RUN --data SAME splits the data as RUN did (its --data-seed), so that the new
    run's test split holds no example RUN trained on; another seed, asked for, is warned of."""
    base = ["--data", str(names_file), *TINY_MARKOV, "--steps", "2", "--eval-every", "2",
            "--quiet", "--samples", "0"]  # fmt: skip
    assert main(["train", *base, "--data-seed", "7", "--out", str(tmp_path / "a")]) == 0
    assert main(["train", "--init", str(tmp_path / "a"), *base, "--out", str(tmp_path / "b")]) == 0
    source = json.loads((tmp_path / "b" / "last.json").read_text())["data"]["source"]
    assert source["seed"] == 7
    assert "warning" not in capsys.readouterr().err
    argv = ["train", "--init", str(tmp_path / "a"), *base, "--data-seed", "8"]
    assert main([*argv, "--out", str(tmp_path / "c")]) == 0
    err = capsys.readouterr().err
    assert "warning: --data-seed 8 splits" in err and "(--data-seed 7)" in err


def test_eval_of_other_data_splits_it_with_the_runs_seed(names_file, tmp_path, capsys):
    """eval RUN --data COPY --split test: a copy of the run's data under another name is split
    as the run split it (its --data-seed), so its test split is the run's own."""
    argv = ["train", "--data", str(names_file), *TINY_MARKOV, "--steps", "2", "--quiet",
            "--samples", "0", "--data-seed", "7", "--out", str(tmp_path / "a")]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "a"), "--split", "test", "--json"]) == 0
    own = json.loads(capsys.readouterr().out)
    copy = tmp_path / "copy.txt"
    copy.write_bytes(names_file.read_bytes())
    argv = ["eval", str(tmp_path / "a"), "--data", str(copy), "--split", "test", "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["nats_per_example"] == own["nats_per_example"]


def test_eval_and_deps_read_uint8_pictures_with_format_images(tmp_path, capsys):
    """A .npy of uint8 pictures for a model of digits (17 levels): read as symbols it is
    refused, naming --format images, which eval and deps take for --data's own file."""
    out = tmp_path / "d"
    argv = ["train", "--data", "digits", *TINY_MARKOV, "--steps", "2", "--out", str(out),
            "--quiet", "--samples", "0"]  # fmt: skip
    assert main(argv) == 0
    pictures = np.arange(3 * 64, dtype=np.uint8).reshape(3, 8, 8)  # intensities 0..191
    np.save(tmp_path / "u8.npy", pictures)
    code = main(["eval", str(out), "--data", str(tmp_path / "u8.npy")])
    one_line_error(capsys, code, 1, "--format images bins 0..255 into the levels")
    capsys.readouterr()
    assert main(["eval", str(out), "--data", str(tmp_path / "u8.npy"), "--format", "images",
                 "--json"]) == 0  # fmt: skip
    scored = json.loads(capsys.readouterr().out)
    np.save(tmp_path / "sym.npy", pictures.astype(int) * 17 // 256)  # binned by hand
    assert main(["eval", str(out), "--data", str(tmp_path / "sym.npy"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == scored  # the same NLL
    deps = ["deps", str(out), "--data", str(tmp_path / "u8.npy"), "--format", "images",
            "-n", "3", "--out", str(tmp_path / "deps.png")]  # fmt: skip
    assert main(deps) == 0
    for bad in (["--data", "digits"], []):  # a built-in, or the run's own: read as they are
        code = main(["eval", str(out), *bad, "--format", "images"])
        one_line_error(capsys, code, 1, "--format says how to read a file given as --data")
    Image.fromarray(pictures[0]).save(tmp_path / "p.png")  # a picture file: read as one
    code = main(["eval", str(out), "--data", str(tmp_path / "p.png"), "--format", "lines"])
    one_line_error(capsys, code, 1, "p.png is a picture file, read as pictures")


def test_a_size_that_differs_by_the_reading_says_so(tmp_path, capsys):
    """Lines for a model of a corpus are another D because they are read otherwise: said."""
    (tmp_path / "c.txt").write_text("to be or not to be\n" * 20)
    out = tmp_path / "c"
    argv = ["train", "--data", str(tmp_path / "c.txt"), "--format", "corpus", "--block", "16",
            *TINY_MARKOV, "--steps", "2", "--samples", "0", "--quiet",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    (tmp_path / "l.txt").write_text("to be\nor not\n")
    code = main(["eval", str(out), "--data", str(tmp_path / "l.txt"), "--format", "lines"])
    why = "(read as text, one item a line; it was trained on continuous text)"
    one_line_error(capsys, code, 1, f"has D=7; {out / 'best.json'} was trained with D=16 {why}")
    # a gpt's learned positions fix its D, where a markov reads other blocks of the text
    gpt = ["train", "--data", str(tmp_path / "c.txt"), "--format", "corpus", "--model", "gpt",
           "--set", "n_layer=1", "--set", "n_embd=8", "--set", "n_head=1", "--steps", "1",
           "--samples", "0", "--quiet"]  # fmt: skip
    assert main([*gpt, "--block", "16", "--out", str(tmp_path / "g")]) == 0
    code = main(["train", "--init", str(tmp_path / "g"), "--block", "8", "--steps", "1",
                 "--samples", "0", "--quiet", "--out", str(tmp_path / "g8")])  # fmt: skip
    why = "a gpt's learned positions fix its D at seq_len=16, unlike markov, rnn and wavenet"
    one_line_error(capsys, code, 1, f"trained with D=16 ({why}; the run used --block 16)")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with CUDA has one")
def test_a_cuda_device_asked_for_is_named_as_asked(capsys):
    code = main(["train", "--device", "cuda:1", "--steps", "1"])
    one_line_error(capsys, code, 1, "--device cuda:1 asked for, but no CUDA device is available")


def test_init_takes_other_windows_where_the_model_goes_on_past_d(tmp_path, capsys):
    """markov, rnn, wavenet: the same weights score any D, so a fine-tune may read the text (or
    audio) in longer blocks; a gpt's learned positions fix its D."""
    from darm import load_checkpoint

    (tmp_path / "a.txt").write_text("to be or not to be that is the question\n" * 20)
    base = ["--steps", "2", "--eval-every", "2", "--quiet", "--samples", "0"]
    corpus = ["--data", str(tmp_path / "a.txt"), "--format", "corpus", "--block", "16"]
    for name in ("markov", "gpt"):
        argv = [
            "train",
            *corpus,
            "--model",
            name,
            "--set",
            "n_embd=8",
            "--out",
            str(tmp_path / name),
        ]
        assert main([*argv, *base]) == 0
    longer = ["--data", str(tmp_path / "a.txt"), "--block", "32", *base]
    assert main(["train", "--init", str(tmp_path / "markov"), *longer, "--out",
                 str(tmp_path / "m32")]) == 0  # fmt: skip
    before, _, _ = load_checkpoint(tmp_path / "markov")
    after, record, _ = load_checkpoint(tmp_path / "m32" / "last.json")
    assert record["config"]["seq_len"] == 32 and record["data"]["source"]["block"] == 32
    assert record["init"]["step"] == 2  # the weights it started from: the 16-block run's
    assert before.state_dict().keys() == after.state_dict().keys()
    code = main(["train", "--init", str(tmp_path / "gpt"), *longer, "--out", str(tmp_path / "g")])
    one_line_error(capsys, code, 1, "has D=32; ")
    # without --data, its own data in the blocks asked for (once silently ignored)
    assert main(["train", "--init", str(tmp_path / "markov"), "--block", "24", *base,
                 "--out", str(tmp_path / "m24")]) == 0  # fmt: skip
    record = json.loads((tmp_path / "m24" / "last.json").read_text())
    assert record["config"]["seq_len"] == 24 and record["data"]["source"]["block"] == 24
    code = main(["train", "--init", str(tmp_path / "markov"), "--levels", "4", *base])
    one_line_error(capsys, code, 1, "--levels does not apply to a.txt (read as corpus)")
    code = main(["train", "--init", str(tmp_path / "markov"), *longer, "--data-seed", "3"])
    one_line_error(capsys, code, 1, "--data-seed does not apply to a.txt (read as corpus)")


def test_a_short_passage_is_scored_whole_by_a_corpus_model(tmp_path, capsys):
    # any passage, even one shorter than a block: one stream in blocks of D, each symbol once
    from darm import load_checkpoint, log_prob

    (tmp_path / "a.txt").write_text("to be or not to be that is the question\n" * 20)
    assert main(["train", "--data", str(tmp_path / "a.txt"), "--format", "corpus", "--block",
                 "16", *TINY_MARKOV, "--out", str(tmp_path / "a"), "--steps", "2", "--quiet",
                 "--samples", "0"]) == 0  # fmt: skip
    model, record, _ = load_checkpoint(tmp_path / "a")
    index = {c: i for i, c in enumerate(record["data"]["vocab"])}
    for text in ("be or not", "that is the question to be or not to be"):  # 9 and 39 symbols
        (tmp_path / "p.txt").write_text(text)
        capsys.readouterr()
        assert main(["eval", str(tmp_path / "a"), "--data", str(tmp_path / "p.txt"), "--json"]) == 0
        got = json.loads(capsys.readouterr().out.splitlines()[-1])
        blocks = [text[i : i + 16] for i in range(0, len(text), 16)]  # the last one short
        want = -sum(
            log_prob(model, torch.tensor([[index[c] for c in b]]))[0].item() for b in blocks
        )
        assert got["examples"] == len(blocks) and got["dims"] == len(text)
        assert got["nats_per_example"] * len(blocks) == pytest.approx(want, rel=1e-5)


def test_per_example_rows_of_a_corpus_name_each_blocks_place_in_the_file(tmp_path, capsys):
    import csv

    text = "".join(f"line {i}: to be or not to be\n" for i in range(40))
    (tmp_path / "a.txt").write_text(text)
    run = tmp_path / "a"
    assert main(["train", "--data", str(tmp_path / "a.txt"), "--format", "corpus", "--block",
                 "16", *TINY_MARKOV, "--out", str(run), "--steps", "2", "--quiet",
                 "--samples", "0"]) == 0  # fmt: skip
    out = tmp_path / "per.csv"
    assert main(["eval", str(run), "--split", "all", "--per-example", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert {r["split"] for r in rows} == {"train", "valid", "test"}
    # every block is the file's text at its offset, and the blocks tile the file
    for r in rows:
        at, dims = int(r["offset"]), int(r["dims"])
        assert text[at : at + dims] == r["text"]
    assert sum(int(r["dims"]) for r in rows) == len(text)
    assert len({int(r["offset"]) for r in rows}) == len(rows)
    assert "seconds" not in rows[0]


def test_eval_writes_every_examples_nats(run, tmp_path, capsys):
    import csv

    from darm import load_checkpoint, log_prob
    from darm.data import load_data
    from darm.data.vocab import Vocabulary

    (tmp_path / "mine.txt").write_text("anna\n\nbob\nanna\n")  # a blank line: skipped
    out = tmp_path / "per.csv"
    argv = ["eval", str(run), "--data", str(tmp_path / "mine.txt"), "--json",
            "--per-example", str(out)]  # fmt: skip
    assert main(argv) == 0
    total = json.loads(capsys.readouterr().out.splitlines()[-1])
    rows = list(csv.DictReader(out.open()))
    # the whole file, item by item, each with its line in the file
    assert [(r["split"], r["index"], r["line"], r["text"], r["dims"]) for r in rows] == [
        ("all", "0", "1", "anna", "5"),
        ("all", "1", "3", "bob", "4"),
        ("all", "2", "4", "anna", "5"),
    ]
    model, record, _ = load_checkpoint(run)
    data = load_data(str(tmp_path / "mine.txt"), vocab=Vocabulary(record["data"]["vocab"]),
                     max_len=model.num_dims, whole=True)  # fmt: skip
    want = -log_prob(model, data["test"].x, mask=data["test"].mask)
    assert [float(r["nats"]) for r in rows] == pytest.approx(want.tolist(), abs=1e-5)
    assert sum(float(r["nats"]) for r in rows) / 3 == pytest.approx(total["nats_per_example"])
    # refused before any scoring: a folder, or a name that is not a .csv (a checkpoint's)
    (tmp_path / "dir.csv").mkdir()
    code = main(["eval", str(run), "--per-example", str(tmp_path / "dir.csv")])
    one_line_error(capsys, code, needle="is a folder; give a file name")
    best = (run / "best.json").read_bytes()
    code = main(["eval", str(run), "--per-example", str(run / "best.json")])
    one_line_error(capsys, code, needle="--per-example writes a CSV: give a .csv name")
    assert (run / "best.json").read_bytes() == best


def test_eval_per_example_of_a_conditional_model_names_each_label(tmp_path, capsys):
    import csv

    from darm.data import load_data

    out = tmp_path / "r"
    argv = ["train", "--data", "digits", *TINY_MARKOV, "--conditional", "--steps", "2",
            "--out", str(out), "--quiet", "--samples", "0", "--grad-accum", "2"]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 0
    # the first line says what sets the run apart: its conditioning, its micro-batches
    said = "parameters (p(x | label) of 10 classes, 2 micro-batches a step); training 2 steps\n"
    assert said in capsys.readouterr().out
    assert main(["eval", str(out), "--per-example", str(tmp_path / "d.csv")]) == 0
    assert "on digits, each example as its own class: log p(x | y)\n" in capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "d.csv").open()))
    test = load_data("digits")["test"]
    assert len(rows) == len(test) == 447 and "text" not in rows[0]
    assert [int(r["label"]) for r in rows] == test.y.tolist()
    assert {r["dims"] for r in rows} == {"64"}


def test_resume_with_a_lower_lr_moves_the_default_floor(tmp_path, capsys):
    start = ["train", "--data", "digits", *TINY_MARKOV, "--steps", "2", "--out",
             str(tmp_path / "r"), "--quiet", "--samples", "0"]  # fmt: skip
    assert main(start) == 0
    capsys.readouterr()
    assert main([*start, "--resume", "--steps", "4", "--lr", "2e-4"]) == 0
    train = json.loads((tmp_path / "r" / "last.json").read_text())["train"]
    assert train["lr"] == 2e-4 and train["min_lr"] == pytest.approx(2e-5)
    # what the resume changed is said, with the jump in the learning rate it makes
    assert "with steps 4 (was 2), lr 0.0002 (was 0.003), min_lr 2e-05 (was 0.0003)" in (
        out := capsys.readouterr().out
    )
    assert "the learning rate at step 2 moves from 0.0003 to " in out


def test_resume_trains_with_the_new_optimiser_settings(tmp_path):
    # loading the optimiser's state must not bring the old weight decay and betas back
    start = ["train", "--data", "digits", *TINY_MARKOV, "--steps", "2", "--out",
             str(tmp_path / "r"), "--quiet", "--samples", "0"]  # fmt: skip
    assert main(start) == 0
    changed = ["--weight-decay", "0.5", "--beta2", "0.9"]
    assert main([*start, "--resume", "--steps", "3", *changed]) == 0
    record = json.loads((tmp_path / "r" / "last.json").read_text())
    decayed, plain = record["optimizer"]  # matrices, then biases and norms
    assert decayed["weight_decay"] == 0.5 and plain["weight_decay"] == 0.0
    assert decayed["betas"] == plain["betas"] == [0.9, 0.9]


def test_check_fits_takes_data_with_fewer_classes():
    from types import SimpleNamespace as NS

    from darm.errors import DarmError
    from darm.reread import check_fits

    model = NS(vocab_size=5, num_dims=7, num_classes=10)
    check_fits(NS(vocab_size=5, seq_len=7, num_classes=9, image_shape=None, info={}), model, "m")
    for classes in (0, 11):  # labels 0..8 only fit; none, or a class past 9, do not
        with pytest.raises(DarmError, match="conditional on 10 classes"):
            data = NS(vocab_size=5, seq_len=7, num_classes=classes, image_shape=None, info={})
            check_fits(data, model, "m")
    # images of another size are named as sizes, not as L and D
    images = NS(name="pngs", vocab_size=5, seq_len=12, num_classes=10, image_shape=(3, 4), info={})
    with pytest.raises(DarmError, match="pngs holds 3x4 images; m was trained on 7x1"):
        check_fits(images, model, "m", {"image_shape": [7, 1]})


def test_train_refuses_to_overwrite(run, names_file, capsys):
    code = main(["train", "--data", str(names_file), *TINY_MARKOV, "--out", str(run)])
    one_line_error(capsys, code, needle="already holds a checkpoint")


ONE_STEP = ["--steps", "1", "--eval-every", "1", "--samples", "0", "--quiet"]


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (["train", "--model", "nope"], 1, "unknown model 'nope'; valid:"),
        (["train", "--set", "n_layers=2"], 1, "unknown gpt config field(s) n_layers"),
        (["train", "--set", "n_layer=two"], 1, "n_layer must be an integer"),
        (["train", "--frobnicate"], 2, "unrecognized arguments"),
        (["train", "--steps", "many"], 2, "invalid int value"),
        (["train", "--data", "missing.txt"], 1, "no data file 'missing.txt'"),
        (["eval", "no/such/run"], 1, "does not exist"),
        (["eval", "no/such/run", "--threads", "0"], 1, "--threads must be >= 1"),
        (["train", "--model", "bigram", "--set", "dropout=0.1"], 1, "dropout needs the MLP form"),
        (["train", "--data", "mnist", "--levels", "0"], 1, "--levels for images must be in 2..256"),
        (["train", "--data", "names", "--conditional"], 1, "needs labels"),
        # options a built-in dataset cannot honour
        (["train", "--data", "names", "--format", "corpus"], 1, "the built-in names has its own"),
        (["train", "--block", "128"], 1, "--block does not apply to the built-in digits"),
        (["train", "--data", "mnist", "--block", "8"], 1, "--block cuts a corpus or audio"),
        (["train", "--data", "shakespeare", "--levels", "4"], 1, "--levels does not apply"),
        (["train", "--data", "speech", "--data-seed", "3"], 1, "split in order, not by a seed"),
        # model configs a family cannot build
        (["train", "--set", "n_head=3"], 1, "n_embd=128 is not divisible by n_head=3"),
        (["train", "--model", "gru", "--set", "n_layer=0"], 1, "n_layer must be >= 1"),
        (["train", "--model", "markov", "--set", "dropout=1.5"], 1, "dropout must be in [0, 1)"),
        (["train", "--model", "markov", "--set", "n_hidden=-4"], 1, "n_hidden must be >= 0"),
        (["train", "--model", "wavenet", "--set", "kernel_size=0"], 1, "kernel_size must be >="),
        (["train", "--model", "wavenet", "--set", "dilation_cycle=1,0"], 1, "dilations >= 1"),
        (
            ["train", "--model", "wavenet", "--set", "dilation_cycle=abc"],
            1,
            "dilation_cycle must be a comma-separated list of integers (1,2,4), got 'abc'",
        ),
        # fields the data decides
        (["train", "--model", "bigram", "--set", "vocab_size=20"], 1, "vocab_size is not settable"),
        (["train", "--set", "num_classes=3"], 1, "--set num_classes is not settable"),
        (["train", "--model", "rnn", "--set", "seq_len=32"], 1, "--set seq_len is not settable"),
        # training options
        (["train", "--beta2", "1.5"], 1, "beta2 must be in [0, 1)"),
        (["train", "--lr", "-1"], 1, "--lr must be finite and >= 0"),
        (["train", "--data", ""], 2, "argument --data: expected a path, got ''"),
        (["plot", ""], 2, "argument RUN: expected a path, got ''"),
        (["sample", " "], 2, "argument checkpoint: expected a path, got ' '"),
        (["eval", ""], 2, "argument checkpoint: expected a path, got ''"),
        (["eval", "run", "--data", ""], 2, "argument --data: expected a path, got ''"),
        (["sample", "run", "--out", ""], 2, "argument --out: expected a path, got ''"),
        (["eval", "run", "--per-example", ""], 2, "argument --per-example: expected a path"),
        (["train", "--init", ""], 2, "argument --init: expected a path, got ''"),
        (["sample", "run", "--temperature", "nan"], 1, "--temperature must be finite and > 0"),
        (["complete", "run", "--temperature", "inf"], 1, "must be finite and > 0, got inf"),
        (["sample", "run", "--temperature", "0"], 1, "(--top-k 1 draws the most likely symbol"),
        (["complete", "run", "--top-p", "0"], 1, "--top-p must be in (0, 1], got 0.0"),
        (["complete", "run", "--length", "0"], 1, "--length must be >= 1, got 0"),
        (["complete", "--input", "a.png", "run"], 2, "after --input, name the run first"),
        (["train", "--lr", "inf"], 1, "--lr must be finite and >= 0, got inf"),
        (["train", "--weight-decay", "inf"], 1, "--weight-decay must be finite"),
        (["train", "--seed", str(2**64)], 2, "a seed is in -2**63..2**64-1"),
        (["train", "--data-seed", "x"], 2, "a seed is an integer, got 'x'"),
        (["sample", "run", "--seed", str(-(2**63) - 1)], 2, "a seed is in -2**63..2**64-1"),
        (["complete", "run", "--seed", str(10**20)], 2, "a seed is in -2**63..2**64-1"),
        (["compare", "--seed", str(2**64)], 2, "a seed is in -2**63..2**64-1"),
        (["train", "--min-lr", "-1"], 1, "--min-lr must be in [0, lr="),
        (["train", "--grad-clip", "-1"], 1, "--grad-clip must be >= 0"),
        (["train", "--grad-clip", "nan"], 1, "--grad-clip must be >= 0"),
        (["train", "--log-every", "0"], 1, "--log-every must be >= 1"),
        (["train", "--batch-size", "0"], 1, "--batch-size must be >= 1, got 0"),
        (["train", "--grad-accum", "0"], 1, "--grad-accum must be >= 1, got 0"),
        (["train", "--device", "gpu"], 1, "cpu, cuda, cuda:N or mps, got 'gpu'"),
        (["sample", "x", "--device", "tpu"], 1, "--device must be auto, cpu, cuda, cuda:N or mps"),
        (["eval", "x", "--device", "meta"], 1, "--device must be auto, cpu, cuda, cuda:N or mps"),
        (["train", "--device", "xpu"], 1, "--device must be auto, cpu, cuda, cuda:N or mps"),
        (["train", "--device", "cpu:1"], 1, "--device must be auto, cpu, cuda, cuda:N or mps"),
        (["train", "--stpes", "3"], 2, "unrecognized arguments: --stpes 3 (see darm train --help)"),
        (["train", "--threads", "-1"], 1, "--threads must be >= 1"),
        (["train", "--samples", "-1"], 1, "--samples must be >= 0"),
        (["train", "--data-seed", "-1"], 2, "a seed is in 0..2**63-1, got -1"),
        (["compare", "--data-seed", "-1"], 2, "a seed is in 0..2**63-1, got -1"),
        (["compare", "--threads", "0"], 1, "--threads must be >= 1"),
        (["train", "--threads", "100000"], 1, "--threads 100000 is over 4 per CPU"),
        (["bench", "--threads", "100000"], 1, "--threads 100000 is over 4 per CPU"),
        # an item lost from a list, a memory or a kernel past what the data has, a decay that
        # scales the weights by 1 - lr * wd < 0 (once NLL 1e33), blanks that name nothing
        # (one step where they were taken, so that one not refused fails fast)
        (["train", "--model", "wavenet", "--set", "dilation_cycle=1,,2", *ONE_STEP], 1,
         "dilation_cycle has an empty item in '1,,2'"),
        (["train", "--model", "markov", "--set", "k=1000", *ONE_STEP], 1,
         "k=1000 is more than D=64"),
        (["train", "--model", "pixelcnn", "--set", "first_kernel=99", *ONE_STEP], 1,
         "first_kernel=99 is wider than 8x8 pictures can use: at most 15"),
        (["train", "--model", "gated_pixelcnn", "--set", "kernel_size=17", *ONE_STEP], 1,
         "kernel_size=17 is wider than 8x8 pictures"),
        (["train", "--weight-decay", "1e6", *ONE_STEP], 1,
         "--weight-decay 1e+06 times the lr 0.003 is 3000"),
        (["train", "--lr", "0.1", "--weight-decay", "10", *ONE_STEP], 1,
         "times the lr 0.1 is 1: AdamW"),
        (["runs", " "], 2, "argument FOLDER: expected a path, got ' '"),
        (["train", "--out", " ", *ONE_STEP], 2, "argument --out: expected a path, got ' '"),
        (["--import", "", "models"], 2, "argument --import: expected a module or a .py file"),
        (["models", "--import", " "], 2, "argument --import: expected a module or a .py file"),
    ],
)  # fmt: skip
def test_bad_input(args, code, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line_error(capsys, main(args), code, needle)


@pytest.mark.parametrize("text, needle", [("", "is empty"), (" \n\t\n", "holds only blank lines")])
def test_empty_data_file(text, needle, tmp_path, capsys):
    (tmp_path / "e.txt").write_text(text)
    code = main(["train", "--data", str(tmp_path / "e.txt"), "--out", str(tmp_path / "r")])
    one_line_error(capsys, code, needle=f"data file {tmp_path / 'e.txt'} {needle}")


def test_samples_zero_writes_none(names_file, tmp_path, capsys):
    out = tmp_path / "r"
    args = ["train", "--data", str(names_file), *TINY_MARKOV, "--steps", "2", "--out", str(out),
            "--quiet", "--samples", "0"]  # fmt: skip
    assert main(args) == 0
    assert (out / "results.json").exists() and not list(out.glob("samples.*"))


@pytest.mark.parametrize(
    "args, needle",
    [
        (["eval", "--batch-size", "0"], "--batch-size must be >= 1"),
        (["sample", "--length", "0"], "--length must be >= 1"),
        (["sample", "--length", "-3"], "--length must be >= 1"),
    ],
)
def test_bad_counts_after_training(run, args, needle, capsys):
    one_line_error(capsys, main([args[0], str(run), *args[1:]]), needle=needle)


def test_tiny_data_gets_every_split(tmp_path, capsys):
    """Three or four distinct lines still give train, valid and test one item each."""
    for n in (3, 4):
        path = tmp_path / f"{n}.txt"
        path.write_text("\n".join(["ab", "ba", "abb", "bab"][:n]))
        out = tmp_path / f"r{n}"
        args = ["train", "--data", str(path), *TINY_MARKOV, "--steps", "2", "--out", str(out),
                "--quiet", "--samples", "1"]  # fmt: skip
        assert main(args) == 0, capsys.readouterr().err
        assert json.loads((out / "results.json").read_text())["examples"] >= 1


def test_a_prompt_longer_than_d_names_length_where_the_model_goes_on(tmp_path, capsys):
    long = "abcdefghijklmnopqrst"  # 20 symbols; names are D = 16
    for model, err in [("bigram", "more than the 16 a sample has by default: give --length"),
                       ("gpt", "--prompt has 20 characters; this gpt sees at most")]:  # fmt: skip
        out = tmp_path / model
        args = ["train", "--data", "names", "--model", model, "--set", "n_embd=8", "--steps", "1"]
        assert main([*args, "--samples", "0", "--quiet", "--out", str(out)]) == 0
        one_line_error(capsys, main(["sample", str(out), "--prompt", long]), 1, err)
    one_line_error(capsys, main(["complete", str(tmp_path / "bigram"), "--input", long]), 1,
                   "--input has 20 characters, more than the 16")  # fmt: skip
    assert main(["sample", str(tmp_path / "bigram"), "--prompt", long, "--length", "24"]) == 0
    assert capsys.readouterr().out.startswith(long)


def test_prompt_outside_vocabulary(run, capsys):
    code = main(["sample", str(run), "--prompt", "an!", "--out", str(run / "x")])
    one_line_error(capsys, code, needle="--prompt: symbol '!' (position 3) is not in the vocab")


def test_corrupt_checkpoint(run, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("best.json", "best.safetensors"):
        (bad / name).write_bytes((run / name).read_bytes())
    data = (bad / "best.safetensors").read_bytes()
    (bad / "best.safetensors").write_bytes(data[: len(data) // 2])
    one_line_error(capsys, main(["eval", str(bad)]), needle="truncated or altered")
    (bad / "best.json").write_text("{not json")
    one_line_error(capsys, main(["eval", str(bad)]), needle="not a darm checkpoint")


def test_mismatched_checkpoint(run, tmp_path, capsys):
    bad = tmp_path / "mismatch"
    bad.mkdir()
    record = json.loads((run / "best.json").read_text())
    record["config"]["n_hidden"] = 32
    record["sha256"]["record"] = record_sha256(record)  # edited on purpose, resealed
    (bad / "best.json").write_text(json.dumps(record))
    (bad / "best.safetensors").write_bytes((run / "best.safetensors").read_bytes())
    one_line_error(capsys, main(["eval", str(bad)]), needle="weights do not match the model")


def test_console_script_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "darm", "eval", str(tmp_path / "none")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("darm eval: error:") and "Traceback" not in proc.stderr


def test_a_ctrl_c_while_torch_loads_ends_in_one_line(monkeypatch, capsys):
    """The console script imports the command (and torch) inside its own handler."""
    import types

    from darm import entry

    class Loading(types.ModuleType):
        def __getattr__(self, name):
            raise KeyboardInterrupt  # as if Ctrl-C came while the module was being imported

    monkeypatch.setitem(sys.modules, "darm.cli", Loading("darm.cli"))
    with kept_signal_handlers(), pytest.raises(SystemExit) as stop:
        entry.main()
        # on its way out: a second Ctrl-C (or timeout's SIGTERM to the group) is ignored
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    assert stop.value.code == 130
    assert capsys.readouterr().err == "darm: interrupted\n"


@contextlib.contextmanager
def kept_signal_handlers():
    """The test process's SIGINT and SIGTERM handlers, put back after the console script's."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def test_the_console_script_takes_one_ctrl_c_and_ignores_the_next(monkeypatch):
    """A double Ctrl-C printed a traceback from the interpreter's exit: the first interrupts
    (KeyboardInterrupt, as Python's own handler), the ones after it find nothing to do."""
    import os

    from darm import entry

    def command():
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # interrupted long before
        os.kill(os.getpid(), signal.SIGINT)  # the second: ignored
        time.sleep(0.05)
        return 130

    monkeypatch.setattr("darm.cli.main", command)
    with kept_signal_handlers(), pytest.raises(SystemExit) as stop:
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        entry.main()
    assert stop.value.code == 130


def sigterm_caught(pid: int) -> bool:
    """Whether process `pid` handles SIGTERM in Python by now (Linux: /proc's SigCgt mask)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = [line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")]
    return bool(caught) and int(caught[0], 16) >> (signal.SIGTERM - 1) & 1 == 1


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_a_sigterm_while_torch_loads_ends_in_one_line(names_file):
    """`timeout` or a scheduler's SIGTERM in the second or two that torch takes to load
    killed the command without a word; it stops as a Ctrl-C there does."""
    argv = [sys.executable, "-m", "darm", "train", "--data", str(names_file), *TINY_MARKOV]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while not sigterm_caught(proc.pid) and proc.poll() is None:
            time.sleep(0.002)  # the console script's handler, long before torch is loaded
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert (proc.returncode, err) == (143, "darm: terminated\n")


@pytest.mark.parametrize("signum, code, what", [
    (signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])  # fmt: skip
def test_a_signal_that_breaks_an_import_ends_in_one_line(signum, code, what, names_file, tmp_path):
    """A signal before training's own handler (reading --import, loading data, building the
    model) stops the command in one line with its status: SIGTERM during --import killed it
    without a word, and one that cut an import short surfaced as that import's failure (numpy's
    lazy imports: a RecursionError, said as an error or a traceback)."""
    family = tmp_path / "slow_family.py"
    family.write_text(
        "import os, signal, time\n"
        "try:\n"
        f"    os.kill(os.getpid(), {int(signum)})\n"
        "    time.sleep(30)\n"
        "except BaseException as e:  # as numpy's lazy import fails once interrupted\n"
        "    raise RecursionError('maximum recursion depth exceeded') from e\n"
    )
    argv = [sys.executable, "-m", "darm", "--import", str(family), "train", "--data",
            str(names_file), *TINY_MARKOV, "--out", str(tmp_path / "r")]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stderr) == (code, f"darm train: {what}\n")
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("unbuffered", ["1", ""])
def test_a_stdout_that_cannot_be_written_does_not_stop_train(unbuffered, names_file, tmp_path):
    """`darm train > /dev/full` (a full disk): unbuffered, the first line stopped the run
    before its folder was made; buffered, its lines failed at the exit (status 120, an
    'Exception ignored' traceback). The run trains and is saved; one warning says why its
    lines are missing."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env.update(OMP_NUM_THREADS="1", **{"PYTHONUNBUFFERED": unbuffered} if unbuffered else {})
    out = tmp_path / "r"
    argv = [sys.executable, "-m", "darm", "train", "--data", str(names_file), *TINY_MARKOV,
            "--steps", "4", "--eval-every", "2", "--samples", "2", "--out", str(out)]  # fmt: skip
    with open("/dev/full", "w") as full:
        proc = subprocess.run(argv, stdout=full, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == (
        "darm train: warning: cannot write to stdout (No space left on device); the run goes "
        "on, its lines dropped\n"
    )
    assert json.loads((out / "last.json").read_text())["step"] == 4
    assert (out / "results.json").exists() and (out / "samples.txt").exists()


def test_a_console_that_cannot_show_the_data_or_is_closed_does_not_stop_train(tmp_path):
    """An ASCII console (PYTHONIOENCODING=ascii, a cp1252 redirect) prints é escaped; a
    closed stdout (`darm train >&-`) is /dev/null: either way the run trains and is saved."""
    import os

    (tmp_path / "u.txt").write_text("ééé\nüüü\nñññ\nööö\nààà\n")
    argv = [sys.executable, "-m", "darm", "train", "--data", str(tmp_path / "u.txt"), "--model",
            "markov", "--set", "n_hidden=8", "--steps", "2", "--threads", "1"]  # fmt: skip
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    proc = subprocess.run([*argv, "--out", str(tmp_path / "a"), "--samples", "4"],
                          capture_output=True, text=True, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "\\x" in proc.stdout and (tmp_path / "a" / "results.json").exists()
    proc = subprocess.run([*argv, "--out", str(tmp_path / "b")], stderr=subprocess.PIPE,
                          text=True, preexec_fn=lambda: os.close(1))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "b" / "results.json").exists()


def test_samples_that_cannot_fit_in_memory_are_refused_before_any_work(tmp_path, capsys):
    """--samples 10^8 once trained a whole run, then filled the memory and was killed (no
    results.json); sample and complete were killed alike."""
    from darm.memory import cache_bytes

    out = tmp_path / "r"
    argv = ["train", "--data", "names", *TINY_MARKOV, "--steps", "1", "--out", str(out), "--quiet"]
    code = main([*argv, "--samples", "100000000"])
    one_line_error(capsys, code, 1, "--samples 100,000,000: drawing 100,000,000 samples of 16")
    assert not out.exists()  # refused before the folder was made
    assert main([*argv, "--samples", "0"]) == 0
    one_line_error(capsys, main(["sample", str(out), "-n", "2000000000"]), 1, "GiB, and this CPU")
    code = main(["complete", str(out), "--count", "2", "-n", "1000000000"])
    one_line_error(capsys, code, 1, "-n 1,000,000,000 for 2 inputs: drawing 2,000,000,000")
    # the cache counted: a gpt's keys and values, 2 x layers x positions x width floats a row
    gpt = tiny_model("gpt", vocab_size=5, seq_len=7)  # 2 layers of width 16
    assert cache_bytes(gpt.init_cache(1)) == 2 * 2 * 7 * 16 * 4


def test_import_darm_leaves_torch_for_first_use():
    code = (
        "import sys, darm; assert 'torch' not in sys.modules; "
        "assert darm.data.from_arrays and darm.nn.attention.attend; "  # sub-packages too
        "assert darm.create_model('markov').family == 'markov'; print(sorted(darm.__all__)); "
        "assert not hasattr(darm, 'nope') and 'import_module' not in dir(darm)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "'sample'" in proc.stdout


def test_help_explains_itself():
    proc = subprocess.run([sys.executable, "-m", "darm", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for word in ("train", "eval", "sample", "models", "examples:"):
        assert word in proc.stdout


def test_models_lists_fields_and_marks_the_datas(capsys):
    assert main(["models", "-v"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.strip().startswith("n_layer = ") for line in lines)
    marked = {line.split()[0] for line in lines if "set by the data" in line}
    assert marked == {"vocab_size", "seq_len", "image_shape", "num_classes"}


def test_digits_conditional_png_and_label(tmp_path, capsys):
    out = tmp_path / "d"
    args = ["train", "--data", "digits", "--model", "wavenet", "--set", "n_embd=8",
            "--set", "n_skip=8", "--conditional", "--steps", "3", "--eval-every", "3",
            "--out", str(out), "--quiet", "--samples", "4"]  # fmt: skip
    assert main(args) == 0
    assert "nats/image" in capsys.readouterr().out
    assert main(["sample", str(out), "-n", "4", "--label", "3", "--out", str(tmp_path / "s")]) == 0
    from PIL import Image

    assert Image.open(tmp_path / "s.png").size[0] > 8
    capsys.readouterr()
    one_line_error(capsys, main(["sample", str(out), "--label", "12"]), needle="--label must be")
    one_line_error(capsys, main(["sample", str(out), "--length", "10"]), needle="whole images")
    # other data scored by a conditional model must have its labels; the levels are the
    # model's L (17) even when the file's largest value is smaller
    import numpy as np

    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.integers(0, 4, size=(20, 64)))
    one_line_error(capsys, main(["eval", str(out), "--data", str(tmp_path / "a.npy")]),
                   needle="the data has no labels")  # fmt: skip
    y = np.arange(20) % 10
    np.savez(tmp_path / "b.npz", x=rng.integers(0, 4, size=(20, 64)), y=y)
    assert main(["eval", str(out), "--data", str(tmp_path / "b.npz")]) == 0
    # or --label scores every example as one class: exactly -log p(x | y = 3)
    capsys.readouterr()
    argv = ["eval", str(out), "--data", str(tmp_path / "a.npy"), "--label", "3", "--json"]
    assert main(argv) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["label"] == 3
    from darm import load_checkpoint, log_prob

    model, _, _ = load_checkpoint(out)
    x = torch.from_numpy(np.load(tmp_path / "a.npy"))
    want = -log_prob(model, x, torch.full((20,), 3)).mean().item()
    assert got["examples"] == 20 and got["nats_per_example"] == pytest.approx(want, rel=1e-5)
    code = main(["eval", str(out), "--data", str(tmp_path / "a.npy"), "--label", "10"])
    one_line_error(capsys, code, needle="--label must be in 0..9")


@pytest.mark.parametrize(
    "argv",
    [["sample", "x", "-n", "99999999999999999999"], ["train", "--threads", "3000000000"],
     ["train", "--samples", "99999999999999999999"], ["complete", "x", "--length", "-3000000000"]],
)  # fmt: skip
def test_an_integer_option_past_any_size_is_refused_by_name(argv, capsys):
    flag = argv[-2]  # past 2**31 - 1 torch overflows deep inside, with a C++ traceback
    one_line_error(capsys, main(argv), 2, f"argument {flag}: must be at most 2,147,483,647 in")


def test_bad_training_options_are_refused_before_any_work(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default run folder is under runs/ here, not the repository
    one_line_error(capsys, main(["train", "--steps", "0"]), 1, "--steps must be >= 1")
    assert capsys.readouterr().out == ""  # no data read, no model built
    # a negative value argparse would take for an option: refused by its own check instead
    one_line_error(capsys, main(["train", "--lr", "-1e-3"]), 1, "--lr must be finite and >= 0")
    huge = ["train", "--set", "n_hidden=99999999999999999999", "--model", "markov"]
    one_line_error(capsys, main(huge), 1, "n_hidden must be at most 2,147,483,647 in size")
    assert capsys.readouterr().out == ""  # no data read, no model built


def test_a_budget_without_steps_plans_whole_cycles(names_file, tmp_path, capsys, monkeypatch):
    # 1 s a step, 10 validation passes of 0.5 s: 0.95 * 60 - 5 s -> 52 steps, whole cycles of 4
    monkeypatch.setattr("darm.budget.seconds_per_step", lambda *a: 1.0)
    monkeypatch.setattr("darm.budget.REPLAN_AT", ())  # the real steps are faster: kept to plan
    monkeypatch.setattr("darm.budget.seconds_per_validation", lambda *a: 0.5)
    out = tmp_path / "planned"
    argv = ["train", "--data", str(names_file), *TINY_MARKOV, "--batch-size", "4", "--quiet",
            "--samples", "0", "--out", str(out), "--budget", "60s", "--cycles", "4"]  # fmt: skip
    assert main(argv) == 0
    assert "--budget 60s: planned 52 steps" in capsys.readouterr().out
    record = json.loads((out / "last.json").read_text())
    assert record["step"] == 52 and record["train"]["steps"] == 52
    assert record["train"]["warmup"] == 52 // 8  # the default warmup of a 52-step run
    assert record["train"]["eval_every"] == 6  # about ten passes: ceil(52 / 10)


def test_a_budget_checks_the_run_length_it_plans_not_the_default(names_file, tmp_path, capsys,
                                                                  monkeypatch):  # fmt: skip
    # 3 cycles do not divide the default 2000 steps, and need not: the plan makes whole cycles;
    # a warmup is checked against the planned run (52 steps), which it must be shorter than
    monkeypatch.setattr("darm.budget.seconds_per_step", lambda *a: 1.0)
    monkeypatch.setattr("darm.budget.REPLAN_AT", ())
    monkeypatch.setattr("darm.budget.seconds_per_validation", lambda *a: 0.5)
    argv = ["train", "--data", str(names_file), *TINY_MARKOV, "--batch-size", "4", "--quiet",
            "--samples", "0", "--budget", "60s"]  # fmt: skip
    out = ["--out", str(tmp_path / "cycles")]
    assert main([*argv, *out, "--cycles", "3"]) == 0
    assert "--budget 60s: planned 51 steps" in capsys.readouterr().out
    out = ["--out", str(tmp_path / "warm")]
    code = main([*argv, *out, "--warmup", "1000"])
    one_line_error(capsys, code, 1, "warmup (1000) must be shorter than the run (52 steps), all "
                   "that --budget 60s affords here")  # fmt: skip
    assert not (tmp_path / "warm" / "last.json").exists()


def test_a_budget_too_small_for_the_fewest_steps_is_said(names_file, tmp_path, capsys,
                                                         monkeypatch):  # fmt: skip
    # 20 steps (the plan's floor) of 1 s do not fit 5 s: the run will be cut, and says so
    monkeypatch.setattr("darm.budget.seconds_per_step", lambda *a: 1.0)
    monkeypatch.setattr("darm.budget.REPLAN_AT", ())  # the real steps are faster: kept to plan
    monkeypatch.setattr("darm.budget.seconds_per_validation", lambda *a: 0.1)
    argv = ["train", "--data", str(names_file), *TINY_MARKOV, "--batch-size", "4", "--quiet",
            "--samples", "0", "--out", str(tmp_path / "cut"), "--budget", "5s"]  # fmt: skip
    assert main(argv) == 0
    said = capsys.readouterr()
    assert "--budget 5s: planned 20 steps\n" in said.out
    assert "warning: even 20 steps take ~20s here, so the run stops at the budget" in said.err
    # under a second: not "~0s"
    monkeypatch.setattr("darm.budget.seconds_per_step", lambda *a: 0.002)
    monkeypatch.setattr("darm.budget.seconds_per_validation", lambda *a: 0.001)
    argv[argv.index("5s")], argv[argv.index(str(tmp_path / "cut"))] = "0.01s", str(tmp_path / "c2")
    assert main(argv) == 0
    assert "warning: even 20 steps take ~0.04s here" in capsys.readouterr().err


def test_a_budget_past_a_runs_steps_is_refused_naming_it(names_file, tmp_path, capsys,
                                                         monkeypatch):  # fmt: skip
    monkeypatch.setattr("darm.budget.seconds_per_step", lambda *a: 1e-6)
    monkeypatch.setattr("darm.budget.seconds_per_validation", lambda *a: 0.0)
    argv = ["train", "--data", str(names_file), *TINY_MARKOV, "--quiet", "--samples", "0",
            "--out", str(tmp_path / "r"), "--budget", "1000000h"]  # fmt: skip
    one_line_error(capsys, main(argv), 1, "steps here, more than a run's 2,147,483,647: give less")
    assert not (tmp_path / "r" / "last.json").exists()


def test_a_batch_over_the_training_examples_is_noted(names_file, tmp_path, capsys):
    argv = ["train", "--data", str(names_file), *TINY_MARKOV, "--steps", "1", "--quiet",
            "--samples", "0", "--out", str(tmp_path / "r"), "--batch-size", "5000"]  # fmt: skip
    assert main(argv) == 0
    assert "note: --batch-size 5000 is more than the " in capsys.readouterr().err


def test_a_budget_plans_a_conditional_run(tmp_path, capsys):
    # the real timing probe, through the labels of a class-conditional model
    out = tmp_path / "cond"
    argv = ["train", "--data", "digits", *TINY_MARKOV, "--conditional", "--budget", "2s",
            "--grad-accum", "2", "--quiet", "--samples", "0", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    said = capsys.readouterr().out
    record = json.loads((out / "last.json").read_text())
    steps = record["train"]["steps"]  # as planned, or planned again by the first steps' speed
    assert f"--budget 2s: planned {steps} steps" in said or f"planned again as {steps}" in said
    assert record["config"]["num_classes"] == 10


def test_a_budget_stop_says_so_and_resume_may_shorten_the_run(names_file, tmp_path, capsys):
    out = tmp_path / "b"
    base = ["train", "--data", str(names_file), *TINY_MARKOV, "--batch-size", "4", "--quiet",
            "--samples", "0", "--out", str(out)]  # fmt: skip
    assert main([*base, "--steps", "300", "--budget", "0.001s"]) == 0
    said = capsys.readouterr().out
    assert "--budget stopped the run at step 1 of 300; --resume continues" in said
    # the 300-step run's default warmup (100) follows a shorter --steps, as in a fresh run
    assert main([*base, "--resume", "--steps", "20"]) == 0
    record = json.loads((out / "last.json").read_text())
    assert record["step"] == 20 and record["train"]["warmup"] == 10
    one_line_error(capsys, main([*base, "--resume", "--steps", "10"]), 1, "past --steps 10")


def test_a_model_too_big_for_memory_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("darm.memory.memory_bytes", lambda device: 2**20)  # a 1 MiB machine
    argv = ["train", "--data", "digits", "--model", "gpt", "--steps", "2", "--out",
            str(tmp_path / "r"), "--quiet", "--samples", "0"]  # fmt: skip
    one_line_error(capsys, main(argv), 1, "gpt with these settings has 798,080 parameters")
    assert not (tmp_path / "r").exists()
    monkeypatch.setattr("darm.memory.memory_bytes", lambda device: 2**30)
    assert main(argv) == 0


def test_a_batch_whose_activations_cannot_fit_is_refused(tmp_path, capsys, monkeypatch):
    # gpt on the digits: 12.8 MB of training state, and its forward makes over 1.4 MB an
    # example, half of it counted (48 MB for a batch of 64): a 50 MB machine fits 8 examples
    # at a time, not 64; nor in bf16 (2 bytes a number: 24 MB) would 64 be refused
    monkeypatch.setattr("darm.memory.memory_bytes", lambda device: 50 * 10**6)
    argv = ["train", "--data", "digits", "--model", "gpt", "--steps", "1", "--quiet",
            "--samples", "0"]  # fmt: skip
    out = ["--out", str(tmp_path / "r")]
    err = one_line_error(capsys, main([*argv, *out]), 1, "of activations for 64 examples of D=64")
    assert "try a smaller --batch-size, --grad-accum" in err and not (tmp_path / "r").exists()
    assert main([*argv, *out, "--grad-accum", "8"]) == 0  # 8 examples at a time
    out = ["--out", str(tmp_path / "bf16")]
    assert main([*argv, *out, "--dtype", "bf16"]) == 0


def test_activations_are_counted_on_the_meta_device():
    data = load_data("names")
    with torch.device("meta"):
        model = create_model("gpt", data, n_layer=1)
        one = forward_numbers(model)
        two = forward_numbers(create_model("gpt", data, n_layer=2))
    assert one > 16 * 27  # at least the logits (D=16, L=27), and every block adds its own
    assert two > one
    model.forward = lambda x, y: x.sum().item()  # a forward that needs real numbers
    assert forward_numbers(model) == 0  # uncounted: the check falls back on the parameters


@pytest.mark.parametrize("name", ["gpt", "pixelcnn", "gated_pixelcnn"])
def test_a_deep_stack_is_sized_from_two_of_its_layers(name):
    """Building 10^5 blocks takes minutes even on meta: a stack over DEEP layers is sized
    from 2 and 3 of them, exactly where its blocks are alike."""
    from darm.memory import DEEP, deep_size, meta_size

    data = load_data("digits")
    assert deep_size(name, data, {"n_layer": DEEP}) is None  # shallow: built as asked
    deep = {"n_layer": str(DEEP + 3)}  # as --set gives it
    assert deep_size(name, data, deep) == meta_size(name, data, deep)


def test_a_huge_stack_is_refused_at_once(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("darm.memory.memory_bytes", lambda device: 64 * 2**30)  # any machine
    argv = ["train", "--data", "names", "--model", "gpt", "--set", "n_layer=99999", "--steps",
            "1", "--out", str(tmp_path / "r")]  # fmt: skip
    one_line_error(capsys, main(argv), 1, "gpt with these settings has 19,686,208,896 parameters")


def test_a_refusal_for_memory_names_a_cause_in_the_data(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("darm.memory.memory_bytes", lambda device: 64 * 2**30)  # any machine
    x = np.arange(400).reshape(50, 8) % 10
    x[0, 0] = 2**24 - 1  # one ID among the digits: L = 2^24, a table of L x L
    np.save(tmp_path / "ids.npy", x)
    argv = ["train", "--data", str(tmp_path / "ids.npy"), "--model", "markov", "--steps", "1",
            "--out", str(tmp_path / "r")]  # fmt: skip
    err = one_line_error(capsys, main(argv), 1, "parameters: training needs over")
    assert err.endswith(
        "(ids: L = 16777216 from the largest value, but only 11 distinct values "
        "occur: map them to 0..10 first (np.unique(x, return_inverse=True)))"
    )


def test_eval_on_built_in_data_of_another_kind_names_the_mismatch(run, capsys):
    # a text model and the digits (read at the model's L): D differs; no word of a --levels
    # nobody passed, nor of the L that matches
    err = one_line_error(capsys, main(["eval", str(run), "--data", "digits"]), 1, "digits is ")
    assert err.endswith(
        "digits is images; " + str(run / "best.json") + " was trained on text, one item a line"
    )  # the kinds, where they differ, say more than L, D
    assert "--levels" not in err and "L=" not in err


def test_init_from_other_data_names_only_what_differs(tmp_path, capsys):
    digits = tmp_path / "digits"
    args = ["train", "--model", "bigram", "--steps", "1", "--samples", "0", "--quiet"]
    assert main([*args, "--out", str(digits)]) == 0
    argv = [*args, "--init", str(digits), "--data", "names", "--out", str(tmp_path / "ft")]
    err = one_line_error(capsys, main(argv), 1, "names is text, one item a line; ")
    assert err.endswith("was trained on images")
    np.save(tmp_path / "rows.npy", np.arange(30 * 32).reshape(30, 32) % 17)  # read at L=17
    argv = [*args, "--init", str(digits), "--data", str(tmp_path / "rows.npy"), "--out",
            str(tmp_path / "ft")]  # fmt: skip
    err = one_line_error(capsys, main(argv), 1, "rows has D=32; ")
    assert "L=" not in err  # only what differs, and why: the data is read as rows
    assert err.endswith("was trained with D=64 (read as integer arrays; it was trained on images)")


def test_eval_scores_another_file_whole_by_default(run, names_file, tmp_path, capsys):
    other = tmp_path / "other.txt"
    other.write_text(names_file.read_text())
    assert main(["eval", str(run), "--data", str(other), "--json"]) == 0
    whole = json.loads(capsys.readouterr().out.splitlines()[-1])
    # every line of the file: 8 distinct names, each 3 times (a split deduplicates them)
    assert whole["split"] == "all" and whole["examples"] == 24
    parts = []
    for split in ("train", "valid", "test"):
        assert main(["eval", str(run), "--data", str(other), "--split", split, "--json"]) == 0
        parts.append(json.loads(capsys.readouterr().out.splitlines()[-1]))
    total = sum(p["nats_per_example"] * p["examples"] for p in parts)
    assert whole["nats_per_example"] * 24 == pytest.approx(3 * total)
    # the run's own data named again keeps its test split (train would flatter the NLL)
    assert main(["eval", str(run), "--data", str(names_file), "--json"]) == 0
    said = capsys.readouterr()
    assert json.loads(said.out.splitlines()[-1])["split"] == "test"
    assert "names the run's own data: its test split; --split all scores it whole" in said.err
    # one name is data enough to score whole: exactly -log p(name + end) under the model
    (tmp_path / "one.txt").write_text("emma\n")
    assert main(["eval", str(run), "--data", str(tmp_path / "one.txt"), "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    from darm import load_checkpoint, log_prob

    model, record, _ = load_checkpoint(run)
    vocab, D = record["data"]["vocab"], model.num_dims
    x = torch.full((1, D), vocab.index("\n"))  # the end symbol pads
    x[0, :4] = torch.tensor([vocab.index(c) for c in "emma"])
    mask = torch.arange(D)[None] <= 4  # the symbols and the end symbol are scored
    assert one["examples"] == 1 and one["dims"] == 5
    assert one["nats_per_example"] == pytest.approx(-log_prob(model, x, mask=mask).item())
    one_line_error(capsys, main(["eval", str(run), "--data", str(tmp_path / "one.txt"),
                                 "--split", "test"]), 1, "need at least 3")  # fmt: skip
    # a markov scores any length: a line longer than its D is scored whole, not refused
    long = "emmaannaemma"
    (tmp_path / "long.txt").write_text(long + "\n")
    assert len(long) >= D and main(["eval", str(run), "--data", str(tmp_path / "long.txt"),
                                    "--json"]) == 0  # fmt: skip
    scored = json.loads(capsys.readouterr().out)
    x = torch.tensor([[vocab.index(c) for c in long] + [vocab.index("\n")]])
    assert scored["dims"] == len(long) + 1
    assert scored["nats_per_example"] == pytest.approx(-log_prob(model, x).item())


def test_sample_prompt_of_an_array_model_is_integers(tmp_path, capsys):
    import numpy as np

    np.save(tmp_path / "a.npy", np.random.default_rng(0).integers(0, 4, size=(30, 6)))
    out = tmp_path / "r"
    argv = ["train", "--data", str(tmp_path / "a.npy"), *TINY_MARKOV, "--steps", "2",
            "--out", str(out), "--quiet", "--samples", "0"]  # fmt: skip
    assert main(argv) == 0
    assert main(["sample", str(out), "-n", "3", "--prompt", "3 0 2", "--out", str(out / "p")]) == 0
    rows = (out / "p.txt").read_text().splitlines()
    assert len(rows) == 3 and all(r.startswith("3 0 2 ") for r in rows)
    capsys.readouterr()
    one_line_error(capsys, main(["sample", str(out), "--prompt", "a,b"]), 1, "is integers")
    code = main(["complete", str(out), "--input", "2,2"])
    one_line_error(capsys, code, 1, "integers separated by spaces, e.g. '2 0 1', or an .npy")
    np.save(tmp_path / "row.npy", np.array([[3, 0, 2]]))  # one row, as np.save keeps it
    argv = ["complete", str(out), "--input", str(tmp_path / "row.npy"), "-n", "2"]
    assert main([*argv, "--out", str(out / "c")]) == 0
    rows = (out / "c.txt").read_text().splitlines()
    assert len(rows) == 2 and all(r.startswith("3 0 2 ") for r in rows)
    np.save(tmp_path / "two.npy", np.array([[1, 1], [2, 0]]))  # two prefixes for complete
    argv = ["complete", str(out), "--input", str(tmp_path / "two.npy"), str(tmp_path / "row.npy")]
    assert main([*argv, "-n", "2", "--out", str(out / "c2")]) == 0
    rows = (out / "c2.txt").read_text().splitlines()
    starts = ["1 1 ", "1 1 ", "2 0 ", "2 0 ", "3 0 2 ", "3 0 2 "]  # each prefix -n 2 times
    assert len(rows) == 6 and all(
        r.startswith(s) and len(r.split()) == 6 for r, s in zip(rows, starts)
    )
    capsys.readouterr()
    code = main(["sample", str(out), "--prompt", str(tmp_path / "two.npy")])
    one_line_error(capsys, code, 1, "must hold one row of integer symbols, (P,) or (1, P); got 2")
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 1), dtype=np.int64))
    (tmp_path / "empty.npy").write_bytes(b"")
    np.savez(tmp_path / "z.npz", x=np.zeros(3, dtype=np.int64))
    (tmp_path / "z.npz").rename(tmp_path / "z.npy")
    np.save(tmp_path / "huge.npy", np.array([2**64 - 1], dtype=np.uint64))
    capsys.readouterr()
    for name, needle in [
        ("cube.npy", "must hold rows of integer symbols, (P,) or (N, P); got int64 (2, 3, 1)"),
        ("empty.npy", "cannot read"),
        ("z.npy", "is an .npz archive; save the array with np.save"),
        ("huge.npy", "symbol 18446744073709551615 is outside 0..3"),
    ]:
        code = main(["complete", str(out), "--input", str(tmp_path / name)])
        one_line_error(capsys, code, 1, needle)
    assert main(["sample", str(out), "-n", "2", "--prompt", " ", "--out", str(out / "e")]) == 0


def test_eval_scores_one_array_row_whole(tmp_path, capsys):
    import numpy as np

    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.integers(0, 4, size=(30, 6)))
    out = tmp_path / "r"
    argv = ["train", "--data", str(tmp_path / "a.npy"), *TINY_MARKOV, "--steps", "2",
            "--out", str(out), "--quiet", "--samples", "0"]  # fmt: skip
    assert main(argv) == 0
    row = rng.integers(0, 4, size=(1, 6))
    np.save(tmp_path / "one.npy", row)
    capsys.readouterr()
    assert main(["eval", str(out), "--data", str(tmp_path / "one.npy"), "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    from darm import load_checkpoint, log_prob

    model, _, _ = load_checkpoint(out)
    assert one["examples"] == 1 and one["dims"] == 6
    assert one["nats_per_example"] == pytest.approx(-log_prob(model, torch.from_numpy(row)).item())
    # a row saved flat is that one row
    np.save(tmp_path / "flat.npy", row[0])
    assert main(["eval", str(out), "--data", str(tmp_path / "flat.npy"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == one
    # its own split needs three rows, and a value beyond the model's L is named
    code = main(["eval", str(out), "--data", str(tmp_path / "one.npy"), "--split", "test"])
    one_line_error(capsys, code, 1, "N >= 3 to split it into train, valid and test")
    np.save(tmp_path / "big.npy", np.array([[0, 1, 2, 3, 4, 0]]))
    code = main(["eval", str(out), "--data", str(tmp_path / "big.npy")])
    err = one_line_error(capsys, code, 1, "big.npy has value 4, outside the 4 levels")
    assert "test" not in err  # the whole file is scored, not a test split of it


def test_a_table_saved_with_dropout_before_it_was_refused_still_loads(tmp_path, capsys):
    out = tmp_path / "bigram"
    argv = ["train", "--data", "digits", "--model", "bigram", "--steps", "2", "--out", str(out),
            "--quiet", "--samples", "0"]  # fmt: skip
    assert main(argv) == 0
    record = json.loads((out / "best.json").read_text())
    record["config"]["dropout"] = 0.3  # as an older darm saved it: accepted, never acting
    record["sha256"]["record"] = record_sha256(record)
    (out / "best.json").write_text(json.dumps(record))
    assert main(["eval", str(out)]) == 0


def test_out_of_memory_is_one_line(run, capsys, monkeypatch):
    def allocate(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: cannot")

    monkeypatch.setattr("darm.outputs.save_samples", allocate)
    one_line_error(
        capsys, main(["sample", str(run), "-n", "1"]), 1, "out of memory (try a smaller -n): "
    )


def test_labels_by_name_before_number():
    from types import SimpleNamespace as NS

    from darm.prompts import label_tensor

    model = NS(num_classes=3)
    names = ["1", "10", "2"]  # sub-folders named by numbers, sorted as text
    assert label_tensor(model, "10", 2, names).tolist() == [1, 1]
    assert label_tensor(model, "2", 1, names).tolist() == [2]
    with pytest.raises(DarmError, match="--label '0' is not a class"):  # every class is named
        label_tensor(model, "0", 1, names)  # by a number: "0" is not an index (of folder 1)
    assert label_tensor(model, "0", 1, ["cat", "dog", "2"]).tolist() == [0]  # an index here


@pytest.mark.parametrize("text", ["1,2,4", "(1, 2, 4)", "1 2 4", "[1,2,4]"])
def test_a_tuple_field_reads_as_models_v_prints_it(text):
    from darm.config import build_config
    from darm.models import get_entry

    config = build_config(get_entry("wavenet").config_cls, {"dilation_cycle": text})
    assert config.dilation_cycle == (1, 2, 4)  # "1 2 4" once read as the single number 124


@pytest.mark.parametrize("text", ["1,", ",1", "1,,2", "(1,,)", "1, ,2"])
def test_a_tuple_field_refuses_an_empty_item(text):
    from darm.config import build_config
    from darm.models import get_entry

    wavenet = get_entry("wavenet").config_cls
    with pytest.raises(DarmError, match="dilation_cycle has an empty item"):  # not (1,) or (1, 2)
        build_config(wavenet, {"dilation_cycle": text})
    # Python's one-item tuple, as a compare report prints it, is one item
    assert build_config(wavenet, {"dilation_cycle": "(1,)"}).dilation_cycle == (1,)


def test_a_run_finds_its_data_from_any_folder(tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    write_names(work)
    monkeypatch.chdir(work)  # trained with a path relative to this folder
    base = [*TINY_MARKOV, "--batch-size", "4", "--quiet", "--samples", "0"]
    assert main(["train", "--data", "names.txt", "--steps", "2", "--out", "runs/w", *base]) == 0
    monkeypatch.chdir(tmp_path)  # ... and used from another
    assert main(["eval", "work/runs/w", "--split", "test"]) == 0
    assert main(["complete", "work/runs/w", "--count", "1", "-n", "1"]) == 0
    # the same file named another way is the same data
    again = ["train", "--out", "work/runs/w", "--resume", "--data", str(work / "names.txt")]
    assert main([*again, "--steps", "4", *base]) == 0
    assert json.loads((work / "runs/w/last.json").read_text())["step"] == 4


def test_a_new_run_does_not_overwrite_files_already_in_its_folder(names_file, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "log.csv").write_text("keep")
    (out / "notes.md").write_text("keep")  # a file no run writes is no obstacle
    argv = ["train", "--data", str(names_file), *TINY_MARKOV, "--steps", "1", "--out", str(out),
            "--quiet", "--samples", "0"]  # fmt: skip
    one_line_error(capsys, main(argv), 1, "already holds log.csv, which a new run would overwrite")
    assert (out / "log.csv").read_text() == "keep"
    # a run that stopped before its first checkpoint left only its own log: a retry may go on
    (out / "log.csv").write_text("step,lr,train_nats_per_dim,valid_nats_per_dim,tokens_per_s,"
                                 "elapsed_s\n")  # fmt: skip
    assert main(argv) == 0
    assert (out / "notes.md").read_text() == "keep"
    # but not when another run's best checkpoint and results sit beside its own log
    other = tmp_path / "other"
    other.mkdir()
    for name in ("log.csv", "best.json", "results.json"):
        (other / name).write_bytes((out / name).read_bytes())
    argv[argv.index(str(out))] = str(other)
    one_line_error(capsys, main(argv), 1, "already holds log.csv, results.json, best.json, ")
    # a save cut short (a full disk) left part of a checkpoint beside the log: not to be
    # resumed (there is no last), but retried
    (other / "results.json").unlink()
    code = main([*argv, "--resume"])
    one_line_error(capsys, code, 1, "has no last checkpoint to resume: the run stopped before")
    assert main(argv) == 0
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "last.optim.safetensors").write_text("keep")  # an optimiser state: a run's file
    argv[argv.index(str(other))] = str(lone)
    one_line_error(capsys, main(argv), 1, "already holds last.optim.safetensors")


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--block", "5"], "--block does not apply to names.txt (read as lines)"),
        (["--levels", "5"], "--levels does not apply to names.txt (read as lines)"),
        (["--format", "corpus", "--data-seed", "3"], "names.txt (read as corpus): it is split"),
    ],
)
def test_data_options_a_file_would_ignore_are_refused(names_file, capsys, extra, needle):
    code = main(["train", "--data", str(names_file), *extra])
    said = capsys.readouterr()
    assert code == 1 and said.out == ""  # refused before any data is read
    assert said.err.count("\n") == 1 and needle in said.err, said.err


def test_training_goes_on_when_the_reader_of_its_lines_leaves(names_file, tmp_path):
    """`darm train ... | head -2`: the pipe closes while training prints; the run still ends
    with its checkpoints and results (it died silently at its next line, its step unsaved)."""
    out = tmp_path / "r"
    argv = [
        sys.executable,
        "-m",
        "darm",
        "train",
        "--data",
        str(names_file),
        *TINY_MARKOV,
        "--steps",
        "40",
        "--eval-every",
        "5",
        "--quiet",
        "--samples",
        "2",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    proc.stdout.readline()  # the first line, then the reader is gone
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert json.loads((out / "last.json").read_text())["step"] == 40
    assert (out / "results.json").exists() and (out / "samples.txt").exists()


def test_a_bundled_datasets_name_is_kept_when_its_run_reads_it_again(tmp_path, capsys):
    out = tmp_path / "r"
    argv = ["train", "--data", "shakespeare", *TINY_MARKOV, "--block", "16", "--steps", "1",
            "--quiet", "--samples", "0", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0
    assert " on shakespeare" in capsys.readouterr().out  # not tinyshakespeare, its file's name
    code = main(["train", "--out", str(out), "--resume", "--data", "names"])
    one_line_error(capsys, code, 1, "--data names differs from its data shakespeare")


def test_a_folder_named_like_a_builtin_is_pointed_out(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "digits").mkdir()  # the user's own pictures, say
    argv = ["train", "--data", "digits", *TINY_MARKOV, "--steps", "1", "--quiet", "--samples",
            "0", "--out", str(tmp_path / "r")]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "warning: --data digits is the built-in digits; for the digits here, give --data " \
        "./digits" in err  # fmt: skip
    assert main([*argv[:1], *argv[3:-1], str(tmp_path / "s")]) == 0  # digits as the default
    assert "warning" not in capsys.readouterr().err  # (no --data named: nothing to mistake)


def test_a_negative_seed_trains_and_resumes(names_file, tmp_path):
    base = ["train", "--data", str(names_file), *TINY_MARKOV, "--batch-size", "4", "--quiet",
            "--samples", "0", "--out", str(tmp_path / "neg"), "--seed", "-1"]  # fmt: skip
    assert main([*base, "--steps", "1"]) == 0  # torch takes seeds down to -2**63
    assert main([*base, "--steps", "2", "--resume"]) == 0


def test_a_project_moved_with_its_runs_still_finds_its_data(tmp_path, monkeypatch):
    old = tmp_path / "old"
    old.mkdir()
    write_names(old)
    base = [*TINY_MARKOV, "--batch-size", "4", "--quiet", "--samples", "0"]
    run = ["--out", str(old / "runs" / "w")]
    assert main(["train", "--data", str(old / "names.txt"), "--steps", "2", *run, *base]) == 0
    new = old.rename(tmp_path / "new")  # the recorded absolute path is gone
    assert main(["eval", str(new / "runs" / "w")]) == 0  # found beside the run instead
    again = ["train", "--resume", "--out", str(new / "runs" / "w"), "--steps", "4", *base]
    assert main([*again, "--data", str(new / "names.txt")]) == 0  # the same data, moved
    record = json.loads((new / "runs" / "w" / "last.json").read_text())
    assert record["step"] == 4 and record["data"]["source"]["path"] == str(new / "names.txt")


PLUGIN = """
from dataclasses import dataclass

from torch import nn

from darm.models.base import ARModel, shift_right
from darm.models.registry import register_model


@dataclass
class UnigramConfig:
    vocab_size: int = 3
    seq_len: int = 4
    num_classes: int = 0


class Unigram(ARModel):
    family = "unigram"

    def __init__(self, config):
        super().__init__(config)
        self.logits = nn.Embedding(config.vocab_size + 1, config.vocab_size)

    def forward(self, x, cond=None):
        return self.logits(shift_right(x, self.config.vocab_size) * 0)  # (B, D, L)


register_model("unigram", Unigram, UnigramConfig, "p(x_d): one table row")
"""


def test_a_family_defined_in_a_script_is_looked_at_and_named_when_missing(tmp_path, capsys):
    """A family registered in a script (`__main__`) gets the quick look before training (a
    forgotten shift is refused), and its runs say where it was defined when it is missing."""
    script = (
        PLUGIN
        + f"""
import sys
from darm import create_model
from darm.data import load_data
from darm.errors import DarmError
from darm.train import TrainConfig, train

class Peeking(Unigram):  # reads x_d itself: not causal
    def forward(self, x, cond=None):
        return self.logits(x)

register_model("peeking", Peeking, UnigramConfig, "sees x_d")
data = load_data("names")
cfg = TrainConfig(steps=1, batch_size=4)
try:
    train(create_model("peeking", data), "peeking", data, cfg, {str(tmp_path / "p")!r})
except DarmError as e:
    print("refused:", e)
train(create_model("unigram", data), "unigram", data, cfg, {str(tmp_path / "u")!r},
      progress=False)
"""
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "refused: peeking: the logits at position 0 moved" in done.stdout, done.stdout
    err = one_line_error(capsys, main(["eval", str(tmp_path / "u")]), 1, "unknown model")
    assert "its family was defined in a script or notebook; run that definition" in err


def test_a_family_of_ones_own_is_imported_by_the_command_line(tmp_path, capsys, monkeypatch):
    from darm.models import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # not for later tests
    monkeypatch.setattr(sys, "path", sys.path[:])  # --import puts the file's folder first
    plugin = tmp_path / "my_family.py"
    plugin.write_text(PLUGIN)
    out = str(tmp_path / "r")
    argv = ["train", "--data", "names", "--model", "unigram", "--steps", "2", "--out", out,
            "--quiet", "--samples", "0"]  # fmt: skip
    assert main(["--import", str(plugin), *argv]) == 0
    assert main(["--import", str(plugin), "sample", out, "-n", "2", "--quiet"]) == 0
    capsys.readouterr()
    # conditional, it trains, with a warning: its logits ignore the label
    labelled = ["train", "--data", "digits", "--model", "unigram", "--conditional", "--steps",
                "1", "--out", str(tmp_path / "c"), "--quiet", "--samples", "0"]  # fmt: skip
    assert main(["--import", str(plugin), *labelled]) == 0
    assert "warning: unigram: the logits do not depend on the label" in capsys.readouterr().err
    assert main(["--import", str(plugin), "models"]) == 0
    assert "unigram" in capsys.readouterr().out
    # a fresh process: nothing is imported unless asked, and the run names its family's file
    monkeypatch.setattr(registry, "_REGISTRY", {k: v for k, v in registry._REGISTRY.items()
                                                if k != "unigram"})  # fmt: skip
    for name, module in list(sys.modules.items()):
        if getattr(module, "__file__", None) == str(plugin.resolve()):
            monkeypatch.delitem(sys.modules, name)
    err = one_line_error(capsys, main(["eval", out]), 1, "unknown model 'unigram'")
    assert f"its family came from {plugin.resolve()}; import it first (in Python, or" in err
    # an unknown family is named before the folder it would train into
    one_line_error(capsys, main(argv), 1, "unknown model 'unigram'")
    assert main(["eval", out, "--import", str(plugin), "--json"]) == 0  # after the command too
    capsys.readouterr()
    one_line_error(capsys, main(["--import", "nope.py", "models"]), 1, "--import nope.py: no such")
    (tmp_path / "broken.py").write_text("x = 1\nimport not_a_module_anywhere\n")
    code = main(["--import", str(tmp_path / "broken.py"), "models"])
    one_line_error(capsys, code, 1, "No module named 'not_a_module_anywhere' (broken.py, line 2)")
    code = main(["--import", "not_a_module_anywhere", "models"])
    one_line_error(capsys, code, 1, "--import not_a_module_anywhere failed")
    # a module by name from the current folder, and a file that imports its neighbour
    (tmp_path / "helpers.py").write_text("SIZE = 3\n")
    (tmp_path / "uses_helper.py").write_text("from helpers import SIZE\n")
    assert main(["--import", str(tmp_path / "uses_helper.py"), "models"]) == 0
    monkeypatch.chdir(tmp_path)
    assert main(["--import", "helpers", "models"]) == 0
    # one file imported by path and by name from a neighbour is one module: no name clash
    (tmp_path / "also.py").write_text("import my_family\n")
    assert main(["--import", "my_family.py", "--import", "also.py", "models"]) == 0
    # a script that exits at import is named, not obeyed
    (tmp_path / "script.py").write_text("import sys\nsys.exit(2)\n")
    code = main(["--import", "script.py", "models"])
    one_line_error(capsys, code, 1, "--import script.py exits when imported (code 2)")


def test_bench_times_each_family_and_its_cache(capsys):
    argv = ["bench", "--models", "bigram,markov,pixelcnn", "--set", "markov.n_hidden=16",
            "--seconds", "0.05", "-n", "2", "--naive", "--batch-size", "4", "--json"]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["data"] == "digits" and report["batch_size"] == 4 and report["samples"] == 2
    speeds = {s["model"]: s for s in report["speeds"]}
    assert set(speeds) == {"bigram", "markov", "pixelcnn"}  # digits are images: pixelcnn runs
    for s in speeds.values():
        assert s["ms_per_step"] > 0 and s["tokens_per_s"] > 0 and s["samples_per_s"] > 0
        assert s["cache_speedup"] == pytest.approx(s["samples_per_s"] / s["naive_samples_per_s"])
    assert speeds["markov"]["params"] < 10_000  # the --set reached the model
    assert "| markov |" in captured.err and "cache speed-up" in captured.err
    # the image-only family is skipped on text, and bad options are one line
    assert main(["bench", "--data", "names", "--models", "bigram,pixelcnn", "--seconds",
                 "0.05", "-n", "1"]) == 0  # fmt: skip
    out = capsys.readouterr()
    assert "skipping pixelcnn" in out.err and "| bigram |" in out.out
    for bad in ("0", "inf", "nan"):
        code = main(["bench", "--seconds", bad])
        one_line_error(capsys, code, 1, "--seconds must be a positive number")
    one_line_error(capsys, main(["bench", "-n", "0"]), 1, "-n must be >= 1, got 0")
    one_line_error(capsys, main(["bench", "--models", "nope"]), 1, "unknown model 'nope'")
    code = main(["bench", "--models", "bigram", "--set", "gpt.n_layer=2"])
    one_line_error(capsys, code, 1, "--set for 'gpt', which is not among the models run: bigram")
    # a bad setting of a later family fails before the first is timed
    code = main(["bench", "--models", "bigram,gpt", "--set", "gpt.n_head=3"])
    err = one_line_error(capsys, code, 1, "gpt")
    assert "bigram:" not in err


def test_bench_refuses_a_timing_window_past_a_day(capsys):
    """--seconds 1e20 timed the first family for ever (an unknown model here, so that a
    window let through fails fast)."""
    for bad in ("1e20", "86401"):
        code = main(["bench", "--seconds", bad, "--models", "nope"])
        one_line_error(capsys, code, 1, "--seconds must be a positive number, at most 86,400")


def test_bench_batches_fit_small_data(tmp_path, capsys):
    """Its default batch of 32 shrinks to data of fewer items (a larger --batch-size is
    refused: it would count tokens no step trains on); a corpus's crops fit any batch."""
    items = tmp_path / "few.txt"
    items.write_text("".join(f"{w}\n" for w in ("ab", "ba", "abba", "baab", "aab", "bba",
                                                  "abab", "bab", "aba", "bb")))  # fmt: skip
    argv = ["bench", "--models", "bigram", "--seconds", "0.05", "-n", "1", "--json"]
    assert main([*argv, "--data", str(items)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["batch_size"] == 8  # the 8 training items of 10 (80/10/10)
    code = main([*argv, "--data", str(items), "--batch-size", "9"])
    one_line_error(capsys, code, 1, "--batch-size 9 is more than the 8 training examples of few")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("abracadabra " * 30)  # 20 blocks of training text
    code = main([*argv, "--data", str(corpus), "--format", "corpus", "--block", "16"])
    assert code == 0 and json.loads(capsys.readouterr().out)["batch_size"] == 32


def test_bench_says_when_a_family_has_no_cache_of_its_own(monkeypatch):
    import darm.bench
    from darm.data import load_data
    from darm.train import TrainConfig

    data = load_data("digits")
    plain = darm.bench.build("markov", data, {"n_hidden": 8})
    assert darm.bench.has_own_cache(plain)
    for method in ("init_cache", "step", "prefill"):  # ARModel's: recompute the prefix
        monkeypatch.setattr(type(plain), method, getattr(darm.models.ARModel, method))
    assert not darm.bench.has_own_cache(plain)
    speeds = darm.bench.bench(data, ["markov"], {"markov": {"n_hidden": 8}}, TrainConfig(
        batch_size=2), 1, 0.01, True, torch.device("cpu"), report=lambda line: None)  # fmt: skip
    assert speeds[0].as_dict()["cache_speedup"] is None
    where = darm.bench.setting(data, TrainConfig(batch_size=2), 1, torch.device("cpu"))
    assert "- (no cache of its own)" in darm.bench.speed_table(speeds, where)


WIDE = (  # logits for the start symbol too: L + 1 outputs
    PLUGIN.replace("config.vocab_size)", "config.vocab_size + 1)").replace('"unigram"', '"wide"')
)


PEEK = (  # the shift forgotten: the logits at d see x_d itself
    PLUGIN.replace("shift_right(x, self.config.vocab_size) * 0", "x").replace('"unigram"', '"peek"')
)
LAST = PLUGIN.replace(  # causal but for the last position, which sees itself
    "return self.logits(shift_right(x, self.config.vocab_size) * 0)  # (B, D, L)",
    "out = self.logits(shift_right(x, self.config.vocab_size))  # (B, D, L)\n"
    "        return torch.cat([out[:, :-1], out[:, -1:] + self.logits(x[:, -1:])], dim=1)",
).replace("from torch import nn", "import torch\nfrom torch import nn")
NOISY = PLUGIN.replace(  # causal, but dropout left on in eval mode
    "return self.logits(shift_right(x, self.config.vocab_size) * 0)  # (B, D, L)",
    "return nn.functional.dropout(self.logits(shift_right(x, self.config.vocab_size)), 0.5)",
)


def test_the_quick_look_finds_a_leak_at_the_last_position_and_names_noise_as_noise():
    from darm.check import ProtocolError, check_runs
    from darm.models import registry

    saved = dict(registry._REGISTRY)
    try:
        for source, needle in [
            (LAST, "the logits at position 5 moved by .* the conditional of x_5 sees x_5"),
            (NOISY, "two forward passes of the same input in eval mode differ"),
        ]:
            namespace = {}
            exec(source.replace('"unigram"', '"probe"'), namespace)
            model = registry.create_model("probe", vocab_size=3, seq_len=6).eval()
            with pytest.raises(ProtocolError, match=needle):
                check_runs(model)
    finally:
        registry._REGISTRY.clear()
        registry._REGISTRY.update(saved)


def test_a_family_of_ones_own_that_sees_the_future_is_stopped_before_training(
    tmp_path, capsys, monkeypatch
):
    """Its NLL would mean nothing: train and compare refuse it in one line, before a step."""
    from darm.models import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(sys, "path", sys.path[:])
    (tmp_path / "peek.py").write_text(PEEK)
    out = tmp_path / "r"
    argv = ["--import", str(tmp_path / "peek.py"), "train", "--data", "names", "--model", "peek",
            "--steps", "2", "--out", str(out), "--quiet"]  # fmt: skip
    one_line_error(capsys, main(argv), 1, "peek: the logits at position 0 moved by")
    assert not (out / "last.json").exists()
    argv = ["--import", str(tmp_path / "peek.py"), "compare", "--data", "names", "--models",
            "peek", "--steps", "2", "--out", str(tmp_path / "c")]  # fmt: skip
    code = main(argv)
    assert code != 0 or "failed" in (tmp_path / "c" / "report.md").read_text()
    assert "the logits at position 0 moved by" in capsys.readouterr().err


def test_a_family_of_ones_own_that_breaks_the_protocol_is_stopped_before_training(
    tmp_path, capsys, monkeypatch
):
    from darm.models import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(sys, "path", sys.path[:])
    (tmp_path / "wide.py").write_text(WIDE)  # logits for L + 1 symbols
    out = tmp_path / "r"
    argv = ["--import", str(tmp_path / "wide.py"), "train", "--data", "names", "--model", "wide",
            "--steps", "2", "--out", str(out), "--quiet"]  # fmt: skip
    err = one_line_error(capsys, main(argv), 1, "wide: logits have shape (2, 16, 28), expected")
    assert "darm.check.check_model runs every check" in err
    assert not (out / "last.json").exists()  # stopped before any step
    argv = ["--import", str(tmp_path / "wide.py"), "bench", "--data", "names", "--models", "wide"]
    one_line_error(capsys, main(argv), 1, "logits have shape")


def test_new_options_refuse_what_they_would_ignore(tmp_path, capsys):
    one_line_error(capsys, main(["bench", "--data", "names", "--block", "8"]), 1,
                   "--block does not apply to the built-in names")  # fmt: skip
    one_line_error(capsys, main(["compare", "--data", "names", "--block", "8"]), 1,
                   "--block does not apply to the built-in names")  # fmt: skip
    code = main(["bench", "--batch-size", "5000"])
    one_line_error(capsys, code, 1, "--batch-size 5000 is more than the 1000 training examples")
    (tmp_path / "notpy.txt").write_text("x\n")
    one_line_error(capsys, main(["--import", str(tmp_path / "notpy.txt"), "models"]), 1,
                   "--import takes a .py file or a module name")  # fmt: skip


def test_a_budget_spent_compiling_says_so(names_file, tmp_path, capsys, monkeypatch):
    import time

    import darm.train

    real, calls = darm.train.accumulate_gradients, []

    def slow_first(*args):  # as torch.compile's first step: most of the budget
        calls.append(1)
        time.sleep(1.0 if len(calls) == 1 else 0.0)
        return real(*args)

    monkeypatch.setattr(torch, "compile", lambda net: net)  # the compiling itself: faked
    monkeypatch.setattr(darm.train, "accumulate_gradients", slow_first)
    argv = ["train", "--data", str(names_file), *TINY_MARKOV, "--batch-size", "4", "--quiet",
            "--samples", "0", "--out", str(tmp_path / "c"), "--steps", "100000",
            "--budget", "1.5s", "--compile"]  # fmt: skip
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "--budget stopped the run at step" in said
    assert "its first step, torch.compile's, took 1s of the 1.5s" in said


def test_under_torchrun_each_rank_says_its_error_in_one_write(monkeypatch, tmp_path):
    """Ranks writing at once must not splice lines: each line goes out in one write, and a
    rank other than 0 names itself."""
    writes = []

    class Recorder:
        def write(self, text):
            writes.append(text)

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stderr", Recorder())
    missing = str(tmp_path / "missing")
    for rank, head in (("0", ""), ("1", "[rank 1] ")):
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("WORLD_SIZE", "2")
        writes.clear()
        assert main(["train", "--device", "cuda:x"]) == 1  # (refused before the group forms)
        assert len(writes) == 1 and writes[0].endswith("\n") and writes[0].count("\n") == 1
        assert writes[0].startswith(f"{head}darm train: error: ") and "cuda:x" in writes[0]
        writes.clear()  # a bad option too (argparse's report)
        assert main(["train", "--bogus"]) == 2
        assert len(writes) == 1 and writes[0].startswith(f"{head}darm train: error: unrecog")
        # the other commands run in one process: refused, rank 0 alone saying so (and each
        # rank exits at once: none would write the same file as another)
        writes.clear()
        assert main(["sample", missing, "--out", str(tmp_path / "s")]) == 1
        assert writes == (["darm sample: error: runs in one process (WORLD_SIZE=2 says this "
                           "is one of torchrun's); torchrun is for `darm train`\n"]
                          if rank == "0" else [])  # fmt: skip
        writes.clear()
        assert main(["models"]) == 0 and writes == []  # a listing writes nothing: any rank


def test_version(capsys):
    import darm

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"darm {darm.__version__} (torch {torch.__version__})"


def test_the_default_run_folder_is_named_after_the_data_folder_even_as_dot(tmp_path, monkeypatch):
    from darm.options import data_stem

    (tmp_path / "pics").mkdir()
    monkeypatch.chdir(tmp_path / "pics")
    assert data_stem(".") == "pics" and data_stem("..") == tmp_path.name
    assert data_stem("digits") == "digits" and data_stem("../pics/") == "pics"
    assert data_stem("my.names.txt") == "my.names"  # not there: named as written
    (tmp_path / "pics" / "mine.txt").symlink_to(tmp_path / "pics" / "other.txt")
    assert data_stem("mine.txt") == "mine"  # a link is named as the user named it


def test_a_log_edited_by_hand_is_kept_aside_on_resume(tmp_path, capsys):
    out = tmp_path / "r"
    start = ["train", "--data", "digits", *TINY_MARKOV, "--steps", "2", "--eval-every", "1",
             "--out", str(out), "--quiet", "--samples", "0"]  # fmt: skip
    assert main(start) == 0
    (out / "log.csv").write_text("my notes\n1,2,3\n")
    capsys.readouterr()
    assert main([*start, "--resume", "--steps", "4"]) == 0
    assert "is not a darm log (its header); moved to log.csv.old" in capsys.readouterr().err
    assert (out / "log.csv.old").read_text() == "my notes\n1,2,3\n"
    log = (out / "log.csv").read_text().splitlines()
    assert log[0].startswith("step,lr,") and [r.split(",")[0] for r in log[1:]] == ["3", "4"]


def test_resume_with_init_where_nothing_was_started_says_which_to_drop(tmp_path, capsys):
    run = tmp_path / "r"
    argv = ["train", "--data", "digits", *TINY_MARKOV, "--steps", "1", "--out", str(run),
            "--quiet", "--samples", "0"]  # fmt: skip
    assert main(argv) == 0
    assert " parameters; training 1 step\n" in capsys.readouterr().out  # not "1 steps"
    code = main(["train", "--resume", "--init", str(run), "--out", str(tmp_path / "new")])
    needle = f"nothing to resume in {tmp_path / 'new'} (no last.json); without --resume, --init"
    one_line_error(capsys, code, 1, needle)


def test_a_run_folder_that_cannot_be_written_points_sample_at_out(tmp_path, capsys, monkeypatch):
    run = tmp_path / "r"
    argv = ["train", "--data", "digits", *TINY_MARKOV, "--steps", "1", "--out", str(run),
            "--quiet", "--samples", "0"]  # fmt: skip
    assert main(argv) == 0
    import darm.files

    shared = str(run)  # a run one may read but not write (as root, chmod would not show it)
    real = darm.files.os.access
    monkeypatch.setattr(darm.files.os, "access", lambda p, m: str(p) != shared and real(p, m))
    code = main(["sample", str(run), "-n", "2"])
    one_line_error(capsys, code, 1, f"cannot write {run}: {run} is not writable (--out names")
    assert main(["sample", str(run), "-n", "2", "--out", str(tmp_path / "s")]) == 0


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_pipes_gone_or_read_as_arrays_are_named(tmp_path):
    from darm.data import check_rereadable

    # bash's <(...) is /dev/fd/N in the shell that trained; later it is simply missing
    with pytest.raises(DarmError, match="came from the pipe /dev/fd/987, which cannot be read"):
        check_rereadable({"format": "lines", "path": "/dev/fd/987"})
    check_rereadable({"format": "lines", "path": str(tmp_path / "moved.txt")})  # said later
    os.mkfifo(tmp_path / "fifo")  # refused before it is opened: no writer is needed
    with pytest.raises(DarmError, match="fifo is a pipe: NumPy arrays are read from an .npy"):
        load_data(str(tmp_path / "fifo"), format="array")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_run_trained_from_a_pipe_is_not_read_again(tmp_path, capsys):
    """A pipe is read once: every command that reads a run's data again (eval, --resume,
    --init with other data options) refuses in one line, where opening the pipe again would
    wait forever for a writer; other data named with --data is still scored."""
    text = write_names(tmp_path)
    copy = tmp_path / "copy.txt"
    copy.write_text(text.read_text())
    out = tmp_path / "run"
    args = ["train", "--data", str(text), *TINY_MARKOV, "--steps", "2", "--eval-every", "2",
            "--out", str(out), "--quiet", "--samples", "0"]  # fmt: skip
    assert main(args) == 0
    text.unlink()
    os.mkfifo(text)  # the run's data path is now a pipe
    again = [
        ["eval", str(out)],
        ["train", "--resume", "--out", str(out), "--steps", "4", "--quiet", "--samples", "0"],
        ["train", "--init", str(out), "--format", "lines", "--steps", "1",
         "--out", str(tmp_path / "ft"), "--quiet", "--samples", "0"],
    ]  # fmt: skip
    for argv in again:
        # a writer that lets a reader through with an empty read, so that a regression
        # fails here (other data) instead of waiting forever
        writer = threading.Thread(target=lambda: open(text, "w").close(), daemon=True)
        writer.start()
        capsys.readouterr()
        try:
            one_line_error(capsys, main(argv), needle="came from the pipe")
        finally:  # no reader came: open one, so the writer's open returns and its thread ends
            os.close(os.open(text, os.O_RDONLY | os.O_NONBLOCK))
            writer.join(5)
    assert main(["eval", str(out), "--data", str(copy)]) == 0
