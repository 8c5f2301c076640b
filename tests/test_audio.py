"""Audio: mu-law round trip, WAV reading and writing, and training on a WAV end to end."""

import csv
import json
import wave

import numpy as np
import pytest

from darm.cli import main
from darm.data import load_data
from darm.data.audio import MU, mu_law_decode, mu_law_encode, read_wav, write_wav
from darm.errors import DarmError
from tests.conftest import make_wav, one_line_error


def test_mu_law_round_trip_within_one_level():
    s = np.linspace(-1, 1, 200_001)
    q = mu_law_encode(s)
    assert q.min() == 0 and q.max() == MU and len(np.unique(q)) == MU + 1
    # the waveform lies inside the cell of its level: between the half-levels around it
    lo, hi = mu_law_decode(q - 0.5), mu_law_decode(q + 0.5)
    assert np.all((lo - 1e-12 <= s) & (s <= hi + 1e-12))
    r = mu_law_decode(q)
    # so the error is at most the widest half-cell, the loudest one
    assert np.abs(r - s).max() <= mu_law_decode(MU) - mu_law_decode(MU - 0.5) + 1e-12
    # levels survive decode then encode exactly, and silence is near zero
    assert np.array_equal(mu_law_encode(mu_law_decode(np.arange(MU + 1))), np.arange(MU + 1))
    assert abs(mu_law_decode(mu_law_encode(np.zeros(1)))[0]) < 1e-3


def test_read_write_wav(tmp_path):
    s = make_wav(tmp_path / "a.wav")
    back, rate = read_wav(tmp_path / "a.wav")
    assert rate == 8000 and back.shape == s.shape
    assert np.abs(back - s).max() < 1e-4  # 16-bit quantisation
    write_wav(tmp_path / "b.wav", back, rate)
    again, _ = read_wav(tmp_path / "b.wav")
    assert np.abs(again - back).max() < 1e-4


def test_stereo_is_mixed_down(tmp_path):
    s = make_wav(tmp_path / "st.wav", channels=2)
    mono, _ = read_wav(tmp_path / "st.wav")
    assert mono.shape == s.shape and np.abs(mono - s).max() < 1e-4


def riff_wav(path, samples: np.ndarray, tag: int, rate=8000, extensible=False) -> None:
    """A mono WAV written chunk by chunk: float (tag 3) or PCM (1), in a plain or a
    WAVE_FORMAT_EXTENSIBLE header (whose sub-format GUID starts with the real tag)."""
    import struct

    width = samples.dtype.itemsize
    fmt = struct.pack("<HHIIHH", 0xFFFE if extensible else tag, 1, rate, rate * width, width,
                      8 * width)  # fmt: skip
    if extensible:  # cbSize, valid bits, channel mask, then the GUID
        fmt += struct.pack("<HHI", 22, 8 * width, 4) + struct.pack("<H", tag) + bytes(14)
    data = samples.tobytes()
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data))
    path.write_bytes(
        b"RIFF" + struct.pack("<I", 4 + len(chunks) + len(data)) + b"WAVE" + chunks + data
    )


@pytest.mark.parametrize(
    "tag, dtype, extensible",
    [(1, "<i2", True), (3, "<f4", False), (3, "<f4", True), (3, "<f8", False)],
)
def test_float_and_extensible_wavs_read_as_the_plain_pcm_one(tmp_path, tag, dtype, extensible):
    """The headers Python's wave module refuses (float samples, WAVE_FORMAT_EXTENSIBLE) give
    the waveform of the same sound in a plain 16-bit PCM file."""
    s = make_wav(tmp_path / "plain.wav")
    plain, rate = read_wav(tmp_path / "plain.wav")
    samples = np.rint(s * 32767).astype(dtype) if tag == 1 else (plain.astype(dtype))
    riff_wav(tmp_path / "other.wav", samples, tag, rate, extensible)
    got, got_rate = read_wav(tmp_path / "other.wav")
    assert got_rate == rate and got.shape == plain.shape
    np.testing.assert_allclose(got, plain, atol=1e-6)


