"""A small sales/after-sales app for report tests, with hand-checkable data.

Clock: T0 = 2026-11-23 02:00Z = Monday 10:00 in Shanghai (app timezone), so
"today" is 2026-11-23 locally.

Leads (created_at is UTC; 'local' is the Shanghai date):

| lead | created (UTC)    | local | source   | dealer | state      | amount | pool | contacted (UTC) |
|------|------------------|-------|----------|--------|------------|--------|------|-----------------|
| L1   | 2026-11-20 03:00 | 11-20 | website  | D001   | won        | 100    | no   | 11-20 05:00 (2h)|
| L2   | 2026-11-21 03:00 | 11-21 | website  | D001   | lost       | 200    | no   | 11-21 07:00 (4h)|
| L3   | 2026-11-22 03:00 | 11-22 | hotline  | D002   | test_drive | 300    | no   | 11-22 09:00 (6h)|
| L4   | 2026-10-31 17:00 | 11-01 | referral | D003   | won        | 400    | no   | -               |
| L5   | 2026-10-31 15:00 | 10-31 | referral | D003   | new        | -      | yes  | -               |
| L6   | 2026-09-10 02:00 | 09-10 | website  | D002   | contacted  | 50     | no   | -               |
| L7   | 2026-11-23 01:00 | 11-23 | hotline  | D001   | new        | 10     | no   | -               |
| L8   | 2026-11-12 04:00 | 11-12 | hotline  | D003   | contacted  | 20     | no   | -               |

Dealers: D001 east 上海市, D002 east 浙江省, D003 south 广东省.

Cohorts (vehicle deliveries -> service orders of the same customer):
C1 delivered 2026-05-10, services 06-01, 09-01; C2 delivered 05-20, service 07-01;
C3 delivered 06-05, none; C4 delivered 06-15, services 07-15, 08-15, 11-01.
"""
from __future__ import annotations

import datetime as dt
import textwrap
import uuid

import pytest

from engine.auth import SYSTEM_USER, upsert_user
from engine.installer import install
from engine.package import read_package
from engine.uow import UnitOfWork

UTC = dt.timezone.utc

APP = """\
name: rep
version: 1.0.0
title: {zh: 报表测试, en: Report test}
timezone: Asia/Shanghai
default_language: zh
roles:
  admin: {label: Admin, permissions: [view_pii, manage_app, export]}
  manager: {label: Manager, permissions: [export]}
  dealer_manager: {label: Dealer manager, permissions: [export]}
  dealer_user: {label: Dealer user}
user_attributes:
  dealer: {label: Dealer}
menus:
  - {label: Leads, form: lead}
  - {label: Sources, report: by_source}
  - {label: Board, dashboard: sales_board}
"""

DEALER = """\
name: dealer
title_field: name
fields:
  code: {type: text, required: true, unique: true}
  name: {type: text, required: true}
  region:
    type: select
    index: true
    options:
      - {value: east, label: {zh: 华东, en: East}}
      - {value: south, label: {zh: 华南, en: South}}
      - {value: north, label: {zh: 华北, en: North}}
  province: {type: text}
access:
  - roles: [dealer_user, dealer_manager]
    actions: [read]
    rows: "code == current_user.dealer"
  - roles: [manager]
    actions: all
"""

LEAD = """\
name: lead
title_field: name
fields:
  name: {type: text, required: true}
  phone: {type: phone, pii: true}
  source:
    type: select
    index: true
    options:
      - {value: website, label: {zh: 官网, en: Website}}
      - {value: hotline, label: {zh: 热线, en: Hotline}}
      - {value: referral, label: {zh: 转介绍, en: Referral}}
  dealer: {type: link, form: dealer}
  amount: {type: decimal, precision: 12, scale: 2}
  in_pool: {type: boolean}
  contacted_at: {type: datetime}
  note: {type: text}
access:
  - roles: [dealer_user, dealer_manager]
    actions: [read]
    rows: "dealer.code == current_user.dealer"
    hidden: [note]
  - roles: [manager]
    actions: all
"""

