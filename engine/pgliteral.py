"""PostgreSQL literals for held writes (:mod:`engine.later`), as psycopg2 would quote them.

A held write is sent as text inside the next statement's query string, so its values are
quoted on the client: psycopg2's ``cursor.mogrify`` did that, and it costs more than the rest of
holding a row -- per value, a Python codec call and a libpq escape.  For the plain types of the
rows held on every create (text, integers, timestamps, NULL) this module writes the very same
literal, character for character, in one pass of Python string operations.

It is only used where that literal is the whole story:

* ``standard_conforming_strings`` is ``on`` (PostgreSQL's default since 9.1): inside ``'...'``
  only the quote itself is special, and doubling it is the complete escape -- backslashes are
  ordinary characters;
* the client encoding is UTF8: the text is encoded after quoting, whole characters at a time, and
  no UTF-8 character other than the quote contains the byte ``0x27``;
* the value's type is exactly one of those below (not a subclass, which may quote itself
  differently); text containing NUL -- which PostgreSQL refuses -- is left to psycopg2, which
  raises its usual error.

Anything else returns None and the caller uses ``mogrify``.  ``tests/engine/test_pgliteral.py``
checks the output against ``mogrify`` on awkward values, and the held-write tests check that
what lands in the table is what an ordinary INSERT writes.
"""
from __future__ import annotations

import datetime as dt
import math
import re
from decimal import Decimal
from typing import Any, Callable, Mapping

from .clock import remember


_TIMESTAMPS: dict = {}       # naive datetime -> its literal (naive: equal values print alike)


def literals_usable(dbapi_connection: Any) -> bool:
    """Whether :func:`literals` may quote for this psycopg2 connection (see the module docstring)."""
    try:
        return (dbapi_connection.get_parameter_status("standard_conforming_strings") == "on"
                and dbapi_connection.encoding == "UTF8")
    except Exception:           # not a psycopg2 connection, or a closed one: let mogrify decide
        return False


class Unquotable(Exception):
    """A value :func:`literal` does not write: psycopg2's ``mogrify`` must quote it."""


def literal(v: Any) -> str:
    """``v`` as the SQL literal psycopg2 writes for it; :class:`Unquotable` if it is not one of the
    plain types quoted here."""
    t = type(v)
    if t is str:
        if "'" in v:
            if "\x00" in v:
                raise Unquotable
            return "'" + v.replace("'", "''") + "'"
        if "\x00" in v:
            raise Unquotable
        return "'" + v + "'"
    if v is None:
        return "NULL"
    if t is int:
        # psycopg2 puts a space before a negative number, so "x -1" never becomes "x--1"
        return str(v) if v >= 0 else " " + str(v)
    if t is dt.datetime:
        # a request writes the same few instants (its now) into many rows: their text is kept
        text = _TIMESTAMPS.get(v) if v.tzinfo is None else None
        if text is None:
            text = "'" + v.isoformat() + ("'::timestamptz" if v.tzinfo is not None else "'::timestamp")
            if v.tzinfo is None:
                remember(_TIMESTAMPS, v, text)
        return text
    if t is bool:
        return "true" if v else "false"
    if t is dt.date:
        return "'" + v.isoformat() + "'::date"
    if t is float:
        if not math.isfinite(v):
            raise Unquotable
        return repr(v) if math.copysign(1.0, v) > 0 else " " + repr(v)     # -0.0 too
    if t is Decimal:
        if not v.is_finite():
            raise Unquotable
        return " " + str(v) if v.is_signed() else str(v)
    raise Unquotable


def literals(params: Mapping[str, Any]) -> dict[str, str] | None:
    """``params`` as SQL literals for ``statement % literals`` (pyformat placeholders, as psycopg2
    substitutes them), or None if a value is not one of the plain types quoted here."""
    try:
        return {name: literal(v) for name, v in params.items()}
    except Unquotable:
        return None


_PLACEHOLDER = re.compile(r"%\(([^()]+)\)s")


def writer(sql: str, row_keys: Any, constants: Mapping[str, Any], processors: Mapping[str, Any]) -> Callable[[Mapping], str]:
    """A function of one row giving ``sql % literals(values)`` -- generated once per statement and
    set of columns, so a held row is written by one call instead of a dict of processed values, a
    dict of literals and a ``%`` substitution.  ``sql`` has psycopg2's ``%(name)s`` placeholders;
    each name is a key of the row (``row_keys``; converted by ``processors[name]`` first, as
    SQLAlchemy's bind processors do) or a constant of the statement (quoted once, here).  The
    function raises :class:`Unquotable` where :func:`literals` would give None."""
    pieces = _PLACEHOLDER.split(sql)
    names: dict[str, Any] = {"_L": literal}
    parts = []
    for i, piece in enumerate(pieces):
        if i % 2 == 0:                       # text between placeholders, as ``%`` leaves it
            names[f"_s{i}"] = piece.replace("%%", "%")
            parts.append(f"_s{i}")
        elif piece in row_keys:
            value = f"row[{piece!r}]"
            if processors.get(piece) is not None:
                names[f"_p{i}"] = processors[piece]
                value = f"_p{i}({value})"
            parts.append(f"_L({value})")
        else:
            value = constants[piece]
            if processors.get(piece) is not None:
                value = processors[piece](value)
            names[f"_c{i}"] = literal(value)
            parts.append(f"_c{i}")
    source = f"def write(row):\n    return ''.join(({', '.join(parts)},))\n"
    exec(compile(source, "<pgliteral.writer>", "exec"), names)    # noqa: S102 - our own statement text
    return names["write"]


def interpolated(dbapi_connection: Any, sql: str, params: Mapping[str, Any]) -> str | None:
    """``sql`` (psycopg2's ``%(name)s`` placeholders) with ``params`` written in as literals, escaped
    again for the interpolation psycopg2 runs on a text executed with parameters (``{}``: held
    writes riding along expect it) -- or None where :func:`literals` does not quote."""
    if type(params) is not dict or not literals_usable(dbapi_connection):
        return None
    quoted = literals(params)
    return None if quoted is None else (sql % quoted).replace("%", "%%")


__all__ = ["Unquotable", "interpolated", "literal", "literals", "literals_usable", "writer"]
