"""PixelCNN specifics: the receptive field (blind spot or none), masks, channel order."""

import pytest
import torch
import torch.nn.functional as F

from darm.cli import main
from darm.models import create_model
from darm.nn.masked_conv import MaskedConv2d, channel_groups, raster_mask, row_conv
from tests.conftest import write_pngs

H = W = 8


def influence(name: str, r: int, c: int, **kw) -> torch.Tensor:
    """(H, W) bool: which pixels move the logits of pixel (r, c), by gradient."""
    torch.manual_seed(0)
    model = create_model(
        name, vocab_size=2, seq_len=H * W, image_shape=(H, W), n_embd=4, n_hidden=8, **kw
    )
    x = torch.randint(0, 2, (4, H * W), generator=torch.Generator().manual_seed(1))
    soft = F.one_hot(x, 2).float().requires_grad_()
    model(soft)[:, r * W + c].logsumexp(-1).sum().backward()
    return soft.grad.abs().sum(dim=(0, 2)).view(H, W) > 0


def earlier(r: int, c: int) -> torch.Tensor:
    return (torch.arange(H * W) < r * W + c).view(H, W)


def test_plain_pixelcnn_has_the_blind_spot():
    r, c = 5, 2
    seen = influence("pixelcnn", r, c, n_layer=4, first_kernel=3)
    assert not (seen & ~earlier(r, c)).any()  # causal
    blind = earlier(r, c) & ~seen
    rows, cols = blind.nonzero(as_tuple=True)
    assert len(rows) > 0, "a plain PixelCNN must miss some earlier pixels"
    # the blind spot: above the pixel and to its right, out of reach of stacked kernels
    assert (rows < r).all() and (cols > c).all()
    assert not seen[r - 1, W - 1] and seen[r - 1, c + 1] and seen[r, c - 1]


def test_gated_pixelcnn_sees_every_earlier_pixel():
    for r, c in [(5, 2), (1, 6), (6, 4)]:  # within reach of 4 layers: no blind spot
        seen = influence("gated_pixelcnn", r, c, n_layer=4, first_kernel=7)
        assert torch.equal(seen, earlier(r, c)), f"pixel {(r, c)}"


@pytest.mark.parametrize("name", ["pixelcnn", "gated_pixelcnn"])
def test_channels_are_read_r_then_g_then_b(name):
    """Inside a pixel, channel c sees channels < c of that pixel and no later one."""
    torch.manual_seed(0)
    model = create_model(
        name, vocab_size=4, seq_len=2 * 2 * 3, image_shape=(2, 2, 3), n_hidden=48, n_layer=2
    )  # wide enough that no group's ReLUs are all dead by chance
    x = torch.randint(0, 4, (3, 2, 2, 3))
    base = model(x)
    assert base.shape == (3, 2, 2, 3, 4)  # logits come in the input's own shape
    for ch in range(3):
        x2 = x.clone()
        x2[:, 1, 0, ch] = (x2[:, 1, 0, ch] + 1) % 4
        moved = (model(x2) - base)[:, 1, 0].abs().amax(dim=(0, 2)) > 1e-6  # (3,) per channel
        assert moved.tolist() == [c > ch for c in range(3)], f"changing channel {ch}"


def test_raster_masks_by_hand():
    """3x3 masks of mask A and B for one grey channel and for RGB (3 features, one per
    channel group), and the horizontal stack's row masks, written out."""
    past = [[1, 1, 1], [1, 0, 0], [0, 0, 0]]  # the row above, and left in the row
    for C in (1, 3):
        groups = channel_groups(C, C)
        centre = {"A": torch.ones(C, C).tril(-1), "B": torch.ones(C, C).tril()}  # out >(=) in
        for kind in ("A", "B"):
            mask = raster_mask((3, 3), groups, groups, kind)  # (out, in, 3, 3)
            want = torch.tensor(past, dtype=torch.float).repeat(C, C, 1, 1)
            want[:, :, 1, 1] = centre[kind]
            assert torch.equal(mask, want), (C, kind)
            row = row_conv(C, C, 2, C, kind).mask  # (out, in, 1, 2): the left pixel, then this
            assert torch.equal(row[:, :, 0, 0], torch.ones(C, C))
            assert torch.equal(row[:, :, 0, 1], centre[kind]), (C, kind)


