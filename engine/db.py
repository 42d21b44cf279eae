"""Database access: one engine per process, SQLite or PostgreSQL.

* ``postgresql://`` URLs are mapped to psycopg2 explicitly (SQLAlchemy 2.1
  maps a bare ``postgresql://`` to psycopg 3, which we don't ship).
* SQLite runs in WAL mode with writes serialised: a process-wide lock plus
  ``BEGIN IMMEDIATE`` for write transactions, so concurrent writers queue
  briefly instead of failing with "database is locked".  Reads use plain
  deferred transactions and run concurrently with the writer (WAL).
* PostgreSQL write transactions let writes nobody reads ride along with the
  next statement (:mod:`engine.later`).
"""
from __future__ import annotations

import contextlib
import json
import os
import threading
from typing import Any, Iterator

import orjson
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine

from . import later, liveness
from .driver import driver_execute
from .pgliteral import Unquotable, writer

DEFAULT_URL = "sqlite:///loom.db"


def database_url(explicit: str | None = None) -> str:
    return explicit or os.environ.get("LOOM_DATABASE_URL") or DEFAULT_URL


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***``, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}:***@{host}" if ":" in creds else url
    return url


def normalise_url(url: str) -> str:
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


class JsonText(str):
    """A JSON column's value serialized by the caller (``dumps``): ``json_text`` stores it as it is.
    For values with their own conversions (the rule log's), done in one orjson call instead of a
    Python pass over the value before the generic serializer."""

    __slots__ = ()


def json_text(value: Any) -> str:
    """JSON columns' text (SQLAlchemy's ``json_serializer``): orjson, about five times faster than
    ``json.dumps`` on the timeline lines, rule-log rows, timers and cursors a create writes.  What
    orjson refuses (an integer beyond 64 bits) goes to ``json.dumps`` as before; what it does
    differently is harmless: compact text, UTF-8 instead of ``\\u`` escapes, NaN as null."""
    if type(value) is JsonText:
        return str(value)
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value)


def dumps(value: Any, default: Any, slow: Any) -> JsonText:
    """``value`` as JSON for a JSON column, ``default`` converting what orjson does not know.  What
    orjson still refuses (an integer beyond 64 bits, a tuple as a key) goes through ``slow`` (a
    conversion to plain data) and ``json.dumps``."""
    try:
        return JsonText(orjson.dumps(value, default=default, option=orjson.OPT_NON_STR_KEYS).decode())
    except TypeError:
        return JsonText(json.dumps(slow(value)))


class Database:
    """The process's engine plus read/write transaction helpers."""

    def __init__(self, url: str | None = None, *, pool_size: int = 10):
        self.url = normalise_url(database_url(url))
        self.is_sqlite = self.url.startswith("sqlite")
        self._write_lock = threading.RLock()
        if self.is_sqlite:
            # A pool of connections (closing a WAL connection checkpoints, which
            # costs milliseconds); each is used by one thread at a time.
            self.engine: Engine = create_engine(
                self.url, connect_args={"check_same_thread": False, "timeout": 60},
                pool_size=pool_size, max_overflow=20, json_serializer=json_text)
            self._configure_sqlite(self.engine)
            later.install(self.engine)
        else:
            # no pool_pre_ping (a SELECT 1 round trip on every checkout): engine.liveness pings only a
            # connection the server has sent something to since it was checked in
            self.engine = create_engine(self.url, pool_size=pool_size, max_overflow=20, json_serializer=json_text)
            liveness.install(self.engine)
            later.install(self.engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @staticmethod
    def _configure_sqlite(engine: Engine) -> None:
        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            mode = conn.info.pop("loom_begin", "BEGIN")
            conn.exec_driver_sql(mode)

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction: commits on success, rolls back on any error."""
        if self.is_sqlite:
            with self._write_lock:
                with self.engine.connect() as conn:
                    conn.info["loom_begin"] = "BEGIN IMMEDIATE"
                    with conn.begin():
                        with later.holding_writes(conn):    # writes nobody reads go just before the next statement
                            yield conn
        else:
            with self.engine.begin() as conn:
                with later.holding_writes(conn):            # writes nobody reads ride along with the next statement
                    yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            with conn.begin():
                yield conn

    def dispose(self) -> None:
        self.engine.dispose()


_INSERT_IGNORE: dict[tuple, Any] = {}


def storable_id(value: Any) -> bool:
    """Whether ``value`` can be a row id: ids are BIGINT, and a larger one (from a URL) matches
    nothing -- binding it makes the driver raise (SQLite: OverflowError) instead of finding nothing."""
    return isinstance(value, int) and -(2**63) <= value < 2**63


def insert_ignore(table: Any, conflict: tuple[str, ...], dialect: str, returning: tuple[str, ...] = ()) -> Any:
    """``INSERT ... ON CONFLICT (conflict) DO NOTHING [RETURNING ...]`` for ``table``, built once per
    dialect and executed with parameter dicts.  Building it per call (``insert().values(...)``) cost
    more Python time than the database spent on the row."""
    key = (table.name, conflict, dialect, returning)
    stmt = _INSERT_IGNORE.get(key)
    if stmt is None:
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(table).on_conflict_do_nothing(index_elements=list(conflict))
        if returning:
            stmt = stmt.returning(*(table.c[c] for c in returning))
        _INSERT_IGNORE[key] = stmt
    return stmt


_DRIVER_TEXT: dict[tuple, tuple] = {}
_DRIVER_WRITERS: dict[tuple, Any] = {}


def run_driver(conn: Connection, statement: Any, params: dict) -> Any:
    """Execute ``statement`` (built once, module level) as the driver's own SQL text, compiled once
    per dialect: on a hot path SQLAlchemy's per-call work (cache key, parameter processing, result
    metadata) costs more than a one-row primary-key read on the server.  Only for statements whose
    parameters and result columns need no type processing (plain texts and numbers in, values the
    driver decodes itself out); engine events still see the statement (:mod:`engine.driver`).
    Returns the rows (``first()``, ``all()``) as the driver's tuples."""
    key = (id(statement), conn.dialect.name)
    got = _DRIVER_TEXT.get(key)
    if got is None or got[0] is not statement:
        compiled = statement.compile(dialect=conn.dialect)
        # constants the statement carries (bound literals in a subquery) travel with every call;
        # a positional driver (SQLite's qmark) takes the values in the statement's order
        got = _DRIVER_TEXT[key] = (statement, str(compiled), {k: v for k, v in compiled.params.items() if v is not None},
                                   tuple(compiled.positiontup) if compiled.positional else None)
    _, text, constants, order = got
    merged = {**constants, **params} if constants else params
    if order is not None:
        return driver_execute(conn, text, tuple(merged[name] for name in order), rows=True)
    if type(merged) is dict and later.literals_ok(conn):
        # PostgreSQL: plain values written in as literals, by a writer made once per statement text
        wkey = (text, tuple(merged))
        write = _DRIVER_WRITERS.get(wkey)
        if write is None:
            write = _DRIVER_WRITERS[wkey] = writer(text, frozenset(merged), {}, {})
        try:
            return driver_execute(conn, write(merged), None, rows=True)        # final text: no interpolation
        except Unquotable:
            pass
    return driver_execute(conn, text, merged, rows=True)
