"""Form -> SQL table: real, typed columns and the indexes the app needs.

Each form is a table ``<app>__<form>`` with the system columns, one column per
stored field, and for personal-data fields the ciphertext plus a blind-index
column ``<field>__bi`` for exact-match search and uniqueness.  Forms used as
a ``child_table`` get a ``parent_id`` column.
"""
from __future__ import annotations

import hashlib
from typing import Iterable, Mapping

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, Integer, MetaData, String, Table, Text

from .model import FieldDef, FormDef

ID = BigInteger().with_variant(Integer, "sqlite")


def bi_column(field: str) -> str:
    """Name of the blind-index column of a PII field."""
    return f"{field}__bi"


def index_name(table: str, cols: Iterable[str], unique: bool = False) -> str:
    base = f"{'uq' if unique else 'ix'}_{table}_{'_'.join(cols)}"
    if len(base) <= 60:
        return base
    return base[:50] + "_" + hashlib.sha1(base.encode()).hexdigest()[:8]


def child_forms(forms: Mapping[str, FormDef]) -> set[str]:
    return {f.target_form for fd in forms.values() for f in fd.fields.values() if f.type == "child_table"}


def field_column_type(field: FieldDef):
    if field.pii:
        return Text()
    return field.ftype.column_type(dict(field.spec))


def column_specs(form: FormDef, is_child: bool) -> dict[str, object]:
    """Column name -> SQLAlchemy type, in table order (for planning migrations)."""
    cols: dict[str, object] = {
        "id": ID, "created_at": DateTime(), "updated_at": DateTime(), "created_by": String(64),
        "owner": String(64), "state": String(40),
    }
    if is_child:
        cols["parent_id"] = ID
    for f in form.stored_fields():
        cols[f.name] = field_column_type(f)
        if f.pii:
            cols[bi_column(f.name)] = String(64)
    return cols


def index_specs(form: FormDef, is_child: bool) -> dict[str, tuple[tuple[str, ...], bool]]:
    """Index name -> (columns, unique)."""
    t = form.table
    specs: dict[str, tuple[tuple[str, ...], bool]] = {}

    def add(cols: tuple[str, ...], unique: bool = False):
        specs[index_name(t, cols, unique)] = (cols, unique)

    for cols in (("owner",), ("state",), ("created_at",)):
        add(cols)
    if is_child:
        add(("parent_id",))
    for f in form.stored_fields():
        col = bi_column(f.name) if f.pii else f.name
        if f.unique:
            scope = tuple(f.unique) if isinstance(f.unique, tuple) else ()
            add(scope + (col,), unique=True)
        elif f.pii:
            add((col,))
        if f.type in ("link", "user") or f.index:
            add((col,))
    for cols in form.indexes:
        add(tuple(bi_column(c) if c in form.fields and form.fields[c].pii else c for c in cols))
    return specs


def build_table(form: FormDef, metadata: MetaData, is_child: bool = False) -> Table:
    columns = []
    for name, type_ in column_specs(form, is_child).items():
        if name == "id":
            columns.append(Column("id", type_, primary_key=True, autoincrement=True))
        else:
            columns.append(Column(name, type_, nullable=True))
    # sqlite_autoincrement: SQLite would give a deleted last row's id to the next record, and rows keyed
    # by record id -- its timeline, workflow, messages' idempotency keys -- would then belong to both
    table = Table(form.table, metadata, *columns, sqlite_autoincrement=True)
    for name, (cols, unique) in index_specs(form, is_child).items():
        Index(name, *[table.c[c] for c in cols], unique=unique)
    return table


def build_tables(forms: Mapping[str, FormDef]) -> tuple[MetaData, dict[str, Table]]:
    md = MetaData()
    children = child_forms(forms)
    return md, {name: build_table(fd, md, name in children) for name, fd in forms.items()}