@pytest.mark.parametrize(
    "name, first", [("pixelcnn", "first"), ("gated_pixelcnn", "layers.0.h_conv")]
)
def test_first_conv_masks_a_later_ones_b(name, first):
    """Grey images: the first masked conv hides the current pixel (mask A), every later one
    shows the current pixel's features (mask B), and each sees all of the past in its
    kernel and none of the future. Mask A later on would cost likelihood, not causality."""
    model = create_model(name, vocab_size=3, seq_len=25, image_shape=(5, 5), n_layer=3)
    convs = {k: m for k, m in model.named_modules() if isinstance(m, MaskedConv2d)}
    assert first in convs and len(convs) > 3
    for i, conv in convs.items():
        left, _, top, _ = conv.pad  # the current pixel sits at (top, left) of the kernel
        kh, kw = conv.mask.shape[2:]
        order = torch.arange(kh * kw).view(kh, kw) - (top * kw + left)  # raster order
        seen = conv.mask.amax(dim=(0, 1)) > 0  # (kh, kw)
        assert torch.equal(seen[order < 0], torch.ones_like(seen[order < 0])), i
        assert not seen[order > 0].any(), i
        now = conv.mask[:, :, top, left]  # (out, in) at the current pixel
        assert (now == 0).all() if i == first else (now == 1).all(), f"masked conv {i}"


@pytest.mark.parametrize("name", ["pixelcnn", "gated_pixelcnn"])
def test_masked_weights_are_multiplied_not_edited(name):
    """Masked-out weight entries stay ordinary parameters, and the output ignores them."""
    model = create_model(name, vocab_size=3, seq_len=16, image_shape=(4, 4), n_hidden=8)
    x = torch.randint(0, 3, (2, 16))
    before = model(x)
    convs = [m for m in model.modules() if isinstance(m, MaskedConv2d)]
    assert convs and all(not k.endswith("mask") for k in model.state_dict())
    with torch.no_grad():
        masked = [conv for conv in convs if (conv.mask == 0).any()]
        assert masked
        for conv in masked:
            hidden = conv.mask == 0
            assert conv.weight[hidden].abs().sum() > 0  # initialised, never zeroed in place
            conv.weight[hidden] = 100.0
    torch.testing.assert_close(model(x), before)


def test_image_shape_must_match_seq_len():
    from darm.errors import DarmError

    with pytest.raises(DarmError, match="image_shape"):
        create_model("pixelcnn", vocab_size=2, seq_len=10, image_shape=(3, 3))


def test_gate_of_channels_last_maps_is_the_gate_of_the_same_maps():
    from darm.nn.gate import gate

    h = torch.randn(2, 6, 4, 5)
    last = h.contiguous(memory_format=torch.channels_last)
    out = gate(last)
    a, b = h[:, :3], h[:, 3:]
    assert torch.allclose(out, torch.tanh(a) * torch.sigmoid(b))
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(gate(h), out)


