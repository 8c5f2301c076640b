"""`darm compare` end to end on tiny budgets: every section, exact numbers, Ctrl-C."""

import json
import re
import wave

import pytest
import torch

from darm.checkpoint import load_checkpoint
from darm.cli import main
from darm.data import load_data
from darm.metrics import evaluate
from tests.conftest import make_wav, one_line_error, write_pngs

TINY = ["--set", "markov.n_hidden=16", "--set", "markov.n_embd=4",
        "--set", "wavenet.n_embd=8", "--set", "wavenet.n_skip=8",
        "--set", "gpt.n_layer=1", "--set", "gpt.n_embd=16", "--set", "gpt.n_head=2",
        "--set", "rnn.n_hidden=16", "--set", "rnn.n_embd=8"]  # fmt: skip
ALIGN = [""] + ['style="text-align:right"'] * 9  # of the results table's columns in HTML
SECTIONS = ["## Results", "## Loss curves", "## Samples", "## Dependency maps",
            "## Configurations"]  # fmt: skip


def tiny_sets(models):
    """The TINY overrides of the families in `models` only."""
    keep = []
    for flag, value in zip(TINY[::2], TINY[1::2]):
        if value.split(".")[0] in models:
            keep += [flag, value]
    return keep


def table_rows(report: str) -> dict[str, list[str]]:
    """The results table of report.md: model -> its cells."""
    section = report.split("## Results")[1].split("\n\n")[1]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()]
    return {r[0]: r for r in rows[2:]}


def interrupt_family(monkeypatch, model: str, message: str = "") -> None:
    """Ctrl-C as `model`'s turn begins (the families before it run as usual)."""
    import darm.compare

    real = darm.compare.run_family

    def interrupted(name, *args):
        if name == model:
            raise KeyboardInterrupt(message)
        return real(name, *args)

    monkeypatch.setattr(darm.compare, "run_family", interrupted)


@pytest.fixture(scope="module")
def digits_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp") / "digits"
    models = "markov,wavenet,gpt"
    args = ["compare", "--data", "digits", "--models", models, "--steps", "4",
            "--samples", "4", "--deps-examples", "4", "--out", str(out), "--quiet",
            *tiny_sets(models)]  # fmt: skip
    assert main(args) == 0
    return out


def test_each_familys_lines_are_headed_by_its_name(tmp_path, capsys):
    args = ["compare", "--data", "digits", "--models", "markov", "--steps", "2",
            "--samples", "2", "--deps-examples", "2", "--out", str(tmp_path / "c"),
            *tiny_sets("markov")]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    head = out.index("markov: ")
    assert re.match(r"markov: [\d,]+ parameters; training 2 steps\n", out[head:])
    assert head < out.index("step 2: train")  # before its step lines


