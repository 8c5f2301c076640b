"""Typed configuration dataclasses: an unknown key or a value of the wrong type is an error."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from darm.errors import DarmError

C = TypeVar("C")
MAX_SIZE = 2**31 - 1  # past any size, count or length a config could use (seeds go further)


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Check `value` against a field annotation; parse it when it comes as a string (CLI)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):  # Optional[X] / X | None
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner[0])
    if origin is tuple:
        given = value
        if isinstance(value, str):  # 1,2,4 or (1, 2, 4) as `darm models -v` prints it, or 1 2 4
            value = list_items(name, value)
        if not isinstance(value, (list, tuple)):
            raise DarmError(f"{name} must be a comma-separated list, got {value!r}")
        try:
            return tuple(_coerce(name, v, args[0]) for v in value)
        except DarmError:  # name the list, not one of its items: "1,2,4", not "an integer"
            of = {int: "integers (1,2,4)", float: "numbers (0.5,1)"}.get(args[0], "values")
            raise DarmError(
                f"{name} must be a comma-separated list of {of}, got {given!r}"
            ) from None
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "0", "false", "no"):
            return value.lower() in ("1", "true", "yes")
        raise DarmError(f"{name} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise DarmError(f"{name} must be an integer, got {value!r}")
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                pass
        if not isinstance(value, int):
            raise DarmError(f"{name} must be an integer, got {value!r}")
        if abs(value) > MAX_SIZE and not name.endswith("seed"):  # torch would overflow
            raise DarmError(f"{name} must be at most {MAX_SIZE:,} in size, got {value}")
        return value
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise DarmError(f"{name} must be a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise DarmError(f"{name} must be a string, got {value!r}")
    return value


def list_items(name: str, text: str) -> list[str]:
    """The items of a list field as typed: '1,2,4', '(1, 2, 4)', '[1,2,4]' or '1 2 4'. An
    empty item ('1,,2', '1,') is refused: dropped, it would quietly make another list. The
    one trailing comma of Python's one-item tuple, '(1,)' as a report prints it, is not one."""
    inner = text.strip()
    bracketed = inner[:1] in ("(", "[")
    inner = inner.strip("()[]").strip()
    if bracketed and inner.endswith(","):
        inner = inner[:-1]
    if not inner:
        return []  # the field's own check says what an empty list means to it
    pieces = [piece.split() for piece in inner.split(",")]  # '1, 2 4' is 1, 2, 4 too
    if not all(pieces):
        raise DarmError(f"{name} has an empty item in {text!r}; separate its values by one comma")
    return [item for piece in pieces for item in piece]


def typed_fields(cls: type, overrides: dict[str, Any], what: str = "config") -> dict[str, Any]:
    """`overrides` as the typed values of dataclass `cls`'s fields ("0.10" -> 0.1 for a
    float), rejecting unknown or mistyped fields."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise DarmError(
            f"unknown {what} field(s) {', '.join(unknown)}; valid: {', '.join(sorted(fields))}"
        )
    return {k: _coerce(k, v, hints[k]) for k, v in overrides.items()}


def check_types(config: Any) -> None:
    """A dataclass built directly (from Python) holds values of its fields' types, as
    build_config would make them: TrainConfig(steps="100") gets 100, steps=2.5 an error."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        setattr(config, f.name, _coerce(f.name, getattr(config, f.name), hints[f.name]))


def build_config(cls: type[C], overrides: dict[str, Any], what: str = "config") -> C:
    """Instantiate dataclass `cls` from `overrides`, rejecting unknown or mistyped fields."""
    values = typed_fields(cls, overrides, what)
    try:
        return cls(**values)
    except DarmError:
        raise
    except ValueError as e:  # a __post_init__ check across fields
        raise DarmError(f"{what}: {e}") from None


def require_at_least(config: Any, minimum: int, *names: str) -> None:
    """A __post_init__ check: each named field is >= minimum (sizes, layer counts)."""
    for name in names:
        value = getattr(config, name)
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")


def parse_assignments(items: list[str]) -> dict[str, str]:
    """Parse ['key=value', ...] from the command line into a dict of strings."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DarmError(f"expected KEY=VALUE, got {item!r}")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def changed_fields(config, settings: dict, what: str) -> list[str]:
    """The fields of `settings` that change `config` (a dataclass), compared as typed values:
    "dropout=0.10" is a run's 0.1, and repeating a saved value changes nothing."""
    if not settings:
        return []
    asked = build_config(type(config), {**dataclasses.asdict(config), **settings}, what)
    return [k for k in settings if getattr(asked, k) != getattr(config, k)]
