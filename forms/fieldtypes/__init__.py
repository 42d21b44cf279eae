"""The field-type registry: one small class per ``type:`` a form field may have.

``FIELD_TYPES`` maps the type name used in the YAML (``phone``, ``currency``...)
to a shared, stateless ``FieldType`` instance; ``get_type(name)`` looks one up
with a helpful error.  See ``base.py`` for the contract and
``docs/field-types.md`` for the catalogue.

Importing this package registers every type; modules are grouped by kind.
"""
from __future__ import annotations

from .base import FIELD_TYPES, FieldType, FieldValueError, register, suggest_name
from . import text, numbers, choice, temporal, identity, structured, relations, files, computed  # noqa: F401,E402
from .computed import render_pattern, sequence_key  # noqa: E402

__all__ = ["FIELD_TYPES", "FieldType", "FieldValueError", "UnknownFieldType", "get_type", "register",
           "render_pattern", "sequence_key", "WIDGETS"]


class UnknownFieldType(KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown field type"


def get_type(name: str) -> FieldType:
    """The registered type called ``name``; ``UnknownFieldType`` (a ``KeyError``) otherwise."""
    try:
        return FIELD_TYPES[name]
    except (KeyError, TypeError):
        raise UnknownFieldType(f"unknown field type '{name}'{suggest_name(str(name), FIELD_TYPES)}; "
                               f"known types: {', '.join(FIELD_TYPES)}") from None


WIDGETS = frozenset(t.widget for t in FIELD_TYPES.values())