def test_report_has_every_section(digits_report, capsys):
    out = digits_report
    report = (out / "report.md").read_text()
    assert report.startswith("# darm compare: digits")
    assert "darm compare --data digits --models markov,wavenet,gpt --steps 4" in report
    for section in SECTIONS:
        assert section in report, section
    assert "The families are unconditional, p(x): the data's 10 classes are not used" in report
    # the folder is no run: the runs in it are named (sample, eval, ... take one of them)
    runs = ", ".join(str(out / m) for m in ("gpt", "markov", "wavenet"))
    one_line_error(capsys, main(["eval", str(out)]), 1, f"in {out}; its runs: {runs}")
    for name in ("loss.png", "deps.png", "results.json", "report.html"):
        assert (out / name).stat().st_size > 0, name
    for model in ("markov", "wavenet", "gpt"):
        for name in ("samples.png", "deps.png", "best.json", "log.csv"):
            assert (out / model / name).exists(), (model, name)
    # every picture the report links to exists, in Markdown and in HTML
    page = (out / "report.html").read_text()
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", report) + re.findall(r'src="([^"]+)"', page)
    assert len(links) >= 2 * 5 and all((out / link).exists() for link in links)
    for cells in table_rows(report).values():  # the HTML table holds the same numbers
        assert "".join(f"<td {a}>{c}</td>" for a, c in zip(ALIGN, cells)) in page


def test_table_numbers_are_the_evaluation(digits_report):
    """Reload each best checkpoint, evaluate it again: the table shows exactly that."""
    out = digits_report
    rows = table_rows((out / "report.md").read_text())
    results = {r["model"]: r for r in json.loads((out / "results.json").read_text())["families"]}
    test = load_data("digits")["test"]
    for model in ("markov", "wavenet", "gpt"):
        best, record, _ = load_checkpoint(out / model)
        nll = evaluate(best, test)
        r = results[model]
        assert r["status"] == "done" and r["checkpoint_step"] == record["step"]
        assert r["nats_per_example"] == pytest.approx(nll.nats_per_example, rel=1e-9)
        assert r["bits_per_dim"] == pytest.approx(nll.bits_per_dim, rel=1e-9)
        cells = rows[model]
        assert cells[1] == f"{best.num_params():,}" and cells[2] == "4"
        assert cells[3] == f"{nll.nats_per_example:.4f}" and cells[4] == f"{nll.nats_per_dim:.4f}"
        assert cells[5] == f"{nll.bits_per_dim:.4f}"
        assert float(cells[7].replace(",", "")) > 0  # samples/s


def test_the_table_scores_the_best_checkpoint_not_the_last(tmp_path, monkeypatch):
    """Validation that only gets worse after the first pass: the best checkpoint is the
    first one, and the table, results.json and the test NLL are that checkpoint's."""
    import darm.train
    from darm.metrics import NLL

    passes = []

    def worse_each_time(model, split, batch_size, progress=False):
        passes.append(1)
        return NLL(float(len(passes)) * 1000, 1, 1000)  # nats/dim 1, 2, 3, ...

    monkeypatch.setattr(darm.train, "evaluate_split", worse_each_time)
    out = tmp_path / "c"
    args = [
        "compare",
        "--data",
        "digits",
        "--models",
        "markov",
        "--steps",
        "10",
        "--samples",
        "2",
        "--deps-examples",
        "2",
        "--out",
        str(out),
        "--quiet",
        *TINY[:4],
    ]
    assert main(args) == 0
    best, record, _ = load_checkpoint(out / "markov" / "best.json")
    last = json.loads((out / "markov" / "last.json").read_text())
    assert len(passes) > 1 and record["step"] < last["step"] == 10
    result = json.loads((out / "results.json").read_text())["families"][0]
    assert result["checkpoint_step"] == record["step"]
    want = evaluate(best, load_data("digits")["test"]).nats_per_example
    assert result["nats_per_example"] == pytest.approx(want, rel=1e-9)


def test_names_text_samples_and_image_only_skip(tmp_path, capsys):
    out = tmp_path / "names"
    models = "markov,rnn,pixelcnn"
    args = ["compare", "--data", "names", "--models", models, "--steps", "3",
            "--samples", "5", "--deps-examples", "4", "--out", str(out), "--quiet",
            *tiny_sets(models)]  # fmt: skip
    code = main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = (out / "report.md").read_text()
    assert "nats/item" in report and "bits/char" in report
    assert "`pixelcnn`: skipped: pixelcnn is an image model, compared on images only" in report
    at = [report.index(f"| {name} |") for name in models.split(",")]
    assert at == sorted(at)  # the table's rows in --models order, skipped or not
    assert "skipping pixelcnn" in captured.out + captured.err
    samples = report.split("## Samples")[1].split("## Dependency")[0]
    assert "| markov | rnn |" in samples  # text side by side, one column per family
    assert len(table_rows(report)) == 3


def test_ctrl_c_keeps_finished_families(tmp_path, monkeypatch, capsys):
    # as train() stops on Ctrl-C
    interrupt_family(monkeypatch, "gpt", "stopped after step 1, saved in X; --resume continues")
    out = tmp_path / "cut"
    models = "markov,gpt,wavenet"
    args = ["compare", "--data", "digits", "--models", models, "--steps", "2",
            "--samples", "2", "--deps-examples", "2", "--out", str(out), "--quiet",
            *tiny_sets(models)]  # fmt: skip
    assert main(args) == 130
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == f"darm compare: interrupted: the report in {out} keeps the finished " \
        "families; --resume continues"  # fmt: skip
    report = (out / "report.md").read_text()
    rows = table_rows(report)
    assert rows["markov"][2] == "2" and re.match(r"\d+\.\d{4}", rows["markov"][3])
    assert rows["gpt"][2] == "interrupted" and rows["wavenet"][2] == "not run"
    assert "## Dependency maps" in report and (out / "deps.png").exists()
    families = json.loads((out / "results.json").read_text())["families"]
    assert [f["status"] for f in families] == ["done", "interrupted", "not run"]


@pytest.mark.parametrize("during", ["training", "testing", "training, by SIGTERM"])
def test_ctrl_c_in_a_family_keeps_the_steps_it_trained(during, tmp_path, monkeypatch):
    import signal

    import darm.compare
    from tests.test_train import sigint_during_step

    term = during.endswith("SIGTERM")
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    if during.startswith("training"):  # train() finishes step 2, saves it and stops
        sigint_during_step(monkeypatch, step=2, signum=signal.SIGTERM if term else signal.SIGINT)
    else:  # the test pass after the 4 steps

        def interrupt(*args):
            raise KeyboardInterrupt

        monkeypatch.setattr(darm.compare, "finish_family", interrupt)
    out = tmp_path / "cut"
    args = ["compare", "--data", "digits", "--models", "markov", "--steps", "4",
            "--out", str(out), "--quiet", *tiny_sets("markov")]  # fmt: skip
    assert main(args) == (143 if term else 130)
    (family,) = json.loads((out / "results.json").read_text())["families"]
    steps = 3 if during.startswith("training") else 4
    assert family["note"].startswith("SIGTERM" if term else "Ctrl-C")
    assert family["status"] == "interrupted" and family["steps"] == steps
    assert family["train"]["steps"] == 4 and "checkpoints so far are kept" in family["note"]
    assert table_rows((out / "report.md").read_text())["markov"][2] == f"{steps} (interrupted)"
    # --resume: the rest of the steps (none, after the test pass was cut), then the test pass
    monkeypatch.undo()
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    log = (out / "markov" / "log.csv").read_text()
    assert main(["compare", "--out", str(out), "--resume", "--quiet"]) == 0
    (family,) = json.loads((out / "results.json").read_text())["families"]
    assert family["status"] == "done" and family["steps"] == 4 and family["nats_per_example"]
    if steps == 4:
        assert (out / "markov" / "log.csv").read_text() == log  # no step trained again


def test_a_failure_after_training_keeps_the_numbers(tmp_path, monkeypatch, capsys):
    def broken(*args, **kw):
        raise RuntimeError()  # an empty message must not break the failure row either

    monkeypatch.setattr("darm.compare.checkpoint_maps", broken)
    out = tmp_path / "broken"
    args = ["compare", "--data", "digits", "--models", "markov", "--steps", "2",
            "--samples", "2", "--out", str(out), "--quiet", *tiny_sets("markov")]  # fmt: skip
    assert main(args) == 1  # the command reports the failed family
    (family,) = json.loads((out / "results.json").read_text())["families"]
    assert family["status"] == "failed" and family["note"] == "RuntimeError"
    assert family["nats_per_example"] > 0 and family["steps"] == 2
    assert "markov failed: RuntimeError" in capsys.readouterr().out
    monkeypatch.undo()  # the machine put right: only --retry-failed runs the family again
    code = main(["compare", "--out", str(out), "--resume", "--quiet"])  # failed: not a success
    one_line_error(capsys, code, 1, "has finished, and markov failed: --retry-failed runs them")
    assert main(["compare", "--out", str(out), "--resume", "--retry-failed", "--quiet"]) == 0
    assert "markov: resuming from step 2 of 2" in capsys.readouterr().out  # no steps again
    (family,) = json.loads((out / "results.json").read_text())["families"]
    assert family["status"] == "done" and family["steps"] == 2
    assert (out / "markov" / "deps.png").exists()


def test_retry_failed_goes_with_resume(tmp_path, capsys):
    assert main(["compare", "--retry-failed", "--out", str(tmp_path / "c")]) == 1
    assert "--retry-failed goes with --resume" in capsys.readouterr().err


def test_a_family_whose_training_fails_keeps_its_size_and_saved_step(tmp_path, monkeypatch, capsys):
    from darm.errors import DarmError
    from darm.train import train as real

    def diverging(model, name, *args, **kw):  # markov saves step 2, then its loss is NaN
        if name != "markov":
            return real(model, name, *args, **kw)
        real(model, name, *args, stop_at=2, **kw)
        raise DarmError("loss is nan at step 2; stopped")

    monkeypatch.setattr("darm.compare.train", diverging)
    out = tmp_path / "nan"
    args = ["compare", "--data", "digits", "--models", "markov,bigram", "--steps", "4",
            "--out", str(out), "--quiet", "--samples", "2", *tiny_sets("markov")]  # fmt: skip
    assert main(args) == 1
    markov, bigram = json.loads((out / "results.json").read_text())["families"]
    assert markov["status"] == "failed" and markov["note"] == "loss is nan at step 2; stopped"
    assert markov["params"] > 0 and markov["steps"] == 2 and bigram["status"] == "done"
    assert "markov failed: loss is nan" in capsys.readouterr().out


def test_table_rows_keep_what_a_family_got_and_notes_say_what_stopped_it():
    from darm.compare import FamilyResult
    from darm.compare_report import family_notes, results_table

    failed = FamilyResult("rnn", "failed", note="RuntimeError: boom", params=10, steps=2,
                          nats_per_example=81.25)  # fmt: skip
    cut = FamilyResult("gpt", "done", params=20, steps=6, nats_per_example=90.0,
                       train={"steps": 20})  # fmt: skip
    _, (row_failed, row_cut) = results_table([failed, cut], "image")
    assert row_failed[:4] == ["rnn", "10", "2 (failed)", "81.2500"]
    assert row_cut[:4] == ["gpt", "20", "6", "90.0000"]
    assert family_notes([failed, cut]) == [
        "`rnn`: failed: RuntimeError: boom.",
        "`gpt`: cut by the budget at step 6 of the 20 planned, before its learning rate "
        "schedule ended.",
    ]
    whole = FamilyResult("markov", "done", steps=20, train={"steps": 20})
    assert family_notes([whole]) == []


def test_budget_plans_steps_and_audio(tmp_path):
    """A time budget (steps planned from a timing) on audio: waveforms and WAV samples."""
    make_wav(tmp_path / "tone.wav", seconds=0.5, rate=2000)
    out = tmp_path / "audio"
    args = ["compare", "--data", str(tmp_path / "tone.wav"), "--block", "16", "--models",
            "markov", "--budget", "2s", "--samples", "3", "--deps-examples", "2",
            "--out", str(out), "--quiet", *tiny_sets("markov")]  # fmt: skip
    assert main(args) == 0
    report = (out / "report.md").read_text()
    assert "bits/sample" in report and "2 s of training per family" in report
    assert " --budget 2s " in report  # the reproduce command's plain word
    assert "windows/s (cached)" in report  # generated windows, not audio samples
    assert (out / "markov" / "waveforms.png").exists()
    with wave.open(str(out / "markov" / "samples.wav"), "rb") as w:  # 3 clips of a second
        assert w.getnframes() == 3 * (2000 + 200)  # each then 0.1 s of silence
    assert "[markov samples.wav](markov/samples.wav)" in report
    family = json.loads((out / "results.json").read_text())["families"][0]
    assert family["train"]["steps"] >= 20 and 1 <= family["steps"] <= family["train"]["steps"]


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--models", "markov,nope"], "unknown model 'nope'"),
        (["--models", "markov", "--set", "gpt.n_layer=1"], "not among the models run: markov"),
        (["--set", "gtp.n_layer=1"], "--set gtp.n_layer: unknown model 'gtp'; valid: "),
        (["--models", "markov", "--set", "n_layer=1"], "MODEL.KEY=VALUE"),
        (["--models", "markov", "--set", "markov.k=two"], "k must be an integer"),
        (["--models", ","], "--models names no model"),
        (["--models", "markov,"], "--models has an empty name in 'markov,'"),
        (["--models", "markov,,gru"], "--models has an empty name"),
        (["--models", "bigram,bigram"], "names bigram more than once"),
        (["--data", "names", "--models", "pixelcnn"], "no model in --models can run on names"),
        (["--models", "bigram", "--set", "bigram.seq_len=3"], "seq_len is not settable"),
        (["--models", "bigram", "--valid-examples", "0"], "--valid-examples must be >= 1"),
    ],
)
def test_bad_compare_input(tmp_path, capsys, extra, needle):
    code = main(["compare", "--steps", "1", "--out", str(tmp_path / "x"), "--quiet", *extra])
    out, err = capsys.readouterr()
    err = err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and needle in err, err
    if "markov,nope" in extra:  # refused before the data is read (its summary line)
        assert out == "", out


