import io
import math
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from darm.models import create_model, get_entry, list_models, reads_images

# Small widths per family so the registry-wide tests stay fast; a family not listed here is
# tested with its defaults.
TINY = {
    "markov": dict(n_embd=4, n_hidden=16),
    "rnn": dict(n_embd=8, n_hidden=16, n_layer=2),
    "wavenet": dict(n_embd=8, n_skip=8, dilation_cycle=(1, 2), kernel_size=2),
    "gpt": dict(n_layer=2, n_head=2, n_embd=16),
    "pixelcnn": dict(n_embd=4, n_hidden=12, n_layer=2, first_kernel=5),
}

# Families that read images also run every protocol test on 2-D shapes, grey and with
# channels (H x W x C): "pixelcnn@2x3x1" is the pixelcnn on 2 x 3 grey images.
IMAGE_SHAPES = ("2x3x1", "2x2x2")


def image_families() -> list[str]:
    return [name for name in list_models() if reads_images(name)]


# Settings the defaults above never reach, each a code path of its own: "/key=value,..."
# overrides integer config fields. The log-linear k-gram with k > 1, a repeated dilation
# cycle, a conv of three taps, three rows of RGB (the vertical stack past row 1, channels
# across rows), and later kernels wider than the first (the caches' padding).
VARIANTS = [
    "markov/n_hidden=0,k=3",
    "wavenet/n_cycles=2",
    "wavenet/kernel_size=3",  # three taps a step: their order in the cached conv's matrix
    "pixelcnn@3x1x3",
    "gated_pixelcnn@3x1x3",
    # 2 columns: a 3x3 mask A reaches the pixel before the first of a row (up and right),
    # which a wider image would put in the plain PixelCNN's blind spot
    "pixelcnn@3x2x1/first_kernel=3,kernel_size=5",
    "gated_pixelcnn@3x3x1/first_kernel=3,kernel_size=5",
]

CASES = list_models() + [f"{name}@{shape}" for name in image_families() for shape in IMAGE_SHAPES]
CASES += VARIANTS
# a renamed family must fail loudly here, not drop its variants from every test
assert {v.partition("@")[0].partition("/")[0] for v in VARIANTS} <= set(list_models())


def tiny_model(name: str, vocab_size: int = 5, seq_len: int = 7, **overrides):
    """A small model of a registered name, or of "name@HxWxC" (its own D = H * W * C),
    either with "/key=value,..." integer config overrides."""
    name, _, settings = name.partition("/")
    for item in filter(None, settings.split(",")):
        key, _, value = item.partition("=")
        overrides.setdefault(key, int(value))
    name, _, shape = name.partition("@")
    if shape:
        overrides["image_shape"] = tuple(int(s) for s in shape.split("x"))
        seq_len = math.prod(overrides["image_shape"])
    torch.manual_seed(0)
    entry = get_entry(name)
    # the family's small widths, but never over what the name itself registers (bigram's
    # n_hidden=0 stays a table, not a k=1 MLP)
    tiny = {k: v for k, v in TINY.get(entry.family, {}).items() if k not in entry.defaults}
    model = create_model(name, vocab_size=vocab_size, seq_len=seq_len, **{**tiny, **overrides})
    return model.eval()


@pytest.fixture(params=CASES)
def model_name(request):
    return request.param


# -- helpers shared by several test modules ------------------------------------------------

TINY_MARKOV = ["--model", "markov", "--set", "n_hidden=16", "--set", "n_embd=4"]
NAMES = ["anna", "bob", "carla", "dan", "emma", "finn", "gus", "hal", "ivy", "jon", "kim", "lea"]


def write_names(folder: Path) -> Path:
    """A small one-per-line text file: 36 distinct names."""
    path = folder / "names.txt"
    path.write_text("\n".join(a + b for a in NAMES for b in ("", "y", "o")))
    return path


def one_line_error(capsys, code, expected_code=1, needle=""):
    """The CLI's contract for bad input: this exit code and one line on stderr, no traceback."""
    err = capsys.readouterr().err.strip()
    assert code == expected_code, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert needle in err, err
    return err


def make_wav(path, seconds=1.0, rate=8000, channels=1, width=2):
    """A decaying 220 Hz tone as a PCM WAV file; returns the signal in [-1, 1]."""
    t = np.arange(int(seconds * rate)) / rate
    s = 0.5 * np.sin(2 * np.pi * 220 * t) * np.exp(-t)  # a decaying tone
    pcm = np.rint(s * 32767).astype("<i2")
    frames = np.repeat(pcm[:, None], channels, axis=1)  # (T, channels), interleaved
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(frames.tobytes() if width == 2 else (frames // 256 + 128).astype("u1"))
    return s


class Terminal(io.StringIO):
    """A stream that says it is a terminal, so progress bars draw into it."""

    def isatty(self) -> bool:
        return True


def write_pngs(folder, n, size=(5, 4), mode="L", classes=None):
    """n random pictures of `size` (W, H) into folder, or cycled over its class sub-folders."""
    rng = np.random.default_rng(0)
    for i in range(n):
        sub = folder / classes[i % len(classes)] if classes else folder
        sub.mkdir(parents=True, exist_ok=True)
        shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(sub / f"{i}.png")
