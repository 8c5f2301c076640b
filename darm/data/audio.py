"""Audio as a sequence of 256 mu-law levels: WAV in, WAV out.

A waveform s(t) in [-1, 1] is companded by

    F(s) = sign(s) * ln(1 + mu |s|) / ln(1 + mu),   mu = 255,

and F in [-1, 1] is quantised to 256 uniform levels, as in WaveNet: the levels are dense
near silence, where the ear is most sensitive, and sparse at loud amplitudes. The stream
of levels is then one long corpus, cut into windows of `block` samples exactly like a text
corpus (random crops for training, consecutive blocks for evaluation).
"""

from __future__ import annotations

import math
import sys
import wave
from pathlib import Path

import numpy as np
import torch

from darm.data.dataset import Dataset
from darm.data.splits import CorpusSplit, split_starts
from darm.errors import DarmError
from darm.files import atomic_write

MU = 255
LEVELS = MU + 1
# contiguous parts of the stream, in time order: train, valid, test
AUDIO_FRACTIONS = (0.8, 0.1, 0.1)


# -- mu-law -----------------------------------------------------------------------------------


def mu_law_encode(s: np.ndarray, mu: int = MU) -> np.ndarray:
    """Waveform in [-1, 1] (float) -> levels 0..mu (int64). Values outside are clipped."""
    s = np.clip(np.asarray(s, dtype=np.float64), -1.0, 1.0)
    f = np.sign(s) * np.log1p(mu * np.abs(s)) / math.log1p(mu)  # companded, in [-1, 1]
    return np.rint((f + 1) / 2 * mu).astype(np.int64)  # uniform levels of F


def mu_law_decode(q: np.ndarray, mu: int = MU) -> np.ndarray:
    """Levels 0..mu -> waveform in [-1, 1] (float64), the inverse of F at each level."""
    f = 2 * np.asarray(q, dtype=np.float64) / mu - 1
    return np.sign(f) * np.expm1(np.abs(f) * math.log1p(mu)) / mu


# -- WAV files --------------------------------------------------------------------------------


PCM, IEEE_FLOAT, EXTENSIBLE = 1, 3, 0xFFFE  # WAVE format tags


def decode_samples(frames: bytes, tag: int, width: int) -> np.ndarray | None:
    """Interleaved samples as float64 in [-1, 1], or None for a format not read: PCM of 8
    (unsigned, centred on 128), 16, 24 or 32 bits (signed, little-endian), or 32/64-bit float."""
    if width < 1:  # a header that says 0 bits a sample
        return None
    frames = frames[: len(frames) - len(frames) % width]  # a last sample cut in half
    if tag == IEEE_FLOAT and width in (4, 8):
        return np.frombuffer(frames, f"<f{width}").astype(np.float64)
    if tag != PCM or width not in (1, 2, 3, 4):
        return None
    if width == 1:
        return (np.frombuffer(frames, np.uint8).astype(np.float64) - 128.0) / 128.0
    if width == 3:  # no numpy dtype: three bytes, low first, widened to int32 and sign-extended
        b = np.frombuffer(frames, np.uint8).reshape(-1, 3).astype(np.int32)  # (T * C, 3)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        return np.where(v >= 1 << 23, v - (1 << 24), v) / float(1 << 23)
    return np.frombuffer(frames, f"<i{width}") / float(1 << (8 * width - 1))


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """An 8/16/24/32-bit PCM or 32/64-bit float WAV -> (waveform (T,) float64 in [-1, 1], rate).

    Stereo (or more channels) is mixed down to mono by averaging the channels, since the
    models see one stream of samples.
    """
    path = Path(path)
    if not path.exists():
        raise DarmError(f"audio file {path} does not exist")
    tag, channels, width, rate, frames, promised = read_riff(path)
    held = len(frames) // max(1, channels * width)
    if promised is not None and held < promised:  # a recording cut off: still a clip, said so
        print(f"warning: {path} is cut short: its header promises {promised} samples, "
              f"it holds {held}; read as they are", file=sys.stderr)  # fmt: skip
    if rate < 1:  # a header that says no time passes between samples
        raise DarmError(f"{path} has a sample rate of {rate} in its header")
    samples = decode_samples(frames, tag, width)
    if samples is None:
        kind = {IEEE_FLOAT: "float", PCM: "PCM", 6: "A-law", 7: "mu-law"}.get(tag, f"format {tag}")
        raise DarmError(
            f"{path} has {8 * width}-bit {kind} samples; darm reads 8/16/24/32-bit PCM or "
            f"32/64-bit float WAV"
        )
    if samples.size == 0 or samples.size < channels:
        raise DarmError(f"audio file {path} has no samples")
    if not np.isfinite(samples).all():  # a float file's NaN or inf
        raise DarmError(f"{path} holds NaN or infinite samples")
    loud = int((np.abs(samples) > 1).sum())  # only float samples can be: full scale is 1
    if loud:
        peak = np.abs(samples).max()
        print(f"warning: {path}: {loud} of {samples.size} samples lie outside full scale "
              f"[-1, 1] (up to {peak:.3g}); clipped to it", file=sys.stderr)  # fmt: skip
        samples = np.clip(samples, -1.0, 1.0)  # each sample, before the channels are mixed
    samples = samples[: samples.size - samples.size % channels].reshape(-1, channels)  # (T, C)
    return samples.mean(axis=1), rate


UNKNOWN_SIZE = 0xFFFFFFFF  # a data chunk's size left unset by a writer that streamed it


