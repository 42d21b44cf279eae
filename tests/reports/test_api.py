"""The reports API: JSON, charts, drill-down, dashboards, CSV/XLSX exports and their permissions."""
from __future__ import annotations

import csv
import io

from openpyxl import load_workbook

from tests.reports.conftest import install_files, seed


def setup_app(api, package_dir):
    install_files(api.rt, package_dir)
    ids = seed(api.rt)
    users = {
        "admin": api.user("root", ["admin"]),
        "boss": api.user("boss", ["manager"]),
        "dm": api.user("dm1", ["dealer_manager"], {"dealer": "D001"}),
        "du": api.user("du1", ["dealer_user"], {"dealer": "D001"}),
    }
    return users, ids


def test_reports_api(api, package_dir):
    h, ids = setup_app(api, package_dir)
    http = api.http
    assert http.get("/api/apps/rep/reports/by_source").status_code == 401
    r = http.get("/api/apps/rep/reports/by_source", headers=h["boss"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert [c["name"] for c in body["columns"]] == ["source", "leads", "won", "amount", "avg_amount", "conversion"]
    assert body["rows"][0][:4] == ["website", 3, 1, 350]
    assert body["params"] == {"period": "last_90_days", "region": None}
    r = http.get("/api/apps/rep/reports/by_source?period=last_7_days&region=east&lang=en", headers=h["boss"])
    assert r.json()["rows"] == [["website", 2, 1, 300, 150, 0.5], ["hotline", 2, 0, 310, 155, 0]]
    assert r.json()["labels"]["source"]["website"] == "Website"
    r = http.get("/api/apps/rep/reports/by_source?region=west", headers=h["boss"])
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "region"
    assert http.get("/api/apps/rep/reports/nope", headers=h["boss"]).status_code == 404

    chart = http.get("/api/apps/rep/reports/by_source/chart?period=last_7_days", headers=h["boss"]).json()
    assert chart["xAxis"]["data"] == ["官网", "热线"]
    drill_url = chart["loom"]["drill"]
    assert drill_url == "/api/apps/rep/reports/by_source/drill?period=last_7_days&source={name}&measure={id}"
    # what the front-end does on a click on the 'won' bar of 'website'
    r = http.get(drill_url.replace("{name}", "website").replace("{id}", "won"), headers=h["boss"])
    assert r.status_code == 200, r.text
    assert [i["id"] for i in r.json()["items"]] == [ids["leads"]["L1"]] and r.json()["total"] == 1

    board = http.get("/api/apps/rep/dashboards/sales_board", headers=h["boss"]).json()
    assert [w["report"] for w in board["widgets"]] == ["lead_kpi", "by_source", "lead_funnel", "secret"]
    assert [w["width"] for w in board["widgets"]] == [3, 9, 6, 6] and board["refresh_seconds"] == 300
    assert board["widgets"][0]["option"]["loom"]["kpi"]["value"] == 7

    catalog = http.get("/api/apps/rep/reports", headers=h["du"]).json()
    names = {r["name"] for r in catalog["reports"]}
    assert "by_source" in names and "secret" not in names
    assert catalog["dashboards"] == [{"name": "sales_board", "label": "销售看板", "refresh_seconds": 300}]
    period = next(p for p in next(r for r in catalog["reports"] if r["name"] == "by_source")["params"] if p["name"] == "period")
    assert period["kind"] == "period" and period["default"] == "last_90_days"
    assert {"value": "this_month", "label": "本月"} in period["options"]

    # a record list route with the same shape is not shadowed
    assert http.get("/api/apps/rep/lead?limit=1", headers=h["boss"]).status_code == 200


def test_permissions_and_exports(api, package_dir):
    h, ids = setup_app(api, package_dir)
    http = api.http
    # dealer users see their dealer's rows only, in JSON and in exports
    r = http.get("/api/apps/rep/reports/by_source?period=all", headers=h["du"])
    assert r.json()["rows"] == [["website", 2, 1, 300, 150, 0.5], ["hotline", 1, 0, 10, 10, 0]]
    assert http.get("/api/apps/rep/reports/secret", headers=h["du"]).status_code == 403
    assert http.get("/api/apps/rep/reports/by_source?format=csv", headers=h["du"]).status_code == 403   # no export permission
    r = http.get("/api/apps/rep/reports/by_source/drill?source=website&period=all", headers=h["du"])
    assert sorted(i["id"] for i in r.json()["items"]) == sorted([ids["leads"]["L1"], ids["leads"]["L2"]])

    r = http.get("/api/apps/rep/reports/by_source?format=csv&period=all", headers=h["dm"])
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"] and ".csv" in r.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert rows[0] == ["source", "线索数", "成交", "amount", "avg_amount", "转化率"]   # labels from the definitions
    assert rows[1:] == [["官网", "2", "1", "300", "150", "0.5"], ["热线", "1", "0", "10", "10", "0"]]

    r = http.get("/api/apps/rep/reports/by_region?format=xlsx", headers=h["boss"])
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/vnd.openxmlformats")
    ws = load_workbook(io.BytesIO(r.content)).worksheets[0]
    assert [[c.value for c in row] for row in ws.iter_rows()] == [["region", "leads", "customers"], ["华东", 5, 5], ["华南", 3, 2]]
    r = http.get("/api/apps/rep/reports/by_region?format=xlsx", headers=h["dm"])
    ws = load_workbook(io.BytesIO(r.content)).worksheets[0]
    assert [[c.value for c in row] for row in ws.iter_rows()][1:] == [["华东", 3, 3]]
    assert http.get("/api/apps/rep/reports/by_source?format=pdf", headers=h["boss"]).status_code == 422

    with api.rt.db.read() as conn:
        from sqlalchemy import select
        from engine import platform as P
        actions = [r.action for r in conn.execute(select(P.audit.c.action).where(P.audit.c.action == "report.export"))]
    assert len(actions) == 3                     # dm csv, boss xlsx, dm xlsx (the refused ones are not exports)
