"""Optimistic reads: skip a locking round trip when this process already knows the row, and let
the write that depends on it check, on the server, that the row has not moved.

A record create whose rules assign it by round robin must read the pool's cursor under a lock
(``SELECT ... FOR UPDATE``) before it can choose: on PostgreSQL that read is a round trip of its
own, before the INSERT, on every lead -- about a third of what the rules add to a create.  Yet in
the usual case the cursor is exactly what this process wrote last time.  So a caller may use its
remembered copy instead, if it makes the write that advances the row *conditional*: a statement
that raises ``40001`` (serialization failure) with a message starting with :data:`STALE` when the
row is no longer what was remembered.  That write is held (:mod:`engine.later`) and goes with the
INSERT, so the check costs no round trip.

When the check fails, the work is done again, pessimistically:

* :func:`attempt` runs one unit of work (``Records.create``) in a *frame*;
* :func:`begin` -- asked by the optimistic reader -- holds a ``SAVEPOINT`` in front of everything
  the unit writes, and says whether an optimistic read is allowed here;
* when a statement fails with the stale-read error, :func:`attempt` rolls back to that savepoint
  (the transaction's earlier work stays; writes still held are dropped), runs the caller's callbacks (:func:`on_failure`:
  forget the remembered copy; read under the lock for a while, as other processes write the row
  too), and runs the unit once more with optimistic reads off -- a locked read, as before.

An optimistic read is allowed only where a retry is safe and cheap: on PostgreSQL, inside a write
transaction, in the innermost :func:`attempt`, before that unit has sent or held any statement
(so the savepoint covers all of it), and for at most :data:`MAX_PER_TRANSACTION` units per
transaction (each savepoint is a subtransaction; a bulk import of many records reads under the
lock).  A unit that fails for another reason is undone the same way before its error propagates, so
a caller that goes on in the transaction never meets its checked write.  Concurrent transactions
stay correct either way: the conditional write waits for the
row's lock like ``FOR UPDATE`` does, and then sees the other transaction's committed value.
"""
from __future__ import annotations

from typing import Any, Callable, TypeVar

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from .later import held, hold_sql, transaction, unhold_from

STALE = "loom: stale read"       # message prefix of the conditional writes' error (SQLSTATE 40001)
MAX_PER_TRANSACTION = 8

T = TypeVar("T")
retries = 0     # units of work this process ran again after a stale read (benchmarks, tests)


class _Frame:
    __slots__ = ("savepoint", "allowed", "sent", "held", "undo")

    def __init__(self, sent: int, held_now: int):
        self.savepoint: str | None = None
        self.allowed = True
        self.sent, self.held = sent, held_now    # (``held``: also where the savepoint is held, see begin)
        self.undo: list[Callable[[bool], Any]] = []


def is_stale(exc: BaseException) -> bool:
    """Whether ``exc`` is a conditional write's "the row moved" error."""
    orig = getattr(exc, "orig", None)
    if getattr(orig, "pgcode", None) != "40001":
        return False
    diag = getattr(orig, "diag", None)
    return str(getattr(diag, "message_primary", "") or "").startswith(STALE)


def attempt(conn: Connection, work: Callable[[], T]) -> T:
    """``work()``, run again once -- with optimistic reads off -- if an optimistic read in it turns
    out stale.  ``work`` must be safe to run twice: everything it wrote the first time is rolled
    back to the savepoint, and its Python-side effects must be undone by whoever made them
    (:func:`on_failure`, or ``work`` itself on entry)."""
    tx = transaction(conn)
    if tx is None:
        return work()
    frame = _Frame(tx.sent, held(conn))
    tx.frames.append(frame)
    try:
        try:
            return work()
        except BaseException as exc:
            stale = frame.savepoint is not None and isinstance(exc, DBAPIError) and is_stale(exc)
            undo, frame.undo = frame.undo, []
            for fn in undo:
                fn(stale)
            if not stale:
                if frame.savepoint is not None:
                    # a check refused the record, a rule failed...: nothing of this unit is left to
                    # run into its checked write later, should the caller go on in this transaction
                    try:
                        _discard(conn, frame)
                    except DBAPIError:
                        pass              # (a dead connection: the caller's rollback says so)
                raise
        _discard(conn, frame)
        frame.savepoint, frame.allowed = None, False
        global retries
        retries += 1
        return work()
    finally:
        tx.frames.pop()


def _discard(conn: Connection, frame: _Frame) -> None:
    """Undo a unit's writes: drop those still held, and roll back to its savepoint if that was sent."""
    if not unhold_from(conn, frame.held, f"SAVEPOINT {frame.savepoint}"):
        conn.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {frame.savepoint}")


def begin(conn: Connection) -> bool:
    """Whether the caller may read optimistically here (see the module's docstring).  If so, the
    savepoint a retry rolls back to is held now, in front of the unit's writes."""
    tx = transaction(conn)
    if tx is None or not tx.frames:
        return False
    frame = tx.frames[-1]
    if not frame.allowed:
        return False
    if frame.savepoint is None:
        if tx.sent != frame.sent or held(conn) != frame.held or tx.savepoints >= MAX_PER_TRANSACTION:
            frame.allowed = False         # the unit wrote or read already: a retry would repeat that
            return False
        tx.savepoints += 1
        frame.savepoint = f"loom_optimistic_{tx.savepoints}"
        hold_sql(conn, f"SAVEPOINT {frame.savepoint}")
    return True


def on_failure(conn: Connection, undo: Callable[[bool], Any]) -> None:
    """Call ``undo(stale)`` if the current unit of work fails: ``stale`` when an optimistic read
    turned out stale (the unit is then run again), False for any other error (it propagates)."""
    tx = transaction(conn)
    if tx is not None and tx.frames:
        tx.frames[-1].undo.append(undo)


__all__ = ["STALE", "MAX_PER_TRANSACTION", "attempt", "begin", "on_failure", "is_stale"]
