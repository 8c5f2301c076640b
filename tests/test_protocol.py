"""The one protocol, checked for every registered model (a new family is covered for free)."""

import pytest
import torch

from darm.check import check_cache, check_causal, check_normalised
from darm.errors import DarmError
from darm.metrics import log_prob
from darm.sampling import sample
from tests.conftest import tiny_model


@pytest.mark.parametrize("conditional", [False, True])
def test_causality(model_name, conditional):
    """logits at d never move when x_j, j >= d, changes (darm.check), and do move with
    x_{d-1}, so the check could fail."""
    L, D = 5, 7
    model = tiny_model(model_name, L, D, num_classes=3 if conditional else 0)
    D = model.num_dims  # an image case brings its own shape
    x = torch.randint(0, L, (4, D), generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 1]) if conditional else None
    check_causal(model, x, y)
    base = model(x, y).reshape(4, D, L)  # (B, *event_shape, L) -> (B, D, L)
    for d in range(1, D):
        x3 = x.clone()
        x3[:, d - 1] = (x[:, d - 1] + 1) % L
        assert not torch.allclose(model(x3, y).reshape(4, D, L)[:, d], base[:, d], atol=1e-6)


@pytest.mark.parametrize("conditional", [False, True])
def test_every_weight_is_trained(model_name, conditional):
    """Every parameter gets a gradient from the NLL: one that gets none is dead weight, in
    the model's size, in each step's work, and under DDP (a search for unused parameters
    every step)."""
    model = tiny_model(model_name, num_classes=3 if conditional else 0)
    x = torch.randint(0, 5, (4, model.num_dims), generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 2, 1]) if conditional else None
    log_prob(model, x, cond=y).sum().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_label_changes_logits(model_name):
    model = tiny_model(model_name, num_classes=3)
    x = torch.randint(0, 5, (2, model.num_dims))
    a = model(x, torch.tensor([0, 1]))
    b = model(x, torch.tensor([1, 0]))
    assert not torch.allclose(a[0], b[0]) and not torch.allclose(a[1], b[1])


