"""The automotive CRM's reports and dashboards: they compile, run on both databases, and give the right numbers.

Rows are inserted straight into the tables (only the columns the reports read) so the
numbers below can be checked by hand; the clock is T0 = 2026-11-23 02:00Z (10:00 Shanghai).
"""
from __future__ import annotations

import datetime as dt

import pytest

from engine.auth import SYSTEM_USER, get_user, upsert_user
from engine.definitions import compile_package
from engine.installer import install
from engine.package import read_package
from engine.uow import UnitOfWork
from tests.conftest import CRM
from tests.reports.conftest import module_runtime
from ui.wiring import load_engines

load_engines()
D = dt.datetime


def insert_rows(rt) -> None:
    records = rt.services["records"]
    app = rt.app("automotive_crm")
    t = records.tables(app)
    base = {"created_by": "test", "updated_at": D(2026, 11, 1)}
    with rt.db.write() as conn:
        def add(form, **values):
            values.setdefault("created_at", D(2026, 11, 1))
            return conn.execute(t[form].insert().values(**base, **values).returning(t[form].c.id)).scalar_one()

        d1 = add("dealer", code="D001", name="上海浦东店", region="east", kind="4s", brand="loom_auto", city="上海",
                 phone="021-58880000", province_city=["上海市", "上海市", "浦东新区"])
        d2 = add("dealer", code="D002", name="广州天河店", region="south", kind="4s", brand="loom_auto", city="广州",
                 phone="020-38880000", province_city=["广东省", "广州市", "天河区"])
        # leads: created in November (Shanghai), D001 x4, D002 x2
        for dealer, region, state, source, hours in ((d1, "east", "new", "website", None), (d1, "east", "contacted", "website", 2),
                                                     (d1, "east", "quoted", "app", 4), (d1, "east", "won", "referral", 1),
                                                     (d2, "south", "lost", "website", 6), (d2, "south", "won", "app", 3)):
            created = D(2026, 11, 10, 2)
            add("lead", dealer=dealer, region=region, state=state, source=source, level="A", in_pool=False, created_at=created,
                first_contact_at=created + dt.timedelta(hours=hours) if hours else None,
                lost_reason="price" if state == "lost" else None, model_interest="s7")
        # complaints (east): one resolved in 24h of 48h allowed, one open past its due time
        add("complaint", dealer=d1, region="east", category="repair_quality", severity="high", channel="hotline_400",
            state="closed", created_at=D(2026, 11, 1, 2), response_due_at=D(2026, 11, 1, 6), responded_at=D(2026, 11, 1, 3),
            resolve_due_at=D(2026, 11, 3, 2), resolved_at=D(2026, 11, 2, 2), root_cause="workmanship", satisfaction=4,
            public_risk=False)
        add("complaint", dealer=d1, region="east", category="waiting_time", severity="low", channel="app",
            state="in_progress", created_at=D(2026, 11, 10, 2), response_due_at=D(2026, 11, 10, 6), responded_at=None,
            resolve_due_at=D(2026, 11, 12, 2), resolved_at=None, public_risk=True)
        # surveys: D001 NPS (2 promoters - 2 detractors) / 5 = 0; D002 (2 - 0) / 3 = 66.67
        for dealer, region, nps in ((d1, "east", 10), (d1, "east", 9), (d1, "east", 7), (d1, "east", 3), (d1, "east", 0),
                                    (d2, "south", 10), (d2, "south", 10), (d2, "south", 8)):
            add("survey", dealer=dealer, region=region, subject_kind="service", nps=nps, score=4,
                submitted_at=D(2026, 11, 5, 2), created_at=D(2026, 11, 5, 2))
        # customers, vehicles delivered in June, service orders
        c1 = add("customer", name="张三", region="east", status="active", dealer=d1, customer_type="individual")
        c2 = add("customer", name="李四", region="east", status="churned", dealer=d1, customer_type="individual")
        v1 = add("vehicle", customer=c1, dealer=d1, region="east", delivery_date=dt.date(2026, 6, 10), model="s7",
                 care_status="goal", care_step="d85_first_service")
        v2 = add("vehicle", customer=c2, dealer=d1, region="east", delivery_date=dt.date(2026, 6, 20), model="s5",
                 care_status="exited", care_step="d7_tips")
        # care journey (status kept on the vehicle by the journey's `track`): November deliveries, D002
        for day, status in ((2, "completed"), (3, "active"), (4, "active"), (5, "cancelled")):
            add("vehicle", dealer=d2, region="south", delivery_date=dt.date(2026, 11, day), model="e3", care_status=status)
        add("vehicle", dealer=d2, region="south", delivery_date=dt.date(2026, 11, 6), model="e3")   # never enrolled
        add("service_order", vehicle=v1, customer=c1, dealer=d1, region="east", kind="first_service", amount=500,
            created_at=D(2026, 8, 1, 2), opened_at=D(2026, 8, 1, 2), closed_at=D(2026, 8, 1, 6), is_rework=False)
        add("service_order", vehicle=v1, customer=c1, dealer=d1, region="east", kind="maintenance", amount=1500,
            created_at=D(2026, 10, 1, 2), opened_at=D(2026, 10, 1, 2), closed_at=D(2026, 10, 1, 4), is_rework=True)
        upsert_user(conn, rt.clock.now(), "gm1", ["dealer_manager"], {"dealer": "D001", "region": "east"}, password="s3cret-pass")
        upsert_user(conn, rt.clock.now(), "sa1", ["service_advisor"], {"dealer": "D001", "region": "east"}, password="s3cret-pass")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def crm_app(request, tmp_path_factory):
    def prepare(rt, tmp):
        install(rt, read_package(CRM))
        insert_rows(rt)
    yield from module_runtime(request, tmp_path_factory, prepare)


