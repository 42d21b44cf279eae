"""Writes that ride along with the next statement: fewer round trips to PostgreSQL, fewer
statements on SQLite.

On PostgreSQL every statement is a round trip to the server, and under load
the waiting costs more than the work.  Many writes of a request are only
*recorded* -- a rule-log row, a timeline line, a timer, a round-robin cursor
-- and nobody reads their result.  :func:`write_later` holds such a write on
the connection and sends it in the same query string as the next statement
(``INSERT ...; SELECT ...`` -- psycopg2 sends one simple query and returns the
last statement's result), or just before the transaction commits.  SQLite runs
in-process and takes one statement per call: there the held writes are run just
before the next statement, each batch as one statement given to the driver as it
is (SQLAlchemy's per-statement work was most of a small INSERT's cost).

Why this is safe:

* order is kept -- a held write always reaches the server before any later
  statement of the same transaction, so reads see it (read-your-writes),
  savepoints and their rollbacks cover it, and a failing write fails the
  transaction exactly as it would have at once;
* only inside ``Database.write()``: the block sets up the holding list and
  sends what is left before it commits; on an exception the list is dropped
  with the rollback.  Anywhere else the write runs at once;
* values are converted by SQLAlchemy's own bind processors (JSON, dates) and,
  on PostgreSQL, quoted as psycopg2 quotes them for a normal execution: by its
  ``mogrify``, or for plain text, numbers and timestamps by
  :mod:`engine.pgliteral`, which writes the same literals (tested against
  ``mogrify``) under the conditions where that is the whole escape; SQLite
  gets them as parameters;
* code that uses the DBAPI connection directly (bulk imports) calls
  :func:`flush` first;
* a statement run with ``executemany`` is not prefixed: the held writes go
  first, on their own.

Callers pass every column they want written (Python-side column defaults are
not applied to held rows).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import operator
import re
from typing import Any, Iterator

from sqlalchemy import DateTime, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from .clock import remember
from .driver import driver_execute
from .pgliteral import Unquotable, interpolated, literals, literals_usable, writer

_PENDING = "loom_later"
_MADE = "loom_made"           # conn.info: facts of this transaction (see ``made_here``)
_LITERALS = "loom_literals"   # conn.info: engine.pgliteral may quote on it (asked once per write transaction)
_TX = "loom_tx"               # conn.info: this write transaction's Transaction (PostgreSQL)
_COMPILED: dict[tuple, Any] = {}
# an INSERT of one row, split into its head, its row of placeholders and its ON CONFLICT DO NOTHING
_ROW_TUPLE = re.compile(r"^(INSERT INTO .+? VALUES )(\((?:(?:%\([^()]+\)s|\?)(?:::[A-Z]+)?(?:, )?)+\))"
                        r"( ON CONFLICT \([^()]+\) DO NOTHING)?(?: RETURNING .*)?$", re.S)
_SQLITE_VARIABLES = 30000      # below SQLite's limit of bound values per statement (32,766)


class _Batch:
    """Held rows of one INSERT (same statement, same columns): sent as one multi-row INSERT.
    PostgreSQL: ``rows`` are rendered value lists; SQLite: parameter tuples for ``one_row``."""

    __slots__ = ("key", "table", "head", "one_row", "tail", "rows")

    def __init__(self, key: tuple, table: str, head: str, one_row: str, tail: str):
        self.key, self.table, self.head, self.one_row, self.tail, self.rows = key, table, head, one_row, tail, []

    def text(self) -> str:
        return self.head + ", ".join(self.rows) + self.tail

    def statement(self) -> tuple[str, tuple]:
        """SQLite: the statement and its parameters."""
        return (self.head + ", ".join([self.one_row] * len(self.rows)) + self.tail,
                tuple(v for row in self.rows for v in row))


def write_later(conn: Connection, statement: Any, params: dict | list[dict]) -> None:
    """Execute ``statement`` with ``params`` (one dict or a list of them) -- with (PostgreSQL) or
    just before (SQLite) the next statement on ``conn`` inside ``Database.write()``, else now.
    ``statement`` is built once (module level or cached): its compiled form is kept under its
    identity.

    Held rows of a plain INSERT (or ``ON CONFLICT DO NOTHING``) join the rows of the same INSERT
    held before them, unless something else held since touches that table: two rule-log rows are
    one statement for the server to plan and run, not two."""
    if not params:
        return
    pending = conn.info.get(_PENDING)
    if pending is None:
        conn.execute(statement, params)
        return
    rows = params if isinstance(params, list) else [params]
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        _hold(conn, pending, statement, rows)
    except dbapi_error as exc:
        # quoting needs the live connection: a dropped one raises the driver's own error here,
        # which must reach the caller as SQLAlchemy's (a dead database is a 503, not a 500)
        raise DBAPIError.instance(str(statement), rows, exc, dbapi_error) from exc


def _compiled(conn: Connection, statement: Any, keys: tuple) -> tuple:
    """(statement, compiled form, bind processors, row usable as is, multi-row parts or None,
    positional getter or None, PostgreSQL literal writer or None), compiled once per statement and
    set of columns."""
    key = (id(statement), keys, conn.dialect.name)
    got = _COMPILED.get(key)
    if got is None or got[0] is not statement:
        compiled = statement.compile(dialect=conn.dialect, column_keys=list(keys))
        # the row's keys are the statement's parameter names (plain columns, our bindparams) and any
        # other parameter is a constant of the statement (``ON CONFLICT DO UPDATE SET status =
        # 'pending'``): the row plus those can be used as they are, without SQLAlchemy's general
        # construct_params()
        names = set(compiled.bind_names.values())
        extra = names - set(keys)
        plain = (set(keys) <= names and not compiled.escaped_bind_names
                 and not any(compiled.binds[n].required for n in extra))
        if plain and extra:
            plain = {n: compiled.params[n] for n in extra}
        parts = None
        m = _ROW_TUPLE.match(compiled.string) if getattr(statement, "is_insert", False) else None
        if m is not None and plain:
            parts = (statement.table.name, m.group(1), m.group(2), m.group(3) or "")
        processors = tuple((name, _kept(proc) if isinstance(getattr(compiled.binds.get(name), "type", None), DateTime)
                            else proc) for name, proc in compiled._bind_processors.items())
        got = _COMPILED[key] = (statement, compiled, processors, plain, parts, _positional(compiled),
                                _writer(conn, compiled, keys, plain, parts, processors))
    return got


def _writer(conn: Connection, compiled: Any, keys: tuple, plain: bool | dict, parts: tuple | None,
            processors: tuple) -> Any:
    """PostgreSQL, a row usable as is: the functions writing its text with the values as literals
    (:func:`engine.pgliteral.writer`) -- (the row as held: a multi-row INSERT's ``(...)`` or the
    whole statement; the whole statement, executed now)."""
    if conn.dialect.name != "postgresql" or not plain:
        return None
    args = (frozenset(keys), plain if type(plain) is dict else {}, dict(processors))
    try:
        whole = writer(compiled.string, *args)
        return (writer(parts[2], *args) if parts is not None else whole), whole
    except (Unquotable, KeyError, ValueError, TypeError):
        return None          # (a constant it does not quote, an odd placeholder): the general path


def _kept(process: Any) -> Any:
    """A timestamp column's bind processor (SQLite's formats the text in Python) remembering its
    recent results: a request writes the same few instants (its now) into many rows.  Naive values
    only (what ``to_db`` gives): equal naive datetimes have the same fields, so the same text."""
    done: dict = {}

    def formatted(value: Any) -> Any:
        if type(value) is not dt.datetime or value.tzinfo is not None:
            return process(value)
        got = done.get(value)
        return got if got is not None else remember(done, value, process(value))
    return formatted


def _positional(compiled: Any) -> Any:
    """params dict -> the values in the statement's order (qmark drivers: SQLite), None for named ones."""
    if not compiled.positional:
        return None
    names = compiled.positiontup
    if len(names) == 1:
        name = names[0]
        return lambda params: (params[name],)
    return operator.itemgetter(*names) if names else (lambda params: ())


