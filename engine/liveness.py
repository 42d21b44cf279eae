"""Is a pooled PostgreSQL connection still alive? Asked at every checkout, without a round trip.

SQLAlchemy's ``pool_pre_ping`` answers by sending ``SELECT 1`` on every checkout: a round trip, and
~0.1 ms of the server's and this process's time, before every request's first statement.  Yet a
connection that sits in the pool between transactions has nothing to read: every result was
consumed before it was checked in.  When the server ends the session -- a restart, a failover,
``pg_terminate_backend``, pgbouncer going away -- it sends a termination notice and closes the
socket, and the socket becomes readable.  So a non-blocking ``poll()`` of the socket (a system
call, no traffic) tells the connections that may be dead from those that are not:

* nothing to read: the connection is used as it is;
* something to read (the notice, end of file -- or, harmlessly, a ``NOTIFY`` or a parameter
  status message): the real ping runs, as ``pool_pre_ping`` would run it, and a connection that
  fails it is replaced before the request sees it (``DisconnectionError``: the pool retries).

What neither can see is a peer that vanished without closing (a cut network path): the ping would
block on it just as the request's own statement does, until TCP gives up.
"""
from __future__ import annotations

import select
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError

_POLL_IN = getattr(select, "POLLIN", 0) | getattr(select, "POLLHUP", 0) | getattr(select, "POLLERR", 0)


def input_waiting(dbapi_connection: Any) -> bool:
    """Whether the server has sent something on this idle connection -- or its state can't be seen
    (closed, no socket, no ``poll`` on this platform), which counts as yes: the caller pings."""
    if getattr(dbapi_connection, "closed", 0):
        return True
    try:
        fd = dbapi_connection.fileno()
    except Exception:        # a closed or broken connection: let the ping find out
        return True
    if not hasattr(select, "poll"):
        return True
    poller = select.poll()
    poller.register(fd, _POLL_IN)
    return bool(poller.poll(0))


def install(engine: Engine) -> None:
    """Check each checked-out connection of ``engine`` as the module docstring says (PostgreSQL)."""
    dialect = engine.dialect

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if not input_waiting(dbapi_connection):
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_connection, None):
                raise DisconnectionError(f"the database closed this pooled connection: {exc}") from exc
            raise


__all__ = ["input_waiting", "install"]
