"""Every trigger: created, updated, deleted, changed, transition, schedule (cron), date-relative, webhook."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import time

from sqlalchemy import select

from engine import platform as P
from engine.events import Event
from tests.conftest import T0
from tests.rules.pkg import Session, add_user, history, outbox, rule_log, setup_app, tick

UTC = dt.timezone.utc


def timers(rt, **filters):
    s = Session(rt)
    return s.rows(P.timers, *[getattr(P.timers.c, k) == v for k, v in filters.items()])


def test_created_updated_deleted_and_changed(rt, package_dir):
    setup_app(rt, package_dir, """
    rules:
      - name: on_create
        on: {created: lead}
        actions: [{add_tag: created}]
      - name: on_update
        on: {updated: lead}
        when: "note == 'ping'"
        actions: [{set: {note: "'pong'"}}]
      - name: on_level
        on: {changed: lead, fields: [level]}
        actions: [{set: {counter: "counter + 1", note: "concat(old.level, '->', level)"}}]
      - name: on_delete
        on: {deleted: lead}
        actions:
          - create: {form: complaint, values: {severity: "'low'", channel: "'phone'"}}
    """)
    s = Session(rt)
    lead = s.create("lead", {"name": "a"})
    assert lead["tags"] == ["created"]
    lead = s.update("lead", lead["id"], {"note": "ping"})
    assert lead["note"] == "pong"
    assert lead["counter"] == 0                     # level did not change
    lead = s.update("lead", lead["id"], {"level": "A"})
    assert lead["counter"] == 1 and lead["note"] == "->A"
    lead = s.update("lead", lead["id"], {"level": "H"})
    assert lead["counter"] == 2 and lead["note"] == "A->H"
    s.delete("lead", lead["id"])
    complaints = s.rows(rt.services["records"].table(rt.app("shop"), "complaint"))
    assert len(complaints) == 1 and complaints[0]["severity"] == "low"
    fired = [r["rule"] for r in rule_log(rt, outcome="fired")]
    assert fired == ["on_create", "on_update", "on_level", "on_level", "on_delete"]


def test_transition_trigger_filters_name_and_states(rt, package_dir):
    setup_app(rt, package_dir, """
    rules:
      - name: closed_any
        on: {transition: lead, to: [won, lost]}
        actions: [{set: {note: "concat(event.transition, ':', event['from'], '>', event.to)"}}]
      - name: only_win
        on: {transition: lead, name: win}
        actions: [{add_tag: winner}]
    """)
    s = Session(rt)
    lead = s.create("lead", {"name": "a"})
    with rt.db.write() as conn:
        uow = s.uow(conn)
        ev = Event("flow.transition", "shop", "lead", lead, old=lead, data={"transition": "win", "from": "open", "to": "won"})
        rt.bus.publish(ev, uow.deeper())
    got = s.load("lead", lead["id"])
    assert got["note"] == "win:open>won" and got["tags"] == ["winner"]
    with rt.db.write() as conn:
        ev = Event("flow.transition", "shop", "lead", got, old=got, data={"transition": "park", "from": "won", "to": "parked"})
        rt.bus.publish(ev, s.uow(conn).deeper())
    assert [r["rule"] for r in rule_log(rt)] == ["closed_any", "only_win"]


def test_schedule_cron_in_app_timezone_installs_and_reschedules(rt, package_dir):
    setup_app(rt, package_dir, """
    rules:
      - name: nightly
        on: {schedule: "0 2 * * *"}
        actions:
          - update_many: {form: customer, where: "visits >= 3", set: {tier: "'gold'"}}
    """)
    pending = timers(rt, kind="rules.schedule", status="pending")
    assert len(pending) == 1
    # 02:00 Shanghai the next day = 18:00 UTC today (T0 is 10:00 Shanghai)
    assert pending[0]["due_at"] == dt.datetime(2026, 11, 23, 18, 0)
    s = Session(rt)
    c1 = s.create("customer", {"name": "a", "visits": 5})
    c2 = s.create("customer", {"name": "b", "visits": 1})
    counts = tick(rt, T0 + dt.timedelta(days=2, hours=1))     # two nights pass
    assert counts["timers"] == 2
    assert s.load("customer", c1["id"])["tier"] == "gold"
    assert s.load("customer", c2["id"])["tier"] is None
    runs = rule_log(rt, rule="nightly")
    assert [r["at"] for r in runs] == [dt.datetime(2026, 11, 23, 18, 0), dt.datetime(2026, 11, 24, 18, 0)]
    assert runs[0]["actions"][0]["changed"] == 1 and runs[1]["actions"][0]["changed"] == 0
    nxt = timers(rt, kind="rules.schedule", status="pending")
    assert [t["due_at"] for t in nxt] == [dt.datetime(2026, 11, 25, 18, 0)]


def test_upgrade_replaces_changed_cron_timer(rt, package_dir):
    from engine.installer import install
    from engine.package import read_package
    from tests.rules.pkg import files
    rules = """
    rules:
      - name: nightly
        on: {schedule: "0 2 * * *"}
        actions: [{update_many: {form: customer, set: {status: "'active'"}}}]
    """
    setup_app(rt, package_dir, rules)
    f = files(rules.replace("0 2 * * *", "30 3 * * 1"))
    f["app.yaml"] = f["app.yaml"].replace("version: 1.0.0", "version: 1.0.1")
    install(rt, read_package(package_dir(f)))
    pending = timers(rt, kind="rules.schedule", status="pending")
    assert len(pending) == 1
    assert pending[0]["due_at"] == dt.datetime(2026, 11, 29, 19, 30)      # Monday 03:30 Shanghai
    assert len(timers(rt, kind="rules.schedule", status="cancelled")) == 1


DATE_RULES = """
rules:
  - name: remind_3d
    on: {date: lead, field: assigned_at, offset: 3d}
    when: "last_follow_up_at == None or last_follow_up_at < assigned_at"
    actions: [{notify: {template: hello, to: owner}}]
