import itertools
import math
import sys

import numpy as np
import pytest
import torch

from darm.data import load_data
from darm.metrics import NLL, evaluate, log_prob
from darm.sampling import filter_logits, sample
from tests.conftest import Terminal, tiny_model


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 4.0, 2.0, 3.0]])
    kept = filter_logits(logits, top_k=2).isfinite()
    assert kept.tolist() == [[False, True, False, True]]


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = filter_logits(probs.log(), top_p=0.75).isfinite()
    assert kept.tolist() == [[True, True, False, False]]
    kept = filter_logits(probs.log(), top_p=0.5).isfinite()
    assert kept.tolist() == [[True, False, False, False]]
    # a nucleus whose mass is p exactly, up to the rounding of the sums (0.5 is 0.49999997
    # through float32's log and softmax; 0.6 + 0.3 is 0.8999999999999999 in float64)
    exact = filter_logits(torch.tensor([[0.5, 0.4, 0.1]]).log(), top_p=0.5).isfinite()
    assert exact.tolist() == [[True, False, False]]
    probs64 = torch.tensor([[0.6, 0.3, 0.1]], dtype=torch.float64)
    assert filter_logits(probs64.log(), top_p=0.9).isfinite().tolist() == [[True, True, False]]
    # bf16 logits' nucleus summed in float32: log 0.3 in bf16 leaves the first three 0.8996
    bf16 = torch.tensor([[0.3, 0.3, 0.3, 0.1]]).log().bfloat16()
    assert bf16.double().softmax(-1)[0, :3].sum() < 0.9  # so all four stay
    assert filter_logits(bf16, top_p=0.9).isfinite().all()
    for k in (np.int64(2), torch.tensor(2)):  # integers of numpy and torch are integers
        assert filter_logits(probs.log(), top_k=k).isfinite().sum() == 2
    # symbols as likely as the nucleus's last one stay with it, as top-k keeps its ties
    tied = torch.tensor([[1.0, 1.0, 1.0, 0.0, -1.0], [0.0, 1.0, 1.0, 1.0, -1.0]])
    kept = filter_logits(tied, top_p=0.5).isfinite()
    assert kept.tolist() == [[True, True, True, False, False], [False, True, True, True, False]]


def test_temperature_sharpens():
    logits = torch.tensor([[1.0, 2.0]])
    cold = filter_logits(logits, temperature=0.1).softmax(-1)
    assert cold[0, 1] > 0.99
    # so low that logits / T overflows: its limit, all mass on the argmax (no NaN)
    frozen = filter_logits(torch.tensor([[1.0, 2.0, float("-inf")]]), temperature=1e-45)
    assert frozen.softmax(-1).tolist() == [[0.0, 1.0, 0.0]]
    # the limit keeps ties, as it does before the overflow and as top_k=1 does
    tied = torch.tensor([[3.0, 3.0, 1.0]])
    for T in (1e-30, 1e-45):
        assert filter_logits(tied, temperature=T).softmax(-1).tolist() == [[0.5, 0.5, 0.0]]
    # per row: a row beside an overflowing one keeps its own distribution
    rows = filter_logits(torch.tensor([[0.0, 0.0], [1.0, 2.0]]), temperature=1e-45)
    assert rows.softmax(-1).tolist() == [[0.5, 0.5], [0.0, 1.0]]


def sequence_probs(model, L: int, temperature=1.0, top_k=None, top_p=None) -> torch.Tensor:
    """(L**2,) probability of each length-2 sequence under the sampler's settings, worked out
    here from the model's logits: temperature, then the k most likely symbols, then the
    fewest most likely symbols whose probability reaches top_p, renormalised."""
    every = torch.tensor(list(itertools.product(range(L), repeat=2)))  # (L**2, 2)
    with torch.no_grad():
        probs = (model(every) / temperature).softmax(-1)  # (L**2, 2, L)
    for row in probs.view(-1, L):
        order = row.argsort(descending=True)
        keep = len(order) if top_k is None else top_k
        if top_p is not None:
            keep = min(keep, int((row[order].cumsum(0) < top_p).sum()) + 1)
        row[order[keep:]] = 0
        row /= row.sum()
    first = probs[:, 0].gather(1, every[:, :1])[:, 0]  # p(x1), from row x1's start
    second = probs[:, 1].gather(1, every[:, 1:])[:, 0]  # p(x2 | x1)
    return first * second


