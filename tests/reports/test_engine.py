"""Report results against hand-computed values (see the table in conftest.py), on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest

from engine.errors import Forbidden, LoomError, RecordInvalid
from tests.reports.conftest import add_user, uow_at, user_uow


def run(rt, name, params=None, lang="zh", user=None):
    svc = rt.services["reports"]
    with rt.db.read() as conn:
        uow = user_uow(rt, conn, user, lang) if user else uow_at(rt, conn, rt.clock.now())
        uow.lang = lang
        return svc.run(uow, name, params or {})


def rows_by_first(res) -> dict:
    return {r[0]: r[1:] for r in res["rows"]}


def test_counts_sums_avg_ratio_and_conditional_count(crm):
    res = run(crm, "by_source")
    assert [c["name"] for c in res["columns"]] == ["source", "leads", "won", "amount", "avg_amount", "conversion"]
    # option order (website, hotline, referral), the pool lead L5 excluded by the fixed filter
    assert res["rows"] == [
        ["website", 3, 1, 350, pytest.approx(116.666667), pytest.approx(1 / 3, abs=1e-6)],
        ["hotline", 3, 0, 330, 110, 0],
        ["referral", 1, 1, 400, 400, 1],
    ]
    assert res["labels"]["source"]["website"] == "官网"
    assert res["columns"][1]["label"] == "线索数" and res["columns"][5]["format"] == "percent"
    en = run(crm, "by_source", lang="en")
    assert en["labels"]["source"]["hotline"] == "Hotline" and en["columns"][1]["label"] == "Leads"


def test_parameters_filter_the_rows(crm):
    res = run(crm, "by_source", {"period": "last_7_days"})
    # last 7 days in Shanghai = 11-17 .. 11-23: L1, L2 (website), L3, L7 (hotline)
    assert rows_by_first(res) == {"website": [2, 1, 300, 150, 0.5], "hotline": [2, 0, 310, 155, 0]}
    res = run(crm, "by_source", {"region": "south"})
    assert rows_by_first(res) == {"hotline": [1, 0, 20, 20, 0], "referral": [1, 1, 400, 400, 1]}
    res = run(crm, "by_source", {"region": "east,south", "period": "all"})
    assert sum(r[1] for r in res["rows"]) == 7
    with pytest.raises(RecordInvalid) as exc:
        run(crm, "by_source", {"region": "west"})
    assert exc.value.errors[0]["field"] == "region" and "west" in exc.value.errors[0]["message"]
    with pytest.raises(RecordInvalid):
        run(crm, "by_source", {"period": "last_fortnight"})


@pytest.mark.parametrize("period, expected", [
    ("today", 1),               # L7 (11-23 09:00 local)
    ("yesterday", 1),           # L3 (11-22)
    ("last_7_days", 4),         # L1 L2 L3 L7
    ("last_30_days", 7),        # 10-25 .. 11-23: all but L6
    ("last_90_days", 8),
    ("this_week", 1),           # Monday 11-23: L7
    ("last_week", 3),           # 11-16 .. 11-22: L1 L2 L3
    ("this_month", 6),          # L4 is 2026-10-31 17:00Z = 11-01 01:00 in Shanghai
    ("last_month", 1),          # L5 is 2026-10-31 15:00Z = 10-31 23:00
    ("this_quarter", 7),
    ("last_quarter", 1),        # L6 (09-10)
    ("this_year", 8),
    ("2026-11-01..2026-11-01", 1),
    ("2026-10", 1),
    ("2026-Q3", 1),
])
def test_relative_dates_at_a_fixed_clock(crm, period, expected):
    res = run(crm, "monthly", {"period": period})
    assert sum(r[1] for r in res["rows"]) == expected


def test_month_and_day_buckets_in_the_app_timezone(crm):
    assert run(crm, "monthly")["rows"] == [["2026-09", 1], ["2026-10", 1], ["2026-11", 6]]
    daily = run(crm, "daily")["rows"]
    # L4 (2026-10-31T17:00Z) is November 1st in Shanghai, L5 (15:00Z) still October 31st; weeks start on Monday
    assert ["2026-11-01", "2026-10-26", 1] in daily and ["2026-10-31", "2026-10-26", 1] in daily
    assert ["2026-11-23", "2026-11-23", 1] in daily
    assert [r[0] for r in daily] == sorted(r[0] for r in daily)


def test_linked_dimension_and_count_distinct_of_pii(crm):
    res = run(crm, "by_region")
    # east = D001 (L1 L2 L7) + D002 (L3 L6); south = D003 (L4 L5 L8); L4 and L5 share a phone
    assert res["rows"] == [["east", 5, 5], ["south", 3, 2]]
    assert res["labels"]["dealer.region"] == {"east": "华东", "south": "华南", "north": "华北"}


def test_top_n_with_link_titles(crm):
    res = run(crm, "top_dealers")
    d = crm.seeded["dealers"]
    assert res["rows"] == [[d["D001"], 3], [d["D003"], 3]]
    assert res["labels"]["dealer"] == {str(d["D001"]): "浦东店", str(d["D003"]): "广州店"}


def test_pivot(crm):
    res = run(crm, "region_source")
    assert [c["name"] for c in res["columns"]] == ["dealer.region", "website", "hotline", "referral", "total"]
    assert [c["label"] for c in res["columns"]][1:] == ["官网", "热线", "转介绍", "合计"]
    assert res["rows"] == [["east", 3, 2, None, 5], ["south", None, 1, 2, 3]]


def test_funnel_is_cumulative_in_stage_order(crm):
    res = run(crm, "lead_funnel")
    # new: all 8; contacted or later: L6 L8 L3 L1 L4; test_drive or later: L3 L1 L4; won: L1 L4
    assert res["rows"] == [["new", 8, 1.0, 1.0], ["contacted", 5, 0.625, 0.625], ["test_drive", 3, 0.375, 0.6],
                           ["won", 2, 0.25, pytest.approx(2 / 3, abs=1e-6)]]
    assert res["labels"]["stage"]["test_drive"] == "试驾"
    assert [r[0] for r in run(crm, "flow_funnel")["rows"]] == ["new", "contacted", "test_drive", "won"]


def test_formula_over_measures_and_aggregates_of_expressions(crm):
    res = run(crm, "scores")
    # all leads: website L1 won, L2 lost, L6; hotline L3 L7 L8; referral L4 won, L5
    # avg_double: avg(amount * 2) over amount >= 100: website 100, 200; hotline 300; referral 400
    assert res["rows"] == [["website", 3, 1, 1, 0, 300], ["hotline", 3, 0, 0, 0, 600], ["referral", 2, 1, 0, 50, 800]]


def test_durations_in_hours(crm):
    res = run(crm, "response")
    # website: L1 2h, L2 4h; hotline: L3 6h; referral: none contacted
    assert res["rows"] == [["website", 3.0, 4.0, 2], ["hotline", 6.0, 6.0, 1], ["referral", None, None, 0]]


def test_percentiles_on_postgresql_and_a_clear_message_on_sqlite(crm):
    if crm.db.dialect == "postgresql":
        res = run(crm, "response_median")
        # median of 2/4/6 h; p90 of 10,20,50,100,200,300,400 = 300 + 0.4 * (400 - 300)
        assert res["rows"] == [[4.0, pytest.approx(340.0)]]
    else:
        with pytest.raises(LoomError) as exc:
            run(crm, "response_median", lang="en")
        assert exc.value.status == 422 and "needs PostgreSQL" in exc.value.message


def test_kpi_compares_with_the_previous_period(crm):
    res = run(crm, "lead_kpi")
    # last 7 days (11-17..11-23): L1 L2 L3 L7, won L1; the 7 days before (11-10..11-16): L8
    assert res["rows"] == [["leads", 4, 1, 3.0], ["won", 1, 0, None], ["conversion", 0.25, 0.0, None]]
    assert res["previous_period"] == {"start": "2026-11-10", "end": "2026-11-17"}
    res = run(crm, "lead_kpi", {"period": "this_month"})
    # month to date (11-01..11-23) vs the same days of October (10-01..10-23): L5 is on 10-31
    assert res["rows"][0] == ["leads", 6, 0, None]
    assert res["previous_period"] == {"start": "2026-10-01", "end": "2026-10-24"}
    # October (L5) vs September (L6)
    assert run(crm, "lead_kpi", {"period": "last_month"})["rows"][0] == ["leads", 1, 1, 0.0]


def test_cohort_retention(crm):
    res = run(crm, "service_return")
    assert [c["name"] for c in res["columns"]] == ["cohort", "members", "n_1", "n_2", "rate_1", "rate_2"]
    assert res["rows"] == [["2026-05", 2, 2, 1, 1.0, 0.5], ["2026-06", 2, 1, 1, 0.5, 0.5]]
    # within 90 days of delivery: C1's second service (09-01) and C4's third are outside
    assert run(crm, "service_return_90d")["rows"] == [["2026-05", 2, 2, 0, 1.0, 0.0], ["2026-06", 2, 1, 1, 0.5, 0.5]]


def test_dealer_scoped_user_sees_only_its_rows(crm):
    add_user(crm, "d1", ["dealer_user"], {"dealer": "D001"})
    res = run(crm, "by_source", {"period": "all"}, user="d1")
    assert rows_by_first(res) == {"website": [2, 1, 300, 150, 0.5], "hotline": [1, 0, 10, 10, 0]}
    assert run(crm, "by_region", user="d1")["rows"] == [["east", 3, 3]]
    assert run(crm, "lead_funnel", user="d1")["rows"][0] == ["new", 3, 1.0, 1.0]


def test_parameter_default_from_the_user(crm):
    add_user(crm, "d3", ["dealer_manager"], {"dealer": "D003"})
    add_user(crm, "boss", ["manager"])
    assert run(crm, "my_dealer", user="d3")["rows"] == [[3]]                        # D003: L4 L5 L8
    assert run(crm, "my_dealer", {"dealer_code": "D002"}, user="boss")["rows"] == [[2]]
    assert run(crm, "my_dealer", user="boss")["rows"] == [[8]]                      # no dealer attribute: no filter


def test_report_roles_and_hidden_fields_are_enforced(crm):
    add_user(crm, "d1", ["dealer_user"], {"dealer": "D001"})
    add_user(crm, "boss", ["manager"])
    with pytest.raises(Forbidden):
        run(crm, "secret", user="d1")
    assert run(crm, "secret", user="boss")["rows"] == [[8]]
    with pytest.raises(Forbidden):
        run(crm, "uses_note", user="d1")          # 'note' is hidden from dealer users
    assert run(crm, "uses_note", user="boss")["rows"] == [["n", 8]]


def test_one_sql_statement_per_report(crm):
    """The engine sends one SELECT per report run (KPI: one more for the previous period)."""
    from sqlalchemy import event
    statements = []

    def count(conn, cursor, statement, *a):
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            statements.append(statement)
    event.listen(crm.db.engine, "before_cursor_execute", count)
    try:
        for name, expected in (("by_source", 1), ("region_source", 1), ("lead_funnel", 1), ("service_return", 1), ("lead_kpi", 2)):
            statements.clear()
            run(crm, name)
            # the app lookup may add a digest check; count only statements on the app's tables
            mine = [s for s in statements if "rep__" in s]
            assert len(mine) == expected, (name, mine)
    finally:
        event.remove(crm.db.engine, "before_cursor_execute", count)


def test_drill_returns_exactly_the_records_behind_a_bar(crm):
    svc = crm.services["reports"]
    ids = crm.seeded["leads"]
    with crm.db.read() as conn:
        uow = uow_at(crm, conn, crm.clock.now())
        got = svc.drill(uow, "by_source", {"source": "website"})
        assert sorted(i["id"] for i in got["items"]) == sorted([ids["L1"], ids["L2"], ids["L6"]]) and got["total"] == 3
        got = svc.drill(uow, "by_source", {"source": "website", "measure": "won"})
        assert [i["id"] for i in got["items"]] == [ids["L1"]]
        got = svc.drill(uow, "by_source", {"source": "hotline", "region": "east"})
        assert sorted(i["id"] for i in got["items"]) == sorted([ids["L3"], ids["L7"]])
        got = svc.drill(uow, "monthly", {"created_at_month": "2026-11"})
        assert sorted(i["id"] for i in got["items"]) == sorted(ids[n] for n in ("L1", "L2", "L3", "L4", "L7", "L8"))
        got = svc.drill(uow, "by_region", {"dealer.region": "south"})
        assert sorted(i["id"] for i in got["items"]) == sorted(ids[n] for n in ("L4", "L5", "L8"))
        got = svc.drill(uow, "lead_funnel", {"stage": "test_drive"})
        assert sorted(i["id"] for i in got["items"]) == sorted(ids[n] for n in ("L1", "L3", "L4"))
        got = svc.drill(uow, "service_return", {"cohort": "2026-06"})
        assert got["form"] == "vehicle" and got["total"] == 2
    add_user(crm, "d1", ["dealer_user"], {"dealer": "D001"})
    with crm.db.read() as conn:
        got = svc.drill(user_uow(crm, conn, "d1"), "by_source", {"source": "website", "period": "all"})
        assert sorted(i["id"] for i in got["items"]) == sorted([ids["L1"], ids["L2"]])
        assert "note" not in got["items"][0]                    # hidden from dealer users
        assert got["items"][0]["phone"].startswith("138****")  # pii masked as the record service masks it


def test_charts(crm):
    svc = crm.services["reports"]
    with crm.db.read() as conn:
        uow = uow_at(crm, conn, crm.clock.now())
        bar = svc.chart(uow, "by_source", {})
        assert bar["xAxis"]["data"] == ["官网", "热线", "转介绍"]
        assert [s["name"] for s in bar["series"]] == ["线索数", "成交"]
        assert [d["value"] for d in bar["series"][0]["data"]] == [3, 3, 1]
        assert bar["series"][1]["data"][0] == {"value": 1, "loomRaw": "website", "id": "won"}
        assert bar["loom"]["drill"] == "/api/apps/rep/reports/by_source/drill?period=last_90_days&source={name}&measure={id}"
        pie = svc.chart(uow, "by_region", {})
        assert pie["series"][0]["type"] == "pie" and pie["series"][0]["data"][0] == {"name": "华东", "value": 5, "loomRaw": "east"}
        fun = svc.chart(uow, "lead_funnel", {})
        assert fun["series"][0]["type"] == "funnel" and [d["name"] for d in fun["series"][0]["data"]] == ["新线索", "已联系", "试驾", "成交"]
        assert fun["loom"]["drill"].endswith("drill?stage={name}")
        page = svc.chart(uow, "lead_funnel", {}, drill_base="/apps/{app}/reports/{report}/records")
        assert page["loom"]["drill"] == "/apps/rep/reports/lead_funnel/records?stage={name}"
        kpi = svc.chart(uow, "lead_kpi", {})
        assert kpi["title"]["text"] == "4" and "300.0%" in kpi["title"]["subtext"] and kpi["loom"]["kpi"]["previous"] == 1
        heat = svc.chart(uow, "region_source", {})
        assert heat["series"][0]["type"] == "heatmap" and heat["xAxis"]["data"] == ["华东", "华南"]
        assert {"value": [0, 0, 3], "loomRaw": "east", "id": "website"} in heat["series"][0]["data"]
        assert "dealer.region={name}&source={id}" in heat["loom"]["drill"]
        m = svc.chart(uow, "by_province", {})
        assert m["series"][0]["map"] == "china" and {"name": "广东省", "value": 3, "loomRaw": "广东省"} in m["series"][0]["data"]
        line = svc.chart(uow, "service_return", {})
        assert [s["name"] for s in line["series"]] == ["≥1次比例", "≥2次比例"] and line["series"][0]["data"][0]["value"] == 100.0
        from reports.model import Chart
        for kind in ("stacked_bar", "area", "donut", "gauge", "table"):
            opt = svc.chart(uow, "by_source" if kind != "gauge" else "lead_kpi", {}, chart=Chart(kind, y=("conversion",) if kind == "gauge" else ()))
            assert "loom" in opt, kind
        g = svc.chart(uow, "lead_kpi", {}, chart=Chart("gauge", y=("conversion",)))
        assert g["series"][0]["data"][0]["value"] == 25.0 and g["series"][0]["max"] == 100
        # the gauge writes its value as the measure's format does, not the raw number
        assert g["series"][0]["detail"]["formatter"] == "25.0%" and g["tooltip"]["formatter"].endswith(": 25.0%")


def test_a_kpi_change_is_coloured_by_which_way_is_good_news(crm):
    from reports.model import Chart
    from ui.pages.dashboards import widget_view
    svc = crm.services["reports"]
    with crm.db.read() as conn:
        uow = uow_at(crm, conn, crm.clock.now())
        more_leads = svc.chart(uow, "lead_kpi", {})             # 4 leads against 1 the week before: +300%
        more_complaints = svc.chart(uow, "lead_kpi", {}, chart=Chart("kpi", y=("leads",), better="lower"))
    assert more_leads["loom"]["kpi"]["better"] == "higher" and more_leads["title"]["subtextStyle"]["color"] == "#14a38b"
    assert "▲ 300.0%" in more_complaints["title"]["subtext"] and more_complaints["title"]["subtextStyle"]["color"] == "#e5483f"
    good = widget_view({"kind": "kpi", "option": more_leads, "title": "线索数", "width": 3})["kpi"]
    bad = widget_view({"kind": "kpi", "option": more_complaints, "title": "投诉数", "width": 3})["kpi"]
    assert (good["up"], good["good"], good["bad"]) == (True, True, False)
    assert (bad["up"], bad["good"], bad["bad"]) == (True, False, True)


def test_dashboard_shares_filters_and_hides_forbidden_widgets(crm):
    svc = crm.services["reports"]
    add_user(crm, "d1", ["dealer_user"], {"dealer": "D001"})
    with crm.db.read() as conn:
        uow = uow_at(crm, conn, crm.clock.now())
        board = svc.dashboard(uow, "sales_board", {})
        assert board["refresh_seconds"] == 300
        assert [w["report"] for w in board["widgets"]] == ["lead_kpi", "by_source", "lead_funnel", "secret"]
        assert board["filters"][0]["name"] == "period" and board["filters"][0]["value"] == "last_30_days"
        kpi = board["widgets"][0]["option"]["loom"]["kpi"]
        assert kpi["value"] == 7                              # last 30 days: all but L6
        assert board["widgets"][2]["option"]["series"][0]["type"] == "bar"
        board = svc.dashboard(uow, "sales_board", {"period": "last_7_days"})
        assert board["widgets"][0]["option"]["loom"]["kpi"]["value"] == 4
        mine = svc.dashboard(user_uow(crm, conn, "d1"), "sales_board", {})
        assert [w["report"] for w in mine["widgets"]] == ["lead_kpi", "by_source", "lead_funnel"]   # 'secret' is for managers
        assert mine["widgets"][0]["option"]["loom"]["kpi"]["value"] == 3                        # L1 L2 L7


def test_exports_csv_and_xlsx(crm):
    import io
    from openpyxl import load_workbook
    svc = crm.services["reports"]
    with crm.db.read() as conn:
        uow = uow_at(crm, conn, crm.clock.now())
        name, media, chunks = svc.export(uow, "by_source", {}, "csv")
        text = b"".join(chunks).decode("utf-8-sig")
        assert name.startswith("by_source-") and name.endswith(".csv") and media.startswith("text/csv")
        lines = text.strip().splitlines()
        assert lines[0] == "source,线索数,成交,amount,avg_amount,转化率"
        assert lines[1].startswith("官网,3,1,350,116.666667,0.333333")
        name, media, chunks = svc.export(uow, "region_source", {}, "xlsx")
        wb = load_workbook(io.BytesIO(b"".join(chunks)))
        ws = wb.worksheets[0]
        rows = [[c.value for c in r] for r in ws.iter_rows()]
        assert rows[0][1:] == ["官网", "热线", "转介绍", "合计"]
        assert rows[1] == ["华东", 3, 2, None, 5] and rows[2] == ["华南", None, 1, 2, 3]


def test_index_advice(crm):
    advice = crm.services["reports"].index_advice(crm.app("rep"))
    assert any("lead.note " in a for a in advice)               # grouped by 'uses_note', no index
    assert any("vehicle.delivered_on " in a for a in advice)    # the cohort date
    assert not any("lead.source " in a or "created_at" in a or "region" in a for a in advice)   # indexed / system / linked
