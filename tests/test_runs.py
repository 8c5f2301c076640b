"""`darm runs`: the table of runs, with each run's numbers and the commands that made them."""

import json
import os
import shlex

import pytest

from darm.checkpoint import load_checkpoint, record_sha256
from darm.cli import main
from darm.data import load_data
from darm.models import create_model
from darm.runs import NOT_RECORDED
from darm.train import TrainConfig, train
from tests.conftest import TINY_MARKOV, one_line_error, write_names


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """runs/a: trained 4 steps, then resumed to 6; runs/deep/b: stopped at step 2 of 4."""
    root = tmp_path_factory.mktemp("runs")
    names = write_names(root)
    start = ["train", "--data", str(names), *TINY_MARKOV, "--steps", "4", "--eval-every", "2",
             "--out", str(root / "a"), "--quiet", "--samples", "0"]  # fmt: skip
    assert main(start) == 0
    assert main(["train", "--out", str(root / "a"), "--resume", "--steps", "6", "--quiet"]) == 0
    data = load_data(str(names))
    model = create_model("markov", data, n_hidden=8, n_embd=4)
    cfg = TrainConfig(steps=4, batch_size=4, eval_every=2)
    train(model, "markov", data, cfg, root / "deep" / "b", progress=False, stop_at=2)
    return root, start


def test_table_shows_each_run_and_its_commands(runs, capsys):
    root, start = runs
    assert main(["runs", str(root)]) == 0
    out = capsys.readouterr().out
    table, made = out.split("\nmade by:\n")
    header, a, b = table.splitlines()
    assert header.split()[:3] == ["run", "model", "params"]
    model, record, _ = load_checkpoint(root / "a")
    results = json.loads((root / "a" / "results.json").read_text())
    cells = a.split()
    assert cells[0] == str(root / "a") and cells[1] == "markov"
    assert cells[2] == f"{model.num_params():,}" and cells[4] == str(model.vocab_size)  # L
    assert cells[5] == "6"
    assert f"{results['nats_per_example']:.4f} /item" in a  # the current checkpoint's test
    assert f"{results['bits_per_dim']:.4f} /char" in a
    assert b.split()[0] == str(root / "deep" / "b") and "2 of 4" in b
    assert b.count("–") == 2  # not tested: no test NLL
    here = f"cd {shlex.quote(os.getcwd())} && "  # the folder the commands ran in
    lines = [line.strip() for line in made.strip().splitlines()]
    assert lines[0] == f"{root / 'a'}       {here}darm {shlex.join(start)}"  # the start,
    assert lines[1] == f"{here}darm train --out {root / 'a'} --resume --steps 6 --quiet"
    assert lines[2] == f"{root / 'deep' / 'b'}  {NOT_RECORDED}"  # trained from Python
    assert made.splitlines()[0].index("cd") == made.splitlines()[1].index("cd")  # aligned


