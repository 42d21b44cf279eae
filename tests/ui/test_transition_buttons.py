"""A workflow step whose guard does not hold is offered as a disabled button with the reason beside
it, not as a button that can only fail -- unless the step asks for input that may make it hold."""
from __future__ import annotations

import re

from engine.installer import install
from engine.package import read_package
from tests.ui.test_pages import _browser

DESK = {
    "app.yaml": "name: desk\nversion: 1.0.0\ntitle: Desk\nroles: {agent: {}}\n",
    "forms/ticket.yaml": ("name: ticket\ntitle_field: subject\nfields:\n"
                          "  subject: {type: text, required: true}\n"
                          "  in_queue: {type: boolean}\n"
                          "  note: {type: text}\n"
                          "access:\n  - {roles: [agent], actions: all}\n"),
    "flows/ticket_flow.yaml": """\
name: ticket_flow
kind: workflow
form: ticket
label: {zh: 工单流程, en: Ticket process}
initial: open
states:
  open: {label: {zh: 处理中, en: Open}}
  closed: {label: {zh: 已关闭, en: Closed}, final: true}
transitions:
  take:
    label: {zh: 从队列领取, en: Take from queue}
    from: [open]
    roles: [agent]
    guard: "in_queue == true"
    guard_message: {zh: 该工单已不在队列中, en: This ticket is no longer in the queue}
  escalate:
    label: {zh: 升级, en: Escalate}
    from: [open]
    roles: [agent]
    guard: "subject == 'urgent'"
  resolve:
    label: {zh: 解决, en: Resolve}
    from: [open]
    to: closed
    roles: [agent]
    fields: [note]
    guard: "note != None"
  close:
    label: {zh: 关闭, en: Close}
    from: [open]
    to: closed
    roles: [agent]
""",
}


def _button(html: str, name: str) -> str:
    m = re.search(r'<button[^>]*data-transition="%s"[^>]*>' % name, html)
    assert m, f"no button for transition {name!r}"
    return m.group(0)


def test_a_step_whose_guard_fails_is_disabled_with_its_reason_and_the_others_stay(api, package_dir):
    install(api.rt, read_package(package_dir(DESK)))
    h = api.user("root", ["agent"])
    ticket = api.http.post("/api/apps/desk/ticket", json={"subject": "打印机卡纸", "in_queue": False}, headers=h).json()
    agent = _browser(api, "amy", ["agent"])
    page = agent.get(f"/apps/desk/forms/ticket/{ticket['id']}")
    assert page.status_code == 200, page.text

    take = _button(page.text, "take")
    assert " disabled" in take and 'aria-describedby="transition-take-blocked"' in take
    assert re.search(r'id="transition-take-blocked">「从队列领取」: 该工单已不在队列中</p>', page.text)
    escalate = _button(page.text, "escalate")      # no guard_message: the default names the step
    assert " disabled" in escalate and "不满足执行“升级”的条件" in page.text
    resolve = _button(page.text, "resolve")         # its dialog asks for the note the guard reads
    assert " disabled" not in resolve and 'data-modal-open="#dlg-resolve"' in resolve
    close = _button(page.text, "close")             # the first step that can be taken is the primary one
    assert " disabled" not in close and "btn-primary" in close
    assert "btn-primary" not in take and "btn-primary" not in resolve
    assert f'hx-post="/apps/desk/forms/ticket/{ticket["id"]}/transition/close" hx-swap="none"' in page.text

    # the API says the same, and the server still refuses the step with those words
    flow = api.http.get(f"/api/apps/desk/ticket/{ticket['id']}/flow", headers=h).json()
    blocked = {t["name"]: t["blocked"] for t in flow["transitions"]}
    assert blocked == {"take": "该工单已不在队列中", "escalate": "不满足执行“升级”的条件", "resolve": "不满足执行“解决”的条件",
                       "close": None}
    refused = api.http.post(f"/api/apps/desk/ticket/{ticket['id']}/transitions/take", json={}, headers=h)
    assert refused.status_code == 409 and "该工单已不在队列中" in refused.text


def test_the_step_is_offered_again_once_its_guard_holds(api, package_dir):
    install(api.rt, read_package(package_dir(DESK)))
    h = api.user("root", ["agent"])
    ticket = api.http.post("/api/apps/desk/ticket", json={"subject": "urgent", "in_queue": True}, headers=h).json()
    page = _browser(api, "amy", ["agent"]).get(f"/apps/desk/forms/ticket/{ticket['id']}")
    assert page.status_code == 200, page.text
    for name in ("take", "escalate"):
        assert " disabled" not in _button(page.text, name)
    assert "btn-primary" in _button(page.text, "take") and "-blocked" not in page.text