"""


def test_date_relative_checks_condition_at_fire_time(rt, package_dir):
    setup_app(rt, package_dir, DATE_RULES)
    add_user(rt, "ann", ["sales"])
    s = Session(rt)
    a = s.create("lead", {"name": "no follow-up", "assigned_at": T0.isoformat()}, owner="ann")
    b = s.create("lead", {"name": "followed up", "assigned_at": T0.isoformat()}, owner="ann")
    assert len(timers(rt, kind="rules.date", status="pending")) == 2
    s.update("lead", b["id"], {"last_follow_up_at": (T0 + dt.timedelta(days=1)).isoformat()})
    tick(rt, T0 + dt.timedelta(days=2))
    assert outbox(rt) == []                                   # not due yet
    tick(rt, T0 + dt.timedelta(days=3, minutes=1))
    msgs = outbox(rt)
    assert len(msgs) == 1 and msgs[0]["record_id"] == a["id"] and msgs[0]["due_at"] == dt.datetime(2026, 11, 26, 2, 0)
    assert [r["record_id"] for r in rule_log(rt, rule="remind_3d")] == [a["id"]]
    tick(rt, T0 + dt.timedelta(days=10))
    assert len(outbox(rt)) == 1                               # fired exactly once


def test_date_change_reschedules_and_stale_timer_does_nothing(rt, package_dir):
    setup_app(rt, package_dir, DATE_RULES)
    add_user(rt, "ann", ["sales"])
    s = Session(rt)
    lead = s.create("lead", {"name": "a", "assigned_at": T0.isoformat()}, owner="ann")
    later = T0 + dt.timedelta(days=5)
    s.update("lead", lead["id"], {"assigned_at": later.isoformat()})
    pend = timers(rt, kind="rules.date", status="pending")
    assert [t["due_at"] for t in pend] == [dt.datetime(2026, 12, 1, 2, 0)]
    assert len(timers(rt, kind="rules.date", status="cancelled")) == 1
    # set back to the original value: the cancelled timer comes back
    s.update("lead", lead["id"], {"assigned_at": T0.isoformat()})
    pend = timers(rt, kind="rules.date", status="pending")
    assert [t["due_at"] for t in pend] == [dt.datetime(2026, 11, 26, 2, 0)]
    tick(rt, T0 + dt.timedelta(days=9))
    assert [m["due_at"] for m in outbox(rt)] == [dt.datetime(2026, 11, 26, 2, 0)]
    # a past date is not fired retroactively; deleting the record cancels its timers
    old = s.create("lead", {"name": "old", "assigned_at": (T0 - dt.timedelta(days=30)).isoformat()}, owner="ann")
    assert timers(rt, kind="rules.date", record_id=old["id"]) == []


def test_date_rule_installed_later_backfills_existing_records(rt, package_dir):
    from engine.installer import install
    from engine.package import read_package
    from tests.rules.pkg import files
    setup_app(rt, package_dir, "")
    s = Session(rt)
    s.create("lead", {"name": "a", "assigned_at": (T0 + dt.timedelta(hours=1)).isoformat()})
    s.create("lead", {"name": "b", "assigned_at": (T0 - dt.timedelta(days=9)).isoformat()})
    f = files(DATE_RULES)
    f["app.yaml"] = f["app.yaml"].replace("version: 1.0.0", "version: 1.1.0")
    install(rt, read_package(package_dir(f)))
    assert [t["due_at"] for t in timers(rt, kind="rules.date")] == [dt.datetime(2026, 11, 26, 3, 0)]


def test_date_field_of_type_date_fires_at_local_time(rt, package_dir):
    setup_app(rt, package_dir, """
    rules:
      - name: birthday_eve
        on: {date: customer, field: birthday, offset: -1d, at: "10:30"}
        actions: [{add_tag: eve}]
    """)
    s = Session(rt)
    c = s.create("customer", {"name": "a", "birthday": "2026-12-05"})
    pend = timers(rt, kind="rules.date")
    assert [t["due_at"] for t in pend] == [dt.datetime(2026, 12, 4, 2, 30)]     # 10:30 Shanghai
    tick(rt, dt.datetime(2026, 12, 4, 3, 0, tzinfo=UTC))
    assert s.load("customer", c["id"])["tags"] == ["eve"]


HOOK_RULES = """
rules:
  - name: website_lead
    on: {webhook: true, secret_env: SHOP_HOOK_SECRET}
    actions:
      - create: {form: lead, values: {name: "payload.name", source: "'website'", note: "payload.note"}}
  - name: dms_update
    on: {webhook: lead, auth: token, roles: [manager]}
    actions:
      - set: {level: "payload.level"}