def execute_row(conn: Connection, statement: Any, row: dict) -> Any:
    """Execute ``statement`` (built once) with one row of values now and return its first result
    row (RETURNING), through the driver (:mod:`engine.driver`): SQLAlchemy's compiled form and bind
    processors, as for held writes, without its per-call execution work -- the record service's
    INSERT, on every create.  Like held rows, no Python-side column defaults are applied."""
    # the row's own key order: a statement's rows are built alike (dict literals, zip over a column
    # list), and sorting 19 keys cost 8% of holding a row; another order only compiles once more
    keys = tuple(row)
    _, compiled, processors, plain, _, positional, writers = _compiled(conn, statement, keys)
    if writers is not None and literals_ok(conn):
        # PostgreSQL: the values as literals (engine.pgliteral), as psycopg2 would write them
        try:
            text = writers[1](row)
        except Unquotable:
            pass
        else:
            return driver_execute(conn, text, None, rows=True).first()     # final text: no interpolation
    params = _processed(row, compiled, processors, plain)
    if positional is not None:
        return driver_execute(conn, compiled.string, positional(params), rows=True).first()
    text = interpolated(conn.connection.dbapi_connection, compiled.string, params)
    if text is not None:
        return driver_execute(conn, text, {}, rows=True).first()
    return driver_execute(conn, compiled.string, params, rows=True).first()


