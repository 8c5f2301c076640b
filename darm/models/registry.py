"""Names -> builders. `create_model("gpt", vocab_size=65, n_layer=4)`."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import os
import sys
import sysconfig
import traceback
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from darm.config import build_config
from darm.data.dataset import check_dataset
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
    fixed: tuple[str, ...] = ()  # defaults the name stands for: no override may change them


_REGISTRY: dict[str, ModelEntry] = {}
_BUILT_IN: dict[str, ModelEntry] = {}  # darm's own names, as darm registers them (seal)


def register_model(
    name: str,
    model_cls: type[ARModel],
    config_cls: type,
    doc: str | None = None,
    *,
    fixed: tuple[str, ...] = (),
    **defaults: Any,
) -> None:
    """Register `name` as `model_cls(config_cls(**defaults, **overrides))`; `doc`, the line
    `darm models` shows, defaults to the first line of the class's docstring. `fixed` names
    the defaults that make the model what its name says (a bigram's k=1): create_model
    refuses to change them, where other defaults are only where a config starts. A class of
    the same module and name may register again (a notebook cell run twice redefines it);
    another class under a taken name is refused."""
    if isinstance(fixed, str) or set(fixed) - set(defaults):  # ("cell",), not "cell"
        raise ValueError(f"register_model({name!r}): fixed {fixed} must be among its defaults")
    if doc is None:
        doc = (model_cls.__doc__ or "").strip().split("\n")[0]
    if not (isinstance(model_cls, type) and issubclass(model_cls, ARModel)):
        raise ValueError(f"register_model({name!r}): {model_cls!r} is not an ARModel subclass")
    if not dataclasses.is_dataclass(config_cls):
        raise ValueError(f"register_model({name!r}): the config {config_cls!r} is not a dataclass")
    entry = ModelEntry(name, model_cls.family, config_cls, model_cls, defaults, doc, tuple(fixed))
    if name in _BUILT_IN and what_it_builds(entry) != what_it_builds(_BUILT_IN[name]):
        raise ValueError(f"model name {name!r} is darm's own; register yours under another name")
    taken = _REGISTRY.get(name)
    if taken and qualified_name(taken.model_cls) != qualified_name(model_cls):
        raise ValueError(
            f"model name {name!r} is taken by {qualified_name(taken.model_cls)}; register "
            f"{model_cls.__qualname__} under another name"
        )
    _REGISTRY[name] = entry


def seal_built_ins() -> None:
    """Mark every name registered so far as darm's own (darm.models calls it once its
    families are in): another registration under one of them is refused, or a run of it
    would load, without the import, as darm's."""
    _BUILT_IN.update(_REGISTRY)


def what_it_builds(entry: ModelEntry) -> tuple:
    """A registration as what it builds: its classes by where they are defined (a module
    loaded again makes new class objects of the same code), its defaults and fixed fields."""
    classes = qualified_name(entry.model_cls), qualified_name(entry.config_cls)
    return (*classes, sorted(entry.defaults.items()), entry.fixed)


def qualified_name(cls: type) -> str:
    """'darm.models.gpt.GPT': where a class is defined, to tell two of one name apart."""
    return f"{cls.__module__}.{cls.__qualname__}"


_FILES: dict[str, str] = {}  # module name -> the .py file `--import` read it from


def family_source(cls: type) -> str | None:
    """How to import a family of one's own again, kept with a run for the hint when that
    family is not registered: the file `--import` read, else the module's name ("__main__"
    for a class defined in a script or notebook); None for darm's own."""
    module = cls.__module__
    if module.split(".")[0] == "darm":
        return None
    return _FILES.get(module, module)


def import_families(spec: str) -> None:
    """Import a module by name, or a .py file by path, for the families it registers:
    `darm --import my_family.py train --model trigram`. Never automatic: a checkpoint names
    its family, but loading one must not run code the user did not ask for."""
    path = Path(spec)
    if spec.endswith(".py") and not path.is_file():
        raise DarmError(f"--import {spec}: no such file")
    if not spec.endswith(".py") and ("/" in spec or os.sep in spec or path.is_file()):
        raise DarmError(f"--import takes a .py file or a module name (my_pkg.families), got {spec}")
    # as `python FILE` and `python -m MODULE` would: the file's folder (or the current one)
    # first on the path, so the module's own imports of its neighbours work
    folder = str(path.resolve().parent if spec.endswith(".py") else Path.cwd())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        if spec.endswith(".py"):
            import_file(path.resolve())
        else:
            importlib.import_module(spec)
    except SystemExit as e:  # a script's argparse or sys.exit, run at import
        raise DarmError(
            f"--import {spec} exits when imported (code {e.code}): put its script part "
            f'under `if __name__ == "__main__":`'
        ) from None
    except Exception as e:  # the user's code, any error: one line, as for other bad input
        where = user_frame(e.__traceback__)
        raise DarmError(
            f"--import {spec} failed: {type(e).__name__}: {first_line(e)}{where}"
        ) from None