@pytest.mark.parametrize(
    "kw", [dict(), dict(temperature=0.5), dict(top_k=2), dict(top_p=0.7, temperature=1.5)]
)
def test_samples_follow_the_filtered_distribution(kw):
    """20,000 draws of a length-2 model against the distribution the settings define,
    computed independently of the sampler: a chi-square test at p = 0.001, and never a
    sequence the filters rule out."""
    from scipy.stats import chi2

    L, n = 3, 20_000
    model = tiny_model("gpt", L, 2)
    with torch.no_grad():  # sharper than at initialisation, so the filters cut something
        for w in model.parameters():
            w.mul_(3)
    p = sequence_probs(model, L, **kw).double()
    x = sample(model, n, generator=torch.Generator().manual_seed(0), **kw)
    counts = torch.bincount(x[:, 0] * L + x[:, 1], minlength=L * L).double()
    assert counts[p == 0].sum() == 0, "drew a sequence the filters rule out"
    allowed = p > 0
    statistic = float(((counts - n * p)[allowed] ** 2 / (n * p)[allowed]).sum())
    assert chi2.sf(statistic, int(allowed.sum()) - 1) > 1e-3, (statistic, kw)
    if kw:  # the settings matter: these counts would fail against the plain distribution
        plain = sequence_probs(model, L).double()
        assert float(((counts - n * plain) ** 2 / (n * plain)).sum()) > 100


def test_nll_units():
    """nats -> bits per dimension and perplexity, against numbers worked out by hand."""
    nll = NLL(nats=10 * math.log(2), examples=2, dims=10)  # 1 bit a dimension
    assert nll.nats_per_example == pytest.approx(5 * math.log(2))
    assert nll.nats_per_dim == pytest.approx(math.log(2))
    assert nll.bits_per_dim == pytest.approx(1.0)
    assert nll.perplexity == pytest.approx(2.0)


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(top_k=0), "top_k must be an integer >= 1"),
        (dict(top_k=2.5), "top_k must be an integer >= 1, got 2.5"),
        (dict(top_p=0.0), "top_p must be in"),
        (dict(top_p=1.5), "top_p must be in"),
        (dict(temperature=0.0), "temperature must be finite and > 0"),
        (dict(temperature=float("nan")), "temperature must be finite and > 0"),
        (dict(temperature=float("inf")), "temperature must be finite and > 0, got inf"),
    ],
)
def test_bad_filter_settings_are_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        filter_logits(torch.zeros(1, 4), **kw)


def test_max_dims_says_how_far_sampling_goes(model_name):
    model = tiny_model(model_name)
    D = model.num_dims
    if model.max_dims is None:  # unbounded: twice D is drawn
        assert sample(model, 2, num_dims=2 * D).shape == (2, 2 * D)
    else:
        assert model.max_dims == D and sample(model, 2, num_dims=D).shape == (2, D)
        for use_cache in (True, False):  # one message, whichever path would draw
            with pytest.raises(ValueError, match=f"generates at most {D} symbols .* for {D + 1}"):
                sample(model, 2, num_dims=D + 1, use_cache=use_cache)


def test_uncached_sampling_goes_past_d_like_the_cache(model_name):
    """A 1-D model without a fixed context samples longer than its D with or without the
    cache, the same draws for the same generator."""
    model = tiny_model(model_name)
    if model.max_dims is not None:
        pytest.skip("generates at most its D symbols")
    D = model.num_dims
    runs = [
        sample(model, 3, num_dims=2 * D, generator=torch.Generator().manual_seed(1), use_cache=c)
        for c in (True, False)
    ]
    assert runs[0].shape == (3, 2 * D) and torch.equal(*runs)