@pytest.mark.parametrize("command", ["compare", "train"])
@pytest.mark.parametrize("budget", ["0", "-5m", "nan", "inf"])
def test_a_budget_is_a_positive_finite_time(command, budget, capsys):
    for argv in ([f"--budget={budget}"], ["--budget", budget]):  # "-5m" is a value, not an option
        assert main([command, *argv]) == 2  # an argparse usage error, one line
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "argument --budget: duration must be" in err and budget in err, err


def test_out_that_is_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    code = main(["compare", "--models", "bigram", "--steps", "1", "--out", str(tmp_path / "f")])
    out, err = capsys.readouterr()
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "f is a file; a comparison writes a folder" in err
    assert out == ""  # refused before the data is loaded (its summary printed)


def test_reproduce_command_parses_back_to_the_same_options(tmp_path):
    """The report's command, split as a shell would, gives the options that made it."""
    import shlex

    import numpy as np

    from darm.cli import build_parser

    np.save(tmp_path / "a.npy", np.random.default_rng(0).integers(0, 4, size=(30, 6)))
    out = tmp_path / "my report"
    args = ["compare", "--data", str(tmp_path / "a.npy"), "--levels", "10", "--data-seed", "7",
            "--models", "bigram", "--steps", "2", "--samples", "2", "--deps-examples", "3",
            "--valid-examples", "4", "--out", str(out), "--quiet",
            "--budget", "1234567.5s"]  # fmt: skip
    assert main(args) == 0
    report = (out / "report.md").read_text()
    command = next(line for line in report.splitlines() if line.startswith("darm compare"))
    again = build_parser().parse_args(shlex.split(command)[1:])
    first = build_parser().parse_args(args)
    for name in ("data", "levels", "data_seed", "models", "steps", "samples", "deps_examples",
                 "out", "seed", "block", "format", "batch_size", "budget",
                 "valid_examples"):  # fmt: skip
        assert getattr(again, name) == getattr(first, name), name
    assert "--budget 1234567.5s" in command  # every digit, as a plain word for the shell
    family = json.loads((out / "results.json").read_text())["families"][0]
    assert family["train"]["valid_examples"] == 4  # the family trained with it
    assert family["threads"] == [torch.get_num_threads()]


