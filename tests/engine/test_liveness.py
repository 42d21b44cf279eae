"""Pooled PostgreSQL connections: no ping round trip for a healthy one, and a connection the server
ended is replaced before a request sees it (engine.liveness)."""
from __future__ import annotations

import time

import psycopg2
import pytest
from sqlalchemy import text

from engine.db import Database
from engine.liveness import input_waiting

from ..conftest import pg_database


@pytest.fixture
def pg():
    with pg_database("loom_live") as url:
        db = Database(url, pool_size=2)
        pings = []
        do_ping = db.engine.dialect.do_ping

        def counted(dbapi_connection):          # the real ping, counted
            pings.append(1)
            return do_ping(dbapi_connection)
        db.engine.dialect.do_ping = counted
        try:
            yield db, pings, url
        finally:
            db.dispose()


def _backend(db) -> int:
    with db.read() as conn:
        return conn.execute(text("SELECT pg_backend_pid()")).scalar()


def _wait_readable(db, pid: int) -> None:
    """Until the pooled connection of backend ``pid`` has the server's goodbye to read (it is sent
    as the backend exits; a test must not race it)."""
    pool = db.engine.pool
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        records = [r for r in list(pool._pool.queue) if r.dbapi_connection is not None]
        if any(input_waiting(r.dbapi_connection) for r in records):
            return
        time.sleep(0.02)
    raise AssertionError(f"backend {pid} was terminated but its connection never became readable")


def test_a_healthy_pooled_connection_is_reused_without_a_ping(pg):
    db, pings, _ = pg
    first = _backend(db)
    for _ in range(20):
        with db.write() as conn:
            conn.execute(text("SELECT 1"))
        assert _backend(db) == first
    assert pings == []          # pool_pre_ping would have sent 41 SELECT 1 round trips


def test_a_connection_the_server_ended_is_replaced_before_the_request_uses_it(pg, tmp_path):
    db, pings, url = pg
    victim = _backend(db)
    admin = psycopg2.connect(url)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (victim,))
            assert cur.fetchone()[0] is True
    finally:
        admin.close()
    _wait_readable(db, victim)
    # the next request gets a working connection: no error, a new backend
    with db.write() as conn:
        assert conn.execute(text("SELECT 41 + 1")).scalar() == 42
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar() != victim
    assert len(pings) == 1      # the ended connection was pinged (and failed), the new one was not


def test_a_notification_waiting_on_a_live_connection_costs_a_ping_not_the_connection(pg):
    # something to read is not always a goodbye: a NOTIFY (or a parameter status) on a session that
    # listens also makes the socket readable; the ping reads it and the connection stays
    db, pings, url = pg
    with db.write() as conn:
        conn.execute(text("LISTEN loom_liveness_test"))
        listener = conn.execute(text("SELECT pg_backend_pid()")).scalar()
    other = psycopg2.connect(url)
    other.autocommit = True
    try:
        with other.cursor() as cur:
            cur.execute("NOTIFY loom_liveness_test, 'hello'")
    finally:
        other.close()
    _wait_readable(db, listener)
    assert _backend(db) == listener
    assert len(pings) == 1
    assert _backend(db) == listener and len(pings) == 1     # read once: no ping the time after