def uow_for(rt, conn, username=None, lang="zh"):
    user = get_user(conn, username) if username else SYSTEM_USER
    return UnitOfWork(rt, conn, rt.app("automotive_crm"), user, rt.clock.now(), lang=lang)


def test_crm_package_defines_the_dashboards_its_menus_use():
    app = compile_package(read_package(CRM))
    assert {"sales_dashboard", "service_dashboard", "hq_dashboard"} <= set(app.section("dashboards"))
    assert {"lead_funnel", "complaint_sla", "nps_by_dealer", "first_service_return_rate", "service_retention"} <= set(app.section("reports"))


def test_every_crm_report_and_dashboard_runs(crm_app):
    svc = crm_app.services["reports"]
    app = crm_app.app("automotive_crm")
    with crm_app.db.read() as conn:
        for user in (None, "gm1"):
            uow = uow_for(crm_app, conn, user)
            for name in app.section("reports"):
                res = svc.run(uow, name, {"period": "all"})
                assert isinstance(res["rows"], list), name
                option = svc.chart(uow, name, {"period": "all"})
                assert "loom" in option and option["loom"]["drill"].startswith(f"/api/apps/automotive_crm/reports/{name}/drill")
            for board in ("sales_dashboard", "service_dashboard") + (("hq_dashboard",) if user is None else ()):
                out = svc.dashboard(uow, board, {})
                assert out["widgets"] and not [w for w in out["widgets"] if w["error"]], (board, out["widgets"])


def test_crm_numbers(crm_app):
    svc = crm_app.services["reports"]
    with crm_app.db.read() as conn:
        uow = uow_for(crm_app, conn)
        funnel = svc.run(uow, "lead_funnel", {"period": "this_month"})
        # 6 leads; contacted or later: contacted, quoted, won, won (lost is not a stage) ...
        assert [r[:2] for r in funnel["rows"]] == [["new", 6], ["contacted", 4], ["needs_confirmed", 3], ["quoted", 3],
                                                   ["negotiating", 2], ["won", 2]]
        sla = svc.run(uow, "complaint_sla", {"period": "all"})
        # east: 2 complaints, resolved one in 24 h (48 h allowed), the open one is past its due time
        assert sla["rows"] == [["east", 2, 24.0, 48.0, 1, 0.5, 0.5]]
        nps = svc.run(uow, "nps_by_dealer", {"period": "all"})
        by_dealer = {r[0]: r for r in nps["rows"]}
        assert [r[4] for r in nps["rows"]] == [pytest.approx(66.666667), 0]        # sorted by NPS, best first
        assert nps["labels"]["dealer"][str(nps["rows"][0][0])] == "广州天河店"
        assert len(by_dealer) == 2
        ret = svc.run(uow, "service_retention", {"period": "all"})
        assert ret["rows"] == [["2026-06", 2, 1, 1, 0.5, 0.5]]
        first = svc.run(uow, "first_service_return_rate", {"period": "all"})
        assert first["rows"] == [["2026-06", 2, 1, 0.5], ["2026-11", 5, 0, 0.0]]
        care = svc.run(uow, "journey_completion", {"period": "all"})
        # enrolled, in progress, all steps, first service early, left, completion rate
        assert care["rows"] == [["2026-06", 2, 0, 0, 1, 1, 0.5], ["2026-11", 4, 2, 1, 0, 1, 0.25]]
        prov = svc.run(uow, "complaints_by_province", {"period": "all"})
        assert prov["rows"] == [["上海市", 2]]
        kpi = svc.run(uow, "complaint_kpi", {"period": "this_month"})
        assert kpi["rows"][:3] == [["complaints", 2, 0, None], ["open", 1, 0, None], ["overdue", 1, 0, None]]
        # a dealer general manager sees only D001
        gm = uow_for(crm_app, conn, "gm1")
        assert [r[:2] for r in svc.run(gm, "lead_funnel", {"period": "all"})["rows"]][:2] == [["new", 4], ["contacted", 3]]
        assert [r[4] for r in svc.run(gm, "nps_by_dealer", {"period": "all"})["rows"]] == [0]
        assert [r[:2] for r in svc.run(gm, "journey_completion", {"period": "all"})["rows"]] == [["2026-06", 2]]
        # a service advisor may not read leads: the sales dashboard is not for that role either
        sa = uow_for(crm_app, conn, "sa1")
        names = {r["name"] for r in svc.catalog(sa)["reports"]}
        assert "complaint_sla" in names and "lead_funnel" not in names