def test_families_run_on_other_thread_counts_are_noted():
    from darm.compare import FamilyResult
    from darm.compare_report import family_notes

    rows = [FamilyResult("markov", "done", threads=[1]), FamilyResult("gru", "done", threads=[2])]
    assert family_notes(rows) == [
        "CPU threads differ between families (markov 1; gru 2): their speeds do not compare."
    ]
    rows[0].threads = [2]
    assert family_notes(rows) == []  # all alike: nothing to say
    rows[1].threads = [1, 2]  # resumed on another count
    assert "gru 1, then 2" in family_notes(rows)[0]


def test_configs_read_back_from_json_are_shown_as_built():
    from darm.compare_report import config_text

    built = {"vocab_size": 17, "dilation_cycle": (1, 2, 4), "dropout": 0.1}
    again = json.loads(json.dumps(built))  # a family finished before --resume
    assert config_text(again) == config_text(built) == "dilation_cycle=(1, 2, 4), dropout=0.1"
    # a field only saved configs set (wavenet's last_res) says nothing of a new run
    saved = {**built, "last_res": False}
    assert config_text(saved, "wavenet") == "dilation_cycle=(1, 2, 4), dropout=0.1"


def test_refuses_to_overwrite(digits_report, capsys):
    """Another comparison's folder is refused, whether or not it ran the same families, and
    its report is left as it was."""
    report = (digits_report / "report.md").read_text()
    for models in ("markov", "bigram"):  # one it ran, one it did not
        code = main(["compare", "--models", models, "--steps", "1", "--out", str(digits_report)])
        out, err = capsys.readouterr()
        assert code == 1 and out == ""  # refused before the data is read
        assert err.startswith("darm compare: error: ") and "already holds a comparison" in err
    assert (digits_report / "report.md").read_text() == report
    assert not (digits_report / "bigram").exists()
    # a training run's folder (its results.json is no comparison's) is named as what it is
    run = digits_report / "markov"
    code = main(["compare", "--models", "markov", "--steps", "1", "--out", str(run)])
    one_line_error(capsys, code, 1, f"{run} is the folder of a training run (its last.json)")


