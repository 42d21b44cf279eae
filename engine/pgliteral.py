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
from decimal import Decimal
from typing import Any, Mapping

from .clock import remember


_TIMESTAMPS: dict = {}       # naive datetime -> its literal (naive: equal values print alike)


def literals_usable(dbapi_connection: Any) -> bool:
    """Whether :func:`literals` may quote for this psycopg2 connection (see the module docstring)."""
    try:
        return (dbapi_connection.get_parameter_status("standard_conforming_strings") == "on"
                and dbapi_connection.encoding == "UTF8")
    except Exception:           # not a psycopg2 connection, or a closed one: let mogrify decide
        return False


def literals(params: Mapping[str, Any]) -> dict[str, str] | None:
    """``params`` as SQL literals for ``statement % literals`` (pyformat placeholders, as psycopg2
    substitutes them), or None if a value is not one of the plain types quoted here."""
    out = {}
    for name, v in params.items():
        t = type(v)
        if t is str:
            if "\x00" in v:
                return None
            out[name] = "'" + v.replace("'", "''") + "'" if "'" in v else "'" + v + "'"
        elif v is None:
            out[name] = "NULL"
        elif t is int:
            # psycopg2 puts a space before a negative number, so "x -1" never becomes "x--1"
            out[name] = str(v) if v >= 0 else " " + str(v)
        elif t is dt.datetime:
            # a request writes the same few instants (its now) into many rows: their text is kept
            text = _TIMESTAMPS.get(v) if v.tzinfo is None else None
            if text is None:
                text = "'" + v.isoformat() + ("'::timestamptz" if v.tzinfo is not None else "'::timestamp")
                if v.tzinfo is None:
                    remember(_TIMESTAMPS, v, text)
            out[name] = text
        elif t is bool:
            out[name] = "true" if v else "false"
        elif t is dt.date:
            out[name] = "'" + v.isoformat() + "'::date"
        elif t is float:
            if not math.isfinite(v):
                return None
            out[name] = repr(v) if math.copysign(1.0, v) > 0 else " " + repr(v)     # -0.0 too
        elif t is Decimal:
            if not v.is_finite():
                return None
            out[name] = " " + str(v) if v.is_signed() else str(v)
        else:
            return None
    return out


def interpolated(dbapi_connection: Any, sql: str, params: Mapping[str, Any]) -> str | None:
    """``sql`` (psycopg2's ``%(name)s`` placeholders) with ``params`` written in as literals, escaped
    again for the interpolation psycopg2 runs on a text executed with parameters (``{}``: held
    writes riding along expect it) -- or None where :func:`literals` does not quote."""
    if type(params) is not dict or not literals_usable(dbapi_connection):
        return None
    quoted = literals(params)
    return None if quoted is None else (sql % quoted).replace("%", "%%")


__all__ = ["interpolated", "literals", "literals_usable"]