def test_seed_reproduces_and_stop_token_pads():
    model = tiny_model("markov")
    with torch.no_grad():  # a likely stop token: rows stop at different positions
        model.head.bias[0] += 1.0

    def draw(**kw):
        return sample(model, 16, generator=torch.Generator().manual_seed(7), stop_token=0, **kw)

    a = draw()
    assert torch.equal(a, draw()) and torch.equal(a, draw(use_cache=False))
    firsts = [row.index(0) for row in a.tolist() if 0 in row]
    assert len(set(firsts)) > 1 and min(firsts) < model.num_dims - 1
    for row in a.tolist():
        if 0 in row:
            assert all(v == 0 for v in row[row.index(0) :])
    with torch.no_grad():  # every row stops at once: the loop ends, the rest is padding
        model.head.bias[0] += 50.0
    steps = []
    step = model.step
    model.step = lambda *a: steps.append(1) or step(*a)  # counts the cached steps taken
    assert torch.equal(draw(), torch.zeros(16, model.num_dims, dtype=torch.long))
    assert not steps  # the first draw (from prefill) stopped every row: no step was taken


def test_a_top_p_below_the_dtypes_smallest_keeps_the_most_likely_symbol():
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 3.0, 0.0]])
    kept = filter_logits(logits, top_p=1e-300) > float("-inf")  # 1e-300 is 0 in float32
    assert kept.tolist() == [[False, True, False], [True, True, False]]  # (ties stay)


def test_a_stop_token_inside_the_prompt_ends_that_row_there():
    model = tiny_model("markov")  # L = 5, D = 7
    with torch.no_grad():  # a stop token the model would never draw itself
        model.head.bias[0] -= 50.0
    prefix = torch.tensor([[1, 0, 3], [1, 2, 3]])
    for use_cache in (True, False):
        x = sample(model, 2, prefix=prefix, stop_token=0, use_cache=use_cache,
                   generator=torch.Generator().manual_seed(0))  # fmt: skip
        assert x[0].tolist() == [1] + [0] * 6  # stopped at its prompt's stop token
        assert x[1, :3].tolist() == [1, 2, 3] and 0 not in x[1].tolist()  # drawn on


def test_evaluate_is_the_sum_of_log_prob():
    ds = load_data("names")
    model = tiny_model("markov", vocab_size=ds.vocab_size, seq_len=ds.seq_len)
    split = ds["test"]
    nll = evaluate(model, split, batch_size=100)
    direct = -log_prob(model, split.x, mask=split.mask).double().sum().item()
    assert abs(nll.nats - direct) < 1e-6 * abs(direct)
    assert nll.examples == len(split) and nll.dims == int(split.mask.sum())


def test_prefix_symbols_outside_the_vocabulary_are_refused():

    model = tiny_model("markov")  # L = 5: symbols 0..4; 5 is the start symbol's index
    for bad in (5, -1):
        with pytest.raises(ValueError, match=f"prefix symbol {bad} is outside 0..4"):
            sample(model, 2, prefix=torch.tensor([[0, bad], [1, 2]]))
    with pytest.raises(ValueError, match="num_dims must be >= 1"):
        sample(model, 2, num_dims=0)
    assert sample(model, 2, prefix=torch.tensor([[0, 4], [1, 2]])).shape == (2, 7)
    # labels out of range, and symbols out of range in log_prob: named, not an IndexError
    conditional = tiny_model("gpt", num_classes=3)
    with pytest.raises(ValueError, match="label 3 is outside 0..2"):
        sample(conditional, 2, cond=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="x 5 is outside 0..4"):
        log_prob(model, torch.full((2, 7), 5))
    with pytest.raises(ValueError, match="label -1 is outside 0..2"):
        log_prob(conditional, torch.zeros(2, 7, dtype=torch.long), torch.tensor([0, -1]))