def _hold(conn: Connection, pending: list, statement: Any, rows: list[dict]) -> None:
    if conn.dialect.name != "postgresql":
        _hold_sqlite(conn, pending, statement, rows)
        return
    quote = _Quoter(conn.connection.dbapi_connection, literals_ok(conn))
    try:
        for row in rows:
            keys = tuple(row)
            _, compiled, processors, plain, parts, _, writers = _compiled(conn, statement, keys)
            text = None
            if writers is not None and quote.fast:
                try:
                    text = writers[0](row)
                except Unquotable:
                    pass
            if text is None:
                text = quote(compiled.string if parts is None else parts[2],
                             _processed(row, compiled, processors, plain))
            if parts is None:
                pending.append((_table_of(statement), text))
                continue
            table, head, one_row, tail = parts
            batch = _batch_for(pending, (id(statement), keys), table)
            if batch is None:
                batch = _Batch((id(statement), keys), table, head, one_row, tail)
                pending.append((table, batch))
            batch.rows.append(text)
    finally:
        quote.close()


def literals_ok(conn: Connection) -> bool:
    """Whether :mod:`engine.pgliteral` may quote on this PostgreSQL connection -- asked once per
    write transaction (``hold``), else of the connection each time."""
    ok = conn.info.get(_LITERALS)
    return ok if ok is not None else literals_usable(conn.connection.dbapi_connection)


class _Quoter:
    """``sql`` with ``params`` filled in as literals: :mod:`engine.pgliteral` for plain values (the
    same text psycopg2 writes, without its per-value cost), else psycopg2's ``mogrify``."""

    __slots__ = ("dbapi", "fast", "cursor")

    def __init__(self, dbapi: Any, fast: bool):
        self.dbapi, self.cursor = dbapi, None
        self.fast = fast

    def __call__(self, sql: str, params: dict) -> str:
        if self.fast:
            quoted = literals(params)
            if quoted is not None:
                return sql % quoted
        if self.cursor is None:
            self.cursor = self.dbapi.cursor()
        from psycopg2.extensions import encodings
        return self.cursor.mogrify(sql, params).decode(encodings[self.dbapi.encoding])

    def close(self) -> None:
        if self.cursor is not None:
            self.cursor.close()


def _hold_sqlite(conn: Connection, pending: list, statement: Any, rows: list[dict]) -> None:
    for row in rows:
        keys = tuple(row)
        _, compiled, processors, plain, parts, positional, _ = _compiled(conn, statement, keys)
        params = _processed(row, compiled, processors, plain)
        values = positional(params)
        if parts is None:
            pending.append((_table_of(statement), (compiled.string, values)))
            continue
        table, head, one_row, tail = parts
        batch = _batch_for(pending, (id(statement), keys), table)
        if batch is None or (len(batch.rows) + 1) * len(values) > _SQLITE_VARIABLES:
            batch = _Batch((id(statement), keys), table, head, one_row, tail)
            pending.append((table, batch))
        batch.rows.append(values)


def _processed(row: dict, compiled: Any, processors: tuple, plain: bool | dict) -> dict:
    """The row's values as the driver takes them (SQLAlchemy's bind processors: JSON, dates).
    ``plain``: the row can be used as it is -- with the statement's constants, when a dict."""
    if plain:
        params = {**plain, **row} if type(plain) is dict else dict(row)
    else:
        params = compiled.construct_params(row)
    for name, process in processors:
        if name in params:
            params[name] = process(params[name])
    return params


def _table_of(statement: Any) -> str | None:
    return getattr(getattr(statement, "table", None), "name", None)


def _batch_for(pending: list, key: tuple, table: str) -> "_Batch | None":
    """The held batch new rows of ``key`` may join: the latest one, if nothing held after it
    touches ``table`` (a held statement whose table is unknown counts as touching every table)."""
    for touched, entry in reversed(pending):
        if isinstance(entry, _Batch) and entry.key == key:
            return entry
        if touched is None or touched == table:
            return None
    return None


def holding(conn: Connection) -> bool:
    """Whether writes on ``conn`` are held (a write transaction) rather than run at once."""
    return conn.info.get(_PENDING) is not None


def made_here(conn: Connection, fact: Any, add: bool = False) -> bool:
    """Whether ``fact`` was recorded for this PostgreSQL write transaction (``add``: record it now).
    Outside one (SQLite, reads) nothing is recorded and the answer is always False.

    Used for what only this transaction can know cheaply: a record inserted in it (no other
    transaction can have written rows keyed by its id -- ``engine.outbox.enqueue_fresh``)."""
    made = conn.info.get(_MADE)
    if made is None:
        return False
    if add:
        made.add(fact)
        return True
    return fact in made


def _take(conn: Connection) -> str | None:
    pending = conn.info.get(_PENDING)
    if not pending:
        return None
    text = ";\n".join(entry if isinstance(entry, str) else entry.text() for _, entry in pending)
    pending.clear()
    return text


