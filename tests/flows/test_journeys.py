"""Journeys: enrolment, steps at offsets from the anchor (local time), exactly once while replaying days,
branches, skips, waits with timeouts, goals (exists), exits (through a linked record), re-enrolment."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from engine import platform as P
from flows import tables as T

from .helpers import add_user, create, history, load, local, outbox, setup_app, tasks, tick, uow

JOURNEY = """
kind: journey
form: ticket
label: {zh: 交付关怀, en: Delivery care}
enrol_when: "delivered_on != None"
anchor: delivered_on
reenrol: on_change
goal: "exists('service_order', ticket=id, kind='first_service')"
exit_when: "customer.status == 'churned'"
steps:
  - name: d1
    at: "+1d 10:00"
    actions:
      - notify: {template: welcome, to: customer, channel: customer.preferred_channel}
  - name: d3_call
    at: "+3d 09:00"
    actions:
      - task: {title: {zh: 3日回访, en: 3-day call-back}, assignee: {role: agent, where: "dealer == record.dealer"}, due: 1d, kind: callback}
  - name: d7
    at: "+7d 10:00"
    branch:
      - when: "severity == 'critical'"
        actions: [{notify: {template: escalated, to: {role: hq}}}]
        goto: d30
      - actions: [{notify: {template: sla_warning, to: owner}}]
  - name: d10
    at: "+10d 10:00"
    when: "severity != 'low'"
    actions: [{notify: {template: escalated, to: owner}}]
  - name: d30
    at: "+30d 10:00"
    actions: [{notify: {template: welcome, to: customer}}]
  - name: first_service
    wait_until: "first_service_done == true"
    timeout: 5d
    on_timeout: [{notify: {template: sla_warning, to: owner}}]
  - name: wrap_up
    after: "+1d 18:00"
    actions: [{notify: {template: escalated, to: owner}}]
