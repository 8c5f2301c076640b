"""The compare report: results.json, loss.png, deps.png, report.md and report.html.

Everything is rewritten from the results so far, atomically, after every family, so the
folder is always a complete report of the families finished.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch

from darm.data import Dataset
from darm.deps import default_examples, default_pixel, plot_dependency_maps
from darm.files import atomic_write_text
from darm.metrics import units
from darm.models import get_entry, list_models
from darm.models.registry import saved_only
from darm.outputs import AUDIO_CLIPS, count
from darm.plots import plot_loss_curves
from darm.report import Doc, fmt

TEXT_ROWS = 12  # text samples shown per family


def results_table(results, kind: str) -> tuple[list[str], list[list[str]]]:
    ex, dim = units(kind)
    header = ["model", "params", "steps", f"test nats/{ex}", f"nats/{dim}", f"bits/{dim}",
              "train tokens/s", f"{ex}s/s (cached)", "train s", "wall s"]  # fmt: skip
    rows = []
    for r in results:  # a family that failed late keeps the numbers it got (its test NLL)
        steps = "" if r.steps is None else str(r.steps)
        if r.status != "done":
            steps = f"{steps} ({r.status})" if steps else r.status
        rows.append([
            r.model, fmt(r.params, ","), steps, fmt(r.nats_per_example, ".4f"),
            fmt(r.nats_per_dim, ".4f"), fmt(r.bits_per_dim, ".4f"),
            fmt(r.train_tokens_per_s, ",.0f"), fmt(r.samples_per_s, ",.1f"),
            fmt(r.train_s, ".0f"), fmt(r.wall_s, ".0f"),
        ])  # fmt: skip
    return header, rows


def family_notes(results) -> list[str]:
    """A line under the table for each family that did not simply finish: its status and
    why, or the step the budget cut it at (a plan's fewest steps may not fit a tiny one)."""
    notes = []
    for r in results:
        if r.status != "done":
            notes.append(f"`{r.model}`: {r.status}{': ' + r.note if r.note else ''}.")
        elif r.train and r.steps < r.train["steps"]:
            notes.append(
                f"`{r.model}`: cut by the budget at step {r.steps} of the {r.train['steps']} "
                f"planned, before its learning rate schedule ended."
            )
    # a --resume may run on another thread count: the speed columns then do not compare
    counts = {tuple(r.threads) for r in results if r.threads}
    if len(counts) > 1 or any(len(c) > 1 for c in counts):
        each = "; ".join(
            f"{r.model} {', then '.join(map(str, r.threads))}" for r in results if r.threads
        )
        notes.append(f"CPU threads differ between families ({each}): their speeds do not compare.")
    return notes


def environment() -> str:
    """The machine a comparison ran on, for the report (its speeds depend on it)."""
    threads = torch.get_num_threads()
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"torch {torch.__version__}, {threads} CPU thread{'s' * (threads != 1)}, {cuda}, "
        f"Python {platform.python_version()} on {platform.machine()}"
    )


def config_text(config: dict, name: str | None = None) -> str:
    """A family's config for the report, less what the data sets (L, D, classes) and what
    only saved configs set (name: the registered model's, to know them). A family finished
    before a --resume comes back from JSON, its tuples as lists: shown alike."""
    skip = {"vocab_size", "seq_len", "num_classes"}
    if name in list_models():
        skip |= saved_only(get_entry(name).config_cls)
    return ", ".join(
        f"{k}={tuple(v) if isinstance(v, list) else v}" for k, v in config.items() if k not in skip
    )