def test_log_prob_is_exact_in_training_mode_and_takes_any_integer_dtype():
    model = tiny_model("gpt", dropout=0.5).train()  # as create_model and train() leave it
    x = torch.randint(0, 5, (3, 7))
    exact = log_prob(model, x)
    assert torch.equal(log_prob(model, x), exact)  # no dropout: the same every call
    assert model.training  # the caller's mode comes back
    model.blocks[0].eval()  # a block the caller froze stays frozen, whatever scores or samples
    log_prob(model, x), sample(model, 2, num_dims=3)
    assert model.training and not model.blocks[0].training and model.blocks[1].training
    model.train()
    assert torch.allclose(exact, log_prob(model.eval(), x))
    for dtype in (torch.int32, torch.uint8, torch.int16):  # numpy's and pictures' dtypes
        assert torch.equal(log_prob(model, x.to(dtype)), exact)
    assert sample(model, 3, prefix=x[:, :2].int(), num_dims=7).dtype == torch.long
    with pytest.raises(ValueError, match="x .one-hot inputs go to model.x.. must hold integer"):
        log_prob(model, x.float())
    with pytest.raises(ValueError, match=r"prefix must be \(n, P\) symbols, got shape \(2,\)"):
        sample(model, 2, prefix=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="prefix must hold integer symbols"):
        sample(model, 2, prefix=torch.ones(2, 2))


def test_evaluate_refuses_an_empty_split_and_a_bad_batch_size():

    from darm.data.splits import TensorSplit

    model = tiny_model("markov")
    with pytest.raises(ValueError, match="the split is empty"):
        evaluate(model, TensorSplit(torch.zeros(0, 7, dtype=torch.long)))
    with pytest.raises(ValueError, match="batch size must be >= 1"):
        evaluate(model, TensorSplit(torch.zeros(3, 7, dtype=torch.long)), batch_size=0)


def test_evaluate_gives_back_training_mode_when_it_fails():
    from darm.data.splits import TensorSplit

    class Failing(TensorSplit):
        def iter_batches(self, batch_size):
            yield next(super().iter_batches(batch_size))
            raise OSError("the disk went away")  # mid-evaluation

    model = tiny_model("markov").train()
    with pytest.raises(OSError):
        evaluate(model, Failing(torch.zeros(4, 7, dtype=torch.long)), batch_size=2)
    assert model.training


def test_sampling_shows_progress_on_a_terminal_only(monkeypatch):
    """The bar changes nothing drawn: the same seed gives the same samples with it."""
    model = tiny_model("gru", vocab_size=5, seq_len=7)
    drawn, shown = {}, {}
    for progress in (False, True):
        monkeypatch.setattr(sys, "stderr", Terminal())
        gen = torch.Generator().manual_seed(0)
        drawn[progress] = sample(model, 3, generator=gen, progress=progress)
        shown[progress] = sys.stderr.getvalue()
    assert torch.equal(drawn[False], drawn[True])
    assert shown[False] == "" and "sampling" in shown[True] and "/7 " in shown[True]


def test_sample_takes_python_labels_image_rows_as_a_prefix_and_a_cpu_generator():
    torch.manual_seed(0)
    model = tiny_model("pixelcnn", vocab_size=3, seq_len=16, image_shape=(4, 4), num_classes=2)
    rows = torch.randint(0, 3, (2, 2, 4, 1))  # the top two rows of two images, (n, H', W, C)
    got = sample(model, 2, cond=1, prefix=rows, generator=torch.Generator().manual_seed(3))
    assert got.shape == (2, 4, 4, 1) and torch.equal(got[:, :2], rows)
    again = sample(model, 2, cond=[1, 1], prefix=rows.flatten(1).tolist(),
                   generator=torch.Generator().manual_seed(3))  # fmt: skip
    assert torch.equal(got, again)
    with pytest.raises(ValueError, match=r"at most 16 symbols \(one image, top rows included\)"):
        sample(model, 2, cond=1, num_dims=20)


