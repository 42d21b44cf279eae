"""SLAs: targets by condition, working-hour calendars (weekends, holidays), warning before breach,
breach and an escalation ladder, pause/resume extending the due time, stop, retargeting."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from engine.clock import from_db
from flows import tables as T

from .helpers import add_user, create, history, load, local, outbox, setup_app, tick, transition, uow

FLOW = """
kind: workflow
form: ticket
initial: new
states:
  new: {}
  in_progress: {}
  pending: {pauses_sla: true}
  resolved: {}
  closed: {final: true}
transitions:
  start: {from: [new, pending], to: in_progress}
  wait: {from: [new, in_progress], to: pending}
  resume: {from: [pending], to: new}
  resolve: {from: [in_progress], to: resolved}
  close: {from: [resolved], to: closed}
sla:
  - name: response
    stop_on_states: [in_progress, resolved, closed]
    calendar: office
    targets:
      - {when: "severity == 'critical'", within: 1h}
      - {when: "severity == 'high'", within: 4h}
      - {within: 8h}
    due_field: response_due_at
    warn_before: 30m
    warn:
      - notify: {template: sla_warning, to: owner}
    breach:
      - set: {escalation_level: 1}
      - notify: {template: escalated, to: {role: manager, where: "dealer == record.dealer"}}
    escalations:
      - after: 2h
        actions:
          - set: {escalation_level: 2}
          - notify: {template: escalated, to: {role: hq}}
  - name: resolution
    stop_on_states: [resolved, closed]
    targets: [{within: 2d}]
    due_field: resolution_due_at
    breach:
      - set: {escalation_level: 3}