def write_report(data: Dataset, opts, rows, maps: dict[str, torch.Tensor]) -> Path:
    """Write every file of the report into opts.out (rows: a FamilyResult per family, those
    not run yet included); returns report.md."""

    out = opts.out
    done = [r for r in rows if r.status == "done"]
    payload = {
        "command": opts.command,
        "cwd": opts.cwd,  # where the command ran: --resume finds its relative paths from it
        "data": {
            "name": data.name,
            "kind": data.kind,
            "summary": data.summary(),
            "digest": opts.data_digest,  # --resume checks the examples are the same
        },
        "budget_s": opts.budget,
        "steps": opts.steps,
        "environment": environment(),
        "families": [asdict(r) for r in rows],
    }
    atomic_write_text(out / "results.json", json.dumps(payload, indent=1))
    if done:
        logs = {r.model: out / r.files["log"] for r in done}
        plot_loss_curves(logs, out / "loss.png", x="elapsed_s")
        shape = tuple(data.image_shape) if data.image_shape else None
        plot_dependency_maps({r.model: maps[r.model] for r in done}, out / "deps.png", shape)

    ex, dim = units(data.kind)
    doc = Doc(f"darm compare: {data.name}")
    doc.para("Reproduce with:")
    doc.code(opts.command)
    budget = (
        f"{opts.steps} steps per family"
        + (f" (training capped at {opts.budget:g} s)" if opts.budget is not None else "")
        if opts.steps
        else f"{opts.budget:g} s of training per family (wall clock); the step count of "
        f"each family was planned from a timing of a few of its steps, and again from its "
        f"speed as it trained, so that its learning rate schedule ends within the budget"
    )
    doc.para(f"Data: {data.summary()}. {data.notes}.")
    if data.num_classes:  # a comparison's families model p(x): the labels go unused
        doc.para(
            f"The families are unconditional, p(x): the data's {data.num_classes} classes are "
            f"not used (`darm train --conditional` trains p(x | label))."
        )
    doc.para(f"Budget: {budget}. Seed {opts.seed}. {environment()}. "
             f"Written {time.strftime('%Y-%m-%d %H:%M')}.")  # fmt: skip

    doc.heading("Results")
    header, table = results_table(rows, data.kind)
    doc.table(header, table)
    speed = (
        f"{count(opts.samples, ex)} drawn at once with the family's cache (`model.step`), "
        f"timed alone after a short untimed warm-up draw"
        if opts.samples
        else "none drawn (`--samples 0`)"
    )
    doc.para(
        f"Test NLL is exact, over all {count(len(data['test']), ex)} of the test split, with each "
        f"family's best-validation checkpoint (as `darm eval` computes it); bits/{dim} = "
        f"nats/{dim} / ln 2. Train tokens/s: scored dimensions per second over the training "
        f"time, validation passes included. {ex.capitalize()}s/s: {speed}. Wall s: the "
        f"family's whole turn (step timing, training, test evaluation, sampling, dependency map)."
    )
    for note in family_notes(rows):
        doc.para(note)
    if not done:
        doc.para("No family has finished yet.")
        doc.write(out)
        return out / "report.md"

    doc.heading("Loss curves")
    doc.para(
        "Validation (solid) and training (dashed, running average) NLL in nats per "
        f"{dim}, against training time"
        + (
            " (each family had the same budget)."
            if not opts.steps
            else f" ({opts.steps} steps each)."
        )
    )
    doc.images([("all families", "loss.png")], width=640)

    doc.heading("Samples")
    if not opts.samples:
        doc.para("None drawn (`--samples 0`).")
    elif data.image_shape:
        doc.images([(r.model, r.files["samples"]) for r in done])
    elif data.kind == "audio":
        shown = min(4, opts.samples)
        doc.para(
            f"{shown} sample{'s' * (shown > 1)} of each family as waveforms: one-second "
            "clips from a family that goes on past its D (markov, rnn, wavenet), windows of D "
            f"samples from one that cannot (gpt). The WAV files hold every sample drawn in a "
            f"row (up to {AUDIO_CLIPS} clips; gpt's all {opts.samples} windows), each followed "
            "by 0.1 s of silence. The table's windows/s counts windows of D samples."
        )
        doc.images([(r.model, r.files["waveforms"]) for r in done])
        doc.audio([(f"{r.model} samples.wav", r.files["samples"]) for r in done])
    elif any(r.texts for r in done):
        doc.para(
            "Every family samples with the same seed, hence the same uniform draws: where "
            "samples agree, the models agree on the distribution."
        )
        n = min(TEXT_ROWS, max(len(r.texts) for r in done))
        rows_text = [[r.texts[i][:80] if i < len(r.texts) else "" for r in done] for i in range(n)]
        doc.table([r.model for r in done], rows_text, align="l" * len(done))
        doc.para("All samples: " + ", ".join(f"`{r.files['samples']}`" for r in done) + ".")
    else:
        doc.para("Samples: " + ", ".join(f"`{r.files['samples']}`" for r in done) + ".")

    doc.heading("Dependency maps")
    n_deps = min(opts.deps_examples or default_examples(data.seq_len), len(data["test"]))
    pixel = ""
    if data.image_shape:
        r, c = default_pixel(tuple(data.image_shape))
        pixel = (
            f" Under each, row d of the map for the pixel ({r}, {c}) (outlined) drawn as an "
            f"image: which pixels its conditional uses."
        )
    doc.para(
        "Entry (d, j): the size of d log p(x_d | x_<d) / d x_j, the gradient through the "
        f"input embeddings averaged over the first {n_deps} test {ex}s, relative to the "
        "largest entry, on a log scale; blank where it is exactly zero. Finite memory shows "
        "a band of k lags, the causal convolution its receptive field, the RNN and attention "
        "the whole past; causality leaves everything on and above the diagonal blank." + pixel
    )
    doc.images([("all families", "deps.png")])
    doc.para("`darm deps OUT/MODEL` draws one map alone (`--pixel ROW,COL` for images).")

    doc.heading("Configurations")
    cfg_rows = []
    for r in done:
        model_cfg = config_text(r.config, r.model)
        t = r.train
        train_cfg = (
            f"steps={t['steps']}, batch={t['batch_size']}, lr={t['lr']:g}->{t['min_lr']:g}, "
            f"warmup={t['warmup']}, wd={t['weight_decay']:g}; best step {r.checkpoint_step}"
        )
        cfg_rows.append([r.model, model_cfg, train_cfg])
    doc.table(["model", "config", "training"], cfg_rows, align="lll")
    doc.write(out)
    return out / "report.md"
