"""Stage configuration: dataclasses filled from YAML recipes in pipelines/, then CLI overrides.

A recipe's keys are exactly the dataclass field names; an unknown key is an error that lists the
known ones. Options owned by another library (vLLM engine args, TRL configs) stay dicts that are
passed through untouched rather than re-declared here.
"""

from __future__ import annotations

import dataclasses
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
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"unknown options {unknown} for {cls.__name__}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**values)


def as_dict(config) -> dict[str, Any]:
    return dataclasses.asdict(config)
