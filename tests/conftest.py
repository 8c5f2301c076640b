import pytest
import torch

from darm.models import create_model, get_entry, list_models

# Small widths per family so the registry-wide tests stay fast; a family not listed here is
# tested with its defaults.
TINY = {
    "markov": dict(n_embd=4, n_hidden=16),
    "rnn": dict(n_embd=8, n_hidden=16, n_layer=2),
    "wavenet": dict(n_embd=8, n_skip=8, dilation_cycle=(1, 2), kernel_size=2),
    "gpt": dict(n_layer=2, n_head=2, n_embd=16),
}


def tiny_model(name: str, vocab_size: int = 5, seq_len: int = 7, **overrides):
    torch.manual_seed(0)
    family = get_entry(name).family
    model = create_model(
        name, vocab_size=vocab_size, seq_len=seq_len, **{**TINY.get(family, {}), **overrides}
    )
    # random (not zero) output biases so no conditional is trivially uniform
    return model.eval()


@pytest.fixture(params=list_models())
def model_name(request):
    return request.param