def zero_bits(path) -> None:
    """A PCM WAV whose header says 0 bits a sample."""
    riff_wav(path, np.zeros(8, "<i2"), 1)
    data = bytearray(path.read_bytes())
    data[34:36] = bytes(2)  # RIFF, size, WAVE, "fmt ", its size, then bits at 14 in its body
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("width", [1, 3, 4])
def test_8_24_and_32_bit_pcm_read_as_the_16_bit_one(tmp_path, width):
    s = make_wav(tmp_path / "plain.wav")  # 16-bit
    plain, rate = read_wav(tmp_path / "plain.wav")
    top = 2 ** (8 * width - 1) - 1
    ints = np.rint(plain * top).astype(np.int64)  # signed samples of this width
    if width == 1:
        frames = (ints + 128).astype(np.uint8).tobytes()  # 8-bit PCM is unsigned
    else:  # little-endian, the low `width` bytes of each int64
        frames = ints.astype("<i8").view(np.uint8).reshape(-1, 8)[:, :width].tobytes()
    with wave.open(str(tmp_path / "w.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(width), w.setframerate(rate)
        w.writeframes(frames)
    got, got_rate = read_wav(tmp_path / "w.wav")
    assert got_rate == rate and got.shape == s.shape
    np.testing.assert_allclose(got, plain, atol=1.5 / 128 if width == 1 else 1e-6)
    assert got.min() < -0.4 < 0.4 < got.max()  # a sign lost would fold the wave


def test_float_samples_past_full_scale_are_clipped_with_a_warning(tmp_path, capsys):
    riff_wav(tmp_path / "loud.wav", np.array([0.5, -4.0, 2.0, 0.0], "<f4"), 3)
    x, _ = read_wav(tmp_path / "loud.wav")
    assert x.tolist() == [0.5, -1.0, 1.0, 0.0]
    err = capsys.readouterr().err
    assert "2 of 4 samples lie outside full scale [-1, 1] (up to 4); clipped to it" in err
    riff_wav(tmp_path / "ok.wav", np.array([0.5, -1.0, 1.0], "<f4"), 3)
    read_wav(tmp_path / "ok.wav")
    assert capsys.readouterr().err == ""
    # stereo: each sample is clipped before the channels are mixed, as the warning says
    riff_wav(tmp_path / "st.wav", np.array([3.0, -1.0, 0.5, 0.5], "<f4"), 3)
    raw = bytearray((tmp_path / "st.wav").read_bytes())
    raw[22:24], raw[32:34] = (2).to_bytes(2, "little"), (8).to_bytes(2, "little")  # 2 channels
    (tmp_path / "st.wav").write_bytes(bytes(raw))
    x, _ = read_wav(tmp_path / "st.wav")
    assert x.tolist() == [0.0, 0.5]


def test_a_data_size_left_unset_by_a_streaming_writer_is_not_called_cut_short(tmp_path, capsys):
    make_wav(tmp_path / "a.wav", seconds=0.01, rate=1000)
    raw = bytearray((tmp_path / "a.wav").read_bytes())
    raw[40:44] = (0xFFFFFFFF).to_bytes(4, "little")  # the data chunk's size
    (tmp_path / "s.wav").write_bytes(bytes(raw))
    x, _ = read_wav(tmp_path / "s.wav")
    assert np.array_equal(x, read_wav(tmp_path / "a.wav")[0])
    assert capsys.readouterr().err == ""


def test_24_bit_samples_in_4_byte_containers_read_by_block_align(tmp_path):
    """A plain PCM header of 24 bits whose block_align gives each sample 4 bytes (the bits at
    the top of each): read by the container, as the 16-bit file of the same sound."""
    import struct

    make_wav(tmp_path / "plain.wav")
    plain, rate = read_wav(tmp_path / "plain.wav")
    ints = (np.rint(plain * (2**23 - 1)).astype("<i4") << 8).astype("<i4")  # 24 bits, top
    riff_wav(tmp_path / "w.wav", ints, 1, rate)
    raw = bytearray((tmp_path / "w.wav").read_bytes())
    raw[34:36] = struct.pack("<H", 24)  # bits a sample; block_align stays 4
    (tmp_path / "w.wav").write_bytes(bytes(raw))
    got, got_rate = read_wav(tmp_path / "w.wav")
    assert got_rate == rate and got.shape == plain.shape
    np.testing.assert_allclose(got, plain, atol=1e-6)
    # a 16-bit file whose block_align is wrong (4) is still read by its bits, as wave reads it
    riff_wav(tmp_path / "b.wav", np.rint(plain * 32767).astype("<i2"), 1, rate)
    raw = bytearray((tmp_path / "b.wav").read_bytes())
    raw[32:34] = struct.pack("<H", 4)  # block_align
    (tmp_path / "b.wav").write_bytes(bytes(raw))
    np.testing.assert_allclose(read_wav(tmp_path / "b.wav")[0], plain, atol=1e-4)


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda p: riff_wav(p, np.zeros(8, "<i8"), 1), "64-bit PCM samples; darm reads 8/16/24"),
        (lambda p: riff_wav(p, np.zeros(8, "u1"), 6), "8-bit A-law samples; darm reads"),
        (lambda p: riff_wav(p, np.zeros(8, "u1"), 9), "8-bit format 9 samples"),
        (lambda p: zero_bits(p), "0-bit PCM samples"),
        (lambda p: riff_wav(p, np.array([0, np.nan], "<f4"), 3), "NaN or infinite samples"),
        (lambda p: make_wav(p, seconds=0), "no samples"),
        (lambda p: p.write_bytes(b"RIFF1234WAVEjunk"), "cannot read"),
    ],
)
def test_bad_wav(tmp_path, make, needle):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(DarmError, match=needle):
        read_wav(path)


