"""Records written without events (bulk import, demo seed) are adopted: instances, silent SLA catch-up, enrolments."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from forms.bulk import bulk_insert
from flows import tables as T

from .helpers import history, load, local, setup_app, tick, uow
from .test_journeys import JOURNEY
from .test_sla import FLOW


def test_adopting_bulk_rows(rt, package_dir):
    setup_app(rt, package_dir, {"ticket_flow": FLOW, "care": JOURNEY})
    rt.clock.set(local(2026, 11, 23, 10, 0))
    with uow(rt) as u:
        records = u.service("records")
        form = records.form(u.app, "ticket")
        rows = [
            {"subject": "old, breached", "severity": "critical", "created_at": local(2026, 11, 20, 10, 0).isoformat()},
            {"subject": "fresh", "severity": "high", "created_at": local(2026, 11, 23, 9, 30).isoformat()},
            {"subject": "done", "severity": "high", "state": "closed"},
            {"subject": "delivered", "delivered_on": "2026-11-20", "severity": "high"},
            {"subject": "delivered long ago", "delivered_on": "2026-01-20", "severity": "high", "state": "closed"},
        ]
        bulk_insert(u, form, records.table(u.app, "ticket"), rows, mode="all")
    with uow(rt) as u:
        counts = u.service("flows").adopt_existing(u)
    # clocks: response + resolution for the three open tickets; enrolments: both delivered tickets (this journey
    # has steps without a fixed time, so even the old delivery still has steps ahead)
    assert counts == {"instances": 5, "sla_clocks": 6, "enrolments": 2}
    with uow(rt) as u:
        assert u.service("flows").adopt_existing(u) == {"instances": 0, "sla_clocks": 0, "enrolments": 0}
    with rt.db.read() as conn:
        c = T.sla_clocks
        clocks = {(r.record_id, r.sla): r for r in conn.execute(select(c))}
    old = clocks[(1, "response")]
    assert old.breached and old.level == 2 and old.warned_at is not None     # past: marked, not announced
    fresh = clocks[(2, "response")]
    assert not fresh.breached and fresh.level == 0
    assert load(rt, 2)["response_due_at"] == local(2026, 11, 23, 14, 30)   # 09:30-12:00, 13:00-14:30
    tick(rt, local(2026, 11, 23, 14, 1))
    warned = {rid: [h["changes"]["event"] for h in history(rt, rid, kind="sla")] for rid in (1, 2)}
    assert warned == {1: [], 2: ["warning"]}                               # only the live clock speaks
    tick(rt, local(2026, 11, 23, 14, 31))
    assert load(rt, 2)["escalation_level"] == 1 and load(rt, 1)["escalation_level"] is None
    with rt.db.read() as conn:
        e = T.enrolments
        enr = {r["record_id"]: r for r in conn.execute(select(e)).mappings()}
    assert enr[4]["current_step"] == "d7"                                   # d1 and d3_call already past
    assert enr[5]["current_step"] == "first_service"                        # every dated step is past