@pytest.mark.parametrize("conditional", [False, True])
def test_batch_rows_are_independent(model_name, conditional):
    """Row i's logits depend on row i alone (its symbols and its label), never on the
    other rows of the batch."""
    model = tiny_model(model_name, num_classes=3 if conditional else 0)
    x = torch.randint(0, 5, (4, model.num_dims), generator=torch.Generator().manual_seed(7))
    y = torch.tensor([0, 1, 2, 1]) if conditional else None
    full = model(x, y)
    for i in range(4):
        alone = model(x[i : i + 1], None if y is None else y[i : i + 1])
        torch.testing.assert_close(alone, full[i : i + 1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("conditional", [False, True])
def test_normalisation(model_name, conditional):
    """sum over all L^D sequences of p(x | y) is exactly 1 for every label (D=3, L=3;
    images up to D=9), by darm.check."""
    model = tiny_model(model_name, 3, 3, num_classes=2 if conditional else 0)
    check_normalised(model)


def test_dropout_is_off_in_eval(model_name):
    """With dropout 0.5 the model in eval mode gives exactly the logits of the same weights
    without dropout, in the forward pass, every cached step and sampling; in train mode it
    does not (so the test can fail)."""
    plain = tiny_model(model_name, num_classes=3)
    if getattr(plain.config, "n_hidden", 1) == 0:  # the log-linear markov has no hidden units
        with pytest.raises(DarmError, match="dropout needs the MLP form"):
            tiny_model(model_name, num_classes=3, dropout=0.5)
        return
    model = tiny_model(model_name, num_classes=3, dropout=0.5)  # the same weights (seeded)
    x = torch.randint(0, 5, (3, model.num_dims), generator=torch.Generator().manual_seed(6))
    y = torch.tensor([0, 2, 1])
    want = plain(x, y)
    for seed in (1, 2):  # live dropout would draw other masks under another seed
        torch.manual_seed(seed)
        torch.testing.assert_close(model(x, y), want, atol=1e-6, rtol=0)
    cache, prev = model.init_cache(3), None
    with torch.no_grad():
        for d in range(model.num_dims):
            got = model.step(prev, cache, y)
            torch.testing.assert_close(got, want.flatten(1, -2)[:, d], atol=1e-5, rtol=1e-5)
            prev = x[:, d]
    a = sample(model, 3, cond=y, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, sample(plain, 3, cond=y, generator=torch.Generator().manual_seed(3)))
    model.train()
    assert not torch.allclose(model(x, y), want)


def test_cache_reset_starts_over(model_name):
    """A used cache, reset, gives the logits of a fresh one."""
    model = tiny_model(model_name)
    x = torch.randint(0, 5, (2, model.num_dims), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        fresh, used = model.init_cache(2), model.init_cache(2)
        for d in range(model.num_dims - 1):
            model.step(None if d == 0 else x[:, d - 1], used, None)
        used.reset()
        prev = None
        for d in range(model.num_dims):
            torch.testing.assert_close(model.step(prev, used, None), model.step(prev, fresh, None))
            prev = x[:, d]


def test_steps_out_of_order_are_refused(model_name):
    """step(None) first, a symbol at every later step, prefill on a fresh cache only: a symbol
    at t = 0 would be written before the first position and silently change the logits."""
    model = tiny_model(model_name)
    x = torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        cache = model.init_cache(2)
        with pytest.raises(ValueError, match="step got a symbol at t = 0"):
            model.step(x, cache)
        model.step(None, cache)
        with pytest.raises(ValueError, match="step got None at t = 1"):
            model.step(None, cache)
        with pytest.raises(ValueError, match="fresh cache"):
            model.prefill(x[:, None], cache)
        # one symbol per sequence of the cache: not (B, 1), not another batch's
        for wrong in (x[:, None], torch.zeros(3, dtype=torch.long)):
            with pytest.raises(ValueError, match=r"cache's 2 sequences, shape \(2,\), got"):
                model.step(wrong, cache)
        model.step(x, cache)  # and the cache is still usable


@pytest.mark.parametrize("conditional", [False, True])
def test_cached_step_equals_forward(model_name, conditional):
    """step through the cache, and prefill, == the full forward pass (darm.check)."""
    model = tiny_model(model_name, 5, 7, num_classes=4 if conditional else 0)
    x = torch.randint(0, 5, (3, model.num_dims), generator=torch.Generator().manual_seed(2))
    check_cache(model, x, torch.tensor([3, 0, 1]) if conditional else None)


def test_cached_sampling_equals_naive(model_name):
    model = tiny_model(model_name)
    kw = dict(temperature=0.9, top_k=4)
    a = sample(model, 6, generator=torch.Generator().manual_seed(3), **kw)
    b = sample(model, 6, generator=torch.Generator().manual_seed(3), use_cache=False, **kw)
    assert torch.equal(a, b)


def test_prefix_is_kept(model_name):
    model = tiny_model(model_name)
    prefix = torch.tensor([[1, 2, 3], [4, 0, 1]])
    x = sample(model, 2, prefix=prefix, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, *model.event_shape)
    x = x.flatten(1)  # (2, D) in generation order
    assert torch.equal(x[:, :3], prefix)


@pytest.mark.parametrize("conditional", [False, True])
def test_greedy_sampling_follows_the_prefix_and_the_label(model_name, conditional):
    """sample(top_k=1) after a prefix is the argmax path of the full forward pass from that
    prefix (and label): the prefix is read, not only copied into the output. Weight matrices
    are scaled up so the argmax path depends on the prefix, which is checked, so a sampler
    that ignored the prefix would fail here."""
    L, B = 5, 4
    model = tiny_model(model_name, L, 7, num_classes=3 if conditional else 0)
    with torch.no_grad():  # the biases as they are: a head bias times 4 picks alone
        for w in model.parameters():
            w.mul_(4 if w.ndim > 1 else 1)
    D = model.num_dims
    P = D // 2
    y = torch.tensor([0, 2, 1, 1]) if conditional else None

    def argmax_path(prefix):  # (B, P) -> (B, D), one position at a time from the forward
        x = torch.zeros(B, D, dtype=torch.long)
        x[:, :P] = prefix
        with torch.no_grad():
            for d in range(P, D):
                logits = model(x.view(B, *model.event_shape), y).reshape(B, D, L)  # flat
                x[:, d] = logits[:, d].argmax(-1)
        return x

    prefixes = (torch.randint(0, L, (B, P), generator=torch.Generator().manual_seed(s))
                for s in range(10))  # fmt: skip
    prefix = next(prefixes)
    want = argmax_path(prefix)
    assert any(not torch.equal(want[:, P:], argmax_path(other)[:, P:]) for other in prefixes)
    got = sample(model, B, cond=y, prefix=prefix, top_k=1)
    assert torch.equal(got.reshape(B, D), want)


@pytest.mark.parametrize("conditional", [False, True])
def test_one_hot_input_matches_symbols(model_name, conditional):
    """model(one_hot(x)) == model(x), and is differentiable in the one-hot input."""
    L, D = 5, 7
    model = tiny_model(model_name, L, D, num_classes=3 if conditional else 0)
    D = model.num_dims
    x = torch.randint(0, L, (3, D), generator=torch.Generator().manual_seed(4))
    y = torch.tensor([0, 2, 1]) if conditional else None
    soft = torch.nn.functional.one_hot(x, L).float().requires_grad_()
    logits = model(soft, y)
    torch.testing.assert_close(logits, model(x, y), atol=1e-5, rtol=1e-5)
    logits[:, -1].logsumexp(-1).sum().backward()
    assert soft.grad[:, -1].abs().max() == 0  # the last position cannot see itself
    assert soft.grad[:, -2].abs().max() > 0


@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("P", [0, 1, 4])
def test_prefill_equals_steps(model_name, conditional, P):
    """prefill(prefix) == step(None), step(prefix[:, 0]), ...: the logits of position P and
    of the next steps after it, so the cache it leaves is the same too."""
    L, D, B = 5, 7, 3
    model = tiny_model(model_name, L, D, num_classes=4 if conditional else 0)
    D = model.num_dims
    x = torch.randint(0, L, (B, D), generator=torch.Generator().manual_seed(5))
    y = torch.tensor([3, 0, 1]) if conditional else None
    with torch.no_grad():
        fast, slow = model.init_cache(B), model.init_cache(B)
        got = model.prefill(x[:, :P], fast, y)
        want = model.step(None, slow, y)
        for p in range(P):
            want = model.step(x[:, p], slow, y)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        assert fast.t == slow.t == P + 1
        for d in range(P, D - 1):
            got, want = model.step(x[:, d], fast, y), model.step(x[:, d], slow, y)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_prefill_names_a_prefix_of_the_wrong_shape(model_name):
    """A (P,) prefix, or one for another number of sequences than the cache holds, is
    refused by name, not by an indexing error deep in a family."""
    model = tiny_model(model_name)
    for prefix in (torch.zeros(3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long)):
        with pytest.raises(ValueError, match="prefill takes a prefix for each of the cache"):
            model.prefill(prefix, model.init_cache(4))


@pytest.mark.parametrize("conditional", [False, True])
def test_cached_sampling_with_prefix_equals_naive(model_name, conditional):
    model = tiny_model(model_name, num_classes=3 if conditional else 0)
    y = torch.tensor([0, 2, 1, 1]) if conditional else None
    for P in (0, 3, model.num_dims):
        prefix = torch.randint(0, 5, (4, P), generator=torch.Generator().manual_seed(P))
        kw = dict(cond=y, prefix=prefix, temperature=1.1, top_p=0.9, stop_token=4)
        a = sample(model, 4, generator=torch.Generator().manual_seed(3), **kw)
        b = sample(model, 4, generator=torch.Generator().manual_seed(3), use_cache=False, **kw)
        assert torch.equal(a, b)


def test_a_redefined_family_registers_again_another_class_does_not(monkeypatch):
    from darm.data import load_data
    from darm.models import registry
    from darm.models.markov import Markov, MarkovConfig
    from darm.train import check_model_fits

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    def define():  # a notebook cell run twice: a new class object, the same name
        class Mine(Markov):
            family = "mine"

        return Mine

    registry.register_model("mine", define(), MarkovConfig, "a test family")
    before = registry.create_model("mine", vocab_size=17, seq_len=64)
    registry.register_model("mine", define(), MarkovConfig, "a test family, again")
    assert registry.get_entry("mine").doc == "a test family, again"
    check_model_fits(before, "mine", load_data("digits"))  # made before the cell ran again
    with pytest.raises(ValueError, match="model name 'mine' is taken by .*Mine; register Lin"):
        registry.register_model("mine", type("Lin", (Markov,), {}), MarkovConfig, "another")
    # darm's own names are darm's, even for one of its classes (a bigram of k=3 would load,
    # without the import, as darm's k=1 bigram)
    with pytest.raises(ValueError, match="model name 'gpt' is darm's own; register yours"):
        registry.register_model("gpt", define(), MarkovConfig, "not a gpt")
    with pytest.raises(ValueError, match="model name 'bigram' is darm's own"):
        registry.register_model("bigram", Markov, MarkovConfig, "hijacked", k=3, n_hidden=0)
    entry = registry.get_entry("bigram")  # as darm registers it: accepted, changing nothing
    registry.register_model("bigram", Markov, MarkovConfig, entry.doc, fixed=entry.fixed,
                            **entry.defaults)  # fmt: skip
    with pytest.raises(ValueError, match="the config <class 'dict'> is not a dataclass"):
        registry.register_model("mine", define(), dict, "a config darm cannot build")
    with pytest.raises(ValueError, match="is not an ARModel subclass"):
        registry.register_model("mine", torch.nn.Linear, MarkovConfig, "not a model")

    class Documented(Markov):
        """A family whose docstring's first line is its description.

        Not this line."""

    registry.register_model("documented", Documented, MarkovConfig)  # no doc: the docstring's
    assert registry.get_entry("documented").doc == (
        "A family whose docstring's first line is its description."
    )


def test_a_split_where_a_dataset_is_wanted_is_named(tmp_path):
    from darm.data import load_data
    from darm.models import create_model
    from darm.train import train
    from darm.train_config import TrainConfig

    data = load_data("digits")
    with pytest.raises(TypeError, match="got TensorSplit \\(data\\['train'\\] is one of its"):
        create_model("gpt", data["train"])
    with pytest.raises(TypeError, match="data must be a darm.data Dataset"):
        train(create_model("gpt", data), "gpt", data["test"], TrainConfig(steps=1), tmp_path)


def test_a_name_keeps_what_it_stands_for():
    """bigram is markov with k=1 and no hidden layer, gru an rnn with a GRU cell: an override
    that would make them something else is refused; other fields stay free."""
    from darm.models import create_model

    with pytest.raises(DarmError, match="bigram is markov with k=1, n_hidden=0.*for k=3"):
        create_model("bigram", vocab_size=5, seq_len=4, k=3)
    with pytest.raises(DarmError, match="gru is rnn with cell='gru'.*use the model 'rnn'"):
        create_model("gru", vocab_size=5, seq_len=4, cell="lstm")
    assert create_model("bigram", vocab_size=5, seq_len=4, k=1).config.k == 1  # no change
    assert create_model("rnn", vocab_size=5, seq_len=4, cell="lstm").config.cell == "lstm"
    assert create_model("gru", vocab_size=5, seq_len=4, n_hidden=8).config.n_hidden == 8


def test_a_pixelcnn_that_would_see_nothing_is_refused():
    from darm.models import create_model

    with pytest.raises(DarmError, match="first_kernel must be >= 3"):
        create_model("pixelcnn", vocab_size=2, seq_len=16, image_shape=(4, 4), first_kernel=1)
    gated = create_model("gated_pixelcnn", vocab_size=2, seq_len=16, image_shape=(4, 4),
                         first_kernel=1)  # fmt: skip
    assert gated.config.first_kernel == 1  # its stacks see the past whatever the kernel


def test_a_new_model_past_its_data_is_refused_and_a_saved_one_loads():
    """A markov memory longer than D, a kernel wider than 2 * max(H, W) - 1 see nothing more;
    a default kernel passes on the smallest pictures, and a saved config loads as built."""
    from darm.models import create_model
    from darm.models.registry import build_model

    with pytest.raises(DarmError, match="k=8 is more than D=4.*the default 3 always passes"):
        create_model("markov", vocab_size=5, seq_len=4, k=8)
    saved = dict(vocab_size=5, seq_len=4, k=8, n_embd=4, n_hidden=8)
    assert build_model("markov", None, saved, saved=True).config.k == 8
    assert create_model("markov", vocab_size=5, seq_len=1).config.k == 3  # the default, D=1
    picture = dict(vocab_size=2, seq_len=4, image_shape=(2, 2), n_hidden=8, n_layer=1)
    with pytest.raises(DarmError, match="first_kernel=9 is wider than 2x2 pictures can use: at"):
        create_model("gated_pixelcnn", **picture, first_kernel=9)
    with pytest.raises(DarmError, match=r"kernel_size=5 is wider than 2x2 .*default 3 always"):
        create_model("pixelcnn", **picture, kernel_size=5)
    assert create_model("gated_pixelcnn", **picture).config.first_kernel == 7  # the default
    assert create_model("pixelcnn", **picture, first_kernel=3).config.first_kernel == 3


@pytest.mark.parametrize("num_classes", [0, 3])
def test_a_fresh_log_linear_table_starts_near_uniform(num_classes):
    """Its entries are logits: N(0, 1) would start it far worse than guessing uniformly."""
    import math

    from darm.metrics import log_prob
    from darm.models import create_model

    torch.manual_seed(0)
    L, D = 27, 16
    model = create_model("bigram", vocab_size=L, seq_len=D, num_classes=num_classes)
    x = torch.randint(0, L, (64, D))
    y = torch.randint(0, 3, (64,)) if num_classes else None
    per_symbol = -log_prob(model, x, y).mean() / D
    assert abs(per_symbol - math.log(L)) < 0.05


def test_a_colour_pixelcnn_with_a_1x1_first_layer_still_sees_the_past():
    from darm.models import create_model

    torch.manual_seed(0)  # (a unit that ReLU leaves dead for one input could hide it)
    model = create_model("pixelcnn", vocab_size=2, seq_len=48, image_shape=(4, 4, 3),
                         first_kernel=1, n_embd=4, n_hidden=24, n_layer=2)  # fmt: skip
    check_causal(model, torch.randint(0, 2, (2, 48)))
    x = torch.zeros(1, 48, dtype=torch.long)
    bumped = x.clone()
    bumped[0, 0] = 1  # pixel 0's red reaches the next pixel through the other channels
    assert not torch.allclose(model(x)[0, 3:6], model(bumped)[0, 3:6])
