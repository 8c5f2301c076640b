"""Names -> builders. `create_model("gpt", vocab_size=65, n_layer=4)`."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import sys
import traceback
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from darm.config import build_config
from darm.errors import DarmError, first_line
from darm.models.base import ARModel


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    config_cls: type
    model_cls: type[ARModel]
    defaults: dict[str, Any]
    doc: str


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str, model_cls: type[ARModel], config_cls: type, doc: str, **defaults: Any
) -> None:
    """Register `name` as `model_cls(config_cls(**defaults, **overrides))`. A class of the
    same module and name may register again (a notebook cell run twice redefines it);
    another class under a taken name is refused."""
    if not (isinstance(model_cls, type) and issubclass(model_cls, ARModel)):
        raise ValueError(f"register_model({name!r}): {model_cls!r} is not an ARModel subclass")
    if not dataclasses.is_dataclass(config_cls):
        raise ValueError(f"register_model({name!r}): the config {config_cls!r} is not a dataclass")
    taken = _REGISTRY.get(name)
    if taken and qualified_name(taken.model_cls) != qualified_name(model_cls):
        raise ValueError(
            f"model name {name!r} is taken by {qualified_name(taken.model_cls)}; register "
            f"{model_cls.__qualname__} under another name"
        )
    _REGISTRY[name] = ModelEntry(name, model_cls.family, config_cls, model_cls, defaults, doc)


def qualified_name(cls: type) -> str:
    """'darm.models.gpt.GPT': where a class is defined, to tell two of one name apart."""
    return f"{cls.__module__}.{cls.__qualname__}"


def family_source(cls: type) -> str | None:
    """Where a family of one's own is defined (its file, else its module's name), kept with
    a run for the hint when that family is not registered; None for darm's own."""
    if cls.__module__.split(".")[0] == "darm":
        return None
    file = getattr(sys.modules.get(cls.__module__), "__file__", None)
    return str(Path(file).resolve()) if file else cls.__module__


def import_families(spec: str) -> None:
    """Import a module by name, or a .py file by path, for the families it registers:
    `darm --import my_family.py train --model trigram`. Never automatic: a checkpoint names
    its family, but loading one must not run code the user did not ask for."""
    path = Path(spec)
    if spec.endswith(".py") and not path.is_file():
        raise DarmError(f"--import {spec}: no such file")
    # as `python FILE` and `python -m MODULE` would: the file's folder (or the current one)
    # first on the path, so the module's own imports of its neighbours work
    folder = str(path.resolve().parent if spec.endswith(".py") else Path.cwd())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        if spec.endswith(".py"):
            name = f"darm_import_{path.stem}"
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module  # dataclasses look their module up while being built
            module_spec.loader.exec_module(module)
        else:
            importlib.import_module(spec)
    except Exception as e:  # the user's code, any error: one line, as for other bad input
        where = user_frame(e.__traceback__)
        raise DarmError(
            f"--import {spec} failed: {type(e).__name__}: {first_line(e)}{where}"
        ) from None


def user_frame(tb) -> str:
    """' (my_family.py, line 12)': the deepest frame of a traceback in the user's own code
    (not Python's, an installed package's or darm's), or '' if there is none."""
    darm_dir = str(Path(__file__).resolve().parents[1])
    others = (sys.prefix, sys.base_prefix, darm_dir)
    frames = [
        f
        for f in traceback.extract_tb(tb)
        if not f.filename.startswith("<") and not f.filename.startswith(others)
    ]
    return f" ({Path(frames[-1].filename).name}, line {frames[-1].lineno})" if frames else ""


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise DarmError(f"unknown model {name!r}; valid: {', '.join(list_models())}")
    return _REGISTRY[name]


def check_common_fields(config: Any) -> None:
    """The fields every family shares: L >= 1 symbols, D >= 1 dimensions, dropout a
    probability below 1 (1 would zero every unit), no negative class count."""
    if config.vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1, got {config.vocab_size}")
    if config.seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {config.seq_len}")
    if getattr(config, "num_classes", 0) < 0:  # a family of one's own may have no such field
        raise ValueError(f"num_classes must be >= 0, got {config.num_classes}")
    if not 0 <= getattr(config, "dropout", 0.0) < 1:
        raise ValueError(f"dropout must be in [0, 1), got {config.dropout}")


def create_model(name: str, **overrides: Any) -> ARModel:
    """Build a registered model; unknown names or fields and bad values raise DarmError."""
    entry = get_entry(name)
    what = f"{name} config"
    config = build_config(entry.config_cls, {**entry.defaults, **overrides}, what)
    try:
        check_common_fields(config)
        return entry.model_cls(config)
    except ValueError as e:  # a value the family cannot build
        raise DarmError(f"{what}: {e}") from None


def config_fields(name: str) -> dict[str, Any]:
    """Field -> default value for a registered model (for `darm models`)."""
    entry = get_entry(name)
    out = {f.name: f.default for f in fields(entry.config_cls)}
    out.update(entry.defaults)
    return out
