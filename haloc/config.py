"""Config dataclasses from plain dicts (JSON, manifests, YAML): unknown keys are refused by name."""
from __future__ import annotations

from dataclasses import fields

from .errors import BadInputError


def from_dict_strict(cls, data: dict, what: str):
    """`cls(**data)`, or BadInputError naming the unknown keys and the allowed ones."""
    if not isinstance(data, dict):
        raise BadInputError(f"{what}: expected a mapping of settings, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise BadInputError(f"{what}: unknown key(s) {unknown}; allowed: {sorted(known)}")
    return cls(**data)