LEAD_FLOW = """\
name: lead_process
kind: workflow
form: lead
initial: new
states:
  new: {label: {zh: 新线索, en: New}}
  contacted: {label: {zh: 已联系, en: Contacted}}
  test_drive: {label: {zh: 试驾, en: Test drive}}
  won: {label: {zh: 成交, en: Won}, final: true}
  lost: {label: {zh: 战败, en: Lost}, final: true}
transitions:
  contact: {from: [new], to: contacted}
  drive: {from: [contacted], to: test_drive}
  win: {from: [contacted, test_drive], to: won}
  lose: {from: [new, contacted, test_drive], to: lost}
"""

CUSTOMER = """\
name: customer
fields:
  name: {type: text, required: true}
"""

VEHICLE = """\
name: vehicle
fields:
  vin: {type: text}
  customer: {type: link, form: customer}
  delivered_on: {type: date}
"""

SERVICE = """\
name: service_order
fields:
  customer: {type: link, form: customer}
  vehicle: {type: link, form: vehicle}
  kind: {type: select, options: [first_service, maintenance, repair]}
"""

REPORTS = """\
reports:
  - name: by_source
    label: {zh: 线索来源, en: Leads by source}
    source: lead
    filters:
      - "in_pool == false"
      - {field: created_at, param: period, default: last_90_days}
      - {field: dealer.region, param: region}
    dimensions: [source]
    measures:
      leads: {count: true, label: {zh: 线索数, en: Leads}}
      won: {count: "state == 'won'", label: {zh: 成交, en: Won}}
      amount: {sum: amount}
      avg_amount: {avg: amount}
      conversion: {ratio: [won, leads], label: {zh: 转化率, en: Conversion}}
    chart: {kind: bar, x: source, y: [leads, won]}
  - name: monthly
    source: lead
    filters: [{field: created_at, param: period, default: all}]
    dimensions: [{field: created_at, bucket: month}]
    measures: {leads: count}
    chart: {kind: line}
  - name: daily
    source: lead
    dimensions: [{field: created_at, bucket: day}, {field: created_at, bucket: week}]
    measures: {leads: count}
  - name: by_region
    source: lead
    dimensions: [dealer.region]
    measures: {leads: count, customers: {count_distinct: phone}}
    chart: {kind: pie}
  - name: top_dealers
    source: lead
    dimensions: [dealer]
    measures: {leads: count}
    sort: [-leads, dealer]
    limit: 2
  - name: region_source
    kind: pivot
    source: lead
    dimensions: [dealer.region, source]
    measures: {leads: count}
    chart: {kind: heatmap}
  - name: lead_funnel
    kind: funnel
    source: lead
    funnel: {stages: [new, contacted, test_drive, won]}
    chart: {kind: funnel}
  - name: flow_funnel
    kind: funnel
    source: lead
  - name: response
    source: lead
    dimensions: [source]
    measures:
      avg_hours: {duration: [created_at, contacted_at], unit: hours}
      max_hours: {duration: [created_at, contacted_at], agg: max}
      contacted: {count: "contacted_at != None"}
  - name: response_median
    source: lead
    measures:
      median_hours: {duration: [created_at, contacted_at], agg: median}
      p90_amount: {percentile: amount, p: 0.9}
  - name: lead_kpi
    kind: kpi
    source: lead
    filters: [{field: created_at, param: period, default: last_7_days}]
    measures:
      leads: {count: true, label: {zh: 线索数, en: Leads}}
      won: {count: "state == 'won'"}
      conversion: {ratio: [won, leads]}
    compare: previous_period
    chart: {kind: kpi, y: leads}
  - name: by_province
    source: lead
    dimensions: [dealer.province]
    measures: {leads: count}
    chart: {kind: map}
  - name: my_dealer
    source: lead
    filters: [{field: dealer.code, param: dealer_code, default: current_user.dealer}]
    measures: {leads: count}
  - name: secret
    source: lead
    roles: [manager]
    measures: {leads: count}
  - name: uses_note
    source: lead
    dimensions: [note]
    measures: {leads: count}
  - name: scores
    source: lead
    dimensions: [source]
    measures:
      leads: count
      won: {count: "state == 'won'"}
      lost: {count: "state == 'lost'"}
      net: {formula: "(won - lost) * 100 / leads"}
      avg_double: {avg: "amount * 2", when: "amount >= 100"}
  - name: service_return
    kind: cohort
    source: vehicle
    cohort:
      date: delivered_on
      bucket: month
      member: customer
      events: {form: service_order, link: customer}
      thresholds: [1, 2]
  - name: service_return_90d
    kind: cohort
    source: vehicle
    cohort:
      date: delivered_on
      member: customer
      events: {form: service_order, link: customer, date: created_at, within: 90d}
      thresholds: [1, 2]
dashboards:
  - name: sales_board
    label: {zh: 销售看板, en: Sales board}
    filters: [{param: period, default: last_30_days}]
    refresh: 5m
    widgets:
      - {report: lead_kpi, width: 3}
      - {report: by_source, width: 9}
      - {report: lead_funnel, width: 6, chart: {kind: bar, x: stage}}
      - {report: secret, width: 6}
"""