def import_file(path: Path) -> None:
    """Run a .py file as a module once: under its own name where that is free (so the file,
    imported by name from a neighbour, is the same module and registers nothing twice),
    else under its name and a digest of its path (two files of one name stay apart)."""
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve() == path:
            return  # imported already, by name or by an earlier --import
    name = path.stem
    if name in sys.modules:
        name = f"{name}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses look their module up while being built
    _FILES[name] = str(path)
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]  # half-run: a later import must not find it
        _FILES.pop(name, None)
        raise


def user_frame(tb) -> str:
    """' (my_family.py, line 12)': the deepest frame of a traceback in the user's own code
    (not Python's, an installed package's or darm's), or '' if there is none."""
    paths = sysconfig.get_paths()
    darm_dir = str(Path(__file__).resolve().parents[1])
    others = tuple(
        p.rstrip(os.sep) + os.sep  # a folder, not every path that starts with its name
        for p in {paths["stdlib"], paths["purelib"], paths["platlib"], darm_dir}
    )
    frames = [
        f
        for f in traceback.extract_tb(tb)
        if not f.filename.startswith("<") and not f.filename.startswith(others)
    ]
    return f" ({Path(frames[-1].filename).name}, line {frames[-1].lineno})" if frames else ""


def list_models() -> list[str]:
    """The registered model names, sorted: the families' own and their presets (bigram,
    gru, ...), and any registered by an imported module of one's own."""
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


def fixed_changes(entry: ModelEntry, config: Any) -> list[str]:
    """The fields a name stands for (`fixed`) that `config` sets otherwise: a "bigram" with
    k=3 is a markov, whatever it is called."""
    return [k for k in entry.fixed if getattr(config, k, entry.defaults[k]) != entry.defaults[k]]


def fixed_text(entry: ModelEntry) -> str:
    """What a name stands for, as `k=1, n_hidden=0`."""
    return ", ".join(f"{k}={entry.defaults[k]!r}" for k in entry.fixed)


def create_model(name: str, data: Any = None, **overrides: Any) -> ARModel:
    """Build a registered model; unknown names or fields and bad values raise DarmError.
    data: a darm Dataset whose shape the model takes: its vocab_size, its seq_len and, for a
    2-D family, its image_shape (explicit overrides win). A class-conditional model also
    needs num_classes=data.num_classes."""
    return build_model(name, data, overrides)


def build_model(name: str, data: Any, overrides: dict, saved: bool = False) -> ARModel:
    """create_model; saved=True (a checkpoint's config) lets it change a name's fixed fields
    (a run of `--model gru --set cell=lstm` saved before they were fixed still loads) and set
    the fields only saved configs set (saved_only), and skips the config's `check_new`."""
    entry = get_entry(name)
    what = f"{name} config"
    if not saved and (kept := saved_only(entry.config_cls) & set(overrides)):
        raise DarmError(
            f"{what}: {sorted(kept)[0]} is not settable: it describes runs saved by an older "
            f"darm, read from their checkpoints"
        )
    if data is not None:
        check_dataset(data)
        known = {"vocab_size": data.vocab_size, "seq_len": data.seq_len}
        if data.image_shape and reads_images(name):
            known["image_shape"] = tuple(data.image_shape)  # the 2-D view of the raster
        overrides = {**known, **overrides}
    config = build_config(entry.config_cls, {**entry.defaults, **overrides}, what)
    # compared parsed: `--set k=1` on a bigram is no change
    if not saved and (changed := fixed_changes(entry, config)):
        key = changed[0]
        raise DarmError(
            f"{name} is {entry.family} with {fixed_text(entry)}, which it keeps: for "
            f"{key}={getattr(config, key)!r} use the model {entry.family!r}"
        )
    try:
        check_common_fields(config)
        if not saved and hasattr(config, "check_new"):
            config.check_new()
        return entry.model_cls(config)
    except DarmError:
        raise
    except ValueError as e:  # a value the family cannot build
        raise DarmError(f"{what}: {e}") from None


def reads_images(name: str) -> bool:
    """Whether a registered family reads 2-D images: its config has an `image_shape` field,
    which image data fills with its (H, W) or (H, W, C) (pixelcnn, gated_pixelcnn, and a
    family of one's own that declares it)."""
    return any(f.name == "image_shape" for f in fields(get_entry(name).config_cls))


def config_fields(name: str) -> dict[str, Any]:
    """Field -> default value for a registered model (for `darm models`), less the fields
    only saved configs set."""
    entry = get_entry(name)
    hidden = saved_only(entry.config_cls)
    out = {f.name: f.default for f in fields(entry.config_cls) if f.name not in hidden}
    out.update(entry.defaults)
    return out


def saved_only(config_cls: type) -> set[str]:
    """The config fields that only a saved config sets (metadata saved_only): what an older
    darm built, kept so its runs load as they were saved (wavenet's last_res)."""
    return {f.name for f in fields(config_cls) if f.metadata.get("saved_only")}
