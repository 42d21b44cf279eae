"""Compiled form definitions: frozen, shared, pointing back to their YAML."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping

SYSTEM_COLUMNS = ("id", "created_at", "updated_at", "created_by", "owner", "state")
SYSTEM_LABELS = {
    "id": {"zh": "编号", "en": "ID"},
    "created_at": {"zh": "创建时间", "en": "Created"},
    "updated_at": {"zh": "更新时间", "en": "Updated"},
    "created_by": {"zh": "创建人", "en": "Created by"},
    "owner": {"zh": "负责人", "en": "Owner"},
    "state": {"zh": "状态", "en": "State"},
}


def table_name(app: str, form: str) -> str:
    """Each form is a real table named ``<app>__<form>``."""
    return f"{app}__{form}"


@dataclass(frozen=True)
class FieldDef:
    name: str
    type: str
    spec: Mapping[str, Any]          # the YAML mapping, plain data
    label: Mapping[str, str]
    ftype: Any                       # the FieldType from the registry
    required: bool = False
    readonly: bool = False
    pii: bool = False
    unique: tuple | bool = False     # True, or the scope fields
    index: bool = False
    renamed_from: str | None = None
    required_when: Any = None        # compiled Expression or None
    visible_when: Any = None
    readonly_when: Any = None
    default: Any = None              # compiled Expression or None
    formula: Any = None              # compiled Expression (formula type)
    position: tuple[str, int, int] = ("", 1, 1)

    @property
    def stored(self) -> bool:
        return bool(getattr(self.ftype, "stored", True)) and not (self.type == "formula" and self.spec.get("store") is False)

    @property
    def target_form(self) -> str | None:
        return self.spec.get("form")


@dataclass(frozen=True)
class ValidationDef:
    rule: Any                        # compiled Expression
    field: str | None
    message: Mapping[str, str]
    when: Any = None


@dataclass(frozen=True)
class AccessRule:
    roles: frozenset[str]
    actions: frozenset[str]
    rows: Any = None                 # compiled Expression or None (all rows)
    hidden: frozenset[str] = frozenset()
    readonly: frozenset[str] = frozenset()


@dataclass(frozen=True)
class FormDef:
    app: str
    name: str
    label: Mapping[str, str]
    title_field: str
    fields: Mapping[str, FieldDef]
    indexes: tuple[tuple[str, ...], ...]
    validations: tuple[ValidationDef, ...]
    layout: tuple
    list_columns: tuple[str, ...]
    list_order: str
    search: tuple[str, ...]
    duplicate_check: tuple[str, ...]
    access: tuple[AccessRule, ...]
    child: bool = False
    file: str = ""
    spec: Mapping[str, Any] = field(default_factory=dict)

    @property
    def table(self) -> str:
        return table_name(self.app, self.name)

    @cached_property
    def formula_fields(self) -> tuple[tuple[str, FieldDef], ...]:
        """(name, field) of the computed fields, in order: worked out once, not per save."""
        return tuple((n, f) for n, f in self.fields.items() if f.formula is not None)

    def stored_fields(self) -> list[FieldDef]:
        return [f for f in self.fields.values() if f.stored]

    def all_columns(self) -> tuple[str, ...]:
        return SYSTEM_COLUMNS + tuple(self.fields)
