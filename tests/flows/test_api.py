"""The flows JSON API: transitions (200/409/403/422/404), the record's flow view, tasks and task actions."""
from __future__ import annotations

import pytest

from .helpers import setup_app, uow

FLOW = """
kind: workflow
form: ticket
initial: new
states:
  new: {label: {zh: 新建, en: New}}
  in_progress: {label: {zh: 处理中, en: In progress}}
  resolved: {label: {zh: 已解决, en: Resolved}}
  closed: {label: {zh: 已关闭, en: Closed}, final: true}
transitions:
  start:
    label: {zh: 开始处理, en: Start}
    from: [new]
    to: in_progress
    roles: [agent]
    allow: "owner == current_user.name"
  resolve:
    label: {zh: 解决, en: Resolve}
    from: [in_progress]
    to: resolved
    requires: [resolution, root_cause]
    fields: [resolution, root_cause]
    actions:
      - task: {title: {zh: 回访客户, en: Call the customer back}, assignee: {role: manager}, kind: callback, due: 1d}
  close:
    label: {zh: 关闭, en: Close}
    from: [resolved]
    to: closed
    comment: required
    approval:
      mode: any
      approvers:
        - role: manager
"""


@pytest.fixture
def client(api, package_dir):
    rt = api.rt
    setup_app(rt, package_dir, {"ticket_flow": FLOW})
    api.tokens = {name: api.user(name, roles, attrs) for name, roles, attrs in [
        ("amy", ["agent"], {"dealer": "D1"}), ("bob", ["agent"], {"dealer": "D2"}), ("carl", ["agent"], {"dealer": "D1"}),
        ("max", ["manager"], {}), ("mia", ["manager"], {})]}
    return api


def new_ticket(client, user="amy"):
    r = client.http.post("/api/apps/svc/ticket", json={"subject": "Rattle", "dealer": "D1"}, headers=client.tokens[user])
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    with uow(client.rt) as u:                                      # a rule would assign it
        u.service("records").update(u, "ticket", rid, {}, trusted=True, system_values={"owner": user})
    return r.json()


def url(rid, name=None):
    return f"/api/apps/svc/ticket/{rid}/transitions/{name}" if name else f"/api/apps/svc/ticket/{rid}/flow"