@pytest.mark.parametrize("name", ["report.md", "loss.png"])
def test_a_folder_with_files_the_report_would_overwrite_is_refused(tmp_path, capsys, name):
    (tmp_path / name).write_text("my notes")  # no comparison's: the user's own
    code = main(["compare", "--models", "bigram", "--steps", "1", "--out", str(tmp_path)])
    one_line_error(capsys, code, 1, f"already holds {name}, which the comparison's report")
    assert (tmp_path / name).read_text() == "my notes" and not (tmp_path / "bigram").exists()


def test_markov_default_memory_is_one_image_row():
    from types import SimpleNamespace

    from darm.compare import markov_memory

    assert markov_memory(SimpleNamespace(image_shape=(8, 8))) == 8
    assert markov_memory(SimpleNamespace(image_shape=(4, 5, 3))) == 15  # W pixels x C channels


def test_the_report_gives_the_batch_each_step_took(tmp_path, capsys):
    """On data of fewer training items than the batch, each step takes them all, and the
    report says that number, not the configured one (a --batch-size given is noted)."""
    few = tmp_path / "few.txt"
    few.write_text("".join(f"{a}{b}\n" for a in "abcd" for b in "abcde"))  # 20 items
    out = tmp_path / "few"
    args = ["compare", "--data", str(few), "--models", "bigram", "--steps", "2", "--samples",
            "1", "--deps-examples", "1", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(args) == 0
    (family,) = json.loads((out / "results.json").read_text())["families"]
    assert family["train"]["batch_size"] == 16  # the 16 training items of 20 (80/10/10)
    assert "batch=16," in (out / "report.md").read_text()
    assert "note" not in capsys.readouterr().err
    args[args.index(str(out))] = str(tmp_path / "given")
    assert main([*args, "--batch-size", "40"]) == 0
    assert (
        "note: --batch-size 40 is more than the 16 training examples: each step takes all 16"
        in (capsys.readouterr().err)
    )


def test_a_one_step_comparison_runs(tmp_path):
    out = tmp_path / "one"
    args = ["compare", "--models", "markov", "--steps", "1", "--samples", "1", "--deps-examples",
            "1", "--out", str(out), "--quiet", *tiny_sets("markov")]  # fmt: skip
    assert main(args) == 0  # its warmup (none) is shorter than the run
    (family,) = json.loads((out / "results.json").read_text())["families"]
    assert family["status"] == "done" and family["steps"] == 1


def test_resume_continues_a_family_as_if_never_stopped(digits_report, tmp_path, monkeypatch):
    """Stopped in markov's step 2 of 4 and continued with --resume, alone: markov ends on the
    weights of the uninterrupted comparison (the same test NLL), and the families after it run."""
    import signal

    from tests.test_train import sigint_during_step

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    sigint_during_step(monkeypatch, step=2)
    out = tmp_path / "cut"
    models = "markov,wavenet,gpt"
    args = ["compare", "--data", "digits", "--models", models, "--steps", "4", "--samples",
            "4", "--deps-examples", "4", "--out", str(out), "--quiet",
            *tiny_sets(models)]  # fmt: skip
    assert main(args) == 130
    monkeypatch.undo()
    for s, handler in handlers.items():
        signal.signal(s, handler)
    first = json.loads((out / "results.json").read_text())
    markov = first["families"][0]
    assert markov["status"] == "interrupted" and markov["steps"] == 3

    assert main(["compare", "--out", str(out), "--resume", "--quiet"]) == 0
    again = json.loads((out / "results.json").read_text())
    whole = json.loads((digits_report / "results.json").read_text())
    assert again["command"] == first["command"]  # the first run's, which reproduces both
    for resumed, uninterrupted in zip(again["families"], whole["families"]):
        assert resumed["status"] == "done" and resumed["steps"] == 4
        assert resumed["nats_per_example"] == uninterrupted["nats_per_example"]
    steps = [row.split(",")[0] for row in (out / "markov" / "log.csv").read_text().split()[1:]]
    assert steps == ["1", "2", "3", "4"]  # the log goes on where it stopped
    commands = json.loads((out / "markov" / "last.json").read_text())["commands"]
    assert len(commands) == 2 and commands[1].endswith("darm compare --out " + str(out) +
                                                     " --resume --quiet")  # fmt: skip
    assert again["families"][0]["wall_s"] > markov["wall_s"]  # both turns


def test_resume_keeps_finished_rows_and_checks_its_options(tmp_path, monkeypatch, capsys):
    interrupt_family(monkeypatch, "bigram")
    out = tmp_path / "cut"
    args = ["compare", "--models", "markov,bigram", "--steps", "2", "--samples", "2",
            "--deps-examples", "2", "--out", str(out), "--quiet", *tiny_sets("markov")]  # fmt: skip
    assert main(args) == 130
    monkeypatch.undo()
    capsys.readouterr()
    markov = json.loads((out / "results.json").read_text())["families"][0]
    samples = (out / "markov" / "samples.png").read_bytes()
    for extra, needle in [
        (["--steps", "3"], "--steps 3 differs from its --steps 2"),
        (["--models", "markov"], "--models markov differs from its --models markov,bigram"),
        (["--set", "markov.k=2"], "--set markov.k=2 differs from its --set markov.n_hidden=16"),
        (["--data", "names"], "--data names differs from its --data digits"),
        (["--budget", "5"], "--budget 5s: it ran without --budget"),
        (["--data-seed", "7"], "a data option (--data, --format, --block, --levels, --data-"),
    ]:
        one_line_error(capsys, main(["compare", "--out", str(out), "--resume", *extra]), 1, needle)
    capsys.readouterr()
    # the same options, repeated: --set as typed values, a default given, other --threads
    again = [*args, "--set", "markov.n_embd=04", "--data-seed", "42", "--resume", "--threads", "1"]
    assert main(again) == 0
    assert "markov: done in the comparison being continued; kept" in capsys.readouterr().out
    first, second = json.loads((out / "results.json").read_text())["families"]
    assert first == markov and (out / "markov" / "samples.png").read_bytes() == samples
    assert second["model"] == "bigram" and second["status"] == "done"
    assert "## Dependency maps" in (out / "report.md").read_text()
    assert main(["compare", "--out", str(out), "--resume"]) == 0
    assert "has finished: nothing to do" in capsys.readouterr().out


def test_resume_refuses_what_it_cannot_continue(tmp_path, monkeypatch, capsys):
    import numpy as np

    code = main(["compare", "--out", str(tmp_path / "none"), "--resume"])
    one_line_error(capsys, code, 1, "holds no comparison to resume (results.json is missing)")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{}")
    code = main(["compare", "--out", str(tmp_path / "bad"), "--resume"])
    one_line_error(capsys, code, 1, "is not a darm compare report")

    interrupt_family(monkeypatch, "bigram")
    path = tmp_path / "a.npy"
    np.save(path, np.random.default_rng(0).integers(0, 4, size=(30, 6)))
    out = tmp_path / "cut"
    args = ["compare", "--data", str(path), "--models", "bigram", "--steps", "2", "--out", str(out)]
    assert main(args) == 130
    capsys.readouterr()
    np.save(path, np.random.default_rng(1).integers(0, 4, size=(30, 6)))  # edited since
    code = main(["compare", "--out", str(out), "--resume"])
    err = one_line_error(capsys, code, 1, "is not the data the comparison in ")
    assert "a: array, L=4, D=6 (train 24, valid 3, test 3) is not the data" in err


def test_a_second_interruption_records_where_it_stopped(tmp_path, monkeypatch):
    """Stopped after step 3 of 8, resumed, stopped again 3 steps later: the row says step 6
    and the training time of both turns, as the checkpoint does."""
    import signal

    from tests.test_train import sigint_during_step

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    out = tmp_path / "twice"
    args = ["compare", "--models", "markov", "--steps", "8", "--samples", "2",
            "--deps-examples", "2", "--out", str(out), "--quiet", *tiny_sets("markov")]  # fmt: skip
    for again in ([], ["--resume"]):
        sigint_during_step(monkeypatch, step=2)
        assert main([*args, *again]) == 130
        monkeypatch.undo()
        for s, handler in handlers.items():
            signal.signal(s, handler)
    (family,) = json.loads((out / "results.json").read_text())["families"]
    record = json.loads((out / "markov" / "last.json").read_text())
    assert family["status"] == "interrupted" and family["steps"] == record["step"] == 6
    assert family["train_s"] == record["elapsed_s"]


def test_sigterm_outside_training_stops_a_comparison_as_ctrl_c_does(tmp_path, monkeypatch, capsys):
    """A SIGTERM during the test pass (not training's loop): exit 143, the family's row says
    so and keeps its steps; --resume then finishes it without training again."""
    import os
    import signal

    import darm.compare

    real = darm.compare.finish_family

    def terminated(*args):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args)

    monkeypatch.setattr(darm.compare, "finish_family", terminated)
    out = tmp_path / "term"
    args = ["compare", "--models", "markov,bigram", "--steps", "3", "--samples", "2",
            "--deps-examples", "2", "--out", str(out), "--quiet", *tiny_sets("markov")]  # fmt: skip
    assert main(args) == 143
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # as it was
    markov, bigram = json.loads((out / "results.json").read_text())["families"]
    assert markov["status"] == "interrupted" and markov["note"].startswith("SIGTERM")
    assert markov["steps"] == 3 and bigram["status"] == "not run"
    monkeypatch.undo()
    log = (out / "markov" / "log.csv").read_text()
    assert main(["compare", "--out", str(out), "--resume", "--quiet"]) == 0
    markov, bigram = json.loads((out / "results.json").read_text())["families"]
    assert markov["status"] == bigram["status"] == "done"
    assert (out / "markov" / "log.csv").read_text() == log


