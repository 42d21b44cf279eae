"""A worker process for the exactly-once tests: ``python -m tests.flows.timer_worker URL NAME NOW``.

Registers the ``test.once`` timer handler (one audit row and one outbox row
per firing, so a duplicate firing would show as two rows; the outbox row goes
through ``enqueue_batched``, written with the next timer's audit INSERT or the
batch's multi-row INSERT) and ticks until
nothing is left.  With ``LOOM_TEST_STALL_AT=N`` the handler stops for good
at its N-th timer (after touching ``LOOM_TEST_STALL_MARK``), in the middle
of a batch, so the test can ``kill -9`` it there.
"""
from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

from engine import platform as P
from engine.clock import parse_instant, to_db
from engine.outbox import enqueue_batched
from engine.scheduler import Scheduler, register_timer_handler

_count = 0


def handler(uow, timer: dict) -> None:
    global _count
    _count += 1
    stall = int(os.environ.get("LOOM_TEST_STALL_AT") or 0)
    if stall and _count == stall:
        Path(os.environ["LOOM_TEST_STALL_MARK"]).write_text(str(os.getpid()))
        time.sleep(600)
    uow.conn.execute(P.audit.insert().values(at=to_db(uow.now), actor=os.environ.get("LOOM_WORKER", "?"),
                                             action="test.fired", app=timer["app"], details={"key": timer["key"]}))
    enqueue_batched(uow.conn, app=timer["app"], template="once", channel="inapp", recipient=timer["key"],
                    rendered=f"timer {timer['key']}", key=str(uuid.uuid4()), due_at=uow.now, now=uow.now)


register_timer_handler("test.once", handler)


def main() -> None:
    url, name, now = sys.argv[1], sys.argv[2], parse_instant(sys.argv[3])
    os.environ["LOOM_WORKER"] = name
    from ui.wiring import build_runtime
    rt = build_runtime(url, start=False)
    scheduler = Scheduler(rt, worker_id=name, batch=int(os.environ.get("LOOM_TEST_BATCH") or 50))
    idle = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        counts = scheduler.tick(now)
        if counts["timers"] + counts["failed"] == 0:
            idle += 1
            if idle >= 10:
                break
            time.sleep(0.1)
        else:
            idle = 0
    rt.db.dispose()


if __name__ == "__main__":
    main()
