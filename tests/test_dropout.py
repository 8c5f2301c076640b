"""darm.nn.dropout: the CPU mask cut from random bits behaves as dropout does."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from darm.nn.dropout import LEVELS, Dropout, dropout, levels_dropped, uniform_levels


def test_uniform_levels_are_uniform_in_every_16_bit_lane():
    torch.manual_seed(0)
    u = uniform_levels(torch.empty(4 * 50_000)).long()
    assert u.min() >= 0 and u.max() <= LEVELS - 1
    # an int64 draw's top lane has its sign bit forced to 0; the others would be signed
    # without the AND: every lane must span the same range with the same mean
    lanes = u.view(-1, 4)  # (draws, lane)
    sd = LEVELS / math.sqrt(12) / math.sqrt(lanes.shape[0])  # of a lane's mean
    for lane in lanes.T:
        assert abs(lane.float().mean() - (LEVELS - 1) / 2) < 5 * sd
        assert abs((lane >= LEVELS // 2).float().mean() - 0.5) < 0.01  # the top bit is random


def test_levels_dropped_is_within_a_thousandth_of_p_or_refused():
    assert levels_dropped(0.2) == round(0.2 * LEVELS)
    assert abs(levels_dropped(0.5) / LEVELS - 0.5) == 0
    assert levels_dropped(0.001) is None  # 15 bits hold it only to 0.7%
    assert levels_dropped(1.0) is None


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5])
def test_drops_a_fraction_p_and_scales_the_rest_to_keep_the_mean(p):
    torch.manual_seed(1)
    x = torch.ones(200_000)
    y = dropout(x, p)
    k = levels_dropped(p)
    scale = LEVELS / (LEVELS - k)
    dropped = y == 0
    assert torch.all(dropped | (y == scale))  # nothing else
    sd = math.sqrt(p * (1 - p) / x.numel())
    assert abs(dropped.float().mean() - p) < 5 * sd
    assert abs(y.mean() - 1) < 5 * sd * scale


def test_gradient_is_the_mask():
    torch.manual_seed(2)
    x = torch.randn(64, 100, requires_grad=True)
    y = dropout(x, 0.3)
    y.sum().backward()
    scale = LEVELS / (LEVELS - levels_dropped(0.3))
    assert torch.equal(x.grad == 0, y == 0)
    assert torch.allclose(x.grad[y != 0], torch.tensor(scale))


def test_same_seed_same_mask_and_another_seed_another():
    x = torch.randn(1000)
    torch.manual_seed(3)
    a = dropout(x, 0.2)
    torch.manual_seed(3)
    b = dropout(x, 0.2)
    torch.manual_seed(4)
    c = dropout(x, 0.2)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_identity_when_evaluating_or_p_is_zero():
    x = torch.randn(10)
    assert dropout(x, 0.2, training=False) is x
    assert dropout(x, 0.0) is x
    layer = Dropout(0.2).eval()
    assert layer(x) is x


def test_the_mask_is_laid_out_in_memory_as_a_dense_input_is():
    for like in [torch.empty(4, 6, 5, 3).contiguous(memory_format=torch.channels_last),
                 torch.empty(7, 9).t(), torch.empty(3, 4)]:  # fmt: skip
        assert uniform_levels(like).stride() == like.stride()
    sliced = torch.empty(4, 6, 5, 3)[:, ::2]  # not dense: a dense layout of its shape
    assert uniform_levels(sliced).is_contiguous()


def test_channels_last_and_sliced_inputs_keep_shape_layout_and_rate():
    torch.manual_seed(5)
    x = torch.ones(8, 32, 20, 20).contiguous(memory_format=torch.channels_last)
    y = dropout(x, 0.25)
    assert y.shape == x.shape and y.is_contiguous(memory_format=torch.channels_last)
    assert abs((y == 0).float().mean() - 0.25) < 0.01
    # every channel is dropped at the same rate (a layout bug would leave some untouched)
    per_channel = (y == 0).float().mean(dim=(0, 2, 3))
    assert per_channel.min() > 0.2 and per_channel.max() < 0.3
    sliced = torch.ones(8, 64, 20, 20)[:, ::2]  # not dense: the mask is laid out plainly
    z = dropout(sliced, 0.25)
    assert z.shape == sliced.shape and abs((z == 0).float().mean() - 0.25) < 0.01


def test_bf16_stays_bf16():
    y = dropout(torch.ones(1000, dtype=torch.bfloat16), 0.2)
    assert y.dtype == torch.bfloat16


def test_a_p_fifteen_bits_cannot_hold_is_torch_dropout():
    x = torch.randn(10_000)
    torch.manual_seed(6)
    a = dropout(x, 0.001)
    torch.manual_seed(6)
    assert torch.equal(a, F.dropout(x, 0.001))


def test_module_is_an_nn_dropout_with_no_state():
    layer = Dropout(0.2)
    assert isinstance(layer, nn.Dropout) and layer.state_dict() == {}
    x = torch.ones(1000)
    inplace = Dropout(0.5, inplace=True)
    out = inplace(x)
    assert out is x and (x == 0).any()  # nn.Dropout's inplace contract


def test_attention_written_out_is_sdpa_but_for_the_dropout(monkeypatch):
    from darm.nn import attention

    monkeypatch.setattr(attention, "dropout", lambda x, p: x)  # the weights undropped
    q, k, v = (torch.randn(2, 3, 5, 4) for _ in range(3))
    causal = attention.attention_written_out(q, k, v, 0.1, is_causal=True)
    assert torch.allclose(causal, F.scaled_dot_product_attention(q, k, v, is_causal=True),
                          atol=1e-6)  # fmt: skip
    visible = torch.ones(2, 5, dtype=torch.bool).tril(3)  # 2 new queries after 3 cached keys
    masked = attention.attention_written_out(q[:, :, 3:], k, v, 0.1, attn_mask=visible)
    ref = F.scaled_dot_product_attention(q[:, :, 3:], k, v, attn_mask=visible)
    assert torch.allclose(masked, ref, atol=1e-6)


@pytest.mark.parametrize("mask", ["none", "causal", "attn_mask"])
def test_attention_written_out_without_dropout_is_sdpa(mask):
    from darm.nn import attention

    q, k, v = (torch.randn(2, 3, 5, 4) for _ in range(3))
    kwargs = {"none": {}, "causal": {"is_causal": True}}.get(mask)
    if mask == "attn_mask":  # 2 new queries after 3 cached keys
        q, kwargs = q[:, :, 3:], {"attn_mask": torch.ones(2, 5, dtype=torch.bool).tril(3)}
    ours = attention.attention_written_out(q, k, v, 0.0, **kwargs)
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, **kwargs))


def test_gpt_training_with_dropout_is_causal_and_drops_attention_weights():
    from darm.models import create_model

    torch.manual_seed(0)
    model = create_model("gpt", vocab_size=5, seq_len=8, n_layer=2, n_head=2, n_embd=16,
                         dropout=0.3).train()  # fmt: skip
    x = torch.randint(0, 5, (3, 8))
    torch.manual_seed(7)
    logits = model(x)
    for d in range(8):
        changed = x.clone()
        changed[:, d:] = (changed[:, d:] + 1) % 5
        torch.manual_seed(7)  # the same masks, drawn in the same order
        # logits[:, j] depend on x_<j only: those at j <= d keep still
        assert torch.equal(model(changed)[:, : d + 1], logits[:, : d + 1]), d
    torch.manual_seed(8)
    assert not torch.equal(model(x), logits)  # other masks: dropout is on
    # and under bf16 autocast, where attention is written out in bf16
    with torch.autocast("cpu", torch.bfloat16):
        torch.manual_seed(7)
        assert torch.isfinite(model(x)).all()


def test_attention_weights_are_dropped_at_rate_p_and_rescaled():
    from darm.nn import attention

    S, p = 64, 0.3
    torch.manual_seed(9)
    q, k = torch.randn(2, 2, S, 8), torch.randn(2, 2, S, 8)
    eye = torch.eye(S).expand(2, 2, S, S)  # v = I: the output is the weight matrix itself
    weights = attention.attention_written_out(q, k, eye, p, is_causal=True)
    clean = F.scaled_dot_product_attention(q, k, eye, is_causal=True)
    visible = torch.ones(S, S, dtype=torch.bool).tril().expand(2, 2, S, S)
    dropped = (weights == 0) & visible
    n = int(visible.sum())
    assert abs(dropped.sum() / n - p) < 5 * math.sqrt(p * (1 - p) / n)
    scale = LEVELS / (LEVELS - levels_dropped(p))
    kept = visible & ~dropped
    assert torch.allclose(weights[kept], clean[kept] * scale, rtol=1e-5)
    assert torch.all(weights[~visible] == 0)  # nothing past the causal mask


def test_attention_written_out_refuses_what_it_does_not_do():
    from darm.nn import attention

    q = torch.randn(1, 1, 3, 4)
    with pytest.raises(ValueError, match="not both"):
        attention.attention_written_out(q, q, q, 0.1, is_causal=True,
                                        attn_mask=torch.ones(3, 3, dtype=torch.bool))  # fmt: skip
    with pytest.raises(ValueError, match="must be bool"):
        attention.attention_written_out(q, q, q, 0.1, attn_mask=torch.zeros(3, 3))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_attention_with_dropout_keeps_its_inputs_dtype_eager_and_traced(dtype):
    from darm.nn import attention

    q, k, v = (torch.randn(2, 2, 5, 4, dtype=dtype) for _ in range(3))
    traced = torch.compile(attention.attend, backend="eager", fullgraph=True)  # no Inductor
    for attend in (attention.attend, traced):
        assert attend(q, k, v, 0.1, is_causal=True).dtype == dtype


@pytest.mark.parametrize(
    "name, config, x",
    [
        ("gpt", dict(vocab_size=5, seq_len=8, n_layer=2, n_head=2, n_embd=16, dropout=0.2),
         torch.randint(0, 5, (2, 8))),
        ("gated_pixelcnn", dict(vocab_size=2, seq_len=16, image_shape=(4, 4), n_embd=4, n_hidden=8,
                                n_layer=2, dropout=0.2), torch.randint(0, 2, (2, 16))),
    ],
)  # fmt: skip
@pytest.mark.parametrize("bf16", [False, True])
def test_a_model_training_with_dropout_compiles_in_one_graph(name, config, x, bf16):
    """torch.compile cannot trace random_(): darm's masks step aside for Inductor's. Under
    bf16 autocast too: the written-out attention traces, and the gate's BF16Gate steps
    aside for the plain expression, which Inductor fuses anyway."""
    from darm.models import create_model

    model = create_model(name, **config).train()
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        explained = torch._dynamo.explain(model)(x)
    assert explained.graph_break_count == 0, explained.break_reasons