@pytest.mark.parametrize(
    "kwargs, error, needle",
    [
        (dict(n=-1), ValueError, "n must be >= 1, got -1"),
        (dict(n=2.0), TypeError, "n must be an int, got float"),
        (dict(n=2, num_dims=3.5), TypeError, "num_dims must be an int"),
        (dict(n=2, stop_token=9), ValueError, "stop_token 9 is outside 0..4"),
        (dict(n=2, stop_token=-1), ValueError, "stop_token -1 is outside 0..4"),
        (dict(n=2, generator=5), TypeError, "generator must be a torch.Generator, got int"),
        (dict(n=2, prefix="ma"), TypeError, "prefix must be integer symbols, not text: data.vocab"),
        (dict(n=2, cond="3"), TypeError, "cond must be class numbers, not text"),
        (dict(n=2, temperature="0.5"), TypeError, "temperature must be a number, got str '0.5'"),
        (dict(n=2, top_p="0.9"), TypeError, "top_p must be a number, got str"),
    ],
)
def test_sample_names_a_bad_argument(kwargs, error, needle):
    with pytest.raises(error, match=needle):
        sample(tiny_model("gpt"), **kwargs)
    assert sample(tiny_model("gpt"), np.int64(2)).shape == (2, 7)  # numpy's integers are fine


@pytest.mark.parametrize(
    "name, x, mask, needle",
    [
        ("gpt", torch.zeros(7, dtype=torch.long), None, "x must be a batch of examples"),
        ("gpt", torch.zeros(2, 9, dtype=torch.long), None, "x must be \\(B, 7\\), or shorter,"),
        ("gpt", torch.zeros(2, 7, 1, dtype=torch.long), None, "got shape \\(2, 7, 1\\)"),
        (
            "pixelcnn@2x3x1",
            torch.zeros(2, 5, dtype=torch.long),
            None,
            "\\(B, 6\\), \\(B, 2, 3\\) or \\(B, 2, 3, 1\\)",
        ),
        ("pixelcnn@2x3x1", torch.zeros(2, 3, 2, dtype=torch.long), None, "got shape \\(2, 3, 2\\)"),
        ("gru", torch.zeros(2, 3, 2, dtype=torch.long), None, "x must be \\(B, T\\) symbols"),
        ("gpt", torch.zeros(2, 7, dtype=torch.long), torch.ones(2, 6), "mask must be shaped"),
    ],
)
def test_log_prob_names_a_misshapen_input(name, x, mask, needle):
    with pytest.raises(ValueError, match=needle):
        log_prob(tiny_model(name), x, mask=mask)


def test_log_prob_takes_what_the_model_reads():
    gpt = tiny_model("gpt")  # D = 7: a shorter sequence is its first positions
    x = torch.randint(0, 5, (2, 7), generator=torch.Generator().manual_seed(0))
    per_dim = gpt(x).log_softmax(-1).gather(-1, x[..., None])[..., 0]  # (2, 7) log p(x_d | x_<d)
    assert torch.allclose(log_prob(gpt, x[:, :5]), per_dim[:, :5].sum(1), atol=1e-5)
    whole = log_prob(gpt, x, mask=torch.ones(1, 7, dtype=torch.bool))  # a mask that broadcasts
    assert torch.allclose(whole, log_prob(gpt, x))
    assert log_prob(tiny_model("gru"), torch.zeros(2, 12, dtype=torch.long)).shape == (2,)
    image = tiny_model("pixelcnn@2x3x1")  # a grey image: (B, D), (B, H, W, 1) or (B, H, W)
    x = torch.randint(0, 5, (2, 6), generator=torch.Generator().manual_seed(0))
    for shape in [(2, 6), (2, 2, 3, 1), (2, 2, 3)]:
        assert torch.equal(log_prob(image, x.view(shape)), log_prob(image, x))


def test_log_prob_takes_one_label_for_every_example():
    model = tiny_model("gru", num_classes=3)
    x = torch.randint(0, 5, (4, 7), generator=torch.Generator().manual_seed(0))
    assert torch.equal(log_prob(model, x, cond=2), log_prob(model, x, cond=torch.full((4,), 2)))
    assert not torch.equal(log_prob(model, x, cond=1), log_prob(model, x, cond=2))


