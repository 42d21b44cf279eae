"""Every action: set, create, update_related, update_many, for_each, task, complete_tasks, add/remove_tag,
decide, run_rule, transition, start_flow, webhook (outgoing), notify; and the API the flows engine uses."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import http.server
import json
import threading

import pytest

from engine import platform as P
from engine.errors import RecordInvalid
from tests.conftest import T0
from tests.rules.pkg import Session, add_user, history, outbox, rule_log, setup_app, tick


def table(rt, form):
    return rt.services["records"].table(rt.app("shop"), form)


def test_set_create_and_lookup(rt, package_dir):
    setup_app(rt, package_dir, """
    rules:
      - name: bad_survey
        on: {created: survey}
        when: "score < 3"
        actions:
          - create:
              form: complaint
              values: {customer: customer, dealer: dealer, severity: "'high'", channel: "'survey'"}
          - set: {score: "score * 10"}
      - name: dealer_from_owner
        on: {updated: lead}
        when: "owner != None and dealer == None"
        actions:
          - set:
              dealer: {lookup: dealer, where: {code: "owner_user.dealer"}}
              region: "customer.tags[0] if customer != None else 'east'"
    """)
    s = Session(rt)
    d = s.create("dealer", {"code": "D001", "name": "Pudong", "region": "east"})
    c = s.create("customer", {"name": "张三", "phone": "13800138000", "tags": ["south"]})
    sv = s.create("survey", {"customer": c["id"], "dealer": d["id"], "score": 2})
    assert sv["score"] == 20
    comp = s.rows(table(rt, "complaint"))
    assert [(x["customer"], x["dealer"], x["severity"], x["channel"]) for x in comp] == [(c["id"], d["id"], "high", "survey")]
    assert rule_log(rt)[0]["actions"][0] == {"action": "create", "form": "complaint", "id": comp[0]["id"]}
    s.create("survey", {"customer": c["id"], "score": 4})
    assert len(s.rows(table(rt, "complaint"))) == 1
    # lookup by a user attribute, and following a link one hop (customer.tags)
    add_user(rt, "ann", ["sales"], dealer="D001")
    lead = s.create("lead", {"name": "x", "customer": c["id"]})
    with rt.db.write() as conn:
        rt.services["records"].update(s.uow(conn), "lead", lead["id"], {}, trusted=True, system_values={"owner": "ann"})
    got = s.load("lead", lead["id"])
    assert got["dealer"] == d["id"] and got["region"] == "south"


def test_update_related_both_directions(rt, package_dir):
    setup_app(rt, package_dir, """
    rules:
      - name: follow_up_touches_lead
        on: {created: follow_up}
        actions:
          - update_related:
              link: lead
              set: {last_follow_up_at: "created_at", follow_ups: "target.follow_ups + 1"}
      - name: lead_lost_closes_followups
        on: {changed: lead, fields: [level]}
        when: "level == 'C'"
        actions:
          - update_related: {form: follow_up, via: lead, set: {note: "concat('lead now ', level)"}}
    """)
    s = Session(rt)
    lead = s.create("lead", {"name": "x"})
    s.create("follow_up", {"lead": lead["id"], "note": "called"})
    s.create("follow_up", {"lead": lead["id"], "note": "visited"})
    got = s.load("lead", lead["id"])
    assert got["follow_ups"] == 2 and got["last_follow_up_at"] == T0
    s.update("lead", lead["id"], {"level": "C"})
    assert [f["note"] for f in s.rows(table(rt, "follow_up"))] == ["lead now C", "lead now C"]


def test_update_many_in_sql_and_python_and_for_each(rt, package_dir):
    setup_app(rt, package_dir, """
    rules:
      - name: rfm
        on: {schedule: "0 2 * * *"}
        actions:
          - update_many:
              form: customer
              where: "status != 'at_risk' or status == None"
              set: {tier: "'gold' if spend >= 10000 and visits >= 5 else ('silver' if spend >= 3000 else 'regular')"}
          - update_many:
              form: customer
              where: "last_visit_at != None and days_between(last_visit_at, now()) >= 90"
              set: {status: "'sleeping'"}
          - for_each:
              form: customer
              where: "birthday != None and date_part(birthday, 'month') == date_part(today(), 'month') and date_part(birthday, 'day') == date_part(today(), 'day')"
              actions: [{add_tag: birthday_sent}]
    """)
    s = Session(rt)
    a = s.create("customer", {"name": "a", "spend": 20000, "visits": 9, "birthday": "1990-11-24",
                              "last_visit_at": (T0 - dt.timedelta(days=100)).isoformat()})
    b = s.create("customer", {"name": "b", "spend": 5000, "visits": 1, "birthday": "1990-11-25",
                              "last_visit_at": (T0 - dt.timedelta(days=10)).isoformat()})
    c = s.create("customer", {"name": "c", "status": "at_risk", "spend": 99999})
    tick(rt, T0 + dt.timedelta(hours=17))       # 02:00 on 11-24 in Shanghai
    ga, gb, gc = (s.load("customer", x["id"]) for x in (a, b, c))
    assert (ga["tier"], gb["tier"], gc["tier"]) == ("gold", "silver", None)
    assert (ga["status"], gb["status"]) == ("sleeping", None)
    assert ga["tags"] == ["birthday_sent"] and not gb["tags"]
    log = rule_log(rt, rule="rfm")[0]["actions"]
    assert log[0] == {"action": "update_many", "form": "customer", "matched": 2, "changed": 2}
    assert log[2] == {"action": "for_each", "form": "customer", "matched": 1, "acted": 1}


def test_tags_tasks_and_complete_tasks(rt, package_dir):
    setup_app(rt, package_dir, """
    rules:
      - name: vip
        on: {changed: lead, fields: [level]}
        actions:
          - add_tag: {tag: "concat('level_', lower(level))"}
          - remove_tag: cold
          - task:
              title: {zh: 回访, en: Call back}
              assignee: {role: sales, where: "region == record.region"}
              due: 1d
              kind: callback
      - name: followed
        on: {created: follow_up}
        actions:
          - update_related: {link: lead, set: {note: "'called'"}}
      - name: close_tasks
        on: {changed: lead, fields: [note]}
        actions: [{complete_tasks: {kind: callback}}]
    """)
    add_user(rt, "ann", ["sales"], region="east")
    add_user(rt, "bob", ["sales"], region="east")
    add_user(rt, "cid", ["sales"], region="south")
    s = Session(rt)
    lead = s.create("lead", {"name": "x", "region": "east", "tags": ["cold", "web"]})
    lead = s.update("lead", lead["id"], {"level": "H"})
    assert lead["tags"] == ["web", "level_h"]
    lead2 = s.create("lead", {"name": "y", "region": "east"})
    s.update("lead", lead2["id"], {"level": "A"})
    tasks = s.rows(P.tasks)
    assert [(t["record_id"], t["assignee"], t["candidate_role"], t["due_at"]) for t in tasks] == [
        (lead["id"], "ann", "sales", dt.datetime(2026, 11, 24, 2, 0)), (lead2["id"], "bob", "sales", dt.datetime(2026, 11, 24, 2, 0))]
    s.create("follow_up", {"lead": lead["id"]})
    assert [t["status"] for t in s.rows(P.tasks)] == ["done", "open"]
    assert any(h["kind"] == "task" for h in history(rt, "lead", lead["id"]))


def test_decide_and_run_rule(rt, package_dir):
    setup_app(rt, package_dir, """
    rules:
      - name: score
        on: {created: lead}
        actions:
          - decide: {table: scoring, set: {score: score, level: level}}
          - run_rule: tag_hot
      - name: tag_hot
        on: {updated: lead}
        enabled: false
        when: "level == 'H'"
        actions: [{add_tag: hot}]
    decision_tables:
      - name: scoring
        inputs: [source, test_drive]
        outputs: [score, level]
        rows:
          - {when: ["in ['referral', 'walk_in']", "== true"], then: [90, H]}
          - {when: [website, "-"], then: {score: 50, level: B}}
        default: [10, C]
    """)
    s = Session(rt)
    hot = s.create("lead", {"name": "a", "source": "walk_in", "test_drive": True})
    web = s.create("lead", {"name": "b", "source": "website"})
    other = s.create("lead", {"name": "c", "source": "hotline"})
    assert (hot["score"], hot["level"], hot["tags"]) == (90, "H", ["hot"])
    assert (web["score"], web["level"], web["tags"]) == (50, "B", None)
    assert (other["score"], other["level"]) == (10, "C")
    fired = [(r["rule"], r["record_id"]) for r in rule_log(rt, outcome="fired")]
    assert ("tag_hot", hot["id"]) in fired and ("tag_hot", web["id"]) not in fired


class _Recorder(http.server.BaseHTTPRequestHandler):
    got: list = []
    fail_first = 0

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Recorder.got.append((dict(self.headers), body))
        if _Recorder.fail_first > 0:
            _Recorder.fail_first -= 1
            self.send_response(500)
        else:
            self.send_response(204)
        self.end_headers()

    def log_message(self, *a):
        pass


@pytest.fixture
def receiver():
    _Recorder.got = []
    _Recorder.fail_first = 2
    srv = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/hook"
    srv.shutdown()


def test_outgoing_webhook_signed_and_retried(rt, package_dir, receiver, monkeypatch):
    monkeypatch.setenv("DMS_SECRET", "k3y")
    setup_app(rt, package_dir, f"""
    rules:
      - name: push_hot
        on: {{changed: lead, fields: [level]}}
        when: "level == 'H'"
        actions:
          - webhook: {{url: "{receiver}", secret_env: DMS_SECRET, body: {{lead: id, name: name, level: level}}}}
    """)
    s = Session(rt)
    lead = s.create("lead", {"name": "x"})
    s.update("lead", lead["id"], {"level": "H"})
    assert _Recorder.got == []                       # nothing is sent inside the transaction
    counts = tick(rt, T0)
    assert counts["failed"] == 1 and _Recorder.got                  # receiver answered 500
    wh = s.rows(P.timers, P.timers.c.kind == "rules.webhook")[0]
    assert wh["status"] == "pending" and wh["attempts"] == 1 and "500" in wh["last_error"]
    sent_before = len(_Recorder.got)
    tick(rt, T0 + dt.timedelta(minutes=5))
    assert len(_Recorder.got) == sent_before + 1
    headers, body = _Recorder.got[-1]
    assert json.loads(body)["data"] == {"lead": lead["id"], "name": "x", "level": "H"}
    expect = "sha256=" + hmac.new(b"k3y", headers["X-Loom-Timestamp"].encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers["X-Loom-Signature"] == expect
    assert headers["Idempotency-Key"] == _Recorder.got[0][0]["Idempotency-Key"]
    assert s.rows(P.timers, P.timers.c.kind == "rules.webhook")[0]["status"] == "done"


class FakeFlows:
    def __init__(self, rt):
        self.rt = rt
        self.calls = []

    def transition(self, uow, form, record_id, name, comment=None):
        self.calls.append(("transition", form, record_id, name, uow.user.username))
        self.rt.services["records"].update(uow, form, record_id, {}, trusted=True, system_values={"state": name + "ed"})
        return {}

    def start_flow(self, uow, flow, form, record_id):
        self.calls.append(("start", flow, form, record_id))
        return {"enrolled": True}


def test_transition_and_start_flow_go_through_the_flows_service(rt, package_dir):
    setup_app(rt, package_dir, """
    rules:
      - name: auto_close
        on: {changed: lead, fields: [level]}
        when: "level == 'C'"
        actions:
          - transition: clos
          - set: {note: "state"}
    """, extra={"flows/care.yaml": "name: care\nkind: journey\nform: lead\nanchor: created_at\nsteps:\n  - {name: s1, at: '+1d', actions: [{add_tag: d1}]}\n",
                "rules/more.yaml": "rules:\n  - {name: enrol, on: {created: lead}, actions: [{start_flow: care}]}\n"})
    fake = FakeFlows(rt)
    rt.services["flows"] = fake
    s = Session(rt)
    lead = s.create("lead", {"name": "x"})
    s.update("lead", lead["id"], {"level": "C"})
    assert fake.calls == [("start", "care", "lead", lead["id"]), ("transition", "lead", lead["id"], "clos", "system")]
    assert s.load("lead", lead["id"])["note"] == "closed"


def test_run_actions_api_for_the_flows_engine(rt, package_dir):
    """compile_actions / run_actions: what a flow transition's `actions:` go through."""
    from engine.definitions import CompileContext
    from engine.package import read_package
    from engine.yamlpos import load_yaml
    from engine.definitions import SourceFile
    from rules.actions import compile_actions, run_actions
    from tests.rules.pkg import files
    setup_app(rt, package_dir, "")
    pkg = read_package(package_dir(files()))
    ctx = CompileContext(pkg)
    src = "actions:\n  - set: {level: \"'B'\"}\n  - notify: {template: hello, to: owner}\n  - task: {title: x, assignee: owner}\n  - sett: {a: 1}\n"
    ctx.files["flows/x.yaml"] = SourceFile("flows/x.yaml", load_yaml(src))
    for p in pkg.yaml_files("forms"):
        ctx.files[p] = SourceFile(p, load_yaml(pkg.text(p)))
    ctx.app_data = load_yaml(pkg.text("app.yaml")).data
    actions = compile_actions(ctx, "flows/x.yaml", ("actions",), ctx.files["flows/x.yaml"].data["actions"], "lead")
    assert [a.kind for a in actions] == ["set", "notify", "task"]
    assert [str(p) for p in ctx.problems.items] == ["flows/x.yaml:5:5: unknown action 'sett'; did you mean 'set'?"]
    add_user(rt, "ann", ["sales"])
    s = Session(rt)
    lead = s.create("lead", {"name": "x"}, owner="ann")
    with rt.db.write() as conn:
        done = run_actions(s.uow(conn), "lead", lead, actions, "transition", source="flow:lead:qualify", occurrence="t1")
    assert [d["action"] for d in done] == ["set", "notify", "task"]
    assert s.load("lead", lead["id"])["level"] == "B"
    assert len(outbox(rt)) == 1 and len(s.rows(P.tasks)) == 1


def test_action_failure_rolls_back_everything_with_the_rule_name(rt, package_dir):
    setup_app(rt, package_dir, """
    rules:
      - name: broken
        on: {created: lead}
        actions:
          - set: {note: "'touched'"}
          - create: {form: follow_up, values: {note: "'no lead given'"}}
    """)
    s = Session(rt)
    with pytest.raises(RecordInvalid) as exc:
        s.create("lead", {"name": "x"})
    assert "broken" in str(exc.value) and "lead" in str(exc.value)
    assert s.rows(table(rt, "lead")) == [] and s.rows(P.rule_log) == [] and rule_log(rt) == [] and s.rows(P.history) == []