"""


@pytest.fixture
def app(rt, package_dir):
    add_user(rt, "amy", ["agent"], dealer="D1")
    add_user(rt, "bob", ["agent"], dealer="D2")
    add_user(rt, "h1", ["hq"])
    return setup_app(rt, package_dir, {"care": JOURNEY})


def customer(rt, **kw):
    return create(rt, "customer", name="王先生", phone="13800138000", status="active", preferred_channel="wechat", **kw)["id"]


def vehicle(rt, cust, delivered=dt.date(2026, 11, 23), severity="high"):
    rec = create(rt, subject="Car", dealer="D1", customer=cust, severity=severity,
                 delivered_on=delivered.isoformat() if delivered else None)
    with uow(rt) as u:
        u.service("records").update(u, "ticket", rec["id"], {}, trusted=True, system_values={"owner": "amy"})
    return rec["id"]


def enrolments(rt, rid):
    with rt.db.read() as conn:
        e = T.enrolments
        return [dict(r) for r in conn.execute(select(e).where(e.c.record_id == rid).order_by(e.c.id)).mappings()]


def replay(rt, start: dt.datetime, days: int):
    for d in range(days + 1):
        tick(rt, start + dt.timedelta(days=d))


def sent(rt, template=None):
    return [(m["template"], m["recipient"], m["channel"]) for m in outbox(rt, template)]


def test_steps_fire_once_each_at_their_local_time(rt, app):
    cust = customer(rt)
    rid = vehicle(rt, cust)
    assert enrolments(rt, rid)[0]["status"] == "active"
    tick(rt, local(2026, 11, 24, 9, 59))
    assert sent(rt) == []
    tick(rt, local(2026, 11, 24, 10, 0))
    assert sent(rt) == [("welcome", f"customer:{cust}", "wechat")]   # the customer's preferred channel
    replay(rt, local(2026, 11, 24, 12, 0), 12)
    replay(rt, local(2026, 11, 24, 12, 0), 12)                      # replaying the same days again changes nothing
    assert sent(rt, "welcome") == [("welcome", f"customer:{cust}", "wechat")]
    calls = [t for t in tasks(rt, rid) if t["kind"] == "callback"]
    assert len(calls) == 1 and calls[0]["assignee"] == "amy"        # the dealer's agent, not bob
    assert [m[1] for m in sent(rt, "sla_warning")] == ["amy"]        # d7: the 'otherwise' branch
    assert [m[1] for m in sent(rt, "escalated")] == ["amy"]          # d10 (severity high)
    steps = [h["changes"].get("step") for h in history(rt, rid, kind="journey") if h["changes"]["event"] == "done"]
    assert steps == ["d1", "d3_call", "d7", "d10"]
    tick(rt, local(2026, 12, 23, 10, 0))                             # d30
    assert len(sent(rt, "welcome")) == 2
    e = enrolments(rt, rid)[0]
    assert e["current_step"] == "first_service" and e["waiting"]
    # the condition becomes true: the wait ends at once, wrap_up one day later at 18:00
    rt.clock.set(local(2026, 12, 24, 11, 0))
    with uow(rt) as u:
        u.service("records").update(u, "ticket", rid, {"first_service_done": True}, trusted=True)
    e = enrolments(rt, rid)[0]
    assert e["current_step"] == "wrap_up" and not e["waiting"]
    tick(rt, local(2026, 12, 25, 17, 59))
    assert len(sent(rt, "escalated")) == 1
    tick(rt, local(2026, 12, 25, 18, 0))
    assert len(sent(rt, "escalated")) == 2
    e = enrolments(rt, rid)[0]
    assert e["status"] == "completed"
    assert e["steps_done"] == ["d1", "d3_call", "d7", "d10", "d30", "first_service", "wrap_up"]
    assert len(sent(rt, "sla_warning")) == 1                         # no timeout message


def test_branch_goto_skip_and_wait_timeout(rt, app):
    rid = vehicle(rt, customer(rt), severity="critical")
    replay(rt, local(2026, 11, 24, 12, 0), 40)
    e = enrolments(rt, rid)[0]
    # critical: d7 jumps to d30 (d10 never runs); first_service times out after 5 days; wrap_up a day later
    assert e["steps_done"] == ["d1", "d3_call", "d7", "d30", "first_service:timeout", "wrap_up"]
    assert e["status"] == "completed"
    assert [m[1] for m in sent(rt, "escalated")] == ["h1", "amy"]    # d7's critical branch, then wrap_up
    assert [m[1] for m in sent(rt, "sla_warning")] == ["amy"]         # the timeout message
    low = vehicle(rt, customer(rt, ), delivered=dt.date(2027, 1, 5), severity="low")
    replay(rt, local(2027, 1, 5, 12, 0), 12)
    skipped = [h["changes"]["step"] for h in history(rt, low, kind="journey") if h["changes"]["event"] == "skipped"]
    assert skipped == ["d10"]


def test_goal_ends_the_journey_early(rt, app):
    rid = vehicle(rt, customer(rt))
    replay(rt, local(2026, 11, 24, 12, 0), 12)
    create(rt, "service_order", ticket=rid, kind="repair")
    tick(rt, local(2026, 12, 22, 12, 0))
    assert enrolments(rt, rid)[0]["status"] == "active"
    create(rt, "service_order", ticket=rid, kind="first_service")
    tick(rt, local(2026, 12, 23, 10, 0))                              # before d30 runs, the goal is met
    e = enrolments(rt, rid)[0]
    assert e["status"] == "goal" and "d30" not in e["steps_done"]
    assert len(sent(rt, "welcome")) == 1
    with rt.db.read() as conn:
        pending = conn.execute(select(P.timers).where(P.timers.c.record_id == rid, P.timers.c.status == "pending",
                                                      P.timers.c.kind == "flow.journey")).all()
    assert pending == []


def test_a_churned_customer_exits_at_once(rt, app):
    cust = customer(rt)
    rid = vehicle(rt, cust)
    tick(rt, local(2026, 11, 24, 10, 0))
    assert len(sent(rt)) == 1
    with uow(rt) as u:
        u.service("records").update(u, "customer", cust, {"status": "churned"}, trusted=True)
    e = enrolments(rt, rid)[0]
    assert e["status"] == "exited" and e["end_reason"] == "exit_when"
    replay(rt, local(2026, 11, 25, 12, 0), 40)
    assert len(sent(rt)) == 1 and [t for t in tasks(rt, rid) if t["kind"] == "callback"] == []


def test_enrolment_on_update_reenrolment_on_change_and_missed_steps(rt, app):
    rid = vehicle(rt, customer(rt), delivered=None)
    assert enrolments(rt, rid) == []
    rt.clock.set(local(2026, 11, 27, 12, 0))                           # delivered four days ago
    with uow(rt) as u:
        u.service("records").update(u, "ticket", rid, {"delivered_on": "2026-11-23"}, trusted=True)
    e = enrolments(rt, rid)
    assert len(e) == 1 and e[0]["current_step"] == "d7"                # d1 and d3_call were missed, not sent late
    missed = [h["changes"]["step"] for h in history(rt, rid, kind="journey") if h["changes"]["event"] == "missed"]
    assert missed == ["d1", "d3_call"]
    with uow(rt) as u:                                                  # the delivery date was wrong
        u.service("records").update(u, "ticket", rid, {"delivered_on": "2026-11-27"}, trusted=True)
    e = enrolments(rt, rid)
    assert [x["status"] for x in e] == ["replaced", "active"] and e[1]["anchor"] == "2026-11-27"
    tick(rt, local(2026, 11, 28, 10, 0))
    assert len(sent(rt, "welcome")) == 1
    with uow(rt) as u:                                                  # unrelated changes don't re-enrol
        u.service("records").update(u, "ticket", rid, {"subject": "Car (blue)"}, trusted=True)
    assert len(enrolments(rt, rid)) == 2


TRACKED = JOURNEY.replace('steps:\n', 'track: {status: care_status, step: care_step}\nsteps:\n', 1)
TRACKED_TICKET_FIELDS = """
  care_status: {type: select, readonly: true, options: [active, completed, goal, exited, cancelled, replaced]}
  care_step: {type: text, readonly: true}
