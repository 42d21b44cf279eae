"""A small service-desk app for flow tests, built per test with the flows it needs."""
from __future__ import annotations

import contextlib
import datetime as dt
import textwrap

from sqlalchemy import select

from engine import platform as P
from engine.auth import SYSTEM_USER, get_user, upsert_user
from engine.installer import install
from engine.package import read_package
from engine.uow import UnitOfWork

APP = """\
name: svc
version: {version}
title: {{zh: 服务台, en: Service desk}}
timezone: Asia/Shanghai
default_language: en
roles:
  admin: {{label: Admin, permissions: [view_pii, manage_app]}}
  agent: {{label: Agent}}
  manager: {{label: Manager}}
  director: {{label: Director}}
  hq: {{label: HQ}}
user_attributes:
  dealer: {{label: Dealer}}
  region: {{label: Region}}
calendars:
  office:
    days: [mon, tue, wed, thu, fri]
    hours: ["09:00-12:00", "13:00-18:00"]
    holidays: [2026-11-26]
"""

CUSTOMER = """\
name: customer
fields:
  name: {type: text, required: true}
  phone: {type: phone}
  status: {type: select, options: [active, churned]}
  preferred_channel: {type: select, options: [sms, wechat, email]}
"""

TICKET = """\
name: ticket
title_field: subject
fields:
  subject: {type: text, required: true}
  severity: {type: select, options: [low, high, critical]}
  amount: {type: number}
  dealer: {type: text}
  region: {type: text}
  customer: {type: link, form: customer}
  resolution: {type: textarea}
  root_cause: {type: text}
  response_due_at: {type: datetime}
  resolution_due_at: {type: datetime}
  escalation_level: {type: number}
  delivered_on: {type: date}
  first_service_done: {type: boolean}
access:
  - roles: [agent]
    actions: [create, read, update]
    rows: "dealer == current_user.dealer"
  - roles: [manager, director, hq]
    actions: [read, update]
"""

ORDER = """\
name: service_order
fields:
  ticket: {type: link, form: ticket}
  kind: {type: select, options: [first_service, repair]}
"""

TEMPLATES = {
    "templates/sla_warning.en.j2": "Ticket {{ record.subject }} is about to breach its SLA",
    "templates/sla_warning.zh.j2": "工单 {{ record.subject }} 即将超时",
    "templates/escalated.en.j2": "Ticket {{ record.subject }} escalated",
    "templates/escalated.zh.j2": "工单 {{ record.subject }} 已升级",
    "templates/welcome.en.j2": "Welcome {{ recipient.name }}",
    "templates/welcome.zh.j2": "欢迎 {{ recipient.name }}",
}


def package(package_dir, flows: dict[str, str], version: str = "1.0.0", extra: dict | None = None):
    files = {"app.yaml": APP.format(version=version), "forms/customer.yaml": CUSTOMER, "forms/ticket.yaml": TICKET,
             "forms/service_order.yaml": ORDER, **TEMPLATES}
    for name, body in flows.items():
        files[f"flows/{name}.yaml"] = textwrap.dedent(body)
    files.update(extra or {})
    return read_package(package_dir(files))


def setup_app(rt, package_dir, flows: dict[str, str], **kw):
    report = install(rt, package(package_dir, flows, **kw))
    assert report.status in ("installed", "upgraded"), report
    return rt.app("svc")


@contextlib.contextmanager
def uow(rt, user=None, write=True):
    user = user or SYSTEM_USER
    if isinstance(user, str):
        with rt.db.read() as conn:
            user = get_user(conn, user)
    cm = rt.db.write() if write else rt.db.read()
    with cm as conn:
        yield UnitOfWork(rt, conn, rt.app("svc"), user, rt.clock.now(), lang="en")


def add_user(rt, name, roles, **attrs):
    with rt.db.write() as conn:
        return upsert_user(conn, rt.clock.now(), name, roles, attrs, password="s3cret-pass")


def create(rt, form="ticket", user=None, **values):
    with uow(rt, user) as u:
        return u.service("records").create(u, form, values)


def load(rt, record_id, form="ticket"):
    with uow(rt, write=False) as u:
        return u.service("records").load(u, form, record_id)


def transition(rt, record_id, name, user=None, comment=None, data=None, form="ticket"):
    with uow(rt, user) as u:
        return u.service("flows").transition(u, form, record_id, name, comment=comment, data=data)


def history(rt, record_id, form="ticket", kind=None):
    with uow(rt, write=False) as u:
        items = u.service("records").history(u, form, record_id)
    return [h for h in items if kind is None or h["kind"] == kind]


def tasks(rt, record_id=None, status=None):
    with rt.db.read() as conn:
        t = P.tasks
        q = select(t).order_by(t.c.id)
        if record_id is not None:
            q = q.where(t.c.record_id == record_id)
        if status:
            q = q.where(t.c.status == status)
        return [dict(r) for r in conn.execute(q).mappings()]


def outbox(rt, template=None):
    with rt.db.read() as conn:
        o = P.outbox
        q = select(o).order_by(o.c.id)
        if template:
            q = q.where(o.c.template == template)
        return [dict(r) for r in conn.execute(q).mappings()]


def tick(rt, when: dt.datetime):
    rt.clock.set(when)
    return rt.services["scheduler"].tick(when)


SH = dt.timezone(dt.timedelta(hours=8))


def local(y, m, d, hh=0, mm=0):
    """An instant given in Shanghai time."""
    return dt.datetime(y, m, d, hh, mm, tzinfo=SH)