def read_riff(path: Path) -> tuple[int, int, int, int, bytes, int | None]:
    """(format tag, channels, bytes a sample, rate, sample data, frames its header promises)
    from a WAV's RIFF chunks. Read here rather than by Python's `wave`, which refuses IEEE
    float and WAVE_FORMAT_EXTENSIBLE headers (whose real format is the first two bytes of
    the sub-format GUID) and sizes samples by their bits alone: 24-bit PCM samples whose
    frame gives each 4 bytes (block_align / channels) are read as 32-bit, their bits at the
    top, so reading the whole container scales them right. The first data chunk counts, as
    for `wave`."""
    import struct

    def refuse(why: str):
        return DarmError(f"cannot read {path} as a PCM WAV file: {why}")

    try:
        data = path.read_bytes()
    except OSError as e:
        raise refuse(e.strerror or str(e)) from None
    if len(data) < 12:
        raise refuse("it ends before its header does")
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise refuse("not a RIFF WAVE file")
    fmt = frames = None
    at = 12
    while at + 8 <= len(data):
        chunk, size = data[at : at + 4], struct.unpack("<I", data[at + 4 : at + 8])[0]
        body = data[at + 8 : at + 8 + size]
        if chunk == b"fmt ":
            if len(body) < 16:
                raise refuse("its fmt chunk is cut short")
            tag, channels, rate, _, block_align, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack("<H", body[24:26])[0]  # the sub-format GUID's first bytes
            width = (bits + 7) // 8
            if tag == PCM and bits == 24 and block_align == 4 * channels:
                width = 4  # 24-bit samples kept in 32-bit containers (a plain header's way)
            fmt = tag, channels, width, rate
        elif chunk == b"data" and frames is None:
            frames, declared = body, size
        at += 8 + size + size % 2  # chunks are padded to an even length
    if fmt is None or frames is None:
        raise refuse(f"no {'fmt' if fmt is None else 'data'} chunk")
    if fmt[1] < 1:
        raise refuse("no channels")
    promised = None if declared == UNKNOWN_SIZE else declared // max(1, fmt[1] * fmt[2])
    return (*fmt, frames, promised)


def wav_levels(path: Path, rate: int) -> torch.Tensor:
    """A WAV clip as a model's mu-law levels (T,): a prompt for a model trained at `rate` Hz."""
    s, clip_rate = read_wav(path)
    if clip_rate != rate:  # the same samples at another rate are another sound to the model
        raise DarmError(f"{path} is {clip_rate} Hz; the model was trained on {rate} Hz audio")
    return torch.from_numpy(mu_law_encode(s))


def wav_bytes_writer(path: Path, s: np.ndarray, rate: int) -> None:
    """Write waveform s in [-1, 1] as 16-bit mono PCM to exactly this path."""
    pcm = np.clip(np.rint(np.asarray(s) * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(rate))
        w.writeframes(pcm.tobytes())


def write_wav(path: Path, s: np.ndarray, rate: int) -> None:
    """Atomically write waveform s in [-1, 1] as a 16-bit mono PCM WAV."""

    atomic_write(Path(path), lambda tmp: wav_bytes_writer(Path(tmp), s, rate))


def write_levels_wav(path: Path, x: torch.Tensor, rate: int, gap_s: float = 0.1) -> Path:
    """Samples of mu-law levels (N, T) -> one WAV: the N clips in a row, each followed by
    gap_s seconds of silence so they can be told apart by ear."""
    clips = mu_law_decode(x.detach().cpu().numpy().reshape(len(x), -1))  # (N, T)
    silence = np.zeros((len(clips), int(round(gap_s * rate))))
    write_wav(path, np.concatenate([clips, silence], axis=1).reshape(-1), rate)  # (N*(T+gap),)
    return Path(path)


# -- the dataset ------------------------------------------------------------------------------


def audio_dataset(path: Path, block: int, name: str | None = None, whole: bool = False) -> Dataset:
    """A WAV file as one stream of mu-law levels, split in time: the first 80% trains, the
    next 10% validates, the last 10% tests (contiguous, so no window straddles two splits).
    whole: all of it in test (a clip scored by a trained model: any length will do)."""
    s, rate = read_wav(path)
    stream = torch.from_numpy(mu_law_encode(s))  # (T,) long in 0..255
    n_train = 0 if whole else int(len(stream) * AUDIO_FRACTIONS[0])
    n_valid = 0 if whole else int(len(stream) * AUDIO_FRACTIONS[1])
    parts = {
        "train": stream[:n_train],
        "valid": stream[n_train : n_train + n_valid],
        "test": stream[n_train + n_valid :],
    }
    if block < 2:
        raise DarmError(f"--block must be >= 2 samples, got {block}")
    if not whole and min(len(p) for p in parts.values()) < block + 1:
        raise DarmError(
            f"{path} ({len(stream)} samples) is too short for windows of {block} samples "
            f"in every split"
        )
    seconds = len(stream) / rate
    return Dataset(
        name=name or Path(path).stem,
        kind="audio",
        vocab_size=LEVELS,
        seq_len=block,
        splits={k: CorpusSplit(v, block) for k, v in parts.items()},
        source={"format": "audio", "path": str(path), "block": block, "sample_rate": rate},
        notes=f"{len(stream)} samples ({seconds:.2f} s at {rate} Hz), mu-law 256 levels; "
        + ("scored whole" if whole else "in time order 80% train / 10% valid / 10% test")
        + f"; windows of {block} samples",
        info={"sample_rate": rate, "starts": split_starts(parts)},
    )