"""


def _tracked_package_extra():
    from .helpers import TICKET
    ticket = TICKET.replace("  first_service_done: {type: boolean}\n",
                            "  first_service_done: {type: boolean}" + TRACKED_TICKET_FIELDS, 1)
    return {"forms/ticket.yaml": ticket}


def test_track_keeps_status_and_step_on_the_record(rt, package_dir):
    add_user(rt, "amy", ["agent"], dealer="D1")
    setup_app(rt, package_dir, {"care": TRACKED}, extra=_tracked_package_extra())
    rid = vehicle(rt, customer(rt))
    rec = load(rt, rid)
    assert (rec["care_status"], rec["care_step"]) == ("active", "d1")
    tick(rt, local(2026, 11, 24, 10, 0))
    assert load(rt, rid)["care_step"] == "d3_call", "the next step scheduled is shown once d1 ran"
    create(rt, "service_order", ticket=rid, kind="first_service")
    tick(rt, local(2026, 11, 26, 9, 0))                               # the goal is checked when d3_call comes due
    rec = load(rt, rid)
    assert rec["care_status"] == "goal" and enrolments(rt, rid)[0]["status"] == "goal"
    assert rec["care_step"] == "d3_call", "an ended journey leaves the step it had reached"
    changes = [h for h in history(rt, rid) if h["kind"] == "change"]
    assert not any("care_status" in str(h) for h in changes), "journey bookkeeping is not a user's change"


def test_track_fields_are_checked_with_positions(package_dir):
    from engine.definitions import validate_package
    from .helpers import package
    bad = TRACKED.replace("track: {status: care_status, step: care_step}", "track: {status: care_status, step: amount}")
    extra = _tracked_package_extra()
    extra["forms/ticket.yaml"] = extra["forms/ticket.yaml"].replace(", cancelled, replaced]", "]")
    out = [str(p) for p in validate_package(package(package_dir, {"care": bad}, extra=extra))]
    assert any(p.startswith("flows/care.yaml:") and "track.status: select field 'care_status' has no option for "
               "cancelled, replaced" in p for p in out), out
    assert any("track.step: field 'amount' is a number field; expected text or select" in p for p in out), out
    line = bad.splitlines().index("track: {status: care_status, step: amount}") + 1
    assert any(p.startswith(f"flows/care.yaml:{line}:") for p in out), out
