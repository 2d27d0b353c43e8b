"""Stage configuration: dataclasses filled from YAML recipes in pipelines/, then CLI overrides.

A recipe's keys are exactly the dataclass field names; an unknown key is an error that lists the
known ones. Options owned by another library (vLLM engine args, TRL configs) stay dicts that are
passed through rather than re-declared here; ``coerce_numbers`` only turns the strings PyYAML
makes of exponent numbers without a dot (``1e-5``) into the numbers the library's fields expect.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    pass


def read_recipe(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of field names to values")
    return data


def build_config(cls: type[T], recipe: str | Path | None = None, **overrides: Any) -> T:
    """``cls`` from defaults, then the recipe, then every override that is not None."""
    fields = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    if recipe is not None:
        data = read_recipe(recipe)
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ConfigError(
                f"{recipe}: unknown keys {unknown} for {cls.__name__}; known: {sorted(fields)}"
            )
        values.update(data)
    unknown = sorted({k.split(".")[0] for k in overrides} - fields)
    if unknown:
        raise ConfigError(
            f"unknown options {unknown} for {cls.__name__}; known: {', '.join(sorted(fields))}"
        )
    values.update({k: v for k, v in overrides.items() if v is not None and "." not in k})
    for key, value in overrides.items():
        if "." in key and value is not None:
            _set_dotted(values, cls, key, value)
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        value = values[name] = _coerce(value, hints[name], name, strict=False)
        if not _matches(value, hints[name]):
            where = f"{recipe}: " if recipe is not None and name in data else ""
            raise ConfigError(f"{where}{name}={value!r} is not {_describe(hints[name])}")
    return cls(**values)


def field_default(field: dataclasses.Field):
    """A dataclass field's default (a fresh one from its factory); None when it has none."""
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _set_dotted(values: dict, cls: type, key: str, value: Any) -> None:
    """``a.b.c=v``: set ``c`` inside the mapping field ``a`` (the recipe's, else the default),
    merging instead of replacing the whole mapping."""
    import copy

    name, *path = key.split(".")
    if not all(path):
        raise ConfigError(f"--set {key}: an empty key between dots")
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    base = values.get(name)
    base = field_default(field) if base is None else base
    base = {} if base is None else base
    if not isinstance(base, dict):
        raise ConfigError(f"--set {key}: {name} is {type(base).__name__}, not a mapping")
    merged = copy.deepcopy(base)
    node = merged
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {part} is {type(node).__name__}, not a mapping")
    node[path[-1]] = value
    values[name] = merged


def coerce_numbers(config_cls: type, values: dict, where: str) -> dict:
    """``values`` for the dataclass ``config_cls`` (a library's, e.g. ``trl.SFTConfig``), each
    string given to a number field (or a list of numbers) converted: PyYAML reads ``1e-5`` as a
    string, which the library trips over only once training starts. A string that is no number
    there is a ``ConfigError`` naming ``<where>.<key>``; fields that take strings are left alone."""
    hints = typing.get_type_hints(config_cls)
    return {
        k: _coerce(v, hints[k], f"{where}.{k}", strict=True) if k in hints else v
        for k, v in values.items()
    }


def _coerce(value: Any, hint: Any, name: str, strict: bool) -> Any:
    """``value`` as the number ``hint`` asks for when it is a string of one (see above)."""
    kinds = _alternatives(hint)
    if isinstance(value, list):
        lists = [typing.get_args(k) for k in kinds if typing.get_origin(k) is list]
        item = next((args[0] for args in lists if args), None)
        if item is None:
            return value
        return [_coerce(v, item, f"{name}[{i}]", strict) for i, v in enumerate(value)]
    if not isinstance(value, str) or str in kinds or not {int, float} & set(kinds):
        return value
    try:
        number = float(value)
        if float not in kinds:
            if not number.is_integer():
                raise ValueError
            number = int(number)
    except ValueError:
        if not strict:
            return value  # build_config's type check names the field and the type
        wanted = "a number" if float in kinds else "an integer"
        raise ConfigError(f"{name}={value!r} is not {wanted}") from None
    return number


def _alternatives(hint: Any) -> list:
    """The types a hint allows: the members of a union (enums count as str), else the hint."""
    import enum

    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        kinds = [k for a in typing.get_args(hint) for k in _alternatives(a)]
    else:
        kinds = [hint]
    return [str if isinstance(k, type) and issubclass(k, enum.Enum) else k for k in kinds]


def _matches(value: Any, hint: Any) -> bool:
    """Does a YAML-loaded ``value`` fit the field type ``hint`` (int fits float, paths fit str)?"""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if hint is Any:
        return True
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str | os.PathLike)
    if hint is list or origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value if args)
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    return True  # anything richer is left to the stage's own checks


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in args)
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
    names.update({type(None): "null", list: "a list ([a, b])", dict: "a mapping ({key: value})"})
    if origin is list and args:
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s ([a, b])"
    return names.get(origin or hint, str(hint))


def as_dict(config) -> dict[str, Any]:
    return dataclasses.asdict(config)
