"""--dtype bf16 and --compile: optional, saved in the checkpoint, and close to fp32 eager."""

import pytest
import torch
import torch.nn.functional as F

from darm.cli import build_parser, main
from darm.data import load_data
from darm.errors import DarmError
from darm.metrics import evaluate
from darm.nn.attention import attend
from darm.train import train
from darm.train_config import TrainConfig, bf16_warning, check_config
from tests.conftest import tiny_model, write_names

CFG = dict(steps=8, batch_size=8, warmup=2, eval_every=8, seed=3)


def _train(tmp_path, name, hook=None, **overrides):
    data = load_data(str(write_names(tmp_path)))
    model = tiny_model("gpt", vocab_size=data.vocab_size, seq_len=data.seq_len)
    if hook is not None:
        model.blocks[0].mlp.fc.register_forward_hook(hook)
    cfg = TrainConfig(**{**CFG, **overrides})
    train(model, "gpt", data, cfg, tmp_path / name, progress=False)
    return model


def test_cli_flags():
    parse = build_parser().parse_args
    assert parse(["train", "--compile"]).compile is True
    assert parse(["train", "--no-compile"]).compile is False
    assert parse(["train"]).compile is None  # unset: the TrainConfig default (or the checkpoint's)
    assert parse(["train", "--dtype", "bf16", "--grad-accum", "4"]).dtype == "bf16"
    with pytest.raises(SystemExit):
        parse(["train", "--dtype", "fp16"])


def test_config_checks():
    with pytest.raises(DarmError, match="dtype must be one of fp32, bf16"):
        check_config(TrainConfig(dtype="half"))
    with pytest.raises(DarmError, match="cannot be cut into 2 rank"):
        check_config(TrainConfig(batch_size=3, grad_accum=2), world_size=2)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_warns_on_a_cpu_without_native_bf16(native, tmp_path, monkeypatch, capsys):
    """Emulated bf16 matmuls run ~80x slower than float32's: `train --dtype bf16` says so in
    one line on such a CPU, and keeps quiet where bf16 is native or not asked for."""
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    cpu = torch.device("cpu")
    assert bf16_warning(TrainConfig(dtype="fp32"), cpu) is None
    assert (bf16_warning(TrainConfig(dtype="bf16"), cpu) is None) == native
    assert bf16_warning(TrainConfig(dtype="bf16"), torch.device("meta")) is None  # not a CPU
    data, out = str(write_names(tmp_path)), str(tmp_path / "r")
    args = ["train", "--data", data, "--model", "markov", "--steps", "2", "--dtype", "bf16",
            "--quiet", "--samples", "0", "--out", out]  # fmt: skip
    assert main(args) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "bfloat16" in line]
    assert len(warned) == (0 if native else 1), warned


def test_bf16_autocast_trains_close_to_fp32(tmp_path):
    data = load_data(str(write_names(tmp_path)))
    start = tiny_model("gpt", vocab_size=data.vocab_size, seq_len=data.seq_len).state_dict()
    seen = set()  # dtypes of a linear layer's output during training

    def hook(module, args, out):
        if module.training:
            seen.add(out.dtype)

    fp32 = _train(tmp_path, "fp32")
    bf16 = _train(tmp_path, "bf16", hook=hook, dtype="bf16")
    assert seen == {torch.bfloat16}  # the training forward really ran in bf16
    moved, apart = 0.0, 0.0  # how far fp32 training moved the weights; how far bf16 lands
    for k, v in fp32.state_dict().items():
        w = bf16.state_dict()[k]
        assert w.dtype == torch.float32  # autocast: the weights stay fp32
        moved = max(moved, (v - start[k]).abs().max().item())
        apart = max(apart, (w - v).abs().max().item())
    assert 0 < apart < 0.5 * moved, (apart, moved)  # bf16 rounding, not a different model
    # and the two score the data alike, far closer than training moved the score
    valid = data["valid"]
    first = tiny_model("gpt", vocab_size=data.vocab_size, seq_len=data.seq_len)
    nll = [evaluate(m, valid).nats_per_dim for m in (first, fp32, bf16)]
    assert abs(nll[2] - nll[1]) < 0.02 * (nll[0] - nll[1]), nll


@pytest.mark.slow  # the first torch.compile takes 20-40 s on 2 cores
def test_compile_saves_plain_names_and_matches_eager(tmp_path):
    from safetensors.torch import load_file

    eager = _train(tmp_path, "eager")
    _train(tmp_path, "compiled", compile=True)
    saved = load_file(tmp_path / "compiled" / "last.safetensors")
    assert set(saved) == set(eager.state_dict())  # no `_orig_mod.` prefixes
    for k, v in eager.state_dict().items():
        torch.testing.assert_close(saved[k], v, rtol=0, atol=1e-4)


@pytest.mark.parametrize("mask", ["causal", "attn_mask"])
def test_attention_is_written_out_in_bf16_under_cpu_bf16_autocast(monkeypatch, mask):
    # SDPA's CPU flash attention is ~2.5x slower in bf16 than in float32, and a written-out
    # bf16 attention faster than both: under CPU bf16 autocast `attend` never calls SDPA
    from darm.nn import attention

    q, k, v = torch.randn(3, 2, 2, 5, 4).unbind(0)  # (B, nh, T, hs) each
    kwargs = {"is_causal": True}
    if mask == "attn_mask":  # 2 new queries after 3 cached keys
        q, kwargs = q[:, :, 3:], {"attn_mask": torch.ones(2, 5, dtype=torch.bool).tril(3)}
    exact = F.scaled_dot_product_attention(*(t.bfloat16().float() for t in (q, k, v)), **kwargs)

    def refused(*args, **kw):
        raise AssertionError("SDPA called under CPU bf16 autocast")

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", refused)
    with torch.autocast("cpu", torch.bfloat16):
        y = attend(q.bfloat16(), k.bfloat16(), v.bfloat16(), **kwargs)
    assert y.dtype == torch.bfloat16 and y.shape == exact.shape
    torch.testing.assert_close(y.float(), exact, rtol=0.02, atol=0.02)  # bf16's rounding
