"""Durable timers fire exactly once: 4 worker processes on PostgreSQL, a worker killed with SIGKILL
in the middle of a batch, and catch-up after downtime."""
from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from engine import platform as P
from engine import scheduler
from engine.clock import to_db

from . import timer_worker  # noqa: F401  (registers the test.once handler in this process too)
from .helpers import setup_app

ROOT = Path(__file__).resolve().parents[2]
N = 1500


def _schedule(rt, n, due):
    with rt.db.write() as conn:
        for i in range(n):
            scheduler.schedule(conn, app="svc", kind="test.once", key=f"once:{i}", due_at=due + dt.timedelta(seconds=i % 7),
                               payload={"i": i})


def _spawn(url, name, now, **env):
    e = dict(os.environ, PYTHONPATH=str(ROOT), LOOM_SECRET_KEY="MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", **env)
    return subprocess.Popen([sys.executable, "-m", "tests.flows.timer_worker", url, name, now.isoformat()], cwd=ROOT, env=e,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _counts(rt):
    with rt.db.read() as conn:
        t, a, o = P.timers, P.audit, P.outbox
        status = dict(conn.execute(select(t.c.status, func.count()).where(t.c.kind == "test.once").group_by(t.c.status)).all())
        per_key = conn.execute(select(o.c.recipient, func.count()).where(o.c.template == "once").group_by(o.c.recipient)).all()
        audits = conn.execute(select(func.count()).select_from(a).where(a.c.action == "test.fired")).scalar()
        # each firing queued one message with a fresh idempotency key: as many distinct keys as messages,
        # and no key twice anywhere in the outbox (the killed worker's rolled-back rows left nothing behind)
        keys = conn.execute(select(func.count(), func.count(o.c.idempotency_key.distinct())).where(o.c.template == "once")).one()
        dup_keys = conn.execute(select(func.count()).select_from(
            select(o.c.idempotency_key).group_by(o.c.idempotency_key).having(func.count() > 1).subquery())).scalar()
    return status, dict(per_key), audits, tuple(keys), dup_keys


def test_four_workers_and_a_killed_one_fire_every_timer_exactly_once(db_url, make_runtime, package_dir, tmp_path):
    if not db_url.startswith("postgresql"):
        pytest.skip("multi-process exactly-once is a PostgreSQL guarantee (SQLite serialises writers in one process)")
    rt = make_runtime(db_url)
    setup_app(rt, package_dir, {})
    now = rt.clock.now()
    _schedule(rt, N, now - dt.timedelta(minutes=5))
    mark = tmp_path / "stalled"
    stalled = _spawn(db_url, "stall", now, LOOM_TEST_STALL_AT="30", LOOM_TEST_STALL_MARK=str(mark), LOOM_TEST_BATCH="100")
    deadline = time.monotonic() + 60
    while not mark.exists():
        assert time.monotonic() < deadline, "the stalling worker never started"
        assert stalled.poll() is None, stalled.stdout.read().decode()
        time.sleep(0.05)
    workers = [_spawn(db_url, f"w{i}", now) for i in range(3)]
    time.sleep(0.5)
    os.kill(stalled.pid, signal.SIGKILL)          # mid-batch: 29 timers fired in its open transaction
    stalled.wait(10)
    for w in workers:
        out, _ = w.communicate(timeout=120)
        assert w.returncode == 0, out.decode()
    late = _spawn(db_url, "late", now)             # picks up what the killed worker had locked
    out, _ = late.communicate(timeout=120)
    assert late.returncode == 0, out.decode()
    status, per_key, audits, keys, dup_keys = _counts(rt)
    assert status == {"done": N}
    assert len(per_key) == N and set(per_key.values()) == {1}
    assert audits == N
    assert keys == (N, N) and dup_keys == 0
    with rt.db.read() as conn:
        by = dict(conn.execute(select(P.timers.c.locked_by, func.count()).where(P.timers.c.kind == "test.once")
                               .group_by(P.timers.c.locked_by)).all())
    assert "stall" not in by and sum(by.values()) == N
    assert len([w for w in by if w.startswith("w")]) >= 2      # the work was really shared


def test_catch_up_after_downtime_fires_each_overdue_timer_once_at_its_due_time(rt, package_dir):
    setup_app(rt, package_dir, {})
    t0 = rt.clock.now()
    with rt.db.write() as conn:
        for h in range(1, 6):
            scheduler.schedule(conn, app="svc", kind="test.once", key=f"late:{h}", due_at=t0 + dt.timedelta(hours=h))
        assert not scheduler.schedule(conn, app="svc", kind="test.once", key="late:1", due_at=t0)   # idempotent
    s = rt.services["scheduler"]
    assert s.tick(t0)["timers"] == 0
    later = t0 + dt.timedelta(hours=10)           # the worker was down for 10 hours
    assert s.tick(later)["timers"] == 5
    assert s.tick(later)["timers"] == 0
    with rt.db.read() as conn:
        rows = conn.execute(select(P.audit.c.at, P.audit.c.details).where(P.audit.c.action == "test.fired")
                            .order_by(P.audit.c.at)).all()
    assert [r.at for r in rows] == [to_db(t0 + dt.timedelta(hours=h)) for h in range(1, 6)]


def _flaky(uow, timer):
    uow.conn.execute(P.audit.insert().values(at=to_db(uow.now), actor="flaky", action="test.flaky", app=timer["app"],
                                             details={"key": timer["key"]}))
    if (timer["payload"] or {}).get("fail"):
        raise RuntimeError("boom")


scheduler.register_timer_handler("test.flaky", _flaky)


def test_a_failing_handler_is_retried_later_and_does_not_stop_the_batch(rt, package_dir):
    setup_app(rt, package_dir, {})
    t0 = rt.clock.now()
    with rt.db.write() as conn:
        for i in range(5):
            scheduler.schedule(conn, app="svc", kind="test.flaky", key=f"flaky:{i}", due_at=t0, payload={"fail": i == 2})
    counts = rt.services["scheduler"].tick(t0)
    assert (counts["timers"], counts["failed"]) == (4, 1)
    with rt.db.read() as conn:
        rows = {r.key: r for r in conn.execute(select(P.timers).where(P.timers.c.kind == "test.flaky"))}
        audits = conn.execute(select(P.audit.c.details).where(P.audit.c.action == "test.flaky")).all()
    assert [k for k, r in rows.items() if r.status == "done"] == ["flaky:0", "flaky:1", "flaky:3", "flaky:4"]
    bad = rows["flaky:2"]
    assert bad.status == "pending" and bad.attempts == 1 and "boom" in bad.last_error
    assert bad.due_at == to_db(t0 + dt.timedelta(minutes=2))
    # the failed fast pass left nothing behind: one audit row per successful firing (the failing one rolled back)
    assert sorted(a.details["key"] for a in audits) == ["flaky:0", "flaky:1", "flaky:3", "flaky:4"]


def test_the_worker_loop_survives_a_database_outage_with_one_line_per_failed_tick_and_backoff(rt, caplog, monkeypatch):
    """``loom worker`` during a PostgreSQL restart: no traceback spam, waits growing, ticking again afterwards
    (the real restart under load is tests/load/test_faults.py)."""
    from sqlalchemy.exc import OperationalError
    s = scheduler.Scheduler(rt, worker_id="w")
    calls, waits = [], []

    def tick(now=None):
        calls.append(now)
        if len(calls) <= 3:
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
        s.stop()
        return {"timers": 0}
    monkeypatch.setattr(s, "tick", tick)
    monkeypatch.setattr(s._stop, "wait", lambda t: waits.append(t))
    with caplog.at_level("WARNING", logger="loom.scheduler"):
        s.run_forever(interval=0.5)
    assert len(calls) == 4
    assert waits == [0.5, 1.0, 2.0, 0.5]          # backoff doubles while the database is down; then the interval
    lines = [r for r in caplog.records if r.name == "loom.scheduler"]
    assert len(lines) == 3 and all(r.exc_info is None and "server closed the connection" in r.getMessage() for r in lines)


# -- the fast path's batched outbox INSERT ----------------------------------------------

def _batched(uow, timer):
    """Queues its message with ``enqueue_batched``; payload flags make it read, repeat or break things."""
    from engine.outbox import enqueue_batched
    p = timer["payload"] or {}
    enqueue_batched(uow.conn, app=timer["app"], template="batched", channel="sms", recipient=timer["key"],
                    rendered=None if p.get("null") else f"100% {timer['key']}", key=p.get("key") or timer["key"],
                    due_at=uow.now, now=uow.now)
    if p.get("count"):      # read-your-writes: a query after enqueue_batched sees the row (and the batch's earlier ones)
        seen = uow.conn.execute(select(func.count()).select_from(P.outbox).where(P.outbox.c.template == "batched")).scalar()
        uow.conn.execute(P.audit.insert().values(at=to_db(uow.now), actor="batched", action="test.seen", app=timer["app"],
                                                 details={"key": timer["key"], "seen": seen}))
    if p.get("fail"):
        raise RuntimeError("boom")


scheduler.register_timer_handler("test.batched", _batched)


def _outbox(rt):
    with rt.db.read() as conn:
        o = P.outbox
        return {r.idempotency_key: r for r in conn.execute(select(o).where(o.c.template == "batched"))}


def test_batched_outbox_rows_are_written_once_and_seen_by_later_statements(rt, package_dir):
    setup_app(rt, package_dir, {})
    t0 = rt.clock.now()
    with rt.db.write() as conn:
        for i in range(6):
            payload = {"count": i == 3, **({"key": "same"} if i in (4, 5) else {})}   # 4 and 5 share a key
            scheduler.schedule(conn, app="svc", kind="test.batched", key=f"b:{i}", due_at=t0, payload=payload)
    assert rt.services["scheduler"].tick(t0)["timers"] == 6
    rows = _outbox(rt)
    assert sorted(rows) == ["b:0", "b:1", "b:2", "b:3", "same"]
    assert rows["b:0"].rendered == "100% b:0"                                        # "%" is text, not a placeholder
    assert rows["same"].recipient == "b:4"                                           # the first one queued wins
    with rt.db.read() as conn:
        seen = conn.execute(select(P.audit.c.details).where(P.audit.c.action == "test.seen")).scalar_one()
    assert seen == {"key": "b:3", "seen": 4}      # its own row and the three before it, not yet flushed when it ran


def test_a_failure_in_a_batch_with_batched_messages_keeps_the_others_exactly_once(rt, package_dir):
    setup_app(rt, package_dir, {})
    t0 = rt.clock.now()
    with rt.db.write() as conn:
        for i in range(5):      # 3's message breaks the batch's multi-row INSERT (no handler raises)
            scheduler.schedule(conn, app="svc", kind="test.batched", key=f"f:{i}", due_at=t0, payload={"null": i == 3})
        for i in range(5, 8):   # 6 raises after queueing its message
            scheduler.schedule(conn, app="svc", kind="test.batched", key=f"f:{i}", due_at=t0 + dt.timedelta(seconds=1),
                               payload={"fail": i == 6})
    s = rt.services["scheduler"]
    s.batch = 5
    counts = s.tick(t0 + dt.timedelta(seconds=1))
    assert (counts["timers"], counts["failed"]) == (6, 2)
    assert sorted(_outbox(rt)) == ["f:0", "f:1", "f:2", "f:4", "f:5", "f:7"]
    with rt.db.read() as conn:
        rows = {r.key: r for r in conn.execute(select(P.timers).where(P.timers.c.kind == "test.batched"))}
    assert {k: r.status for k, r in rows.items()} == {"f:0": "done", "f:1": "done", "f:2": "done", "f:3": "pending",
                                                      "f:4": "done", "f:5": "done", "f:6": "pending", "f:7": "done"}
    assert "IntegrityError" in rows["f:3"].last_error and "boom" in rows["f:6"].last_error
    assert rows["f:3"].attempts == rows["f:6"].attempts == 1


def test_enqueue_batched_outside_a_batch_writes_at_once(rt, package_dir):
    from engine.outbox import enqueue_batched
    setup_app(rt, package_dir, {})
    t0 = rt.clock.now()
    with rt.db.write() as conn:
        enqueue_batched(conn, app="svc", template="batched", channel="sms", recipient="x", rendered="now", key="direct",
                        due_at=t0, now=t0)
        assert conn.execute(select(func.count()).select_from(P.outbox)
                            .where(P.outbox.c.idempotency_key == "direct")).scalar() == 1
