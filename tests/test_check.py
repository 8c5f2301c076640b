"""darm.check: every registered model passes it, and each classic mistake fails it by name."""

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from darm.check import (
    ProtocolError,
    check_cache,
    check_causal,
    check_model,
    check_normalised,
)
from darm.errors import DarmError
from darm.models.base import ARModel, embed, shift_right
from tests.conftest import tiny_model

# what check_model runs on an unconditional model small enough to enumerate
ALL = ["deterministic", "causal", "rows independent", "cache", "one-hot", "normalised"]


@dataclass
class Config:
    vocab_size: int = 3
    seq_len: int = 4
    num_classes: int = 0


class Bigram(ARModel):
    """p(x_d | x_{d-1}) from a table: a correct model with the default recomputing cache."""

    family = "bigram_test"

    def __init__(self, config, peek: bool = False):
        super().__init__(config)
        self.peek = peek
        self.table = nn.Embedding(config.vocab_size + 1, config.vocab_size)  # + start symbol
        torch.nn.init.normal_(self.table.weight, std=2.0)

    def forward(self, x, cond=None):
        # the classic off-by-one: forgetting the shift lets position d read x_d itself
        return embed(self.table, x if self.peek else shift_right(x, self.config.vocab_size))


class StaleCache(Bigram):
    """A cache that forgets to store the symbol it is fed: every step sees the start symbol."""

    def step(self, x_prev, cache, cond=None):
        return super().step(None if x_prev is None else torch.zeros_like(x_prev), cache, cond)


class ExtraLogit(Bigram):
    """L + 1 outputs (the start symbol's too): a softmax that leaks mass."""

    def forward(self, x, cond=None):
        return torch.cat([super().forward(x), torch.zeros(*x.shape[:2], 1)], dim=-1)


def test_every_registered_model_passes(model_name):
    model = tiny_model(model_name, 3, 3, num_classes=2)
    assert check_model(model) == [
        "deterministic", "causal", "rows independent", "label", "cache", "one-hot", "normalised"
    ]  # fmt: skip


def test_a_correct_model_of_ones_own_passes():
    assert check_model(Bigram(Config())) == ALL


def test_a_model_that_sees_its_own_symbol_fails_causality_and_normalisation():
    model = Bigram(Config(), peek=True)
    with pytest.raises(
        ProtocolError,
        match="position 0 moved .* when x_0.. changed: the conditional of x_0 sees x_0$",
    ):
        check_causal(model)
    with pytest.raises(ProtocolError, match="sequences sum to .*, not 1"):
        check_normalised(model)


def test_a_stale_cache_fails_the_cache_check():
    model = StaleCache(Config())
    check_causal(model)  # the forward pass is right
    with pytest.raises(ProtocolError, match="step 1 through the cache is .* away"):
        check_cache(model)


def test_logits_of_the_wrong_shape_are_named():
    with pytest.raises(ProtocolError, match=r"logits have shape \(3, 4, 4\), expected \(3, 4, 3\)"):
        check_model(ExtraLogit(Config()))


def test_a_model_too_big_to_enumerate_is_checked_without_normalisation():
    model = Bigram(Config(vocab_size=10, seq_len=6))  # 10^6 sequences
    assert check_model(model) == ALL[:-1]
    with pytest.raises(ValueError, match="L\\^D = 10\\^6 sequences; build a tiny model"):
        check_normalised(model)


@dataclass
class ImageConfig(Config):
    image_shape: tuple = (2, 3, 1)
    seq_len: int = 6


class RasterBigram(Bigram):
    """An image model that insists on (B, H, W, C) input, as the protocol lets it."""

    @property
    def event_shape(self):
        return self.config.image_shape

    def forward(self, x, cond=None):
        picture = x.shape[1:4]  # one-hot input has a last axis of L beyond (H, W, C)
        assert picture == self.event_shape, f"wants (B, H, W, C), got {tuple(x.shape)}"
        flat = super().forward(x.reshape(len(x), 6, *x.shape[4:]))  # (B, H, W, C, ...) ->
        # (B, D, ...): raster order
        return flat.view(len(x), *picture, -1)  # (B, D, L) -> (B, H, W, C, L)


def test_image_models_are_checked_on_pictures_given_either_way():
    model = RasterBigram(ImageConfig())
    assert check_model(model) == ALL
    x = torch.randint(0, 3, (3, 2, 3, 1), generator=torch.Generator().manual_seed(0))
    check_cache(model, x)  # (B, H, W, C) as well as (B, D)
    with pytest.raises(ProtocolError, match="position 4 moved .* when x_4.. changed: .* sees x_5$"):
        check_causal(LastPixelLeak(ImageConfig()), x)  # each dimension perturbed, not each row


