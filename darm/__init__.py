"""darm: deep autoregressive models, p(x) = prod_d p(x_d | x_<d) with one shared network."""

from importlib import import_module as _import_module
from typing import TYPE_CHECKING as _TYPE_CHECKING

__version__ = "0.1.0"

# each public name and the module that defines it, imported on first use: `import darm` stays
# free of torch, so the `darm` command (darm/entry.py) can catch a Ctrl-C while torch loads
_HOMES = {
    "ARModel": "darm.models",
    "create_model": "darm.models",
    "list_models": "darm.models",
    "log_prob": "darm.metrics",
    "evaluate": "darm.metrics",
    "example_nats": "darm.metrics",
    "sample": "darm.sampling",
    "load_checkpoint": "darm.checkpoint",
    "NLL": "darm.metrics",
    "DarmError": "darm.errors",
}
__all__ = list(_HOMES)

if _TYPE_CHECKING:  # what type checkers and editors see (__all__ is _HOMES', unseen by ruff)
    from darm.checkpoint import load_checkpoint  # noqa: F401
    from darm.errors import DarmError  # noqa: F401
    from darm.metrics import NLL, evaluate, example_nats, log_prob  # noqa: F401
    from darm.models import ARModel, create_model, list_models  # noqa: F401
    from darm.sampling import sample  # noqa: F401


def __getattr__(name: str):
    """A public name from its home module, or a sub-package (`darm.data` after `import
    darm`, as an eager __init__ would have imported it)."""
    if name in _HOMES:
        value = getattr(_import_module(_HOMES[name]), name)
    else:
        try:
            value = _import_module(f"darm.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"darm.{name}":  # a module that is there but fails to import
                raise
            raise AttributeError(f"module 'darm' has no attribute {name!r}") from None
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
