"""Statements given to the DBAPI cursor as they are, for the few hot paths where SQLAlchemy's
per-statement work costs more than the database's.

``Connection.exec_driver_sql`` still builds an execution context and, for a read, the result's
metadata from the cursor description on every call: on SQLite that is about three times the
work of a one-row primary-key read or a small INSERT.  :func:`driver_execute` keeps what matters
of that path and drops the rest:

* engine events still see the statement (``before_execute`` -- SQLite's held writes go first,
  :mod:`engine.later` -- and ``before/after_cursor_execute``: PostgreSQL's held writes ride
  along, statement counters count it), through SQLAlchemy's own ``_cursor_execute``;
* driver errors come out as SQLAlchemy's (``DBAPIError`` and subclasses), and a lost
  connection is invalidated, exactly as for any statement (a dead database is a 503);
* only inside a transaction already begun; otherwise the normal path runs (it begins one).

Parameters are the driver's own (positional for SQLite's ``?``, a dict for psycopg2's
``%(name)s``): no type processing is applied, so callers pass plain values.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection


class _Rows:
    """What callers use of a result: ``first()``, ``all()``, ``rowcount``."""

    __slots__ = ("rows", "rowcount")

    def __init__(self, rows: list, rowcount: int):
        self.rows, self.rowcount = rows, rowcount

    def first(self) -> Any:
        return self.rows[0] if self.rows else None

    def all(self) -> list:
        return self.rows


def driver_execute(conn: Connection, sql: str, params: Any, *, rows: bool = False) -> Any:
    """Run ``sql`` with ``params`` on ``conn``'s DBAPI cursor.  ``rows``: fetch the result rows (as
    the driver's tuples).  Returns an object with ``first()``, ``all()`` and ``rowcount``.

    ``params=None`` (PostgreSQL): ``sql`` is final text, sent without interpolation (held writes
    riding along are then not escaped for it) -- values already written in as literals
    (:mod:`engine.pgliteral`), or :func:`engine.later.flush`'s held writes."""
    if not conn.in_transaction():
        result = conn.exec_driver_sql(sql, params, execution_options={"no_parameters": True} if params is None else None)
        return _Rows(result.all() if rows else [], result.rowcount)
    if conn._has_events or conn.engine._has_events:
        # the listeners take (conn, clauseelement, multiparams, params, execution_options)
        conn.dispatch.before_execute(conn, sql, (), params, {})
    cursor = conn.connection.cursor()
    try:
        conn._cursor_execute(cursor, sql, params)
        try:
            return _Rows(cursor.fetchall() if rows else [], cursor.rowcount)
        except BaseException as exc:
            conn._handle_dbapi_exception(exc, sql, params, cursor, None)
            raise   # (it raises)
    finally:
        cursor.close()


__all__ = ["driver_execute"]