class LastPixelLeak(RasterBigram):
    """Correct but for one pixel: the second-to-last also reads the last."""

    def forward(self, x, cond=None):
        logits = super().forward(x).reshape(len(x), 6, -1)  # (B, H, W, C, L) -> (B, D, L)
        leak = torch.zeros_like(logits)
        leak[:, 4] = self.table(x.reshape(len(x), -1)[:, 5])  # position 4 sees x_5
        return (logits + leak).view(*x.shape, -1)  # (B, D, L) -> (B, H, W, C, L)


class DropoutAlwaysOn(Bigram):
    def forward(self, x, cond=None):
        return F.dropout(super().forward(x), 0.5)  # training=self.training forgotten


class BatchNormalised(Bigram):
    def forward(self, x, cond=None):
        h = super().forward(x)
        return h - h.mean(dim=0)  # statistics over the batch: rows depend on each other


class IgnoresLabel(Bigram):
    def forward(self, x, cond=None):
        return super().forward(x)


class NoOneHot(Bigram):
    def forward(self, x, cond=None):
        return self.table(shift_right(x, self.config.vocab_size))  # nn.Embedding: symbols only


class ArgmaxOneHot(Bigram):
    """Reads one-hot floats back as symbols: the right logits, but no gradient to the input."""

    def forward(self, x, cond=None):
        return super().forward(x.argmax(-1) if x.is_floating_point() else x)


class NeedsAllPositions(Bigram):
    """A MADE-style model: forward takes exactly D positions."""

    def forward(self, x, cond=None):
        assert x.shape[1] == self.config.seq_len, "needs all D positions"
        return super().forward(x)


class NoStartRow(Bigram):
    def __init__(self, config):
        super().__init__(config)
        self.table = nn.Embedding(config.vocab_size, config.vocab_size)  # the +1 forgotten


class ForgetfulPrefill(Bigram):
    """A prefill whose logits are right but which leaves the cache at its start."""

    def prefill(self, prefix, cache, cond=None):
        logits = super().prefill(prefix, cache, cond)
        cache.t = 0
        return logits


class StepOfWrongShape(Bigram):
    def step(self, x_prev, cache, cond=None):
        return super().step(x_prev, cache, cond)[:, None]  # (B, 1, L): broadcasts, silently


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (ForgetfulPrefill(Config()), "step 3 failed: ValueError: step got a symbol at t = 0"),
        (StepOfWrongShape(Config()), "step 0 returned \\(3, 1, 3\\), expected .* \\(3, 3\\)"),
        (DropoutAlwaysOn(Config()), "eval mode differ .*(pass training=self.training)"),
        (BatchNormalised(Config()), "row 0's logits alone differ .* rows depend on each other"),
        (IgnoresLabel(Config(num_classes=3)), "do not depend on the label: .* ignores cond"),
        (NoOneHot(Config()), "model\\(one-hot x\\) failed: RuntimeError: .*embed and shift_right"),
        (ArgmaxOneHot(Config()), "no gradient reaches the one-hot input from the logits"),
        (NeedsAllPositions(Config()), "step 0 failed: AssertionError: .* fixed_length = True"),
        (NoStartRow(Config()), "model\\(x\\) failed: IndexError: .* vocab_size \\+ 1 rows"),
    ],
    ids=[
        "prefill",
        "step-shape",
        "dropout",
        "batch",
        "label",
        "one-hot",
        "one-hot-gradient",
        "fixed-length",
        "start-row",
    ],  # fmt: skip
)
def test_each_rule_broken_is_named(model, message):
    with pytest.raises(ProtocolError, match=message):
        check_model(model)


@pytest.mark.parametrize("family", [NoOneHot, ArgmaxOneHot])
def test_a_dependency_map_of_a_family_without_one_hot_gradients_is_one_line(family):
    """darm deps (and compare's maps) differentiate through one-hot input: a family that
    cannot take it, or cuts its gradient, gets a DarmError naming check_model."""
    from darm.deps import dependency_map

    with pytest.raises(DarmError, match="differentiates the logits through one-hot input.*"
                       "check_model says what the family lacks"):  # fmt: skip
        dependency_map(family(Config()), torch.randint(0, 3, (2, 4)))


def test_a_fixed_length_model_steps_through_the_padded_prefix():
    model = NeedsAllPositions(Config())
    model.fixed_length = True  # the fallback step then feeds all D positions
    assert check_model(model) == ALL
    from darm.sampling import sample

    a = sample(model, 4, generator=torch.Generator().manual_seed(0))
    b = sample(model, 4, generator=torch.Generator().manual_seed(0), use_cache=False)
    assert torch.equal(a, b) and a.shape == (4, 4)


def test_a_conditional_model_checked_on_given_symbols_gets_labels_drawn():
    model = tiny_model("gpt", 3, 3, num_classes=2)
    x = torch.randint(0, 3, (4, 3), generator=torch.Generator().manual_seed(0))
    from darm.check import check_label

    check_label(model, x)  # no cond given: random labels for x's rows, not a crash
    check_cache(model, x)