def test_markdown_and_json(runs, capsys):
    root, start = runs
    assert main(["runs", str(root / "a"), "--markdown"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("| ") for line in lines)
    here = f"cd {shlex.quote(os.getcwd())} && "
    assert f"`{here}darm {shlex.join(start)}` ; `{here}darm train --out" in lines[2]
    assert main(["runs", str(root), "--json"]) == 0
    a, b = json.loads(capsys.readouterr().out)
    assert a["step"] == 6 and a["steps"] == 6 and len(a["commands"]) == 2 and a["test"]
    assert b["step"] == 2 and b["steps"] == 4 and b["test"] is None and b["commands"] == [None]
    assert b["params"] == load_checkpoint(root / "deep" / "b")[0].num_params()


def test_a_broken_run_is_named_and_the_rest_listed(runs, tmp_path, capsys):
    root, _ = runs
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "last.json").write_text("{not json")
    (tmp_path / "a").symlink_to(root / "a")  # links are followed,
    (tmp_path / "loop").symlink_to(tmp_path)  # a loop only once
    assert main(["runs", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert f"warning: skipping {tmp_path / 'broken'}: " in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    rows = captured.out.split("\n\n")[0].splitlines()[1:]
    assert [row.split()[0] for row in rows] == [str(tmp_path / "a")]
    assert main(["runs", str(root / "a" / "best.json")]) == 0  # a checkpoint: its run
    assert capsys.readouterr().out.splitlines()[1].startswith(str(root / "a"))
    code = main(["runs", str(root / "names.txt")])
    one_line_error(capsys, code, needle="names.txt is a file; name a run folder")
    assert main(["runs", str(tmp_path / "empty")]) == 1
    one_line_error(capsys, 1, needle="empty does not exist")
    (tmp_path / "empty").mkdir()
    assert main(["runs", str(tmp_path / "empty")]) == 0
    assert capsys.readouterr().out.startswith("no runs (folders with a last.json) under")


def test_a_run_with_damaged_weights_is_listed_with_a_warning(runs, tmp_path, capsys):
    import shutil

    root, _ = runs
    shutil.copytree(root / "a", tmp_path / "a")
    assert main(["runs", str(tmp_path)]) == 0
    assert capsys.readouterr().err == ""  # intact: nothing to say
    weights = tmp_path / "a" / "last.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # cut short, by hand or a full disk
    assert main(["runs", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[1].startswith(str(tmp_path / "a"))  # still listed
    assert captured.err.strip() == (
        f"warning: {tmp_path / 'a' / 'last.json'}: last.safetensors is cut short (100 bytes, "
        "inside its header): --resume refuses it"
    )
    whole = (tmp_path / "a" / "best.safetensors").read_bytes()
    weights.write_bytes(whole[:-4])  # the header whole, the last weight not
    assert main(["runs", str(tmp_path)]) == 0
    end = f"is cut short ({len(whole) - 4:,} of {len(whole):,} bytes): --resume refuses it"
    assert capsys.readouterr().err.strip().endswith(end)
    weights.unlink()
    assert main(["runs", str(tmp_path)]) == 0
    assert "last.safetensors is missing: --resume refuses it" in capsys.readouterr().err


def test_a_run_without_its_best_weights_or_its_last_json_is_named(runs, tmp_path, capsys):
    """best.safetensors gone: listed, with a warning (sample and eval load best); no
    last.json: not listed, with a note; a folder of one's own files: nothing said."""
    import shutil

    root, _ = runs
    for name in ("a", "b"):
        shutil.copytree(root / "a", tmp_path / name)
    (tmp_path / "a" / "best.safetensors").unlink()
    (tmp_path / "b" / "last.json").unlink()
    (tmp_path / "mine").mkdir()  # a log.csv and results of one's own: not a run
    (tmp_path / "mine" / "log.csv").write_text("x,y\n1,2\n")
    (tmp_path / "mine" / "results.json").write_text("{}")
    assert main(["runs", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    rows = captured.out.split("\n\n")[0].splitlines()[1:]
    assert [row.split()[0] for row in rows] == [str(tmp_path / "a")]  # the others still listed
    assert captured.err.splitlines() == [
        f"note: not listing {tmp_path / 'b'}: it holds best.json, best.safetensors, "
        "last.safetensors, best.optim.safetensors, last.optim.safetensors, log.csv but no "
        "last.json (a run before its first whole checkpoint, or last.json removed)",
        f"warning: {tmp_path / 'a' / 'best.json'}: best.safetensors is missing: sample, eval "
        "and --resume of the run refuse it (move best.* aside to use last.*)",
    ]


def test_a_run_from_an_older_darm_keeps_what_it_did_not_record(runs, tmp_path, capsys):
    """Resumed, a checkpoint without init or commands (written before darm recorded them)
    does not gain a false record: its start is shown as not recorded, and --init is not
    refused as 'new weights'."""
    import shutil

    root, _ = runs
    shutil.copytree(root / "a", tmp_path / "old")
    for tag in ("best", "last"):
        path = tmp_path / "old" / f"{tag}.json"
        record = json.loads(path.read_text())
        del record["commands"], record["init"]
        record["sha256"]["record"] = record_sha256(record)  # edited on purpose, resealed
        path.write_text(json.dumps(record))
    resume = ["train", "--out", str(tmp_path / "old"), "--resume", "--quiet"]
    assert main([*resume, "--steps", "7"]) == 0
    record = json.loads((tmp_path / "old" / "last.json").read_text())
    assert "init" not in record and record["commands"][0] is None and len(record["commands"]) == 2
    assert main([*resume, "--steps", "8", "--init", str(root / "deep" / "b")]) == 0
    capsys.readouterr()
    assert main(["runs", str(tmp_path / "old")]) == 0
    assert f"{tmp_path / 'old'}  {NOT_RECORDED}" in capsys.readouterr().out


def test_a_comparisons_families_show_its_command(tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["compare", "--models", "bigram", "--steps", "1", "--samples", "1",
            "--deps-examples", "1", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(args) == 0
    command = json.loads((out / "results.json").read_text())["command"]
    capsys.readouterr()
    assert main(["runs", str(out), "--json"]) == 0
    (family,) = json.loads(capsys.readouterr().out)
    assert family["run"] == str(out / "bigram")
    assert family["commands"] == [f"cd {shlex.quote(os.getcwd())} && {command}"]


def test_size_of_a_checkpoint_that_does_not_record_it(runs, tmp_path, capsys):
    import shutil

    root, _ = runs
    shutil.copytree(root / "deep" / "b", tmp_path / "old")
    record = json.loads((tmp_path / "old" / "last.json").read_text())
    del record["params"]  # as darm wrote it before it recorded the size
    record["sha256"]["record"] = record_sha256(record)  # edited on purpose, resealed
    (tmp_path / "old" / "last.json").write_text(json.dumps(record))
    assert main(["runs", str(tmp_path), "--json"]) == 0
    (old,) = json.loads(capsys.readouterr().out)
    assert old["params"] == load_checkpoint(root / "deep" / "b")[0].num_params()


def test_sorted_by_test_nll_within_each_dataset(tmp_path, capsys):
    """Lowest test NLL first among the runs of one dataset, untested runs after them."""
    import shutil

    for name, steps in [("short", "1"), ("long", "30")]:
        argv = ["train", "--data", "names", *TINY_MARKOV, "--steps", steps, "--samples", "0",
                "--quiet", "--out", str(tmp_path / name)]  # fmt: skip
        assert main(argv) == 0
    shutil.copytree(tmp_path / "long", tmp_path / "untested")
    (tmp_path / "untested" / "results.json").unlink()
    capsys.readouterr()
    assert main(["runs", str(tmp_path), "--sort", "test", "--json"]) == 0
    order = [r["run"] for r in json.loads(capsys.readouterr().out)]
    assert order == [str(tmp_path / n) for n in ("long", "short", "untested")]
    long, short = (json.loads((tmp_path / n / "results.json").read_text()) for n in order[:2])
    assert long["nats_per_example"] < short["nats_per_example"]  # (what the order rests on)


def test_runs_of_another_kind_of_model_are_ranked_apart(tmp_path, capsys):
    """p(x | label) scores lower than p(x) on the same data, but does not compare with it:
    each is ranked among its own kind, and the table marks it."""
    for name, extra in [("cond", ["--conditional"]), ("plain", [])]:
        argv = ["train", "--data", "digits", *TINY_MARKOV, "--steps", "30", "--samples", "0",
                "--quiet", "--out", str(tmp_path / name), *extra]  # fmt: skip
        assert main(argv) == 0
    capsys.readouterr()
    assert main(["runs", str(tmp_path), "--sort", "test", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["run"], r["conditional"], r["levels"]) for r in rows] == [
        (str(tmp_path / "plain"), False, 17), (str(tmp_path / "cond"), True, 17)
    ]  # fmt: skip
    assert main(["runs", str(tmp_path)]) == 0
    assert "markov | label" in capsys.readouterr().out


def test_an_edited_record_is_skipped_in_one_warning_and_odd_results_left_out(
    runs, tmp_path, capsys
):
    import shutil

    root, _ = runs
    for name, field, value in [("named", "data", {"name": 5}), ("said", "commands", "notalist")]:
        shutil.copytree(root / "a", tmp_path / name)
        path = tmp_path / name / "last.json"
        record = json.loads(path.read_text())
        record[field] = value
        record["sha256"]["record"] = record_sha256(record)  # edited on purpose, resealed
        path.write_text(json.dumps(record))
    shutil.copytree(root / "a", tmp_path / "odd")
    (tmp_path / "odd" / "results.json").write_text("[]")  # not darm's results: no test NLL
    for style in ([], ["--sort", "test"], ["--markdown"]):
        assert main(["runs", str(tmp_path), *style]) == 0
        out, err = capsys.readouterr()
        skipped = [
            line.removeprefix("warning: skipping ").split(": ")[0] for line in err.splitlines()
        ]
        assert sorted(skipped) == [str(tmp_path / "named"), str(tmp_path / "said")]
        assert str(tmp_path / "odd") in out


def test_a_validation_of_part_of_the_split_is_marked(tmp_path, capsys):
    """--valid-examples N: its best validation NLL is of N examples, marked as such, so it is
    not read against a whole split's."""
    names = write_names(tmp_path)
    base = ["train", "--data", str(names), *TINY_MARKOV, "--steps", "2", "--eval-every", "2",
            "--quiet", "--samples", "0"]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "whole")]) == 0
    assert main([*base, "--valid-examples", "2", "--out", str(tmp_path / "part")]) == 0
    # more than the split holds: all of it scored, as a whole split's
    assert main([*base, "--valid-examples", "1000", "--out", str(tmp_path / "whole2")]) == 0
    capsys.readouterr()
    for style in ([], ["--markdown"]):
        assert main(["runs", str(tmp_path), *style]) == 0
        out = capsys.readouterr().out
        rows = [line for line in out.splitlines() if "/item" in line]  # the table's rows
        part = next(line for line in rows if "part" in line)
        whole = [line for line in rows if "whole" in line]
        assert "*" in part and len(whole) == 2 and "*" not in "".join(whole)
        assert "* validation over its first --valid-examples only" in out
