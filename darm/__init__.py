"""darm: deep autoregressive models, p(x) = prod_d p(x_d | x_<d) with one shared network."""

from darm.checkpoint import load_checkpoint
from darm.errors import DarmError
from darm.metrics import NLL, evaluate, example_nats, log_prob
from darm.models import ARModel, create_model, list_models
from darm.sampling import sample

__version__ = "0.1.0"
__all__ = [
    "ARModel",
    "create_model",
    "list_models",
    "log_prob",
    "evaluate",
    "example_nats",
    "sample",
    "load_checkpoint",
    "NLL",
    "DarmError",
]
