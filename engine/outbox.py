"""The outbox: messages written in the same transaction as their cause.

A rule or journey step never sends anything directly; it inserts an outbox
row (with an idempotency key, so a retried step can't queue a message twice)
inside its transaction.  Delivery happens later, on a scheduler tick, through
a pluggable transport per channel, with retries and backoff.  A row is marked
sent only after its transport accepted it.

Transports (``LOOM_TRANSPORT_<CHANNEL>`` or ``LOOM_TRANSPORT``):
``log`` (default: write to the log), ``file:<dir>`` (one JSON line per
message), ``webhook:<url>`` (POST JSON, e.g. an SMS gateway), and
``smtp:<host>:<port>`` for email.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import smtplib
import urllib.request
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Callable, Iterator

from sqlalchemy import event, or_, select, update
from sqlalchemy.engine import Connection

from . import platform as P
from .clock import to_db
from .db import insert_ignore
from .driver import driver_execute
from .later import holding, made_here, write_later

log = logging.getLogger("loom.outbox")
MAX_ATTEMPTS = 6


_DRIVER: dict[tuple, tuple | None] = {}
_PENDING = "loom_outbox_pending"   # conn.info key: rows queued by ``enqueue_batched`` in this batch, not yet written


def _insert_statement(dialect: str):
    """``INSERT ... ON CONFLICT (idempotency_key) DO NOTHING``, built once per dialect:
    building ``insert().values(...)`` per message was most of a timer's cost."""
    return insert_ignore(P.outbox, ("idempotency_key",), dialect)


_COLUMNS = ("app", "template", "channel", "recipient", "rendered", "subject", "lang", "kind", "status",
            "recipient_kind", "idempotency_key", "due_at", "form", "record_id", "created_at", "attempts", "last_error",
            "next_attempt_at", "sent_at")
_KEY = _COLUMNS.index("idempotency_key")
_PG_MANY = (f"INSERT INTO {P.outbox.name} ({', '.join(_COLUMNS)}) VALUES {{}} "
            "ON CONFLICT (idempotency_key) DO NOTHING")
_PG_ROW = "(" + ", ".join(["%s"] * len(_COLUMNS)) + ")"
_PG_PAGE = 1000


def _row(app: str, template: str, channel: str, recipient: str, rendered: str, key: str, due_at: dt.datetime,
         now: dt.datetime, subject: str | None, lang: str | None, kind: str, status: str, recipient_kind: str | None,
         form: str | None, record_id: int | None, last_error: str | None) -> tuple:
    """One outbox row, values in ``_COLUMNS`` order."""
    created = to_db(now)
    return (app, template, channel, str(recipient)[:255], rendered, subject, lang, kind, status, recipient_kind,
            key[:255], created if due_at is now else to_db(due_at), form, record_id, created, 0, last_error, None, None)


def enqueue(conn: Connection, *, app: str, template: str, channel: str, recipient: str, rendered: str,
            key: str, due_at: dt.datetime, now: dt.datetime, subject: str | None = None, lang: str | None = None,
            kind: str = "service", status: str = "queued", recipient_kind: str | None = None,
            form: str | None = None, record_id: int | None = None, last_error: str | None = None) -> bool:
    """Queue a message unless one with ``key`` exists; True if queued."""
    return bool(enqueue_rows(conn, [_row(app, template, channel, recipient, rendered, key, due_at, now, subject, lang,
                                         kind, status, recipient_kind, form, record_id, last_error)]))


def message_row(*, app: str, template: str, channel: str, recipient: str, rendered: str, key: str,
                due_at: dt.datetime, now: dt.datetime, subject: str | None = None, lang: str | None = None,
                kind: str = "service", status: str = "queued", recipient_kind: str | None = None,
                form: str | None = None, record_id: int | None = None, last_error: str | None = None) -> tuple:
    """The outbox row ``enqueue`` would write (arguments as there), for ``enqueue_rows``."""
    return _row(app, template, channel, recipient, rendered, key, due_at, now, subject, lang, kind, status,
                recipient_kind, form, record_id, last_error)


def row_key(row: tuple) -> str:
    """The idempotency key of a ``message_row`` (as stored: at most 255 characters)."""
    return row[_KEY]


def _driver_statement(dialect: Any) -> tuple[str, tuple] | None:
    """The one-row idempotent INSERT as driver SQL with positional parameters, and the bind
    processors of its columns (SQLite stores DateTime as text: the column type's own conversion,
    as ``conn.execute`` would apply it); None for a driver whose paramstyle it doesn't speak.

    Executing the text skips SQLAlchemy's per-call compile-cache lookup and parameter handling
    (about a third of the INSERT's cost on PostgreSQL); engine events still see the statement."""
    key = (dialect.name, dialect.paramstyle)
    if key not in _DRIVER:
        mark = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(dialect.paramstyle)
        _DRIVER[key] = None if mark is None else (
            f"INSERT INTO {P.outbox.name} ({', '.join(_COLUMNS)}) VALUES ({', '.join([mark] * len(_COLUMNS))}) "
            "ON CONFLICT (idempotency_key) DO NOTHING",
            tuple((i, proc) for i, name in enumerate(_COLUMNS)
                  if (proc := P.outbox.c[name].type.dialect_impl(dialect).bind_processor(dialect)) is not None))
    return _DRIVER[key]