def test_resume_from_another_folder_finds_the_data_and_families(tmp_path, monkeypatch, capsys):
    """A comparison run in sub/ on a relative data file and --import'ed family, continued
    from its parent folder: its paths are found from the folder it ran in."""
    import sys

    import numpy as np

    import darm.compare
    from darm.models import registry
    from tests.test_cli import PLUGIN

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # not for later tests
    monkeypatch.setattr(sys, "path", sys.path[:])
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "my_family.py").write_text(PLUGIN)
    np.save(sub / "a.npy", np.random.default_rng(0).integers(0, 3, size=(40, 4)))
    real = darm.compare.run_family
    interrupt_family(monkeypatch, "unigram")
    monkeypatch.chdir(sub)
    args = ["--import", "my_family.py", "compare", "--data", "a.npy", "--models",
            "bigram,unigram", "--steps", "2", "--samples", "2", "--out", "cmp",
            "--quiet"]  # fmt: skip
    assert main(args) == 130
    monkeypatch.setattr(darm.compare, "run_family", real)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry._REGISTRY.pop("unigram")  # a new process: only what --resume imports again
    module = registry._REGISTRY["bigram"]  # (any entry: to find nothing else changed)
    for name, mod in list(sys.modules.items()):
        if getattr(mod, "__file__", None) == str(sub / "my_family.py"):
            monkeypatch.delitem(sys.modules, name)
    assert registry._REGISTRY["bigram"] is module
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    main(["compare", "--out", "sub/cmp", "--resume", "--data", "sub/a.npy"])
    bigram, unigram = json.loads((sub / "cmp" / "results.json").read_text())["families"]
    assert bigram["status"] == "done" and unigram["steps"] == 2  # imported again, trained
    # (the test plugin's forward takes no one-hot input, so its dependency map fails later)


