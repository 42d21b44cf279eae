"""Durable timers, fired exactly once however many workers run.

Timers live in ``loom_timers`` with a unique ``key`` (so scheduling the same
thing twice is a no-op).  A worker claims a batch of due timers with
``SELECT ... FOR UPDATE SKIP LOCKED`` and, *in the same transaction*, runs
each handler and marks the timer done.  So:

* two workers never claim the same timer (SKIP LOCKED);
* a worker killed mid-batch loses nothing and duplicates nothing: its
  transaction rolls back, the row locks vanish, another worker takes them;
* a handler that fails is rolled back to a savepoint, retried with backoff,
  and after ``MAX_ATTEMPTS`` marked failed with its error -- the rest of the
  batch still commits.

We chose plain ``SKIP LOCKED`` over a queue library such as procrastinate:
timers must commit atomically with the business changes they cause (the
record update, the outbox row), which needs them in our own transaction on
our own connection; a separate queue would add a second source of truth.

Each handler runs with ``uow.now`` = the timer's due time (the instant it
logically fires), so ``loom tick --now`` replays 90 days faithfully.

Cost: a batch on the fast path is three statements whatever its size -- the
claim, one multi-row INSERT of the outbox rows that handlers queued with
``outbox.enqueue_batched`` (held on the connection, written before any other
statement on it), and one UPDATE marking the batch done -- plus whatever
else the handlers execute, and one commit.  Handlers that need to know
whether their message was new use ``outbox.enqueue`` (one INSERT each).
``bench/bench_timers.py`` measures this against a bare SKIP LOCKED loop.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
from typing import Any, Callable

from sqlalchemy import and_, bindparam, select, update
from sqlalchemy.engine import Connection

from . import outbox
from . import platform as P
from .auth import SYSTEM_USER
from .clock import from_db, to_db
from .db import insert_ignore
from .later import write_later
from .runtime import AppNotFound
from .uow import UnitOfWork

log = logging.getLogger("loom.scheduler")
MAX_ATTEMPTS = 5
BATCH = 500       # timers per claim: 200 -> 500 halves the statements and commits per timer (bench_timers.py)

TimerHandler = Callable[[UnitOfWork, dict], None]
_HANDLERS: dict[str, TimerHandler] = {}
_AFTER_TICK: list[Callable[[Any, dt.datetime], dict]] = []


def register_timer_handler(kind: str, handler: TimerHandler) -> None:
    """``handler(uow, timer)`` runs when a timer of ``kind`` is due; ``timer`` is a dict of the row."""
    _HANDLERS[kind] = handler


def register_tick_step(step: Callable[[Any, dt.datetime], dict]) -> None:
    """Extra work per tick (e.g. outbox delivery): ``step(runtime, now) -> counts``."""
    if step not in _AFTER_TICK:
        _AFTER_TICK.append(step)


def schedule(conn: Connection, *, app: str, kind: str, key: str, due_at: dt.datetime, payload: dict | None = None,
             form: str | None = None, record_id: int | None = None) -> bool:
    """Add a timer unless one with ``key`` already exists; True if added."""
    res = conn.execute(insert_ignore(P.timers, ("key",), conn.dialect.name),
                       _timer_row(app, kind, key, due_at, payload, form, record_id))
    return res.rowcount > 0


def schedule_later(conn: Connection, *, app: str, kind: str, key: str, due_at: dt.datetime,
                   payload: dict | None = None, form: str | None = None, record_id: int | None = None) -> None:
    """:func:`schedule` for callers that need not know whether the timer was new: the INSERT rides
    along with the next statement (:mod:`engine.later`) and joins other held timer rows -- an SLA
    clock's timers and a new record's date-rule timers are one statement, not one round trip each."""
    write_later(conn, insert_ignore(P.timers, ("key",), conn.dialect.name),
                _timer_row(app, kind, key, due_at, payload, form, record_id))


def _timer_row(app: str, kind: str, key: str, due_at: dt.datetime, payload: dict | None, form: str | None,
               record_id: int | None) -> dict:
    return dict(app=app, kind=kind, key=key[:255], due_at=to_db(due_at), payload=payload or {}, form=form,
                record_id=record_id, status="pending", attempts=0)


def cancel(conn: Connection, *, app: str, form: str | None = None, record_id: int | None = None,
           kind: str | None = None, key_prefix: str | None = None) -> int:
    conds = [P.timers.c.app == app, P.timers.c.status == "pending"]
    if form is not None:
        conds.append(P.timers.c.form == form)
    if record_id is not None:
        conds.append(P.timers.c.record_id == record_id)
    if kind is not None:
        conds.append(P.timers.c.kind == kind)
    if key_prefix is not None:
        conds.append(P.timers.c.key.startswith(key_prefix, autoescape=True))
    return conn.execute(update(P.timers).where(and_(*conds)).values(status="cancelled")).rowcount


_STATEMENTS: dict[str, dict[str, Any]] = {}


def _statements(dialect: str) -> dict[str, Any]:
    """The batch's claim and completion statements and :func:`schedule`'s INSERT, built once per
    dialect (their compiled form and cache key are then reused instead of being rebuilt for every
    batch or timer)."""
    stmts = _STATEMENTS.get(dialect)
    if stmts is None:
        t = P.timers
        claim = (select(t).where(t.c.status == "pending", t.c.due_at <= bindparam("now"))
                 .order_by(t.c.due_at, t.c.id).limit(bindparam("n")))
        if dialect == "postgresql":
            claim = claim.with_for_update(skip_locked=True)
        done = (update(t).where(t.c.id.in_(bindparam("ids", expanding=True)))
                .values(status="done", fired_at=bindparam("now"), locked_by=bindparam("worker"), attempts=t.c.attempts + 1))
        stmts = _STATEMENTS[dialect] = {"claim": claim, "done": done}
    return stmts


class _BatchFailed(Exception):
    """A handler failed on the fast path: roll the batch back and redo it with savepoints."""


class Scheduler:
    def __init__(self, runtime: Any, worker_id: str | None = None, batch: int = BATCH):
        self.rt = runtime
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 10000}"
        self.batch = batch
        self._stop = threading.Event()

    def tick(self, now: dt.datetime | None = None) -> dict:
        """Fire everything due up to ``now`` (including timers that firing creates)."""
        now = now or self.rt.clock.now()
        counts = {"timers": 0, "failed": 0}
        while True:
            fired, failed = self._fire_batch(now)
            counts["timers"] += fired
            counts["failed"] += failed
            if fired + failed == 0:
                break
        for step in _AFTER_TICK:
            for k, v in step(self.rt, now).items():
                counts[k] = counts.get(k, 0) + v
        return counts

    def _fire_batch(self, now: dt.datetime) -> tuple[int, int]:
        """Claim up to ``batch`` due timers and fire them in one transaction.

        Fast path: handlers run back to back without savepoints, the outbox
        rows they queue with ``outbox.enqueue_batched`` are written by one
        multi-row INSERT, and the fired timers are marked done with one
        UPDATE -- three statements per batch plus whatever else the handlers
        do.  If any handler raises (or the batch's outbox INSERT fails), the
        whole transaction is rolled back (nothing of the batch is kept, the
        row locks are released) and the batch is claimed again in careful
        mode: a savepoint per timer, so the failing one is retried later and
        the others still commit.  Either way a timer is marked done in the
        transaction that ran its handler -- exactly once.
        """
        try:
            return self._claim_and_fire(now, careful=False)
        except _BatchFailed:
            return self._claim_and_fire(now, careful=True)

    def _claim_and_fire(self, now: dt.datetime, careful: bool) -> tuple[int, int]:
        t = P.timers
        fired: list[int] = []
        failed = 0
        with self.rt.db.write() as conn:
            stmts = _statements(conn.dialect.name)
            res = conn.execute(stmts["claim"], {"now": to_db(now), "n": self.batch})
            keys = list(res.keys())
            rows = [dict(zip(keys, r)) for r in res.all()]
            if not rows:
                return 0, 0
            if not careful:
                self._fire_fast(conn, rows)
                fired = [row["id"] for row in rows]
            else:
                for row in rows:
                    ok, error = self._fire_one(conn, row)
                    if ok:
                        fired.append(row["id"])
                        continue
                    attempts = row["attempts"] + 1
                    final = attempts >= MAX_ATTEMPTS
                    retry_at = max(now, from_db(row["due_at"])) + dt.timedelta(minutes=2 ** attempts)  # not again in this tick
                    conn.execute(update(t).where(t.c.id == row["id"]).values(
                        status="failed" if final else "pending", attempts=attempts, last_error=error[:2000],
                        due_at=row["due_at"] if final else to_db(retry_at), locked_by=self.worker_id))
                    failed += 1
            if fired:
                conn.execute(stmts["done"], {"ids": fired, "now": to_db(now), "worker": self.worker_id})
        return len(fired), failed

    def _fire_fast(self, conn: Connection, rows: list[dict]) -> None:
        """Run every handler of the batch in the batch transaction; ``_BatchFailed`` at the first error."""
        apps: dict[str, Any] = {}
        rt = self.rt
        try:
            with outbox.batched(conn):
                for row in rows:
                    kind, name = row["kind"], row["app"]
                    handler = _HANDLERS.get(kind)
                    if handler is None:
                        raise _BatchFailed(f"no handler for timer kind '{kind}'")
                    app = apps.get(name)
                    if app is None:
                        try:
                            app = apps[name] = rt.app(name)
                        except AppNotFound:
                            raise _BatchFailed(f"app '{name}' is not installed") from None
                    try:
                        handler(UnitOfWork(rt, conn, app, SYSTEM_USER, from_db(row["due_at"]), lang=app.default_language), row)
                    except Exception as exc:  # noqa: BLE001 - the batch is redone carefully
                        raise _BatchFailed(f"{type(exc).__name__}: {exc}") from exc
        except _BatchFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - the batch's outbox INSERT failed: find the culprit carefully
            raise _BatchFailed(f"{type(exc).__name__}: {exc}") from exc

    def _fire_one(self, conn: Connection, row: dict) -> tuple[bool, str]:
        handler = _HANDLERS.get(row["kind"])
        if handler is None:
            return False, f"no handler for timer kind '{row['kind']}'"
        try:
            app = self.rt.app(row["app"])
        except AppNotFound:
            return False, f"app '{row['app']}' is not installed"
        savepoint = conn.begin_nested()
        try:
            uow = UnitOfWork(self.rt, conn, app, SYSTEM_USER, from_db(row["due_at"]), lang=app.default_language)
            handler(uow, row)
            savepoint.commit()
            return True, ""
        except Exception as exc:  # noqa: BLE001 - one bad timer must not stop the others
            savepoint.rollback()
            log.warning("timer %s (%s) failed: %s", row["id"], row["kind"], exc)
            return False, f"{type(exc).__name__}: {exc}"

    def run_forever(self, interval: float = 1.0) -> None:
        """Tick every ``interval`` seconds until :meth:`stop`; never dies of an error.

        A database that is down (restart, failover: ``OperationalError`` /
        ``InterfaceError``) is expected: one warning line per failed tick, and
        the wait doubles up to 30 s until it answers again (the pool's
        pre-ping then replaces the dead connections).  Nothing is lost: a tick
        that failed rolled back, its timers are still pending.  Any other error
        is logged with its traceback and retried after ``interval * 5``.
        """
        from sqlalchemy.exc import InterfaceError, OperationalError

        backoff = 0.0
        while not self._stop.is_set():
            try:
                self.tick(self.rt.clock.now())
                backoff = 0.0
            except (OperationalError, InterfaceError) as exc:
                backoff = min(30.0, max(interval, backoff * 2 or interval))
                log.warning("database unavailable, retrying in %.1fs: %s", backoff,
                            str(exc.orig if exc.orig is not None else exc).strip().splitlines()[0][:200])
                self._stop.wait(backoff)
                continue
            except Exception:  # noqa: BLE001 - keep the worker alive
                log.exception("scheduler tick failed; retrying")
                self._stop.wait(min(10.0, interval * 5))
            self._stop.wait(interval)

    def stop(self) -> None:
        self._stop.set()


def pending_timers(conn: Connection, app: str, form: str | None = None, record_id: int | None = None) -> list[dict]:
    t = P.timers
    q = select(t).where(t.c.app == app, t.c.status == "pending")
    if form:
        q = q.where(t.c.form == form)
    if record_id is not None:
        q = q.where(t.c.record_id == record_id)
    return [dict(r) for r in conn.execute(q.order_by(t.c.due_at)).mappings()]