def enqueue_rows(conn: Connection, rows: list[tuple]) -> set[str]:
    """Write ``message_row`` rows, skipping keys that exist; return the keys (``row_key``) that went in.

    One statement whatever the number of rows: for several, ``INSERT ... ON CONFLICT
    (idempotency_key) DO NOTHING RETURNING idempotency_key`` tells new messages from duplicates.
    """
    if not rows:
        return set()
    if len(rows) == 1:
        row = rows[0]
        driver = _driver_statement(conn.dialect)
        if driver is None:
            inserted = conn.execute(_insert_statement(conn.dialect.name), dict(zip(_COLUMNS, row))).rowcount
        else:
            sql, procs = driver
            if procs:
                values = list(row)
                for i, proc in procs:
                    if values[i] is not None:
                        values[i] = proc(values[i])
                inserted = driver_execute(conn, sql, tuple(values)).rowcount
            else:
                inserted = driver_execute(conn, sql, row).rowcount
        return {row[_KEY]} if inserted > 0 else set()
    stmt = insert_ignore(P.outbox, ("idempotency_key",), conn.dialect.name, returning=("idempotency_key",))
    # executemany with RETURNING: SQLAlchemy sends one multi-row INSERT ("insertmanyvalues")
    return set(conn.execute(stmt, [dict(zip(_COLUMNS, r)) for r in rows]).scalars().all())


def enqueue_fresh(conn: Connection, rows: list[tuple]) -> set[str]:
    """``enqueue_rows`` for rows whose keys no other transaction can have written: messages about a
    record inserted in this transaction (their keys contain its new id).  Their INSERT is held
    (``engine.later``: it goes with the next statement instead of costing a round trip); a key
    repeated within this transaction is told apart here, as the database would tell it.  The
    held INSERT still ignores conflicts, so a key that does exist is never written twice."""
    if not rows or not holding(conn) or conn.info.get(_PENDING) is not None:
        return enqueue_rows(conn, rows)
    new, fresh = set(), []
    for row in rows:
        key = row[_KEY]
        if key not in new and not made_here(conn, ("outbox", key)):
            new.add(key)
            fresh.append(row)
            made_here(conn, ("outbox", key), add=True)
    write_later(conn, _insert_statement(conn.dialect.name), [dict(zip(_COLUMNS, r)) for r in fresh])
    return new


def enqueue_batched(conn: Connection, *, app: str, template: str, channel: str, recipient: str, rendered: str,
                    key: str, due_at: dt.datetime, now: dt.datetime, subject: str | None = None,
                    lang: str | None = None, kind: str = "service", status: str = "queued",
                    recipient_kind: str | None = None, form: str | None = None, record_id: int | None = None,
                    last_error: str | None = None) -> None:
    """``enqueue`` for callers that don't need to know whether the key was new.

    Inside ``batched(conn)`` (the scheduler's fast path) the row is only
    remembered, and all such rows of the batch are written by one multi-row
    ``INSERT ... ON CONFLICT (idempotency_key) DO NOTHING`` -- before the next
    statement on ``conn`` (so a later query in the same transaction sees
    them, and a savepoint covers them) and at the latest before the batch
    commits.  Anywhere else it is ``enqueue``.
    """
    row = _row(app, template, channel, recipient, rendered, key, due_at, now, subject, lang, kind, status,
               recipient_kind, form, record_id, last_error)
    pending = conn.info.get(_PENDING)
    if pending is None:
        enqueue_rows(conn, [row])
    else:
        pending.append(row)


def flush(conn: Connection) -> None:
    """Write the rows ``enqueue_batched`` is holding for ``conn``: one statement per 1,000 rows."""
    pending = conn.info.get(_PENDING)
    if not pending:
        return
    rows = pending[:]
    pending.clear()              # before executing: the statements below must not flush again
    if conn.dialect.name == "postgresql":
        # what psycopg2's execute_values does (rows quoted by the driver, C code), but through
        # SQLAlchemy so that engine events see the statement
        from psycopg2.extensions import encodings
        dbapi = conn.connection.dbapi_connection
        cur = dbapi.cursor()
        try:
            for i in range(0, len(rows), _PG_PAGE):
                values = b",".join([cur.mogrify(_PG_ROW, r) for r in rows[i:i + _PG_PAGE]]).decode(encodings[dbapi.encoding])
                # no_parameters: the text is final, a '%' in a message must not be taken for a placeholder
                conn.exec_driver_sql(_PG_MANY.format(values), execution_options={"no_parameters": True})
        finally:
            cur.close()
    else:   # SQLite: executemany runs in-process, no round trips to save
        conn.execute(_insert_statement(conn.dialect.name), [dict(zip(_COLUMNS, r)) for r in rows])


