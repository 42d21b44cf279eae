"""Permissions, decided in one place for every route, page, report and export.

* Form level: which roles may create/read/update/delete/export/import.
* Row level: the ``rows`` expression of each matching access entry, compiled
  to SQL and OR-ed across the user's roles (a consultant's "own or pool",
  a dealer's "same dealer", a region's "same region").
* Field level: fields hidden from, or read-only for, the user's roles.

A form without an ``access`` block is open to every signed-in user of the
app; users with the ``admin`` role may do everything.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import false, or_, select, true
from sqlalchemy.sql import ColumnElement

from engine.auth import User

from .model import FormDef

ADMIN_ROLE = "admin"


@dataclass(frozen=True)
class Grant:
    """What one user may do with one form, for one action."""

    allowed: bool
    all_rows: bool
    row_filters: tuple          # compiled Expressions, OR-ed
    hidden: frozenset[str]
    readonly: frozenset[str]


def grant(form: FormDef, user: User, action: str) -> Grant:
    if user.is_system or ADMIN_ROLE in user.roles or not form.access:
        return Grant(True, True, (), frozenset(), frozenset())
    matching = [a for a in form.access if a.roles & user.roles and action in a.actions]
    if not matching:
        return Grant(False, False, (), frozenset(), frozenset())
    all_rows = any(a.rows is None for a in matching)
    filters = () if all_rows else tuple(a.rows for a in matching)
    # a field is hidden only if every matching entry hides it
    hidden = frozenset.intersection(*[a.hidden for a in matching])
    readonly = frozenset.intersection(*[a.readonly for a in matching])
    return Grant(True, all_rows, filters, hidden, readonly)


def hidden_fields(form: FormDef, user: User) -> frozenset[str]:
    return grant(form, user, "read").hidden


def can(form: FormDef, user: User, action: str) -> bool:
    return grant(form, user, action).allowed


def row_filter_sql(g: Grant, resolve, dialect: str, ctx: Any = None) -> ColumnElement:
    """The SQL condition selecting the rows a grant covers."""
    if not g.allowed:
        return false()
    if g.all_rows:
        return true()
    clauses = []
    for expr in g.row_filters:
        clauses.append(expr.to_sql(resolve, dialect, ctx=ctx) if ctx is not None else expr.to_sql(resolve, dialect))
    return or_(*clauses)