"""


def _signed(secret: str, body: bytes, ts: int | None = None) -> dict:
    ts = str(ts if ts is not None else int(time.time()))
    sig = "sha256=" + hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Loom-Timestamp": ts, "X-Loom-Signature": sig, "Content-Type": "application/json"}


def test_incoming_webhook_hmac(api, package_dir, monkeypatch):
    rt = api.rt
    setup_app(rt, package_dir, HOOK_RULES)
    url = "/api/apps/shop/hooks/website_lead"
    body = json.dumps({"name": "王先生", "note": "from web"}).encode()
    r = api.http.post(url, content=body, headers=_signed("s3cr3t", body))
    assert r.status_code == 503 and "SHOP_HOOK_SECRET" in r.text          # not configured yet
    monkeypatch.setenv("SHOP_HOOK_SECRET", "s3cr3t")
    r = api.http.post(url, content=body, headers=_signed("s3cr3t", body))
    assert r.status_code == 200, r.text
    assert r.json()["outcome"] == "fired"
    leads = Session(rt).rows(rt.services["records"].table(rt.app("shop"), "lead"))
    assert [(x["name"], x["source"], x["note"]) for x in leads] == [("王先生", "website", "from web")]
    bad = api.http.post(url, content=body, headers=_signed("wrong", body))
    assert bad.status_code == 401 and "signature does not match" in bad.text
    stale = api.http.post(url, content=body, headers=_signed("s3cr3t", body, ts=int(time.time()) - 3600))
    assert stale.status_code == 401 and "too old" in stale.text
    unsigned = api.http.post(url, content=body)
    assert unsigned.status_code == 401
    assert api.http.post("/api/apps/shop/hooks/nope", content=body).status_code == 404
    assert len(leads) == 1 and len(Session(rt).rows(rt.services["records"].table(rt.app("shop"), "lead"))) == 1


def test_incoming_webhook_bearer_token_on_a_record(api, package_dir):
    rt = api.rt
    setup_app(rt, package_dir, HOOK_RULES)
    lead = Session(rt).create("lead", {"name": "a"})
    url = "/api/apps/shop/hooks/dms_update"
    assert api.http.post(url, json={"id": lead["id"], "level": "H"}).status_code == 401
    sales = api.user("sam", ["sales"])
    r = api.http.post(url, json={"id": lead["id"], "level": "H"}, headers=sales)
    assert r.status_code == 403
    mgr = api.user("mia", ["manager"])
    r = api.http.post(url, json={"id": lead["id"], "level": "H"}, headers=mgr)
    assert r.status_code == 200, r.text
    assert Session(rt).load("lead", lead["id"])["level"] == "H"
    assert api.http.post(url, json={"id": 999, "level": "H"}, headers=mgr).status_code == 404
    h = history(rt, "lead", lead["id"])
    assert h[-1]["kind"] == "rule" and h[-1]["actor"] == "system" and h[-1]["changes"]["trigger"] == "webhook"
    assert h[-1]["changes"]["by"] == "mia"


def test_schedule_date_timers_after_a_bulk_load(rt, package_dir):
    """Seeds and imports insert rows without events: the service rebuilds the date timers."""
    from forms.bulk import bulk_insert  # noqa: F401  (the path that bypasses events)
    setup_app(rt, package_dir, DATE_RULES)
    s = Session(rt)
    with rt.db.write() as conn:
        conn.execute(rt.services["records"].table(rt.app("shop"), "lead").insert(), [
            {"name": "a", "assigned_at": T0.replace(tzinfo=None) + dt.timedelta(hours=2)},
            {"name": "b", "assigned_at": T0.replace(tzinfo=None) - dt.timedelta(days=20)}])
    assert timers(rt, kind="rules.date") == []
    with rt.db.write() as conn:
        assert rt.services["rules"].schedule_date_timers(s.uow(conn)) == 1
    assert [t["due_at"] for t in timers(rt, kind="rules.date")] == [dt.datetime(2026, 11, 26, 4, 0)]


LADDER = """
rules:
  - name: step_15d
    on: {date: lead, field: assigned_at, offset: 15d}
    actions: [{add_tag: d15}]
  - name: step_3d
    on: {date: lead, field: assigned_at, offset: 3d}
    actions: [{add_tag: d3}]
  - name: step_7d
    on: {date: lead, field: assigned_at, offset: 7d}
    actions: [{add_tag: d7}]