def _flush_before_statement(conn: Connection, *_args: Any) -> None:
    if conn.info.get(_PENDING):
        flush(conn)


@contextlib.contextmanager
def batched(conn: Connection) -> Iterator[None]:
    """Hold ``enqueue_batched`` rows on ``conn`` and write them together (see there).

    On success the rows are written when the block ends; on an exception
    they are dropped (the caller's transaction is rolled back anyway).
    """
    if not event.contains(conn.engine, "before_execute", _flush_before_statement):
        # any other statement on the connection first writes the held rows: read-your-writes and
        # savepoints behave exactly as if each row had been inserted when it was queued
        event.listen(conn.engine, "before_execute", _flush_before_statement)
    conn.info[_PENDING] = []
    try:
        yield
        flush(conn)
    finally:
        conn.info.pop(_PENDING, None)


# -- transports ---------------------------------------------------------------

Transport = Callable[[dict], None]


def _log_transport(msg: dict) -> None:
    log.info("[%s -> %s] %s", msg["channel"], msg["recipient"], msg["rendered"][:200])


def _file_transport(directory: str) -> Transport:
    def send(msg: dict) -> None:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        with open(path / f"{msg['channel']}.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps({k: msg[k] for k in ("id", "channel", "recipient", "subject", "rendered", "template")},
                                ensure_ascii=False, default=str) + "\n")
    return send


def _webhook_transport(url: str) -> Transport:
    def send(msg: dict) -> None:
        body = json.dumps({k: msg[k] for k in ("id", "channel", "recipient", "subject", "rendered", "template")},
                          ensure_ascii=False, default=str).encode()
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json",
                                                              "Idempotency-Key": msg["idempotency_key"]})
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - configured by the operator
            if resp.status >= 300:
                raise RuntimeError(f"gateway answered {resp.status}")
    return send


def _smtp_transport(spec: str) -> Transport:
    host, _, port = spec.partition(":")

    def send(msg: dict) -> None:
        em = EmailMessage()
        em["From"] = os.environ.get("LOOM_MAIL_FROM", "noreply@localhost")
        em["To"] = msg["recipient"]
        em["Subject"] = msg["subject"] or msg["template"]
        em.set_content(msg["rendered"])
        with smtplib.SMTP(host, int(port or 25), timeout=10) as smtp:
            smtp.send_message(em)
    return send


def transport_for(channel: str) -> Transport:
    spec = os.environ.get(f"LOOM_TRANSPORT_{channel.upper()}") or os.environ.get("LOOM_TRANSPORT") or "log"
    kind, _, arg = spec.partition(":")
    if kind == "file":
        return _file_transport(arg or "outbox")
    if kind == "webhook":
        return _webhook_transport(arg)
    if kind == "smtp":
        return _smtp_transport(arg or "localhost:25")
    return _log_transport


def deliver_due(runtime: Any, now: dt.datetime, batch: int = 500) -> dict:
    """Send queued messages that are due; retry failures with backoff."""
    o = P.outbox
    sent = failed = 0
    with runtime.db.write() as conn:
        q = (select(o).where(o.c.status == "queued", o.c.due_at <= to_db(now),
                             or_(o.c.next_attempt_at.is_(None), o.c.next_attempt_at <= to_db(now)))
             .order_by(o.c.due_at, o.c.id).limit(batch))
        if conn.dialect.name == "postgresql":
            q = q.with_for_update(skip_locked=True)
        for msg in [dict(r) for r in conn.execute(q).mappings()]:
            try:
                transport_for(msg["channel"])(msg)
                conn.execute(update(o).where(o.c.id == msg["id"]).values(status="sent", sent_at=to_db(now),
                                                                         attempts=msg["attempts"] + 1))
                sent += 1
            except Exception as exc:  # noqa: BLE001 - transport errors are retried
                attempts = msg["attempts"] + 1
                conn.execute(update(o).where(o.c.id == msg["id"]).values(
                    attempts=attempts, last_error=str(exc)[:2000],
                    status="failed" if attempts >= MAX_ATTEMPTS else "queued",
                    next_attempt_at=to_db(now + dt.timedelta(minutes=2 ** attempts))))
                failed += 1
    return {"messages": sent, "message_failures": failed}


def retry(conn: Connection, message_id: int, apps: list[str] | None = None) -> str | None:
    """Admin: put a failed message back in the queue -- only one of ``apps``, when given (the apps
    the admin manages).  Returns the message's app, or None when there was no such failed message."""
    o = P.outbox
    q = update(o).where(o.c.id == message_id, o.c.status == "failed")
    if apps is not None:
        q = q.where(o.c.app.in_(apps))
    return conn.execute(q.values(status="queued", attempts=0, next_attempt_at=None).returning(o.c.app)).scalar()
