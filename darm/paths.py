"""Where a command's output goes (--out, or the run's own default), refused before any work
where it would overwrite a file that is not the run's own (unless --force)."""

from __future__ import annotations

import os
from pathlib import Path

from darm.errors import DarmError
from darm.files import check_writable


def check_file_target(path: Path, flag: str, force: bool = False) -> None:
    """A file to be written later: refused now, before the work, if it cannot be."""
    check_new(path, flag, force)
    check_writable(path.parent)


def check_new(path: Path, flag: str, force: bool) -> None:
    """A file an option names is never replaced by accident (a picture of one's own, the
    run's data): refused if it exists, unless --force; a folder of that name always."""
    lead = f"{flag}: " if flag else ""
    if path.is_dir():  # --force cannot replace a folder with a file
        raise DarmError(f"{lead}{path} is a folder; give a file name")
    if path.exists() and not force:
        raise DarmError(f"{lead}{path} already exists; pass --force to replace it")


def check_output(path: Path, run_default: Path | None, given: bool, force: bool) -> None:
    """A file a command is about to write: an existing one is replaced only where it is the
    run's own output written again (`run_default`, e.g. RUN/samples.png, however it was
    named) or with --force. given: named by --out (said in the refusal)."""
    if run_default is not None and path.resolve() == run_default.resolve():
        return
    check_new(path, "--out" if given else "", force)


SAMPLE_SUFFIXES = {".png": "pictures, as PNG", ".wav": "audio, as WAV", ".txt": "text"}


OTHER_PICTURES = (".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".svg", ".pdf")


def output_stem(out: str | None, default: Path, ext: str) -> Path:
    """The stem the output's suffix `ext` is added to: --out as given (its own suffix dropped,
    so `--out s.png` still writes s.png, and another of ours refused: `--out s.wav` would
    write s.png; `--out names.v2` writes names.v2.txt, it does not replace names.txt), a
    folder's `default.name` inside it, or `default`. Checked writable first."""
    if out is None:
        stem = default
    elif out.endswith(("/", os.sep)) or Path(out).is_dir():
        stem = Path(out) / default.name
    else:
        stem = Path(out)
        if stem.exists() and not stem.is_file():  # /dev/null would become /dev/null.png
            raise DarmError(f"--out {out} is not a file or a folder; give a file name to write")
        suffix = stem.suffix.lower()
        if suffix != ext and (suffix in SAMPLE_SUFFIXES or suffix in OTHER_PICTURES):
            # a .jpg would hold PNG bytes, a .png a text's lines, or a WAV's samples
            raise DarmError(
                f"--out {out}: this writes {SAMPLE_SUFFIXES[ext]}; name it {stem.stem}{ext}"
            )
        stem = stem.with_suffix("") if suffix == ext else stem
    try:
        check_writable(stem.parent)
    except DarmError as e:  # a run folder one may read but not write (a shared one, say)
        raise DarmError(f"{e} (--out names another place)" if out is None else str(e)) from None
    return stem


def checked_stem(out: str | None, default: Path, meta: dict, force: bool) -> Path:
    """`output_stem` for samples of this data, refused now (before any drawing) where the
    file it names exists and is not the run's own `default` (see check_output)."""
    ext = sample_suffix(meta)
    stem = output_stem(out, default, ext)
    check_output(with_ext(stem, ext), with_ext(default, ext), out is not None, force)
    return stem


def checked_png(out: str | None, default: Path, force: bool, own: bool = True) -> Path:
    """`png_path`, refused now where the picture exists and is not the run's own `default`
    (own=False: a default that belongs to no one run, the loss.png of several)."""
    path = png_path(out, default)
    check_output(path, default if own else None, out is not None, force)
    return path


def png_path(out: str | None, default: Path) -> Path:
    """A picture's path (`default` ends in .png): --out as `output_stem` reads it, then .png."""
    return with_ext(output_stem(out, default.with_suffix(""), ".png"), ".png")


def with_ext(stem: Path, ext: str) -> Path:
    """stem + ext, keeping any dots already in the stem's name."""
    return stem.with_name(stem.name + ext)


def sample_suffix(meta: dict) -> str:
    """How samples of this data are written: pictures, a WAV, or lines of text."""
    return ".png" if meta.get("image_shape") else ".wav" if meta.get("kind") == "audio" else ".txt"
