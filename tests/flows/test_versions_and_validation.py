"""Definition versioning (running instances keep their version or migrate explicitly) and the
compile step's problems with positions."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from engine.definitions import validate_package
from engine.installer import install
from flows import tables as T

from .helpers import create, load, package, setup_app, transition

V1 = """
kind: workflow
form: ticket
states: {new: {}, review: {}, done: {final: true}}
transitions:
  send: {from: [new], to: review}
  finish: {from: [review], to: done}
"""

V2 = """
kind: workflow
form: ticket
states: {new: {}, review: {}, approved: {}, done: {final: true}}
transitions:
  send: {from: [new], to: review}
  finish: {from: [review], to: approved}
  archive: {from: [approved], to: done}
"""

V3 = """
kind: workflow
form: ticket
states: {new: {}, checking: {}, approved: {}, done: {final: true}}
transitions:
  send: {from: [new], to: checking}
  finish: {from: [checking], to: approved}
  archive: {from: [approved], to: done}
migrate:
  review: checking
"""


def instance(rt, rid):
    with rt.db.read() as conn:
        i = T.instances
        return dict(conn.execute(select(i).where(i.c.record_id == rid)).mappings().one())


def test_running_instances_keep_their_version_or_migrate_explicitly(rt, package_dir):
    setup_app(rt, package_dir, {"ticket_flow": V1})
    r1 = create(rt, subject="one")["id"]
    transition(rt, r1, "send")
    assert instance(rt, r1)["app_version"] == "1.0.0"
    setup_app(rt, package_dir, {"ticket_flow": V2}, version="1.1.0")
    r2 = create(rt, subject="two")["id"]
    transition(rt, r2, "send")
    transition(rt, r1, "finish")                       # r1 runs on 1.0.0: finish -> done
    transition(rt, r2, "finish")                       # r2 runs on 1.1.0: finish -> approved
    assert load(rt, r1)["state"] == "done" and load(rt, r2)["state"] == "approved"
    assert instance(rt, r1)["app_version"] == "1.0.0" and instance(rt, r1)["status"] == "done"
    r3 = create(rt, subject="three")["id"]
    transition(rt, r3, "send")                         # in review on 1.1.0
    setup_app(rt, package_dir, {"ticket_flow": V3}, version="1.2.0")
    assert load(rt, r3)["state"] == "checking"         # migrated: review -> checking
    inst = instance(rt, r3)
    assert inst["app_version"] == "1.2.0" and inst["state"] == "checking"
    transition(rt, r3, "finish")
    assert load(rt, r3)["state"] == "approved"
    assert instance(rt, r2)["app_version"] == "1.2.0"  # approved exists in 1.2.0 too: moved along
    transition(rt, r2, "archive")
    assert load(rt, r2)["state"] == "done"


BAD = """\
kind: workflow
form: ticket
initial: nowhere
states:
  new: {}
  open: {pauses_sla: true}
  done: {final: true}
transitions:
  start:
    from: [new, opened]
    to: open
    roles: [agnet]
    requires: [resolutoin]
    guard: "severity == 'high' and"
  close:
    to: done
    approval:
      mode: count
      approvers:
        - role: manager
          where: "shoe_size > 3"
      reject_to: limbo
      remind_after: 4 hours
sla:
  - name: response
    calendar: night_shift
    targets:
      - {within: 1h}
    due_field: subject
    breach:
      - notify: {template: no_such_template, to: owner}
"""

JOURNEY_BAD = """\
kind: journey
form: ticket
anchor: subject
enrol_when: "delivered_on != None"
steps:
  - name: a
    at: "+1x"
  - name: b
    at: "+2d"
    goto: a
  - name: c
    timeout: 2d
"""


def test_validation_reports_every_problem_with_its_position(package_dir):
    problems = validate_package(package(package_dir, {"ticket_flow": BAD, "care": JOURNEY_BAD}))
    text = "\n".join(str(p) for p in problems)
    expected = [
        ("flows/ticket_flow.yaml:3:", "initial: unknown state 'nowhere'"),
        ("flows/ticket_flow.yaml:10:", "unknown state 'opened'"),
        ("flows/ticket_flow.yaml:12:", "unknown role 'agnet'"),
        ("flows/ticket_flow.yaml:13:", "unknown field 'resolutoin'"),
        ("flows/ticket_flow.yaml:14:", "(in expression"),
        ("flows/ticket_flow.yaml:18:", "mode 'count' needs 'count: N'"),
        ("flows/ticket_flow.yaml:21:", "unknown user attribute 'shoe_size'"),
        ("flows/ticket_flow.yaml:22:", "reject_to: unknown state 'limbo'"),
        ("flows/ticket_flow.yaml:23:", "is not a duration"),
        ("flows/ticket_flow.yaml:26:", "unknown calendar 'night_shift'"),
        ("flows/ticket_flow.yaml:29:", "expected datetime"),
        ("flows/ticket_flow.yaml:31:", "unknown template 'no_such_template'"),
        ("flows/care.yaml:3:", "expected date or datetime"),
        ("flows/care.yaml:7:", "is not a step time"),
        ("flows/care.yaml:10:", "'goto' can only jump forward"),
        ("flows/care.yaml:12:", "'timeout' only applies with 'wait_until'"),
    ]
    for where, what in expected:
        assert any(str(p).startswith(where) and what in str(p) for p in problems), f"missing {where} {what}\n{text}"
    guard = [p for p in problems if "(in expression" in p.message and p.line == 14][0]
    assert guard.col > 12                                   # points inside the expression


def test_schema_catches_typos_and_one_workflow_per_form(package_dir):
    typo = V1 + "transitons: {}\n"
    problems = validate_package(package(package_dir, {"ticket_flow": typo, "second": V2}))
    text = "\n".join(map(str, problems))
    assert "unknown key 'transitons'; did you mean 'transitions'?" in text
    assert "form 'ticket' already has a workflow" in text
