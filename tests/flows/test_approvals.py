"""Approval nodes: every mode, conditional and computed approvers, rejection back to a state,
transfer (转办), co-signers (加签), delegation while away, reminders."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import update

from engine import platform as P
from engine.clock import to_db
from engine.errors import Conflict, Forbidden

from .helpers import add_user, create, history, load, outbox, setup_app, tasks, tick, transition, uow

FLOW = """
kind: workflow
form: ticket
initial: draft
states:
  draft: {{}}
  rework: {{}}
  approved: {{}}
  done: {{final: true}}
transitions:
  submit:
    label: {{zh: 提交审批, en: Submit}}
    from: [draft, rework]
    to: approved
    approval:
      mode: {mode}
{extra}      approvers:
        - role: manager
          where: "dealer == record.dealer"
        - user_expr: "record.owner"
        - when: "amount > 50000"
          role: director
          where: "region == record.region"
      reject_to: rework
      remind_after: 4h
      remind_every: 1d
      max_reminders: 2
      due: 1d
  finish:
    from: [approved]
    to: done
"""


def make(rt, package_dir, mode, extra=""):
    add_user(rt, "amy", ["agent"], dealer="D1")
    add_user(rt, "m1", ["manager"], dealer="D1")
    add_user(rt, "m2", ["manager"], dealer="D1")
    add_user(rt, "m3", ["manager"], dealer="D2")
    add_user(rt, "d1", ["director"], region="east")
    add_user(rt, "d2", ["director"], region="west")
    add_user(rt, "root", ["admin"])
    setup_app(rt, package_dir, {"ticket_flow": FLOW.format(mode=mode, extra=extra)})


def new_ticket(rt, amount=100):
    rec = create(rt, subject="Refund", dealer="D1", region="east", amount=amount)
    with uow(rt) as u:
        u.service("records").update(u, "ticket", rec["id"], {}, trusted=True, system_values={"owner": "amy"})
    return rec["id"]


def open_approval_tasks(rt, rid):
    return {t["assignee"]: t["id"] for t in tasks(rt, rid, status="open") if t["kind"] == "approval"}


def decide(rt, task_id, user, decision, comment=None):
    with uow(rt, user) as u:
        return u.service("flows").decide(u, task_id, decision, comment)


@pytest.mark.parametrize("mode", ["all"])
def test_all_needs_everyone_and_conditional_approver_joins_above_threshold(rt, package_dir, mode):
    make(rt, package_dir, mode)
    rid = new_ticket(rt, amount=60000)
    transition(rt, rid, "submit", user="amy", comment="please")
    assert load(rt, rid)["state"] == "draft"                      # waiting for approval
    open_ = open_approval_tasks(rt, rid)
    assert set(open_) == {"m1", "m2", "amy", "d1"}                 # D1 managers, the owner, east director (amount > 50000)
    with pytest.raises(Conflict):
        transition(rt, rid, "submit", user="amy")                 # already waiting
    for user in ("m1", "m2", "amy"):
        decide(rt, open_[user], user, "approve")
        assert load(rt, rid)["state"] == "draft"
    with pytest.raises(Forbidden):
        decide(rt, open_["d1"], "m1", "approve")                   # not m1's task
    decide(rt, open_["d1"], "d1", "approve", "ok")
    assert load(rt, rid)["state"] == "approved"
    h = history(rt, rid, kind="transition")[-1]
    assert h["changes"]["transition"] == "submit" and h["actor"] == "d1"
    small = new_ticket(rt, amount=100)
    transition(rt, small, "submit", user="amy")
    assert set(open_approval_tasks(rt, small)) == {"m1", "m2", "amy"}   # no director under the threshold


def test_any_first_decision_wins_and_rejection_goes_back(rt, package_dir):
    make(rt, package_dir, "any")
    rid = new_ticket(rt)
    transition(rt, rid, "submit", user="amy")
    open_ = open_approval_tasks(rt, rid)
    decide(rt, open_["m2"], "m2", "reject", "missing invoice")
    assert load(rt, rid)["state"] == "rework"
    assert open_approval_tasks(rt, rid) == {}                       # the others' tasks are closed
    transition(rt, rid, "submit", user="amy", comment="invoice attached")
    open_ = open_approval_tasks(rt, rid)
    decide(rt, open_["m1"], "m1", "approve")
    assert load(rt, rid)["state"] == "approved"
    events = [h["changes"]["event"] for h in history(rt, rid, kind="approval")]
    assert events.count("requested") == 2 and "approval_rejected" in events and "approval_approved" in events


def test_single_mode(rt, package_dir):
    make(rt, package_dir, "single")
    rid = new_ticket(rt)
    transition(rt, rid, "submit", user="amy")
    open_ = open_approval_tasks(rt, rid)
    decide(rt, open_["amy"], "amy", "approve")
    assert load(rt, rid)["state"] == "approved"


def test_count_two_of_three(rt, package_dir):
    make(rt, package_dir, "count", extra="      count: 2\n")
    rid = new_ticket(rt)
    transition(rt, rid, "submit", user="amy")
    open_ = open_approval_tasks(rt, rid)
    decide(rt, open_["m1"], "m1", "reject")
    assert load(rt, rid)["state"] == "draft"                      # 2 of the remaining 2 can still approve
    decide(rt, open_["m2"], "m2", "approve")
    assert load(rt, rid)["state"] == "draft"
    decide(rt, open_["amy"], "amy", "approve")
    assert load(rt, rid)["state"] == "approved"
    rid2 = new_ticket(rt)
    transition(rt, rid2, "submit", user="amy")
    open_ = open_approval_tasks(rt, rid2)
    decide(rt, open_["m1"], "m1", "reject")
    decide(rt, open_["m2"], "m2", "reject")                      # 2 approvals are now impossible
    assert load(rt, rid2)["state"] == "rework"


def test_percent(rt, package_dir):
    make(rt, package_dir, "percent", extra="      percent: 60\n")
    rid = new_ticket(rt, amount=60000)                           # 4 approvers: 60% = 3 (2.4 rounds up)
    transition(rt, rid, "submit", user="amy")
    open_ = open_approval_tasks(rt, rid)
    decide(rt, open_["m1"], "m1", "approve")
    decide(rt, open_["m2"], "m2", "approve")
    assert load(rt, rid)["state"] == "draft"
    decide(rt, open_["d1"], "d1", "approve")
    assert load(rt, rid)["state"] == "approved"


def test_sequential_stage_by_stage(rt, package_dir):
    make(rt, package_dir, "sequential")
    rid = new_ticket(rt, amount=60000)
    transition(rt, rid, "submit", user="amy")
    # stage 1: the D1 managers (either), stage 2: the owner, stage 3: the director
    assert set(open_approval_tasks(rt, rid)) == {"m1", "m2"}
    decide(rt, open_approval_tasks(rt, rid)["m2"], "m2", "approve")
    assert set(open_approval_tasks(rt, rid)) == {"amy"}
    decide(rt, open_approval_tasks(rt, rid)["amy"], "amy", "approve")
    assert set(open_approval_tasks(rt, rid)) == {"d1"}
    assert load(rt, rid)["state"] == "draft"
    decide(rt, open_approval_tasks(rt, rid)["d1"], "d1", "approve")
    assert load(rt, rid)["state"] == "approved"


def test_transfer_add_signer_delegation_and_reminders(rt, package_dir):
    make(rt, package_dir, "all")
    # m2 is away until tomorrow and delegates to m3
    with rt.db.write() as conn:
        conn.execute(update(P.users).where(P.users.c.username == "m2").values(
            away_until=to_db(rt.clock.now() + dt.timedelta(days=1)), delegate_to="m3"))
    rid = new_ticket(rt)
    transition(rt, rid, "submit", user="amy")
    open_ = open_approval_tasks(rt, rid)
    assert set(open_) == {"m1", "m3", "amy"}
    t_m3 = [t for t in tasks(rt, rid) if t["assignee"] == "m3"][0]
    assert t_m3["payload"]["on_behalf_of"] == "m2"
    with uow(rt, "m1") as u:                                      # 转办: m1 hands over to d2
        u.service("flows").transfer(u, open_["m1"], "d2", "on leave")
    open_ = open_approval_tasks(rt, rid)
    assert set(open_) == {"d2", "m3", "amy"}
    with pytest.raises(Conflict):
        with uow(rt, "amy") as u:                                 # already an approver
            u.service("flows").transfer(u, open_["amy"], "m3")
    with uow(rt, "amy") as u:                                     # 加签: amy adds d1
        u.service("flows").add_signer(u, open_["amy"], "d1", "finance must see this")
    open_ = open_approval_tasks(rt, rid)
    assert set(open_) == {"d2", "m3", "amy", "d1"}
    # reminders: after 4h, then every day, at most 2
    t0 = rt.clock.now()
    tick(rt, t0 + dt.timedelta(hours=4, minutes=1))
    reminded = {m["recipient"] for m in outbox(rt, "flow_task_reminder")}
    assert {"d2", "m3", "amy"} <= reminded
    tick(rt, t0 + dt.timedelta(days=3))
    per_task = [m["recipient"] for m in outbox(rt, "flow_task_reminder")]
    assert per_task.count("m3") == 2
    for user in ("d2", "m3", "amy", "d1"):
        result = decide(rt, open_[user], user, "approve")
    assert load(rt, rid)["state"] == "approved"
    summary = result["approval"]
    assert summary["status"] == "approved"
    assert {v["approver"]: v["on_behalf_of"] for v in summary["votes"]} == {"d2": None, "m3": "m2", "amy": None, "d1": None}
    assert {a["user"]: a.get("transferred_from") for a in summary["approvers"]}["d2"] == "m1"


def test_leaving_the_state_cancels_a_pending_approval(rt, package_dir):
    make(rt, package_dir, "all")
    rid = new_ticket(rt)
    transition(rt, rid, "submit", user="amy")
    assert open_approval_tasks(rt, rid)
    with uow(rt) as u:                                            # the system moves it on (e.g. a rule)
        flows = u.service("flows")
        rec = u.service("records").load(u, "ticket", rid)
        wf = flows.workflow_for(u.app, "ticket")
        inst = flows._instance(u, wf, rid)
        flows._change_state(u, wf, inst, rec, "rework", None, "withdrawn", extra={"transition": "withdraw"})
    assert open_approval_tasks(rt, rid) == {}
    assert history(rt, rid, kind="approval")[-1]["changes"]["event"] == "cancelled"


def test_a_rule_firing_an_approval_transition_requests_the_approval(rt, package_dir):
    make(rt, package_dir, "any")
    rid = new_ticket(rt)
    transition(rt, rid, "submit")                                  # as the system (e.g. the rules action)
    assert load(rt, rid)["state"] == "draft" and set(open_approval_tasks(rt, rid)) == {"m1", "m2", "amy"}