FILES = {
    "app.yaml": APP, "forms/dealer.yaml": DEALER, "forms/lead.yaml": LEAD, "forms/customer.yaml": CUSTOMER,
    "forms/vehicle.yaml": VEHICLE, "forms/service_order.yaml": SERVICE, "flows/lead_process.yaml": LEAD_FLOW,
    "reports/sales.yaml": REPORTS,
}

LEADS = [
    # name, created (UTC), source, dealer code, state, amount, in_pool, contacted (UTC), phone
    ("L1", dt.datetime(2026, 11, 20, 3), "website", "D001", "won", 100, False, dt.datetime(2026, 11, 20, 5), "13800000001"),
    ("L2", dt.datetime(2026, 11, 21, 3), "website", "D001", "lost", 200, False, dt.datetime(2026, 11, 21, 7), "13800000002"),
    ("L3", dt.datetime(2026, 11, 22, 3), "hotline", "D002", "test_drive", 300, False, dt.datetime(2026, 11, 22, 9), "13800000003"),
    ("L4", dt.datetime(2026, 10, 31, 17), "referral", "D003", "won", 400, False, None, "13800000004"),
    ("L5", dt.datetime(2026, 10, 31, 15), "referral", "D003", "new", None, True, None, "13800000004"),
    ("L6", dt.datetime(2026, 9, 10, 2), "website", "D002", "contacted", 50, False, None, "13800000006"),
    ("L7", dt.datetime(2026, 11, 23, 1), "hotline", "D001", "new", 10, False, None, "13800000007"),
    ("L8", dt.datetime(2026, 11, 12, 4), "hotline", "D003", "contacted", 20, False, None, "13800000008"),
]


def uow_at(rt, conn, when: dt.datetime, user=SYSTEM_USER):
    return UnitOfWork(rt, conn, rt.app("rep"), user, when.replace(tzinfo=UTC) if when.tzinfo is None else when)