def test_audio_dataset_split_in_time(tmp_path):
    make_wav(tmp_path / "a.wav", seconds=1.0, rate=8000)
    data = load_data(str(tmp_path / "a.wav"), block=100)
    assert data.kind == "audio" and data.vocab_size == 256 and data.seq_len == 100
    sizes = {k: len(v.stream) for k, v in data.splits.items()}
    assert sizes == {"train": 6400, "valid": 800, "test": 800}
    assert data.source["sample_rate"] == 8000
    x, _, _ = data["train"].batch(0, 4, 1)
    assert x.shape == (4, 100) and int(x.max()) < 256
    with pytest.raises(DarmError, match="too short"):
        load_data(str(tmp_path / "a.wav"), block=900)


def test_speech_builtin():
    data = load_data("speech", block=256)
    assert data.name == "speech" and data.source["sample_rate"] == 16000
    assert sum(len(v.stream) for v in data.splits.values()) == 125_428


def test_train_on_wav_writes_wav(tmp_path, capsys):
    make_wav(tmp_path / "tone.wav", seconds=0.5, rate=8000)
    out = tmp_path / "run"
    args = ["train", "--data", str(tmp_path / "tone.wav"), "--block", "32", "--model",
            "wavenet", "--set", "n_embd=8", "--set", "n_skip=8", "--set",
            "dilation_cycle=1,2,4,8", "--steps", "3", "--eval-every", "3",
            "--out", str(out), "--quiet", "--samples", "3"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "bits/sample" in printed and "nats/window" in printed
    with wave.open(str(out / "samples.wav"), "rb") as w:
        assert w.getframerate() == 8000 and w.getnchannels() == 1
        # three clips of one second (a wavenet goes on past D = 32), each then 0.1 s of silence
        assert w.getnframes() == 3 * (8000 + 800)
    assert main(["eval", str(out), "--per-example", str(tmp_path / "w.csv")]) == 0
    assert "bits/sample" in capsys.readouterr().out
    # each window's place in the clip: the test split is its last 10% (400 of 4000 samples)
    rows = list(csv.DictReader((tmp_path / "w.csv").open()))
    assert [r["offset"] for r in rows] == [str(3600 + 32 * i) for i in range(13)]
    assert [r["seconds"] for r in rows[:2]] == ["0.4500", "0.4540"]  # 3600 / 8000, 3632 / 8000
    assert rows[-1]["dims"] == "16"  # 400 = 12 x 32 + 16
    assert main(["sample", str(out), "-n", "2", "--out", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s.wav").exists()


def frames_of(path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def test_a_clip_prompts_samples_and_completions(tmp_path, capsys):
    rate = 1000  # 1 s past the prompt: 1000 steps a clip, quick on a CPU
    make_wav(tmp_path / "tone.wav", seconds=1.0, rate=rate)
    make_wav(tmp_path / "clip.wav", seconds=0.1, rate=rate)  # 100 samples
    make_wav(tmp_path / "other.wav", seconds=0.1, rate=4000)
    out = tmp_path / "run"
    args = ["train", "--data", str(tmp_path / "tone.wav"), "--block", "32", "--model", "markov",
            "--set", "n_hidden=8", "--steps", "2", "--out", str(out), "--quiet",
            "--samples", "0"]  # fmt: skip
    assert main(args) == 0
    prompt = mu_law_encode(read_wav(tmp_path / "clip.wav")[0])
    gap = rate // 10  # the silence after each clip
    assert main(["sample", str(out), "-n", "2", "--prompt", str(tmp_path / "clip.wav"),
                 "--out", str(tmp_path / "s")]) == 0  # fmt: skip
    pcm = frames_of(tmp_path / "s.wav")
    assert len(pcm) == 2 * (100 + rate + gap)  # the clip, then a second of the model's
    first = mu_law_encode(pcm[:100] / 32768.0)
    assert np.array_equal(first, prompt)  # each sample starts with the clip itself
    assert main(["complete", str(out), "--input", str(tmp_path / "clip.wav"), "-n", "3",
                 "--length", "150", "--out", str(tmp_path / "c")]) == 0  # fmt: skip
    assert len(frames_of(tmp_path / "c.wav")) == 3 * (150 + gap)
    # test windows: their first --dims samples kept, a second drawn after them
    capsys.readouterr()
    assert main(["complete", str(out), "--count", "2", "-n", "1", "--dims", "16",
                 "--out", str(tmp_path / "t")]) == 0  # fmt: skip
    assert len(frames_of(tmp_path / "t.wav")) == 2 * (16 + rate + gap)
    assert capsys.readouterr().out == (  # a WAV shows nothing on the screen: what it holds
        "kept the first 16 samples (0.016 s) of 2 clips; 1 completion each, 1.016 s long "
        "with what was kept, clip by clip\n"
    )
    capsys.readouterr()
    assert main(["sample", str(out), "--prompt", str(tmp_path / "other.wav")]) == 1
    assert "is 4000 Hz; the model was trained on 1000 Hz audio" in capsys.readouterr().err
    # a clip shorter than the training file's splits is scored whole: 100 samples in 4 windows
    assert main(["eval", str(out), "--data", str(tmp_path / "clip.wav"), "--json"]) == 0
    got = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert got["examples"] == 4 and got["dims"] == 100
    # scoring or fine-tuning on audio of another rate is refused as a prompt is
    make_wav(tmp_path / "other_long.wav", seconds=0.5, rate=4000)
    for argv in (["eval", str(out), "--data", str(tmp_path / "other_long.wav")],
                 ["train", "--init", str(out), "--data", str(tmp_path / "other_long.wav"),
                  "--steps", "1", "--out", str(tmp_path / "ft"), "--quiet"]):  # fmt: skip
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "other_long is 4000 Hz audio; " in err and "trained on 1000 Hz audio" in err
    assert (
        main(["complete", str(out), "--input", str(tmp_path / "clip.wav"), "--length", "50"]) == 1
    )
    assert "--length 50 is shorter than the 100 samples kept" in capsys.readouterr().err


def test_a_clip_longer_than_a_gpts_context_is_refused_by_its_length(tmp_path, capsys):
    rate = 1000
    make_wav(tmp_path / "tone.wav", seconds=1.0, rate=rate)
    make_wav(tmp_path / "clip.wav", seconds=0.1, rate=rate)  # 100 samples: more than D = 32
    out = tmp_path / "run"
    args = ["train", "--data", str(tmp_path / "tone.wav"), "--block", "32", "--model", "gpt",
            "--set", "n_layer=1", "--set", "n_embd=8", "--set", "n_head=2", "--steps", "2",
            "--out", str(out), "--quiet", "--samples", "0"]  # fmt: skip
    assert main(args) == 0
    clip = str(tmp_path / "clip.wav")
    capsys.readouterr()
    for argv in (["sample", str(out), "--prompt", clip], ["complete", str(out), "--input", clip]):
        one_line_error(capsys, main(argv), 1, "clip.wav is 100 samples (0.100 s); this gpt sees")
    make_wav(tmp_path / "short.wav", seconds=0.02, rate=rate)  # 20 samples fit, 12 drawn
    assert main(["sample", str(out), "-n", "1", "--prompt", str(tmp_path / "short.wav"),
                 "--out", str(tmp_path / "s")]) == 0  # fmt: skip
    assert len(frames_of(tmp_path / "s.wav")) == 32 + rate // 10  # D samples, then silence
    capsys.readouterr()
    # in samples and seconds, as clips are; complete's test windows too, not only an --input
    limit = "--length 40: this gpt generates at most 32 samples (0.032 s)"
    for argv in (["sample", str(out)], ["complete", str(out), "--count", "2"]):
        one_line_error(capsys, main([*argv, "--length", "40"]), 1, limit)


def test_a_wav_cut_short_is_read_as_far_as_it_goes_with_a_warning(tmp_path, capsys):
    make_wav(tmp_path / "whole.wav", seconds=0.1, rate=1000)  # 100 samples, 200 bytes of data
    raw = (tmp_path / "whole.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(raw[: len(raw) - 120])  # the header still says 100
    x, rate = read_wav(tmp_path / "cut.wav")
    assert rate == 1000 and len(x) == 40
    assert np.allclose(x, read_wav(tmp_path / "whole.wav")[0][:40])
    err = capsys.readouterr().err
    assert "cut.wav is cut short: its header promises 100 samples, it holds 40" in err
    read_wav(tmp_path / "whole.wav")
    assert capsys.readouterr().err == ""  # a whole file: no word


def test_a_wav_with_no_sample_rate_is_refused(tmp_path):
    make_wav(tmp_path / "a.wav")
    raw = bytearray((tmp_path / "a.wav").read_bytes())
    raw[24:28] = (0).to_bytes(4, "little")  # the fmt chunk's sample rate
    (tmp_path / "a.wav").write_bytes(bytes(raw))
    with pytest.raises(DarmError, match="has a sample rate of 0 in its header"):
        read_wav(tmp_path / "a.wav")
    (tmp_path / "b.wav").write_bytes(b"RIFF")  # a header cut short: EOFError says nothing
    with pytest.raises(DarmError, match="it ends before its header does"):
        read_wav(tmp_path / "b.wav")