@pytest.mark.parametrize(
    "shape, layout",
    [
        ((2, 8, 5, 6), torch.contiguous_format),  # the PixelCNNs' maps, either layout
        ((2, 8, 5, 6), torch.channels_last),
        ((2, 8, 7), torch.contiguous_format),  # WaveNet's (B, 2C, T)
        ((2, 8), torch.contiguous_format),  # WaveNet's cached step, (B, 2C)
    ],
)
def test_bf16_gate_is_the_plain_expression_to_the_bit_with_its_gradient(shape, layout):
    """gate() on CPU bf16 maps takes tanh in float32 (BF16Gate): the same bits forward and
    backward as autograd through the plain expression, and the input's layout kept. A
    second derivative raises rather than come out wrong."""
    from darm.nn.gate import gate

    torch.manual_seed(0)
    h = (3 * torch.randn(shape)).bfloat16().contiguous(memory_format=layout)
    h.requires_grad_()
    out = gate(h)
    assert out.grad_fn is not None and type(out.grad_fn).__name__ == "BF16GateBackward"
    a, b = h.chunk(2, dim=1)
    plain = torch.tanh(a) * torch.sigmoid(b)
    assert out.dtype == torch.bfloat16 and torch.equal(out, plain)
    assert out.is_contiguous(memory_format=layout)
    g = torch.randn_like(plain)
    (grad,) = torch.autograd.grad(out, h, g)
    (expected,) = torch.autograd.grad(plain, h, g)
    assert torch.equal(grad, expected) and grad.is_contiguous(memory_format=layout)
    (grad,) = torch.autograd.grad(gate(h).square().sum(), h, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad.sum().backward()


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_shift_down_moves_rows_and_its_gradient_back_in_the_same_layout(layout):
    from darm.models.gated_pixelcnn import shift_down

    v = torch.randn(2, 3, 4, 5).contiguous(memory_format=layout).requires_grad_()
    out = shift_down(v)
    assert torch.equal(out, F.pad(v, (0, 0, 1, 0))[:, :, :-1])
    assert out.is_contiguous(memory_format=layout)
    g = torch.randn(2, 3, 4, 5).contiguous(memory_format=layout)
    (grad,) = torch.autograd.grad(out, v, g)
    expected = torch.cat([g[:, :, 1:], torch.zeros(2, 3, 1, 5)], dim=2)
    assert torch.equal(grad, expected) and grad.is_contiguous(memory_format=layout)


@pytest.mark.parametrize("name", ["pixelcnn", "gated_pixelcnn"])
@pytest.mark.parametrize(
    "first_kernel,kernel_size,n_layer", [(3, 3, 1), (7, 3, 3), (3, 5, 2), (5, 7, 2)]
)
def test_rows_above_is_how_far_up_the_last_row_sees(name, first_kernel, kernel_size, n_layer):
    """The reach the note on short sight reports, against the gradients of a pixel of the last
    row: the highest row with any influence on its logits is rows_above up, none higher."""
    torch.manual_seed(0)
    H, W, L = 16, 5, 3
    shape = dict(vocab_size=L, seq_len=H * W, image_shape=(H, W), n_embd=4, n_hidden=8)
    kernels = dict(first_kernel=first_kernel, kernel_size=kernel_size)
    model = create_model(name, **shape, **kernels, n_layer=n_layer).double()
    x = F.one_hot(torch.randint(L, (4, H * W)), L).double().requires_grad_()  # (B, D, L)
    model(x)[:, (H - 1) * W + W // 2].sum().backward()
    touched = x.grad.abs().sum((0, 2)).view(H, W).sum(1) > 0  # (H,): rows with influence
    top = int(touched.nonzero()[0])
    assert top == max(0, H - 1 - model.rows_above)


def test_a_model_blind_to_the_top_of_its_images_says_so(tmp_path, capsys):
    """`darm train` notes when the last rows cannot see the top ones: for a new run only, and
    not when they see all but a row or two."""
    write_pngs(tmp_path / "tall", 12, size=(3, 24))
    base = ["train", "--data", str(tmp_path / "tall"), "--levels", "2", "--model",
            "gated_pixelcnn", "--set", "n_hidden=4", "--set", "n_embd=2", "--steps", "1",
            "--quiet", "--samples", "0"]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "a")]) == 0  # 6 layers of 3x3: 9 rows
    err = capsys.readouterr().err
    assert ("note: gated_pixelcnn sees 9 rows above a pixel: the last rows of the 24-row "
            "images never see the first 14") in err  # fmt: skip
    later = ["--quiet", "--samples", "0", "--steps", "2"]
    assert main(["train", "--out", str(tmp_path / "a"), "--resume", *later]) == 0
    assert "note:" not in capsys.readouterr().err  # said when the model was made
    init = ["--init", str(tmp_path / "a"), "--out", str(tmp_path / "i")]
    assert main(["train", *init, *later]) == 0
    assert "note:" not in capsys.readouterr().err
    wide = ["--set", "kernel_size=5", "--set", "n_layer=10"]  # 1 + 3 + 9 * 2 = 22 of 23
    assert main([*base, *wide, "--out", str(tmp_path / "b")]) == 0
    assert "note:" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "H,above,noted", [(8, 4, True), (8, 5, False), (28, 24, True), (28, 25, False)]
)
def test_the_note_passes_over_two_rows_or_a_tenth(H, above, noted, monkeypatch):
    model = create_model("gated_pixelcnn", vocab_size=2, seq_len=H * 3, image_shape=(H, 3))
    monkeypatch.setattr(type(model), "rows_above", above)
    assert (model.short_sight() is not None) == noted


def test_a_family_of_ones_own_that_does_not_say_its_reach_gets_no_note():
    from darm.models.pixelcnn import PixelCNN, RasterModel

    class Mine(PixelCNN):
        rows_above = RasterModel.rows_above  # the base's: not known

    model = Mine(create_model("pixelcnn", vocab_size=2, seq_len=784, image_shape=(28, 28)).config)
    assert model.rows_above is None and model.short_sight() is None
