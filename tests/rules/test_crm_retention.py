"""The CRM's after-sales and retention rules over simulated months: maintenance ladder (T-7 / T-3
unless booked / T-1 call task), visits and spend from service orders, 90/150/180-day retention with
consent, birthdays, nightly RFM tiers."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from sqlalchemy import select

from engine import platform as P
from engine.auth import SYSTEM_USER
from engine.uow import UnitOfWork
from forms.cn_validators import vin_check_digit
from tests.conftest import T0
from tests.rules.crm_helpers import APP, crm  # noqa: F401  (fixture)
from tests.rules.pkg import tick

SH = ZoneInfo("Asia/Shanghai")


def vin(serial: int) -> str:
    base = f"LLM7A2C30N{serial:07d}"
    return base[:8] + vin_check_digit(base) + base[9:]


def svc(rt, fn):
    with rt.db.write() as conn:
        uow = UnitOfWork(rt, conn, rt.app(APP), SYSTEM_USER, rt.clock.now())
        return fn(uow.service("records"), uow)


def rows(rt, table, *where):
    with rt.db.read() as conn:
        q = select(table)
        for w in where:
            q = q.where(w)
        return [dict(r) for r in conn.execute(q.order_by(table.c.id)).mappings()]


def local(y, m, d, hh=0, mm=0):
    return dt.datetime(y, m, d, hh, mm, tzinfo=SH).astimezone(dt.timezone.utc)


def sent(rt, template):
    return [(m["record_id"], m["recipient"], m["channel"], m["status"]) for m in
            rows(rt, P.outbox, P.outbox.c.template == template)]


def test_maintenance_ladder_and_service_orders(api, crm):
    rt = api.rt
    api.user("d001.sa1", ["service_advisor"], {"dealer": "D001", "region": "east"})
    due = (T0 + dt.timedelta(days=10)).date()                              # 2026-12-03

    def setup(records, uow):
        out = {}
        for i, (name, phone, channel) in enumerate([("王伟", "13800000001", "wechat"), ("李娜", "13800000002", "sms")]):
            c = records.create(uow, "customer", {"name": name, "phone": phone, "region": "east", "dealer": crm["dealer"],
                                                 "preferred_channel": channel, "customer_type": "individual"}, trusted=True)
            v = records.create(uow, "vehicle", {"vin": vin(i + 1), "model": "s7", "customer": c["id"], "dealer": crm["dealer"],
                                                "purchase_date": "2025-11-01", "plate": f"沪AD1234{i}",
                                                "next_maintenance_due": due.isoformat()}, trusted=True)
            out[i] = (c, v)
        return out
    made = svc(rt, setup)
    (c0, v0), (c1, v1) = made[0], made[1]
    tick(rt, local(2026, 11, 26, 10, 1))                                      # T-7, 10:00
    t7 = {m[0]: m for m in sent(rt, "maintenance_reminder")}
    assert set(t7) == {v0["id"], v1["id"]}
    assert t7[v1["id"]][1:3] == ("13800000002", "sms") and t7[v1["id"]][3] in ("queued", "sent")
    assert t7[v0["id"]][1:3] == ("13800000001", "sms")        # prefers WeChat but has no WeChat id: SMS
    # customer 0 books: a service order opened on day 5 (after T-7) -> no T-3 SMS, no T-1 call
    rt.clock.set(local(2026, 11, 28, 11, 0))
    order = svc(rt, lambda r, u: r.create(u, "service_order", {
        "vehicle": v0["id"], "customer": c0["id"], "dealer": crm["dealer"], "kind": "maintenance", "advisor": "d001.sa1",
        "opened_at": rt.clock.now().isoformat(), "mileage": 5200}, trusted=True))
    cust0 = svc(rt, lambda r, u: r.load(u, "customer", c0["id"]))
    assert cust0["visit_count"] == 1 and cust0["last_visit_at"] == rt.clock.now() and cust0["status"] == "active"
    tick(rt, local(2026, 11, 30, 10, 1))                                      # T-3
    assert [m[0] for m in sent(rt, "maintenance_reminder_sms")] == [v1["id"]]
    assert sent(rt, "maintenance_reminder_sms")[0][2] == "sms"
    tick(rt, local(2026, 12, 2, 9, 1))                                        # T-1
    calls = rows(rt, P.tasks, P.tasks.c.form == "vehicle")
    assert [(t["record_id"], t["assignee"], t["kind"]) for t in calls] == [(v1["id"], "d001.sa1", "callback")]
    assert "保养到期致电" in calls[0]["body"] and "李娜" in calls[0]["body"]
    # closing the order: spend and the vehicle's next due date (which reschedules the ladder)
    next_due = (T0 + dt.timedelta(days=190)).date()
    svc(rt, lambda r, u: r.update(u, "service_order", order["id"], {
        "closed_at": rt.clock.now().isoformat(), "amount": 880, "next_maintenance_due": next_due.isoformat()}, trusted=True))
    assert svc(rt, lambda r, u: r.load(u, "customer", c0["id"]))["total_spend"] == 880
    veh = svc(rt, lambda r, u: r.load(u, "vehicle", v0["id"]))
    assert veh["next_maintenance_due"] == next_due and veh["last_maintenance_at"] is not None
    pending = rows(rt, P.timers, P.timers.c.kind == "rules.date", P.timers.c.form == "vehicle",
                   P.timers.c.record_id == v0["id"], P.timers.c.status == "pending")
    # the ladder is a chain: the first step waits, the others are scheduled as each one fires
    assert len(pending) == 1 and pending[0]["due_at"] > dt.datetime(2027, 5, 1)


def test_retention_birthday_and_rfm(api, crm):
    rt = api.rt
    api.user("d001.gm", ["dealer_manager"], {"dealer": "D001", "region": "east"})
    birthday = (T0 + dt.timedelta(days=2)).astimezone(SH).date().replace(year=1988)

    def setup(records, uow):
        yes = records.create(uow, "customer", {"name": "张敏", "phone": "13900000001", "region": "east", "dealer": crm["dealer"],
                                               "customer_type": "individual", "consent_marketing": True,
                                               "consent_at": T0.isoformat(), "consent_source": "app",
                                               "birthday": birthday.isoformat()}, trusted=True)
        no = records.create(uow, "customer", {"name": "刘洋", "phone": "13900000002", "region": "east", "dealer": crm["dealer"],
                                              "customer_type": "individual"}, trusted=True)
        for c in (yes, no):   # a visit today: last_visit_at drives the retention ladder
            records.update(uow, "customer", c["id"], {"last_visit_at": T0.isoformat(), "visit_count": 3,
                                                      "total_spend": 40000}, trusted=True)
        return yes, no
    yes, no = svc(rt, setup)
    tick(rt, local(2026, 11, 25, 9, 1))                                     # birthday, 09:00 cron
    assert [(m[0], m[3] != "suppressed") for m in sent(rt, "birthday_greeting")] == [(yes["id"], True)]
    tick(rt, local(2026, 11, 26, 3, 0))                                     # nightly RFM 02:30
    tiers = {c["id"]: c["tier"] for c in rows(rt, rt.services["records"].table(rt.app(APP), "customer"))}
    assert tiers == {yes["id"]: "silver", no["id"]: "silver"}
    # 90 days without a visit: sleeping + win-back offer (marketing: only with consent)
    tick(rt, T0 + dt.timedelta(days=90, hours=1))
    got = {c["id"]: c for c in rows(rt, rt.services["records"].table(rt.app(APP), "customer"))}
    assert got[yes["id"]]["status"] == got[no["id"]]["status"] == "sleeping"
    assert sorted((m[0], m[3] == "suppressed") for m in sent(rt, "retention_3m")) == [(yes["id"], False), (no["id"], True)]
    tick(rt, T0 + dt.timedelta(days=150, hours=1))
    assert sorted(m[0] for m in sent(rt, "retention_5m")) == [yes["id"], no["id"]]
    tick(rt, T0 + dt.timedelta(days=180, hours=1))
    got = {c["id"]: c for c in rows(rt, rt.services["records"].table(rt.app(APP), "customer"))}
    assert got[yes["id"]]["status"] == "at_risk"
    calls = rows(rt, P.tasks, P.tasks.c.form == "customer")
    assert sorted((t["record_id"], t["assignee"]) for t in calls) == [(yes["id"], "d001.gm"), (no["id"], "d001.gm")]
    assert got[yes["id"]]["tier"] == "silver"                   # RFM recomputed nightly: spend 40000, last visit < 1 year
    # a visit brings the customer back
    svc(rt, lambda r, u: r.update(u, "customer", yes["id"], {"last_visit_at": rt.clock.now().isoformat()}, trusted=True))
    assert svc(rt, lambda r, u: r.load(u, "customer", yes["id"]))["status"] == "active"