def test_transition_statuses_and_the_flow_view(client):
    h, T = client.http, client.tokens
    rec = new_ticket(client)
    rid = rec["id"]
    assert rec["state"] == "new"
    r = h.post(url(rid, "resolve"), json={}, headers=T["amy"])
    assert r.status_code == 409 and r.json()["errors"][0]["code"] == "conflict"
    r = h.post(url(rid, "start"), json={}, headers=T["carl"])          # same dealer, not the owner
    assert r.status_code == 403
    r = h.post(url(rid, "start"), json={}, headers=T["bob"])           # cannot even see it
    assert r.status_code == 404
    r = h.post(url(rid, "nope"), json={}, headers=T["amy"])
    assert r.status_code == 404
    flow = h.get(url(rid), headers=T["amy"]).json()
    assert flow["state"] == "new" and [t["name"] for t in flow["transitions"]] == ["start"]
    assert h.get(url(rid), headers=T["carl"]).json()["transitions"] == []
    r = h.post(url(rid, "start"), json={"comment": "on it"}, headers=T["amy"])
    assert r.status_code == 200 and r.json()["state"] == "in_progress"
    r = h.post(url(rid, "resolve"), json={"data": {"resolution": "tightened"}}, headers=T["amy"])
    assert r.status_code == 422
    assert r.json()["errors"] == [{"field": "root_cause", "code": "required", "message": r.json()["errors"][0]["message"]}]
    r = h.post(url(rid, "resolve"), json={"data": {"resolution": "tightened", "root_cause": "loose clip"}}, headers=T["amy"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["state"] == "resolved" and body["root_cause"] == "loose clip"
    flow = h.get(url(rid), headers=T["amy"]).json()
    kinds = [x["kind"] for x in flow["history"]]
    assert kinds.count("transition") == 2
    assert flow["tasks"][0]["kind"] == "callback" and flow["tasks"][0]["status"] == "open"


def test_tasks_complete_approve_reject_transfer(client):
    h, T = client.http, client.tokens
    rid = new_ticket(client)["id"]
    h.post(url(rid, "start"), json={}, headers=T["amy"])
    h.post(url(rid, "resolve"), json={"data": {"resolution": "x", "root_cause": "y"}}, headers=T["amy"])
    mine = h.get("/api/tasks", headers=T["max"]).json()["items"] + h.get("/api/tasks", headers=T["mia"]).json()["items"]
    callbacks = [t for t in mine if t["kind"] == "callback"]
    assert len(callbacks) == 1
    cb = callbacks[0]
    assert cb["link"] == f"/apps/svc/ticket/{rid}" and cb["due_at"] and cb["record_title"] == "Rattle"
    other = "mia" if cb["assignee"] == "max" else "max"
    assert h.post(f"/api/tasks/{cb['id']}/complete", json={}, headers=T[other]).status_code == 403
    assert h.post(f"/api/tasks/{cb['id']}/approve", json={}, headers=T[cb["assignee"] or "max"]).status_code == 409
    r = h.post(f"/api/tasks/{cb['id']}/complete", json={"comment": "customer happy", "outcome": "reached"},
               headers=T[cb["assignee"] or "max"])
    assert r.status_code == 200 and r.json()["task"]["status"] == "done"
    # closing needs a comment, then a manager's approval
    r = h.post(url(rid, "close"), json={}, headers=T["amy"])
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "comment"
    r = h.post(url(rid, "close"), json={"comment": "all good"}, headers=T["amy"])
    assert r.status_code == 200 and r.json()["state"] == "resolved" and r.json()["_approval"]["status"] == "pending"
    tasks = {u: [t for t in h.get("/api/tasks", headers=T[u]).json()["items"] if t["kind"] == "approval"] for u in ("max", "mia")}
    assert len(tasks["max"]) == 1 and len(tasks["mia"]) == 1
    r = h.post(f"/api/tasks/{tasks['mia'][0]['id']}/transfer", json={"to": "carl", "comment": "please check"}, headers=T["mia"])
    assert r.status_code == 200 and r.json()["task"]["assignee"] == "carl"
    assert h.get("/api/tasks", headers=T["mia"]).json()["items"] == []
    r = h.post(f"/api/tasks/{tasks['max'][0]['id']}/reject", json={"comment": "call again"}, headers=T["max"])
    assert r.status_code == 200 and r.json()["approval"]["status"] == "rejected"
    assert h.get(f"/api/apps/svc/ticket/{rid}", headers=T["amy"]).json()["state"] == "resolved"
    assert [t for t in h.get("/api/tasks", headers=T["carl"]).json()["items"] if t["kind"] == "approval"] == []
    h.post(url(rid, "close"), json={"comment": "called again"}, headers=T["amy"])
    task = [t for t in h.get("/api/tasks", headers=T["mia"]).json()["items"] if t["kind"] == "approval"][0]
    r = h.post(f"/api/tasks/{task['id']}/approve", json={"comment": "ok"}, headers=T["mia"])
    assert r.status_code == 200 and r.json()["approval"]["status"] == "approved"
    assert h.get(f"/api/apps/svc/ticket/{rid}", headers=T["amy"]).json()["state"] == "closed"
    assert h.post("/api/tasks/999999/approve", json={}, headers=T["mia"]).status_code == 404
    assert h.post(f"/api/tasks/{task['id']}/frobnicate", json={}, headers=T["mia"]).status_code == 404


def test_a_task_list_never_shows_a_personal_data_title_unmasked(api, package_dir):
    """A task's ``record_title`` is its record's title field; when that field is personal data the
    list (a read that writes no audit row) shows it masked -- to managers without view_pii, who
    saw the raw value before, and alike to everyone else."""
    from .helpers import TICKET
    rt = api.rt
    pii_ticket = TICKET.replace("  subject: {type: text, required: true}", "  subject: {type: text, required: true, pii: true}")
    setup_app(rt, package_dir, {"ticket_flow": FLOW}, extra={"forms/ticket.yaml": pii_ticket})
    api.tokens = {name: api.user(name, roles, attrs) for name, roles, attrs in [
        ("amy", ["agent"], {"dealer": "D1"}), ("max", ["manager"], {}), ("mia", ["manager"], {})]}
    h, T = api.http, api.tokens
    r = h.post("/api/apps/svc/ticket", json={"subject": "Rattle from the dashboard", "dealer": "D1"}, headers=T["amy"])
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    with uow(rt) as u:
        u.service("records").update(u, "ticket", rid, {}, trusted=True, system_values={"owner": "amy"})
    h.post(url(rid, "start"), json={}, headers=T["amy"])
    assert h.post(url(rid, "resolve"), json={"data": {"resolution": "x", "root_cause": "y"}}, headers=T["amy"]).status_code == 200
    items = h.get("/api/tasks", headers=T["max"]).json()["items"] + h.get("/api/tasks", headers=T["mia"]).json()["items"]
    callback = [t for t in items if t["kind"] == "callback"][0]
    assert callback["record_title"] and "Rattle" not in callback["record_title"], callback["record_title"]
    assert "*" in callback["record_title"]


def test_a_transition_answering_with_personal_data_audits_it(api, package_dir):
    """The transition's answer is the record: shown unmasked to a caller with view_pii, it is
    audited in the transition's own transaction."""
    from sqlalchemy import select
    from engine import platform as P
    from .helpers import APP, TICKET
    rt = api.rt
    pii_ticket = TICKET.replace("  subject: {type: text, required: true}", "  subject: {type: text, required: true, pii: true}")
    app_yaml = APP.format(version="1.0.0").replace("agent: {label: Agent}", "agent: {label: Agent, permissions: [view_pii]}")
    setup_app(rt, package_dir, {"ticket_flow": FLOW}, extra={"forms/ticket.yaml": pii_ticket, "app.yaml": app_yaml})
    amy = api.user("amy", ["agent"], {"dealer": "D1"})
    r = api.http.post("/api/apps/svc/ticket", json={"subject": "Rattle", "dealer": "D1"}, headers=amy)
    rid = r.json()["id"]
    with uow(rt) as u:
        u.service("records").update(u, "ticket", rid, {}, trusted=True, system_values={"owner": "amy"})
    r = api.http.post(url(rid, "start"), json={}, headers=amy)
    assert r.status_code == 200 and r.json()["subject"] == "Rattle", r.text
    with rt.db.read() as conn:
        rows = conn.execute(select(P.audit.c.actor, P.audit.c.record_id, P.audit.c.details)
                            .where(P.audit.c.action == "pii.read")).all()
    assert [(x.actor, x.record_id) for x in rows] == [("amy", rid)] and rows[0].details["fields"] == ["subject"]


def test_a_task_id_beyond_64_bits_is_not_found(client):
    """Task ids are BIGINT: a larger one in the URL is no task -- on SQLite it made the driver raise (500)."""
    h, T = client.http, client.tokens
    for task_id in (2**63, 10**23):
        r = h.post(f"/api/tasks/{task_id}/complete", json={}, headers=T["max"])
        assert r.status_code == 404 and "not found" in r.text, r.text
    assert h.post("/api/tasks/999/complete", json={}, headers=T["max"]).status_code == 404