def flush(conn: Connection) -> None:
    """Send the held writes now (``Database.write()`` does this before it commits)."""
    if conn.dialect.name != "postgresql":
        pending = conn.info.get(_PENDING)
        if pending:
            held = [entry.statement() if isinstance(entry, _Batch) else entry for _, entry in pending]
            pending.clear()          # before executing: the statements below must not flush again
            for sql, values in held:
                driver_execute(conn, sql, values)
        return
    text = _take(conn)
    if text is not None:
        driver_execute(conn, text, None)       # final text: no interpolation


def _before_statement(conn: Connection, *_args: Any) -> None:
    """SQLite: any statement on the connection first runs the held writes."""
    if conn.info.get(_PENDING):
        flush(conn)


class Transaction:
    """What a PostgreSQL write transaction keeps about itself while it runs: how many statements it
    has sent (``sent``), and the optimistic reads' frames and savepoints (:mod:`engine.optimistic`)."""

    __slots__ = ("sent", "frames", "savepoints")

    def __init__(self) -> None:
        self.sent = 0
        self.frames: list = []
        self.savepoints = 0


def transaction(conn: Connection) -> "Transaction | None":
    """This PostgreSQL write transaction's :class:`Transaction`; None elsewhere (SQLite, reads)."""
    return conn.info.get(_TX)


def held(conn: Connection) -> int:
    """How many writes are held on ``conn`` now (0 outside a write transaction)."""
    pending = conn.info.get(_PENDING)
    return len(pending) if pending else 0


def hold_sql(conn: Connection, sql: str) -> None:
    """Hold a statement written out in full (``SAVEPOINT name``): it goes with the next statement,
    in order, and no held INSERT after it joins one held before it."""
    pending = conn.info.get(_PENDING)
    if pending is None:
        conn.exec_driver_sql(sql)
    else:
        pending.append((None, sql))


def unhold_from(conn: Connection, index: int, sql: str) -> bool:
    """Drop the held statement ``sql`` at ``index`` and everything held after it, if it is still
    there, unsent; else (it was sent) drop everything held now, which was all held after it.
    Returns whether ``sql`` itself was dropped.  (A failed unit of work's savepoint and its writes.)"""
    pending = conn.info.get(_PENDING)
    if not pending:
        return False
    if len(pending) > index and pending[index] == (None, sql):
        del pending[index:]
        return True
    pending.clear()
    return False


def _ride_along(conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any,
                executemany: bool) -> tuple[str, Any]:
    tx = conn.info.get(_TX)
    if tx is not None:
        tx.sent += 1
    text = _take(conn)
    if text is None:
        return statement, parameters
    if executemany:
        cursor.execute(text)                      # first, on their own
        return statement, parameters
    if parameters is None or (context is not None and context.no_parameters):     # final text: as it is
        return f"{text};\n{statement}", parameters
    # the statement's own parameters are interpolated by psycopg2 after this: escape our '%'
    return f"{text.replace('%', '%%')};\n{statement}", parameters


def install(engine: Engine) -> None:
    """Let held writes go with (PostgreSQL) or just before (SQLite) the next statement on ``engine``'s
    connections."""
    if engine.dialect.name == "postgresql":
        if not event.contains(engine, "before_cursor_execute", _ride_along):
            event.listen(engine, "before_cursor_execute", _ride_along, retval=True)
    elif not event.contains(engine, "before_execute", _before_statement):
        event.listen(engine, "before_execute", _before_statement)


@contextlib.contextmanager
def holding_writes(conn: Connection) -> Iterator[None]:
    """Hold writes on ``conn`` for the block; what is left is sent when it ends without an error
    (before the caller commits), dropped with the rollback when it raises."""
    hold(conn)
    try:
        yield
        flush(conn)
    finally:
        release(conn)


def hold(conn: Connection) -> None:
    """Start holding writes on ``conn`` (a write transaction)."""
    conn.info[_PENDING] = []
    if conn.dialect.name == "postgresql":
        # ids are never reused there (SQLite may give a deleted row's id to the next one)
        conn.info[_MADE] = set()
        conn.info[_LITERALS] = literals_usable(conn.connection.dbapi_connection)
        conn.info[_TX] = Transaction()


def release(conn: Connection) -> None:
    """Stop holding writes on ``conn``.  An invalidated connection (the server went away) is left
    alone: touching it raises, and its state goes with the dead DBAPI connection anyway."""
    if not conn.invalidated:
        conn.info.pop(_PENDING, None)
        conn.info.pop(_MADE, None)
        conn.info.pop(_LITERALS, None)
        conn.info.pop(_TX, None)


__all__ = ["write_later", "execute_row", "literals_ok", "holding", "holding_writes", "made_here", "flush", "install", "hold",
           "release", "held", "hold_sql", "unhold_from", "transaction", "Transaction"]