"""


def test_date_rules_on_one_field_are_a_chain_fired_in_order(rt, package_dir):
    """One timer per record and date field at a time; each firing schedules the next step, so a
    worker that was down catches up in order, and a date change restarts the chain."""
    setup_app(rt, package_dir, LADDER)
    s = Session(rt)
    lead = s.create("lead", {"name": "a", "assigned_at": T0.isoformat()})
    assert [(t["due_at"], t["payload"]["rule"]) for t in timers(rt, kind="rules.date", status="pending")] == [
        (dt.datetime(2026, 11, 26, 2, 0), "step_3d")]
    tick(rt, T0 + dt.timedelta(days=8))
    assert s.load("lead", lead["id"])["tags"] == ["d3", "d7"]
    assert [t["payload"]["rule"] for t in timers(rt, kind="rules.date", status="pending")] == ["step_15d"]
    tick(rt, T0 + dt.timedelta(days=30))
    assert s.load("lead", lead["id"])["tags"] == ["d3", "d7", "d15"]
    assert [r["rule"] for r in rule_log(rt)] == ["step_3d", "step_7d", "step_15d"]
    # a new date: the chain starts again from its first step still ahead
    s.update("lead", lead["id"], {"assigned_at": (T0 + dt.timedelta(days=40)).isoformat()})
    assert [t["payload"]["rule"] for t in timers(rt, kind="rules.date", status="pending")] == ["step_3d"]


def _lead_then_upgrade_without_the_3d_step(rt, package_dir):
    """A lead assigned at T0 (its 3-day step's timer pending), then an upgrade removes that step."""
    from engine.installer import install
    from engine.package import read_package
    from tests.rules.pkg import files
    setup_app(rt, package_dir, LADDER)
    s = Session(rt)
    lead = s.create("lead", {"name": "a", "assigned_at": T0.isoformat()})
    f = files(LADDER.replace("""  - name: step_3d
    on: {date: lead, field: assigned_at, offset: 3d}
    actions: [{add_tag: d3}]
""", ""))
    f["app.yaml"] = f["app.yaml"].replace("version: 1.0.0", "version: 1.1.0")
    install(rt, read_package(package_dir(f)))
    return s, lead


def test_a_chain_goes_on_when_a_step_is_removed_by_an_upgrade(rt, package_dir):
    s, lead = _lead_then_upgrade_without_the_3d_step(rt, package_dir)
    tick(rt, T0 + dt.timedelta(days=20))
    assert s.load("lead", lead["id"])["tags"] == ["d7", "d15"]


def test_a_removed_steps_timer_does_not_bring_back_steps_a_date_change_skipped(rt, package_dir):
    """The worker was down: the 3-day step's timer (a rule an upgrade then removed) is still due
    when the date is moved back, so that the new date's 7-day step is already past -- the new
    chain skips it.  When the old timer finally fires it must not schedule that step again."""
    s, lead = _lead_then_upgrade_without_the_3d_step(rt, package_dir)
    rt.clock.set(T0 + dt.timedelta(days=5))
    s.update("lead", lead["id"], {"assigned_at": (T0 - dt.timedelta(days=3)).isoformat()})   # 7d step: T0+4d, past
    tick(rt, T0 + dt.timedelta(days=5))
    assert s.load("lead", lead["id"])["tags"] in (None, [])
    tick(rt, T0 + dt.timedelta(days=20))
    assert s.load("lead", lead["id"])["tags"] == ["d15"]