"""


@pytest.fixture
def app(rt, package_dir):
    add_user(rt, "amy", ["agent"], dealer="D1")
    add_user(rt, "m1", ["manager"], dealer="D1")
    add_user(rt, "m2", ["manager"], dealer="D2")
    add_user(rt, "h1", ["hq"])
    return setup_app(rt, package_dir, {"ticket_flow": FLOW})


def ticket(rt, severity, at=None):
    if at is not None:
        rt.clock.set(at)
    rec = create(rt, subject="Brakes", dealer="D1", severity=severity)
    with uow(rt) as u:
        u.service("records").update(u, "ticket", rec["id"], {}, trusted=True, system_values={"owner": "amy"})
    return rec["id"]


def clock_of(rt, rid, name="response"):
    with rt.db.read() as conn:
        c = T.sla_clocks
        return dict(conn.execute(select(c).where(c.c.record_id == rid, c.c.sla == name)).mappings().one())


def test_warning_breach_and_escalation_ladder_in_working_hours(rt, app):
    rid = ticket(rt, "high", at=local(2026, 11, 23, 10, 0))          # Monday 10:00
    rec = load(rt, rid)
    assert rec["response_due_at"] == local(2026, 11, 23, 15, 0)       # 10-12, 13-15: four working hours
    assert rec["resolution_due_at"] == local(2026, 11, 25, 10, 0)     # calendar time: two days
    tick(rt, local(2026, 11, 23, 14, 29))
    assert outbox(rt, "sla_warning") == []
    tick(rt, local(2026, 11, 23, 14, 31))
    warned = outbox(rt, "sla_warning")
    assert [m["recipient"] for m in warned] == ["amy"]
    assert load(rt, rid)["escalation_level"] is None
    tick(rt, local(2026, 11, 23, 15, 1))
    assert load(rt, rid)["escalation_level"] == 1
    assert [m["recipient"] for m in outbox(rt, "escalated")] == ["m1"]   # the dealer's manager only
    c = clock_of(rt, rid)
    assert c["breached"] and c["level"] == 1 and from_db(c["breached_at"]) == local(2026, 11, 23, 15, 0)
    tick(rt, local(2026, 11, 23, 16, 59))
    assert load(rt, rid)["escalation_level"] == 1
    tick(rt, local(2026, 11, 23, 17, 0))                                # two working hours after the breach
    assert load(rt, rid)["escalation_level"] == 2
    assert sorted(m["recipient"] for m in outbox(rt, "escalated")) == ["h1", "m1"]
    tick(rt, local(2026, 11, 30, 12, 0))                                 # nothing fires twice
    assert len(outbox(rt, "sla_warning")) == 1 and len(outbox(rt, "escalated")) == 2
    assert load(rt, rid)["escalation_level"] == 3                       # resolution breached meanwhile
    events = [(h["changes"]["sla"], h["changes"]["event"]) for h in history(rt, rid, kind="sla")]
    assert ("response", "warning") in events and ("response", "breached") in events and ("response", "escalated") in events


def test_due_time_skips_the_night_the_weekend_and_holidays(rt, app):
    rid = ticket(rt, "high", at=local(2026, 11, 25, 17, 0))           # Wednesday 17:00; Thursday is a holiday
    assert load(rt, rid)["response_due_at"] == local(2026, 11, 27, 12, 0)
    rid = ticket(rt, "low", at=local(2026, 11, 27, 16, 0))            # Friday 16:00, 8 working hours
    assert load(rt, rid)["response_due_at"] == local(2026, 11, 30, 16, 0)
    rid = ticket(rt, "critical", at=local(2026, 11, 28, 23, 0))       # Saturday night: counts from Monday 09:00
    assert load(rt, rid)["response_due_at"] == local(2026, 11, 30, 10, 0)


def test_pause_extends_the_due_time_by_the_paused_working_time(rt, app):
    rid = ticket(rt, "critical", at=local(2026, 11, 23, 10, 0))       # due 11:00
    rt.clock.set(local(2026, 11, 23, 10, 20))
    transition(rt, rid, "wait")                                       # 40 minutes left
    assert clock_of(rt, rid)["status"] == "paused"
    tick(rt, local(2026, 11, 23, 13, 0))                              # past the old due time: nothing happens
    assert load(rt, rid)["escalation_level"] is None and outbox(rt, "sla_warning") == []
    rt.clock.set(local(2026, 11, 23, 14, 0))
    transition(rt, rid, "resume")
    c = clock_of(rt, rid)
    assert c["status"] == "running" and c["gen"] == 2
    assert from_db(c["due_at"]) == local(2026, 11, 23, 14, 40)
    assert load(rt, rid)["response_due_at"] == local(2026, 11, 23, 14, 40)
    assert c["paused_seconds"] == 160 * 60                           # 10:20-12:00 and 13:00-14:00
    tick(rt, local(2026, 11, 23, 14, 11))
    assert len(outbox(rt, "sla_warning")) == 1                        # re-scheduled warning (30m before)
    tick(rt, local(2026, 11, 23, 14, 41))
    assert load(rt, rid)["escalation_level"] == 1


def test_stopping_in_time_meets_the_sla(rt, app):
    rid = ticket(rt, "critical", at=local(2026, 11, 23, 10, 0))
    rt.clock.set(local(2026, 11, 23, 10, 45))
    transition(rt, rid, "start")
    c = clock_of(rt, rid)
    assert c["status"] == "stopped" and not c["breached"]
    tick(rt, local(2026, 11, 24, 10, 0))
    assert load(rt, rid)["escalation_level"] is None and outbox(rt, "escalated") == []
    assert ("response", "met") in [(h["changes"]["sla"], h["changes"]["event"]) for h in history(rt, rid, kind="sla")]


def test_changing_the_severity_moves_the_due_time(rt, app):
    rid = ticket(rt, "low", at=local(2026, 11, 23, 10, 0))
    assert load(rt, rid)["response_due_at"] == local(2026, 11, 24, 10, 0)
    rt.clock.set(local(2026, 11, 23, 10, 10))
    with uow(rt) as u:
        u.service("records").update(u, "ticket", rid, {"severity": "critical"}, trusted=True)
    assert load(rt, rid)["response_due_at"] == local(2026, 11, 23, 11, 0)
    tick(rt, local(2026, 11, 23, 11, 1))
    assert load(rt, rid)["escalation_level"] == 1


def test_an_imported_closed_record_starts_no_clock(rt, app):
    with uow(rt) as u:
        rec = u.service("records").create(u, "ticket", {"subject": "old", "severity": "critical", "state": "closed"}, trusted=True)
    assert load(rt, rec["id"])["state"] == "closed"
    with rt.db.read() as conn:
        assert conn.execute(select(T.sla_clocks).where(T.sla_clocks.c.record_id == rec["id"])).all() == []
    tick(rt, local(2026, 12, 1, 12, 0))
    assert load(rt, rec["id"])["escalation_level"] is None


def _counts(rt, rid):
    from sqlalchemy import func
    from engine import platform as P
    with rt.db.read() as conn:
        return {name: conn.execute(select(func.count()).select_from(t).where(t.c.record_id == rid)).scalar()
                for name, t in (("instances", T.instances), ("clocks", T.sla_clocks), ("timers", P.timers),
                                ("history", P.history))}


def test_a_new_record_is_inserted_in_its_initial_state_and_started_once(rt, app):
    from sqlalchemy import event
    seen = []
    rt.bus.subscribe("record.saving", lambda e, u: seen.append(e.record.get("state")), order=50)   # the rules' phase
    statements = []

    def count(conn, cursor, statement, *a):
        statements.append(statement)
    event.listen(rt.db.engine, "before_cursor_execute", count)
    try:
        rec = create(rt, subject="Brakes", dealer="D1", severity="high")
    finally:
        event.remove(rt.db.engine, "before_cursor_execute", count)
    assert seen == [None]                         # the pre-save phase sees the record as given
    assert rec["state"] == "new" and load(rt, rec["id"])["state"] == "new"
    assert not [s for s in statements if "SET state" in s]   # inserted in its state, not updated into it
    assert [s for s in statements if "INSERT INTO loom_flow_instances" in s]
    before = _counts(rt, rec["id"])
    assert before["instances"] == 1 and before["clocks"] == 2 and before["timers"] == 4
    # the four timers (warning, breach, escalation; breach) are one INSERT per clock...
    assert sum(s.count("INSERT INTO loom_timers") for s in statements) == 2
    if rt.db.engine.dialect.name == "postgresql":     # ... riding along with the next statement
        assert all(";\n" in s for s in statements if "INSERT INTO loom_timers" in s)
    with uow(rt) as u:
        u.service("flows").start(u, "ticket", rec["id"])      # started already: nothing new
    assert _counts(rt, rec["id"]) == before
    with uow(rt) as u:                                        # an unknown state becomes the initial one
        odd = u.service("records").create(u, "ticket", {"subject": "odd", "state": "bogus"}, trusted=True)
    assert odd["state"] == "new" and load(rt, odd["id"])["state"] == "new"
    assert _counts(rt, odd["id"])["instances"] == 1
