"""Every field of a stage config with its default and meaning, for ``stepprune config STAGE``.

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
