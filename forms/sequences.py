"""Gap-free counters for ``auto_number`` fields (e.g. ``TS20261123{####}``).

The counter row is incremented inside the caller's transaction: a rolled-back
create gives its number back, and concurrent creates queue on the row lock
(PostgreSQL) or the write lock (SQLite), so numbers are never skipped or
repeated.  Bulk imports reserve a block of numbers with one statement.
"""
from __future__ import annotations

from sqlalchemy.engine import Connection

from engine import platform as P


def allocate(conn: Connection, app: str, key: str, count: int = 1) -> int:
    """Reserve ``count`` consecutive values of counter ``key``; return the first."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(P.sequences).values(app=app, key=key, value=count)
    stmt = stmt.on_conflict_do_update(index_elements=["app", "key"], set_={"value": P.sequences.c.value + count})
    last = conn.execute(stmt.returning(P.sequences.c.value)).scalar_one()
    return int(last) - count + 1