def test_evaluate_names_data_the_model_cannot_read():
    names = load_data("names")  # L = 27, D = 16
    # the split's own shape, (2949, 16), not that of a batch of it
    shape = f"\\({len(names['test'])}, 16\\)"
    with pytest.raises(
        ValueError, match=f"x must be \\(B, 7\\), or shorter, symbols, got shape {shape}"
    ):
        evaluate(tiny_model("gpt"), names["test"], batch_size=100)  # L = 5, D = 7
    with pytest.raises(ValueError, match="x 26 is outside 0..4"):
        evaluate(tiny_model("gru", seq_len=16), names["test"])  # goes on past D, but L = 5
    with pytest.raises(TypeError, match="split must be a darm.data split"):
        evaluate(tiny_model("gpt"), torch.zeros(2, 7, dtype=torch.long))
    with pytest.raises(TypeError, match="got Dataset \\(one of its splits\\)"):
        evaluate(tiny_model("gpt"), names)
    conditional = tiny_model("gru", vocab_size=27, seq_len=16, num_classes=3)
    with pytest.raises(ValueError, match="conditional on 3 classes and the split has no labels"):
        evaluate(conditional, names["test"])


def test_python_mistakes_are_named():
    """Plausible slips in Python give a TypeError or ValueError that names them, not an
    error from deep inside (or a silent wrong result, for a stop token of 1.5)."""
    model = tiny_model("gru")
    x = torch.zeros(2, 7, dtype=torch.long)
    mask = np.ones((2, 7), bool)
    mask[:, 5:] = False  # a numpy or list mask is read as x is
    want = log_prob(model, x, mask=torch.from_numpy(mask))
    assert torch.equal(log_prob(model, x, mask=mask), want)
    assert torch.equal(log_prob(model, x, mask=mask.tolist()), want)
    names = load_data("names")
    for batch_size in (2.5, "64"):
        with pytest.raises(TypeError, match="batch_size must be an int"):
            evaluate(tiny_model("gru", vocab_size=27), names["test"], batch_size=batch_size)
    for stop in (1.5, True):
        with pytest.raises(TypeError, match="stop_token must be a symbol"):
            sample(model, 2, stop_token=stop)
    # numpy's and 0-d torch integers are integers
    for stop, k in ((np.int64(0), np.int64(2)), (torch.tensor(0), torch.tensor(2))):
        assert sample(model, 2, stop_token=stop, top_k=k).shape == (2, 7)
    assert names.vocab.decode([torch.tensor(1), np.int64(2)]) == names.decode([1, 2])
    assert names.decode(np.array([1, 2])) == names.decode(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="cannot decode 99: symbols are ints in 0..26"):
        names.decode([99])
    with pytest.raises(ValueError, match="decode takes symbols of one example"):
        names.decode(torch.zeros(2, 2, 2, dtype=torch.long))


def test_log_prob_refuses_a_mask_that_is_not_zeros_and_ones_and_an_empty_x():
    model = tiny_model("gru")
    x = torch.zeros(2, 7, dtype=torch.long)
    kept = torch.ones(2, 7)
    kept[:, 4:] = 0
    assert torch.equal(log_prob(model, x, mask=kept), log_prob(model, x, mask=kept.bool()))
    for weights in (2 * kept, -kept):  # would count a position twice, or subtract it
        with pytest.raises(ValueError, match="mask must be bool, or 0 \\(padding\\) and 1"):
            log_prob(model, x, mask=weights)
    for name in ("gru", "markov"):  # alike, whether the family's forward could take it or not
        with pytest.raises(ValueError, match="x holds no symbols to score, shape \\(2, 0\\)"):
            log_prob(tiny_model(name), x[:, :0])


def test_darm_errors_are_value_errors():
    from darm import create_model

    with pytest.raises(ValueError, match="n_layers"):
        create_model("gpt", vocab_size=5, seq_len=7, n_layers=2)
