"""Workflows: initial state, transitions, roles/allow, guards, requires, comments, data, auto and timed transitions."""
from __future__ import annotations

import datetime as dt

import pytest

from engine.errors import Conflict, Forbidden, RecordInvalid

from .helpers import add_user, create, history, load, setup_app, tick, transition, uow

FLOW = """
kind: workflow
form: ticket
initial: new
states:
  new: {label: {zh: 新建, en: New}}
  assigned: {label: Assigned}
  in_progress: {label: In progress}
  pending: {label: Waiting, pauses_sla: true}
  resolved: {label: Resolved}
  closed: {label: Closed, final: true}
transitions:
  assign:
    from: [new]
    to: assigned
    auto: "owner != None"
  start:
    from: [assigned]
    to: in_progress
    roles: [agent, manager]
    allow: "owner == current_user.name"
  wait:
    from: [in_progress]
    to: pending
  resume:
    from: [pending]
    to: in_progress
  resolve:
    from: [in_progress]
    to: resolved
    requires: [resolution, root_cause]
    fields: [resolution, root_cause]
  close:
    from: [resolved]
    to: closed
    comment: required
    guard: "severity != 'critical' or escalation_level == None"
    guard_message: {zh: 严重工单需经理关闭, en: Critical tickets are closed by a manager}
  reopen:
    from: [resolved, closed]
    to: in_progress
    roles: [manager]
  auto_close:
    from: [resolved]
    to: closed
    after: 3d
"""


@pytest.fixture
def app(rt, package_dir):
    add_user(rt, "amy", ["agent"], dealer="D1")
    add_user(rt, "bob", ["agent"], dealer="D1")
    add_user(rt, "max", ["manager"])
    return setup_app(rt, package_dir, {"ticket_flow": FLOW})


def test_created_record_gets_initial_state_and_auto_transition(rt, app):
    rec = create(rt, subject="Noise", dealer="D1")
    assert rec["state"] == "new"
    with uow(rt) as u:
        u.service("records").update(u, "ticket", rec["id"], {}, trusted=True, system_values={"owner": "amy"})
    assert load(rt, rec["id"])["state"] == "assigned"
    h = history(rt, rec["id"], kind="transition")
    assert h[-1]["changes"]["transition"] == "assign" and h[-1]["changes"]["to"] == "assigned"


def test_transition_rules(rt, app):
    rec = create(rt, subject="Noise", dealer="D1")
    rid = rec["id"]
    with pytest.raises(Conflict):
        transition(rt, rid, "resolve", user="amy")          # wrong state
    with uow(rt) as u:
        u.service("records").update(u, "ticket", rid, {}, trusted=True, system_values={"owner": "amy"})
    with pytest.raises(Forbidden):
        transition(rt, rid, "start", user="bob")            # allow: owner == current_user.name
    transition(rt, rid, "start", user="amy")
    assert load(rt, rid)["state"] == "in_progress"
    with pytest.raises(RecordInvalid) as exc:
        transition(rt, rid, "resolve", user="amy", data={"resolution": "fixed"})
    assert [e["field"] for e in exc.value.errors] == ["root_cause"]
    assert load(rt, rid)["resolution"] is None               # rolled back with the failed transition
    transition(rt, rid, "resolve", user="amy", data={"resolution": "fixed", "root_cause": "loose bolt"})
    rec = load(rt, rid)
    assert rec["state"] == "resolved" and rec["root_cause"] == "loose bolt"
    with pytest.raises(RecordInvalid) as exc:
        transition(rt, rid, "close", user="amy")
    assert exc.value.errors[0]["field"] == "comment"
    with uow(rt) as u:
        u.service("records").update(u, "ticket", rid, {"severity": "critical", "escalation_level": 1}, trusted=True)
    with pytest.raises(Conflict) as exc:
        transition(rt, rid, "close", user="amy", comment="done")
    assert "Critical tickets" in exc.value.message
    with pytest.raises(Forbidden):
        transition(rt, rid, "reopen", user="amy")
    transition(rt, rid, "reopen", user="max", comment="not fixed")
    assert load(rt, rid)["state"] == "in_progress"
    kinds = [(h["changes"].get("transition"), h["actor"]) for h in history(rt, rid, kind="transition")]
    assert kinds == [("assign", "system"), ("start", "amy"), ("resolve", "amy"), ("reopen", "max")]


def test_timed_transition_fires_after_delay_unless_state_left(rt, app):
    rid = create(rt, subject="A", dealer="D1")["id"]
    with uow(rt) as u:
        u.service("records").update(u, "ticket", rid, {"resolution": "x", "root_cause": "y"}, trusted=True,
                                    system_values={"owner": "amy"})
    transition(rt, rid, "start", user="amy")
    transition(rt, rid, "resolve", user="amy")
    t0 = rt.clock.now()
    tick(rt, t0 + dt.timedelta(days=2))
    assert load(rt, rid)["state"] == "resolved"
    tick(rt, t0 + dt.timedelta(days=3, minutes=1))
    assert load(rt, rid)["state"] == "closed"
    assert history(rt, rid, kind="transition")[-1]["actor"] == "system"