def test_an_old_report_cannot_be_resumed(digits_report, tmp_path, capsys):
    import shutil

    out = tmp_path / "old"
    shutil.copytree(digits_report, out)
    report = json.loads((out / "results.json").read_text())
    del report["data"]["digest"]
    (out / "results.json").write_text(json.dumps(report))
    code = main(["compare", "--out", str(out), "--resume"])
    one_line_error(capsys, code, 1, "written by an older darm (it records no data digest)")


def test_a_family_that_cannot_be_continued_keeps_its_row(tmp_path, monkeypatch, capsys):
    """Its checkpoint damaged since: the row stays interrupted (steps and all) with the
    reason, the command fails, and a later --resume may try again."""
    import signal

    from tests.test_train import sigint_during_step

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    sigint_during_step(monkeypatch, step=1)
    out = tmp_path / "cut"
    args = ["compare", "--models", "markov", "--steps", "4", "--samples", "2",
            "--deps-examples", "2", "--out", str(out), "--quiet", *tiny_sets("markov")]  # fmt: skip
    assert main(args) == 130
    monkeypatch.undo()
    for s, handler in handlers.items():
        signal.signal(s, handler)
    (out / "markov" / "last.safetensors").write_bytes(b"damaged")
    capsys.readouterr()
    code = main(["compare", "--out", str(out), "--resume", "--quiet"])
    one_line_error(capsys, code, 1, "failed: markov (not continued: ")
    (family,) = json.loads((out / "results.json").read_text())["families"]
    assert family["status"] == "interrupted" and family["steps"] == 2
    assert family["note"].startswith("not continued: ")
    assert family["note"].endswith(f"move {out / 'markov'} away to train it again from the start")
    (out / "markov").rename(tmp_path / "markov-damaged")  # as the note says: from scratch
    assert main(["compare", "--out", str(out), "--resume", "--quiet"]) == 0
    (family,) = json.loads((out / "results.json").read_text())["families"]
    assert family["status"] == "done" and family["steps"] == 4


