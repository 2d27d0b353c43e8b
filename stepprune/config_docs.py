"""Every field of a stage config with its default and meaning, for ``stepprune config STAGE``,
and those defaults in every command's ``--help``.

The meaning is the comment after the field in the dataclass source (the one place it is
written); fields without one are listed with their type. The output is valid YAML, so it can be
pasted into a recipe and edited."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re

from stepprune.config import field_default

_FIELD = re.compile(r"^\s+(\w+)\s*:[^#]*?(?:#\s*(.*))?$")


def comments(cls: type) -> dict[str, str]:
    """field name -> its trailing comment, over the class and its dataclass bases."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for line in source.splitlines():
            match = _FIELD.match(line)
            if match and match.group(2):
                found[match.group(1)] = match.group(2).strip()
    return found


def describe(cls: type) -> str:
    """``name: default  # meaning`` per field, in declaration order (YAML)."""
    notes = comments(cls)
    lines = []
    for field in dataclasses.fields(cls):
        value = json.dumps(field_default(field))  # JSON is YAML: strings quoted, null, lists, dicts
        note = notes.get(field.name) or (field.type if isinstance(field.type, str) else "")
        lines.append(f"{field.name}: {value}" + (f"  # {note}" if note else ""))
    return "\n".join(lines)


# A flag whose name is not its config field's (bench's repeatable --model fills ``models``).
FLAG_FIELDS = {"bench": {"model": "models", "benchmark": "benchmarks", "baseline": "baselines"}}


def show_defaults(cls: type, command, aliases: dict | None = None) -> None:
    """Give each option of ``command`` (the click command of the stage whose config is
    ``cls``) its config field's default as the ``[default: ...]`` its help shows. The options
    themselves default to None, so that only a flag given on the command line overrides the
    recipe."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for param in command.params:
        name = (aliases or {}).get(param.name, param.name)
        if name not in fields or param.default is not None or isinstance(param.show_default, str):
            continue
        value = field_default(fields[name])
        if value not in (None, "", [], {}):
            param.show_default = value if isinstance(value, str) else json.dumps(value)
