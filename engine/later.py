"""Writes that ride along with the next statement: fewer round trips to PostgreSQL.

On PostgreSQL every statement is a round trip to the server, and under load
the waiting costs more than the work.  Many writes of a request are only
*recorded* -- a rule-log row, a timeline line, a timer, a round-robin cursor
-- and nobody reads their result.  :func:`write_later` holds such a write on
the connection and sends it in the same query string as the next statement
(``INSERT ...; SELECT ...`` -- psycopg2 sends one simple query and returns the
last statement's result), or just before the transaction commits.

Why this is safe:

* order is kept -- a held write always reaches the server before any later
  statement of the same transaction, so reads see it (read-your-writes),
  savepoints and their rollbacks cover it, and a failing write fails the
  transaction exactly as it would have at once;
* only inside ``Database.write()``: the block sets up the holding list and
  sends what is left before it commits; on an exception the list is dropped
  with the rollback.  Anywhere else (and on SQLite, which runs in-process and
  takes one statement per call) the write runs at once;
* values are rendered by SQLAlchemy's own bind processors (JSON, dates) and
  quoted by psycopg2's ``mogrify`` -- the same code that quotes them for a
  normal execution -- never by string formatting of ours;
* a statement run with ``executemany`` is not prefixed: the held writes go
  first, on their own.

Callers pass every column they want written (Python-side column defaults are
not applied to held rows).
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

_PENDING = "loom_later"
_COMPILED: dict[tuple, Any] = {}


def write_later(conn: Connection, statement: Any, params: dict | list[dict]) -> None:
    """Execute ``statement`` with ``params`` (one dict or a list of them) -- with the next statement
    on ``conn`` when it is a PostgreSQL write transaction, else now.  ``statement`` is built once
    (module level or cached): its compiled form is kept under its identity."""
    if not params:
        return
    pending = conn.info.get(_PENDING)
    if pending is None:
        conn.execute(statement, params)
        return
    rows = params if isinstance(params, list) else [params]
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        pending.append(_render(conn, statement, rows))
    except dbapi_error as exc:
        # quoting needs the live connection: a dropped one raises the driver's own error here,
        # which must reach the caller as SQLAlchemy's (a dead database is a 503, not a 500)
        raise DBAPIError.instance(str(statement), rows, exc, dbapi_error) from exc


def _render(conn: Connection, statement: Any, rows: list[dict]) -> str:
    from psycopg2.extensions import encodings
    dbapi = conn.connection.dbapi_connection
    cur = dbapi.cursor()
    try:
        out = []
        for row in rows:
            keys = tuple(sorted(row))
            key = (id(statement), keys)
            got = _COMPILED.get(key)
            if got is None or got[0] is not statement:
                compiled = statement.compile(dialect=conn.dialect, column_keys=list(keys))
                # the row's keys are the statement's parameter names (plain columns, our bindparams):
                # the row can be used as it is, without SQLAlchemy's general construct_params()
                plain = set(compiled.bind_names.values()) == set(keys) and not compiled.escaped_bind_names
                got = _COMPILED[key] = (statement, compiled, tuple(compiled._bind_processors.items()), plain)
            _, compiled, processors, plain = got
            params = dict(row) if plain else compiled.construct_params(row)
            for name, process in processors:
                if name in params:
                    params[name] = process(params[name])
            out.append(cur.mogrify(compiled.string, params).decode(encodings[dbapi.encoding]))
        return ";\n".join(out)
    finally:
        cur.close()


def _take(conn: Connection) -> str | None:
    pending = conn.info.get(_PENDING)
    if not pending:
        return None
    text = ";\n".join(pending)
    pending.clear()
    return text


def flush(conn: Connection) -> None:
    """Send the held writes now (``Database.write()`` does this before it commits)."""
    text = _take(conn)
    if text is not None:
        conn.exec_driver_sql(text, execution_options={"no_parameters": True})


def _ride_along(conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any,
                executemany: bool) -> tuple[str, Any]:
    text = _take(conn)
    if text is None:
        return statement, parameters
    if executemany:
        cursor.execute(text)                      # first, on their own
        return statement, parameters
    if context is not None and context.no_parameters:
        return f"{text};\n{statement}", parameters
    # the statement's own parameters are interpolated by psycopg2 after this: escape our '%'
    return f"{text.replace('%', '%%')};\n{statement}", parameters


def install(engine: Engine) -> None:
    """Let held writes ride along with the next statement on ``engine``'s connections (PostgreSQL)."""
    if engine.dialect.name == "postgresql" and not event.contains(engine, "before_cursor_execute", _ride_along):
        event.listen(engine, "before_cursor_execute", _ride_along, retval=True)


def hold(conn: Connection) -> None:
    """Start holding writes on ``conn`` (a PostgreSQL write transaction)."""
    if conn.dialect.name == "postgresql":
        conn.info[_PENDING] = []


def release(conn: Connection) -> None:
    """Stop holding writes on ``conn``.  An invalidated connection (the server went away) is left
    alone: touching it raises, and its state goes with the dead DBAPI connection anyway."""
    if not conn.invalidated:
        conn.info.pop(_PENDING, None)


__all__ = ["write_later", "flush", "install", "hold", "release"]
