"""A small sales/service app for rule-engine tests (independent of the CRM package)."""
from __future__ import annotations

import datetime as dt
import textwrap

from engine.auth import SYSTEM_USER, upsert_user
from engine.installer import install
from engine.package import read_package
from engine.uow import UnitOfWork

APP = """\
name: shop
version: 1.0.0
title: {zh: 店, en: Shop}
timezone: Asia/Shanghai
default_language: zh
roles:
  admin: {label: Admin, permissions: [view_pii, manage_app]}
  sales: {label: Sales}
  manager: {label: Manager}
  regional: {label: Regional}
user_attributes:
  region: {label: Region}
  dealer: {label: Dealer, form: dealer, field: code}
  capacity: {label: Capacity}
  calendar: {label: Calendar}
calendars:
  default:
    days: [mon, tue, wed, thu, fri]
    hours: ["09:00-18:00"]
  late:
    days: [mon, tue, wed, thu, fri, sat, sun]
    hours: ["14:00-23:00"]
QUIET
FCAP
settings: {brand: Loom}
"""

FORMS = {
    "forms/dealer.yaml": """\
name: dealer
fields:
  code: {type: text, required: true, unique: true}
  name: {type: text}
  region: {type: select, options: [east, south, north]}
""",
    "forms/customer.yaml": """\
name: customer
fields:
  name: {type: text, required: true}
  phone: {type: phone, pii: true}
  email: {type: email}
  preferred_channel: {type: select, options: [sms, app, wechat, email]}
  language: {type: select, options: [zh, en]}
  consent_marketing: {type: boolean, default: false}
  do_not_disturb: {type: boolean, default: false}
  birthday: {type: date}
  tier: {type: select, options: [gold, silver, regular]}
  status: {type: select, options: [active, sleeping, at_risk]}
  visits: {type: number, default: 0}
  spend: {type: number, default: 0}
  last_visit_at: {type: datetime}
  dealer: {type: link, form: dealer}
  tags: {type: tags}
""",
    "forms/lead.yaml": """\
name: lead
fields:
  name: {type: text, required: true}
  region: {type: select, options: [east, south, north]}
  source: {type: select, options: [website, referral, walk_in, hotline]}
  model: {type: select, options: [s7, s5, x3]}
  test_drive: {type: boolean, default: false}
  score: {type: number}
  level: {type: select, options: [H, A, B, C]}
  dealer: {type: link, form: dealer}
  customer: {type: link, form: customer}
  assigned_at: {type: datetime}
  last_follow_up_at: {type: datetime}
  follow_ups: {type: number, default: 0}
  in_pool: {type: boolean, default: false}
  pool_entered_at: {type: datetime}
  counter: {type: number, default: 0}
  tags: {type: tags}
  manager: {type: user}
  note: {type: text}
""",
    "forms/follow_up.yaml": """\
name: follow_up
fields:
  lead: {type: link, form: lead, required: true}
  note: {type: text}
""",
    "forms/survey.yaml": """\
name: survey
fields:
  customer: {type: link, form: customer}
  dealer: {type: link, form: dealer}
  score: {type: number}
""",
    "forms/complaint.yaml": """\
name: complaint
fields:
  customer: {type: link, form: customer}
  dealer: {type: link, form: dealer}
  severity: {type: select, options: [low, high]}
  channel: {type: select, options: [survey, phone]}
""",
}


def files(rules: str = "", templates: dict | None = None, quiet: str | None = None, cap: str | None = None,
          extra: dict | None = None) -> dict:
    app = APP.replace("QUIET", f"quiet_hours: {quiet}" if quiet else "").replace(
        "FCAP", f"frequency_cap: {cap}" if cap else "")
    out = {"app.yaml": app, **FORMS}
    if rules:
        out["rules/rules.yaml"] = textwrap.dedent(rules)
    base_templates = {
        "templates/hello.zh.j2": "你好 {{ recipient.name }}：{{ record.name }}",
        "templates/hello.en.j2": "Hello {{ recipient.name }}: {{ record.name }}",
        "templates/promo.zh.j2": "{% set kind = 'marketing' %}优惠 {{ recipient.name }}",
    }
    out.update(base_templates)
    out.update(templates or {})
    out.update(extra or {})
    return out


def setup_app(rt, package_dir, rules: str = "", **kw):
    root = package_dir(files(rules, **kw))
    report = install(rt, read_package(root))
    return rt.app("shop")


def add_user(rt, name: str, roles: list[str], **attrs):
    with rt.db.write() as conn:
        return upsert_user(conn, rt.clock.now(), name, roles, attrs)


class Session:
    """Write transactions as the system or a user, one per call."""

    def __init__(self, rt, user=SYSTEM_USER):
        self.rt = rt
        self.user = user

    def uow(self, conn, now=None):
        return UnitOfWork(self.rt, conn, self.rt.app("shop"), self.user, now or self.rt.clock.now())

    def create(self, form: str, data: dict, **kw) -> dict:
        with self.rt.db.write() as conn:
            return self.rt.services["records"].create(self.uow(conn), form, data, trusted=True, **kw)

    def update(self, form: str, rid: int, data: dict, **kw) -> dict:
        with self.rt.db.write() as conn:
            return self.rt.services["records"].update(self.uow(conn), form, rid, data, trusted=True, **kw)

    def delete(self, form: str, rid: int) -> None:
        with self.rt.db.write() as conn:
            self.rt.services["records"].delete(self.uow(conn), form, rid, trusted=True)

    def load(self, form: str, rid: int) -> dict:
        with self.rt.db.read() as conn:
            return self.rt.services["records"].load(self.uow(conn), form, rid)

    def rows(self, table, *where, order=None):
        from sqlalchemy import select
        with self.rt.db.read() as conn:
            q = select(table)
            for w in where:
                q = q.where(w)
            q = q.order_by(order if order is not None else table.c.id)
            return [dict(r) for r in conn.execute(q).mappings()]


def outbox(rt, **filters):
    from engine import platform as P
    s = Session(rt)
    conds = [getattr(P.outbox.c, k) == v for k, v in filters.items()]
    return s.rows(P.outbox, *conds)


def rule_log(rt, app: str = "shop", **filters):
    """Every firing in ``app``, oldest first, as the rule engine's log reader gives it (rule-log rows
    and the timelines' rule lines), filtered on its keys."""
    with rt.db.read() as conn:
        uow = UnitOfWork(rt, conn, rt.app(app), SYSTEM_USER, rt.clock.now())
        rows = rt.services["rules"].log_for(uow, limit=1_000_000)
    return [r for r in reversed(rows) if all(r.get(k) == v for k, v in filters.items())]


def history(rt, form, rid):
    from engine import platform as P
    s = Session(rt)
    return s.rows(P.history, P.history.c.form == form, P.history.c.record_id == rid)


def tick(rt, when: dt.datetime):
    rt.clock.set(when)
    return rt.services["scheduler"].tick(when)