def test_samples_zero_draws_none(tmp_path, capsys):
    """As `darm train --samples 0`: no samples written or timed; the rest of the report."""
    import numpy as np

    np.save(tmp_path / "a.npy", np.random.default_rng(0).integers(0, 4, size=(30, 6)))
    out = tmp_path / "c"
    args = ["compare", "--data", str(tmp_path / "a.npy"), "--models", "bigram", "--steps", "1",
            "--samples", "0", "--deps-examples", "2", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(args) == 0
    assert not list(out.glob("bigram/samples*")) and (out / "bigram" / "deps.png").exists()
    report = (out / "report.md").read_text()
    assert "None drawn (`--samples 0`)." in report
    command = next(line for line in report.splitlines() if line.startswith("darm compare"))
    assert "--samples 0" in command  # what --resume reads back
    family = json.loads((out / "results.json").read_text())["families"][0]
    assert family["status"] == "done" and family["samples_per_s"] is None


def test_compares_markov_remembers_no_more_than_d(tmp_path):
    """Its memory for an array (8) is cut to the D=6 an example has: a lag past D would see
    only the start symbol, and a new markov with k > D is refused."""
    import numpy as np

    from darm.compare import build_family

    np.save(tmp_path / "a.npy", np.random.default_rng(0).integers(0, 4, size=(30, 6)))
    assert build_family("markov", load_data(str(tmp_path / "a.npy"))).config.k == 6


def test_a_registered_variant_keeps_its_own_defaults(monkeypatch):
    """compare's gpt has 4 layers; a name registered as gpt with n_layer=2 keeps its 2 (with
    fixed=, it was refused as if the user had asked for 4), and the rest is compare's gpt;
    a registered seq_len gives way to the data's, as in train."""
    from darm.compare import build_family, default_config
    from darm.models import registry
    from darm.models.gpt import GPT, GPTConfig

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register_model("tiny", GPT, GPTConfig, "a small gpt", fixed=("n_layer",), n_layer=2)
    registry.register_model("long", GPT, GPTConfig, "a longer context", seq_len=128)
    data = load_data("names")
    tiny, gpt = build_family("tiny", data).config, build_family("gpt", data).config
    assert (tiny.n_layer, gpt.n_layer) == (2, 4) and (tiny.n_embd, tiny.dropout) == (64, 0.1)
    assert build_family("long", data).config.seq_len == data.seq_len  # the data's D wins
    assert build_family("lstm", data).config.cell == "lstm"
    bigram = build_family("bigram", data).config
    assert (bigram.k, bigram.n_hidden) == (1, 0)
    assert "n_layer" not in default_config("tiny", data)


@pytest.mark.parametrize("name", ["pixelcnn", "gated_pixelcnn"])
def test_compare_gives_a_pixelcnn_the_reach_of_the_whole_image(name, tmp_path):
    """On images taller than the defaults see (6 layers of 3x3: 9 rows), compare's PixelCNNs
    take 5x5 kernels, the fewest layers that reach the top, and no more parameters; on the
    8x8 digits they keep the defaults."""
    from darm.compare import build_family, default_config
    from darm.models import create_model

    write_pngs(tmp_path / "tall", 12, size=(3, 24))
    data = load_data(str(tmp_path / "tall"), levels=2)
    default = create_model(name, data)
    assert default.short_sight() is not None  # 9 rows of 23
    model = build_family(name, data)
    assert model.short_sight() is None and model.config.kernel_size == 5
    assert model.num_params() <= default.num_params()
    one_fewer = {"n_layer": model.config.n_layer - 1}
    assert build_family(name, data, one_fewer).short_sight() is not None
    assert "kernel_size" not in default_config(name, load_data("digits"))


@pytest.mark.parametrize("D", [2, 3, 16, 64, 784])
def test_compares_wavenet_sees_all_of_the_past_with_no_layer_to_spare(D):
    from darm.compare import wavenet_dilations

    dilations = wavenet_dilations(D)
    assert dilations == tuple(2**i for i in range(len(dilations)))
    field = 1 + sum(dilations)  # kernel 2: each layer reaches back its dilation more
    assert field >= D - 1  # x_0 .. x_{D-2} all reach the last conditional
    assert field // 2 < D  # the smallest power of two that covers D: no layer to spare