def seed(rt) -> dict:
    """Install the app and the data above; returns {'leads': {name: id}, 'dealers': {code: id}}."""
    records = rt.services["records"]
    ids: dict = {"leads": {}, "dealers": {}, "customers": {}}
    t0 = dt.datetime(2026, 1, 1)
    with rt.db.write() as conn:
        uow = uow_at(rt, conn, t0)
        for code, name, region, prov in (("D001", "浦东店", "east", "上海市"), ("D002", "杭州店", "east", "浙江省"),
                                         ("D003", "广州店", "south", "广东省")):
            ids["dealers"][code] = records.create(uow, "dealer", {"code": code, "name": name, "region": region, "province": prov},
                                                  trusted=True)["id"]
        for name, created, source, dealer, state, amount, pool, contacted, phone in LEADS:
            u = uow_at(rt, conn, created)
            rec = records.create(u, "lead", {"name": name, "source": source, "dealer": ids["dealers"][dealer], "amount": amount,
                                             "in_pool": pool, "contacted_at": contacted.replace(tzinfo=UTC).isoformat() if contacted else None,
                                             "phone": phone, "state": state, "note": "n"}, trusted=True)
            ids["leads"][name] = rec["id"]
        deliveries = {"C1": (dt.date(2026, 5, 10), [dt.datetime(2026, 6, 1, 2), dt.datetime(2026, 9, 1, 2)]),
                      "C2": (dt.date(2026, 5, 20), [dt.datetime(2026, 7, 1, 2)]),
                      "C3": (dt.date(2026, 6, 5), []),
                      "C4": (dt.date(2026, 6, 15), [dt.datetime(2026, 7, 15, 2), dt.datetime(2026, 8, 15, 2), dt.datetime(2026, 11, 1, 2)])}
        for cname, (delivered, services) in deliveries.items():
            cid = records.create(uow, "customer", {"name": cname}, trusted=True)["id"]
            ids["customers"][cname] = cid
            vid = records.create(uow, "vehicle", {"vin": f"V{cname}", "customer": cid, "delivered_on": delivered.isoformat()},
                                 trusted=True)["id"]
            for when in services:
                records.create(uow_at(rt, conn, when), "service_order", {"customer": cid, "vehicle": vid, "kind": "maintenance"},
                               trusted=True)
    return ids


def install_files(rt, package_dir, files: dict | None = None):
    return install(rt, read_package(package_dir(files or FILES)))


def module_runtime(request, tmp_path_factory, prepare):
    """Yield a runtime on a fresh database of backend ``request.param``; ``prepare(rt, tmp)`` installs/seeds."""
    from sqlalchemy import create_engine, text

    from engine.clock import Clock
    from tests.conftest import T0, _pg_admin_url, _pg_server_url
    from ui.wiring import build_runtime

    tmp = tmp_path_factory.mktemp("reports")
    admin = name = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'loom.db'}"
    else:
        server = _pg_server_url()
        if server is None:
            pytest.skip("PostgreSQL half skipped: set LOOM_TEST_PG_URL (CI sets LOOM_REQUIRE_PG=1)")
        name = f"loom_r_{uuid.uuid4().hex[:10]}"
        admin = create_engine(_pg_admin_url(server), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = f"{server.rsplit('/', 1)[0]}/{name}"
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("LOOM_SECRET_KEY", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
            rt = build_runtime(url, Clock(fixed=T0))
            try:
                prepare(rt, tmp)
                yield rt
            finally:
                rt.db.dispose()
    finally:
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def crm(request, tmp_path_factory):
    """A runtime with the report test app installed and seeded -- once per module and backend.

    Report tests only read (and add users), so sharing one seeded database keeps the suite fast.
    """
    from tests.conftest import write_package

    def prepare(rt, tmp):
        install(rt, read_package(write_package(tmp / "pkg", FILES)))
        rt.seeded = seed(rt)
    yield from module_runtime(request, tmp_path_factory, prepare)


def add_user(rt, name: str, roles: list[str], attrs: dict | None = None):
    with rt.db.write() as conn:
        upsert_user(conn, rt.clock.now(), name, roles, attrs or {}, password="s3cret-pass")


def user_uow(rt, conn, name: str, lang: str = "zh"):
    from engine.auth import get_user
    user = get_user(conn, name)
    u = UnitOfWork(rt, conn, rt.app("rep"), user, rt.clock.now(), lang=lang)
    return u


def dedent(s: str) -> str:
    return textwrap.dedent(s)
